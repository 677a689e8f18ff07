"""RandAugment on uint8 host images, as torchvision's `RandAugment`.

`rand_augment` applies `randaugment_ops` ops in a row, each drawn uniformly
from `randaugment_ops_list`, all at the magnitude bin `randaugment_magnitude`
of `randaugment_bins` (fields of `default_config`). With m = bin / (bins - 1)
the ops are, a signed magnitude being negated with probability 1/2:

  Identity: nothing.
  ShearX, ShearY: shear factor s = 0.3 m, signed. The output at (x, y)
    samples the input at (x + s y, y), resp. (x, y + s x), with the origin
    at the image's top-left corner and pixel centres at half-integers:
    torchvision shears about that corner, by the angle atan(s).
  TranslateX, TranslateY: int(150 / 331 * m * width), resp. height, pixels
    right, resp. down, signed.
  Rotate: 30 m degrees counter-clockwise about the image centre, signed.
  Brightness, Color, Contrast, Sharpness: factor 1 + 0.9 m, signed, blending
    the image with black, its luma, its mean luma or its 3x3-smoothed self.
  Posterize: keeps the top 8 - round(4 m) bits (round half to even).
  Solarize: inverts the values >= 255 (1 - m); at bin 0 that is pure white
    only, as in torchvision.
  AutoContrast: stretches each channel's [min, max] to [0, 255].
  Equalize: equalises each channel's histogram.

The geometric ops fill what they bring in from outside the image with
`randaugment_fill` (black by default, as torchvision's fill=None).

The magnitudes are torch.linspace's float32 values (torch's vectorised loop
may round the last bit differently), so a translation truncates and a
Solarize threshold compares as torchvision's do.

Each op follows PIL's definition, which is what torchvision runs on PIL
images: Image.transform / Image.rotate for the geometric ops (nearest
neighbour, torchvision's default, reproduces PIL's fixed-point sampling
exactly; bilinear is within a level of PIL's), ImageOps' posterize,
solarize, autocontrast and equalize (exactly, per channel), and
ImageEnhance's Brightness, Color, Contrast and Sharpness, which blend with
black, the ITU-R 601-2 luma, the mean luma, and the SMOOTH-filtered image
with its border pixels kept (factor 0 gives that image, 1 the input, above 1
extrapolates). These reuse the colour ops of `ferjax.data.color`, which
round where PIL truncates and take OpenCV's luma, so they differ from PIL by
up to a level (two for Color at factors below about 1/2).

RANDAUGMENT_LITE_OPS leaves out Posterize, Solarize, Equalize and both
shears, for aligned face crops: posterization and solarization erase or
invert the shading of wrinkles and folds (brow furrows, nasolabial folds)
that carries much of an expression, and make faces unlike any test image;
per-channel equalisation casts a hue over skin and amplifies noise and
compression artefacts in small, low-contrast crops (48x48 grayscale FER2013,
say); and shear slants the mouth and brow lines, close to the asymmetry that
tells contempt from a smile, while translation and rotation already cover
the misalignment of face crops.

PaddleClas's RandAugment(num_layers=2, magnitude=5), which TransFER trains
with, takes each op at 5/10 of the same maxima, as randaugment_magnitude=15
of 31 bins does here for shear, translation, rotation and the enhance ops;
but its op list has Invert instead of Identity, its rotation is never
negated, its Posterize keeps 2 bits rather than 6, and it fills with gray 128
rather than black.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import cv2
import numpy as np

from ferjax.data.augment_config import RANDAUGMENT_LITE_OPS
from ferjax.data.augment_config import RANDAUGMENT_OPS
from ferjax.data.augment_config import AugmentConfig
from ferjax.data.augment_config import Config
from ferjax.data.augment_config import parse_config
from ferjax.data.color import adjust_brightness
from ferjax.data.color import adjust_contrast
from ferjax.data.color import adjust_saturation

__all__ = [
  'RANDAUGMENT_OPS',
  'RANDAUGMENT_LITE_OPS',
  'op_magnitude',
  'sample_rand_augment',
  'apply_op',
  'rand_augment',
  'shear',
  'translate',
  'rotate',
  'adjust_sharpness',
  'posterize',
  'solarize',
  'autocontrast',
  'equalize',
]

# The largest magnitude of the ops whose magnitude is linear in the bin.
_LINEAR = {
  'ShearX': 0.3,
  'ShearY': 0.3,
  'Rotate': 30.0,
  'Brightness': 0.9,
  'Color': 0.9,
  'Contrast': 0.9,
  'Sharpness': 0.9,
}
_SIGNED = frozenset(_LINEAR) | {'TranslateX', 'TranslateY'}
# PIL's ImageFilter.SMOOTH.
_SMOOTH = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], np.float32) / 13
_RAMP = np.arange(256)
_IDENTITY = _RAMP.astype(np.uint8)

Fill = int | tuple[int, int, int]


def _linspace(start: float, stop: float, num: int, index: int) -> float:
  """Returns torch.linspace(start, stop, num)[index] computed in float32."""
  start32, stop32 = np.float32(start), np.float32(stop)
  step = (stop32 - start32) / np.float32(num - 1)
  # torch counts the first half up from start and the rest down from stop.
  if index < num // 2:
    return float(start32 + step * np.float32(index))
  return float(stop32 - step * np.float32(num - 1 - index))


def op_magnitude(
  name: str, magnitude: int, bins: int, height: int, width: int
) -> float:
  """Returns the unsigned magnitude of an op, as torchvision's table.

  Args:
    name: op name from RANDAUGMENT_OPS.
    magnitude: the bin, in [0, bins - 1].
    bins: number of bins, >= 2.
    height: image height in pixels (TranslateY).
    width: image width in pixels (TranslateX).

  Returns:
    The shear factor, pixels, degrees, enhance offset (the factor is 1 plus
    it), Posterize bits or Solarize threshold; 0 for the ops without one.
  """
  if name in _LINEAR:
    return _linspace(0.0, _LINEAR[name], bins, magnitude)
  if name == 'TranslateX':
    return _linspace(0.0, 150.0 / 331.0 * width, bins, magnitude)
  if name == 'TranslateY':
    return _linspace(0.0, 150.0 / 331.0 * height, bins, magnitude)
  if name == 'Posterize':
    fraction = np.float32(magnitude) / np.float32((bins - 1) / 4)
    return float(8 - int(np.round(fraction)))
  if name == 'Solarize':
    return _linspace(255.0, 0.0, bins, magnitude)
  return 0.0


def sample_rand_augment(
  rng: np.random.Generator,
  num_ops: int,
  magnitude: int,
  bins: int,
  ops: tuple[str, ...],
  height: int,
  width: int,
) -> list[tuple[str, float]]:
  """Samples RandAugment's ops and their signed magnitudes.

  Each op draws its index into `ops`, then a sign coin, which is tossed for
  unsigned ops too and only used for signed ones.

  Args:
    rng: source of randomness.
    num_ops: number of ops.
    magnitude: the magnitude bin.
    bins: number of magnitude bins.
    ops: op names to choose from, uniformly.
    height: image height in pixels.
    width: image width in pixels.

  Returns:
    (op name, magnitude) pairs in the order to apply them.
  """
  chosen = []
  for _ in range(num_ops):
    name = ops[int(rng.integers(len(ops)))]
    negate = rng.random() < 0.5
    value = op_magnitude(name, magnitude, bins, height, width)
    if negate and name in _SIGNED:
      value = -value
    chosen.append((name, value))
  return chosen


# ------------------------------------------------------------------ geometry


def _fixed(value: float) -> int:
  """Rounds to 16.16 fixed point, as PIL's nearest-neighbour affine loop."""
  return math.floor(value * 65536.0 + 0.5)


def _bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """Samples `image` at float pixel coordinates, edges repeated, rounded."""
  height, width = image.shape[:2]
  x = np.clip(x, 0, width - 1)
  y = np.clip(y, 0, height - 1)
  x0 = np.minimum(np.floor(x).astype(np.intp), width - 2 if width > 1 else 0)
  y0 = np.minimum(np.floor(y).astype(np.intp), height - 2 if height > 1 else 0)
  x1 = np.minimum(x0 + 1, width - 1)
  y1 = np.minimum(y0 + 1, height - 1)
  wx, wy = x - x0, y - y0
  if image.ndim == 3:
    wx, wy = wx[..., None], wy[..., None]
  img = image.astype(np.float32)
  top = img[y0, x0] * (1 - wx) + img[y0, x1] * wx
  bottom = img[y1, x0] * (1 - wx) + img[y1, x1] * wx
  return np.clip(np.rint(top * (1 - wy) + bottom * wy), 0, 255).astype(np.uint8)


def _warp(
  image: np.ndarray,
  matrix: tuple[float, ...],
  interpolation: str,
  fill: Fill,
) -> np.ndarray:
  """Resamples `image` like PIL's Image.transform(AFFINE) with a fill colour.

  `matrix` = (a, b, c, d, e, f) maps each output pixel centre (x, y) to the
  input point (a x + b y + c, d x + e y + f), in PIL's coordinates where
  pixel (i, j) covers [j, j + 1) x [i, i + 1). Points outside the image take
  `fill`.
  """
  if interpolation not in ('nearest', 'bilinear'):
    raise ValueError(
      f"interpolation must be 'nearest' or 'bilinear', got {interpolation!r}."
    )
  a, b, c, d, e, f = matrix
  height, width = image.shape[:2]
  ys = np.arange(height)[:, None]
  xs = np.arange(width)[None, :]
  value = fill if isinstance(fill, tuple) else (fill,) * 3
  if interpolation == 'nearest':
    # PIL's 16.16 fixed-point loop, which decides the samples that fall on a
    # pixel edge (every fifth row of a 0.2 shear, say).
    col = (
      _fixed(c + a * 0.5 + b * 0.5) + ys * _fixed(b) + xs * _fixed(a)
    ) >> 16
    row = (
      _fixed(f + d * 0.5 + e * 0.5) + ys * _fixed(e) + xs * _fixed(d)
    ) >> 16
    # Whole-pixel maps: OpenCV only looks the pixels up, or fills.
    return cv2.remap(
      image,
      col.astype(np.float32),
      row.astype(np.float32),
      cv2.INTER_NEAREST,
      borderMode=cv2.BORDER_CONSTANT,
      borderValue=value,
    )
  u = a * (xs + 0.5) + b * (ys + 0.5) + c
  v = d * (xs + 0.5) + e * (ys + 0.5) + f
  # PIL interpolates between pixel centres and repeats the edge pixels, but
  # fills where the sample point itself is outside the image. The weights
  # are computed in float: OpenCV 4's remap rounds them to 1/32 of a pixel,
  # several levels off PIL's.
  out = _bilinear(image, u - 0.5, v - 0.5)
  outside = (u < 0) | (u >= width) | (v < 0) | (v >= height)
  out[outside] = value if image.ndim == 3 else value[0]
  return out


def shear(
  image: np.ndarray,
  factor: float,
  axis: int,
  interpolation: str = 'nearest',
  fill: Fill = 0,
) -> np.ndarray:
  """Shears about the top-left corner (torchvision's ShearX/Y).

  Args:
    image: uint8 (H, W) or (H, W, 3) image.
    factor: s; the output at (x, y) samples the input at (x + s y, y) for
      axis=1 (ShearX) or (x, y + s x) for axis=0 (ShearY), in coordinates
      with the origin at the top-left corner of the image (so pixel centres
      are at half-integers).
    axis: 1 for ShearX, 0 for ShearY.
    interpolation: 'nearest' or 'bilinear'.
    fill: value outside the image, an int or an (r, g, b) triple (a
      grayscale image takes r).

  Returns:
    The sheared image, same shape.
  """
  if axis == 1:
    matrix = (1.0, factor, 0.0, 0.0, 1.0, 0.0)
  else:
    matrix = (1.0, 0.0, 0.0, factor, 1.0, 0.0)
  return _warp(image, matrix, interpolation, fill)


def translate(
  image: np.ndarray,
  pixels: int,
  axis: int,
  interpolation: str = 'nearest',
  fill: Fill = 0,
) -> np.ndarray:
  """Shifts right (axis=1) or down (axis=0) by whole pixels, filling."""
  if axis == 1:
    matrix = (1.0, 0.0, -pixels, 0.0, 1.0, 0.0)
  else:
    matrix = (1.0, 0.0, 0.0, 0.0, 1.0, -pixels)
  return _warp(image, matrix, interpolation, fill)


def rotate(
  image: np.ndarray,
  degrees: float,
  interpolation: str = 'nearest',
  fill: Fill = 0,
) -> np.ndarray:
  """Rotates counter-clockwise about the image centre, like Image.rotate."""
  height, width = image.shape[:2]
  cx, cy = width / 2, height / 2
  # PIL's inverse matrix, its trigonometry rounded to 15 decimals as there.
  radians = -math.radians(degrees % 360.0)
  cos = round(math.cos(radians), 15)
  sin = round(math.sin(radians), 15)
  msin = round(-math.sin(radians), 15)
  matrix = (
    cos,
    sin,
    cos * -cx + sin * -cy + cx,
    msin,
    cos,
    msin * -cx + cos * -cy + cy,
  )
  return _warp(image, matrix, interpolation, fill)


# --------------------------------------------------------------------- colour


def _on_rgb(
  op: Callable[[np.ndarray, float], np.ndarray],
  image: np.ndarray,
  factor: float,
) -> np.ndarray:
  # The colour jitter ops take RGB; a gray image is its own luma.
  if image.ndim == 3:
    return op(image, factor)
  rgb = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
  return np.ascontiguousarray(op(rgb, factor)[..., 0])


def adjust_sharpness(image: np.ndarray, factor: float) -> np.ndarray:
  """Blends with PIL's SMOOTH-filtered image (0 is smooth, 1 unchanged).

  As in PIL's ImageEnhance.Sharpness, the filter leaves the image's border
  pixels as they are, so they never change.
  """
  smooth = image.copy()
  if image.shape[0] > 2 and image.shape[1] > 2:
    smooth[1:-1, 1:-1] = cv2.filter2D(image, -1, _SMOOTH)[1:-1, 1:-1]
  return cv2.addWeighted(image, factor, smooth, 1.0 - factor, 0.0)


def _per_channel(
  image: np.ndarray, make_lut: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
  """Maps each channel through the uint8 lookup table built from it."""
  if image.ndim == 2:
    return cv2.LUT(image, make_lut(image))
  luts = [make_lut(image[..., c]) for c in range(image.shape[2])]
  return cv2.LUT(image, np.stack(luts, axis=-1)[:, None])


def posterize(image: np.ndarray, bits: int) -> np.ndarray:
  """Keeps the high `bits` of every value (8 is unchanged), as PIL's."""
  mask = 0xFF & ~((1 << (8 - bits)) - 1)
  return cv2.LUT(image, (_RAMP & mask).astype(np.uint8))


def solarize(image: np.ndarray, threshold: float) -> np.ndarray:
  """Inverts the values >= `threshold`, as PIL's."""
  lut = np.where(threshold <= _RAMP, 255 - _RAMP, _RAMP).astype(np.uint8)
  return cv2.LUT(image, lut)


def _autocontrast_lut(channel: np.ndarray) -> np.ndarray:
  lo, hi = int(channel.min()), int(channel.max())
  if hi <= lo:
    return _IDENTITY
  scale = 255.0 / (hi - lo)
  # PIL truncates ix * scale + offset.
  return np.clip(np.trunc(_RAMP * scale + -lo * scale), 0, 255).astype(np.uint8)


def autocontrast(image: np.ndarray) -> np.ndarray:
  """Stretches each channel's [min, max] to [0, 255], as PIL's (cutoff=0)."""
  return _per_channel(image, _autocontrast_lut)


def _equalize_lut(channel: np.ndarray) -> np.ndarray:
  hist = np.bincount(channel.ravel(), minlength=256)
  used = hist[hist > 0]
  if used.size <= 1:
    return _IDENTITY
  # PIL spreads all pixels but those of the top value over 255 steps.
  step = (int(used.sum()) - int(used[-1])) // 255
  if not step:
    return _IDENTITY
  below = np.concatenate([[0], np.cumsum(hist)[:-1]])
  return np.minimum((step // 2 + below) // step, 255).astype(np.uint8)


def equalize(image: np.ndarray) -> np.ndarray:
  """Equalises each channel's histogram, as PIL's ImageOps.equalize."""
  return _per_channel(image, _equalize_lut)


# ----------------------------------------------------------------- transform


def apply_op(
  image: np.ndarray,
  name: str,
  magnitude: float,
  interpolation: str = 'nearest',
  fill: Fill = 0,
) -> np.ndarray:
  """Applies one RandAugment op, as torchvision's `_apply_op`.

  Args:
    image: uint8 (H, W) or (H, W, 3) RGB image.
    name: op name from RANDAUGMENT_OPS.
    magnitude: its signed magnitude, as `sample_rand_augment` gives it.
    interpolation: 'nearest' or 'bilinear', for the geometric ops.
    fill: value the geometric ops bring in, an int or an (r, g, b) triple.

  Returns:
    A new uint8 image of the same shape.
  """
  if name in ('ShearX', 'ShearY'):
    return shear(image, magnitude, int(name == 'ShearX'), interpolation, fill)
  if name in ('TranslateX', 'TranslateY'):
    axis = int(name == 'TranslateX')
    return translate(image, int(magnitude), axis, interpolation, fill)
  if name == 'Rotate':
    return rotate(image, magnitude, interpolation, fill)
  if name == 'Brightness':
    return adjust_brightness(image, 1.0 + magnitude)
  if name == 'Color':
    return _on_rgb(adjust_saturation, image, 1.0 + magnitude)
  if name == 'Contrast':
    return _on_rgb(adjust_contrast, image, 1.0 + magnitude)
  if name == 'Sharpness':
    return adjust_sharpness(image, 1.0 + magnitude)
  if name == 'Posterize':
    return posterize(image, int(magnitude))
  if name == 'Solarize':
    return solarize(image, magnitude)
  if name == 'AutoContrast':
    return autocontrast(image)
  if name == 'Equalize':
    return equalize(image)
  if name == 'Identity':
    return image.copy()
  raise ValueError(f'unknown RandAugment op {name!r}; valid: {RANDAUGMENT_OPS}')


def rand_augment(
  image: np.ndarray, rng: np.random.Generator, cfg: Config | AugmentConfig
) -> np.ndarray:
  """Applies RandAugment as configured by the `randaugment_*` fields.

  Args:
    image: uint8 (H, W) or (H, W, 3) RGB image.
    rng: source of randomness; nothing is drawn when randaugment_ops is 0.
    cfg: config mapping or the `parse_config` result (faster).

  Returns:
    The uint8 augmented image, same shape (the input itself when off).
  """
  c = parse_config(cfg)
  height, width = image.shape[:2]
  for name, magnitude in sample_rand_augment(
    rng,
    c.randaugment_ops,
    c.randaugment_magnitude,
    c.randaugment_bins,
    c.randaugment_ops_list,
    height,
    width,
  ):
    image = apply_op(
      image, name, magnitude, c.randaugment_interpolation, c.randaugment_fill
    )
  return image

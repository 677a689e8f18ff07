"""The train augmentation's pixel work on the accelerator (`augment.on_device`).

The host path (`ferjax.data.augment.train_transform`) warps, jitters and
erases every image with OpenCV in the input workers. With
`config.augment.on_device` the workers only decode an image (resizing it to
`device_source_size` when set) and draw its parameters with the same
`augment.sample_train_params` call, so the random stream is the host path's;
`host_params` packs that draw into fixed-shape arrays that grain batches
beside the uint8 image, and `apply` (pure jax.numpy, jittable) does the
pixel work in the train step: one warp, then colour jitter in the drawn
order, grayscale and erasing, with the host's semantics. The host then
sends decoded images (e.g. 100 x 100 for a 224 px model) instead of
augmented ones; only erasing_value='random' adds a (size, size, 3) uint8
canvas of the drawn noise per example.

Geometry. The crop, rotation and flip are one 2x3 matrix from output pixel
(x, y, 1) to source pixel, built from `geometry.crop_matrix`, and bounds
that clamp the source coordinates:

- without rotation the host resizes the crop with `cv2.resize`, whose
  bilinear taps replicate the crop's edge (the bounds are the crop) and
  which area-averages when the crop shrinks in both axes (the 'area'
  flag). Both are separable, so the device contracts the image with two
  per-example weight matrices (`_axis_weights`);
- with rotation the host warps the whole image with `cv2.warpAffine` and the
  config's border mode; the device gathers the four bilinear taps (no
  bounds). The host first area-averages a window that shrinks by 2x or
  more; the device cannot (data-dependent shapes), so such images are
  refused (`host_params`) and `parse_config` refuses such configs.

Rounding. The host rounds to uint8 after every step and OpenCV computes in
fixed point (warp coordinates in 1/32 px, weights in 11 or 15 bits, the
luma in 14 bits); the device stays in float32 from the warp to the end and
returns [0, 1] floats, so the two differ by rounding only: on smooth images
a mean |diff| of about 0.3 grey levels and a 99th percentile of about 1,
a few levels at sharp edges under rotation. The hue is the largest case:
the host turns it in OpenCV's uint8 HSV (256 hue steps), whose round trip
alone moves saturated pixels by up to about 8 levels; the device turns the
float hue by the host's quantised shift.

RandAugment (`randaugment_ops` > 0) runs on the host only.
"""

from __future__ import annotations

import math

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from ferjax.data import augment
from ferjax.data import color
from ferjax.data import geometry

# The host's colour jitter ops by id; `_DEVICE_OPS` has the same order.
_JITTER_OPS = (
  color.adjust_brightness,
  color.adjust_contrast,
  color.adjust_saturation,
  color.adjust_hue,
)
# Factors of ops that are not applied: the identity of each op.
_IDENTITY = (1.0, 1.0, 1.0, 0.0)
# ITU-R 601 luma, as cv2.COLOR_RGB2GRAY.
_LUMA = (0.299, 0.587, 0.114)
_HIGHEST = jax.lax.Precision.HIGHEST


# ----------------------------------------------------------------------- host


def resize_source(image: np.ndarray, size: int, clip: bool = False):
  """Resizes an (H, W[, C]) image, or (T, H, W[, C]) frames, to size x size.

  `config.augment.device_source_size`: area averaging when both sides
  shrink, bilinear otherwise (`geometry.resize_interpolation`). The
  aspect ratio is not kept.
  """
  image = np.asarray(image)
  if clip:
    return np.stack([resize_source(f, size) for f in image])
  h, w = image.shape[:2]
  if (h, w) == (size, size):
    return image
  shrink = size <= h and size <= w
  flag = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
  out = cv2.resize(image, (size, size), interpolation=flag)
  return out[..., None] if out.ndim < image.ndim else out


def _geometry(params: augment.TrainParams, c: augment.AugmentConfig):
  """The output -> source matrix, the coordinate bounds and the area flag."""
  top, left, h, w = params.box
  inverse = np.linalg.inv(
    geometry.crop_matrix(params.box, c.size, params.angle)
  )
  if params.flip:  # Output column x shows column size - 1 - x of the warp.
    flip = np.array([[-1.0, 0.0, c.size - 1.0], [0, 1, 0], [0, 0, 1]])
    inverse = inverse @ flip
  if params.angle:
    bounds = (-math.inf, math.inf, -math.inf, math.inf)
    area = False
  else:
    bounds = (left, left + w - 1, top, top + h - 1)
    area = c.size <= w and c.size <= h
  return inverse[:2], bounds, area


def _jitter(params: augment.TrainParams) -> tuple[np.ndarray, np.ndarray]:
  """Op ids in the order applied (-1 pads), and every op's factor."""
  order = np.full(4, -1, np.int32)
  factors = np.array(_IDENTITY, np.float32)
  for k, (op, factor) in enumerate(params.color_jitter):
    i = _JITTER_OPS.index(op)
    order[k] = i
    # The hue shift as the host quantises it, in 1/256 turns.
    factors[i] = round(factor * 256) % 256 if i == 3 else factor
  return order, factors


def host_params(
  params: augment.TrainParams,
  image_hw: tuple[int, int],
  cfg: augment.Config | augment.AugmentConfig,
) -> dict[str, np.ndarray]:
  """Packs one `sample_train_params` draw into fixed-shape arrays for `apply`.

  Args:
    params: the draw, for an image of `image_hw`.
    image_hw: (height, width) of the image it will be applied to.
    cfg: the config it was drawn with.

  Returns:
    'matrix': float32 (2, 3), output pixel (x, y, 1) -> source pixel (x, y),
      crop, resize, rotation and flip folded in; 'bounds': float32 (4,)
      clamp of the source x and y, (x_min, x_max, y_min, y_max), the crop
      without rotation, infinite with it; 'area': bool, area averaging;
      'jitter_order': int32 (4,) op ids (0 brightness, 1 contrast,
      2 saturation, 3 hue) in the order applied, -1 padded; 'jitter_factors':
      float32 (4,) factor of each op, the hue as a shift in 1/256 turns
      (identities for ops not applied); 'grayscale': bool; 'erase_box':
      int32 (4,) (top, left, height, width), zeros for none; 'erase_value':
      float32 (3,) fill; and for erasing_value='random' 'erase_noise': uint8
      (size, size, 3), the drawn noise at the box (zeros elsewhere).

  Raises:
    ValueError: if RandAugment is on, the draw is for another image size, or
      a rotated warp may shrink this image by 2x or more (see the module
      docstring).
  """
  c = augment.parse_config(cfg)
  if params.rand_augment or c.randaugment_ops:
    raise ValueError(
      'RandAugment cannot run on the device; set augment.randaugment_ops=0 '
      'or augment.on_device=False.'
    )
  if tuple(params.image_shape) != tuple(image_hw):
    raise ValueError(
      f'augmentation parameters drawn for a {params.image_shape} image '
      f'cannot apply to a {tuple(image_hw)} image.'
    )
  if c.rotation and min(image_hw) >= 2 * c.size:
    raise ValueError(
      f'a {tuple(image_hw)} image can be cropped to 2 * size = {2 * c.size} '
      'px or more, which the host area-averages before a rotated warp and '
      f'the device cannot; set augment.device_source_size below {2 * c.size}'
      ', augment.rotation=0 or augment.on_device=False.'
    )
  matrix, bounds, area = _geometry(params, c)
  order, factors = _jitter(params)
  box, value = (0, 0, 0, 0), np.zeros(3, np.float32)
  noise = np.zeros((c.size, c.size, 3), np.uint8)
  if params.erase is not None:
    box = params.erase
    top, left, h, w = box
    if isinstance(params.erase_value, np.ndarray):
      noise[top : top + h, left : left + w] = params.erase_value
    else:
      value[:] = params.erase_value  # An int broadcasts to the channels.
  out = {
    'matrix': matrix.astype(np.float32),
    'bounds': np.asarray(bounds, np.float32),
    'area': np.bool_(area),
    'jitter_order': order,
    'jitter_factors': factors,
    'grayscale': np.bool_(params.grayscale),
    'erase_box': np.asarray(box, np.int32),
    'erase_value': value,
  }
  if c.erasing_value == 'random':
    out['erase_noise'] = noise
  return out


def prepare(
  image: np.ndarray,
  rng: np.random.Generator,
  cfg: augment.Config | augment.AugmentConfig,
  clip: bool = False,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
  """The host side of one training example: RGB uint8 pixels and a draw.

  Args:
    image: uint8 (H, W[, 1 or 3]) image or, with `clip`, (T, H, W[, 1 or 3])
      frames, already resized to `device_source_size` if that is set.
    rng: the only source of randomness; the draws are `train_transform`'s
      (or `clips.train_clip_transform`'s), in the same order.
    cfg: the augment config.
    clip: whether `image` holds the frames of a clip (one draw for all).

  Returns:
    (uint8 (..., H, W, 3) pixels, `host_params` of the draw).
  """
  c = augment.parse_config(cfg)
  image = np.asarray(image)
  if image.dtype != np.uint8:
    raise ValueError(f'expected uint8 pixels, got dtype {image.dtype}.')
  if image.ndim == 2 + clip:
    image = image[..., None]
  if image.ndim != 3 + clip or image.shape[-1] not in (1, 3):
    raise ValueError(f'expected RGB or grayscale pixels, got {image.shape}.')
  if image.shape[-1] == 1:
    image = np.repeat(image, 3, axis=-1)
  hw = image.shape[-3:-1]
  params = augment.sample_train_params(hw[0], hw[1], rng, c)
  return image, host_params(params, hw, c)


# --------------------------------------------------------------------- device


def _axis_weights(scale, offset, lo, hi, n_out: int, n_src: int, area):
  """(n_out, n_src) weights of one axis of `cv2.resize` of a crop.

  Output pixel i is centred at source coordinate scale * i + offset. Bilinear
  weights are the triangle kernel at that centre clamped to [lo, hi] (the
  crop's edge replicates); area weights are the overlap of each source
  pixel with the output pixel's preimage, over its length.
  """
  i = jnp.arange(n_out, dtype=jnp.float32)[:, None]
  j = jnp.arange(n_src, dtype=jnp.float32)[None, :]
  centre = jnp.clip(scale * i + offset, lo, hi)
  linear = jnp.maximum(0.0, 1.0 - jnp.abs(centre - j))
  e0, e1 = scale * (i - 0.5) + offset, scale * (i + 0.5) + offset
  start, stop = jnp.minimum(e0, e1), jnp.maximum(e0, e1)
  overlap = jnp.minimum(stop, j + 0.5) - jnp.maximum(start, j - 0.5)
  averaged = jnp.maximum(overlap, 0.0) / jnp.abs(scale)
  return jnp.where(area, averaged, linear)


def _resize(images, matrix, bounds, area, size: int):
  """Crop, resize and flip without rotation: two separable contractions."""
  _, h, w, _ = images.shape
  weights = jax.vmap(_axis_weights, in_axes=(0, 0, 0, 0, None, None, 0))
  wx = weights(
    matrix[:, 0, 0], matrix[:, 0, 2], bounds[:, 0], bounds[:, 1], size, w, area
  )
  wy = weights(
    matrix[:, 1, 1], matrix[:, 1, 2], bounds[:, 2], bounds[:, 3], size, h, area
  )
  # HIGHEST: TPUs and TF32 GPUs would otherwise multiply in reduced precision.
  rows = jnp.einsum('nxw,nhwc->nhxc', wx, images, precision=_HIGHEST)
  return jnp.einsum('nyh,nhxc->nyxc', wy, rows, precision=_HIGHEST)


def _border_index(i, n: int, border: str):
  """Tap index inside [0, n) and whether the tap reads the image."""
  if border == 'replicate':
    return jnp.clip(i, 0, n - 1), True
  if border == 'reflect':  # cv2.BORDER_REFLECT_101: the edge is not repeated.
    if n == 1:
      return jnp.zeros_like(i), True
    m = jnp.mod(i, 2 * (n - 1))
    return jnp.where(m > n - 1, 2 * (n - 1) - m, m), True
  return jnp.clip(i, 0, n - 1), (i >= 0) & (i < n)  # 'constant': black.


def _warp_one(image, matrix, bounds, size: int, border: str):
  """Bilinear `cv2.warpAffine` of one (H, W, C) image, the inverse map given."""
  h, w, _ = image.shape
  ys, xs = jnp.mgrid[0:size, 0:size].astype(jnp.float32)
  sx = matrix[0, 0] * xs + matrix[0, 1] * ys + matrix[0, 2]
  sy = matrix[1, 0] * xs + matrix[1, 1] * ys + matrix[1, 2]
  sx, sy = (
    jnp.clip(sx, bounds[0], bounds[1]),
    jnp.clip(sy, bounds[2], bounds[3]),
  )
  x0, y0 = jnp.floor(sx), jnp.floor(sy)
  fx, fy = sx - x0, sy - y0
  x0, y0 = x0.astype(jnp.int32), y0.astype(jnp.int32)
  flat = image.reshape(h * w, -1)
  out = 0.0
  for dy, wy in ((0, 1.0 - fy), (1, fy)):
    yi, y_in = _border_index(y0 + dy, h, border)
    for dx, wx in ((0, 1.0 - fx), (1, fx)):
      xi, x_in = _border_index(x0 + dx, w, border)
      weight = jnp.where(y_in & x_in, wy * wx, 0.0)
      out = out + weight[..., None] * flat[yi * w + xi]
  return out


def _luma(x):
  return jnp.einsum('...c,c->...', x, jnp.asarray(_LUMA, x.dtype))


def _brightness(x, f):
  return jnp.clip(x * f, 0.0, 255.0)


def _contrast(x, f):
  mean = jnp.mean(_luma(x), axis=(1, 2), keepdims=True)[..., None]
  return jnp.clip(x * f + (1.0 - f) * mean, 0.0, 255.0)


def _saturation(x, f):
  return jnp.clip(x * f + (1.0 - f) * _luma(x)[..., None], 0.0, 255.0)


def _hue(x, offset):
  """Turns the hue by `offset` / 256 of the wheel (HSV, V and S kept)."""
  r, g, b = x[..., 0], x[..., 1], x[..., 2]
  v, chroma = jnp.max(x, -1), jnp.max(x, -1) - jnp.min(x, -1)
  safe = jnp.where(chroma > 0, chroma, 1.0)
  # The hue in sixths of a turn, with cv2's tie order (red, green, blue).
  h = jnp.where(
    v == r,
    (g - b) / safe,
    jnp.where(v == g, (b - r) / safe + 2, (r - g) / safe + 4),
  )
  h = h[..., None] + offset * (6.0 / 256.0)
  k = jnp.mod(jnp.asarray([5.0, 3.0, 1.0]) + h, 6.0)
  out = v[..., None] - chroma[..., None] * jnp.clip(
    jnp.minimum(k, 4.0 - k), 0, 1
  )
  return jnp.where(offset == 0, x, out)


_DEVICE_OPS = (_brightness, _contrast, _saturation, _hue)


def _color_jitter(x, order, factors, c: augment.AugmentConfig):
  """The drawn ops in the drawn order; only the configured ones are traced."""
  on = [
    i
    for i, s in enumerate((c.brightness, c.contrast, c.saturation, c.hue))
    if s
  ]
  for k in range(len(on)):
    for i in on:
      f = factors[:, i, None, None, None]
      pick = (order[:, k] == i)[:, None, None, None]
      x = jnp.where(pick, _DEVICE_OPS[i](x, f), x)
  return x


def _erase(x, box, value, noise):
  """Fills each image's box with its value (or noise); empty boxes do nothing."""
  n = jnp.arange(x.shape[1])
  top, left, h, w = (box[:, i, None] for i in range(4))
  rows = (n >= top) & (n < top + h)
  cols = (n >= left) & (n < left + w)
  inside = (rows[:, :, None] & cols[:, None, :])[..., None]
  fill = value[:, None, None, :] if noise is None else noise.astype(x.dtype)
  return jnp.where(inside, fill, x)


def apply(images, params: dict, cfg) -> jax.Array:
  """Augments a batch on the device as `augment.apply_train_params` would.

  Args:
    images: uint8 (B, H, W, 3) images, or (B, T, H, W, 3) clips whose
      frames all take their clip's parameters.
    params: `host_params` arrays batched to a leading B.
    cfg: the augment config they were drawn with (static).

  Returns:
    float32 (B[, T], size, size, 3) images in [0, 1].
  """
  c = augment.parse_config(cfg)
  lead = images.shape[:-3]
  x = images.reshape(-1, *images.shape[-3:]).astype(jnp.float32)
  p = {k: jnp.asarray(v) for k, v in params.items()}
  if len(lead) == 2:  # One draw per clip, the same for its T frames.
    p = {k: jnp.repeat(v, lead[1], axis=0) for k, v in p.items()}
  if c.rotation:
    warp = jax.vmap(_warp_one, in_axes=(0, 0, 0, None, None))
    x = warp(x, p['matrix'], p['bounds'], c.size, c.border)
  else:
    x = _resize(x, p['matrix'], p['bounds'], p['area'], c.size)
  if c.color_jitter and c.color_jitter_prob:
    x = _color_jitter(x, p['jitter_order'], p['jitter_factors'], c)
  if c.grayscale_prob:
    gray = p['grayscale'][:, None, None, None]
    x = jnp.where(gray, _luma(x)[..., None], x)
  if c.erasing_prob:
    x = _erase(x, p['erase_box'], p['erase_value'], p.get('erase_noise'))
  return (x / 255.0).reshape(*lead, c.size, c.size, 3)


def batch_images(batch: dict, cfg=None) -> jax.Array:
  """The train step's float32 [0, 1] images of a batch.

  Batches with an 'augment' entry (`config.augment.on_device`) are augmented
  here by `apply`; others were augmented on the host and are only scaled.

  Args:
    batch: a train batch, {'image': uint8, ...[, 'augment': params]}.
    cfg: the augment config; needed only for batches with 'augment'.
  """
  if 'augment' not in batch:
    return batch['image'].astype(jnp.float32) / 255.0
  if cfg is None:
    raise ValueError(
      "a batch with 'augment' parameters needs config.augment to apply them."
    )
  return apply(batch['image'], batch['augment'], cfg)

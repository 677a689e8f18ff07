"""Per-example image augmentation for the grain input pipeline.

Pure numpy/OpenCV transforms on uint8 host images. Every random choice comes
from the `np.random.Generator` that grain hands to `random_map`, so a pipeline
is exactly reproducible and resumes from a checkpoint with the same stream.
Images stay uint8 (the train step converts to float on device), colour images
are RGB, and every output is `(size, size, 3)`: grayscale is replicated to
three channels after the geometric step, which runs on one channel.

The train ops follow torchvision's RandomResizedCrop, RandomRotation,
RandomHorizontalFlip, RandAugment (`ferjax.data.randaugment`), ColorJitter,
RandomGrayscale and RandomErasing, in that order. Crop, rotation and resize
are one `cv2.warpAffine`, or one `cv2.resize` when there is no rotation
(`ferjax.data.geometry`), and the colour ops are `ferjax.data.color`'s; see
`default_config` for the fields and where they differ from torchvision.

Parse a config once with `parse_config` and pass the result to
`train_transform` / `eval_transform`: both accept a mapping too, but then
validate it on every call. `train_transform` is `sample_train_params` (every
random draw) then `apply_train_params` (no randomness), so one draw can
augment all the frames of a video clip alike (`ferjax.data.clips`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import cv2
import numpy as np

from ferjax.data import color
from ferjax.data import geometry
from ferjax.data import randaugment
from ferjax.data.augment_config import AugmentConfig
from ferjax.data.augment_config import Config
from ferjax.data.augment_config import default_config
from ferjax.data.augment_config import parse_config
from ferjax.data.geometry import Box

__all__ = [
  'AugmentConfig',
  'default_config',
  'parse_config',
  'sample_color_jitter',
  'sample_erase',
  'erase',
  'TrainParams',
  'sample_train_params',
  'apply_train_params',
  'train_transform',
  'eval_transform',
]

# -------------------------------------------------------------- colour jitter


_JITTER_OPS: tuple[Callable[[np.ndarray, float], np.ndarray], ...] = (
  color.adjust_brightness,
  color.adjust_contrast,
  color.adjust_saturation,
  color.adjust_hue,
)


def sample_color_jitter(
  rng: np.random.Generator,
  brightness: float,
  contrast: float,
  saturation: float,
  hue: float,
) -> list[tuple[Callable[[np.ndarray, float], np.ndarray], float]]:
  """Samples ColorJitter's op order and factors, as torchvision's `get_params`.

  Args:
    rng: source of randomness.
    brightness: factor range [max(0, 1 - b), 1 + b]; 0 is off.
    contrast: factor range [max(0, 1 - c), 1 + c]; 0 is off.
    saturation: factor range [max(0, 1 - s), 1 + s]; 0 is off.
    hue: shift range [-h, h]; 0 is off.

  Returns:
    (op, factor) pairs in the order to apply them, the off ops left out.
  """
  order = rng.permutation(4)
  factors = [
    rng.uniform(max(0.0, 1.0 - b), 1.0 + b) if b else None
    for b in (brightness, contrast, saturation)
  ]
  factors.append(rng.uniform(-hue, hue) if hue else None)
  return [(_JITTER_OPS[i], factors[i]) for i in order if factors[i] is not None]


# -------------------------------------------------------------------- erasing

# torchvision's number of tries before RandomErasing gives up.
_ATTEMPTS = 10


def sample_erase(
  height: int,
  width: int,
  rng: np.random.Generator,
  scale: tuple[float, float],
  ratio: tuple[float, float],
) -> Box | None:
  """Samples a RandomErasing box, as torchvision's `get_params`.

  Args:
    height: image height in pixels.
    width: image width in pixels.
    rng: source of randomness.
    scale: (min, max) fraction of the image area.
    ratio: (min, max) height / width, sampled log-uniformly.

  Returns:
    (top, left, height, width) of the rectangle, or None when ten samples all
    failed to fit strictly inside the image (nothing is erased then).
  """
  area = height * width
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(_ATTEMPTS):
    target = area * rng.uniform(scale[0], scale[1])
    aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
    h = round(math.sqrt(target * aspect))
    w = round(math.sqrt(target / aspect))
    if h < height and w < width:
      top = int(rng.integers(0, height - h + 1))
      left = int(rng.integers(0, width - w + 1))
      return top, left, h, w
  return None


def erase(
  image: np.ndarray,
  box: Box,
  value: str | int | tuple[int, int, int] | np.ndarray,
  rng: np.random.Generator | None = None,
) -> np.ndarray:
  """Returns a copy of an (H, W, C) image with `box` filled with `value`.

  Args:
    image: uint8 (H, W, C) image.
    box: (top, left, height, width) of the rectangle.
    value: 'random' for uniform noise in [0, 255] per pixel and channel, an
      int for every channel, one int per channel, or a uint8 (h, w, C)
      array of the box's size (e.g. noise drawn beforehand).
    rng: source of the noise; needed only for value='random'.

  Returns:
    The erased copy.
  """
  top, left, h, w = box
  out = image.copy()
  if isinstance(value, str):
    if rng is None:
      raise ValueError("erase(value='random') needs an rng.")
    value = rng.integers(0, 256, (h, w, image.shape[2]), dtype=np.uint8)
  out[top : top + h, left : left + w] = value
  return out


# ----------------------------------------------------------------- transforms


def _check_image(image: np.ndarray) -> np.ndarray:
  """Returns `image` as (H, W) for grayscale or (H, W, 3) for colour."""
  image = np.asarray(image)
  if image.dtype != np.uint8:
    raise ValueError(f'expected a uint8 image, got dtype {image.dtype}.')
  if image.ndim == 3 and image.shape[2] == 1:
    image = image[..., 0]
  if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
    raise ValueError(
      f'expected an (H, W), (H, W, 1) or (H, W, 3) image, got shape {image.shape}.'
    )
  if image.shape[0] < 1 or image.shape[1] < 1:
    raise ValueError(f'expected a non-empty image, got shape {image.shape}.')
  return image


def _to_rgb(image: np.ndarray) -> np.ndarray:
  if image.ndim == 2:
    return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
  return np.ascontiguousarray(image)


@dataclasses.dataclass(frozen=True)
class TrainParams:
  """One draw of every random choice that `train_transform` makes.

  `sample_train_params` draws it; `apply_train_params` applies it to any
  number of images of the drawn size, e.g. every frame of a video clip.

  Attributes:
    image_shape: (height, width) of the images the draw is for.
    box: the crop, (top, left, height, width).
    angle: rotation in degrees, counter-clockwise positive.
    flip: whether to flip horizontally.
    rand_augment: RandAugment's (op name, signed magnitude) pairs, in order.
    color_jitter: the colour jitter's (op, factor) pairs, in order.
    grayscale: whether to convert to grayscale.
    erase: the erased rectangle, or None.
    erase_value: what fills it: an int, an (r, g, b) triple or, for
      erasing_value='random', the noise itself.
  """

  image_shape: tuple[int, int]
  box: Box
  angle: float
  flip: bool
  rand_augment: tuple[tuple[str, float], ...]
  color_jitter: tuple[
    tuple[Callable[[np.ndarray, float], np.ndarray], float], ...
  ]
  grayscale: bool
  erase: Box | None
  erase_value: int | tuple[int, int, int] | np.ndarray


def sample_train_params(
  height: int, width: int, rng: np.random.Generator, cfg: Config | AugmentConfig
) -> TrainParams:
  """Draws every random choice of `train_transform` for one image size.

  The draws are those `train_transform` makes, in the same order: the
  flip, jitter, grayscale and erasing coin tosses are drawn whatever their
  probability, so changing one probability leaves the earlier ops' draws
  unchanged; RandAugment draws nothing while randaugment_ops is 0.

  Args:
    height: image height in pixels.
    width: image width in pixels.
    rng: the only source of randomness.
    cfg: config mapping or the `parse_config` result (faster).

  Returns:
    The parameters, for `apply_train_params`.
  """
  c = parse_config(cfg)
  box = geometry.sample_crop(height, width, rng, c.crop_scale, c.crop_ratio)
  angle = float(rng.uniform(-c.rotation, c.rotation)) if c.rotation else 0.0
  flip = bool(rng.random() < c.flip)
  rand_ops = ()
  if c.randaugment_ops:
    rand_ops = tuple(
      randaugment.sample_rand_augment(
        rng,
        c.randaugment_ops,
        c.randaugment_magnitude,
        c.randaugment_bins,
        c.randaugment_ops_list,
        c.size,
        c.size,
      )
    )
  jitter = ()
  if c.color_jitter and rng.random() < c.color_jitter_prob:
    jitter = tuple(
      sample_color_jitter(rng, c.brightness, c.contrast, c.saturation, c.hue)
    )
  grayscale = bool(rng.random() < c.grayscale_prob)
  erase_box, erase_value = None, c.erasing_value
  if rng.random() < c.erasing_prob:
    erase_box = sample_erase(
      c.size, c.size, rng, c.erasing_scale, c.erasing_ratio
    )
    if erase_box is not None and isinstance(erase_value, str):
      _, _, h, w = erase_box
      erase_value = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
  return TrainParams(
    image_shape=(height, width),
    box=box,
    angle=angle,
    flip=flip,
    rand_augment=rand_ops,
    color_jitter=jitter,
    grayscale=grayscale,
    erase=erase_box,
    erase_value=erase_value,
  )


def apply_train_params(
  image: np.ndarray, params: TrainParams, cfg: Config | AugmentConfig
) -> np.ndarray:
  """Applies drawn `train_transform` parameters to one image (no randomness).

  Args:
    image: uint8 (H, W), (H, W, 1) or (H, W, 3) RGB image of the size the
      parameters were drawn for.
    params: the `sample_train_params` result.
    cfg: the config they were drawn with.

  Returns:
    The uint8 (size, size, 3) augmented image.
  """
  c = parse_config(cfg)
  image = _check_image(image)
  if image.shape[:2] != params.image_shape:
    raise ValueError(
      f'augmentation parameters drawn for a {params.image_shape} image '
      f'cannot apply to a {image.shape[:2]} image.'
    )
  out = geometry.resized_crop(image, params.box, c.size, params.angle, c.border)
  if params.flip:
    out = cv2.flip(out, 1)
  out = _to_rgb(out)
  if params.rand_augment:
    for name, magnitude in params.rand_augment:
      out = randaugment.apply_op(
        out, name, magnitude, c.randaugment_interpolation, c.randaugment_fill
      )
  for op, factor in params.color_jitter:
    out = op(out, factor)
  if params.grayscale:
    out = color.to_grayscale(out)
  if params.erase is not None:
    out = erase(out, params.erase, params.erase_value)
  return out


def train_transform(
  image: np.ndarray, rng: np.random.Generator, cfg: Config | AugmentConfig
) -> np.ndarray:
  """Randomly augments one training image.

  Crop + rotation + resize, horizontal flip, RandAugment, colour jitter,
  grayscale and erasing, each as configured (see `default_config`): one
  `sample_train_params` draw, applied by `apply_train_params`.

  Args:
    image: uint8 (H, W), (H, W, 1) or (H, W, 3) RGB image of any size.
    rng: the only source of randomness, e.g. grain's per-example generator.
    cfg: config mapping or the `parse_config` result (faster).

  Returns:
    The uint8 (size, size, 3) augmented image.
  """
  c = parse_config(cfg)
  image = _check_image(image)
  params = sample_train_params(image.shape[0], image.shape[1], rng, c)
  return apply_train_params(image, params, c)


def eval_transform(
  image: np.ndarray, cfg: Config | AugmentConfig
) -> np.ndarray:
  """Deterministically resizes one evaluation image to (size, size, 3).

  Args:
    image: uint8 (H, W), (H, W, 1) or (H, W, 3) RGB image of any size.
    cfg: config mapping or the `parse_config` result; uses `size`,
      `eval_resize` and `eval_crop_fraction`.

  Returns:
    The uint8 (size, size, 3) image.
  """
  c = parse_config(cfg)
  image = _check_image(image)
  h, w = image.shape[:2]
  size = c.size
  if c.eval_resize == 'resize':
    out = cv2.resize(
      image,
      (size, size),
      interpolation=geometry.resize_interpolation(w, h, size, size),
    )
    return _to_rgb(out)
  # torchvision Resize(int) then CenterCrop: the short side becomes `short`
  # and the long side keeps the aspect ratio, rounded down.
  short = int(size / c.eval_crop_fraction)
  if h <= w:
    nh, nw = short, int(short * w / h)
  else:
    nh, nw = int(short * h / w), short
  resized = cv2.resize(
    image, (nw, nh), interpolation=geometry.resize_interpolation(w, h, nw, nh)
  )
  top = int(round((nh - size) / 2.0))
  left = int(round((nw - size) / 2.0))
  return _to_rgb(resized[top : top + size, left : left + size])

"""Augmentation config: the fields, their defaults and their validation.

`default_config()` documents every field with its torchvision counterpart;
`parse_config` validates a config once into a frozen `AugmentConfig` that the
transforms in `ferjax.data.augment` read.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import ml_collections
import numpy as np

Config = Mapping[str, Any] | ml_collections.ConfigDict

# torchvision's RandAugment ops, in its order.
RANDAUGMENT_OPS = (
  'Identity',
  'ShearX',
  'ShearY',
  'TranslateX',
  'TranslateY',
  'Rotate',
  'Brightness',
  'Color',
  'Contrast',
  'Sharpness',
  'Posterize',
  'Solarize',
  'AutoContrast',
  'Equalize',
)
# A lighter list for aligned faces; `ferjax.data.randaugment` says why.
RANDAUGMENT_LITE_OPS = (
  'Identity',
  'TranslateX',
  'TranslateY',
  'Rotate',
  'Brightness',
  'Color',
  'Contrast',
  'Sharpness',
  'AutoContrast',
)
_DEFAULTS: dict[str, Any] = {
  'size': 112,
  'crop_scale': (0.08, 1.0),
  'crop_ratio': (3 / 4, 4 / 3),
  'rotation': 0.0,
  'border': 'constant',
  'flip': 0.5,
  'randaugment_ops': 0,
  'randaugment_magnitude': 9,
  'randaugment_bins': 31,
  'randaugment_ops_list': RANDAUGMENT_OPS,
  'randaugment_fill': 0,
  'randaugment_interpolation': 'nearest',
  'brightness': 0.0,
  'contrast': 0.0,
  'saturation': 0.0,
  'hue': 0.0,
  'color_jitter_prob': 1.0,
  'grayscale_prob': 0.0,
  'erasing_prob': 0.0,
  'erasing_scale': (0.02, 0.33),
  'erasing_ratio': (0.3, 3.3),
  'erasing_value': 0,
  'eval_resize': 'resize',
  'eval_crop_fraction': 0.875,
  'on_device': False,
  'device_source_size': 0,
}
_BORDERS = ('constant', 'reflect', 'replicate')
_EVAL_RESIZES = ('resize', 'center_crop')
_INTERPOLATIONS = ('nearest', 'bilinear')


def default_config() -> ml_collections.ConfigDict:
  """Returns the augmentation config with every field at its default.

  Fields (the torchvision transform each one mirrors in brackets):
    size: side of the square output in pixels.
    crop_scale: (min, max) fraction of the image area that the random crop
      covers, 0 < min <= max <= 1 [RandomResizedCrop scale]. Ten attempts,
      then a central crop clamped to `crop_ratio`.
    crop_ratio: (min, max) width / height of the crop, sampled log-uniformly,
      0 < min <= max [RandomResizedCrop ratio]. crop_scale=(1, 1) with
      crop_ratio=(1, 1) keeps the whole of a square image (a non-square one
      gets its central square, as in torchvision).
    rotation: maximum rotation in degrees, the angle is uniform in
      [-rotation, rotation], counter-clockwise positive; 0 is off
      [RandomRotation degrees]. It is part of the crop's warp, so corners
      outside the crop but inside the image show image content rather than
      the fill torchvision would leave there.
    border: how the warp fills pixels outside the image: 'constant' (black,
      torchvision's fill=0), 'reflect' (mirror without repeating the edge) or
      'replicate' (repeat the edge).
    flip: probability of a horizontal flip [RandomHorizontalFlip p].
    randaugment_ops: number of RandAugment ops applied in a row, each drawn
      uniformly from `randaugment_ops_list`; 0 is off [RandAugment num_ops].
      RandAugment runs right after the flip, before the colour jitter,
      grayscale and erasing, where torchvision pipelines put it (after
      RandomResizedCrop and RandomHorizontalFlip, before ToTensor, Normalize
      and RandomErasing). `ferjax.data.randaugment` defines the ops.
    randaugment_magnitude: the magnitude bin, an int in
      [0, randaugment_bins - 1], shared by all ops [RandAugment magnitude].
    randaugment_bins: number of magnitude bins, an int >= 2; bin b of n
      sets every op to b / (n - 1) of its range [RandAugment
      num_magnitude_bins].
    randaugment_ops_list: names of the ops to choose from, a subset of
      RANDAUGMENT_OPS (default: all of torchvision's); RANDAUGMENT_LITE_OPS
      is a lighter list for faces.
    randaugment_fill: value of the pixels that ShearX/Y, TranslateX/Y and
      Rotate bring in from outside the image, an int in [0, 255] or an
      (r, g, b) triple [RandAugment fill; None there is 0].
    randaugment_interpolation: 'nearest' or 'bilinear' sampling for those
      ops [RandAugment interpolation].
    brightness: brightness factor uniform in [max(0, 1 - b), 1 + b]; 0 is off
      [ColorJitter brightness].
    contrast: contrast factor uniform in [max(0, 1 - c), 1 + c], blending
      towards the mean luma; 0 is off [ColorJitter contrast].
    saturation: saturation factor uniform in [max(0, 1 - s), 1 + s], blending
      towards the per-pixel luma; 0 is off [ColorJitter saturation].
    hue: hue shift uniform in [-h, h] of a full turn of the colour wheel,
      0 <= h <= 0.5; 0 is off [ColorJitter hue]. The four jitter ops run in a
      random order, as in torchvision.
    color_jitter_prob: probability of applying the colour jitter at all
      [RandomApply([ColorJitter], p)].
    grayscale_prob: probability of converting to 3-channel grayscale, after
      the colour jitter [RandomGrayscale p].
    erasing_prob: probability of erasing a random rectangle, the last op
      [RandomErasing p].
    erasing_scale: (min, max) fraction of the image area erased,
      0 < min <= max <= 1 [RandomErasing scale].
    erasing_ratio: (min, max) height / width of the erased rectangle, sampled
      log-uniformly, 0 < min <= max [RandomErasing ratio]. Ten attempts, then
      nothing is erased.
    erasing_value: 'random' for per-pixel uniform noise in [0, 255]
      [RandomErasing value='random'], an int in [0, 255] or an (r, g, b)
      triple. torchvision's value=0 erases a normalised tensor, which is the
      dataset mean colour here, not black.
    eval_resize: how `eval_transform` reaches `size`: 'resize' squashes the
      whole image [Resize((size, size))]; 'center_crop' resizes the short side
      to int(size / eval_crop_fraction) and takes the central square
      [Resize(int(size / f)), CenterCrop(size)].
    eval_crop_fraction: the fraction f above, 0 < f <= 1.
    on_device: run the train augmentation's pixel work on the accelerator
      inside the train step (`ferjax.data.device_augment`): the host only
      decodes and draws the parameters, with the same draws as the host
      path. Not with RandAugment (randaugment_ops > 0), nor with a rotation
      that can shrink by 2x or more (a crop side >= 2 * size), which the host
      path area-averages first.
    device_source_size: S > 0 first resizes every decoded training image to
      S x S (area averaging when shrinking, bilinear otherwise) so that the
      images of a batch stack, as `on_device` needs; this changes the aspect
      ratio of non-square images and is meant for variable-size datasets such
      as AffectNet's crops. It applies to the host path too, which then
      draws the same parameters as the device path. 0 keeps the decoded
      images, which must then all have one size for `on_device` (e.g.
      RAF-DB aligned 100 x 100, FERPlus 48 x 48, synthetic_fer).
  """
  fields = dict(_DEFAULTS)
  # These hold an int or a triple (or a string), so must not be type-locked.
  for name in ('erasing_value', 'randaugment_fill'):
    fields[name] = ml_collections.FieldReference(
      _DEFAULTS[name], field_type=object
    )
  return ml_collections.ConfigDict(fields)


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  """A validated augmentation config; `default_config` documents the fields."""

  size: int
  crop_scale: tuple[float, float]
  crop_ratio: tuple[float, float]
  rotation: float
  border: str
  flip: float
  randaugment_ops: int
  randaugment_magnitude: int
  randaugment_bins: int
  randaugment_ops_list: tuple[str, ...]
  randaugment_fill: int | tuple[int, int, int]
  randaugment_interpolation: str
  brightness: float
  contrast: float
  saturation: float
  hue: float
  color_jitter_prob: float
  grayscale_prob: float
  erasing_prob: float
  erasing_scale: tuple[float, float]
  erasing_ratio: tuple[float, float]
  erasing_value: str | int | tuple[int, int, int]
  eval_resize: str
  eval_crop_fraction: float
  on_device: bool
  device_source_size: int

  @property
  def color_jitter(self) -> bool:
    """Whether any of the four colour jitter ops is on."""
    return bool(self.brightness or self.contrast or self.saturation or self.hue)


def _invalid(name: str, value: Any, expected: str) -> ValueError:
  return ValueError(
    f'augment config field {name}={value!r}: expected {expected}.'
  )


def _is_number(value: Any) -> bool:
  return isinstance(value, int | float | np.integer | np.floating) and not (
    isinstance(value, bool | np.bool_) or math.isnan(value)
  )


def _number(
  name: str, value: Any, lo: float, hi: float, expected: str
) -> float:
  if not _is_number(value) or not lo <= value <= hi:
    raise _invalid(name, value, expected)
  return float(value)


def _pair(
  name: str, value: Any, hi: float, expected: str
) -> tuple[float, float]:
  """Parses a (min, max) pair with 0 < min <= max <= hi."""
  if isinstance(value, str) or not hasattr(value, '__len__') or len(value) != 2:
    raise _invalid(name, value, expected)
  lo, up = value
  if not (_is_number(lo) and _is_number(up) and 0 < lo <= up <= hi):
    raise _invalid(name, value, expected)
  return float(lo), float(up)


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
  if value not in choices:
    raise _invalid(name, value, f'one of {choices}')
  return value


def _is_int(value: Any) -> bool:
  return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _is_byte(value: Any) -> bool:
  return _is_int(value) and 0 <= value <= 255


def _int(name: str, value: Any, lo: int, hi: float, expected: str) -> int:
  if not _is_int(value) or not lo <= value <= hi:
    raise _invalid(name, value, expected)
  return int(value)


def _bool(name: str, value: Any) -> bool:
  if not isinstance(value, bool | np.bool_):
    raise _invalid(name, value, 'True or False')
  return bool(value)


def _check_on_device(c: AugmentConfig) -> None:
  """Refuses what `ferjax.data.device_augment` cannot reproduce exactly."""
  if not c.on_device:
    return
  if c.randaugment_ops:
    raise ValueError(
      f'augment config field randaugment_ops={c.randaugment_ops} cannot run '
      'with on_device=True (RandAugment runs on the host only); set '
      'randaugment_ops=0 or on_device=False.'
    )
  if c.rotation and c.device_source_size >= 2 * c.size:
    raise ValueError(
      f'augment config field device_source_size={c.device_source_size} '
      f'with rotation={c.rotation} and on_device=True: a crop of 2 * size = '
      f'{2 * c.size} px or more is area-averaged before the rotated warp on '
      'the host, which the device path does not do; set device_source_size '
      f'below {2 * c.size}, rotation=0 or on_device=False.'
    )


def _byte_or_triple(value: Any) -> int | tuple[int, int, int] | None:
  """Returns an int in [0, 255] or a triple of them, None for anything else."""
  if _is_byte(value):
    return int(value)
  if (
    isinstance(value, tuple | list)
    and len(value) == 3
    and all(map(_is_byte, value))
  ):
    return tuple(int(v) for v in value)
  return None


def _erasing_value(value: Any) -> str | int | tuple[int, int, int]:
  if isinstance(value, str) and value == 'random':
    return value
  parsed = _byte_or_triple(value)
  if parsed is None:
    raise _invalid(
      'erasing_value', value, "'random', an int in [0, 255] or three such ints"
    )
  return parsed


def _randaugment_fill(value: Any) -> int | tuple[int, int, int]:
  parsed = _byte_or_triple(value)
  if parsed is None:
    raise _invalid(
      'randaugment_fill', value, 'an int in [0, 255] or three such ints'
    )
  return parsed


def _randaugment_ops_list(value: Any) -> tuple[str, ...]:
  name = 'randaugment_ops_list'
  if not isinstance(value, tuple | list) or not value:
    raise _invalid(
      name, value, f'a non-empty tuple of op names from {RANDAUGMENT_OPS}'
    )
  unknown = [op for op in value if op not in RANDAUGMENT_OPS]
  if unknown:
    raise _invalid(
      name, value, f'op names from {RANDAUGMENT_OPS}; unknown: {unknown}'
    )
  repeated = sorted({op for op in value if value.count(op) > 1})
  if repeated:
    raise _invalid(name, value, f'each op at most once; repeated: {repeated}')
  return tuple(value)


def parse_config(cfg: Config | AugmentConfig) -> AugmentConfig:
  """Validates `cfg` and fills missing fields from `default_config`.

  Args:
    cfg: a mapping or ConfigDict with fields of `default_config` (missing ones
      take their defaults), or an already parsed config, returned as is.

  Returns:
    The validated, immutable config.

  Raises:
    ValueError: for an unknown field or a value out of range; the message
      names the field and its valid range.
  """
  if isinstance(cfg, AugmentConfig):
    return cfg
  if not hasattr(cfg, 'items'):
    raise TypeError(
      f'augment config must be a mapping, got {type(cfg).__name__}.'
    )
  given = dict(cfg.items())
  unknown = sorted(set(given) - set(_DEFAULTS))
  if unknown:
    raise ValueError(
      f'unknown augment config field(s) {unknown}; valid fields are '
      f'{sorted(_DEFAULTS)}.'
    )
  v = {**_DEFAULTS, **given}
  prob = 'a probability in [0, 1]'
  jitter = 'a number >= 0 (0 is off)'
  # The magnitude's range depends on the number of bins.
  bins = _int(
    'randaugment_bins', v['randaugment_bins'], 2, math.inf, 'an int >= 2'
  )
  parsed = AugmentConfig(
    size=_int('size', v['size'], 1, math.inf, 'an int >= 1'),
    crop_scale=_pair(
      'crop_scale', v['crop_scale'], 1.0, '(min, max) with 0 < min <= max <= 1'
    ),
    crop_ratio=_pair(
      'crop_ratio', v['crop_ratio'], math.inf, '(min, max) with 0 < min <= max'
    ),
    rotation=_number(
      'rotation', v['rotation'], 0.0, 180.0, 'degrees in [0, 180] (0 is off)'
    ),
    border=_choice('border', v['border'], tuple(_BORDERS)),
    flip=_number('flip', v['flip'], 0.0, 1.0, prob),
    randaugment_ops=_int(
      'randaugment_ops',
      v['randaugment_ops'],
      0,
      math.inf,
      'an int >= 0 (0 is off)',
    ),
    randaugment_magnitude=_int(
      'randaugment_magnitude',
      v['randaugment_magnitude'],
      0,
      bins - 1,
      f'an int in [0, randaugment_bins - 1] = [0, {bins - 1}]',
    ),
    randaugment_bins=bins,
    randaugment_ops_list=_randaugment_ops_list(v['randaugment_ops_list']),
    randaugment_fill=_randaugment_fill(v['randaugment_fill']),
    randaugment_interpolation=_choice(
      'randaugment_interpolation',
      v['randaugment_interpolation'],
      _INTERPOLATIONS,
    ),
    brightness=_number('brightness', v['brightness'], 0.0, math.inf, jitter),
    contrast=_number('contrast', v['contrast'], 0.0, math.inf, jitter),
    saturation=_number('saturation', v['saturation'], 0.0, math.inf, jitter),
    hue=_number('hue', v['hue'], 0.0, 0.5, 'a number in [0, 0.5] (0 is off)'),
    color_jitter_prob=_number(
      'color_jitter_prob', v['color_jitter_prob'], 0.0, 1.0, prob
    ),
    grayscale_prob=_number(
      'grayscale_prob', v['grayscale_prob'], 0.0, 1.0, prob
    ),
    erasing_prob=_number('erasing_prob', v['erasing_prob'], 0.0, 1.0, prob),
    erasing_scale=_pair(
      'erasing_scale',
      v['erasing_scale'],
      1.0,
      '(min, max) with 0 < min <= max <= 1',
    ),
    erasing_ratio=_pair(
      'erasing_ratio',
      v['erasing_ratio'],
      math.inf,
      '(min, max) with 0 < min <= max',
    ),
    erasing_value=_erasing_value(v['erasing_value']),
    eval_resize=_choice('eval_resize', v['eval_resize'], _EVAL_RESIZES),
    eval_crop_fraction=_number(
      'eval_crop_fraction',
      v['eval_crop_fraction'],
      math.ulp(0.0),
      1.0,
      'a fraction in (0, 1]',
    ),
    on_device=_bool('on_device', v['on_device']),
    device_source_size=_int(
      'device_source_size',
      v['device_source_size'],
      0,
      math.inf,
      'an int >= 0 (0 keeps the decoded size)',
    ),
  )
  _check_on_device(parsed)
  return parsed

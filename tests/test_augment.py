"""Tests for ferjax.data.augment."""

import math

import cv2
import ml_collections
import numpy as np
import pytest

from ferjax.data import augment
from ferjax.data import color
from ferjax.data import geometry

# Every random op off: the train transform is then a plain resize.
_OFF = {
  'crop_scale': (1.0, 1.0),
  'crop_ratio': (1.0, 1.0),
  'rotation': 0.0,
  'flip': 0.0,
}
_ALL_ON = {
  'size': 64,
  'rotation': 20.0,
  'border': 'reflect',
  'brightness': 0.4,
  'contrast': 0.4,
  'saturation': 0.4,
  'hue': 0.1,
  'grayscale_prob': 0.2,
  'erasing_prob': 0.5,
  'erasing_value': 'random',
}


def _image(shape, seed=0):
  return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _rng(seed=0):
  return np.random.default_rng(seed)


@pytest.mark.parametrize(
  'shape', [(48, 48), (48, 48, 1), (100, 100, 3), (112, 112, 3), (90, 120, 3)]
)
def test_output_shape_and_dtype(shape):
  image = _image(shape)
  for eval_resize in ('resize', 'center_crop'):
    cfg = augment.parse_config({**_ALL_ON, 'eval_resize': eval_resize})
    for out in (
      augment.train_transform(image, _rng(), cfg),
      augment.eval_transform(image, cfg),
    ):
      assert out.shape == (64, 64, 3)
      assert out.dtype == np.uint8
      assert out.flags.c_contiguous


def test_grayscale_input_is_replicated():
  image = _image((48, 48, 1))
  out = augment.train_transform(image, _rng(), {**_ALL_ON, 'erasing_prob': 0.0})
  np.testing.assert_array_equal(out[..., 0], out[..., 1])
  np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_train_transform_is_deterministic_per_seed():
  image = _image((112, 112, 3))
  cfg = augment.parse_config(_ALL_ON)
  outs = [augment.train_transform(image, _rng(seed), cfg) for seed in range(4)]
  again = [augment.train_transform(image, _rng(seed), cfg) for seed in range(4)]
  for a, b in zip(outs, again, strict=True):
    np.testing.assert_array_equal(a, b)
  for i in range(4):
    for j in range(i + 1, 4):
      assert not np.array_equal(outs[i], outs[j])


def test_input_is_not_modified():
  image = _image((64, 64, 3))
  copy = image.copy()
  augment.train_transform(image, _rng(), {**_ALL_ON, 'erasing_prob': 1.0})
  np.testing.assert_array_equal(image, copy)


def test_flip_mirrors_the_unflipped_result():
  # The flip coin is drawn either way, so the random crop is the same too.
  image = _image((100, 100, 3))
  for seed in range(5):
    kept = augment.train_transform(image, _rng(seed), {'size': 64, 'flip': 0.0})
    flipped = augment.train_transform(
      image, _rng(seed), {'size': 64, 'flip': 1.0}
    )
    np.testing.assert_array_equal(flipped, kept[:, ::-1])


@pytest.mark.parametrize(
  ('shape', 'interpolation'),
  [((48, 48), cv2.INTER_LINEAR), ((112, 112, 3), cv2.INTER_AREA)],
)
def test_everything_off_is_a_plain_resize(shape, interpolation):
  image = _image(shape)
  expected = cv2.resize(image, (64, 64), interpolation=interpolation)
  if expected.ndim == 2:
    expected = np.repeat(expected[..., None], 3, axis=2)
  cfg = {**_OFF, 'size': 64}
  np.testing.assert_array_equal(
    augment.train_transform(image, _rng(), cfg), expected
  )
  np.testing.assert_array_equal(augment.eval_transform(image, cfg), expected)


def test_eval_center_crop():
  # 100x80 -> short side int(64 / 0.8) = 80, long side int(80 * 100 / 80) = 100,
  # then the central 64x64: rows 18..82, columns 8..72.
  image = _image((100, 80, 3))
  cfg = {'size': 64, 'eval_resize': 'center_crop', 'eval_crop_fraction': 0.8}
  out = augment.eval_transform(image, cfg)
  np.testing.assert_array_equal(out, image[18:82, 8:72])


def test_sample_crop_statistics():
  height, width = 90, 120
  scale, ratio = (0.2, 0.6), (0.5, 2.0)
  areas, ratios = [], []
  rng = _rng()
  for _ in range(2000):
    top, left, h, w = geometry.sample_crop(height, width, rng, scale, ratio)
    assert top >= 0 and top + h <= height
    assert left >= 0 and left + w <= width
    areas.append(h * w / (height * width))
    ratios.append(w / h)
  areas, ratios = np.array(areas), np.array(ratios)
  # Rounding each side to whole pixels moves the area and ratio a little.
  assert areas.min() >= scale[0] * 0.9 and areas.max() <= scale[1] * 1.1
  assert ratios.min() >= ratio[0] * 0.9 and ratios.max() <= ratio[1] * 1.1
  # Both ends of the ranges are reached, and the log-ratio is centred.
  assert areas.min() < 0.25 and areas.max() > 0.55
  assert ratios.min() < 0.6 and ratios.max() > 1.7
  assert abs(np.mean(np.log(ratios))) < 0.1


def test_sample_crop_falls_back_to_the_central_crop():
  # A 2:1 crop of the whole area never fits a 100x80 image.
  box = geometry.sample_crop(100, 80, _rng(), (1.0, 1.0), (2.0, 2.0))
  assert box == (30, 0, 40, 80)
  assert geometry.sample_crop(64, 64, _rng(), (1.0, 1.0), (1.0, 1.0)) == (
    0,
    0,
    64,
    64,
  )


def test_rotation_by_90_degrees_turns_counter_clockwise():
  image = _image((40, 40, 3))
  out = geometry.resized_crop(image, (0, 0, 40, 40), 40, angle=90.0)
  np.testing.assert_array_equal(out, np.rot90(image))


def test_warp_is_aligned_with_resize():
  # A near-zero angle takes the warp path; it must land on the same pixel
  # grid as the plain resize (fixed-point rounding aside).
  image = _image((48, 48))
  warped = geometry.resized_crop(image, (0, 0, 48, 48), 64, 1e-9, 'replicate')
  resized = geometry.resized_crop(image, (0, 0, 48, 48), 64, 0.0)
  assert np.abs(warped.astype(int) - resized).max() <= 1


def test_strongly_shrinking_warp_averages_instead_of_aliasing():
  # On noise, bilinear sampling of a 3x shrink differs from the area average
  # by about 33 levels on average; the pre-shrunk warp stays close to it.
  image = _image((256, 256))
  box = (10, 20, 200, 180)
  warped = geometry.resized_crop(image, box, 64, 1e-9)
  area = geometry.resized_crop(image, box, 64, 0.0)
  assert np.abs(warped.astype(int) - area).mean() < 15


def test_rotation_changes_the_output():
  image = _image((64, 64, 3))
  base = {**_OFF, 'size': 64}
  still = augment.train_transform(image, _rng(), base)
  turned = augment.train_transform(image, _rng(), {**base, 'rotation': 30.0})
  assert not np.array_equal(still, turned)


def test_brightness():
  image = _image((16, 16, 3))
  np.testing.assert_array_equal(color.adjust_brightness(image, 1.0), image)
  half = np.clip(np.rint(image * 0.5), 0, 255).astype(np.uint8)
  np.testing.assert_array_equal(color.adjust_brightness(image, 0.5), half)
  assert color.adjust_brightness(image, 0.0).max() == 0


def test_contrast():
  # A red-heavy image: its mean luma (~98) is far from its channel mean (~127).
  rng = _rng()
  image = np.stack(
    [
      rng.integers(200, 256, (16, 16)),
      rng.integers(0, 60, (16, 16)),
      rng.integers(100, 140, (16, 16)),
    ],
    axis=-1,
  ).astype(np.uint8)
  luma = (image.astype(float) @ [0.299, 0.587, 0.114]).mean()
  flat = color.adjust_contrast(image, 0.0)
  assert np.unique(flat).size == 1
  assert abs(int(flat[0, 0, 0]) - luma) <= 1
  np.testing.assert_array_equal(color.adjust_contrast(image, 1.0), image)
  doubled = color.adjust_contrast(image, 2.0).astype(int)
  expected = np.clip(2.0 * image - luma, 0, 255)
  assert np.abs(doubled - expected).max() <= 1


def test_saturation():
  image = _image((16, 16, 3))
  gray = color.adjust_saturation(image, 0.0).astype(int)
  luma = image.astype(float) @ [0.299, 0.587, 0.114]
  for channel in range(3):
    assert np.abs(gray[..., channel] - luma).max() <= 1
  np.testing.assert_array_equal(color.adjust_saturation(image, 1.0), image)


def test_hue_shift_turns_the_colour_wheel():
  red = np.zeros((4, 4, 3), np.uint8)
  red[..., 0] = 255
  green = color.adjust_hue(red, 1 / 3)
  blue = color.adjust_hue(red, -1 / 3)
  assert np.all(green[..., 1] >= 250) and np.all(green[..., [0, 2]] <= 8)
  assert np.all(blue[..., 2] >= 250) and np.all(blue[..., :2] <= 8)
  np.testing.assert_array_equal(color.adjust_hue(red, 0.0), red)


def test_grayscale_prob_one_gives_gray():
  out = augment.train_transform(
    _image((64, 64, 3)), _rng(), {'size': 64, 'grayscale_prob': 1.0}
  )
  np.testing.assert_array_equal(out[..., 0], out[..., 1])
  np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_sample_color_jitter_ranges_and_order():
  rng = _rng()
  seen_orders = set()
  for _ in range(200):
    ops = augment.sample_color_jitter(rng, 0.3, 0.0, 1.5, 0.1)
    names = tuple(op.__name__ for op, _ in ops)
    assert sorted(names) == [
      'adjust_brightness',
      'adjust_hue',
      'adjust_saturation',
    ]
    seen_orders.add(names)
    factors = {op.__name__: f for op, f in ops}
    assert 0.7 <= factors['adjust_brightness'] <= 1.3
    assert 0.0 <= factors['adjust_saturation'] <= 2.5
    assert -0.1 <= factors['adjust_hue'] <= 0.1
  assert len(seen_orders) == 6


@pytest.mark.parametrize('value', [0, (10, 20, 30), 'random'])
def test_erasing_changes_one_rectangle(value):
  scale = (0.05, 0.3)
  size = 64
  # No pixel is 0 or (10, 20, 30), so every erased pixel shows.
  image = np.random.default_rng(1).integers(40, 256, (size, size, 3), np.uint8)
  cfg = {**_OFF, 'size': size, 'erasing_prob': 1.0, 'erasing_scale': scale}
  cfg['erasing_value'] = value
  erased = 0
  for seed in range(30):
    out = augment.train_transform(image, _rng(seed), cfg)
    changed = np.any(out != image, axis=-1)
    if not changed.any():
      continue  # All ten samples missed; nothing is erased then.
    erased += 1
    rows, cols = np.nonzero(changed)
    top, bottom, left, right = rows.min(), rows.max(), cols.min(), cols.max()
    box = out[top : bottom + 1, left : right + 1]
    if value != 'random':
      # Every pixel of the bounding box is erased: it is one rectangle.
      np.testing.assert_array_equal(box, np.broadcast_to(value, box.shape))
    else:
      # Noise keeps a few pixels by chance, so the change fills most of it.
      assert changed[top : bottom + 1, left : right + 1].mean() > 0.95
    fraction = (bottom - top + 1) * (right - left + 1) / size**2
    assert scale[0] * 0.8 <= fraction <= scale[1] * 1.2
    # Outside the rectangle nothing changed.
    outside = np.ones_like(changed)
    outside[top : bottom + 1, left : right + 1] = False
    np.testing.assert_array_equal(out[outside], image[outside])
  assert erased >= 20


def test_sample_erase_gives_up_when_nothing_fits():
  assert augment.sample_erase(8, 8, _rng(), (1.0, 1.0), (1.0, 1.0)) is None


def test_default_config_is_valid_and_settable():
  cfg = augment.default_config()
  assert set(cfg) == set(augment.parse_config({}).__dataclass_fields__)
  cfg.erasing_value = 'random'
  cfg.size = 64
  assert augment.parse_config(cfg).erasing_value == 'random'
  assert augment.train_transform(_image((48, 48)), _rng(), cfg).shape == (
    64,
    64,
    3,
  )
  assert isinstance(cfg, ml_collections.ConfigDict)


@pytest.mark.parametrize(
  ('override', 'field'),
  [
    ({'crop_scales': (0.5, 1.0)}, 'crop_scales'),
    ({'crop_scale': (0.9, 0.1)}, 'crop_scale'),
    ({'crop_scale': (0.5, 1.5)}, 'crop_scale'),
    ({'crop_ratio': (0.0, 1.0)}, 'crop_ratio'),
    ({'flip': 1.5}, 'flip'),
    ({'erasing_prob': -0.1}, 'erasing_prob'),
    ({'grayscale_prob': math.nan}, 'grayscale_prob'),
    ({'hue': 0.6}, 'hue'),
    ({'brightness': -1.0}, 'brightness'),
    ({'rotation': 200}, 'rotation'),
    ({'size': 0}, 'size'),
    ({'size': 64.0}, 'size'),
    ({'border': 'wrap'}, 'border'),
    ({'erasing_value': 256}, 'erasing_value'),
    ({'erasing_value': 'noise'}, 'erasing_value'),
    ({'eval_resize': 'crop'}, 'eval_resize'),
    ({'eval_crop_fraction': 0.0}, 'eval_crop_fraction'),
  ],
)
def test_validation_names_the_field(override, field):
  with pytest.raises(ValueError, match=field):
    augment.parse_config(override)


def test_validation_gives_the_range():
  with pytest.raises(ValueError, match=r'0 < min <= max <= 1'):
    augment.parse_config({'erasing_scale': (0.4, 0.2)})
  with pytest.raises(ValueError, match=r'\[0, 1\]'):
    augment.train_transform(_image((8, 8)), _rng(), {'flip': 2})


def test_bad_images_are_rejected():
  cfg = augment.parse_config({'size': 8})
  with pytest.raises(ValueError, match='uint8'):
    augment.eval_transform(np.zeros((8, 8, 3), np.float32), cfg)
  with pytest.raises(ValueError, match='shape'):
    augment.eval_transform(np.zeros((8, 8, 4), np.uint8), cfg)

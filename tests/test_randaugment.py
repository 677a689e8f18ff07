"""Tests for ferjax.data.randaugment and its place in the train transform."""

import numpy as np
import pytest
from PIL import Image
from PIL import ImageEnhance
from PIL import ImageOps

from ferjax.data import augment
from ferjax.data import color
from ferjax.data import randaugment as ra

_NEAREST = Image.Resampling.NEAREST
_BILINEAR = Image.Resampling.BILINEAR
_AFFINE = Image.Transform.AFFINE
_ENHANCE = {
  'Brightness': ImageEnhance.Brightness,
  'Color': ImageEnhance.Color,
  'Contrast': ImageEnhance.Contrast,
  'Sharpness': ImageEnhance.Sharpness,
}
_GEOMETRIC = ('ShearX', 'ShearY', 'TranslateX', 'TranslateY', 'Rotate')
_SIGNED = _GEOMETRIC + tuple(_ENHANCE)
# Every random op but RandAugment off: the rest is a plain resize.
_OFF = {
  'crop_scale': (1.0, 1.0),
  'crop_ratio': (1.0, 1.0),
  'flip': 0.0,
}


def _image(shape, seed=0):
  return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _rng(seed=0):
  return np.random.default_rng(seed)


def _pil_geometric(image, name, magnitude, resample, fill):
  """The op as torchvision runs it on a PIL image."""
  pil = Image.fromarray(image)
  if image.ndim == 2 and isinstance(fill, tuple):
    fill = fill[0]
  if name == 'Rotate':
    out = pil.rotate(magnitude, resample, fillcolor=fill)
  else:
    s, t = magnitude, int(magnitude)
    matrix = {
      'ShearX': (1, s, 0, 0, 1, 0),
      'ShearY': (1, 0, 0, s, 1, 0),
      'TranslateX': (1, 0, -t, 0, 1, 0),
      'TranslateY': (1, 0, 0, 0, 1, -t),
    }[name]
    out = pil.transform(pil.size, _AFFINE, matrix, resample, fillcolor=fill)
  return np.asarray(out)


def _pil_op(image, name, magnitude):
  """The colour and lookup-table ops as PIL defines them."""
  pil = Image.fromarray(image)
  if name in _ENHANCE:
    return np.asarray(_ENHANCE[name](pil).enhance(1.0 + magnitude))
  out = {
    'Posterize': lambda: ImageOps.posterize(pil, int(magnitude)),
    'Solarize': lambda: ImageOps.solarize(pil, magnitude),
    'AutoContrast': lambda: ImageOps.autocontrast(pil),
    'Equalize': lambda: ImageOps.equalize(pil),
  }[name]()
  return np.asarray(out)


# ----------------------------------------------------------------- magnitudes


def test_magnitudes_follow_torchvision_table():
  # Bin 9 of 31 (torchvision's default) on a 112 x 96 (h x w) image.
  expected = {
    'Identity': 0.0,
    'ShearX': 0.09,
    'ShearY': 0.09,
    'TranslateX': 150 / 331 * 96 * 0.3,
    'TranslateY': 150 / 331 * 112 * 0.3,
    'Rotate': 9.0,
    'Brightness': 0.27,
    'Color': 0.27,
    'Contrast': 0.27,
    'Sharpness': 0.27,
    'Posterize': 7.0,  # 8 - round(9 / 7.5)
    'Solarize': 178.5,  # 255 - 9 * 8.5
    'AutoContrast': 0.0,
    'Equalize': 0.0,
  }
  assert tuple(expected) == ra.RANDAUGMENT_OPS
  for name, value in expected.items():
    got = ra.op_magnitude(name, 9, 31, 112, 96)
    assert got == pytest.approx(value, rel=1e-6), name
  # The first and last bins: nothing (8 bits, threshold 255) to the maxima.
  ends = {
    'ShearX': (0.0, 0.3),
    'TranslateY': (0.0, 150 / 331 * 112),
    'Rotate': (0.0, 30.0),
    'Color': (0.0, 0.9),
    'Posterize': (8.0, 4.0),
    'Solarize': (255.0, 0.0),
  }
  for name, (first, last) in ends.items():
    assert ra.op_magnitude(name, 0, 31, 112, 96) == first
    assert ra.op_magnitude(name, 30, 31, 112, 96) == pytest.approx(last)
  # Posterize rounds half to even, as torch.round: with 9 bins the bin over
  # two is 0.5, 1.5, 2.5, 3.5 for bins 1, 3, 5, 7.
  bits = [ra.op_magnitude('Posterize', b, 9, 8, 8) for b in range(9)]
  assert bits == [8, 8, 7, 6, 6, 6, 5, 4, 4]


@pytest.mark.torch
def test_magnitudes_match_torch_linspace():
  torch = pytest.importorskip('torch')
  for bins in (2, 5, 11, 31):
    for name, stop in (
      ('ShearX', 0.3),
      ('Rotate', 30.0),
      ('Sharpness', 0.9),
      ('TranslateX', 150.0 / 331.0 * 112),
    ):
      want = torch.linspace(0.0, stop, bins).numpy()
      got = [ra.op_magnitude(name, b, bins, 112, 112) for b in range(bins)]
      # torch's vectorised loop may round the last float32 bit differently.
      np.testing.assert_allclose(got, want, rtol=2e-7, atol=0)
    want = torch.linspace(255.0, 0.0, bins).numpy()
    got = [ra.op_magnitude('Solarize', b, bins, 8, 8) for b in range(bins)]
    np.testing.assert_allclose(got, want, rtol=2e-7, atol=1e-5)
    levels = 8 - (torch.arange(bins) / ((bins - 1) / 4)).round().int()
    got = [ra.op_magnitude('Posterize', b, bins, 8, 8) for b in range(bins)]
    np.testing.assert_array_equal(got, levels.numpy())


# ------------------------------------------------------------- ops against PIL


@pytest.mark.parametrize('name', _GEOMETRIC)
@pytest.mark.parametrize('shape', [(29, 37, 3), (24, 24)])
def test_geometric_ops_match_pil(name, shape):
  image = _image(shape)
  h, w = shape[:2]
  for fill in (0, (10, 200, 30)):
    # Bin 20 of 31 shears by 0.2, where every fifth row samples on a pixel
    # edge: PIL's fixed-point rounding decides those.
    for b in (5, 9, 20, 30):
      for sign in (1, -1):
        m = sign * ra.op_magnitude(name, b, 31, h, w)
        nearest = ra.apply_op(image, name, m, 'nearest', fill)
        np.testing.assert_array_equal(
          nearest, _pil_geometric(image, name, m, _NEAREST, fill)
        )
        bilinear = ra.apply_op(image, name, m, 'bilinear', fill)
        expected = _pil_geometric(image, name, m, _BILINEAR, fill)
        assert np.abs(bilinear.astype(int) - expected).max() <= 1


@pytest.mark.parametrize('name', ['Brightness', 'Contrast', 'Sharpness'])
@pytest.mark.parametrize('shape', [(29, 37, 3), (24, 24)])
def test_enhance_ops_match_pil(name, shape):
  image = _image(shape)
  for factor in (0.1, 0.55, 0.73, 1.27, 1.9):
    out = ra.apply_op(image, name, factor - 1.0)
    expected = _pil_op(image, name, factor - 1.0)
    assert np.abs(out.astype(int) - expected).max() <= 1, factor


def test_color_matches_pil():
  image = _image((29, 37, 3))
  for factor in (0.55, 0.73, 1.27, 1.9):
    out = ra.apply_op(image, 'Color', factor - 1.0).astype(int)
    assert np.abs(out - _pil_op(image, 'Color', factor - 1.0)).max() <= 1
  # Near factor 0 the two luma roundings add up.
  out = ra.apply_op(image, 'Color', -0.9).astype(int)
  assert np.abs(out - _pil_op(image, 'Color', -0.9)).max() <= 2
  # A gray image has no colour to remove.
  gray = _image((24, 24))
  np.testing.assert_array_equal(ra.apply_op(gray, 'Color', -0.9), gray)


@pytest.mark.parametrize(
  'name', ['Posterize', 'Solarize', 'AutoContrast', 'Equalize']
)
@pytest.mark.parametrize(
  'shape', [(29, 37, 3), (16, 16, 3), (24, 24), (3, 200, 3)]
)
def test_lookup_table_ops_match_pil_exactly(name, shape):
  # Small images make Equalize's last level overflow 255, which PIL clips.
  rng = _rng()
  image = _image(shape)
  narrow = (rng.integers(0, 80, shape) + rng.integers(40, 120)).astype(np.uint8)
  for img in (image, narrow):
    for b in (0, 3, 9, 17, 30):
      m = ra.op_magnitude(name, b, 31, *shape[:2])
      np.testing.assert_array_equal(
        ra.apply_op(img, name, m), _pil_op(img, name, m)
      )


def test_autocontrast_and_equalize_leave_flat_channels():
  image = np.zeros((8, 8, 3), np.uint8)
  image[..., 0] = 77
  image[..., 1] = _image((8, 8))
  image[:4, :, 2], image[4:, :, 2] = 10, 20
  for name in ('AutoContrast', 'Equalize'):
    out = ra.apply_op(image, name, 0.0)
    np.testing.assert_array_equal(out[..., 0], image[..., 0])
    np.testing.assert_array_equal(out, _pil_op(image, name, 0.0))
  # Two levels stretch to black and white.
  assert set(np.unique(ra.autocontrast(image)[..., 2])) == {0, 255}


def test_sharpness_keeps_the_border_and_smooths_the_inside():
  image = _image((6, 7, 3))
  smooth = ra.adjust_sharpness(image, 0.0).astype(int)
  inner = np.zeros((4, 5, 3))
  for dy in (-1, 0, 1):
    for dx in (-1, 0, 1):
      weight = 5 if dy == dx == 0 else 1
      inner += weight * image[1 + dy : 5 + dy, 1 + dx : 6 + dx].astype(int)
  assert np.abs(smooth[1:-1, 1:-1] - inner / 13).max() <= 0.5
  border = np.ones((6, 7), bool)
  border[1:-1, 1:-1] = False
  np.testing.assert_array_equal(smooth[border], image[border])
  np.testing.assert_array_equal(ra.adjust_sharpness(image, 1.0), image)


def test_translate_and_shear_by_hand():
  image = _image((5, 6, 3))
  right = ra.translate(image, 2, axis=1, fill=(1, 2, 3))
  np.testing.assert_array_equal(right[:, 2:], image[:, :-2])
  np.testing.assert_array_equal(
    right[:, :2], np.broadcast_to((1, 2, 3), (5, 2, 3))
  )
  up = ra.translate(image, -1, axis=0)
  np.testing.assert_array_equal(up[:-1], image[1:])
  assert not up[-1].any()
  # A unit shear about the top-left corner moves row y, whose centre is at
  # y + 1/2, left by y + 1/2 pixels: it samples x + y + 1 (nearest).
  sheared = ra.shear(image, 1.0, axis=1)
  for y in range(5):
    np.testing.assert_array_equal(sheared[y, : 5 - y], image[y, y + 1 :])
    assert not sheared[y, 5 - y :].any()


def test_rotate_turns_counter_clockwise():
  image = _image((8, 8, 3))
  np.testing.assert_array_equal(ra.rotate(image, 90.0), np.rot90(image))
  np.testing.assert_array_equal(ra.rotate(image, -90.0), np.rot90(image, -1))


# ------------------------------------------------------------------ magnitude 0


@pytest.mark.parametrize('name', ra.RANDAUGMENT_OPS)
@pytest.mark.parametrize('shape', [(20, 30, 3), (20, 30)])
def test_bin_zero_is_the_identity(name, shape):
  # Solarize's bin-0 threshold is 255: only pure white changes, so the image
  # leaves it out; AutoContrast and Equalize have no magnitude.
  image = np.minimum(_image(shape), 254)
  image.flat[0] = 3  # AutoContrast and Equalize see more than one level.
  h, w = shape[:2]
  for sign in (1.0, -1.0) if name in _SIGNED else (1.0,):
    out = ra.apply_op(image, name, sign * ra.op_magnitude(name, 0, 31, h, w))
    assert out.shape == image.shape and out.dtype == np.uint8
    if name in ('AutoContrast', 'Equalize'):
      assert not np.array_equal(out, image)
    else:
      np.testing.assert_array_equal(out, image)
  white = np.full(shape, 255, np.uint8)
  solarized = ra.apply_op(
    white, 'Solarize', ra.op_magnitude('Solarize', 0, 31, h, w)
  )
  assert not solarized.any()


def test_magnitude_zero_keeps_the_image_through_rand_augment():
  image = np.minimum(_image((32, 32, 3)), 254)
  ops = tuple(
    op for op in ra.RANDAUGMENT_OPS if op not in ('AutoContrast', 'Equalize')
  )
  cfg = {'randaugment_ops': 4, 'randaugment_magnitude': 0}
  cfg['randaugment_ops_list'] = ops
  for seed in range(5):
    out = ra.rand_augment(image, _rng(seed), cfg)
    np.testing.assert_array_equal(out, image)


# --------------------------------------------------------------------- sampling


def test_rand_augment_is_deterministic_per_seed():
  image = _image((40, 40, 3))
  cfg = augment.parse_config(
    {'randaugment_ops': 2, 'randaugment_magnitude': 15}
  )
  outs = [ra.rand_augment(image, _rng(seed), cfg) for seed in range(6)]
  for seed, out in enumerate(outs):
    np.testing.assert_array_equal(out, ra.rand_augment(image, _rng(seed), cfg))
  assert len({out.tobytes() for out in outs}) >= 5


def test_op_choice_is_uniform_and_signs_are_fair():
  rng = _rng()
  ops = ra.RANDAUGMENT_OPS
  draws = ra.sample_rand_augment(rng, 14_000, 9, 31, ops, 64, 64)
  names = [name for name, _ in draws]
  counts = np.array([names.count(op) for op in ops])
  # 1000 expected per op; a binomial standard deviation is about 31.
  assert np.all(np.abs(counts - 1000) < 130), counts
  signed = [m for name, m in draws if name in ('Rotate', 'ShearX', 'Color')]
  negative = np.mean(np.array(signed) < 0)
  assert abs(negative - 0.5) < 0.04
  assert all(m > 0 for name, m in draws if name == 'Solarize')
  lite = ra.sample_rand_augment(rng, 200, 9, 31, ra.RANDAUGMENT_LITE_OPS, 8, 8)
  assert {name for name, _ in lite} == set(ra.RANDAUGMENT_LITE_OPS)


# ---------------------------------------------------------- in the train order


def test_off_leaves_the_train_transform_bit_identical():
  image = _image((100, 100, 3))
  base = {
    'size': 64,
    'rotation': 20.0,
    'brightness': 0.4,
    'contrast': 0.4,
    'saturation': 0.4,
    'hue': 0.1,
    'grayscale_prob': 0.2,
    'erasing_prob': 0.5,
  }
  off = {
    **base,
    'randaugment_ops': 0,
    'randaugment_magnitude': 30,
    'randaugment_ops_list': ra.RANDAUGMENT_LITE_OPS,
    'randaugment_fill': (128, 128, 128),
    'randaugment_interpolation': 'bilinear',
  }
  for seed in range(5):
    np.testing.assert_array_equal(
      augment.train_transform(image, _rng(seed), off),
      augment.train_transform(image, _rng(seed), base),
    )
  on = {**base, 'randaugment_ops': 2}
  changed = [
    not np.array_equal(
      augment.train_transform(image, _rng(seed), on),
      augment.train_transform(image, _rng(seed), base),
    )
    for seed in range(5)
  ]
  assert all(changed)


def test_randaugment_runs_after_the_flip():
  # ShearY about the top-left corner does not commute with a flip.
  image = _image((32, 32, 3))
  cfg = {**_OFF, 'size': 32, 'flip': 1.0, 'randaugment_ops': 1}
  cfg.update(randaugment_ops_list=('ShearY',), randaugment_magnitude=30)
  out = augment.train_transform(image, _rng(), cfg)
  flip_first = [ra.shear(image[:, ::-1], s, axis=0) for s in (0.3, -0.3)]
  shear_first = [ra.shear(image, s, axis=0)[:, ::-1] for s in (0.3, -0.3)]
  assert any(np.array_equal(out, e) for e in flip_first)
  assert not any(np.array_equal(out, e) for e in shear_first)


def test_randaugment_runs_before_grayscale_and_erasing():
  rng = _rng()
  # Channels with different ranges, so that AutoContrast and the luma do not
  # commute; nothing is 0, so that erasing with 0 shows.
  image = np.stack(
    [
      rng.integers(20, 100, (32, 32)),
      rng.integers(50, 200, (32, 32)),
      rng.integers(150, 250, (32, 32)),
    ],
    axis=-1,
  ).astype(np.uint8)
  cfg = {**_OFF, 'size': 32, 'grayscale_prob': 1.0, 'randaugment_ops': 1}
  cfg['randaugment_ops_list'] = ('AutoContrast',)
  out = augment.train_transform(image, _rng(), cfg)
  expected = color.to_grayscale(ra.autocontrast(image))
  np.testing.assert_array_equal(out, expected)
  assert not np.array_equal(out, ra.autocontrast(color.to_grayscale(image)))
  cfg = {**_OFF, 'size': 32, 'erasing_prob': 1.0, 'randaugment_ops': 1}
  cfg['randaugment_ops_list'] = ('AutoContrast',)
  for seed in range(5):
    out = augment.train_transform(image, _rng(seed), cfg)
    erased = np.all(out == 0, axis=-1)
    # AutoContrast alone maps each channel's minimum to 0, not a whole pixel.
    assert erased.sum() > 10
    np.testing.assert_array_equal(out[~erased], ra.autocontrast(image)[~erased])


@pytest.mark.parametrize('shape', [(48, 48), (48, 48, 1), (90, 120, 3)])
def test_output_shape_dtype_and_gray_inputs(shape):
  image = _image(shape)
  cfg = augment.parse_config(
    {'size': 40, 'randaugment_ops': 3, 'randaugment_magnitude': 20}
  )
  for seed in range(8):
    out = augment.train_transform(image, _rng(seed), cfg)
    assert out.shape == (40, 40, 3)
    assert out.dtype == np.uint8
    assert out.flags.c_contiguous
    if len(shape) == 2 or shape[2] == 1:
      np.testing.assert_array_equal(out[..., 0], out[..., 1])
      np.testing.assert_array_equal(out[..., 0], out[..., 2])


@pytest.mark.parametrize('name', ra.RANDAUGMENT_OPS)
def test_every_op_keeps_shape_and_input(name):
  for shape in ((20, 30), (20, 30, 3)):
    image = _image(shape)
    copy = image.copy()
    m = ra.op_magnitude(name, 12, 31, *shape[:2])
    out = ra.apply_op(image, name, -m, 'bilinear', (5, 6, 7))
    assert out.shape == shape and out.dtype == np.uint8
    assert out.flags.c_contiguous
    np.testing.assert_array_equal(image, copy)


# ------------------------------------------------------------------ validation


def test_default_config_fields():
  cfg = augment.default_config()
  assert cfg.randaugment_ops == 0
  assert cfg.randaugment_magnitude == 9
  assert cfg.randaugment_bins == 31
  assert cfg.randaugment_ops_list == ra.RANDAUGMENT_OPS
  assert cfg.randaugment_fill == 0
  assert cfg.randaugment_interpolation == 'nearest'
  cfg.randaugment_ops_list = list(ra.RANDAUGMENT_LITE_OPS)
  cfg.randaugment_fill = (128, 128, 128)
  parsed = augment.parse_config(cfg)
  assert parsed.randaugment_ops_list == ra.RANDAUGMENT_LITE_OPS
  assert parsed.randaugment_fill == (128, 128, 128)
  assert set(ra.RANDAUGMENT_LITE_OPS) < set(ra.RANDAUGMENT_OPS)
  parsed = augment.parse_config(
    {'randaugment_bins': 11, 'randaugment_magnitude': 10}
  )
  assert parsed.randaugment_magnitude == 10


@pytest.mark.parametrize(
  ('override', 'field'),
  [
    ({'randaugment_ops': -1}, 'randaugment_ops'),
    ({'randaugment_ops': 1.5}, 'randaugment_ops'),
    ({'randaugment_ops': True}, 'randaugment_ops'),
    ({'randaugment_magnitude': 31}, 'randaugment_magnitude'),
    ({'randaugment_magnitude': -1}, 'randaugment_magnitude'),
    ({'randaugment_magnitude': 9.0}, 'randaugment_magnitude'),
    ({'randaugment_bins': 1}, 'randaugment_bins'),
    ({'randaugment_ops_list': 'Rotate'}, 'randaugment_ops_list'),
    ({'randaugment_ops_list': ()}, 'randaugment_ops_list'),
    ({'randaugment_fill': 256}, 'randaugment_fill'),
    ({'randaugment_fill': (1, 2)}, 'randaugment_fill'),
    ({'randaugment_fill': 'black'}, 'randaugment_fill'),
    ({'randaugment_interpolation': 'bicubic'}, 'randaugment_interpolation'),
  ],
)
def test_validation_names_the_field(override, field):
  with pytest.raises(ValueError, match=field):
    augment.parse_config(override)


def test_validation_lists_the_bad_ops():
  with pytest.raises(ValueError, match=r"unknown: \['Invert', 'Cutout'\]"):
    augment.parse_config(
      {'randaugment_ops_list': ('Rotate', 'Invert', 'Cutout')}
    )
  with pytest.raises(ValueError, match="'AutoContrast', 'Equalize'"):
    augment.parse_config({'randaugment_ops_list': ('rotate',)})
  with pytest.raises(ValueError, match=r"repeated: \['Rotate'\]"):
    augment.parse_config({'randaugment_ops_list': ('Rotate', 'Rotate')})
  with pytest.raises(ValueError, match=r'\[0, 10\]'):
    augment.parse_config({'randaugment_bins': 11, 'randaugment_magnitude': 11})
  with pytest.raises(ValueError, match='unknown RandAugment op'):
    ra.apply_op(_image((4, 4, 3)), 'Invert', 0.0)

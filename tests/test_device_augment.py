"""Tests for ferjax.data.device_augment (`augment.on_device`).

The device path must agree with `augment.apply_train_params` on the same
draw up to rounding: the host rounds to uint8 after every step and OpenCV
works in fixed point (1/32 px warp coordinates, 11- or 15-bit weights), so
each step may differ by about half a grey level, and a little more at sharp
edges where a 1/64 px coordinate error moves a steep ramp. On smooth
face-like images that gives a mean |diff| well under 1.5 levels (1.5/255
of the [0, 1] range) and a 99th percentile under 2 levels, while a
dropped flip or erased box moves tens of levels over more than 1 % of the
pixels, which the 99th percentile catches (checked below). The hue is the
exception: OpenCV's uint8 HSV has 256 hue steps, whose round trip alone
moves saturated pixels by several levels, so its bound is the host's own
round-trip error plus the same slack.
"""

import dataclasses
import functools

import chex
import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ferjax import train
from ferjax import writers
from ferjax.data import augment
from ferjax.data import device_augment
from ferjax.data import pipeline

_MEAN_TOL = 1.5  # grey levels
_P99_TOL = 2.0

_MANET = {'size': 112, 'crop_scale': (0.08, 1.0), 'flip': 0.5}
_CONFIGS = {
  'manet_crop_flip': _MANET,
  'area_shrink': {'size': 56, 'crop_scale': (0.2, 1.0), 'flip': 0.5},
  'rotate_constant': {'size': 64, 'rotation': 30.0, 'border': 'constant'},
  'rotate_reflect': {'size': 64, 'rotation': 30.0, 'border': 'reflect'},
  'rotate_replicate': {'size': 64, 'rotation': 30.0, 'border': 'replicate'},
  'jitter_grayscale': {
    'size': 64,
    'brightness': 0.4,
    'contrast': 0.4,
    'saturation': 0.4,
    'grayscale_prob': 0.5,
  },
  'erase_int': {'size': 64, 'erasing_prob': 1.0, 'erasing_value': 0},
  'erase_triple': {
    'size': 64,
    'erasing_prob': 1.0,
    'erasing_value': (10, 200, 30),
  },
  'erase_random': {'size': 64, 'erasing_prob': 1.0, 'erasing_value': 'random'},
}
_SEEDS = (0, 1, 2, 3)


def _smooth(h, w, seed):
  """A smooth random colour image with one sharp disc, like a face crop."""
  rng = np.random.default_rng(seed)
  small = rng.integers(0, 256, (7, 7, 3)).astype(np.float32)
  image = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
  cv2.circle(image, (w // 3, h // 3), max(2, h // 8), (230, 40, 60), -1)
  return np.clip(image, 0, 255).astype(np.uint8)


def _draw(image, seed, c):
  return augment.sample_train_params(
    *image.shape[:2], np.random.default_rng(seed), c
  )


def _stack(dicts):
  return jax.tree.map(lambda *xs: np.stack(xs), *dicts)


@functools.cache
def _jit_apply(c):
  return jax.jit(functools.partial(device_augment.apply, cfg=c))


def _device(images, draws, c):
  """Device output in grey levels for a list of (image, TrainParams)."""
  params = _stack(
    [
      device_augment.host_params(p, im.shape[:2], c)
      for im, p in zip(images, draws, strict=True)
    ]
  )
  return np.asarray(_jit_apply(c)(np.stack(images), params)) * 255.0


def _diff_stats(device, host):
  diff = np.abs(device - np.asarray(host, np.float32))
  return diff.mean(), np.percentile(diff, 99)


def _agrees(device, host, p99_tol=_P99_TOL):
  mean, p99 = _diff_stats(device, host)
  return mean < _MEAN_TOL and p99 < p99_tol


@pytest.mark.parametrize('name', sorted(_CONFIGS))
def test_device_matches_host_on_the_same_draw(name):
  c = augment.parse_config(_CONFIGS[name])
  shape = (90, 100) if name == 'area_shrink' else (100, 100)
  images = [_smooth(*shape, s) for s in _SEEDS]
  draws = [_draw(im, s, c) for im, s in zip(images, _SEEDS, strict=True)]
  device = _device(images, draws, c)
  for im, p, dev in zip(images, draws, device, strict=True):
    host = augment.apply_train_params(im, p, c)
    mean, p99 = _diff_stats(dev, host)
    assert mean < _MEAN_TOL and p99 < _P99_TOL, (name, mean, p99, p)


def test_area_path_is_taken_when_the_crop_shrinks():
  c = augment.parse_config(_CONFIGS['area_shrink'])
  image = _smooth(90, 100, 0)
  areas = [
    bool(device_augment.host_params(_draw(image, s, c), (90, 100), c)['area'])
    for s in range(20)
  ]
  assert any(areas) and not all(areas)


def test_hue_matches_up_to_the_host_hsv_quantisation():
  c = augment.parse_config({'size': 64, 'hue': 0.3, 'saturation': 0.3})
  images = [_smooth(100, 100, s) for s in _SEEDS]
  draws = [_draw(im, s, c) for im, s in zip(images, _SEEDS, strict=True)]
  device = _device(images, draws, c)
  for im, p, dev in zip(images, draws, device, strict=True):
    host = augment.apply_train_params(im, p, c)
    hsv = cv2.cvtColor(host, cv2.COLOR_RGB2HSV_FULL)
    round_trip = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB_FULL)
    _, host_error = _diff_stats(round_trip.astype(np.float32), host)
    assert _agrees(dev, host, p99_tol=host_error + _P99_TOL), p


def test_a_dropped_flip_or_erasure_fails_the_comparison():
  """The tolerances above are tight enough to see a missing step."""
  c = augment.parse_config({**_MANET, 'erasing_prob': 1.0, 'flip': 1.0})
  image = _smooth(100, 100, 5)
  p = _draw(image, 5, c)
  assert p.flip and p.erase is not None
  host = augment.apply_train_params(image, p, c)
  assert _agrees(_device([image], [p], c)[0], host)
  for broken in (
    dataclasses.replace(p, flip=False),
    dataclasses.replace(p, erase=None),
  ):
    assert not _agrees(_device([image], [broken], c)[0], host)


def test_clips_take_their_clip_draw_on_every_frame():
  c = augment.parse_config({**_MANET, 'size': 48, 'brightness': 0.5})
  clips = np.stack(
    [
      np.stack([_smooth(60, 60, 10 * b + t) for t in range(3)])
      for b in range(2)
    ]
  )
  draws = [_draw(clips[b, 0], b, c) for b in range(2)]
  params = _stack([device_augment.host_params(p, (60, 60), c) for p in draws])
  out = np.asarray(
    jax.jit(device_augment.apply, static_argnames='cfg')(clips, params, cfg=c)
  )
  chex.assert_shape(out, (2, 3, 48, 48, 3))
  for b in range(2):
    for t in range(3):
      host = augment.apply_train_params(clips[b, t], draws[b], c)
      assert _agrees(out[b, t] * 255.0, host)


def test_host_params_have_fixed_shapes_and_dtypes():
  c = augment.parse_config(
    {
      **_CONFIGS['jitter_grayscale'],
      'rotation': 10.0,
      'hue': 0.1,
      'erasing_prob': 0.5,
      'erasing_value': 'random',
    }
  )
  image = _smooth(50, 70, 0)
  specs = set()
  for seed in range(12):
    params = device_augment.host_params(_draw(image, seed, c), (50, 70), c)
    specs.add(tuple((k, v.shape, v.dtype.str) for k, v in params.items()))
  assert len(specs) == 1
  spec = {k: (shape, np.dtype(dtype)) for k, shape, dtype in specs.pop()}
  assert spec == {
    'matrix': ((2, 3), np.float32),
    'bounds': ((4,), np.float32),
    'area': ((), np.bool_),
    'jitter_order': ((4,), np.int32),
    'jitter_factors': ((4,), np.float32),
    'grayscale': ((), np.bool_),
    'erase_box': ((4,), np.int32),
    'erase_value': ((3,), np.float32),
    'erase_noise': ((64, 64, 3), np.uint8),
  }


def test_apply_shapes_dtypes_and_a_single_trace():
  c = augment.parse_config(_CONFIGS['jitter_grayscale'])

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(batch):
    return device_augment.batch_images(batch, c)

  for seed in range(3):
    images = [_smooth(40, 40, seed + k) for k in range(4)]
    batch = {
      'image': np.stack(images),
      'augment': _stack(
        [
          device_augment.host_params(_draw(im, seed + k, c), (40, 40), c)
          for k, im in enumerate(images)
        ]
      ),
    }
    out = step(batch)
    chex.assert_shape(out, (4, 64, 64, 3))
    chex.assert_type(out, jnp.float32)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_batch_images_without_augment_only_scales():
  images = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
  out = device_augment.batch_images({'image': images})
  np.testing.assert_allclose(out, images / 255.0, rtol=1e-6)
  with pytest.raises(ValueError, match='config.augment'):
    device_augment.batch_images(
      {'image': images, 'augment': {'matrix': np.zeros((2, 2, 3))}}
    )


# ------------------------------------------------------------------- pipeline


class _SmoothSource:
  """`n` smooth 40 x 40 images, or of `sizes[i % len(sizes)]` if given."""

  def __init__(self, n, sizes=((40, 40),)):
    self.n, self.sizes = n, tuple(sizes)

  def __len__(self):
    return self.n

  def __getitem__(self, i):
    h, w = self.sizes[i % len(self.sizes)]
    return {'image': _smooth(h, w, i), 'label': i % 7}

  def __repr__(self):
    return f'_SmoothSource(n={self.n}, sizes={self.sizes})'


def _pipeline_config(smoke_config, **augment_fields):
  config = smoke_config
  config.batch_size = 8
  config.augment.size = 32
  config.augment.crop_scale = (0.3, 1.0)
  config.augment.flip = 0.5
  config.augment.brightness = 0.3
  config.augment.erasing_prob = 0.5
  for name, value in augment_fields.items():
    config.augment[name] = value
  return config


def test_pipeline_on_device_draws_the_host_path_parameters(smoke_config):
  config = _pipeline_config(smoke_config)
  src = _SmoothSource(24)
  host = iter(pipeline.train_dataset(config, source=src)[0])
  config.augment.on_device = True
  c = pipeline.augment_config(config)
  device = iter(pipeline.train_dataset(config, source=src)[0])
  for _ in range(2):
    want, got = next(host), next(device)
    np.testing.assert_array_equal(got['label'], want['label'])
    assert got['image'].shape == (8, 40, 40, 3)
    assert got['image'].dtype == np.uint8
    for name, value in got['augment'].items():
      assert value.shape[0] == 8, name
    out = np.asarray(device_augment.batch_images(got, c)) * 255.0
    assert _agrees(out, want['image'])


def test_pipeline_device_source_size_stacks_variable_sizes(smoke_config):
  config = _pipeline_config(smoke_config, on_device=True)
  src = _SmoothSource(16, sizes=((40, 40), (52, 36), (30, 44)))
  with pytest.raises(ValueError, match='device_source_size'):
    next(iter(pipeline.train_dataset(config, source=src)[0]))
  config.augment.device_source_size = 48
  batch = next(iter(pipeline.train_dataset(config, source=src)[0]))
  assert batch['image'].shape == (8, 48, 48, 3)
  assert batch['augment']['matrix'].shape == (8, 2, 3)


class _ClipSource:
  def __len__(self):
    return 8

  def __getitem__(self, i):
    frames = np.stack([_smooth(24, 24, i * 31 + t) for t in range(10)])
    return {'frames': frames, 'label': i % 7, 'num_frames': 10}

  def __repr__(self):
    return '_ClipSource()'


def test_pipeline_on_device_clips(smoke_config):
  config = _pipeline_config(smoke_config, size=16)
  config.clip.segments = 2
  config.clip.frames_per_segment = 2
  host = next(iter(pipeline.train_dataset(config, source=_ClipSource())[0]))
  config.augment.on_device = True
  c = pipeline.augment_config(config)
  batch = next(iter(pipeline.train_dataset(config, source=_ClipSource())[0]))
  assert batch['image'].shape == (8, 4, 24, 24, 3)
  assert batch['augment']['jitter_factors'].shape == (8, 4)
  out = np.asarray(device_augment.batch_images(batch, c)) * 255.0
  assert out.shape == host['image'].shape == (8, 4, 16, 16, 3)
  assert _agrees(out, host['image'])


def test_smoke_training_on_device(smoke_config, tmp_path):
  """The real train loop trains synthetic_fer/smoke with on-device augment."""
  config = _pipeline_config(smoke_config, on_device=True, rotation=10.0)
  config.batch_size = 16
  config.total_steps = 6
  config.checkpoint.every_steps = 6
  results = train.train_and_evaluate(config, str(tmp_path))
  assert results['final']['step'] == 6
  assert 0.0 <= results['final']['war'] <= 1.0
  logged = [r for r in writers.read_metrics(str(tmp_path)) if 'train/loss' in r]
  assert logged and all(np.isfinite(r['train/loss']) for r in logged)
  # The train step itself saw augmented (not merely scaled) images.
  batch = next(iter(pipeline.train_dataset(config)[0]))
  images = device_augment.batch_images(batch, pipeline.augment_config(config))
  assert images.shape == (16, 32, 32, 3)
  assert batch['image'].shape == images.shape
  assert not np.allclose(images, batch['image'] / 255.0, atol=0.02)


# --------------------------------------------------------------- validation


@pytest.mark.parametrize(
  ('fields', 'match'),
  [
    ({'on_device': 1}, 'on_device'),
    ({'device_source_size': -1}, 'device_source_size'),
    ({'device_source_size': 64.0}, 'device_source_size'),
    ({'on_device': True, 'randaugment_ops': 2}, 'randaugment_ops=0'),
    (
      {
        'on_device': True,
        'rotation': 10.0,
        'size': 32,
        'device_source_size': 64,
      },
      'device_source_size below 64',
    ),
  ],
)
def test_config_validation(fields, match):
  with pytest.raises(ValueError, match=match):
    augment.parse_config(fields)


def test_valid_on_device_configs_parse():
  c = augment.parse_config(
    {
      'on_device': True,
      'rotation': 10.0,
      'size': 32,
      'device_source_size': 63,
    }
  )
  assert c.on_device and c.device_source_size == 63
  assert not augment.parse_config({}).on_device


def test_host_params_refuse_what_the_device_cannot_do():
  c = augment.parse_config({'size': 16, 'rotation': 10.0})
  image = _smooth(40, 40, 0)
  with pytest.raises(ValueError, match='device_source_size below 32'):
    device_augment.host_params(_draw(image, 0, c), (40, 40), c)
  with pytest.raises(ValueError, match='cannot apply'):
    device_augment.host_params(_draw(image, 0, c), (30, 30), c)
  rand = augment.parse_config({'size': 16, 'randaugment_ops': 1})
  with pytest.raises(ValueError, match='randaugment_ops=0'):
    device_augment.host_params(_draw(image, 0, rand), (40, 40), rand)

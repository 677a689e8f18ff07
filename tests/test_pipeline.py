"""The training pipeline: shapes, determinism, epochs, process sharding.

Image examples first, then video clips (`config.clip`).
"""

import logging

import cv2
import flax.linen as nn
import grain
import jax
import numpy as np
import optax
import pytest

from ferjax import models
from ferjax import train
from ferjax.data import clips
from ferjax.data import maps
from ferjax.data import pipeline
from tests.fake_data import IndexedSource


def _ids(batch):
  return list(batch['image'][:, 0, 0, 0])


def _config(smoke_config, batch=8):
  config = smoke_config
  config.batch_size = batch
  config.augment.size = 8
  config.augment.rotation = 0.0
  config.augment.crop_scale = (1.0, 1.0)
  config.augment.crop_ratio = (1.0, 1.0)
  return config


def test_train_batches_shapes_and_epochs(smoke_config):
  config = _config(smoke_config)
  ds, n = pipeline.train_dataset(config, source=IndexedSource(24))
  it = iter(ds)
  batches = [next(it) for _ in range(6)]  # Two epochs of 3 batches.
  for b in batches:
    assert b['image'].shape == (8, 8, 8, 3) and b['image'].dtype == np.uint8
    assert b['label'].dtype == np.int32
  first = sum((_ids(b) for b in batches[:3]), [])
  second = sum((_ids(b) for b in batches[3:]), [])
  assert n == 24 and sorted(first) == sorted(second) == list(range(24))
  assert first != second  # Reshuffled every epoch.
  assert first != list(range(24))


def test_train_pipeline_is_deterministic_and_restorable(smoke_config):
  config = _config(smoke_config)
  config.augment.flip = 0.5
  config.augment.brightness = 0.4

  def make():
    return iter(pipeline.train_dataset(config, source=IndexedSource(40))[0])

  a, b = make(), make()
  for _ in range(3):
    np.testing.assert_array_equal(next(a)['image'], next(b)['image'])
  state = a.get_state()
  expected = [next(a)['image'] for _ in range(4)]
  c = make()
  c.set_state(state)
  for want in expected:
    np.testing.assert_array_equal(next(c)['image'], want)


def test_process_shards_assemble_the_single_process_batch(smoke_config):
  """Global batch b is the same examples for 1 or 2 processes."""
  config = _config(smoke_config, batch=8)
  src = IndexedSource(40)
  aug = pipeline.augment_config(config)
  ds = (
    grain.MapDataset.source(src)
    .shuffle(seed=0)
    .repeat()
    .random_map(maps.TrainMap(aug), seed=1)
  )

  def batches(processes, index):
    plan = pipeline.Plan(8, processes, index)
    return plan.take_process_batches(ds.batch(plan.local_batch))

  single = batches(1, 0)
  halves = [batches(2, 0), batches(2, 1)]
  for b in range(7):
    joined = np.concatenate([h[b]['image'] for h in halves])
    np.testing.assert_array_equal(joined, single[b]['image'])


def test_worker_processes_give_the_same_batches_and_restore(smoke_config):
  """mp_prefetch with a worker process changes nothing but speed."""
  config = _config(smoke_config)
  config.augment.flip = 0.5
  src = IndexedSource(40)
  inline = iter(pipeline.train_dataset(config, source=src)[0])
  config.data.worker_count = 1
  workers = iter(pipeline.train_dataset(config, source=src)[0])
  for _ in range(3):
    np.testing.assert_array_equal(next(inline)['image'], next(workers)['image'])
  state = workers.get_state()
  expected = [next(inline)['image'] for _ in range(2)]
  restored = iter(pipeline.train_dataset(config, source=src)[0])
  restored.set_state(state)
  for want in expected:
    np.testing.assert_array_equal(next(restored)['image'], want)


# ---------------------------------------------------------------- video clips


class ClipSource:
  """Clip i has `lengths[i]` constant frames: red = i, green = frame index."""

  def __init__(self, lengths, size=12, encoded=False):
    self.lengths, self.size, self.encoded = list(lengths), size, encoded

  def __len__(self):
    return len(self.lengths)

  def __getitem__(self, i):
    n = self.lengths[i]
    frames = np.zeros((n, self.size, self.size, 3), np.uint8)
    frames[..., 0] = i % 251
    frames[..., 1] = np.arange(n)[:, None, None] % 251
    if self.encoded:  # As a TFDS Sequence(Image) read without decoding.
      frames = [cv2.imencode('.png', f[..., ::-1])[1].tobytes() for f in frames]
    return {'frames': frames, 'label': i % 7, 'num_frames': n, 'id': f'c{i}'}

  def __repr__(self):
    return f'ClipSource(lengths={self.lengths}, size={self.size})'


def _clip_config(smoke_config, batch=8, short='loop'):
  config = _config(smoke_config, batch)
  config.clip.segments = 4
  config.clip.frames_per_segment = 2
  config.clip.short = short
  return config


def _clip_ids(batch):
  """(example id per row, frame ids per row) of a clip batch."""
  image = batch['image']
  return list(image[:, 0, 0, 0, 0]), image[:, :, 0, 0, 1].astype(np.int64)


def _lengths(n, seed=0, lo=8, hi=60):
  return np.random.default_rng(seed).integers(lo, hi, n).tolist()


def test_clip_batches_shapes_frames_and_epochs(smoke_config):
  config = _clip_config(smoke_config)
  src = ClipSource(_lengths(24))
  ds, n = pipeline.train_dataset(config, source=src)
  it = iter(ds)
  batches = [next(it) for _ in range(6)]  # Two epochs of 3 batches.
  epochs = [[], []]
  for k, b in enumerate(batches):
    assert b['image'].shape == (8, 8, 8, 8, 3) and b['image'].dtype == np.uint8
    assert b['label'].shape == (8,) and b['label'].dtype == np.int32
    ids, frames = _clip_ids(b)
    epochs[k // 3] += ids
    np.testing.assert_array_equal(b['label'], np.array(ids) % 7)
    for i, f in zip(ids, frames, strict=True):
      runs = f.reshape(4, 2)
      step = (src.lengths[i] - 2 + 1) // 4
      np.testing.assert_array_equal(runs[:, 1] - runs[:, 0], 1)
      assert np.all(runs[:, 0] // step == np.arange(4)), (runs, step)
  assert n == 24 and sorted(epochs[0]) == sorted(epochs[1]) == list(range(24))
  assert epochs[0] != epochs[1]
  # Encoded frames (a Sequence(Image) read undecoded) give the same batches.
  encoded = ClipSource(src.lengths, encoded=True)
  it = iter(pipeline.train_dataset(config, source=encoded)[0])
  np.testing.assert_array_equal(next(it)['image'], batches[0]['image'])


def test_clip_pipeline_is_deterministic_and_restorable(smoke_config):
  config = _clip_config(smoke_config)
  config.augment.flip = 0.5
  config.augment.brightness = 0.4
  config.augment.crop_scale = (0.5, 1.0)
  src = ClipSource(_lengths(40, seed=1))

  def make():
    return iter(pipeline.train_dataset(config, source=src)[0])

  a, b = make(), make()
  for _ in range(3):
    np.testing.assert_array_equal(next(a)['image'], next(b)['image'])
  state = a.get_state()
  expected = [next(a)['image'] for _ in range(4)]
  c = make()
  c.set_state(state)
  for want in expected:
    np.testing.assert_array_equal(next(c)['image'], want)


def test_clip_process_shards_assemble_the_single_process_batch(smoke_config):
  config = _clip_config(smoke_config)
  config.augment.brightness = 0.4
  src = ClipSource(_lengths(40, seed=2))
  train_map = maps.TrainMap(
    pipeline.augment_config(config), clip=pipeline.clip_config(config)
  )
  ds = (
    grain.MapDataset.source(src)
    .shuffle(seed=0)
    .repeat()
    .random_map(train_map, seed=1)
  )

  def batches(processes, index):
    plan = pipeline.Plan(8, processes, index)
    return plan.take_process_batches(ds.batch(plan.local_batch))

  single = batches(1, 0)
  halves = [batches(2, 0), batches(2, 1)]
  for b in range(7):
    joined = np.concatenate([h[b]['image'] for h in halves])
    assert joined.shape == (8, 8, 8, 8, 3)
    np.testing.assert_array_equal(joined, single[b]['image'])


def test_clip_eval_is_padded_with_masked_clips(smoke_config):
  config = _clip_config(smoke_config)
  config.eval_batch_size = 8
  src = ClipSource(_lengths(13, seed=3))
  ds, num, num_batches = pipeline.eval_dataset(config, 'test', source=src)
  batches = list(ds)
  assert num == 13 and num_batches == len(batches) == 2
  seen = []
  for b in batches:
    assert b['image'].shape == (8, 8, 8, 8, 3) and b['mask'].shape == (8,)
    assert not b['image'][~b['mask']].any()
    ids, frames = _clip_ids(b)
    for i, f, real in zip(ids, frames, b['mask'], strict=True):
      if real:
        seen.append(i)
        want = clips.eval_indices(src.lengths[i], 4, 2)
        np.testing.assert_array_equal(f, want)
  assert sorted(seen) == list(range(13))
  assert batches[1]['mask'].sum() == 5


def test_short_clips_are_dropped_before_shuffling(smoke_config, caplog):
  config = _clip_config(smoke_config, short='drop')
  config.eval_batch_size = 8
  lengths = [3, 20, 7, 8, 30, 1, 12, 9, 40, 5, 8, 16, 10, 11, 6, 50, 22, 4]
  kept = [i for i, n in enumerate(lengths) if n >= 8]  # U*V = 8.
  assert len(kept) == 12
  src = ClipSource(lengths)
  caplog.set_level(logging.INFO, logger='absl')
  ds, n = pipeline.train_dataset(config, source=src)
  assert n == 12
  assert 'dropped 6 of 18 clips shorter than 8 frames' in caplog.text
  it = iter(ds)
  ids = sum((_clip_ids(next(it))[0] for _ in range(3)), [])  # Two epochs.
  assert sorted(ids[:12]) == sorted(ids[12:]) == kept
  ds, num, _ = pipeline.eval_dataset(config, 'test', source=src)
  seen = sum((_clip_ids(b)[0] for b in ds), [])
  assert num == 12 and sorted(seen[:12]) == kept
  # Class-balanced draws keep to the kept clips, with their labels.
  config.data.sampling = 'class_balanced'
  labels = np.arange(len(lengths)) % 7
  ds, n = pipeline.train_dataset(config, source=src, labels=labels)
  it = iter(ds)
  for _ in range(4):
    b = next(it)
    ids = _clip_ids(b)[0]
    assert set(ids) <= set(kept)
    np.testing.assert_array_equal(b['label'], np.array(ids) % 7)
  config.clip.segments = 100
  with pytest.raises(ValueError, match='Every clip of .* shorter than'):
    pipeline.train_dataset(config, source=src, labels=labels)


def test_short_clips_loop(smoke_config):
  config = _clip_config(smoke_config, short='loop')
  lengths = [3, 1, 5, 7] * 4
  ds, n = pipeline.train_dataset(config, source=ClipSource(lengths))
  assert n == 16
  it = iter(ds)
  for _ in range(4):
    ids, frames = _clip_ids(next(it))
    for i, f in zip(ids, frames, strict=True):
      assert f.max() < lengths[i]
      runs = f.reshape(4, 2)
      wrapped = (runs[:, 0] + 1) % lengths[i]
      np.testing.assert_array_equal(runs[:, 1], wrapped)


def test_clip_config_on_an_image_dataset_is_refused(smoke_config):
  config = _clip_config(smoke_config)
  with pytest.raises(ValueError, match="no 'frames' feature.*segments=0"):
    pipeline.train_dataset(config)


def test_model_input_shape_follows_the_clip_config(smoke_config):
  config = _config(smoke_config)
  assert models.input_shape(config) == (1, 8, 8, 3)
  config = _clip_config(smoke_config)
  assert models.input_shape(config) == (1, 8, 8, 8, 3)

  class FrameMean(nn.Module):
    @nn.compact
    def __call__(self, x, train):
      return {'logits': nn.Dense(7)(x.mean(axis=(-4, -3, -2)))}

  state = train.init_state(
    jax.random.key(0),
    model=FrameMean(),
    tx=optax.sgd(0.1),
    input_shape=models.input_shape(config),
  )
  assert state.params['Dense_0']['kernel'].shape == (3, 7)

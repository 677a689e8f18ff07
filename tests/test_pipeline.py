"""The training pipeline: shapes, determinism, epochs, process sharding."""

import grain
import numpy as np

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
    .random_map(pipeline.TrainMap(aug), seed=1)
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

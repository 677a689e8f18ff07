"""The decoded image cache: same examples, built once, never half-written."""

import os
import pickle
import types

import jax
import numpy as np
import pytest

from ferjax.data import decoded_cache
from ferjax.data import pipeline


class _Source:
  """A TFDS-like source of images of varying (or fixed) size."""

  def __init__(self, n, data_dir, fixed=False, fail_at=None):
    self.n, self.fixed, self.fail_at = n, fixed, fail_at
    shape = (12, 12, 1) if fixed else (None, None, 1)
    self.dataset_info = types.SimpleNamespace(
      data_dir=str(data_dir),
      version='1.0.0',
      features={'image': types.SimpleNamespace(shape=shape)},
    )

  def __len__(self):
    return self.n

  def __getitem__(self, i):
    i = int(i)
    if i == self.fail_at:
      raise OSError(f'record {i} is corrupt')
    side = 12 if self.fixed else 5 + i % 7
    image = (np.arange(side * side).reshape(side, side, 1) + i) % 256
    return {
      'image': image.astype(np.uint8),
      'label': np.int64(i % 7),
      'target': np.full(3, i / 10, np.float32),
      'id': f'img_{i}'.encode(),
    }


def _open(source, tmp_path, **kwargs):
  return decoded_cache.open_or_build(
    source,
    name='fake/x',
    split='train',
    cache_dir=str(tmp_path / 'c'),
    **kwargs,
  )


@pytest.mark.parametrize('fixed', [False, True])
def test_records_round_trip_exactly(tmp_path, fixed):
  source = _Source(700, tmp_path, fixed=fixed)
  cached = _open(source, tmp_path)
  assert len(cached) == 700
  assert cached.info['image_layout'] == ('fixed' if fixed else 'varying')
  assert cached.info['fields'] == ['label', 'target']  # Text is left out.
  # Pickles as its path, as grain's workers receive it.
  for s in (cached, pickle.loads(pickle.dumps(cached))):
    for i in (0, 1, 511, 512, 699):
      want, got = source[i], s[i]
      np.testing.assert_array_equal(got['image'], want['image'])
      assert got['image'].dtype == np.uint8
      assert got['label'] == want['label']
      np.testing.assert_array_equal(got['target'], want['target'])
      assert 'id' not in got
  assert len(pickle.dumps(cached)) < 2000
  with pytest.raises(IndexError):
    cached[700]


def test_a_built_cache_is_reused_and_a_rebuilt_dataset_gets_a_new_one(
  tmp_path, monkeypatch
):
  (tmp_path / 'dataset_info.json').write_text('{}')
  source = _Source(20, tmp_path)
  first = _open(source, tmp_path)

  def no_rebuild(*args):
    raise AssertionError('the cache was built again')

  monkeypatch.setattr(decoded_cache, '_write', no_rebuild)
  assert _open(source, tmp_path).path == first.path
  stat = os.stat(tmp_path / 'dataset_info.json')
  os.utime(
    tmp_path / 'dataset_info.json',
    ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9),
  )
  assert (
    decoded_cache.cache_path(source, 'train', 'fake/x', str(tmp_path / 'c'))
    != first.path
  )


def test_a_failed_build_leaves_nothing_that_looks_complete(tmp_path):
  with pytest.raises(OSError, match='record 600 is corrupt'):
    _open(_Source(700, tmp_path, fail_at=600), tmp_path)
  parent = tmp_path / 'c' / 'fake' / 'x' / '1.0.0'
  assert os.listdir(parent) == []
  assert len(_open(_Source(700, tmp_path), tmp_path)) == 700


def test_too_large_a_cache_names_the_limit(tmp_path):
  with pytest.raises(
    decoded_cache.DecodedCacheError, match='decoded_cache_max_gb'
  ):
    _open(_Source(100, tmp_path, fixed=True), tmp_path, max_gb=1e-6)


def _batches(config, n=3):
  data, _ = pipeline.train_dataset(config)
  it = iter(data)
  return [next(it) for _ in range(n)]


def test_the_pipeline_gives_the_same_batches_from_the_cache(
  smoke_config, tmp_path
):
  plain_train = _batches(smoke_config)
  plain_eval = list(pipeline.eval_dataset(smoke_config, 'test')[0])
  smoke_config.data.decoded_cache = True
  smoke_config.data.cache_dir = str(tmp_path)
  source = pipeline.data_source(smoke_config.data, 'train')
  assert isinstance(source, decoded_cache.DecodedSource)
  assert source.path.startswith(str(tmp_path))
  cached_train = _batches(smoke_config)
  cached_eval = list(pipeline.eval_dataset(smoke_config, 'test')[0])
  for plain, cached in ((plain_train, cached_train), (plain_eval, cached_eval)):
    assert len(plain) == len(cached)
    for a, b in zip(plain, cached, strict=True):
      assert a.keys() == b.keys()
      jax.tree.map(np.testing.assert_array_equal, a, b)


def test_clip_datasets_are_refused(smoke_config):
  smoke_config.data.decoded_cache = True
  with pytest.raises(ValueError, match='decoded_cache=False'):
    pipeline._decoded(smoke_config.data, None, 'train', clip=True)

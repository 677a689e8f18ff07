"""Dataset specs, config checks, class-balanced sampling, soft targets."""

import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import common
from ferjax import losses
from ferjax import sharding
from ferjax import train
from ferjax.data import build
from ferjax.data import datasets
from ferjax.data import maps
from ferjax.data import pipeline
from tests.fake_data import IndexedSource


def test_every_builder_has_a_spec():
  assert set(build.available()) == set(datasets.SPECS)


@pytest.mark.parametrize(
  ('name', 'builder_config', 'classes', 'eval_split', 'size'),
  [
    ('rafdb', '', 7, 'test', 224),
    ('affectnet', '8class', 8, 'test', 224),
    ('affectnet', '', 7, 'test', 224),
    ('ferplus', 'probability', 8, 'test', 112),
    ('sfew', '', 7, 'validation', 224),
    ('caer_s', '', 7, 'test', 224),
  ],
)
def test_set_dataset_fills_the_defaults(
  name, builder_config, classes, eval_split, size
):
  config = datasets.set_dataset(common.base_config(), name, builder_config)
  assert config.data.name == name
  assert config.data.num_classes == classes
  assert config.data.eval_split == eval_split
  assert config.augment.size == size
  balanced = name == 'affectnet'
  assert config.data.sampling == ('class_balanced' if balanced else 'uniform')
  datasets.check_data_config(config.data)


@pytest.mark.parametrize(
  ('field', 'value', 'match'),
  [
    ('config', '9class', r"config.data.config='9class' does not fit .*7class"),
    ('num_classes', 8, r"num_classes=8 does not fit dataset 'affectnet'"),
    (
      'eval_split',
      'validation',
      r"eval_split='validation' .*\['train', 'test'",
    ),
    ('soft_target', 'votes', r"soft_target='votes'"),
    ('sampling', 'balanced', r"sampling='balanced' .*class_balanced"),
  ],
)
def test_bad_data_config_names_field_and_choices(field, value, match):
  config = datasets.set_dataset(common.base_config(), 'affectnet', '7class')
  config.data[field] = value
  with pytest.raises(ValueError, match=match):
    datasets.check_data_config(config.data)


def test_soft_target_only_where_the_builder_has_one():
  config = datasets.set_dataset(common.base_config(), 'ferplus', 'majority')
  config.data.soft_target = 'label_distribution'
  with pytest.raises(ValueError, match='soft_target'):
    datasets.check_data_config(config.data)
  config.data.config = 'probability'
  datasets.check_data_config(config.data)


def test_unknown_dataset():
  with pytest.raises(ValueError, match="Unknown dataset 'fer2013'.*rafdb"):
    datasets.set_dataset(common.base_config(), 'fer2013')


def test_class_count_is_checked_against_spec_and_built_data(
  smoke_config, monkeypatch
):
  smoke_config.data.num_classes = 8
  with pytest.raises(ValueError, match='num_classes=8 does not fit'):
    pipeline.data_source(smoke_config.data, 'train')
  # A dataset without a spec is checked against its built label feature.
  monkeypatch.delitem(datasets.SPECS, 'synthetic_fer')
  with pytest.raises(ValueError, match='synthetic_fer/smoke has 7 classes'):
    pipeline.data_source(smoke_config.data, 'train')


def test_read_labels_matches_the_decoded_source(smoke_config):
  labels = pipeline.read_labels(smoke_config.data, 'test')
  source = pipeline.data_source(smoke_config.data, 'test')
  assert labels.dtype == np.int32 and len(labels) == len(source) == 140
  np.testing.assert_array_equal(
    labels, [source[i]['label'] for i in range(len(source))]
  )


def _balanced_config(smoke_config, batch=8):
  config = smoke_config
  config.batch_size = batch
  config.augment.size = 8
  config.augment.crop_scale = (1.0, 1.0)
  config.augment.crop_ratio = (1.0, 1.0)
  config.data.sampling = 'class_balanced'
  return config


class SkewedSource(IndexedSource):
  """90 examples of class 0, 9 of class 1, 1 of class 2."""

  LABELS = np.array([0] * 90 + [1] * 9 + [2], np.int32)

  def __init__(self):
    super().__init__(len(self.LABELS), size=8, num_classes=3)

  def __getitem__(self, i):
    return {**super().__getitem__(i), 'label': self.LABELS[i]}


def test_class_balanced_draws_are_balanced_and_exact(smoke_config):
  config = _balanced_config(smoke_config)
  src = SkewedSource()
  ds, n = pipeline.train_dataset(config, source=src, labels=src.LABELS)
  it = iter(ds)
  batches = [next(it) for _ in range(300)]  # 2,400 draws, 24 epochs.
  labels = np.concatenate([b['label'] for b in batches])
  ids = np.concatenate([b['image'][:, 0, 0, 0] for b in batches])
  assert n == 100
  np.testing.assert_array_equal(src.LABELS[ids], labels)  # Lookup is right.
  shares = np.bincount(labels, minlength=3) / len(labels)
  np.testing.assert_allclose(shares, [1 / 3] * 3, atol=0.04)
  # Within a class, examples are uniform: all 90 of class 0 show up.
  assert len(np.unique(ids[labels == 0])) == 90
  # Restoring mid-stream continues the same draws.
  it2 = iter(pipeline.train_dataset(config, source=src, labels=src.LABELS)[0])
  for _ in range(5):
    next(it2)
  state = it2.get_state()
  it3 = iter(pipeline.train_dataset(config, source=src, labels=src.LABELS)[0])
  it3.set_state(state)
  np.testing.assert_array_equal(next(it3)['label'], batches[5]['label'])


def test_class_balanced_index_is_split_over_processes_exactly():
  labels = SkewedSource.LABELS
  ds = (
    grain.MapDataset.range(len(labels))
    .repeat()
    .map_with_index(maps.ClassBalancedIndex(labels, seed=3))
  )
  single = pipeline.Plan(8, 1, 0).take_process_batches(ds.batch(8))
  halves = [
    pipeline.Plan(8, 2, p).take_process_batches(ds.batch(4)) for p in (0, 1)
  ]
  for b in range(5):
    joined = np.concatenate([h[b] for h in halves])
    np.testing.assert_array_equal(joined, single[b])
  # A different seed gives different draws.
  other = grain.MapDataset.range(100).map_with_index(
    maps.ClassBalancedIndex(labels, seed=4)
  )
  assert [other[i] for i in range(20)] != [ds[i] for i in range(20)]


def test_class_balanced_reads_labels_from_the_split(smoke_config):
  config = _balanced_config(smoke_config, batch=16)
  ds, n = pipeline.train_dataset(config)
  assert n == 448
  batch = next(iter(ds))
  assert batch['image'].shape == (16, 8, 8, 3)


class GraySoftSource(IndexedSource):
  """Grayscale [h, w, 1] images with a per-class target distribution."""

  def __getitem__(self, i):
    ex = super().__getitem__(i)
    target = np.zeros(3, np.float32)
    target[[i % 3, (i + 1) % 3]] = (0.75, 0.25)
    return {
      'image': ex['image'][..., :1],
      'label': i % 3,
      'dist': target,
    }


def test_grayscale_is_repeated_and_soft_targets_reach_the_batch(smoke_config):
  config = _balanced_config(smoke_config)
  config.data.sampling = 'uniform'
  config.data.soft_target = 'dist'
  src = GraySoftSource(24, size=8, num_classes=3)
  batch = next(iter(pipeline.train_dataset(config, source=src)[0]))
  assert batch['image'].shape == (8, 8, 8, 3)
  np.testing.assert_array_equal(batch['image'][..., 0], batch['image'][..., 2])
  ids = batch['image'][:, 0, 0, 0]
  assert batch['target'].dtype == np.float32
  np.testing.assert_array_equal(
    batch['target'], [src[int(i)]['dist'] for i in ids]
  )
  # Eval batches read the grayscale images too (labels only, no target).
  eval_ds, _, _ = pipeline.eval_dataset(config, 'test', source=src)
  eval_batch = next(iter(eval_ds))
  assert eval_batch['image'].shape[-1] == 3 and 'target' not in eval_batch


def test_cross_entropy_takes_target_distributions():
  logits = jax.random.normal(jax.random.key(0), (4, 8))
  targets = jax.nn.softmax(jax.random.normal(jax.random.key(1), (4, 8)))
  got = losses.softmax_cross_entropy(logits, targets)
  want = -(targets * jax.nn.log_softmax(logits)).sum(-1)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  # One-hot targets equal integer labels, smoothing included.
  labels = jnp.array([0, 3, 7, 1])
  np.testing.assert_allclose(
    losses.softmax_cross_entropy(logits, jax.nn.one_hot(labels, 8), 0.1),
    losses.softmax_cross_entropy(logits, labels, 0.1),
    rtol=1e-6,
  )
  smoothed = optax.smooth_labels(targets, 0.1)
  np.testing.assert_allclose(
    losses.softmax_cross_entropy(logits, targets, 0.1),
    -(smoothed * jax.nn.log_softmax(logits)).sum(-1),
    rtol=1e-6,
  )


def test_train_step_trains_on_the_soft_target(smoke_config):
  mesh = sharding.make_mesh(smoke_config.mesh)
  trainable = train.build_trainable(smoke_config, mesh, 4, 4, jax.random.key(0))
  rng = np.random.default_rng(0)
  labels = np.arange(16, dtype=np.int32) % 7
  batch = {
    'image': rng.integers(0, 256, (16, 32, 32, 3), np.uint8),
    'label': labels,
  }

  def loss(extra):
    state = jax.tree.map(jnp.copy, trainable.state)  # The step donates it.
    data = sharding.global_batch(
      {**batch, **extra}, sharding.data_sharding(mesh)
    )
    _, metrics = trainable.step_fn(state, data, jax.random.key(1))
    return float(metrics['loss']), float(metrics['accuracy'])

  plain = loss({})
  one_hot = np.eye(7, dtype=np.float32)[labels]
  assert loss({'target': one_hot}) == pytest.approx(plain, rel=1e-6)
  uniform = loss({'target': np.full((16, 7), 1 / 7, np.float32)})
  assert uniform[0] != pytest.approx(plain[0], rel=1e-3)
  assert uniform[1] == plain[1]  # Accuracy still counts the labels.


def test_ferplus_probability_trains_on_vote_distributions(tmp_path):
  """The real builder's grayscale images and soft targets reach a batch."""
  dummy = build.BUILDERS_DIR / 'ferplus' / 'dummy_data'
  build.build('ferplus', 'probability', tmp_path, manual_dir=dummy)
  config = datasets.set_dataset(common.base_config(), 'ferplus', 'probability')
  config.data.data_dir = str(tmp_path)
  config.data.soft_target = 'label_distribution'
  config.data.read_threads = 0
  config.batch_size = 8
  config.augment.size = 16
  batch = next(iter(pipeline.train_dataset(config)[0]))
  assert batch['image'].shape == (8, 16, 16, 3)
  np.testing.assert_array_equal(batch['image'][..., 0], batch['image'][..., 1])
  assert batch['target'].shape == (8, 8)
  np.testing.assert_allclose(batch['target'].sum(-1), 1.0, rtol=1e-6)
  # The majority label is the target's top class wherever one exists.
  assert np.all(batch['target'][np.arange(8), batch['label']] > 0)


def test_affectnet_trains_class_balanced_from_the_built_labels(tmp_path):
  """set_dataset's AffectNet default reads labels from the built split."""
  dummy = build.BUILDERS_DIR / 'affectnet' / 'dummy_data' / 'original'
  build.build('affectnet', '7class', tmp_path, manual_dir=dummy)
  config = datasets.set_dataset(common.base_config(), 'affectnet', '7class')
  config.data.data_dir = str(tmp_path)
  config.batch_size = 8
  config.augment.size = 16
  labels = pipeline.read_labels(config.data, 'train')
  source = pipeline.data_source(config.data, 'train')
  assert len(labels) == len(source) == 7
  it = iter(pipeline.train_dataset(config)[0])
  drawn = np.concatenate([next(it)['label'] for _ in range(60)])
  # Every class is here once, so shares alone cannot tell the samplers
  # apart (skewed splits are tested above on a fake source). Uniform
  # shuffling gives each epoch of 7 draws all 7 labels; class-balanced
  # draws with replacement repeat some.
  present = np.unique(labels)
  shares = np.bincount(drawn, minlength=7)[present] / len(drawn)
  np.testing.assert_allclose(shares, 1 / len(present), atol=0.05)
  epochs = drawn[: len(drawn) // 7 * 7].reshape(-1, 7)
  assert any(len(set(epoch)) < 7 for epoch in epochs)

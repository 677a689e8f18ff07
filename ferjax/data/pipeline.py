"""grain input pipelines from TFDS data sources.

Train: source -> shuffle(seed, reshuffled every epoch) -> repeat ->
random_map(augment) -> batch(per-process batch, drop_remainder) -> this
process's batches -> prefetch. Process p of P takes local batches p, p+P,
p+2P, ... of one global stream, so global batch b is the same examples with
the same augmentations whatever the number of processes, and a restored
iterator continues exactly where it stopped.

With `config.data.sampling='class_balanced'` the shuffle is replaced by
draws that pick a class uniformly, then one of its examples uniformly (with
replacement, as DAN's ImbalancedDatasetSampler); each draw is a pure function
of (seed, position), so resuming and multi-process runs stay exact.

Eval: indices padded up to a multiple of the global eval batch; padded rows
carry mask 0, so every example of the split counts exactly once.

Grayscale images (FERPlus) are repeated to three channels. With
`config.data.soft_target` set, training batches also carry that float
feature (e.g. FERPlus's vote distribution) as 'target', which the losses
use in place of the integer label.

Images stay uint8 on the host (4x less to transfer); steps convert on device.
"""

import dataclasses
import math
from typing import Any

import grain
import jax
import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from jax.experimental import multihost_utils

from ferjax.data import augment
from ferjax.data import build as build_lib
from ferjax.data import datasets


class DatasetNotBuiltError(FileNotFoundError):
  """The dataset a config asks for has not been built into data_dir."""


def _tfds_name(cfg: ml_collections.ConfigDict) -> str:
  return f'{cfg.name}/{cfg.config}' if cfg.get('config') else cfg.name


def data_source(cfg: ml_collections.ConfigDict, split: str):
  """Random-access source of `split` of `config.data`, building if allowed.

  Raises:
    DatasetNotBuiltError: with the exact command that builds the dataset.
    ValueError: if `cfg` does not fit the dataset (config, splits, classes).
  """
  datasets.check_data_config(cfg)
  kwargs = dict(config=cfg.get('config'), data_dir=cfg.get('data_dir'))
  if cfg.get('auto_build', False):
    if jax.process_index() == 0 and not build_lib.is_built(cfg.name, **kwargs):
      build_lib.build(cfg.name, **kwargs)
    if jax.process_count() > 1:  # Everyone waits for process 0's build.
      multihost_utils.sync_global_devices(f'build {_tfds_name(cfg)}')
  if not build_lib.is_built(cfg.name, **kwargs):
    raise DatasetNotBuiltError(
      f'Dataset {_tfds_name(cfg)!r} is not built in '
      f'{cfg.get("data_dir") or "the default TFDS data_dir"}. Build it '
      'with:\n  '
      + build_lib.build_command(
        cfg.name, manual_dir=cfg.get('manual_dir'), **kwargs
      )
    )
  source = tfds.data_source(
    _tfds_name(cfg), split=split, data_dir=cfg.get('data_dir'), download=False
  )
  built_classes = source.dataset_info.features['label'].num_classes
  if built_classes != cfg.num_classes:
    raise ValueError(
      f'config.data.num_classes={cfg.num_classes} but {_tfds_name(cfg)} has '
      f'{built_classes} classes; set config.data.num_classes={built_classes}.'
    )
  return source


def read_labels(cfg: ml_collections.ConfigDict, split: str) -> np.ndarray:
  """The integer label of every example of `split`, without decoding images.

  Costs one pass over the records (~70 us each on one core).
  """
  source = tfds.data_source(
    _tfds_name(cfg),
    split=split,
    data_dir=cfg.get('data_dir'),
    download=False,
    decoders={'image': tfds.decode.SkipDecoding()},
  )
  return np.fromiter(
    (source[i]['label'] for i in range(len(source))), np.int32, len(source)
  )


def _example(record) -> dict[str, np.ndarray]:
  image = np.asarray(record['image'])
  if image.ndim == 2:
    image = image[..., None]
  if image.shape[-1] == 1:  # Grayscale: every model takes RGB.
    image = np.repeat(image, 3, axis=-1)
  return {'image': image, 'label': np.int32(record['label'])}


@dataclasses.dataclass(frozen=True)
class ClassBalancedIndex(grain.transforms.MapWithIndex):
  """Position in the endless stream -> index of a class-balanced draw.

  Each draw picks one of the classes present uniformly, then one of its
  examples uniformly: the distribution of sampling with replacement with
  weights 1 / (count of the example's class), as DAN's and POSTER++'s
  ImbalancedDatasetSampler do for AffectNet. The draw depends only on
  (seed, position), so the stream is the same however it is split over
  processes or restored.
  """

  labels: np.ndarray
  seed: int

  def __post_init__(self):
    order = np.argsort(self.labels, kind='stable')
    classes, starts = np.unique(self.labels[order], return_index=True)
    object.__setattr__(self, '_order', order)
    object.__setattr__(self, '_starts', np.append(starts, len(order)))
    object.__setattr__(self, '_num_classes', len(classes))

  def map_with_index(self, position: int, _) -> int:
    rng = np.random.default_rng([self.seed, position])
    c = rng.integers(self._num_classes)
    lo, hi = self._starts[c], self._starts[c + 1]
    return int(self._order[rng.integers(lo, hi)])


@dataclasses.dataclass(frozen=True)
class Lookup(grain.transforms.Map):
  """Example index -> record of `source`."""

  source: Any

  def map(self, index):
    return self.source[index]


@dataclasses.dataclass(frozen=True)
class TrainMap(grain.transforms.RandomMap):
  """Decoded record -> augmented uint8 image and int32 label."""

  augment_cfg: Any
  soft_target: str | None = None

  def random_map(self, record, rng: np.random.Generator):
    ex = _example(record)
    ex['image'] = augment.train_transform(ex['image'], rng, self.augment_cfg)
    if self.soft_target:
      ex['target'] = np.asarray(record[self.soft_target], np.float32)
    return ex


@dataclasses.dataclass(frozen=True)
class EvalMap(grain.transforms.Map):
  """Index -> eval example, or a masked zero example past the split's end."""

  source: Any
  augment_cfg: Any

  def map(self, index):
    size = self.augment_cfg.size
    if index >= len(self.source):
      return {
        'image': np.zeros((size, size, 3), np.uint8),
        'label': np.int32(0),
        'mask': np.bool_(False),
      }
    ex = _example(self.source[index])
    ex['image'] = augment.eval_transform(ex['image'], self.augment_cfg)
    ex['mask'] = np.bool_(True)
    return ex


@dataclasses.dataclass(frozen=True)
class Plan:
  """Batch arithmetic shared by the train and eval pipelines."""

  global_batch: int
  num_processes: int
  process_index: int

  @property
  def local_batch(self) -> int:
    return self.global_batch // self.num_processes

  @classmethod
  def create(cls, global_batch: int, what: str) -> 'Plan':
    processes, devices = jax.process_count(), jax.device_count()
    if global_batch % devices:
      raise ValueError(
        f'{what}={global_batch} must be divisible by the {devices} devices '
        'it is split over.'
      )
    return cls(global_batch, processes, jax.process_index())

  def take_process_batches(self, batched: grain.MapDataset):
    return batched[self.process_index :: self.num_processes]


def _iter(ds: grain.MapDataset, cfg: ml_collections.ConfigDict):
  """To an iterator dataset, prefetched by threads or worker processes."""
  it = ds.to_iter_dataset(
    grain.ReadOptions(
      num_threads=cfg.get('read_threads', 1),
      prefetch_buffer_size=cfg.get('prefetch', 2),
    )
  )
  if cfg.get('worker_count', 0):
    it = it.mp_prefetch(
      grain.MultiprocessingOptions(num_workers=cfg.worker_count)
    )
  return it


def augment_config(config: ml_collections.ConfigDict) -> augment.AugmentConfig:
  """`config.augment`, validated once (a frozen dataclass, cheap to pickle)."""
  return augment.parse_config(config.augment)


def train_dataset(config: ml_collections.ConfigDict, source=None, labels=None):
  """The endless, checkpointable training iterator dataset of this process.

  Args:
    config: the run's config.
    source: a random-access source to use instead of the configured split.
    labels: the labels of `source` for class-balanced sampling; read from
      the split when not given.

  Returns:
    (iter dataset yielding {'image': uint8 [b,h,w,3], 'label': int32 [b]}
    with b the per-process batch, number of training examples).
  """
  split = config.data.train_split
  source = source or data_source(config.data, split)
  plan = Plan.create(config.batch_size, 'config.batch_size')
  sampling = config.data.get('sampling', 'uniform')
  if sampling == 'class_balanced':
    labels = read_labels(config.data, split) if labels is None else labels
    ds = (
      grain.MapDataset.range(len(source))
      .repeat()
      .map_with_index(ClassBalancedIndex(labels, config.seed))
      .map(Lookup(source))
    )
  elif sampling == 'uniform':
    ds = grain.MapDataset.source(source).shuffle(seed=config.seed).repeat()
  else:
    raise ValueError(
      f'config.data.sampling={sampling!r}; use one of {datasets.SAMPLINGS}.'
    )
  train_map = TrainMap(augment_config(config), config.data.get('soft_target'))
  ds = ds.random_map(train_map, seed=config.seed + 1).batch(
    plan.local_batch, drop_remainder=True
  )
  return _iter(plan.take_process_batches(ds), config.data), len(source)


def eval_dataset(config: ml_collections.ConfigDict, split: str, source=None):
  """One pass over `split`, padded and masked, batched per process.

  Returns:
    (iter dataset yielding {'image', 'label', 'mask'} batches, number of
    real examples, number of batches).
  """
  source = source or data_source(config.data, split)
  plan = Plan.create(config.eval_batch_size, 'config.eval_batch_size')
  num_batches = max(1, math.ceil(len(source) / plan.global_batch))
  ds = (
    grain.MapDataset.range(num_batches * plan.global_batch)
    .map(EvalMap(source, augment_config(config)))
    .batch(plan.local_batch, drop_remainder=True)
  )
  return (
    _iter(plan.take_process_batches(ds), config.data),
    len(source),
    num_batches,
  )

"""grain input pipelines from TFDS data sources.

Train: source -> shuffle(seed, reshuffled every epoch) -> repeat ->
random_map(augment) -> batch(per-process batch, drop_remainder) -> this
process's batches -> prefetch. Process p of P takes local batches p, p+P,
p+2P, ... of one global stream, so global batch b is the same examples with
the same augmentations whatever the number of processes, and a restored
iterator continues exactly where it stopped. The per-record steps are the
grain transforms of `ferjax.data.maps`.

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

With `config.clip.segments` > 0 every example is a video clip instead: U*V
frames of the record's 'frames' feature, chosen and augmented by
`ferjax.data.clips` (TSN sampling, one augmentation draw per clip), so
batches hold uint8 (b, U*V, size, size, 3) clips; the sampling, process
sharding and padding above are the same. Frames stored as a TFDS
`Sequence(Image)` stay encoded until chosen, so only the U*V frames an
example uses are decoded. With `config.clip.short='drop'`, clips shorter
than U*V frames are removed from the split before it is shuffled or padded
(the count is logged), so an epoch is every kept clip once.

Images stay uint8 on the host (4x less to transfer); steps convert on device.
With `config.data.decoded_cache` the image splits are read from a decoded
copy on local disk (`ferjax.data.decoded_cache`) instead of being decoded
every epoch; the examples and their order are the same.

With `config.augment.on_device` the train pipeline does not augment: it
yields the decoded images (all of one size, or resized to
`config.augment.device_source_size`) with an 'augment' entry of drawn
parameters, the same draws as the host path, and the train step applies
them with `ferjax.data.device_augment.batch_images`. Eval is unchanged.

With `config.data.validation='holdout:F'` (`ferjax.data.holdout`) training
reads the train split less a stratified holdout, which `holdout_source`
serves for choosing the best checkpoint.
"""

import dataclasses
import functools
import math
from typing import Any

import grain
import jax
import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from jax.experimental import multihost_utils

from ferjax.data import augment
from ferjax.data import build as build_lib
from ferjax.data import clips
from ferjax.data import datasets
from ferjax.data import decoded_cache
from ferjax.data import holdout
from ferjax.data import maps


class DatasetNotBuiltError(FileNotFoundError):
  """The dataset a config asks for has not been built into data_dir."""


def _tfds_name(cfg: ml_collections.ConfigDict) -> str:
  return f'{cfg.name}/{cfg.config}' if cfg.get('config') else cfg.name


class _EncodedFrames(tfds.decode.SkipDecoding):
  """Leaves the images of a `Sequence(Image)` feature encoded, one per frame.

  TFDS's own SkipDecoding has no NumPy path for sequence features.
  """

  def decode_batch_example_np(self, serialized_example):
    return serialized_example


def _is_image_sequence(feature) -> bool:
  return isinstance(feature, tfds.features.Sequence) and isinstance(
    feature.feature, tfds.features.Image
  )


def _skip_decoders(features, names=('image', 'frames')) -> dict | None:
  """Decoders that leave the image features among `names` encoded."""
  decoders = {}
  for name in set(names) & set(features.keys()):
    feature = features[name]
    if _is_image_sequence(feature):
      decoders[name] = _EncodedFrames()
    elif isinstance(feature, tfds.features.Image):
      decoders[name] = tfds.decode.SkipDecoding()
  return decoders or None


def _check_example_kind(cfg: ml_collections.ConfigDict, features, clip: bool):
  names = sorted(features.keys())
  if clip and 'frames' not in names:
    raise ValueError(
      f'config.clip.segments > 0 asks for video clips, but {_tfds_name(cfg)} '
      f"has no 'frames' feature (its features: {names}); set "
      'config.clip.segments=0 for an image dataset.'
    )
  if not clip and 'image' not in names and 'frames' in names:
    raise ValueError(
      f"{_tfds_name(cfg)} holds video clips ('frames'); set "
      'config.clip.segments (and frames_per_segment) to train on it.'
    )


def data_source(cfg: ml_collections.ConfigDict, split: str, clip: bool = False):
  """Random-access source of `split` of `config.data`, building if allowed.

  Args:
    cfg: `config.data`.
    split: the split to read.
    clip: whether examples are video clips (`config.clip.segments` > 0):
      the dataset must then have a 'frames' feature, whose frames stay
      encoded when it is a `Sequence(Image)` (`clips.take_frames` decodes
      the ones it samples).

  Raises:
    DatasetNotBuiltError: with the exact command that builds the dataset.
    ValueError: if `cfg` does not fit the dataset (config, splits, classes,
      images or clips).
  """
  datasets.check_data_config(cfg)
  kwargs = dict(config=cfg.get('config'), data_dir=cfg.get('data_dir'))
  if cfg.get('auto_build', False):
    if jax.process_index() == 0 and not build_lib.is_built(cfg.name, **kwargs):
      build_lib.build(cfg.name, manual_dir=cfg.get('manual_dir'), **kwargs)
    if jax.process_count() > 1:  # Everyone waits for process 0's build.
      multihost_utils.sync_global_devices(f'build {_tfds_name(cfg)}')
  require_built(cfg)
  kwargs = dict(split=split, data_dir=cfg.get('data_dir'), download=False)
  source = tfds.data_source(_tfds_name(cfg), **kwargs)
  features = source.dataset_info.features
  built_classes = features['label'].num_classes
  if built_classes != cfg.num_classes:
    raise ValueError(
      f'config.data.num_classes={cfg.num_classes} but {_tfds_name(cfg)} has '
      f'{built_classes} classes; set config.data.num_classes={built_classes}.'
    )
  _check_example_kind(cfg, features, clip)
  if clip and _is_image_sequence(features['frames']):
    source = tfds.data_source(
      _tfds_name(cfg), decoders={'frames': _EncodedFrames()}, **kwargs
    )
  if cfg.get('decoded_cache', False):
    source = _decoded(cfg, source, split, clip)
  return source


def require_built(cfg: ml_collections.ConfigDict) -> None:
  """Raises `DatasetNotBuiltError` with the build command unless built.

  Args:
    cfg: `config.data` (name, config, data_dir, manual_dir).
  """
  kwargs = dict(config=cfg.get('config'), data_dir=cfg.get('data_dir'))
  if build_lib.is_built(cfg.name, **kwargs):
    return
  command = build_lib.build_command(
    cfg.name, manual_dir=cfg.get('manual_dir'), **kwargs
  )
  release = (
    f'\n(RELEASE_DIR: where you unpacked the release; '
    f'tfds_builders/{cfg.name}/README.md says how to get it)'
    if 'RELEASE_DIR' in command
    else ''
  )
  raise DatasetNotBuiltError(
    f'Dataset {_tfds_name(cfg)!r} is not built in '
    f'{cfg.get("data_dir") or "the default TFDS data_dir"}. Build it '
    f'with:\n  {command}{release}'
  )


def _decoded(cfg: ml_collections.ConfigDict, source, split: str, clip: bool):
  """`source` served from its decoded cache (`config.data.decoded_cache`)."""
  if clip:
    raise ValueError(
      'config.data.decoded_cache holds decoded images; video clips decode '
      'to far more than their encoded frames (DFEW: tens of GB), so it is '
      'not available for them. Set config.data.decoded_cache=False.'
    )
  return decoded_cache.open_or_build(
    source,
    name=_tfds_name(cfg),
    split=split,
    cache_dir=cfg.get('cache_dir'),
    max_gb=cfg.get('decoded_cache_max_gb', 32.0),
  )


def _undecoded_source(name: str, data_dir: str | None, split: str):
  """`split` with its images and frames left encoded, to read metadata."""
  kwargs = dict(split=split, data_dir=data_dir, download=False)
  features = tfds.data_source(name, **kwargs).dataset_info.features
  return tfds.data_source(name, decoders=_skip_decoders(features), **kwargs)


def read_labels(cfg: ml_collections.ConfigDict, split: str) -> np.ndarray:
  """The integer label of every example of `split`, without decoding images.

  Costs one pass over the records (~70 us each on one core) the first time;
  the (read-only) result is kept for later calls.
  """
  return _labels(_tfds_name(cfg), cfg.get('data_dir'), split)


@functools.lru_cache(maxsize=8)
def _labels(name: str, data_dir: str | None, split: str) -> np.ndarray:
  source = _undecoded_source(name, data_dir, split)
  labels = np.fromiter(
    (source[i]['label'] for i in range(len(source))), np.int32, len(source)
  )
  labels.flags.writeable = False
  return labels


def _frame_count(record) -> int:
  if 'num_frames' in record:
    return int(record['num_frames'])
  return len(record['frames'])


def frame_counts(source) -> np.ndarray:
  """The number of frames of every clip of `source`.

  Reads 'num_frames' where the records have it, else counts 'frames'.
  """
  return np.fromiter(
    (_frame_count(source[i]) for i in range(len(source))),
    np.int64,
    len(source),
  )


def read_frame_counts(cfg: ml_collections.ConfigDict, split: str):
  """`frame_counts` of `split`, without decoding any frame."""
  return frame_counts(
    _undecoded_source(_tfds_name(cfg), cfg.get('data_dir'), split)
  )


@dataclasses.dataclass(frozen=True)
class Subset:
  """The examples of `source` at `indices`, as a random-access source."""

  source: Any
  indices: np.ndarray

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, index):
    return self.source[int(self.indices[index])]

  def __repr__(self) -> str:
    return f'Subset({self.source!r}, {len(self.indices)} of {len(self.source)})'


def clip_config(config: ml_collections.ConfigDict) -> clips.ClipConfig | None:
  """`config.clip`, validated; None for image configs."""
  return clips.parse_config(config.get('clip'))


def drop_short_clips(
  config: ml_collections.ConfigDict, source, split: str | None = None
):
  """`source` less the clips that `config.clip.short='drop'` removes.

  Args:
    config: the run's config.
    source: a random-access source.
    split: the configured split `source` reads, whose frame counts are then
      read without decoding frames; None counts the frames of `source`.

  Returns:
    (the source to read, the indices into `source` it keeps, or None when it
    is `source` itself).

  Raises:
    ValueError: if no clip is long enough.
  """
  clip = clip_config(config)
  if clip is None or clip.short != 'drop':
    return source, None
  counts = (
    read_frame_counts(config.data, split) if split else frame_counts(source)
  )
  kept = clips.kept_indices(counts, clip)
  what = f'{_tfds_name(config.data)} {split}' if split else repr(source)
  logging.info(
    '%s: dropped %d of %d clips shorter than %d frames '
    "(config.clip.short='drop').",
    what,
    len(source) - len(kept),
    len(source),
    clip.length,
  )
  if not len(kept):
    raise ValueError(
      f'Every clip of {what} is shorter than U*V={clip.length} frames; lower '
      'config.clip.segments or frames_per_segment, or set '
      "config.clip.short='loop'."
    )
  if len(kept) == len(source):
    return source, None
  return Subset(source, kept), kept


def holdout_source(config: ml_collections.ConfigDict, part: str):
  """One part of the train split under `config.data.validation='holdout:F'`.

  Args:
    config: the run's config; `config.seed` fixes the holdout.
    part: 'train' (what trains) or 'validation' (the holdout).

  Returns:
    (a `Subset` of the train split, its labels), or None when
    `config.data.validation` is not a holdout.
  """
  fraction = holdout.fraction(config.data.get('validation') or '')
  if fraction is None:
    return None
  split = config.data.train_split
  source = data_source(config.data, split, clip=clip_config(config) is not None)
  labels = read_labels(config.data, split)
  train, validation = holdout.split_indices(labels, fraction, config.seed)
  indices = {'train': train, 'validation': validation}[part]
  return Subset(source, indices), labels[indices]


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
    with b the per-process batch, or 'image' uint8 [b,U*V,h,w,3] for clip
    configs; with `augment.on_device` h, w are the decoded size and
    'augment' holds the parameters; number of training examples, after
    dropping short clips).
  """
  split = config.data.train_split
  clip = clip_config(config)
  given = source is not None
  held = None if given else holdout_source(config, 'train')
  if held is not None:  # Its frames are counted from the source itself.
    (source, labels), given = held, True
  if not given:
    source = data_source(config.data, split, clip=clip is not None)
  source, kept = drop_short_clips(config, source, None if given else split)
  plan = Plan.create(config.batch_size, 'config.batch_size')
  sampling = config.data.get('sampling', 'uniform')
  if sampling == 'class_balanced':
    labels = read_labels(config.data, split) if labels is None else labels
    labels = labels if kept is None else np.asarray(labels)[kept]
    ds = (
      grain.MapDataset.range(len(source))
      .repeat()
      .map_with_index(maps.ClassBalancedIndex(labels, config.seed))
      .map(maps.Lookup(source))
    )
  elif sampling == 'uniform':
    ds = grain.MapDataset.source(source).shuffle(seed=config.seed).repeat()
  else:
    raise ValueError(
      f'config.data.sampling={sampling!r}; use one of {datasets.SAMPLINGS}.'
    )
  train_map = maps.TrainMap(
    augment_config(config), config.data.get('soft_target'), clip
  )
  on_device = train_map.augment_cfg.on_device
  ds = ds.random_map(train_map, seed=config.seed + 1).batch(
    plan.local_batch,
    drop_remainder=True,
    batch_fn=maps.stack_same_size if on_device else None,
  )
  return _iter(plan.take_process_batches(ds), config.data), len(source)


def eval_dataset(config: ml_collections.ConfigDict, split: str, source=None):
  """One pass over `split`, padded and masked, batched per process.

  Args:
    config: the run's config.
    split: the split to evaluate on.
    source: a random-access source to use instead of `split`.

  Returns:
    (iter dataset yielding {'image', 'label', 'mask'} batches, number of
    real examples (after dropping short clips), number of batches).
  """
  clip = clip_config(config)
  given = source is not None
  if not given:
    source = data_source(config.data, split, clip=clip is not None)
  source, _ = drop_short_clips(config, source, None if given else split)
  plan = Plan.create(config.eval_batch_size, 'config.eval_batch_size')
  num_batches = max(1, math.ceil(len(source) / plan.global_batch))
  ds = (
    grain.MapDataset.range(num_batches * plan.global_batch)
    .map(maps.EvalMap(source, augment_config(config), clip))
    .batch(plan.local_batch, drop_remainder=True)
  )
  return (
    _iter(plan.take_process_batches(ds), config.data),
    len(source),
    num_batches,
  )

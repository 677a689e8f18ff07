"""The grain transforms that the input pipelines are built from.

`ClassBalancedIndex` and `Lookup` turn positions of the endless train stream
into class-balanced records; `TrainMap` and `EvalMap` turn a decoded record
(or a clip's chosen frames) into a uint8 example, augmented on the host
(`ferjax.data.augment`, `ferjax.data.clips`) or, with `augment.on_device`,
decoded with drawn parameters (`ferjax.data.device_augment`), which
`stack_same_size` batches. `ferjax.data.pipeline` assembles them.
"""

import dataclasses
from typing import Any

import grain
import jax
import numpy as np

from ferjax.data import augment
from ferjax.data import clips
from ferjax.data import device_augment


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


def _train_pixels(image, rng, c: augment.AugmentConfig, clip: bool):
  """Decoded image (or chosen frames) -> (train pixels, device params)."""
  if c.device_source_size:
    image = device_augment.resize_source(image, c.device_source_size, clip)
  if c.on_device:
    return device_augment.prepare(image, rng, c, clip)
  if clip:
    return clips.train_clip_transform(image, rng, c), None
  return augment.train_transform(image, rng, c), None


@dataclasses.dataclass(frozen=True)
class TrainMap(grain.transforms.RandomMap):
  """Decoded record -> augmented uint8 image (or clip) and int32 label.

  With `augment.on_device` the image is the decoded one (resized to
  `augment.device_source_size` if set) and 'augment' holds the drawn
  parameters (`device_augment.host_params`) that the train step applies.
  """

  augment_cfg: Any
  soft_target: str | None = None
  clip: clips.ClipConfig | None = None

  def random_map(self, record, rng: np.random.Generator):
    c = augment.parse_config(self.augment_cfg)
    if self.clip:
      frames = record['frames']
      indices = clips.train_indices(
        len(frames), self.clip.segments, self.clip.frames_per_segment, rng
      )
      image = clips.take_frames(frames, indices)
      ex = {'label': np.int32(record['label'])}
    else:
      ex = _example(record)
      image = ex['image']
    ex['image'], params = _train_pixels(image, rng, c, self.clip is not None)
    if params is not None:
      ex['augment'] = params
    if self.soft_target:
      ex['target'] = np.asarray(record[self.soft_target], np.float32)
    return ex


def stack_same_size(examples):
  """grain's batching, with a clear error for images of several sizes."""
  try:
    return jax.tree.map(lambda *xs: np.stack(xs), *examples)
  except ValueError as e:
    shapes = sorted({ex['image'].shape for ex in examples})
    raise ValueError(
      f'augment.on_device batches the decoded images, which differ in size '
      f'here ({shapes}); set config.augment.device_source_size to a side '
      'they are all resized to.'
    ) from e


@dataclasses.dataclass(frozen=True)
class EvalMap(grain.transforms.Map):
  """Index -> eval example, or a masked zero example past the split's end."""

  source: Any
  augment_cfg: Any
  clip: clips.ClipConfig | None = None

  def map(self, index):
    size = self.augment_cfg.size
    if index >= len(self.source):
      frames = (self.clip.length,) if self.clip else ()
      return {
        'image': np.zeros((*frames, size, size, 3), np.uint8),
        'label': np.int32(0),
        'mask': np.bool_(False),
      }
    record = self.source[index]
    if self.clip:
      ex = {
        'image': clips.eval_clip(record['frames'], self.clip, self.augment_cfg),
        'label': np.int32(record['label']),
      }
    else:
      ex = _example(record)
      ex['image'] = augment.eval_transform(ex['image'], self.augment_cfg)
    ex['mask'] = np.bool_(True)
    return ex

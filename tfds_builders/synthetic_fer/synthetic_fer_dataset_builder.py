"""synthetic_fer: procedurally rendered faces, one per example, no download.

Example `i` of a split shows expression `i % 7` (so labels are exactly
balanced when a split size is a multiple of 7) and is rendered from a
generator seeded by (seed, split id, i): the dataset is identical across
runs and machines and independent of generation order.

The image configs (`112`, `64`, `smoke`) hold one face per example; the clip
configs (`clip`, `clip_smoke`) hold a short clip per example, in the
features of the video datasets (`frames`, `num_frames`), where the
expression unfolds over the frames (`clips.py`).
"""

import dataclasses

import cv2
import numpy as np
import tensorflow_datasets as tfds

from ferjax.labels import EXPRESSIONS_7
from tfds_builders.synthetic_fer import clips
from tfds_builders.synthetic_fer import render

SPLIT_IDS = {'train': 0, 'test': 1}


@dataclasses.dataclass(kw_only=True)
class SyntheticFerConfig(tfds.core.BuilderConfig):
  """Image size, split sizes and seed of one synthetic_fer variant.

  Attributes:
    image_size: height and width of the square images in pixels.
    num_train: number of training examples.
    num_test: number of test examples.
    seed: seeds every example's generator.
  """

  image_size: int = 112
  num_train: int = 14_000
  num_test: int = 2_800
  seed: int = 0

  def num_examples(self, split: str) -> int:
    """Number of examples of `split` ('train' or 'test')."""
    return {'train': self.num_train, 'test': self.num_test}[split]


@dataclasses.dataclass(kw_only=True)
class SyntheticClipConfig(SyntheticFerConfig):
  """A clip variant: frames per clip, besides size, split sizes and seed.

  Attributes:
    min_frames: the fewest frames a clip has.
    max_frames: the most frames a clip has; lengths are uniform between.
  """

  min_frames: int = 12
  max_frames: int = 24


class Builder(tfds.core.GeneratorBasedBuilder):
  """DatasetBuilder for synthetic_fer."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  # The first config is the default.
  BUILDER_CONFIGS = [
    SyntheticFerConfig(
      name='112',
      description='112x112 faces, 14,000 train and 2,800 test examples.',
    ),
    SyntheticFerConfig(
      name='64',
      description='64x64 faces, 14,000 train and 2,800 test examples.',
      image_size=64,
    ),
    SyntheticFerConfig(
      name='smoke',
      description='32x32 faces, 448 train and 140 test examples, for tests.',
      image_size=32,
      num_train=448,
      num_test=140,
    ),
    SyntheticClipConfig(
      name='clip',
      description='Clips of 12 to 24 64x64 frames, 3,500 train and 700 test.',
      image_size=64,
      num_train=3_500,
      num_test=700,
    ),
    SyntheticClipConfig(
      name='clip_smoke',
      description='Clips of 8 to 20 32x32 frames, 280 train and 70 test, '
      'for tests.',
      image_size=32,
      num_train=280,
      num_test=70,
      min_frames=8,
      max_frames=20,
    ),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    """Returns the dataset metadata."""
    size = self.builder_config.image_size
    if isinstance(self.builder_config, SyntheticClipConfig):
      return self.dataset_info_from_configs(
        features=clip_features(size), supervised_keys=('frames', 'label')
      )
    return self.dataset_info_from_configs(
      features=tfds.features.FeaturesDict(
        {
          'image': tfds.features.Image(
            shape=(size, size, 3), encoding_format='png'
          ),
          'label': tfds.features.ClassLabel(names=EXPRESSIONS_7),
          'id': tfds.features.Text(),
        }
      ),
      supervised_keys=('image', 'label'),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    """Returns the train and test generators; nothing is downloaded."""
    del dl_manager
    return {split: self._generate_examples(split) for split in SPLIT_IDS}

  def _generate_examples(self, split: str):
    """Yields (index, example) for every example of `split`."""
    cfg = self.builder_config
    make = (
      make_clip_example
      if isinstance(cfg, SyntheticClipConfig)
      else make_example
    )
    for index in range(cfg.num_examples(split)):
      yield index, make(cfg, split, index)


def make_example(cfg: SyntheticFerConfig, split: str, index: int) -> dict:
  """Renders example `index` of `split` as a feature dict.

  Args:
    cfg: the dataset variant.
    split: 'train' or 'test'.
    index: example index within the split.

  Returns:
    {'image': PNG bytes, 'label': int, 'id': str}.
  """
  label = index % len(EXPRESSIONS_7)
  bgr = render.render_example(
    cfg.seed, SPLIT_IDS[split], index, label, cfg.image_size
  )
  # tfds encodes numpy images with TensorFlow, so pass PNG bytes instead.
  ok, png = cv2.imencode('.png', bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1])
  if not ok:
    raise RuntimeError(f'PNG encoding failed for {split} example {index}.')
  return {'image': png.tobytes(), 'label': label, 'id': f'{split}_{index}'}


def clip_features(size: int) -> tfds.features.FeaturesDict:
  """The features of a clip config: the video datasets' `frames` layout."""
  return tfds.features.FeaturesDict(
    {
      'frames': tfds.features.Sequence(
        tfds.features.Image(shape=(size, size, 3), encoding_format='jpeg'),
        doc='The clip, frame by frame in temporal order.',
      ),
      'label': tfds.features.ClassLabel(names=EXPRESSIONS_7),
      'id': tfds.features.Text(),
      'num_frames': tfds.features.Scalar(
        dtype=np.int32, doc='Number of frames in the clip.'
      ),
    }
  )


def encode_frame(bgr: np.ndarray) -> bytes:
  """A rendered frame as the JPEG bytes a clip config stores (quality 95)."""
  ok, data = cv2.imencode('.jpg', bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
  if not ok:
    raise RuntimeError('JPEG encoding of a rendered frame failed.')
  return data.tobytes()


def make_clip_example(cfg: SyntheticClipConfig, split: str, index: int) -> dict:
  """Renders clip `index` of `split` as a feature dict.

  Args:
    cfg: the clip variant.
    split: 'train' or 'test'.
    index: example index within the split.

  Returns:
    {'frames': JPEG bytes per frame, 'label': int, 'id': str,
    'num_frames': int}.
  """
  label = index % len(EXPRESSIONS_7)
  frames = clips.render_clip(
    cfg.seed,
    SPLIT_IDS[split],
    index,
    label,
    cfg.image_size,
    (cfg.min_frames, cfg.max_frames),
  )
  return {
    'frames': [encode_frame(f) for f in frames],
    'label': label,
    'id': f'{split}_{index}',
    'num_frames': len(frames),
  }

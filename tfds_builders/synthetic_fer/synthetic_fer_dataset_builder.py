"""synthetic_fer: procedurally rendered faces, one per example, no download.

Example `i` of a split shows expression `i % 7` (so labels are exactly
balanced when a split size is a multiple of 7) and is rendered from a
generator seeded by (seed, split id, i): the dataset is identical across
runs and machines and independent of generation order.
"""

import dataclasses

import cv2
import tensorflow_datasets as tfds

from ferjax.labels import EXPRESSIONS_7
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
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    """Returns the dataset metadata."""
    size = self.builder_config.image_size
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
    for index in range(cfg.num_examples(split)):
      yield index, make_example(cfg, split, index)


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

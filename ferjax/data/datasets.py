"""What ferjax knows about each dataset: configs, splits, classes, defaults.

One `DatasetSpec` per folder of `tfds_builders/`. Config files call
`set_dataset`, which copies a spec's defaults into `config.data` and
`config.augment`, so a run's config.json shows every value used;
`check_data_config` rejects a config that disagrees with its dataset before
anything is built or trained.

The default input sizes are the common practice of the papers ferjax
reproduces (the native image size is only a starting point): 224 px for the
in-the-wild sets (MA-Net, DAN, POSTER, MFER), 112 px for FERPlus's 48 px
faces (DDAMFN). Grayscale images (FERPlus) are repeated to three channels by
the pipeline, so every model sees RGB.
"""

import dataclasses
from collections.abc import Mapping

import ml_collections

from ferjax.data import holdout


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """Facts and defaults of one dataset.

  Attributes:
    configs: builder config name -> number of classes; `None` names a
      builder without configs.
    splits: every split the builder writes.
    train_split: the split models train on.
    eval_split: the split papers report on (and select the best epoch on).
    input_size: default model input size, in pixels.
    channels: channels of the stored images (1: grayscale, repeated to RGB).
    soft_target: a float feature of per-class probabilities that a config
      may train on instead of the integer label, by builder config.
    sampling: the default of `config.data.sampling` (see `SAMPLINGS`).
    crop: how its images frame a face: a crop style of
      `ferjax.faces.crops.STYLES`, which `set_dataset` records as
      `config.data.crop` and the predictor cuts detected faces with.
    config_crops: builder configs whose images are framed otherwise (e.g.
      CAER-S's 'aligned' config) -> their crop style.
  """

  configs: Mapping[str | None, int]
  splits: tuple[str, ...]
  train_split: str = 'train'
  eval_split: str = 'test'
  input_size: int = 224
  channels: int = 3
  soft_target: Mapping[str, str] = dataclasses.field(default_factory=dict)
  sampling: str = 'uniform'
  crop: str = 'box'
  config_crops: Mapping[str, str] = dataclasses.field(default_factory=dict)

  @property
  def default_config(self) -> str | None:
    return next(iter(self.configs))

  def crop_for(self, builder_config: str | None) -> str:
    """The crop style of the images of `builder_config`."""
    return self.config_crops.get(builder_config, self.crop)


# DFEW's five official folds, with frames as shipped, then at 112 px.
_DFEW_CONFIGS = tuple(
  f'fold{k}{size}' for size in ('', '_112') for k in range(1, 6)
)

SPECS: dict[str, DatasetSpec] = {
  # Procedural faces; needs no download (tfds_builders/synthetic_fer). The
  # clip configs hold short clips in the video datasets' layout (`frames`).
  'synthetic_fer': DatasetSpec(
    configs={'112': 7, '64': 7, 'smoke': 7, 'clip': 7, 'clip_smoke': 7},
    splits=('train', 'test'),
    input_size=112,
    crop='synthetic_fer',
  ),
  'rafdb': DatasetSpec(
    configs={None: 7}, splits=('train', 'test'), crop='rafdb'
  ),
  # `test` is AffectNet's official validation set, which papers report on.
  # Its training set is heavily skewed (happiness ~47 %, contempt ~1 %), so
  # most recipes (DAN, POSTER++, DDAMFN) sample it class-balanced.
  # The '_aligned' configs store MTCNN-aligned 'rafdb'-style crops.
  'affectnet': DatasetSpec(
    configs={
      '7class': 7,
      '8class': 8,
      '7class_aligned': 7,
      '8class_aligned': 8,
    },
    splits=('train', 'test'),
    sampling='class_balanced',
    crop='affectnet',
    config_crops={'7class_aligned': 'rafdb', '8class_aligned': 'rafdb'},
  ),
  # FERPlus: PublicTest is `validation`, PrivateTest `test` (the reported
  # one). The probability config adds the vote distribution as a target.
  'ferplus': DatasetSpec(
    configs={'majority': 8, 'probability': 8},
    splits=('train', 'validation', 'test'),
    input_size=112,
    channels=1,
    soft_target={'probability': 'label_distribution'},
    crop='ferplus',
  ),
  # SFEW 2.0's Test labels are not public: papers report on Val.
  'sfew': DatasetSpec(
    configs={None: 7},
    splits=('train', 'validation'),
    eval_split='validation',
    crop='sfew',
  ),
  # Whole frames; the 'aligned' config stores MTCNN-aligned face crops.
  'caer_s': DatasetSpec(
    configs={'frames': 7, 'aligned': 7},
    splits=('train', 'test'),
    crop='caer_s',
    config_crops={'aligned': 'rafdb'},
  ),
  # Video clips (`frames`). DFEW: one config per fold; papers report the
  # mean over the five. Video FER recipes (Former-DFER, IAL, M3DFEL) train
  # at 112 px.
  'dfew': DatasetSpec(
    configs=dict.fromkeys(_DFEW_CONFIGS, 7),
    splits=('train', 'test'),
    input_size=112,
    crop='dfew',
  ),
  'ferv39k': DatasetSpec(
    configs={'default': 7, '112': 7},
    splits=('train', 'test'),
    input_size=112,
    crop='ferv39k',
  ),
}


def spec(name: str) -> DatasetSpec:
  """The spec of dataset `name` (a folder of `tfds_builders/`)."""
  if name not in SPECS:
    raise ValueError(
      f'Unknown dataset {name!r}; ferjax knows {", ".join(sorted(SPECS))}.'
    )
  return SPECS[name]


def _fail(dataset: str, field: str, value, allowed) -> None:
  raise ValueError(
    f'config.data.{field}={value!r} does not fit dataset {dataset!r}; '
    f'valid: {allowed}.'
  )


def check_data_config(data: ml_collections.ConfigDict) -> None:
  """Checks `config.data` against its dataset's spec.

  Datasets without a spec (a user's own builder) are not checked.

  Raises:
    ValueError: naming the field, its value and the valid values.
  """
  if data.name not in SPECS:
    return
  s = SPECS[data.name]
  # No config means the builder's default one, as TFDS reads it.
  builder_config = data.get('config') or s.default_config
  if builder_config not in s.configs:
    _fail(data.name, 'config', builder_config, list(s.configs))
  for field in ('train_split', 'eval_split'):
    if data.get(field) not in s.splits:
      _fail(data.name, field, data.get(field), list(s.splits))
  holdout.check(data.get('validation') or data.eval_split, s.splits, data.name)
  if data.num_classes != s.configs[builder_config]:
    _fail(
      data.name, 'num_classes', data.num_classes, [s.configs[builder_config]]
    )
  target = data.get('soft_target')
  if target and target != s.soft_target.get(builder_config):
    _fail(data.name, 'soft_target', target, [None, *s.soft_target.values()])
  if data.get('sampling', 'uniform') not in SAMPLINGS:
    _fail(data.name, 'sampling', data.get('sampling'), list(SAMPLINGS))
  _check_crop(data)


def _check_crop(data: ml_collections.ConfigDict) -> None:
  """A named crop style must exist (a typo would surface only when the
  trained model predicts)."""
  from ferjax.faces import crops

  if data.get('crop') and data.crop not in crops.STYLES:
    _fail(data.name, 'crop', data.crop, sorted(crops.STYLES))


def dataset_crop(name: str, builder_config: str | None = None) -> str:
  """The crop style of a dataset's images; 'box' for unknown datasets."""
  s = SPECS.get(name)
  return s.crop_for(builder_config or s.default_config) if s else 'box'


# How training draws examples: each epoch once in a shuffled order, or
# class-balanced (DAN's and POSTER++'s ImbalancedDatasetSampler for
# AffectNet): every draw picks a class uniformly, then one of its examples
# uniformly, with replacement; an epoch keeps the split's length.
SAMPLINGS = ('uniform', 'class_balanced')


def set_dataset(
  config: ml_collections.ConfigDict, name: str, builder_config: str = ''
) -> ml_collections.ConfigDict:
  """Points `config` at a dataset with its defaults.

  Sets `config.data.{name, config, num_classes, train_split, eval_split,
  validation, sampling, crop}` (validation: the eval split, as the papers
  choose the best checkpoint) and `config.augment.size`; the caller
  overrides any of them afterwards.

  Args:
    config: a config made by `configs.common.base_config()`.
    name: a dataset with a spec.
    builder_config: its builder config; '' takes the default one.

  Returns:
    `config`, changed in place.
  """
  s = spec(name)
  builder_config = builder_config or s.default_config
  if builder_config not in s.configs:
    _fail(name, 'config', builder_config, list(s.configs))
  config.data.name = name
  config.data.config = builder_config
  config.data.num_classes = s.configs[builder_config]
  config.data.train_split = s.train_split
  config.data.eval_split = s.eval_split
  config.data.validation = s.eval_split
  config.data.sampling = s.sampling
  config.data.crop = s.crop_for(builder_config)
  config.augment.size = s.input_size
  return config

"""Helpers shared by the config files.

`parse_arg` turns the string after `:` in `--config=configs/x.py:arg` into a
typed ConfigDict, the way big_vision's configs do:

  --config=configs/demo.py:smoke                 -> smoke=True
  --config=configs/demo.py:smoke,variant=b,lr=0.1 -> also variant='b', lr=0.1
"""

import contextlib

import ml_collections

from ferjax import cli


def _coerce(name: str, text: str, default):
  """Parses `text` into the type of `default`, naming the field on failure."""
  if isinstance(default, bool):
    lowered = text.lower()
    if lowered in ('', 'true', '1', 'yes'):
      return True
    if lowered in ('false', '0', 'no'):
      return False
    raise ValueError(f'config arg {name}={text!r}: expected true or false.')
  try:
    return type(default)(text)
  except ValueError as e:
    raise ValueError(
      f'config arg {name}={text!r}: expected {type(default).__name__}.'
    ) from e


def override(config: ml_collections.ConfigDict, assignment: str) -> None:
  """Sets `config.a.b=text` from 'a.b=text', typed like the current value.

  Booleans accept true/false/1/0/yes/no; fields that are None take the text
  as a string. An unknown field is an error naming it.
  """
  hint = (
    f'{assignment!r}: expected FIELD=VALUE with FIELD an existing config '
    'field, e.g. model.remat=true.'
  )
  try:
    path, text = cli.split_field(assignment)
  except ValueError:
    raise ValueError(hint) from None
  *parents, name = path.split('.')
  node = config
  for part in parents:
    node = (
      node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
    )
  if not isinstance(node, ml_collections.ConfigDict) or name not in node:
    raise ValueError(hint)
  current = node[name]
  if current is not None and not isinstance(current, bool | int | float | str):
    raise ValueError(
      f'{assignment!r}: {path} is a {type(current).__name__}; only numbers, '
      'booleans and strings are set this way.'
    )
  value = text if current is None else _coerce(path, text.strip(), current)
  with node.unlocked() if node.is_locked else contextlib.nullcontext():
    node[name] = value


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """Parses `a,b=1,c=x` into a locked ConfigDict typed like `defaults`.

  A bare name sets a boolean field to True. Every name must be a key of
  `defaults`; values take the type of their default.

  Args:
    arg: the text after `:` in the --config flag, or None.
    **defaults: the accepted fields and their default values.

  Returns:
    A locked ConfigDict with one field per default.
  """
  result = dict(defaults)
  for item in filter(None, (arg or '').split(',')):
    name, _, text = item.partition('=')
    name = name.strip()
    if name not in defaults:
      raise ValueError(
        f'Unknown config arg {name!r} in {arg!r}; valid args: '
        f'{", ".join(sorted(defaults))}.'
      )
    result[name] = _coerce(name, text.strip(), defaults[name])
  return ml_collections.ConfigDict(result).lock()


def base_config() -> ml_collections.ConfigDict:
  """Every field the trainer reads, with defaults; configs override them."""
  from ferjax.data import augment

  placeholder = ml_collections.config_dict.placeholder
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.data = ml_collections.ConfigDict()
  config.data.name = 'synthetic_fer'  # A folder of tfds_builders/.
  config.data.config = placeholder(str)  # The builder config, e.g. '112'.
  config.data.data_dir = placeholder(str)  # None: the TFDS default.
  config.data.manual_dir = placeholder(str)  # Where the download lies.
  config.data.auto_build = False  # Build on first use (synthetic data only).
  config.data.train_split = 'train'
  config.data.eval_split = 'test'
  # Where the best checkpoint is chosen (`ferjax.data.holdout`): a split
  # ('test': the papers' practice; FERPlus's official 'validation') or
  # 'holdout:F', a stratified fraction F of the train split, fixed by the
  # seed; results.json then also gives the test metrics at its best step.
  config.data.validation = 'test'
  config.data.num_classes = 7
  # 'uniform' (each example once per epoch) or 'class_balanced' (AffectNet).
  config.data.sampling = 'uniform'
  # A float feature to train on instead of the label, e.g. FERPlus's
  # 'label_distribution' (builder config 'probability').
  config.data.soft_target = placeholder(str)
  # How its images frame a face (a ferjax.faces.crops style), which the
  # predictor cuts detected faces to; None: the dataset's own
  # (DatasetSpec.crop), which set_dataset writes here.
  config.data.crop = placeholder(str)
  # Decode each image split once into memory-mapped arrays on local disk
  # (`ferjax.data.decoded_cache`): ~2x the examples per CPU core for small
  # datasets (RAF-DB: 460 MB). Image datasets only.
  config.data.decoded_cache = False
  config.data.cache_dir = placeholder(str)  # None: ~/.cache/ferjax/decoded.
  config.data.decoded_cache_max_gb = 32.0  # Refuse larger caches.
  config.data.worker_count = 0  # grain worker processes (0: in-process).
  config.data.read_threads = 2  # Threads preparing batches ahead.
  config.data.prefetch = 4  # Batches prepared ahead.

  config.augment = augment.default_config()

  # Video clips (ferjax.data.clips): each example is `segments` (U) runs of
  # `frames_per_segment` (V) consecutive frames of its 'frames' feature, TSN
  # sampled (a random run per segment in training, the centre one in
  # evaluation) and augmented with one draw per clip; batches are then
  # (b, U*V, size, size, 3). IAL: U=16, V=1; Former-DFER: U=8, V=2.
  config.clip = ml_collections.ConfigDict()
  config.clip.segments = 0  # U; 0: static images, the pipeline is unchanged.
  config.clip.frames_per_segment = 1  # V.
  # Clips shorter than U*V frames: 'loop' repeats them until long enough
  # (DFEW's official loader); 'drop' removes them from the train and eval
  # splits before shuffling (IAL and Former-DFER drop < 16 frames). 'loop'
  # is the default because it keeps every clip, so WAR/UAR are measured on
  # the whole official test set, and FERV39K (8-47 frames) loses no clips.
  config.clip.short = 'loop'

  config.model = ml_collections.ConfigDict()
  config.model.name = 'resnet18'
  # Compute dtype: 'auto' is bfloat16 on GPU/TPU and float32 on CPU
  # (`ferjax.models.compute_dtype`); parameters always stay float32.
  config.model.dtype = 'auto'

  config.loss = ml_collections.ConfigDict()
  # A `ferjax.losses` name; 'auto' is the model's own loss (its ModelSpec).
  config.loss.name = 'auto'
  config.loss.label_smoothing = 0.0

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = 'sgd'
  config.optimizer.momentum = 0.9
  config.optimizer.nesterov = False
  config.optimizer.b1 = 0.9
  config.optimizer.b2 = 0.999
  config.optimizer.eps = 1e-8
  config.optimizer.weight_decay = 1e-4
  config.optimizer.weight_decay_on = 'all'  # PyTorch decays every param.
  config.optimizer.grad_clip_norm = 0.0

  config.schedule = ml_collections.ConfigDict()
  config.schedule.name = 'cosine'  # constant, step, exponential, cosine.
  config.schedule.base_lr = 0.1
  config.schedule.unit = 'epoch'  # Decay per epoch (PyTorch) or 'step'.
  config.schedule.warmup_epochs = 0.0
  config.schedule.step_size = 15  # StepLR period, in units.
  config.schedule.milestones = ()  # MultiStepLR (overrides step_size).
  config.schedule.gamma = 0.1  # StepLR / ExponentialLR factor.
  config.schedule.end_factor = 0.0  # Cosine floor, as a fraction of base_lr.

  config.batch_size = 128  # Global, over all devices and processes.
  config.eval_batch_size = 256
  config.num_epochs = 10.0
  config.total_steps = 0  # If set, overrides num_epochs.
  config.log_every_steps = 50
  config.eval_every_epochs = 1.0
  config.best_metric = 'war'  # 'war' or 'uar' selects the best checkpoint.

  config.checkpoint = ml_collections.ConfigDict()
  config.checkpoint.every_steps = 1000
  config.checkpoint.keep = 2
  config.checkpoint.async_save = True

  config.mesh = (('data', -1),)
  config.sharding = 'replicate'  # or 'fsdp'.
  config.init_from = ''  # A ferjax workdir or a PyTorch .pth to start from.
  # PyTorch key prefixes init_from leaves out, e.g. ('fc.',) for a new head.
  config.init_from_skip = ()
  return config


def smoke(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Turns a paper config into its `:smoke` variant for the CPU tests.

  Three steps on synthetic_fer/smoke at 32 px with small batches; the model
  keeps its architecture (configs shrink it themselves where needed).
  """
  config.data.name = 'synthetic_fer'
  config.data.config = 'smoke'
  config.data.auto_build = True
  config.data.eval_split = 'test'
  config.data.validation = 'test'
  config.data.num_classes = 7
  config.data.sampling = 'uniform'
  config.data.soft_target = None
  config.data.crop = None
  config.augment.size = 32
  config.batch_size = 16
  config.eval_batch_size = 32  # The 140 test examples need a padded batch.
  config.total_steps = 3
  config.log_every_steps = 1
  config.eval_every_epochs = 1.0  # 28 steps/epoch: only the final eval.
  config.checkpoint.every_steps = 3
  config.init_from = ''
  return config

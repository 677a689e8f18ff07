"""The model a predictor runs: from a ferjax run, converted weights or a .pth.

Both read their variables with `ferjax.checkpointing` (`load_run`,
`load_variables`, which `config.init_from` uses too), so every source that
training accepts predicts the same way.

Each also says how its training images framed faces (`Loaded.crop`, a
`ferjax.faces.crops` style): a run's `config.data.crop` (None: its
dataset's, `DatasetSpec.crop`); a run trained before that field existed
keeps the margin crop it was predicted with then (`legacy_crop`);
converted weights take the style their metadata records ('crop'), else the
one of the checkpoint their model starts from (`Checkpoint.crop`: the
face.evoLVe template for IR-50 models), else the margin crop. Older runs
also keep the Haar detector their margins were measured with
(`Loaded.detector`); the rest default to MTCNN.
"""

import dataclasses
import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from ferjax import checkpointing
from ferjax import models
from ferjax import weights
from ferjax.data import clips
from ferjax.data import datasets
from ferjax.faces import crops
from ferjax.faces import detect
from ferjax.weights import saved

# The margins runs trained before `config.data.crop` were predicted with:
# synthetic_fer's images measure 1.6x their Haar box; others used
# detect.DEFAULT_MARGIN.
DATASET_MARGINS = {'synthetic_fer': 0.3}


@dataclasses.dataclass(frozen=True)
class Loaded:
  """A model with its variables and the preprocessing it was trained with.

  Attributes:
    model: the unbound Linen module.
    variables: its variables, host numpy arrays.
    num_classes: the classes it predicts.
    augment_config: the eval preprocessing fields (`config.augment`).
    clip_config: `config.clip` for clip models, else None.
    crop: how its training images framed faces.
    detector: the detector 'auto' means for it: 'haar' for runs trained
      before crop styles, else 'auto' (the predictor's choice).
  """

  model: Any
  variables: dict
  num_classes: int
  augment_config: Any
  clip_config: Any
  crop: crops.CropStyle = crops.STYLES['box']
  detector: str = 'auto'


def legacy_crop(dataset: str) -> crops.CropStyle:
  """The square margin crop of runs trained before crop styles."""
  margin = DATASET_MARGINS.get(dataset, detect.DEFAULT_MARGIN)
  return dataclasses.replace(crops.STYLES['box'], margin=margin)


def run_crop(data) -> crops.CropStyle:
  """The crop style of a run's `config.data`."""
  if 'crop' not in data:
    return legacy_crop(data.name)
  return crops.get_style(
    data.crop or datasets.dataset_crop(data.name, data.get('config'))
  )


def weights_crop(spec, meta: dict) -> crops.CropStyle:
  """The crop style of converted weights (see the module docstring)."""
  known = [c.crop for c in spec.checkpoints if c.crop]
  return crops.get_style(meta.get('crop') or (known or ['box'])[0])


def from_workdir(workdir: str) -> Loaded:
  """The best (else latest) checkpoint of a ferjax run, with its config."""
  config, variables = checkpointing.load_run(os.fspath(workdir))
  return Loaded(
    model=models.create_model(config),
    variables=variables,
    num_classes=config.data.num_classes,
    augment_config=config.augment,
    clip_config=config.get('clip'),
    crop=run_crop(config.data),
    detector='auto' if 'crop' in config.data else 'haar',
  )


def from_weights(
  model_name: str,
  weights_path: str,
  num_classes: int | None = None,
  image_size: int | None = None,
  *,
  augment_config=None,
  clip_config=None,
  **fields: Any,
) -> Loaded:
  """Converted weights (`python -m ferjax.weights convert`) or a .pth.

  Args:
    model_name: the model's registry name, e.g. 'manet'.
    weights_path: a weights directory or a PyTorch checkpoint.
    num_classes: classes of the head; None: the weights directory's, else 7.
    image_size: the model's input side; None: the directory's, else the
      model spec's (`ModelSpec.input_size`).
    augment_config: eval preprocessing fields; None: the defaults (a plain
      resize) at `image_size`.
    clip_config: `config.clip` for clip models; None: U = the model's
      num_frames, V = 1, for models with num_frames.
    **fields: model fields (as for `ferjax.models.get_model`) and the
      converter's options (`ferjax.weights.converter_options`).

  Raises:
    FileNotFoundError: no such weights.
    ValueError: an unknown model, or weights that do not fit it (naming the
      variables).
  """
  path = os.path.expanduser(os.fspath(weights_path))
  kind = checkpointing.source_kind(path)
  if kind not in ('torch', 'weights'):
    raise FileNotFoundError(
      f'{path!r} is neither a weights directory (python -m ferjax.weights '
      'convert writes one) nor a PyTorch '
      f'{"/".join(checkpointing.PYTORCH_EXTENSIONS)} file.'
    )
  spec = models.get_spec(model_name)
  meta = saved.read_meta(path) if kind == 'weights' else {}
  fields = {**meta.get('fields', {}), **fields}
  num_classes = num_classes or meta.get('num_classes') or 7
  size = image_size or fields.get('image_size') or spec.input_size
  options = weights.converter_options(model_name) if spec.converter else ()
  model_fields = {k: v for k, v in fields.items() if k not in options}
  model = spec.build(num_classes, **model_fields)
  variables = checkpointing.load_variables(
    path,
    model_name=model_name,
    model_fields={**fields, 'num_classes': num_classes},
  )
  frames = getattr(model, 'num_frames', None)
  if clip_config is None and frames:
    clip_config = {'segments': frames, 'frames_per_segment': 1}
  clip = clips.parse_config(clip_config)
  shape = (1, *models.example_shape(size, clip.length if clip else 0))
  check_variables(model, variables, shape, path)
  return Loaded(
    model=model,
    variables=variables,
    num_classes=num_classes,
    augment_config={**(augment_config or {}), 'size': size},
    clip_config=clip,
    crop=weights_crop(spec, meta),
  )


def check_variables(model, variables, shape, path: str) -> None:
  """Raises ValueError naming variables that do not fit `model`."""
  rngs = {'params': jax.random.key(0), 'dropout': jax.random.key(0)}
  images = jax.ShapeDtypeStruct(shape, jnp.float32)
  expected = jax.eval_shape(
    functools.partial(model.init, train=False), rngs, images
  )
  want = traverse_util.flatten_dict(dict(expected), sep='/')
  have = traverse_util.flatten_dict(dict(variables), sep='/')
  bad = sorted(
    k for k in want if k not in have or np.shape(have[k]) != want[k].shape
  )
  if bad:
    raise ValueError(
      f'{path}: {len(bad)} variables missing or of another shape for this '
      f'model, e.g. {", ".join(bad[:5])}; check model_name, num_classes, '
      'image_size and the model fields.'
    )

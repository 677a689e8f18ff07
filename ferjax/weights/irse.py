"""PyTorch -> Flax converters for face.evoLVe's IR / IR-SE networks.

face.evoLVe's backbone checkpoints (`backbone_ir50_ms1m_epoch120.pth`, which
POSTER distributes as `ir50.pth`) are bare
state_dicts with the keys `input_layer.*`, `body.{i}.shortcut_layer.*`,
`body.{i}.res_layer.*` and `output_layer.*`; they map key by key onto
`ferjax.models.backbones.irse` (`body.12.res_layer.3.weight` is
`body_12/res_layer_3/kernel`). PReLU weights (C,) become the parameter
`negative_slope` (C,).

* 'ir50' and 'irse' (`from_torch`, `convert`): the whole network. Every
  checkpoint tensor must fit; the classifier `head`, which face.evoLVe does
  not have, keeps a fresh init, and this is reported.
* `convert_trunk`: the variables of an `IRTrunk` (input layer and the first
  `stages` stages) for a model that embeds one as a submodule; the other
  stages and `output_layer` are reported as unused.

    variables = ferjax.weights.from_torch('ir50', 'ir50.pth', num_classes=7)
    trunk = ferjax.weights.irse.convert_trunk(state_dict, stages=3)
    params = {**params, 'backbone': trunk['params']}
"""

import re
from collections.abc import Iterable
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from absl import logging
from flax import traverse_util

from ferjax.weights import torch_convert

HEAD = 'head.'
OUTPUT_LAYER = 'output_layer.'

# The PReLUs: input_layer.2 and res_layer.2 of every unit.
_PRELU = re.compile(r'(input_layer|body\.\d+\.res_layer)\.2\.weight')
_BODY = re.compile(r'body\.(\d+)\.')
# A trunk accepts any size; this one is cheap to trace.
_TRUNK_INPUT = (1, 32, 32, 3)


def rename_prelu(state_dict: Mapping[str, np.ndarray]) -> dict[str, Any]:
  """Names torch's PReLU `weight` `negative_slope`, the Flax parameter."""
  return {
    (k[: -len('weight')] + 'negative_slope' if _PRELU.fullmatch(k) else k): v
    for k, v in state_dict.items()
  }


def _later_units(state_dict: Mapping[str, Any], first: int) -> list[str]:
  """Keys of `body.{i}` with i >= first."""
  return [
    k
    for k in state_dict
    if (m := _BODY.match(k)) is not None and int(m.group(1)) >= first
  ]


def display_name(num_layers: int, mode: str) -> str:
  """'IR-50', 'IR-SE-100', ..."""
  return f'IR{"-SE" if mode == "ir_se" else ""}-{num_layers}'


def _convert(
  model: Any,
  state_dict: Mapping[str, Any],
  *,
  name: str,
  unused: Iterable[str],
  ignore: tuple[str, ...],
  input_shape: tuple[int, ...],
  rng: int | jax.Array,
  hint: str,
) -> tuple[dict[str, Any], torch_convert.Report]:
  """Converts the state_dict less `unused` and `ignore` keys into `model`.

  Flax leaves under `ignore` keep a fresh init; what was loaded, left unused
  and initialised is logged and returned as a Report. `hint` ends the error
  message of a checkpoint that does not fit.
  """
  unused = sorted({*unused, *(k for k in state_dict if k.startswith(ignore))})
  used = {k: v for k, v in state_dict.items() if k not in set(unused)}
  try:
    variables = torch_convert.convert_module(
      model,
      rename_prelu(used),
      input_shape=input_shape,
      ignore=ignore,
      rng=rng,
    )
  except ValueError as e:
    raise ValueError(
      f"The checkpoint does not fit {name} in face.evoLVe's layout: {e}\n{hint}"
    ) from e
  loaded = {torch_convert.module_path(k.rpartition('.')[0]) for k in used}
  initialised = {
    key[1]
    for key in traverse_util.flatten_dict(dict(variables))
    if tuple(key[1:-1]) not in loaded
  }
  report = torch_convert.Report(
    model=name,
    source='face.evoLVe',
    loaded=tuple(sorted(used)),
    unused=tuple(unused),
    initialised=tuple(sorted(initialised)),
    heads_reinitialised=False,
  )
  logging.info('%s', report.summary())
  return variables, report


def convert(
  state_dict: Mapping[str, Any],
  *,
  ignore: Iterable[str] = (),
  rng: int | jax.Array = 0,
  **fields: Any,
) -> tuple[dict[str, Any], torch_convert.Report]:
  """Converts a face.evoLVe checkpoint into variables of model 'irse'.

  Args:
    state_dict: torch tensors or arrays by name; `module.` prefixes and
      `num_batches_tracked` buffers are accepted.
    ignore: torch key prefixes not to load (their layers keep a fresh
      init), e.g. `('output_layer.',)`.
    rng: seed or key of the fresh initialisation (of `head` at least).
    **fields: `IRSE` fields, as for `ferjax.models.get_model('irse', ...)`
      (`num_layers`, `mode`, `input_size`, `num_classes`, ...).

  Returns:
    ({'params': ..., 'batch_stats': ...} of float32 numpy arrays, Report).

  Raises:
    ValueError: a tensor is missing, has another shape or has no place in
      the model; the message names the keys.
  """
  from ferjax import models  # Imports the Flax models only when used.

  model = models.get_model('irse', **fields)
  state_dict = torch_convert.load_state_dict(state_dict)
  side = model.input_size
  return _convert(
    model,
    state_dict,
    name=display_name(model.num_layers, model.mode),
    unused=(),
    # face.evoLVe has no classifier: `head` starts fresh, and a head.* key
    # is reported as unused.
    ignore=(*ignore, HEAD),
    input_shape=(1, side, side, 3),
    rng=rng,
    hint='A checkpoint of the first stages only converts with '
    'ferjax.weights.irse.convert_trunk(..., stages=...).',
  )


def convert_trunk(
  state_dict: Mapping[str, Any],
  *,
  num_layers: int = 50,
  mode: str = 'ir',
  stages: int = 3,
  ignore: Iterable[str] = (),
  rng: int | jax.Array = 0,
  **fields: Any,
) -> dict[str, Any]:
  """Converts a face.evoLVe checkpoint into `IRTrunk` variables.

  A model that runs `IRTrunk(...)` as the submodule 'backbone' takes
  `params['backbone'] = convert_trunk(...)['params']` (and the same for
  'batch_stats'). What was loaded and left unused is logged.

  Args:
    state_dict: torch tensors or arrays by name, or a checkpoint path.
    num_layers: 50, 100 or 152.
    mode: 'ir' or 'ir_se'.
    stages: stages the trunk runs; the checkpoint's later units and its
      `output_layer` are not loaded.
    ignore: torch key prefixes not to load (their layers keep a fresh
      init).
    rng: seed or key of that fresh initialisation.
    **fields: further `IRTrunk` fields (`dtype`, `pixel_mean`, ...).

  Returns:
    {'params': ..., 'batch_stats': ...} of float32 numpy arrays whose top
    level is `input_layer_0..2` and `body_0` ... `body_{n-1}`.

  Raises:
    ValueError: a bad field, or the checkpoint does not fit (the message
      names the keys).
  """
  from ferjax.models.backbones import irse  # Flax only when used.

  irse.check_fields('IRTrunk', num_layers, mode, stages)
  model = irse.IRTrunk(
    num_layers=num_layers, mode=mode, stages=stages, **fields
  )
  state_dict = torch_convert.load_state_dict(state_dict)
  later = _later_units(state_dict, irse.num_units(num_layers, stages))
  head = [k for k in state_dict if k.startswith((OUTPUT_LAYER, HEAD))]
  variables, _ = _convert(
    model,
    state_dict,
    name=f'{display_name(num_layers, mode)} trunk ({stages} stages)',
    unused=(*later, *head),
    ignore=tuple(ignore),
    input_shape=_TRUNK_INPUT,
    rng=rng,
    hint='Check num_layers, mode and stages against the checkpoint.',
  )
  return variables


def from_torch(
  state_dict: Mapping[str, Any],
  *,
  spec: Any,
  ignore: tuple[str, ...],
  rng: int | jax.Array,
  **fields: Any,
) -> dict[str, Any]:
  """`convert` for `ferjax.weights.from_torch` ('irse', 'ir50')."""
  model = spec.build(**fields)
  fields = {'num_layers': model.num_layers, 'mode': model.mode, **fields}
  return convert(state_dict, ignore=ignore, rng=rng, **fields)[0]

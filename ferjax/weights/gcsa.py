"""PyTorch -> Flax converter from IAL's official checkpoint to 'gcsa'.

IAL's training script saves `model.state_dict()` of its DataParallel
`GenerateModel`: `module.s_former.*` (the backbone, fusion module and
transformers) and `module.fc_f.*` (the head). The names map onto
`ferjax.models.gcsa` by the generic rule (`ferjax.weights.torch_convert`)
once

* the `s_former.` prefix is dropped (the Flax model is flat), and
* each transformer layer's wrappers are named: `layers.i.0.fn.norm` ->
  `layers_i/attn_norm`, `layers.i.0.fn.fn` -> `layers_i/attn`,
  `layers.i.1.fn.norm` -> `layers_i/ff_norm`, `layers.i.1.fn.fn` ->
  `layers_i/ff`.

IAL's state_dict also holds 146,752 parameters its forward pass never uses:
`s_former.bias`, every GCA-capable block's `bias1`, `bias2` and `glb`, and
the GCA layers (`gc`, `fc1`, `fc2`, `AUX_fc`) of the 64-channel block
`layer1.0`. They are accepted and reported as unused.

Into `attention='gca'` everything else loads, one to one. Into the default
`attention='gcsa'` everything loads too and the SE layers (`se_fc1`,
`se_fc2` of `layer2_0` and `layer3_0`), which IAL lacks, start fresh from
`rng`; `se_fc2` starts at zero (`se_zero_init`), so the converted GCSA
computes IAL's logits until training moves its SE branch. Into
`attention='se'`, and for the stages outside `attention_stages`, IAL's GC
gate layers (`fc1`, `fc2`) have no place and are reported as unused. Heads of another class count (`fc_f` and the auxiliary classifiers'
`AUX_fc.1`; IAL has 7 classes) are re-initialised and reported. The model is
built for `image_size` x `image_size` frames (IAL's 112), the size that
fixes the global-conv kernels and the position tables.

    variables = ferjax.weights.from_torch(
        'gcsa', 'pretrain_DFEW.pth', attention='gca')
    variables, report = ferjax.weights.gcsa.convert(state_dict)
"""

import re
from collections.abc import Iterable
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from absl import logging
from flax import traverse_util

from ferjax.layers import gcsa_attention
from ferjax.weights import torch_convert

PREFIX = 's_former.'
INPUT_SIZE = 112
# Parameters IAL creates and never uses, after `PREFIX` is dropped.
_DEAD = re.compile(
  r'bias|layer[123]\.\d+\.(bias1|bias2|glb\.weight)'
  r'|layer1\.\d+\.(AUX_fc\.[01]|gc\.0|fc1\.0|fc2\.0)\.weight'
)
_TRANSFORMER_LAYER = re.compile(r'\.layers\.(\d+)\.([01])\.fn\.(norm|fn)\.')
_LAYER_PARTS = {'0': 'attn', '1': 'ff'}
# Heads with one output per class: the classifier and the auxiliary ones.
HEADS = ('fc_f.', 'layer2.0.AUX_fc.1.', 'layer3.0.AUX_fc.1.')
# The blocks of IAL's checkpoint with a GC gate, and its layers' names.
_GCA_STAGES = (2, 3)
_GC_LAYERS = tuple(n.replace('_', '.') for n in gcsa_attention.GC_NAMES)
_MAX_LISTED = 12


def port_key(torch_key: str) -> str:
  """IAL's key (or key prefix) -> the name the port's mapping reads.

  Example: 's_former.temporal_transformer.layers.1.0.fn.fn.to_qkv.weight'
  -> 'temporal_transformer.layers.1.attn.to_qkv.weight'.
  """

  def rename(match: re.Match[str]) -> str:
    suffix = '_norm' if match[3] == 'norm' else ''
    return f'.layers.{match[1]}.{_LAYER_PARTS[match[2]]}{suffix}.'

  return _TRANSFORMER_LAYER.sub(rename, torch_key.removeprefix(PREFIX))


def is_dead(torch_key: str) -> bool:
  """Whether IAL's forward pass never uses this parameter."""
  return _DEAD.fullmatch(torch_key.removeprefix(PREFIX)) is not None


def _check_ial(state_dict: Mapping[str, np.ndarray]) -> None:
  if any(k.startswith(PREFIX) for k in state_dict):
    return
  keys = sorted(state_dict)
  raise ValueError(
    f"The checkpoint is not IAL's GenerateModel: it has no {PREFIX}* keys; "
    f'it holds {len(keys)} tensors, e.g. '
    f'{", ".join(keys[:_MAX_LISTED]) or "none"}.'
  )


def _stage_layers(stages: Iterable[int], names: Iterable[str]) -> tuple:
  """'layer<stage>.0.<name>.' key prefixes, stages in order."""
  return tuple(f'layer{i}.0.{n}.' for i in sorted(stages) for n in names)


def _mismatched_heads(
  renamed: Mapping[str, np.ndarray], num_classes: int
) -> tuple[str, ...]:
  return tuple(
    head
    for head in HEADS
    if f'{head}weight' in renamed
    and renamed[f'{head}weight'].shape[0] != num_classes
  )


def _initialised(
  variables: Mapping[str, Any], used: Mapping[str, np.ndarray]
) -> tuple[str, ...]:
  """Flax module paths with a leaf that no used torch key filled."""
  filled = set(torch_convert.convert_state_dict(used))
  return tuple(
    sorted(
      {
        '/'.join(key[1:-1]) or key[-1]
        for key in traverse_util.flatten_dict(dict(variables))
        if key not in filled
      }
    )
  )


def convert(
  state_dict: Mapping[str, Any],
  *,
  ignore: Iterable[str] = (),
  rng: int | jax.Array = 0,
  image_size: int = INPUT_SIZE,
  **fields: Any,
) -> tuple[dict[str, Any], torch_convert.Report]:
  """Converts IAL's state_dict into variables of the 'gcsa' model.

  Args:
    state_dict: torch tensors or arrays by name, as IAL saves them;
      `module.` prefixes are accepted.
    ignore: IAL key prefixes not to load (their layers keep a fresh init),
      e.g. `('fc_f.',)`.
    rng: seed or key of the fresh initialisation.
    image_size: side of the frames the model is built for (IAL: 112).
    **fields: GCSA fields, as for `ferjax.models.get_model('gcsa', ...)`,
      e.g. `attention='gca'`.

  Returns:
    ({'params': ..., 'batch_stats': ...} of float32 numpy arrays, Report).

  Raises:
    ValueError: the checkpoint is not IAL's, or does not fit the model
      (another frame count or size); the message names the keys.
  """
  from ferjax import models  # Imports the Flax models only when used.

  state_dict = torch_convert.load_state_dict(state_dict)
  _check_ial(state_dict)
  model = models.get_model('gcsa', **fields)
  renamed = {port_key(k): v for k, v in state_dict.items() if not is_dead(k)}
  heads = _mismatched_heads(renamed, model.num_classes)
  gated = set(model.attention_stages)
  gc = gated if model.attention in ('gca', 'gcsa') else set()
  se = gated if model.attention in ('se', 'gcsa') else set()
  # IAL's GC gates where the model has none are left unused; SE layers,
  # which IAL lacks, start fresh.
  unplaced = _stage_layers(set(_GCA_STAGES) - gc, _GC_LAYERS)
  skipped = tuple(port_key(p) for p in ignore) + heads + unplaced
  fresh = _stage_layers(se, gcsa_attention.SE_NAMES)
  used = {k: v for k, v in renamed.items() if not k.startswith(skipped)}
  input_shape = (1, model.num_frames, image_size, image_size, 3)
  try:
    variables = torch_convert.convert_module(
      model, used, input_shape=input_shape, ignore=skipped + fresh, rng=rng
    )
  except ValueError as e:
    raise ValueError(
      f"IAL's checkpoint does not fit GCSA(num_frames={model.num_frames}, "
      f'num_classes={model.num_classes}) at {image_size} px: {e}'
    ) from e

  loaded = tuple(sorted(k for k in state_dict if port_key(k) in used))
  report = torch_convert.Report(
    model=f'GCSA(attention={model.attention!r})',
    source='GenerateModel (IAL)',
    loaded=loaded,
    unused=tuple(sorted(set(state_dict) - set(loaded))),
    initialised=_initialised(variables, used),
    heads_reinitialised=bool(heads),
    heads='fc_f and the auxiliary classifiers',
  )
  logging.info('%s', report.summary())
  return variables, report


# The spec converter (`ModelSpec.converter`); the report is logged.
from_torch = torch_convert.reported(convert)

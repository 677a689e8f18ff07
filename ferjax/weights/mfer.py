"""PyTorch -> Flax converter for MFER (`ferjax.models.mfer`).

It reads two sources and picks one from the keys (`source='auto'`, the
default, so that `config.init_from=convnext_base_22k_224.pth` works):

* 'mfer': an MFER state_dict in the official layout, i.e. the ConvNeXt trunk
  with DS attention as the last module of stages 3 and 4 (`stages.2.27.*`
  and `stages.3.3.*` for ConvNeXt-B: `key.0`, `key.2`, `value`, `attn`,
  `norm`) and the Msc heads as the official `Msc` module names them,
  `msc.{0,1,2}.{fc1,fc2}`. The official training script keeps the heads
  outside the model and saves the model alone; without `msc.*` keys the heads
  keep a fresh init. Heads of another class count are re-initialised.
* 'convnext': a plain ConvNeXt checkpoint (ImageNet-1k or 22k). The trunk
  loads; its `head` is unused; DS attention, the Msc heads and the DSF
  centres keep a fresh init.

A model with ablated modules (`ds_stages`, `head`) leaves an MFER
checkpoint's tensors of those modules unused, and a 'single' or 'linear'
`head` starts fresh.

The DSF centres have no official tensor and always start fresh. What was
loaded, left unused and initialised is logged (and returned by `convert`):

    variables = ferjax.weights.from_torch(
        'mfer', 'convnext_base_22k_224.pth', num_classes=7)
    variables, report = ferjax.weights.mfer.convert(state_dict)

Linear weights become transposed Dense kernels, conv weights OIHW become
HWIO (the depthwise (C, 1, 7, 7) ones (7, 7, 1, C), for
`feature_group_count=C`), LayerNorm weights become `scale` and `gamma` stays
the block's layer-scale parameter (`ferjax.weights.torch_convert`).
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

SOURCES = ('mfer', 'convnext', 'auto')

# The smallest input ConvNeXt accepts: one pixel after the last stage.
_INPUT_SHAPE = (1, 32, 32, 3)
_MAX_LISTED = 12
_DS_ATTENTION = re.compile(r'stages\.\d+\.\d+\.(key|value|attn)\.')
_STEM = 'downsample_layers.0.0.weight'
_NUM_HEADS = 3


def detect_source(state_dict: Mapping[str, Any]) -> str:
  """Returns 'mfer' or 'convnext' from a cleaned state_dict's keys.

  Raises:
    ValueError: the keys fit neither (another architecture).
  """
  if any(_DS_ATTENTION.match(k) or k.startswith('msc.') for k in state_dict):
    return 'mfer'
  if _STEM in state_dict:
    return 'convnext'
  keys = sorted(state_dict)
  raise ValueError(
    'The checkpoint is neither an MFER (no stages.*.*.key/value/attn or '
    f'msc.* keys) nor an official-layout ConvNeXt (no {_STEM}); it holds '
    f'{len(keys)} tensors, e.g. {", ".join(keys[:_MAX_LISTED]) or "none"}.'
  )


def _check_source(requested: str, found: str) -> None:
  if requested not in SOURCES:
    raise ValueError(f'source={requested!r}; use one of {SOURCES}.')
  if requested not in ('auto', found):
    raise ValueError(
      f"source={requested!r} but the checkpoint's keys are those of a "
      f"{found} checkpoint; pass source={found!r} or 'auto'."
    )


def _heads_mismatch(
  state_dict: Mapping[str, np.ndarray], num_classes: int, ignore: tuple
) -> bool:
  keys = [f'msc.{i}.fc2.weight' for i in range(_NUM_HEADS)]
  return any(
    state_dict[k].shape[0] != num_classes
    for k in keys
    if k in state_dict and not k.startswith(ignore)
  )


def _initialised(
  variables: Mapping[str, Any], used: Mapping[str, np.ndarray]
) -> tuple[str, ...]:
  """Top-level Flax names with a leaf that no used torch key filled."""
  loaded = {torch_convert.module_path(k.rpartition('.')[0]) for k in used}
  return tuple(
    sorted(
      {
        key[1]
        for key in traverse_util.flatten_dict(dict(variables))
        if tuple(key[1:-1]) not in loaded
      }
    )
  )


def convert(
  state_dict: Mapping[str, Any],
  *,
  source: str = 'auto',
  ignore: Iterable[str] = (),
  rng: int | jax.Array = 0,
  **fields: Any,
) -> tuple[dict[str, Any], torch_convert.Report]:
  """Converts an MFER or ConvNeXt state_dict into MFER variables.

  Args:
    state_dict: torch tensors or arrays by name; `module.` prefixes are
      accepted.
    source: 'mfer', 'convnext' or 'auto' (from the keys).
    ignore: torch key prefixes not to load (their layers keep a fresh
      init), e.g. `('msc.',)`.
    rng: seed or key of the fresh initialisation.
    **fields: MFER fields, as for `ferjax.models.get_model('mfer', ...)`.

  Returns:
    ({'params': ...} of float32 numpy arrays, Report).

  Raises:
    ValueError: the checkpoint is of another architecture or source, or does
      not fit the model's depths and dims; the message names the keys.
  """
  from ferjax import models  # Imports the Flax models only when used.

  state_dict = torch_convert.load_state_dict(state_dict)
  found = detect_source(state_dict)
  _check_source(source, found)
  model = models.get_model('mfer', **fields)
  ignore = tuple(ignore)

  # DS attention modules by stage (1-based), torch prefixes.
  ds = {
    i: f'stages.{i - 1}.{model.depths[i - 1]}.'
    for i in range(1, len(model.depths) + 1)
  }
  # Flax-side prefixes that no torch key of this source fills.
  fresh = ('dsf_centers', 'msc.' if model.head == 'msc' else 'head.')
  heads_reinitialised = False
  if found == 'convnext':
    ignore += ('head.',)
    fresh += tuple(ds[i] for i in model.ds_stages)
  else:
    # The ablated modules' tensors have no place in the model.
    ignore += tuple(p for i, p in ds.items() if i not in model.ds_stages)
    if model.head != 'msc':
      ignore += ('msc.',)
    heads_reinitialised = _heads_mismatch(state_dict, model.num_classes, ignore)
    if heads_reinitialised:
      ignore += tuple(f'msc.{i}.fc2.' for i in range(_NUM_HEADS))
    if any(k.startswith('msc.') for k in state_dict):
      fresh = tuple(p for p in fresh if p != 'msc.')
  unused = sorted(k for k in state_dict if k.startswith(ignore))
  used = {k: v for k, v in state_dict.items() if not k.startswith(ignore)}

  try:
    variables = torch_convert.convert_module(
      model,
      used,
      input_shape=_INPUT_SHAPE,
      ignore=ignore + fresh,
      rng=rng,
    )
  except ValueError as e:
    raise ValueError(
      f'The {found} checkpoint does not fit MFER(depths='
      f'{tuple(model.depths)}, dims={tuple(model.dims)}): {e}'
    ) from e

  report = torch_convert.Report(
    model='MFER',
    source=found,
    loaded=tuple(sorted(used)),
    unused=tuple(unused),
    initialised=_initialised(variables, used),
    heads_reinitialised=heads_reinitialised,
    heads='The Msc heads fc2',
  )
  logging.info('%s', report.summary())
  return variables, report


# The spec converter (`ModelSpec.converter`); the report is logged.
from_torch = torch_convert.reported(convert)

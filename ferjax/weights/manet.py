"""PyTorch -> Flax converter for MA-Net (`ferjax.models` 'manet').

Two sources are read:

* 'manet': the official whole-network checkpoint (`torch.load(path)
  ['state_dict']`, keys prefixed `module.`, `fc_1`/`fc_2` with 12,666
  MS-Celeb-1M identities). Every tensor must fit; when `num_classes` differs
  from the checkpoint's heads, `fc_1` and `fc_2` are initialised afresh and
  this is reported. Into a one-branch model (`branches`) the other branch's
  tensors are reported as unused.
* 'resnet18': a torchvision-layout ResNet-18 state_dict, of which only the
  front MA-Net shares (`conv1`, `bn1`, `layer1`, `layer2`) is loaded; its
  `layer3`, `layer4` and `fc` tensors are reported as unused and MA-Net's
  own layers keep their initialisation.

    variables = ferjax.weights.from_torch(
        'manet', 'Pretrained_on_MSCeleb.pth.tar', num_classes=7)
    variables, report = ferjax.weights.manet.convert(
        state_dict, source='resnet18', num_classes=7)

The default source is 'manet', so a ResNet-18 file given by mistake is
refused instead of silently filling 1% of the network; 'auto' picks the
source from the keys. Files are read with `torch.load(weights_only=True)`
(see `ferjax.weights.from_torch`); one that needs full unpickling is refused
with an explanation.
"""

from collections.abc import Iterable
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import traverse_util

from ferjax.weights import torch_convert

SOURCES = ('manet', 'resnet18', 'auto')

# Torch key prefixes of the layers MA-Net shares with ResNet-18.
FRONT = ('conv1.', 'bn1.', 'layer1.', 'layer2.')
# ResNet-18 tensors MA-Net has no place for.
RESNET_ONLY = ('layer3.', 'layer4.', 'fc.')
# MA-Net's own layers after the front, by branch.
BRANCH_LAYERS = {
  'local': (
    *(f'layer{s}_1_p{p}.' for s in (3, 4) for p in range(1, 5)),
    'fc_1.',
  ),
  'global': ('layer3_2.', 'layer4_2.', 'fc_2.'),
}
MANET_ONLY = BRANCH_LAYERS['local'] + BRANCH_LAYERS['global']
HEADS = ('fc_1', 'fc_2')

# A dummy input size MA-Net accepts (layer2 map 4x4).
_INPUT_SHAPE = (1, 32, 32, 3)
_MAX_LISTED = 12


def _has(state_dict: Mapping[str, Any], prefixes: Iterable[str]) -> bool:
  prefixes = tuple(prefixes)
  return any(k.startswith(prefixes) for k in state_dict)


def detect_source(state_dict: Mapping[str, Any]) -> str:
  """Returns 'manet' or 'resnet18' from a cleaned state_dict's keys.

  Raises:
    ValueError: the keys fit neither (another architecture).
  """
  if _has(state_dict, MANET_ONLY):
    return 'manet'
  if 'conv1.weight' in state_dict and _has(state_dict, ('layer1.',)):
    return 'resnet18'
  keys = sorted(state_dict)
  raise ValueError(
    'The checkpoint is neither an MA-Net (no layer3_1_p1.*, layer3_2.* or '
    'fc_1.* keys) nor a torchvision-layout ResNet-18 (no conv1.weight and '
    f'layer1.* keys); it holds {len(keys)} tensors, e.g. '
    f'{", ".join(keys[:_MAX_LISTED]) or "none"}.'
  )


def _check_source(requested: str, found: str) -> None:
  if requested not in SOURCES:
    raise ValueError(f'source={requested!r}; use one of {SOURCES}.')
  if requested in ('auto', found):
    return
  if found == 'resnet18':
    raise ValueError(
      'The checkpoint is a torchvision-layout ResNet-18 (conv1, layer1-4, '
      'fc), not a whole MA-Net (it has no layer3_1_pX.*, layer3_2.*, '
      "fc_1.* keys). To load only MA-Net's front (conv1, bn1, layer1, "
      "layer2) from it and keep the rest at init, pass source='resnet18'."
    )
  raise ValueError(
    "source='resnet18' but the checkpoint holds a whole MA-Net "
    "(layer3_1_pX.*, layer3_2.*, fc_1.* keys); pass source='manet'."
  )


def _head_mismatch(
  state_dict: Mapping[str, np.ndarray], num_classes: int, ignore: tuple
) -> bool:
  for head in HEADS:
    key = f'{head}.weight'
    if key.startswith(ignore) or key not in state_dict:
      continue
    if state_dict[key].shape[0] != num_classes:
      return True
  return False


def _fresh_values(model, rng, init_variables):
  """Returns (template, init_fn) for the leaves that are not loaded."""
  key = jax.random.key(rng) if isinstance(rng, int) else rng
  images = jax.ShapeDtypeStruct(_INPUT_SHAPE, jnp.float32)
  template = jax.eval_shape(model.init, key, images)
  if init_variables is not None:
    given = traverse_util.flatten_dict(dict(init_variables))
    flat = traverse_util.flatten_dict(dict(template))
    bad = [
      '/'.join(k)
      for k, v in flat.items()
      if k not in given or tuple(np.shape(given[k])) != tuple(v.shape)
    ]
    if bad:
      raise ValueError(
        'init_variables do not fit the model (missing or of another shape): '
        f'{", ".join(bad[:_MAX_LISTED])}'
      )
    return template, lambda keys: {k: given[k] for k in keys}

  def init_fn(keys):
    # Only the requested leaves are returned, so XLA drops the other
    # initialisers.
    def init(key):
      flat = traverse_util.flatten_dict(
        dict(model.init(key, jnp.zeros(_INPUT_SHAPE, jnp.float32)))
      )
      return {k: flat[k] for k in keys}

    return jax.jit(init)(key)

  return template, init_fn


def convert(
  state_dict: Mapping[str, Any],
  *,
  source: str = 'manet',
  ignore: Iterable[str] = (),
  rng: int | jax.Array = 0,
  init_variables: Mapping[str, Any] | None = None,
  **fields: Any,
) -> tuple[dict[str, Any], torch_convert.Report]:
  """Converts an MA-Net or ResNet-18 state_dict into MA-Net variables.

  Args:
    state_dict: torch tensors or arrays by name; `module.` prefixes and
      `num_batches_tracked` buffers are accepted.
    source: 'manet' (whole network), 'resnet18' (front only) or 'auto'.
    ignore: torch key prefixes not to load (their layers keep a fresh
      initialisation), e.g. `('fc_1.', 'fc_2.')`.
    rng: seed or key of the fresh initialisation.
    init_variables: variables of the same model to take the leaves that are
      not loaded from, instead of initialising them (e.g. a run's own init).
    **fields: MA-Net fields, as for `ferjax.models.get_model('manet', ...)`.

  Returns:
    ({'params': ..., 'batch_stats': ...} of float32 numpy arrays, Report).

  Raises:
    ValueError: the checkpoint is of another architecture or source, a
      tensor has the wrong shape, a needed tensor is missing, or a tensor
      has no place in the model; the message names the keys.
  """
  from ferjax import models  # Imports the Flax models only when used.

  state_dict = torch_convert.load_state_dict(state_dict)
  found = detect_source(state_dict)
  _check_source(source, found)
  model = models.get_model('manet', **fields)
  # A one-branch model has no place for the other branch's tensors.
  ignore = tuple(ignore) + tuple(
    p
    for b, layers in BRANCH_LAYERS.items()
    if model.branches not in ('both', b)
    for p in layers
  )

  heads_reinitialised = False
  if found == 'manet':
    heads_reinitialised = _head_mismatch(state_dict, model.num_classes, ignore)
    if heads_reinitialised:
      ignore += tuple(f'{h}.' for h in HEADS)
    unused = [k for k in state_dict if k.startswith(ignore)]
  else:
    unused = [
      k for k in state_dict if k.startswith(RESNET_ONLY) or k.startswith(ignore)
    ]
    ignore += MANET_ONLY
  used = {k: v for k, v in state_dict.items() if k not in set(unused)}

  template, init_fn = _fresh_values(model, rng, init_variables)
  try:
    variables = torch_convert.fill_variables(
      template, used, ignore=ignore, init_fn=init_fn
    )
  except ValueError as e:
    raise ValueError(
      f'The {found} checkpoint does not fit MA-Net(num_classes='
      f'{model.num_classes}): {e}'
    ) from e

  loaded = set(torch_convert.convert_state_dict(used))
  initialised = sorted(
    {
      k[1]
      for k in traverse_util.flatten_dict(dict(template))
      if k not in loaded
    }
  )
  report = torch_convert.Report(
    model='MA-Net',
    source=found,
    loaded=tuple(sorted(used)),
    unused=tuple(sorted(unused)),
    initialised=tuple(initialised),
    heads_reinitialised=heads_reinitialised,
    heads='fc_1/fc_2',
  )
  logging.info('%s', report.summary())
  return variables, report


# The spec converter (`ModelSpec.converter`); the report is logged.
from_torch = torch_convert.reported(convert)

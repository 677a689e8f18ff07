"""PyTorch checkpoint -> Flax variables converters.

    variables = ferjax.weights.from_torch(
        'resnet18', 'resnet18_msceleb.pth', num_classes=7, ignore=('fc.',))
    logits = ferjax.models.get_model('resnet18', num_classes=7).apply(
        variables, images)['logits']

Each model's spec names its converter (`ModelSpec.converter`), a function
of the module named after the model's (`ferjax/weights/manet.py` for
`ferjax/models/manet.py`); the generic mapping lives in
`ferjax.weights.torch_convert`. Reading a file needs the optional `torch`
extra; an in-memory state_dict of numpy arrays does not.
"""

import functools
import importlib
import inspect
import os
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from typing import Any

from ferjax import models
from ferjax.weights import torch_convert

# converter(state_dict, *, spec, ignore, rng, **fields) -> variables.
Converter = Callable[..., dict[str, Any]]
# Parameters every converter takes; its other keyword-only ones are options.
_COMMON = ('state_dict', 'spec', 'ignore', 'rng')


@functools.cache
def _import(reference: str) -> Converter:
  module, _, name = reference.partition(':')
  return getattr(importlib.import_module(module), name)


def converter(name: str) -> Converter:
  """The PyTorch converter of model `name` (its spec's `converter`).

  Raises:
    ValueError: `name` is not a model, or has no converter.
  """
  try:
    spec = models.get_spec(name)
  except ValueError:
    spec = None
  if spec is None or spec.converter is None:
    have = [s.name for s in models.list_specs() if s.converter]
    raise ValueError(
      f'No PyTorch converter for model {name!r}; converters exist for: '
      f'{", ".join(have)}.'
    )
  return _import(spec.converter)


def converter_options(name: str) -> tuple[str, ...]:
  """The converter's own options of model `name` (e.g. 'source'): fields
  that `from_torch` takes beyond the model's."""
  parameters = inspect.signature(converter(name)).parameters.values()
  return tuple(
    p.name
    for p in parameters
    if p.kind is p.KEYWORD_ONLY and p.name not in _COMMON
  )


def from_torch(
  name: str,
  state_dict_or_path: Mapping[str, Any] | str | os.PathLike,
  *,
  ignore: Iterable[str] = (),
  rng: Any = 0,
  weights_only: bool = True,
  **fields: Any,
) -> dict[str, Any]:
  """Converts a PyTorch checkpoint into variables of a ferjax model.

  Args:
    name: model registry name, e.g. 'resnet18'.
    state_dict_or_path: `.pth`/`.pth.tar` file or state_dict; `module.`
      prefixes, `num_batches_tracked` buffers and a `{'state_dict': ...}`
      wrapper are accepted.
    ignore: torch key prefixes not to load (e.g. `('fc.',)` for a head with
      another class count); those layers keep a fresh initialisation.
    rng: seed or key of that fresh initialisation.
    weights_only: passed to `torch.load`.
    **fields: model fields, as for `ferjax.models.get_model` (e.g.
      `num_classes`, `width`), and the converter's options
      (`converter_options`).

  Returns:
    {'params': ..., 'batch_stats': ...} as nested dicts of float32 numpy
    arrays, ready for `model.apply`.

  Raises:
    ValueError: unknown name, or the checkpoint does not fit the model (the
      message names the keys).
  """
  convert = converter(name)
  state_dict = torch_convert.load_state_dict(
    state_dict_or_path, weights_only=weights_only
  )
  return convert(
    state_dict,
    spec=models.get_spec(name),
    ignore=tuple(ignore),
    rng=rng,
    **fields,
  )

"""PyTorch checkpoint -> Flax variables converters.

    variables = ferjax.weights.from_torch(
        'resnet18', 'resnet18_msceleb.pth', num_classes=7, ignore=('fc.',))
    logits = ferjax.models.get_model('resnet18', num_classes=7).apply(
        variables, images)['logits']

Converters are registered per model name with `register_converter`; the
generic mapping lives in `ferjax.weights.torch_convert`. Reading a file needs
the optional `torch` extra; an in-memory state_dict of numpy arrays does not.
"""

import os
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from typing import Any

from ferjax.weights import torch_convert

Converter = Callable[..., dict[str, Any]]

_CONVERTERS: dict[str, Converter] = {}


def register_converter(name: str) -> Callable[[Converter], Converter]:
  """Returns a decorator that registers a converter for model `name`.

  A converter is called as `converter(state_dict, ignore=..., rng=...,
  **fields)` with a cleaned state_dict (see
  `torch_convert.load_state_dict`) and returns Flax variables for
  `ferjax.models.get_model(name, **fields)`.

  Args:
    name: the model's registry name.
  """

  def decorator(converter: Converter) -> Converter:
    _CONVERTERS[name] = converter
    return converter

  return decorator


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
      `num_classes`, `width`).

  Returns:
    {'params': ..., 'batch_stats': ...} as nested dicts of float32 numpy
    arrays, ready for `model.apply`.

  Raises:
    ValueError: unknown name, or the checkpoint does not fit the model (the
      message names the keys).
  """
  if name not in _CONVERTERS:
    raise ValueError(
      f'No PyTorch converter for model {name!r}; converters exist for: '
      f'{", ".join(sorted(_CONVERTERS))}.'
    )
  state_dict = torch_convert.load_state_dict(
    state_dict_or_path, weights_only=weights_only
  )
  return _CONVERTERS[name](state_dict, ignore=tuple(ignore), rng=rng, **fields)


def _resnet_converter(name: str) -> Converter:
  """torchvision-layout ResNet: names map one to one, head is `fc`."""

  def convert(state_dict, *, ignore, rng, **fields):
    from ferjax import models  # Imports flax models only when used.

    model = models.get_model(name, **fields)
    torch_convert.check_head(state_dict, 'fc', model.num_classes, ignore)
    return torch_convert.convert_module(
      model, state_dict, input_shape=(1, 32, 32, 3), ignore=ignore, rng=rng
    )

  return convert


for _name in ('resnet18', 'resnet34'):
  register_converter(_name)(_resnet_converter(_name))


# Converters in their own modules register themselves on import.
from ferjax.weights import convnext  # noqa: E402, F401
from ferjax.weights import gcsa  # noqa: E402, F401
from ferjax.weights import irse  # noqa: E402, F401
from ferjax.weights import jadfer  # noqa: E402, F401
from ferjax.weights import manet  # noqa: E402, F401

"""Model registry: `config.model.name` -> Flax Linen module.

Public API:

    model = ferjax.models.get_model(name, num_classes=7, **fields)
    variables = model.init(rng, images)
    outputs = model.apply(variables, images, train=False)

`images` are float32 NHWC in [0, 1]; `outputs` is a dict with 'logits'
(B, num_classes) float32 plus model-specific extras (e.g. 'features').
Training applies with `train=True, mutable=['batch_stats']` and
`rngs={'dropout': key}`.

Each model module registers its factories with `@register(name)` when it is
imported; `get_model` imports the known model modules first, so importing
this package stays cheap.
"""

import importlib
from collections.abc import Callable
from typing import Any

# Modules whose import registers models.
_MODEL_MODULES = (
  'ferjax.models.backbones.convnext',
  'ferjax.models.backbones.irse',
  'ferjax.models.backbones.resnet',
  'ferjax.models.gcsa',
  'ferjax.models.jadfer',
  'ferjax.models.manet',
  'ferjax.models.mfer',
)

_REGISTRY: dict[str, Callable[..., Any]] = {}


def register(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
  """Returns a decorator that registers a model factory under `name`.

  The factory (a module class or a `functools.partial` of one) is called with
  the keyword fields given to `get_model` and returns an unbound Linen module.

  Args:
    name: registry name, e.g. 'resnet18'.

  Raises:
    ValueError: `name` is already registered to another factory.
  """

  def decorator(factory: Callable[..., Any]) -> Callable[..., Any]:
    if name in _REGISTRY and _REGISTRY[name] is not factory:
      raise ValueError(f'Model {name!r} is already registered.')
    _REGISTRY[name] = factory
    return factory

  return decorator


def _import_models() -> None:
  for module in _MODEL_MODULES:
    importlib.import_module(module)


def list_models() -> tuple[str, ...]:
  """Returns the registered model names, sorted."""
  _import_models()
  return tuple(sorted(_REGISTRY))


def get_model(name: str, num_classes: int = 7, **fields: Any) -> Any:
  """Builds a registered model.

  Args:
    name: registry name, e.g. 'resnet18'.
    num_classes: number of expression classes.
    **fields: further module fields, e.g. `dtype=jnp.bfloat16`.

  Returns:
    An unbound Linen module whose `apply(variables, images, train=False)`
    takes float32 NHWC images in [0, 1] and returns a dict with 'logits'.

  Raises:
    ValueError: `name` is not registered.
  """
  _import_models()
  if name not in _REGISTRY:
    raise ValueError(
      f'Unknown model {name!r}; registered models: '
      f'{", ".join(sorted(_REGISTRY))}.'
    )
  return _REGISTRY[name](num_classes=num_classes, **fields)

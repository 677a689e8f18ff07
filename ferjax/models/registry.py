"""Model specs: every per-model fact, declared once in the model's module.

A model module of `ferjax/models/` (or `ferjax/models/backbones/`) ends
with a tuple `SPECS` of `ModelSpec`s, in the spirit of timm's
`default_cfgs`: the factory, the input size its paper uses, the loss it
trains with, its PyTorch converter, the checkpoints it starts from and its
attention-map extractor. The registry finds the specs by importing every
module of those two packages on first use, so a new model is one file
(plus its converter, `ferjax/weights/<module>.py`, and configs); nothing
else lists models. `register` adds a spec from anywhere else, e.g. a model
defined in a user's own package or a test.

Everything that varies by model reads a spec: `get_model` and
`ferjax.models.create_model` (the factory), `config.loss.name='auto'`
(the loss), `ferjax.weights.from_torch` (the converter, imported by name
so that models never import weights), the missing-checkpoint message of
`config.init_from` (the checkpoints), `ferjax.viz.attention_maps` and
`grad_cam` (the extractor and the Grad-CAM layer), and the predictor's
default input size for converted weights.
"""

import dataclasses
import functools
import importlib
import numbers
import os
import pkgutil
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any

# (model, outputs, intermediates) -> {name: maps}; see `ModelSpec.attention`.
AttentionFn = Callable[[Any, Mapping[str, Any], Mapping[str, Any]], dict]

# The packages whose modules declare SPECS, relative to this file.
_SPEC_PACKAGES = (
  ('ferjax.models', ''),
  ('ferjax.models.backbones', 'backbones'),
)


@dataclasses.dataclass(frozen=True)
class Checkpoint:
  """A PyTorch checkpoint a model starts from, which users download.

  Attributes:
    file: its usual file name, e.g. 'ir50.pth' (how `config.init_from`
      errors recognise it).
    url: where to get it: an address, or where the link is published.
    description: what it holds, e.g. 'IR-50 trained on MS-Celeb-1M'.
    crop: the face crop its training images had (a
      `ferjax.faces.crops` style name, e.g. 'arcface_112'), which the
      predictor uses for weights without a run config; None: unknown.
  """

  file: str
  url: str
  description: str
  crop: str | None = None


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """What ferjax knows about one registered model.

  Attributes:
    name: the registry name (`config.model.name`).
    factory: a Linen module class (or `functools.partial` of one) called
      with `num_classes` and the model fields; its `apply(variables, images,
      train=False)` takes float32 NHWC images (NTHWC clips) in [0, 1] and
      returns a dict with 'logits'. Its `pixel_mean` and `pixel_std`
      fields, where it has them, are its input normalisation
      (`normalization`).
    input_size: the square input side, in pixels, its paper trains at;
      the predictor's default for weights without a run config.
    loss: the `ferjax.losses` name it trains with when `config.loss.name`
      is 'auto'.
    converter: 'module:function' of its PyTorch converter, e.g.
      'ferjax.weights.manet:from_torch', imported only when used; None:
      no converter. Called as `function(state_dict, spec=spec, ignore=...,
      rng=..., **fields)`; keyword-only parameters beyond those are
      converter options (e.g. 'source'), the other fields model fields.
    checkpoints: the PyTorch checkpoints it is known to start from.
    attention: its attention-map extractor, `fn(model, outputs,
      intermediates) -> {name: maps}`, reading what `apply(...,
      mutable=['intermediates'])` sows (`ferjax.models.sown`); None: the
      model sows none (Grad-CAM still works).
    cam_layer: the submodule whose output Grad-CAM reads by default; None:
      the last submodule of the root with a spatial output.
    description: one line for listings.
  """

  name: str
  factory: Callable[..., Any]
  input_size: int
  loss: str = 'softmax_xent'
  converter: str | None = None
  checkpoints: tuple[Checkpoint, ...] = ()
  attention: AttentionFn | None = None
  cam_layer: str | None = None
  description: str = ''

  def build(self, num_classes: int = 7, **fields: Any) -> Any:
    """The unbound module with `num_classes` outputs and `fields`.

    Raises:
      ValueError: a field the module does not have, or a value of another
        kind than its default (`width='abc'`), naming it.
    """
    self.check_fields(fields)
    return self.factory(num_classes=num_classes, **fields)

  def check_fields(self, fields: Mapping[str, Any]) -> None:
    """Raises ValueError naming a field the module does not have, or a
    value of another kind than the field's default (see `check_fields`)."""
    check_fields(self.name, self.module_class, fields)

  def normalization(self, **fields: Any) -> dict[str, Any]:
    """The input normalisation the model applies inside, for `fields`.

    Returns:
      {'mean': per-channel mean or None, 'std': per-channel std or None},
      applied to the [0, 1] input as (x - mean) / std.
    """
    module = self.build(**fields)
    return {
      'mean': getattr(module, 'pixel_mean', None),
      'std': getattr(module, 'pixel_std', None),
    }

  @property
  def module_class(self) -> type:
    """The Linen class the factory builds (a partial's function)."""
    factory = self.factory
    while isinstance(factory, functools.partial):
      factory = factory.func
    return factory


def _fits(default: Any, value: Any) -> bool:
  """Whether `value` is of the kind of a field whose default is `default`.

  Only plain defaults say a kind; other fields (dtypes, None defaults), and
  None for any field, are left to the module.
  """
  if value is None or isinstance(default, bool):
    return value is None or isinstance(value, bool)
  if isinstance(value, bool):
    return not isinstance(default, int | float | str | tuple)
  if isinstance(default, int):
    return isinstance(value, numbers.Integral)
  if isinstance(default, float):
    return isinstance(value, numbers.Real)
  if isinstance(default, str):
    return isinstance(value, str)
  if isinstance(default, tuple):
    return isinstance(value, tuple | list)
  return True


_KINDS = {bool: 'a bool', int: 'an int', float: 'a number', str: 'a string'}


def check_fields(model: str, module: type, fields: Mapping[str, Any]) -> None:
  """Raises ValueError naming an unknown field or a value of another kind.

  `--field bogus=1` or `width=abc` would otherwise fail deep inside Flax
  or JAX with a message that names neither.
  """
  known = {
    f.name: f.default
    for f in dataclasses.fields(module)
    if f.init and f.name not in ('parent', 'name')
  }
  unknown = sorted(set(fields) - set(known))
  if unknown:
    raise ValueError(
      f'{model} has no field {", ".join(unknown)}; its fields: '
      f'{", ".join(sorted(known))}.'
    )
  for name, value in fields.items():
    default = known[name]
    if default is not dataclasses.MISSING and not _fits(default, value):
      kind = _KINDS.get(type(default), 'a tuple')
      raise ValueError(
        f'{model}: {name}={value!r} must be {kind}, like its default '
        f'{default!r}.'
      )


_SPECS: dict[str, ModelSpec] = {}
_discovered = False


def register(spec: ModelSpec) -> ModelSpec:
  """Adds `spec` to the registry; returns it.

  Raises:
    ValueError: another spec already has its name.
  """
  known = _SPECS.get(spec.name)
  if known is not None and known is not spec:
    raise ValueError(f'Model {spec.name!r} is already registered.')
  _SPECS[spec.name] = spec
  return spec


def _spec_modules() -> list[str]:
  """The modules of `_SPEC_PACKAGES`, by name, without importing them."""
  here = os.path.dirname(os.path.abspath(__file__))
  names = []
  for package, folder in _SPEC_PACKAGES:
    path = os.path.join(here, folder) if folder else here
    for info in pkgutil.iter_modules([path]):
      if not info.ispkg and info.name != 'registry':
        names.append(f'{package}.{info.name}')
  return sorted(names)


def _discover() -> None:
  """Imports every model module once and registers its SPECS."""
  global _discovered
  if _discovered:
    return
  for name in _spec_modules():
    module = importlib.import_module(name)
    for spec in getattr(module, 'SPECS', ()):
      register(spec)
  _discovered = True


def list_models() -> tuple[str, ...]:
  """The registered model names, sorted."""
  _discover()
  return tuple(sorted(_SPECS))


def list_specs() -> tuple[ModelSpec, ...]:
  """Every registered spec, sorted by name."""
  _discover()
  return tuple(_SPECS[name] for name in sorted(_SPECS))


def get_spec(name: str) -> ModelSpec:
  """The spec of model `name`.

  Raises:
    ValueError: naming the registered models.
  """
  _discover()
  if name not in _SPECS:
    raise ValueError(
      f'Unknown model {name!r}; registered models: {", ".join(sorted(_SPECS))}.'
    )
  return _SPECS[name]


def spec_of(module: Any) -> ModelSpec | None:
  """The spec whose factory builds `module`'s class, if any.

  Several specs may share a class (resnet18 and resnet34); the first by
  name is returned, so only class-wide facts (`cam_layer`, `attention`)
  should be read from it.
  """
  for spec in list_specs():
    if type(module) is spec.module_class:
      return spec
  return None


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
  return get_spec(name).build(num_classes=num_classes, **fields)

"""Models: one module per model, each declaring its spec; the registry.

    model = ferjax.models.get_model(name, num_classes=7, **fields)
    variables = model.init(rng, images)
    outputs = model.apply(variables, images, train=False)

`images` are float32 NHWC in [0, 1] (NTHWC clips for video models);
`outputs` is a dict with 'logits' (B, num_classes) float32 plus
model-specific extras (e.g. 'features'). Training applies with
`train=True, mutable=['batch_stats']` and `rngs={'dropout': key}`.

Each model module ends with `SPECS`, its `ModelSpec`s (`registry`): the
factory, input size, loss, converter, checkpoints and attention maps. A
run's config becomes a model through `create_model(config)` and an input
shape through `input_shape(config)` (`factory`).
"""

from ferjax.models.factory import BF16_BACKENDS
from ferjax.models.factory import compute_dtype
from ferjax.models.factory import create_model
from ferjax.models.factory import example_shape
from ferjax.models.factory import input_shape
from ferjax.models.factory import loss_name
from ferjax.models.factory import model_fields
from ferjax.models.registry import Checkpoint
from ferjax.models.registry import ModelSpec
from ferjax.models.registry import get_model
from ferjax.models.registry import get_spec
from ferjax.models.registry import list_models
from ferjax.models.registry import list_specs
from ferjax.models.registry import register
from ferjax.models.registry import spec_of

__all__ = (
  'BF16_BACKENDS',
  'Checkpoint',
  'ModelSpec',
  'compute_dtype',
  'create_model',
  'example_shape',
  'get_model',
  'get_spec',
  'input_shape',
  'list_models',
  'list_specs',
  'loss_name',
  'model_fields',
  'register',
  'spec_of',
)

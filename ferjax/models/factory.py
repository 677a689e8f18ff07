"""A run config's model: its fields, compute dtype, module and input shape.

What the trainer, the predictor, the exporters and the benchmarks all need
from `config.model`, computed in one place so they agree:

    model = create_model(config)     # the spec's factory with the fields
    shape = input_shape(config)      # (1, S, S, 3) or (1, U*V, S, S, 3)
    name = loss_name(config)         # config.loss.name, 'auto' resolved
"""

import jax
import jax.numpy as jnp
import ml_collections

from ferjax.data import clips
from ferjax.models import registry

# Backends whose matrix units run bfloat16 at full rate.
BF16_BACKENDS = ('gpu', 'cuda', 'rocm', 'tpu')


def compute_dtype(name: str, backend: str | None = None) -> jnp.dtype:
  """`config.model.dtype` as a dtype; 'auto' picks one for the backend.

  'auto' is bfloat16 on GPUs and TPUs (parameters, optimizer state, losses
  and metrics stay float32: mixed precision with f32 master weights) and
  float32 on CPUs, where bfloat16 gains little (docs/performance.md) and
  float32 keeps results comparable with the PyTorch references.
  """
  if name == 'auto':
    backend = backend or jax.default_backend()
    name = 'bfloat16' if backend in BF16_BACKENDS else 'float32'
  try:
    return jnp.dtype(name)
  except TypeError as e:
    raise ValueError(
      f"config.model.dtype={name!r}; use 'auto', 'bfloat16' or 'float32'."
    ) from e


def model_fields(config: ml_collections.ConfigDict) -> tuple[str, dict]:
  """The model's registry name and its fields, num_classes included."""
  fields = config.model.to_dict()
  name = fields.pop('name')
  if 'dtype' in fields:  # Compute dtype by name, e.g. 'bfloat16' or 'auto'.
    fields['dtype'] = compute_dtype(fields['dtype'])
  return name, {**fields, 'num_classes': config.data.num_classes}


def create_model(config: ml_collections.ConfigDict):
  """The unbound Linen module `config.model` describes."""
  name, fields = model_fields(config)
  return registry.get_model(name, **fields)


def example_shape(size: int, frames: int = 0) -> tuple[int, ...]:
  """One example: (S, S, 3) images, or (frames, S, S, 3) clips."""
  return (*((frames,) if frames else ()), size, size, 3)


def input_shape(config: ml_collections.ConfigDict) -> tuple[int, ...]:
  """One example's model input: (1, U*V, S, S, 3) for clips, else (1, S, S, 3).

  S is `config.augment.size`; U*V the frames of a clip (`config.clip`).
  """
  clip = clips.parse_config(config.get('clip'))
  return (1, *example_shape(config.augment.size, clip.length if clip else 0))


def loss_name(config: ml_collections.ConfigDict) -> str:
  """`config.loss.name`; 'auto' is the loss of the model's spec."""
  name = config.loss.name
  if name == 'auto':
    return registry.get_spec(config.model.name).loss
  return name

"""What both exporters share: a run's eval function as exports compute it.

`ferjax.export` serialises it with `jax.export`; `ferjax.export_onnx`
converts it to ONNX. Both check the result against this function before
writing anything, and both take uint8 inputs that the caller prepares as
`preprocess_spec` (and, for clip models, `clip_spec`) say.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections

from ferjax import models
from ferjax.data import augment
from ferjax.data import clips


def export_model(config: ml_collections.ConfigDict):
  """The model of `config` as exports compute it.

  `model.dtype='auto'` would pick bfloat16 when exporting from a GPU or
  TPU host; an export is meant to run anywhere and to match the trained
  model within its tolerance, so 'auto' exports compute in float32. An
  explicit dtype is kept.
  """
  if config.model.get('dtype') == 'auto':
    config = config.copy_and_resolve_references()
    with config.unlocked():
      config.model.dtype = 'float32'
  return models.create_model(config)


def logits_function(model, variables) -> Callable[[jax.Array], jax.Array]:
  """uint8 images -> float32 logits, with `variables` closed over.

  The images are scaled to [0, 1] as the eval step does, and the model runs
  with train=False (BatchNorm uses its running statistics, no dropout).
  """

  def logits(images):
    scaled = images.astype(jnp.float32) / 255.0
    outputs = model.apply(variables, scaled, train=False)
    return outputs['logits'].astype(jnp.float32)

  return logits


def example_shape(config: ml_collections.ConfigDict) -> tuple[int, ...]:
  """One example's shape: (S, S, 3), or (T, S, S, 3) for clip models."""
  return tuple(models.input_shape(config)[1:])


def check_diff(diff: float, tolerance: float, what: str) -> None:
  """Refuses an export whose logits differ from the model's by > tolerance.

  Raises:
    RuntimeError: naming `what`, the difference and the platform.
  """
  if not diff <= tolerance:  # NaN fails too.
    raise RuntimeError(
      f'{what} differs from the model by {diff:.3g} (over {tolerance}) on '
      f'{jax.export.default_export_platform()}; nothing was written.'
    )


def preprocess_spec(config: ml_collections.ConfigDict) -> dict:
  """metadata.json's 'preprocess': how one image becomes (S, S, 3) uint8."""
  c = augment.parse_config(config.augment)
  spec = {
    'size': c.size,
    'resize': c.eval_resize,
    'interpolation': (
      'cv2.resize with INTER_AREA when neither side grows, else INTER_LINEAR'
    ),
    'color': 'RGB; grayscale replicated to 3 channels',
    'dtype': 'uint8',
  }
  if c.eval_resize == 'resize':
    spec['description'] = 'the whole image resized to size x size'
  else:
    spec['crop_fraction'] = c.eval_crop_fraction
    spec['description'] = (
      'the short side resized to int(size / crop_fraction), the long side '
      'to keep the aspect ratio (rounded down), then the central size x '
      'size square (offsets rounded)'
    )
  return spec


def clip_spec(config: ml_collections.ConfigDict) -> dict | None:
  """metadata.json's 'clip': which frames of a video a clip model takes."""
  clip = clips.parse_config(config.get('clip'))
  if clip is None:
    return None
  return {
    'segments': clip.segments,
    'frames_per_segment': clip.frames_per_segment,
    'frames': clip.length,
    'eval_sampling': 'segment_centres',
    'short': clip.short,
    'description': (
      'N frames (a video shorter than segments * frames_per_segment is '
      'looped whole to M = N * ceil(U*V / N) frames), t = (M - V + 1) / U: '
      'segment u starts at floor(t / 2 + u * t) and gives V consecutive '
      'frames, indices modulo N; each frame is then preprocessed'
    ),
  }

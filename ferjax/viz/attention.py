"""Attention maps the models sow, and Grad-CAM for any model.

* `attention_maps` applies a model with `mutable=['intermediates']` and
  reads what it sows: MA-Net's CBAM spatial gates, MFER's DS attention,
  JADFER's attention weights (and its SB maps, an output), GCSA's channel
  gates.
* `grad_cam` computes Grad-CAM (Selvaraju et al., ICCV 2017) on the output
  of any submodule, with no change to the model. A Flax method interceptor
  (`nn.intercept_methods`) first captures the submodule's output A; a
  second interceptor replaces that output by the argument of a function
  a -> logits, whose `jax.vjp` at a = A gives d logit / dA (the layers
  before the submodule are dead code there, which XLA drops). The channel
  weights are the spatial means of that gradient; the map is
  ReLU(sum_c weight_c * A_c), divided by its maximum and resized
  bilinearly to the image.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from ferjax import models


@functools.partial(jax.jit, static_argnums=0)
def _apply_sown(model, variables, images):
  return model.apply(variables, images, train=False, mutable=['intermediates'])


def attention_maps(model_name: str, model, variables, images) -> dict:
  """The attention maps a model sows, by name, as float32 in [0, 1].

  Each map is at its layer's resolution (`overlay` resizes it to the image).
  The model's spec says what it sows (`ModelSpec.attention`), and that
  extractor's docstring names the maps: MA-Net's CBAM spatial gates of the
  four local branches ('cbam_p1'..'cbam_p4', and 'cbam' with the four in
  their places; `ferjax.models.manet.attention_maps`), MFER's DS attention
  ('ds_stage3', 'ds_stage4'), JADFER's encoder attention and paths
  ('cb_cls', 'cb_mean', 'cb_rollout', 'sci_path_i', 'sb_path_i'), GCSA's
  (B, T, C) channel gates over time ('channels_layer2',
  'channels_layer3', for `channel_weights_figure`).

  Args:
    model_name: the registry name of a model whose spec has an extractor.
    model: the model.
    variables: its variables.
    images: a batch it takes, (B, H, W, 3) or clips (B, T, H, W, 3).

  Returns:
    {name: (B, h, w) array}, or (B, T, C) channel gates.
  """
  extract = models.get_spec(model_name).attention
  if extract is None:
    have = [s.name for s in models.list_specs() if s.attention]
    raise ValueError(
      f'attention_maps knows the models {have}, not {model_name!r}; use '
      'grad_cam for any model.'
    )
  outputs, state = _apply_sown(model, variables, jnp.asarray(images))
  maps = extract(model, outputs, state['intermediates'])
  return {name: np.asarray(m, np.float32) for name, m in maps.items()}


def _first(out):
  return out[0] if isinstance(out, tuple) else out


def _spatial_outputs(model, variables, images) -> list[str]:
  """Names of the root's submodules whose outputs are (N, h, w, C) maps."""
  names = []

  def record(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    path = context.module.path
    is_map = getattr(_first(out), 'ndim', 0) == 4
    if context.method_name == '__call__' and len(path) == 1 and is_map:
      names.append(path[0])
    return out

  with nn.intercept_methods(record):
    jax.eval_shape(
      functools.partial(model.apply, train=False), variables, images
    )
  return names


def cam_layer(model, variables, images) -> str:
  """Grad-CAM's default layer: the spec's `cam_layer`, else the root's last
  spatial map.

  ResNet: the last block of layer4; ConvNeXt: the last block; MFER: the
  stage-4 DS attention; JADFER: the IR backbone; MA-Net: the layer2 map
  that feeds both branches (its sown `layer2`); GCSA: layer3's block.
  """
  spec = models.spec_of(model)
  name = spec and spec.cam_layer
  if name is None:
    spatial = _spatial_outputs(model, variables, images)
    if not spatial:
      raise ValueError(
        f'{type(model).__name__} has no submodule with a (N, h, w, C) '
        'output; pass grad_cam a layer.'
      )
    name = spatial[-1]
  return name


def _intercepting(layer: str, replace):
  """An interceptor calling `replace(output)` on `layer`'s __call__."""
  calls = []

  def interceptor(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if context.method_name != '__call__' or (
      '/'.join(context.module.path) != layer
    ):
      return out
    calls.append(layer)
    if len(calls) > 1:
      raise ValueError(f'grad_cam: {layer!r} is called more than once.')
    if isinstance(out, tuple):
      return (replace(out[0]), *out[1:])
    return replace(out)

  return interceptor, calls


def _layer_output(model, layer, variables, images):
  captured = []

  def keep(value):
    captured.append(value)
    return value

  interceptor, _ = _intercepting(layer, keep)
  with nn.intercept_methods(interceptor):
    model.apply(variables, images, train=False)
  if not captured:
    raise ValueError(
      f'grad_cam: {type(model).__name__} has no submodule {layer!r}; name '
      'one by its path, e.g. "layer4_1" or "backbone".'
    )
  return captured[0]


@functools.partial(jax.jit, static_argnums=(0, 1))
def _grad_cam(model, layer, variables, images, target):
  features = _layer_output(model, layer, variables, images)

  def logits_of(a):
    interceptor, _ = _intercepting(layer, lambda _: a)
    with nn.intercept_methods(interceptor):
      return model.apply(variables, images, train=False)['logits']

  logits, pullback = jax.vjp(logits_of, features)
  target = jnp.where(target < 0, jnp.argmax(logits, -1), target)
  (grads,) = pullback(jax.nn.one_hot(target, logits.shape[-1]))
  # Clips (B, T, ...) stack their frames as B * T maps of one logit row.
  weights = jnp.mean(grads.astype(jnp.float32), axis=(1, 2))
  cam = jax.nn.relu(jnp.einsum('nhwc,nc->nhw', features, weights))
  cam = cam / jnp.maximum(cam.max(axis=(1, 2), keepdims=True), 1e-12)
  size = images.shape[-3:-1]
  cam = jax.image.resize(cam, (cam.shape[0], *size), 'bilinear')
  return jnp.clip(cam, 0.0, 1.0).reshape(images.shape[:-1])


def grad_cam(model, variables, images, target=None, layer: str | None = None):
  """Grad-CAM maps of `target` on the output of a submodule.

  The module docstring describes the mechanism; it needs no change to the
  model, and evaluates it with `train=False`.

  Args:
    model: any ferjax model returning 'logits'.
    variables: its variables.
    images: (B, H, W, 3) images in [0, 1], or (B, T, H, W, 3) clips.
    target: the class per example, (B,) ints or one int; None (or -1):
      each example's predicted class.
    layer: path of the submodule whose (N, h, w, C) output is used, e.g.
      'layer4_1', or 'backbone/body_20' for a nested one; None:
      `cam_layer(model, ...)`.

  Returns:
    (B, H, W) float32 maps in [0, 1] (0 where no channel raises the
    logit), upsampled bilinearly to the image; (B, T, H, W) for clips.
  """
  images = jnp.asarray(images, jnp.float32)
  layer = layer or cam_layer(model, variables, images)
  target = -1 if target is None else target
  target = jnp.broadcast_to(jnp.asarray(target, jnp.int32), images.shape[:1])
  return np.asarray(_grad_cam(model, layer, variables, images, target))

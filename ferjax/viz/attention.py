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
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from ferjax.layers import jad_attention


def rescale(maps, axes=None) -> np.ndarray:
  """Min-max scales each example of `maps` to [0, 1] (constant -> 0).

  Args:
    maps: (B, ...) values.
    axes: the axes scaled together; all but the first by default.

  Returns:
    float32 maps in [0, 1].
  """
  maps = np.asarray(maps, np.float32)
  axes = tuple(range(1, maps.ndim)) if axes is None else axes
  low = maps.min(axis=axes, keepdims=True)
  span = maps.max(axis=axes, keepdims=True) - low
  scaled = np.divide(maps - low, span, out=np.zeros_like(maps), where=span > 0)
  return np.clip(scaled, 0.0, 1.0)


@functools.partial(jax.jit, static_argnums=0)
def _apply_sown(model, variables, images):
  return model.apply(variables, images, train=False, mutable=['intermediates'])


def _sown(intermediates: Mapping, *path: str) -> np.ndarray:
  """The one value sown at `path`, e.g. ('layer2_0', 'channel_weights')."""
  node = intermediates
  for name in path:
    node = node[name]
  (value,) = node
  return np.asarray(value, np.float32)


def _manet_maps(model, outputs, inter) -> dict:
  """CBAM spatial gates of the last block of each local branch."""
  del model, outputs

  def gate(branch):
    block = f'layer4_1_p{branch}_1'
    return _sown(inter, block, 'cbam', 'SpatialGate', 'spatial_map')[..., 0]

  branches = [gate(i) for i in (1, 2, 3, 4)]
  maps = {f'cbam_p{i}': m for i, m in enumerate(branches, 1)}
  top = np.concatenate(branches[:2], axis=2)
  maps['cbam'] = np.concatenate([top, np.concatenate(branches[2:], 2)], 1)
  return maps


def _mfer_maps(model, outputs, inter) -> dict:
  """DS attention weights averaged over channels, stages 3 and 4."""
  del outputs
  last = len(model.depths)
  return {
    f'ds_stage{i + 1}': rescale(
      _sown(inter, f'stages_{i}_{model.depths[i]}', 'attention').mean(-1)
    )
    for i in (last - 2, last - 1)
  }


def _jadfer_maps(model, outputs, inter) -> dict:
  """CB attention (class row, query mean, rollout), SCI rows and SB maps."""
  sb = np.asarray(outputs['sb_maps'], np.float32)
  batch, paths, height, width = sb.shape

  def grid(rows):
    return rescale(np.asarray(rows)[..., 1:].reshape(batch, height, width))

  def head_mean(block):
    return _sown(inter, block, 'attention', 'attention').mean(axis=1)

  layers = [head_mean(f'cb_block_{i}') for i in range(model.depth)]
  joint = None
  for attention in layers:
    joint = jad_attention.rollout(jnp.asarray(attention), joint, True)
  last, sci = layers[-1], head_mean(f'sci_block_{model.sci_depth - 1}')
  maps = {
    'cb_cls': grid(last[:, 0]),
    'cb_mean': grid(last[:, 1:].mean(axis=1)),
    'cb_rollout': grid(joint[:, 0]),
  }
  for i in range(paths):
    maps[f'sci_path_{i}'] = grid(sci[:, i])
    maps[f'sb_path_{i}'] = rescale(sb[:, i])
  return maps


def _gcsa_maps(model, outputs, inter) -> dict:
  """The channel gates of layer2 and layer3, (B, T, C) per clip."""
  del outputs
  maps = {}
  for stage in ('layer2', 'layer3'):
    gates = _sown(inter, f'{stage}_0', 'channel_weights')
    maps[f'channels_{stage}'] = rescale(
      gates.reshape(-1, model.num_frames, gates.shape[-1])
    )
  return maps


_ATTENTION = {
  'manet': _manet_maps,
  'mfer': _mfer_maps,
  'jadfer': _jadfer_maps,
  'gcsa': _gcsa_maps,
}


def attention_maps(model_name: str, model, variables, images) -> dict:
  """The attention maps a model sows, by name, as float32 in [0, 1].

  Each map is at its layer's resolution (`overlay` resizes it to the image).

  * 'manet': 'cbam_p1'..'cbam_p4', the CBAM spatial gates (sigmoid, kept
    as they are) of the last block of each local branch, the patches
    top-left, top-right, bottom-left, bottom-right; 'cbam', the four put
    back in their 2 x 2 places over the face.
  * 'mfer': 'ds_stage3', 'ds_stage4', the DS attention weights (a spatial
    softmax per channel) averaged over the channels.
  * 'jadfer': on the backbone's grid, from the last CB layer's head-mean
    attention, 'cb_cls' (the class token's row) and 'cb_mean' (the mean
    over the patch queries); 'cb_rollout', the class token's row of the
    attention rollout over every CB layer; 'sci_path_i', where the SCI
    query of SB path i looks; 'sb_path_i', SB path i's spatial map.
  * 'gcsa': 'channels_layer2', 'channels_layer3', the (B, T, C) channel
    gates of each clip over time (for `channel_weights_figure`).

  All but MA-Net's gates are min-max scaled per example (`rescale`).

  Args:
    model_name: the registry name, one of 'manet', 'mfer', 'jadfer',
      'gcsa'.
    model: the model.
    variables: its variables.
    images: a batch it takes, (B, H, W, 3) or clips (B, T, H, W, 3).

  Returns:
    {name: (B, h, w) array}, (B, T, C) for 'gcsa'.
  """
  if model_name not in _ATTENTION:
    raise ValueError(
      f'attention_maps knows the models {sorted(_ATTENTION)}, not '
      f'{model_name!r}; use grad_cam for any model.'
    )
  outputs, state = _apply_sown(model, variables, jnp.asarray(images))
  maps = _ATTENTION[model_name](model, outputs, state['intermediates'])
  return {name: np.asarray(m, np.float32) for name, m in maps.items()}


# Submodules whose output Grad-CAM reads by default where the last spatial
# map of the root is not the right one.
CAM_LAYERS = {'MANet': 'layer2_1', 'GCSA': 'layer3_0'}


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
  """Grad-CAM's default layer: `CAM_LAYERS`, else the root's last map.

  ResNet: the last block of layer4; ConvNeXt: the last block; MFER: the
  stage-4 DS attention; JADFER: the IR backbone; MA-Net: the layer2 map
  that feeds both branches (its sown `layer2`); GCSA: layer3's block.
  """
  name = CAM_LAYERS.get(type(model).__name__)
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

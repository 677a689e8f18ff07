"""MTCNN's three networks in Flax, and their pretrained weights.

P-Net, R-Net and O-Net (Zhang et al., "Joint Face Detection and Alignment
Using Multitask Cascaded Convolutional Networks", 2016) as facenet-pytorch
2.6.0 defines them (`facenet_pytorch/models/mtcnn.py`): 3x3 and 2x2
convolutions with per-channel PReLU, max pools with PyTorch's
`ceil_mode=True`, and softmax face/non-face heads. Inputs are NHWC float32
pixels already normalised as `(x - 127.5) / 128`.

The weights are facenet-pytorch's `data/{pnet,rnet,onet}.pt`, stored in
`data/mtcnn.npz` with PyTorch's names and layouts (`mtcnn_weights` writes it;
`data/mtcnn_SOURCE.md` records where it came from). `variables()` turns
them into Flax variables: convolutions OIHW -> HWIO, dense (out, in) ->
(in, out). R-Net's and O-Net's dense layers read their input flattened in
PyTorch's (W, H, C) order (facenet permutes NCHW to NWHC before flattening),
so the modules transpose H and W before flattening.
"""

import functools
import importlib.resources

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

WEIGHTS = 'mtcnn.npz'
NETS = ('pnet', 'rnet', 'onet')


def _prelu(module: nn.Module, x: jax.Array, name: str) -> jax.Array:
  """torch.nn.PReLU(C): one negative slope per channel (last axis)."""
  slope = module.param(name, nn.initializers.constant(0.25), (x.shape[-1],))
  return jnp.where(x >= 0, x, x * slope)


def max_pool_ceil(x: jax.Array, window: int, stride: int) -> jax.Array:
  """nn.MaxPool2d(window, stride, ceil_mode=True) on NHWC `x`.

  Ceil mode keeps a last, partial window; padding the bottom and right
  with -inf (reduce_window's init value) makes the same windows.
  """

  def extra(n):
    out = -(-(n - window) // stride) + 1
    return (0, max(0, (out - 1) * stride + window - n))

  pads = (extra(x.shape[1]), extra(x.shape[2]))
  return nn.max_pool(x, (window, window), (stride, stride), padding=pads)


def _conv(module, x, features, kernel, name):
  conv = nn.Conv(features, (kernel, kernel), padding='VALID', name=name)
  return conv(x)


def _flatten_wh(x: jax.Array) -> jax.Array:
  """NHWC -> (N, W*H*C), PyTorch's `permute(0, 3, 2, 1)` then view."""
  return jnp.transpose(x, (0, 2, 1, 3)).reshape(x.shape[0], -1)


class PNet(nn.Module):
  """Proposal net: fully convolutional, a 12x12 window per output cell.

  Returns (box regression (N, h, w, 4), face probability (N, h, w)). With
  `valid` (N, 2) rows and columns of real pixels per image, the first
  activations beyond them are set to -inf before the pool, so a zero-padded
  image gives the same cells as the unpadded one (the pool's partial last
  window sees only real activations).
  """

  @nn.compact
  def __call__(self, x, valid=None):
    x = _prelu(self, _conv(self, x, 10, 3, 'conv1'), 'prelu1')
    if valid is not None:
      rows = jnp.arange(x.shape[1])[None, :, None] < valid[:, :1, None] - 2
      cols = jnp.arange(x.shape[2])[None, None, :] < valid[:, 1:, None] - 2
      x = jnp.where((rows & cols)[..., None], x, -jnp.inf)
    x = max_pool_ceil(x, 2, 2)
    x = _prelu(self, _conv(self, x, 16, 3, 'conv2'), 'prelu2')
    x = _prelu(self, _conv(self, x, 32, 3, 'conv3'), 'prelu3')
    probs = nn.softmax(_conv(self, x, 2, 1, 'conv4_1'), axis=-1)[..., 1]
    return _conv(self, x, 4, 1, 'conv4_2'), probs


def _trunk(module, x, layers):
  """conv{i} + prelu{i}, then a ceil-mode max pool where one is given, per
  (features, kernel, (window, stride) or None) in `layers`."""
  for i, (features, kernel, pool) in enumerate(layers, 1):
    conv = _conv(module, x, features, kernel, f'conv{i}')
    x = _prelu(module, conv, f'prelu{i}')
    if pool:
      x = max_pool_ceil(x, *pool)
  return x


def _head(module, x, width: int, layer: int):
  """The dense layer `dense{layer}` + PReLU on the (W, H, C)-flat input."""
  dense = nn.Dense(width, name=f'dense{layer}')(_flatten_wh(x))
  return _prelu(module, dense, f'prelu{layer}')


class RNet(nn.Module):
  """Refine net on 24x24 crops: (box regression (N, 4), probability (N,))."""

  @nn.compact
  def __call__(self, x):
    layers = ((28, 3, (3, 2)), (48, 3, (3, 2)), (64, 2, None))
    x = _head(self, _trunk(self, x, layers), 128, 4)
    probs = nn.softmax(nn.Dense(2, name='dense5_1')(x), axis=-1)[:, 1]
    return nn.Dense(4, name='dense5_2')(x), probs


class ONet(nn.Module):
  """Output net on 48x48 crops: (regression (N, 4), landmarks (N, 10),
  probability (N,)); landmarks are x0..x4, y0..y4 as box fractions."""

  @nn.compact
  def __call__(self, x):
    layers = (
      (32, 3, (3, 2)),
      (64, 3, (3, 2)),
      (64, 3, (2, 2)),
      (128, 2, None),
    )
    x = _head(self, _trunk(self, x, layers), 256, 5)
    probs = nn.softmax(nn.Dense(2, name='dense6_1')(x), axis=-1)[:, 1]
    points = nn.Dense(10, name='dense6_3')(x)
    return nn.Dense(4, name='dense6_2')(x), points, probs


def weights_path():
  """The shipped weights file (inside the installed package)."""
  return importlib.resources.files('ferjax.faces') / 'data' / WEIGHTS


def read_weights(path=None) -> dict[str, np.ndarray]:
  """{'pnet/conv1.weight': array, ...}: PyTorch names and layouts."""
  with (path or weights_path()).open('rb') as f, np.load(f) as npz:
    return {key: npz[key] for key in npz.files}


def _flax_params(arrays: dict[str, np.ndarray], net: str) -> dict:
  """One net's Flax params from its PyTorch tensors."""
  params = {}
  for key, value in arrays.items():
    prefix, _, name = key.partition('/')
    if prefix != net:
      continue
    layer, kind = name.rsplit('.', 1)
    if layer.startswith('prelu'):
      params[layer] = value
    elif kind == 'bias':
      params.setdefault(layer, {})['bias'] = value
    elif value.ndim == 4:  # OIHW -> HWIO.
      params.setdefault(layer, {})['kernel'] = value.transpose(2, 3, 1, 0)
    else:  # (out, in) -> (in, out).
      params.setdefault(layer, {})['kernel'] = value.T
  return {'params': params}


@functools.cache
def variables() -> dict[str, dict]:
  """{'pnet': variables, 'rnet': ..., 'onet': ...} of the shipped weights."""
  arrays = read_weights()
  return {net: jax.device_put(_flax_params(arrays, net)) for net in NETS}


def check_variables(found: dict) -> None:
  """Raises ValueError if `found` does not fit the three modules."""
  modules = {'pnet': PNet(), 'rnet': RNet(), 'onet': ONet()}
  sizes = {'pnet': 12, 'rnet': 24, 'onet': 48}
  for net, module in modules.items():
    x = jnp.zeros((1, sizes[net], sizes[net], 3))
    want = jax.eval_shape(module.init, jax.random.key(0), x)
    got = jax.tree.map(np.shape, found[net])
    if jax.tree.map(lambda s: s.shape, want) != got:
      raise ValueError(f'MTCNN {net} weights do not fit the module.')

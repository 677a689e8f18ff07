"""MFER's DS (dynamic global and static local) attention.

For x of shape (B, H, W, C), as the official code computes it
(XuJ1E/MFER, `model/attention.py`):

    V = value(x)                                   Dense C -> C
    K = key_2(GELU(key_0(x))) * x                  Dense C -> C/r -> C, r = 8
    Q = norm(GELU(attn(x)))                        conv k x k, pad k // 2
    A = softmax over the H * W positions of (Q + K), for each channel
    out = A * V + x

`attn` is a dense (groups=1) conv with bias and `norm` a LayerNorm over the
channels with PyTorch's default eps 1e-5 (ConvNeXt's own LayerNorms use
1e-6). GELU is the exact (erf) form. A is a spatial distribution per channel:
its H * W entries sum to one.

The paper's Fig. 2 and the code disagree; the code is the default and the
figure is a field:

* `order`: 'code' runs the query branch conv -> GELU -> LayerNorm, 'paper'
  conv -> LayerNorm -> GELU;
* `residual`: the code adds x back (True), the figure shows no shortcut;
* `conv`: 'dense' as in the code, or 'depthwise' (groups=C), a lighter
  variant (see `ferjax.models.mfer` for the parameter counts). The depthwise
  conv is computed as `depthwise_grad` says (`ferjax.layers.depthwise`).

Names follow the official module (`key.0`, `key.2`, `value`, `attn`, `norm`
are `key_0`, `key_2`, `value`, `attn`, `norm`), so a converted checkpoint
loads key by key. Linear and conv layers start as in ConvNeXt (normal with
std .02, zero bias), because the official model initialises every layer of
the trunk, this one included, that way. The softmax runs in float32 whatever
the compute dtype.
"""

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from ferjax.layers import torch_nn

Dtype = Any

CONVS = ('dense', 'depthwise')
ORDERS = ('code', 'paper')

# PyTorch's nn.LayerNorm default, used by the official query branch.
QUERY_LN_EPS = 1e-5


def check_fields(
  conv: str,
  order: str,
  kernel_size: int,
  *,
  owner: str = 'DSAttention',
  prefix: str = '',
) -> None:
  """Raises a clear ValueError for unknown variants or an even kernel.

  Args:
    conv: the query conv variant.
    order: the query branch order.
    kernel_size: the query conv's side.
    owner: the module named in the message.
    prefix: prefix of the field names in `owner` (e.g. 'ds_').
  """
  if conv not in CONVS:
    raise ValueError(f'{owner} {prefix}conv={conv!r}; use one of {CONVS}.')
  if order not in ORDERS:
    raise ValueError(f'{owner} {prefix}order={order!r}; use one of {ORDERS}.')
  if kernel_size < 1 or kernel_size % 2 == 0:
    raise ValueError(
      f'{owner} {prefix}kernel_size={kernel_size} must be odd and positive, '
      'so that padding kernel_size // 2 keeps the map size (7 in MFER).'
    )


class DSAttention(nn.Module):
  """DS attention on NHWC features; the output has the input's shape.

  The (B, H, W, C) float32 weights A are sown as `intermediates/attention`
  (read them by applying with `mutable=['intermediates']`).

  Attributes:
    conv: 'dense' (official code) or 'depthwise' query conv.
    order: 'code' (conv -> GELU -> LayerNorm) or 'paper' (conv -> LayerNorm
      -> GELU) query branch.
    residual: add the input to the output, as the code does.
    kernel_size: side of the query conv, odd.
    reduction: the key MLP's hidden width is channels // reduction.
    dtype: compute dtype; the softmax runs in float32.
    depthwise_grad: implementation of the 'depthwise' query conv, 'auto'
      (element-wise on CPU, XLA's convolution elsewhere), 'native' or
      'custom' (`ferjax.layers.depthwise`).
  """

  conv: str = 'dense'
  order: str = 'code'
  residual: bool = True
  kernel_size: int = 7
  reduction: int = 8
  dtype: Dtype = jnp.float32
  depthwise_grad: str = 'auto'

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Applies DS attention to (B, H, W, C) `x`."""
    check_fields(self.conv, self.order, self.kernel_size)
    channels, dtype = x.shape[-1], self.dtype
    hidden = channels // self.reduction
    if hidden < 1:
      raise ValueError(
        f'DSAttention got {channels} channels with reduction '
        f'{self.reduction}; it needs at least {self.reduction} channels.'
      )
    value = torch_nn.trunc_normal_dense(channels, 'value', dtype=dtype)(x)
    key = torch_nn.trunc_normal_dense(hidden, 'key_0', dtype=dtype)(x)
    key = torch_nn.trunc_normal_dense(channels, 'key_2', dtype=dtype)(
      nn.gelu(key, approximate=False)
    )
    key = key * x.astype(key.dtype)

    query = torch_nn.trunc_normal_conv(
      channels,
      self.kernel_size,
      'attn',
      padding=self.kernel_size // 2,
      groups=channels if self.conv == 'depthwise' else 1,
      dtype=dtype,
      depthwise_grad=self.depthwise_grad,
    )(x)
    norm = torch_nn.layer_norm('norm', epsilon=QUERY_LN_EPS, dtype=dtype)
    if self.order == 'code':
      query = norm(nn.gelu(query, approximate=False))
    else:
      query = nn.gelu(norm(query), approximate=False)

    batch, height, width, _ = x.shape
    scores = (query + key).astype(jnp.float32)
    scores = scores.reshape(batch, height * width, channels)
    weights = jax.nn.softmax(scores, axis=1).reshape(x.shape)
    self.sow('intermediates', 'attention', weights)
    out = (weights * value.astype(jnp.float32)).astype(x.dtype)
    return out + x if self.residual else out

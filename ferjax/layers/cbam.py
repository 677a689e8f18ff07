"""CBAM (Woo et al., ECCV 2018) in the form MA-Net's local branch uses.

A channel gate, then a spatial gate, each multiplying its input by a sigmoid
mask:

* `ChannelGate`: one MLP C -> C / r -> C (with biases, ReLU between) applied
  to the globally average-pooled and to the globally max-pooled features;
  the two outputs are summed before the sigmoid.
* `SpatialGate`: the per-pixel channel maximum and mean (in that order)
  -> 7x7 conv 2 -> 1 (no bias) -> BatchNorm -> sigmoid. There is no ReLU
  after the BatchNorm.

Submodule names follow MA-Net's PyTorch `attention.py` under the rule of
`ferjax.weights.torch_convert.module_path`: the torch keys
`cbam.ChannelGate.mlp.1`, `cbam.ChannelGate.mlp.3`,
`cbam.SpatialGate.spatial.conv` and `cbam.SpatialGate.spatial.bn` are the
Flax paths `cbam/ChannelGate/mlp_1`, `.../mlp_3`, `cbam/SpatialGate/spatial/
conv` and `.../spatial/bn` (index 0 of the torch MLP is a Flatten and 2 a
ReLU, which hold no weights).

Initialisation as in MA-Net: the 7x7 conv is Kaiming-normal (fan_out), the
Linear layers keep PyTorch's default, BatchNorm starts at gamma 1, beta 0.
The spatial BatchNorm uses PyTorch momentum 0.01 (Flax momentum 0.99).
"""

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from ferjax.layers import torch_nn

Dtype = Any


class ChannelGate(nn.Module):
  """Channel attention: sigmoid(MLP(avgpool(x)) + MLP(maxpool(x))) * x.

  Attributes:
    reduction: hidden width of the MLP is channels // reduction.
    dtype: compute dtype.
  """

  reduction: int = 16
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Gates the channels of NHWC `x`."""
    channels = x.shape[-1]
    hidden = channels // self.reduction
    if hidden < 1:
      raise ValueError(
        f'ChannelGate got {channels} channels with reduction '
        f'{self.reduction}; it needs at least {self.reduction} channels.'
      )
    # Stacking both pooled vectors applies the one shared MLP to each.
    pooled = jnp.stack([jnp.mean(x, axis=(1, 2)), jnp.max(x, axis=(1, 2))])
    hid = nn.relu(torch_nn.linear(pooled, hidden, 'mlp_1', dtype=self.dtype))
    att = torch_nn.linear(hid, channels, 'mlp_3', dtype=self.dtype)
    scale = nn.sigmoid(att[0] + att[1])
    return x * scale[:, None, None, :].astype(x.dtype)


class SpatialConv(nn.Module):
  """MA-Net's `BasicConv(2, 1, 7, padding=3, relu=False)`: conv and BN.

  Attributes:
    dtype: compute dtype.
  """

  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Maps (B, H, W, 2) pooled maps to (B, H, W, 1) attention logits."""
    x = torch_nn.conv(1, 7, 'conv', dtype=self.dtype)(x)
    # PyTorch momentum 0.01 keeps 99% of the running average per step.
    return torch_nn.batch_norm(
      'bn', train=train, dtype=self.dtype, momentum=0.99
    )(x)


class SpatialGate(nn.Module):
  """Spatial attention: sigmoid(BN(conv7x7([max_c x, mean_c x]))) * x.

  The (B, H, W, 1) sigmoid gate is sown as `intermediates/spatial_map`
  (read it by applying with `mutable=['intermediates']`).

  Attributes:
    dtype: compute dtype.
  """

  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Gates the pixels of NHWC `x`."""
    pooled = jnp.concatenate(
      [
        jnp.max(x, axis=-1, keepdims=True),
        jnp.mean(x, axis=-1, keepdims=True),
      ],
      axis=-1,
    )
    logits = SpatialConv(dtype=self.dtype, name='spatial')(pooled, train)
    gate = nn.sigmoid(logits)
    self.sow('intermediates', 'spatial_map', gate)
    return x * gate.astype(x.dtype)


class CBAM(nn.Module):
  """Channel gate followed by spatial gate.

  Attributes:
    reduction: MLP reduction ratio of the channel gate (16 in MA-Net).
    dtype: compute dtype.
  """

  reduction: int = 16
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Applies CBAM to NHWC `x`; `train` drives the spatial BatchNorm."""
    x = ChannelGate(self.reduction, dtype=self.dtype, name='ChannelGate')(x)
    return SpatialGate(dtype=self.dtype, name='SpatialGate')(x, train)

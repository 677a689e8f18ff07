"""IAL's transformer: pre-LayerNorm residual layers of attention and MLP.

The two transformers of IAL (AAAI 2023) and GCSA, in the module layout of
IAL's code (the vit-pytorch style): each layer is x + attn(attn_norm(x)),
then x + ff(ff_norm(x)); attention `to_qkv` (no bias), softmax(q k^T /
sqrt(dim_head)), `to_out_0`; feed-forward `net_0` - GELU (tanh form, IAL's
own GELU) - `net_3`. LayerNorm eps is PyTorch's 1e-5; there is no final
LayerNorm and no dropout (IAL's rate is 0). Linear layers have PyTorch's
default init (`ferjax.layers.torch_nn`).
"""

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from ferjax.layers import gcsa_attention
from ferjax.layers import torch_nn

Dtype = Any

# PyTorch's nn.LayerNorm default, used by IAL's transformers.
LN_EPS = 1e-5


class Attention(nn.Module):
  """IAL's multi-head self-attention: `to_qkv` (no bias), `to_out_0`.

  Attributes:
    heads: number of heads.
    dim_head: width of each head.
    dtype: compute dtype; the softmax runs in float32.
  """

  heads: int
  dim_head: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """(B, N, D) tokens -> (B, N, D)."""
    batch, length, dim = x.shape
    inner = self.heads * self.dim_head
    qkv = gcsa_attention.linear_no_bias(3 * inner, 'to_qkv', dtype=self.dtype)
    # torch's chunk(3) then 'b n (h d) -> b h n d': q, k, v, head-major.
    q, k, v = (
      t.reshape(batch, length, self.heads, self.dim_head)
      for t in jnp.split(qkv(x), 3, axis=-1)
    )
    dots = jnp.einsum('bihd,bjhd->bhij', q, k).astype(jnp.float32)
    weights = jax.nn.softmax(dots * self.dim_head**-0.5, axis=-1)
    out = jnp.einsum('bhij,bjhd->bihd', weights.astype(v.dtype), v)
    out = out.reshape(batch, length, inner)
    if self.heads == 1 and self.dim_head == dim:  # IAL projects otherwise.
      return out
    return torch_nn.linear(out, dim, 'to_out_0', dtype=self.dtype)


class FeedForward(nn.Module):
  """`net_0` (D -> mlp_dim) - GELU (tanh form) - `net_3` (-> D).

  Attributes:
    mlp_dim: hidden width.
    dtype: compute dtype.
  """

  mlp_dim: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """(B, N, D) tokens -> (B, N, D)."""
    h = torch_nn.linear(x, self.mlp_dim, 'net_0', dtype=self.dtype)
    h = nn.gelu(h, approximate=True)
    return torch_nn.linear(h, x.shape[-1], 'net_3', dtype=self.dtype)


class TransformerLayer(nn.Module):
  """x + attn(attn_norm(x)), then x + ff(ff_norm(x)).

  Attributes:
    heads: attention heads.
    dim_head: width of each head.
    mlp_dim: hidden width of the feed-forward.
    dtype: compute dtype.
  """

  heads: int
  dim_head: int
  mlp_dim: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """(B, N, D) tokens -> (B, N, D)."""
    dtype = self.dtype
    y = torch_nn.layer_norm('attn_norm', epsilon=LN_EPS, dtype=dtype)(x)
    x = x + Attention(self.heads, self.dim_head, dtype, name='attn')(y)
    y = torch_nn.layer_norm('ff_norm', epsilon=LN_EPS, dtype=dtype)(x)
    return x + FeedForward(self.mlp_dim, dtype, name='ff')(y)


RematTransformerLayer = nn.remat(TransformerLayer)


class Transformer(nn.Module):
  """IAL's pre-norm transformer: layers `layers_0`, `layers_1`, ...

  Attributes:
    depth: number of layers.
    heads: attention heads.
    dim_head: width of each head.
    mlp_dim: hidden width of the feed-forward.
    dtype: compute dtype.
    remat: rematerialise each layer in the backward pass; same variables.
  """

  depth: int
  heads: int
  dim_head: int
  mlp_dim: int
  dtype: Dtype = jnp.float32
  remat: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """(B, N, D) tokens -> (B, N, D)."""
    layer = RematTransformerLayer if self.remat else TransformerLayer
    for i in range(self.depth):
      x = layer(
        self.heads, self.dim_head, self.mlp_dim, self.dtype, name=f'layers_{i}'
      )(x)
    return x

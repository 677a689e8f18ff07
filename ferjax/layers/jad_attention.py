"""JADFER's multi-head attention with Joint Attention Dropping (JAD).

What is known. JADFER (Gao et al., IEEE TAFFC 2024) has no public code; its
abstract is the only source. Its contextual branch "abstracts the contextual
facial representations using self attention with Joint Attention Dropping
(JAD)"; its interaction module "adopts the spatial features from SB to query
the contextual representations from CB through cross attention with JAD,
which regulates the attention weights by dropping the similar activations";
JAD "drops the joint attention in the weight matrix". The motivation given is
that self and cross attention "focus on the redundant facial regions,
causing model overfitting".

Its predecessors fix the vocabulary:

* DropKey (Li et al., CVPR 2023) drops keys before the softmax, i.e. sets
  attention logits to -inf, so the remaining weights of a row still sum to
  one (plain attention dropout zeroes weights after the softmax and rescales
  by 1 / (1 - p) instead).
* TransFER (Xue et al., ICCV 2021) regularises attention by dropping whole
  units at random: MSAD zeroes the q/k/v of one random head of a sample with
  probability 0.3, MAD zeroes one of its local attention maps with
  probability 0.6.
* TransFG (He et al., AAAI 2022) calls the matrix product of the attention
  maps of all layers the "joint attention" and selects the tokens it
  attends to most.

The reading implemented. For each query, the keys that the joint attention
map weights most are the "similar activations": regions that most heads (or
most layers, under rollout) already agree on and so carry redundant
evidence. JAD drops them: with probability `drop_prob` a sample is chosen
(TransFER's per-sample draw), and for every query of a chosen sample the
top-`rho` fraction of keys by the joint map is masked, before the softmax as
DropKey does. The network must then explain the sample with the keys it
attends to less. The joint map only selects keys; it is computed from the
unmasked attention under `jax.lax.stop_gradient`, so no gradient flows
through the choice.

Each unknown of the paper is a field (docs/design_notes.md weighs them):

* `rho` 0.1: the fraction of keys dropped per query; ceil(rho * K), i.e.
  20 of 197 ViT tokens. Small, so that most of the context survives a drop
  and only the few dominant keys go. (DropKey's ratio falls with depth; a
  per-layer `rho` is the model's to set.)
* `drop_prob` 0.5: between TransFER's MSAD (0.3) and MAD (0.6).
* `joint` 'mean': the mean over heads of this layer's softmax map, which
  needs nothing from other layers and works for self and cross attention
  alike. 'rollout' is TransFG's product of layers in the form of attention
  rollout (Abnar and Zuidema, 2020): this layer's head-mean map plus the
  identity (the residual path), rows renormalised, times the joint map of
  the previous layer. In a ViT the token at position k of every layer is the
  residual stream of input token k, so the product's columns name this
  layer's keys. Cross attention adds no identity: its queries are not key
  tokens, so no residual path joins them.
* `mask_at` 'logits' (DropKey): masked logits become -inf. 'weights' zeroes
  the masked post-softmax weights and renormalises the rows. The two are the
  same map in exact arithmetic (a softmax restricted to the kept keys is the
  full softmax renormalised over them); they differ in rounding only, and
  'weights' never forms -inf. The field names which one a model means.
* `qkv_bias` False, as TransFER's encoder.

With `train=False`, or `drop_prob` 0, nothing is dropped and the layer is
plain multi-head attention. Logits and softmax are float32 whatever the
compute dtype. Linear layers start as timm's ViT does: std .02 normal
kernels (its trunc_normal_ truncates at +-2 absolute, which never bites),
zero biases.
"""

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

Dtype = Any

JOINTS = ('mean', 'rollout')
MASK_AT = ('logits', 'weights')

kernel_init = nn.initializers.normal(0.02)
bias_init = nn.initializers.zeros


def check_fields(
  joint: str,
  mask_at: str,
  rho: float,
  drop_prob: float,
  *,
  owner: str = 'JADAttention',
  prefix: str = '',
) -> None:
  """Raises a clear ValueError for unknown variants or out-of-range rates.

  Args:
    joint: how the joint map is formed.
    mask_at: where the mask is applied.
    rho: fraction of keys dropped per query.
    drop_prob: probability that a sample is dropped.
    owner: the module named in the message.
    prefix: prefix of the field names in `owner` (e.g. 'jad_').
  """
  if joint not in JOINTS:
    raise ValueError(f'{owner} {prefix}joint={joint!r}; use one of {JOINTS}.')
  if mask_at not in MASK_AT:
    raise ValueError(
      f'{owner} {prefix}mask_at={mask_at!r}; use one of {MASK_AT}.'
    )
  if not 0.0 <= rho < 1.0:
    raise ValueError(
      f'{owner} {prefix}rho={rho} must be in [0, 1): the fraction of keys '
      'dropped per query (0.1 by default).'
    )
  if not 0.0 <= drop_prob <= 1.0:
    raise ValueError(
      f'{owner} {prefix}drop_prob={drop_prob} must be in [0, 1]: the '
      'probability that a sample is dropped (0.5 by default).'
    )


def num_dropped(rho: float, num_keys: int) -> int:
  """ceil(rho * num_keys), kept below num_keys.

  The product is rounded to 6 decimals first, so that 0.1 * 30 drops 3 keys
  and not 4. At least one key always stays: a row with every key masked has
  no attention to give.

  Args:
    rho: fraction of keys dropped per query, in [0, 1).
    num_keys: K, the number of keys.

  Returns:
    The number of keys masked for each query of a dropped sample.
  """
  return min(math.ceil(round(rho * num_keys, 6)), num_keys - 1)


def jad_mask(joint: jax.Array, rho: float, drop: jax.Array) -> jax.Array:
  """The keys JAD masks: each query's top-rho keys, in dropped samples only.

  Args:
    joint: (B, Q, K) joint attention map.
    rho: fraction of keys masked per query; `num_dropped(rho, K)` of them.
    drop: (B,) bool, the samples that are dropped.

  Returns:
    (B, Q, K) bool, True for the `num_dropped(rho, K)` keys with the largest
    joint weight of every query of a dropped sample (ties go to the lower
    key index, as `jax.lax.top_k` breaks them) and False elsewhere.
  """
  count = num_dropped(rho, joint.shape[-1])
  mask = jnp.zeros(joint.shape, bool)
  if count == 0:
    return mask
  _, top = jax.lax.top_k(joint, count)
  mask = jnp.put_along_axis(mask, top, True, axis=-1, inplace=False)
  return mask & drop[:, None, None]


def rollout(
  attention: jax.Array, previous: jax.Array | None, self_attention: bool
) -> jax.Array:
  """One step of attention rollout.

  Args:
    attention: (B, Q, K) head-mean attention of this layer, rows summing
      to one.
    previous: (B, K, K) joint map of the previous layer, or None for the
      first layer.
    self_attention: add the identity (the residual path) and renormalise
      the rows; needs Q == K.

  Returns:
    (B, Q, K) joint map: the normalised (attention + I), or `attention` for
    cross attention, times `previous`.
  """
  if self_attention:
    attention = attention + jnp.eye(attention.shape[-1], dtype=attention.dtype)
    attention = attention / attention.sum(-1, keepdims=True)
  if previous is None:
    return attention
  return jnp.einsum('bqk,bkj->bqj', attention, previous)


def joint_map(
  weights: jax.Array,
  joint: str,
  previous: jax.Array | None,
  self_attention: bool,
) -> jax.Array:
  """The joint map JAD selects keys by; it carries no gradient.

  Args:
    weights: (B, H, Q, K) unmasked softmax attention.
    joint: 'mean' or 'rollout' (see the module docstring).
    previous: the previous layer's joint map (rollout only).
    self_attention: whether queries and keys are the same tokens.

  Returns:
    (B, Q, K) float32 joint map.
  """
  mean = weights.astype(jnp.float32).mean(axis=1)
  if joint == 'rollout':
    mean = rollout(mean, previous, self_attention)
  # The map only picks which keys to drop (here and, rolled out, in the
  # next layer); training must not push it to pick differently.
  return jax.lax.stop_gradient(mean)


def masked_weights(
  logits: jax.Array, weights: jax.Array, mask: jax.Array, mask_at: str
) -> jax.Array:
  """Attention weights with the masked keys removed; rows sum to one.

  Args:
    logits: (B, H, Q, K) float32 attention logits.
    weights: softmax of `logits` over K.
    mask: (B, Q, K) bool, True for the keys to drop (the same for all heads).
    mask_at: 'logits' (-inf before the softmax) or 'weights' (zero after it
      and renormalise).

  Returns:
    (B, H, Q, K) float32 weights, exactly zero at the masked keys.
  """
  mask = mask[:, None]
  if mask_at == 'logits':
    return jax.nn.softmax(jnp.where(mask, -jnp.inf, logits), axis=-1)
  kept = jnp.where(mask, 0.0, weights)
  return kept / kept.sum(-1, keepdims=True)


def dense(features: int, name: str, use_bias: bool, dtype: Dtype) -> nn.Dense:
  """A Linear layer with ViT's init."""
  return nn.Dense(
    features,
    use_bias=use_bias,
    dtype=dtype,
    kernel_init=kernel_init,
    bias_init=bias_init,
    name=name,
  )


class JADAttention(nn.Module):
  """Multi-head self or cross attention with Joint Attention Dropping.

  Parameters: Dense 'query', 'key', 'value' (D -> D, biases if `qkv_bias`)
  and 'out' (D -> D with bias). Sown under 'intermediates': 'attention', the
  (B, H, Q, K) float32 weights after JAD (before attention dropout), and in
  training with dropping, 'jad_mask', the (B, Q, K) bool mask.

  Attributes:
    num_heads: number of heads; must divide D.
    qkv_bias: biases on the query, key and value projections (TransFER:
      False).
    rho: fraction of keys masked per query of a dropped sample.
    drop_prob: probability that a training sample is dropped, drawn from
      the 'dropout' rng stream.
    joint: 'mean' (head mean of this layer's map) or 'rollout' (attention
      rollout through the previous layers' joint maps).
    mask_at: 'logits' (DropKey, -inf before the softmax) or 'weights' (zero
      after the softmax and renormalise).
    attn_dropout: ordinary dropout rate on the attention weights, applied
      after JAD.
    dtype: compute dtype of the projections; logits and softmax are float32.
  """

  num_heads: int = 8
  qkv_bias: bool = False
  rho: float = 0.1
  drop_prob: float = 0.5
  joint: str = 'mean'
  mask_at: str = 'logits'
  attn_dropout: float = 0.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(
    self,
    q_in: jax.Array,
    kv_in: jax.Array | None = None,
    prev_joint: jax.Array | None = None,
    train: bool = False,
  ) -> tuple[jax.Array, jax.Array]:
    """Attends from `q_in` to `kv_in` (or to itself).

    Args:
      q_in: (B, Q, D) query tokens.
      kv_in: (B, K, D') key/value tokens for cross attention; None for self
        attention over `q_in`.
      prev_joint: (B, K, K) joint map returned by the previous layer; read
        only when `joint='rollout'`, None in the first layer.
      train: drop (and apply attention dropout); needs a 'dropout' rng.

    Returns:
      The (B, Q, D) output and the (B, Q, K) float32 joint map of the
      unmasked attention, for the next layer's rollout.
    """
    check_fields(self.joint, self.mask_at, self.rho, self.drop_prob)
    self_attention = kv_in is None
    kv_in = q_in if self_attention else kv_in
    batch, queries, dim = q_in.shape
    keys = kv_in.shape[1]
    if dim % self.num_heads:
      raise ValueError(
        f'JADAttention num_heads={self.num_heads} does not divide the '
        f'width {dim} of q_in; pick a divisor of {dim}.'
      )
    rolls = self.joint == 'rollout' and prev_joint is not None
    if rolls and prev_joint.shape != (batch, keys, keys):
      raise ValueError(
        f'JADAttention prev_joint has shape {prev_joint.shape}; rollout '
        f"needs the previous layer's joint map ({batch}, {keys}, {keys})."
      )
    head_dim = dim // self.num_heads

    def heads(x, name, use_bias):
      x = dense(dim, name, use_bias, self.dtype)(x)
      return x.reshape(x.shape[:2] + (self.num_heads, head_dim))

    query = heads(q_in, 'query', self.qkv_bias)
    key = heads(kv_in, 'key', self.qkv_bias)
    value = heads(kv_in, 'value', self.qkv_bias)
    logits = jnp.einsum(
      'bqhd,bkhd->bhqk', query, key, preferred_element_type=jnp.float32
    )
    logits = logits * head_dim**-0.5
    weights = jax.nn.softmax(logits, axis=-1)
    joint = joint_map(weights, self.joint, prev_joint, self_attention)

    if train and self.drop_prob > 0 and num_dropped(self.rho, keys) > 0:
      rng = self.make_rng('dropout')
      drop = jax.random.bernoulli(rng, self.drop_prob, (batch,))
      mask = jad_mask(joint, self.rho, drop)
      weights = masked_weights(logits, weights, mask, self.mask_at)
      self.sow('intermediates', 'jad_mask', mask)
    self.sow('intermediates', 'attention', weights)

    weights = nn.Dropout(self.attn_dropout)(weights, deterministic=not train)
    out = jnp.einsum('bhqk,bkhd->bqhd', weights.astype(value.dtype), value)
    out = out.reshape(batch, queries, dim)
    return dense(dim, 'out', True, self.dtype)(out), joint

"""JADFER: spatial-contextual interaction with Joint Attention Dropping.

JADFER (Gao et al., IEEE TAFFC 16(2), 2024) has no public code and no
public numbers; its abstract is all that is known: a spatial branch (SB) runs N paths in parallel,
guided by a Variety loss to different discriminative regions; a contextual
branch (CB) abstracts contextual representations with self attention with
Joint Attention Dropping (JAD); the spatial-contextual interaction (SCI)
uses SB's spatial features as queries over CB's representations through
cross attention with JAD. Every part below is the most defensible reading of
that text given JADFER's predecessors (DAN, TransFER, DropKey, TransFG;
docs/design_notes.md gives the evidence and the alternatives), and every
unknown is a field:

* Backbone: IR-50 (face.evoLVe, MS-Celeb-1M) on 112 px, its first three
  stages giving a 14x14x256 map, as TransFER, APViT and POSTER, JADFER's
  peers in the same line of work (`ferjax.models.backbones.irse.IRTrunk`).
* SB: `num_paths` (4, DAN's num_head) copies of DAN's attention head. A path
  is DAN's SpatialAttention — 1x1 conv C -> C/2 + BN, then 3x3, 1x3 and 3x1
  convs back to C (each + BN) summed, ReLU, summed over channels into one
  HxW map that rescales the input — then DAN's ChannelAttention on the
  pooled vector (Linear C -> C/16, BN, ReLU, Linear, sigmoid, rescale). Each
  path yields its map and a C-d embedding. As in DAN, the N embeddings go
  through a log-softmax over the paths (`path_log_softmax`, when N > 1) and
  that one tensor feeds both the SCI and the Variety loss that keeps the
  paths apart (`ferjax.losses.variety_loss`, computed by the 'jadfer'
  loss); with `path_log_softmax=False` both read the raw embeddings.
* CB: the 196 map positions as tokens, projected to `width`, a class token,
  learned position embeddings, then `depth` pre-norm transformer blocks
  whose self attention is `ferjax.layers.jad_attention.JADAttention`
  (TransFER's encoder: width 768, depth 8, 8 heads, MLP ratio 3, no qkv
  bias, LayerNorm eps 1e-6).
* SCI: the N path embeddings, projected to `width`, query CB's normalised
  tokens in `sci_depth` pre-norm cross-attention blocks with JAD (and an
  MLP). With `joint='rollout'` the cross attention's joint map continues
  CB's rollout.
* Fusion: the N SCI outputs and CB's class token, concatenated (`fusion=
  'concat'`, default: keeps every path's evidence) or averaged ('mean'),
  LayerNorm, then a linear classifier.

The paper's modules are switched off by their sizes (docs/reproduce.md):
`num_paths=0` removes SB, and with it SCI, whose queries are SB's paths
(so `sci_depth=0` too); `depth=0` removes CB's encoder and class token, and
SCI then queries the embedded backbone tokens directly; `sci_depth=0`
removes SCI, and the fusion takes the projected path embeddings (`sci_embed`)
with CB's class token; `drop_prob=0` switches JAD off (plain attention).

Parameter count of the default 7-class model: 73,483,143 (IR-50 stages 1-3
17,611,968; SB 2,141,888; CB 47,592,192; SCI 6,102,528; fusion and head
34,567); without SB (and SCI) 65,211,079, without CB 26,233,479 (the
token embedding, positions and norm stay for SCI), without SCI 67,577,991;
all asserted in tests/test_jadfer.py.

`remat` rematerialises the IR-50 units and the CB and SCI blocks in the
backward pass (`nn.remat`): about 30% more compute for much less activation
memory, with the same variables.

Outputs (float32): 'logits' (B, classes); 'features' (B, F) the fused
vector before the head; 'sb_maps' (B, N, H, W) and 'sb_embeddings' (B, N, C),
the tensor SCI and the Variety loss read. Dropping (JAD's per-sample draws and the encoder's
dropout) uses the 'dropout' rng stream in training only.
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from ferjax.layers import jad_attention
from ferjax.layers import torch_nn
from ferjax.models import registry
from ferjax.models import sown
from ferjax.models.backbones import irse

Dtype = Any

FUSIONS = ('concat', 'mean')
# TransFER's encoder LayerNorm eps.
LN_EPS = 1e-6
_dense_init = nn.initializers.truncated_normal(0.02)


class SpatialPath(nn.Module):
  """One SB path: DAN's spatial then channel attention on a (B,H,W,C) map.

  Attributes:
    hidden_ratio: the 1x1 conv's output channels are C // hidden_ratio
      (DAN: 512 -> 256, i.e. 2).
    channel_attention: apply DAN's channel attention to the pooled vector.
    channel_reduction: its bottleneck is C // channel_reduction (DAN: 16).
    dtype: compute dtype.
  """

  hidden_ratio: int = 2
  channel_attention: bool = True
  channel_reduction: int = 16
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False):
    """Returns (map (B, H, W), embedding (B, C)), both float32."""
    channels = x.shape[-1]

    def conv_bn(y, features, kernel, name):
      pad = tuple((k // 2, k // 2) for k in kernel)
      y = nn.Conv(features, kernel, padding=pad, dtype=self.dtype, name=name)(y)
      return torch_nn.batch_norm(f'{name}_bn', train=train, dtype=self.dtype)(y)

    y = conv_bn(x, channels // self.hidden_ratio, (1, 1), 'conv1x1')
    y = nn.relu(
      conv_bn(y, channels, (3, 3), 'conv3x3')
      + conv_bn(y, channels, (1, 3), 'conv1x3')
      + conv_bn(y, channels, (3, 1), 'conv3x1')
    )
    attention_map = y.astype(jnp.float32).sum(-1)
    pooled = (x.astype(jnp.float32) * attention_map[..., None]).mean((1, 2))
    if not self.channel_attention:
      return attention_map, pooled
    a = nn.Dense(channels // self.channel_reduction, name='ca_fc1')(pooled)
    a = torch_nn.batch_norm('ca_bn', train=train)(a)
    a = nn.sigmoid(nn.Dense(channels, name='ca_fc2')(nn.relu(a)))
    return attention_map, pooled * a


class Mlp(nn.Module):
  """Dense -> GELU -> Dense, the transformer blocks' feed-forward."""

  ratio: float
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    width = x.shape[-1]
    h = nn.Dense(
      int(width * self.ratio),
      dtype=self.dtype,
      kernel_init=_dense_init,
      name='fc1',
    )(x)
    return nn.Dense(
      width, dtype=self.dtype, kernel_init=_dense_init, name='fc2'
    )(nn.gelu(h, approximate=False))


class JADBlock(nn.Module):
  """Pre-norm block: x + JAD attention(LN(x)[, kv]); x + MLP(LN(x)).

  Self attention when `kv` is None, else cross attention from x to `kv`
  (already normalised by the caller).
  """

  attention: dict
  mlp_ratio: float
  dropout: float = 0.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, kv=None, prev_joint=None, train: bool = False):
    """Returns (x, the attention's joint map)."""
    drop = nn.Dropout(self.dropout, deterministic=not train)
    h = nn.LayerNorm(LN_EPS, dtype=self.dtype, name='norm1')(x)
    h, joint = jad_attention.JADAttention(
      dtype=self.dtype, name='attention', **self.attention
    )(h, kv, prev_joint=prev_joint, train=train)
    x = x + drop(h)
    h = nn.LayerNorm(LN_EPS, dtype=self.dtype, name='norm2')(x)
    x = x + drop(Mlp(self.mlp_ratio, self.dtype, name='mlp')(h))
    return x, joint


# `train` (argument 4, counting self) is a Python bool: static under remat.
RematJADBlock = nn.remat(JADBlock, static_argnums=(4,))


class Interaction(nn.Module):
  """JADFER after its backbone: SB, CB, SCI, fusion and classifier.

  `JADFER` runs it on the IR-50 map, in its own scope (the parameters sit
  at JADFER's top level); on its own it classifies any (B, H, W, C) map,
  which is how the tests exercise the ablations without an IR-50.

  Attributes:
    num_classes: expression classes.
    num_paths: SB paths N (4, DAN); 0 removes SB (and needs sci_depth=0).
    path_hidden_ratio: SB 1x1 conv reduction (2, DAN).
    channel_attention: DAN's channel attention in each path.
    path_log_softmax: the paths' embeddings go through a log-softmax over
      the paths (when N > 1) before they feed SCI and the Variety loss, as
      DAN's heads feed its classifier and partition loss.
    width: CB/SCI token width (768, TransFER).
    depth: CB encoder blocks (8, TransFER); 0 removes CB.
    sci_depth: SCI cross-attention blocks (1); 0 removes SCI.
    num_heads: attention heads (8, TransFER).
    mlp_ratio: MLP hidden width / token width (3, TransFER).
    qkv_bias: bias in q, k, v (False, TransFER).
    rho: JAD's dropped fraction of keys per query (0.1).
    drop_prob: JAD's per-sample drop probability in training (0.5); 0
      switches JAD off.
    joint: JAD's joint map, 'mean' over heads or 'rollout' across layers.
    mask_at: JAD masks 'logits' (DropKey) or 'weights'.
    dropout: dropout after attention and MLP in the blocks (0, TransFER).
    fusion: 'concat' or 'mean' of the SCI outputs and CB's class token.
    remat: rematerialise the CB/SCI blocks (and JADFER's backbone units)
      in the backward pass (about 30% more compute, much less activation
      memory); same variables.
    dtype: compute dtype; parameters and outputs stay float32.
  """

  num_classes: int = 7
  num_paths: int = 4
  path_hidden_ratio: int = 2
  channel_attention: bool = True
  path_log_softmax: bool = True
  width: int = 768
  depth: int = 8
  sci_depth: int = 1
  num_heads: int = 8
  mlp_ratio: float = 3.0
  qkv_bias: bool = False
  rho: float = 0.1
  drop_prob: float = 0.5
  joint: str = 'mean'
  mask_at: str = 'logits'
  dropout: float = 0.0
  fusion: str = 'concat'
  remat: bool = False
  dtype: Dtype = jnp.float32

  def _check(self) -> None:
    jad_attention.check_fields(
      self.joint, self.mask_at, self.rho, self.drop_prob, owner='JADFER'
    )
    if self.fusion not in FUSIONS:
      raise ValueError(f'JADFER fusion={self.fusion!r}; use one of {FUSIONS}.')
    sizes = (self.num_paths, self.depth, self.sci_depth)
    if min(sizes) < 0 or not (self.num_paths or self.depth):
      raise ValueError(
        f'JADFER num_paths, depth, sci_depth = {sizes}: each must be >= 0 '
        '(0 removes SB, CB, SCI), and SB or CB must stay.'
      )
    if self.sci_depth and not self.num_paths:
      raise ValueError(
        f'JADFER sci_depth={self.sci_depth} with num_paths=0: SCI queries '
        "with SB's paths; set sci_depth=0 too to remove SB."
      )
    if self.width % self.num_heads:
      raise ValueError(
        f'JADFER width={self.width} must be divisible by num_heads='
        f'{self.num_heads}.'
      )

  def _block(self, name: str) -> nn.Module:
    attention = dict(
      num_heads=self.num_heads,
      qkv_bias=self.qkv_bias,
      rho=self.rho,
      drop_prob=self.drop_prob,
      joint=self.joint,
      mask_at=self.mask_at,
    )
    block = RematJADBlock if self.remat else JADBlock
    return block(attention, self.mlp_ratio, self.dropout, self.dtype, name=name)

  def _spatial(self, x: jax.Array, train: bool):
    """SB: N parallel paths -> maps (B, N, H, W), embeddings (B, N, C)."""
    batch, height, width, channels = x.shape
    if not self.num_paths:
      return (
        jnp.zeros((batch, 0, height, width), jnp.float32),
        jnp.zeros((batch, 0, channels), jnp.float32),
      )
    paths = [
      SpatialPath(
        self.path_hidden_ratio,
        self.channel_attention,
        dtype=self.dtype,
        name=f'sb_path_{i}',
      )(x, train)
      for i in range(self.num_paths)
    ]
    embeddings = jnp.stack([e for _, e in paths], axis=1)
    if self.path_log_softmax and self.num_paths > 1:
      embeddings = jax.nn.log_softmax(embeddings, axis=1)
    return jnp.stack([m for m, _ in paths], axis=1), embeddings

  def _contextual(self, x: jax.Array, train: bool):
    """CB: tokens (with a class token first when depth > 0), JAD self
    attention, LayerNorm; returns them and the last joint map."""
    batch, height, width, channels = x.shape
    tokens = nn.Dense(self.width, kernel_init=_dense_init, name='cb_embed')(
      x.reshape(batch, height * width, channels)
    )
    if self.depth:
      cls = self.param('cb_cls', _dense_init, (1, 1, self.width))
      tokens = jnp.concatenate([jnp.tile(cls, (batch, 1, 1)), tokens], axis=1)
    pos = self.param('cb_pos', _dense_init, (1, tokens.shape[1], self.width))
    tokens = (tokens + pos).astype(self.dtype)
    joint = None
    for i in range(self.depth):
      # Positional: `train` must be static under remat.
      tokens, joint = self._block(f'cb_block_{i}')(tokens, None, joint, train)
    tokens = nn.LayerNorm(LN_EPS, dtype=self.dtype, name='cb_norm')(tokens)
    return tokens, joint

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    """Classifies (B, H, W, C) feature maps.

    Returns float32 'logits' (B, classes), 'features' (B, F), 'sb_maps'
    (B, N, H, W) and 'sb_embeddings' (B, N, C), the tensor SCI and the
    Variety loss read (N = 0 without SB).
    """
    self._check()
    x = x.astype(self.dtype)
    sb_maps, sb_embeddings = self._spatial(x, train)
    parts = []
    if self.depth or self.sci_depth:
      tokens, joint = self._contextual(x, train)
    if self.num_paths:
      # SCI: the paths' embeddings query CB's tokens.
      queries = nn.Dense(self.width, kernel_init=_dense_init, name='sci_embed')(
        sb_embeddings
      ).astype(self.dtype)
      for i in range(self.sci_depth):
        block = self._block(f'sci_block_{i}')
        queries, _ = block(queries, tokens, joint, train)
      parts.append(queries)
    if self.depth:
      parts.append(tokens[:, :1])  # CB's class token.

    # Fusion and classifier.
    parts = jnp.concatenate(parts, axis=1)
    if self.fusion == 'concat':
      fused = parts.reshape(parts.shape[0], -1)
    else:
      fused = parts.mean(1)
    fused = nn.LayerNorm(LN_EPS, name='fuse_norm')(fused.astype(jnp.float32))
    logits = nn.Dense(self.num_classes, kernel_init=_dense_init, name='head')(
      fused
    )
    return {
      'logits': logits.astype(jnp.float32),
      'features': fused,
      'sb_maps': sb_maps,
      'sb_embeddings': sb_embeddings.astype(jnp.float32),
    }


class JADFER(Interaction):
  """JADFER: the IR backbone, then `Interaction`; the module docstring gives
  the design and its sources.

  Attributes (beyond `Interaction`'s):
    num_layers: IR backbone depth (50).
    backbone_mode: 'ir' or 'ir_se'.
    pixel_mean: input normalisation (face.evoLVe's 0.5).
    pixel_std: input normalisation (face.evoLVe's 0.5).
    trunk_width: the IR trunk's first-stage channels (64); narrower for
      reduced variants only (the IR-50 checkpoint is 64).
    trunk_units: the IR trunk's units per stage; None: IR-`num_layers`'s.
  """

  num_layers: int = 50
  backbone_mode: str = 'ir'
  pixel_mean: tuple[float, ...] | None = irse.PIXEL_MEAN
  pixel_std: tuple[float, ...] | None = irse.PIXEL_STD
  trunk_width: int = 64
  trunk_units: tuple[int, ...] | None = None

  @nn.compact
  def __call__(
    self, images: jax.Array, train: bool = False
  ) -> dict[str, jax.Array]:
    """Classifies (B, H, W, 3) images in [0, 1] (112 px as designed); the
    outputs are `Interaction`'s."""
    self._check()
    fmap = irse.IRTrunk(
      num_layers=self.num_layers,
      mode=self.backbone_mode,
      stages=3,
      dtype=self.dtype,
      pixel_mean=self.pixel_mean,
      pixel_std=self.pixel_std,
      remat=self.remat,
      width=self.trunk_width,
      units=self.trunk_units,
      name='backbone',
    )(images, train)
    fields = {f.name: getattr(self, f.name) for f in INTERACTION_FIELDS}
    interaction = Interaction(**fields, name='interaction')
    nn.share_scope(self, interaction)  # Its parameters at the top level.
    return interaction(fmap, train)


# Interaction's fields, which JADFER passes on.
INTERACTION_FIELDS = tuple(
  f for f in dataclasses.fields(Interaction) if f.name not in ('parent', 'name')
)


def attention_maps(model, outputs, intermediates) -> dict:
  """CB attention (class row, query mean, rollout), SCI rows and SB maps.

  On the backbone's grid, from the last CB layer's head-mean attention:
  'cb_cls' (the class token's row) and 'cb_mean' (the mean over the patch
  queries); 'cb_rollout', the class token's row of the attention rollout
  over every CB layer; 'sci_path_i', where the SCI query of SB path i
  looks; 'sb_path_i', SB path i's spatial map. Each is min-max scaled per
  example. A model without CB, SCI or SB has none of that part's maps.
  """
  sb = np.asarray(outputs['sb_maps'], np.float32)
  batch, paths, height, width = sb.shape
  first = 1 if model.depth else 0  # The class token's column, if any.

  def grid(rows):
    rows = np.asarray(rows)[..., first:].reshape(batch, height, width)
    return sown.rescale(rows)

  def head_mean(block):
    return sown.sown(intermediates, block, 'attention', 'attention').mean(1)

  maps = {}
  if model.depth:
    layers = [head_mean(f'cb_block_{i}') for i in range(model.depth)]
    joint = None
    for attention in layers:
      joint = jad_attention.rollout(jnp.asarray(attention), joint, True)
    maps['cb_cls'] = grid(layers[-1][:, 0])
    maps['cb_mean'] = grid(layers[-1][:, 1:].mean(axis=1))
    maps['cb_rollout'] = grid(joint[:, 0])
  if model.sci_depth:
    sci = head_mean(f'sci_block_{model.sci_depth - 1}')
    maps.update({f'sci_path_{i}': grid(sci[:, i]) for i in range(paths)})
  maps.update({f'sb_path_{i}': sown.rescale(sb[:, i]) for i in range(paths)})
  return maps


SPECS = (
  registry.ModelSpec(
    name='jadfer',
    factory=JADFER,
    input_size=112,
    loss='jadfer',
    converter='ferjax.weights.jadfer:from_torch',
    checkpoints=(irse.MSCELEB_IR50,),
    attention=attention_maps,
    description='JADFER (TAFFC 2024): IR-50, DAN-style paths, JAD encoder',
  ),
)

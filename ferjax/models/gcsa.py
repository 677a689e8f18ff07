"""GCSA: global convolution and squeeze-and-excitation attention for dynamic
facial expression recognition (Liang, Dong and Li, J. of Tianjin Univ. of
Technology and Education 34(3), 2024), on the structure of its predecessor
IAL (Li, Niu, Zhu and Zhao, AAAI 2023), whose official code
(muse1998/IAL-for-Facial-Expression-Recognition: `modules.py`,
`final_model.py`, `main.py`) this port follows module by module.

Only GCSA's abstract is public: a squeeze and excitation-global convolution
attention that rescales the channels of a residual network's feature maps,
trained with a cross entropy-auxiliary-intensity aware (CAI) loss. IAL's
code has exactly those pieces but the squeeze and excitation, so
`attention='gca'` is IAL's model, `attention='gcsa'` (default) adds the SE
branch and `attention='se'` keeps the SE gate alone
(`ferjax.layers.gcsa_attention`, which documents the gates, the `fusion`
rule and why the fused gate starts at the GC gate's value). The loss is
`ferjax.losses` 'cai'.

Structure (shapes at IAL's 16 frames of 112 x 112, per frame):

* the B clips' frames are stacked frame-major to B * T images;
* stem: `conv1_0` 3x3/2 (3 -> 64) - `conv1_1` BN - ReLU - `conv1_3` 3x3
  (64 -> 64) - `bn1` - ReLU - max-pool 3x3/2: 28x28x64;
* ResNet-18 BasicBlocks, one per stage for the first three: `layer1_0` (64,
  plain), `layer2_0` (128, /2, 14x14) and `layer3_0` (256, /2, 7x7), the
  last two with the channel attention between `bn2` and the residual sum;
  each gives auxiliary logits from its global-conv response;
* dynamic-static fusion on the 7x7x256 maps of each clip: the dynamic part
  runs the T - 1 frame differences x[t + 1] - x[t] through `layer4_0..2`
  (three BasicBlocks, 256, the first /2): 4x4x256; the static part takes
  frames 0..T-2 through `patch_embedding_0` 3x3/2 conv - `_1` BN - ReLU,
  adds `pos_embedding_pos` to the 16 positions as 256-d tokens and runs
  `pos_transformer` over them: 4x4x256. The two are summed;
* each fused map is flattened channel-major (C, H, W), as the NCHW view of
  the code: T - 1 tokens of 4096, plus the first T - 1 rows of
  `pos_embedding` (num_frames rows, the last unused as in IAL), through
  `temporal_transformer`;
* the tokens' mean is the feature; `fc_f` (4096 -> num_classes) the logits.

Both transformers are IAL's: pre-LayerNorm (eps 1e-5) residual layers of
multi-head attention (`to_qkv` without bias, softmax(q k^T / sqrt(dim_head)),
`to_out_0` with bias) and a feed-forward `net_0` - GELU (tanh form, as IAL's
own GELU) - `net_3`; depth 2, 4 heads of 32; MLP 256 in the static branch,
512 in the temporal one. There is no final LayerNorm and no dropout (IAL's
rate is 0). In PyTorch a layer's modules are `layers.i.0.fn.norm`,
`layers.i.0.fn.fn.*` (attention), `layers.i.1.fn.norm`, `layers.i.1.fn.fn.*`
(feed-forward); here they are `layers_i/{attn_norm, attn, ff_norm, ff}`
(`ferjax.layers.ial_transformer`; `ferjax.weights.gcsa` maps them).

Any frame size works: the global-conv kernels cover the map of their stage
(IAL's 256 // C * 7, i.e. 14 and 7, at 112 px), the static branch has one
position per cell of the layer4 map, and the temporal width is 256 times
that map's area (4096 at 112 px); e.g. 32 px frames give 4x4 and 2x2
global-conv kernels, one static position and 256-d temporal tokens, a fast
smoke-test size. Variables made for one size and frame count fit only that
size and count (`size_dependent_shapes`; a mismatch is a clear error).
Inputs are [0, 1] frames without mean/std normalisation, as IAL. The
auxiliary classifiers have num_classes outputs (IAL hard-codes its 7).

Initialisation as IAL (convolutions Kaiming-normal fan_out, PyTorch's
defaults elsewhere, position embeddings standard normal); BatchNorm as
PyTorch's (momentum 0.1, eps 1e-5) over the B * T frames.

`depthwise_grad` (on CPU, XLA's depthwise kernel gradient is a dense
convolution; `ferjax.layers.depthwise`) and `remat` change how the model is
computed, not its variables.

Parameters of the 7-class model at 16 x 112 x 112: 18,936,775 with
`attention='gca'`, exactly the parameters of IAL's official model that take
part in its forward pass (its state_dict holds 19,083,527: 146,752 more in
`s_former.bias` and every block's `bias1`, `bias2`, `glb`, and the GCA
layers of the 64-channel block, none of them used); 18,947,015 with the
default `attention='gcsa'` (+ 2048 + 8192 in the SE layers); 18,936,775
with `attention='se'` (the SE layers take the GC gate's place, at the same
reduction 16); 18,942,919 with `attention_stages=(3,)` (layer2's gates
gone) and 18,926,535 with `attention_stages=()`.
"""

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from ferjax.layers import depthwise
from ferjax.layers import gcsa_attention
from ferjax.layers import ial_transformer
from ferjax.layers import torch_nn
from ferjax.models import registry
from ferjax.models import sown
from ferjax.models.backbones import resnet

Dtype = Any

# Channels of the stem and of the four stages (IAL's: `width` 64); blocks.
STEM_WIDTH = 64
WIDTHS = (64, 128, 256, 256)
STAGE_SIZES = (1, 1, 1, 3)
# The stages (layer2, layer3) whose block has a global conv, an auxiliary
# classifier and, by default, the channel gate, as in IAL.
ATTENTION_STAGES = (2, 3)
TRANSFORMER_FIELDS = ('depth', 'heads', 'dim_head', 'mlp_dim')

position_init = nn.initializers.normal(stddev=1.0)  # torch.randn


class GCABlock(nn.Module):
  """IAL's BasicBlock with channel attention; returns (out, aux logits).

  conv1 3x3 (stride) - bn1 - ReLU - conv2 3x3 - bn2 - channel attention,
  plus the shortcut (`downsample_0` 1x1 conv and `downsample_1` BN when the
  stride or width changes), ReLU. It is `resnet.BasicBlock` with the
  attention in its place, written out because the block has a second
  output, the auxiliary logits, which the `refine` hook cannot return.
  The attention's (B * T, C) gates are sown as
  `intermediates/channel_weights`.

  Attributes:
    features: output channels, at least 16.
    strides: stride of `conv1` and of the shortcut conv.
    num_frames: frames per clip, T.
    num_classes: outputs of the auxiliary classifier.
    gate: the channel gate (`ferjax.layers.gcsa_attention.Gate`).
    dtype: compute dtype.
    depthwise_grad: implementation of the global conv `gc_0` ('auto',
      'native', 'custom'; `ferjax.layers.depthwise`).
  """

  features: int
  strides: int
  num_frames: int
  num_classes: int
  gate: gcsa_attention.Gate = gcsa_attention.Gate()
  dtype: Dtype = jnp.float32
  depthwise_grad: str = 'auto'

  @nn.compact
  def __call__(
    self, x: jax.Array, train: bool = False
  ) -> tuple[jax.Array, jax.Array]:
    """(B * T, H, W, C) frames -> (frames out, (B, num_classes) logits)."""
    dtype, features = self.dtype, self.features
    y = torch_nn.conv(features, 3, 'conv1', strides=self.strides, dtype=dtype)(
      x
    )
    y = nn.relu(torch_nn.batch_norm('bn1', train=train, dtype=dtype)(y))
    y = torch_nn.conv(features, 3, 'conv2', dtype=dtype)(y)
    y = torch_nn.batch_norm('bn2', train=train, dtype=dtype)(y)
    y, aux = gcsa_attention.channel_attention(
      y,
      num_frames=self.num_frames,
      num_classes=self.num_classes,
      gate=self.gate,
      dtype=dtype,
      caller=self,
      depthwise_grad=self.depthwise_grad,
    )
    shortcut = x
    if self.strides != 1 or x.shape[-1] != features:
      shortcut = torch_nn.conv(
        features, 1, 'downsample_0', strides=self.strides, dtype=dtype
      )(x)
      shortcut = torch_nn.batch_norm('downsample_1', train=train, dtype=dtype)(
        shortcut
      )
    return nn.relu(y + shortcut), aux


# `train` (argument 2, counting self) is a Python bool: static under remat.
RematGCABlock = nn.remat(GCABlock, static_argnums=(2,))
RematBasicBlock = nn.remat(resnet.BasicBlock, static_argnums=(2,))


def widths(width: int = STEM_WIDTH) -> tuple[int, ...]:
  """The four stages' channels for a stem of `width` (IAL: 64)."""
  return tuple(c * width // STEM_WIDTH for c in WIDTHS)


def stem(
  x: jax.Array, *, train: bool, dtype: Dtype, width: int = STEM_WIDTH
) -> jax.Array:
  """IAL's stem, created in the calling module: 112 px -> 28 px.

  `conv1_0` 3x3/2 - `conv1_1` BN - ReLU - `conv1_3` 3x3 - `bn1` - ReLU -
  max-pool 3x3/2 (padding 1, as torch's: the padding never wins).
  """
  x = torch_nn.conv(width, 3, 'conv1_0', strides=2, dtype=dtype)(x)
  x = nn.relu(torch_nn.batch_norm('conv1_1', train=train, dtype=dtype)(x))
  x = torch_nn.conv(width, 3, 'conv1_3', dtype=dtype)(x)
  x = nn.relu(torch_nn.batch_norm('bn1', train=train, dtype=dtype)(x))
  return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


def channel_major_tokens(maps: jax.Array, num_tokens: int) -> jax.Array:
  """(B * N, H, W, C) maps -> (B, N, C * H * W), flattened as NCHW."""
  flat = jnp.transpose(maps, (0, 3, 1, 2)).reshape(maps.shape[0], -1)
  return flat.reshape(-1, num_tokens, flat.shape[-1])


def halved(side: int, times: int) -> int:
  """A side after `times` stride-2 steps (3x3 convs, pools: ceil(side / 2))."""
  for _ in range(times):
    side = -(-side // 2)
  return side


def size_dependent_shapes(
  num_frames: int, height: int, width: int, channels: int = STEM_WIDTH
) -> dict[tuple[str, ...], tuple[int, ...]]:
  """Parameter shapes that follow the frame size, by parameter path.

  layer2 and layer3 see maps of 3 and 4 halvings, the static branch one
  position per cell of the 5-halving layer4 map, whose 256 channels per
  cell make the temporal width (at 112 px: 14, 7, 16 cells, 4096).
  """
  h2, w2 = halved(height, 3), halved(width, 3)
  h3, w3 = halved(height, 4), halved(width, 4)
  cells = halved(height, 5) * halved(width, 5)
  stages = widths(channels)
  return {
    ('layer2_0', 'gc_0', 'kernel'): (h2, w2, 1, stages[1]),
    ('layer3_0', 'gc_0', 'kernel'): (h3, w3, 1, stages[2]),
    ('pos_embedding_pos',): (1, cells, stages[3]),
    ('pos_embedding',): (1, num_frames, stages[3] * cells),
  }


class GCSA(nn.Module):
  """GCSA (default) or IAL's GCA model for clips of face frames.

  Attributes:
    num_classes: outputs of `fc_f` and of the auxiliary classifiers (IAL: 7).
    num_frames: frames per clip, T >= 2 (IAL: 16); `pos_embedding` has T
      rows, of which the T - 1 temporal tokens use the first T - 1.
    attention: the channel gate: 'gcsa' (GC and SE gates fused, default),
      'gca' (IAL's GC gate) or 'se' (the SE gate alone); the global conv
      and the auxiliary classifiers stay whatever the gate
      (`ferjax.layers.gcsa_attention`).
    attention_stages: the stages whose block applies the gate, within
      (2, 3), IAL's (layer1 has none in IAL; layer4 runs on frame
      differences); the others keep their global conv and auxiliary
      classifier without a gate.
    fusion: how 'gcsa' combines its gates: 'product' (default; starts at
      the GC gate), 'geometric' or 'mean'.
    se_reduction: the SE bottleneck is C // se_reduction (16, GCA's r).
    se_scale: the SE gate is se_scale * sigmoid(...) (2, GCA's range).
    se_zero_init: the SE branch's last layer starts at zero, so the SE gate
      starts at se_scale / 2 (1 with the default scale).
    static_depth: layers of the static branch's `pos_transformer` (2).
    static_heads: its attention heads (4).
    static_dim_head: its head width (32).
    static_mlp_dim: its feed-forward width (256).
    temporal_depth: layers of the `temporal_transformer` (2).
    temporal_heads: its attention heads (4).
    temporal_dim_head: its head width (32).
    temporal_mlp_dim: its feed-forward width (512).
    dtype: compute dtype; parameters, batch statistics and every output
      stay float32.
    depthwise_grad: implementation of the global convs `gc_0`, 'auto'
      (window products on CPU, XLA's convolutions elsewhere), 'native' or
      'custom' (`ferjax.layers.depthwise`).
    remat: rematerialise the residual blocks and the transformer layers in
      the backward pass (more compute, much less activation memory); same
      variables.
    pixel_mean: per-channel mean subtracted from the [0, 1] frames; None
      (the default, as IAL) subtracts nothing.
    pixel_std: per-channel std dividing the frames; None divides by nothing.
    width: channels of the stem and layer1 (IAL: 64; layer2-4 have 2, 4
      and 4 times as many); narrower variants (>= 8) keep every module.
  """

  num_classes: int = 7
  num_frames: int = 16
  attention: str = 'gcsa'
  attention_stages: tuple[int, ...] = ATTENTION_STAGES
  fusion: str = 'product'
  se_reduction: int = gcsa_attention.REDUCTION
  se_scale: float = 2.0
  se_zero_init: bool = True
  static_depth: int = 2
  static_heads: int = 4
  static_dim_head: int = 32
  static_mlp_dim: int = 256
  temporal_depth: int = 2
  temporal_heads: int = 4
  temporal_dim_head: int = 32
  temporal_mlp_dim: int = 512
  dtype: Dtype = jnp.float32
  pixel_mean: tuple[float, ...] | None = None
  pixel_std: tuple[float, ...] | None = None
  depthwise_grad: str = 'auto'
  remat: bool = False
  width: int = STEM_WIDTH

  def _check_fields(self) -> None:
    if self.attention not in gcsa_attention.ATTENTIONS:
      raise ValueError(
        f'GCSA attention={self.attention!r}; use one of '
        f'{gcsa_attention.ATTENTIONS}.'
      )
    gcsa_attention.check_fields(self._gate(ATTENTION_STAGES[0]), owner='GCSA')
    stages = tuple(self.attention_stages)
    if len(set(stages)) != len(stages) or not set(stages) <= set(
      ATTENTION_STAGES
    ):
      raise ValueError(
        f'GCSA attention_stages={stages}; pick distinct stages among '
        f'{ATTENTION_STAGES}, or () for none.'
      )
    depthwise.check_grad(self.depthwise_grad, owner='GCSA')
    if self.width < 8:  # The channel attention needs 16 channels.
      raise ValueError(f'GCSA width={self.width} must be >= 8 (IAL: 64).')
    if self.num_frames < 2:
      raise ValueError(
        f'GCSA num_frames={self.num_frames}; the dynamic branch needs at '
        'least 2 frames (IAL uses 16).'
      )
    for branch in ('static', 'temporal'):
      for field in TRANSFORMER_FIELDS:
        value = getattr(self, f'{branch}_{field}')
        if value < 1:
          raise ValueError(f'GCSA {branch}_{field}={value} must be positive.')

  def _gate(self, stage: int) -> gcsa_attention.Gate:
    """The gate of stage `stage`'s block; 'none' outside attention_stages."""
    return gcsa_attention.Gate(
      attention=self.attention if stage in self.attention_stages else 'none',
      fusion=self.fusion,
      se_reduction=self.se_reduction,
      se_scale=self.se_scale,
      se_zero_init=self.se_zero_init,
    )

  def _check_input(self, images: jax.Array) -> None:
    if images.ndim != 5 or images.shape[-1] != 3:
      raise ValueError(
        'GCSA expects clips of shape (B, T, H, W, 3), frames in [0, 1]; '
        f'got shape {images.shape}.'
      )
    if images.shape[1] != self.num_frames:
      raise ValueError(
        f'GCSA got clips of {images.shape[1]} frames but num_frames='
        f'{self.num_frames}; sample {self.num_frames} frames per clip or '
        f'set num_frames={images.shape[1]}.'
      )

  def _check_variables(self, height: int, width: int) -> None:
    """Raises a clear error if the variables fit another frame size."""
    if not self.has_variable('params', 'pos_embedding'):
      return  # Initialising.
    params = self.variables['params']
    wrong = []
    for path, want in size_dependent_shapes(
      self.num_frames, height, width, self.width
    ).items():
      have = tuple(functools.reduce(lambda t, k: t[k], path, params).shape)
      if have != want:
        wrong.append(f'{"/".join(path)} {have}, needs {want}')
    if wrong:
      raise ValueError(
        f'GCSA variables were made for another frame size than {height} x '
        f'{width}: {"; ".join(wrong)}. Feed frames of the size they were '
        'made for (IAL: 112 x 112).'
      )

  def _transformer(self, branch: str, name: str) -> ial_transformer.Transformer:
    fields = {f: getattr(self, f'{branch}_{f}') for f in TRANSFORMER_FIELDS}
    return ial_transformer.Transformer(
      **fields, dtype=self.dtype, remat=self.remat, name=name
    )

  def _static(self, frames: jax.Array, train: bool) -> jax.Array:
    """The static branch: patch embedding, positions, `pos_transformer`."""
    dtype = self.dtype
    x = torch_nn.conv(
      frames.shape[-1], 3, 'patch_embedding_0', strides=2, dtype=dtype
    )(frames)
    x = torch_nn.batch_norm('patch_embedding_1', train=train, dtype=dtype)(x)
    n, height, width, channels = x.shape
    tokens = nn.relu(x).reshape(n, height * width, channels)
    positions = self.param(
      'pos_embedding_pos', position_init, (1, *tokens.shape[1:])
    )
    tokens = self._transformer('static', 'pos_transformer')(
      tokens + positions.astype(dtype)
    )
    return tokens.reshape(x.shape)

  def _dynamic_static(self, x: jax.Array, train: bool) -> jax.Array:
    """(B * T, h, w, C) layer3 maps -> (B * (T - 1), h', w', C) fused."""
    clips = x.reshape(-1, self.num_frames, *x.shape[1:])
    dynamic = (clips[:, 1:] - clips[:, :-1]).reshape(-1, *x.shape[1:])
    # `resnet.stage`, written out to pass `train` positionally (remat).
    block = RematBasicBlock if self.remat else resnet.BasicBlock
    for i in range(STAGE_SIZES[3]):
      dynamic = block(
        features=widths(self.width)[3],
        strides=2 if i == 0 else 1,
        dtype=self.dtype,
        name=f'layer4_{i}',
      )(dynamic, train)
    static = self._static(
      clips[:, :-1].reshape(dynamic.shape[:1] + x.shape[1:]), train
    )
    return static + dynamic

  @nn.compact
  def __call__(
    self, images: jax.Array, train: bool = False
  ) -> dict[str, jax.Array]:
    """Classifies clips.

    Args:
      images: (B, T, H, W, 3) float frames in [0, 1], T = num_frames (IAL:
        16 frames of 112 x 112).
      train: use batch statistics (over the B * T frames) and update
        `batch_stats`.

    Returns:
      float32 arrays: 'logits' (B, num_classes); 'aux_logits' (2, B,
      num_classes), the auxiliary classifiers of layer2 and layer3 in that
      order; 'features' (B, D), the temporal mean of the transformer's
      tokens (D = 4096 at 112 px).

    Raises:
      ValueError: a bad field, input shape, or variables made for another
        input size.
    """
    self._check_fields()
    self._check_input(images)
    self._check_variables(*images.shape[2:4])
    dtype = self.dtype
    batch, frames = images.shape[:2]
    x = images.reshape(batch * frames, *images.shape[2:]).astype(jnp.float32)
    x = torch_nn.normalize(x, self.pixel_mean, self.pixel_std).astype(dtype)
    x = stem(x, train=train, dtype=dtype, width=self.width)
    x = resnet.stage(
      x,
      'layer1',
      features=widths(self.width)[0],
      num_blocks=STAGE_SIZES[0],
      strides=1,
      train=train,
      dtype=dtype,
    )
    aux_logits = []
    gca_block = RematGCABlock if self.remat else GCABlock
    for stage in ATTENTION_STAGES:
      x, aux = gca_block(
        widths(self.width)[stage - 1],
        strides=2,
        num_frames=frames,
        num_classes=self.num_classes,
        gate=self._gate(stage),
        dtype=dtype,
        depthwise_grad=self.depthwise_grad,
        name=f'layer{stage}_0',
      )(x, train)
      aux_logits.append(aux)

    tokens = channel_major_tokens(self._dynamic_static(x, train), frames - 1)
    positions = self.param(
      'pos_embedding', position_init, (1, frames, tokens.shape[-1])
    )
    tokens = self._transformer('temporal', 'temporal_transformer')(
      tokens + positions[:, : frames - 1].astype(dtype)
    )
    features = jnp.mean(tokens.astype(jnp.float32), axis=1)
    return {
      'logits': torch_nn.linear(features, self.num_classes, 'fc_f'),
      'aux_logits': jnp.stack(aux_logits),
      'features': features,
    }


def attention_maps(model, outputs, intermediates) -> dict:
  """'channels_layer2', 'channels_layer3': the channel gates of each clip
  over time, (B, T, C), min-max scaled per clip (stages with a gate)."""
  del outputs
  maps = {}
  for stage in (f'layer{i}' for i in model.attention_stages):
    gates = sown.sown(intermediates, f'{stage}_0', 'channel_weights')
    maps[f'channels_{stage}'] = sown.rescale(
      gates.reshape(-1, model.num_frames, gates.shape[-1])
    )
  return maps


SPECS = (
  registry.ModelSpec(
    name='gcsa',
    factory=GCSA,
    input_size=112,
    loss='cai',
    converter='ferjax.weights.gcsa:from_torch',
    attention=attention_maps,
    cam_layer='layer3_0',
    description='GCSA (2024) on IAL: GC + SE channel attention over clips',
  ),
)

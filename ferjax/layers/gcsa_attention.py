"""GCA and GCSA channel attention for the frames of a clip.

Both rescale the channels of a block's residual branch y (after its second
BatchNorm, before the residual sum). y holds the B * T frames of B clips of
T frames, frame-major within each clip, shape (B * T, H, W, C).

GCA, the global convolution attention of IAL (Li et al., AAAI 2023), as its
official code computes it:

    g     = gc_0(y)                          depthwise conv whose kernel is
                                             the whole H x W map -> 1 x 1
    aux   = AUX_fc_1(AUX_fc_0(mean_T(g)))    C -> 2C -> num_classes, no bias
    w_gc  = 2 * sigmoid(fc2_0(relu(fc1_0(g))))   1x1 convs C -> C/16 -> C,
                                                 no bias
    w     = sqrt(w * mean_T(w) + 1e-5)       temporal coupling
    out   = y * w

The auxiliary classifier reads the clip's mean global-conv response; its
logits are trained by an auxiliary cross-entropy (`ferjax.losses` 'cai').
The temporal coupling is IAL's "global temporal information": each frame's
gate becomes the geometric mean of itself and the clip's mean gate.

GCSA (squeeze and excitation-global convolution attention; Liang, Dong and
Li, 2024) is known from its abstract only: it "rescale[s] the channels of
feature maps" of a residual network with squeeze and excitation and global
convolution. Here it is GCA with a parallel squeeze-and-excitation branch
(Hu et al., CVPR 2018) on the same y:

    w_se  = se_scale * sigmoid(se_fc2(relu(se_fc1(mean_HW(y)))))
                                             C -> C/se_reduction -> C,
                                             no bias
    w     = fuse(w_gc, w_se), then the same temporal coupling and rescale.

The choices, each a field of `Gate` (and of the model):

* `se_scale` 2 and `se_zero_init`: the SE gate spans (0, 2), as the GC
  gate, and its last layer starts at zero, so that it starts at exactly 1.
  A plain SE gate (scale 1, Hu et al.) starts near 0.5 and would halve
  every residual branch it touches before training begins.
* `fusion='product'` (default): w = w_gc * w_se, the two gates applied one
  after the other, as CBAM chains its gates and as an SE block rescales
  whatever reaches it. With the SE gate at 1 the fused gate starts at
  exactly the GC gate, so a GCSA converted from an IAL checkpoint computes
  IAL's logits until training moves the SE branch. 'geometric' is
  sqrt(w_gc * w_se) (a channel is kept only if both keep it, on one gate's
  scale) and 'mean' (w_gc + w_se) / 2 (one branch alone keeps a channel at
  half its value); neither starts at the GC gate (sqrt(w_gc) and
  (w_gc + 1) / 2 with the SE gate at 1).

`attention` picks the gate: 'gca' (IAL), 'se' (the SE gate alone) or 'gcsa'
(both, fused); 'none' is a block without a gate. Whatever the gate, the
global conv and the auxiliary classifier stay: they are the CAI loss's
auxiliary term, whose weight (`config.loss.aux2_weight`, `aux3_weight`)
switches it off.

Submodules are created in the calling module under the names of IAL's
PyTorch block (`gc.0`, `fc1.0`, `fc2.0`, `AUX_fc.0`, `AUX_fc.1` are
`gc_0`, `fc1_0`, `fc2_0`, `AUX_fc_0`, `AUX_fc_1`), so that IAL's checkpoint
converts key by key; the SE layers are `se_fc1` and `se_fc2`. Convolutions
start Kaiming-normal (fan_out) as IAL initialises every conv, the Linear
layers with PyTorch's default (`se_fc2` at zero with `se_zero_init`). The
gates and the auxiliary logits are computed in float32 whatever the compute
dtype. `gc_0` is a depthwise conv computed as `depthwise_grad` says
(`ferjax.layers.depthwise`: 'auto' sums window products on CPU, where
XLA's gradient with respect to a depthwise kernel is a dense convolution,
and uses XLA's convolution elsewhere).
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from ferjax.layers import depthwise
from ferjax.layers import torch_nn

Dtype = Any

ATTENTIONS = ('gca', 'se', 'gcsa')
# A block without a gate keeps its global conv and auxiliary classifier.
BLOCK_ATTENTIONS = (*ATTENTIONS, 'none')
FUSIONS = ('product', 'geometric', 'mean')
SE_NAMES = ('se_fc1', 'se_fc2')
GC_NAMES = ('fc1_0', 'fc2_0')
# IAL's dimensionality-reduction ratio r and the constant under its sqrt.
REDUCTION = 16
COUPLING_EPS = 1e-5


@dataclasses.dataclass(frozen=True)
class Gate:
  """Which channel gate a block applies, and how (module docstring).

  Attributes:
    attention: 'gca', 'se', 'gcsa' or 'none'.
    fusion: how 'gcsa' combines its gates: 'product', 'geometric', 'mean'.
    se_reduction: the SE bottleneck is C // se_reduction (16, as GCA's).
    se_scale: the SE gate is se_scale * sigmoid(...) (2, as GCA's gate).
    se_zero_init: `se_fc2` starts at zero, the SE gate at se_scale / 2.
  """

  attention: str = 'gcsa'
  fusion: str = 'product'
  se_reduction: int = REDUCTION
  se_scale: float = 2.0
  se_zero_init: bool = True

  @property
  def uses_gc(self) -> bool:
    return self.attention in ('gca', 'gcsa')

  @property
  def uses_se(self) -> bool:
    return self.attention in ('se', 'gcsa')


def check_fields(gate: Gate, *, owner: str) -> None:
  """Raises a clear ValueError for a gate the attention cannot apply.

  Args:
    gate: the gate's settings.
    owner: the module named in the message.
  """
  if gate.attention not in BLOCK_ATTENTIONS:
    raise ValueError(
      f'{owner} attention={gate.attention!r}; use one of {ATTENTIONS}.'
    )
  if gate.fusion not in FUSIONS:
    raise ValueError(f'{owner} fusion={gate.fusion!r}; use one of {FUSIONS}.')
  if gate.se_reduction < 1:
    raise ValueError(
      f'{owner} se_reduction={gate.se_reduction} must be at least 1.'
    )
  if gate.se_scale <= 0:
    raise ValueError(f'{owner} se_scale={gate.se_scale} must be positive.')


def linear_no_bias(
  features: int,
  name: str,
  *,
  dtype: Dtype = jnp.float32,
  kernel_init: nn.initializers.Initializer = torch_nn.linear_kernel_init,
) -> nn.Dense:
  """nn.Linear(bias=False), by default with PyTorch's weight init."""
  return nn.Dense(
    features, use_bias=False, dtype=dtype, kernel_init=kernel_init, name=name
  )


def clip_mean(x: jax.Array, num_frames: int) -> jax.Array:
  """Mean over each clip's frames: (B * T, ...) -> (B, ...)."""
  return x.reshape(-1, num_frames, *x.shape[1:]).mean(axis=1)


def temporal_coupling(
  w: jax.Array, num_frames: int, eps: float = COUPLING_EPS
) -> jax.Array:
  """IAL's coupling of frame gates: sqrt(w * mean_T(w) + eps).

  Args:
    w: (B * T, ...) non-negative gates of B clips of T frames, frame-major.
    num_frames: T.
    eps: added under the square root (1e-5 in IAL).

  Returns:
    The coupled gates, shaped like `w`.
  """
  frames = w.reshape(-1, num_frames, *w.shape[1:])
  coupled = jnp.sqrt(frames * frames.mean(axis=1, keepdims=True) + eps)
  return coupled.reshape(w.shape)


def fuse(w_gc: jax.Array, w_se: jax.Array, fusion: str) -> jax.Array:
  """Combines the GC and SE gates: 'product', 'geometric' or 'mean'."""
  if fusion == 'product':
    return w_gc * w_se
  if fusion == 'geometric':
    return jnp.sqrt(w_gc * w_se)
  if fusion == 'mean':
    return 0.5 * (w_gc + w_se)
  raise ValueError(f'fusion={fusion!r}; use one of {FUSIONS}.')


def _hidden(channels: int, reduction: int, what: str) -> int:
  hidden = channels // reduction
  if hidden < 1:
    raise ValueError(
      f'{what} got {channels} channels; its reduction {reduction} needs at '
      f'least {reduction}.'
    )
  return hidden


def global_conv(
  y: jax.Array, *, dtype: Dtype, depthwise_grad: str = 'auto'
) -> jax.Array:
  """`gc_0`: depthwise conv over the whole map, (N, H, W, C) -> (N, C)."""
  channels = y.shape[-1]
  g = depthwise.depthwise_conv(
    channels,
    y.shape[1:3],
    grad=depthwise_grad,
    padding='VALID',
    use_bias=False,
    dtype=dtype,
    kernel_init=torch_nn.conv_kernel_init,
    name='gc_0',
  )(y)
  return g.reshape(g.shape[0], channels)


def gc_gate(g: jax.Array, *, dtype: Dtype) -> jax.Array:
  """2 * sigmoid(fc2_0(relu(fc1_0(g)))) for (N, C) `g`, in float32."""
  channels = g.shape[-1]
  h = g[:, None, None, :]  # The 1x1 convs of IAL act on a 1 x 1 map.
  hidden = _hidden(channels, REDUCTION, 'GCA')
  h = torch_nn.conv(hidden, 1, GC_NAMES[0], dtype=dtype)(h)
  h = torch_nn.conv(channels, 1, GC_NAMES[1], dtype=dtype)(nn.relu(h))
  return 2.0 * nn.sigmoid(h.reshape(g.shape).astype(jnp.float32))


def se_gate(y: jax.Array, gate: Gate, *, dtype: Dtype) -> jax.Array:
  """se_scale * sigmoid(se_fc2(relu(se_fc1(mean_HW(y))))), (N, C), float32."""
  channels = y.shape[-1]
  hidden = _hidden(channels, gate.se_reduction, 'The SE branch')
  last_init = (
    nn.initializers.zeros if gate.se_zero_init else torch_nn.linear_kernel_init
  )
  s = jnp.mean(y.astype(jnp.float32), axis=(1, 2)).astype(dtype)
  s = linear_no_bias(hidden, SE_NAMES[0], dtype=dtype)(s)
  s = linear_no_bias(channels, SE_NAMES[1], dtype=dtype, kernel_init=last_init)(
    nn.relu(s)
  )
  return gate.se_scale * nn.sigmoid(s.astype(jnp.float32))


def aux_classifier(g: jax.Array, num_classes: int) -> jax.Array:
  """AUX_fc_1(AUX_fc_0(g)) in float32: (B, C) -> (B, num_classes)."""
  g = g.astype(jnp.float32)
  h = linear_no_bias(2 * g.shape[-1], 'AUX_fc_0')(g)
  return linear_no_bias(num_classes, 'AUX_fc_1')(h)


def channel_attention(
  y: jax.Array,
  *,
  num_frames: int,
  num_classes: int,
  gate: Gate = Gate(),
  dtype: Dtype = jnp.float32,
  caller: nn.Module | None = None,
  depthwise_grad: str = 'auto',
) -> tuple[jax.Array, jax.Array]:
  """Applies GCA, the SE gate or GCSA to a block's residual branch.

  Call it inside an `nn.compact` method: the layers are created in the
  calling module, under IAL's names.

  Args:
    y: (B * T, H, W, C) frames of B clips, frame-major, C >= 16.
    num_frames: T.
    num_classes: outputs of the auxiliary classifier.
    gate: which gate, and how (`Gate`); 'none' leaves y as it is.
    dtype: compute dtype of the convolutions and the SE layers.
    caller: the calling module; when given, the (B * T, C) float32 gates
      that rescale y (after the temporal coupling) are sown into it as
      `intermediates/channel_weights`.
    depthwise_grad: implementation of `gc_0`, 'auto', 'native' or 'custom'
      (`ferjax.layers.depthwise`).

  Returns:
    y with rescaled channels (y's dtype), and the auxiliary logits
    (B, num_classes) in float32.
  """
  check_fields(gate, owner='channel_attention')
  g = global_conv(y, dtype=dtype, depthwise_grad=depthwise_grad)
  aux = aux_classifier(clip_mean(g, num_frames), num_classes)
  if gate.attention == 'none':
    return y, aux
  w = gc_gate(g, dtype=dtype) if gate.uses_gc else None
  if gate.uses_se:
    w_se = se_gate(y, gate, dtype=dtype)
    w = w_se if w is None else fuse(w, w_se, gate.fusion)
  w = temporal_coupling(w, num_frames)
  if caller is not None:
    caller.sow('intermediates', 'channel_weights', w)
  return y * w[:, None, None, :].astype(y.dtype), aux

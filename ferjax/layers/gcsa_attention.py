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

    w_se  = sigmoid(se_fc2(relu(se_fc1(mean_HW(y)))))   C -> C/16 -> C,
                                                         no bias
    w     = fuse(w_gc, w_se), then the same temporal coupling and rescale.

`fusion='geometric'` (default) is sqrt(w_gc * w_se): the two gates combine
multiplicatively, as each of them acts (a channel is kept only if both
branches keep it; averaging their logarithms), the square root keeps the
fused gate on the scale of one gate, and it is the rule IAL itself uses to
merge a frame's gate with the clip's. `fusion='mean'` is (w_gc + w_se) / 2,
where one branch alone keeps a channel at half its value at least. The SE
layers have no bias, like GCA's 1x1 convs; their reduction is GCA's 16.

Submodules are created in the calling module under the names of IAL's
PyTorch block (`gc.0`, `fc1.0`, `fc2.0`, `AUX_fc.0`, `AUX_fc.1` are
`gc_0`, `fc1_0`, `fc2_0`, `AUX_fc_0`, `AUX_fc_1`), so that IAL's checkpoint
converts key by key; the SE layers are `se_fc1` and `se_fc2`. Convolutions
start Kaiming-normal (fan_out) as IAL initialises every conv, the Linear
layers with PyTorch's default. The gates and the auxiliary logits are
computed in float32 whatever the compute dtype. `gc_0` is a depthwise conv
computed as `depthwise_grad` says (`ferjax.layers.depthwise`: 'auto' sums
window products on CPU, where XLA's gradient with respect to a depthwise
kernel is a dense convolution, and uses XLA's convolution elsewhere).
"""

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from ferjax.layers import depthwise
from ferjax.layers import torch_nn

Dtype = Any

ATTENTIONS = ('gca', 'gcsa')
FUSIONS = ('geometric', 'mean')
SE_NAMES = ('se_fc1', 'se_fc2')
# IAL's dimensionality-reduction ratio r and the constant under its sqrt.
REDUCTION = 16
COUPLING_EPS = 1e-5


def check_fields(attention: str, fusion: str, *, owner: str) -> None:
  """Raises a clear ValueError for an unknown attention or fusion.

  Args:
    attention: 'gca' or 'gcsa'.
    fusion: 'geometric' or 'mean'.
    owner: the module named in the message.
  """
  if attention not in ATTENTIONS:
    raise ValueError(
      f'{owner} attention={attention!r}; use one of {ATTENTIONS}.'
    )
  if fusion not in FUSIONS:
    raise ValueError(f'{owner} fusion={fusion!r}; use one of {FUSIONS}.')


def linear_no_bias(
  features: int, name: str, *, dtype: Dtype = jnp.float32
) -> nn.Dense:
  """nn.Linear(bias=False) with PyTorch's default weight init."""
  return nn.Dense(
    features,
    use_bias=False,
    dtype=dtype,
    kernel_init=torch_nn.linear_kernel_init,
    name=name,
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
  """Combines the global-conv and SE gates: 'geometric' or 'mean'."""
  if fusion == 'geometric':
    return jnp.sqrt(w_gc * w_se)
  if fusion == 'mean':
    return 0.5 * (w_gc + w_se)
  raise ValueError(f'fusion={fusion!r}; use one of {FUSIONS}.')


def _hidden(channels: int) -> int:
  hidden = channels // REDUCTION
  if hidden < 1:
    raise ValueError(
      f'GCA got {channels} channels; its reduction {REDUCTION} needs at '
      f'least {REDUCTION}.'
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
  h = torch_nn.conv(_hidden(channels), 1, 'fc1_0', dtype=dtype)(h)
  h = torch_nn.conv(channels, 1, 'fc2_0', dtype=dtype)(nn.relu(h))
  return 2.0 * nn.sigmoid(h.reshape(g.shape).astype(jnp.float32))


def se_gate(y: jax.Array, *, dtype: Dtype) -> jax.Array:
  """sigmoid(se_fc2(relu(se_fc1(mean_HW(y))))), (N, C), in float32."""
  channels = y.shape[-1]
  s = jnp.mean(y.astype(jnp.float32), axis=(1, 2)).astype(dtype)
  s = linear_no_bias(_hidden(channels), SE_NAMES[0], dtype=dtype)(s)
  s = linear_no_bias(channels, SE_NAMES[1], dtype=dtype)(nn.relu(s))
  return nn.sigmoid(s.astype(jnp.float32))


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
  attention: str = 'gcsa',
  fusion: str = 'geometric',
  dtype: Dtype = jnp.float32,
  caller: nn.Module | None = None,
  depthwise_grad: str = 'auto',
) -> tuple[jax.Array, jax.Array]:
  """Applies GCA or GCSA to a block's residual branch.

  Call it inside an `nn.compact` method: the layers are created in the
  calling module, under IAL's names.

  Args:
    y: (B * T, H, W, C) frames of B clips, frame-major, C >= 16.
    num_frames: T.
    num_classes: outputs of the auxiliary classifier.
    attention: 'gca' (IAL) or 'gcsa' (GCA + SE).
    fusion: how 'gcsa' combines its gates, 'geometric' or 'mean'.
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
  check_fields(attention, fusion, owner='channel_attention')
  g = global_conv(y, dtype=dtype, depthwise_grad=depthwise_grad)
  aux = aux_classifier(clip_mean(g, num_frames), num_classes)
  w = gc_gate(g, dtype=dtype)
  if attention == 'gcsa':
    w = fuse(w, se_gate(y, dtype=dtype), fusion)
  w = temporal_coupling(w, num_frames)
  if caller is not None:
    caller.sow('intermediates', 'channel_weights', w)
  return y * w[:, None, None, :].astype(y.dtype), aux

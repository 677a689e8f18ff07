"""Depthwise convolution with an efficient kernel gradient on CPU.

A depthwise convolution (`feature_group_count` equal to the channel count,
one filter per channel) is cheap: a 7x7 one over a (B, H, W, C) map costs
2 * 49 * B * H * W * C FLOPs. JAX differentiates it with respect to the
kernel through a convolution with `batch_group_count = C`, and XLA:CPU
lowers that as a dense convolution with a (C, kh, kw, C) output: for
ConvNeXt-B's 7x7 depthwise conv over a 14x14x512 map at batch 8 the kernel
gradient costs about 31 GFLOPs where the forward costs 0.06. XLA:CPU's
grouped convolution is also slow per FLOP. GPUs (cuDNN) and TPUs handle
depthwise gradients natively.

`conv_general_dilated` is a drop-in replacement for
`jax.lax.conv_general_dilated` (the signature `nn.Conv` calls through its
`conv_general_dilated` field) that computes 2-D NHWC depthwise convolutions
with one of two implementations, chosen by `grad`:

* 'native': `jax.lax.conv_general_dilated` and its JAX gradients;
* 'custom': element-wise formulations that XLA:CPU compiles into fused
  loops; its `jax.custom_vjp` computes
  - the output as a sum over the kh * kw kernel taps of strided slices of
    the padded input times that tap's per-channel weights (a loop over the
    kernel rows, the taps of a row in one fused sum),
  - the input gradient in the same way, from the output gradient dilated
    by the strides and the flipped kernel,
  - the kernel gradient tap by tap in a loop, dW[i, j, c] = sum over b, h, w
    of xpad[b, h * s + i * d, w * s + j * d, c] * dy[b, h, w, c], so that
    no more than one (B, Ho, Wo, C) slice is alive at a time;
  over a small map (at most 4 input positions per kernel tap, e.g. a 7x7
  kernel over 14x14, at a batch that amortises building the matrix) the
  convolution is instead one matrix product per channel
  (`ferjax.layers.toeplitz`), many times faster there; otherwise, when the
  output has fewer positions than the kernel has taps (a large stride), it
  is a sum over output positions of window products, differentiated by
  JAX, which is cheap there. Kernels wider than `MAX_UNROLLED_TERMS` keep
  XLA's forward and input gradient and only take the custom kernel gradient.
  Sums run in float32 (or wider) whatever the input dtype;
* 'auto' (default): 'custom' on CPU and 'native' on every other platform,
  chosen at lowering time with `jax.lax.platform_dependent`.

Any other convolution (dense or grouped with more than one channel per
group, input dilation, other layouts or ranks) goes to
`jax.lax.conv_general_dilated`. Either way the kernel taps that only read
padding are cut off first (`ferjax.layers.live_taps`: a 7x7 kernel over a
1x1 map keeps its centre tap), so every convolution built with `conv_fn`
skips them.

`depthwise_conv(features, kernel_size, grad=..., **fields)` returns an
`nn.Conv` with `feature_group_count=features` that uses it: its variables
are exactly those of the plain `nn.Conv` (`kernel` (kh, kw, 1, C), `bias`
(C,)) with the same initialisers, so checkpoints and weight converters do
not depend on the implementation.
"""

import functools
from collections.abc import Sequence
from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from jax import lax

from ferjax.layers import live_taps
from ferjax.layers import toeplitz

GRADS = ('auto', 'native', 'custom')
# NHWC input and output, HWIO kernel: the layout of `nn.Conv`.
_NHWC = toeplitz.NHWC
# The most kernel taps (of a kernel row) or output positions summed in one
# unrolled fusion.
MAX_UNROLLED_TERMS = 64


def check_grad(value: str, *, owner: str, field: str = 'depthwise_grad'):
  """Raises a clear ValueError unless `value` is one of `GRADS`."""
  if value not in GRADS:
    raise ValueError(
      f"{owner} {field}={value!r}; use one of {GRADS} ('auto': the custom "
      'gradient on CPU, the native one on GPU and TPU).'
    )


class Geometry(NamedTuple):
  """Static shape parameters of a 2-D depthwise convolution."""

  strides: tuple[int, int]
  padding: tuple[tuple[int, int], tuple[int, int]]
  dilation: tuple[int, int]


def _pair(value: int | Sequence[int] | None) -> tuple[int, int]:
  if value is None:
    return (1, 1)
  if isinstance(value, int):
    return (value, value)
  return tuple(int(v) for v in value)  # type: ignore[return-value]


def _geometry(
  x_shape: Sequence[int],
  kernel_shape: Sequence[int],
  strides: int | Sequence[int],
  padding: str | int | Sequence[Any],
  dilation: int | Sequence[int] | None,
) -> Geometry:
  """Explicit (low, high) pads for NHWC `x` and an HWIO kernel."""
  strides, dilation = _pair(strides), _pair(dilation)
  pads = toeplitz.explicit_pads(
    padding, x_shape[1:3], kernel_shape[:2], strides, dilation
  )
  return Geometry(strides, pads, dilation)  # type: ignore[arg-type]


def _out_hw(x_shape, kernel_shape, geom: Geometry) -> tuple[int, int]:
  return tuple(  # type: ignore[return-value]
    toeplitz.out_size(
      x_shape[1 + a],
      geom.padding[a],
      kernel_shape[a],
      geom.strides[a],
      geom.dilation[a],
    )
    for a in range(2)
  )


def _acc_dtype(dtype) -> Any:
  return jnp.promote_types(dtype, jnp.float32)


def _pad(x: jax.Array, pads, interior=(0, 0)) -> jax.Array:
  zero = jnp.zeros((), x.dtype)
  return lax.pad(
    x,
    zero,
    [
      (0, 0, 0),
      (pads[0][0], pads[0][1], interior[0]),
      (pads[1][0], pads[1][1], interior[1]),
      (0, 0, 0),
    ],
  )


def native_depthwise(
  x: jax.Array,
  kernel: jax.Array,
  geom: Geometry,
  precision: Any = None,
  preferred_element_type: Any = None,
) -> jax.Array:
  """XLA's depthwise convolution (and JAX's gradients of it)."""
  return lax.conv_general_dilated(
    x,
    kernel,
    geom.strides,
    geom.padding,
    rhs_dilation=geom.dilation,
    dimension_numbers=_NHWC,
    feature_group_count=x.shape[-1],
    precision=precision,
    preferred_element_type=preferred_element_type,
  )


def _tap_sum(
  xp: jax.Array,
  kernel: jax.Array,
  strides: tuple[int, int],
  dilation: tuple[int, int],
  out_hw: tuple[int, int],
) -> jax.Array:
  """sum_ij xp[:, h * s + i * d, w * s + j * d] * kernel[i, j], in float32.

  `xp` is the padded input; the result is (B, out_h, out_w, C) in the
  accumulation dtype. A loop over the kernel rows, each iteration one fused
  sum over the row's taps: the loop makes XLA materialise the result once
  rather than recompute the taps inside every consumer.
  """
  acc_dtype = _acc_dtype(jnp.result_type(xp, kernel))
  kh, kw = kernel.shape[:2]
  (sh, sw), (dh, dw), (ho, wo) = strides, dilation, out_hw
  batch, channels = xp.shape[0], xp.shape[-1]
  k = kernel.reshape(kh, kw, channels).astype(acc_dtype)
  band = (batch, sh * (ho - 1) + 1, xp.shape[2], channels)

  def row(i, out):
    rows = lax.dynamic_slice(xp, (0, i * dh, 0, 0), band)
    if sh > 1:
      rows = rows[:, ::sh]
    k_row = lax.dynamic_index_in_dim(k, i, 0, keepdims=False)
    for j in range(kw):
      window = lax.slice(
        rows,
        (0, 0, j * dw, 0),
        (batch, ho, j * dw + sw * (wo - 1) + 1, channels),
        (1, 1, sw, 1),
      )
      out = out + window.astype(acc_dtype) * k_row[j]
    return out

  return lax.fori_loop(
    0, kh, row, jnp.zeros((batch, ho, wo, channels), acc_dtype)
  )


def _input_grad_by_taps(
  dy: jax.Array, kernel: jax.Array, geom: Geometry, x_shape
) -> jax.Array:
  """dL/dx of the depthwise conv: a tap sum over the dilated `dy`."""
  kh, kw = kernel.shape[:2]
  pads = []
  for a, k in enumerate((kh, kw)):
    low = (k - 1) * geom.dilation[a] - geom.padding[a][0]
    length = geom.strides[a] * (dy.shape[1 + a] - 1) + 1
    high = x_shape[1 + a] + geom.padding[a][0] - length
    pads.append((low, high))
  z = _pad(dy, pads, interior=(geom.strides[0] - 1, geom.strides[1] - 1))
  flipped = kernel[::-1, ::-1]
  return _tap_sum(z, flipped, (1, 1), geom.dilation, tuple(x_shape[1:3]))


def _kernel_grad_by_taps(
  x: jax.Array, dy: jax.Array, geom: Geometry, kernel_shape
) -> jax.Array:
  """dL/dkernel, one kernel tap per loop iteration, in float32."""
  kh, kw, _, channels = kernel_shape
  (sh, sw), (dh, dw) = geom.strides, geom.dilation
  batch, ho, wo, _ = dy.shape
  acc_dtype = _acc_dtype(jnp.result_type(x, dy))
  xp = _pad(x, geom.padding)
  dy = dy.astype(acc_dtype)
  span = (batch, sh * (ho - 1) + 1, sw * (wo - 1) + 1, channels)

  def tap(t, grads):
    i, j = t // kw, t % kw
    window = lax.dynamic_slice(xp, (0, i * dh, j * dw, 0), span)
    if sh > 1 or sw > 1:
      window = window[:, ::sh, ::sw]
    value = jnp.sum(window.astype(acc_dtype) * dy, axis=(0, 1, 2))
    return lax.dynamic_update_index_in_dim(grads, value, t, 0)

  grads = lax.fori_loop(
    0, kh * kw, tap, jnp.zeros((kh * kw, channels), acc_dtype)
  )
  return grads.reshape(kernel_shape)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _by_taps(x: jax.Array, kernel: jax.Array, geom: Geometry) -> jax.Array:
  return _by_taps_fwd(x, kernel, geom)[0]


def _by_taps_fwd(x, kernel, geom):
  if kernel.shape[1] <= MAX_UNROLLED_TERMS:
    y = _tap_sum(
      _pad(x, geom.padding),
      kernel,
      geom.strides,
      geom.dilation,
      _out_hw(x.shape, kernel.shape, geom),
    )
    y = y.astype(jnp.result_type(x, kernel))
  else:
    y = native_depthwise(x, kernel, geom)
  return y, (x, kernel)


def _by_taps_bwd(geom, residuals, dy):
  x, kernel = residuals
  if kernel.shape[1] <= MAX_UNROLLED_TERMS:
    dx = _input_grad_by_taps(dy, kernel, geom, x.shape)
  else:
    _, vjp = jax.vjp(lambda x: native_depthwise(x, kernel, geom), x)
    (dx,) = vjp(dy)
  dk = _kernel_grad_by_taps(x, dy, geom, kernel.shape)
  return dx.astype(x.dtype), dk.astype(kernel.dtype)


_by_taps.defvjp(_by_taps_fwd, _by_taps_bwd)


def _by_positions(
  x: jax.Array, kernel: jax.Array, geom: Geometry, out_hw: tuple[int, int]
) -> jax.Array:
  """Output position by position: a window product summed per channel.

  For outputs with few positions (a kernel covering most of the map); JAX's
  gradients of it are element-wise products and small reductions.
  """
  kh, kw, _, channels = kernel.shape
  (sh, sw), (dh, dw) = geom.strides, geom.dilation
  acc_dtype = _acc_dtype(jnp.result_type(x, kernel))
  xp = _pad(x, geom.padding)
  k = kernel.reshape(kh, kw, channels).astype(acc_dtype)
  rows = []
  for h in range(out_hw[0]):
    row = []
    for w in range(out_hw[1]):
      window = lax.slice(
        xp,
        (0, h * sh, w * sw, 0),
        (xp.shape[0], h * sh + dh * (kh - 1) + 1, w * sw + dw * (kw - 1) + 1,
         channels),
        (1, dh, dw, 1),
      )  # fmt: skip
      row.append(jnp.sum(window.astype(acc_dtype) * k, axis=(1, 2)))
    rows.append(jnp.stack(row, axis=1))
  return jnp.stack(rows, axis=1).astype(jnp.result_type(x, kernel))


def custom_depthwise(
  x: jax.Array, kernel: jax.Array, geom: Geometry
) -> jax.Array:
  """The element-wise implementation ('custom'); see the module docstring."""
  if toeplitz.worthwhile(x.shape, kernel.shape, *geom, how='depthwise'):
    return toeplitz.conv(x, kernel, *geom, how='depthwise')
  out_hw = _out_hw(x.shape, kernel.shape, geom)
  positions, taps = int(np.prod(out_hw)), int(np.prod(kernel.shape[:2]))
  if positions < taps and positions <= MAX_UNROLLED_TERMS:
    return _by_positions(x, kernel, geom, out_hw)
  return _by_taps(x, kernel, geom)


def depthwise_conv2d(
  x: jax.Array,
  kernel: jax.Array,
  *,
  strides: int | Sequence[int] = 1,
  padding: str | int | Sequence[Any] = 'VALID',
  dilation: int | Sequence[int] = 1,
  grad: str = 'auto',
  precision: Any = None,
) -> jax.Array:
  """2-D depthwise convolution of NHWC `x` with an HWIO (kh, kw, 1, C) kernel.

  Args:
    x: (B, H, W, C) input.
    kernel: (kh, kw, 1, C) per-channel filters.
    strides: window strides, an int or (sh, sw).
    padding: 'SAME', 'VALID', an int, or ((lo, hi), (lo, hi)) (ints for
      symmetric pads are accepted too).
    dilation: kernel dilation, an int or (dh, dw).
    grad: 'auto', 'native' or 'custom' (module docstring).
    precision: passed to XLA's convolution ('native').

  Returns:
    (B, Ho, Wo, C) output in the promoted dtype of `x` and `kernel`.
  """
  check_grad(grad, owner='depthwise_conv2d', field='grad')
  if x.ndim != 4 or kernel.ndim != 4 or kernel.shape[2] != 1:
    raise ValueError(
      f'depthwise_conv2d takes (B, H, W, C) inputs and (kh, kw, 1, C) '
      f'kernels; got {x.shape} and {kernel.shape}.'
    )
  if kernel.shape[3] != x.shape[3]:
    raise ValueError(
      f'depthwise_conv2d: the kernel has {kernel.shape[3]} filters but the '
      f'input {x.shape[3]} channels; a depthwise kernel has one per channel.'
    )
  dtype = jnp.result_type(x, kernel)
  x, kernel = x.astype(dtype), kernel.astype(dtype)
  geom = _geometry(x.shape, kernel.shape, strides, padding, dilation)
  native = functools.partial(native_depthwise, geom=geom, precision=precision)
  custom = functools.partial(custom_depthwise, geom=geom)
  if grad == 'native':
    return native(x, kernel)
  if grad == 'custom':
    return custom(x, kernel)
  return lax.platform_dependent(x, kernel, cpu=custom, default=native)


def _is_depthwise_2d(lhs, rhs, lhs_dilation, dimension_numbers, groups):
  if lhs.ndim != 4 or rhs.ndim != 4:
    return False
  numbers = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
  channels = lhs.shape[-1]
  return (
    numbers == _NHWC
    and groups == channels > 1
    and rhs.shape[2] == 1
    and rhs.shape[3] == channels
    and _pair(lhs_dilation) == (1, 1)
  )


def conv_general_dilated(
  lhs: jax.Array,
  rhs: jax.Array,
  window_strides: Sequence[int],
  padding: str | Sequence[tuple[int, int]],
  lhs_dilation: Sequence[int] | None = None,
  rhs_dilation: Sequence[int] | None = None,
  dimension_numbers: Any = None,
  feature_group_count: int = 1,
  batch_group_count: int = 1,
  precision: Any = None,
  preferred_element_type: Any = None,
  *,
  grad: str = 'auto',
) -> jax.Array:
  """`jax.lax.conv_general_dilated` with `depthwise_conv2d` for depthwise.

  Kernel taps that only ever read padding are cut off first
  (`ferjax.layers.live_taps`). Then 2-D NHWC/HWIO convolutions with one
  input and one output channel per group, no input dilation and the default
  output dtype go to `depthwise_conv2d(..., grad=grad)`; everything else to
  `jax.lax.conv_general_dilated`.
  """
  if (
    batch_group_count == 1
    and preferred_element_type is None
    and _is_depthwise_2d(
      lhs, rhs, lhs_dilation, dimension_numbers, feature_group_count
    )
  ):
    rhs, padding = live_taps.trim(
      lhs,
      rhs,
      window_strides,
      padding,
      rhs_dilation=rhs_dilation,
      dimension_numbers=dimension_numbers,
    )
    return depthwise_conv2d(
      lhs,
      rhs,
      strides=window_strides,
      padding=padding,
      dilation=rhs_dilation or 1,
      grad=grad,
      precision=precision,
    )
  return live_taps.conv_general_dilated(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=lhs_dilation,
    rhs_dilation=rhs_dilation,
    dimension_numbers=dimension_numbers,
    feature_group_count=feature_group_count,
    batch_group_count=batch_group_count,
    precision=precision,
    preferred_element_type=preferred_element_type,
  )


@functools.cache
def conv_fn(grad: str = 'auto'):
  """`conv_general_dilated` bound to `grad`, one object per value.

  Pass it as `nn.Conv(..., conv_general_dilated=conv_fn(grad))`.
  """
  check_grad(grad, owner='conv_fn', field='grad')
  return functools.partial(conv_general_dilated, grad=grad)


def depthwise_conv(
  features: int,
  kernel_size: int | Sequence[int],
  *,
  grad: str = 'auto',
  **fields: Any,
) -> nn.Conv:
  """An `nn.Conv` with `feature_group_count=features` using `conv_fn(grad)`.

  Its input must have `features` channels (one filter per channel). The
  variables, their names, shapes and initialisers are those of the plain
  `nn.Conv(features, kernel_size, feature_group_count=features, **fields)`.

  Args:
    features: channels of the input and the output.
    kernel_size: an int (square) or (kh, kw).
    grad: 'auto', 'native' or 'custom' (module docstring).
    **fields: further `nn.Conv` fields (strides, padding, kernel_dilation,
      use_bias, dtype, kernel_init, name, ...).

  Returns:
    The unbound module.
  """
  if isinstance(kernel_size, int):
    kernel_size = (kernel_size, kernel_size)
  return nn.Conv(
    features,
    tuple(kernel_size),
    feature_group_count=features,
    conv_general_dilated=conv_fn(grad),
    **fields,
  )

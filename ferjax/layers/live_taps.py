"""Cut off the kernel taps of a convolution that only ever read padding.

A padded kernel wider than its input map has taps that fall in the padding
at every output position: a 7x7 conv with padding 3 over a 2x2 map reads
pixels through its central 3x3 taps only, over a 1x1 map through its centre
alone. The other taps add exact zeros, and XLA computes them all the same,
in the forward pass and in both gradients. That is the case of ConvNeXt's
7x7 depthwise convs and of MFER's dense 7x7 DS-attention conv in the last
stages of a small input (at 32 px, stage 3 is 2x2 and stage 4 is 1x1, where
the DS conv costs 49 times what its one live tap needs). At 224 px no tap of
these models is dead and nothing changes.

`trim` slices the dead taps off the kernel and lowers the padding by as
many positions, which keeps the output shape and each output's terms: only
products with padding are skipped, so values agree up to the order of
floating-point sums. The kernel gradient of a cut tap is zero either way
(slicing's transpose pads it back), and the variables keep their shapes.
"""

import functools
from collections.abc import Sequence
from typing import Any

import jax
from jax import lax

from ferjax.layers import toeplitz


def live_range(
  size: int, pads: tuple[int, int], kernel: int, stride: int, dilation: int
) -> tuple[int, int]:
  """First and last tap along one axis that read an input element.

  Tap k reads input index o * stride + k * dilation - pads[0] at output o;
  it is kept when that index range meets [0, size). With strides the range
  has gaps, so a kept tap may still be dead: the range never drops a live one.

  Returns:
    (first, last), inclusive; first > last when no tap reads the input.
  """
  lo = pads[0]
  outputs = toeplitz.out_size(size, pads, kernel, stride, dilation)
  last_start = (outputs - 1) * stride - lo  # Tap 0's index at the last output.
  first = max(0, -(last_start // dilation))  # ceil(-last_start / dilation)
  last = min(kernel - 1, (size - 1 + lo) // dilation)
  return first, last


def trim(
  lhs: jax.Array,
  rhs: jax.Array,
  window_strides: Sequence[int],
  padding: str | Sequence[tuple[int, int]],
  **conv_kwargs: Any,
) -> tuple[jax.Array, str | Sequence[tuple[int, int]]]:
  """(kernel, padding) for `jax.lax.conv_general_dilated` without dead taps.

  Takes the arguments of `jax.lax.conv_general_dilated`, the keyword ones
  by name (of those, `lhs_dilation`, `rhs_dilation` and `dimension_numbers`
  bear on the geometry). Returns `rhs` and `padding` unchanged when every
  tap is live, when the input is dilated (a transposed convolution), or
  when cutting would need negative padding.
  """
  lhs_dilation = conv_kwargs.get('lhs_dilation')
  rhs_dilation = conv_kwargs.get('rhs_dilation')
  dimension_numbers = conv_kwargs.get('dimension_numbers')
  spatial_rank = lhs.ndim - 2
  if lhs_dilation is not None and any(d != 1 for d in lhs_dilation):
    return rhs, padding
  numbers = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
  sizes = [lhs.shape[a] for a in numbers.lhs_spec[2:]]
  kernel_axes = numbers.rhs_spec[2:]
  kernels = [rhs.shape[a] for a in kernel_axes]
  dilation = tuple(rhs_dilation or (1,) * spatial_rank)
  strides = tuple(window_strides)
  pads = toeplitz.explicit_pads(padding, sizes, kernels, strides, dilation)
  axes = zip(kernel_axes, sizes, pads, kernels, strides, dilation, strict=True)
  new_pads, cut = [], False
  for axis, size, (lo, hi), k, s, d in axes:
    first, last = live_range(size, (lo, hi), k, s, d)
    new = (lo - first * d, hi - (k - 1 - last) * d)
    if first <= last and min(new) >= 0 and (first, last) != (0, k - 1):
      rhs, cut = lax.slice_in_dim(rhs, first, last + 1, axis=axis), True
      lo, hi = new
    new_pads.append((lo, hi))
  return (rhs, new_pads) if cut else (rhs, padding)


def conv_general_dilated(
  lhs: jax.Array,
  rhs: jax.Array,
  window_strides: Sequence[int],
  padding: str | Sequence[tuple[int, int]],
  **kwargs: Any,
) -> jax.Array:
  """`jax.lax.conv_general_dilated` without the dead taps (`trim`).

  On CPU, a dense 2-D NHWC convolution over a map small enough is then one
  matrix product (`ferjax.layers.toeplitz`), which XLA:CPU runs many times
  faster; other platforms and convolutions keep XLA's.
  Takes the keyword arguments of `jax.lax.conv_general_dilated`, as
  `nn.Conv` passes them: `nn.Conv(..., conv_general_dilated=this)`.
  """
  rhs, padding = trim(lhs, rhs, window_strides, padding, **kwargs)
  xla = functools.partial(
    lax.conv_general_dilated,
    window_strides=window_strides,
    padding=padding,
    **kwargs,
  )
  how = toeplitz.kind(
    lhs.shape,
    rhs.shape,
    kwargs.get('dimension_numbers'),
    kwargs.get('lhs_dilation'),
    kwargs.get('feature_group_count', 1),
    kwargs.get('batch_group_count', 1),
  )
  if how != 'dense':
    return xla(lhs, rhs)
  spatial = lhs.shape[1:3]
  dilation = tuple(kwargs.get('rhs_dilation') or (1, 1))
  pads = toeplitz.explicit_pads(
    padding, spatial, rhs.shape[:2], window_strides, dilation
  )
  if not toeplitz.worthwhile(
    lhs.shape, rhs.shape, window_strides, pads, dilation, how
  ):
    return xla(lhs, rhs)
  by_matrix = functools.partial(
    toeplitz.conv,
    strides=tuple(window_strides),
    pads=pads,
    dilation=dilation,
    precision=kwargs.get('precision'),
    preferred_element_type=kwargs.get('preferred_element_type'),
  )
  return lax.platform_dependent(lhs, rhs, cpu=by_matrix, default=xla)

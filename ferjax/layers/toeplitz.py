"""A convolution over a small map as one matrix product (used on CPU).

XLA:CPU convolves maps a few pixels wide far below its matrix-product
speed: at batch 64, a 3x3 conv over a 2x2x256 map, the input and kernel
gradients included, takes about 130 ms, and 7x7 depthwise convs over 8x8
or 4x4 maps run 10 to 30 times slower than their matrix form. Such maps are
the last stages of every model at the 32-64 px inputs that a CPU trains on
(ConvNeXt at 32 px: 8x8, 4x4, 2x2, 1x1), where the dense and depthwise 7x7
convs of MFER's ConvNeXt and DS attention are most of the step.

A convolution is linear in its input: over an H x W x Ci map it is one
(H*W*Ci) x (Ho*Wo*Co) matrix whose entries are kernel weights or zeros (a
doubly block-Toeplitz matrix). `matrix` gathers it from the kernel with
static indices, so each entry is exactly one weight or an exact zero, and
`conv` applies it with one einsum (for a depthwise kernel, one matrix per
channel). JAX differentiates both: the input gradient is the transposed
product and the kernel gradient a product followed by the gather's
scatter-add, so the whole step stays in matrix products. Outputs equal the
convolution's up to the order of floating-point sums.

The matrix multiplies every output by all H*W input positions where the
convolution uses its kh*kw taps, so it costs H*W / (kh*kw) times the
convolution's multiply-adds. `worthwhile` takes it when that ratio is at
most `MAX_RATIO` (measured on a 2-core x86 CPU at batches 8 and 64: dense
convs win up to a ratio of 1, where 3x3 kernels over a 2x2 map run 2.5-15
times faster and 7x7 ones over 4x4 maps 4-20 times, and lose from 1.3;
depthwise convs win up to 4, e.g. 7x7 over 14x14 at batch 64 3x faster,
and lose at 16), when the batch amortises building the matrix
(`MIN_BATCH_PER_RATIO`), and when it has at most `MAX_MATRIX_ELEMENTS`
entries.
Kernels should have their dead taps cut first (`ferjax.layers.live_taps`),
so that the ratio counts the taps that are computed.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# Largest (input positions) / (kernel taps) worth a matrix product.
MAX_RATIO = {'dense': 1.0, 'depthwise': 4.0}
# The matrix is gathered on every call, and its gather and the kernel
# gradient's scatter-add cost several multiply-adds per entry, which only a
# batch amortises: a batch of B takes the matrix up to a ratio of
# B / MIN_BATCH_PER_RATIO. (ConvNeXt-B's 7x7 depthwise conv over 7x7x1024,
# ratio 1, with both gradients: 4 times slower as a matrix at batch 1, 1.7
# times faster at batch 8.)
MIN_BATCH_PER_RATIO = 8
# Largest matrix built, in entries (16 MiB of float32).
MAX_MATRIX_ELEMENTS = 1 << 22
# NHWC input and output, HWIO kernel: the layout of `nn.Conv`.
NHWC = lax.ConvDimensionNumbers(
  lhs_spec=(0, 3, 1, 2), rhs_spec=(3, 2, 0, 1), out_spec=(0, 3, 1, 2)
)


def kind(
  lhs_shape,
  rhs_shape,
  dimension_numbers=None,
  lhs_dilation=None,
  feature_group_count: int = 1,
  batch_group_count: int = 1,
) -> str | None:
  """'dense', 'depthwise' (one filter per channel) or None: not handled.

  Handles 2-D NHWC/HWIO convolutions without input dilation, dense or
  depthwise with a channel multiplier of 1.
  """
  if len(lhs_shape) != 4 or len(rhs_shape) != 4 or batch_group_count != 1:
    return None
  if lhs_dilation is not None and any(d != 1 for d in lhs_dilation):
    return None
  numbers = lax.conv_dimension_numbers(lhs_shape, rhs_shape, dimension_numbers)
  if numbers != NHWC:
    return None
  if feature_group_count == 1:
    return 'dense'
  channels = lhs_shape[3]
  if feature_group_count == channels == rhs_shape[3] and rhs_shape[2] == 1:
    return 'depthwise'
  return None


def explicit_pads(
  padding, spatial, kernel_spatial, strides, dilation
) -> tuple[tuple[int, int], ...]:
  """(low, high) pads per spatial axis from any of lax's padding forms.

  `padding`: 'SAME', 'VALID' (...), one int for every side, or per axis an
  int or a (low, high) pair. The other arguments are per spatial axis.
  """
  if isinstance(padding, str):
    dilated = [
      (k - 1) * d + 1 for k, d in zip(kernel_spatial, dilation, strict=True)
    ]
    padding = lax.padtype_to_pads(spatial, dilated, strides, padding)
  elif isinstance(padding, int):
    padding = [padding] * len(spatial)
  return tuple(
    (int(p), int(p)) if isinstance(p, int) else (int(p[0]), int(p[1]))
    for p in padding
  )


def out_size(size: int, pads, kernel: int, stride: int, dilation: int) -> int:
  """Output length of a padded, strided, dilated convolution along one axis."""
  span = (kernel - 1) * dilation + 1
  return (size + pads[0] + pads[1] - span) // stride + 1


def worthwhile(lhs_shape, rhs_shape, strides, pads, dilation, how: str):
  """Whether `conv` beats XLA:CPU here (module docstring)."""
  if not all(isinstance(d, int) for d in (*lhs_shape, *rhs_shape)):
    return False  # A symbolic size (jax.export's batch): keep XLA's.
  (batch, h, w, ci), (kh, kw, _, co) = lhs_shape, rhs_shape
  ho = out_size(h, pads[0], kh, strides[0], dilation[0])
  wo = out_size(w, pads[1], kw, strides[1], dilation[1])
  per_pair = ci * co if how == 'dense' else co
  elements = ho * wo * h * w * per_pair
  ratio = h * w / (kh * kw)
  return (
    ho > 0
    and wo > 0
    and ratio <= MAX_RATIO[how]
    and ratio * MIN_BATCH_PER_RATIO <= batch
    and elements <= MAX_MATRIX_ELEMENTS
  )


def tap_index(size, out, kernel, stride, pad_low, dilation) -> np.ndarray:
  """(out, size) int array: the tap through which output o reads input a.

  `kernel` (an index one past the last tap) where no tap reads it: the
  gather then picks the zero that `matrix` pads the kernel with.
  """
  index = np.full((out, size), kernel, np.int32)
  for o in range(out):
    for tap in range(kernel):
      a = o * stride - pad_low + tap * dilation
      if 0 <= a < size:
        index[o, a] = tap
  return index


def matrix(rhs: jax.Array, lhs_hw, strides, pads, dilation) -> jax.Array:
  """(Ho, H, Wo, W, I, O): the convolution's matrix, gathered from `rhs`.

  `rhs` is an HWIO kernel; entry [p, a, q, b] is the kernel tap through
  which output (p, q) reads input (a, b), or zero.
  """
  kh, kw = rhs.shape[:2]
  (h, w), (sh, sw), (dh, dw) = lhs_hw, strides, dilation
  rows = tap_index(h, out_size(h, pads[0], kh, sh, dh), kh, sh, pads[0][0], dh)
  cols = tap_index(w, out_size(w, pads[1], kw, sw, dw), kw, sw, pads[1][0], dw)
  padded = jnp.pad(rhs, ((0, 1), (0, 1), (0, 0), (0, 0)))
  return padded[rows[:, :, None, None], cols[None, None, :, :]]


def conv(
  lhs: jax.Array,
  rhs: jax.Array,
  strides,
  pads,
  dilation=(1, 1),
  *,
  how: str = 'dense',
  precision=None,
  preferred_element_type=None,
) -> jax.Array:
  """A 2-D NHWC/HWIO convolution (`how`: 'dense' or 'depthwise') by matrix.

  `pads` are explicit ((lo, hi), (lo, hi)); the result is what
  `jax.lax.conv_general_dilated` returns for the same arguments. Inputs
  narrower than float32 are multiplied in float32, so that the kernel
  gradient's scatter-add, which sums each tap over every output position,
  does not round in bfloat16.
  """
  dtype = preferred_element_type or jnp.result_type(lhs, rhs)
  acc = jnp.promote_types(jnp.result_type(lhs, rhs), jnp.float32)
  m = matrix(rhs.astype(acc), lhs.shape[1:3], strides, pads, dilation)
  if how == 'depthwise':
    spec, m = 'nabc,paqbc->npqc', m[..., 0, :]
  else:
    spec = 'nabc,paqbcd->npqd'
  y = jnp.einsum(spec, lhs.astype(acc), m, precision=precision)
  return y.astype(dtype)

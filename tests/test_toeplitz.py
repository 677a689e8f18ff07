"""Small-map convolutions as matrix products (ferjax.layers.toeplitz)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ferjax.layers import depthwise
from ferjax.layers import live_taps
from ferjax.layers import toeplitz

NHWC = ('NHWC', 'HWIO', 'NHWC')

CASES = [
  # (map, kernel, pads, strides, dilation, depthwise)
  ((2, 2), (3, 3), ((1, 1), (1, 1)), (1, 1), (1, 1), False),
  ((1, 1), (1, 1), ((0, 0), (0, 0)), (1, 1), (1, 1), False),
  ((4, 3), (3, 3), ((1, 1), (1, 1)), (1, 1), (1, 1), False),
  ((5, 4), (3, 2), ((2, 0), (1, 1)), (2, 1), (1, 1), False),
  ((4, 4), (2, 2), ((0, 0), (0, 0)), (2, 2), (1, 1), False),
  ((5, 5), (3, 3), ((2, 2), (2, 2)), (1, 1), (2, 2), False),
  ((8, 8), (7, 7), ((3, 3), (3, 3)), (1, 1), (1, 1), True),
  ((3, 4), (3, 3), ((1, 2), (0, 1)), (2, 2), (1, 1), True),
  ((6, 6), (3, 3), ((2, 2), (2, 2)), (1, 1), (2, 2), True),
]


def case(hw, kernel, dw, channels=3, dtype=jnp.float32, seed=0, batch=2):
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((batch, *hw, channels))
  # Depthwise: one filter per channel.
  w = rng.standard_normal((*kernel, 1 if dw else channels, channels))
  return jnp.asarray(x, dtype), jnp.asarray(w, dtype)


def xla(x, w, strides, pads, dilation, dw, **kw):
  return jax.lax.conv_general_dilated(
    x,
    w,
    strides,
    pads,
    rhs_dilation=dilation,
    dimension_numbers=NHWC,
    feature_group_count=x.shape[-1] if dw else 1,
    **kw,
  )


def value_and_grads(conv, x, w):
  def loss(x, w):
    y = conv(x, w)
    return jnp.sum(jnp.sin(y.astype(jnp.float32))), y

  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(x, w)


@pytest.mark.parametrize('hw, kernel, pads, strides, dilation, dw', CASES)
def test_matrix_conv_equals_xla_with_gradients(
  hw, kernel, pads, strides, dilation, dw
):
  x, w = case(hw, kernel, dw)
  how = 'depthwise' if dw else 'dense'
  (_, y), grads = value_and_grads(
    lambda x, w: toeplitz.conv(x, w, strides, pads, dilation, how=how), x, w
  )
  (_, want), want_grads = value_and_grads(
    lambda x, w: xla(x, w, strides, pads, dilation, dw), x, w
  )
  assert y.shape == want.shape and y.dtype == want.dtype
  np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
  for have, expected in zip(grads, want_grads, strict=True):
    np.testing.assert_allclose(have, expected, rtol=1e-5, atol=1e-5)


def test_matrix_entries_are_kernel_taps_or_zeros():
  """Entry [p, a, q, b] is the tap reading input (a, b) at output (p, q)."""
  w = jnp.arange(1.0, 10.0).reshape(3, 3, 1, 1)  # Distinct non-zero taps.
  m = np.asarray(toeplitz.matrix(w, (3, 2), (1, 1), ((1, 1), (1, 1)), (1, 1)))
  assert m.shape == (3, 3, 2, 2, 1, 1)
  for p, a, q, b in np.ndindex(3, 3, 2, 2):
    i, j = a - p + 1, b - q + 1
    want = w[i, j, 0, 0] if 0 <= i < 3 and 0 <= j < 3 else 0.0
    assert m[p, a, q, b, 0, 0] == want


def test_bfloat16_kernel_gradient_sums_in_float32():
  """A tap's gradient sums over every output: bfloat16 sums would drift."""
  x, w = case((8, 8), (7, 7), True, channels=16, seed=1)
  strides, pads, dilation = (1, 1), ((3, 3), (3, 3)), (1, 1)
  _, (_, dw) = value_and_grads(
    lambda x, w: toeplitz.conv(x, w, strides, pads, dilation, how='depthwise'),
    x.astype(jnp.bfloat16),
    w.astype(jnp.bfloat16),
  )
  _, (_, want) = value_and_grads(
    lambda x, w: xla(x, w, strides, pads, dilation, True),
    x.astype(jnp.bfloat16).astype(jnp.float32),
    w.astype(jnp.bfloat16).astype(jnp.float32),
  )
  assert dw.dtype == jnp.bfloat16
  scale = float(jnp.abs(want).max())
  assert float(jnp.abs(dw.astype(jnp.float32) - want).max()) < 0.01 * scale


@pytest.mark.parametrize(
  'hw, kernel, channels, how, want',
  [
    ((2, 2), (3, 3), 256, 'dense', True),  # ResNet's layer4 at 64 px.
    ((4, 4), (7, 7), 64, 'dense', True),  # MFER's DS conv, 64 px.
    ((3, 3), (3, 3), 64, 'dense', True),  # Ratio 1.
    ((4, 4), (3, 3), 64, 'dense', False),  # Ratio 1.8.
    ((8, 8), (7, 7), 16, 'dense', False),  # Ratio 1.3.
    ((14, 14), (7, 7), 32, 'depthwise', True),  # Ratio 4.
    ((16, 16), (7, 7), 32, 'depthwise', False),  # Ratio 5.2.
    ((7, 7), (7, 7), 1024, 'depthwise', True),  # ConvNeXt-B's stage 4.
    ((2, 2), (3, 3), 2048, 'dense', False),  # A 64 MiB matrix.
  ],
)
@pytest.mark.parametrize('batch', [64, 32])
def test_worthwhile(hw, kernel, channels, how, want, batch):
  pads = tuple((k // 2, k // 2) for k in kernel)
  rhs = (*kernel, 1 if how == 'depthwise' else channels, channels)
  lhs = (batch, *hw, channels)
  assert toeplitz.worthwhile(lhs, rhs, (1, 1), pads, (1, 1), how) == want


@pytest.mark.parametrize(
  'batch, hw, kernel, want',
  [(1, 2, 3, False), (4, 2, 3, True), (8, 7, 7, True), (16, 14, 7, False)],
)
def test_a_small_batch_must_amortise_the_matrix(batch, hw, kernel, want):
  """Ratios 4/9, 1 and 4 need batches of 3.6, 8 and 32."""
  lhs, rhs = (batch, hw, hw, 64), (kernel, kernel, 1, 64)
  pads = ((kernel // 2,) * 2,) * 2
  assert (
    toeplitz.worthwhile(lhs, rhs, (1, 1), pads, (1, 1), 'depthwise') == want
  )


def lowered(fn, *args) -> str:
  return jax.jit(fn).lower(*args).as_text()


@pytest.mark.parametrize('hw, convolutions', [((2, 2), 0), ((8, 8), 1)])
def test_small_dense_maps_lower_to_a_matrix_product_on_cpu(hw, convolutions):
  x, w = case(hw, (3, 3), False, batch=8)
  text = lowered(
    lambda x, w: live_taps.conv_general_dilated(
      x, w, (1, 1), 'SAME', dimension_numbers=NHWC
    ),
    x,
    w,
  )
  assert text.count('stablehlo.convolution') == convolutions
  assert ('dot_general' in text) == (convolutions == 0)
  (_, y), grads = value_and_grads(
    lambda x, w: live_taps.conv_general_dilated(
      x, w, (1, 1), 'SAME', dimension_numbers=NHWC
    ),
    x,
    w,
  )
  (_, want), want_grads = value_and_grads(
    lambda x, w: xla(x, w, (1, 1), 'SAME', (1, 1), False), x, w
  )
  np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
  for have, expected in zip(grads, want_grads, strict=True):
    np.testing.assert_allclose(have, expected, rtol=1e-5, atol=1e-5)


def test_depthwise_custom_takes_the_matrix_and_native_stays_xla():
  x, w = case((4, 4), (7, 7), True, batch=8)
  text = {}
  for grad in ('custom', 'native'):
    text[grad] = lowered(
      lambda x, w, g=grad: depthwise.depthwise_conv2d(x, w, padding=3, grad=g),
      x,
      w,
    )
  assert 'stablehlo.convolution' not in text['custom']
  assert 'dot_general' in text['custom']
  assert 'stablehlo.convolution' in text['native']


def test_other_convolutions_are_not_taken():
  kind = toeplitz.kind
  assert kind((2, 4, 4, 8), (3, 3, 8, 8), NHWC) == 'dense'
  assert kind((2, 4, 4, 8), (3, 3, 1, 8), NHWC, None, 8) == 'depthwise'
  assert kind((2, 4, 4, 8), (3, 3, 4, 8), NHWC, None, 2) is None  # Grouped.
  assert kind((2, 4, 4, 8), (3, 3, 8, 8), NHWC, (2, 2)) is None  # Transposed.
  assert kind((2, 4, 4, 8), (3, 3, 8, 8), NHWC, None, 1, 2) is None
  assert kind((2, 4, 8), (3, 8, 8), ('NHC', 'HIO', 'NHC')) is None  # 1-D.
  assert kind((2, 8, 4, 4), (8, 8, 3, 3)) is None  # lax's default, NCHW.


def test_a_symbolic_batch_keeps_xla():
  """jax.export's batch-polymorphic models: the amortisation is unknown."""
  lhs = jax.export.symbolic_shape('b, 2, 2, 64')
  pads = ((1, 1), (1, 1))
  assert toeplitz.worthwhile(
    (64, 2, 2, 64), (3, 3, 64, 64), (1, 1), pads, (1, 1), 'dense'
  )
  assert not toeplitz.worthwhile(
    lhs, (3, 3, 64, 64), (1, 1), pads, (1, 1), 'dense'
  )


@pytest.mark.parametrize(
  'padding, want',
  [
    ('SAME', ((1, 1), (2, 2))),
    ('VALID', ((0, 0), (0, 0))),
    (2, ((2, 2), (2, 2))),
    ([1, (0, 3)], ((1, 1), (0, 3))),
  ],
)
def test_explicit_pads_reads_every_padding_form(padding, want):
  """A 3 x 5 kernel over 6 x 6 ('SAME' pads each axis by half its span)."""
  assert toeplitz.explicit_pads(padding, (6, 6), (3, 5), (1, 1), (1, 1)) == want

"""Cutting the kernel taps that only read padding (ferjax.layers.live_taps)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from jax.extend import core as jex_core

from ferjax.layers import depthwise
from ferjax.layers import ds_attention
from ferjax.layers import live_taps

NHWC = ('NHWC', 'HWIO', 'NHWC')


def brute_live(size, pads, kernel, stride, dilation):
  """Taps that read an input element at some output, by enumeration."""
  lo, hi = pads
  outputs = (size + lo + hi - (kernel - 1) * dilation - 1) // stride + 1
  return {
    k
    for k in range(kernel)
    for o in range(outputs)
    if 0 <= o * stride + k * dilation - lo < size
  }


def test_live_range_keeps_every_live_tap():
  cases = itertools.product(
    range(1, 7), [(0, 0), (1, 1), (3, 3), (2, 1)], [1, 3, 7], [1, 2], [1, 2]
  )
  checked = 0
  for size, pads, kernel, stride, dilation in cases:
    padded = size + sum(pads)
    if padded < (kernel - 1) * dilation + 1:
      continue
    live = brute_live(size, pads, kernel, stride, dilation)
    first, last = live_taps.live_range(size, pads, kernel, stride, dilation)
    assert live <= set(range(first, last + 1))
    if stride == 1:  # Without gaps the range is exact.
      assert set(range(first, last + 1)) == live
    checked += 1
  assert checked > 100


@pytest.mark.parametrize(
  'size, kernel, pad, want',
  [(1, 7, 3, (3, 3)), (2, 7, 3, (2, 4)), (4, 7, 3, (0, 6)), (1, 3, 1, (1, 1))],
)
def test_live_range_of_small_maps(size, kernel, pad, want):
  assert live_taps.live_range(size, (pad, pad), kernel, 1, 1) == want


def conv_case(hw, kernel, channels, groups, seed=0):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.standard_normal((2, *hw, channels)), jnp.float32)
  shape = (*kernel, channels // groups, channels)
  w = jnp.asarray(rng.standard_normal(shape), jnp.float32)
  return x, w


def conv_windows(fn, *args) -> list[tuple[int, ...]]:
  """The kernel shapes of the convolutions in `fn`'s jaxpr.

  Sub-jaxprs count too: off CPU, a small map's conv is XLA's (the default
  branch of `lax.platform_dependent`); on CPU it is a matrix product.
  """
  shapes = []

  def walk(jaxpr):
    for eqn in jaxpr.eqns:
      if eqn.primitive.name == 'conv_general_dilated':
        shapes.append(tuple(eqn.invars[1].aval.shape))
      for sub in jex_core.jaxprs_in_params(eqn.params):
        walk(sub)

  walk(jax.make_jaxpr(fn)(*args).jaxpr)
  return shapes


CASES = [
  # (map, kernel, padding, strides, dilation, groups, kernel after the cut)
  ((1, 1), (7, 7), ((3, 3), (3, 3)), (1, 1), (1, 1), 1, (1, 1)),
  ((2, 2), (7, 7), ((3, 3), (3, 3)), (1, 1), (1, 1), 1, (3, 3)),
  ((2, 3), (7, 7), ((3, 3), (3, 3)), (1, 1), (1, 1), 4, (3, 5)),
  ((1, 1), (3, 3), ((1, 1), (1, 1)), (1, 1), (1, 1), 4, (1, 1)),
  ((3, 5), (5, 3), ((2, 1), (1, 2)), (2, 1), (1, 1), 1, (3, 3)),
  ((2, 2), (3, 3), ((2, 2), (2, 2)), (1, 1), (2, 2), 1, (1, 1)),
  ((1, 4), (7, 7), 'SAME', (1, 1), (1, 1), 4, (1, 7)),
  ((6, 6), (3, 3), ((1, 1), (1, 1)), (1, 1), (1, 1), 1, (3, 3)),  # No cut.
]


@pytest.mark.parametrize(
  'hw, kernel, padding, strides, dilation, groups, cut', CASES
)
def test_trimmed_conv_equals_the_full_one(
  hw, kernel, padding, strides, dilation, groups, cut
):
  x, w = conv_case(hw, kernel, 4, groups)

  def loss(conv):
    def fn(x, w):
      y = conv(
        x,
        w,
        strides,
        padding,
        rhs_dilation=dilation,
        dimension_numbers=NHWC,
        feature_group_count=groups,
      )
      return jnp.sum(jnp.sin(y)), y

    return jax.value_and_grad(fn, argnums=(0, 1), has_aux=True)

  assert conv_windows(loss(live_taps.conv_general_dilated), x, w)[0][:2] == cut
  (value, y), grads = jax.jit(loss(live_taps.conv_general_dilated))(x, w)
  loss_full = jax.jit(loss(jax.lax.conv_general_dilated))
  (want_value, want_y), want_grads = loss_full(x, w)
  np.testing.assert_allclose(y, want_y, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(value, want_value, rtol=1e-5, atol=1e-5)
  for have, want in zip(grads, want_grads, strict=True):
    assert have.shape == want.shape
    np.testing.assert_allclose(have, want, rtol=1e-5, atol=1e-5)


def test_dead_taps_are_not_computed():
  x, w = conv_case((1, 1), (7, 7), 4, 1)
  full = conv_windows(
    lambda x, w: jax.lax.conv_general_dilated(
      x, w, (1, 1), ((3, 3), (3, 3)), dimension_numbers=NHWC
    ),
    x,
    w,
  )
  cut = conv_windows(
    lambda x, w: live_taps.conv_general_dilated(
      x, w, (1, 1), ((3, 3), (3, 3)), dimension_numbers=NHWC
    ),
    x,
    w,
  )
  assert full == [(7, 7, 4, 4)] and cut == [(1, 1, 4, 4)]


def test_depthwise_convs_cut_dead_taps_too():
  x = conv_case((2, 2), (7, 7), 4, 4)[0]
  plain = nn.Conv(4, (7, 7), padding=3, feature_group_count=4)
  variables = plain.init(jax.random.key(0), x)
  for grad in ('native', 'custom'):
    conv = depthwise.depthwise_conv(4, 7, padding=3, grad=grad)
    np.testing.assert_allclose(
      conv.apply(variables, x), plain.apply(variables, x), rtol=1e-5, atol=1e-5
    )
  native = depthwise.depthwise_conv(4, 7, padding=3, grad='native')
  assert conv_windows(native.apply, variables, x) == [(3, 3, 1, 4)]


def test_ds_attention_on_a_1x1_map_computes_one_tap(monkeypatch):
  """MFER's stage 4 at 32 px: the dense 7x7 query conv has one live tap."""
  x = jax.random.normal(jax.random.key(1), (2, 1, 1, 16))
  module = ds_attention.DSAttention()
  variables = module.init(jax.random.key(0), x)
  assert variables['params']['attn']['kernel'].shape == (7, 7, 16, 16)
  assert conv_windows(module.apply, variables, x) == [(1, 1, 16, 16)]
  out = module.apply(variables, x)

  monkeypatch.setattr(
    live_taps, 'trim', lambda lhs, rhs, s, pad, **k: (rhs, pad)
  )
  assert conv_windows(module.apply, variables, x) == [(7, 7, 16, 16)]
  np.testing.assert_allclose(
    out, module.apply(variables, x), rtol=1e-5, atol=1e-6
  )

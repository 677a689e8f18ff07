"""Tests for ferjax.layers.depthwise: the same convolution, cheaper gradients."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from ferjax import models
from ferjax.layers import depthwise
from tests import model_helpers

# (input shape, kernel size, strides, padding, kernel dilation): square and
# odd maps and kernels, strides, SAME / VALID / explicit asymmetric and
# negative pads, dilations, a kernel covering the map (output 1x1, as GCA's
# global conv), outputs smaller than the kernel, and a kernel too large to
# unroll.
CASES = [
  ((2, 9, 11, 5), (3, 3), 1, 'SAME', 1),
  ((2, 9, 11, 5), (3, 3), 2, 'SAME', 1),
  ((2, 14, 14, 16), (7, 7), 1, 3, 1),
  ((2, 10, 10, 4), (3, 2), (2, 3), ((1, 2), (0, 1)), (2, 1)),
  ((3, 7, 7, 6), (7, 7), 1, 'VALID', 1),
  ((3, 8, 6, 6), (4, 5), 1, 'VALID', 1),
  ((2, 12, 12, 3), (5, 5), 3, 'VALID', 2),
  ((2, 6, 6, 4), (3, 3), 1, ((4, 0), (-1, 2)), 1),
  ((2, 13, 13, 8), (9, 9), 2, 'SAME', 1),
]
IDS = [f'{c[0][1]}x{c[0][2]}-k{c[1][0]}x{c[1][1]}-s{c[2]}' for c in CASES]


def conv_fields(strides, padding, dilation):
  return {'strides': strides, 'padding': padding, 'kernel_dilation': dilation}


def reference(shape, kernel_size, fields) -> nn.Conv:
  channels = shape[-1]
  return nn.Conv(channels, kernel_size, feature_group_count=channels, **fields)


def inputs(shape, dtype=jnp.float32, seed=0):
  # NumPy's generator: jax.random would compile a program per shape.
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.standard_normal(shape, np.float32)).astype(dtype)


def assert_close(actual, expected, tol):
  """max |actual - expected| <= tol * max |expected| (scale-aware)."""
  actual = np.asarray(actual, np.float32)
  expected = np.asarray(expected, np.float32)
  assert actual.shape == expected.shape
  scale = max(float(np.abs(expected).max()), 1e-6)
  assert float(np.abs(actual - expected).max()) <= tol * scale


def test_variables_are_those_of_nn_conv():
  shape = (2, 9, 9, 6)
  fields = conv_fields(2, 'SAME', 1)
  want = reference(shape, (3, 3), fields).init(jax.random.key(1), inputs(shape))
  for grad in depthwise.GRADS:
    layer = depthwise.depthwise_conv(6, 3, grad=grad, **fields)
    have = layer.init(jax.random.key(1), inputs(shape))
    chex.assert_trees_all_equal(have, want)
    assert have['params']['kernel'].shape == (3, 3, 1, 6)
    assert have['params']['bias'].shape == (6,)


@pytest.mark.parametrize('grad', depthwise.GRADS)
@pytest.mark.parametrize(
  ('shape', 'kernel_size', 'strides', 'padding', 'dilation'), CASES, ids=IDS
)
def test_forward_equals_nn_conv(
  shape, kernel_size, strides, padding, dilation, grad
):
  fields = conv_fields(strides, padding, dilation)
  ref = reference(shape, kernel_size, fields)
  x = inputs(shape)
  variables = model_helpers.jit_init(ref, jax.random.key(0), x)
  layer = depthwise.depthwise_conv(shape[-1], kernel_size, grad=grad, **fields)
  want = ref.apply(variables, x)
  have = jax.jit(layer.apply)(variables, x)
  assert have.dtype == want.dtype
  assert_close(have, want, 1e-5)


def grads(layer, variables, x, dy):
  """d<y, dy>/d(x, params) of `layer.apply`."""

  def loss(params, x):
    y = layer.apply({'params': params}, x)
    return jnp.sum(y.astype(jnp.float32) * dy)

  return jax.jit(jax.grad(loss, argnums=(0, 1)))(variables['params'], x)


@pytest.mark.parametrize(
  ('dtype', 'tol'), [(jnp.float32, 1e-5), (jnp.bfloat16, 2e-2)]
)
@pytest.mark.parametrize('grad', ['custom', 'auto'])
@pytest.mark.parametrize(
  ('shape', 'kernel_size', 'strides', 'padding', 'dilation'), CASES, ids=IDS
)
def test_gradients_equal_native(
  shape, kernel_size, strides, padding, dilation, grad, dtype, tol
):
  fields = conv_fields(strides, padding, dilation)
  channels = shape[-1]
  native = depthwise.depthwise_conv(
    channels, kernel_size, grad='native', dtype=dtype, **fields
  )
  layer = depthwise.depthwise_conv(
    channels, kernel_size, grad=grad, dtype=dtype, **fields
  )
  x = inputs(shape, dtype)
  variables = model_helpers.jit_init(native, jax.random.key(0), x)
  dy = inputs(jax.eval_shape(native.apply, variables, x).shape, seed=1)
  (want_params, want_x) = grads(native, variables, x, dy)
  (have_params, have_x) = grads(layer, variables, x, dy)
  assert have_x.dtype == want_x.dtype == dtype
  assert_close(have_x, want_x, tol)
  for name in ('kernel', 'bias'):
    assert have_params[name].dtype == jnp.float32
    assert_close(have_params[name], want_params[name], tol)


@pytest.mark.parametrize('padding', ['SAME', 'VALID'])
def test_wide_kernels_keep_xla_forward(monkeypatch, padding):
  """Kernels too wide to unroll: XLA's forward, the custom kernel grad."""
  monkeypatch.setattr(depthwise, 'MAX_UNROLLED_TERMS', 3)
  x, kernel = inputs((2, 9, 9, 4)), inputs((5, 5, 1, 4), seed=1)

  def loss(grad):
    def fn(x, kernel):
      y = depthwise.depthwise_conv2d(
        x, kernel, strides=2, padding=padding, grad=grad
      )
      return jnp.sum(y**2)

    return jax.jit(jax.value_and_grad(fn, argnums=(0, 1)))

  have, want = loss('custom')(x, kernel), loss('native')(x, kernel)
  for have_leaf, want_leaf in zip(
    jax.tree.leaves(have), jax.tree.leaves(want), strict=True
  ):
    assert_close(have_leaf, want_leaf, 1e-5)


def test_functional_form_and_jit_traces_once():
  x, kernel = inputs((2, 8, 8, 4)), inputs((3, 3, 1, 4), seed=1)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def value_and_grads(x, kernel):
    def loss(x, kernel):
      y = depthwise.depthwise_conv2d(x, kernel, padding='SAME', grad='custom')
      return jnp.sum(y**2)

    return jax.value_and_grad(loss, argnums=(0, 1))(x, kernel)

  for seed in range(3):
    value, (dx, dk) = value_and_grads(x + seed, kernel)
    want = jax.lax.conv_general_dilated(
      x + seed,
      kernel,
      (1, 1),
      'SAME',
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
      feature_group_count=4,
    )
    assert_close(value, jnp.sum(want**2), 1e-5)
    assert dx.shape == x.shape and dk.shape == kernel.shape


def test_other_convolutions_pass_through():
  """Dense and multi-channel-group convs are jax.lax's, unchanged."""
  x = inputs((2, 8, 8, 4))
  for groups, kernel_shape in [(1, (3, 3, 4, 6)), (2, (3, 3, 2, 4))]:
    kernel = inputs(kernel_shape, seed=1)
    args = (x, kernel, (1, 1), 'SAME')
    kwargs = {
      'dimension_numbers': ('NHWC', 'HWIO', 'NHWC'),
      'feature_group_count': groups,
    }
    have = depthwise.conv_general_dilated(*args, **kwargs, grad='custom')
    want = jax.lax.conv_general_dilated(*args, **kwargs)
    np.testing.assert_array_equal(have, want)


def dense_convolutions(hlo_text: str) -> list[str]:
  """Convolution instructions of compiled HLO that are not grouped."""
  return [
    line
    for line in hlo_text.splitlines()
    if ' convolution(' in line and 'feature_group_count' not in line
  ]


def test_cpu_kernel_gradient_costs_about_the_forward():
  """ConvNeXt-B's 7x7 depthwise conv over 14x14x512 (batch 8).

  XLA:CPU's native kernel gradient is a dense (512, 7, 7, 512) convolution,
  about 500 times the forward's FLOPs; the custom one is a few times it.
  XLA's cost analysis counts a loop body once, so the 49-tap loop of the
  kernel gradient is also checked by the absence of dense convolutions.
  """
  if jax.default_backend() != 'cpu':
    pytest.skip('checks the CPU compilation')
  x = jax.ShapeDtypeStruct((8, 14, 14, 512), jnp.float32)
  kernel = jax.ShapeDtypeStruct((7, 7, 1, 512), jnp.float32)

  def forward(x, kernel, grad):
    return depthwise.depthwise_conv2d(x, kernel, padding=3, grad=grad)

  def gradient(grad):
    loss = lambda x, k: jnp.sum(forward(x, k, grad) ** 2)  # noqa: E731
    return jax.jit(jax.grad(loss, argnums=(0, 1)))

  forward_flops = (
    jax.jit(forward, static_argnums=2)
    .lower(x, kernel, 'native')
    .compile()
    .cost_analysis()['flops']
  )
  # At most 2 * 49 * B * H * W * C (XLA leaves out the taps on padding).
  assert 0 < forward_flops <= 2 * 49 * 8 * 14 * 14 * 512
  for grad in ('native', 'auto', 'custom'):
    compiled = gradient(grad).lower(x, kernel).compile()
    flops = compiled.cost_analysis()['flops']
    print(f'{grad}: gradient / forward FLOPs {flops / forward_flops:.1f}')
    if grad != 'native':
      assert flops < 10 * forward_flops
      assert not dense_convolutions(compiled.as_text())


def test_auto_keeps_native_convolutions_off_cpu():
  """Lowered for CUDA or TPU, 'auto' is XLA's convolution and gradient."""
  x = jnp.zeros((2, 8, 8, 4))
  kernel = jnp.zeros((3, 3, 1, 4))

  def loss(x, kernel):
    y = depthwise.depthwise_conv2d(x, kernel, padding=1, grad='auto')
    return jnp.sum(y**2)

  traced = jax.jit(jax.grad(loss, argnums=(0, 1))).trace(x, kernel)
  for platform in ('cuda', 'tpu'):
    text = traced.lower(lowering_platforms=(platform,)).as_text()
    assert 'batch_group_count = 4' in text  # The native kernel gradient.
    assert 'while' not in text
  cpu = traced.lower(lowering_platforms=('cpu',)).as_text()
  assert 'convolution' not in cpu


def test_bad_grad_and_shapes():
  with pytest.raises(ValueError, match="grad='fast'"):
    depthwise.depthwise_conv(4, 3, grad='fast')
  x = inputs((2, 8, 8, 4))
  with pytest.raises(ValueError, match='one per channel'):
    depthwise.depthwise_conv2d(x, inputs((3, 3, 1, 5)))
  with pytest.raises(ValueError, match=r'\(kh, kw, 1, C\)'):
    depthwise.depthwise_conv2d(x, inputs((3, 3, 2, 4)))
  model = models.get_model('convnext', depthwise_grad='fast')
  with pytest.raises(ValueError, match="ConvNeXt depthwise_grad='fast'"):
    model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))


@pytest.mark.parametrize(
  ('name', 'fields'),
  [
    ('convnext', {'depths': (1, 1, 2, 1), 'dims': (8, 16, 32, 64)}),
    (
      'mfer',
      {'depths': (1, 1, 1, 1), 'dims': (8, 16, 32, 64), 'ds_conv': 'depthwise'},
    ),
  ],
)
def test_models_same_with_every_implementation(name, fields):
  """Variables, outputs and gradients do not depend on `depthwise_grad`."""
  images = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3))
  built = {
    grad: models.get_model(name, depthwise_grad=grad, **fields)
    for grad in depthwise.GRADS
  }
  variables = {
    grad: model_helpers.jit_init(model, jax.random.key(1), images)
    for grad, model in built.items()
  }
  chex.assert_trees_all_equal(variables['auto'], variables['native'])
  chex.assert_trees_all_equal(variables['custom'], variables['native'])

  def value_and_grad(model):
    def loss(params):
      out = model.apply({'params': params}, images)
      return jnp.sum(out['logits'] ** 2) + jnp.sum(out['features'])

    return jax.jit(jax.value_and_grad(loss))(variables['native']['params'])

  want = value_and_grad(built['native'])
  for grad in ('auto', 'custom'):
    have = value_and_grad(built[grad])
    chex.assert_trees_all_close(have, want, rtol=1e-4, atol=1e-5)

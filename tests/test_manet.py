"""Tests for MA-Net, its CBAM layer and the 'manet' loss (no torch needed)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from ferjax import losses
from ferjax import models
from ferjax.layers import cbam
from ferjax.models import manet


def _count(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _shapes(model, height: int = 224, width: int | None = None):
  images = jax.ShapeDtypeStruct((2, height, width or height, 3), jnp.float32)
  return jax.eval_shape(model.init, jax.random.key(0), images)


def _random_variables(template, seed: int = 0):
  """Random values of a variable template; far cheaper than `init`.

  Kernels are scaled by 1/sqrt(fan_in) so that activations stay of order one
  through the network; BN statistics and affine parameters are randomised
  so that eval-mode normalisation is exercised.
  """
  rng = np.random.default_rng(seed)
  out = {}
  for key, leaf in traverse_util.flatten_dict(dict(template)).items():
    shape, name = tuple(leaf.shape), key[-1]
    if name == 'kernel':
      value = rng.standard_normal(shape, np.float32)
      value *= np.sqrt(2.0 / np.prod(shape[:-1]))
    elif name in ('scale', 'var'):
      value = rng.uniform(0.5, 1.5, shape)
    else:  # bias, mean
      value = rng.normal(0.0, 0.1, shape)
    out[key] = np.asarray(value, np.float32)
  return traverse_util.unflatten_dict(out)


@pytest.fixture(scope='module')
def small_variables():
  return _random_variables(_shapes(models.get_model('manet'), 32))


def _images(size: int = 32, seed: int = 0):
  rng = np.random.default_rng(seed)
  return rng.uniform(size=(2, size, size, 3)).astype(np.float32)


@pytest.mark.parametrize(
  ('num_classes', 'expected'),
  [(7, 50_547_214), (8, 50_548_240), (12_666, 63_535_348)],
)
def test_full_size_param_count_and_shapes(num_classes, expected):
  # Counts of the official PyTorch MANet with these head sizes.
  model = models.get_model('manet', num_classes=num_classes)
  variables = _shapes(model)
  assert _count(variables['params']) == expected
  # PyTorch's 43,528 buffer elements less 104 num_batches_tracked.
  assert _count(variables['batch_stats']) == 43_424
  out = jax.eval_shape(
    model.apply, variables, jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32)
  )
  assert set(out) == {'logits', 'logits_local', 'logits_global'}
  for logits in out.values():
    chex.assert_shape(logits, (2, num_classes))
    assert logits.dtype == jnp.float32


# The 7-class model with one branch: the shared front (683,072), the local
# branch (4 x 10,577,392) or the global one (7,547,392), and its head.
ONE_BRANCH = {'local': 42_996_231, 'global': 8_234_055}


@pytest.mark.parametrize('branch', sorted(ONE_BRANCH))
def test_one_branch_param_count(branch):
  model = models.get_model('manet', branches=branch)
  params = _shapes(model)['params']
  assert _count(params) == ONE_BRANCH[branch]
  other = 'fc_2' if branch == 'local' else 'fc_1'
  assert other not in params
  # Each holds the front once: together they are the full model and a front.
  assert sum(ONE_BRANCH.values()) == 50_547_214 + 683_072


def test_one_branch_is_that_branch_alone(small_variables):
  """Local-only and global-only give the full model's head logits as their
  prediction, from the same weights, and train on that head alone."""
  images = _images()
  full = models.get_model('manet').apply(small_variables, images)
  for branch in ('local', 'global'):
    model = models.get_model('manet', branches=branch)
    template = _shapes(model, 32)
    variables = {
      c: {k: small_variables[c][k] for k in template[c]} for c in template
    }
    out = model.apply(variables, images)
    assert set(out) == {'logits', f'logits_{branch}'}
    np.testing.assert_allclose(
      out['logits'], full[f'logits_{branch}'], rtol=1e-5, atol=1e-5
    )
    loss, metrics = losses.get_loss('manet')(out, jnp.asarray([0, 3]))
    assert set(metrics) == {f'loss_{branch}'}
    np.testing.assert_allclose(loss, metrics[f'loss_{branch}'])
  assert np.abs(full['logits'] - full['logits_local']).max() > 1e-3


def test_torch_names():
  params = _shapes(models.get_model('manet'), 32)['params']
  assert set(params) == {
    'conv1',
    'bn1',
    'fc_1',
    'fc_2',
    *(f'layer{s}_{b}' for s in (1, 2) for b in range(2)),
    *(f'{name}_{b}' for name in ('layer3_2', 'layer4_2') for b in range(2)),
    *(
      f'layer{s}_1_p{p}_{b}'
      for s in (3, 4)
      for p in range(1, 5)
      for b in range(2)
    ),
  }
  block = params['layer4_1_p3_0']  # stride 1 but 256 -> 512: a downsample
  assert set(block) == {
    'conv1',
    'bn1',
    'conv2',
    'bn2',
    'cbam',
    'downsample_0',
    'downsample_1',
  }
  assert 'downsample_0' not in params['layer4_1_p3_1']
  gate = block['cbam']
  assert set(gate['ChannelGate']) == {'mlp_1', 'mlp_3'}
  assert gate['ChannelGate']['mlp_1']['kernel'].shape == (512, 32)
  assert set(gate['SpatialGate']['spatial']) == {'conv', 'bn'}
  assert gate['SpatialGate']['spatial']['conv']['kernel'].shape == (7, 7, 2, 1)
  multi = params['layer4_2_0']
  assert set(multi) == {
    'conv1',
    'bn1',
    'downsample_0',
    'downsample_1',
    *(
      f'{k}{p}_2_{i}'
      for k in ('conv', 'bn')
      for p in (1, 2)
      for i in range(1, 5)
    ),
  }
  assert multi['conv2_2_4']['kernel'].shape == (3, 3, 128, 128)


def test_forward_eval_and_train(small_variables):
  model = models.get_model('manet', num_classes=7)
  images = _images()
  out = model.apply(small_variables, images)
  chex.assert_shape(list(out.values()), (2, 7))
  chex.assert_type(list(out.values()), jnp.float32)
  chex.assert_tree_all_finite(out)
  np.testing.assert_allclose(
    out['logits'],
    0.6 * out['logits_local'] + 0.4 * out['logits_global'],
    rtol=1e-6,
    atol=1e-6,
  )

  train_out, updated = model.apply(
    small_variables, images, train=True, mutable=['batch_stats']
  )
  chex.assert_shape(list(train_out.values()), (2, 7))
  chex.assert_tree_all_finite(train_out)
  old = traverse_util.flatten_dict(small_variables['batch_stats'])
  new = traverse_util.flatten_dict(updated['batch_stats'])
  assert set(old) == set(new)
  for key in (
    ('bn1', 'mean'),
    ('layer3_1_p4_1', 'cbam', 'SpatialGate', 'spatial', 'bn', 'var'),
    ('layer4_2_1', 'bn2_2_3', 'mean'),
  ):
    assert not np.allclose(new[key], old[key]), key


def test_layer2_map_is_sown(small_variables):
  model = models.get_model('manet')
  _, state = model.apply(small_variables, _images(), mutable=['intermediates'])
  (layer2,) = state['intermediates']['layer2']
  chex.assert_shape(layer2, (2, 4, 4, 128))


def test_directions_differ_only_in_the_global_branch(small_variables):
  images = _images()
  same = models.get_model('manet', direction='same').apply(
    small_variables, images
  )
  reverse = models.get_model('manet', direction='reverse').apply(
    small_variables, images
  )
  np.testing.assert_array_equal(same['logits_local'], reverse['logits_local'])
  assert np.abs(same['logits_global'] - reverse['logits_global']).max() > 1e-3


@pytest.mark.parametrize(
  ('height', 'width'), [(40, 40), (224, 200), (100, 100)]
)
def test_odd_layer2_map_is_refused(height, width):
  model = models.get_model('manet')
  side = lambda s: -(-s // 8)  # noqa: E731
  message = f'{height}x{width} input gives a {side(height)}x{side(width)}'
  with pytest.raises(ValueError, match=f'{message}.*112 or 224'):
    _shapes(model, height, width)


@pytest.mark.parametrize('size', [105, 112, 128])
def test_even_layer2_maps_are_accepted(size):
  out = jax.eval_shape(
    models.get_model('manet').apply,
    _shapes(models.get_model('manet'), 32),
    jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32),
  )
  chex.assert_shape(out['logits'], (1, 7))


def test_bad_fields():
  with pytest.raises(ValueError, match="direction='sideways'"):
    _shapes(models.get_model('manet', direction='sideways'), 32)
  with pytest.raises(ValueError, match=r'beta=1\.5'):
    _shapes(models.get_model('manet', beta=1.5), 32)
  with pytest.raises(ValueError, match=r"branches='multi'.*'both', 'local'"):
    _shapes(models.get_model('manet', branches='multi'), 32)
  with pytest.raises(ValueError, match=r'NHWC'):
    jax.eval_shape(
      models.get_model('manet').init,
      jax.random.key(0),
      jax.ShapeDtypeStruct((2, 3, 32, 32), jnp.float32),
    )


def test_bfloat16_compute_keeps_float32_params_and_logits():
  model = models.get_model('manet', dtype=jnp.bfloat16)
  variables = _shapes(model, 64)
  assert {x.dtype for x in jax.tree.leaves(variables)} == {np.dtype('float32')}
  out = jax.eval_shape(
    model.apply, variables, jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32)
  )
  assert {x.dtype for x in out.values()} == {np.dtype('float32')}


def _cbam_reference(x, p, s):
  """CBAM in numpy (eval mode), written from the formulas."""
  relu = lambda v: np.maximum(v, 0)  # noqa: E731
  sigmoid = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
  gate = p['ChannelGate']

  def mlp(v):
    h = relu(v @ gate['mlp_1']['kernel'] + gate['mlp_1']['bias'])
    return h @ gate['mlp_3']['kernel'] + gate['mlp_3']['bias']

  att = mlp(x.mean(axis=(1, 2))) + mlp(x.max(axis=(1, 2)))
  x = x * sigmoid(att)[:, None, None, :]
  pooled = np.concatenate(
    [x.max(-1, keepdims=True), x.mean(-1, keepdims=True)], -1
  )
  kernel = p['SpatialGate']['spatial']['conv']['kernel']  # (7, 7, 2, 1)
  padded = np.pad(pooled, ((0, 0), (3, 3), (3, 3), (0, 0)))
  h, w = x.shape[1:3]
  conv = np.zeros(x.shape[:3] + (1,), np.float64)
  for i in range(7):
    for j in range(7):
      conv += padded[:, i : i + h, j : j + w] @ kernel[i, j]
  bn_p = p['SpatialGate']['spatial']['bn']
  bn_s = s['SpatialGate']['spatial']['bn']
  pre_bn = conv
  conv = (conv - bn_s['mean']) / np.sqrt(bn_s['var'] + 1e-5)
  conv = conv * bn_p['scale'] + bn_p['bias']
  return x * sigmoid(conv), pre_bn


def test_cbam_matches_formulas_and_init():
  layer = cbam.CBAM(16)
  x = np.random.default_rng(0).normal(size=(2, 5, 6, 32)).astype(np.float32)
  variables = layer.init(jax.random.key(0), x)
  params = variables['params']
  # PyTorch's Linear init bound 1/sqrt(fan_in), Kaiming fan_out for the conv.
  assert params['ChannelGate']['mlp_1']['kernel'].shape == (32, 2)
  assert np.abs(params['ChannelGate']['mlp_1']['kernel']).max() <= 32**-0.5
  assert np.abs(params['ChannelGate']['mlp_3']['bias']).max() <= 2**-0.5
  assert 'bias' not in params['SpatialGate']['spatial']['conv']
  variables = _random_variables(variables, seed=1)
  out = layer.apply(variables, x)
  expected, _ = _cbam_reference(
    x.astype(np.float64), variables['params'], variables['batch_stats']
  )
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)

  # Training: the spatial BN keeps 99% of its running statistics (PyTorch
  # momentum 0.01), starting here from mean 0 and var 1.
  stats = jax.tree.map(np.ones_like, variables['batch_stats'])
  stats['SpatialGate']['spatial']['bn']['mean'] *= 0
  _, pre_bn = _cbam_reference(x.astype(np.float64), variables['params'], stats)
  _, updated = layer.apply(
    {'params': variables['params'], 'batch_stats': stats},
    x,
    train=True,
    mutable=['batch_stats'],
  )
  bn = updated['batch_stats']['SpatialGate']['spatial']['bn']
  np.testing.assert_allclose(bn['mean'], 0.01 * pre_bn.mean(), rtol=1e-4)
  np.testing.assert_allclose(bn['var'], 0.99 + 0.01 * pre_bn.var(), rtol=1e-4)


def test_registry():
  assert 'manet' in models.list_models()
  assert isinstance(models.get_model('manet', num_classes=8), manet.MANet)


def test_loss():
  rng = np.random.default_rng(0)
  outputs = {
    'logits_local': jnp.asarray(rng.normal(size=(4, 7)), jnp.float32),
    'logits_global': jnp.asarray(rng.normal(size=(4, 7)), jnp.float32),
  }
  labels = jnp.asarray([0, 3, 6, 2])
  loss_fn = losses.get_loss('manet')

  def ce(logits):
    logp = jax.nn.log_softmax(logits)
    return -np.mean(np.take_along_axis(np.asarray(logp), labels[:, None], 1))

  local, global_ = ce(outputs['logits_local']), ce(outputs['logits_global'])
  loss, metrics = loss_fn(outputs, labels)
  np.testing.assert_allclose(loss, 0.6 * local + 0.4 * global_, rtol=1e-6)
  np.testing.assert_allclose(metrics['loss_local'], local, rtol=1e-6)
  np.testing.assert_allclose(metrics['loss_global'], global_, rtol=1e-6)
  assert set(metrics) == {'loss_local', 'loss_global'}

  loss, _ = loss_fn(outputs, labels, beta=1.0)
  np.testing.assert_allclose(loss, local, rtol=1e-6)
  smoothed, _ = loss_fn(outputs, labels, label_smoothing=0.1)
  assert float(smoothed) != pytest.approx(float(loss))

  # Both heads get gradient, weighted by beta and 1 - beta.
  grads = jax.grad(lambda o: loss_fn(o, labels, beta=0.25)[0])(outputs)
  local_grad = jax.grad(lambda o: loss_fn(o, labels, beta=1.0)[0])(outputs)
  np.testing.assert_allclose(
    grads['logits_local'], 0.25 * local_grad['logits_local'], rtol=1e-5
  )
  assert np.abs(grads['logits_global']).max() > 0

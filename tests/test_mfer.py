"""Tests for MFER and its DS attention layer (no torch needed)."""

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from scipy import special

from ferjax import models
from ferjax.layers import ds_attention
from ferjax.models import mfer
from tests import model_helpers
from tests.test_convnext import random_variables

TINY = {'depths': (1, 1, 2, 1), 'dims': (16, 32, 64, 128)}
# Parameters of the official PyTorch modules (ConvNeXt-B trunk, two DS
# attentions, Msc) for 7 classes, and the DSF centres.
OFFICIAL_COUNT = 155_357_013
DEPTHWISE_COUNT = 91_206_997
CENTERS = 7 * 1024
# The ablated modules at full size, 7 classes: DS attention at stages 3
# and 4; the three Msc heads, one Msc-style head on 1024 dims, a Linear.
DS3, DS4 = 13_175_360, 52_696_192
MSC, SINGLE, LINEAR = 1_918_997, 1_056_775, 7_175


@pytest.fixture(scope='module')
def tiny():
  """A tiny model with random weights and a jitted apply."""
  model = models.get_model('mfer', num_classes=5, **TINY)
  apply = jax.jit(model.apply, static_argnames='train')
  return model, random_variables(model_helpers.init_shapes(model, 32)), apply


@pytest.mark.parametrize(
  ('fields', 'expected'),
  [
    ({}, OFFICIAL_COUNT + CENTERS),
    ({'dsf_centers': False}, OFFICIAL_COUNT),
    ({'ds_conv': 'depthwise'}, DEPTHWISE_COUNT + CENTERS),
    ({'ds_conv': 'depthwise', 'dsf_centers': False}, DEPTHWISE_COUNT),
    # The ablations, two per full-size model to keep the test short.
    (
      {'ds_stages': (4,), 'head': 'single'},
      OFFICIAL_COUNT - DS3 - MSC + SINGLE + CENTERS,
    ),
    (
      {'ds_stages': (3,), 'head': 'linear'},
      OFFICIAL_COUNT - DS4 - MSC + LINEAR + CENTERS,
    ),
    ({'ds_stages': (), 'dsf_centers': False}, OFFICIAL_COUNT - DS3 - DS4),
  ],
)
def test_full_size_param_count(fields, expected):
  model = models.get_model('mfer', num_classes=7, **fields)
  variables = model_helpers.init_shapes(model)
  assert set(variables) == {'params'}
  assert model_helpers.param_count(variables) == expected
  out = jax.eval_shape(
    model.apply, variables, jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32)
  )
  chex.assert_shape(out['logits'], (2, 7))
  heads = 3 if fields.get('head', 'msc') == 'msc' else 1
  chex.assert_shape(out['head_logits'], (heads, 2, 7))
  chex.assert_shape(out['features'], (2, 1024))
  assert ('centers' in out) == fields.get('dsf_centers', True)


def test_official_names():
  params = model_helpers.init_shapes(models.get_model('mfer'), 32)['params']
  assert {'stages_2_27', 'stages_3_3', 'norm', 'dsf_centers'} <= set(params)
  assert {'msc_0', 'msc_1', 'msc_2'} <= set(params)
  assert 'head' not in params and 'stages_1_3' not in params
  attention = params['stages_2_27']
  assert set(attention) == {'key_0', 'key_2', 'value', 'attn', 'norm'}
  assert attention['key_0']['kernel'].shape == (512, 64)
  assert attention['key_2']['kernel'].shape == (64, 512)
  assert attention['attn']['kernel'].shape == (7, 7, 512, 512)
  assert params['stages_3_3']['attn']['kernel'].shape == (7, 7, 1024, 1024)
  for i, width in enumerate((512, 768, 1024)):
    assert params[f'msc_{i}']['fc1']['kernel'].shape == (width, width)
    assert params[f'msc_{i}']['fc2']['kernel'].shape == (width, 7)
  assert params['dsf_centers'].shape == (7, 1024)
  depthwise = model_helpers.init_shapes(
    models.get_model('mfer', ds_conv='depthwise'), 32
  )
  kernel = depthwise['params']['stages_3_3']['attn']['kernel']
  assert kernel.shape == (7, 7, 1, 1024)


def test_head_widths():
  assert mfer.head_widths(1024) == (512, 768, 1024)
  assert mfer.head_widths(128) == (64, 96, 128)


def _gelu(x):
  return 0.5 * x * (1.0 + special.erf(x / np.sqrt(2.0)))


def test_outputs_and_msc_heads(tiny):
  _, variables, apply = tiny
  out = apply(variables, model_helpers.random_images(64))
  assert set(out) == {'logits', 'head_logits', 'features', 'centers'}
  chex.assert_shape(out['logits'], (2, 5))
  chex.assert_shape(out['head_logits'], (3, 2, 5))
  chex.assert_shape(out['features'], (2, 128))
  chex.assert_shape(out['centers'], (5, 128))
  chex.assert_type(list(out.values()), jnp.float32)
  chex.assert_tree_all_finite(out)
  np.testing.assert_array_equal(
    out['centers'], variables['params']['dsf_centers']
  )
  np.testing.assert_allclose(
    out['logits'], out['head_logits'].sum(0), rtol=1e-6, atol=1e-6
  )

  # Each head reads the first 64, 96 and 128 dims of the feature.
  features = np.asarray(out['features'], np.float64)
  for i, width in enumerate((64, 96, 128)):
    head = variables['params'][f'msc_{i}']
    hidden = features[:, :width] @ head['fc1']['kernel'] + head['fc1']['bias']
    logits = _gelu(hidden) @ head['fc2']['kernel'] + head['fc2']['bias']
    np.testing.assert_allclose(out['head_logits'][i], logits, atol=1e-4)


def _ablated(variables, model):
  """`variables` restricted to the modules `model` has."""
  template = model_helpers.init_shapes(model, 32)['params']
  return {'params': {k: variables['params'][k] for k in template}}


def test_ds_stages_switch_the_attention(tiny):
  """Without stage 3's DS attention the same weights give other logits."""
  _, variables, apply = tiny
  images = model_helpers.random_images(64)
  model = models.get_model('mfer', num_classes=5, ds_stages=(4,), **TINY)
  ablated = _ablated(variables, model)
  assert 'stages_2_2' not in ablated['params']
  out, state = jax.jit(model.apply, static_argnames='mutable')(
    ablated, images, mutable='intermediates'
  )
  assert set(state['intermediates']) == {'stages_3_1'}
  full = apply(variables, images)
  assert np.abs(out['logits'] - full['logits']).max() > 1e-3


class _Classifier(nn.Module):
  head: str

  @nn.compact
  def __call__(self, features):
    return mfer.classify(features, self.head, 5)


@pytest.mark.parametrize('head', ['single', 'linear'])
def test_classifiers(head):
  """Msc, or one head on the whole feature (the Msc ablations)."""
  features = np.random.default_rng(0).normal(size=(2, 128)).astype(np.float32)
  layer = _Classifier(head)
  params = jax.jit(layer.init)(jax.random.key(0), features)['params']
  got = np.asarray(layer.apply({'params': params}, features))
  features = features.astype(np.float64)

  def mlp(p, x):
    hidden = _gelu(x @ p['fc1']['kernel'] + p['fc1']['bias'])
    return hidden @ p['fc2']['kernel'] + p['fc2']['bias']

  if head == 'msc':
    want = [
      mlp(params[f'msc_{i}'], features[:, :w])
      for i, w in enumerate((64, 96, 128))
    ]
  elif head == 'single':
    want = [mlp(params['head'], features)]
  else:
    want = [features @ params['head']['kernel'] + params['head']['bias']]
  assert set(params) == (
    {'msc_0', 'msc_1', 'msc_2'} if head == 'msc' else {'head'}
  )
  np.testing.assert_allclose(got, np.stack(want), rtol=1e-5, atol=1e-5)


def test_init():
  # Init is slow to compile on CPU; the parts show every initialiser.
  key = jax.random.key(0)
  centers = np.asarray(mfer.centers_init(key, (5, 128)))
  bound = np.sqrt(2.0) * np.sqrt(6.0 / (5 + 128))  # xavier_uniform, gain √2
  assert np.abs(centers).max() <= bound
  np.testing.assert_allclose(centers.std(), bound / np.sqrt(3.0), rtol=0.15)
  # The Msc heads keep PyTorch's default Linear init.
  head = jax.jit(mfer.MscHead(5).init)(key, np.zeros((1, 128), np.float32))
  head = head['params']
  assert np.abs(head['fc1']['kernel']).max() <= 128**-0.5
  assert np.abs(head['fc1']['bias']).max() > 0
  # DS attention starts like the trunk: std .02, zero bias.
  x = np.zeros((1, 4, 4, 64), np.float32)
  attention = jax.jit(ds_attention.DSAttention().init)(key, x)['params']
  np.testing.assert_allclose(
    np.std(attention['attn']['kernel']), 0.02, rtol=0.05
  )
  np.testing.assert_array_equal(attention['value']['bias'], 0.0)
  np.testing.assert_array_equal(attention['norm']['scale'], 1.0)

  no_centers = models.get_model('mfer', dsf_centers=False, **TINY)
  assert (
    'dsf_centers' not in model_helpers.init_shapes(no_centers, 32)['params']
  )


def test_drop_path_only_in_training(tiny):
  model, variables, apply = tiny
  assert model.drop_path_rate == 0.25  # MFER's train.py
  images = model_helpers.random_images(64)
  model_helpers.assert_stochastic_only_in_training(apply, variables, images)


def test_bfloat16_compute_keeps_float32_params_and_outputs():
  model = models.get_model('mfer', dtype=jnp.bfloat16)
  variables = model_helpers.init_shapes(model, 64)
  assert {x.dtype for x in jax.tree.leaves(variables)} == {np.dtype('float32')}
  out, state = jax.eval_shape(
    lambda v, x: model.apply(v, x, capture_intermediates=True),
    variables,
    jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32),
  )
  assert {x.dtype for x in out.values()} == {np.dtype('float32')}
  (attended,) = state['intermediates']['stages_3_3']['__call__']
  assert attended.dtype == jnp.bfloat16


def _conv(x, kernel, bias):
  """'Same' conv of NHWC x with an HWIO kernel (dense or depthwise)."""
  size = kernel.shape[0]
  pad = size // 2
  padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  height, width = x.shape[1:3]
  out = np.zeros(x.shape[:3] + (kernel.shape[-1],))
  for i, j in itertools.product(range(size), range(size)):
    patch = padded[:, i : i + height, j : j + width]
    if kernel.shape[2] == 1:  # depthwise
      out += patch * kernel[i, j, 0]
    else:
      out += patch @ kernel[i, j]
  return out + bias


def _layer_norm(x, params, eps):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * params['scale'] + params['bias']


def _ds_attention_reference(x, p, order, residual):
  """The DS attention equations in float64 numpy."""

  def linear(v, name):
    return v @ p[name]['kernel'] + p[name]['bias']

  value = linear(x, 'value')
  key = linear(_gelu(linear(x, 'key_0')), 'key_2') * x
  query = _conv(x, p['attn']['kernel'], p['attn']['bias'])
  if order == 'code':
    query = _layer_norm(_gelu(query), p['norm'], 1e-5)
  else:
    query = _gelu(_layer_norm(query, p['norm'], 1e-5))
  batch, height, width, channels = x.shape
  scores = (query + key).reshape(batch, height * width, channels)
  weights = np.exp(scores - scores.max(1, keepdims=True))
  weights /= weights.sum(1, keepdims=True)
  out = weights.reshape(x.shape) * value
  return out + x if residual else out


@pytest.mark.parametrize(
  ('conv', 'order', 'residual'),
  list(itertools.product(ds_attention.CONVS, ds_attention.ORDERS, (1, 0))),
)
def test_ds_attention_matches_equations(conv, order, residual):
  layer = ds_attention.DSAttention(
    conv=conv, order=order, residual=bool(residual)
  )
  x = np.random.default_rng(1).normal(size=(2, 5, 6, 16)).astype(np.float32)
  variables = random_variables(jax.eval_shape(layer.init, jax.random.key(0), x))
  out = layer.apply(variables, x)
  expected = _ds_attention_reference(
    x.astype(np.float64), variables['params'], order, residual
  )
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
  # The attention is not uniform, so the softmax is exercised.
  weights = _ds_attention_reference(
    x.astype(np.float64), variables['params'], order, False
  )
  assert np.ptp(weights) > 0.1


def test_ds_attention_bfloat16():
  layer = ds_attention.DSAttention(dtype=jnp.bfloat16)
  x = np.random.default_rng(2).normal(size=(2, 4, 4, 16)).astype(np.float32)
  variables = random_variables(jax.eval_shape(layer.init, jax.random.key(0), x))
  assert {v.dtype for v in jax.tree.leaves(variables)} == {np.dtype('float32')}
  out = layer.apply(variables, jnp.asarray(x, jnp.bfloat16))
  assert out.dtype == jnp.bfloat16
  expected = ds_attention.DSAttention().apply(variables, x)
  np.testing.assert_allclose(
    np.asarray(out, np.float32), expected, rtol=0.05, atol=0.05
  )


@pytest.mark.parametrize(
  ('fields', 'message'),
  [
    ({'ds_conv': 'sideways'}, r"MFER ds_conv='sideways'.*'dense', 'depth"),
    ({'ds_order': 'figure'}, r"MFER ds_order='figure'.*'code', 'paper'"),
    ({'ds_kernel_size': 6}, 'MFER ds_kernel_size=6 must be odd'),
    ({'dims': (16, 32, 64, 130)}, r'dims\[-1\]=130 must be divisible by 4'),
    ({'depths': (1, 1, 1)}, 'has 4 stages'),
    ({'drop_path_rate': -0.1}, r'drop_path_rate=-0\.1'),
    ({'ds_stages': (3, 5)}, r'ds_stages=\(3, 5\); pick distinct stages'),
    ({'head': 'mlp'}, r"MFER head='mlp'.*'msc', 'single', 'linear'"),
  ],
)
def test_bad_fields(fields, message):
  model = models.get_model('mfer', **{**TINY, **fields})
  with pytest.raises(ValueError, match=message):
    model_helpers.init_shapes(model, 32)


def test_bad_input_and_few_channels():
  with pytest.raises(ValueError, match='NHWC'):
    jax.eval_shape(
      models.get_model('mfer', **TINY).init,
      jax.random.key(0),
      jax.ShapeDtypeStruct((2, 3, 64, 64), jnp.float32),
    )
  with pytest.raises(ValueError, match="DSAttention conv='wide'"):
    jax.eval_shape(
      ds_attention.DSAttention(conv='wide').init,
      jax.random.key(0),
      jax.ShapeDtypeStruct((1, 4, 4, 16), jnp.float32),
    )
  with pytest.raises(ValueError, match='at least 8 channels'):
    jax.eval_shape(
      ds_attention.DSAttention().init,
      jax.random.key(0),
      jax.ShapeDtypeStruct((1, 4, 4, 4), jnp.float32),
    )


def test_registry():
  assert 'mfer' in models.list_models()
  model = models.get_model('mfer', num_classes=8)
  assert isinstance(model, mfer.MFER)
  assert (model.ds_conv, model.ds_order, model.ds_residual) == (
    'dense',
    'code',
    True,
  )

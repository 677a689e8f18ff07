"""Tests for the ConvNeXt backbone (no torch needed)."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from ferjax import models
from ferjax.layers import torch_nn
from ferjax.models.backbones import convnext
from tests import model_helpers

TINY = {'depths': (1, 1, 2, 1), 'dims': (16, 32, 64, 128)}


def random_variables(template, seed: int = 0):
  """Random values for a variable template; far cheaper than `init`.

  Kernels have scale 1 / sqrt(fan_in) so that activations stay of order
  one; LayerNorm affines and layer scales are random so that converting or
  dropping them matters.
  """
  rng = np.random.default_rng(seed)
  out = {}
  for key, leaf in traverse_util.flatten_dict(dict(template)).items():
    shape, name = tuple(leaf.shape), key[-1]
    if name == 'kernel':
      value = rng.normal(0.0, np.prod(shape[:-1]) ** -0.5, shape)
    elif name == 'scale':
      value = 1.0 + rng.normal(0.0, 0.2, shape)
    elif name == 'gamma':
      value = rng.normal(0.0, 0.5, shape)
    else:
      value = rng.normal(0.0, 0.1, shape)
    out[key] = np.asarray(value, np.float32)
  return traverse_util.unflatten_dict(out)


@pytest.fixture(scope='module')
def tiny():
  """A tiny model with stochastic depth, random weights, a jitted apply."""
  model = models.get_model(
    'convnext', num_classes=5, drop_path_rate=0.5, **TINY
  )
  apply = jax.jit(model.apply, static_argnames='train')
  return model, random_variables(model_helpers.init_shapes(model, 32)), apply


@pytest.mark.parametrize(
  ('num_classes', 'expected'), [(1000, 88_591_464), (7, 87_573_639)]
)
def test_convnext_base_param_count(num_classes, expected):
  # 88,591,464 is ConvNeXt-B's published count with the ImageNet-1k head.
  model = models.get_model('convnext_base', num_classes=num_classes)
  variables = model_helpers.init_shapes(model)
  assert set(variables) == {'params'}
  assert model_helpers.param_count(variables) == expected
  out = jax.eval_shape(
    model.apply, variables, jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32)
  )
  chex.assert_shape(out['logits'], (2, num_classes))
  chex.assert_shape(out['features'], (2, 1024))


def test_official_names():
  params = model_helpers.init_shapes(models.get_model('convnext_base'), 32)[
    'params'
  ]
  assert set(params) == {
    'norm',
    'head',
    *(f'downsample_layers_{i}_{j}' for i in range(4) for j in range(2)),
    *(
      f'stages_{i}_{j}'
      for i, depth in enumerate(convnext.BASE_DEPTHS)
      for j in range(depth)
    ),
  }
  block = params['stages_2_26']
  assert set(block) == {'dwconv', 'norm', 'pwconv1', 'pwconv2', 'gamma'}
  assert block['dwconv']['kernel'].shape == (7, 7, 1, 512)
  assert block['pwconv1']['kernel'].shape == (512, 2048)
  assert block['gamma'].shape == (512,)
  assert params['downsample_layers_0_0']['kernel'].shape == (4, 4, 3, 128)
  assert params['downsample_layers_0_1']['scale'].shape == (128,)
  assert params['downsample_layers_3_0']['scale'].shape == (512,)
  assert params['downsample_layers_3_1']['kernel'].shape == (2, 2, 512, 1024)


def test_init_as_official():
  # Init is slow to compile on CPU; one block shows every initialiser.
  x = np.zeros((1, 4, 4, 64), np.float32)
  params = jax.jit(convnext.Block().init)(jax.random.key(0), x)['params']
  kernels = np.concatenate(
    [np.ravel(params[name]['kernel']) for name in ('pwconv1', 'pwconv2')]
  )
  np.testing.assert_allclose(kernels.std(), 0.02, rtol=0.05)
  np.testing.assert_array_equal(params['pwconv1']['bias'], 0.0)
  np.testing.assert_array_equal(params['dwconv']['bias'], 0.0)
  np.testing.assert_array_equal(params['gamma'], np.float32(1e-6))
  np.testing.assert_array_equal(params['norm']['scale'], 1.0)

  no_scale = models.get_model('convnext', layer_scale_init=0.0, **TINY)
  assert (
    'gamma'
    not in model_helpers.init_shapes(no_scale, 32)['params']['stages_0_0']
  )


def test_forward_shapes_and_dtypes(tiny):
  _, variables, apply = tiny
  out = apply(variables, model_helpers.random_images(64))
  assert set(out) == {'logits', 'features'}
  chex.assert_shape(out['logits'], (2, 5))
  chex.assert_shape(out['features'], (2, 128))
  chex.assert_type([out['logits'], out['features']], jnp.float32)
  chex.assert_tree_all_finite(out)
  # Non-square inputs and any side >= 32 work.
  out = apply(variables, model_helpers.random_images(40)[:, :, :36])
  chex.assert_shape(out['logits'], (2, 5))


def test_drop_path_function():
  x = jnp.ones((64, 3, 3, 2))
  y = torch_nn.drop_path(x, 0.25, jax.random.key(0))
  per_sample = np.asarray(y).reshape(64, -1)
  # Whole samples are dropped or kept, and kept ones scaled by 1 / 0.75.
  assert set(np.unique(per_sample)) <= {0.0, np.float32(1 / 0.75)}
  assert (per_sample.min(1) == per_sample.max(1)).all()
  assert 0 < (per_sample[:, 0] == 0).sum() < 64
  np.testing.assert_array_equal(
    y, torch_nn.drop_path(x, 0.25, jax.random.key(0))
  )


def test_drop_path_rates_rise_linearly():
  rates = convnext.drop_path_rates((1, 1, 2, 1), 0.4)
  np.testing.assert_allclose(rates, (0.0, 0.1, 0.2, 0.3, 0.4))
  assert len(convnext.drop_path_rates(convnext.BASE_DEPTHS, 0.25)) == 36


def test_drop_path_only_in_training(tiny):
  model, variables, apply = tiny
  images = model_helpers.random_images(64)
  model_helpers.assert_stochastic_only_in_training(apply, variables, images)
  with pytest.raises(Exception, match='dropout'):
    jax.eval_shape(
      functools.partial(model.apply, train=True), variables, images
    )


def test_bfloat16_compute_keeps_float32_params_and_outputs():
  model = models.get_model('convnext_base', dtype=jnp.bfloat16)
  variables = model_helpers.init_shapes(model, 64)
  assert {x.dtype for x in jax.tree.leaves(variables)} == {np.dtype('float32')}
  out, state = jax.eval_shape(
    lambda v, x: model.apply(v, x, capture_intermediates=True),
    variables,
    jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32),
  )
  assert {x.dtype for x in out.values()} == {np.dtype('float32')}
  (last_block,) = state['intermediates']['stages_3_2']['__call__']
  assert last_block.dtype == jnp.bfloat16


@pytest.mark.parametrize(
  ('fields', 'message'),
  [
    ({'depths': (1, 1, 1), 'dims': (8, 16, 32)}, 'has 4 stages'),
    ({'depths': (1, 1, 0, 1), 'dims': (8, 16, 32, 64)}, 'must be positive'),
    ({'drop_path_rate': 1.0}, r'drop_path_rate=1\.0'),
  ],
)
def test_bad_fields(fields, message):
  model = models.get_model('convnext', **{**TINY, **fields})
  with pytest.raises(ValueError, match=message):
    model_helpers.init_shapes(model, 32)


def test_bad_inputs():
  model = models.get_model('convnext', **TINY)
  with pytest.raises(ValueError, match='NHWC'):
    jax.eval_shape(
      model.init,
      jax.random.key(0),
      jax.ShapeDtypeStruct((2, 3, 32, 32), jnp.float32),
    )
  with pytest.raises(ValueError, match='28x28 input.*at least 32'):
    model_helpers.init_shapes(model, 28)


def test_registry():
  assert {'convnext', 'convnext_base'} <= set(models.list_models())
  model = models.get_model('convnext_base')
  assert isinstance(model, convnext.ConvNeXt)
  assert tuple(model.depths) == (3, 3, 27, 3)
  assert model.num_classes == 7

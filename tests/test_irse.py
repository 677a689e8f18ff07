"""Tests for the face.evoLVe IR / IR-SE networks (shapes, fields, modes).

Full-size networks are checked by `jax.eval_shape`; the runs use one or two
stages on small inputs. Parity with PyTorch is in `test_irse_torch.py`.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from ferjax import models
from ferjax.models.backbones import irse
from tests import model_helpers

# Parameters of face.evoLVe's Backbone (112 px) as counted on the PyTorch
# reference layout (tests/torch_irse.py), plus a 7-class head of
# 512 * 7 + 7 = 3,591.
HEAD_7 = 3_591
IR50_PARAMS = 43_574_976
IR_SE50_PARAMS = 43_797_696
IR100_PARAMS = 65_129_792
IR152_PARAMS = 70_737_600
IR50_224_PARAMS = 82_110_144  # output_layer reads a 14x14 map
# IRTrunk(stages=3) / (stages=4): input layer and 21 / 24 units of IR-50.
IR50_TRUNK3_PARAMS = 17_611_968
IR50_TRUNK4_PARAMS = 30_727_360
# BatchNorm mean and var of IR-50: 54 BatchNorms.
IR50_BATCH_STATS = 26_368


def _shapes(module, size=112, width=None, batch=2, dtype=jnp.float32):
  images = jax.ShapeDtypeStruct((batch, size, width or size, 3), dtype)
  variables = jax.eval_shape(module.init, jax.random.key(0), images)
  return variables, jax.eval_shape(module.apply, variables, images)


@pytest.mark.parametrize(
  ('fields', 'expected'),
  [
    ({}, IR50_PARAMS),
    ({'mode': 'ir_se'}, IR_SE50_PARAMS),
    ({'num_layers': 100}, IR100_PARAMS),
    ({'num_layers': 152}, IR152_PARAMS),
    ({'input_size': 224}, IR50_224_PARAMS),
  ],
)
def test_full_network_param_count_and_shapes(fields, expected):
  model = models.get_model('irse', num_classes=7, **fields)
  side = fields.get('input_size', 112)
  variables, out = _shapes(model, side)
  assert model_helpers.param_count(variables['params']) == expected + HEAD_7
  chex.assert_shape(out['logits'], (2, 7))
  chex.assert_shape(out['features'], (2, irse.EMBEDDING_SIZE))
  assert out['logits'].dtype == out['features'].dtype == jnp.float32


def test_ir50_is_irse_50():
  variables, _ = _shapes(models.get_model('ir50'))
  assert model_helpers.param_count(variables['params']) == IR50_PARAMS + HEAD_7
  assert model_helpers.param_count(variables['batch_stats']) == (
    IR50_BATCH_STATS
  )
  params = variables['params']
  assert set(params) == {
    *(f'input_layer_{i}' for i in range(3)),
    *(f'body_{i}' for i in range(24)),
    'output_layer_0',
    'output_layer_3',
    'output_layer_4',
    'head',
  }
  chex.assert_shape(params['output_layer_3']['kernel'], (512 * 7 * 7, 512))
  chex.assert_shape(params['head']['kernel'], (512, 7))


@pytest.mark.parametrize(
  ('stages', 'shape', 'count'),
  [
    (1, (2, 56, 56, 64), None),
    (2, (2, 28, 28, 128), None),
    (3, (2, 14, 14, 256), IR50_TRUNK3_PARAMS),
    (4, (2, 7, 7, 512), IR50_TRUNK4_PARAMS),
  ],
)
def test_trunk_stage_shapes_at_112(stages, shape, count):
  variables, out = _shapes(irse.IRTrunk(stages=stages))
  chex.assert_shape(out, shape)
  assert out.dtype == jnp.float32
  units = irse.num_units(50, stages)
  assert set(variables['params']) == {
    *(f'input_layer_{i}' for i in range(3)),
    *(f'body_{i}' for i in range(units)),
  }
  if count is not None:
    assert model_helpers.param_count(variables['params']) == count


def test_unit_layout():
  variables, _ = _shapes(irse.IRTrunk(mode='ir_se', stages=2), size=32)
  params = variables['params']
  # Stage 1 keeps 64 channels: a subsampling shortcut without parameters.
  assert set(params['body_0']) == {f'res_layer_{i}' for i in range(6)}
  assert set(params['body_3']) == {
    *(f'res_layer_{i}' for i in range(6)),
    'shortcut_layer_0',
    'shortcut_layer_1',
  }
  chex.assert_shape(
    params['body_3']['shortcut_layer_0']['kernel'], (1, 1, 64, 128)
  )
  chex.assert_shape(params['body_3']['res_layer_1']['kernel'], (3, 3, 64, 128))
  chex.assert_shape(params['body_3']['res_layer_2']['negative_slope'], (128,))
  chex.assert_shape(
    params['body_3']['res_layer_5']['fc1']['kernel'], (1, 1, 128, 8)
  )
  chex.assert_shape(
    params['body_3']['res_layer_5']['fc2']['kernel'], (1, 1, 8, 128)
  )
  assert set(variables['batch_stats']['body_3']) == {
    'res_layer_0',
    'res_layer_4',
    'shortcut_layer_1',
  }


def test_trunk_takes_any_size():
  # Strided convs with padding 1 and the subsample both give ceil(H / 2).
  _, out = _shapes(irse.IRTrunk(stages=2), size=40, width=25)
  chex.assert_shape(out, (2, 10, 7, 128))


def test_bfloat16_compute_keeps_float32_params_and_outputs():
  model = models.get_model('ir50', dtype=jnp.bfloat16)
  variables, out = _shapes(model)
  for leaf in jax.tree.leaves(variables):
    assert leaf.dtype == jnp.float32
  assert out['logits'].dtype == out['features'].dtype == jnp.float32

  images = model_helpers.random_images(16)
  f32 = irse.IRTrunk(stages=1)
  variables = f32.init(jax.random.key(0), images)
  low = irse.IRTrunk(stages=1, dtype=jnp.bfloat16).apply(variables, images)
  assert low.dtype == jnp.float32
  np.testing.assert_allclose(
    low, f32.apply(variables, images), rtol=0, atol=0.1
  )


def test_initialisation():
  variables = irse.IRTrunk(stages=1).init(
    jax.random.key(0), model_helpers.random_images(16)
  )
  params = variables['params']
  np.testing.assert_array_equal(params['input_layer_2']['negative_slope'], 0.25)
  kernel = params['body_1']['res_layer_3']['kernel']
  # xavier_uniform_: U(+-sqrt(6 / (fan_in + fan_out))), fans 9 * 64 each.
  bound = (6 / (2 * 9 * 64)) ** 0.5
  assert bound * 0.95 < np.abs(kernel).max() <= bound
  np.testing.assert_array_equal(params['body_1']['res_layer_0']['scale'], 1.0)
  np.testing.assert_array_equal(
    variables['batch_stats']['body_1']['res_layer_0']['var'], 1.0
  )


def test_prelu():
  x = jnp.asarray([[-2.0, 3.0], [1.0, -4.0]])
  variables = {'params': {'negative_slope': jnp.asarray([0.5, -0.25])}}
  y = irse.PReLU().apply(variables, x)
  np.testing.assert_allclose(y, [[-1.0, 3.0], [1.0, 1.0]])


def test_batch_norm_statistics_update_only_in_training():
  model = irse.IRTrunk(stages=1)
  images = model_helpers.random_images(16)
  variables = model.init(jax.random.key(0), images)
  evaluated = model.apply(variables, images)
  np.testing.assert_array_equal(evaluated, model.apply(variables, images))

  trained, state = model.apply(
    variables, images, train=True, mutable=['batch_stats']
  )
  chex.assert_trees_all_equal_structs(
    state['batch_stats'], variables['batch_stats']
  )
  old = variables['batch_stats']['body_2']['res_layer_4']
  new = state['batch_stats']['body_2']['res_layer_4']
  assert np.abs(new['mean'] - old['mean']).max() > 1e-4
  assert np.abs(trained - evaluated).max() > 1e-3


class _OutputLayer(nn.Module):
  @nn.compact
  def __call__(self, x, train=False):
    return irse.output_layer(x, dropout_rate=0.5, train=train)


def test_output_layer_dropout_only_in_training():
  x = jnp.asarray(
    np.random.default_rng(0).normal(size=(4, 7, 7, 512)), jnp.float32
  )
  layer = _OutputLayer()
  variables = layer.init(jax.random.key(0), x)

  def train(seed):
    out, _ = layer.apply(
      variables,
      x,
      train=True,
      rngs={'dropout': jax.random.key(seed)},
      mutable=['batch_stats'],
    )
    return out

  chex.assert_shape(train(0), (4, 512))
  np.testing.assert_array_equal(train(0), train(0))
  assert np.abs(train(1) - train(0)).max() > 1e-3
  np.testing.assert_array_equal(
    layer.apply(variables, x), layer.apply(variables, x)
  )


def test_torch_flatten_order():
  """output_layer_3 reads the map in torch's (C, H, W) order."""
  x = jnp.zeros((1, 7, 7, 512)).at[0, 1, 2, 3].set(1.0)  # (h, w, c)
  layer = _OutputLayer()
  variables = layer.init(jax.random.key(0), x)
  kernel = np.zeros((512 * 49, 512), np.float32)
  kernel[3 * 49 + 1 * 7 + 2, 0] = 1.0  # torch's flat index c * 49 + h * 7 + w
  params = {
    **variables['params'],
    'output_layer_3': {'kernel': kernel, 'bias': np.zeros(512, np.float32)},
  }
  # Fresh BatchNorms (scale 1, running var 1) pass the value through.
  out = layer.apply({**variables, 'params': params}, x)
  np.testing.assert_allclose(out[0], np.eye(512)[0], rtol=0, atol=1e-4)


@pytest.mark.parametrize(
  ('fields', 'match'),
  [
    ({'num_layers': 34}, r'num_layers=34 .*\[50, 100, 152\]'),
    ({'mode': 'se'}, r"mode='se'; use one of \('ir', 'ir_se'\)"),
    ({'input_size': 128}, r'input_size=128.*\(112, 224\)'),
    ({'dropout_rate': 1.0}, r'dropout_rate=1.0 must lie in \[0, 1\)'),
  ],
)
def test_bad_fields(fields, match):
  with pytest.raises(ValueError, match=match):
    _shapes(models.get_model('irse', **fields))


@pytest.mark.parametrize('stages', [0, 5])
def test_bad_stages(stages):
  with pytest.raises(ValueError, match=rf'stages={stages}; run 1 to 4'):
    _shapes(irse.IRTrunk(stages=stages))


def test_bad_inputs():
  with pytest.raises(ValueError, match=r'takes 112x112 images.*got 96x96'):
    _shapes(models.get_model('ir50'), size=96)
  with pytest.raises(ValueError, match=r'input_size=224 takes 224x224'):
    _shapes(models.get_model('ir50', input_size=224))
  images = jax.ShapeDtypeStruct((2, 112, 112), jnp.float32)
  with pytest.raises(ValueError, match=r'IRTrunk expects \(B, H, W, 3\)'):
    jax.eval_shape(irse.IRTrunk().init, jax.random.key(0), images)
  with pytest.raises(ValueError, match='pixel_mean has 2 values'):
    _shapes(irse.IRTrunk(pixel_mean=(0.5, 0.5)), size=16)

"""Tests for the GCSA / IAL model and its channel attention (no torch)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import traverse_util

from ferjax import models
from ferjax.layers import gcsa_attention
from ferjax.models import gcsa
from tests import model_helpers
from tests.test_convnext import random_variables

# The 7-class model at 16 x 112 x 112: IAL's live parameters, and GCSA's.
GCA_COUNT = 18_936_775
GCSA_COUNT = GCA_COUNT + 2 * 128 * 8 + 2 * 256 * 16
# The GC gate layers of layer2's block (fc1_0, fc2_0), and its SE layers.
LAYER2_GATE = 2 * 128 * 8
FULL = (2, 16, 112, 112, 3)
# A tiny clip: 32 px gives 2x2 layer3 maps and one layer4 cell (D = 256).
TINY_FRAMES, TINY_SIZE = 4, 32


def clips(batch=2, frames=TINY_FRAMES, size=TINY_SIZE, seed=0):
  rng = np.random.default_rng(seed)
  return rng.uniform(size=(batch, frames, size, size, 3)).astype(np.float32)


def random_model_variables(template, seed=0):
  """`random_variables` with positive BatchNorm variances."""
  variables = random_variables(template, seed)
  flat = traverse_util.flatten_dict(variables)
  rng = np.random.default_rng(seed + 1)
  for key, value in flat.items():
    if key[-1] == 'var':
      flat[key] = rng.uniform(0.5, 2.0, value.shape).astype(np.float32)
  return traverse_util.unflatten_dict(flat)


def shapes(model, shape):
  return jax.eval_shape(
    model.init, jax.random.key(0), jax.ShapeDtypeStruct(shape, jnp.float32)
  )


@pytest.fixture(scope='module')
def tiny():
  """The default (GCSA) model on tiny clips, random weights, jitted apply."""
  model = models.get_model('gcsa', num_classes=5, num_frames=TINY_FRAMES)
  variables = random_model_variables(shapes(model, clips().shape))
  apply = jax.jit(model.apply, static_argnames=('train', 'mutable'))
  return model, variables, apply


@pytest.mark.parametrize(
  ('fields', 'expected'),
  [
    ({'attention': 'gca'}, GCA_COUNT),
    ({'attention': 'gcsa'}, GCSA_COUNT),
    # The SE gate takes the GC gate's place, at the same reduction.
    ({'attention': 'se'}, GCA_COUNT),
    ({'attention_stages': (3,)}, GCSA_COUNT - 2 * LAYER2_GATE),
    ({'attention_stages': ()}, GCA_COUNT - LAYER2_GATE - 2 * 256 * 16),
    ({'se_reduction': 8}, GCA_COUNT + 2 * 128 * 16 + 2 * 256 * 32),
  ],
)
def test_full_size_param_count_and_outputs(fields, expected):
  model = models.get_model('gcsa', **fields)
  variables = shapes(model, FULL)
  assert set(variables) == {'params', 'batch_stats'}
  assert model_helpers.param_count(variables['params']) == expected
  out = jax.eval_shape(
    model.apply, variables, jax.ShapeDtypeStruct(FULL, jnp.float32)
  )
  assert set(out) == {'logits', 'aux_logits', 'features'}
  chex.assert_shape(out['logits'], (2, 7))
  chex.assert_shape(out['aux_logits'], (2, 2, 7))
  chex.assert_shape(out['features'], (2, 4096))
  chex.assert_type(list(out.values()), jnp.float32)


def test_full_size_layout():
  params = shapes(models.get_model('gcsa'), FULL)['params']
  # IAL's global-conv kernels 256 // C * 7: the whole 14x14 and 7x7 maps.
  assert params['layer2_0']['gc_0']['kernel'].shape == (14, 14, 1, 128)
  assert params['layer3_0']['gc_0']['kernel'].shape == (7, 7, 1, 256)
  assert params['layer2_0']['fc1_0']['kernel'].shape == (1, 1, 128, 8)
  assert params['layer3_0']['AUX_fc_0']['kernel'].shape == (256, 512)
  assert params['layer3_0']['AUX_fc_1']['kernel'].shape == (512, 7)
  assert params['layer3_0']['se_fc1']['kernel'].shape == (256, 16)
  assert params['pos_embedding_pos'].shape == (1, 16, 256)
  assert params['pos_embedding'].shape == (1, 16, 4096)
  layer = params['temporal_transformer']['layers_1']
  assert set(layer) == {'attn_norm', 'attn', 'ff_norm', 'ff'}
  assert layer['attn']['to_qkv']['kernel'].shape == (4096, 384)
  assert set(layer['attn']['to_qkv']) == {'kernel'}
  assert layer['attn']['to_out_0']['kernel'].shape == (128, 4096)
  assert layer['ff']['net_0']['kernel'].shape == (4096, 512)
  static = params['pos_transformer']['layers_0']['ff']['net_0']['kernel']
  assert static.shape == (256, 256)
  assert params['fc_f']['kernel'].shape == (4096, 7)
  assert {'conv1_0', 'conv1_1', 'conv1_3', 'bn1', 'layer1_0'} <= set(params)
  assert {'layer4_0', 'layer4_1', 'layer4_2', 'patch_embedding_0'} <= set(
    params
  )
  # No dead parameters, and no attention in the 64-channel block.
  assert set(params['layer1_0']) == {'conv1', 'bn1', 'conv2', 'bn2'}
  gca = shapes(models.get_model('gcsa', attention='gca'), FULL)['params']
  assert not {'se_fc1', 'se_fc2'} & set(gca['layer2_0'])


def test_outputs_and_head(tiny):
  _, variables, apply = tiny
  out = apply(variables, clips())
  chex.assert_shape(out['logits'], (2, 5))
  chex.assert_shape(out['aux_logits'], (2, 2, 5))
  chex.assert_shape(out['features'], (2, 256))
  chex.assert_type(list(out.values()), jnp.float32)
  chex.assert_tree_all_finite(out)
  head = variables['params']['fc_f']
  want = np.asarray(out['features']) @ head['kernel'] + head['bias']
  np.testing.assert_allclose(out['logits'], want, rtol=1e-5, atol=1e-5)
  assert np.ptp(out['logits']) > 0.1


def test_clips_are_independent(tiny):
  """Frames are stacked frame-major; each clip's result is its own."""
  _, variables, apply = tiny
  both = apply(variables, clips())
  first = apply(variables, clips()[:1])
  chex.assert_trees_all_close(
    jax.tree.map(lambda x: x[..., :1, :] if x.ndim == 3 else x[:1], both),
    first,
    rtol=1e-5,
    atol=1e-5,
  )
  swapped = apply(variables, clips()[:, ::-1])
  assert np.abs(swapped['logits'] - both['logits']).max() > 1e-4


def test_batch_norm_updates_only_in_training(tiny):
  _, variables, apply = tiny
  out, state = apply(variables, clips(), train=True, mutable=('batch_stats',))
  assert set(state) == {'batch_stats'}
  changed = jax.tree.map(
    lambda a, b: bool(np.any(np.asarray(a) != b)),
    variables['batch_stats'],
    dict(state['batch_stats']),
  )
  assert all(jax.tree.leaves(changed))
  evaluated = apply(variables, clips())
  assert np.abs(out['logits'] - evaluated['logits']).max() > 1e-4
  np.testing.assert_array_equal(
    apply(variables, clips())['logits'], evaluated['logits']
  )


def test_bfloat16_compute_keeps_float32_params_and_outputs():
  model = models.get_model('gcsa', dtype=jnp.bfloat16)
  variables = shapes(model, FULL)
  assert {x.dtype for x in jax.tree.leaves(variables)} == {np.dtype('float32')}
  out, state = jax.eval_shape(
    lambda v, x: model.apply(v, x, capture_intermediates=True),
    variables,
    jax.ShapeDtypeStruct(FULL, jnp.float32),
  )
  assert {x.dtype for x in out.values()} == {np.dtype('float32')}
  (block,) = state['intermediates']['layer3_0']['__call__']
  assert block[0].dtype == jnp.bfloat16
  assert block[1].dtype == jnp.float32  # the auxiliary logits
  (tokens,) = state['intermediates']['temporal_transformer']['__call__']
  assert tokens.dtype == jnp.bfloat16


def test_temporal_coupling_hand_example():
  # Two clips of two frames, two channels: clip means (2, 1) and (1, 1).
  w = np.array([[1.0, 2.0], [3.0, 0.0], [1.0, 1.0], [1.0, 1.0]], np.float32)
  want = np.sqrt(np.array([[2.0, 2.0], [6.0, 0.0], [1.0, 1.0], [1.0, 1.0]]))
  got = gcsa_attention.temporal_coupling(w, num_frames=2, eps=0.0)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  got = gcsa_attention.temporal_coupling(w, num_frames=2)
  np.testing.assert_allclose(got[1, 1], np.sqrt(1e-5), rtol=1e-5)
  # With T = 4 all four rows are one clip: means (1.5, 1).
  got = gcsa_attention.temporal_coupling(w, num_frames=4, eps=0.0)
  np.testing.assert_allclose(got[0], np.sqrt([1.5, 2.0]), rtol=1e-6)


def test_fuse():
  w_gc, w_se = np.array([0.5, 2.0, 1.0]), np.array([0.5, 0.5, 0.0])
  np.testing.assert_allclose(
    gcsa_attention.fuse(w_gc, w_se, 'product'), [0.25, 1.0, 0.0]
  )
  np.testing.assert_allclose(
    gcsa_attention.fuse(w_gc, w_se, 'geometric'), [0.5, 1.0, 0.0]
  )
  np.testing.assert_allclose(
    gcsa_attention.fuse(w_gc, w_se, 'mean'), [0.5, 1.25, 0.5]
  )
  with pytest.raises(ValueError, match="fusion='max'"):
    gcsa_attention.fuse(w_gc, w_se, 'max')


class _Attention(nn.Module):
  gate: gcsa_attention.Gate

  @nn.compact
  def __call__(self, y):
    return gcsa_attention.channel_attention(
      y, num_frames=3, num_classes=5, gate=self.gate
    )


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def _attention_reference(y, p, gate):
  """The GCA / SE / GCSA equations in float64 numpy, T = 3."""
  g = np.einsum('nhwc,hwc->nc', y, p['gc_0']['kernel'][:, :, 0])
  clip_g = g.reshape(-1, 3, g.shape[-1]).mean(1)
  aux = clip_g @ p['AUX_fc_0']['kernel'] @ p['AUX_fc_1']['kernel']
  if gate.attention == 'none':
    return y, aux
  if gate.attention != 'se':
    hidden = np.maximum(g @ p['fc1_0']['kernel'][0, 0], 0.0)
    w = 2.0 * _sigmoid(hidden @ p['fc2_0']['kernel'][0, 0])
  if gate.attention != 'gca':
    s = np.maximum(y.mean((1, 2)) @ p['se_fc1']['kernel'], 0.0)
    w_se = gate.se_scale * _sigmoid(s @ p['se_fc2']['kernel'])
  if gate.attention == 'se':
    w = w_se
  elif gate.attention == 'gcsa':
    w = {
      'product': w * w_se,
      'geometric': np.sqrt(w * w_se),
      'mean': (w + w_se) / 2,
    }[gate.fusion]
  frames = w.reshape(-1, 3, w.shape[-1])
  w = np.sqrt(frames * frames.mean(1, keepdims=True) + 1e-5).reshape(w.shape)
  return y * w[:, None, None, :], aux


def _layer_variables(gate, y, seed=0):
  """Random variables of the attention layers, and their fresh init."""
  layer = _Attention(gate)
  fresh = jax.jit(layer.init)(jax.random.key(seed), y)
  return layer, random_variables(fresh, seed), fresh


@pytest.mark.parametrize(
  'gate',
  [
    gcsa_attention.Gate('gca'),
    gcsa_attention.Gate('se'),
    gcsa_attention.Gate('gcsa'),
    gcsa_attention.Gate('gcsa', 'geometric', se_scale=1.0),
    gcsa_attention.Gate('gcsa', 'mean', se_reduction=8),
    gcsa_attention.Gate('none'),
  ],
)
def test_channel_attention_matches_equations(gate):
  y = np.random.default_rng(1).normal(size=(6, 3, 4, 32)).astype(np.float32)
  layer, variables, _ = _layer_variables(gate, y)
  params = variables['params']
  assert params['gc_0']['kernel'].shape == (3, 4, 1, 32)
  assert ('fc1_0' in params) == (gate.attention in ('gca', 'gcsa'))
  assert ('se_fc1' in params) == (gate.attention in ('se', 'gcsa'))
  if 'se_fc1' in params:
    assert params['se_fc1']['kernel'].shape == (32, 32 // gate.se_reduction)
  out, aux = layer.apply(variables, y)
  chex.assert_shape(aux, (2, 5))
  want, want_aux = _attention_reference(y.astype(np.float64), params, gate)
  np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(aux, want_aux, rtol=1e-5, atol=1e-5)


def test_fused_gate_starts_at_the_gc_gate():
  """At init the SE gate is 1: GCSA computes GCA, 'se' the identity gate."""
  y = np.random.default_rng(2).normal(size=(6, 3, 4, 32)).astype(np.float32)
  gca, gca_vars, _ = _layer_variables(gcsa_attention.Gate('gca'), y)
  gcsa_layer, _, fresh = _layer_variables(gcsa_attention.Gate('gcsa'), y)
  np.testing.assert_array_equal(fresh['params']['se_fc2']['kernel'], 0.0)
  # Random GC and shared layers, the SE branch as initialised.
  params = {**fresh['params'], **gca_vars['params']}
  got = gcsa_layer.apply({'params': params}, y)
  chex.assert_trees_all_close(got, gca.apply(gca_vars, y), rtol=0, atol=1e-6)
  se, _, se_fresh = _layer_variables(gcsa_attention.Gate('se'), y)
  out, _ = se.apply(se_fresh, y)
  np.testing.assert_allclose(out, y * np.sqrt(1 + 1e-5), rtol=1e-6)
  # Neither the other fusions nor a plain SE gate start at the GC gate.
  for gate in (
    gcsa_attention.Gate('gcsa', 'geometric'),
    gcsa_attention.Gate('gcsa', 'mean'),
    gcsa_attention.Gate('gcsa', se_scale=1.0),
  ):
    got = _Attention(gate).apply({'params': params}, y)
    assert np.abs(got[0] - gca.apply(gca_vars, y)[0]).max() > 1e-3


def test_init_follows_ial():
  # The attention layers alone: the whole model is slow to init on CPU.
  y = np.zeros((3, 2, 2, 32), np.float32)
  params = jax.jit(_Attention(gcsa_attention.Gate()).init)(
    jax.random.key(0), y
  )['params']
  # Kaiming-normal fan_out convs; PyTorch's default (bounded) Linear layers.
  np.testing.assert_allclose(
    np.std(params['fc1_0']['kernel']), np.sqrt(2.0 / 2), rtol=0.3
  )
  assert np.abs(params['AUX_fc_0']['kernel']).max() <= 32**-0.5
  assert 0 < np.abs(params['se_fc1']['kernel']).max() <= 32**-0.5
  np.testing.assert_array_equal(params['se_fc2']['kernel'], 0.0)
  plain = jax.jit(_Attention(gcsa_attention.Gate(se_zero_init=False)).init)(
    jax.random.key(0), y
  )['params']
  assert 0 < np.abs(plain['se_fc2']['kernel']).max() <= 2**-0.5
  table = gcsa.position_init(jax.random.key(0), (1, 16, 256))
  np.testing.assert_allclose(np.std(table), 1.0, rtol=0.05)


@pytest.mark.parametrize(
  ('fields', 'message'),
  [
    ({'attention': 'none'}, r"GCSA attention='none'.*'gca', 'se', 'gcsa'"),
    ({'fusion': 'max'}, r"GCSA fusion='max'.*'product', 'geometric'"),
    ({'attention_stages': (1, 2)}, r'attention_stages=\(1, 2\); pick'),
    ({'attention_stages': (3, 3)}, r'attention_stages=\(3, 3\); pick'),
    ({'se_reduction': 0}, 'se_reduction=0 must be at least 1'),
    ({'se_reduction': 256}, 'The SE branch got 128 channels'),
    ({'se_scale': 0.0}, 'se_scale=0.0 must be positive'),
    ({'num_frames': 1}, 'at least 2 frames'),
    ({'temporal_heads': 0}, 'temporal_heads=0 must be positive'),
    ({'static_mlp_dim': -1}, 'static_mlp_dim=-1 must be positive'),
  ],
)
def test_bad_fields(fields, message):
  model = models.get_model('gcsa', **{'num_frames': TINY_FRAMES, **fields})
  with pytest.raises(ValueError, match=message):
    shapes(model, clips().shape)


def test_bad_inputs(tiny):
  model, variables, _ = tiny
  with pytest.raises(ValueError, match=r'\(B, T, H, W, 3\)'):
    shapes(model, (2, 32, 32, 3))
  with pytest.raises(ValueError, match=r'\(B, T, H, W, 3\)'):
    shapes(model, (2, TINY_FRAMES, 3, 32, 32))
  with pytest.raises(ValueError, match='clips of 16 frames but num_frames=4'):
    shapes(model, (2, 16, 32, 32, 3))
  with pytest.raises(ValueError, match='made for another frame size'):
    jax.eval_shape(
      model.apply,
      variables,
      jax.ShapeDtypeStruct((1, 4, 64, 64, 3), jnp.float32),
    )


def test_attention_stages_change_the_computation(tiny):
  """Without layer2's gate the same weights give other logits and maps."""
  _, variables, apply = tiny
  model = models.get_model(
    'gcsa', num_classes=5, num_frames=TINY_FRAMES, attention_stages=(3,)
  )
  params = {**variables['params']}
  params['layer2_0'] = {
    k: v
    for k, v in params['layer2_0'].items()
    if k not in ('fc1_0', 'fc2_0', 'se_fc1', 'se_fc2')
  }
  partial = {**variables, 'params': params}
  chex.assert_trees_all_equal_shapes(partial, shapes(model, clips().shape))
  out, state = jax.jit(model.apply, static_argnames='mutable')(
    partial, clips(), mutable='intermediates'
  )
  maps = gcsa.attention_maps(model, out, state['intermediates'])
  assert set(maps) == {'channels_layer3'}
  full = apply(variables, clips())['logits']
  assert np.abs(out['logits'] - full).max() > 1e-3


def test_registry():
  assert 'gcsa' in models.list_models()
  model = models.get_model('gcsa')
  assert isinstance(model, gcsa.GCSA)
  assert (model.attention, model.fusion, model.num_frames) == (
    'gcsa',
    'product',
    16,
  )
  assert tuple(model.attention_stages) == (2, 3)
  assert (model.se_reduction, model.se_scale, model.se_zero_init) == (
    16,
    2.0,
    True,
  )
  assert (model.num_classes, model.pixel_mean, model.pixel_std) == (
    7,
    None,
    None,
  )
  assert (model.temporal_mlp_dim, model.static_mlp_dim) == (512, 256)

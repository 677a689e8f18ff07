"""Tests for JADFER: sizes, train/eval behaviour, its loss, bad fields."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from ferjax import losses
from ferjax import models
from ferjax.models import jadfer
from tests import model_helpers
from tests.test_gcsa import random_model_variables

DEFAULT_PARAMS = 73_483_143
BACKBONE_PARAMS = 17_611_968
# The 7-class model without SB (and SCI), without CB's encoder and class
# token, without SCI: the parts removed, the fusion resized.
ABLATED_PARAMS = {
  'sb': ({'num_paths': 0, 'sci_depth': 0}, 65_211_079),
  'cb': ({'depth': 0}, 26_233_479),
  'sci': ({'sci_depth': 0}, 67_577_991),
  'jad': ({'drop_prob': 0.0}, DEFAULT_PARAMS),
}
# Small everywhere but the backbone, which only exists as IR-50.
TINY = dict(width=32, depth=2, num_heads=2, num_paths=3, mlp_ratio=2.0)


def test_default_size_and_outputs():
  model = models.get_model('jadfer', num_classes=7)
  variables = model_helpers.init_shapes(model, 112)
  params = variables['params']
  assert model_helpers.param_count(params) == DEFAULT_PARAMS
  assert model_helpers.param_count(params['backbone']) == BACKBONE_PARAMS
  assert {f'sb_path_{i}' for i in range(4)} <= set(params)
  assert {f'cb_block_{i}' for i in range(8)} <= set(params)
  out = jax.eval_shape(
    model.apply, variables, jax.ShapeDtypeStruct((2, 112, 112, 3), jnp.float32)
  )
  chex.assert_shape(out['logits'], (2, 7))
  chex.assert_shape(out['features'], (2, 5 * 768))
  chex.assert_shape(out['sb_maps'], (2, 4, 14, 14))
  chex.assert_shape(out['sb_embeddings'], (2, 4, 256))
  assert {x.dtype for x in out.values()} == {np.dtype('float32')}


@pytest.mark.parametrize('part', ['sb', 'cb', 'sci'])
def test_ablated_sizes(part):
  fields, expected = ABLATED_PARAMS[part]
  model = models.get_model('jadfer', num_classes=7, **fields)
  params = model_helpers.init_shapes(model, 112)['params']
  assert model_helpers.param_count(params) == expected
  gone = {
    'sb': ('sb_path_0', 'sci_embed', 'sci_block_0'),
    'cb': ('cb_block_0', 'cb_cls'),
    'sci': ('sci_block_0',),
  }[part]
  assert not set(gone) & set(params)


# The interaction modules on a small map: no IR-50 to compile.
SMALL_MAP = (4, 4, 4, 16)


def _interaction(fields, seed=0):
  """An Interaction with TINY sizes, random variables, a jitted apply."""
  model = jadfer.Interaction(num_classes=5, **{**TINY, **fields})
  x = np.random.default_rng(seed).normal(size=SMALL_MAP).astype(np.float32)
  template = jax.eval_shape(model.init, jax.random.key(0), x)
  variables = random_model_variables(template, seed)
  apply = jax.jit(model.apply, static_argnames=('train', 'mutable'))
  return variables, x, apply


def _intermediates(apply, variables, x, seed):
  out, state = apply(
    variables,
    x,
    train=True,
    mutable=('batch_stats', 'intermediates'),
    rngs={'dropout': jax.random.key(seed)},
  )
  flat = traverse_util.flatten_dict(state['intermediates'], sep='/')
  return out, {k.removesuffix('/0'): v for k, v in flat.items()}


def test_without_sb_cb_sci():
  """Each removed part leaves the others computing, as documented."""
  variables, x, apply = _interaction({'num_paths': 0, 'sci_depth': 0})
  out = apply(variables, x)
  chex.assert_shape(out['sb_embeddings'], (4, 0, 16))
  chex.assert_shape(out['features'], (4, 32))  # CB's class token alone.
  assert losses.jadfer(out, jnp.arange(4))[1]['loss_variety'] == 0

  variables, x, apply = _interaction({'depth': 0})
  assert not {'cb_block_0', 'cb_cls'} & set(variables['params'])
  out, sown = _intermediates(apply, variables, x, 0)
  # SCI attends to the 16 embedded map positions, no class token.
  chex.assert_shape(sown['sci_block_0/attention/attention'], (4, 2, 3, 16))
  chex.assert_shape(out['features'], (4, 3 * 32))

  variables, x, _ = _interaction({'sci_depth': 0})
  model = jadfer.Interaction(num_classes=5, sci_depth=0, **TINY)
  out, state = jax.jit(model.apply, static_argnames='capture_intermediates')(
    variables, x, capture_intermediates=True
  )
  assert 'sci_block_0' not in variables['params']
  # The fused vector: the projected paths and CB's class token, normalised.
  (paths,) = state['intermediates']['sci_embed']['__call__']
  (tokens,) = state['intermediates']['cb_norm']['__call__']
  parts = np.concatenate([paths, tokens[:, :1]], 1).reshape(4, -1)
  mean, var = parts.mean(-1, keepdims=True), parts.var(-1, keepdims=True)
  norm = variables['params']['fuse_norm']
  want = (parts - mean) / np.sqrt(var + 1e-6) * norm['scale'] + norm['bias']
  np.testing.assert_allclose(out['features'], want, rtol=1e-4, atol=1e-4)


def test_jad_off_drops_nothing():
  variables, x, apply = _interaction({'drop_prob': 0.0})
  first, sown = _intermediates(apply, variables, x, 0)
  second, _ = _intermediates(apply, variables, x, 1)
  # With JAD (test_jad_drops_in_training_only) the two would differ.
  assert not any(k.endswith('jad_mask') for k in sown)
  chex.assert_trees_all_equal(first, second)


def test_one_tensor_feeds_sci_and_the_variety_loss():
  """As DAN: the paths' log-softmax over paths, read by both."""
  variables, x, apply = _interaction({})
  out = apply(variables, x)
  np.testing.assert_allclose(
    jax.nn.logsumexp(out['sb_embeddings'], axis=1), 0.0, atol=1e-5
  )
  raw = jadfer.Interaction(num_classes=5, path_log_softmax=False, **TINY)
  raw_out = jax.jit(raw.apply)(variables, x)
  np.testing.assert_allclose(
    jax.nn.log_softmax(raw_out['sb_embeddings'], axis=1),
    out['sb_embeddings'],
    atol=1e-5,
  )
  assert np.abs(raw_out['logits'] - out['logits']).max() > 1e-4


def test_mean_fusion_and_bfloat16():
  model = models.get_model(
    'jadfer', num_classes=8, fusion='mean', dtype=jnp.bfloat16, **TINY
  )
  variables = model_helpers.init_shapes(model, 32)
  assert {x.dtype for x in jax.tree.leaves(variables)} == {np.dtype('float32')}
  out = jax.eval_shape(
    model.apply, variables, jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
  )
  chex.assert_shape(out['features'], (2, 32))
  chex.assert_shape(out['logits'], (2, 8))
  assert {x.dtype for x in out.values()} == {np.dtype('float32')}


@pytest.fixture(scope='module')
def tiny():
  model = models.get_model('jadfer', num_classes=5, **TINY)
  images = model_helpers.random_images(32, batch=4)
  variables = jax.jit(model.init)(jax.random.key(0), images)
  return model, variables, images


def _train_apply(model, variables, images, seed):
  return model.apply(
    variables,
    images,
    train=True,
    mutable=['batch_stats', 'intermediates'],
    rngs={'dropout': jax.random.key(seed)},
  )


def test_jad_drops_in_training_only(tiny):
  model, variables, images = tiny
  apply = jax.jit(_train_apply, static_argnums=0)
  out, state = apply(model, variables, images, 0)
  again, _ = apply(model, variables, images, 0)
  other, _ = apply(model, variables, images, 1)
  np.testing.assert_array_equal(out['logits'], again['logits'])
  assert np.abs(out['logits'] - other['logits']).max() > 1e-6
  flat = traverse_util.flatten_dict(state['intermediates'], sep='/')
  masks = [v[0] for k, v in flat.items() if k.endswith('jad_mask')]
  assert len(masks) == TINY['depth'] + 1  # CB blocks and the SCI block.
  assert any(bool(m.any()) for m in masks)  # Keys were dropped.
  # Eval ignores the dropout rng: nothing is dropped.
  evaluate = jax.jit(
    lambda key: model.apply(variables, images, rngs={'dropout': key})
  )
  np.testing.assert_array_equal(
    evaluate(jax.random.key(0))['logits'], evaluate(jax.random.key(1))['logits']
  )


def test_loss_gradient_reaches_every_part(tiny):
  model, variables, images = tiny
  labels = jnp.array([0, 1, 2, 3])

  def outputs(params):
    return _train_apply(model, {**variables, 'params': params}, images, 0)[0]

  def full(params):
    return losses.get_loss('jadfer')(outputs(params), labels)[0]

  def variety(params):
    return losses.variety_loss(outputs(params)['sb_embeddings'])

  grads, variety_grads = jax.jit(
    lambda p: (jax.grad(full)(p), jax.grad(variety)(p))
  )(variables['params'])
  for name, tree in grads.items():
    assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(tree)) > 0, name
  # The Variety term alone reaches every SB path.
  for i in range(TINY['num_paths']):
    leaves = jax.tree.leaves(variety_grads[f'sb_path_{i}'])
    assert max(float(jnp.abs(g).max()) for g in leaves) > 0


def test_loss_options():
  out = {
    'logits': jnp.zeros((2, 7)),
    'sb_embeddings': jax.random.normal(jax.random.key(0), (2, 3, 8)),
    'sb_maps': jax.random.uniform(jax.random.key(1), (2, 3, 4, 4)),
  }
  labels = jnp.array([0, 1])
  ce = np.log(7)
  loss, metrics = losses.jadfer(out, labels, variety_weight=0.0)
  np.testing.assert_allclose(loss, ce, rtol=1e-6)
  # The embeddings as the model outputs them (log-softmaxed by the model).
  _, metrics = losses.jadfer(out, labels)
  want = losses.partition_loss(out['sb_embeddings'])
  np.testing.assert_allclose(metrics['loss_variety'], want, rtol=1e-6)
  loss, metrics = losses.jadfer(
    out, labels, variety='cosine', variety_on='maps'
  )
  want = losses.cosine_loss(out['sb_maps'])
  np.testing.assert_allclose(metrics['loss_variety'], want, rtol=1e-6)
  np.testing.assert_allclose(loss, ce + want, rtol=1e-6)
  with pytest.raises(ValueError, match="variety_on='heads'"):
    losses.jadfer(out, labels, variety_on='heads')


@pytest.mark.parametrize(
  ('fields', 'match'),
  [
    ({'fusion': 'sum'}, "fusion='sum'"),
    ({'joint': 'max'}, 'joint'),
    ({'width': 31}, 'divisible by num_heads'),
    ({'num_paths': 0}, 'sci_depth=1 with num_paths=0: SCI queries'),
    ({'num_paths': 0, 'depth': 0, 'sci_depth': 0}, 'SB or CB must stay'),
    ({'depth': -1}, 'each must be >= 0'),
  ],
)
def test_bad_fields(fields, match):
  model = models.get_model('jadfer', **{**TINY, **fields})
  with pytest.raises(ValueError, match=match):
    model_helpers.init_shapes(model, 32)


def test_registry():
  assert 'jadfer' in models.list_models()
  assert models.get_model('jadfer').__class__ is jadfer.JADFER

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

DEFAULT_PARAMS = 73_483_143
BACKBONE_PARAMS = 17_611_968
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
  """TINY on the short IR backbone: JAD and the loss do not see its depth."""
  with model_helpers.short_ir():
    model = models.get_model(
      'jadfer', num_classes=5, num_layers=model_helpers.SHORT_IR_LAYERS, **TINY
    )
    images = model_helpers.random_images(32, batch=4)
    variables = model_helpers.jit_init(model, jax.random.key(0), images)
    yield model, variables, images


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
    embeddings = outputs(params)['sb_embeddings']
    return losses.variety_loss(jax.nn.log_softmax(embeddings, axis=1))

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
    ({'num_paths': 0}, 'num_paths'),
  ],
)
def test_bad_fields(fields, match):
  model = models.get_model('jadfer', **{**TINY, **fields})
  with pytest.raises(ValueError, match=match):
    model_helpers.init_shapes(model, 32)


def test_registry():
  assert 'jadfer' in models.list_models()
  assert models.get_model('jadfer').__class__ is jadfer.JADFER

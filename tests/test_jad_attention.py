"""JAD attention: the mask, its placement, eval parity, rollout, dtypes."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ferjax.layers import jad_attention as jad
from tests import model_helpers

BATCH, TOKENS, DIM, HEADS = 8, 30, 16, 4
# ceil(0.1 * 30) is 3: the rounding keeps 0.1 * 30 = 3.0000000000000004 at 3.
RHO, NUM_DROPPED = 0.1, 3


def _tokens(shape=(BATCH, TOKENS, DIM), seed=0):
  # NumPy's generator: jax.random would compile a program per shape.
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.standard_normal(shape, np.float32))


def _init(layer, *inputs):
  return model_helpers.jit_init(layer, jax.random.key(1), *inputs)


@functools.partial(jax.jit, static_argnames=('layer', 'train'))
def _apply(layer, variables, q_in, kv_in=None, train=False, seed=0):
  """Output, joint map and intermediates of one application."""
  (out, joint), state = layer.apply(
    variables,
    q_in,
    kv_in,
    train=train,
    rngs={'dropout': jax.random.key(seed)},
    mutable=['intermediates'],
  )
  return out, joint, state['intermediates']


def _sown(intermediates, name):
  (value,) = intermediates[name]
  return value


def test_num_dropped():
  assert jad.num_dropped(0.1, 30) == 3
  assert jad.num_dropped(0.1, 197) == 20
  assert jad.num_dropped(0.25, 4) == 1
  assert jad.num_dropped(0.0, 10) == 0
  assert jad.num_dropped(0.1, 1) == 0  # The one key stays.


def test_jad_mask_picks_top_rho_keys_of_dropped_samples():
  joint = np.random.default_rng(0).uniform(size=(3, 5, 20)).astype(np.float32)
  drop = np.array([True, False, True])
  mask = np.asarray(jad.jad_mask(joint, 0.15, drop))
  chex.assert_shape(mask, (3, 5, 20))
  assert mask.dtype == bool
  top = np.argsort(-joint, axis=-1)[..., :3]  # ceil(0.15 * 20) = 3.
  want = np.zeros_like(mask)
  np.put_along_axis(want, top, True, axis=-1)
  want &= drop[:, None, None]
  np.testing.assert_array_equal(mask, want)


def test_jad_mask_breaks_ties_by_lower_index():
  mask = jad.jad_mask(jnp.ones((1, 2, 10)), 0.2, jnp.array([True]))
  np.testing.assert_array_equal(mask[0, :, :2], True)
  np.testing.assert_array_equal(mask[0, :, 2:], False)


def _drop_case(mask_at='logits'):
  layer = jad.JADAttention(HEADS, rho=RHO, drop_prob=0.5, mask_at=mask_at)
  x = _tokens()
  variables = _init(layer, x)
  out, joint, inter = _apply(layer, variables, x, train=True, seed=3)
  return out, joint, _sown(inter, 'jad_mask'), _sown(inter, 'attention')


@pytest.mark.parametrize('mask_at', jad.MASK_AT)
def test_dropped_samples_lose_their_top_keys(mask_at):
  out, joint, mask, weights = _drop_case(mask_at)
  chex.assert_shape(out, (BATCH, TOKENS, DIM))
  chex.assert_shape([joint, mask], (BATCH, TOKENS, TOKENS))
  chex.assert_shape(weights, (BATCH, HEADS, TOKENS, TOKENS))
  mask, joint, weights = map(np.asarray, (mask, joint, weights))
  dropped = mask.any(axis=(1, 2))
  assert 0 < dropped.sum() < BATCH, dropped  # Seed 3 draws both kinds.
  counts = mask.sum(-1)
  np.testing.assert_array_equal(counts[dropped], NUM_DROPPED)
  np.testing.assert_array_equal(counts[~dropped], 0)
  # The masked keys are each query's top keys by the (unmasked) joint map.
  top = np.argsort(-joint, axis=-1)[..., :NUM_DROPPED]
  want = np.zeros_like(mask)
  np.put_along_axis(want, top, True, axis=-1)
  np.testing.assert_array_equal(mask[dropped], want[dropped])
  # Masked keys get no weight; every row still sums to one.
  np.testing.assert_array_equal(weights * mask[:, None], np.zeros_like(weights))
  np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-6)
  # The joint map is the head mean of the unmasked attention.
  np.testing.assert_allclose(joint.sum(-1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(
    weights.mean(1)[~dropped], joint[~dropped], rtol=1e-6
  )


def test_mask_at_logits_and_weights_agree():
  # Both restrict the softmax to the kept keys; only rounding differs.
  out_l, _, mask_l, weights_l = _drop_case('logits')
  out_w, _, mask_w, weights_w = _drop_case('weights')
  np.testing.assert_array_equal(mask_l, mask_w)
  np.testing.assert_allclose(weights_l, weights_w, atol=1e-6)
  np.testing.assert_allclose(out_l, out_w, atol=1e-5)


def _numpy_attention(params, q_in, kv_in, num_heads):
  """Plain multi-head attention in float64 numpy."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  q_in, kv_in = np.asarray(q_in, np.float64), np.asarray(kv_in, np.float64)
  batch, queries, dim = q_in.shape
  head_dim = dim // num_heads

  def heads(x, name):
    y = x @ p[name]['kernel']
    return y.reshape(batch, -1, num_heads, head_dim).transpose(0, 2, 1, 3)

  q, k, v = heads(q_in, 'query'), heads(kv_in, 'key'), heads(kv_in, 'value')
  logits = q @ k.transpose(0, 1, 3, 2) / np.sqrt(head_dim)
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  out = (weights @ v).transpose(0, 2, 1, 3).reshape(batch, queries, dim)
  return out @ p['out']['kernel'] + p['out']['bias'], weights


@pytest.mark.parametrize('cross', [False, True], ids=['self', 'cross'])
def test_eval_is_plain_multi_head_attention(cross):
  layer = jad.JADAttention(HEADS, drop_prob=1.0)
  q_in = _tokens((2, 5, DIM))
  kv_in = _tokens((2, 9, DIM), seed=1) if cross else None
  variables = _init(layer, q_in, kv_in)
  out, joint, inter = _apply(layer, variables, q_in, kv_in)
  keys = 9 if cross else 5
  chex.assert_shape(out, (2, 5, DIM))
  chex.assert_shape(joint, (2, 5, keys))
  assert 'jad_mask' not in inter
  want, weights = _numpy_attention(
    variables['params'], q_in, q_in if kv_in is None else kv_in, HEADS
  )
  np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(_sown(inter, 'attention'), weights, atol=1e-6)
  np.testing.assert_allclose(joint, weights.mean(1), atol=1e-6)
  # Deterministic: the rng plays no part.
  again, _, _ = _apply(layer, variables, q_in, kv_in, seed=7)
  np.testing.assert_array_equal(out, again)


def test_cross_attention_drops_keys_not_queries():
  layer = jad.JADAttention(HEADS, rho=0.25, drop_prob=1.0)
  q_in, kv_in = _tokens((2, 4, DIM)), _tokens((2, 12, 8), seed=1)
  variables = _init(layer, q_in, kv_in)
  out, joint, inter = _apply(layer, variables, q_in, kv_in, train=True)
  chex.assert_shape(out, (2, 4, DIM))
  chex.assert_shape([joint, _sown(inter, 'jad_mask')], (2, 4, 12))
  np.testing.assert_array_equal(_sown(inter, 'jad_mask').sum(-1), 3)


def _drop_choices(layer, variables, x, seed):
  _, _, inter = _apply(layer, variables, x, train=True, seed=seed)
  return np.asarray(_sown(inter, 'jad_mask')).any(axis=(1, 2))


def test_drop_choice_follows_the_dropout_rng():
  layer = jad.JADAttention(HEADS, rho=RHO, drop_prob=0.5)
  x = _tokens()
  variables = _init(layer, x)
  first = _drop_choices(layer, variables, x, 0)
  np.testing.assert_array_equal(first, _drop_choices(layer, variables, x, 0))
  others = [_drop_choices(layer, variables, x, s) for s in range(1, 6)]
  assert any(np.any(c != first) for c in others)


def test_drop_prob_bounds():
  x = _tokens()
  always = jad.JADAttention(HEADS, rho=RHO, drop_prob=1.0)
  variables = _init(always, x)
  for seed in range(3):
    assert _drop_choices(always, variables, x, seed).all()
  never = jad.JADAttention(HEADS, rho=RHO, drop_prob=0.0)
  out, _, inter = _apply(never, variables, x, train=True)
  assert 'jad_mask' not in inter
  np.testing.assert_array_equal(out, _apply(never, variables, x)[0])


def test_rollout_hand_example():
  attention = jnp.array([[[0.5, 0.5], [0.2, 0.8]]])
  previous = jnp.array([[[1.0, 0.0], [0.5, 0.5]]])
  # (A + I) / 2 = [[.75, .25], [.1, .9]], times `previous`.
  np.testing.assert_allclose(
    jad.rollout(attention, previous, self_attention=True),
    [[[0.875, 0.125], [0.55, 0.45]]],
    rtol=1e-6,
  )
  np.testing.assert_allclose(
    jad.rollout(attention, None, self_attention=True),
    [[[0.75, 0.25], [0.1, 0.9]]],
    rtol=1e-6,
  )
  # Cross attention: no residual path, a plain product.
  np.testing.assert_allclose(
    jad.rollout(attention, previous, self_attention=False),
    [[[0.75, 0.25], [0.6, 0.4]]],
    rtol=1e-6,
  )


def test_rollout_layer_chains_joint_maps():
  layer = jad.JADAttention(HEADS, joint='rollout', drop_prob=1.0)
  x = _tokens((2, 6, DIM))
  variables = _init(layer, x)
  _, first, inter = _apply(layer, variables, x)
  mean = np.asarray(_sown(inter, 'attention'), np.float64).mean(1)
  step = (mean + np.eye(6)) / (mean + np.eye(6)).sum(-1, keepdims=True)
  np.testing.assert_allclose(first, step, rtol=1e-5)

  def second(prev, train):
    (_, joint), state = layer.apply(
      variables,
      x,
      prev_joint=prev,
      train=train,
      rngs={'dropout': jax.random.key(0)},
      mutable=['intermediates'],
    )
    return joint, state['intermediates']

  joint, _ = second(first, False)
  np.testing.assert_allclose(joint, step @ step, rtol=1e-5)
  np.testing.assert_allclose(np.sum(joint, -1), 1.0, rtol=1e-5)
  # The rolled-out map selects: each query drops its top key under it.
  joint, inter = second(first, True)
  top = np.argmax(np.asarray(joint), -1)
  mask = np.asarray(_sown(inter, 'jad_mask'))
  np.testing.assert_array_equal(np.argmax(mask, -1), top)
  with pytest.raises(ValueError, match='prev_joint has shape'):
    second(first[:, :3], False)


def test_gradients_reach_every_parameter():
  layer = jad.JADAttention(HEADS, rho=RHO, drop_prob=1.0)
  x = _tokens()
  params = _init(layer, x)['params']

  def loss(params):
    out, _ = layer.apply(
      {'params': params}, x, train=True, rngs={'dropout': jax.random.key(0)}
    )
    return jnp.sum(out**2)

  grads = jax.grad(loss)(params)
  assert set(grads) == {'query', 'key', 'value', 'out'}
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    assert np.all(np.isfinite(g)), path
    assert np.abs(g).max() > 0, path


def test_bf16_compute_keeps_float32_softmax():
  layer = jad.JADAttention(HEADS, rho=RHO, drop_prob=1.0, dtype=jnp.bfloat16)
  x = _tokens().astype(jnp.bfloat16)
  variables = _init(layer, x)
  chex.assert_type(jax.tree.leaves(variables['params']), jnp.float32)
  out, joint, inter = _apply(layer, variables, x, train=True)
  weights = _sown(inter, 'attention')
  chex.assert_type(out, jnp.bfloat16)
  chex.assert_type([joint, weights], jnp.float32)
  np.testing.assert_allclose(np.sum(weights, -1), 1.0, rtol=1e-6)
  assert np.all(np.isfinite(np.asarray(out, np.float32)))


def test_attention_dropout_only_in_training():
  layer = jad.JADAttention(HEADS, drop_prob=0.0, attn_dropout=0.5)
  x = _tokens()
  variables = _init(layer, x)
  evaluated = _apply(layer, variables, x)[0]
  trained = _apply(layer, variables, x, train=True)[0]
  assert np.abs(trained - evaluated).max() > 1e-3


@pytest.mark.parametrize(
  ('fields', 'match'),
  [
    ({'joint': 'product'}, "joint='product'"),
    ({'mask_at': 'scores'}, "mask_at='scores'"),
    ({'rho': 1.0}, 'rho=1.0'),
    ({'drop_prob': -0.1}, 'drop_prob=-0.1'),
    ({'num_heads': 5}, 'num_heads=5 does not divide'),
  ],
)
def test_bad_fields(fields, match):
  layer = jad.JADAttention(**{'num_heads': HEADS, **fields})
  with pytest.raises(ValueError, match=match):
    _init(layer, _tokens((1, 4, DIM)))

"""The losses: registry, MFER's heads + DSF against hand computations."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ferjax import losses

# Two examples, three classes, 2-d features.
FEATURES = np.array([[1.0, 0.0], [0.0, 2.0]], np.float32)
CENTERS = np.array([[0.5, 0.5], [0.0, 1.0], [-1.0, 0.0]], np.float32)
LABELS = np.array([0, 1])


def _log_softmax(z):
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _hand_lgm(alpha, lam, eps):
  """Per-example L-GM value and the mean loss's gradient w.r.t. centres."""
  num_classes = len(CENTERS)
  diff = FEATURES[:, None, :] - CENTERS[None]  # (B, C, D): f - mu_k.
  d = 0.5 * (diff**2).sum(-1)
  onehot = np.eye(num_classes)[LABELS]
  margin = 1 + alpha * onehot
  z = -d * margin
  target = (1 - eps) * onehot + eps / num_classes
  d_y = d[np.arange(2), LABELS]
  value = -(target * _log_softmax(z)).sum(-1) + lam * d_y
  p = np.exp(_log_softmax(z))
  # dL/dmu_k = (p_k - t_k) * m_k * (f - mu_k) + lam [k = y] (mu_k - f).
  grad = ((p - target) * margin)[..., None] * diff - lam * onehot[
    ..., None
  ] * diff
  return value, grad.mean(0)


@pytest.mark.parametrize(
  ('alpha', 'lam', 'eps'), [(0.1, 0.01, 0.1), (0.3, 0.5, 0.0)]
)
def test_lgm_value_and_gradient_match_hand_computation(alpha, lam, eps):
  def mean_loss(centers):
    value, _ = losses.dsf_loss(
      FEATURES, centers, LABELS, alpha=alpha, lam=lam, smoothing=eps
    )
    return value.mean()

  value, aux = losses.dsf_loss(
    FEATURES, CENTERS, LABELS, alpha=alpha, lam=lam, smoothing=eps
  )
  want_value, want_grad = _hand_lgm(alpha, lam, eps)
  np.testing.assert_allclose(value, want_value, rtol=1e-5)
  np.testing.assert_allclose(aux['dsf_distance'], [0.25, 0.5], rtol=1e-6)
  np.testing.assert_allclose(
    jax.grad(mean_loss)(CENTERS), want_grad, rtol=1e-5, atol=1e-7
  )


def test_center_kind_is_half_squared_distance_to_own_center():
  value, _ = losses.dsf_loss(FEATURES, CENTERS, LABELS, kind='center')
  np.testing.assert_allclose(value, [0.25, 0.5], rtol=1e-6)
  grad = jax.grad(
    lambda c: losses.dsf_loss(FEATURES, c, LABELS, kind='center')[0].mean()
  )(CENTERS)
  want = np.zeros_like(CENTERS)
  want[0] = (CENTERS[0] - FEATURES[0]) / 2
  want[1] = (CENTERS[1] - FEATURES[1]) / 2
  np.testing.assert_allclose(grad, want, rtol=1e-6)


@pytest.mark.parametrize(
  ('kind', 'lam'), [('lgm', 0.01), ('lgm', 1.0), ('center', 0.0)]
)
def test_centres_move_to_their_class_means(kind, lam):
  rng = np.random.default_rng(0)
  means = np.array([[3.0, 0.0], [0.0, 3.0], [-3.0, -3.0]], np.float32)
  labels = np.repeat(np.arange(3), 20)
  features = means[labels] + rng.normal(0, 0.5, (60, 2)).astype(np.float32)
  class_means = np.stack([features[labels == k].mean(0) for k in range(3)])
  centers = jnp.zeros((3, 2)) + rng.normal(0, 0.1, (3, 2)).astype(np.float32)

  @jax.jit
  def step(c):
    g = jax.grad(
      lambda c: losses.dsf_loss(features, c, labels, kind=kind, lam=lam)[
        0
      ].mean()
    )(c)
    return c - 0.5 * g

  start = np.linalg.norm(centers - class_means, axis=1)
  for _ in range(300):
    centers = step(centers)
  end = np.linalg.norm(centers - class_means, axis=1)
  if kind == 'center':  # The minimiser is the class mean itself.
    np.testing.assert_allclose(centers, class_means, atol=1e-3)
  elif lam == 1.0:  # A strong pull ends near the means.
    assert np.all(end < 0.25 * start), (start, end)
  else:  # L-GM's default pull is weak next to its margin term.
    assert np.all(end < 0.9 * start), (start, end)


def _mfer_outputs(seed=0, batch=4, classes=3, dim=5):
  keys = jax.random.split(jax.random.key(seed), 3)
  return {
    'logits': jnp.zeros((batch, classes)),
    'head_logits': jax.random.normal(keys[0], (3, batch, classes)),
    'features': jax.random.normal(keys[1], (batch, dim)),
    'centers': jax.random.normal(keys[2], (classes, dim)),
  }


def test_mfer_loss_sums_smoothed_heads_and_weighted_dsf():
  outputs = _mfer_outputs()
  labels = jnp.array([0, 2, 1, 1])
  loss, metrics = losses.get_loss('mfer')(outputs, labels)
  heads = sum(
    losses.softmax_cross_entropy(outputs['head_logits'][i], labels, 0.1).mean()
    for i in range(3)
  )
  dsf, _ = losses.dsf_loss(outputs['features'], outputs['centers'], labels)
  np.testing.assert_allclose(metrics['loss_heads'], heads, rtol=1e-6)
  np.testing.assert_allclose(metrics['loss_dsf'], dsf.mean(), rtol=1e-6)
  np.testing.assert_allclose(loss, heads + 1e-3 * dsf.mean(), rtol=1e-6)
  chex.assert_shape(loss, ())


def test_mfer_loss_without_dsf_ignores_centres():
  outputs = _mfer_outputs()
  del outputs['centers']
  labels = jnp.array([0, 2, 1, 1])
  loss, metrics = losses.mfer(outputs, labels, dsf='')
  assert set(metrics) == {'loss_heads'}
  np.testing.assert_allclose(loss, metrics['loss_heads'])


def test_mfer_loss_takes_soft_targets():
  outputs = _mfer_outputs()
  labels = jnp.array([0, 2, 1, 1])
  targets = jax.nn.one_hot(labels, 3)
  np.testing.assert_allclose(
    losses.mfer(outputs, targets)[0], losses.mfer(outputs, labels)[0], rtol=1e-6
  )


def test_bad_dsf_kind():
  with pytest.raises(ValueError, match="kind='lgn'"):
    losses.dsf_loss(FEATURES, CENTERS, LABELS, kind='lgn')


def test_unknown_loss_lists_the_known_ones():
  with pytest.raises(
    ValueError, match='known losses: cai, jadfer, manet, mfer'
  ):
    losses.get_loss('dsf')

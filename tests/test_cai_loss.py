"""The intensity-aware (IAL) and CAI losses against hand computations."""

import inspect

import jax
import numpy as np
import pytest

from ferjax import losses

# Rows: target is the argmax; target is not the argmax; target ties another
# class; two non-targets tie for the top; all logits equal.
LOGITS = np.array(
  [
    [2.0, 1.0, 0.5],
    [0.0, 3.0, 1.0],
    [1.0, 1.0, 0.0],
    [0.0, 2.0, 2.0],
    [5.0, 5.0, 5.0],
  ],
  np.float32,
)
LABELS = np.array([0, 0, 1, 0, 2])
# The most confusing non-target class (first on ties) and IAL by hand:
# -log(e^{z_y} / (e^{z_y} + e^{z_m})).
CONFUSING = np.array([1, 1, 0, 1, 0])
HAND = np.array(
  [np.log1p(np.exp(-1.0)), np.log1p(np.exp(3.0)), np.log(2.0)]
  + [np.log1p(np.exp(2.0)), np.log(2.0)]
)


def _log_softmax(z):
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _ce(logits, labels):
  return -_log_softmax(logits.astype(np.float64))[
    np.arange(len(labels)), labels
  ]


def _ial_as_in_ial_code(logits, labels):
  """IAL's own recipe: mask the target, argmax, shift the rest by -9999."""
  onehot = np.eye(logits.shape[1])[labels]
  confusing = np.argmax(logits + onehot * -99999, axis=1)
  keep = onehot + np.eye(logits.shape[1])[confusing]
  return _ce(logits - 9999 * (1 - keep), labels)


def test_ial_matches_hand_table():
  got = losses.intensity_aware_loss(LOGITS, LABELS)
  assert got.shape == (5,) and got.dtype == np.float32
  np.testing.assert_allclose(got, HAND, rtol=1e-6)
  np.testing.assert_allclose(
    got, _ial_as_in_ial_code(LOGITS, LABELS), rtol=1e-6
  )
  # Only the two compared classes matter: the third class is irrelevant.
  shifted = LOGITS.copy()
  shifted[0, 2] = -50.0
  np.testing.assert_allclose(
    losses.intensity_aware_loss(shifted, LABELS)[0], HAND[0], rtol=1e-6
  )


def test_ial_gradient_reaches_target_and_one_confusing_class():
  grad = jax.grad(lambda z: losses.intensity_aware_loss(z, LABELS).sum())(
    LOGITS
  )
  grad = np.asarray(grad)
  rows = np.arange(len(LABELS))
  z_y, z_m = LOGITS[rows, LABELS], LOGITS[rows, CONFUSING]
  p = 1.0 / (1.0 + np.exp(-(z_m - z_y)))  # d softplus(z_m - z_y) / d z_m
  want = np.zeros_like(LOGITS)
  want[rows, CONFUSING] = p
  want[rows, LABELS] = -p
  np.testing.assert_allclose(grad, want, rtol=1e-6, atol=1e-7)
  # On the tie of row 3 the gradient goes to class 1 only, as IAL picks it.
  assert grad[3, 2] == 0.0


def test_ial_with_targets_uses_their_argmax():
  targets = np.full((5, 3), 0.1, np.float32)
  targets[np.arange(5), LABELS] = 0.8
  np.testing.assert_allclose(
    losses.intensity_aware_loss(LOGITS, targets), HAND, rtol=1e-6
  )


def test_ial_needs_two_classes():
  with pytest.raises(ValueError, match='at least 2 classes'):
    losses.intensity_aware_loss(np.zeros((2, 1), np.float32), np.zeros(2, int))


def _outputs(seed=0):
  rng = np.random.default_rng(seed)
  return {
    'logits': rng.normal(size=(5, 3)).astype(np.float32),
    'aux_logits': rng.normal(size=(2, 5, 3)).astype(np.float32),
  }


@pytest.mark.parametrize(
  'weights',
  [
    {},
    {'aux2_weight': 0.3, 'aux3_weight': 0.2, 'ial_weight': 0.5},
  ],
)
def test_cai_combination(weights):
  outputs = _outputs()
  loss, metrics = jax.jit(losses.get_loss('cai'))(outputs, LABELS, **weights)
  w2, w3, w_ial = (
    weights.get('aux2_weight', 0.05),
    weights.get('aux3_weight', 0.0),
    weights.get('ial_weight', 0.1),
  )
  ce = _ce(outputs['logits'], LABELS).mean()
  aux2, aux3 = (_ce(a, LABELS).mean() for a in outputs['aux_logits'])
  ial = _ial_as_in_ial_code(outputs['logits'], LABELS).mean()
  np.testing.assert_allclose(metrics['loss_ce'], ce, rtol=1e-5)
  np.testing.assert_allclose(
    metrics['loss_aux'], w2 * aux2 + w3 * aux3, rtol=1e-5
  )
  np.testing.assert_allclose(metrics['loss_ial'], ial, rtol=1e-5)
  np.testing.assert_allclose(
    loss, ce + w2 * aux2 + w3 * aux3 + w_ial * ial, rtol=1e-5
  )


def test_cai_label_smoothing_and_targets():
  outputs = _outputs(1)
  _, plain = losses.cai(outputs, LABELS)
  _, smooth = losses.cai(outputs, LABELS, label_smoothing=0.1)
  onehot = np.eye(3)[LABELS]
  want = -(
    (0.9 * onehot + 0.1 / 3) * _log_softmax(outputs['logits'].astype(float))
  )
  np.testing.assert_allclose(smooth['loss_ce'], want.sum(-1).mean(), rtol=1e-5)
  assert smooth['loss_aux'] != plain['loss_aux']
  np.testing.assert_allclose(smooth['loss_ial'], plain['loss_ial'], rtol=1e-6)
  _, from_targets = losses.cai(outputs, onehot.astype(np.float32))
  for name in plain:
    np.testing.assert_allclose(from_targets[name], plain[name], rtol=1e-6)


def test_cai_checks_aux_logits():
  outputs = _outputs()
  outputs['aux_logits'] = outputs['aux_logits'][:1]
  with pytest.raises(ValueError, match=r"'aux_logits' of shape \(2, B, C\)"):
    losses.cai(outputs, LABELS)


def test_registry_and_defaults():
  assert losses.get_loss('cai') is losses.cai
  defaults = {
    name: p.default
    for name, p in inspect.signature(losses.cai).parameters.items()
    if p.default is not inspect.Parameter.empty
  }
  assert defaults == {
    'aux2_weight': 0.05,
    'aux3_weight': 0.0,
    'ial_weight': 0.1,
    'label_smoothing': 0.0,
  }

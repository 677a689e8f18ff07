"""Learning-rate schedules and optimizers follow PyTorch's semantics."""

import math

import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from ferjax import optim


def _schedule(**fields):
  cfg = dict(
    name='step',
    base_lr=0.01,
    unit='epoch',
    warmup_epochs=0.0,
    step_size=15,
    milestones=(),
    gamma=0.1,
    end_factor=0.0,
  )
  cfg.update(fields)
  return ml_collections.ConfigDict(cfg)


def test_step_lr_per_epoch_like_torch_steplr():
  # MA-Net: lr 0.01, x0.1 every 15 epochs, stepped once per epoch.
  spe = 96
  fn = optim.make_schedule(_schedule(), spe, total_steps=100 * spe)
  for step in (0, 95, 96, 15 * spe - 1, 15 * spe, 31 * spe + 7, 99 * spe):
    epoch = step // spe
    np.testing.assert_allclose(fn(step), 0.01 * 0.1 ** (epoch // 15), rtol=1e-6)


def test_multistep_exponential_and_cosine():
  spe = 10
  multi = optim.make_schedule(_schedule(milestones=(2, 5)), spe, 100)
  np.testing.assert_allclose(
    [multi(s) for s in (19, 20, 49, 50)],
    [0.01, 0.001, 0.001, 0.0001],
    rtol=1e-5,
  )
  expo = optim.make_schedule(_schedule(name='exponential', gamma=0.9), spe, 100)
  np.testing.assert_allclose(expo(35), 0.01 * 0.9**3, rtol=1e-6)
  cos = optim.make_schedule(
    _schedule(name='cosine', unit='step', end_factor=0.1), spe, 100
  )
  np.testing.assert_allclose(cos(0), 0.01, rtol=1e-6)
  np.testing.assert_allclose(cos(50), 0.01 * (0.1 + 0.9 * 0.5), rtol=1e-5)
  np.testing.assert_allclose(cos(100), 0.001, rtol=1e-5)


def test_linear_warmup_then_decay():
  fn = optim.make_schedule(
    _schedule(name='cosine', unit='step', warmup_epochs=1.0), 10, 110
  )
  np.testing.assert_allclose(
    [fn(s) for s in (0, 4, 9)], [0.001, 0.005, 0.01], rtol=1e-5
  )
  # After warmup the cosine starts from its top over the remaining 100.
  np.testing.assert_allclose(fn(10), 0.01, rtol=1e-6)
  np.testing.assert_allclose(
    fn(60), 0.01 * 0.5 * (1 + math.cos(math.pi / 2)), atol=1e-7
  )


def test_sgd_matches_torch_update_rule():
  """PyTorch SGD: g += wd*p; buf = m*buf + g; p -= lr*buf (coupled L2)."""
  cfg = ml_collections.ConfigDict(
    dict(
      name='sgd',
      momentum=0.9,
      nesterov=False,
      weight_decay=1e-2,
      weight_decay_on='all',
      grad_clip_norm=0.0,
    )
  )
  lrs = [0.1, 0.1, 0.01]
  tx = optim.make_optimizer(cfg, lambda step: jnp.asarray(lrs)[step])
  params = {'w': jnp.array([1.0, -2.0, 3.0])}
  grads = [
    jnp.array([0.5, 0.1, -0.2]),
    jnp.array([0.3, -0.4, 0.1]),
    jnp.array([-0.1, 0.2, 0.2]),
  ]
  state = tx.init(params)
  p_ref, buf = np.array([1.0, -2.0, 3.0]), np.zeros(3)
  for lr, g in zip(lrs, grads, strict=True):
    updates, state = tx.update({'w': g}, state, params)
    params = optax.apply_updates(params, updates)
    d = np.asarray(g) + 1e-2 * p_ref
    buf = 0.9 * buf + d
    p_ref = p_ref - lr * buf
  np.testing.assert_allclose(params['w'], p_ref, rtol=1e-6)


def test_adamw_decays_decoupled_and_adam_coupled():
  base = dict(
    momentum=0.9,
    nesterov=False,
    b1=0.9,
    b2=0.999,
    eps=1e-8,
    weight_decay=0.25,
    weight_decay_on='all',
    grad_clip_norm=0.0,
  )
  params = {'w': jnp.array([2.0])}
  zero = {'w': jnp.array([0.0])}
  out = {}
  for name in ('adam', 'adamw'):
    tx = optim.make_optimizer(
      ml_collections.ConfigDict(dict(base, name=name)), lambda s: 0.1
    )
    updates, _ = tx.update(zero, tx.init(params), params)
    out[name] = float(updates['w'][0])
  # Decoupled: -lr * wd * p = -0.05; coupled, Adam normalises it to -lr.
  np.testing.assert_allclose(out['adamw'], -0.05, rtol=1e-5)
  np.testing.assert_allclose(out['adam'], -0.1, rtol=1e-3)
  tx = optim.make_optimizer(
    ml_collections.ConfigDict(
      dict(base, name='adamw', weight_decay_on='no_bias_norm')
    ),
    lambda s: 0.1,
  )
  updates, _ = tx.update(zero, tx.init(params), params)
  assert float(updates['w'][0]) == 0.0  # 1-D leaves are not decayed.


def test_unknown_names_are_named():
  with pytest.raises(ValueError, match="schedule.name='linear'"):
    optim.make_schedule(_schedule(name='linear'), 10, 100)
  with pytest.raises(ValueError, match="optimizer.name='lamb'"):
    optim.make_optimizer(
      ml_collections.ConfigDict(dict(name='lamb', weight_decay=0.0)),
      lambda s: 0.1,
    )

"""Optax optimizers and learning-rate schedules built from config.

The papers train with PyTorch, so the semantics follow PyTorch: SGD and Adam
add `weight_decay * param` to the gradient (coupled L2), AdamW decays
decoupled; schedules stepped "per epoch" (StepLR, ExponentialLR, ...) are
piecewise constant within an epoch, while warmup is always per step.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

Schedule = Callable[[jax.Array], jax.Array]


def _unit_time(step, cfg, steps_per_epoch: int):
  """Time in the schedule's unit: whole epochs (PyTorch style) or steps."""
  if cfg.unit == 'epoch':
    return jnp.floor(step / steps_per_epoch)
  if cfg.unit == 'step':
    return step.astype(jnp.float32)
  raise ValueError(f"config.schedule.unit={cfg.unit!r}: use 'epoch' or 'step'.")


def _constant(t, cfg, total):
  del t, cfg, total
  return 1.0


def _step(t, cfg, total):
  """StepLR (every `step_size` units) or MultiStepLR (`milestones`)."""
  del total
  if cfg.get('milestones'):
    drops = sum((t >= m).astype(jnp.float32) for m in cfg.milestones)
  else:
    drops = jnp.floor(t / cfg.step_size)
  return cfg.gamma**drops


def _exponential(t, cfg, total):
  del total
  return cfg.gamma**t


def _cosine(t, cfg, total):
  frac = jnp.clip(t / jnp.maximum(total, 1), 0.0, 1.0)
  end = cfg.get('end_factor', 0.0)
  return end + (1.0 - end) * 0.5 * (1.0 + jnp.cos(jnp.pi * frac))


_SCHEDULES = {
  'constant': _constant,
  'step': _step,
  'exponential': _exponential,
  'cosine': _cosine,
}


def make_schedule(
  cfg: ml_collections.ConfigDict, steps_per_epoch: int, total_steps: int
) -> Schedule:
  """Learning rate as a jittable function of the global step.

  Args:
    cfg: `config.schedule`: name (constant, step, exponential, cosine),
      base_lr, unit ('epoch' or 'step'), warmup_epochs or warmup_steps, and
      the schedule's own fields (step_size/milestones and gamma; gamma; the
      cosine end_factor).
    steps_per_epoch: optimizer steps in one pass over the training split.
    total_steps: the run's length in steps.

  Returns:
    step -> learning rate.
  """
  if cfg.name not in _SCHEDULES:
    raise ValueError(
      f'config.schedule.name={cfg.name!r}; known: {", ".join(_SCHEDULES)}.'
    )
  decay = _SCHEDULES[cfg.name]
  warmup = int(
    cfg.get('warmup_steps', 0)
    or round(cfg.get('warmup_epochs', 0.0) * steps_per_epoch)
  )
  unit_total = _unit_time(
    jnp.asarray(total_steps - warmup), cfg, steps_per_epoch
  )

  def schedule(step):
    step = jnp.asarray(step)
    t = _unit_time(jnp.maximum(step - warmup, 0), cfg, steps_per_epoch)
    lr = cfg.base_lr * decay(t, cfg, unit_total)
    if warmup:
      lr = lr * jnp.minimum(1.0, (step + 1) / warmup)
    return jnp.asarray(lr, jnp.float32)

  return schedule


def _decay_mask(kind: str):
  if kind == 'all':
    return None
  if kind == 'no_bias_norm':  # Skip biases and norm scales (1-D leaves).
    return lambda params: jax.tree.map(lambda p: p.ndim > 1, params)
  raise ValueError(
    f"config.optimizer.weight_decay_on={kind!r}: use 'all' (PyTorch "
    "default) or 'no_bias_norm'."
  )


def make_optimizer(
  cfg: ml_collections.ConfigDict, schedule: Schedule
) -> optax.GradientTransformation:
  """SGD/momentum, Adam or AdamW with PyTorch's weight-decay semantics.

  Args:
    cfg: `config.optimizer`: name ('sgd', 'adam', 'adamw'), weight_decay,
      weight_decay_on ('all' or 'no_bias_norm'), grad_clip_norm (0 = off),
      momentum and nesterov (sgd), b1, b2, eps (adam/adamw).
    schedule: the learning-rate schedule.

  Returns:
    The optax transformation.
  """
  wd = cfg.get('weight_decay', 0.0)
  mask = _decay_mask(cfg.get('weight_decay_on', 'all'))
  parts = []
  if cfg.get('grad_clip_norm', 0.0):
    parts.append(optax.clip_by_global_norm(cfg.grad_clip_norm))
  if cfg.name == 'sgd':
    if wd:
      parts.append(optax.add_decayed_weights(wd, mask))
    parts.append(
      optax.sgd(
        schedule,
        momentum=cfg.get('momentum') or None,
        nesterov=cfg.get('nesterov', False),
      )
    )
  elif cfg.name == 'adam':
    if wd:
      parts.append(optax.add_decayed_weights(wd, mask))
    parts.append(optax.adam(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps))
  elif cfg.name == 'adamw':
    parts.append(
      optax.adamw(
        schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=wd, mask=mask
      )
    )
  else:
    raise ValueError(
      f"config.optimizer.name={cfg.name!r}: use 'sgd', 'adam' or 'adamw'."
    )
  return optax.chain(*parts)

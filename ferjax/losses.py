"""Losses as pure functions of the model's output dict and the labels.

Each registered loss has the signature
  loss_fn(outputs, labels, **fields) -> (scalar loss, dict of scalar metrics)
where `outputs` is the dict a ferjax model returns, `labels` are integer
labels (B,) or per-class target distributions (B, C), and `fields` come from
`config.loss` (minus its name). The train step picks one by name.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

_LOSSES: dict[str, Callable] = {}


def register(name: str):
  def wrap(fn):
    _LOSSES[name] = fn
    return fn

  return wrap


def get_loss(name: str) -> Callable:
  if name not in _LOSSES:
    raise ValueError(
      f'config.loss.name={name!r}; known losses: {", ".join(sorted(_LOSSES))}.'
    )
  return _LOSSES[name]


def softmax_cross_entropy(
  logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0
) -> jax.Array:
  """Per-example CE with integer labels or targets, smoothed like PyTorch's.

  PyTorch's `label_smoothing=eps` mixes the one-hot (or given) target with
  the uniform distribution over all classes: (1 - eps) * target + eps / C.
  `labels` of shape (B, C) are taken as target distributions.
  """
  num_classes = logits.shape[-1]
  if labels.ndim == logits.ndim:
    targets = labels.astype(jnp.float32)
  else:
    targets = jax.nn.one_hot(labels, num_classes)
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


@register('softmax_xent')
def softmax_xent(outputs, labels, label_smoothing: float = 0.0):
  """Mean cross-entropy of `outputs['logits']`."""
  loss = softmax_cross_entropy(outputs['logits'], labels, label_smoothing)
  return loss.mean(), {}


@register('manet')
def manet(outputs, labels, beta: float = 0.6, label_smoothing: float = 0.0):
  """MA-Net's loss: beta * CE(local head) + (1 - beta) * CE(global head).

  Args:
    outputs: a dict with 'logits_local' and 'logits_global' (the 'manet'
      model's output).
    labels: (B,) integer labels.
    beta: weight of the local head (0.6 in MA-Net's `main.py`).
    label_smoothing: as in `softmax_cross_entropy` (0 in MA-Net).

  Returns:
    The weighted mean loss and the two heads' mean losses as metrics
    'loss_local' and 'loss_global'.
  """
  local = softmax_cross_entropy(
    outputs['logits_local'], labels, label_smoothing
  ).mean()
  global_ = softmax_cross_entropy(
    outputs['logits_global'], labels, label_smoothing
  ).mean()
  loss = beta * local + (1.0 - beta) * global_
  return loss, {'loss_local': local, 'loss_global': global_}

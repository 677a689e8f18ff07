"""Evaluation metrics: WAR, UAR, per-class recall and the confusion matrix.

FER papers report WAR (weighted average recall = plain accuracy) and UAR
(unweighted average recall = mean of the per-class recalls, robust to class
imbalance). Everything derives from one confusion matrix accumulated on
device over masked batches, so padded examples never count and every real
example counts exactly once.
"""

import jax
import jax.numpy as jnp
import numpy as np


def confusion_matrix(labels, predictions, mask, num_classes: int):
  """Confusion counts [true, predicted] of the examples where mask is set."""
  true = jax.nn.one_hot(labels, num_classes, dtype=jnp.int32)
  pred = jax.nn.one_hot(predictions, num_classes, dtype=jnp.int32)
  true = true * mask.astype(jnp.int32)[:, None]
  return true.T @ pred


def metrics_from_confusion(confusion: np.ndarray, class_names=None) -> dict:
  """WAR, UAR, per-class recall and the matrix itself, as plain Python.

  Classes absent from the split are left out of UAR (their recall is
  undefined) and reported as None.
  """
  confusion = np.asarray(confusion, np.int64)
  support = confusion.sum(axis=1)
  total = int(support.sum())
  correct = int(np.trace(confusion))
  present = support > 0
  recall = np.where(present, np.diag(confusion) / np.maximum(support, 1), 0.0)
  names = class_names or [str(i) for i in range(len(support))]
  return {
    'war': correct / max(total, 1),
    'uar': float(recall[present].mean()) if present.any() else 0.0,
    'num_examples': total,
    'per_class_recall': {
      name: (float(r) if p else None)
      for name, r, p in zip(names, recall, present, strict=True)
    },
    'confusion_matrix': confusion.tolist(),
  }


def eval_step(state, batch, *, model, num_classes: int):
  """Sums over one padded batch: confusion matrix, loss sum, example count.

  Returns sums (not means) so batches combine exactly; the host reads them
  once per evaluation.
  """
  images = batch['image'].astype(jnp.float32) / 255.0
  outputs = model.apply(state.variables(), images, train=False)
  logits = outputs['logits'].astype(jnp.float32)
  mask = batch['mask']
  log_probs = jax.nn.log_softmax(logits)
  nll = -jnp.take_along_axis(log_probs, batch['label'][:, None], axis=1)[:, 0]
  return {
    'confusion': confusion_matrix(
      batch['label'], jnp.argmax(logits, -1), mask, num_classes
    ),
    'loss_sum': jnp.sum(nll * mask),
    'count': jnp.sum(mask.astype(jnp.int32)),
  }

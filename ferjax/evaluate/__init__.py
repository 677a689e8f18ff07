"""Evaluation metrics: WAR, UAR, per-class recall and the confusion matrix.

FER papers report WAR (weighted average recall = plain accuracy) and UAR
(unweighted average recall = mean of the per-class recalls, robust to class
imbalance). Everything derives from one confusion matrix accumulated on
device over masked batches, so padded examples never count and every real
example counts exactly once.

The package, lowest first (`tests/test_imports.py` places each part):

  ferjax.evaluate            the metrics and the eval step (this file)
  ferjax.evaluate.classes    a model's classes matched to a dataset's by name
  ferjax.evaluate.evaluator  the jitted eval loop over a split or a holdout
  ferjax.evaluate.trained    a trained run's checkpoint on any built dataset
  python -m ferjax.evaluate  that, as a command (`__main__`)

The first three need only data and sharding (the trainer uses them); the
last two load checkpoints and models, so they sit with the trainer.
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


def eval_step(state, batch, *, model, num_classes: int, classes=None):
  """Sums over one padded batch: confusion matrix, loss sum, example count.

  Returns sums (not means) so batches combine exactly; the host reads them
  once per evaluation.

  Args:
    state: has `variables()`, the model's variables.
    batch: {'image', 'label', 'mask'}, a padded eval batch.
    model: the Linen module.
    num_classes: the dataset's classes; the confusion matrix is square in
      them (rows true, columns predicted).
    classes: a `ferjax.evaluate.classes.ClassMatch` when the model's classes
      are not the dataset's: the argmax then runs over the logits of the
      classes both have (others are dropped first), and the loss leaves out
      the examples of classes the model lacks. None: the same classes.
  """
  images = batch['image'].astype(jnp.float32) / 255.0
  outputs = model.apply(state.variables(), images, train=False)
  logits = outputs['logits'].astype(jnp.float32)
  labels, mask = batch['label'], batch['mask']
  target, scored = labels, mask
  if classes is not None:
    logits = logits[:, jnp.asarray(classes.logit_index)]
    target = jnp.asarray(classes.position)[labels]
    scored = mask & (target >= 0)
  predictions = jnp.argmax(logits, -1)
  if classes is not None:
    predictions = jnp.asarray(classes.data_index)[predictions]
  log_probs = jax.nn.log_softmax(logits)
  target = jnp.maximum(target, 0)  # Left-out classes: any index, unscored.
  nll = -jnp.take_along_axis(log_probs, target[:, None], axis=1)[:, 0]
  return {
    'confusion': confusion_matrix(labels, predictions, mask, num_classes),
    'loss_sum': jnp.sum(nll * scored),
    'count': jnp.sum(mask.astype(jnp.int32)),
    'scored': jnp.sum(scored.astype(jnp.int32)),  # Counted in the loss.
  }

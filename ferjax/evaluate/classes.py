"""A model's classes matched to a dataset's by their canonical names.

Every ferjax dataset labels in one canonical order (`ferjax.labels`), but
not every dataset has every class: a model trained on AffectNet-8 knows
contempt, RAF-DB does not. Evaluating across datasets matches classes by
name:

  match = match_classes(model_names, dataset_names)
  # eval_step(..., classes=match): logits of classes the dataset lacks are
  # dropped before the argmax, so they are never predicted.
  metrics = matched_metrics(confusion, match)
  # WAR, UAR and recall over the classes both have; a dataset class the
  # model lacks is left out of both (it cannot be predicted) and reported
  # with its count and where its examples went.
"""

import dataclasses
from collections.abc import Sequence

import numpy as np

from ferjax import evaluate


@dataclasses.dataclass(frozen=True)
class ClassMatch:
  """How a model's classes line up with a dataset's.

  Attributes:
    model_names: the model's classes, by logit index.
    data_names: the dataset's classes, by label.
    common: the classes both have, in the dataset's order.
    logit_index: for each of `common`, the model's logit index.
    data_index: for each of `common`, the dataset's label.
    position: for each dataset label, its index in `common`, or -1 when the
      model lacks the class.
  """

  model_names: tuple[str, ...]
  data_names: tuple[str, ...]
  common: tuple[str, ...]
  logit_index: tuple[int, ...]
  data_index: tuple[int, ...]
  position: tuple[int, ...]

  @property
  def same(self) -> bool:
    """Whether model and dataset have the same classes in the same order."""
    return self.model_names == self.data_names

  @property
  def left_out(self) -> tuple[str, ...]:
    """Dataset classes the model lacks (left out of WAR and UAR)."""
    return tuple(n for n in self.data_names if n not in self.common)

  @property
  def dropped_logits(self) -> tuple[str, ...]:
    """Model classes the dataset lacks (their logits never win)."""
    return tuple(n for n in self.model_names if n not in self.common)


def match_classes(
  model_names: Sequence[str], data_names: Sequence[str], what: str = ''
) -> ClassMatch:
  """Matches classes by name.

  Args:
    model_names: the model's class names, by logit index.
    data_names: the dataset's class names, by label.
    what: names the pair in the error, e.g. 'runs/x on rafdb'.

  Raises:
    ValueError: if no class is in both.
  """
  model_names, data_names = tuple(model_names), tuple(data_names)
  common = tuple(n for n in data_names if n in model_names)
  if not common:
    raise ValueError(
      f'{what or "the model and the dataset"}: no class in common (model: '
      f'{", ".join(model_names)}; dataset: {", ".join(data_names)}); '
      'evaluate on a dataset with some of the classes the model knows.'
    )
  return ClassMatch(
    model_names=model_names,
    data_names=data_names,
    common=common,
    logit_index=tuple(model_names.index(n) for n in common),
    data_index=tuple(data_names.index(n) for n in common),
    position=tuple(common.index(n) if n in common else -1 for n in data_names),
  )


def matched_metrics(confusion, match: ClassMatch) -> dict:
  """`evaluate.metrics_from_confusion` over the classes both have.

  Args:
    confusion: counts [true, predicted] in the dataset's labels (columns of
      left-out classes are zero: they are never predicted).
    match: the classes.

  Returns:
    WAR, UAR, per-class recall and the confusion matrix of the common
    classes; when the classes differ also 'classes': the model's, the
    dataset's, the evaluated ones, the dropped logits and, per left-out
    class, its example count and the predictions they got.
  """
  full = np.asarray(confusion, np.int64)
  index = np.asarray(match.data_index)
  metrics = evaluate.metrics_from_confusion(
    full[np.ix_(index, index)], list(match.common)
  )
  if match.same:
    return metrics
  left_out = {}
  for name in match.left_out:
    row = full[match.data_names.index(name)]
    left_out[name] = {
      'num_examples': int(row.sum()),
      'predicted': {
        c: int(row[i]) for c, i in zip(match.common, index, strict=True)
      },
    }
  metrics['classes'] = {
    'model': list(match.model_names),
    'dataset': list(match.data_names),
    'evaluated': list(match.common),
    'dropped_logits': list(match.dropped_logits),
    'left_out': left_out,
  }
  return metrics

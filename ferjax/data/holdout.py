"""`config.data.validation`: where the best checkpoint is chosen.

  'test'         a split of the dataset: 'test' is what the papers (and the
                 official MA-Net and IAL code) do, choosing the best epoch
                 on the split they then report; comparable, but optimistic.
                 `datasets.set_dataset` sets it to the dataset's eval split.
  'validation'   an official validation split (FERPlus's PublicTest), by
                 its name.
  'holdout:F'    a stratified fraction F (0 < F < 1) of the train split,
                 which then no longer trains.

A holdout is a pure function of the train split's labels, F and the seed
(`split_indices`): every process computes the same one from the whole
split, and a resumed run the same again, so it is identical whatever the
process count and however often the run was restarted.
"""

from collections.abc import Sequence

import numpy as np

PREFIX = 'holdout:'
# Seeds a class's permutation together with the run's seed and the class.
_STREAM = 0x401D


def fraction(validation: str) -> float | None:
  """F of 'holdout:F'; None for a split name.

  Raises:
    ValueError: naming config.data.validation, if F is not in (0, 1).
  """
  if not validation.startswith(PREFIX):
    return None
  text = validation[len(PREFIX) :]
  try:
    value = float(text)
  except ValueError:
    value = None
  if value is None or not 0.0 < value < 1.0:
    raise ValueError(
      f'config.data.validation={validation!r}: the holdout fraction must be '
      "a number between 0 and 1, e.g. 'holdout:0.1'."
    )
  return value


def check(validation: str, splits: Sequence[str], dataset: str) -> None:
  """Raises a ValueError naming the field unless `validation` fits."""
  if fraction(validation) is None and validation not in splits:
    raise ValueError(
      f'config.data.validation={validation!r} does not fit dataset '
      f"{dataset!r}; valid: one of its splits {list(splits)} or 'holdout:F' "
      '(a fraction F of the train split).'
    )


def class_count(n: int, fraction: float) -> int:
  """Examples of a class of `n` that a holdout of `fraction` takes.

  round(F * n), but at least one of a class with two or more examples (so
  every class has a recall) and never all of them (so every class trains).
  """
  if n < 2:
    return 0
  return int(min(max(round(fraction * n), 1), n - 1))


def split_indices(
  labels: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
  """Stratified (train, validation) indices into a split of `labels`.

  Each class's examples are permuted by a generator of (seed, class) alone,
  and the first `class_count` of them are held out.

  Returns:
    Two sorted int64 arrays, disjoint, together every index once.
  """
  labels = np.asarray(labels)
  held = []
  for c in np.unique(labels):
    members = np.flatnonzero(labels == c)
    rng = np.random.default_rng([seed, int(c), _STREAM])
    held.append(rng.permutation(members)[: class_count(len(members), fraction)])
  validation = np.sort(np.concatenate(held)) if held else np.zeros(0, np.int64)
  train = np.setdiff1d(np.arange(len(labels)), validation)
  return train.astype(np.int64), validation.astype(np.int64)

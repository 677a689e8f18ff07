"""FERPlus's rules from 10 crowd-sourced votes to a label or a target.

Pure functions on one row of fer2013new.csv, following the FERPlus reference
code (`src/ferplus.py`, `FERPlusReader._process_data` and `load_folders`):
a column with a single vote is an outlier and is zeroed first, then

*   'majority' keeps the column with more than half of the remaining votes;
*   'probability' (also FERPlus's 'crossentropy' mode) keeps the few most
    voted columns that together hold most of the votes, as a distribution.

A row whose result is `unknown` or `NF` (not a face) is not used. Counts are
integers, so every threshold is compared exactly.
"""

from collections.abc import Sequence

import numpy as np

from ferjax.labels import EXPRESSIONS

# The 10 vote columns of fer2013new.csv, in file order (NF: not a face).
VOTE_COLUMNS = (
  'neutral',
  'happiness',
  'surprise',
  'sadness',
  'anger',
  'disgust',
  'fear',
  'contempt',
  'unknown',
  'NF',
)
UNKNOWN = VOTE_COLUMNS.index('unknown')  # 8; the 8 expressions come first.
NOT_FACE = VOTE_COLUMNS.index('NF')  # 9: not a face.
# FERPlus vote column (0..7) -> index into `ferjax.labels.EXPRESSIONS`.
FERPLUS_TO_CANONICAL = tuple(EXPRESSIONS.index(n) for n in VOTE_COLUMNS[:8])


def remove_outliers(votes: Sequence[int]) -> list[int]:
  """Zeroes every count of at most 1: a lone vote is an outlier."""
  return [v if v > 1 else 0 for v in votes]


def majority_label(votes: Sequence[int]) -> int:
  """The FERPlus majority rule on one row's 10 votes.

  After outlier removal, the column holding more than half of the remaining
  votes wins; with no such column the result is unknown.

  Args:
    votes: the vote counts in `VOTE_COLUMNS` order.

  Returns:
    The winning column: an expression 0..7, `UNKNOWN` (also when no column
    has a majority) or `NOT_FACE`.
  """
  left = remove_outliers(votes)
  top = max(left)
  return left.index(top) if 2 * top > sum(left) else UNKNOWN


def probability_target(votes: Sequence[int]) -> np.ndarray:
  """The FERPlus 'probability' / 'crossentropy' target of one row's votes.

  After outlier removal, the most voted columns are taken (tied columns
  together) until they hold at least 75% of the remaining votes or 3 columns
  are taken. Reaching `unknown` or `NF` ends the search, and that column is
  left out if columns were taken before it. If the taken columns hold at
  most half of the remaining votes, or more than 3 were taken, the row is
  unknown.

  Args:
    votes: the vote counts in `VOTE_COLUMNS` order.

  Returns:
    float64 [10] in `VOTE_COLUMNS` order: the taken counts divided by their
    sum, or one-hot at `UNKNOWN`.
  """
  left = remove_outliers(votes)
  total = sum(left)
  taken = [0] * len(left)
  covered = count = 0
  stop = False
  while 4 * covered < 3 * total and count < 3 and not stop:
    top = max(left)
    for i in [i for i, v in enumerate(left) if v == top]:
      taken[i], left[i] = top, 0
      covered += top
      count += 1
      if i >= UNKNOWN:
        stop = True
        if sum(taken) > top:  # Expressions were taken first: keep them.
          taken[i] = 0
          count -= 1
        break
  if 2 * sum(taken) <= total or count > 3:
    taken = [0] * len(left)
    taken[UNKNOWN] = 1
  return np.asarray(taken, np.float64) / sum(taken)


def row_target(votes: Sequence[int], rule: str) -> tuple[int, np.ndarray]:
  """Applies a label rule to one row, keeping what FERPlus trains on.

  Args:
    votes: the vote counts in `VOTE_COLUMNS` order.
    rule: 'majority' or 'probability'.

  Returns:
    (column, distribution): the column of largest weight, the first on ties
    in `VOTE_COLUMNS` order (FERPlus drops the row if it is `UNKNOWN` or
    `NOT_FACE`), and float32 [8], the weights of the expressions in
    canonical order summing to 1 (zero for a dropped row).
  """
  if rule == 'majority':
    weights = np.zeros(len(VOTE_COLUMNS))
    weights[majority_label(votes)] = 1.0
  else:
    weights = probability_target(votes)
  column = int(np.argmax(weights))
  dist = np.zeros(len(EXPRESSIONS), np.float32)
  if column < UNKNOWN:
    expressions = weights[:UNKNOWN] / weights[:UNKNOWN].sum()
    dist[list(FERPLUS_TO_CANONICAL)] = expressions
  return column, dist

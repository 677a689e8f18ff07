"""Result rows, fixed-size batches through the model, and the table.

Each face (or clip) becomes a row dict; `Batches` queues the crops and runs
them through the jitted forward pass in batches of one fixed size (the last
padded), so it compiles once, and calls back in order once rows have their
probabilities (annotated images are drawn then). `table` turns the rows into
the documented DataFrame.
"""

import collections

import numpy as np
import pandas as pd

from ferjax import labels
from ferjax.faces.face import LANDMARKS

# The face box columns, in the input's pixels.
BOX = ('x', 'y', 'w', 'h')
# The detector's score and the five landmarks (x, y), in the input's pixels.
POINTS = tuple(f'{name}_{axis}' for name in LANDMARKS for axis in 'xy')
DETECTION = ('score', *POINTS)


def with_box(record: dict, face) -> dict:
  """`record` with `face`'s box, score and landmarks (None: all unset)."""
  values = (face.x, face.y, face.w, face.h) if face else (None,) * 4
  marks = face.landmarks if face and face.landmarks else None
  points = [v for p in marks for v in p] if marks else [np.nan] * 10
  score = face.score if face else np.nan
  return {
    **record,
    **dict(zip(BOX, values, strict=True)),
    **dict(zip(DETECTION, (score, *points), strict=True)),
  }


def row(name, frame=None, face=None, box=None, error=None) -> dict:
  """A result row: input name, frame, face number, detection, error."""
  record = {'input': name, 'frame': frame, 'face': face, 'error': error}
  return with_box(record, box)


def message(e: BaseException) -> str:
  """An exception as a short `error` cell."""
  text = str(e) or type(e).__name__
  return text if len(text) <= 200 else text[:197] + '...'


def class_names(num_classes: int) -> tuple[str, ...]:
  """The canonical expression names, or class_<i> for other heads."""
  if num_classes in (7, 8):
    return labels.class_names(num_classes)
  return tuple(f'class_{i}' for i in range(num_classes))


class Batches:
  """Runs crops through the model in fixed-size batches, rows in order.

  `then(rows, fn)` calls fn(rows) once every row added so far (in
  particular `rows`) has its probabilities, in the order they were queued.
  """

  def __init__(self, forward, batch_size: int, example_shape: tuple):
    self.rows: list[dict] = []
    self._forward = forward
    self._buffer = np.zeros((batch_size, *example_shape), np.uint8)
    self._waiting: list[dict] = []
    self._after: collections.deque = collections.deque()

  def add(self, record: dict, crop: np.ndarray | None = None) -> None:
    self.rows.append(record)
    if crop is None:
      return
    self._buffer[len(self._waiting)] = crop
    self._waiting.append(record)
    record['pending'] = True
    if len(self._waiting) == len(self._buffer):
      self.flush()

  def then(self, records: list[dict], fn) -> None:
    self._after.append((records, fn))
    self._drain()

  def flush(self) -> None:
    if self._waiting:
      n = len(self._waiting)
      self._buffer[n:] = 0
      probs = np.asarray(self._forward(self._buffer))
      for record, p in zip(self._waiting, probs[:n], strict=True):
        record['probs'] = p
        del record['pending']
      self._waiting = []
    self._drain()

  def _drain(self) -> None:
    while self._after and not any('pending' in r for r in self._after[0][0]):
      records, fn = self._after.popleft()
      fn(records)


def table(records: list[dict], names: tuple[str, ...]) -> pd.DataFrame:
  """The result rows as the documented DataFrame."""
  probs = np.full((len(records), len(names)), np.nan, np.float32)
  for i, record in enumerate(records):
    if record.get('probs') is not None:
      probs[i] = record['probs']
  has = ~np.isnan(probs[:, 0]) if len(records) else np.zeros(0, bool)
  best = np.argmax(np.nan_to_num(probs, nan=-1.0), axis=1)
  columns = {'input': [r['input'] for r in records]}
  for key in ('frame', 'face', *BOX):
    columns[key] = pd.array([r[key] for r in records], dtype='Int64')
  for key in DETECTION:
    columns[key] = np.array([r[key] for r in records], np.float32)
  columns.update({name: probs[:, j] for j, name in enumerate(names)})
  label = [names[b] if h else None for b, h in zip(best, has, strict=True)]
  columns['label'] = pd.Series(label, dtype=object)
  columns['error'] = pd.Series([r['error'] for r in records], dtype=object)
  return pd.DataFrame(columns)

"""Clip models on videos: each person's sampled frames as windows of U*V.

A clip model (`config.clip.segments` = U > 0, e.g. GCSA) takes U*V frames
at once. Faces are tracked through the video (`tracking`), and each
track's crops are grouped into consecutive windows of U*V frames, each
giving one row (`face` is the track's number, `frame` the window's first
frame, the box that frame's). While a track lives, a frame where its face
is not found reuses its last box. When the track ends (or the video does),
its last, incomplete window is its last U*V frames (overlapping the one
before); a track shorter than that loops its frames as the evaluation
pipeline does (`clips.eval_indices`).

Annotated videos show every sampled frame once, with the rows of all the
windows that first cover it, written in order once they are known.
"""

import collections
import dataclasses
from collections.abc import Callable
from collections.abc import Iterable

import numpy as np

from ferjax.data import clips
from ferjax.predict import rows
from ferjax.predict import tracking


@dataclasses.dataclass
class _Window:
  """A track's most recent frames: (index, face, crop), and their count."""

  recent: collections.deque
  used: int = 0


class _Frames:
  """Annotated frames, each written once every track in it has its row."""

  def __init__(self, out):
    self.out = out
    self.queue = collections.deque()  # [index, image, pending ids, records]

  def add(self, index, image, tracks) -> None:
    if self.out.on:
      self.queue.append([index, image, set(tracks), []])
      self._write_ready()

  def done(self, track: int, records: dict) -> None:
    """Track `track`'s row for frames {index: record} is known."""
    for frame in self.queue:
      if frame[0] in records and track in frame[2]:
        frame[2].discard(track)
        frame[3].append(records[frame[0]])
    self._write_ready()

  def _write_ready(self) -> None:
    while self.queue and not self.queue[0][2]:
      _, image, _, records = self.queue.popleft()
      self.out.write(image, records)


def clip_rows(
  item,
  frames: Iterable[tuple[int, np.ndarray]],
  batches: rows.Batches,
  out,
  *,
  clip: clips.ClipConfig,
  find_faces: Callable,
  preprocess: Callable,
  tracker: tracking.IoUTracker,
) -> None:
  """Queues one row per window of `clip.length` frames of each person.

  Args:
    item: the video's `media.Item`.
    frames: (index, RGB image) of the sampled frames.
    batches: where rows and crops go.
    out: the annotated video (`annotate.VideoOut`).
    clip: the model's clip config.
    find_faces: image -> faces, largest first.
    preprocess: (image, face) -> the model's uint8 input for that frame.
    tracker: numbers the faces.
  """
  length = clip.length
  windows: dict[int, _Window] = {}
  written = _Frames(out)
  found = False
  for index, image in frames:
    _, ended = tracker.update(find_faces(image))
    for track in ended:
      _finish(item, track, windows.pop(track), batches, written, clip)
    live = tracker.live()
    found = found or bool(live)
    for track in live:
      window = windows.setdefault(
        track.id, _Window(collections.deque(maxlen=length))
      )
      window.recent.append((index, track.face, preprocess(image, track.face)))
      window.used += 1
      if window.used % length == 0:
        _add_clip(item, track.id, list(window.recent), batches, written)
    written.add(index, image, [t.id for t in live])
  if not found:
    batches.add(rows.row(item.name, error='no face found in any frame'))
  for track, window in sorted(windows.items()):
    _finish(item, track, window, batches, written, clip)


def _finish(item, track, window, batches, written, clip) -> None:
  """The incomplete last window of a track, if any."""
  if not window.used % clip.length:
    return
  recent = list(window.recent)
  new = window.used % clip.length
  if window.used < clip.length:  # Loop a short track, as eval does.
    order = clips.eval_indices(
      window.used, clip.segments, clip.frames_per_segment
    )
    recent = [recent[i] for i in order]
  fresh = recent if window.used < clip.length else recent[-new:]
  _add_clip(item, track, recent, batches, written, fresh)


def _add_clip(item, track, window, batches, written, fresh=None) -> None:
  """One row for the clip `window`; it annotates the `fresh` frames."""
  first = min(window, key=lambda w: w[0])
  record = rows.row(item.name, first[0], track, first[1])
  batches.add(record, np.stack([w[2] for w in window]))
  fresh = {w[0]: w[1] for w in (fresh or window)}

  def annotate(records):  # The window's row, with each frame's own box.
    written.done(
      track, {i: rows.with_box(records[0], f) for i, f in fresh.items()}
    )

  batches.then([record], annotate)

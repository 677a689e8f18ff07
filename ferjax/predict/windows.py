"""Clip models on videos: the sampled frames as windows of U*V frames.

A clip model (`config.clip.segments` = U > 0, e.g. GCSA) takes U*V frames
at once. A video's sampled frames are grouped into consecutive windows of
U*V frames, each giving one row (`frame` is the window's first frame, the
box that frame's face). Each frame contributes its largest face; a frame
where none is found reuses the previous frame's box, and frames before the
first detection are skipped. The last, incomplete window is the video's
last U*V usable frames (it overlaps the one before); a video with fewer
frames loops them as the evaluation pipeline does (`clips.eval_indices`).
"""

import collections
from collections.abc import Callable
from collections.abc import Iterable

import numpy as np

from ferjax.data import clips
from ferjax.predict import rows


def clip_rows(
  item,
  frames: Iterable[tuple[int, np.ndarray]],
  batches: rows.Batches,
  out,
  *,
  clip: clips.ClipConfig,
  find_faces: Callable,
  preprocess: Callable,
) -> None:
  """Queues one row per window of `clip.length` frames of a video.

  Args:
    item: the video's `media.Item`.
    frames: (index, RGB image) of the sampled frames.
    batches: where rows and crops go.
    out: the annotated video (`annotate.VideoOut`).
    clip: the model's clip config.
    find_faces: image -> faces, largest first.
    preprocess: (image, face) -> the model's uint8 input for that frame.
  """
  length = clip.length
  recent = collections.deque(maxlen=length)  # (index, face, crop, image)
  face, used, seen = None, 0, 0
  for index, image in frames:
    seen += 1
    found = find_faces(image)
    face = found[0] if found else face
    if face is None:  # Before the first face: not part of any window.
      out.write(image, [])
      continue
    crop = preprocess(image, face)
    recent.append((index, face, crop, image if out.on else None))
    used += 1
    if used % length == 0:
      _add_clip(item, list(recent), batches, out)
  if face is None and seen:
    batches.add(rows.row(item.name, error='no face found in any frame'))
  elif used % length:
    window = list(recent)
    new = used % length
    if used < length:  # Loop a short video, as the eval pipeline does.
      order = clips.eval_indices(used, clip.segments, clip.frames_per_segment)
      window, new = [window[i] for i in order], None
    _add_clip(item, window, batches, out, new)


def _add_clip(item, window, batches, out, new=None) -> None:
  """One row for the clip `window`; annotates its last `new` frames."""
  first = min(window, key=lambda w: w[0])
  record = rows.row(item.name, first[0], 0, first[1])
  batches.add(record, np.stack([w[2] for w in window]))
  if out.on:
    fresh = {w[0]: w for w in (window[-new:] if new else window)}

    def write(records):  # The window's row, with each frame's own box.
      for _, f, _, image in sorted(fresh.values(), key=lambda w: w[0]):
        box = dict(zip(rows.BOX, (f.x, f.y, f.w, f.h), strict=True))
        out.write(image, [{**records[0], **box}])

    batches.then([record], write)

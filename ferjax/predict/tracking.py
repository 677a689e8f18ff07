"""Face tracks through a video: the same person keeps one `face` number.

Each sampled frame's faces are matched to the tracks of the frames before
by the overlap (IoU) of their boxes, greedily, best overlap first: a face
continues the track it overlaps most if that overlap is at least
`min_iou`; a face that continues none starts a new track, numbered in
order of appearance from 0. A track not seen for more than `max_age`
sampled frames ends (its number is not reused). Faces in consecutive
sampled frames of one person overlap heavily unless the stride is large
or the motion fast, so IoU matching is enough here: it needs no appearance
model and costs nothing next to detection.
"""

import dataclasses

from ferjax.faces.face import Face


def iou(a: Face, b: Face) -> float:
  """Intersection over union of two boxes."""
  w = min(a.x + a.w, b.x + b.w) - max(a.x, b.x)
  h = min(a.y + a.h, b.y + b.h) - max(a.y, b.y)
  inter = max(0, w) * max(0, h)
  return inter / (a.area + b.area - inter) if inter else 0.0


@dataclasses.dataclass
class Track:
  """A person's face so far: its number, last box, frames since seen."""

  id: int
  face: Face
  missed: int = 0


@dataclasses.dataclass
class IoUTracker:
  """Numbers faces consistently across frames (see the module docstring).

  Attributes:
    min_iou: the least box overlap that continues a track.
    max_age: sampled frames a track may go unseen before it ends.
  """

  min_iou: float = 0.3
  max_age: int = 5
  tracks: list[Track] = dataclasses.field(default_factory=list)
  _next: int = 0

  def update(self, faces: list[Face]) -> tuple[list[int], list[int]]:
    """Matches one frame's faces to the tracks.

    Returns:
      (the track number of each face, in order; the numbers of the
      tracks that ended at this frame).
    """
    pairs = sorted(
      (
        (iou(t.face, f), i, j)
        for i, t in enumerate(self.tracks)
        for j, f in enumerate(faces)
      ),
      reverse=True,
    )
    ids: list[int | None] = [None] * len(faces)
    matched = set()
    for overlap, i, j in pairs:
      if overlap < self.min_iou:
        break
      if i not in matched and ids[j] is None:
        matched.add(i)
        ids[j] = self.tracks[i].id
        self.tracks[i].face, self.tracks[i].missed = faces[j], 0
    for i, t in enumerate(self.tracks):
      t.missed += i not in matched
    ended = [t.id for t in self.tracks if t.missed > self.max_age]
    self.tracks = [t for t in self.tracks if t.missed <= self.max_age]
    for j, face in enumerate(faces):
      if ids[j] is None:
        ids[j] = self._next
        self.tracks.append(Track(self._next, face))
        self._next += 1
    return ids, ended

  def live(self) -> list[Track]:
    """The tracks not ended, in order of appearance."""
    return sorted(self.tracks, key=lambda t: t.id)

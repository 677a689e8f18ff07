"""`Face`: one detected face (box, score, landmarks), and small helpers."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

# The five landmarks, in MTCNN's order. Left and right are on screen: the
# 'left' eye is the person's right eye.
LANDMARKS = ('left_eye', 'right_eye', 'nose', 'mouth_left', 'mouth_right')

Point = tuple[float, float]


@dataclasses.dataclass(frozen=True)
class Face:
  """One detected face, in the pixels of the image it was found in.

  Attributes:
    x: left edge of the box.
    y: top edge of the box.
    w: box width.
    h: box height.
    score: the detector's confidence (MTCNN: O-Net's face probability;
      Haar: the number of merged detections; 1.0 for `WholeImage`); larger
      is surer.
    left_eye: (x, y) centre of the eye on the image's left (the person's
      right eye), or None when unknown.
    right_eye: (x, y) centre of the eye on the image's right, or None.
    landmarks: the five points of `LANDMARKS` as (x, y), or None; when
      known, the eyes above are its first two.
  """

  x: int
  y: int
  w: int
  h: int
  score: float = 1.0
  left_eye: Point | None = None
  right_eye: Point | None = None
  landmarks: tuple[Point, ...] | None = None

  @classmethod
  def from_corners(cls, corners, score: float, points=None) -> Face:
    """A face from float (x1, y1, x2, y2) and optional (5, 2) points."""
    x1, y1, x2, y2 = (float(c) for c in corners)
    x, y = round(x1), round(y1)
    marks = None
    if points is not None:
      marks = tuple((float(px), float(py)) for px, py in np.asarray(points))
    return cls(
      x=x,
      y=y,
      w=max(1, round(x2) - x),
      h=max(1, round(y2) - y),
      score=score,
      left_eye=marks[0] if marks else None,
      right_eye=marks[1] if marks else None,
      landmarks=marks,
    )

  @property
  def area(self) -> int:
    return self.w * self.h

  @property
  def roll(self) -> float:
    """Degrees the eye line is turned clockwise on screen (0 if unknown)."""
    if self.left_eye is None or self.right_eye is None:
      return 0.0
    dx = self.right_eye[0] - self.left_eye[0]
    dy = self.right_eye[1] - self.left_eye[1]
    return math.degrees(math.atan2(dy, dx))

  def scaled(self, factor: float) -> Face:
    """This face in an image resized by `factor` (e.g. back to full size)."""

    def point(p):
      return None if p is None else (p[0] * factor, p[1] * factor)

    return Face(
      x=round(self.x * factor),
      y=round(self.y * factor),
      w=max(1, round(self.w * factor)),
      h=max(1, round(self.h * factor)),
      score=self.score,
      left_eye=point(self.left_eye),
      right_eye=point(self.right_eye),
      landmarks=None
      if self.landmarks is None
      else tuple(point(p) for p in self.landmarks),
    )


def largest_first(faces: list[Face]) -> list[Face]:
  """Faces by decreasing box area (then score, then position)."""
  return sorted(faces, key=lambda f: (-f.area, -f.score, f.y, f.x))


def clip_box(face: Face, width: int, height: int) -> Face | None:
  """`face` with its box clipped to the image; None if nothing is left.

  Landmarks are kept as they are (a point may lie outside the box).
  """
  x0, y0 = max(0, face.x), max(0, face.y)
  x1, y1 = min(width, face.x + face.w), min(height, face.y + face.h)
  if x1 <= x0 or y1 <= y0:
    return None
  return dataclasses.replace(face, x=x0, y=y0, w=x1 - x0, h=y1 - y0)


def check_rgb(image) -> np.ndarray:
  """`image` as an array, if it is RGB uint8 (H, W, 3); else ValueError."""
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
    raise ValueError(
      f'detectors take RGB uint8 (H, W, 3) images, got {image.dtype} '
      f'{image.shape}.'
    )
  return image

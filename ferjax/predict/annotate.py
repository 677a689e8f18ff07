"""Annotated copies of the inputs: images as PNG, videos as MJPG .avi."""

import os

import cv2
import numpy as np

from ferjax.predict import rows


class Annotator:
  """Writes annotated copies of the inputs under `directory`."""

  def __init__(self, directory: str, names: tuple[str, ...]):
    self.directory = directory
    self.names = names
    self._used: set[str] = set()

  def path(self, out_name: str, ext: str) -> str:
    stem = os.path.splitext(out_name)[0]
    path, n = stem + ext, 0
    while path in self._used:  # Two inputs with one name keep both.
      n += 1
      path = f'{stem}_{n}{ext}'
    self._used.add(path)
    path = os.path.join(self.directory, path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path

  def draw(self, image: np.ndarray, records: list[dict]) -> np.ndarray:
    """`viz.annotate` of the image with its predicted rows, and each face's
    landmarks as dots (BGR out)."""
    from ferjax import viz  # matplotlib and drawing only when annotating.

    done = [r for r in records if r.get('probs') is not None]
    drawn = np.array(
      viz.annotate(image, rows.table(done, self.names)), np.uint8
    )
    for record in done:
      draw_landmarks(drawn, record)
    return cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR)

  def image(self, out_name: str, image: np.ndarray, records: list[dict]):
    cv2.imwrite(self.path(out_name, '.png'), self.draw(image, records))

  def video(self, out_name: str, fps: float, image: np.ndarray):
    height, width = image.shape[:2]
    fourcc = cv2.VideoWriter_fourcc(*'MJPG')
    path = self.path(out_name, '.avi')
    return cv2.VideoWriter(path, fourcc, fps, (width, height))


# Dot colours (RGB): eyes, nose, mouth corners.
_DOTS = (
  (0, 255, 255),
  (0, 255, 255),
  (255, 255, 0),
  (255, 0, 255),
  (255, 0, 255),
)


def draw_landmarks(image: np.ndarray, record: dict) -> None:
  """Draws a row's five landmarks on the RGB `image`, in place."""
  xs = [record[n] for n in rows.POINTS[0::2]]
  ys = [record[n] for n in rows.POINTS[1::2]]
  if any(v is None or np.isnan(v) for v in xs + ys):
    return
  radius = max(2, round((record['w'] or 0) / 40))
  for x, y, colour in zip(xs, ys, _DOTS, strict=True):
    cv2.circle(image, (round(x), round(y)), radius, colour, -1, cv2.LINE_AA)


class VideoOut:
  """An annotated video, opened at its first frame (or nothing)."""

  def __init__(self, annotator: Annotator | None, out_name: str, fps: float):
    self.annotator, self.out_name, self.fps = annotator, out_name, fps
    self.on = bool(annotator)
    self._writer = None

  def write(self, image: np.ndarray, records: list[dict]) -> None:
    if not self.on:
      return
    if self._writer is None:
      self._writer = self.annotator.video(self.out_name, self.fps, image)
    self._writer.write(self.annotator.draw(image, records))

  def close(self, records=None) -> None:
    del records
    if self._writer is not None:
      self._writer.release()

  def __bool__(self) -> bool:
    return self.on

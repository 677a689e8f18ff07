"""Face detectors by name, and box crops; offline, from pip wheels.

    detector = detect.get_detector('mtcnn')      # or 'haar', None for crops
    faces = detector(rgb)                         # list[Face], largest first
    crop = detect.align(rgb, faces[0], margin=0.2)

A detector is any callable that takes an RGB uint8 (H, W, 3) image and
returns a list of `Face` records in that image's pixels (the `Detector`
protocol), so a detector that a user already has (RetinaFace, MediaPipe,
YuNet, ...) plugs in as a small wrapper returning `Face`s, or is
registered by name with `register_detector`.

Built in:

- 'mtcnn' (`ferjax.faces.mtcnn.MTCNN`, the default): MTCNN in JAX with
  facenet-pytorch's weights (shipped in the package), a box, a score and
  five landmarks per face; it finds turned, tilted and partly covered faces
  that Haar misses (docs/faces.md measures both on real photographs).
- 'haar' (`HaarDetector`): OpenCV's Viola-Jones frontal-face
  cascade, `haarcascade_frontalface_default.xml` from `cv2.data.haarcascades`,
  which ships inside the opencv-python wheels, so it needs no download. Its
  limits: it was trained on upright frontal faces, so it misses profiles,
  strongly tilted heads and faces smaller than `min_size`, and gives false
  positives on face-like texture; it is fast on a CPU but far less accurate
  than CNN detectors. On the synthetic dataset's cartoon faces it finds 32
  of 40 at 224 px (29 at 112 px). Boxes are square and fairly tight (brows
  to chin). Optional eye detection (`haarcascade_eye.xml`, `eyes=True`)
  inside the upper half of each face estimates the roll that `align`
  removes. It is off by default: the eye cascade is unreliable (it finds no
  eye pair on the synthetic faces, and on photos it can fire on brows or
  glasses frames), and a wrong pair would rotate the crop wrongly.
- None or 'none' (`WholeImage`): the whole image is one face, for inputs
  that are already face crops (as the images of FER datasets are).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Protocol

import cv2
import numpy as np

from ferjax.faces import mtcnn
from ferjax.faces.face import Face
from ferjax.faces.face import check_rgb
from ferjax.faces.face import clip_box
from ferjax.faces.face import largest_first

__all__ = [
  'Face',
  'Detector',
  'HaarDetector',
  'WholeImage',
  'register_detector',
  'get_detector',
  'list_detectors',
  'detect_resized',
  'align',
  'DEFAULT_MARGIN',
]

# Fraction of the box side added on each side of a face by `align`: the crop
# is 1.4x the box. Haar boxes run from the brows to the chin and from cheek
# to cheek, while FER training images show the whole face, often with some
# hair and background. 0.2 is a middle value between tightly aligned crops
# (RAF-DB's aligned images, FERPlus) and loose ones, chosen by judgement, not
# measured on those licence-gated datasets; a run whose crops are known does
# better to set it: ferjax.predict uses 0.3 for runs on the synthetic dataset,
# whose images measure 1.6x their Haar box (median over 40 faces).
DEFAULT_MARGIN = 0.2

BORDERS = {
  'constant': cv2.BORDER_CONSTANT,
  'replicate': cv2.BORDER_REPLICATE,
  'reflect': cv2.BORDER_REFLECT_101,
}


class Detector(Protocol):
  """Finds faces: an RGB uint8 (H, W, 3) image -> faces, largest first."""

  def __call__(self, image: np.ndarray) -> list[Face]: ...


@functools.cache
def _cascade(name: str) -> cv2.CascadeClassifier:
  path = cv2.data.haarcascades + name
  cascade = cv2.CascadeClassifier(path)
  if cascade.empty():
    raise FileNotFoundError(
      f'cannot load the OpenCV cascade {path}; reinstall '
      'opencv-python-headless (its wheels ship the cascades).'
    )
  return cascade


@dataclasses.dataclass(frozen=True)
class HaarDetector:
  """OpenCV's Haar frontal-face cascade (see the module docstring).

  Attributes:
    scale_factor: image pyramid step of `detectMultiScale` (> 1); smaller
      finds more faces, slower.
    min_neighbors: overlapping detections needed to keep a face; larger
      gives fewer false positives and more misses.
    min_size: smallest face side in pixels.
    equalize: histogram-equalise the gray image first (helps dark or flat
      lighting, can add false positives).
    eyes: also look for two eyes in the upper half of each face, to set
      `Face.left_eye` / `right_eye` (the roll that `align` removes).
    max_roll: an eye pair tilted more than this many degrees is discarded.
  """

  scale_factor: float = 1.1
  min_neighbors: int = 3
  min_size: int = 24
  equalize: bool = False
  eyes: bool = False
  max_roll: float = 30.0
  face_cascade: str = 'haarcascade_frontalface_default.xml'
  eye_cascade: str = 'haarcascade_eye.xml'

  def __call__(self, image: np.ndarray) -> list[Face]:
    gray = _gray(image)
    if self.equalize:
      gray = cv2.equalizeHist(gray)
    boxes, counts = _cascade(self.face_cascade).detectMultiScale2(
      gray,
      scaleFactor=self.scale_factor,
      minNeighbors=self.min_neighbors,
      minSize=(self.min_size, self.min_size),
    )
    faces = []
    for (x, y, w, h), n in zip(boxes, counts, strict=True):
      face = Face(int(x), int(y), int(w), int(h), float(n))
      face = clip_box(face, gray.shape[1], gray.shape[0])
      if face is None:
        continue
      if self.eyes:
        face = self._with_eyes(gray, face)
      faces.append(face)
    return largest_first(faces)

  def _with_eyes(self, gray: np.ndarray, face: Face) -> Face:
    """`face` with eye centres, if one eye is found in each upper quarter."""
    top = gray[face.y : face.y + face.h // 2, face.x : face.x + face.w]
    side = max(1, face.w // 10)
    found = _cascade(self.eye_cascade).detectMultiScale(
      top, scaleFactor=1.1, minNeighbors=3, minSize=(side, side)
    )
    # The largest eye candidate on each side of the box's vertical midline.
    half = face.w / 2
    left = right = None
    for ex, ey, ew, eh in sorted(found, key=lambda b: -b[2] * b[3]):
      centre = (face.x + ex + ew / 2, face.y + ey + eh / 2)
      if ex + ew / 2 < half and left is None:
        left = centre
      elif ex + ew / 2 >= half and right is None:
        right = centre
    if left is None or right is None:
      return face
    eyed = dataclasses.replace(face, left_eye=left, right_eye=right)
    return eyed if abs(eyed.roll) <= self.max_roll else face


@dataclasses.dataclass(frozen=True)
class WholeImage:
  """The whole image is one face: for inputs that are face crops already."""

  def __call__(self, image: np.ndarray) -> list[Face]:
    height, width = np.shape(image)[:2]
    return [Face(0, 0, int(width), int(height), 1.0)]


def _gray(image: np.ndarray) -> np.ndarray:
  return cv2.cvtColor(check_rgb(image), cv2.COLOR_RGB2GRAY)


_REGISTRY: dict[str, Callable[..., Detector]] = {
  'mtcnn': mtcnn.MTCNN,
  'haar': HaarDetector,
  'none': WholeImage,
}


def register_detector(name: str, factory: Callable[..., Detector]) -> None:
  """Makes `get_detector(name, **fields)` return `factory(**fields)`."""
  _REGISTRY[name] = factory


def list_detectors() -> tuple[str, ...]:
  """The registered detector names, sorted."""
  return tuple(sorted(_REGISTRY))


def get_detector(name: str | Detector | None = 'mtcnn', **fields) -> Detector:
  """A detector by registry name, or `name` itself if it is a callable.

  Args:
    name: 'mtcnn' (default), 'haar', None or 'none' (the whole image is the face),
      another registered name, or any callable following `Detector`.
    **fields: fields of the detector, e.g. `min_neighbors=5` for 'haar'.

  Raises:
    ValueError: an unknown name (the message lists the known ones).
  """
  if name is None:
    name = 'none'
  if callable(name):
    if fields:
      raise ValueError('fields apply to detectors given by name only.')
    return name
  if name not in _REGISTRY:
    raise ValueError(
      f'unknown face detector {name!r}; known: {", ".join(list_detectors())}'
      ' (or pass any callable image -> list[Face]).'
    )
  return _REGISTRY[name](**fields)


def detect_resized(
  detector: Detector, image: np.ndarray, max_side: int | None
) -> list[Face]:
  """Runs `detector` on `image` shrunk to at most `max_side` pixels a side.

  Detection cost grows with the pixel count while faces in a huge photo are
  large, so detecting on a smaller copy loses little; the faces come back in
  the pixels of the full `image`, so crops keep its full resolution.

  Args:
    detector: the detector.
    image: RGB uint8 (H, W, 3).
    max_side: the longest side detection sees; None or 0 for no limit.

  Returns:
    The faces in `image`'s pixels, clipped to it, largest first.
  """
  height, width = image.shape[:2]
  factor = 1.0
  small = image
  if max_side and max(height, width) > max_side:
    factor = max(height, width) / max_side
    size = (max(1, round(width / factor)), max(1, round(height / factor)))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
  faces = []
  for face in detector(small):
    face = clip_box(face.scaled(factor) if factor != 1 else face, width, height)
    if face is not None:
      faces.append(face)
  return largest_first(faces)


def align(
  image: np.ndarray,
  face: Face,
  margin: float = DEFAULT_MARGIN,
  size: int | None = None,
  border: str = 'constant',
) -> np.ndarray:
  """The face's square crop, turned upright by its eye line when known.

  The crop is centred on the box, its side `max(w, h) * (1 + 2 * margin)`.
  With both eyes known, the image is first rotated about the box centre by
  `face.roll` so the eye line is horizontal (one bilinear warp); otherwise
  the crop is a plain copy of pixels. Parts of the crop outside the image
  (a face at the border, or a large margin) are filled per `border`.

  Args:
    image: uint8 (H, W) or (H, W, C) image.
    face: the face, in `image`'s pixels.
    margin: fraction of the box side added on each side (>= 0).
    size: output side in pixels; None keeps the image's resolution (the
      side is the rounded crop side), so a later resize, e.g.
      `augment.eval_transform`, sees the original pixels.
    border: 'constant' (black, like the fill of the training augmentation),
      'replicate' (repeat the edge pixels) or 'reflect' (mirror).

  Returns:
    The uint8 (side, side[, C]) crop.
  """
  if margin < 0:
    raise ValueError(f'margin={margin}: expected a fraction >= 0.')
  if border not in BORDERS:
    raise ValueError(f'border={border!r}: expected one of {tuple(BORDERS)}.')
  side = max(face.w, face.h) * (1 + 2 * margin)
  out = max(1, round(side))
  cx, cy = face.x + face.w / 2, face.y + face.h / 2
  angle = face.roll
  if angle:
    # Rotate about the box centre, then move that centre to the crop's.
    m = cv2.getRotationMatrix2D((cx - 0.5, cy - 0.5), angle, 1.0)
    m[:, 2] += (out - 1) / 2 - np.array([cx - 0.5, cy - 0.5])
    crop = cv2.warpAffine(
      image,
      m,
      (out, out),
      flags=cv2.INTER_LINEAR,
      borderMode=BORDERS[border],
      borderValue=0,
    )
  else:
    left, top = round(cx - out / 2), round(cy - out / 2)
    crop = padded_window(image, left, top, out, out, border)
  if size is not None and size != out:
    interpolation = cv2.INTER_AREA if size < out else cv2.INTER_LINEAR
    crop = cv2.resize(crop, (size, size), interpolation=interpolation)
  return crop


def padded_window(
  image: np.ndarray,
  left: int,
  top: int,
  width: int,
  height: int,
  border: str = 'constant',
) -> np.ndarray:
  """image[top:top+height, left:left+width], padded where it leaves the
  image (filled per `border`, as in `align`)."""
  rows, cols = image.shape[:2]
  x0, y0 = max(0, left), max(0, top)
  x1, y1 = min(cols, left + width), min(rows, top + height)
  if x1 <= x0 or y1 <= y0:  # Entirely outside: only border.
    return np.zeros((height, width, *image.shape[2:]), image.dtype)
  crop = image[y0:y1, x0:x1]
  pads = (y0 - top, top + height - y1, x0 - left, left + width - x1)
  if any(pads):
    crop = cv2.copyMakeBorder(crop, *pads, BORDERS[border], value=0)
  return np.ascontiguousarray(crop)

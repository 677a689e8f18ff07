"""Face crops that look like a dataset's images: each dataset's convention.

    style = crops.get_style('rafdb')
    crop = crops.crop(rgb, face, style)   # uint8, in the style's size

A model sees at inference what it saw in training only if a detected face
is cut out the way its dataset's images were. `CropStyle` records one
convention, and `STYLES` names them:

- 'template': a least-squares similarity transform (rotation, uniform
  scale, translation; Umeyama's closed form, as face.evoLVe's and
  ArcFace's alignment) maps the face's five landmarks (`Face.landmarks`,
  MTCNN's order) onto the style's five template points, in an image of the
  style's size. A face without landmarks (Haar, a user's detector) falls
  back to a box crop with the style's `margin`.
- 'box': the detector's box grown by `margin` of its side on each side,
  square about its centre (`detect.align`, which also turns the eye line
  level when the eyes are known) or per axis (`square=False`).
- 'frame': the whole image, for datasets of whole frames (CAER-S).

`size` is the dataset's own image size, so a face is resampled to it
first and the model's eval transform then resizes it as training did
(FERPlus's 48 px faces reach a 112 px model blurred, as in training);
`gray` repeats a grey crop to RGB, as the pipeline does for FERPlus.

The conventions, where a release documents them, and the closest choice
where it does not (each is a field, so a run can say otherwise):

- 'arcface_112': face.evoLVe's (and ArcFace's) 112x112 template, which
  MS-Celeb IR-50 backbones were trained on (`ARCFACE_112`).
- 'rafdb': RAF-DB's aligned images are 100x100, aligned by a similarity
  transform on five landmarks (eye centres, nose tip, mouth corners); the
  template itself is not published. Closest: the ArcFace template scaled
  to 100 px, which frames the face from the brows to the chin as those
  images do.
- 'sfew': SFEW 2.0's aligned faces are 143 wide and 181 high; how they were
  aligned is not published. Closest: the ArcFace template scaled to the
  width (143/112) and centred in the height, a taller frame with the chin
  and hair.
- 'affectnet': AffectNet's crops are the annotated face box (from its
  authors' detector) grown by 10 % per side per axis, as
  `tfds_builders/affectnet` stores the original release; its newer
  release ships 224 px crops of the same boxes. MTCNN's box stands in for
  the annotated one.
- 'ferplus': FER2013's 48x48 grey faces were registered so that the face
  fills most of the image; the procedure is not published. Closest: a
  square box crop with a 10 % margin, 48 px, grey.
- 'dfew', 'ferv39k': the clips' faces were cut by their authors'
  detectors at 224 px (DFEW) or from their face-crop clips (FERV39K), by an
  unpublished procedure. Closest: a square box crop with a 20 % margin.
- 'synthetic_fer': the synthetic faces sit in their images with a margin
  of 36 % of MTCNN's box per side (median over the 39 of 40 renders at
  224 px where it finds the face).
- 'caer_s': whole frames ('frame'); its 'aligned' builder config stores
  'rafdb' crops instead.
- 'box': the margin crop ferjax used before crop styles existed
  (`detect.DEFAULT_MARGIN`), kept for runs trained before them.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from ferjax.faces import detect
from ferjax.faces.face import Face

# face.evoLVe's / ArcFace's five points in a 112x112 crop (x, y): eye
# centres, nose tip, mouth corners, left to right on screen.
ARCFACE_112 = (
  (38.2946, 51.6963),
  (73.5318, 51.5014),
  (56.0252, 71.7366),
  (41.5493, 92.3655),
  (70.7299, 92.2041),
)
KINDS = ('template', 'box', 'frame')


@dataclasses.dataclass(frozen=True)
class CropStyle:
  """How a dataset's images frame a face (see the module docstring).

  Attributes:
    kind: 'template', 'box' or 'frame'.
    size: (width, height) of the dataset's images; None keeps the crop at
      the photo's resolution (box crops only).
    points: the five template points in a `size` image ('template').
    margin: fraction of the box side added on each side (box crops, and
      templates for faces without landmarks).
    square: box crops are squares about the box centre; False grows the
      box per axis.
    gray: the dataset's images are grey (repeated to RGB here).
  """

  kind: str = 'box'
  size: tuple[int, int] | None = None
  points: tuple[tuple[float, float], ...] | None = None
  margin: float = detect.DEFAULT_MARGIN
  square: bool = True
  gray: bool = False

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f'crop kind {self.kind!r}: expected one of {KINDS}.')
    if self.kind == 'template' and (self.points is None or not self.size):
      raise ValueError('a template crop needs its size and five points.')
    if self.margin < 0:
      raise ValueError(f'margin={self.margin}: expected a fraction >= 0.')


def template(scale: float, dy: float = 0.0) -> tuple:
  """`ARCFACE_112` times `scale`, moved down by `dy` pixels."""
  return tuple((x * scale, y * scale + dy) for x, y in ARCFACE_112)


STYLES: dict[str, CropStyle] = {
  'box': CropStyle(),
  'arcface_112': CropStyle('template', (112, 112), ARCFACE_112, 0.1),
  'rafdb': CropStyle('template', (100, 100), template(100 / 112)),
  'sfew': CropStyle(
    'template', (143, 181), template(143 / 112, (181 - 143) / 2)
  ),
  'affectnet': CropStyle('box', None, None, 0.1, square=False),
  'ferplus': CropStyle('box', (48, 48), None, 0.1, gray=True),
  'dfew': CropStyle('box', None, None, 0.2),
  'ferv39k': CropStyle('box', None, None, 0.2),
  'synthetic_fer': CropStyle('box', None, None, 0.36),
  'caer_s': CropStyle('frame'),
}


def register_style(name: str, style: CropStyle) -> None:
  """Makes `get_style(name)` return `style` (e.g. a user's dataset)."""
  STYLES[name] = style


def get_style(style: str | CropStyle) -> CropStyle:
  """A style by name, or `style` itself.

  Raises:
    ValueError: an unknown name (the message lists the known ones).
  """
  if isinstance(style, CropStyle):
    return style
  if style not in STYLES:
    raise ValueError(
      f'unknown crop style {style!r}; known: {", ".join(sorted(STYLES))} '
      '(or register one with ferjax.faces.crops.register_style).'
    )
  return STYLES[style]


def similarity(src, dst) -> np.ndarray:
  """The 2x3 least-squares similarity transform taking `src` to `dst`.

  Umeyama (1991): rotation, uniform scale and translation (no reflection)
  minimising the squared distances between the mapped `src` points and
  `dst`, as skimage's SimilarityTransform.estimate and face.evoLVe's
  alignment compute it.
  """
  src = np.asarray(src, np.float64)
  dst = np.asarray(dst, np.float64)
  src_mean, dst_mean = src.mean(0), dst.mean(0)
  s, d = src - src_mean, dst - dst_mean
  u, sigma, vt = np.linalg.svd(d.T @ s / len(src))
  flip = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
  rotation = u @ flip @ vt
  scale = (sigma * np.diag(flip)).sum() / (s**2).sum() * len(src)
  shift = dst_mean - scale * rotation @ src_mean
  return np.hstack([scale * rotation, shift[:, None]])


def crop(
  image: np.ndarray,
  face: Face,
  style: str | CropStyle = 'box',
  border: str = 'constant',
) -> np.ndarray:
  """The face cut out as `style`'s dataset would show it.

  Args:
    image: uint8 (H, W, 3) (or (H, W)) image.
    face: the face, in `image`'s pixels.
    style: a `STYLES` name or a `CropStyle`.
    border: how parts beyond the image are filled ('constant' black,
      'replicate', 'reflect'), as `detect.align`.

  Returns:
    uint8 crop of `style.size` (or the box crop's own size), RGB unless the
    image was grey.
  """
  style = get_style(style)
  if style.kind == 'frame':
    return image
  if style.kind == 'template' and face.landmarks is not None:
    out = cv2.warpAffine(
      image,
      similarity(face.landmarks, style.points),
      style.size,
      flags=cv2.INTER_LINEAR,
      borderMode=detect.BORDERS[border],
      borderValue=0,
    )
  else:  # A box crop (also a template's, for a face without landmarks).
    if style.square:
      out = detect.align(image, face, style.margin, border=border)
    else:
      out = _box_window(image, face, style.margin, border)
    if style.size and out.shape[1::-1] != style.size:
      shrink = style.size[0] < out.shape[1]
      interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
      out = cv2.resize(out, style.size, interpolation=interpolation)
  if style.gray and out.ndim == 3:
    grey = cv2.cvtColor(out, cv2.COLOR_RGB2GRAY)
    out = cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB)
  return out


def _box_window(image, face: Face, margin: float, border: str) -> np.ndarray:
  """The box grown by `margin` of its width (height) on the left and right
  (top and bottom), as AffectNet's crops."""
  dx, dy = round(face.w * margin), round(face.h * margin)
  return detect.padded_window(
    image, face.x - dx, face.y - dy, face.w + 2 * dx, face.h + 2 * dy, border
  )

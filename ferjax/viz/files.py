"""Atomic file writing and figure creation for `ferjax.viz`.

Every file is written to a temporary name in its folder and renamed over the
target, so a reader never sees half a file. Figures are
`matplotlib.figure.Figure` objects made without pyplot: they render with
Agg, need no display, hold no global state and are freed when no longer
referenced. matplotlib is imported on first use, so that the OpenCV drawing
of `ferjax.viz.draw` does not pay for it.
"""

import contextlib
import os
import re
import tempfile
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

PLOTS_DIR = 'plots'
DPI = 100


def write_atomic(path: str, write: Callable[[Any], None]) -> str:
  """Writes a file through a temporary name in its folder, then renames it.

  Args:
    path: the target file; its folder is created if needed.
    write: called with the open binary temporary file.

  Returns:
    `path`. On any error the temporary file is removed and the target is
    left as it was.
  """
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(
    dir=directory, prefix=f'.{os.path.basename(path)}.', suffix='.tmp'
  )
  try:
    with os.fdopen(fd, 'wb') as f:
      write(f)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise
  return path


def save_figure(fig, path: str, dpi: int = DPI) -> str:
  """Writes a matplotlib figure as a PNG, atomically; returns `path`."""
  return write_atomic(path, lambda f: fig.savefig(f, format='png', dpi=dpi))


def save_image(image_rgb: np.ndarray, path: str) -> str:
  """Writes an (H, W, 3) uint8 RGB image as a PNG, atomically."""
  ok, data = cv2.imencode('.png', np.ascontiguousarray(image_rgb[..., ::-1]))
  if not ok:
    raise ValueError(f'OpenCV could not encode an image for {path}.')
  return write_atomic(path, lambda f: f.write(data.tobytes()))


def file_safe(name: str) -> str:
  """`name` with every run of characters other than [A-Za-z0-9_.-] as '_'."""
  return re.sub(r'[^\w.-]+', '_', name, flags=re.ASCII).strip('_') or '_'


def new_figure(width: float, height: float):
  """An empty Figure of the given size in inches, at `DPI`."""
  from matplotlib.figure import Figure  # Imported on first use, see above.

  return Figure(figsize=(width, height), dpi=DPI)

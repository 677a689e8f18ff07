"""Atomic file writing and figure creation for `ferjax.viz`.

Every file is written to a temporary name in its folder and renamed over the
target (`ferjax.writers.write_atomic`), so a reader never sees half a file. Figures are
`matplotlib.figure.Figure` objects made without pyplot: they render with
Agg, need no display, hold no global state and are freed when no longer
referenced. matplotlib is imported on first use, so that the OpenCV drawing
of `ferjax.viz.draw` does not pay for it.
"""

import re

import cv2
import numpy as np

from ferjax.writers import write_atomic

PLOTS_DIR = 'plots'
DPI = 100


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

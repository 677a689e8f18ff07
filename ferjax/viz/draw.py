"""OpenCV drawing: heat-map overlays and annotated predictions.

`overlay` blends a map onto an image as a colour heat map and
`save_overlays` writes a batch of them; `annotate` draws face boxes with
the top class and its probability, for predictions on images and video
frames. Drawing stays in OpenCV (fast, no figure).
"""

import math
import os
import zlib
from collections.abc import Mapping

import cv2
import numpy as np

from ferjax import labels as labels_lib
from ferjax.viz import files


def as_uint8(image) -> np.ndarray:
  """An (H, W, 3) image as uint8: floats are read as [0, 1]."""
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f'Expected an (H, W, 3) RGB image, got {image.shape}.')
  if image.dtype == np.uint8:
    return image
  return (np.clip(image, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def overlay(image_rgb, heat, alpha: float = 0.4) -> np.ndarray:
  """Blends a heat map onto an image.

  Args:
    image_rgb: (H, W, 3) uint8 RGB (floats in [0, 1] are accepted).
    heat: (h, w) values in [0, 1] (clipped), resized bilinearly to H x W.
    alpha: weight of the colour map (JET: blue 0 to red 1), in [0, 1].

  Returns:
    (H, W, 3) uint8 RGB.
  """
  if not 0.0 <= alpha <= 1.0:
    raise ValueError(f'overlay alpha={alpha} must be in [0, 1].')
  image = as_uint8(image_rgb)
  heat = np.nan_to_num(np.asarray(heat, np.float32))
  if heat.ndim != 2:
    raise ValueError(f'overlay takes an (h, w) map, got shape {heat.shape}.')
  heat = cv2.resize(heat, image.shape[1::-1], interpolation=cv2.INTER_LINEAR)
  levels = (np.clip(heat, 0.0, 1.0) * 255.0).round().astype(np.uint8)
  color = cv2.applyColorMap(levels, cv2.COLORMAP_JET)[..., ::-1]
  return cv2.addWeighted(image, 1.0 - alpha, color, alpha, 0.0)


def save_overlays(
  directory: str, images, maps: Mapping, alpha: float = 0.4
) -> list[str]:
  """Writes `overlay(images[i], maps[name][i])` as `<i>_<name>.png` files.

  Args:
    directory: created if needed.
    images: (B, H, W, 3) uint8 RGB images (or floats in [0, 1]).
    maps: {name: (B, h, w) maps in [0, 1]}, e.g. from `attention_maps` or
      `grad_cam` (GCSA's (B, T, C) gates: `channel_weights_figure`).
    alpha: see `overlay`.

  Returns:
    The written paths, image by image.
  """
  images = np.asarray(images)
  paths = []
  for name, batch in maps.items():
    if len(batch) != len(images) or np.ndim(batch) != 3:
      raise ValueError(
        f'Map {name!r} has shape {np.shape(batch)}; save_overlays needs '
        f'(B, h, w) with B = {len(images)} images.'
      )
  for i, image in enumerate(images):
    for name, batch in maps.items():
      path = os.path.join(directory, f'{i:03d}_{files.file_safe(name)}.png')
      paths.append(files.save_image(overlay(image, batch[i], alpha), path))
  return paths


# One RGB colour per canonical expression; other labels get one by hash.
PALETTE = (
  (200, 200, 200),
  (255, 205, 0),
  (60, 110, 255),
  (255, 120, 200),
  (150, 80, 220),
  (40, 170, 70),
  (235, 40, 40),
  (255, 140, 0),
)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def label_color(label: str) -> tuple[int, int, int]:
  """The RGB colour of an expression name (stable for any other label)."""
  if label in labels_lib.EXPRESSIONS:
    return PALETTE[labels_lib.EXPRESSIONS.index(label)]
  return PALETTE[zlib.crc32(label.encode()) % len(PALETTE)]


def _records(rows) -> list:
  if hasattr(rows, 'columns') and hasattr(rows, 'to_dict'):  # A DataFrame.
    return rows.to_dict('records')
  if isinstance(rows, Mapping) or hasattr(rows, 'iloc'):  # One row.
    return [rows]
  return list(rows)


def _number(value) -> float | None:
  try:
    value = float(value)
  except (TypeError, ValueError):
    return None
  return value if math.isfinite(value) else None


def row_probability(row, label: str) -> float | None:
  """The probability of `label` in a prediction row, if the row has one.

  Read from the column named by the label (or 'p_<label>', 'prob_<label>'),
  else from 'probability' or 'score'.
  """
  for key in (label, f'p_{label}', f'prob_{label}', 'probability', 'score'):
    if key in row:
      return _number(row[key])
  return None


def _draw_label(out, text, x, y, w, color, thickness) -> None:
  """A filled band with `text`, above (x, y), about as wide as the box."""
  (unit, _), _ = cv2.getTextSize(text, _FONT, 1.0, thickness)
  scale = float(np.clip(0.9 * w / max(unit, 1), 0.3, 1.0))
  (width, height), base = cv2.getTextSize(text, _FONT, scale, thickness)
  pad = max(1, thickness)
  band = height + base + 2 * pad
  top = y - band if y - band >= 0 else y  # Above the box, else inside it.
  cv2.rectangle(out, (x, top), (x + width + 2 * pad, top + band), color, -1)
  ink = (0, 0, 0) if sum(color) > 380 else (255, 255, 255)
  origin = (x + pad, top + pad + height)
  cv2.putText(out, text, origin, _FONT, scale, ink, thickness, cv2.LINE_AA)


def annotate(image_rgb, rows) -> np.ndarray:
  """Draws face boxes labelled with the top class and its probability.

  Args:
    image_rgb: (H, W, 3) uint8 RGB image (not modified).
    rows: prediction rows: a DataFrame, one row, or an iterable of dicts or
      pandas Series, each with the box 'x', 'y', 'w', 'h' (pixels, top-left
      corner and size), 'label' (the top class) and its probability under
      the class's name (see `row_probability`). Rows without a finite box
      are skipped.

  Returns:
    A new (H, W, 3) uint8 RGB image: each box in its class colour
    (`label_color`) and a filled band above it (inside it at the top edge
    of the image) reading '<label> <probability>', its font scaled to the
    box's width (within 0.3 to 1).
  """
  out = as_uint8(image_rgb).copy()
  for row in _records(rows):
    box = [_number(row.get(k)) for k in ('x', 'y', 'w', 'h')]
    if None in box:
      continue
    x, y, w, h = (int(round(v)) for v in box)
    label = str(row.get('label', ''))
    probability = row_probability(row, label)
    text = label if probability is None else f'{label} {probability:.2f}'
    color = label_color(label)
    thickness = max(1, round(max(w, h) / 120))
    cv2.rectangle(out, (x, y), (x + w - 1, y + h - 1), color, thickness)
    if text:
      _draw_label(out, text, x, y, w, color, max(1, thickness // 2))
  return out

"""Colour ops on uint8 RGB host images.

Grayscale, brightness, contrast, saturation and hue, rounded to uint8, with
OpenCV's ITU-R 601 luma (`cv2.COLOR_RGB2GRAY`) where an op needs one. The
train transform's colour jitter (`ferjax.data.augment`) and RandAugment's
Brightness, Color and Contrast ops (`ferjax.data.randaugment`) both apply
them, so they sit in a module that imports neither.
"""

import cv2
import numpy as np

__all__ = [
  'to_grayscale',
  'adjust_brightness',
  'adjust_contrast',
  'adjust_saturation',
  'adjust_hue',
]


def _lut(values: np.ndarray) -> np.ndarray:
  return np.clip(np.rint(values), 0, 255).astype(np.uint8)


_RAMP = np.arange(256, dtype=np.float64)


def to_grayscale(image: np.ndarray) -> np.ndarray:
  """Returns the ITU-R 601 luma of an RGB image, replicated to 3 channels."""
  gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
  return cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)


def adjust_brightness(image: np.ndarray, factor: float) -> np.ndarray:
  """Scales every value by `factor` (0 is black, 1 unchanged), clipped."""
  return cv2.LUT(image, _lut(_RAMP * factor))


def adjust_contrast(image: np.ndarray, factor: float) -> np.ndarray:
  """Blends an RGB image with its mean luma (0 is flat gray, 1 unchanged)."""
  mean = cv2.mean(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))[0]
  return cv2.LUT(image, _lut(_RAMP * factor + (1.0 - factor) * mean))


def adjust_saturation(image: np.ndarray, factor: float) -> np.ndarray:
  """Blends an RGB image with its luma (0 is grayscale, 1 unchanged)."""
  return cv2.addWeighted(image, factor, to_grayscale(image), 1.0 - factor, 0.0)


def adjust_hue(image: np.ndarray, shift: float) -> np.ndarray:
  """Rotates the hue of an RGB image by `shift` turns of the colour wheel.

  The hue is quantised to 256 steps (OpenCV's full-range uint8 HSV).
  """
  offset = round(shift * 256) % 256
  if not offset:
    return image.copy()
  hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV_FULL)
  # uint8 addition wraps around the colour wheel.
  hsv[..., 0] += np.uint8(offset)
  return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB_FULL)

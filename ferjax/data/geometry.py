"""Crop geometry of the image transforms, on uint8 host images.

`sample_crop` draws torchvision's RandomResizedCrop box and `resized_crop`
crops, resizes and rotates it in one pass: one `cv2.resize` without
rotation, else one `cv2.warpAffine` of the whole image. `crop_matrix` is
that map as a matrix, which `ferjax.data.device_augment` also builds its
accelerator warp from. `resize_interpolation` is the resize rule these and
the eval resize (`ferjax.data.augment.eval_transform`) share.
"""

import math

import cv2
import numpy as np

__all__ = [
  'Box',
  'sample_crop',
  'resize_interpolation',
  'crop_matrix',
  'resized_crop',
]

# (top, left, height, width) of a box in an image, in pixels.
Box = tuple[int, int, int, int]

_BORDERS = {
  'constant': cv2.BORDER_CONSTANT,
  'reflect': cv2.BORDER_REFLECT_101,
  'replicate': cv2.BORDER_REPLICATE,
}
# torchvision's number of tries before RandomResizedCrop falls back to a
# central crop.
_ATTEMPTS = 10
# Bilinear sampling skips source pixels once the warp shrinks by 2x or more and
# aliases; from there the sampled window is first area-averaged down.
_PRESHRINK_FACTOR = 2.0


def sample_crop(
  height: int,
  width: int,
  rng: np.random.Generator,
  scale: tuple[float, float],
  ratio: tuple[float, float],
) -> Box:
  """Samples a RandomResizedCrop box, as torchvision's `get_params`.

  Args:
    height: image height in pixels.
    width: image width in pixels.
    rng: source of randomness.
    scale: (min, max) fraction of the image area.
    ratio: (min, max) width / height, sampled log-uniformly.

  Returns:
    (top, left, height, width) of the crop. After ten boxes that do not fit,
    the central crop of the whole image clamped to `ratio`.
  """
  area = height * width
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(_ATTEMPTS):
    target = area * rng.uniform(scale[0], scale[1])
    aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
    w = round(math.sqrt(target * aspect))
    h = round(math.sqrt(target / aspect))
    if 0 < w <= width and 0 < h <= height:
      top = int(rng.integers(0, height - h + 1))
      left = int(rng.integers(0, width - w + 1))
      return top, left, h, w
  in_ratio = width / height
  if in_ratio < ratio[0]:
    w, h = width, min(height, max(1, round(width / ratio[0])))
  elif in_ratio > ratio[1]:
    w, h = min(width, max(1, round(height * ratio[1]))), height
  else:
    w, h = width, height
  return (height - h) // 2, (width - w) // 2, h, w


def resize_interpolation(src_w: int, src_h: int, dst_w: int, dst_h: int) -> int:
  """The cv2 flag to resize (src_w, src_h) to (dst_w, dst_h) with.

  Area averaging when shrinking both sides (PIL-like antialiasing), bilinear
  otherwise.
  """
  if dst_w <= src_w and dst_h <= src_h:
    return cv2.INTER_AREA
  return cv2.INTER_LINEAR


def crop_matrix(box: Box, size: int, angle: float = 0.0) -> np.ndarray:
  """Returns the 3x3 affine map from image to output pixel coordinates.

  The crop `box` is resized to `size` x `size` with pixel centres aligned as in
  `cv2.resize`, then rotated by `angle` degrees counter-clockwise about the
  output centre.

  Args:
    box: (top, left, height, width) of the crop.
    size: output side in pixels.
    angle: rotation in degrees, counter-clockwise positive.

  Returns:
    A float64 (3, 3) matrix acting on homogeneous (x, y, 1) columns.
  """
  top, left, h, w = box
  sx, sy = size / w, size / h
  m = np.array(
    [
      [sx, 0.0, (0.5 - left) * sx - 0.5],
      [0.0, sy, (0.5 - top) * sy - 0.5],
      [0.0, 0.0, 1.0],
    ]
  )
  if angle:
    c = (size - 1) / 2
    r = np.eye(3)
    r[:2] = cv2.getRotationMatrix2D((c, c), angle, 1.0)
    m = r @ m
  return m


def _preshrink(
  image: np.ndarray, m: np.ndarray, size: int, factor: float
) -> tuple[np.ndarray, np.ndarray]:
  """Area-averages the window the warp samples, returning it and the new map."""
  height, width = image.shape[:2]
  edge = size - 0.5
  corners = np.array(
    [[-0.5, edge, -0.5, edge], [-0.5, -0.5, edge, edge], [1, 1, 1, 1]]
  )
  xs, ys, _ = np.linalg.inv(m) @ corners
  # A margin of one shrunk pixel keeps bilinear taps off the window's edge.
  pad = math.ceil(factor) + 1
  x0 = max(0, math.floor(xs.min()) - pad)
  x1 = min(width, math.ceil(xs.max()) + pad + 1)
  y0 = max(0, math.floor(ys.min()) - pad)
  y1 = min(height, math.ceil(ys.max()) + pad + 1)
  if x1 <= x0 or y1 <= y0:
    return image, m
  nw = max(1, round((x1 - x0) / factor))
  nh = max(1, round((y1 - y0) / factor))
  small = cv2.resize(
    image[y0:y1, x0:x1], (nw, nh), interpolation=cv2.INTER_AREA
  )
  fx, fy = (x1 - x0) / nw, (y1 - y0) / nh
  # Pixel u of `small` is centred at x0 + (u + 0.5) * fx - 0.5 in `image`.
  p = np.array(
    [
      [fx, 0.0, x0 + 0.5 * fx - 0.5],
      [0.0, fy, y0 + 0.5 * fy - 0.5],
      [0.0, 0.0, 1.0],
    ]
  )
  return small, m @ p


def resized_crop(
  image: np.ndarray,
  box: Box,
  size: int,
  angle: float = 0.0,
  border: str = 'constant',
) -> np.ndarray:
  """Crops `box`, resizes it to `size` x `size` and rotates it, in one pass.

  Without rotation this is `cv2.resize` of the crop (area averaging when
  shrinking, bilinear otherwise). With rotation it is one bilinear
  `cv2.warpAffine` of the whole image, so rotated-in corners come from around
  the crop; a warp that shrinks by 2x or more first area-averages the sampled
  window to avoid aliasing.

  Args:
    image: uint8 (H, W) or (H, W, C) image.
    box: (top, left, height, width) of the crop.
    size: output side in pixels.
    angle: rotation in degrees, counter-clockwise positive.
    border: 'constant', 'reflect' or 'replicate' fill outside the image.

  Returns:
    The uint8 (size, size) or (size, size, C) result.
  """
  top, left, h, w = box
  if not angle:
    crop = image[top : top + h, left : left + w]
    return cv2.resize(
      crop, (size, size), interpolation=resize_interpolation(w, h, size, size)
    )
  m = crop_matrix(box, size, angle)
  factor = min(w, h) / size
  if factor >= _PRESHRINK_FACTOR:
    image, m = _preshrink(image, m, size, factor)
  return cv2.warpAffine(
    image,
    m[:2],
    (size, size),
    flags=cv2.INTER_LINEAR,
    borderMode=_BORDERS[border],
    borderValue=0,
  )

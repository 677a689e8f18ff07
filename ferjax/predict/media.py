"""Reading and checking prediction inputs: images, folders, videos, arrays.

    items = media.expand_inputs(['photo.jpg', 'folder/', 'clip.mp4', array])
    image = media.read_image('photo.jpg', max_pixels=100_000_000)
    video = media.read_video('clip.mp4', stride=2, max_pixels=None)

`expand_inputs` turns what `ferjax.predict.Predictor.predict` is given into
`Item`s, in order: a directory becomes its image and video files
(`IMAGE_EXTENSIONS`, `VIDEO_EXTENSIONS`), searched recursively and sorted so
that results come in the same order on every machine; other files are taken
as videos by extension, else as images; numpy arrays are kept as they are.
A missing path, an empty directory or an object of another type becomes an
'error' item rather than an exception, so one bad input does not stop the
others.

`read_image` decodes a file with PIL to RGB uint8, after EXIF rotation (the
orientation a viewer shows, which face boxes refer to), with 16-bit images
scaled to 8 bits and the first frame of an animation. `as_rgb` checks an
array's shape, dtype and value range and converts it the same way.
`read_video` samples every `stride`-th frame with OpenCV, as RGB; a video
that ends before the frame count of its header (truncated or damaged) gives
its frames, then an `InputError` saying where it ended.

Limits: a small compressed file can decode to gigabytes (a decompression
bomb), so images above `max_pixels` are refused from their header, before
any pixel is decoded (PIL's own `Image.MAX_IMAGE_PIXELS` refusal applies
too), and videos whose frames exceed it are refused before the first frame
is read. The readers raise every failure as an `InputError`, whose message
says why the input gave no prediction (the table's `error` column).
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np
from PIL import Image
from PIL import ImageOps

IMAGE_EXTENSIONS = frozenset({
  '.bmp', '.gif', '.jpeg', '.jpg', '.pbm', '.pgm', '.png', '.ppm', '.tif',
  '.tiff', '.webp',
})  # fmt: skip
VIDEO_EXTENSIONS = frozenset({
  '.avi', '.m4v', '.mkv', '.mov', '.mp4', '.mpeg', '.mpg', '.webm', '.wmv',
})  # fmt: skip


class InputError(ValueError):
  """An input that gives no prediction; the message goes in `error`."""


def read_image(path: str, max_pixels: int | None = None) -> np.ndarray:
  """Decodes an image file to RGB uint8, refusing huge ones before decoding.

  PIL's `Image.open` reads only the header, so the pixel count is checked
  before any pixel is decoded (PIL's own `Image.MAX_IMAGE_PIXELS` check
  applies too). EXIF orientation is applied; the first frame of an animation
  is used; 16-bit images are scaled to 8 bits.

  Raises:
    InputError: not an image, corrupt or truncated, or too large.
  """
  try:
    with warnings.catch_warnings():  # The pixel limit is checked here.
      warnings.simplefilter('ignore', Image.DecompressionBombWarning)
      with Image.open(path) as im:
        width, height = im.size
        if max_pixels and width * height > max_pixels:
          raise InputError(
            f'{width}x{height} image exceeds max_pixels={max_pixels}; '
            'refused before decoding'
          )
        im = ImageOps.exif_transpose(im)
        if im.mode.startswith('I;16'):
          array = np.asarray(im).astype(np.float64) / 257.0
          return as_rgb(np.rint(array).astype(np.uint8))
        return np.asarray(im.convert('RGB'))
  except Image.DecompressionBombError as e:
    raise InputError(f'refused before decoding: {e}') from None
  except Image.UnidentifiedImageError:
    raise InputError('not an image (PIL cannot identify it)') from None
  except (OSError, SyntaxError, ValueError) as e:
    if isinstance(e, InputError):
      raise
    raise InputError(f'cannot decode the image: {e}') from None


def as_rgb(array: Any) -> np.ndarray:
  """An image array as RGB uint8 (H, W, 3).

  Accepts uint8 or integer (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) arrays
  with values in [0, 255], and float ones in [0, 1]; the alpha of RGBA is
  dropped and gray is repeated to three channels.

  Raises:
    InputError: another shape, dtype or value range.
  """
  a = np.asarray(array)
  if a.ndim == 3 and a.shape[2] in (1, 4):
    a = a[..., 0] if a.shape[2] == 1 else a[..., :3]
  if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 3)) or not a.size:
    raise InputError(
      f'array of shape {a.shape}: expected (H, W), (H, W, 3) or (H, W, 4)'
    )
  if np.issubdtype(a.dtype, np.floating):
    if not (np.isfinite(a).all() and a.min() >= 0 and a.max() <= 1):
      raise InputError('float arrays must hold values in [0, 1]')
    a = np.rint(a * 255.0).astype(np.uint8)
  elif np.issubdtype(a.dtype, np.integer) and a.dtype != np.uint8:
    if a.min() < 0 or a.max() > 255:
      raise InputError(f'{a.dtype} array with values outside [0, 255]')
    a = a.astype(np.uint8)
  elif a.dtype != np.uint8:
    raise InputError(f'unsupported array dtype {a.dtype}')
  if a.ndim == 2:
    a = cv2.cvtColor(a, cv2.COLOR_GRAY2RGB)
  return np.ascontiguousarray(a)


@dataclasses.dataclass(frozen=True)
class Item:
  """One unit of work: an image, a video, an array, or a failed input."""

  name: str  # The `input` column.
  kind: str  # 'image', 'video', 'array' or 'error'.
  source: Any = None
  out_name: str = ''  # Relative path of its annotated output.
  error: str | None = None


def _kind(path: str) -> str:
  ext = os.path.splitext(path)[1].lower()
  return 'video' if ext in VIDEO_EXTENSIONS else 'image'


def _media_files(directory: str) -> list[str]:
  """Image and video files under `directory`, recursively, sorted."""
  found = []
  for root, dirs, files in os.walk(directory):
    dirs.sort()
    for name in files:
      ext = os.path.splitext(name)[1].lower()
      if ext in IMAGE_EXTENSIONS or ext in VIDEO_EXTENSIONS:
        found.append(os.path.join(root, name))
  return sorted(found)


def expand_inputs(inputs: Any) -> list[Item]:
  """Turns paths, directories and arrays into work items, in order."""
  if isinstance(inputs, str | os.PathLike | np.ndarray):
    inputs = [inputs]
  items = []
  for i, x in enumerate(inputs):
    if isinstance(x, np.ndarray):
      items.append(Item(f'<array {i}>', 'array', x, f'array_{i}'))
      continue
    if not isinstance(x, str | os.PathLike):
      name = f'<{type(x).__name__} {i}>'
      error = 'unsupported input: pass paths or numpy arrays'
      items.append(Item(name, 'error', error=error))
      continue
    path = os.fspath(x)
    if os.path.isdir(path):
      files = _media_files(path)
      base = os.path.basename(os.path.normpath(path))
      if not files:
        error = 'directory holds no image or video files'
        items.append(Item(path, 'error', error=error))
      for f in files:
        out = os.path.join(base, os.path.relpath(f, path))
        items.append(Item(f, _kind(f), f, out))
    elif os.path.exists(path):
      items.append(Item(path, _kind(path), path, os.path.basename(path)))
    else:
      items.append(Item(path, 'error', error='no such file or directory'))
  return items


def _short(read: int, listed: int) -> bool:
  """Whether `read` frames fall short of the `listed` count of the header.

  Containers without an index (mkv, webm) list an estimate from the
  duration, which may be off by a frame or two; a short file is off by more.
  """
  return listed > 0 and read < 0.98 * listed - 1


@dataclasses.dataclass(frozen=True)
class Video:
  """An opened video: its frame rate, how many frames will be sampled
  (from the header; 0 if unknown), and an iterator of (index, RGB frame)."""

  fps: float
  sampled: int
  frames: Iterator[tuple[int, np.ndarray]]


def read_video(path: str, stride: int, max_pixels: int | None) -> Video:
  """Every stride-th frame of a video, as RGB.

  Raises:
    InputError: OpenCV cannot open the file, or its frames are too large;
      from the iterator, after the frames it could read, when the video
      ends before the frame count its header lists (truncated or damaged).
  """
  cap = cv2.VideoCapture(path)
  if not cap.isOpened():
    cap.release()
    raise InputError('cannot open the video (not a video, or no codec)')
  width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
  height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
  if max_pixels and width * height > max_pixels:
    cap.release()
    raise InputError(f'{width}x{height} frames exceed max_pixels={max_pixels}')

  listed = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))

  def frames() -> Iterator[tuple[int, np.ndarray]]:
    try:
      index = 0
      while True:
        if index % stride:
          ok = cap.grab()
        else:
          ok, frame = cap.read()
          if ok:
            yield index, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        if not ok:
          break
        index += 1
    finally:
      cap.release()
    if _short(index, listed):
      raise InputError(
        f'the video ends at frame {index} of the {listed} its header lists '
        '(truncated or damaged)'
      )

  fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
  return Video(fps, -(-max(0, listed) // stride), frames())

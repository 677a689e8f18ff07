"""Checks shared by the builders of manually downloaded datasets.

Every real FER dataset is license-gated and unpacked by hand, so each builder
in `tfds_builders/` reads a release in its own on-disk layout. These helpers
give their errors one shape, a `ManualDataError` naming the file (and line)
at fault and what to do, and `SkipReport` records what a builder skips on
purpose (only files the dataset is known to ship broken) in the built
dataset's metadata, so it is never silent. The readers of the two common
layouts build on them: `tfds_builders.class_folders` (a folder per class)
and `tfds_builders.clip_folders` (a folder of frames per video clip).
"""

import collections.abc
import contextlib
import dataclasses
import io
import logging
import os
import pathlib
import warnings

import cv2
import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

PathLike = str | os.PathLike
# How many missing or skipped files an error or log line lists by name.
_SHOWN = 10
# The most pixels an image of a release may have. Face datasets ship at
# most a few megapixels; more is a damaged or foreign file (or a
# decompression bomb), refused from its header before it is decoded.
MAX_PIXELS = 64_000_000
# File endings and the format their content must be in (others: any).
_FORMATS = {'.jpg': 'JPEG', '.jpeg': 'JPEG', '.png': 'PNG'}
_REPLACE = 'Replace it with the file from the release.'


class ManualDataError(ValueError):
  """A manually downloaded release is missing files or is malformed."""


def where(path: PathLike, lineno: int) -> str:
  """`path:lineno`, the prefix of every error about one line of a file."""
  return f'{path}:{lineno}'


def find_release_dir(
  manual_dir: PathLike,
  marker: PathLike,
  folder_names: collections.abc.Sequence[str],
  help_text: str,
) -> pathlib.Path:
  """Finds the release folder inside `--manual_dir`.

  Args:
    manual_dir: the folder given as `--manual_dir`.
    marker: a path relative to the release folder that must exist (a label
      file or an image folder).
    folder_names: names the release folder may carry inside `manual_dir`;
      `manual_dir` itself is always tried first.
    help_text: how to point `--manual_dir` at the release.

  Returns:
    The first candidate folder that holds `marker`.

  Raises:
    ManualDataError: naming every path tried.
  """
  manual_dir = pathlib.Path(manual_dir)
  candidates = [manual_dir] + [manual_dir / d for d in folder_names]
  for d in candidates:
    if (d / marker).exists():
      return d
  tried = ', '.join(str(d / marker) for d in candidates)
  raise ManualDataError(f'{marker} not found; tried {tried}. {help_text}')


def listing(items: collections.abc.Sequence[str]) -> str:
  """`items` one per line, indented; past the first ten, how many more."""
  shown = '\n  '.join(items[:_SHOWN])
  more = (
    f'\n  ... and {len(items) - _SHOWN} more' if len(items) > _SHOWN else ''
  )
  return f'\n  {shown}{more}'


def check_files_exist(
  files: collections.abc.Iterable[tuple[pathlib.Path, str]], fix: str
) -> None:
  """Raises one error listing every missing file, before anything is written.

  Args:
    files: (path, where it is listed, e.g. `labels.csv:12`) pairs.
    fix: what the user should do, appended to the message.

  Raises:
    ManualDataError: if any path is not a file.
  """
  missing = [f'{p} (listed at {w})' for p, w in files if not p.is_file()]
  if missing:
    raise ManualDataError(
      f'{len(missing)} listed image(s) are missing:{listing(missing)}\n{fix}'
    )


@contextlib.contextmanager
def open_text(path: PathLike) -> collections.abc.Iterator[io.TextIOBase]:
  """Opens a label or list file as UTF-8 text (a byte order mark is skipped;
  newlines as in the file, for csv).

  Raises:
    ManualDataError: naming the file, where its bytes are not UTF-8 (then
      it is not the file the release ships).
  """
  try:
    with open(path, newline='', encoding='utf-8-sig') as f:
      yield f
  except UnicodeDecodeError as e:
    raise ManualDataError(
      f'{path}: not UTF-8 text ({e.reason}). {_REPLACE}'
    ) from None


def check_header(data: bytes, path: PathLike) -> None:
  """Refuses an image from its header, before any pixel is decoded.

  Raises:
    ManualDataError: naming `path`, for more than `MAX_PIXELS` pixels or a
      content format other than its file ending says (a PNG named .jpg).
      A header PIL cannot read is left to the decoder.
  """
  try:
    with warnings.catch_warnings():  # The pixel limit is checked here.
      warnings.simplefilter('ignore', Image.DecompressionBombWarning)
      with Image.open(io.BytesIO(data)) as im:
        kind, (width, height) = im.format, im.size
    kind = 'JPEG' if kind == 'MPO' else kind  # A camera JPEG with previews.
  except Image.DecompressionBombError as e:  # Past PIL's own limit.
    raise ManualDataError(
      f'{path}: {e} It is refused before decoding. {_REPLACE}'
    ) from None
  except (OSError, SyntaxError, ValueError):
    return
  if width * height > MAX_PIXELS:
    raise ManualDataError(
      f'{path}: {width}x{height} pixels, more than a face image has '
      f'({MAX_PIXELS:,}); refused before decoding. {_REPLACE}'
    )
  ending = pathlib.Path(os.fspath(path)).suffix.lower()
  if _FORMATS.get(ending, kind) != kind:
    raise ManualDataError(
      f'{path}: a {kind} file named {ending}, not {_FORMATS[ending]}. '
      f'{_REPLACE}'
    )


def decode_image(
  data: bytes, path: PathLike, channels: collections.abc.Container[int]
) -> np.ndarray:
  """Decodes image bytes, checking they are an image with allowed channels.

  The header is checked first (`check_header`): no huge or misnamed image
  is decoded.

  Args:
    data: the encoded file.
    path: where the bytes came from (and, after a space, which line lists
      it), for the message.
    channels: allowed channel counts (1 for grayscale, 3 for colour).

  Returns:
    The decoded array as cv2 gives it (BGR for colour), [h, w] or [h, w, c].

  Raises:
    ManualDataError: naming `path` if the bytes are refused by
      `check_header`, do not decode or have other channels.
  """
  check_header(data, path)
  try:  # cv2 raises on empty input and on sizes past its own limit.
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
  except cv2.error:
    img = None
  got = 1 if img is not None and img.ndim == 2 else None
  if img is not None and img.ndim == 3:
    got = img.shape[2]
  if img is None or got not in channels:
    what = 'undecodable' if img is None else f'shape {img.shape}'
    want = ' or '.join(f'{c}-channel' for c in sorted(channels))
    raise ManualDataError(f'{path}: not a {want} image ({what}). {_REPLACE}')
  return img


@dataclasses.dataclass
class SkipReport:
  """Files a build skipped on purpose, saved in the dataset's metadata.

  Builders skip only files their dataset is known to ship broken, list them
  here with the reason, and `save` logs the count and stores the list under
  `info.metadata['skipped']`, where `tfds.builder(...).info.metadata` finds
  it after the build.
  """

  skipped: list[dict[str, str]] = dataclasses.field(default_factory=list)

  def add(self, split: str, file: str, reason: str) -> None:
    self.skipped.append({'split': split, 'file': file, 'reason': reason})

  def save(self, info: tfds.core.DatasetInfo) -> None:
    """Logs the skipped files and records them in `info.metadata`."""
    if info.metadata is None:
      raise ValueError('The builder must create its info with a MetadataDict.')
    info.metadata['skipped'] = list(self.skipped)
    if self.skipped:
      names = [
        f'{s["file"]} ({s["split"]}: {s["reason"]})' for s in self.skipped
      ]
      logging.warning(
        '%s: skipped %d known-broken file(s):%s',
        info.full_name,
        len(names),
        listing(names),
      )


# Class folder name -> expression name (`ferjax.labels`), as the releases
# that keep one folder per class spell the seven classes: the EmotiW family
# (AFEW and SFEW), CAER-S, and FERV39K's clips.
EXPRESSION_FOLDERS = {
  'Angry': 'anger',
  'Disgust': 'disgust',
  'Fear': 'fear',
  'Happy': 'happiness',
  'Neutral': 'neutral',
  'Sad': 'sadness',
  'Surprise': 'surprise',
}

# Entries that operating systems and archivers leave among images: folder
# thumbnails and settings. The class-folder and clip-folder readers pass over
# them, and over macOS `._<name>` companions, which carry an image's ending
# but hold no image; any other unexpected entry is an error.
IGNORED_FILES = frozenset({'.DS_Store', 'Thumbs.db', 'desktop.ini'})


def is_ignored(name: str) -> bool:
  """Whether a file name is system clutter rather than part of a release."""
  return name in IGNORED_FILES or name.startswith('._')

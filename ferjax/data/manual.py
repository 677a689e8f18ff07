"""Checks shared by the builders of manually downloaded datasets.

Every real FER dataset is license-gated and unpacked by hand, so each builder
in `tfds_builders/` reads a release in its own on-disk layout. These helpers
give their errors one shape: the file (and line) at fault and what to do, and
they record what a builder skips on purpose (only files the dataset is known
to ship broken) in the built dataset's metadata, so it is never silent.
`class_folder_files` and its companions read the releases that keep each
class in a folder of its own (SFEW, CAER-S); `read_clip_list`,
`list_frames` and `clip_example` read the video releases that keep each
clip in a folder of frames (DFEW, FERV39K).
"""

import collections
import collections.abc
import dataclasses
import logging
import os
import pathlib
import re
import typing

import cv2
import numpy as np
import tensorflow_datasets as tfds

PathLike = str | os.PathLike
# How many missing or skipped files an error or log line lists by name.
_SHOWN = 10


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


def _listing(items: collections.abc.Sequence[str]) -> str:
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
      f'{len(missing)} listed image(s) are missing:{_listing(missing)}\n{fix}'
    )


def decode_image(
  data: bytes, path: PathLike, channels: collections.abc.Container[int]
) -> np.ndarray:
  """Decodes image bytes, checking they are an image with allowed channels.

  Args:
    data: the encoded file.
    path: where the bytes came from (and, after a space, which line lists
      it), for the message.
    channels: allowed channel counts (1 for grayscale, 3 for colour).

  Returns:
    The decoded array as cv2 gives it (BGR for colour), [h, w] or [h, w, c].

  Raises:
    ManualDataError: naming `path` if the bytes do not decode or have other
      channels.
  """
  # cv2 raises on empty input rather than returning None.
  img = (
    cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if data
    else None
  )
  got = 1 if img is not None and img.ndim == 2 else None
  if img is not None and img.ndim == 3:
    got = img.shape[2]
  if img is None or got not in channels:
    what = 'undecodable' if img is None else f'shape {img.shape}'
    want = ' or '.join(f'{c}-channel' for c in sorted(channels))
    raise ManualDataError(
      f'{path}: not a {want} image ({what}). Replace it with the file from '
      'the release.'
    )
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
        _listing(names),
      )


# Class folder name -> expression name (`ferjax.labels`), as the releases
# that keep one folder per class spell the seven classes: the EmotiW family
# (AFEW and SFEW) and CAER-S.
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
# thumbnails and settings. The class-folder reader passes over them, and over
# macOS `._<name>` companions, which carry an image's ending but hold no
# image; any other unexpected entry is an error.
IGNORED_FILES = frozenset({'.DS_Store', 'Thumbs.db', 'desktop.ini'})


def is_ignored(name: str) -> bool:
  """Whether a file name is system clutter rather than part of a release."""
  return name in IGNORED_FILES or name.startswith('._')


class ClassFile(typing.NamedTuple):
  """One image of a release that stores each class in its own folder.

  Attributes:
    path: the file, `<split folder>/<class folder>/<name>`.
    folder: the class folder's name as shipped (the dataset's own label).
    label: the canonical label the folder maps to.
  """

  path: pathlib.Path
  folder: str
  label: int

  @property
  def id(self) -> str:
    """`<split folder>/<class folder>/<name>`, unique within a release."""
    return '/'.join(self.path.parts[-3:])


def class_folder_files(
  split_dir: PathLike,
  class_map: collections.abc.Mapping[str, int],
  extensions: collections.abc.Collection[str],
  fix: str,
) -> list[ClassFile]:
  """Lists the images of one split stored as `split_dir/<class folder>/*`.

  Every entry must be expected: each entry of `split_dir` is a folder named
  in `class_map`, each entry of a class folder is a file with an allowed
  ending, every label of `class_map` has a folder and every folder has an
  image. Names in `IGNORED_FILES` and `._*` files are passed over (and
  counted in an info log line). Everything wrong is reported at once.

  Args:
    split_dir: the split's folder.
    class_map: class folder name -> canonical label. Several names may map
      to one label (a release that spells a class differently in two
      splits); a split needs one of them.
    extensions: allowed file endings with the dot (`.png`); case does not
      matter.
    fix: what the user should do, appended to the message.

  Returns:
    The images, by class folder name, then file name (code point order, the
    same on every machine).

  Raises:
    ManualDataError: if `split_dir` is not a folder, or naming every unknown
      class folder, stray file or folder, unexpected file ending, empty
      class folder and missing class folder.
  """
  split_dir = pathlib.Path(split_dir)
  if not split_dir.is_dir():
    raise ManualDataError(f'{split_dir} is not a folder. {fix}')
  extensions = {e.lower() for e in extensions}
  allowed = ', '.join(sorted(extensions))
  files = []
  problems = []
  ignored = 0
  present = set()
  for entry in sorted(split_dir.iterdir(), key=lambda p: p.name):
    if is_ignored(entry.name):
      ignored += 1
    elif entry.name not in class_map or not entry.is_dir():
      problems.append(
        f'{entry}: not a class folder (expected folders: '
        f'{", ".join(sorted(class_map))})'
      )
    else:
      present.add(class_map[entry.name])
      before = len(files)
      for path in sorted(entry.iterdir(), key=lambda p: p.name):
        if is_ignored(path.name):
          ignored += 1
        elif path.is_file() and path.suffix.lower() in extensions:
          files.append(ClassFile(path, entry.name, class_map[entry.name]))
        else:
          problems.append(f'{path}: not an image file ending in {allowed}')
      if len(files) == before:
        problems.append(f'{entry}: no images')
  names = collections.defaultdict(list)
  for name, label in class_map.items():
    names[label].append(name)
  problems += [
    f'{split_dir}: missing class folder {" or ".join(sorted(names[label]))}'
    for label in sorted(names)
    if label not in present
  ]
  if problems:
    raise ManualDataError(
      f'{split_dir} does not hold the expected class folders '
      f'({len(problems)} problem(s)):{_listing(problems)}\n{fix}'
    )
  if ignored:
    logging.info('%s: passed over %d system file(s).', split_dir, ignored)
  return files


def class_file_example(item: ClassFile) -> dict:
  """Reads one image of a class-folder release as a feature dict.

  Args:
    item: the image, from `class_folder_files`.

  Returns:
    {'image': the file's bytes as shipped, 'label': item.label,
    'original_label': item.folder, 'id': item.id}.

  Raises:
    ManualDataError: naming the file if it is not a decodable 3-channel
      image with 8-bit samples.
  """
  data = item.path.read_bytes()
  if not data:  # cv2 raises its own error on empty input.
    raise ManualDataError(
      f'{item.path}: empty file. Replace it with the file from the release.'
    )
  # Stored bytes are decoded later as they are, so check them now: a
  # truncated, grayscale or 16-bit file would break readers, not this build.
  image = decode_image(data, item.path, channels=(3,))
  if image.dtype != np.uint8:
    raise ManualDataError(
      f'{item.path}: {image.dtype} samples, not 8-bit. Replace it with the '
      'file from the release.'
    )
  return {
    'image': data,
    'label': item.label,
    'original_label': item.folder,
    'id': item.id,
  }


def class_folder_examples(
  files: collections.abc.Iterable[ClassFile],
) -> collections.abc.Iterator[tuple[str, dict]]:
  """Yields (id, example) per file: what a builder's generator yields."""
  for item in files:
    yield item.id, class_file_example(item)


def class_folder_features(
  names: collections.abc.Sequence[str],
  encoding_format: str | None,
  folders: str,
) -> tfds.features.FeaturesDict:
  """The features of a class-folder dataset, as `class_file_example` fills.

  Args:
    names: the canonical class names, in label order.
    encoding_format: the format the release's images are in, or None where
      it ships several. Bytes are stored as shipped either way: TFDS keeps
      them unchanged and decodes them by their content.
    folders: the release's class folder names, for the documentation.
  """
  return tfds.features.FeaturesDict(
    {
      'image': tfds.features.Image(
        shape=(None, None, 3), encoding_format=encoding_format
      ),
      'label': tfds.features.ClassLabel(names=names),
      'original_label': tfds.features.Text(
        doc=f'Class folder name as shipped: {folders}.'
      ),
      'id': tfds.features.Text(
        doc='<split folder>/<class folder>/<file name>, as shipped.'
      ),
    }
  )


# Video releases (DFEW, FERV39K) store each clip as a folder of JPEG frames
# and list the clips of a split in a text file. The helpers below read such a
# list, check every listed folder before anything is written, and turn a
# clip into the feature dict of `clip_features`.

FRAME_EXTENSIONS = ('.jpg', '.jpeg')
# JPEG quality of frames re-encoded by a config that resizes them.
FRAME_JPEG_QUALITY = 95


@dataclasses.dataclass(kw_only=True)
class ClipConfig(tfds.core.BuilderConfig):
  """A builder config of a video dataset.

  Attributes:
    frame_size: None stores frames as shipped (their bytes, unchanged); a
      number shrinks frames whose shorter side is longer (`shrink_frame`).
  """

  frame_size: int | None = None


class Clip(typing.NamedTuple):
  """One clip of a video release: a folder of frames and its label.

  Attributes:
    id: the clip's name in the dataset (e.g. `00001` or `Scene/Happy/0001`).
    folder: the folder of its frames.
    label: the canonical label.
    original_label: the dataset's own label, as listed.
    listed_at: `file:line` of the list entry, for messages.
    frames: the frame files in temporal order, filled by `list_frames`.
  """

  id: str
  folder: pathlib.Path
  label: int
  original_label: int | str
  listed_at: str = ''
  frames: tuple[pathlib.Path, ...] = ()


def natural_key(name: str) -> tuple:
  """Sort key that compares digit runs by value: `2.jpg` before `10.jpg`.

  Zero-padded names sort as they would by name; the name itself breaks ties
  (`01.jpg` before `1.jpg`), so the order is total.
  """
  parts = re.split(r'(\d+)', name)
  return tuple(int(p) if i % 2 else p for i, p in enumerate(parts)), name


def read_clip_list(
  list_file: PathLike,
  parse_line: collections.abc.Callable[[str], Clip],
  is_header: collections.abc.Callable[[str], bool],
  fix: str,
) -> list[Clip]:
  """Reads the list of one split's clips, one clip per line.

  Blank lines and a UTF-8 byte order mark are skipped, and so is the first
  non-blank line if `is_header` says it is a header.

  Args:
    list_file: the list.
    parse_line: turns a line into a `Clip`, raising ValueError that says
      what is wrong.
    is_header: whether the first non-blank line is a header.
    fix: what the user should do, appended to the message.

  Returns:
    The clips in list order, each with `listed_at` set.

  Raises:
    ManualDataError: naming the file and line of a line `parse_line` rejects
      or of a clip listed twice, or if the list holds no clip.
  """
  text = pathlib.Path(list_file).read_text(encoding='utf-8-sig')
  lines = [(n, x) for n, x in enumerate(text.splitlines(), 1) if x.strip()]
  if lines and is_header(lines[0][1]):
    lines = lines[1:]
  clips, seen = [], {}
  for lineno, line in lines:
    at = where(list_file, lineno)
    try:
      clip = parse_line(line)._replace(listed_at=at)
    except ValueError as e:
      raise ManualDataError(f'{at}: {e} (line {line!r}). {fix}') from None
    if clip.id in seen:
      raise ManualDataError(
        f'{at}: clip {clip.id} is listed again (first at {seen[clip.id]}). '
        f'{fix}'
      )
    seen[clip.id] = at
    clips.append(clip)
  if not clips:
    raise ManualDataError(f'{list_file} lists no clips. {fix}')
  return clips


def _frames(clip: Clip) -> tuple[list[pathlib.Path], list[str]]:
  """The frames of `clip.folder` in temporal order, and what is wrong."""
  if not clip.folder.is_dir():
    return [], [f'{clip.folder}: no such folder (listed at {clip.listed_at})']
  frames, problems = [], []
  for path in clip.folder.iterdir():
    if is_ignored(path.name):
      continue
    if path.is_file() and path.suffix.lower() in FRAME_EXTENSIONS:
      frames.append(path)
    else:
      problems.append(f'{path}: not a JPEG frame')
  if not frames and not problems:
    problems.append(f'{clip.folder}: no frames (listed at {clip.listed_at})')
  return sorted(frames, key=lambda p: natural_key(p.name)), problems


def list_frames(
  splits: collections.abc.Mapping[str, collections.abc.Sequence[Clip]],
  fix: str,
) -> dict[str, list[Clip]]:
  """Lists every clip's frames, checking all folders before any is read.

  A clip folder holds `.jpg`/`.jpeg` files (any case) and nothing else but
  system clutter (`is_ignored`). Frames are ordered by `natural_key`.

  Args:
    splits: split -> its clips, e.g. from `read_clip_list`.
    fix: what the user should do, appended to the message.

  Returns:
    split -> its clips with `frames` filled.

  Raises:
    ManualDataError: naming, in all splits at once, every clip listed in
      two splits, every missing or empty clip folder and every entry of a
      clip folder that is not a JPEG frame.
  """
  out, problems, first = {}, [], {}
  for split, clips in splits.items():
    out[split] = []
    for clip in clips:
      other, at = first.setdefault(clip.id, (split, clip.listed_at))
      if other != split:
        problems.append(
          f'{clip.listed_at}: clip {clip.id} of {split} is in {other} too '
          f'({at})'
        )
      frames, wrong = _frames(clip)
      problems += wrong
      out[split].append(clip._replace(frames=tuple(frames)))
  if problems:
    raise ManualDataError(
      f'{len(problems)} problem(s) with the listed clips:'
      f'{_listing(problems)}\n{fix}'
    )
  return out


def shrink_frame(image: np.ndarray, frame_size: int) -> bytes:
  """Resizes a decoded frame to shorter side `frame_size`, as JPEG bytes.

  Area interpolation, the aspect ratio kept (the longer side rounded to the
  nearest pixel), JPEG at `FRAME_JPEG_QUALITY`. `image` is [h, w, 3] uint8
  in cv2's BGR order.
  """
  h, w = image.shape[:2]
  scale = frame_size / min(h, w)
  size = (max(1, round(w * scale)), max(1, round(h * scale)))
  small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
  ok, data = cv2.imencode(
    '.jpg', small, [cv2.IMWRITE_JPEG_QUALITY, FRAME_JPEG_QUALITY]
  )
  if not ok:
    raise RuntimeError(f'JPEG encoding of a {size} frame failed.')
  return data.tobytes()


def read_clip_frames(clip: Clip, frame_size: int | None = None) -> list[bytes]:
  """Reads and checks the frames of one clip (`frames` filled).

  Returns:
    Each frame's bytes: as shipped, or `shrink_frame`d where `frame_size`
    is set and smaller than the frame's shorter side.

  Raises:
    ManualDataError: naming a frame that is not a decodable 3-channel 8-bit
      image, or whose size differs from the clip's first frame.
  """
  out, first = [], None
  for path in clip.frames:
    data = path.read_bytes()
    image = decode_image(data, path, channels=(3,))
    if image.dtype != np.uint8:
      raise ManualDataError(
        f'{path}: {image.dtype} samples, not 8-bit. Replace it with the '
        'file from the release.'
      )
    first = first or (image.shape, path)
    if image.shape != first[0]:
      raise ManualDataError(
        f'{path}: {image.shape[1]}x{image.shape[0]} pixels, but '
        f'{first[1].name} of the same clip is {first[0][1]}x{first[0][0]}. '
        'Replace the clip folder with the one from the release.'
      )
    if frame_size is not None and min(image.shape[:2]) > frame_size:
      data = shrink_frame(image, frame_size)
    out.append(data)
  return out


def clip_example(clip: Clip, frame_size: int | None = None) -> dict:
  """The feature dict of one clip, as `clip_features` declares.

  Returns:
    {'frames': JPEG bytes per frame (`read_clip_frames`), 'label',
    'original_label', 'id', 'num_frames'}.
  """
  frames = read_clip_frames(clip, frame_size)
  return {
    'frames': frames,
    'label': clip.label,
    'original_label': clip.original_label,
    'id': clip.id,
    'num_frames': len(frames),
  }


def clip_features(
  names: collections.abc.Sequence[str],
  original_label: tfds.features.FeatureConnector,
  id_doc: str,
  **extra: tfds.features.FeatureConnector,
) -> tfds.features.FeaturesDict:
  """The features of a video dataset, as `clip_example` fills them.

  Frames are a `Sequence` of JPEG `Image`s, not a `Video` (which needs
  TensorFlow to encode); readers decode them to a list of [h, w, 3] uint8
  arrays. `names` are the class names in label order, `original_label` the
  feature of the dataset's own label, `id_doc` what `id` holds, and
  `extra` further features (e.g. `scene`).
  """
  return tfds.features.FeaturesDict(
    {
      'frames': tfds.features.Sequence(
        tfds.features.Image(shape=(None, None, 3), encoding_format='jpeg'),
        doc='The clip, frame by frame in temporal order.',
      ),
      'label': tfds.features.ClassLabel(names=names),
      'original_label': original_label,
      'id': tfds.features.Text(doc=id_doc),
      'num_frames': tfds.features.Scalar(
        dtype=np.int32, doc='Number of frames in the clip.'
      ),
      **extra,
    }
  )

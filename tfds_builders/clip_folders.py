"""Reader of video releases that keep each clip in a folder of frames.

DFEW and FERV39K store each clip as a folder of JPEG frames and list the
clips of a split in a text file. `read_clip_list` reads such a list,
`list_frames` checks every listed folder before anything is written, and
`clip_example` turns a clip into the feature dict of `clip_features`,
keeping the frames as shipped or shrinking them
(`ClipBuilderConfig.frame_size`, the base of those datasets' builder
configs).
"""

import collections.abc
import dataclasses
import pathlib
import re
import typing

import cv2
import numpy as np
import tensorflow_datasets as tfds

from tfds_builders import manual_data

FRAME_EXTENSIONS = ('.jpg', '.jpeg')
# JPEG quality of frames re-encoded by a config that resizes them.
FRAME_JPEG_QUALITY = 95


@dataclasses.dataclass(kw_only=True)
class ClipBuilderConfig(tfds.core.BuilderConfig):
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
  list_file: manual_data.PathLike,
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
    manual_data.ManualDataError: naming the file and line of a line
      `parse_line` rejects or of a clip listed twice, or if the list holds
      no clip.
  """
  with manual_data.open_text(list_file) as f:
    text = f.read()
  lines = [(n, x) for n, x in enumerate(text.splitlines(), 1) if x.strip()]
  if lines and is_header(lines[0][1]):
    lines = lines[1:]
  clips, seen = [], {}
  for lineno, line in lines:
    at = manual_data.where(list_file, lineno)
    try:
      clip = parse_line(line)._replace(listed_at=at)
    except ValueError as e:
      raise manual_data.ManualDataError(
        f'{at}: {e} (line {line!r}). {fix}'
      ) from None
    if clip.id in seen:
      raise manual_data.ManualDataError(
        f'{at}: clip {clip.id} is listed again (first at {seen[clip.id]}). '
        f'{fix}'
      )
    seen[clip.id] = at
    clips.append(clip)
  if not clips:
    raise manual_data.ManualDataError(f'{list_file} lists no clips. {fix}')
  return clips


def _frames(clip: Clip) -> tuple[list[pathlib.Path], list[str]]:
  """The frames of `clip.folder` in temporal order, and what is wrong."""
  if not clip.folder.is_dir():
    return [], [f'{clip.folder}: no such folder (listed at {clip.listed_at})']
  frames, problems = [], []
  for path in clip.folder.iterdir():
    if manual_data.is_ignored(path.name):
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
  system clutter (`manual_data.is_ignored`). Frames are ordered by
  `natural_key`.

  Args:
    splits: split -> its clips, e.g. from `read_clip_list`.
    fix: what the user should do, appended to the message.

  Returns:
    split -> its clips with `frames` filled.

  Raises:
    manual_data.ManualDataError: naming, in all splits at once, every clip
      listed in two splits, every missing or empty clip folder and every
      entry of a clip folder that is not a JPEG frame.
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
    raise manual_data.ManualDataError(
      f'{len(problems)} problem(s) with the listed clips:'
      f'{manual_data.listing(problems)}\n{fix}'
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
    manual_data.ManualDataError: naming a frame that is not a decodable
      3-channel 8-bit image, or whose size differs from the clip's first
      frame.
  """
  out, first = [], None
  for path in clip.frames:
    data = path.read_bytes()
    image = manual_data.decode_image(data, path, channels=(3,))
    if image.dtype != np.uint8:
      raise manual_data.ManualDataError(
        f'{path}: {image.dtype} samples, not 8-bit. Replace it with the '
        'file from the release.'
      )
    first = first or (image.shape, path)
    if image.shape != first[0]:
      raise manual_data.ManualDataError(
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

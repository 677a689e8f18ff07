"""Video clips: which frames an example uses, and one augmentation per clip.

A clip example is U segments x V consecutive frames (`config.clip`), stacked
into a uint8 (U*V, size, size, 3) array, the way the dynamic-FER code that
ferjax follows samples DFEW and FERV39K (TSN sampling):

- Former-DFER (zengqunzhao/Former-DFER, dataloader/dataset_DFEW.py,
  `_get_train_indices` / `_get_test_indices`): U = 8, V = 2.
- IAL (muse1998/IAL-for-Facial-Expression-Recognition, dataset_DFEW.py,
  the same two functions): U = 16, V = 1.

For a clip of N >= U*V frames, the N - V + 1 frames that can start a run of
V frames are split into U equal segments of a = floor((N - V + 1) / U)
starts each: segment u holds the starts [u*a, (u+1)*a); the last
(N - V + 1) mod U starts belong to no segment.

- Training (`train_indices`): in every segment, a start s_u uniform in
  [u*a, (u+1)*a), then frames s_u, ..., s_u + V - 1 (the run may reach into
  the next segment when a < V, as in that code).
- Evaluation (`eval_indices`): with t = (N - V + 1) / U, the start
  s_u = floor(t/2 + u*t) is the middle of segment u, then the same V frames.

Their test guard, N > U + V - 1, sends a clip of exactly U + V - 1 frames
to frame 0 alone; with IAL's U = 16, V = 1 that is every 16-frame clip it
keeps. ferjax takes the segment centres there too.

Clips shorter than U*V frames (`config.clip.short`):

- 'loop': the clip is repeated whole until it has at least U*V frames,
  M = N * ceil(U*V / N), the indices above are computed for M frames and
  taken modulo N, so they wrap around. DFEW's official loader loops short
  clips the same way (jiangxingxun/DFEW, libs/DFEW_Dataset.py,
  `generate_index`).
- 'drop': such clips are removed from the split before shuffling
  (`kept_indices`; the pipeline logs how many), as both codes above remove
  clips of fewer than 16 frames from their train and test lists.

Augmentation: `train_clip_transform` draws one set of parameters
(`augment.sample_train_params`) and applies it to every frame
(`augment.apply_train_params`): the same crop, rotation, flip, RandAugment
ops, colour jitter, grayscale and erased rectangle (with the same noise), so
a clip keeps its motion and only its appearance changes, as the group
transforms of both codes do. `eval_clip_transform` resizes every frame as
`augment.eval_transform` does. `IAL_AUGMENT` is IAL's recipe in
`config.augment` fields.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import cv2
import ml_collections
import numpy as np

from ferjax.data import augment

SHORT_POLICIES = ('loop', 'drop')

# IAL's training augmentation in `config.augment` fields (its dataset_DFEW.py
# and video_transform.py): GroupRandomSizedCrop (area 0.85-1, aspect
# 3/5-5/3) to 112 px, group horizontal flip (p 0.5), ColorJitter(brightness
# 0.6) and RandomRotation(4). IAL draws the aspect uniformly and swaps width
# and height half of the time; ferjax draws it log-uniformly (torchvision's
# RandomResizedCrop), also symmetric about 1. Its test transform is a plain
# resize to 112 px, the default `eval_resize`.
IAL_AUGMENT = {
  'size': 112,
  'crop_scale': (0.85, 1.0),
  'crop_ratio': (3 / 5, 5 / 3),
  'flip': 0.5,
  'brightness': 0.6,
  'rotation': 4.0,
}


@dataclasses.dataclass(frozen=True)
class ClipConfig:
  """A validated `config.clip`; `configs.common.base_config` has the fields."""

  segments: int
  frames_per_segment: int
  short: str

  @property
  def length(self) -> int:
    """Frames per example, U * V."""
    return self.segments * self.frames_per_segment


def _is_int(value: Any) -> bool:
  return isinstance(value, int | np.integer) and not isinstance(value, bool)


def parse_config(
  cfg: Mapping[str, Any] | ml_collections.ConfigDict | ClipConfig | None,
) -> ClipConfig | None:
  """Validates `config.clip`.

  Args:
    cfg: the `config.clip` section, a parsed one, or None (no section).

  Returns:
    The validated config, or None for static images (no section, or
    segments = 0).

  Raises:
    ValueError: naming the field and its valid values.
  """
  if cfg is None or isinstance(cfg, ClipConfig):
    return cfg
  segments = cfg.get('segments', 0)
  per_segment = cfg.get('frames_per_segment', 1)
  short = cfg.get('short', 'loop')
  if not _is_int(segments) or segments < 0:
    raise ValueError(
      f'config.clip.segments={segments!r}: expected an int >= 0 (0: images).'
    )
  if not _is_int(per_segment) or per_segment < 1:
    raise ValueError(
      f'config.clip.frames_per_segment={per_segment!r}: expected an int >= 1.'
    )
  if short not in SHORT_POLICIES:
    raise ValueError(
      f'config.clip.short={short!r}: expected one of {SHORT_POLICIES}.'
    )
  if not segments:
    return None
  return ClipConfig(int(segments), int(per_segment), short)


# -------------------------------------------------------------------- indices


def _check_counts(num_frames: int, segments: int, frames_per_segment: int):
  if not _is_int(num_frames) or num_frames < 1:
    raise ValueError(f'a clip needs at least one frame, got {num_frames!r}.')
  if segments < 1 or frames_per_segment < 1:
    raise ValueError(
      f'segments={segments} and frames_per_segment={frames_per_segment} '
      'must both be >= 1.'
    )


def _looped_length(num_frames: int, length: int) -> int:
  """N, or N repeated whole until it reaches `length` frames."""
  return num_frames * math.ceil(length / num_frames)


def _runs(starts: np.ndarray, frames_per_segment: int, num_frames: int):
  """Runs of V frames from each start, flattened, wrapped modulo N."""
  runs = starts[:, None] + np.arange(frames_per_segment)
  return (runs.reshape(-1) % num_frames).astype(np.int64)


def train_indices(
  num_frames: int,
  segments: int,
  frames_per_segment: int,
  rng: np.random.Generator,
) -> np.ndarray:
  """Training frame indices: a random run of V frames in each segment (TSN).

  Args:
    num_frames: N, the frames of the clip (>= 1).
    segments: U.
    frames_per_segment: V.
    rng: the only source of randomness (U draws).

  Returns:
    int64 (U*V,) indices into the clip, segment by segment; the module
    docstring gives the formula and how short clips wrap.
  """
  _check_counts(num_frames, segments, frames_per_segment)
  total = _looped_length(num_frames, segments * frames_per_segment)
  step = (total - frames_per_segment + 1) // segments  # >= 1 here.
  starts = np.arange(segments) * step + rng.integers(step, size=segments)
  return _runs(starts, frames_per_segment, num_frames)


def eval_indices(
  num_frames: int, segments: int, frames_per_segment: int
) -> np.ndarray:
  """Evaluation frame indices: the run of V frames at each segment's centre.

  Args:
    num_frames: N, the frames of the clip (>= 1).
    segments: U.
    frames_per_segment: V.

  Returns:
    int64 (U*V,) indices into the clip, segment by segment.
  """
  _check_counts(num_frames, segments, frames_per_segment)
  total = _looped_length(num_frames, segments * frames_per_segment)
  tick = (total - frames_per_segment + 1) / segments
  starts = np.floor(tick / 2.0 + tick * np.arange(segments)).astype(np.int64)
  return _runs(starts, frames_per_segment, num_frames)


def kept_indices(num_frames: np.ndarray, clip: ClipConfig) -> np.ndarray:
  """Indices of the clips that `clip.short` keeps.

  Args:
    num_frames: the frame count of every clip of a split.
    clip: the clip config.

  Returns:
    int64 indices in increasing order: all of them for 'loop', those of
    clips with at least U*V frames for 'drop'.
  """
  num_frames = np.asarray(num_frames)
  if clip.short == 'loop':
    return np.arange(len(num_frames), dtype=np.int64)
  return np.flatnonzero(num_frames >= clip.length).astype(np.int64)


# --------------------------------------------------------------------- frames


def _decode(data: bytes) -> np.ndarray:
  """An encoded image (PNG, JPEG, ...) as uint8 RGB or grayscale."""
  image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
  if image is None:
    raise ValueError(f'cannot decode a frame of {len(data)} bytes.')
  if image.ndim == 3 and image.shape[2] == 3:
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
  if image.ndim == 3 and image.shape[2] == 4:
    return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
  return image


def _stack(frames: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
  """Frames of one size as a uint8 (T, H, W[, C]) array, or a clear error."""
  if isinstance(frames, np.ndarray) and frames.dtype == np.uint8:
    if frames.ndim not in (3, 4) or not len(frames):
      raise ValueError(
        'expected a clip of uint8 (T, H, W) or (T, H, W, C) frames, T >= 1, '
        f'got shape {frames.shape}.'
      )
    return frames
  frames = [np.asarray(f) for f in frames]
  shapes = sorted({f.shape for f in frames})
  if len(shapes) != 1:
    raise ValueError(f'the frames of a clip differ in shape: {shapes}.')
  dtypes = {f.dtype for f in frames}
  if dtypes != {np.dtype(np.uint8)}:
    raise ValueError(f'expected uint8 frames, got {sorted(map(str, dtypes))}.')
  return _stack(np.stack(frames))


def take_frames(frames, indices: np.ndarray) -> np.ndarray:
  """The frames at `indices`, decoding only those that are still encoded.

  Args:
    frames: a clip's frames: a uint8 (T, H, W, C) array, or a sequence of
      uint8 images or of encoded image bytes (a TFDS `Sequence(Image)` read
      without decoding).
    indices: which frames, in order (repeats allowed).

  Returns:
    The uint8 (len(indices), H, W[, C]) frames.
  """
  if isinstance(frames, np.ndarray) and frames.dtype == np.uint8:
    return _stack(frames[np.asarray(indices)])
  picked = [frames[int(i)] for i in indices]
  return _stack([_decode(f) if isinstance(f, bytes) else f for f in picked])


def train_clip_transform(
  frames, rng: np.random.Generator, augment_cfg
) -> np.ndarray:
  """Augments every frame of a clip with one draw of the train transform.

  Args:
    frames: uint8 (T, H, W, 3) frames (or (T, H, W) / (T, H, W, 1)
      grayscale, or a sequence of T images of one size).
    rng: the only source of randomness.
    augment_cfg: `config.augment`, a mapping or its `augment.parse_config`
      result (faster).

  Returns:
    The uint8 (T, size, size, 3) clip.
  """
  c = augment.parse_config(augment_cfg)
  frames = _stack(frames)
  height, width = frames.shape[1:3]
  params = augment.sample_train_params(height, width, rng, c)
  return np.stack([augment.apply_train_params(f, params, c) for f in frames])


def eval_clip_transform(frames, augment_cfg) -> np.ndarray:
  """Resizes every frame of a clip as `augment.eval_transform` (no randomness).

  Args:
    frames: as for `train_clip_transform`.
    augment_cfg: `config.augment`, a mapping or its parsed form.

  Returns:
    The uint8 (T, size, size, 3) clip.
  """
  c = augment.parse_config(augment_cfg)
  return np.stack([augment.eval_transform(f, c) for f in _stack(frames)])


def train_clip(
  frames, rng: np.random.Generator, clip: ClipConfig, augment_cfg
) -> np.ndarray:
  """A training example: `train_indices`, then `train_clip_transform`.

  Args:
    frames: all frames of the clip, as `take_frames` takes them.
    rng: the only source of randomness (the indices first, then the
      augmentation).
    clip: the clip config.
    augment_cfg: `config.augment` or its parsed form.

  Returns:
    The uint8 (U*V, size, size, 3) clip.
  """
  indices = train_indices(
    len(frames), clip.segments, clip.frames_per_segment, rng
  )
  return train_clip_transform(take_frames(frames, indices), rng, augment_cfg)


def eval_clip(frames, clip: ClipConfig, augment_cfg) -> np.ndarray:
  """An evaluation example: `eval_indices`, then `eval_clip_transform`."""
  indices = eval_indices(len(frames), clip.segments, clip.frames_per_segment)
  return eval_clip_transform(take_frames(frames, indices), augment_cfg)

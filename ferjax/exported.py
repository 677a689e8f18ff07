"""Runs a model exported by `ferjax.export`, with jax and numpy only.

    from ferjax import exported

    model = exported.load('exports/mfer_rafdb')
    face = model.preprocess(face_rgb)            # uint8 (S, S, 3)
    probs = model.probabilities(face[None])      # float32 (1, C)
    print(model.class_names[int(probs.argmax())])

An export directory holds `model.jaxexport` (a serialized `jax.export`
function: uint8 RGB images, or clips of frames, to float32 logits, with the
weights inside it) and `metadata.json` (class names, input shape, the
preprocessing the model expects, where it came from). This file imports
neither flax nor the rest of ferjax, and OpenCV only for `preprocess`, so
another project can use a model without installing ferjax:

1. copy the export directory and this file (`ferjax/exported.py`) into the
   project, e.g. as `fer_model/` and `fer_exported.py`;
2. install `jax`, `numpy`, `flatbuffers` (which `jax.export` reads the model
   with) and, for `preprocess`, `opencv-python-headless`;
3. `import fer_exported; model = fer_exported.load('fer_model')`.

The model runs on any platform it was exported for (`metadata.json`'s
`platforms`, by default cpu, cuda and tpu), also on newer jax releases (an
export from jax 0.10.2 ran on an H200 under jax 0.11.2; jax keeps reading
serialized functions for at least six months of releases). It computes in
each platform's default precision, as training and evaluation did: on a GPU,
float32 convolutions and matrix products use TF32, so logits differ from a
CPU's by about 1e-3.

An export written with `--onnx` also holds `model.onnx`, the same function
for ONNX runtimes: input 'images' (uint8, the shape above), output 'logits'
(float32); `metadata.json`'s 'onnx' describes it.

Input: faces cropped as in the training data (the datasets' aligned face
crops; `ferjax.predict` finds faces in whole photos and videos). `preprocess`
resizes one face (or, for a clip model, picks and resizes a clip's frames)
exactly as the evaluation pipeline did (`ferjax.data.augment.eval_transform`
and `ferjax.data.clips.eval_indices`); `metadata.json` documents the same
steps for callers that do their own.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

MODEL_FILE = 'model.jaxexport'
METADATA_FILE = 'metadata.json'
FORMAT = 'ferjax-export'
FORMAT_VERSION = 1
BATCH_DIM = 'b'  # How metadata.json names a symbolic (any size) batch axis.


def _check_image(image: np.ndarray) -> np.ndarray:
  """`image` as uint8 (H, W) for grayscale or (H, W, 3), or a clear error."""
  image = np.asarray(image)
  if image.dtype != np.uint8:
    raise ValueError(
      f'expected a uint8 RGB image, got dtype {image.dtype}; convert 0-255 '
      'pixels with .astype(np.uint8) (floats in [0, 1]: * 255 first).'
    )
  if image.ndim == 3 and image.shape[2] == 1:
    image = image[..., 0]
  if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
    raise ValueError(
      f'expected an (H, W), (H, W, 1) or (H, W, 3) image, got shape '
      f'{image.shape}.'
    )
  if image.shape[0] < 1 or image.shape[1] < 1:
    raise ValueError(f'expected a non-empty image, got shape {image.shape}.')
  return image


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
  import cv2  # Only preprocessing needs OpenCV.

  h, w = image.shape[:2]
  # Area averaging when shrinking in both sides, else bilinear.
  shrink = width <= w and height <= h
  interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
  return cv2.resize(image, (width, height), interpolation=interpolation)


def preprocess_image(image: np.ndarray, spec: Mapping[str, Any]) -> np.ndarray:
  """Resizes one RGB face image as the model's evaluation pipeline did.

  Args:
    image: uint8 (H, W, 3) RGB, or (H, W) / (H, W, 1) grayscale, any size.
    spec: metadata.json's 'preprocess': 'size' and 'resize' ('resize': the
      whole image to size x size; 'center_crop': the short side to
      int(size / crop_fraction), keeping the aspect ratio, then the central
      size x size square).

  Returns:
    The uint8 (size, size, 3) RGB image (grayscale replicated).
  """
  image = _check_image(image)
  size = int(spec['size'])
  mode = spec['resize']
  if mode == 'resize':
    out = _resize(image, size, size)
  elif mode == 'center_crop':
    h, w = image.shape[:2]
    short = int(size / spec['crop_fraction'])
    if h <= w:
      nh, nw = short, int(short * w / h)
    else:
      nh, nw = int(short * h / w), short
    resized = _resize(image, nw, nh)
    top = int(round((nh - size) / 2.0))
    left = int(round((nw - size) / 2.0))
    out = resized[top : top + size, left : left + size]
  else:
    raise ValueError(
      f"preprocess.resize={mode!r}: expected 'resize' or 'center_crop'."
    )
  if out.ndim == 2:
    out = np.repeat(out[..., None], 3, axis=2)
  return np.ascontiguousarray(out)


def clip_frame_indices(num_frames: int, clip: Mapping[str, Any]) -> np.ndarray:
  """The frames a clip model evaluates: the centre run of each segment.

  Args:
    num_frames: N, the frames of the whole video (>= 1).
    clip: metadata.json's 'clip': 'segments' (U) and 'frames_per_segment'
      (V). A video shorter than U*V frames is looped whole to
      M = N * ceil(U*V / N) frames; with t = (M - V + 1) / U, segment u
      starts at floor(t / 2 + u * t); the V frames from there, modulo N.

  Returns:
    int64 (U*V,) indices into the video, segment by segment.
  """
  segments = int(clip['segments'])
  per_segment = int(clip['frames_per_segment'])
  if num_frames < 1:
    raise ValueError(f'a clip needs at least one frame, got {num_frames}.')
  total = num_frames * math.ceil(segments * per_segment / num_frames)
  tick = (total - per_segment + 1) / segments
  starts = np.floor(tick / 2.0 + tick * np.arange(segments)).astype(np.int64)
  runs = starts[:, None] + np.arange(per_segment)
  return (runs.reshape(-1) % num_frames).astype(np.int64)


def _softmax(logits: np.ndarray) -> np.ndarray:
  shifted = logits - logits.max(axis=-1, keepdims=True)
  e = np.exp(shifted)
  return e / e.sum(axis=-1, keepdims=True)


class ExportedModel:
  """A loaded export: its metadata and the compiled logits function.

  Attributes:
    directory: the export directory.
    metadata: metadata.json as a dict.
    class_names: the class of each logit, in order.
    input_shape: one batch's shape, e.g. ('b', 112, 112, 3), where 'b' is
      any batch size (an int for a fixed-batch export).
    batch_size: None when any batch size works, else the exported one
      (`logits` then pads and splits batches to fit).
    is_clip: whether examples are clips (b, T, H, W, 3) of T frames.

  Args:
    exported: the deserialized `jax.export.Exported` (anything with a
      `call` taking a uint8 batch and returning logits).
    metadata: its metadata.json.
    directory: where it was loaded from, for messages.
  """

  def __init__(self, exported, metadata: dict, directory: str = ''):
    self.directory = directory
    self.metadata = metadata
    self.class_names = tuple(metadata['class_names'])
    self.input_shape = tuple(metadata['input']['shape'])
    batch = self.input_shape[0]
    self.batch_size = None if batch == BATCH_DIM else int(batch)
    self.is_clip = metadata.get('clip') is not None
    self._exported = exported
    self._call = jax.jit(exported.call)

  def __repr__(self) -> str:
    return (
      f'ExportedModel({self.metadata["model"]!r}, input {self.input_shape}, '
      f'{len(self.class_names)} classes)'
    )

  def preprocess(self, image: np.ndarray) -> np.ndarray:
    """One example as the model takes it, from a face image or a video.

    Args:
      image: for an image model, a uint8 RGB (or grayscale) face crop of any
        size; for a clip model, all frames of a video of faces, uint8
        (N, H, W, 3) or (N, H, W), N >= 1.

    Returns:
      uint8 (S, S, 3), or (T, S, S, 3) for a clip model; stack examples
      along a new first axis for `logits`.
    """
    spec = self.metadata['preprocess']
    if not self.is_clip:
      return preprocess_image(image, spec)
    frames = np.asarray(image)
    if frames.dtype != np.uint8 or frames.ndim not in (3, 4) or not len(frames):
      raise ValueError(
        'a clip model takes a video as uint8 (N, H, W, 3) or (N, H, W) '
        f'frames, N >= 1; got {frames.dtype} {frames.shape}.'
      )
    indices = clip_frame_indices(len(frames), self.metadata['clip'])
    return np.stack([preprocess_image(frames[i], spec) for i in indices])

  def _check_batch(self, batch: np.ndarray) -> np.ndarray:
    batch = np.asarray(batch)
    example = tuple(self.input_shape[1:])
    if batch.dtype != np.uint8 or batch.shape[1:] != example:
      raise ValueError(
        f'expected a uint8 batch of shape {self.input_shape} (RGB pixels '
        f'0-255, batch first), got {batch.dtype} {batch.shape}; '
        '`preprocess` makes one example, `x[None]` a batch of one.'
      )
    return batch

  def logits(self, batch: np.ndarray) -> np.ndarray:
    """The model's float32 (b, C) logits for a uint8 batch.

    Args:
      batch: uint8 RGB examples of `input_shape`, batch axis first.
    """
    batch = self._check_batch(batch)
    if not len(batch):  # A symbolic batch is at least 1.
      return np.zeros((0, len(self.class_names)), np.float32)
    if self.batch_size is None:
      return np.asarray(self._call(batch))
    size = self.batch_size
    outputs = []
    for start in range(0, len(batch), size):
      chunk = batch[start : start + size]
      pad = size - len(chunk)
      if pad:  # The last chunk: pad with black examples, drop their rows.
        fill = np.zeros((pad, *chunk.shape[1:]), chunk.dtype)
        chunk = np.concatenate([chunk, fill])
      outputs.append(np.asarray(self._call(chunk))[: size - pad])
    return np.concatenate(outputs)

  def probabilities(self, batch: np.ndarray) -> np.ndarray:
    """Softmax of `logits`: float32 (b, C), each row sums to 1."""
    return _softmax(self.logits(batch)).astype(np.float32)


def _read_metadata(directory: str) -> dict:
  path = os.path.join(directory, METADATA_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(
      f'{path} does not exist: {directory!r} is not a ferjax export; write '
      'one with `python -m ferjax.export --workdir RUN --out DIR`.'
    )
  with open(path) as f:
    metadata = json.load(f)
  if metadata.get('format') != FORMAT:
    raise ValueError(f'{path} is not ferjax export metadata.')
  if metadata.get('format_version', 0) > FORMAT_VERSION:
    raise ValueError(
      f'{directory!r} was written in export format '
      f'{metadata["format_version"]}; this loader reads up to '
      f'{FORMAT_VERSION}: use the exported.py of the ferjax that wrote it.'
    )
  return metadata


def _check_platform(platforms, directory: str) -> None:
  here = jax.export.default_export_platform()
  if here not in platforms:
    raise RuntimeError(
      f'{directory!r} was exported for {", ".join(platforms)}, but jax runs '
      f'on {here} here; export again with --platforms including {here}.'
    )


def load(directory: str | os.PathLike) -> ExportedModel:
  """Loads an export directory written by `ferjax.export`.

  Args:
    directory: holds model.jaxexport and metadata.json.

  Returns:
    The model, ready to run on jax's default platform.

  Raises:
    FileNotFoundError: the directory or one of its files is missing.
    ImportError: the flatbuffers package (jax.export's reader) is missing.
    RuntimeError: the export was made for other platforms than this one.
  """
  directory = os.fspath(directory)
  metadata = _read_metadata(directory)
  path = os.path.join(directory, MODEL_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(
      f'{path} does not exist; copy the whole export directory.'
    )
  if importlib.util.find_spec('flatbuffers') is None:
    raise ImportError(
      'Reading an exported model needs the flatbuffers package, which '
      'jax.export deserializes with: pip install flatbuffers'
    )
  with open(path, 'rb') as f:
    exported = jax.export.deserialize(bytearray(f.read()))
  _check_platform(exported.platforms, directory)
  return ExportedModel(exported, metadata, directory)

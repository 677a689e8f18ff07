r"""Expression prediction for images, folders and videos: faces in, a table out.

    predictor = Predictor.from_workdir('runs/demo')          # a trained run
    predictor = Predictor.from_weights('manet', 'weights/manet_rafdb')
    table = predictor.predict(['photo.jpg', 'folder/', 'clip.mp4', array])

    python -m ferjax.predict --workdir runs/demo photos/ --out results.csv

Inputs (read and checked by `ferjax.media`): image files; directories
(searched recursively, files sorted, images and videos picked by extension);
video files (every `stride`-th frame); numpy arrays (RGB uint8 (H, W, 3),
float in [0, 1], gray (H, W) or RGBA (H, W, 4), whose alpha is dropped); or
a list mixing them.

Each image or sampled frame goes through the face detector
(`ferjax.detect`, Haar by default), every face is cropped with `margin`
(`detect.align`) and preprocessed exactly as the model's evaluation data:
`augment.eval_transform` with the run's augment config to uint8, then /255
inside the jitted forward pass. With `detector=None` the inputs are taken
as face crops, as dataset images are: the whole image goes to
`eval_transform`, with no margin. Faces run in batches of a fixed `batch_size` (the last batch padded),
so the forward pass compiles once. Probabilities are the softmax of the
model's 'logits'.

Clip models (`config.clip.segments` = U > 0, e.g. GCSA) take U*V frames at
once. A video's sampled frames are then grouped into consecutive windows of
U*V frames, each giving one row (`frame` is the window's first frame, the box
that frame's face). Each frame contributes its largest face; a frame where
none is found reuses the previous frame's box, and frames before the first
detection are skipped. The last, incomplete window is the video's last U*V
usable frames (it overlaps the one before); a video with fewer frames loops
them as the evaluation pipeline does (`clips.eval_indices`). A still image
becomes a clip of U*V copies of itself.

The table (a pandas DataFrame) has one row per face: `input` (path or
'<array i>'), `frame` (video frame index, else NA), `face` (index within
its image or frame, largest first), `x`, `y`, `w`, `h` (the detector's box in
the input's pixels, after EXIF rotation), one probability column per class
name (`ferjax.labels`), `label` (the most probable) and `error` (None, or
why the input or frame gave no prediction). Every input has at least one
row: a missing path, an empty directory, a corrupt or non-image file, an
image above `max_pixels` (refused from its header, before decoding), an
unreadable video or a frame without a face give a row with `error` set while
the other inputs go on. Images larger than `max_detect_side` are shrunk for
detection only; the crops come from the full image.

The command line writes the table as CSV or JSON (records) and prints a
one-line summary; it exits with 0 if any face was predicted, 1 if nothing
could be, and 2 for usage errors (bad flags, no such run or weights).
"""

from __future__ import annotations

import argparse
import ast
import collections
import functools
import json
import os
import sys
from collections.abc import Iterable
from typing import Any

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ferjax import detect
from ferjax import labels
from ferjax import media
from ferjax.data import augment
from ferjax.data import clips

PYTORCH_EXTENSIONS = ('.pth', '.pth.tar', '.pt')
# Crop margins measured for datasets whose faces sit loosely in their images
# (synthetic_fer: 1.6x the Haar box); others use detect.DEFAULT_MARGIN.
DATASET_MARGINS = {'synthetic_fer': 0.3}
# The input sizes of the paper configs, for weights without a run config.
MODEL_IMAGE_SIZES = {'manet': 224, 'mfer': 224, 'jadfer': 112, 'gcsa': 112}
# Predictor fields that from_weights does not pass on as model fields.
OPTIONS = ('margin', 'border', 'stride', 'max_pixels', 'max_detect_side')
# Fields of converted weights that belong to the converter, not the model.
_CONVERTER_FIELDS = ('source', 'image_size')
_BOX = ('x', 'y', 'w', 'h')


# ------------------------------------------------------------ rows, batching


def _row(name, frame=None, face=None, box=None, error=None) -> dict:
  row = {'input': name, 'frame': frame, 'face': face, 'error': error}
  values = (box.x, box.y, box.w, box.h) if box else (None,) * 4
  row.update(zip(_BOX, values, strict=True))
  return row


class _Batches:
  """Runs crops through the model in fixed-size batches, rows in order.

  `then(rows, fn)` calls fn(rows) once every row added so far (in
  particular `rows`) has its probabilities, in the order they were queued.
  """

  def __init__(self, forward, batch_size: int, example_shape: tuple):
    self.rows: list[dict] = []
    self._forward = forward
    self._buffer = np.zeros((batch_size, *example_shape), np.uint8)
    self._waiting: list[dict] = []
    self._after: collections.deque = collections.deque()

  def add(self, row: dict, crop: np.ndarray | None = None) -> None:
    self.rows.append(row)
    if crop is None:
      return
    self._buffer[len(self._waiting)] = crop
    self._waiting.append(row)
    row['pending'] = True
    if len(self._waiting) == len(self._buffer):
      self.flush()

  def then(self, rows: list[dict], fn) -> None:
    self._after.append((rows, fn))
    self._drain()

  def flush(self) -> None:
    if self._waiting:
      n = len(self._waiting)
      self._buffer[n:] = 0
      probs = np.asarray(self._forward(self._buffer))
      for row, p in zip(self._waiting, probs[:n], strict=True):
        row['probs'] = p
        del row['pending']
      self._waiting = []
    self._drain()

  def _drain(self) -> None:
    while self._after and not any('pending' in r for r in self._after[0][0]):
      rows, fn = self._after.popleft()
      fn(rows)


def _table(rows: list[dict], names: tuple[str, ...]) -> pd.DataFrame:
  """The result rows as the documented DataFrame."""
  probs = np.full((len(rows), len(names)), np.nan, np.float32)
  for i, row in enumerate(rows):
    if row.get('probs') is not None:
      probs[i] = row['probs']
  has = ~np.isnan(probs[:, 0]) if len(rows) else np.zeros(0, bool)
  best = np.argmax(np.nan_to_num(probs, nan=-1.0), axis=1)
  columns = {'input': [r['input'] for r in rows]}
  for key in ('frame', 'face', *_BOX):
    columns[key] = pd.array([r[key] for r in rows], dtype='Int64')
  columns.update({name: probs[:, j] for j, name in enumerate(names)})
  label = [names[b] if h else None for b, h in zip(best, has, strict=True)]
  columns['label'] = pd.Series(label, dtype=object)
  columns['error'] = pd.Series([r['error'] for r in rows], dtype=object)
  return pd.DataFrame(columns)


class _Annotator:
  """Writes annotated copies of the inputs under `directory`."""

  def __init__(self, directory: str, names: tuple[str, ...]):
    self.directory = directory
    self.names = names
    self._used: set[str] = set()

  def path(self, out_name: str, ext: str) -> str:
    stem = os.path.splitext(out_name)[0]
    path, n = stem + ext, 0
    while path in self._used:  # Two inputs with one name keep both.
      n += 1
      path = f'{stem}_{n}{ext}'
    self._used.add(path)
    path = os.path.join(self.directory, path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path

  def draw(self, image: np.ndarray, rows: list[dict]) -> np.ndarray:
    """`viz.annotate` of the image with its predicted rows (BGR out)."""
    from ferjax import viz  # matplotlib and drawing only when annotating.

    done = [r for r in rows if r.get('probs') is not None]
    drawn = viz.annotate(image, _table(done, self.names))
    return cv2.cvtColor(np.asarray(drawn, np.uint8), cv2.COLOR_RGB2BGR)

  def image(self, out_name: str, image: np.ndarray, rows: list[dict]):
    cv2.imwrite(self.path(out_name, '.png'), self.draw(image, rows))

  def video(self, out_name: str, fps: float, image: np.ndarray):
    height, width = image.shape[:2]
    fourcc = cv2.VideoWriter_fourcc(*'MJPG')
    path = self.path(out_name, '.avi')
    return cv2.VideoWriter(path, fourcc, fps, (width, height))


# ---------------------------------------------------------------- predictor


def _probabilities(model, variables, images):
  """Class probabilities of a uint8 batch (the jitted forward pass)."""
  x = images.astype(jnp.float32) / 255.0
  logits = model.apply(variables, x, train=False)['logits']
  return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)


def _class_names(num_classes: int) -> tuple[str, ...]:
  if num_classes in (7, 8):
    return labels.class_names(num_classes)
  return tuple(f'class_{i}' for i in range(num_classes))


class Predictor:
  """A model with its eval preprocessing and a face detector.

  Args:
    model: a Flax module whose `apply(variables, images, train=False)`
      returns {'logits': ...} for float NHWC (or clip NTHWC) in [0, 1].
    variables: its variables.
    num_classes: the classes it predicts.
    augment_config: the run's `config.augment` (its eval fields are used);
      None for the defaults.
    clip_config: `config.clip` for clip models, else None.
    detector: a `ferjax.detect` name ('haar', None/'none') or callable.
    batch_size: faces (or clips) per forward pass; the last is padded.
    margin: crop margin per side as a fraction of the box
      (`detect.align`).
    border: how crops beyond the image are filled (`detect.align`).
    stride: every stride-th video frame is used (1: all).
    max_pixels: images with more pixels are refused from their header
      (decompression bombs); None for no limit.
    max_detect_side: longer images are shrunk to this side for detection.
  """

  def __init__(
    self,
    model,
    variables,
    *,
    num_classes: int,
    augment_config=None,
    clip_config=None,
    detector: Any = 'haar',
    batch_size: int = 32,
    margin: float = detect.DEFAULT_MARGIN,
    border: str = 'constant',
    stride: int = 1,
    max_pixels: int | None = 100_000_000,
    max_detect_side: int | None = 1280,
  ):
    if batch_size < 1 or stride < 1:
      raise ValueError(f'batch_size={batch_size}, stride={stride}: need >= 1')
    self.model = model
    self.num_classes = num_classes
    self.class_names = _class_names(num_classes)
    self.augment = augment.parse_config(augment_config or {})
    self.clip = clips.parse_config(clip_config)
    self.detector = detect.get_detector(detector)
    self.batch_size = batch_size
    self.margin, self.border, self.stride = margin, border, stride
    self.max_pixels, self.max_detect_side = max_pixels, max_detect_side
    self._variables = jax.device_put(variables)
    self._forward = jax.jit(functools.partial(_probabilities, model))

  @classmethod
  def from_workdir(
    cls, workdir: str, detector: Any = 'haar', batch_size: int = 32, **options
  ) -> Predictor:
    """The best (else latest) checkpoint of a ferjax run.

    `options` are further `Predictor` fields; the margin defaults to the
    run's dataset's (`DATASET_MARGINS`).
    """
    from ferjax import checkpointing
    from ferjax import train

    config, variables = checkpointing.load_run(os.fspath(workdir))
    margin = DATASET_MARGINS.get(config.data.name, detect.DEFAULT_MARGIN)
    options.setdefault('margin', margin)
    return cls(
      train.create_model(config),
      variables,
      num_classes=config.data.num_classes,
      augment_config=config.augment,
      clip_config=config.get('clip'),
      detector=detector,
      batch_size=batch_size,
      **options,
    )

  @classmethod
  def from_weights(
    cls,
    model_name: str,
    weights_path: str,
    num_classes: int | None = None,
    image_size: int | None = None,
    *,
    detector: Any = 'haar',
    batch_size: int = 32,
    augment_config=None,
    clip_config=None,
    **fields,
  ) -> Predictor:
    """Converted weights (`python -m ferjax.weights convert`) or a .pth.

    Args:
      model_name: the model's registry name, e.g. 'manet'.
      weights_path: a weights directory or a PyTorch checkpoint.
      num_classes: classes of the head; None: the weights directory's,
        else 7.
      image_size: the model's input side; None: the directory's, else the
        paper config's (`MODEL_IMAGE_SIZES`).
      detector: as for `Predictor`.
      batch_size: as for `Predictor`.
      augment_config: eval preprocessing fields; None: the defaults (a
        plain resize) at `image_size`.
      clip_config: `config.clip` for clip models; None: U = the model's
        num_frames, V = 1, for models with num_frames.
      **fields: model fields (as for `ferjax.models.get_model`) and the
        `Predictor` fields in `OPTIONS`.

    Raises:
      FileNotFoundError: no such weights.
      ValueError: the weights do not fit the model (naming the variables).
    """
    from ferjax import models
    from ferjax import weights
    from ferjax.weights import saved

    options = {k: fields.pop(k) for k in OPTIONS if k in fields}
    path = os.path.expanduser(os.fspath(weights_path))
    meta = {}
    if saved.is_weights_dir(path):
      variables, meta = saved.load(path)
      fields = {**meta.get('fields', {}), **fields}
    elif os.path.isfile(path) and path.endswith(PYTORCH_EXTENSIONS):
      variables = None
    else:
      raise FileNotFoundError(
        f'{path!r} is neither a weights directory (python -m ferjax.weights '
        f'convert writes one) nor a PyTorch {"/".join(PYTORCH_EXTENSIONS)} '
        'file.'
      )
    num_classes = num_classes or meta.get('num_classes') or 7
    size = image_size or fields.get('image_size')
    size = size or MODEL_IMAGE_SIZES.get(model_name)
    if not size:
      raise ValueError(f'pass image_size: the input side of {model_name!r}.')
    model_fields = {
      k: v for k, v in fields.items() if k not in _CONVERTER_FIELDS
    }
    model = models.get_model(model_name, num_classes, **model_fields)
    if variables is None:
      variables = weights.from_torch(
        model_name, path, num_classes=num_classes, **fields
      )
    frames = getattr(model, 'num_frames', None)
    if clip_config is None and frames:
      clip_config = {'segments': frames, 'frames_per_segment': 1}
    clip = clips.parse_config(clip_config)
    aug = {**(augment_config or {}), 'size': size}
    shape = (1, *((clip.length,) if clip else ()), size, size, 3)
    _check_variables(model, variables, shape, path)
    return cls(
      model,
      variables,
      num_classes=num_classes,
      augment_config=aug,
      clip_config=clip,
      detector=detector,
      batch_size=batch_size,
      **options,
    )

  @property
  def example_shape(self) -> tuple[int, ...]:
    """One model input: (S, S, 3), or (U*V, S, S, 3) for clip models."""
    size = self.augment.size
    return (*((self.clip.length,) if self.clip else ()), size, size, 3)

  def preprocess(self, image: np.ndarray, face: detect.Face) -> np.ndarray:
    """The uint8 model input of one face: crop, then the eval transform.

    With the 'none' detector the image is the crop, as in the datasets.
    """
    if not isinstance(self.detector, detect.WholeImage):
      image = detect.align(image, face, self.margin, border=self.border)
    return augment.eval_transform(image, self.augment)

  def predict(
    self,
    inputs: Any,
    annotate_dir: str | None = None,
    progress: bool | None = None,
  ) -> pd.DataFrame:
    """Predicts every face of `inputs` (see the module docstring).

    Args:
      inputs: a path, a directory, a video, an array, or a list of them.
      annotate_dir: if set, each image is written there as PNG (videos as
        MJPG .avi of the sampled frames) with boxes and labels drawn by
        `ferjax.viz.annotate`; names follow the inputs' (under the
        directory's name for directory inputs).
      progress: show a tqdm bar over the inputs; None: for 20 or more
        inputs or any video, on a terminal.

    Returns:
      The table of the module docstring, one row per face.
    """
    from tqdm import tqdm

    items = media.expand_inputs(inputs)
    if progress is None:
      long = len(items) >= 20 or any(i.kind == 'video' for i in items)
      progress = None if long else False
    annotator = annotate_dir and _Annotator(annotate_dir, self.class_names)
    forward = functools.partial(self._forward, self._variables)
    batches = _Batches(forward, self.batch_size, self.example_shape)
    bar = tqdm(items, disable=None if progress is None else not progress)
    for item in bar:
      try:
        if item.kind == 'error':
          raise media.InputError(item.error)
        if item.kind == 'video':
          self._video_rows(item, batches, annotator)
          continue
        if item.kind == 'array':
          image = media.as_rgb(item.source)
        else:
          image = media.read_image(item.source, self.max_pixels)
      except Exception as e:  # noqa: BLE001 - decoders raise many types.
        batches.add(_row(item.name, error=_message(e)))
        continue
      self._frame_rows(item, image, None, batches, annotator)
    bar.close()
    batches.flush()
    return _table(batches.rows, self.class_names)

  def _faces(self, image: np.ndarray) -> list[detect.Face]:
    return detect.detect_resized(self.detector, image, self.max_detect_side)

  def _frame_rows(self, item, image, frame, batches, annotator, write=None):
    """Rows of one image or (static model) video frame."""
    try:
      faces = self._faces(image)
    except Exception as e:  # noqa: BLE001 - a user detector may fail.
      faces, error = [], f'face detection failed: {_message(e)}'
    else:
      error = None if faces else 'no face found'
    rows = []
    for i, face in enumerate(faces):
      crop = self.preprocess(image, face)
      if self.clip:  # A still image as a clip of identical frames.
        crop = np.broadcast_to(crop, self.example_shape)
      rows.append(_row(item.name, frame, i, face))
      batches.add(rows[-1], crop)
    if not faces:
      batches.add(_row(item.name, frame, error=error))
    if annotator:
      if write is None:
        write = functools.partial(annotator.image, item.out_name, image)
      else:
        write = functools.partial(write, image)
      batches.then(rows, write)

  def _video_rows(self, item, batches, annotator) -> None:
    fps, frames = media.read_video(item.source, self.stride, self.max_pixels)
    out = _VideoOut(annotator, item.out_name, fps / self.stride)
    count = collections.Counter()

    def counted():
      for frame in frames:
        count['frames'] += 1
        yield frame

    try:
      if self.clip:
        self._clip_rows(item, counted(), batches, out)
      else:
        for index, image in counted():
          self._frame_rows(item, image, index, batches, out, out.write)
    except Exception as e:  # noqa: BLE001 - a decoder failing mid-video.
      batches.add(_row(item.name, error=f'stopped: {_message(e)}'))
    if annotator:
      batches.then([], out.close)
    if not count['frames']:
      batches.add(_row(item.name, error='no frames could be read'))

  def _clip_rows(self, item, frames, batches, out) -> None:
    """Rows of a video for a clip model: one per window of U*V frames."""
    length = self.clip.length
    recent = collections.deque(maxlen=length)  # (index, face, crop, image)
    face, used, seen = None, 0, 0
    for index, image in frames:
      seen += 1
      found = self._faces(image)
      face = found[0] if found else face
      if face is None:  # Before the first face: not part of any window.
        out.write(image, [])
        continue
      crop = self.preprocess(image, face)
      recent.append((index, face, crop, image if out.on else None))
      used += 1
      if used % length == 0:
        self._add_clip(item, list(recent), batches, out)
    if face is None and seen:
      batches.add(_row(item.name, error='no face found in any frame'))
    elif used % length:
      window = list(recent)
      new = used % length
      if used < length:  # Loop a short video, as the eval pipeline does.
        c = self.clip
        order = clips.eval_indices(used, c.segments, c.frames_per_segment)
        window, new = [window[i] for i in order], None
      self._add_clip(item, window, batches, out, new)

  def _add_clip(self, item, window, batches, out, new=None) -> None:
    """One row for the clip `window`; annotates its last `new` frames."""
    first = min(window, key=lambda w: w[0])
    row = _row(item.name, first[0], 0, first[1])
    batches.add(row, np.stack([w[2] for w in window]))
    if out.on:
      fresh = {w[0]: w for w in (window[-new:] if new else window)}

      def write(rows):  # The window's row, with each frame's own box.
        for _, f, _, image in sorted(fresh.values(), key=lambda w: w[0]):
          box = dict(zip(_BOX, (f.x, f.y, f.w, f.h), strict=True))
          out.write(image, [{**rows[0], **box}])

      batches.then([row], write)


class _VideoOut:
  """An annotated video, opened at its first frame (or nothing)."""

  def __init__(self, annotator, out_name: str, fps: float):
    self.annotator, self.out_name, self.fps = annotator, out_name, fps
    self.on = bool(annotator)
    self._writer = None

  def write(self, image: np.ndarray, rows: list[dict]) -> None:
    if not self.on:
      return
    if self._writer is None:
      self._writer = self.annotator.video(self.out_name, self.fps, image)
    self._writer.write(self.annotator.draw(image, rows))

  def close(self, rows=None) -> None:
    if self._writer is not None:
      self._writer.release()

  def __bool__(self) -> bool:
    return self.on


def _message(e: BaseException) -> str:
  text = str(e) or type(e).__name__
  return text if len(text) <= 200 else text[:197] + '...'


def _check_variables(model, variables, shape, path: str) -> None:
  """Raises ValueError naming variables that do not fit `model`."""
  from flax import traverse_util

  rngs = {'params': jax.random.key(0), 'dropout': jax.random.key(0)}
  images = jax.ShapeDtypeStruct(shape, jnp.float32)
  expected = jax.eval_shape(
    functools.partial(model.init, train=False), rngs, images
  )
  want = traverse_util.flatten_dict(dict(expected), sep='/')
  have = traverse_util.flatten_dict(dict(variables), sep='/')
  bad = sorted(
    k for k in want if k not in have or np.shape(have[k]) != want[k].shape
  )
  if bad:
    raise ValueError(
      f'{path}: {len(bad)} variables missing or of another shape for this '
      f'model, e.g. {", ".join(bad[:5])}; check model_name, num_classes, '
      'image_size and the model fields.'
    )


# ----------------------------------------------------------------------- CLI


def _field(text: str) -> tuple[str, Any]:
  name, sep, value = text.partition('=')
  if not sep or not name:
    raise argparse.ArgumentTypeError(f'expected NAME=VALUE, got {text!r}')
  try:
    return name, ast.literal_eval(value)
  except (ValueError, SyntaxError):
    return name, value


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
    prog='python -m ferjax.predict',
    description='Predicts facial expressions in images, folders and videos.',
  )
  p.add_argument('inputs', nargs='+', metavar='INPUT', help='files or dirs')
  src = p.add_mutually_exclusive_group(required=True)
  src.add_argument('--workdir', help='a ferjax training run')
  src.add_argument('--weights', help='a converted weights dir or a .pth')
  p.add_argument('--model', help='registry name, with --weights')
  p.add_argument('--num_classes', type=int)
  p.add_argument('--image_size', type=int)
  p.add_argument(
    '--field', type=_field, action='append', default=[], metavar='NAME=VALUE'
  )
  p.add_argument('--out', help='results .csv or .json (default: CSV on stdout)')
  p.add_argument('--detector', default='haar', choices=detect.list_detectors())
  p.add_argument('--stride', type=int, default=1, help='video frame stride')
  p.add_argument('--batch_size', type=int, default=32)
  p.add_argument('--margin', type=float, help='crop margin per side')
  p.add_argument('--annotate_dir', help='write annotated images here')
  return p


def _write(table: pd.DataFrame, out: str | None) -> None:
  if out is None:
    table.to_csv(sys.stdout, index=False)
  elif out.lower().endswith('.json'):  # Re-dumped: pandas escapes '/'.
    records = json.loads(table.to_json(orient='records'))
    with open(out, 'w') as f:
      json.dump(records, f, indent=2)
  else:
    table.to_csv(out, index=False)


def main(argv: Iterable[str] | None = None) -> int:
  """Command-line entry point; returns the exit status (see --help)."""
  parser = _parser()
  args = parser.parse_args(argv)
  if args.out and not args.out.lower().endswith(('.csv', '.json')):
    parser.error(f'--out {args.out}: use a .csv or .json file name')
  if args.weights and not args.model:
    parser.error('--weights needs --model (the registry name)')
  options = {'detector': args.detector, 'batch_size': args.batch_size}
  options['stride'] = args.stride
  if args.margin is not None:
    options['margin'] = args.margin
  try:
    if args.workdir:
      predictor = Predictor.from_workdir(args.workdir, **options)
    else:
      predictor = Predictor.from_weights(
        args.model,
        args.weights,
        args.num_classes,
        args.image_size,
        **options,
        **dict(args.field),
      )
  except (OSError, ValueError, TypeError, ImportError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  table = predictor.predict(args.inputs, annotate_dir=args.annotate_dir)
  _write(table, args.out)
  ok = table['error'].isna()
  print(
    f'{table["input"].nunique()} inputs: {int(ok.sum())} predictions, '
    f'{int((~ok).sum())} errors' + (f' -> {args.out}' if args.out else ''),
    file=sys.stderr,
  )
  return 0 if ok.any() else 1


if __name__ == '__main__':
  sys.exit(main())

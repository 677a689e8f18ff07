"""`Predictor`: a model, its eval preprocessing and a face detector.

The package docstring (`ferjax.predict`) describes inputs, crops, batching
and the table.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ferjax import models
from ferjax.data import augment
from ferjax.data import clips
from ferjax.faces import crops
from ferjax.faces import detect
from ferjax.predict import annotate
from ferjax.predict import loading
from ferjax.predict import media
from ferjax.predict import rows
from ferjax.predict import tracking
from ferjax.predict import windows

# Predictor fields that from_weights does not pass on as model fields.
OPTIONS = (
  'crop',
  'margin',
  'border',
  'stride',
  'max_pixels',
  'max_detect_side',
)


def _probabilities(model, variables, images):
  """Class probabilities of a uint8 batch (the jitted forward pass)."""
  x = images.astype(jnp.float32) / 255.0
  logits = model.apply(variables, x, train=False)['logits']
  return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)


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
    detector: 'auto' (MTCNN, or 'none' for a crop style of whole
      frames), a `ferjax.faces.detect` name ('mtcnn', 'haar',
      None/'none') or a callable.
    batch_size: faces (or clips) per forward pass; the last is padded.
    crop: how faces are cut out: a `ferjax.faces.crops` style (name or
      `CropStyle`), the training data's (`from_workdir` and
      `from_weights` pass it).
    margin: if set, replaces the crop style's margin (per side, as a
      fraction of the box).
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
    detector: Any = 'auto',
    batch_size: int = 32,
    crop: str | crops.CropStyle = 'box',
    margin: float | None = None,
    border: str = 'constant',
    stride: int = 1,
    max_pixels: int | None = 100_000_000,
    max_detect_side: int | None = 1280,
  ):
    if batch_size < 1 or stride < 1:
      raise ValueError(f'batch_size={batch_size}, stride={stride}: need >= 1')
    self.model = model
    self.num_classes = num_classes
    self.class_names = rows.class_names(num_classes)
    self.augment = augment.parse_config(augment_config or {})
    self.clip = clips.parse_config(clip_config)
    self.crop = crops.get_style(crop)
    if margin is not None:
      self.crop = dataclasses.replace(self.crop, margin=margin)
    if detector == 'auto':  # Whole-frame datasets: the image is the input.
      detector = 'none' if self.crop.kind == 'frame' else 'mtcnn'
    self.detector = detect.get_detector(detector)
    self.batch_size = batch_size
    self.border, self.stride = border, stride
    self.max_pixels, self.max_detect_side = max_pixels, max_detect_side
    self._variables = jax.device_put(variables)
    self._forward = jax.jit(functools.partial(_probabilities, model))

  @property
  def margin(self) -> float:
    return self.crop.margin

  @classmethod
  def _from(cls, loaded: loading.Loaded, **options) -> Predictor:
    options.setdefault('crop', loaded.crop)
    if options.get('detector', 'auto') == 'auto':
      options['detector'] = loaded.detector
    return cls(
      loaded.model,
      loaded.variables,
      num_classes=loaded.num_classes,
      augment_config=loaded.augment_config,
      clip_config=loaded.clip_config,
      **options,
    )

  @classmethod
  def from_workdir(
    cls, workdir: str, detector: Any = 'auto', batch_size: int = 32, **options
  ) -> Predictor:
    """The best (else latest) checkpoint of a ferjax run.

    `options` are further `Predictor` fields; the crop defaults to the
    run's (`loading.run_crop`).
    """
    return cls._from(
      loading.from_workdir(workdir),
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
    detector: Any = 'auto',
    batch_size: int = 32,
    augment_config=None,
    clip_config=None,
    **fields,
  ) -> Predictor:
    """Converted weights (`python -m ferjax.weights convert`) or a .pth.

    The arguments are `loading.from_weights`'s, plus `detector`,
    `batch_size` and the `Predictor` fields in `OPTIONS`, which `fields`
    may hold next to the model fields.

    Raises:
      FileNotFoundError: no such weights.
      ValueError: the weights do not fit the model (naming the variables).
    """
    options = {k: fields.pop(k) for k in OPTIONS if k in fields}
    loaded = loading.from_weights(
      model_name,
      weights_path,
      num_classes,
      image_size,
      augment_config=augment_config,
      clip_config=clip_config,
      **fields,
    )
    return cls._from(
      loaded, detector=detector, batch_size=batch_size, **options
    )

  @property
  def example_shape(self) -> tuple[int, ...]:
    """One model input: (S, S, 3), or (U*V, S, S, 3) for clip models."""
    frames = self.clip.length if self.clip else 0
    return models.example_shape(self.augment.size, frames)

  def preprocess(self, image: np.ndarray, face: detect.Face) -> np.ndarray:
    """The uint8 model input of one face: crop, then the eval transform.

    With the 'none' detector the image is the crop, as in the datasets.
    """
    if not isinstance(self.detector, detect.WholeImage):
      image = crops.crop(image, face, self.crop, self.border)
    return augment.eval_transform(image, self.augment)

  def predict(
    self,
    inputs: Any,
    annotate_dir: str | None = None,
    progress: bool | None = None,
  ) -> pd.DataFrame:
    """Predicts every face of `inputs` (see the package docstring).

    Args:
      inputs: a path, a directory, a video, an array, or a list of them.
      annotate_dir: if set, each image is written there as PNG (videos as
        MJPG .avi of the sampled frames) with boxes and labels drawn by
        `ferjax.viz.annotate`; names follow the inputs' (under the
        directory's name for directory inputs).
      progress: show a tqdm bar over the inputs; None: for 20 or more
        inputs or any video, on a terminal.

    Returns:
      The table of the package docstring, one row per face.
    """
    from tqdm import tqdm

    items = media.expand_inputs(inputs)
    if progress is None:
      long = len(items) >= 20 or any(i.kind == 'video' for i in items)
      progress = None if long else False
    annotator = annotate_dir and annotate.Annotator(
      annotate_dir, self.class_names
    )
    forward = functools.partial(self._forward, self._variables)
    batches = rows.Batches(forward, self.batch_size, self.example_shape)
    bar = tqdm(items, disable=None if progress is None else not progress)
    for item in bar:
      try:
        if item.kind == 'error':
          raise media.InputError(item.error)
        if item.kind == 'video':
          self._video_rows(item, batches, annotator, progress)
          continue
        if item.kind == 'array':
          image = media.as_rgb(item.source)
        else:
          image = media.read_image(item.source, self.max_pixels)
      except Exception as e:  # noqa: BLE001 - decoders raise many types.
        batches.add(rows.row(item.name, error=rows.message(e)))
        continue
      self._frame_rows(item, image, None, batches, annotator)
    bar.close()
    batches.flush()
    return rows.table(batches.rows, self.class_names)

  def _faces(self, image: np.ndarray) -> list[detect.Face]:
    return detect.detect_resized(self.detector, image, self.max_detect_side)

  def _frame_rows(
    self, item, image, frame, batches, annotator, write=None, tracker=None
  ):
    """Rows of one image or (static model) video frame; a video's tracker
    numbers its faces, an image's are numbered largest first."""
    try:
      faces = self._faces(image)
    except Exception as e:  # noqa: BLE001 - a user detector may fail.
      faces, error = [], f'face detection failed: {rows.message(e)}'
    else:
      error = None if faces else 'no face found'
    numbers = tracker.update(faces)[0] if tracker else range(len(faces))
    found = []
    for number, face in zip(numbers, faces, strict=True):
      crop = self.preprocess(image, face)
      if self.clip:  # A still image as a clip of identical frames.
        crop = np.broadcast_to(crop, self.example_shape)
      found.append(rows.row(item.name, frame, number, face))
      batches.add(found[-1], crop)
    if not faces:
      batches.add(rows.row(item.name, frame, error=error))
    if annotator:
      if write is None:
        write = functools.partial(annotator.image, item.out_name, image)
      else:
        write = functools.partial(write, image)
      batches.then(found, write)

  def _video_rows(self, item, batches, annotator, progress) -> None:
    """Rows of a video: its faces tracked, a progress bar over frames."""
    from tqdm import tqdm

    video = media.read_video(item.source, self.stride, self.max_pixels)
    out = annotate.VideoOut(annotator, item.out_name, video.fps / self.stride)
    tracker = tracking.IoUTracker()
    count = collections.Counter()
    bar = tqdm(
      total=video.sampled or None,
      desc=item.out_name,
      unit='frame',
      leave=False,
      disable=None if progress is None else not progress,
    )

    def counted():
      for frame in video.frames:
        count['frames'] += 1
        bar.update()
        yield frame

    try:
      if self.clip:
        windows.clip_rows(
          item,
          counted(),
          batches,
          out,
          clip=self.clip,
          find_faces=self._faces,
          preprocess=self.preprocess,
          tracker=tracker,
        )
      else:
        for index, image in counted():
          self._frame_rows(item, image, index, batches, out, out.write, tracker)
    except Exception as e:  # noqa: BLE001 - a decoder failing mid-video.
      batches.add(rows.row(item.name, error=f'stopped: {rows.message(e)}'))
    bar.close()
    if annotator:
      batches.then([], out.close)
    if not count['frames']:
      batches.add(rows.row(item.name, error='no frames could be read'))

"""Input-pipeline throughput: JPEG decode + augment, and a decoded cache.

Two sources feed ferjax's own training pipeline
(`ferjax.data.pipeline.train_dataset`: shuffle, the config's augmentation,
batch, prefetch, optional grain worker processes):

  jpeg   a small TFDS dataset (array_record) of rendered faces stored as
         JPEG, built on the fly in a temporary directory, in the layout of
         the real datasets: an 'image' feature (RAF-DB's 100 px aligned
         faces) or, for video models, a 'frames' sequence whose frames stay
         encoded until sampled (DFEW's 224 px frames). Every batch decodes
         and augments its images.
  cache  the same examples decoded once: for images, ferjax's own decoded
         cache (`config.data.decoded_cache`, memory-mapped arrays on local
         disk); for clips, uint8 arrays held in memory. Every batch only
         augments.
  jpeg_on_device  the JPEG source with `config.augment.on_device`: the host
         decodes and draws the augmentation's parameters, the train step
         applies them (timed on its own as 'device_augment'). Skipped, with
         the reason, for configs the device path cannot run (RandAugment).
  cache_on_device  both: the host only copies decoded images and draws.

Each is timed for a few seconds after a warm-up that drains the prefetch
buffer. Besides wall-clock examples/s, the CPU seconds spent meanwhile by
this process and its worker processes give examples per CPU-second, i.e.
per core, and so how many cores keep a given train step fed.
"""

import contextlib
import copy
import dataclasses
import functools
import gc
import io
import tempfile
import time
from typing import Any

import cv2
import jax
import numpy as np
import psutil
import tensorflow_datasets as tfds
from absl import logging

from ferjax.data import clips as clips_lib
from ferjax.data import decoded_cache
from ferjax.data import device_augment
from ferjax.data import pipeline
from ferjax.labels import EXPRESSIONS_7
from tfds_builders.synthetic_fer import render

JPEG_QUALITY = 90
# Distinct rendered faces; examples reuse them (decoding costs the same).
_POOL = 32


@dataclasses.dataclass(kw_only=True)
class JpegFacesConfig(tfds.core.BuilderConfig):
  """Size and shape of the benchmark's JPEG dataset.

  Attributes:
    image_size: side of the stored square images or frames, in pixels.
    num_examples: number of training examples.
    num_frames: frames per clip; 0 stores single images.
  """

  image_size: int = 100
  num_examples: int = 256
  num_frames: int = 0


class JpegFaces(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Rendered faces stored as JPEG, one 'train' split."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Benchmark data.'}

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    image = tfds.features.Image(
      shape=(cfg.image_size, cfg.image_size, 3), encoding_format='jpeg'
    )
    features = {'label': tfds.features.ClassLabel(names=EXPRESSIONS_7)}
    if cfg.num_frames:
      features['frames'] = tfds.features.Sequence(image)
      features['num_frames'] = tfds.features.Scalar(dtype=np.int32)
    else:
      features['image'] = image
    return self.dataset_info_from_configs(
      features=tfds.features.FeaturesDict(features)
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'train': self._generate_examples()}

  def _generate_examples(self):
    cfg = self.builder_config
    pool = [_jpeg(i, cfg.image_size) for i in range(_POOL)]
    for index in range(cfg.num_examples):
      example = {'label': index % len(EXPRESSIONS_7)}
      if cfg.num_frames:
        example['frames'] = [
          pool[(index * 7 + t) % _POOL] for t in range(cfg.num_frames)
        ]
        example['num_frames'] = cfg.num_frames
      else:
        example['image'] = pool[index % _POOL]
      yield index, example


def _jpeg(index: int, size: int) -> bytes:
  bgr = render.render_example(0, 0, index, index % len(EXPRESSIONS_7), size)
  ok, data = cv2.imencode('.jpg', bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
  if not ok:
    raise RuntimeError(f'JPEG encoding of face {index} failed.')
  return data.tobytes()


def build_jpeg_source(
  data_dir: str, image_size: int, num_examples: int, num_frames: int = 0
):
  """Builds the JPEG dataset in `data_dir`; returns its 'train' source.

  Clip frames are left encoded (as `pipeline.data_source` leaves them), so
  the pipeline decodes only the frames it samples.
  """
  name = f'{"clip" if num_frames else "image"}{image_size}_{num_examples}'
  config = JpegFacesConfig(
    name=name,
    image_size=image_size,
    num_examples=num_examples,
    num_frames=num_frames,
  )
  verbosity = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)  # TFDS warns of the custom config.
  try:
    tfds.disable_progress_bar()
    builder = JpegFaces(
      config=config, data_dir=data_dir, file_format='array_record'
    )
    with contextlib.redirect_stdout(io.StringIO()):  # TFDS prints progress.
      builder.download_and_prepare()
  finally:
    logging.set_verbosity(verbosity)
  decoders = {'frames': pipeline._EncodedFrames()} if num_frames else None
  return builder.as_data_source(split='train', decoders=decoders)


@dataclasses.dataclass(frozen=True)
class DecodedClips:
  """Pre-decoded uint8 clips (N, T, H, W, 3), held in memory."""

  arrays: np.ndarray
  labels: np.ndarray

  def __len__(self) -> int:
    return len(self.labels)

  def __getitem__(self, index) -> dict:
    return {'frames': self.arrays[index], 'label': int(self.labels[index])}

  def __repr__(self) -> str:
    return f'DecodedClips({self.arrays.shape})'


def decode_clips(source) -> DecodedClips:
  """Every example of a JPEG clip source, decoded once into one array."""
  records = [source[i] for i in range(len(source))]
  labels = np.array([r['label'] for r in records], np.int32)
  arrays = np.stack(
    [
      clips_lib.take_frames(r['frames'], np.arange(len(r['frames'])))
      for r in records
    ]
  )
  return DecodedClips(arrays, labels)


def _cpu_seconds(proc: psutil.Process) -> dict[int, float]:
  """CPU seconds (user + system) so far of `proc` and each descendant."""
  out = {}
  for p in [proc, *proc.children(recursive=True)]:
    try:
      t = p.cpu_times()
    except psutil.Error:  # Exited meanwhile.
      continue
    out[p.pid] = t.user + t.system
  return out


def measure(
  config, source, labels, *, workers: int, seconds: float
) -> dict[str, Any]:
  """Examples/s of the training pipeline on `source`, and per CPU-second.

  Args:
    config: the run's config (augmentation, batch, clip sampling); its
      `data.worker_count` is replaced by `workers`.
    source: a random-access source of records.
    labels: the labels of `source` (for class-balanced sampling).
    workers: grain worker processes (0: threads of this process).
    seconds: how long to time, after the warm-up.
  """
  config = copy.deepcopy(config)
  config.data.worker_count = workers
  ds, _ = pipeline.train_dataset(config, source=source, labels=labels)
  it = iter(ds)
  batch = config.batch_size
  for _ in range(config.data.get('prefetch', 2) + 2):  # Drain the buffer.
    next(it)
  proc = psutil.Process()
  cpu_before = _cpu_seconds(proc)
  start = time.perf_counter()
  batches = 0
  while batches < 2 or time.perf_counter() - start < seconds:
    next(it)
    batches += 1
  wall = time.perf_counter() - start
  cpu_after = _cpu_seconds(proc)
  cpu = sum(t - cpu_before.get(pid, 0.0) for pid, t in cpu_after.items())
  del it, ds
  gc.collect()
  examples = batches * batch
  return {
    'workers': workers,
    'read_threads': config.data.get('read_threads', 1),
    'batches': batches,
    'wall_s': wall,
    'examples_per_s': examples / wall,
    'cpu_s': cpu,
    'cores_busy': cpu / wall,
    'examples_per_cpu_s': examples / cpu if cpu > 0 else None,
  }


def run(
  config,
  *,
  image_size: int,
  num_examples: int,
  workers: int = 0,
  seconds: float = 3.0,
) -> dict[str, Any]:
  """Times the JPEG and the cached source, in-process and with `workers`.

  Returns:
    {'source': what was built, 'build_s': its build time, 'jpeg': [...],
    'cache': [...]}, one `measure` result per worker count.
  """
  clip = pipeline.clip_config(config)
  num_frames = max(clip.length + clip.length // 2, 2) if clip else 0
  counts = sorted({0, workers})
  with tempfile.TemporaryDirectory(prefix='ferjax-bench-') as data_dir:
    start = time.perf_counter()
    jpeg = build_jpeg_source(data_dir, image_size, num_examples, num_frames)
    build_s = time.perf_counter() - start
    if clip:
      cache = decode_clips(jpeg)
      labels, cache_bytes = cache.labels, cache.arrays.nbytes
    else:
      cache = decoded_cache.open_or_build(
        jpeg, name='jpeg_faces', split='train', cache_dir=data_dir
      )
      labels, cache_bytes = cache.field('label'), cache.info['image_bytes']
    results = {
      'source': {
        'format': 'jpeg',
        'jpeg_quality': JPEG_QUALITY,
        'image_size': image_size,
        'num_examples': num_examples,
        'frames_stored': num_frames,
        'cache_bytes': int(cache_bytes),
      },
      'build_s': build_s,
    }
    for name, source in (('jpeg', jpeg), ('cache', cache)):
      results[name] = [
        measure(config, source, labels, workers=w, seconds=seconds)
        for w in counts
      ]
    on_device, why_not = on_device_config(config)
    if on_device is None:
      for name in ('jpeg_on_device', 'cache_on_device'):
        results[name] = {'skipped': why_not}
    else:
      try:
        for name, source in (('jpeg', jpeg), ('cache', cache)):
          results[f'{name}_on_device'] = [
            measure(on_device, source, labels, workers=w, seconds=seconds)
            for w in counts
          ]
      except ValueError as e:  # Sources the device path refuses.
        for name in ('jpeg_on_device', 'cache_on_device'):
          results[name] = {'skipped': str(e)}
      else:
        results['device_augment'] = time_device_augment(on_device, jpeg, labels)
  return results


def on_device_config(config):
  """(`config` with `augment.on_device`, None) or (None, why it cannot)."""
  config = copy.deepcopy(config)
  with config.unlocked():
    config.augment.on_device = True
  try:
    pipeline.augment_config(config)
  except ValueError as e:
    return None, str(e)
  return config, None


def time_device_augment(config, source, labels, repeats: int = 5) -> dict:
  """Seconds per batch of the train step's on-device augmentation.

  One batch of the on-device pipeline is put on the devices; the jitted
  `device_augment.batch_images` runs `repeats` times and waits once.
  """
  ds, _ = pipeline.train_dataset(config, source=source, labels=labels)
  batch = jax.device_put(next(iter(ds)))
  augment = jax.jit(
    functools.partial(
      device_augment.batch_images, cfg=pipeline.augment_config(config)
    )
  )
  jax.block_until_ready(augment(batch))
  start = time.perf_counter()
  jax.block_until_ready([augment(batch) for _ in range(repeats)])
  per_batch = (time.perf_counter() - start) / repeats
  return {
    'batch': config.batch_size,
    'seconds_per_batch': per_batch,
    'examples_per_s': config.batch_size / per_batch,
  }

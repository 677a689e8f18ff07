"""A decoded copy of an image split on local disk, read memory-mapped.

With `config.data.decoded_cache=True` the first run decodes every image of
each split it reads once (in threads) and writes them, with the numeric
features (label, soft targets, ...), as uint8/NumPy arrays under
`config.data.cache_dir` (default `~/.cache/ferjax/decoded`). Every later
epoch, run, seed and fold that reads the same split maps those files instead
of decoding JPEGs or PNGs: about twice the examples per CPU core
(docs/performance.md), and grain's worker processes share one copy through
the OS page cache rather than each holding its own. RAF-DB's 15,339 aligned
100 px faces take 460 MB; FERPlus 48 px grayscale 80 MB.

A cache is one directory per split, keyed by the dataset's location, its
version and the time it was built, so rebuilding the dataset starts a new
cache. It is written into a temporary directory and renamed into place at
the end: a build that fails or is killed never leaves a cache that looks
complete. Fixed-size images are one (N, H, W, C) array; images of varying
size (AffectNet crops) are one flat byte file with offsets and shapes.
Text features (file names, ids) are not cached.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import shutil
import tempfile

import numpy as np
from absl import logging

from ferjax import runtime

_INFO = 'info.json'
_CHUNK = 512  # Records decoded per batch of thread work.
_SAMPLE = 64  # Records decoded to estimate a varying-size split's bytes.


class DecodedCacheError(ValueError):
  """The decoded cache cannot be used as configured."""


def default_cache_dir() -> str:
  """$XDG_CACHE_HOME/ferjax/decoded, or ~/.cache/ferjax/decoded."""
  return runtime.cache_root('decoded')


def _built_at(data_dir: str) -> int:
  try:
    return os.stat(os.path.join(data_dir, 'dataset_info.json')).st_mtime_ns
  except OSError:
    return 0


def cache_path(source, split: str, name: str, cache_dir: str | None) -> str:
  """Where the decoded copy of `source` (split `split` of `name`) lives."""
  info = source.dataset_info
  data_dir = os.path.abspath(str(info.data_dir))
  key = hashlib.sha1(
    f'{data_dir}|{split}|{len(source)}|{_built_at(data_dir)}'.encode()
  ).hexdigest()[:12]
  safe_split = split.replace('/', '_').replace(':', '_').replace('[', '_')
  return os.path.join(
    os.path.expanduser(cache_dir or default_cache_dir()),
    name.replace('/', os.sep),
    str(info.version),
    f'{safe_split}-{key}',
  )


def _numeric_fields(record: dict) -> list[str]:
  """The non-image fields of `record` that are numbers or number arrays."""
  return sorted(
    k
    for k, v in record.items()
    if k != 'image' and np.asarray(v).dtype.kind in 'biuf'
  )


class DecodedSource:
  """Random access to a built cache: records {'image', numeric features}.

  Pickles as its path, so grain's worker processes map the same files.
  """

  def __init__(self, path: str):
    self.path = path
    with open(os.path.join(path, _INFO)) as f:
      self.info = json.load(f)
    self._arrays = None

  def __getstate__(self):
    return {'path': self.path, 'info': self.info}

  def __setstate__(self, state):
    self.__dict__.update(state, _arrays=None)

  def _load(self) -> dict:
    if self._arrays is None:
      arrays = {
        name: np.load(os.path.join(self.path, f'{name}.npy'), mmap_mode='r')
        for name in self.info['fields']
      }
      if self.info['image_layout'] == 'fixed':
        arrays['image'] = np.load(
          os.path.join(self.path, 'image.npy'), mmap_mode='r'
        )
      else:
        arrays['image_bytes'] = np.memmap(
          os.path.join(self.path, 'image.bin'), np.uint8, mode='r'
        )
        for name in ('image_offsets', 'image_shapes'):
          arrays[name] = np.load(os.path.join(self.path, f'{name}.npy'))
      self._arrays = arrays
    return self._arrays

  def __len__(self) -> int:
    return self.info['count']

  def field(self, name: str) -> np.ndarray:
    """A numeric feature of every record, e.g. the labels, memory-mapped."""
    return self._load()[name]

  def _image(self, arrays: dict, index: int) -> np.ndarray:
    if self.info['image_layout'] == 'fixed':
      return np.array(arrays['image'][index])
    lo, hi = arrays['image_offsets'][index : index + 2]
    shape = tuple(arrays['image_shapes'][index])
    return np.array(arrays['image_bytes'][lo:hi]).reshape(shape)

  def __getitem__(self, index) -> dict:
    index = int(index)
    if not 0 <= index < len(self):
      raise IndexError(f'index {index} out of range for {len(self)} records')
    arrays = self._load()
    record = {'image': self._image(arrays, index)}
    for name in self.info['fields']:
      record[name] = np.array(arrays[name][index])
    return record

  def __repr__(self) -> str:
    return f'DecodedSource({self.path!r}, {len(self)} records)'


def _decoded(source, indices, pool) -> list[dict]:
  return list(pool.map(source.__getitem__, indices))


def _estimate_bytes(source, fixed_shape, pool) -> int:
  if fixed_shape:
    return len(source) * int(np.prod(fixed_shape))
  sample = np.linspace(0, len(source) - 1, min(_SAMPLE, len(source)))
  sizes = [
    r['image'].nbytes for r in _decoded(source, sample.astype(int), pool)
  ]
  return int(np.mean(sizes) * len(source))


def _check_room(what: str, nbytes: int, max_gb: float, directory: str):
  gb = nbytes / 1e9
  if gb > max_gb:
    raise DecodedCacheError(
      f'{what} decodes to about {gb:.1f} GB, more than '
      f'config.data.decoded_cache_max_gb={max_gb:g}; raise that limit, or '
      'set config.data.decoded_cache=False to decode on the fly.'
    )
  free = shutil.disk_usage(directory).free
  if nbytes > 0.9 * free:
    raise DecodedCacheError(
      f'{what} decodes to about {gb:.1f} GB but {directory} has '
      f'{free / 1e9:.1f} GB free; point config.data.cache_dir at a larger '
      'local disk, or set config.data.decoded_cache=False.'
    )


def _fixed_image_shape(source) -> tuple[int, ...] | None:
  shape = tuple(source.dataset_info.features['image'].shape)
  if None in shape:
    return None
  return shape if len(shape) == 3 else (*shape, 1)


class _FixedImages:
  """Writes same-size images into one (N, H, W, C) .npy array."""

  def __init__(self, tmp: str, n: int, shape: tuple[int, ...]):
    self.array = np.lib.format.open_memmap(
      os.path.join(tmp, 'image.npy'), 'w+', np.uint8, (n, *shape)
    )

  def put(self, i: int, image: np.ndarray) -> None:
    self.array[i] = image

  def finish(self) -> dict:
    self.array.flush()
    return {'image_layout': 'fixed', 'image_bytes': int(self.array.nbytes)}


class _VaryingImages:
  """Appends images of any size to one byte file, with offsets and shapes."""

  def __init__(self, tmp: str, n: int):
    self.tmp = tmp
    self.file = open(os.path.join(tmp, 'image.bin'), 'wb')  # noqa: SIM115
    self.offsets = np.zeros(n + 1, np.int64)
    self.shapes = np.zeros((n, 3), np.int32)

  def put(self, i: int, image: np.ndarray) -> None:
    self.file.write(np.ascontiguousarray(image).tobytes())
    self.offsets[i + 1], self.shapes[i] = (
      self.offsets[i] + image.size,
      image.shape,
    )

  def finish(self) -> dict:
    self.file.close()
    np.save(os.path.join(self.tmp, 'image_offsets.npy'), self.offsets)
    np.save(os.path.join(self.tmp, 'image_shapes.npy'), self.shapes)
    return {'image_layout': 'varying', 'image_bytes': int(self.offsets[-1])}


def _write(source, tmp: str, fixed_shape, pool) -> dict:
  """Decodes `source` into `tmp`; returns the cache's info."""
  n = len(source)
  first = source[0]
  fields = _numeric_fields(first)
  columns = {
    name: np.lib.format.open_memmap(
      os.path.join(tmp, f'{name}.npy'),
      mode='w+',
      dtype=np.asarray(first[name]).dtype,
      shape=(n, *np.shape(first[name])),
    )
    for name in fields
  }
  images = (
    _FixedImages(tmp, n, fixed_shape) if fixed_shape else _VaryingImages(tmp, n)
  )
  try:
    for start in range(0, n, _CHUNK):
      indices = range(start, min(start + _CHUNK, n))
      for i, record in zip(
        indices, _decoded(source, indices, pool), strict=True
      ):
        image = np.asarray(record['image'], np.uint8)
        images.put(i, image[..., None] if image.ndim == 2 else image)
        for name in fields:
          columns[name][i] = record[name]
      logging.log_every_n_seconds(
        logging.INFO, 'Decoded %d of %d images.', 30, indices.stop, n
      )
  finally:
    info = images.finish()
  for column in columns.values():
    column.flush()
  return {'count': n, 'fields': fields, **info}


def open_or_build(
  source,
  *,
  name: str,
  split: str,
  cache_dir: str | None = None,
  max_gb: float = 32.0,
  threads: int = 0,
) -> DecodedSource:
  """The decoded cache of `source`, built first if there is none yet.

  Args:
    source: a TFDS data source of an image dataset (an 'image' feature).
    name: the dataset as TFDS names it, e.g. 'rafdb' or 'affectnet/7class'.
    split: the split `source` reads.
    cache_dir: the caches' root; None: `default_cache_dir()`.
    max_gb: refuse to build a cache larger than this.
    threads: decoding threads; 0: one per CPU.

  Raises:
    DecodedCacheError: the split would exceed `max_gb` or the free disk.
  """
  path = cache_path(source, split, name, cache_dir)
  if os.path.isfile(os.path.join(path, _INFO)):
    return DecodedSource(path)
  what = f'{name} {split} ({len(source)} images)'
  parent = os.path.dirname(path)
  os.makedirs(parent, exist_ok=True)
  threads = threads or os.cpu_count() or 1
  fixed_shape = _fixed_image_shape(source)
  with concurrent.futures.ThreadPoolExecutor(threads) as pool:
    nbytes = _estimate_bytes(source, fixed_shape, pool)
    _check_room(what, nbytes, max_gb, parent)
    logging.info(
      'Decoding %s once into %s (%.2f GB).', what, path, nbytes / 1e9
    )
    tmp = tempfile.mkdtemp(prefix=os.path.basename(path) + '.tmp-', dir=parent)
    try:
      info = _write(source, tmp, fixed_shape, pool)
    except BaseException:
      shutil.rmtree(tmp, ignore_errors=True)
      raise
  info.update(
    dataset=name, split=split, data_dir=str(source.dataset_info.data_dir)
  )
  try:
    with open(os.path.join(tmp, _INFO), 'w') as f:
      json.dump(info, f, indent=2)
    os.rename(tmp, path)
  except OSError:
    shutil.rmtree(tmp, ignore_errors=True)
    if not os.path.isfile(os.path.join(path, _INFO)):
      raise
    # Another process built the same cache first; theirs is complete.
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return DecodedSource(path)

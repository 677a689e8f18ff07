"""Converted weights on disk: a directory any ferjax install can read.

    DIR/variables.npz       every leaf, keyed 'params/conv1/kernel', ...
    DIR/ferjax_weights.json {model, num_classes, fields, source, ...}

Plain numpy and JSON, so reading needs neither torch nor orbax:
`python -m ferjax.weights convert` writes one from a PyTorch checkpoint
once, and `config.init_from=DIR` starts training from it.

`save` writes into a temporary directory beside `out_dir` and renames it at
the end, so an interrupted or failed save leaves nothing at `out_dir`.
"""

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from typing import Any

import numpy as np
from flax import traverse_util

ARRAYS = 'variables.npz'
META = 'ferjax_weights.json'
_SEP = '/'


def is_weights_dir(path: str | os.PathLike) -> bool:
  """Whether `path` is a directory written by `save`."""
  path = os.fspath(path)
  return os.path.isfile(os.path.join(path, META)) and os.path.isfile(
    os.path.join(path, ARRAYS)
  )


def check_empty_target(out_dir: str) -> None:
  """Raises FileExistsError unless `out_dir` is absent or an empty dir."""
  if os.path.lexists(out_dir) and not (
    os.path.isdir(out_dir) and not os.listdir(out_dir)
  ):
    raise FileExistsError(
      f'{out_dir!r} already exists and is not an empty directory; choose a '
      'new output directory or remove it.'
    )


def save(
  variables: Mapping[str, Any], out_dir: str | os.PathLike, meta: dict
) -> str:
  """Writes `variables` and `meta` to `out_dir`, atomically.

  Args:
    variables: {'params': ..., 'batch_stats': ...} nested dicts of arrays.
    out_dir: the directory to create; it must not exist or be empty.
    meta: JSON-serialisable facts about the weights (model name, source).

  Returns:
    The absolute path of the written directory.

  Raises:
    FileExistsError: `out_dir` exists and is not an empty directory.
    ValueError: a key contains '/', which the flat format reserves.
  """
  out_dir = os.path.abspath(os.fspath(out_dir))
  check_empty_target(out_dir)
  flat = traverse_util.flatten_dict(dict(variables))
  arrays = {}
  for key, value in flat.items():
    if any(_SEP in part for part in key):
      raise ValueError(f'Variable key {key} contains {_SEP!r}.')
    arrays[_SEP.join(key)] = np.asarray(value)
  parent = os.path.dirname(out_dir)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(dir=parent, prefix=f'.{os.path.basename(out_dir)}.')
  try:
    with open(os.path.join(tmp, ARRAYS), 'wb') as f:
      np.savez(f, **arrays)
    with open(os.path.join(tmp, META), 'w') as f:
      json.dump(meta, f, indent=2, sort_keys=True)
    check_empty_target(out_dir)  # Another writer may have come first.
    # rename replaces an empty directory and refuses a non-empty one.
    os.rename(tmp, out_dir)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return out_dir


def read_meta(path: str | os.PathLike) -> dict:
  """The facts `save` wrote beside the arrays (model, fields, source)."""
  with open(os.path.join(os.fspath(path), META)) as f:
    return json.load(f)


def load(path: str | os.PathLike) -> tuple[dict, dict]:
  """Reads a directory written by `save`.

  Args:
    path: the directory.

  Returns:
    (variables as nested dicts of numpy arrays, meta).

  Raises:
    FileNotFoundError: `path` is not such a directory.
  """
  path = os.fspath(path)
  if not is_weights_dir(path):
    raise FileNotFoundError(
      f'{path!r} is not a converted-weights directory (it needs {ARRAYS} and '
      f'{META}); write one with python -m ferjax.weights convert.'
    )
  meta = read_meta(path)
  with np.load(os.path.join(path, ARRAYS), allow_pickle=False) as data:
    flat = {tuple(key.split(_SEP)): data[key] for key in data.files}
  return traverse_util.unflatten_dict(flat), meta

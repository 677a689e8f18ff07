"""Run files on process 0: metrics.jsonl, TensorBoard events, config.json,
results.json.

metrics.jsonl holds one JSON object per line with the step and the values a
run produces deterministically (losses, accuracies, learning rate, eval
metrics), so a resumed run logs exactly what an uninterrupted one does.
Throughput and timings go to TensorBoard and the console only.
"""

import contextlib
import errno
import json
import logging as std_logging
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import tensorboardX
import tqdm
from absl import logging

METRICS_FILE = 'metrics.jsonl'
RESULTS_FILE = 'results.json'
CONFIG_FILE = 'config.json'
# The directories a run writes into its workdir, besides the workdir itself.
RUN_DIRS = ('checkpoints', 'best', 'plots', 'tb')
# What a failed write of a training run tells the user to do.
RESUME_FIX = (
  'free space (or fix permissions) and rerun the same command: it resumes '
  'from the last checkpoint'
)


class WriteError(OSError):
  """A file could not be written: a full disk, a size limit, permissions."""


def cannot_write(path: str, error: BaseException, fix: str = RESUME_FIX):
  """A `WriteError` naming `path`, the reason and `fix`, for `raise from`."""
  reason = getattr(error, 'strerror', None) or str(error)
  return WriteError(f'cannot write {path}: {reason}; {fix}.')


def _existing(path: str) -> str:
  """`path`, or its nearest ancestor that exists."""
  while not os.path.lexists(path) and os.path.dirname(path) != path:
    path = os.path.dirname(path)
  return path


def check_writable(directory: str) -> None:
  """Raises OSError unless a file can be created in `directory` (or, where
  it does not exist yet, in the ancestor it would be created in)."""
  target = _existing(directory)
  if not os.path.isdir(target):
    raise NotADirectoryError(errno.ENOTDIR, f'{target} is not a directory')
  with tempfile.NamedTemporaryFile(dir=target):
    pass


def prepare_workdir(workdir: str) -> str:
  """Proves the workdir and every directory a run writes there writable.

  Runs before any work starts (an unwritable checkpoints/ would otherwise
  fail only at the first save, minutes or hours in) and creates nothing, so
  a run refused by a later check leaves no trace. Returns the absolute path.
  """
  workdir = os.path.abspath(os.path.expanduser(workdir))
  for sub in ('', *RUN_DIRS):
    try:
      check_writable(os.path.join(workdir, sub))
    except OSError as e:
      what = f'{os.path.join(workdir, sub)} in ' if sub else ''
      raise PermissionError(
        f'{what}--workdir={workdir} is not writable ({e.strerror}); fix its '
        'permissions or pass a directory you can write to.'
      ) from e
  return workdir


def write_atomic(path: str, write: Callable[[Any], None]) -> str:
  """Writes a file through a temporary name in its folder, then renames it.

  Args:
    path: the target file; its folder is created if needed.
    write: called with the open binary temporary file.

  Returns:
    `path`. On any error the temporary file is removed and the target is
    left as it was.
  """
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(
    dir=directory, prefix=f'.{os.path.basename(path)}.', suffix='.tmp'
  )
  try:
    with os.fdopen(fd, 'wb') as f:
      write(f)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise
  return path


def write_text(path: str, text: str, fix: str = RESUME_FIX) -> str:
  """Writes `text` atomically; a failure is a `WriteError` naming `path`."""
  try:
    return write_atomic(path, lambda f: f.write(text.encode()))
  except OSError as e:
    raise cannot_write(path, e, fix) from e


def write_json(path: str, value: Any, fix: str = RESUME_FIX) -> str:
  """Writes `value` as indented JSON, atomically (see `write_text`)."""
  return write_text(path, json.dumps(value, indent=2) + '\n', fix)


def read_json(path: str) -> Any:
  """A JSON file; a damaged one is a ValueError naming it."""
  with open(path, encoding='utf-8', errors='replace') as f:
    text = f.read()
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    raise ValueError(
      f'{path} is damaged (not JSON: {e.msg} at line {e.lineno}); restore '
      'it from a copy, or rerun what wrote it.'
    ) from None


def read_records(path: str) -> list[dict]:
  """The records of a JSON-lines file, read tolerantly.

  A torn last line (an append cut short by a full disk or a kill) is
  dropped with a warning naming the file; a bad line before the last is a
  ValueError naming the file and line.
  """
  if not os.path.exists(path):
    return []
  with open(path, encoding='utf-8', errors='replace') as f:
    lines = [(i, ln) for i, ln in enumerate(f, start=1) if ln.strip()]
  records = []
  for i, line in lines:
    try:
      record = json.loads(line)
      step = record['step'] if isinstance(record, dict) else None
    except (json.JSONDecodeError, KeyError):
      step = None
    if isinstance(step, int):
      records.append(record)
    elif i == lines[-1][0]:
      logging.warning(
        '%s:%d: dropped a torn last line (%r); the run rewrites it.',
        path,
        i,
        line[:40],
      )
    else:
      raise ValueError(
        f'{path}:{i} is not a metrics record ({line[:40]!r}); delete that '
        'line to read or resume the run.'
      )
  return records


def read_metrics(workdir: str) -> list[dict]:
  """All records of a run's metrics.jsonl (empty if there is none)."""
  return read_records(os.path.join(workdir, METRICS_FILE))


def best_so_far(workdir: str, metric: str, prefix: str = 'eval') -> float:
  """The best `<prefix>/<metric>` logged so far (-inf before any)."""
  key = f'{prefix}/{metric}'
  return max(
    (r[key] for r in read_metrics(workdir) if key in r), default=-math.inf
  )


def summarise(workdir, best_metric, final, total_steps) -> dict:
  """results.json's contents: the final eval and the best logged one."""
  evals = [r for r in read_metrics(workdir) if 'eval/war' in r]
  best = max(evals, key=lambda r: r[f'eval/{best_metric}'], default=None)
  return {
    'final': {'step': total_steps, **final},
    'best': {
      'step': best['step'] if best else total_steps,
      'metric': best_metric,
      'war': best['eval/war'] if best else final['war'],
      'uar': best['eval/uar'] if best else final['uar'],
    },
  }


def write_results(workdir: str, results: dict) -> None:
  """Writes results.json atomically, on process 0."""
  if jax.process_index() == 0:
    write_json(os.path.join(workdir, RESULTS_FILE), results)


def _truncate(path: str, last_step: int) -> None:
  """Drops records after `last_step` (a resumed run writes them again) and
  a torn last line; rewrites the file atomically, whole lines only."""
  if not os.path.exists(path):
    return
  keep = [r for r in read_records(path) if r['step'] <= last_step]
  write_text(path, ''.join(json.dumps(r) + '\n' for r in keep))


def _append_line(path: str, line: str) -> None:
  """Appends one line whole or not at all: a write cut short (a full disk,
  a file-size limit) is cut off again, so no torn line stays behind."""
  data = memoryview(line.encode())
  fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
  try:
    size = os.fstat(fd).st_size
    try:
      while data:  # A short write is followed by one that fails.
        data = data[os.write(fd, data) :]
    except OSError as e:
      with contextlib.suppress(OSError):
        os.ftruncate(fd, size)
      raise cannot_write(path, e) from e
  finally:
    os.close(fd)


class MetricWriter:
  """Writes scalars to metrics.jsonl and TensorBoard (process 0 only)."""

  def __init__(self, workdir: str, resume_step: int = 0):
    self.enabled = jax.process_index() == 0
    self._path = os.path.join(workdir, METRICS_FILE)
    self._tb = None
    self._config = None
    if self.enabled:
      _truncate(self._path, resume_step)
      self._tb = tensorboardX.SummaryWriter(os.path.join(workdir, 'tb'))

  def write_config(self, workdir: str, config: ml_collections.ConfigDict):
    """Writes config.json atomically (process 0)."""
    if self.enabled:
      text = config.to_json_best_effort(indent=2, sort_keys=True)
      write_text(os.path.join(workdir, CONFIG_FILE), text)

  def config_with_next_save(self, workdir: str, config) -> None:
    """Writes config.json with the next checkpoint (`checkpoint_saved`).

    config.json must describe the workdir's checkpoints: a resumed run whose
    config fails before saving (a NaN at a new learning rate) leaves the
    config of the checkpoints it resumed from.
    """
    self._config = (workdir, config)

  def checkpoint_saved(self) -> None:
    """Called after each checkpoint save: writes a pending config.json."""
    if self._config is not None:
      self.write_config(*self._config)
      self._config = None

  def write(self, step: int, record: dict, extra_scalars: dict | None = None):
    """Appends `record` to metrics.jsonl; its numbers and extras to TB."""
    if not self.enabled:
      return
    _append_line(self._path, json.dumps({'step': step, **record}) + '\n')
    scalars = {**_flat_scalars(record), **(extra_scalars or {})}
    for name, value in scalars.items():
      self._tb.add_scalar(name, value, step)
    self._tb.flush()

  def close(self):
    if self._tb is not None:
      self._tb.close()


def _flat_scalars(record: dict, prefix: str = '') -> dict:
  out = {}
  for key, value in record.items():
    name = f'{prefix}{key}'
    if isinstance(value, dict):
      out.update(_flat_scalars(value, name + '/'))
    elif isinstance(value, int | float) and not isinstance(value, bool):
      out[name] = value
  return out


class Progress:
  """A tqdm bar on a terminal, plain log lines with img/s and ETA elsewhere."""

  def __init__(self, first_step: int, total_steps: int, batch_size: int):
    self._total = total_steps
    self._batch = batch_size
    self._last_step = first_step
    self._last_time = time.perf_counter()
    self._bar = None
    if jax.process_index() == 0 and sys.stderr.isatty():
      self._bar = tqdm.tqdm(
        total=total_steps, initial=first_step, unit='step', dynamic_ncols=True
      )

  def update(self, step: int, loss: float | None = None) -> float:
    """Reports progress up to `step`; returns img/s since the last call."""
    now = time.perf_counter()
    steps = step - self._last_step
    rate = steps * self._batch / max(now - self._last_time, 1e-9)
    self._last_step, self._last_time = step, now
    if self._bar is not None:
      self._bar.update(steps)
      self._bar.set_postfix(
        loss=f'{loss:.4f}' if loss is not None else '-', img_s=f'{rate:.0f}'
      )
    elif jax.process_index() == 0 and steps:
      eta = (self._total - step) * self._batch / max(rate, 1e-9)
      logging.info(
        'step %d/%d  loss %s  %.1f img/s  ETA %s',
        step,
        self._total,
        f'{loss:.4f}' if loss is not None else '-',
        rate,
        _duration(eta),
      )
    return rate

  def close(self):
    if self._bar is not None:
      self._bar.close()


def _duration(seconds: float) -> str:
  if not math.isfinite(seconds):
    return '?'
  minutes, sec = divmod(int(seconds), 60)
  hours, minutes = divmod(minutes, 60)
  return f'{hours}:{minutes:02d}:{sec:02d}'


def _quiet_library(record) -> bool:
  """Drops a library's INFO lines and the tracebacks of its warnings and
  errors (orbax logs one per background thread for one failed save; the
  command reports the failure once)."""
  if not any(f'{os.sep}{lib}{os.sep}' in record.pathname for lib in _CHATTY):
    return True
  record.exc_info = record.exc_text = None
  return record.levelno >= std_logging.WARNING


_CHATTY = ('orbax', 'grain', 'tensorflow_datasets', 'jax')


def quiet_library_logs() -> None:
  """Keeps orbax, grain, tfds and jax to one line per warning or error in
  the run's log, and their INFO lines out of it."""
  logging.get_absl_handler().addFilter(_quiet_library)

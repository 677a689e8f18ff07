"""Run files on process 0: metrics.jsonl, TensorBoard events, config.json,
results.json.

metrics.jsonl holds one JSON object per line with the step and the values a
run produces deterministically (losses, accuracies, learning rate, eval
metrics), so a resumed run logs exactly what an uninterrupted one does.
Throughput and timings go to TensorBoard and the console only.
"""

import json
import logging as std_logging
import math
import os
import sys
import tempfile
import time

import jax
import ml_collections
import tensorboardX
import tqdm
from absl import logging

METRICS_FILE = 'metrics.jsonl'
RESULTS_FILE = 'results.json'


def prepare_workdir(workdir: str) -> str:
  """Creates the workdir and proves it writable before any work starts."""
  workdir = os.path.abspath(os.path.expanduser(workdir))
  try:
    os.makedirs(workdir, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=workdir):
      pass
  except OSError as e:
    raise PermissionError(
      f'--workdir={workdir} is not writable ({e.strerror}); pass a '
      'directory you can write to.'
    ) from e
  return workdir


def read_metrics(workdir: str) -> list[dict]:
  """All records of a run's metrics.jsonl (empty if there is none)."""
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


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
    tmp = os.path.join(workdir, RESULTS_FILE + '.tmp')
    with open(tmp, 'w') as f:
      json.dump(results, f, indent=2)
    os.replace(tmp, os.path.join(workdir, RESULTS_FILE))


def _truncate(path: str, last_step: int) -> None:
  """Drops records after `last_step`: a resumed run writes them again."""
  if not os.path.exists(path):
    return
  with open(path) as f:
    keep = [
      ln for ln in f if ln.strip() and json.loads(ln)['step'] <= last_step
    ]
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    f.writelines(keep)
  os.replace(tmp, path)


class MetricWriter:
  """Writes scalars to metrics.jsonl and TensorBoard (process 0 only)."""

  def __init__(self, workdir: str, resume_step: int = 0):
    self.enabled = jax.process_index() == 0
    self._path = os.path.join(workdir, METRICS_FILE)
    self._tb = None
    if self.enabled:
      _truncate(self._path, resume_step)
      self._tb = tensorboardX.SummaryWriter(os.path.join(workdir, 'tb'))

  def write_config(self, workdir: str, config: ml_collections.ConfigDict):
    if self.enabled:
      with open(os.path.join(workdir, 'config.json'), 'w') as f:
        f.write(config.to_json_best_effort(indent=2, sort_keys=True))

  def write(self, step: int, record: dict, extra_scalars: dict | None = None):
    """Appends `record` to metrics.jsonl; its numbers and extras to TB."""
    if not self.enabled:
      return
    with open(self._path, 'a') as f:
      f.write(json.dumps({'step': step, **record}) + '\n')
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


def _not_library_info(record) -> bool:
  return record.levelno >= std_logging.WARNING or not any(
    f'{os.sep}{lib}{os.sep}' in record.pathname for lib in _CHATTY
  )


_CHATTY = ('orbax', 'grain', 'tensorflow_datasets', 'jax')


def quiet_library_logs() -> None:
  """Keeps INFO lines of orbax, grain, tfds and jax out of the run's log."""
  logging.get_absl_handler().addFilter(_not_library_info)

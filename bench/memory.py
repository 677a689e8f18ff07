r"""Host memory over a real training run: RSS per epoch should stay flat.

  python -m bench.memory               # configs/demo.py:smoke, 300 steps
  python -m bench.memory --config configs/demo.py:smoke --steps 600 \
      --json memory.json

Trains the config in this process with `train.train_and_evaluate` (its own
loop, input pipeline, evaluation every epoch and a checkpoint every epoch)
and records the host's resident set size (RSS) at the end of every epoch.
The first epoch holds compilation and the first evaluation and checkpoint;
a leak shows as growth after it, reported as the least-squares slope of RSS
over the later epochs (MiB per epoch).
"""

import importlib
import json
import os
import resource
import sys
import tempfile
import time
from collections.abc import Sequence
from unittest import mock

import numpy as np
import psutil
from absl import flags

from ferjax import cli
from ferjax import train
from ferjax import writers
from ferjax.data import pipeline

MIB = 2**20


def load_config(spec: str):
  """`configs/name.py[:arg]` -> that config, as `--config` would load it."""
  path, _, arg = spec.partition(':')
  name = os.path.splitext(os.path.basename(path))[0]
  return importlib.import_module(f'configs.{name}').get_config(arg or None)


def rss_bytes() -> int:
  return psutil.Process().memory_info().rss


def recording_progress(records: list):
  """A `writers.Progress` that also appends (step, RSS bytes) on update."""

  class RssProgress(writers.Progress):
    def update(self, step: int, loss: float | None = None) -> float:
      records.append((step, rss_bytes()))
      return super().update(step, loss)

  return RssProgress


def per_epoch(config, steps: int, workdir: str) -> tuple[int, list]:
  """Trains `steps` steps; returns (steps per epoch, [(step, RSS)]).

  Train metrics are flushed, the model evaluated and a checkpoint written
  once per epoch, so every RSS sample falls at an epoch's end.
  """
  config.total_steps = steps
  source = pipeline.data_source(config.data, config.data.train_split)
  steps_per_epoch, _ = train.resolve_steps(config, len(source))
  config.log_every_steps = steps_per_epoch
  config.eval_every_epochs = 1.0
  config.checkpoint.every_steps = steps_per_epoch
  records = []
  with mock.patch.object(writers, 'Progress', recording_progress(records)):
    train.train_and_evaluate(config, workdir)
  return steps_per_epoch, records


def growth_per_epoch(
  epochs: list[float], rss: list[int], after: float = 1.0
) -> float | None:
  """Least-squares slope of RSS (MiB) over the epochs past `after`."""
  later = [(e, r) for e, r in zip(epochs, rss, strict=True) if e > after]
  if len(later) < 2:
    return None
  x = np.array([e for e, _ in later])
  y = np.array([r for _, r in later]) / MIB
  return float(np.polyfit(x, y, 1)[0])


def late_range(epochs: list[float], rss: list[int]) -> list[float] | None:
  """[min, max] RSS (MiB) over the second half of the epochs."""
  half = [
    r / MIB for e, r in zip(epochs, rss, strict=True) if e > epochs[-1] / 2
  ]
  return [min(half), max(half)] if half else None


def report(config_spec, steps, steps_per_epoch, records, start_rss, wall_s):
  epochs = [step / steps_per_epoch for step, _ in records]
  rss = [r for _, r in records]
  return {
    'config': config_spec,
    'steps': steps,
    'steps_per_epoch': steps_per_epoch,
    'rss_before_bytes': start_rss,
    'epochs': [
      {'epoch': e, 'step': s, 'rss_bytes': r}
      for e, (s, r) in zip(epochs, records, strict=True)
    ],
    'growth_mib_per_epoch': growth_per_epoch(epochs, rss),
    'late_growth_mib_per_epoch': growth_per_epoch(
      epochs, rss, after=epochs[-1] / 2
    ),
    'late_range_mib': late_range(epochs, rss),
    'growth_after_first_epoch_mib': (
      (rss[-1] - rss[0]) / MIB if len(rss) > 1 else None
    ),
    'peak_rss_bytes': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    'wall_s': wall_s,
  }


def _fmt(value: float | None) -> str:
  return 'n/a' if value is None else f'{value:+.2f}'


def table(r: dict) -> str:
  lines = [
    f'{r["config"]}: {r["steps"]} steps, {r["steps_per_epoch"]} per epoch, '
    f'eval and checkpoint every epoch; RSS before training '
    f'{r["rss_before_bytes"] / MIB:.0f} MiB',
    f'{"epoch":>7}{"step":>7}{"RSS MiB":>10}{"change":>9}',
  ]
  previous = None
  for e in r['epochs']:
    mib = e['rss_bytes'] / MIB
    change = '' if previous is None else f'{mib - previous:+9.1f}'
    lines.append(f'{e["epoch"]:7.2f}{e["step"]:7d}{mib:10.1f}{change}')
    previous = mib
  slope, late = r['growth_mib_per_epoch'], r['late_growth_mib_per_epoch']
  if slope is None:
    lines.append('too few epochs for a slope')
  else:
    low, high = r['late_range_mib']
    lines.append(
      f'RSS slope after epoch 1: {slope:+.2f} MiB/epoch; over the second '
      f'half: {_fmt(late)} MiB/epoch, range {low:.0f}-{high:.0f} MiB'
    )
  lines.append(
    f'peak RSS {r["peak_rss_bytes"] / MIB:.0f} MiB; {r["wall_s"]:.0f} s'
  )
  return '\n'.join(lines)


def _define(fv: flags.FlagValues) -> None:
  flags.DEFINE_string(
    'config', 'configs/demo.py:smoke', 'configs/NAME.py[:arg]', flag_values=fv
  )
  flags.DEFINE_integer(
    'steps', 300, 'train steps', lower_bound=1, flag_values=fv
  )
  flags.DEFINE_string(
    'data_dir', None, "TFDS data_dir (config's default)", flag_values=fv
  )
  flags.DEFINE_string(
    'workdir', None, 'kept if given; else a temp dir', flag_values=fv
  )
  flags.DEFINE_string('json', None, 'write the report here', flag_values=fv)


def _main(fv: flags.FlagValues) -> None:
  with cli.usage_errors(ValueError, ImportError):  # A bad --config.
    config = load_config(fv.config)
  if fv.data_dir:
    config.data.data_dir = fv.data_dir
  start_rss, start = rss_bytes(), time.perf_counter()
  with tempfile.TemporaryDirectory(prefix='ferjax-memory-') as tmp:
    spe, records = per_epoch(config, fv.steps, fv.workdir or tmp)
  r = report(
    fv.config,
    fv.steps,
    spe,
    records,
    start_rss,
    time.perf_counter() - start,
  )
  print(table(r))
  if fv.json:
    with open(fv.json, 'w') as f:
      json.dump(r, f, indent=2)
    print(f'wrote {fv.json}')


def main(argv: Sequence[str] | None = None) -> int:
  return cli.run(_main, _define, argv)


if __name__ == '__main__':
  sys.exit(main())

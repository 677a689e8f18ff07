r"""Several configs over seeds, on equal terms, in one table.

  python -m ferjax.compare --workdir=runs/rafdb --seeds=0,1,2 \
      --configs=configs/manet_rafdb.py,configs/mfer_rafdb.py \
      --cross=ferplus/majority,sfew
  python -m ferjax.compare --workdir=/tmp/cmp --seeds=0,1 \
      --configs=configs/demo.py:smoke,configs/manet_rafdb.py:smoke \
      --config.total_steps=20 --config.data.validation=holdout:0.1

Each (config, seed) trains in <workdir>/<config>/default_seed<seed> with the
sweep's machinery (`ferjax.sweep`): a finished run (its results.json) is not
trained again and an unfinished one resumes from its checkpoint, so
rerunning the command continues the comparison. `--config.FIELD=VALUE`
overrides (the `=` form) apply to every config. A run that fails is a row
that says why; the others still train and report, and the command then
exits 1.

Each finished run is evaluated on its own eval split (results.json) and,
with its best checkpoint, on every --cross dataset ('NAME[/CONFIG]', built
in --data_dir; classes matched by name, `python -m ferjax.evaluate`). Each
config is measured once on this device (`ferjax.measure`): parameters,
GFLOPs per image, and train and eval images per second of its jitted steps
(--speed_steps steps after the compiling one; 0 skips the timing).

<workdir>/compare.md and compare.json hold one row per config: best and
final WAR and UAR as mean ± sample std over its finished seeds (best: the
checkpoint chosen on config.data.validation), the same on each --cross
dataset, the costs above, and the training wall time per run (the time this
command spent training it); then one row per run.
"""

import dataclasses
import os
import pathlib
import sys
import time
from collections.abc import Callable
from collections.abc import Sequence

import jax
import ml_collections
from absl import flags
from absl import logging

from ferjax import checkpointing
from ferjax import cli
from ferjax import labels
from ferjax import sweep
from ferjax import viz
from ferjax import writers
from ferjax.evaluate import classes as classes_lib
from ferjax.evaluate import evaluator
from ferjax.evaluate import trained

TIME_FILE = 'train_time.json'  # Seconds this command spent training a run.
SPEED_FILE = 'speed.json'  # A config's costs (`ferjax.measure.measure`).
COSTS = ('params', 'gflops_per_image', 'train_img_per_s', 'eval_img_per_s')


class Preempted(Exception):
  """A run stopped on SIGTERM after saving; rerun to resume."""


@dataclasses.dataclass(frozen=True)
class Entry:
  """One config of a comparison: its --configs text, folder and config."""

  spec: str
  name: str
  config: ml_collections.ConfigDict


def entry_name(spec: str) -> str:
  """A config's folder and row name: 'manet_rafdb', 'demo_smoke'."""
  path, _, arg = spec.partition(':')
  stem = pathlib.Path(path).stem
  return viz.files.file_safe(f'{stem}_{arg}' if arg else stem)


def entries(specs: Sequence[str], overrides: Sequence[str]) -> list[Entry]:
  """Loads every config with the overrides; UsageError on a bad one."""
  found = [
    Entry(s, entry_name(s), cli.load_config(s, overrides)) for s in specs
  ]
  names = [e.name for e in found]
  twice = sorted({n for n in names if names.count(n) > 1})
  if twice:
    raise cli.UsageError(f'--configs names {", ".join(twice)} twice.')
  return found


def check_cross(found: Sequence[Entry], targets: Sequence[trained.Target]):
  """Raises a ValueError unless every model shares a class with every
  --cross dataset (before anything trains)."""
  for entry in found:
    model = labels.class_names(entry.config.data.num_classes)
    for target in targets:
      classes_lib.match_classes(
        model, target.class_names, what=f'{entry.name} on {target.label}'
      )


def _add_time(run_dir: str, seconds: float) -> None:
  spent = read_json(os.path.join(run_dir, TIME_FILE)) or {'seconds': 0.0}
  spent['seconds'] += seconds
  trained.write_json(os.path.join(run_dir, TIME_FILE), spent)


def timed(train_fn: Callable[..., dict]) -> Callable[..., dict]:
  """`train_fn` adding the seconds each call takes to the run's TIME_FILE."""

  def train(config, workdir: str) -> dict:
    start = time.perf_counter()
    try:
      return train_fn(config, workdir)
    finally:
      if os.path.isdir(workdir):
        _add_time(workdir, time.perf_counter() - start)

  return train


def read_json(path: str) -> dict | None:
  """`writers.read_json`, or None where the file does not exist yet."""
  return writers.read_json(path) if os.path.exists(path) else None


def cross_metrics(run_dir: str, target: trained.Target, evaluate_fn) -> dict:
  """The best checkpoint on `target`: its report if it is of that step."""
  _, step = checkpointing.find_checkpoint(run_dir, 'best')
  name = trained.report_name(target, 'best')
  report = read_json(os.path.join(run_dir, trained.EVAL_DIR, f'{name}.json'))
  if not report or report.get('step') != step:
    dataset = f'{target.name}/{target.config}' if target.config else target.name
    report = evaluate_fn(
      run_dir,
      dataset,
      split=target.split,
      checkpoint='best',
      data_dir=target.data_dir,
    )
  return {k: report[k] for k in ('war', 'uar', 'num_examples', 'step')}


def run_row(entry, run, workdir, targets, train_fn, evaluate_fn) -> dict:
  """One run trained (if needed) and evaluated, as a row; never raises for
  a failed run (the row says why), only for a preempted one."""
  run_dir = os.path.join(workdir, entry.name, run.name)
  row = {'model': entry.name, 'run': run.name, 'seed': run.seed}
  try:
    results = sweep.results_or_train(entry.config, run_dir, run, train_fn)
    if 'preempted_at_step' in results:
      raise Preempted(f'{run_dir} at step {results["preempted_at_step"]}')
    row.update(status='done', **sweep.row(run, results))
    row['cross'] = {
      t.label: cross_metrics(run_dir, t, evaluate_fn) for t in targets
    }
  except Preempted:
    raise
  except Exception as e:  # Any failure: a row, with the traceback logged.
    logging.exception('%s %s failed', entry.name, run.name)
    row.update(status='failed', error=cli.describe(e))
  spent = read_json(os.path.join(run_dir, TIME_FILE))
  row['train_s'] = spent['seconds'] if spent else None
  return row


def costs(entry: Entry, workdir: str, measure_fn, steps: int) -> dict:
  """The config's costs on this device, measured once (kept in SPEED_FILE
  while the device and --speed_steps stay the same)."""
  from ferjax import measure  # noqa: PLC0415  (compiles; after training)

  path = os.path.join(workdir, entry.name, SPEED_FILE)
  kept = read_json(path)
  if kept and kept.get('device') == measure.device() and kept['steps'] == steps:
    return kept
  try:
    found = {**measure_fn(entry.config, steps), 'steps': steps}
  except Exception as e:  # The table still reports the runs.
    logging.exception('Measuring %s failed', entry.name)
    return {'error': cli.describe(e)}
  trained.write_json(path, found)
  return found


def summarise(entry: Entry, rows: Sequence[dict], cost: dict) -> dict:
  """One config's line: mean ± std over its finished runs, costs, time."""
  done = [r for r in rows if r['status'] == 'done']
  line = {
    'model': entry.name,
    'config': entry.spec,
    'runs': len(rows),
    'failed': len(rows) - len(done),
    'metrics': sweep.aggregate(done) if done else None,
    'cross': {},
    **{k: cost.get(k) for k in COSTS},
  }
  for label in done[0]['cross'] if done else ():
    line['cross'][label] = {
      m: sweep.mean_std([r['cross'][label][m] for r in done])
      for m in ('war', 'uar')
    }
  times = [r['train_s'] for r in rows if r['train_s'] is not None]
  line['train_s_per_run'] = sum(times) / len(times) if times else None
  return line


def _pct(cell: dict | None) -> str:
  if cell is None:
    return '—'
  return f'{100 * cell["mean"]:.2f} ± {100 * cell["std"]:.2f}'


def _num(value, spec: str) -> str:
  return '—' if value is None else format(value, spec)


def _time(seconds: float | None) -> str:
  if seconds is None:
    return '—'
  minutes, sec = divmod(round(seconds), 60)
  return f'{minutes // 60}:{minutes % 60:02d}:{sec:02d}'


def _table(head: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  return lines + ['| ' + ' | '.join(cells) + ' |' for cells in body]


def _cross_head(cross: Sequence[str]) -> list[str]:
  return [f'{c} {m}' for c in cross for m in ('WAR', 'UAR')]


METRIC_HEAD = ['best WAR', 'best UAR', 'final WAR', 'final UAR']


def model_table(lines: Sequence[dict], cross: Sequence[str]) -> list[str]:
  """One row per config: metrics mean ± std, costs, time per run."""
  head = ['model', 'runs', *METRIC_HEAD, *_cross_head(cross)]
  head += ['params', 'GFLOPs/img', 'train img/s', 'eval img/s', 'time/run']
  body = []
  for line in lines:
    m = line['metrics'] or {}
    cells = [line['model'], f'{line["runs"] - line["failed"]}/{line["runs"]}']
    cells += [_pct(m.get(k)) for k in sweep.METRICS]
    for c in cross:
      got = line['cross'].get(c, {})
      cells += [_pct(got.get('war')), _pct(got.get('uar'))]
    params = line['params']
    cells += [
      _num(params and params / 1e6, ',.2f') + (' M' if params else ''),
      _num(line['gflops_per_image'], '.3g'),
      _num(line['train_img_per_s'], ',.0f'),
      _num(line['eval_img_per_s'], ',.0f'),
      _time(line['train_s_per_run']),
    ]
    body.append(cells)
  return _table(head, body)


def run_table(rows: Sequence[dict], cross: Sequence[str]) -> list[str]:
  """One row per run; a failed one says why."""
  head = ['model', 'run', 'status', *METRIC_HEAD, *_cross_head(cross), 'time']
  body = []
  for r in rows:
    cells = [r['model'], r['run']]
    if r['status'] == 'done':
      cells.append('done')
      cells += [f'{100 * r[k]:.2f}' for k in sweep.METRICS]
      cells += [
        f'{100 * r["cross"][c][m]:.2f}' for c in cross for m in ('war', 'uar')
      ]
    else:
      cells.append(f'failed: {r["error"]}'.replace('|', '\\|'))
      cells += ['—'] * (len(sweep.METRICS) + 2 * len(cross))
    body.append([*cells, _time(r['train_s'])])
  return _table(head, body)


def markdown(table: dict) -> str:
  """compare.md: the per-config table, what "best" means, the runs."""
  cross = table['cross']
  note = (
    f'WAR and UAR in %, mean ± sample std over the finished seeds '
    f"({', '.join(map(str, table['seeds']))}). Best: the eval split's "
    'metrics of the checkpoint chosen on config.data.validation '
    f'({", ".join(table["validation"])}); cross columns evaluate that '
    f'checkpoint. Costs measured on {table["device"]}; time: training wall '
    'time per run.'
  )
  lines = model_table(table['models'], cross)
  lines += ['', note, '', *run_table(table['runs'], cross)]
  return '\n'.join(lines) + '\n'


def compare(
  found: Sequence[Entry],
  seeds: Sequence[int],
  workdir: str,
  targets: Sequence[trained.Target] = (),
  *,
  train_fn: Callable[..., dict],
  evaluate_fn: Callable[..., dict] = trained.evaluate_workdir,
  measure_fn: Callable[..., dict] | None = None,
  speed_steps: int = 5,
) -> dict:
  """Trains what is missing, evaluates, measures, writes the tables.

  Args:
    found: the configs (`entries`).
    seeds: the seeds each config trains with.
    workdir: the comparison's folder.
    targets: the --cross datasets (`trained.find_target`).
    train_fn: `ferjax.train.train_and_evaluate` (wrapped by `timed`) or a
      stand-in.
    evaluate_fn: `trained.evaluate_workdir` or a stand-in.
    measure_fn: `ferjax.measure.measure` or a stand-in; None: that.
    speed_steps: timed steps per config (0: parameters and FLOPs only).

  Returns:
    compare.json's contents.

  Raises:
    Preempted: a run stopped on SIGTERM (it saved; rerun to resume).
  """
  from ferjax import measure  # noqa: PLC0415  (jax; flags parse first)

  measure_fn = measure_fn or measure.measure
  rows, lines = [], []
  for entry in found:
    mine = [
      run_row(entry, run, workdir, targets, train_fn, evaluate_fn)
      for run in sweep.plan([None], seeds)
    ]
    rows += mine
    cost = costs(entry, workdir, measure_fn, speed_steps)
    lines.append(summarise(entry, mine, cost))
  table = {
    'seeds': list(seeds),
    'cross': [t.label for t in targets],
    'validation': sorted({evaluator.validation(e.config) for e in found}),
    'device': measure.device(),
    'models': lines,
    'runs': rows,
  }
  trained.write_json(os.path.join(workdir, 'compare.json'), table)
  text = markdown(table).encode()
  if jax.process_index() == 0:
    viz.write_atomic(
      os.path.join(workdir, 'compare.md'), lambda f: f.write(text)
    )
  return table


def _define(fv: flags.FlagValues) -> None:
  flags.DEFINE_list(
    'configs',
    None,
    'Config files (path[:arg]), comma-separated.',
    flag_values=fv,
  )
  flags.DEFINE_list('seeds', ['0'], 'Seeds, comma-separated.', flag_values=fv)
  flags.DEFINE_string('workdir', None, 'The comparison folder.', flag_values=fv)
  flags.DEFINE_list(
    'cross',
    [],
    'Built datasets NAME[/CONFIG] every run is also evaluated on.',
    flag_values=fv,
  )
  flags.DEFINE_string(
    'data_dir',
    None,
    "TFDS data_dir of the --cross datasets (default: the first config's).",
    flag_values=fv,
  )
  flags.DEFINE_integer(
    'speed_steps',
    5,
    'Timed train and eval steps per config for img/s (0: no timing).',
    lower_bound=0,
    flag_values=fv,
  )
  flags.DEFINE_string(
    'compilation_cache_dir',
    None,
    "Persistent XLA compilation cache (default ~/.cache/ferjax/xla; '' off).",
    flag_values=fv,
  )
  flags.mark_flags_as_required(['configs', 'workdir'], flag_values=fv)


def _main(fv: flags.FlagValues, overrides: Sequence[str]) -> None:
  with cli.usage_errors(ValueError):  # Seeds that are not integers.
    seeds = [int(s) for s in fv.seeds]
  from ferjax import runtime  # noqa: PLC0415  (heavy; flags parse first)
  from ferjax import train  # noqa: PLC0415

  writers.quiet_library_logs()
  runtime.enable_compilation_cache(fv.compilation_cache_dir)
  found = entries(fv.configs, overrides)
  data_dir = fv.data_dir or found[0].config.data.get('data_dir')
  with cli.usage_errors(ValueError):  # Unknown datasets, no common class.
    targets = [trained.find_target(c, None, data_dir) for c in fv.cross]
    check_cross(found, targets)
  try:
    table = compare(
      found,
      seeds,
      fv.workdir,
      targets,
      train_fn=timed(train.train_and_evaluate),
      speed_steps=fv.speed_steps,
    )
  except Preempted as e:
    raise cli.Failure(
      f'SIGTERM: {e} saved; rerun the same command to resume.'
    ) from e
  print(markdown(table), end='')
  failed = sum(r['status'] != 'done' for r in table['runs'])
  if failed:
    raise cli.Failure(
      f'{failed} of {len(table["runs"])} runs failed; '
      f'{os.path.join(fv.workdir, "compare.md")} says why.'
    )


def main(argv: Sequence[str] | None = None) -> int:
  args = list(sys.argv[1:] if argv is None else argv)
  overrides = [a for a in args if a.startswith(cli.CONFIG_OVERRIDE)]
  rest = [a for a in args if not a.startswith(cli.CONFIG_OVERRIDE)]
  return cli.run(lambda fv: _main(fv, overrides), _define, rest, doc=__doc__)


if __name__ == '__main__':
  sys.exit(main())

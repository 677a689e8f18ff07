r"""Runs one config over folds and seeds, then tables WAR and UAR.

  python -m ferjax.sweep --config=configs/gcsa_dfew.py \
      --workdir=runs/gcsa_dfew --folds=all
  python -m ferjax.sweep --config=configs/mfer_rafdb.py \
      --workdir=runs/mfer_rafdb_seeds --seeds=0,1,2

Each (fold, seed) trains in `<workdir>/<fold>_seed<seed>` with
`config.data.config` set to the fold and `config.seed` to the seed; `--folds`
takes builder configs (`all`: the dataset's `fold<k>` configs, e.g. DFEW's
fold1..fold5, or fold1_112..fold5_112 for a config on the 112 px build;
empty: the config's own).
A finished run (its results.json exists) is not trained again, and an
unfinished one resumes from its checkpoint, so rerunning the command
continues the sweep. Other `--config.*` overrides apply to every run.

The table (`<workdir>/sweep.md`, and `sweep.json` with every number) has one
row per run with the best-checkpoint and final WAR (accuracy) and UAR (mean
class recall), then the mean ± sample standard deviation over runs; DFEW's
protocol reports the mean over its five folds. The best checkpoint is the
one chosen on `config.data.validation`: with a holdout, its test metrics.

`ferjax.compare` runs several configs this way and tables them together.
"""

import dataclasses
import os
import re
import statistics
import sys
from collections.abc import Callable
from collections.abc import Sequence

from absl import flags
from absl import logging
from ml_collections import config_flags

from ferjax import cli
from ferjax import writers
from ferjax.data import datasets

METRICS = ('best_war', 'best_uar', 'final_war', 'final_uar')


@dataclasses.dataclass(frozen=True)
class Run:
  """One run of a sweep: a fold (builder config) and a seed."""

  fold: str | None
  seed: int

  @property
  def name(self) -> str:
    return f'{self.fold or "default"}_seed{self.seed}'


def expand_folds(
  dataset: str, folds: str, current: str | None = None
) -> list[str | None]:
  """`--folds` text -> builder configs; '' keeps the config's own.

  'all' takes the dataset's `fold<k>` configs that share the current
  config's suffix (DFEW: `fold1`..`fold5`, or `fold1_112`..`fold5_112` when
  the config reads the 112 px build).
  """
  if not folds:
    return [None]
  if folds == 'all':
    configs = [str(c) for c in datasets.spec(dataset).configs]
    match = re.fullmatch(r'fold\d+(.*)', current or '')
    suffix = match.group(1) if match else ''
    names = [
      c for c in configs if re.fullmatch(rf'fold\d+{re.escape(suffix)}', c)
    ]
    if not names:
      raise ValueError(
        f'--folds=all: dataset {dataset!r} has no fold configs; its configs '
        f'are {configs}.'
      )
    return names
  return [f.strip() for f in folds.split(',') if f.strip()]


def plan(folds: Sequence[str | None], seeds: Sequence[int]) -> list[Run]:
  """Every (fold, seed) pair, folds outermost."""
  return [Run(f, s) for f in folds for s in seeds]


def selected(results: dict) -> dict:
  """The eval-split metrics of the best checkpoint: where the holdout
  chose it (`at_best_validation`), else the best evaluation."""
  chosen = results.get('at_best_validation')
  return chosen['eval'] if chosen else results['best']


def row(run: Run, results: dict) -> dict:
  """A table row from a run's results.json contents."""
  best = selected(results)
  return {
    'run': run.name,
    'fold': run.fold,
    'seed': run.seed,
    'best_war': best['war'],
    'best_uar': best['uar'],
    'final_war': results['final']['war'],
    'final_uar': results['final']['uar'],
  }


def mean_std(values: Sequence[float]) -> dict:
  """{'mean', 'std'}: the sample standard deviation, 0 for one value."""
  return {
    'mean': statistics.fmean(values),
    'std': statistics.stdev(values) if len(values) > 1 else 0.0,
  }


def aggregate(rows: Sequence[dict]) -> dict:
  """Mean and sample standard deviation (0 for one run) of each metric."""
  return {m: mean_std([r[m] for r in rows]) for m in METRICS}


def markdown(rows: Sequence[dict], summary: dict) -> str:
  """The table in percent, one row per run and a mean ± std row."""
  header = '| run | best WAR | best UAR | final WAR | final UAR |'
  lines = [header, '|---|---|---|---|---|']
  for r in rows:
    cells = ' | '.join(f'{100 * r[m]:.2f}' for m in METRICS)
    lines.append(f'| {r["run"]} | {cells} |')
  cells = ' | '.join(
    f'{100 * summary[m]["mean"]:.2f} ± {100 * summary[m]["std"]:.2f}'
    for m in METRICS
  )
  lines.append(f'| mean ± std ({len(rows)} runs) | {cells} |')
  return '\n'.join(lines) + '\n'


def results_of(workdir: str) -> dict | None:
  """A run's results.json, or None while it has not finished."""
  path = os.path.join(workdir, writers.RESULTS_FILE)
  if not os.path.exists(path):
    return None
  return writers.read_json(path)


def results_or_train(
  config, workdir: str, run: Run, train_fn: Callable[..., dict]
) -> dict:
  """A run's results: read if it finished, else trained (or resumed).

  Args:
    config: the base config; the run's copy sets the fold and the seed.
    workdir: the run's folder.
    run: the (fold, seed).
    train_fn: `ferjax.train.train_and_evaluate` or a stand-in.
  """
  results = results_of(workdir)
  if results is not None:
    return results
  run_config = config.copy_and_resolve_references()
  with run_config.unlocked():
    if run.fold is not None:
      run_config.data.config = run.fold
    run_config.seed = run.seed
  logging.info('Run %s in %s', run.name, workdir)
  return train_fn(run_config, workdir)


def sweep(
  config,
  workdir: str,
  runs: Sequence[Run],
  train_fn: Callable[..., dict],
) -> dict:
  """Trains every run that has no results yet, then writes the table.

  Args:
    config: the base config (unlocked copies are made per run).
    workdir: the sweep's folder; each run gets a subfolder.
    runs: the (fold, seed) pairs.
    train_fn: `ferjax.train.train_and_evaluate` or a stand-in.

  Returns:
    {'rows': [...], 'summary': {...}}, as written to sweep.json.
  """
  rows = []
  for run in runs:
    run_dir = os.path.join(workdir, run.name)
    rows.append(row(run, results_or_train(config, run_dir, run, train_fn)))
  summary = aggregate(rows)
  table = {'rows': rows, 'summary': summary}
  writers.write_json(os.path.join(workdir, 'sweep.json'), table)
  writers.write_text(os.path.join(workdir, 'sweep.md'), markdown(rows, summary))
  return table


def _define(fv: flags.FlagValues) -> None:
  config_flags.DEFINE_config_file(
    'config',
    None,
    'Config file, e.g. configs/gcsa_dfew.py.',
    flag_values=fv,
    lock_config=True,
  )
  flags.DEFINE_string('workdir', None, 'The sweep folder.', flag_values=fv)
  flags.DEFINE_string(
    'folds', '', "Builder configs, comma-separated, or 'all'.", flag_values=fv
  )
  flags.DEFINE_list('seeds', ['0'], 'Seeds, comma-separated.', flag_values=fv)
  flags.DEFINE_string(
    'compilation_cache_dir',
    None,
    "Persistent XLA compilation cache (default ~/.cache/ferjax/xla; '' off).",
    flag_values=fv,
  )
  flags.mark_flags_as_required(['config', 'workdir'], flag_values=fv)


def _main(fv: flags.FlagValues) -> None:
  with cli.usage_errors(ValueError):  # Seeds that are not integers.
    seeds = [int(s) for s in fv.seeds]
  from ferjax import runtime  # noqa: PLC0415  (heavy; flags parse first)
  from ferjax import train  # noqa: PLC0415

  writers.quiet_library_logs()
  # Every run after the first compiles nothing: same program, cached.
  runtime.enable_compilation_cache(fv.compilation_cache_dir)
  config = fv.config
  with cli.usage_errors(ValueError):  # --folds=all without fold configs.
    folds = expand_folds(config.data.name, fv.folds, config.data.get('config'))
  table = sweep(
    config, fv.workdir, plan(folds, seeds), train.train_and_evaluate
  )
  print(markdown(table['rows'], table['summary']), end='')


def main(argv: Sequence[str] | None = None) -> int:
  return cli.run(_main, _define, argv)


if __name__ == '__main__':
  sys.exit(main())

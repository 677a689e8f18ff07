"""The fold/seed runner: planning, aggregation, resuming, the command."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from configs import common
from ferjax import sweep
from ferjax.data import datasets


def _results(best_war, best_uar, final_war, final_uar):
  return {
    'best': {'war': best_war, 'uar': best_uar},
    'final': {'war': final_war, 'uar': final_uar},
  }


def test_aggregate_a_known_table():
  runs = sweep.plan(['fold1', 'fold2', 'fold3'], [0])
  values = [
    (0.70, 0.55, 0.68, 0.54),
    (0.66, 0.52, 0.65, 0.50),
    (0.71, 0.57, 0.70, 0.57),
  ]
  rows = [sweep.row(r, _results(*v)) for r, v in zip(runs, values, strict=True)]
  summary = sweep.aggregate(rows)
  table = np.array(values)
  for i, m in enumerate(sweep.METRICS):
    assert summary[m]['mean'] == pytest.approx(table[:, i].mean())
    assert summary[m]['std'] == pytest.approx(table[:, i].std(ddof=1))
  text = sweep.markdown(rows, summary)
  assert '| fold2_seed0 | 66.00 | 52.00 | 65.00 | 50.00 |' in text
  assert '| mean ± std (3 runs) | 69.00 ± 2.65 | 54.67 ± 2.52 |' in text
  one = sweep.aggregate(rows[:1])
  assert one['best_war'] == {'mean': 0.70, 'std': 0.0}


def test_folds_expand_from_the_dataset_spec(monkeypatch):
  spec = datasets.DatasetSpec(
    configs={f'fold{k}': 7 for k in range(1, 6)}, splits=('train', 'test')
  )
  monkeypatch.setitem(datasets.SPECS, 'toy_folds', spec)
  assert sweep.expand_folds('toy_folds', 'all') == [
    f'fold{k}' for k in range(1, 6)
  ]
  assert sweep.expand_folds('toy_folds', 'fold2, fold4') == ['fold2', 'fold4']
  assert sweep.expand_folds('rafdb', '') == [None]
  with pytest.raises(ValueError, match="'rafdb' has no fold configs"):
    sweep.expand_folds('rafdb', 'all')
  runs = sweep.plan(['fold1', 'fold2'], [0, 1])
  assert [r.name for r in runs] == [
    'fold1_seed0',
    'fold1_seed1',
    'fold2_seed0',
    'fold2_seed1',
  ]


def test_sweep_trains_each_run_once_and_resumes(tmp_path):
  config = common.base_config()
  config.lock()
  calls = []

  def fake_train(run_config, workdir):
    calls.append((run_config.data.config, run_config.seed, workdir))
    results = _results(0.5 + run_config.seed / 10, 0.4, 0.5, 0.4)
    path = pathlib.Path(workdir)
    path.mkdir(parents=True)
    (path / 'results.json').write_text(json.dumps(results))
    return results

  runs = sweep.plan(['fold1', 'fold2'], [0, 1])
  table = sweep.sweep(config, str(tmp_path), runs, fake_train)
  assert [(c, s) for c, s, _ in calls] == [
    ('fold1', 0),
    ('fold1', 1),
    ('fold2', 0),
    ('fold2', 1),
  ]
  assert calls[3][2] == str(tmp_path / 'fold2_seed1')
  assert config.seed == 0 and config.data.config is None  # Untouched.
  assert table['summary']['best_war']['mean'] == pytest.approx(0.55)
  saved = json.loads((tmp_path / 'sweep.json').read_text())
  assert saved == json.loads(json.dumps(table))
  assert (tmp_path / 'sweep.md').read_text().count('_seed') == 4
  # Rerunning trains nothing: every run has its results.
  calls.clear()
  sweep.sweep(config, str(tmp_path), runs, fake_train)
  assert calls == []


def test_command_line_runs_a_seed_sweep(smoke_data_dir, tmp_path):
  workdir = tmp_path / 'sweep'
  cmd = [
    sys.executable,
    '-m',
    'ferjax.sweep',
    '--config=configs/demo.py:smoke',
    f'--workdir={workdir}',
    '--seeds=0,1',
    f'--config.data.data_dir={smoke_data_dir}',
    '--config.total_steps=2',
    '--config.checkpoint.async_save=false',
  ]
  result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-2000:]
  assert '| mean ± std (2 runs) |' in result.stdout
  table = json.loads((workdir / 'sweep.json').read_text())
  assert [r['run'] for r in table['rows']] == ['default_seed0', 'default_seed1']
  for r in table['rows']:
    assert 0 <= r['best_war'] <= 1

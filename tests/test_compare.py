"""python -m ferjax.compare: resume, failed runs as rows, tables, the command."""

import json
import os
import pathlib

import pytest

from configs import common
from ferjax import compare
from ferjax import sweep
from tests.test_holdout import HOLDOUT_RUN

# config_flags loads config files with importlib's deprecated load_module.
pytestmark = pytest.mark.filterwarnings(
  'ignore:the load_module:DeprecationWarning'
)


def _results(war):
  metrics = {'war': war, 'uar': war - 0.1}
  return {'best': metrics, 'final': metrics}


class FakeTrain:
  """Writes results.json (war = 0.5 + seed/10); fails or dies on request."""

  def __init__(self, fail=(), die=()):
    self.calls, self.fail, self.die = [], set(fail), set(die)

  def __call__(self, config, workdir):
    path = pathlib.Path(workdir)
    resumed = path.exists()
    path.mkdir(parents=True, exist_ok=True)
    self.calls.append((config.model.name, config.seed, resumed))
    if (config.model.name, config.seed) in self.die:
      (path / 'checkpoints').mkdir()  # Saved something, then was killed.
      raise KeyboardInterrupt
    if (config.model.name, config.seed) in self.fail:
      raise FloatingPointError('Training loss is nan at step 3.')
    results = _results(0.5 + config.seed / 10)
    (path / 'results.json').write_text(json.dumps(results))
    return results


def _entry(model):
  config = common.base_config()
  config.model.name = model
  return compare.Entry(f'configs/{model}.py', model, config.lock())


def _measure(config, steps):
  return {'device': 'test', 'params': 1000, 'gflops_per_image': 0.5}


def _compare(tmp_path, train_fn):
  found = [_entry('resnet18'), _entry('manet')]
  return compare.compare(
    found,
    [0, 1],
    str(tmp_path),
    train_fn=compare.timed(train_fn),
    measure_fn=_measure,
    speed_steps=0,
  )


def test_a_killed_run_resumes_and_a_failed_one_is_a_row(tmp_path):
  train = FakeTrain(fail={('resnet18', 1)}, die={('manet', 1)})
  with pytest.raises(KeyboardInterrupt):
    _compare(tmp_path, train)
  assert [c[:2] for c in train.calls] == [
    ('resnet18', 0),
    ('resnet18', 1),
    ('manet', 0),
    ('manet', 1),
  ]
  train = FakeTrain(fail={('resnet18', 1)})
  table = _compare(tmp_path, train)
  # Finished runs are read; the killed one resumes in its folder; the
  # failed one fails again (it has no results) and the rest still report.
  assert train.calls == [('resnet18', 1, True), ('manet', 1, True)]
  status = {(r['model'], r['seed']): r['status'] for r in table['runs']}
  assert status == {
    ('resnet18', 0): 'done',
    ('resnet18', 1): 'failed',
    ('manet', 0): 'done',
    ('manet', 1): 'done',
  }
  failed = table['runs'][1]
  assert failed['error'] == 'Training loss is nan at step 3.'
  assert failed['train_s'] >= 0  # Both attempts counted.
  resnet, manet = table['models']
  assert (resnet['runs'], resnet['failed']) == (2, 1)
  assert resnet['metrics']['best_war'] == {'mean': 0.5, 'std': 0.0}
  assert manet['metrics']['final_war']['mean'] == pytest.approx(0.55)
  assert manet['metrics']['final_war']['std'] == pytest.approx(0.0707, 1e-3)
  assert manet['params'] == 1000 and manet['train_img_per_s'] is None
  text = (tmp_path / 'compare.md').read_text()
  assert '| resnet18 | 1/2 | 50.00 ± 0.00 |' in text
  assert '| manet | 2/2 | 55.00 ± 7.07 |' in text
  assert '| resnet18 | default_seed1 | failed: Training loss is nan' in text
  assert json.loads((tmp_path / 'compare.json').read_text()) == table


def test_best_is_the_holdout_choice():
  results = _results(0.9)
  assert sweep.selected(results)['war'] == 0.9
  chosen = {'split': 'test', 'war': 0.7, 'uar': 0.6}
  results['at_best_validation'] = {'eval': chosen}
  assert sweep.selected(results)['war'] == 0.7
  assert sweep.row(sweep.Run(None, 0), results)['best_war'] == 0.7


def _main(capsys, *argv):
  code = compare.main(list(argv))
  captured = capsys.readouterr()
  return code, captured.out, captured.err.strip()


def test_command_trains_evaluates_measures_and_reruns(
  smoke_data_dir, tmp_path, capsys, monkeypatch
):
  monkeypatch.chdir(pathlib.Path(__file__).parent.parent)
  argv = [
    f'--workdir={tmp_path}',
    '--configs=configs/demo.py:smoke',
    '--seeds=0',
    '--cross=synthetic_fer/smoke',
    '--speed_steps=1',
    f'--config.data.data_dir={smoke_data_dir}',
    '--config.checkpoint.async_save=false',
    *(f'--config.{k}={v}' for k, v in HOLDOUT_RUN.items()),
  ]
  code, out, err = _main(capsys, *argv)
  assert code == 0, err
  assert '| demo_smoke | 1/1 |' in out
  table = json.loads((tmp_path / 'compare.json').read_text())
  (line,) = table['models']
  assert line['params'] > 0 and line['gflops_per_image'] > 0
  assert line['train_img_per_s'] > 0 and line['eval_img_per_s'] > 0
  assert table['validation'] == ['holdout:0.2']
  (run,) = table['runs']
  run_dir = tmp_path / 'demo_smoke' / 'default_seed0'
  chosen = json.loads((run_dir / 'results.json').read_text())
  chosen = chosen['at_best_validation']['eval']
  assert (run['best_war'], run['best_uar']) == (chosen['war'], chosen['uar'])
  # The best checkpoint (chosen on the holdout) on the test split again.
  cross = run['cross']['synthetic_fer/smoke test']
  assert cross['war'] == chosen['war'] and cross['num_examples'] == 140
  before = sorted(os.listdir(run_dir))
  assert 'train_time.json' in before and 'results.json' in before
  code, again, _ = _main(capsys, *argv)  # Nothing left to do.
  assert code == 0 and again == out
  assert sorted(os.listdir(run_dir)) == before


def test_bad_command_lines_are_one_line_errors(
  smoke_data_dir, tmp_path, capsys
):
  base = [f'--workdir={tmp_path}', '--configs=configs/demo.py:smoke']
  data = f'--config.data.data_dir={smoke_data_dir}'
  cases = [
    (base + ['--config.nosuch=1'], 2, "has no config field 'nosuch'"),
    (base + ['--seeds=a'], 2, "invalid literal for int() with base 10: 'a'"),
    (
      [*base, '--configs=configs/demo.py:smoke,configs/demo.py:smoke'],
      2,
      'names demo_smoke twice',
    ),
    (
      base + [data, '--cross=synthetic_fer/64'],
      1,
      'python -m ferjax.data.build synthetic_fer --config 64',
    ),
  ]
  for argv, code, message in cases:
    got, _, err = _main(capsys, *argv)
    assert got == code, err
    assert message in err and err.startswith('error: ') and '\n' not in err
  assert not list(tmp_path.iterdir())  # Nothing trained.

"""The benchmarks run end to end on the CPU and report what they promise.

Each runs in a subprocess with the tests' 8 fake CPU devices, on a `:smoke`
config, and prints its table; the tests check the report's contents and
never assert a time.
"""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from bench import common
from bench import mfu

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = ('--model', 'resnet18', '--smoke', '--steps', '2')
QUICK = ('--windows', '1', '--warmup', '1')


def _run(module: str, *args: str) -> str:
  """Runs `python -m module args` in the repo; returns its stdout."""
  proc = subprocess.run(
    [sys.executable, '-m', module, *args],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  print(proc.stdout)
  return proc.stdout


def _report(module: str, tmp_path, *args: str) -> dict:
  out = tmp_path / 'report.json'
  _run(module, *args, '--json', str(out))
  return json.loads(out.read_text())


@pytest.mark.slow
def test_run_reports_steps_flops_memory_and_pipeline(tmp_path):
  r = _report(
    'bench.run',
    tmp_path,
    *SMOKE,
    '--notorch',
    *QUICK,
    '--pipeline_seconds',
    '0.2',
  )
  assert (r['model'], r['dtype'], r['batch'], r['size']) == (
    'resnet18',
    'float32',
    16,
    32,
  )
  assert r['device']['platform'] == 'cpu'
  assert r['device']['count'] == 8
  assert r['versions']['jax'] and r['versions']['flax']
  for name in ('train', 'eval'):
    step = r['jax'][name]
    assert step['compile_s'] > 0
    assert step['examples_per_s'] > 0
    assert len(step['step_s_windows']) == 1
    assert step['cpu_s_per_step_median'] > 0
    assert step['flops_per_step'] > 0
  assert (
    r['jax']['train']['flops_per_step'] > r['jax']['eval']['flops_per_step']
  )
  assert r['mfu']['value'] is None
  assert '--peak_tflops' in r['mfu']['reason']
  assert r['memory']['host_peak_rss_bytes'] > 0
  assert r['memory']['train_step_compiled']['argument_bytes'] > 0
  assert r['torch'] == {'available': False, 'reason': '--notorch'}
  pipe = r['pipeline']
  assert pipe['source']['format'] == 'jpeg'
  assert pipe['device_augment']['seconds_per_batch'] > 0
  for name in ('jpeg', 'cache', 'jpeg_on_device', 'cache_on_device'):
    (m,) = pipe[name]
    assert m['workers'] == 0
    assert m['examples_per_s'] > 0
    assert m['cores_to_feed_train_step'] is None or (
      m['cores_to_feed_train_step'] > 0
    )


@pytest.mark.slow
@pytest.mark.torch
def test_run_compares_with_pytorch(tmp_path):
  pytest.importorskip('torch')
  r = _report(
    'bench.run',
    tmp_path,
    *SMOKE,
    *QUICK,
    '--nopipeline',
    '--peak_tflops',
    '1',
  )
  t = r['torch']
  assert t['available'], t
  assert t['torch_device'] in ('cpu', 'cuda')
  for name in ('train', 'eval'):
    assert t[name]['examples_per_s'] > 0
    assert t[f'ratio_{name}'] > 0
    assert t[f'ratio_{name}_per_cpu_s'] > 0
  assert r['mfu']['value'] > 0
  assert r['mfu']['peak_basis'] == '--peak_tflops'
  assert r['pipeline'] == {'skipped': '--nopipeline'}


@pytest.mark.slow
def test_memory_reports_rss_per_epoch(tmp_path, smoke_data_dir):
  r = _report(
    'bench.memory', tmp_path, '--steps', '30', '--data_dir', smoke_data_dir
  )
  assert r['steps_per_epoch'] == 28
  assert [e['step'] for e in r['epochs']] == [28, 30]
  assert all(e['rss_bytes'] > 0 for e in r['epochs'])
  assert r['growth_after_first_epoch_mib'] is not None


@pytest.mark.parametrize(
  'kind, platform, dtype, want',
  [
    ('NVIDIA H100 80GB HBM3', 'gpu', 'bfloat16', 989.0),
    ('NVIDIA H100 80GB HBM3', 'gpu', 'float32', 494.0),
    ('NVIDIA H200', 'gpu', 'bfloat16', 989.0),
    ('NVIDIA H100 PCIe', 'gpu', 'bfloat16', 756.0),
    ('NVIDIA A100-SXM4-80GB', 'gpu', 'bfloat16', 312.0),
    ('TPU v4', 'tpu', 'bfloat16', 275.0),
    ('TPU v5 lite', 'tpu', 'bfloat16', 197.0),
    ('TPU v5p', 'tpu', 'float32', 459.0),
    ('TPU v6 lite', 'tpu', 'bfloat16', 918.0),
  ],
)
def test_peak_table(kind, platform, dtype, want):
  peak, basis = mfu.peak_tflops(kind, platform, dtype)
  assert peak == want, basis


def test_peak_basis_names_the_chip_measured():
  _, basis = mfu.peak_tflops('NVIDIA H200', 'gpu', 'bfloat16')
  assert basis.startswith('NVIDIA H200 '), basis


def test_no_peak_for_cpu():
  peak, reason = mfu.peak_tflops('cpu', 'cpu', 'float32')
  assert peak is None
  assert '--peak_tflops' in reason
  assert mfu.mfu(1e9, 0.1, None) is None


def test_mfu_and_flops_of_any_cost_analysis_shape():
  assert mfu.mfu(2e12, 0.5, 8.0) == pytest.approx(0.5)

  class Compiled:
    def __init__(self, cost):
      self.cost = cost

    def cost_analysis(self):
      if isinstance(self.cost, Exception):
        raise self.cost
      return self.cost

  assert mfu.compiled_flops(Compiled({'flops': 5.0})) == 5.0
  assert mfu.compiled_flops(Compiled([{'flops': 7.0}])) == 7.0
  assert mfu.compiled_flops(Compiled([])) is None
  assert mfu.compiled_flops(Compiled({'bytes accessed': 1.0})) is None
  assert mfu.compiled_flops(Compiled(NotImplementedError())) is None


def test_model_flops_come_from_the_lowered_program():
  """2·m·n·k for a matmul, whatever the backend makes of it."""
  a, b = jnp.ones((8, 16)), jnp.ones((16, 4))
  compiled = common.compile_step(jax.jit(jnp.matmul), a, b)
  assert compiled.flops == 2 * 8 * 16 * 4
  assert compiled.executed_flops is not None
  assert compiled.flops_basis == 'lowered'
  assert compiled.fn(a, b).shape == (8, 4)


def test_flops_fall_back_to_the_compiled_count_and_say_so(monkeypatch):
  """XLA:GPU gave no count of some lowered steps: the report must say so."""
  count = mfu.compiled_flops
  monkeypatch.setattr(
    common.mfu_lib,
    'compiled_flops',
    lambda c: None if isinstance(c, jax.stages.Lowered) else count(c),
  )
  a, b = jnp.ones((8, 16)), jnp.ones((16, 4))
  compiled = common.compile_step(jax.jit(jnp.matmul), a, b)
  assert compiled.flops == compiled.executed_flops
  assert compiled.flops_basis == 'compiled'


@pytest.mark.slow
def test_suite_runs_a_plan_and_tabulates_it(tmp_path):
  out = tmp_path / 'suite'
  _run('bench.suite', '--plan', 'smoke', '--out', str(out), '--budget_s', '280')
  statuses = json.loads((out / 'suite.json').read_text())
  assert [s['status'] for s in statuses] == ['ok', 'ok']
  table = (out / 'suite.md').read_text().splitlines()
  assert table[0].startswith('| entry | device | dtype')
  assert table[2].startswith('| resnet18_smoke | cpu | float32 | 16 | 32 |')
  assert table[3].startswith('| gcsa_smoke |')
  assert json.loads((out / 'gcsa_smoke.json').read_text())['model'] == 'gcsa'


def test_suite_skips_what_the_budget_cannot_fit_and_stops_overruns(tmp_path):
  from bench import suite

  statuses = suite.run('smoke', str(tmp_path), budget_s=5, min_entry_s=60)
  assert [s['status'] for s in statuses] == ['skipped', 'skipped']
  assert not list(tmp_path.glob('*_smoke.json'))
  assert 'resnet18_smoke: skipped' in (tmp_path / 'suite.md').read_text()
  entry = suite.PLANS['smoke'][0]
  status = suite.run_entry(entry, str(tmp_path), timeout=0.5)
  assert status['status'] == 'timeout'
  assert not (tmp_path / 'resnet18_smoke.json').exists()


def test_suite_caps_each_entry_so_one_cannot_take_the_budget(tmp_path):
  from bench import suite

  statuses = suite.run(
    'smoke', str(tmp_path), budget_s=600, min_entry_s=0, max_entry_s=0.5
  )
  assert [s['status'] for s in statuses] == ['timeout', 'timeout']

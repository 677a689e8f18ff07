"""Real processes: exact resume after SIGKILL, and two-process training.

Each test starts `python run.py` as a user would, on the smoke config. The
uninterrupted run they are compared with is the session's smoke run
(conftest.py), trained in the test process by the same code run.py calls.
"""

import os
import signal
import socket
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from ferjax import writers
from tests.conftest import REPO

pytestmark = pytest.mark.slow

# Runs run.py, but SIGKILLs itself once the checkpoint of step argv[1] is on
# disk: an abrupt death at a known point, with no help from the trainer.
KILL_AFTER_SAVE = """
import os, runpy, signal, sys
kill_step = int(sys.argv[1])
sys.argv = sys.argv[2:]
from ferjax import checkpointing
save = checkpointing.Checkpointer.save
def save_then_die(self, step, *args, **kwargs):
  saved = save(self, step, *args, **kwargs)
  if step == kill_step:
    self.wait()
    os.kill(os.getpid(), signal.SIGKILL)
  return saved
checkpointing.Checkpointer.save = save_then_die
runpy.run_path('run.py', run_name='__main__')
"""

# Runs run.py and sends itself SIGTERM (as a scheduler preempting the job
# would) when progress is first reported at or after step argv[1].
TERM_AT_STEP = """
import os, runpy, signal, sys
term_step = int(sys.argv[1])
sys.argv = sys.argv[2:]
from ferjax import writers
update = writers.Progress.update
def update_then_term(self, step, *args, **kwargs):
  if step >= term_step and not getattr(self, 'termed', False):
    self.termed = True
    os.kill(os.getpid(), signal.SIGTERM)
  return update(self, step, *args, **kwargs)
writers.Progress.update = update_then_term
runpy.run_path('run.py', run_name='__main__')
"""


def _command(workdir, data_dir, *extra):
  return [
    'run.py',
    '--config=configs/demo.py:smoke',
    f'--workdir={workdir}',
    f'--config.data.data_dir={data_dir}',
    *extra,
  ]


def _run(args, devices=8, timeout=300, **env):
  env = {
    **os.environ,
    'XLA_FLAGS': f'--xla_force_host_platform_device_count={devices}',
    **env,
  }
  return subprocess.Popen(
    [sys.executable, *args],
    cwd=REPO,
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
  )


def _finish(proc, timeout=300):
  out, _ = proc.communicate(timeout=timeout)
  return proc.returncode, out


def _final_state(workdir, step=12):
  path = os.path.join(workdir, 'checkpoints')
  with ocp.CheckpointManager(path, item_names=('state',)) as manager:
    restored = manager.restore(
      step, args=ocp.args.Composite(state=ocp.args.StandardRestore())
    )
  return jax.device_get(restored['state'])


@pytest.fixture(scope='module')
def reference_run(smoke_run_copy):
  """The smoke config trained to step 12 without interruption."""
  return smoke_run_copy[1]


def test_killed_run_resumes_bitwise_exactly(
  reference_run, smoke_data_dir, tmp_path
):
  workdir = tmp_path / 'killed'
  args = _command(workdir, smoke_data_dir)
  code, out = _finish(_run(['-c', KILL_AFTER_SAVE, '4', *args]))
  assert code == -signal.SIGKILL, out[-3000:]
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['4']
  assert max(r['step'] for r in writers.read_metrics(workdir)) == 4

  code, out = _finish(_run(args))  # The same command again.
  assert code == 0, out[-3000:]
  assert 'Resuming from step 4' in out

  reference, resumed = _final_state(reference_run), _final_state(workdir)
  assert int(resumed['step']) == 12
  for a, b in zip(
    jax.tree.leaves(reference), jax.tree.leaves(resumed), strict=True
  ):
    np.testing.assert_array_equal(a, b)  # Bitwise, not approximately.
  assert writers.read_metrics(workdir) == writers.read_metrics(reference_run)


def test_sigterm_saves_and_the_rerun_finishes_identically(
  reference_run, smoke_data_dir, tmp_path
):
  workdir = tmp_path / 'preempted'
  args = _command(workdir, smoke_data_dir)
  code, out = _finish(_run(['-c', TERM_AT_STEP, '5', *args]))
  assert code == 0, out[-3000:]
  assert 'SIGTERM: saved step 6' in out
  assert '6' in os.listdir(workdir / 'checkpoints')
  assert not (workdir / 'results.json').exists()

  code, out = _finish(_run(args))
  assert code == 0, out[-3000:]
  assert 'Resuming from step 6' in out
  for a, b in zip(
    jax.tree.leaves(_final_state(reference_run)),
    jax.tree.leaves(_final_state(workdir)),
    strict=True,
  ):
    np.testing.assert_array_equal(a, b)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_two_processes_train_like_one(smoke_data_dir, tmp_path):
  """2 processes x 4 CPU devices (gloo) train like 1 process x 8 devices.

  Both compute in float64: in float32 the two runs differ in summation
  order (gloo's all-reduce against the in-process one), and ReLU kinks in
  this width-4 network turn that noise into visibly different losses after
  a few steps. In float64 only a real difference (each process reading the
  wrong examples, a wrong cross-process reduction) can show.
  """
  x64 = ('--config.model.dtype=float64', '--config.log_every_steps=1')
  env = {'JAX_ENABLE_X64': '1'}
  single = tmp_path / 'one_process'
  workdir = tmp_path / 'two_processes'
  address = f'127.0.0.1:{_free_port()}'
  procs = [_run(_command(single, smoke_data_dir, *x64), **env)] + [
    _run(
      _command(
        workdir,
        smoke_data_dir,
        *x64,
        f'--coordinator_address={address}',
        '--num_processes=2',
        f'--process_id={i}',
      ),
      devices=4,
      **env,
    )
    for i in range(2)
  ]
  for proc in procs:
    code, out = _finish(proc)
    assert code == 0, out[-3000:]
  assert 'Process 1 of 2; 4 local of 8 devices' in out

  def losses(path):
    return [
      (r['step'], r['train/loss'])
      for r in writers.read_metrics(path)
      if 'train/loss' in r
    ]

  two, one = losses(workdir), losses(single)
  assert [s for s, _ in two] == [s for s, _ in one] == list(range(1, 13))
  np.testing.assert_allclose(
    [v for _, v in two], [v for _, v in one], rtol=1e-5
  )
  evals = [r for r in writers.read_metrics(workdir) if 'eval/war' in r]
  assert [r['eval/num_examples'] for r in evals] == [140, 140]

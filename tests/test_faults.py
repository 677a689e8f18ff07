"""Faults in a workdir: each stays resumable, and each error is one line.

One 4-step smoke run (checkpoints at steps 2 and 4, best at 4) is trained
once; every test damages a copy of it. Commands run in-process (`main`
returns the exit status) except where a real process is the point: a
file-size limit (`RLIMIT_FSIZE`), which stands in for a full disk.
"""

import json
import os
import re
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

import run
from ferjax import checkpoint_checks
from ferjax import checkpointing
from ferjax import cli
from ferjax import train
from ferjax import writers
from ferjax.predict import __main__ as predict_cli
from tests.cli_helpers import one_error_line
from tests.conftest import REPO

STEPS = 4
# config_flags loads config files with importlib's deprecated load_module.
pytestmark = pytest.mark.filterwarnings(
  'ignore:the load_module:DeprecationWarning'
)


def _config(smoke_data_dir, total_steps=STEPS):
  from configs import demo

  config = demo.get_config('smoke')
  config.data.data_dir = smoke_data_dir
  config.total_steps = total_steps
  config.checkpoint.every_steps = 2
  config.checkpoint.async_save = False
  return config


def _flags(smoke_data_dir, workdir, *extra) -> list[str]:
  """run.py's command line for the same run as `_config`."""
  return [
    '--config=configs/demo.py:smoke',
    f'--workdir={workdir}',
    f'--config.data.data_dir={smoke_data_dir}',
    f'--config.total_steps={STEPS}',
    '--config.checkpoint.every_steps=2',
    '--config.checkpoint.async_save=False',
    *extra,
  ]


@pytest.fixture(scope='module')
def base(tmp_path_factory, smoke_data_dir) -> str:
  workdir = str(tmp_path_factory.mktemp('faults') / 'run')
  train.train_and_evaluate(_config(smoke_data_dir), workdir)
  return workdir


@pytest.fixture
def copy(base, tmp_path) -> str:
  """A copy of the smoke run to damage."""
  return shutil.copytree(base, str(tmp_path / 'run'))


def _files(workdir: str) -> dict[str, bytes]:
  """Every file of a workdir and its bytes: what "nothing written" keeps."""
  found = {}
  for root, _, names in os.walk(workdir):
    for name in names:
      path = os.path.join(root, name)
      with open(path, 'rb') as f:
        found[os.path.relpath(path, workdir)] = f.read()
  return found


def _largest_array_file(checkpoint_dir: str) -> str:
  arrays = os.path.join(checkpoint_dir, 'state', 'ocdbt.process_0', 'd')
  names = [os.path.join(arrays, n) for n in os.listdir(arrays)]
  return max(names, key=os.path.getsize)


# Sets a file-size limit, then becomes the command (no preexec_fn: this
# process has threads).
_LIMIT_THEN_EXEC = (
  'import os, resource, sys; '
  'resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]),) * 2); '
  'os.execv(sys.argv[2], sys.argv[2:])'
)


_RUN_THEN_COLLECT = (
  'import gc, sys, run; status = run.main(sys.argv[1:]); gc.collect(); '
  'sys.exit(status)'
)


def _rlimited(limit: int, *argv: str) -> subprocess.CompletedProcess:
  """Runs argv with a file-size limit: writing past it fails (EFBIG), as
  on a full disk."""
  return subprocess.run(
    [sys.executable, '-c', _LIMIT_THEN_EXEC, str(limit), *argv],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
  )


# 1. A failed or torn metrics.jsonl write.


def test_a_failed_metrics_write_leaves_only_whole_lines(tmp_path):
  path = tmp_path / 'metrics.jsonl'
  path.write_text('{"step": 2, "train/loss": 1.5}\n')
  script = (
    'from ferjax import writers\n'
    'try:\n'
    f'  writers._append_line({str(path)!r}, "x" * 500 + "\\n")\n'
    'except writers.WriteError as e:\n'
    '  print(e)\n'
  )
  size = path.stat().st_size
  out = _rlimited(size + 100, sys.executable, '-c', script)
  assert out.returncode == 0, out.stderr[-2000:]
  assert f'cannot write {path}: File too large; free space' in out.stdout
  assert path.read_text() == '{"step": 2, "train/loss": 1.5}\n'


def test_a_torn_metrics_line_is_dropped_and_the_run_resumes(
  copy, smoke_data_dir, caplog
):
  before = writers.read_metrics(copy)
  with open(os.path.join(copy, writers.METRICS_FILE), 'a') as f:
    f.write('{"step": 6, "train/lo')
  train.train_and_evaluate(_config(smoke_data_dir, 6), copy)
  torn = f'metrics.jsonl:{len(before) + 1}: dropped a torn last line'
  assert torn in caplog.text
  records = writers.read_metrics(copy)
  assert records[: len(before)] == before
  assert max(r['step'] for r in records) == 6


def test_a_bad_line_before_the_last_is_named(tmp_path):
  path = tmp_path / 'metrics.jsonl'
  path.write_text('{"step": 2}\nnot json\n{"step": 4}\n')
  with pytest.raises(ValueError, match=r'metrics.jsonl:2 is not a metrics'):
    writers.read_records(str(path))


def test_config_and_results_are_written_atomically(tmp_path, monkeypatch):
  path = str(tmp_path / 'results.json')
  writers.write_json(path, {'war': 1})

  def fail(*args, **kwargs):
    raise OSError(28, 'No space left on device')

  monkeypatch.setattr(os, 'replace', fail)
  with pytest.raises(writers.WriteError, match='No space left on device'):
    writers.write_json(path, {'war': 2})
  with open(path) as f:
    assert json.load(f) == {'war': 1}
  assert os.listdir(tmp_path) == ['results.json']  # No temporary left.


# 2. The start-up check covers every directory a run writes.


@pytest.mark.parametrize('sub', writers.RUN_DIRS)
def test_every_run_directory_is_checked_before_any_work(
  smoke_config, tmp_path, sub
):
  workdir = tmp_path / 'run'
  workdir.mkdir()
  (workdir / sub).write_text('')  # A file where a directory must go.
  smoke_config.data.data_dir = str(tmp_path / 'never_built')
  smoke_config.data.auto_build = True
  where = re.escape(f'{workdir / sub} in --workdir=')
  with pytest.raises(PermissionError, match=where):
    train.train_and_evaluate(smoke_config, str(workdir))
  assert sorted(os.listdir(workdir)) == [sub]
  assert not (tmp_path / 'never_built').exists()


def test_an_unwritable_checkpoints_dir_fails_at_start(copy, smoke_data_dir):
  checkpoints = os.path.join(copy, 'checkpoints')
  os.chmod(checkpoints, 0o555)
  try:
    try:
      writers.check_writable(checkpoints)
    except PermissionError:
      pass
    else:
      pytest.skip('this process writes there anyway (root)')
    with pytest.raises(PermissionError, match='checkpoints in --workdir'):
      train.train_and_evaluate(_config(smoke_data_dir, 6), copy)
  finally:
    os.chmod(checkpoints, 0o755)


# 3 and 12. A config that cannot continue the run: refused, nothing written.


@pytest.mark.parametrize(
  'override, message',
  [
    (
      '--config.model.width=8',
      'was trained with another model or config (checkpoint step 4: ',
    ),
    ('--config.total_steps=2', 'holds a checkpoint at step 4, past config'),
  ],
)
def test_a_config_that_cannot_continue_is_refused_before_writing(
  copy, smoke_data_dir, capsys, monkeypatch, override, message
):
  monkeypatch.chdir(REPO)
  before = _files(copy)
  argv = _flags(smoke_data_dir, copy, override)
  assert run.main(argv) == cli.USAGE
  line = one_error_line(capsys)
  assert message in line, line
  assert f'--config.init_from={copy}' in line and '--workdir' in line
  assert _files(copy) == before


# 4. An unreadable newest checkpoint is skipped.


def test_an_unreadable_checkpoint_is_skipped_and_set_aside(
  copy, smoke_data_dir, caplog
):
  os.truncate(_largest_array_file(os.path.join(copy, 'checkpoints', '4')), 99)
  train.train_and_evaluate(_config(smoke_data_dir, 6), copy)
  assert 'Checkpoint step 4 in' in caplog.text and 'skipping it' in caplog.text
  aside = os.listdir(os.path.join(copy, 'checkpoints.unreadable'))
  assert len(aside) == 1 and aside[0].startswith('4-')
  assert sorted(os.listdir(os.path.join(copy, 'checkpoints'))) == [
    '2',
    '4',
    '6',
  ]  # Step 4 saved again by the resumed run.


def test_no_readable_checkpoint_is_one_error_and_moves_nothing(
  copy, smoke_data_dir
):
  os.truncate(_largest_array_file(os.path.join(copy, 'checkpoints', '4')), 99)
  os.remove(os.path.join(copy, 'checkpoints', '2', 'state', '_METADATA'))
  before = _files(copy)
  with pytest.raises(checkpoint_checks.UnreadableCheckpointError) as error:
    train.train_and_evaluate(_config(smoke_data_dir, 6), copy)
  message = str(error.value)
  assert 'checkpoints/4: OUT_OF_RANGE' in message
  assert 'checkpoints/2: Metadata file (named _METADATA) does not exist' in (
    message
  )
  assert _files(copy) == before


# 5. A full disk during a checkpoint save.


def test_a_full_disk_during_a_save_is_one_line_and_resumable(
  copy, smoke_data_dir
):
  argv = _flags(smoke_data_dir, copy, '--config.total_steps=6')
  # Collects the garbage before exiting, so the failed writes' abandoned
  # futures are reported (or not) every time, not when a collection
  # happens to run.
  out = _rlimited(64 * 1024, sys.executable, '-c', _RUN_THEN_COLLECT, *argv)
  assert out.returncode == cli.FAILED, out.stderr[-3000:]
  last = out.stderr.splitlines()[-1]
  assert re.fullmatch(
    f'error: cannot write {re.escape(copy)}/(checkpoints|best): File too '
    r'large; free space \(or fix permissions\) and rerun the same command: '
    r'it resumes from the last checkpoint\.',
    last,
  ), out.stderr[-3000:]
  assert 'Traceback' not in out.stderr and 'Event loop' not in out.stderr
  train.train_and_evaluate(_config(smoke_data_dir, 6), copy)  # Space again.
  assert '6' in os.listdir(os.path.join(copy, 'checkpoints'))


# 9. predict and export on a damaged workdir.


def test_an_unreadable_best_checkpoint_falls_back_to_the_latest(copy, caplog):
  os.truncate(_largest_array_file(os.path.join(copy, 'best', '4')), 99)
  config, variables, used = checkpointing.read_run(copy)
  assert used == {'kind': 'latest', 'step': 4}
  assert f'Checkpoint step 4 in {copy}/best cannot be read' in caplog.text
  assert config.model.name == 'resnet18' and 'batch_stats' in variables


def test_a_damaged_config_json_is_named(copy, capsys, tmp_path):
  with open(os.path.join(copy, 'config.json'), 'w') as f:
    f.write('{"model": ')
  image = str(tmp_path / 'face.png')
  cv2.imwrite(image, np.zeros((8, 8, 3), np.uint8))
  assert predict_cli.main(['--workdir', copy, image]) == cli.USAGE
  line = one_error_line(capsys)
  assert f'{copy}/config.json is damaged (not JSON' in line


# 13. NaN: what the error says about the checkpoints is true.


class _Quiet:
  def write(self, *args, **kwargs):
    pass

  def update(self, *args, **kwargs):
    return 0.0


@pytest.mark.parametrize(
  'saved, says',
  [
    (None, 'No checkpoint was saved before it'),
    (4, 'Checkpoint step 4 is intact and a rerun resumes from it'),
  ],
)
def test_nan_says_which_checkpoint_is_intact(saved, says):
  pending = [(5, {'loss': np.float32(np.nan)})]
  with pytest.raises(train.NonFiniteLossError, match='at step 5') as error:
    train._flush_train_metrics(pending, _Quiet(), _Quiet(), saved)
  assert says in str(error.value)

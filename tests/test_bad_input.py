"""Bad input, as a careless or hostile user gives it: refused in one line
naming it and the fix, or reported in the predictions' `error` column;
never accepted silently. No test here trains; the commands run in-process.

The builders' checks of images and label files are in
`tfds_builders/manual_data_test.py`; the faults of a workdir in
`tests/test_faults.py`.
"""

import pytest

import run
from ferjax import cli
from ferjax.data import build
from tests.cli_helpers import one_error_line
from tests.conftest import REPO

# config_flags loads config files with importlib's deprecated load_module.
pytestmark = pytest.mark.filterwarnings(
  'ignore:the load_module:DeprecationWarning'
)


# 6. A dataset build without its manually downloaded release.


@pytest.mark.parametrize('state', ['is empty', 'does not exist'])
def test_a_missing_or_empty_manual_dir_is_one_line(tmp_path, capsys, state):
  manual = tmp_path / 'release'
  if state == 'is empty':
    manual.mkdir()
  argv = ['rafdb', '--manual_dir', str(manual), '--data_dir', str(tmp_path)]
  assert build.main(argv) == cli.FAILED
  line = one_error_line(capsys)
  assert f'--manual_dir={manual} {state}: rafdb is built from' in line
  assert 'http://www.whdeng.cn/RAF/model1.html' in line  # How to get it.


# 11. run.py: config errors are one line, and create no workdir.


@pytest.mark.parametrize(
  'args, status, message',
  [
    (
      ['--config=configs/demo.py:smoke', '--config.model.bogus=3'],
      cli.USAGE,
      "--config.model.bogus=3: config.model has no field 'bogus'",
    ),
    (['--config=configs/nope.py'], cli.USAGE, 'configs/nope.py'),
    (
      ['--config=configs/mfer_rafdb.py', '--config.data.data_dir={tmp}'],
      cli.FAILED,
      'python -m ferjax.data.build rafdb --data_dir {tmp} --manual_dir '
      'RELEASE_DIR (RELEASE_DIR: where you unpacked the release',
    ),
  ],
)
def test_config_errors_are_one_line_and_create_no_workdir(
  tmp_path, capsys, monkeypatch, args, status, message
):
  monkeypatch.chdir(REPO)
  workdir = tmp_path / 'run'
  args = [a.format(tmp=tmp_path) for a in args]
  assert run.main([*args, f'--workdir={workdir}']) == status
  line = one_error_line(capsys)
  assert message.format(tmp=tmp_path) in line and 'Traceback' not in line
  assert not workdir.exists()

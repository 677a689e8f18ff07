"""Bad input, as a careless or hostile user gives it: refused in one line
naming it and the fix, or reported in the predictions' `error` column;
never accepted silently. No test here trains; the commands run in-process.

The builders' checks of images and label files are in
`tfds_builders/manual_data_test.py`; the faults of a workdir in
`tests/test_faults.py`.
"""

import os

import cv2
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import run
from ferjax import cli
from ferjax import predict
from ferjax.data import build
from ferjax.predict import __main__ as predict_cli
from ferjax.predict import media
from ferjax.weights import __main__ as weights_cli
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


# 7. predict --out: checked before anything is predicted.


@pytest.fixture
def no_loading(monkeypatch):
  """Fails a test that loads a model: the flags should have been refused."""

  def load(cls, *args, **kwargs):
    raise AssertionError('the model was loaded before --out was checked')

  monkeypatch.setattr(predict.Predictor, 'from_workdir', classmethod(load))


@pytest.mark.parametrize(
  'out, message',
  [
    ('missing/out.csv', 'there is no directory'),
    ('folder.csv', 'is a directory'),
    ('old.csv', 'exists; pass --overwrite to replace it'),
  ],
)
def test_a_bad_out_is_refused_before_predicting(
  tmp_path, capsys, no_loading, out, message
):
  (tmp_path / 'folder.csv').mkdir()
  (tmp_path / 'old.csv').write_text('kept')
  argv = ['--workdir', str(tmp_path), 'a.png', '--out', str(tmp_path / out)]
  assert predict_cli.main(argv) == cli.USAGE
  line = one_error_line(capsys)
  assert f'--out={tmp_path / out}' in line and message in line, line
  assert (tmp_path / 'old.csv').read_text() == 'kept'


def test_overwrite_replaces_the_out_file(tmp_path, monkeypatch):
  table = pd.DataFrame({'input': ['a.png'], 'error': [None]})
  stub = type('Stub', (), {'predict': lambda self, *a, **k: table})()
  monkeypatch.setattr(
    predict.Predictor, 'from_workdir', classmethod(lambda cls, *a, **k: stub)
  )
  out = tmp_path / 'old.csv'
  out.write_text('old')
  argv = ['--workdir', str(tmp_path), 'a.png', '--out', str(out)]
  assert predict_cli.main([*argv, '--overwrite']) == 0
  assert out.read_text() == 'input,error\na.png,\n'
  assert os.listdir(tmp_path) == ['old.csv']  # No temporary left.


# 8. Damaged videos: their frames, then an error saying where they end.


def _video(path, fourcc: str, count: int = 30) -> str:
  rng = np.random.default_rng(0)
  writer = cv2.VideoWriter(
    str(path), cv2.VideoWriter_fourcc(*fourcc), 10, (64, 48)
  )
  if not writer.isOpened():
    pytest.skip(f'OpenCV cannot write {fourcc} here')
  for _ in range(count):
    writer.write(rng.integers(0, 256, (48, 64, 3), np.uint8))
  writer.release()
  return str(path)


def _truncated(path: str) -> str:
  os.truncate(path, os.path.getsize(path) * 2 // 3)
  return path


def _damaged(path: str) -> str:
  with open(path, 'rb') as f:
    data = bytearray(f.read())
  start = len(data) // 10
  data[start : start + 4000] = np.random.default_rng(1).bytes(4000)
  with open(path, 'wb') as f:
    f.write(data)
  return path


@pytest.mark.parametrize(
  'name, fourcc, damage',
  [('cut.avi', 'MJPG', _truncated), ('hurt.mp4', 'mp4v', _damaged)],
)
def test_a_damaged_video_ends_in_an_error(tmp_path, name, fourcc, damage):
  path = damage(_video(tmp_path / name, fourcc))
  video = media.read_video(path, stride=1, max_pixels=None)
  read = []
  with pytest.raises(media.InputError, match=r'ends at frame (\d+) of the 30'):
    for index, _ in video.frames:
      read.append(index)
  assert read == list(range(len(read))) and len(read) < 30


class _Mean(nn.Module):
  @nn.compact
  def __call__(self, x, train=False):
    del train
    return {'logits': nn.Dense(7)(x.mean(axis=(1, 2)))}


def test_a_truncated_video_keeps_its_rows_and_gets_an_error_row(tmp_path):
  path = _truncated(_video(tmp_path / 'cut.avi', 'MJPG'))
  model = _Mean()
  variables = model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
  predictor = predict.Predictor(
    model, variables, num_classes=7, augment_config={'size': 16}, detector=None
  )
  table = predictor.predict([path])
  good, last = table[table['error'].isna()], table.iloc[-1]
  assert len(good) == len(table) - 1 and 10 < len(good) < 30
  assert last['error'].startswith('stopped: the video ends at frame')


# 10. Bad model fields for a conversion: usage errors, before any work.


@pytest.mark.parametrize(
  'field, message',
  [
    ('width=abc', "resnet18: width='abc' must be an int"),
    ('bogus=1', 'resnet18 has no field bogus; its fields: depth,'),
  ],
)
def test_bad_fields_are_usage_errors(tmp_path, capsys, field, message):
  argv = ['convert', '--model', 'resnet18', '--src', str(tmp_path / 'x.pth')]
  argv += ['--out', str(tmp_path / 'out'), '--field', field]
  assert weights_cli.main(argv) == cli.USAGE
  assert message in one_error_line(capsys)


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

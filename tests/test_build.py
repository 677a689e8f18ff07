"""Tests for ferjax.data.build: library functions and the command line."""

import pathlib
import shlex
import subprocess
import sys

import pytest

from ferjax.data import build
from tfds_builders.synthetic_fer import render

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_available_lists_synthetic_fer():
  assert 'synthetic_fer' in build.available()


def test_build_library(tmp_path):
  assert not build.is_built('synthetic_fer', 'smoke', tmp_path)
  b = build.build('synthetic_fer', 'smoke', tmp_path)
  assert build.is_built('synthetic_fer', 'smoke', tmp_path)
  # Other configs of the same dataset are separate.
  assert not build.is_built('synthetic_fer', '64', tmp_path)
  assert b.info.splits['train'].num_examples == 448
  assert b.info.splits['test'].num_examples == 140
  assert len(b.as_data_source(split='train')) == 448
  files = {p.name for p in pathlib.Path(b.data_dir).iterdir()}
  assert 'synthetic_fer-train.array_record-00000-of-00001' in files
  # A second build reuses the data.
  build.build('synthetic_fer', 'smoke', tmp_path)


@pytest.mark.slow
def test_build_command_line(tmp_path):
  command = build.build_command('synthetic_fer', 'smoke', tmp_path)
  argv = shlex.split(command)
  assert argv[:3] == ['python', '-m', 'ferjax.data.build']
  proc = subprocess.run(
    [sys.executable, *argv[1:]],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=120,
    check=False,
  )
  assert proc.returncode == 0, proc.stderr
  out = proc.stdout
  assert str(tmp_path / 'synthetic_fer' / 'smoke' / '1.0.0') in out
  assert 'train: 448 examples' in out and 'test: 140 examples' in out
  assert build.is_built('synthetic_fer', 'smoke', tmp_path)


def test_build_command_string():
  assert (
    build.build_command('synthetic_fer', 'smoke', '/x')
    == 'python -m ferjax.data.build synthetic_fer --config smoke --data_dir /x'
  )
  assert build.build_command('synthetic_fer') == (
    'python -m ferjax.data.build synthetic_fer'
  )
  assert build.build_command('a', manual_dir='/my dir') == (
    "python -m ferjax.data.build a --manual_dir '/my dir'"
  )


def test_failed_build_is_not_built(tmp_path, monkeypatch):
  calls = []
  real = render.render_example

  def flaky(*args):
    calls.append(args)
    if len(calls) > 100:
      raise RuntimeError('renderer broke')
    return real(*args)

  monkeypatch.setattr(render, 'render_example', flaky)
  with pytest.raises(RuntimeError, match='renderer broke'):
    build.build('synthetic_fer', 'smoke', tmp_path)
  assert len(calls) == 101
  assert not build.is_built('synthetic_fer', 'smoke', tmp_path)
  assert not (tmp_path / 'synthetic_fer' / 'smoke' / '1.0.0').exists()

  # Nothing left behind blocks a later build.
  monkeypatch.setattr(render, 'render_example', real)
  build.build('synthetic_fer', 'smoke', tmp_path)
  assert build.is_built('synthetic_fer', 'smoke', tmp_path)


def test_unknown_name(tmp_path, capsys):
  with pytest.raises(ValueError, match='Available.*synthetic_fer'):
    build.builder('no_such_dataset', data_dir=tmp_path)
  with pytest.raises(ValueError, match='no_such_dataset'):
    build.is_built('no_such_dataset', data_dir=tmp_path)
  assert build.main(['no_such_dataset', '--data_dir', str(tmp_path)]) == 2
  assert 'synthetic_fer' in capsys.readouterr().err


def test_unknown_config(tmp_path, capsys):
  with pytest.raises(ValueError, match='Valid configs: 112, 64, smoke'):
    build.builder('synthetic_fer', 'huge', tmp_path)
  args = ['synthetic_fer', '--config', 'huge', '--data_dir', str(tmp_path)]
  assert build.main(args) == 2
  assert 'smoke' in capsys.readouterr().err
  assert not (tmp_path / 'synthetic_fer' / 'huge').exists()


def test_bad_release_gets_a_short_error(tmp_path, capsys):
  release = tmp_path / 'raf' / 'basic'
  (release / 'EmoLabel').mkdir(parents=True)
  (release / 'EmoLabel' / 'list_patition_label.txt').write_text('x.jpg 9\n')
  args = ['rafdb', '--manual_dir', str(tmp_path / 'raf')]
  assert build.main([*args, '--data_dir', str(tmp_path / 'tfds')]) == 1
  err = capsys.readouterr().err
  assert err.startswith('error: ') and 'list_patition_label.txt:1' in err
  assert 'Traceback' not in err
  assert not build.is_built('rafdb', data_dir=tmp_path / 'tfds')

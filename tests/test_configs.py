"""Config files and the typed `:arg` helper."""

import subprocess
import sys

import pytest

from configs import common
from configs import demo
from tests.conftest import REPO


def test_parse_arg_types_and_bare_flags():
  arg = common.parse_arg(
    'smoke,lr=0.5,variant=b', smoke=False, lr=0.1, variant='a'
  )
  assert arg.smoke is True
  assert arg.lr == 0.5 and isinstance(arg.lr, float)
  assert arg.variant == 'b'
  assert common.parse_arg(None, smoke=False).smoke is False
  assert common.parse_arg('smoke=false', smoke=True).smoke is False


def test_parse_arg_rejects_unknown_and_mistyped():
  with pytest.raises(ValueError, match="'smok'.*valid args: smoke"):
    common.parse_arg('smok', smoke=False)
  with pytest.raises(ValueError, match='steps=.*expected int'):
    common.parse_arg('steps=many', steps=1)


@pytest.mark.parametrize('arg', [None, 'smoke'])
def test_demo_config_is_locked(arg):
  config = demo.get_config(arg)
  config.lock()
  with pytest.raises(AttributeError, match='no_such_field'):
    config.optimizer.no_such_field = 1


def test_run_py_names_an_unknown_override(tmp_path):
  result = subprocess.run(
    [
      sys.executable,
      'run.py',
      '--config=configs/demo.py:smoke',
      f'--workdir={tmp_path}',
      '--config.optimizer.no_such_field=3',
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert result.returncode != 0
  assert 'no_such_field' in result.stderr
  assert not (tmp_path / 'checkpoints').exists()


def test_override_sets_typed_fields_and_names_unknown_ones():
  config = common.base_config().lock()
  common.override(config, 'model.dtype=bfloat16')
  common.override(config, 'data.decoded_cache=true')
  common.override(config, 'batch_size=64')
  common.override(config, 'data.cache_dir=/tmp/x')  # A None placeholder.
  assert config.model.dtype == 'bfloat16' and config.data.decoded_cache is True
  assert config.batch_size == 64 and config.data.cache_dir == '/tmp/x'
  with pytest.raises(ValueError, match='existing config field'):
    common.override(config, 'model.nope=1')
  with pytest.raises(ValueError, match='existing config field'):
    common.override(config, 'model.dtype')
  with pytest.raises(ValueError, match='expected int'):
    common.override(config, 'batch_size=big')
  with pytest.raises(ValueError, match='tuple'):
    common.override(config, 'augment.crop_scale=0.5')


def test_bench_configs_take_overrides():
  from bench import common as bench_common

  config = bench_common.make_config(
    'mfer', smoke=True, overrides=('model.remat=true',)
  )
  assert config.model.remat is True
  assert config.model.dtype == 'float32'  # 'auto' resolved on CPU.

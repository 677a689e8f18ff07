"""Test setup: 8 fake CPU devices, a shared compilation cache, smoke data."""

import copy as copy_lib
import os
import shutil
import tempfile

# Must happen before jax is imported anywhere. Subprocesses inherit these.
os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# Tests and their subprocesses compile the same small programs many times.
os.environ.setdefault(
  'JAX_COMPILATION_CACHE_DIR',
  os.path.join(tempfile.gettempdir(), 'ferjax-test-jax-cache'),
)
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')

import pytest  # noqa: E402
from absl import flags  # noqa: E402

# grain's worker processes read absl flags.
flags.FLAGS.mark_as_parsed()

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='session')
def smoke_data_dir(tmp_path_factory) -> str:
  """A TFDS data_dir holding synthetic_fer/smoke, built once per session."""
  from ferjax.data import build

  data_dir = str(tmp_path_factory.mktemp('tfds'))
  build.build('synthetic_fer', config='smoke', data_dir=data_dir)
  return data_dir


@pytest.fixture(scope='session')
def smoke_run(smoke_data_dir, tmp_path_factory):
  """configs/demo.py:smoke trained to its end (12 steps on 8 devices), once.

  Returns (config, workdir, results of `train.train_and_evaluate`). The
  tests that read a finished smoke run share it; those that may change it
  use `smoke_run_copy`.
  """
  from configs import demo
  from ferjax import train

  config = demo.get_config('smoke')
  config.data.data_dir = smoke_data_dir
  config.checkpoint.async_save = False
  workdir = tmp_path_factory.mktemp('smoke_run')
  results = train.train_and_evaluate(config, str(workdir))
  return config, workdir, results


@pytest.fixture(scope='module')
def smoke_run_copy(smoke_run, tmp_path_factory):
  """`smoke_run` as (config, workdir, results), in a directory of its own.

  One copy per test module; `config` is a copy too.
  """
  config, workdir, results = smoke_run
  copy = tmp_path_factory.mktemp('smoke_run_copy') / 'run'
  shutil.copytree(workdir, copy)
  return copy_lib.deepcopy(config), copy, copy_lib.deepcopy(results)


@pytest.fixture
def smoke_config(smoke_data_dir):
  """configs/demo.py:smoke reading the session's smoke dataset."""
  from configs import demo

  config = demo.get_config('smoke')
  config.data.data_dir = smoke_data_dir
  config.data.auto_build = False
  config.checkpoint.async_save = False
  return config


# The test files that take longest on a cold compilation cache, longest
# first. They run first, so that `make test`'s workers (pytest-xdist,
# --dist loadfile) end with short files and finish together.
SLOW_FILES = (
  'test_remat.py',
  'test_resume_multihost.py',
  'test_manet_configs.py',
  'test_depthwise.py',
  'test_bench.py',
  'test_jadfer_configs.py',
  'test_train.py',
  'test_gcsa_configs.py',
  'test_jadfer.py',
  'test_mfer_torch.py',
  'test_faults.py',
  'test_viz.py',
  'test_manet_torch.py',
  'test_sharding.py',
  'test_irse_torch.py',
  'test_mfer_configs.py',
  'test_mfer.py',
  'test_manet.py',
  'test_gcsa.py',
  'test_device_augment.py',
  'test_sweep.py',
  'test_notebook.py',
  'test_predict.py',
  'test_gcsa_torch.py',
  'test_datasets.py',
)


def pytest_collection_modifyitems(config, items):
  """Puts the files of SLOW_FILES first, in that order (a stable sort)."""
  del config
  rank = {name: i for i, name in enumerate(SLOW_FILES)}
  items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FILES)))

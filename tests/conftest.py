"""Test setup: 8 fake CPU devices, a shared compilation cache, smoke data."""

import os
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
  'test_manet_configs.py',
  'test_resume_multihost.py',
  'test_depthwise.py',
  'test_bench.py',
  'test_jadfer_configs.py',
  'test_gcsa_configs.py',
  'test_viz.py',
  'test_train.py',
  'test_jadfer.py',
  'test_mfer_torch.py',
  'test_mfer_configs.py',
  'test_sharding.py',
  'test_export.py',
  'test_irse_torch.py',
  'test_manet_torch.py',
  'test_device_augment.py',
  'test_manet.py',
  'test_gcsa.py',
  'test_notebook.py',
  'test_predict.py',
  'test_mfer.py',
)


def pytest_collection_modifyitems(config, items):
  """Puts the files of SLOW_FILES first, in that order (a stable sort)."""
  del config
  rank = {name: i for i, name in enumerate(SLOW_FILES)}
  items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FILES)))

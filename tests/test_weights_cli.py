"""`python -m ferjax.weights convert` and training from its directories."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import ferjax
from ferjax.weights import __main__ as cli
from ferjax.weights import saved
from tests.conftest import REPO


@pytest.fixture(scope='module')
def torch_resnet():
  """A width-4 torchvision-layout ResNet-18 with random BN statistics."""
  torch = pytest.importorskip('torch')
  from tests import torch_helpers
  from tests.test_weights_torch import _ResNet18

  torch.manual_seed(0)
  model = _ResNet18(num_classes=7, width=4)
  torch_helpers.randomise_batch_norm(model)
  return model


@pytest.fixture(scope='module')
def pth(torch_resnet, tmp_path_factory):
  import torch

  path = tmp_path_factory.mktemp('pth') / 'resnet18_w4.pth'
  torch.save({'state_dict': torch_resnet.state_dict()}, path)
  return path


@pytest.fixture(scope='module')
def converted(pth, tmp_path_factory):
  """The CLI's output directory for `pth`, converted in a subprocess."""
  out = tmp_path_factory.mktemp('weights') / 'resnet18_w4'
  result = subprocess.run(
    [
      sys.executable,
      '-m',
      'ferjax.weights',
      'convert',
      '--model',
      'resnet18',
      '--src',
      str(pth),
      '--out',
      str(out),
      '--field',
      'width=4',
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 0, result.stderr
  assert str(out) in result.stdout
  return out


def _convert(capsys, *args) -> tuple[int, str]:
  """Runs the CLI in-process: (exit status, stderr)."""
  code = cli.main(['convert', *args])
  return code, capsys.readouterr().err


def _leftovers(parent) -> list[str]:
  return sorted(os.listdir(parent))


def test_save_load_round_trip(tmp_path):
  variables = {
    'params': {'a': {'kernel': np.arange(6, dtype=np.float32).reshape(2, 3)}},
    'batch_stats': {'bn': {'mean': np.ones(3, np.float32)}},
  }
  out = saved.save(variables, tmp_path / 'w', {'model': 'x'})
  assert saved.is_weights_dir(out)
  loaded, meta = saved.load(out)
  assert meta == {'model': 'x'}
  jax.tree.map(np.testing.assert_array_equal, loaded, variables)
  assert _leftovers(tmp_path) == ['w']  # No temporary directory left.
  with pytest.raises(FileExistsError, match='not an empty directory'):
    saved.save(variables, out, {})
  with pytest.raises(FileNotFoundError, match='ferjax.weights convert'):
    saved.load(tmp_path)
  (tmp_path / 'empty').mkdir()  # An empty directory may be the target.
  saved.save(variables, tmp_path / 'empty', {})
  assert saved.is_weights_dir(tmp_path / 'empty')


def test_convert_round_trips_exactly(converted, pth):
  from ferjax import weights

  expected = weights.from_torch('resnet18', pth, width=4)
  loaded, meta = saved.load(converted)
  assert jax.tree.structure(loaded) == jax.tree.structure(expected)
  for got, want in zip(
    jax.tree.leaves(loaded), jax.tree.leaves(expected), strict=True
  ):
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)
  assert meta['model'] == 'resnet18'
  assert meta['num_classes'] == 7
  assert meta['fields'] == {'width': 4}
  assert meta['source'] == pth.name
  assert meta['ferjax_version'] == ferjax.__version__
  with open(converted / saved.META) as f:  # Plain JSON, readable by anyone.
    assert json.load(f) == meta


def test_training_starts_from_a_weights_dir(
  converted, torch_resnet, smoke_config, tmp_path
):
  from ferjax import train

  config = smoke_config  # resnet18, width 4: the converted model.
  assert config.model.name == 'resnet18' and config.model.width == 4
  config.init_from = str(converted)
  run = train.Setup(config, str(tmp_path / 'run'))
  state = train.load_init_from(config, run.state)
  np.testing.assert_array_equal(
    np.asarray(state.params['conv1']['kernel']),
    torch_resnet.conv1.weight.detach().numpy().transpose(2, 3, 1, 0),
  )
  np.testing.assert_array_equal(
    np.asarray(state.model_state['batch_stats']['layer4_1']['bn2']['var']),
    torch_resnet.layer4[1].bn2.running_var.numpy(),
  )
  np.testing.assert_array_equal(
    np.asarray(state.params['fc']['bias']),
    torch_resnet.fc.bias.detach().numpy(),
  )

  # A skipped head keeps this run's init, as with a .pth.
  config.init_from_skip = ('fc.',)
  state = train.load_init_from(config, run.state)
  np.testing.assert_array_equal(
    np.asarray(state.params['fc']['kernel']),
    np.asarray(run.state.params['fc']['kernel']),
  )
  run.checkpointer.close()


def test_unknown_model_writes_nothing(tmp_path, capsys):
  out = tmp_path / 'out'
  code, err = _convert(
    capsys,
    '--model',
    'no_such_net',
    '--src',
    str(tmp_path / 'x.pth'),
    '--out',
    str(out),
  )
  assert code != 0
  assert "No PyTorch converter for model 'no_such_net'" in err
  assert _leftovers(tmp_path) == []


def test_truncated_checkpoint_writes_nothing(pth, tmp_path, capsys):
  data = pth.read_bytes()
  truncated = tmp_path / 'truncated.pth'
  truncated.write_bytes(data[: len(data) // 2])
  code, err = _convert(
    capsys,
    '--model',
    'resnet18',
    '--src',
    str(truncated),
    '--out',
    str(tmp_path / 'out'),
    '--field',
    'width=4',
  )
  assert code != 0
  assert err.startswith('error:') and 'truncated.pth' in err
  assert _leftovers(tmp_path) == ['truncated.pth']


def test_another_architecture_writes_nothing(pth, tmp_path, capsys):
  code, err = _convert(  # A width-4 file is not a width-8 model.
    capsys,
    '--model',
    'resnet18',
    '--src',
    str(pth),
    '--out',
    str(tmp_path / 'out'),
    '--field',
    'width=8',
  )
  assert code != 0
  assert 'shape mismatches: conv1.weight' in err
  assert _leftovers(tmp_path) == []


def test_existing_output_is_refused(tmp_path, capsys):
  out = tmp_path / 'out'
  out.mkdir()
  (out / 'keep.txt').write_text('mine')
  code, err = _convert(
    capsys,
    '--model',
    'resnet18',
    '--src',
    str(tmp_path / 'x.pth'),
    '--out',
    str(out),
  )
  assert code != 0
  assert 'already exists and is not an empty directory' in err
  assert _leftovers(out) == ['keep.txt']
  assert _leftovers(tmp_path) == ['out']

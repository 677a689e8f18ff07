"""Parity of converted PyTorch ResNet-18 weights with a PyTorch forward pass."""

import sys

import jax
import numpy as np
import pytest

from ferjax import models
from ferjax import weights

torch = pytest.importorskip('torch')
nn = torch.nn

from tests import torch_helpers  # noqa: E402  (needs torch)

pytestmark = pytest.mark.torch


class _Block(nn.Module):
  """torchvision's BasicBlock."""

  def __init__(self, cin, cout, stride):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(cout)
    self.relu = nn.ReLU()
    self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(cout)
    self.downsample = None
    if stride != 1 or cin != cout:
      self.downsample = nn.Sequential(
        nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
      )

  def forward(self, x):
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    shortcut = x if self.downsample is None else self.downsample(x)
    return self.relu(out + shortcut)


class _ResNet18(nn.Module):
  """torchvision.models.resnet18's module layout and forward pass."""

  def __init__(self, num_classes, width=64):
    super().__init__()
    self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    self.relu = nn.ReLU()
    self.maxpool = nn.MaxPool2d(3, 2, 1)
    cin = width
    for i in range(4):
      cout = width * 2**i
      blocks = [_Block(cin, cout, 1 if i == 0 else 2), _Block(cout, cout, 1)]
      setattr(self, f'layer{i + 1}', nn.Sequential(*blocks))
      cin = cout
    self.avgpool = nn.AdaptiveAvgPool2d(1)
    self.fc = nn.Linear(cin, num_classes)

  def forward(self, x):
    x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
    x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
    return self.fc(torch.flatten(self.avgpool(x), 1))


@pytest.fixture(scope='module')
def torch_model():
  """A random-init ResNet-18 with random BN affine and running statistics."""
  torch.manual_seed(0)
  model = _ResNet18(num_classes=7)
  torch_helpers.randomise_batch_norm(model)
  with torch.no_grad():
    # Logits of order one, so that the tolerance below means something.
    model.fc.weight.normal_(0.0, 0.5)
  return model.eval()


def _numpy_state_dict(model):
  return {k: v.numpy() for k, v in model.state_dict().items()}


def test_logits_match_torch(torch_model, tmp_path):
  # A DataParallel training checkpoint: wrapped, prefixed, with counters.
  state_dict = {f'module.{k}': v for k, v in torch_model.state_dict().items()}
  assert any(k.endswith('num_batches_tracked') for k in state_dict)
  path = tmp_path / 'resnet18.pth.tar'
  torch.save({'state_dict': state_dict, 'epoch': 3}, path)

  variables = weights.from_torch('resnet18', path, num_classes=7)
  assert set(variables) == {'params', 'batch_stats'}
  for leaf in jax.tree.leaves(variables):
    assert isinstance(leaf, np.ndarray)
    assert leaf.dtype == np.float32

  images = np.random.default_rng(0).uniform(size=(2, 64, 64, 3))
  images = images.astype(np.float32)
  with torch.no_grad():
    expected = torch_model(torch.from_numpy(images.transpose(0, 3, 1, 2)))
  model = models.get_model('resnet18', num_classes=7)
  logits = jax.jit(model.apply)(variables, images)['logits']
  assert np.abs(expected.numpy()).max() > 1.0
  np.testing.assert_allclose(logits, expected.numpy(), rtol=0, atol=1e-4)


def test_missing_key_is_named(torch_model):
  state_dict = _numpy_state_dict(torch_model)
  del state_dict['layer1.0.conv1.weight']
  with pytest.raises(ValueError, match='params/layer1_0/conv1/kernel'):
    weights.from_torch('resnet18', state_dict)


def test_unexpected_key_is_named(torch_model):
  state_dict = dict(torch_model.state_dict())  # torch tensors
  state_dict['layer5.0.conv1.weight'] = torch.zeros(8, 8, 3, 3)
  with pytest.raises(ValueError, match=r'layer5\.0\.conv1\.weight'):
    weights.from_torch('resnet18', state_dict)


def test_shape_mismatch_is_named(torch_model):
  with pytest.raises(ValueError, match=r'shape mismatches: conv1\.weight'):
    weights.from_torch('resnet18', _numpy_state_dict(torch_model), width=32)


def test_head_of_another_size(torch_model):
  state_dict = _numpy_state_dict(torch_model)
  with pytest.raises(ValueError, match=r"7 outputs.*ignore=\('fc\.',\)"):
    weights.from_torch('resnet18', state_dict, num_classes=5)

  variables = weights.from_torch(
    'resnet18', state_dict, num_classes=5, ignore=('fc.',)
  )
  params = variables['params']
  assert params['fc']['kernel'].shape == (512, 5)
  assert np.abs(params['fc']['kernel']).max() <= 1 / np.sqrt(512)
  np.testing.assert_array_equal(
    params['conv1']['kernel'],
    state_dict['conv1.weight'].transpose(2, 3, 1, 0),
  )
  np.testing.assert_array_equal(
    variables['batch_stats']['layer2_0']['downsample_1']['var'],
    state_dict['layer2.0.downsample.1.running_var'],
  )


def test_bad_requests(tmp_path, monkeypatch):
  with pytest.raises(ValueError, match='converters exist for: .*resnet18'):
    weights.from_torch('unknown_net', {})
  with pytest.raises(FileNotFoundError, match='absent.pth'):
    weights.from_torch('resnet18', tmp_path / 'absent.pth')
  monkeypatch.setitem(sys.modules, 'torch', None)
  with pytest.raises(ImportError, match=r'ferjax\[torch\]'):
    weights.from_torch('resnet18', tmp_path / 'absent.pth')


def test_training_starts_from_a_pth_with_a_new_head(smoke_config, tmp_path):
  """config.init_from=<.pth>: backbone from PyTorch, a fresh 7-class fc."""
  from ferjax import train

  torch.manual_seed(1)
  source = _ResNet18(num_classes=1000, width=4)
  path = tmp_path / 'imagenet_like.pth'
  torch.save({'state_dict': source.state_dict()}, path)
  config = smoke_config
  config.init_from = str(path)
  config.init_from_skip = ('fc.',)
  run = train.Setup(config, str(tmp_path / 'run'))
  state = train.load_init_from(config, run.state)
  np.testing.assert_array_equal(
    np.asarray(state.params['conv1']['kernel']),
    source.conv1.weight.detach().numpy().transpose(2, 3, 1, 0),
  )
  np.testing.assert_array_equal(
    np.asarray(state.model_state['batch_stats']['layer4_1']['bn2']['var']),
    source.layer4[1].bn2.running_var.numpy(),
  )
  assert state.params['fc']['kernel'].shape == (32, 7)
  np.testing.assert_array_equal(  # The head keeps its fresh init.
    np.asarray(state.params['fc']['kernel']),
    np.asarray(run.state.params['fc']['kernel']),
  )
  run.checkpointer.close()

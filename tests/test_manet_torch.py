"""Parity of converted PyTorch MA-Net weights with a PyTorch forward pass.

The PyTorch model below follows the module names and the forward pass of the
official MA-Net code (both orders of the multi-scale block's second cascade);
it cuts the layer2 map at half its size, which is the official 0:14/14:28 at
224 px, so that small inputs keep the test fast.
"""

import jax
import numpy as np
import pytest

from ferjax import models
from ferjax import weights
from ferjax.weights import manet as manet_weights

torch = pytest.importorskip('torch')
nn = torch.nn

from tests import torch_helpers  # noqa: E402  (needs torch)

pytestmark = pytest.mark.torch


def _conv3(cin, cout, stride=1):
  return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)


def _downsample(cin, cout, stride):
  if stride == 1 and cin == cout:
    return None
  return nn.Sequential(
    nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
  )


class _ChannelGate(nn.Module):
  def __init__(self, channels):
    super().__init__()
    self.mlp = nn.Sequential(
      nn.Flatten(),
      nn.Linear(channels, channels // 16),
      nn.ReLU(),
      nn.Linear(channels // 16, channels),
    )

  def forward(self, x):
    att = self.mlp(x.mean((2, 3))) + self.mlp(x.amax((2, 3)))
    return x * torch.sigmoid(att)[:, :, None, None]


class _BasicConv(nn.Module):
  def __init__(self):
    super().__init__()
    self.conv = nn.Conv2d(2, 1, 7, 1, 3, bias=False)
    self.bn = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01)

  def forward(self, x):
    return self.bn(self.conv(x))


class _SpatialGate(nn.Module):
  def __init__(self):
    super().__init__()
    self.spatial = _BasicConv()

  def forward(self, x):
    pooled = torch.cat([x.amax(1, keepdim=True), x.mean(1, keepdim=True)], 1)
    return x * torch.sigmoid(self.spatial(pooled))


class _CBAM(nn.Module):
  def __init__(self, channels):
    super().__init__()
    self.ChannelGate = _ChannelGate(channels)
    self.SpatialGate = _SpatialGate()

  def forward(self, x):
    return self.SpatialGate(self.ChannelGate(x))


class _Block(nn.Module):
  """BasicBlock, or AttentionBlock with `attention=True`."""

  def __init__(self, cin, cout, stride, attention=False):
    super().__init__()
    self.conv1 = _conv3(cin, cout, stride)
    self.bn1 = nn.BatchNorm2d(cout)
    self.conv2 = _conv3(cout, cout)
    self.bn2 = nn.BatchNorm2d(cout)
    self.downsample = _downsample(cin, cout, stride)
    self.cbam = _CBAM(cout) if attention else None

  def forward(self, x):
    out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
    if self.cbam is not None:
      out = self.cbam(out)
    shortcut = x if self.downsample is None else self.downsample(x)
    return torch.relu(out + shortcut)


class _MulScaleBlock(nn.Module):
  def __init__(self, cin, cout, stride, direction):
    super().__init__()
    self.direction = direction
    self.width = cout // 4
    self.conv1 = _conv3(cin, cout, stride)
    self.bn1 = nn.BatchNorm2d(cout)
    for path in (1, 2):
      for k in range(1, 5):
        setattr(self, f'conv{path}_2_{k}', _conv3(self.width, self.width))
        setattr(self, f'bn{path}_2_{k}', nn.BatchNorm2d(self.width))
    self.downsample = _downsample(cin, cout, stride)

  def _cascade(self, path, groups, order):
    out, prev = {}, None
    for k in order:
      y = groups[k - 1] if prev is None else torch.relu(prev) + groups[k - 1]
      conv = getattr(self, f'conv{path}_2_{k}')
      prev = out[k] = getattr(self, f'bn{path}_2_{k}')(conv(y))
    return torch.cat([out[k] for k in (1, 2, 3, 4)], 1)

  def forward(self, x):
    groups = torch.split(torch.relu(self.bn1(self.conv1(x))), self.width, 1)
    order = (1, 2, 3, 4) if self.direction == 'same' else (4, 3, 2, 1)
    out = self._cascade(1, groups, (1, 2, 3, 4)) + self._cascade(
      2, groups, order
    )
    shortcut = x if self.downsample is None else self.downsample(x)
    return torch.relu(out + shortcut)


def _layer(block, cin, cout, stride, **kwargs):
  return nn.Sequential(
    block(cin, cout, stride, **kwargs), block(cout, cout, 1, **kwargs)
  )


class _MANet(nn.Module):
  """Module names and forward pass of the official MANet."""

  def __init__(self, num_classes, direction):
    super().__init__()
    self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(64)
    self.maxpool = nn.MaxPool2d(3, 2, 1)
    self.layer1 = _layer(_Block, 64, 64, 1)
    self.layer2 = _layer(_Block, 64, 128, 2)
    for p in range(1, 5):
      setattr(
        self, f'layer3_1_p{p}', _layer(_Block, 128, 256, 2, attention=True)
      )
      setattr(
        self, f'layer4_1_p{p}', _layer(_Block, 256, 512, 1, attention=True)
      )
    self.layer3_2 = _layer(_MulScaleBlock, 128, 256, 2, direction=direction)
    self.layer4_2 = _layer(_MulScaleBlock, 256, 512, 2, direction=direction)
    self.fc_1 = nn.Linear(512, num_classes)
    self.fc_2 = nn.Linear(512, num_classes)

  def forward(self, x):
    x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
    x = self.layer2(self.layer1(x))
    h, w = x.shape[2] // 2, x.shape[3] // 2
    patches = [
      x[:, :, :h, :w],
      x[:, :, :h, w:],
      x[:, :, h:, :w],
      x[:, :, h:, w:],
    ]
    outs = []
    for p, patch in enumerate(patches, 1):
      patch = getattr(self, f'layer3_1_p{p}')(patch)
      outs.append(getattr(self, f'layer4_1_p{p}')(patch))
    local = torch.cat([torch.cat(outs[:2], 3), torch.cat(outs[2:], 3)], 2)
    local = self.fc_1(local.mean((2, 3)))
    glob = self.fc_2(self.layer4_2(self.layer3_2(x)).mean((2, 3)))
    return local, glob


class _ResNet18(nn.Module):
  """torchvision.models.resnet18's module names (1000-class head)."""

  def __init__(self):
    super().__init__()
    self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(64)
    self.maxpool = nn.MaxPool2d(3, 2, 1)
    for i, (cin, cout) in enumerate(
      ((64, 64), (64, 128), (128, 256), (256, 512))
    ):
      setattr(
        self, f'layer{i + 1}', _layer(_Block, cin, cout, 1 if i == 0 else 2)
      )
    self.fc = nn.Linear(512, 1000)

  def layer2_map(self, x):
    x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
    return self.layer2(self.layer1(x))


def _randomise(model, seed):
  """Random BN affine and running statistics; logits of order one."""
  torch.manual_seed(seed)
  torch_helpers.randomise_batch_norm(model)
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, nn.Linear) and m.out_features > 1:
        m.bias.normal_(0.0, 0.1)
    model.fc_1.weight.normal_(0.0, 1.0)
    model.fc_2.weight.normal_(0.0, 1.0)
  return model.eval()


@pytest.fixture(scope='module')
def torch_models():
  models_ = {}
  for seed, direction in enumerate(('same', 'reverse')):
    torch.manual_seed(seed)  # Independent of the tests run before.
    models_[direction] = _randomise(_MANet(7, direction), seed=seed)
  return models_


def _numpy_state_dict(model):
  return {k: v.numpy() for k, v in model.state_dict().items()}


def _images(height=48, width=64):
  rng = np.random.default_rng(0)
  return rng.uniform(size=(2, height, width, 3)).astype(np.float32)


def _torch_forward(model, images):
  with torch.no_grad():
    return model(torch.from_numpy(images.transpose(0, 3, 1, 2)))


@pytest.mark.parametrize(
  ('direction', 'counters'), [('same', True), ('reverse', False)]
)
def test_logits_match_torch(torch_models, tmp_path, direction, counters):
  """A DataParallel checkpoint with or without num_batches_tracked."""
  torch_model = torch_models[direction]
  state_dict = {
    f'module.{k}': v
    for k, v in torch_model.state_dict().items()
    if counters or not k.endswith('num_batches_tracked')
  }
  path = tmp_path / 'manet.pth.tar'
  torch.save({'state_dict': state_dict, 'epoch': 7}, path)

  variables = weights.from_torch('manet', path, num_classes=7)
  for leaf in jax.tree.leaves(variables):
    assert leaf.dtype == np.float32

  # 48x64: a 6x8 layer2 map cut into 3x4 patches (odd stride-2 inputs).
  images = _images()
  local, glob = (t.numpy() for t in _torch_forward(torch_model, images))
  model = models.get_model('manet', num_classes=7, direction=direction)
  out = model.apply(variables, images)
  assert np.abs(local).max() > 1.0 and np.abs(glob).max() > 1.0
  np.testing.assert_allclose(out['logits_local'], local, rtol=0, atol=1e-4)
  np.testing.assert_allclose(out['logits_global'], glob, rtol=0, atol=1e-4)
  np.testing.assert_allclose(
    out['logits'], 0.6 * local + 0.4 * glob, rtol=0, atol=1e-4
  )
  other = 'reverse' if direction == 'same' else 'same'
  wrong = models.get_model('manet', direction=other).apply(variables, images)
  assert np.abs(wrong['logits_global'] - glob).max() > 1e-2


def _cheap_init(num_classes=7):
  """Random MA-Net variables without the (slow to compile) real init."""
  model = models.get_model('manet', num_classes=num_classes)
  template = jax.eval_shape(
    model.init,
    jax.random.key(0),
    jax.ShapeDtypeStruct((1, 32, 32, 3), np.float32),
  )
  rng = np.random.default_rng(1)
  return jax.tree.map(
    lambda s: rng.normal(0.0, 0.01, s.shape).astype(np.float32), template
  )


def test_heads_of_another_size_are_reinitialised(torch_models):
  state_dict = _numpy_state_dict(torch_models['same'])
  variables, report = manet_weights.convert(state_dict, num_classes=5)
  assert report.heads_reinitialised
  assert report.source == 'manet'
  assert report.initialised == ('fc_1', 'fc_2')
  assert set(report.unused) == {
    'fc_1.weight',
    'fc_1.bias',
    'fc_2.weight',
    'fc_2.bias',
  }
  assert 'fc_1' in report.summary() and 're-initialised' in report.summary()
  params = variables['params']
  assert params['fc_1']['kernel'].shape == (512, 5)
  assert np.abs(params['fc_2']['kernel']).max() <= 512**-0.5
  np.testing.assert_array_equal(
    params['layer3_2_0']['conv2_2_4']['kernel'],
    state_dict['layer3_2.0.conv2_2_4.weight'].transpose(2, 3, 1, 0),
  )
  np.testing.assert_array_equal(
    variables['batch_stats']['layer4_1_p2_1']['cbam']['SpatialGate']['spatial'][
      'bn'
    ]['var'],
    state_dict['layer4_1_p2.1.cbam.SpatialGate.spatial.bn.running_var'],
  )


def test_one_branch_leaves_the_other_unused(torch_models):
  state_dict = _numpy_state_dict(torch_models['same'])
  variables, report = manet_weights.convert(state_dict, branches='global')
  local = {
    k
    for k in state_dict
    if k.startswith(manet_weights.BRANCH_LAYERS['local'])
    and not k.endswith('num_batches_tracked')
  }
  assert set(report.unused) == local and report.initialised == ()
  assert 'fc_1' not in variables['params']
  np.testing.assert_array_equal(
    variables['params']['fc_2']['kernel'], state_dict['fc_2.weight'].T
  )


def test_resnet18_front(torch_models):
  torch.manual_seed(3)
  resnet = _ResNet18()
  with torch.no_grad():
    for m in resnet.modules():
      if isinstance(m, nn.BatchNorm2d):
        m.running_mean.normal_(0.0, 0.1)
        m.running_var.uniform_(0.5, 2.0)
        m.weight.uniform_(0.5, 1.5)
  resnet.eval()
  state_dict = resnet.state_dict()

  # As a whole MA-Net it is refused, naming the way out.
  with pytest.raises(ValueError, match=r"ResNet-18.*source='resnet18'"):
    weights.from_torch('manet', state_dict)

  init = _cheap_init()
  variables = weights.from_torch(
    'manet', state_dict, source='resnet18', init_variables=init
  )
  _, report = manet_weights.convert(
    state_dict, source='auto', init_variables=init
  )
  assert report.source == 'resnet18'
  assert {k.split('.')[0] for k in report.unused} == {
    'layer3',
    'layer4',
    'fc',
  }
  assert len(report.loaded) == sum(
    k.startswith(('conv1.', 'bn1.', 'layer1.', 'layer2.'))
    and not k.endswith('num_batches_tracked')
    for k in state_dict
  )
  assert 'layer3_1_p1_0' in report.initialised
  assert 'layer2_0' not in report.initialised
  # MA-Net's own layers keep the given init.
  np.testing.assert_array_equal(
    variables['params']['layer3_2_0']['conv1']['kernel'],
    init['params']['layer3_2_0']['conv1']['kernel'],
  )

  images = _images(32, 32)
  with torch.no_grad():
    x = torch.from_numpy(images.transpose(0, 3, 1, 2))
    expected = resnet.layer2_map(x).numpy().transpose(0, 2, 3, 1)
  _, state = models.get_model('manet').apply(
    variables, images, mutable=['intermediates']
  )
  (layer2,) = state['intermediates']['layer2']
  assert np.abs(expected).max() > 0.1
  np.testing.assert_allclose(layer2, expected, rtol=0, atol=1e-4)


def test_errors(torch_models, tmp_path):
  state_dict = _numpy_state_dict(torch_models['same'])

  missing = dict(state_dict)
  del missing['layer4_2.1.bn2_2_3.running_mean']
  with pytest.raises(ValueError, match=r'batch_stats/layer4_2_1/bn2_2_3/mean'):
    weights.from_torch('manet', missing)

  extra = dict(state_dict)
  extra['layer5.0.conv1.weight'] = np.zeros((8, 8, 3, 3), np.float32)
  with pytest.raises(ValueError, match=r'lacks: layer5\.0\.conv1\.weight'):
    weights.from_torch('manet', extra)

  bad = dict(state_dict)
  bad['layer3_1_p2.0.cbam.ChannelGate.mlp.1.weight'] = np.zeros(
    (8, 256), np.float32
  )
  with pytest.raises(
    ValueError,
    match=r'shape mismatches: layer3_1_p2\.0\.cbam\.ChannelGate\.mlp\.1\.w',
  ):
    weights.from_torch('manet', bad)

  with pytest.raises(ValueError, match='neither an MA-Net'):
    weights.from_torch('manet', {'features.0.weight': np.zeros((3, 3))})
  with pytest.raises(ValueError, match="pass source='manet'"):
    weights.from_torch('manet', state_dict, source='resnet18')
  with pytest.raises(ValueError, match="source='sideways'"):
    weights.from_torch('manet', state_dict, source='sideways')

  path = tmp_path / 'manet.pth'
  torch.save({'state_dict': torch_models['same'].state_dict()}, path)
  truncated = tmp_path / 'truncated.pth'
  truncated.write_bytes(path.read_bytes()[:100_000])
  with pytest.raises(
    ValueError, match=r'truncated\.pth.*not a readable PyTorch checkpoint'
  ):
    weights.from_torch('manet', truncated)

  # A pickled object needs full unpickling, which weights_only refuses.
  pickled = tmp_path / 'pickled.pth'
  torch.save({'state_dict': {}, 'args': _Pickled()}, pickled)
  with pytest.raises(
    ValueError, match=r'pickled Python objects.*weights_only=True'
  ):
    weights.from_torch('manet', pickled)


class _Pickled:
  """A custom object that `torch.load(weights_only=True)` does not load."""

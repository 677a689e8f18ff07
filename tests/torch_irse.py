"""A PyTorch IR / IR-SE network with face.evoLVe's module names, for tests.

Written for the parity tests from the layout of face.evoLVe's
`backbone/model_irse.py` (import only after `pytest.importorskip('torch')`):
`input_layer` (conv, BN, PReLU), `body` (one Sequential of all units, each
with `shortcut_layer` and `res_layer`) and `output_layer` (BN, Dropout,
Flatten, Linear, BN1d), so that its state_dict has the checkpoints' keys.
"""

import torch
from torch import nn

from tests import torch_helpers

UNITS = {50: (3, 4, 14, 3), 100: (3, 13, 30, 3), 152: (3, 8, 36, 3)}
DEPTHS = (64, 128, 256, 512)


class SqueezeExcite(nn.Module):
  def __init__(self, channels, reduction=16):
    super().__init__()
    self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
    self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)

  def forward(self, x):
    gate = self.fc2(torch.relu(self.fc1(x.mean((2, 3), keepdim=True))))
    return x * torch.sigmoid(gate)


class Unit(nn.Module):
  """bottleneck_IR, or bottleneck_IR_SE with `se=True`."""

  def __init__(self, cin, depth, stride, se):
    super().__init__()
    if cin == depth:
      self.shortcut_layer = nn.MaxPool2d(1, stride)
    else:
      self.shortcut_layer = nn.Sequential(
        nn.Conv2d(cin, depth, 1, stride, bias=False), nn.BatchNorm2d(depth)
      )
    layers = [
      nn.BatchNorm2d(cin),
      nn.Conv2d(cin, depth, 3, 1, 1, bias=False),
      nn.PReLU(depth),
      nn.Conv2d(depth, depth, 3, stride, 1, bias=False),
      nn.BatchNorm2d(depth),
    ]
    if se:
      layers.append(SqueezeExcite(depth))
    self.res_layer = nn.Sequential(*layers)

  def forward(self, x):
    return self.res_layer(x) + self.shortcut_layer(x)


class Backbone(nn.Module):
  """The whole network; `trunk(x, stages)` stops after a stage."""

  def __init__(self, num_layers=50, mode='ir', input_size=112):
    super().__init__()
    self.input_layer = nn.Sequential(
      nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64)
    )
    units, cin = [], 64
    for count, depth in zip(UNITS[num_layers], DEPTHS, strict=True):
      for j in range(count):
        units.append(Unit(cin, depth, 2 if j == 0 else 1, mode == 'ir_se'))
        cin = depth
    self.body = nn.Sequential(*units)
    side = input_size // 16
    self.output_layer = nn.Sequential(
      nn.BatchNorm2d(512),
      nn.Dropout(),
      nn.Flatten(),
      nn.Linear(512 * side * side, 512),
      nn.BatchNorm1d(512),
    )
    self.units = UNITS[num_layers]

  def trunk(self, x, stages=4):
    return self.body[: sum(self.units[:stages])](self.input_layer(x))

  def forward(self, x):
    return self.output_layer(self.trunk(x))


def randomise(model, seed):
  """Random BN affines and statistics (BN1d too) and PReLU slopes."""
  torch.manual_seed(seed)
  torch_helpers.randomise_batch_norm(model)
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, nn.BatchNorm1d):
        m.weight.uniform_(0.5, 1.5)
        m.bias.normal_(0.0, 0.1)
        m.running_mean.normal_(0.0, 0.1)
        m.running_var.uniform_(0.5, 2.0)
      elif isinstance(m, nn.PReLU):
        m.weight.uniform_(-0.2, 0.6)
  return model.eval()

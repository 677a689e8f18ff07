"""A PyTorch IAL in the official module layout, for parity tests.

Written from the structure that `ferjax.models.gcsa` documents; only the
state_dict names and the eval forward pass matter, so there is no init
scheme (tests randomise the weights) and no dropout. The names are those of
IAL's `GenerateModel` (`s_former.*`, `fc_f.*`), its unused parameters
included (`s_former.bias`, every block's `bias1`, `bias2`, `glb`, and the
attention layers of the 64-channel block), so that the full-size
state_dict has IAL's 19,083,527 entries. The frame count and size are
arguments: IAL fixes 16 frames of 112 px, where its global-conv kernels
256 // C * 7 are the side of each stage's map, which is what this model
computes for any size. Inputs are (B, T, 3, H, W) clips in [0, 1]. Import
only after `pytest.importorskip('torch')`.
"""

import math

import torch
from torch import nn
from torch.nn import functional as F

from tests import torch_helpers


def map_sides(image_size: int) -> dict[str, int]:
  """Sides of the maps after the stem's conv and pool and after each stage.

  Each of these steps halves the side, rounding up (3x3 stride-2 convs and
  max-pool with padding 1).
  """
  sides, side = {}, image_size
  for name in ('conv1', 'maxpool', 'layer2', 'layer3', 'layer4'):
    side = math.ceil(side / 2)
    sides[name] = side
  sides['layer1'] = sides['maxpool']
  return sides


class Residual(nn.Module):
  def __init__(self, fn):
    super().__init__()
    self.fn = fn

  def forward(self, x):
    return x + self.fn(x)


class PreNorm(nn.Module):
  def __init__(self, dim, fn):
    super().__init__()
    self.norm = nn.LayerNorm(dim)
    self.fn = fn

  def forward(self, x):
    return self.fn(self.norm(x))


class SelfAttention(nn.Module):
  def __init__(self, dim, heads, dim_head):
    super().__init__()
    self.heads, self.dim_head = heads, dim_head
    self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
    self.to_out = nn.Sequential(nn.Linear(heads * dim_head, dim))

  def forward(self, x):
    b, n, _ = x.shape
    q, k, v = (
      self.to_qkv(x)
      .view(b, n, 3, self.heads, self.dim_head)
      .permute(2, 0, 3, 1, 4)
    )
    scores = q @ k.transpose(-1, -2) / math.sqrt(self.dim_head)
    out = torch.softmax(scores, dim=-1) @ v
    return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class TanhGELU(nn.Module):
  def forward(self, x):
    return F.gelu(x, approximate='tanh')


class MLP(nn.Module):
  def __init__(self, dim, hidden):
    super().__init__()
    self.net = nn.Sequential(
      nn.Linear(dim, hidden), TanhGELU(), nn.Identity(), nn.Linear(hidden, dim)
    )

  def forward(self, x):
    return self.net(x)


class Transformer(nn.Module):
  def __init__(self, dim, depth, heads, dim_head, mlp_dim):
    super().__init__()
    self.layers = nn.ModuleList(
      nn.ModuleList(
        [
          Residual(PreNorm(dim, SelfAttention(dim, heads, dim_head))),
          Residual(PreNorm(dim, MLP(dim, mlp_dim))),
        ]
      )
      for _ in range(depth)
    )

  def forward(self, x):
    for attention, mlp in self.layers:
      x = mlp(attention(x))
    return x


def conv_bn(cin, cout, stride):
  """1x1 conv + BN: the shortcut of a block that changes stride or width."""
  return nn.Sequential(
    nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
  )


class PlainBlock(nn.Module):
  """conv3x3-BN-ReLU-conv3x3-BN (+ optional attention) + shortcut, ReLU."""

  def __init__(self, cin, cout, stride):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(cout)
    self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(cout)
    self.downsample = (
      conv_bn(cin, cout, stride) if stride != 1 or cin != cout else None
    )

  def attend(self, y):
    return y, None

  def forward(self, x):
    y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
    y, aux = self.attend(y)
    shortcut = x if self.downsample is None else self.downsample(x)
    return F.relu(y + shortcut), aux


class GCABlock(PlainBlock):
  """IAL's block: GCA when it has more than 64 channels, dead layers always."""

  def __init__(self, cin, cout, stride, side, frames, classes):
    super().__init__(cin, cout, stride)
    self.frames = frames
    self.bias1 = nn.Parameter(torch.zeros(1, cout, 1, 1))
    self.bias2 = nn.Parameter(torch.zeros(1, cout, 1, 1))
    self.AUX_fc = nn.Sequential(
      nn.Linear(cout, 2 * cout, bias=False),
      nn.Linear(2 * cout, classes, bias=False),
    )
    self.glb = nn.Conv2d(cout, cout, 1, bias=False)
    self.gc = nn.Sequential(
      nn.Conv2d(cout, cout, side, groups=cout, bias=False)
    )
    self.fc1 = nn.Sequential(
      nn.Conv2d(cout, cout // 16, 1, bias=False), nn.ReLU()
    )
    self.fc2 = nn.Sequential(
      nn.Conv2d(cout // 16, cout, 1, bias=False), nn.Sigmoid()
    )

  def attend(self, y):
    if y.shape[1] <= 64:
      return y, None
    n, c = y.shape[:2]
    g = self.gc(y)  # (N, C, 1, 1)
    clips = g.view(n // self.frames, self.frames, c)
    aux = self.AUX_fc(clips.mean(1))
    w = 2 * self.fc2(self.fc1(g)).view(n // self.frames, self.frames, c)
    w = torch.sqrt(w * w.mean(1, keepdim=True) + 1e-5)
    return y * w.reshape(n, c, 1, 1), aux


class Backbone(nn.Module):
  """IAL's `s_former`: stem, stages, dynamic-static fusion, transformer."""

  def __init__(self, frames, image_size, classes):
    super().__init__()
    sides = map_sides(image_size)
    self.frames = frames
    self.conv1 = nn.Sequential(
      nn.Conv2d(3, 64, 3, 2, 1, bias=False),
      nn.BatchNorm2d(64),
      nn.ReLU(),
      nn.Conv2d(64, 64, 3, 1, 1, bias=False),
    )
    self.bn1 = nn.BatchNorm2d(64)
    self.bias = nn.Parameter(torch.zeros(1, 64, 1, 1))

    def gca(name, cin, cout, stride):
      block = GCABlock(cin, cout, stride, sides[name], frames, classes)
      return nn.Sequential(block)

    self.layer1 = gca('layer1', 64, 64, 1)
    self.layer2 = gca('layer2', 64, 128, 2)
    self.layer3 = gca('layer3', 128, 256, 2)
    self.layer4 = nn.Sequential(
      PlainBlock(256, 256, 2), PlainBlock(256, 256, 1), PlainBlock(256, 256, 1)
    )
    self.patch_embedding = nn.Sequential(
      nn.Conv2d(256, 256, 3, 2, 1, bias=False), nn.BatchNorm2d(256), nn.ReLU()
    )
    patches = sides['layer4'] ** 2
    self.pos_transformer = Transformer(256, 2, 4, 32, 256)
    self.pos_embedding_pos = nn.Parameter(torch.zeros(1, patches, 256))
    dim = 256 * patches
    self.temporal_transformer = Transformer(dim, 2, 4, 32, 512)
    self.pos_embedding = nn.Parameter(torch.zeros(1, frames, dim))

  def forward(self, clips):
    t = self.frames
    x = clips.reshape(-1, *clips.shape[2:])
    x = F.relu(self.bn1(self.conv1(x)))
    x = F.max_pool2d(x, 3, 2, 1)
    x, _ = self.layer1[0](x)
    x, aux2 = self.layer2[0](x)
    x, aux3 = self.layer3[0](x)
    maps = x.view(-1, t, *x.shape[1:])
    dynamic = (maps[:, 1:] - maps[:, :-1]).reshape(-1, *x.shape[1:])
    for block in self.layer4:
      dynamic, _ = block(dynamic)
    static = self.patch_embedding(maps[:, :-1].reshape(-1, *x.shape[1:]))
    n, c, h, w = static.shape
    tokens = static.flatten(2).transpose(1, 2) + self.pos_embedding_pos
    static = self.pos_transformer(tokens).transpose(1, 2).reshape(n, c, h, w)
    fused = (static + dynamic).reshape(-1, t - 1, c * h * w)
    out = self.temporal_transformer(fused + self.pos_embedding[:, : t - 1])
    return out, aux2, aux3


class IAL(nn.Module):
  """IAL's `GenerateModel`: returns (logits, features, aux2, aux3)."""

  def __init__(self, frames=16, image_size=112, classes=7):
    super().__init__()
    self.s_former = Backbone(frames, image_size, classes)
    dim = self.s_former.pos_embedding.shape[-1]
    self.fc_f = nn.Linear(dim, classes)

  def forward(self, clips):
    tokens, aux2, aux3 = self.s_former(clips)
    features = tokens.mean(1)
    return self.fc_f(features), features, aux2, aux3


def randomise(model: nn.Module, seed: int) -> nn.Module:
  """Weights of scale 1 / sqrt(fan_in), random norms and positions.

  Activations stay of order one, and every LayerNorm and BatchNorm affine
  and running statistic differs from its trivial init, so converting them
  matters. Returns the model in eval mode.
  """
  torch.manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if 'pos_embedding' in name:
        p.normal_(0.0, 1.0)
      elif p.ndim == 1 and name.endswith('weight'):  # LayerNorm scale
        p.normal_(1.0, 0.2)
      elif p.ndim == 1 or name.endswith(('bias1', 'bias2', 'bias')):
        p.normal_(0.0, 0.1)
      else:  # (out, in, ...): fan_in is the size of one output's slice
        p.normal_(0.0, p[0].numel() ** -0.5)
  torch_helpers.randomise_batch_norm(model)
  return model.eval()

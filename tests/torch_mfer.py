"""A PyTorch MFER / ConvNeXt in the official module layout, for parity tests.

Written from the equations in `ferjax.models.mfer` and
`ferjax.layers.ds_attention`; only the state_dict names and the forward pass
matter, so there is no stochastic depth and no init scheme (tests randomise
the weights). Inputs are already normalised NCHW tensors. Import only after
`pytest.importorskip('torch')`.
"""

import torch
from torch import nn
from torch.nn import functional as F


class ChannelsFirstNorm(nn.Module):
  """LayerNorm over the channel axis of NCHW maps."""

  def __init__(self, dim, eps=1e-6):
    super().__init__()
    self.weight = nn.Parameter(torch.ones(dim))
    self.bias = nn.Parameter(torch.zeros(dim))
    self.eps = eps

  def forward(self, x):
    x = F.layer_norm(
      x.permute(0, 2, 3, 1), x.shape[1:2], self.weight, self.bias, self.eps
    )
    return x.permute(0, 3, 1, 2)


class Block(nn.Module):
  """dwconv 7x7 -> LN -> Linear 4C -> GELU -> Linear C -> gamma, + input."""

  def __init__(self, dim):
    super().__init__()
    self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
    self.norm = nn.LayerNorm(dim, eps=1e-6)
    self.pwconv1 = nn.Linear(dim, 4 * dim)
    self.pwconv2 = nn.Linear(4 * dim, dim)
    self.gamma = nn.Parameter(torch.full((dim,), 1e-6))

  def forward(self, x):
    y = self.dwconv(x).permute(0, 2, 3, 1)
    y = self.pwconv2(F.gelu(self.pwconv1(self.norm(y))))
    return x + (self.gamma * y).permute(0, 3, 1, 2)


class DSAttention(nn.Module):
  """softmax_HW(Q + K) * V (+ x), per channel, in every variant."""

  def __init__(self, dim, conv='dense', order='code', residual=True, k=7):
    super().__init__()
    self.key = nn.Sequential(
      nn.Linear(dim, dim // 8), nn.GELU(), nn.Linear(dim // 8, dim)
    )
    self.value = nn.Linear(dim, dim)
    groups = dim if conv == 'depthwise' else 1
    self.attn = nn.Conv2d(dim, dim, k, padding=k // 2, groups=groups)
    self.norm = nn.LayerNorm(dim)
    self.order, self.residual = order, residual

  def forward(self, x):
    tokens = x.permute(0, 2, 3, 1)  # (B, H, W, C)
    value = self.value(tokens)
    key = self.key(tokens) * tokens
    query = self.attn(x).permute(0, 2, 3, 1)
    if self.order == 'code':
      query = self.norm(F.gelu(query))
    else:
      query = F.gelu(self.norm(query))
    b, h, w, c = tokens.shape
    weights = torch.softmax((query + key).reshape(b, h * w, c), dim=1)
    out = (weights.reshape(b, h, w, c) * value).permute(0, 3, 1, 2)
    return out + x if self.residual else out


class MscHead(nn.Module):
  def __init__(self, dim, num_classes):
    super().__init__()
    self.fc1 = nn.Linear(dim, dim)
    self.fc2 = nn.Linear(dim, num_classes)

  def forward(self, x):
    return self.fc2(F.gelu(self.fc1(x)))


class ConvNeXt(nn.Module):
  """ConvNeXt; `attention` appends DS attention to the last two stages.

  With `attention` set (a dict of DSAttention arguments) and `msc_classes`
  it is MFER in the official layout and returns (features, [3 head
  logits]); with `num_classes` it is a classifier returning (features,
  logits).
  """

  def __init__(
    self,
    depths,
    dims,
    num_classes=None,
    attention=None,
    msc_classes=None,
  ):
    super().__init__()
    self.downsample_layers = nn.ModuleList(
      [
        nn.Sequential(
          nn.Conv2d(3, dims[0], 4, stride=4), ChannelsFirstNorm(dims[0])
        )
      ]
      + [
        nn.Sequential(
          ChannelsFirstNorm(dims[i - 1]),
          nn.Conv2d(dims[i - 1], dims[i], 2, stride=2),
        )
        for i in range(1, len(dims))
      ]
    )
    stages = []
    for i, (depth, dim) in enumerate(zip(depths, dims, strict=True)):
      blocks = [Block(dim) for _ in range(depth)]
      if attention is not None and i >= len(dims) - 2:
        blocks.append(DSAttention(dim, **attention))
      stages.append(nn.Sequential(*blocks))
    self.stages = nn.ModuleList(stages)
    self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
    self.head = (
      None if num_classes is None else nn.Linear(dims[-1], num_classes)
    )
    self.msc = None
    if msc_classes is not None:
      quarter = dims[-1] // 4
      self.msc = nn.ModuleList(
        [MscHead(quarter * (2 + i), msc_classes) for i in range(3)]
      )

  def forward(self, x):
    for down, stage in zip(self.downsample_layers, self.stages, strict=True):
      x = stage(down(x))
    features = self.norm(x.mean((2, 3)))
    if self.msc is not None:
      return features, [
        head(features[:, : head.fc1.in_features]) for head in self.msc
      ]
    return features, self.head(features)


def randomise(model: nn.Module, seed: int) -> nn.Module:
  """Weights of scale 1 / sqrt(fan_in), random LayerNorm and layer scale.

  Activations stay of order one, and every LayerNorm affine and `gamma`
  differs from its trivial init, so converting them matters.
  """
  gen = torch.Generator().manual_seed(seed)

  def normal(t, std):
    t.copy_(torch.randn(t.shape, generator=gen) * std)

  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith('gamma'):
        normal(p, 0.5)
      elif p.ndim == 1 and name.endswith('weight'):  # LayerNorm scale
        normal(p, 0.2)
        p.add_(1.0)
      elif p.ndim == 1:  # biases
        normal(p, 0.1)
      else:  # (out, in, ...): fan_in is the size of one output's slice
        normal(p, p[0].numel() ** -0.5)
  return model.eval()

"""MA-Net: global multi-scale and local attention network (Zhao et al.,
IEEE TIP 2021), ported from the official PyTorch code (zengqunzhao/MA-Net,
`model/manet.py` and `model/attention.py`).

Structure (shapes at 224 px):

* front: ResNet-18 `conv1`, `bn1`, max-pool, `layer1`, `layer2`
  (torchvision names, 28x28x128);
* local branch: the layer2 map is cut at half its height and width into four
  patches (top-left, top-right, bottom-left, bottom-right; the official code
  slices 0:14 / 14:28 at 224 px). Each patch has its own `layer3_1_pX` (two
  `AttentionBlock`s 128 -> 256, stride 2) and `layer4_1_pX` (two 256 -> 512,
  stride 1); the outputs are put back in a 2x2 grid, pooled, and `fc_1`
  gives the local logits;
* global branch: `layer3_2` (two `MulScaleBlock`s 128 -> 256, stride 2) and
  `layer4_2` (two 256 -> 512, stride 2), pooled, then `fc_2`.

There is no dropout. The prediction is `beta * fc_1 + (1 - beta) * fc_2`
with beta = 0.6 as in the official `main.py`; the matching loss is
`ferjax.losses` 'manet'. `branches='local'` or `'global'` builds one branch
and its head alone (the paper's ablation of the two modules), whose logits
are then the prediction and whose cross-entropy the loss. Every submodule keeps the PyTorch attribute name, so
the official checkpoint converts key by key (`ferjax.weights` 'manet').

The second cascade of `MulScaleBlock` has two historical forms with the same
parameters: the code of 2021, which produced the published logs and
presumably the MS-Celeb-1M checkpoint, runs it in the same order as the first
cascade (group 1 -> 4, `direction='same'`, the default); a change of April
2023, matching the paper's figure, runs it from group 4 to group 1
(`direction='reverse'`).

Inputs are [0, 1] images without mean/std normalisation, as MA-Net was
trained. Any input size whose layer2 map (ceil(side / 8)) has even sides
works, e.g. multiples of 16 such as 112 or 224.
"""

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from ferjax.layers import cbam
from ferjax.layers import torch_nn
from ferjax.models import registry
from ferjax.models import sown
from ferjax.models.backbones import resnet

Dtype = Any

DIRECTIONS = ('same', 'reverse')
# The branches a model has: the paper's two, or one of them (its ablation).
BRANCHES = ('both', 'local', 'global')


class AttentionBlock(resnet.BasicBlock):
  """BasicBlock with CBAM (reduction 16) after `bn2`, before the residual."""

  def refine(self, y: jax.Array, train: bool) -> jax.Array:
    """Applies the block's CBAM, named `cbam` as in PyTorch."""
    return cbam.CBAM(16, dtype=self.dtype, name='cbam')(y, train)


class MulScaleBlock(nn.Module):
  """MA-Net's multi-scale residual block.

  conv3x3 (stride) - BN - ReLU, then the channels are split into four equal
  groups x1..x4 and run through two Res2Net-like cascades of 3x3 conv + BN,
  each with its own weights:

    y1 = bn1_2_1(conv1_2_1(x1)), yk = bn1_2_k(conv1_2_k(relu(y(k-1)) + xk));
    'same':    z1 = bn2_2_1(conv2_2_1(x1)), then z2, z3, z4 likewise;
    'reverse': z4 = bn2_2_4(conv2_2_4(x4)), then z3, z2, z1 likewise.

  The output is relu(cat(y) + cat(z) + shortcut), the shortcut being a 1x1
  conv + BN (`downsample_0`/`downsample_1`) when the stride or width changes.

  Attributes:
    features: output channels (torch `planes`), a multiple of 4.
    strides: stride of `conv1` and of the shortcut conv.
    direction: order of the second cascade, 'same' or 'reverse'.
    dtype: compute dtype.
  """

  features: int
  strides: int = 1
  direction: str = 'same'
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Applies the block to NHWC `x`."""
    if self.direction not in DIRECTIONS:
      raise ValueError(
        f'MulScaleBlock direction={self.direction!r}; use one of {DIRECTIONS}.'
      )
    if self.features % 4:
      raise ValueError(
        f'MulScaleBlock features={self.features} must be divisible by 4.'
      )
    dtype = self.dtype
    width = self.features // 4

    def conv_bn(name: str, y: jax.Array) -> jax.Array:
      y = torch_nn.conv(width, 3, f'conv{name}', dtype=dtype)(y)
      return torch_nn.batch_norm(f'bn{name}', train=train, dtype=dtype)(y)

    out = torch_nn.conv(
      self.features, 3, 'conv1', strides=self.strides, dtype=dtype
    )(x)
    out = nn.relu(torch_nn.batch_norm('bn1', train=train, dtype=dtype)(out))
    groups = jnp.split(out, 4, axis=-1)

    def cascade(path: int, order: tuple[int, ...]) -> jax.Array:
      results = {}
      prev = None
      for k in order:
        y = groups[k - 1] if prev is None else nn.relu(prev) + groups[k - 1]
        prev = results[k] = conv_bn(f'{path}_2_{k}', y)
      return jnp.concatenate([results[k] for k in (1, 2, 3, 4)], axis=-1)

    out = cascade(1, (1, 2, 3, 4)) + cascade(
      2, (1, 2, 3, 4) if self.direction == 'same' else (4, 3, 2, 1)
    )

    shortcut = x
    if self.strides != 1 or x.shape[-1] != self.features:
      shortcut = torch_nn.conv(
        self.features, 1, 'downsample_0', strides=self.strides, dtype=dtype
      )(x)
      shortcut = torch_nn.batch_norm('downsample_1', train=train, dtype=dtype)(
        shortcut
      )
    return nn.relu(out + shortcut)


def layer2_side(side: int) -> int:
  """Side of the layer2 map for an input side: three stride-2 steps, ceil."""
  return math.ceil(side / 8)


def _check_input(images: jax.Array) -> None:
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(
      f'MA-Net expects (B, H, W, 3) NHWC images, got shape {images.shape}.'
    )
  height, width = images.shape[1:3]
  sides = (layer2_side(height), layer2_side(width))
  if sides[0] % 2 or sides[1] % 2:
    raise ValueError(
      f'MA-Net cuts the layer2 feature map into 2x2 equal patches, but a '
      f'{height}x{width} input gives a {sides[0]}x{sides[1]} layer2 map, '
      'which has an odd side. Use an input whose sides give an even '
      'ceil(side / 8), e.g. multiples of 16 such as 112 or 224 (224 is '
      "MA-Net's own size)."
    )


class MANet(nn.Module):
  """MA-Net with a local-attention and a global multi-scale head.

  Attributes:
    num_classes: outputs of `fc_1` and `fc_2` (12,666 identities in the
      official MS-Celeb-1M pretraining; `ferjax.models.get_model` defaults
      to 7).
    beta: weight of the local head in the combined logits, in [0, 1].
    direction: order of the second cascade of every `MulScaleBlock`, 'same'
      (2021 code, default) or 'reverse' (2023 code and paper figure).
    branches: 'both' (default), or 'local' / 'global' for a model with the
      local-attention or the multi-scale branch alone (`beta` then
      unused). Parameters with 7 classes: 50,547,214 for both, 42,996,231
      local only, 8,234,055 global only.
    dtype: compute dtype of the convolutions and norms; parameters, pooled
      features and logits stay float32.
    pixel_mean: per-channel mean subtracted from the [0, 1] input; None (the
      default, as MA-Net) subtracts nothing.
    pixel_std: per-channel std dividing the input; None divides by nothing.
    width: channels of the stem and layer1 (64, ResNet-18's); layer2,
      layer3 and layer4 have 2, 4 and 8 times as many. Narrower variants
      (width >= 4) keep every module.
  """

  num_classes: int = 7
  beta: float = 0.6
  direction: str = 'same'
  branches: str = 'both'
  width: int = 64
  dtype: Dtype = jnp.float32
  pixel_mean: tuple[float, ...] | None = None
  pixel_std: tuple[float, ...] | None = None

  def _local(self, x: jax.Array, train: bool) -> jax.Array:
    """The local branch: four patches, each with unshared layers; logits."""
    mid_h, mid_w = x.shape[1] // 2, x.shape[2] // 2
    patches = (
      x[:, :mid_h, :mid_w],
      x[:, :mid_h, mid_w:],
      x[:, mid_h:, :mid_w],
      x[:, mid_h:, mid_w:],
    )
    outs = []
    for i, patch in enumerate(patches, 1):
      for name, features, strides in (
        ('layer3', 4 * self.width, 2),
        ('layer4', 8 * self.width, 1),
      ):
        patch = resnet.stage(
          patch,
          f'{name}_1_p{i}',
          features=features,
          num_blocks=2,
          strides=strides,
          train=train,
          block=AttentionBlock,
          dtype=self.dtype,
        )
      outs.append(patch)
    local = jnp.concatenate(
      [
        jnp.concatenate(outs[:2], axis=2),
        jnp.concatenate(outs[2:], axis=2),
      ],
      axis=1,
    )
    local = jnp.mean(local.astype(jnp.float32), axis=(1, 2))
    return torch_nn.linear(local, self.num_classes, 'fc_1')

  def _global(self, x: jax.Array, train: bool) -> jax.Array:
    """The global branch: multi-scale blocks on the whole map; logits."""
    for name, features in (
      ('layer3_2', 4 * self.width),
      ('layer4_2', 8 * self.width),
    ):
      x = resnet.stage(
        x,
        name,
        features=features,
        num_blocks=2,
        strides=2,
        train=train,
        block=MulScaleBlock,
        direction=self.direction,
        dtype=self.dtype,
      )
    x = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    return torch_nn.linear(x, self.num_classes, 'fc_2')

  @nn.compact
  def __call__(
    self, images: jax.Array, train: bool = False
  ) -> dict[str, jax.Array]:
    """Classifies images.

    The layer2 map is sown as `intermediates/layer2`, and the spatial gate
    of every CBAM of the local branch as `intermediates/<block>/cbam/
    SpatialGate/spatial_map` (apply with `mutable=['intermediates']` to
    read them).

    Args:
      images: (B, H, W, 3) float images in [0, 1]; ceil(H / 8) and
        ceil(W / 8) must be even (e.g. 224).
      train: use batch statistics and update `batch_stats`.

    Returns:
      (B, num_classes) float32 arrays: 'logits' = beta * 'logits_local' +
      (1 - beta) * 'logits_global'; with one branch, its logits alone
      ('logits' and 'logits_local' or 'logits_global').

    Raises:
      ValueError: a bad field, or an input size whose layer2 map has an odd
        side.
    """
    if self.direction not in DIRECTIONS:
      raise ValueError(
        f'MA-Net direction={self.direction!r}; use one of {DIRECTIONS}.'
      )
    if not 0.0 <= self.beta <= 1.0:
      raise ValueError(f'MA-Net beta={self.beta} must lie in [0, 1].')
    if self.branches not in BRANCHES:
      raise ValueError(
        f'MA-Net branches={self.branches!r}; use one of {BRANCHES}.'
      )
    _check_input(images)
    if self.width < 4:  # layer3's CBAM needs 16 channels.
      raise ValueError(f'MA-Net width={self.width} must be >= 4 (MA-Net: 64).')
    dtype, w = self.dtype, self.width
    x = torch_nn.normalize(
      images.astype(jnp.float32), self.pixel_mean, self.pixel_std
    ).astype(dtype)
    x = resnet.stem(x, width=w, train=train, dtype=dtype)
    x = resnet.stage(
      x,
      'layer1',
      features=w,
      num_blocks=2,
      strides=1,
      train=train,
      dtype=dtype,
    )
    x = resnet.stage(
      x,
      'layer2',
      features=2 * w,
      num_blocks=2,
      strides=2,
      train=train,
      dtype=dtype,
    )
    self.sow('intermediates', 'layer2', x)

    outputs = {}
    if self.branches != 'global':
      outputs['logits_local'] = self._local(x, train)
    if self.branches != 'local':
      outputs['logits_global'] = self._global(x, train)
    if self.branches == 'both':
      logits = (
        self.beta * outputs['logits_local']
        + (1.0 - self.beta) * outputs['logits_global']
      )
    else:
      (logits,) = outputs.values()
    return {'logits': logits, **outputs}


def attention_maps(model, outputs, intermediates) -> dict:
  """CBAM spatial gates of the last block of each local branch.

  'cbam_p1'..'cbam_p4': the sigmoid gates, kept as they are, of the
  patches top-left, top-right, bottom-left, bottom-right; 'cbam': the four
  put back in their 2 x 2 places over the face. A global-only model has
  none.
  """
  del outputs
  if model.branches == 'global':
    return {}

  def gate(branch):
    block = f'layer4_1_p{branch}_1'
    path = (block, 'cbam', 'SpatialGate', 'spatial_map')
    return sown.sown(intermediates, *path)[..., 0]

  branches = [gate(i) for i in (1, 2, 3, 4)]
  maps = {f'cbam_p{i}': m for i, m in enumerate(branches, 1)}
  top = np.concatenate(branches[:2], axis=2)
  maps['cbam'] = np.concatenate([top, np.concatenate(branches[2:], 2)], 1)
  return maps


# The official whole-network checkpoint, pretrained on MS-Celeb-1M.
MSCELEB_MANET = registry.Checkpoint(
  file='Pretrained_on_MSCeleb.pth.tar',
  url='the Google Drive link in the README of github.com/zengqunzhao/MA-Net',
  description='MA-Net pretrained on MS-Celeb-1M',
)

SPECS = (
  registry.ModelSpec(
    name='manet',
    factory=MANet,
    input_size=224,
    loss='manet',
    converter='ferjax.weights.manet:from_torch',
    checkpoints=(MSCELEB_MANET, resnet.MSCELEB_RESNET18),
    attention=attention_maps,
    # The layer2 map that feeds both branches.
    cam_layer='layer2_1',
    description='MA-Net (TIP 2021): local CBAM patches + multi-scale global',
  ),
)

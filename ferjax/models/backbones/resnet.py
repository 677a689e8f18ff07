"""ResNet-18/34 in Flax Linen with torchvision's module layout.

Submodule names map one to one onto a torchvision `state_dict` (`layer1.0.conv1`
becomes `layer1_0/conv1`), padding is explicit and equal to PyTorch's, and the
initialisers are torchvision's, so a converted checkpoint gives the same logits
as the PyTorch model (see `ferjax.weights`).

The layers are torchvision's (`ferjax.layers.torch_nn`). The pieces are
public so that other models can reuse them under the same names: `stem` and
`stage` create their submodules inside the calling module (MA-Net runs
`stem`, `stage('layer1')` and `stage('layer2')` and then its own stages),
and `BasicBlock.refine` is a hook for blocks that add attention between
`bn2` and the residual sum.

Differences from PyTorch that do not affect converted inference: Flax
BatchNorm keeps the biased batch variance in its running average where PyTorch
keeps the unbiased one, and `dtype` only sets the compute precision; the
parameters and the logits are always float32.
"""

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from ferjax.layers import torch_nn
from ferjax.models import registry

Dtype = Any

# Blocks per stage of the BasicBlock ResNets.
STAGE_SIZES = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


class BasicBlock(nn.Module):
  """torchvision's BasicBlock: conv3x3-BN-ReLU-conv3x3-BN + shortcut, ReLU.

  Attributes:
    features: output channels (torch `planes`).
    strides: stride of `conv1` and of the shortcut conv.
    downsample: whether the shortcut is `downsample_0` (1x1 conv) +
      `downsample_1` (BN); None decides like torchvision, i.e. when the stride
      is not 1 or the channel count changes.
    zero_init_last_bn: initialise `bn2`'s gamma to zero (torchvision's
      `zero_init_residual`).
    dtype: compute dtype.
  """

  features: int
  strides: int = 1
  downsample: bool | None = None
  zero_init_last_bn: bool = False
  dtype: Dtype = jnp.float32

  def refine(self, y: jax.Array, train: bool) -> jax.Array:
    """Hook between `bn2` and the residual sum; the identity here.

    Subclasses override it to add e.g. CBAM; submodules created here belong
    to the block.

    Args:
      y: output of `bn2`.
      train: training mode.

    Returns:
      The refined residual branch.
    """
    del train
    return y

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Applies the block to NHWC `x`."""
    dtype = self.dtype
    y = torch_nn.conv(
      self.features, 3, 'conv1', strides=self.strides, dtype=dtype
    )(x)
    y = torch_nn.batch_norm('bn1', train=train, dtype=dtype)(y)
    y = nn.relu(y)
    y = torch_nn.conv(self.features, 3, 'conv2', dtype=dtype)(y)
    last_init = (
      nn.initializers.zeros if self.zero_init_last_bn else nn.initializers.ones
    )
    y = torch_nn.batch_norm(
      'bn2', train=train, dtype=dtype, scale_init=last_init
    )(y)
    y = self.refine(y, train)

    downsample = self.downsample
    if downsample is None:
      downsample = self.strides != 1 or x.shape[-1] != self.features
    shortcut = x
    if downsample:
      shortcut = torch_nn.conv(
        self.features, 1, 'downsample_0', strides=self.strides, dtype=dtype
      )(x)
      shortcut = torch_nn.batch_norm('downsample_1', train=train, dtype=dtype)(
        shortcut
      )
    return nn.relu(y + shortcut)


def stem(
  x: jax.Array,
  *,
  width: int = 64,
  train: bool = False,
  dtype: Dtype = jnp.float32,
) -> jax.Array:
  """conv1 (7x7/2) - bn1 - ReLU - maxpool (3x3/2): 224 px -> 56 px.

  Call it inside an `nn.compact` method: `conv1` and `bn1` are created in the
  calling module, as in torchvision.

  Args:
    x: (B, H, W, 3) images.
    width: output channels (64 in torchvision).
    train: training mode for `bn1`.
    dtype: compute dtype.

  Returns:
    (B, ceil(H / 4), ceil(W / 4), width) features.
  """
  x = torch_nn.conv(width, 7, 'conv1', strides=2, dtype=dtype)(x)
  x = torch_nn.batch_norm('bn1', train=train, dtype=dtype)(x)
  x = nn.relu(x)
  # Pads with -inf like torch's MaxPool2d(3, 2, padding=1).
  return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


def stage(
  x: jax.Array,
  name: str,
  *,
  features: int,
  num_blocks: int,
  strides: int,
  train: bool = False,
  block: Callable[..., nn.Module] = BasicBlock,
  **block_kwargs: Any,
) -> jax.Array:
  """Runs one ResNet stage, blocks named `{name}_0`, `{name}_1`, ...

  Call it inside an `nn.compact` method: the blocks are created in the calling
  module, so that `layer1.0.conv1` in torch is `layer1_0/conv1` in Flax.

  Args:
    x: (B, H, W, C) features.
    name: stage name, e.g. 'layer1'.
    features: output channels of every block.
    num_blocks: number of blocks.
    strides: stride of the first block; the others use 1.
    train: training mode.
    block: block class (or factory) taking `features`, `strides` and `name`
      and called as `block(...)(x, train=train)`.
    **block_kwargs: further block fields, e.g. `dtype`.

  Returns:
    The stage output.
  """
  for i in range(num_blocks):
    x = block(
      features=features,
      strides=strides if i == 0 else 1,
      name=f'{name}_{i}',
      **block_kwargs,
    )(x, train=train)
  return x


class ResNet(nn.Module):
  """ResNet-18/34 classifier in torchvision's layout.

  Attributes:
    depth: 18 or 34.
    num_classes: outputs of `fc` (1000 as in torchvision;
      `ferjax.models.get_model` defaults to 7).
    width: channels of the stem and the first stage; the stages have
      width * (1, 2, 4, 8) channels (64 in torchvision).
    dtype: compute dtype of the convolutions and norms; parameters, pooled
      features and logits stay float32.
    pixel_mean: per-channel mean subtracted from the [0, 1] input, e.g.
      `torch_nn.IMAGENET_MEAN`; None subtracts nothing.
    pixel_std: per-channel std dividing the input, e.g.
      `torch_nn.IMAGENET_STD`; None divides by nothing.
    zero_init_residual: zero-init the last BN gamma of every block.
  """

  depth: int = 18
  num_classes: int = 1000
  width: int = 64
  dtype: Dtype = jnp.float32
  pixel_mean: tuple[float, ...] | None = None
  pixel_std: tuple[float, ...] | None = None
  zero_init_residual: bool = False

  @nn.compact
  def __call__(
    self, images: jax.Array, train: bool = False
  ) -> dict[str, jax.Array]:
    """Classifies images.

    Args:
      images: (B, H, W, 3) float images in [0, 1].
      train: use batch statistics and update `batch_stats`.

    Returns:
      'logits': (B, num_classes) float32; 'features': (B, 8 * width) float32
      globally pooled features of the last stage.
    """
    if self.depth not in STAGE_SIZES:
      raise ValueError(
        f'ResNet depth={self.depth} is not supported; use one of '
        f'{sorted(STAGE_SIZES)}.'
      )
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(
        f'ResNet expects (B, H, W, 3) NHWC images, got shape {images.shape}.'
      )
    x = torch_nn.normalize(
      images.astype(jnp.float32), self.pixel_mean, self.pixel_std
    )
    x = x.astype(self.dtype)
    x = stem(x, width=self.width, train=train, dtype=self.dtype)
    for i, num_blocks in enumerate(STAGE_SIZES[self.depth]):
      x = stage(
        x,
        f'layer{i + 1}',
        features=self.width * 2**i,
        num_blocks=num_blocks,
        strides=1 if i == 0 else 2,
        train=train,
        zero_init_last_bn=self.zero_init_residual,
        dtype=self.dtype,
      )
    features = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    logits = torch_nn.linear(
      features, self.num_classes, 'fc', dtype=jnp.float32
    )
    return {'logits': logits, 'features': features}


# The MS-Celeb-1M ResNet-18 that DAN and MA-Net's front start from.
MSCELEB_RESNET18 = registry.Checkpoint(
  file='resnet18_msceleb.pth',
  url='the link in the README of github.com/yaoing/DAN',
  description='ResNet-18 pretrained on MS-Celeb-1M',
)

SPECS = tuple(
  registry.ModelSpec(
    name=f'resnet{depth}',
    factory=functools.partial(ResNet, depth=depth),
    input_size=224,
    converter='ferjax.weights.resnet:from_torch',
    checkpoints=(MSCELEB_RESNET18,) if depth == 18 else (),
    description=f"ResNet-{depth} in torchvision's layout",
  )
  for depth in (18, 34)
)

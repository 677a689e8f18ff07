"""ResNet-18/34 in Flax Linen with torchvision's module layout.

Submodule names map one to one onto a torchvision `state_dict` (`layer1.0.conv1`
becomes `layer1_0/conv1`), padding is explicit and equal to PyTorch's, and the
initialisers are torchvision's, so a converted checkpoint gives the same logits
as the PyTorch model (see `ferjax.weights`).

The pieces are public so that other models can reuse them under the same
names: `stem` and `stage` create their submodules inside the calling module
(MA-Net runs `stem`, `stage('layer1')` and `stage('layer2')` and then its own
stages), and `BasicBlock.refine` is a hook for blocks that add attention
between `bn2` and the residual sum.

Differences from PyTorch that do not affect converted inference: Flax
BatchNorm keeps the biased batch variance in its running average where PyTorch
keeps the unbiased one, and `dtype` only sets the compute precision; the
parameters and the logits are always float32.
"""

import functools
import math
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from ferjax import models

Dtype = Any

# torchvision's ImageNet statistics, for inputs in [0, 1].
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Blocks per stage of the BasicBlock ResNets.
STAGE_SIZES = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}

# torchvision: kaiming_normal_(mode='fan_out', nonlinearity='relu'),
# untruncated; Flax's fan_out of an HWIO kernel is kh * kw * out like torch's.
conv_kernel_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')

# PyTorch's default nn.Linear weight init, U(+-1/sqrt(fan_in)).
linear_kernel_init = nn.initializers.variance_scaling(
  1.0 / 3.0, 'fan_in', 'uniform'
)


def linear_bias_init(fan_in: int) -> nn.initializers.Initializer:
  """PyTorch's default nn.Linear bias init, U(+-1/sqrt(fan_in))."""
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def batch_norm(
  name: str,
  *,
  train: bool,
  dtype: Dtype = jnp.float32,
  momentum: float = 0.9,
  scale_init: nn.initializers.Initializer = nn.initializers.ones,
) -> nn.BatchNorm:
  """nn.BatchNorm2d with PyTorch defaults.

  Args:
    name: submodule name (the torch attribute name, e.g. 'bn1').
    train: normalise with batch statistics and update the running averages.
    dtype: compute dtype; scale, bias and statistics stay float32.
    momentum: Flax momentum, i.e. 1 - torch momentum (torch 0.1 -> 0.9).
    scale_init: initialiser of gamma (zeros for zero-init residuals).

  Returns:
    An unbound BatchNorm module.
  """
  return nn.BatchNorm(
    use_running_average=not train,
    momentum=momentum,
    epsilon=1e-5,
    dtype=dtype,
    scale_init=scale_init,
    name=name,
  )


def conv(
  features: int,
  kernel_size: int,
  name: str,
  *,
  strides: int = 1,
  dtype: Dtype = jnp.float32,
  kernel_init: nn.initializers.Initializer | None = None,
) -> nn.Conv:
  """A bias-free square conv with PyTorch's `padding=kernel_size // 2`.

  `kernel_init` defaults to torchvision's ResNet init (`conv_kernel_init`).
  """
  pad = kernel_size // 2
  return nn.Conv(
    features,
    (kernel_size, kernel_size),
    strides=(strides, strides),
    padding=((pad, pad), (pad, pad)),
    use_bias=False,
    dtype=dtype,
    kernel_init=kernel_init or conv_kernel_init,
    name=name,
  )


def linear(
  x: jax.Array, features: int, name: str, *, dtype: Dtype = jnp.float32
) -> jax.Array:
  """Applies an nn.Linear-equivalent Dense with PyTorch's default init.

  Call it inside an `nn.compact` method: the Dense is created in the calling
  module under `name`.

  Args:
    x: (..., fan_in) inputs.
    features: number of outputs.
    name: submodule name (the torch attribute name, e.g. 'fc').
    dtype: compute dtype.

  Returns:
    (..., features) outputs.
  """
  fan_in = x.shape[-1]
  return nn.Dense(
    features,
    dtype=dtype,
    kernel_init=linear_kernel_init,
    bias_init=linear_bias_init(fan_in),
    name=name,
  )(x)


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
    y = conv(self.features, 3, 'conv1', strides=self.strides, dtype=dtype)(x)
    y = batch_norm('bn1', train=train, dtype=dtype)(y)
    y = nn.relu(y)
    y = conv(self.features, 3, 'conv2', dtype=dtype)(y)
    last_init = (
      nn.initializers.zeros if self.zero_init_last_bn else nn.initializers.ones
    )
    y = batch_norm('bn2', train=train, dtype=dtype, scale_init=last_init)(y)
    y = self.refine(y, train)

    downsample = self.downsample
    if downsample is None:
      downsample = self.strides != 1 or x.shape[-1] != self.features
    shortcut = x
    if downsample:
      shortcut = conv(
        self.features, 1, 'downsample_0', strides=self.strides, dtype=dtype
      )(x)
      shortcut = batch_norm('downsample_1', train=train, dtype=dtype)(shortcut)
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
  x = conv(width, 7, 'conv1', strides=2, dtype=dtype)(x)
  x = batch_norm('bn1', train=train, dtype=dtype)(x)
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


def normalize(
  images: jax.Array,
  mean: Sequence[float] | None,
  std: Sequence[float] | None,
) -> jax.Array:
  """Returns (images - mean) / std per channel; None leaves that step out."""
  channels = images.shape[-1]
  for label, stats in (('pixel_mean', mean), ('pixel_std', std)):
    if stats is not None and len(stats) != channels:
      raise ValueError(
        f'{label} has {len(stats)} values but the images have {channels} '
        'channels; give one value per channel.'
      )
  if mean is not None:
    images = images - jnp.asarray(mean, images.dtype)
  if std is not None:
    images = images / jnp.asarray(std, images.dtype)
  return images


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
      `IMAGENET_MEAN`; None subtracts nothing.
    pixel_std: per-channel std dividing the input, e.g. `IMAGENET_STD`; None
      divides by nothing.
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
    x = normalize(images.astype(jnp.float32), self.pixel_mean, self.pixel_std)
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
    logits = linear(features, self.num_classes, 'fc', dtype=jnp.float32)
    return {'logits': logits, 'features': features}


models.register('resnet18')(functools.partial(ResNet, depth=18))
models.register('resnet34')(functools.partial(ResNet, depth=34))

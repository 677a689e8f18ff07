"""PyTorch-style building blocks: torch's initialisers, padding and names.

Every ferjax model is a port of a PyTorch model whose checkpoints convert key
by key (`ferjax.weights`), so its layers are created with the PyTorch
module's defaults and under the torch attribute's name. Two families:

* torchvision's (ResNet, MA-Net, IR-50, IAL): `conv` (bias-free, kaiming
  normal fan-out), `batch_norm` (eps 1e-5, torch momentum 0.1), `linear`
  (nn.Linear's uniform init), and `normalize` for the pixel statistics;
* timm's truncated normal (std .02, zero bias; ConvNeXt, MFER's DS
  attention): `trunc_normal_dense`, `trunc_normal_conv` (with bias, groups
  through `ferjax.layers.depthwise`), `layer_norm` computed like PyTorch's,
  and `drop_path` (stochastic depth).

The functions that take a `name` create their module in the calling
`nn.compact` method, so `layer1.0.conv1` in torch is `layer1_0/conv1` here.
"""

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from ferjax.layers import depthwise
from ferjax.layers import live_taps

Dtype = Any

# torchvision's ImageNet statistics, for inputs in [0, 1].
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# torchvision: kaiming_normal_(mode='fan_out', nonlinearity='relu'),
# untruncated; Flax's fan_out of an HWIO kernel is kh * kw * out like torch's.
conv_kernel_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')

# PyTorch's default nn.Linear weight init, U(+-1/sqrt(fan_in)).
linear_kernel_init = nn.initializers.variance_scaling(
  1.0 / 3.0, 'fan_in', 'uniform'
)

# timm's trunc_normal_(std=.02) truncates at +-2 in absolute terms, i.e. at
# +-100 std, so it is a plain normal in effect.
trunc_normal_init = nn.initializers.normal(0.02)
zeros_init = nn.initializers.zeros

# The LayerNorm eps of ConvNeXt (timm's default is PyTorch's 1e-5).
LAYER_NORM_EPS = 1e-6


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
  Taps that only read padding (a 3x3 kernel over a 1x1 map) are skipped
  (`ferjax.layers.live_taps`); the variables are the plain nn.Conv's.
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
    conv_general_dilated=live_taps.conv_general_dilated,
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


def layer_norm(
  name: str, *, epsilon: float = LAYER_NORM_EPS, dtype: Dtype = jnp.float32
) -> nn.LayerNorm:
  """LayerNorm over the last (channel) axis, computed like PyTorch's."""
  # The two-pass variance matches PyTorch more closely than E[x^2] - E[x]^2.
  return nn.LayerNorm(
    epsilon=epsilon, dtype=dtype, use_fast_variance=False, name=name
  )


def trunc_normal_dense(
  features: int, name: str, *, dtype: Dtype = jnp.float32
) -> nn.Dense:
  """nn.Linear with timm's init (ConvNeXt's)."""
  return nn.Dense(
    features,
    dtype=dtype,
    kernel_init=trunc_normal_init,
    bias_init=zeros_init,
    name=name,
  )


def trunc_normal_conv(
  features: int,
  kernel_size: int,
  name: str,
  *,
  strides: int = 1,
  padding: int = 0,
  groups: int = 1,
  dtype: Dtype = jnp.float32,
  depthwise_grad: str = 'auto',
) -> nn.Conv:
  """nn.Conv2d (with bias) with timm's init and PyTorch's padding.

  Every conv runs through `ferjax.layers.depthwise.conv_fn`, which cuts
  off the kernel taps that only read padding (a 7x7 kernel over a small
  map) and computes depthwise convs (groups == features == input channels)
  as `depthwise_grad` says ('auto', 'native' or 'custom'). The variables are
  those of the plain nn.Conv either way.
  """
  return nn.Conv(
    features,
    (kernel_size, kernel_size),
    strides=(strides, strides),
    padding=((padding, padding), (padding, padding)),
    feature_group_count=groups,
    dtype=dtype,
    kernel_init=trunc_normal_init,
    bias_init=zeros_init,
    name=name,
    conv_general_dilated=depthwise.conv_fn(depthwise_grad),
  )


def drop_path(x: jax.Array, rate: float, rng: jax.Array) -> jax.Array:
  """Stochastic depth: zeroes whole samples with probability `rate`.

  The kept samples are scaled by 1 / (1 - rate), as timm's DropPath, so the
  expectation is unchanged.

  Args:
    x: (B, ...) residual branch.
    rate: drop probability in [0, 1).
    rng: PRNG key.

  Returns:
    `x` with each sample either zeroed or scaled.
  """
  keep = 1.0 - rate
  mask = jax.random.bernoulli(rng, keep, (x.shape[0],) + (1,) * (x.ndim - 1))
  return x * (mask / keep).astype(x.dtype)

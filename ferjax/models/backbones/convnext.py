"""ConvNeXt (Liu et al., CVPR 2022) in Flax Linen with the official layout.

Structure, for `depths` (d1..d4) and `dims` (C1..C4):

* `downsample_layers_0`: conv 4x4 stride 4 (3 -> C1) + LayerNorm;
  `downsample_layers_i` (i > 0): LayerNorm + conv 2x2 stride 2;
* `stages_i_j`: `Block`s, each dwconv 7x7 (pad 3) -> LayerNorm -> Dense 4C
  -> GELU -> Dense C -> layer scale `gamma` -> drop path -> + input;
* global average pool -> LayerNorm `norm` -> features; `head` (Dense) ->
  logits.

Every LayerNorm has eps 1e-6 and normalises the channel axis; PyTorch's
`channels_first` LayerNorm on NCHW is the same operation as a LayerNorm over
the last axis of NHWC. GELU is the exact (erf) form, PyTorch's default.
Stochastic depth drops whole residual branches per sample, with a rate rising
linearly from 0 for the first block to `drop_path_rate` for the last one, and
only when `train=True` (rng stream 'dropout').

Submodule names are the official ones under the rule of
`ferjax.weights.torch_convert.module_path` (`stages.2.5.pwconv1` is
`stages_2_5/pwconv1`, `downsample_layers.0.1` is `downsample_layers_0_1`), so
the facebookresearch checkpoints convert key by key (`ferjax.weights`
'convnext_base').

`trunk` and `pooled_features` create their submodules in the calling module
and take a `stage_end` hook, so a model can add layers after a stage under the
same naming (MFER appends DS attention to the last two stages).

Two fields change how the same model is computed, never its variables:

* `depthwise_grad`: the implementation of the 7x7 depthwise convs
  (`ferjax.layers.depthwise`): 'auto' (default) computes them and their
  gradients with element-wise loops on CPU, where XLA's gradient with
  respect to a depthwise kernel is a dense convolution hundreds of times
  costlier than the forward, and with XLA's convolutions elsewhere;
  'native' or 'custom' force one of the two.
* `remat`: rematerialise every block (`nn.remat`): the backward pass
  recomputes each block's activations from its input instead of keeping
  them, trading about 30% more compute for much less activation memory on
  GPU and TPU (XLA:CPU merges the recomputation back into the forward pass,
  so it saves nothing there).
"""

import functools
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from ferjax.layers import depthwise
from ferjax.layers import torch_nn
from ferjax.models import registry

Dtype = Any

BASE_DEPTHS = (3, 3, 27, 3)
BASE_DIMS = (128, 256, 512, 1024)
NUM_STAGES = 4


def drop_path_rates(depths: Sequence[int], rate: float) -> tuple[float, ...]:
  """Per-block rates, `linspace(0, rate, sum(depths))` as in ConvNeXt."""
  return tuple(float(r) for r in np.linspace(0.0, rate, sum(depths)))


class Block(nn.Module):
  """ConvNeXt block; the width is that of its input.

  Attributes:
    drop_path: stochastic depth rate of the residual branch.
    layer_scale_init: initial value of `gamma`; 0 or less: no layer scale.
    dtype: compute dtype.
    depthwise_grad: implementation of `dwconv` ('auto', 'native',
      'custom'; `ferjax.layers.depthwise`).
  """

  drop_path: float = 0.0
  layer_scale_init: float = 1e-6
  dtype: Dtype = jnp.float32
  depthwise_grad: str = 'auto'

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Applies the block to NHWC `x`."""
    dim, dtype = x.shape[-1], self.dtype
    y = torch_nn.trunc_normal_conv(
      dim,
      7,
      'dwconv',
      padding=3,
      groups=dim,
      dtype=dtype,
      depthwise_grad=self.depthwise_grad,
    )(x)
    y = torch_nn.layer_norm('norm', dtype=dtype)(y)
    y = torch_nn.trunc_normal_dense(4 * dim, 'pwconv1', dtype=dtype)(y)
    y = nn.gelu(y, approximate=False)
    y = torch_nn.trunc_normal_dense(dim, 'pwconv2', dtype=dtype)(y)
    if self.layer_scale_init > 0:
      gamma = self.param(
        'gamma', nn.initializers.constant(self.layer_scale_init), (dim,)
      )
      y = y * gamma.astype(y.dtype)  # No promotion of bf16 to float32.
    if train and self.drop_path > 0:
      y = torch_nn.drop_path(y, self.drop_path, self.make_rng('dropout'))
    return x + y


# `train` (argument 2, counting self) is a Python bool: static under remat.
RematBlock = nn.remat(Block, static_argnums=(2,))


def check_fields(
  model: str,
  depths: Sequence[int],
  dims: Sequence[int],
  rate: float,
  depthwise_grad: str = 'auto',
) -> None:
  """Raises a clear ValueError for unusable fields."""
  if len(depths) != NUM_STAGES or len(dims) != NUM_STAGES:
    raise ValueError(
      f'{model} has {NUM_STAGES} stages, but depths={tuple(depths)} and '
      f'dims={tuple(dims)}; give {NUM_STAGES} values each, e.g. '
      f'depths={BASE_DEPTHS}, dims={BASE_DIMS} (ConvNeXt-B).'
    )
  if min(depths) < 1 or min(dims) < 1:
    raise ValueError(
      f'{model} depths={tuple(depths)} and dims={tuple(dims)} must be positive.'
    )
  if not 0.0 <= rate < 1.0:
    raise ValueError(f'{model} drop_path_rate={rate} must lie in [0, 1).')
  depthwise.check_grad(depthwise_grad, owner=model)


def check_input(model: str, images: jax.Array) -> None:
  """Raises a clear ValueError unless `images` is (B, H, W, 3), H, W >= 32."""
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(
      f'{model} expects (B, H, W, 3) NHWC images, got shape {images.shape}.'
    )
  if min(images.shape[1:3]) < 32:
    raise ValueError(
      f'{model} downsamples by 32; a {images.shape[1]}x{images.shape[2]} '
      'input leaves no pixel for the last stage. Use sides of at least 32 '
      '(224 as trained).'
    )


def trunk(
  x: jax.Array,
  *,
  depths: Sequence[int],
  dims: Sequence[int],
  drop_path_rate: float = 0.0,
  layer_scale_init: float = 1e-6,
  train: bool = False,
  dtype: Dtype = jnp.float32,
  stage_end: Callable[[int, jax.Array], jax.Array] | None = None,
  depthwise_grad: str = 'auto',
  remat: bool = False,
) -> jax.Array:
  """Runs the stem, the downsampling layers and the stages.

  Call it inside an `nn.compact` method: the submodules are created in the
  calling module under the official names.

  Args:
    x: (B, H, W, 3) normalised images.
    depths: blocks per stage.
    dims: channels per stage.
    drop_path_rate: stochastic depth rate of the last block.
    layer_scale_init: initial layer scale.
    train: enables drop path (rng stream 'dropout').
    dtype: compute dtype.
    stage_end: called as `stage_end(i, x)` after the last block of stage i;
      returns the stage output. Submodules it creates belong to the calling
      module.
    depthwise_grad: implementation of the blocks' depthwise convs ('auto',
      'native', 'custom'; `ferjax.layers.depthwise`).
    remat: rematerialise each block in the backward pass (`nn.remat`); the
      variables are the same.

  Returns:
    (B, H / 32, W / 32, dims[-1]) features of the last stage.
  """
  rates = drop_path_rates(depths, drop_path_rate)
  block = RematBlock if remat else Block
  first = 0
  for i, (depth, dim) in enumerate(zip(depths, dims, strict=True)):
    prefix = f'downsample_layers_{i}'
    if i == 0:
      x = torch_nn.trunc_normal_conv(
        dim, 4, f'{prefix}_0', strides=4, dtype=dtype
      )(x)
      x = torch_nn.layer_norm(f'{prefix}_1', dtype=dtype)(x)
    else:
      x = torch_nn.layer_norm(f'{prefix}_0', dtype=dtype)(x)
      x = torch_nn.trunc_normal_conv(
        dim, 2, f'{prefix}_1', strides=2, dtype=dtype
      )(x)
    for j in range(depth):
      x = block(
        drop_path=rates[first + j],
        layer_scale_init=layer_scale_init,
        dtype=dtype,
        depthwise_grad=depthwise_grad,
        name=f'stages_{i}_{j}',
      )(x, train)
    first += depth
    if stage_end is not None:
      x = stage_end(i, x)
  return x


def pooled_features(x: jax.Array) -> jax.Array:
  """Global average pool, then the final LayerNorm `norm`, in float32.

  Call it inside an `nn.compact` method (creates `norm` there).

  Args:
    x: (B, H, W, C) last-stage features.

  Returns:
    (B, C) float32 features.
  """
  pooled = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
  return torch_nn.layer_norm('norm')(pooled)


class ConvNeXt(nn.Module):
  """ConvNeXt classifier in the official layout.

  Attributes:
    num_classes: outputs of `head` (1000 for ImageNet-1k, 21841 for 22k;
      `ferjax.models.get_model` defaults to 7).
    depths: blocks per stage (ConvNeXt-B: 3, 3, 27, 3).
    dims: channels per stage (ConvNeXt-B: 128, 256, 512, 1024).
    drop_path_rate: stochastic depth rate of the last block.
    layer_scale_init: initial layer scale; 0 or less: none.
    dtype: compute dtype of the trunk; parameters, features and logits stay
      float32.
    pixel_mean: per-channel mean subtracted from the [0, 1] input (ImageNet's
      by default, as the official checkpoints expect); None: none.
    pixel_std: per-channel std dividing the input; None: none.
    depthwise_grad: implementation of the depthwise convs, 'auto' (element-
      wise on CPU, XLA's convolutions elsewhere), 'native' or 'custom'.
    remat: rematerialise every block in the backward pass (about 30% more
      compute, much less activation memory); same variables.
  """

  num_classes: int = 1000
  depths: Sequence[int] = BASE_DEPTHS
  dims: Sequence[int] = BASE_DIMS
  drop_path_rate: float = 0.0
  layer_scale_init: float = 1e-6
  dtype: Dtype = jnp.float32
  pixel_mean: tuple[float, ...] | None = torch_nn.IMAGENET_MEAN
  pixel_std: tuple[float, ...] | None = torch_nn.IMAGENET_STD
  depthwise_grad: str = 'auto'
  remat: bool = False

  @nn.compact
  def __call__(
    self, images: jax.Array, train: bool = False
  ) -> dict[str, jax.Array]:
    """Classifies images.

    Args:
      images: (B, H, W, 3) float images in [0, 1], sides of at least 32.
      train: enables stochastic depth (rng stream 'dropout').

    Returns:
      'logits': (B, num_classes) float32; 'features': (B, dims[-1]) float32
      normalised pooled features.
    """
    check_fields(
      'ConvNeXt',
      self.depths,
      self.dims,
      self.drop_path_rate,
      self.depthwise_grad,
    )
    check_input('ConvNeXt', images)
    x = torch_nn.normalize(
      images.astype(jnp.float32), self.pixel_mean, self.pixel_std
    ).astype(self.dtype)
    x = trunk(
      x,
      depths=self.depths,
      dims=self.dims,
      drop_path_rate=self.drop_path_rate,
      layer_scale_init=self.layer_scale_init,
      train=train,
      dtype=self.dtype,
      depthwise_grad=self.depthwise_grad,
      remat=self.remat,
    )
    features = pooled_features(x)
    logits = torch_nn.trunc_normal_dense(self.num_classes, 'head')(features)
    return {'logits': logits, 'features': features}


# The official ImageNet checkpoints of ConvNeXt-B (facebookresearch).
IMAGENET22K_BASE = registry.Checkpoint(
  file='convnext_base_22k_224.pth',
  url='https://dl.fbaipublicfiles.com/convnext/convnext_base_22k_224.pth',
  description='ConvNeXt-B trained on ImageNet-22k (facebookresearch/ConvNeXt)',
)
IMAGENET1K_BASE = registry.Checkpoint(
  file='convnext_base_1k_224_ema.pth',
  url='https://dl.fbaipublicfiles.com/convnext/convnext_base_1k_224_ema.pth',
  description='ConvNeXt-B trained on ImageNet-1k (facebookresearch/ConvNeXt)',
)

SPECS = (
  registry.ModelSpec(
    name='convnext',
    factory=ConvNeXt,
    input_size=224,
    converter='ferjax.weights.convnext:from_torch',
    description='ConvNeXt in the facebookresearch layout (any depths, dims)',
  ),
  registry.ModelSpec(
    name='convnext_base',
    factory=functools.partial(ConvNeXt, depths=BASE_DEPTHS, dims=BASE_DIMS),
    input_size=224,
    converter='ferjax.weights.convnext:from_torch',
    checkpoints=(IMAGENET22K_BASE, IMAGENET1K_BASE),
    description='ConvNeXt-B',
  ),
)

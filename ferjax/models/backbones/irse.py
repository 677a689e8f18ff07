"""IR and IR-SE ResNets (face.evoLVe) in Flax Linen with the official layout.

A port of `backbone/model_irse.py` in ZhaoJ9014/face.evoLVe, the face
recognition backbones trained on MS-Celeb-1M (e.g. IR-50,
`backbone_ir50_ms1m_epoch120.pth`; POSTER ships it as `ir50.pth`) from
which TransFER, APViT and POSTER start. Structure at 112 px:

* `input_layer_0..2`: conv 3x3 stride 1 (3 -> 64, no bias) -> BatchNorm ->
  PReLU: 112x112x64.
* `body_{i}`: units numbered through all stages, as face.evoLVe's `body`
  Sequential. The stages have 64, 128, 256 and 512 channels and
  `STAGE_UNITS[num_layers]` units (IR-50: 3, 4, 14, 3); the first unit of
  every stage has stride 2, so the maps are 56, 28, 14 and 7 px. A unit is
  `res_layer`: BatchNorm `_0` -> conv 3x3 `_1` -> PReLU `_2` -> conv 3x3
  with the stride `_3` -> BatchNorm `_4` (-> SE `_5` in 'ir_se' mode: global
  average pool -> 1x1 conv C -> C/16 `fc1` -> ReLU -> 1x1 conv `fc2` ->
  sigmoid -> rescale), plus `shortcut_layer`: a strided subsample (torch's
  MaxPool2d(1, stride)) when the channel count is kept, else a 1x1 strided
  conv `_0` + BatchNorm `_1`. The sum has no activation after it.
* `output_layer`: BatchNorm `_0` -> Dropout (`_1`, torch's default p=0.5)
  -> flatten in torch's (C, H, W) order -> Linear(512 * 7 * 7, 512) `_3` ->
  BatchNorm1d `_4`: the 512-d face embedding.

`IRTrunk` runs the input layer and the first `stages` stages; with
`stages=3` it gives the 14x14x256 map at 112 px that TransFER, APViT and
POSTER feed to their attention (APViT names these three stages IR-44;
POSTER comments out the fourth stage). `IRSE` is the whole network plus a
classifier `head` (Dense 512 -> num_classes) that face.evoLVe does not have.

Submodule names are face.evoLVe's under `ferjax.weights.torch_convert.
module_path` (`body.12.res_layer.3` is `body_12/res_layer_3`), so its
checkpoints convert key by key (`ferjax.weights.irse`). PReLU slopes are
the parameter `negative_slope` (torch's `weight`).

Inputs are [0, 1] RGB images normalised with mean 0.5 and std 0.5 per
channel, i.e. to [-1, 1], as face.evoLVe's `config.py` (RGB_MEAN, RGB_STD)
and `util/extract_feature_v1.py` do. Initialisation is face.evoLVe's
`_initialize_weights`: xavier-uniform convs and Linear, zero Linear bias,
BatchNorm 1 and 0; PReLU slopes start at 0.25 as in torch; `head` has
PyTorch's default Linear init. As in `ferjax.models.backbones.resnet`,
BatchNorm has PyTorch's momentum and eps but keeps the biased batch
variance in its running average; `dtype` sets the compute precision only.
`remat` rematerialises every unit in the backward pass (`nn.remat`): about
30% more compute for much less activation memory, with the same variables.
"""

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from ferjax.layers import torch_nn
from ferjax.models import registry

Dtype = Any

# Units per stage, face.evoLVe's `get_blocks`.
STAGE_UNITS = {50: (3, 4, 14, 3), 100: (3, 13, 30, 3), 152: (3, 8, 36, 3)}
STAGE_DEPTHS = (64, 128, 256, 512)
MODES = ('ir', 'ir_se')
SE_REDUCTION = 16
EMBEDDING_SIZE = 512
# face.evoLVe's Backbone takes these sides; output_layer's Linear reads
# 512 * (side / 16)^2 features.
INPUT_SIZES = (112, 224)
# face.evoLVe's RGB_MEAN and RGB_STD, for inputs in [0, 1].
PIXEL_MEAN = (0.5, 0.5, 0.5)
PIXEL_STD = (0.5, 0.5, 0.5)

# nn.init.xavier_uniform_ on (O, I, kh, kw): fans I*kh*kw and O*kh*kw, the
# same as Flax's fans of an HWIO kernel.
kernel_init = nn.initializers.xavier_uniform()


# A bias-free square conv with face.evoLVe's xavier init.
conv = functools.partial(torch_nn.conv, kernel_init=kernel_init)


class PReLU(nn.Module):
  """torch.nn.PReLU(C): x if x >= 0 else a_c * x, one slope per channel.

  Attributes:
    init_slope: initial slope (torch's 0.25).
    dtype: compute dtype; the slopes stay float32.
  """

  init_slope: float = 0.25
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Applies the activation to (..., C) `x`."""
    slope = self.param(
      'negative_slope',
      nn.initializers.constant(self.init_slope),
      (x.shape[-1],),
    )
    x = x.astype(self.dtype)
    return jnp.where(x >= 0, x, x * slope.astype(self.dtype))


class SEModule(nn.Module):
  """face.evoLVe's SEModule: x * sigmoid(fc2(relu(fc1(mean(x))))).

  Attributes:
    reduction: channel reduction of `fc1` (16).
    dtype: compute dtype.
  """

  reduction: int = SE_REDUCTION
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Rescales the channels of NHWC `x`."""
    channels = x.shape[-1]
    y = jnp.mean(x, axis=(1, 2), keepdims=True)
    y = conv(channels // self.reduction, 1, 'fc1', dtype=self.dtype)(y)
    y = conv(channels, 1, 'fc2', dtype=self.dtype)(nn.relu(y))
    return x * nn.sigmoid(y)


class BottleneckIR(nn.Module):
  """face.evoLVe's bottleneck_IR (or bottleneck_IR_SE with `se`).

  Attributes:
    depth: output channels.
    strides: stride of `res_layer_3` and of the shortcut.
    se: append an SE module (`res_layer_5`) to the residual branch.
    dtype: compute dtype.
  """

  depth: int
  strides: int = 1
  se: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Applies the unit to NHWC `x`."""
    depth, strides, dtype = self.depth, self.strides, self.dtype
    if x.shape[-1] == depth:
      # MaxPool2d(1, stride): a window of one pixel, i.e. a subsample.
      shortcut = x[:, ::strides, ::strides]
    else:
      shortcut = conv(
        depth, 1, 'shortcut_layer_0', strides=strides, dtype=dtype
      )(x)
      shortcut = torch_nn.batch_norm(
        'shortcut_layer_1', train=train, dtype=dtype
      )(shortcut)
    y = torch_nn.batch_norm('res_layer_0', train=train, dtype=dtype)(x)
    y = conv(depth, 3, 'res_layer_1', dtype=dtype)(y)
    y = PReLU(dtype=dtype, name='res_layer_2')(y)
    y = conv(depth, 3, 'res_layer_3', strides=strides, dtype=dtype)(y)
    y = torch_nn.batch_norm('res_layer_4', train=train, dtype=dtype)(y)
    if self.se:
      y = SEModule(dtype=dtype, name='res_layer_5')(y)
    return y + shortcut


# `train` (argument 2, counting self) is a Python bool: static under remat.
RematBottleneckIR = nn.remat(BottleneckIR, static_argnums=(2,))


def check_fields(owner: str, num_layers: int, mode: str, stages: int) -> None:
  """Raises a clear ValueError for an unknown depth, mode or stage count."""
  if num_layers not in STAGE_UNITS:
    raise ValueError(
      f"{owner} num_layers={num_layers} is not one of face.evoLVe's; use "
      f'one of {sorted(STAGE_UNITS)}.'
    )
  if mode not in MODES:
    raise ValueError(f'{owner} mode={mode!r}; use one of {MODES}.')
  if not 1 <= stages <= len(STAGE_DEPTHS):
    raise ValueError(
      f'{owner} stages={stages}; run 1 to {len(STAGE_DEPTHS)} stages (3 for '
      'the 14x14x256 map at 112 px).'
    )


def check_images(owner: str, images: jax.Array) -> None:
  """Raises a clear ValueError unless `images` is (B, H, W, 3)."""
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(
      f'{owner} expects (B, H, W, 3) NHWC images, got shape {images.shape}.'
    )


def num_units(num_layers: int, stages: int) -> int:
  """Units in the first `stages` stages: the `body_{i}` that run."""
  return sum(STAGE_UNITS[num_layers][:stages])


def trunk(
  x: jax.Array,
  *,
  num_layers: int = 50,
  mode: str = 'ir',
  stages: int = len(STAGE_DEPTHS),
  train: bool = False,
  dtype: Dtype = jnp.float32,
  remat: bool = False,
  width: int = STAGE_DEPTHS[0],
  units: Sequence[int] | None = None,
) -> jax.Array:
  """Runs `input_layer` and the units of the first `stages` stages.

  Call it inside an `nn.compact` method: the submodules are created in the
  calling module under face.evoLVe's names.

  Args:
    x: (B, H, W, 3) normalised images.
    num_layers: 50, 100 or 152.
    mode: 'ir' or 'ir_se'.
    stages: how many of the four stages to run.
    train: use batch statistics and update `batch_stats`.
    dtype: compute dtype.
    remat: rematerialise each unit in the backward pass (`nn.remat`); the
      variables are the same.
    width: channels of the input layer and the first stage (64); each
      later stage doubles them. Narrower than 64 is not face.evoLVe's.
    units: units per stage; None: face.evoLVe's `STAGE_UNITS[num_layers]`.

  Returns:
    (B, ceil(H / 2^stages), ceil(W / 2^stages), C) features of the last
    stage run, C = width * 2^(stages - 1).
  """
  unit = RematBottleneckIR if remat else BottleneckIR
  units = tuple(units or STAGE_UNITS[num_layers])
  depths = [width * d // STAGE_DEPTHS[0] for d in STAGE_DEPTHS]
  x = conv(depths[0], 3, 'input_layer_0', dtype=dtype)(x)
  x = torch_nn.batch_norm('input_layer_1', train=train, dtype=dtype)(x)
  x = PReLU(dtype=dtype, name='input_layer_2')(x)
  index = 0
  for count, depth in zip(units[:stages], depths, strict=False):
    for j in range(count):
      x = unit(
        depth=depth,
        strides=2 if j == 0 else 1,
        se=mode == 'ir_se',
        dtype=dtype,
        name=f'body_{index}',
      )(x, train)
      index += 1
  return x


def normalized(
  images: jax.Array, mean: Any, std: Any, dtype: Dtype
) -> jax.Array:
  """[0, 1] images -> (images - mean) / std in the compute dtype."""
  x = torch_nn.normalize(images.astype(jnp.float32), mean, std)
  return x.astype(dtype)


class IRTrunk(nn.Module):
  """The input layer and the first `stages` stages of an IR / IR-SE net.

  Its variables have the top-level names `input_layer_0`, `input_layer_1`,
  `input_layer_2` and `body_0` ... `body_{n-1}`, n = `num_units(num_layers,
  stages)` (21 for IR-50 with 3 stages); `ferjax.weights.irse.convert_trunk`
  makes them from a face.evoLVe checkpoint.

  Attributes:
    num_layers: 50, 100 or 152 (face.evoLVe's IR-50/100/152).
    mode: 'ir' or 'ir_se' (an SE module in every unit).
    stages: how many of the four stages to run (3: the 14x14x256 map of
      TransFER, APViT, POSTER and JADFER at 112 px).
    dtype: compute dtype; parameters and the output stay float32.
    pixel_mean: per-channel mean subtracted from the [0, 1] input
      (face.evoLVe's 0.5); None: none.
    pixel_std: per-channel std dividing the input (face.evoLVe's 0.5);
      None: none.
    remat: rematerialise every unit in the backward pass (about 30% more
      compute, much less activation memory); same variables.
    width: channels of the input layer and first stage (64); reduced
      variants only (face.evoLVe's checkpoints are 64).
    units: units per stage; None: face.evoLVe's for `num_layers`.
  """

  num_layers: int = 50
  mode: str = 'ir'
  stages: int = 3
  dtype: Dtype = jnp.float32
  pixel_mean: tuple[float, ...] | None = PIXEL_MEAN
  pixel_std: tuple[float, ...] | None = PIXEL_STD
  remat: bool = False
  width: int = STAGE_DEPTHS[0]
  units: Sequence[int] | None = None

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    """Maps images to the last run stage's features.

    Args:
      images: (B, H, W, 3) float images in [0, 1], any size (112 as
        trained).
      train: use batch statistics and update `batch_stats`.

    Returns:
      (B, ceil(H / 2^stages), ceil(W / 2^stages), 64 * 2^(stages - 1))
      float32 features, e.g. (B, 14, 14, 256) at 112 px with 3 stages.

    Raises:
      ValueError: a bad field or input shape.
    """
    check_fields('IRTrunk', self.num_layers, self.mode, self.stages)
    check_images('IRTrunk', images)
    x = normalized(images, self.pixel_mean, self.pixel_std, self.dtype)
    x = trunk(
      x,
      num_layers=self.num_layers,
      mode=self.mode,
      stages=self.stages,
      train=train,
      dtype=self.dtype,
      remat=self.remat,
      width=self.width,
      units=self.units,
    )
    return x.astype(jnp.float32)


def output_layer(
  x: jax.Array, *, dropout_rate: float, train: bool
) -> jax.Array:
  """face.evoLVe's `output_layer` in float32: the (B, 512) embedding.

  Call it inside an `nn.compact` method (creates `output_layer_0`, `_3` and
  `_4` there).

  Args:
    x: (B, h, w, 512) last-stage features.
    dropout_rate: rate of the dropout before the Linear; only in training
      (rng stream 'dropout').
    train: training mode.

  Returns:
    (B, 512) float32 embeddings.
  """
  x = torch_nn.batch_norm('output_layer_0', train=train)(x.astype(jnp.float32))
  x = nn.Dropout(dropout_rate, deterministic=not train)(x)
  # torch flattens NCHW, so the Linear's inputs are in (C, H, W) order.
  x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)
  x = nn.Dense(
    EMBEDDING_SIZE,
    kernel_init=kernel_init,
    bias_init=nn.initializers.zeros,
    name='output_layer_3',
  )(x)
  return torch_nn.batch_norm('output_layer_4', train=train)(x)


class IRSE(nn.Module):
  """face.evoLVe's IR / IR-SE network with a classifier head.

  Attributes:
    num_classes: outputs of `head` (`ferjax.models.get_model` defaults
      to 7).
    num_layers: 50, 100 or 152.
    mode: 'ir' or 'ir_se'.
    input_size: side of the square input, 112 or 224 as face.evoLVe's
      Backbone; it sets the size of `output_layer_3`.
    dropout_rate: dropout of `output_layer` (torch's default 0.5).
    dtype: compute dtype of the stages; parameters, `output_layer`,
      features and logits stay float32.
    pixel_mean: per-channel mean subtracted from the [0, 1] input
      (face.evoLVe's 0.5); None: none.
    pixel_std: per-channel std dividing the input (0.5); None: none.
    remat: rematerialise every unit in the backward pass (about 30% more
      compute, much less activation memory); same variables.
  """

  num_classes: int = 7
  num_layers: int = 50
  mode: str = 'ir'
  input_size: int = 112
  dropout_rate: float = 0.5
  dtype: Dtype = jnp.float32
  pixel_mean: tuple[float, ...] | None = PIXEL_MEAN
  pixel_std: tuple[float, ...] | None = PIXEL_STD
  remat: bool = False

  def _check(self, images: jax.Array) -> None:
    check_fields('IRSE', self.num_layers, self.mode, len(STAGE_DEPTHS))
    if self.input_size not in INPUT_SIZES:
      raise ValueError(
        f'IRSE input_size={self.input_size}; face.evoLVe builds the network '
        f'for sides {INPUT_SIZES}.'
      )
    if not 0.0 <= self.dropout_rate < 1.0:
      raise ValueError(
        f'IRSE dropout_rate={self.dropout_rate} must lie in [0, 1).'
      )
    check_images('IRSE', images)
    side = self.input_size
    if images.shape[1:3] != (side, side):
      raise ValueError(
        f'IRSE with input_size={side} takes {side}x{side} images (its '
        f'output_layer flattens a {side // 16}x{side // 16}x512 map), got '
        f'{images.shape[1]}x{images.shape[2]}. Resize the faces, set '
        f'input_size to one of {INPUT_SIZES}, or use IRTrunk, which takes '
        'any size.'
      )

  @nn.compact
  def __call__(
    self, images: jax.Array, train: bool = False
  ) -> dict[str, jax.Array]:
    """Classifies faces.

    Args:
      images: (B, input_size, input_size, 3) float images in [0, 1].
      train: batch statistics and dropout (rng stream 'dropout').

    Returns:
      'logits': (B, num_classes) float32; 'features': (B, 512) float32
      face embedding, the output of face.evoLVe's Backbone.

    Raises:
      ValueError: a bad field or input shape.
    """
    self._check(images)
    x = normalized(images, self.pixel_mean, self.pixel_std, self.dtype)
    x = trunk(
      x,
      num_layers=self.num_layers,
      mode=self.mode,
      train=train,
      dtype=self.dtype,
      remat=self.remat,
    )
    features = output_layer(x, dropout_rate=self.dropout_rate, train=train)
    logits = torch_nn.linear(features, self.num_classes, 'head')
    return {'logits': logits, 'features': features}


# face.evoLVe's IR-50 trained on MS-Celeb-1M, which TransFER, APViT, POSTER
# and JADFER start from.
MSCELEB_IR50 = registry.Checkpoint(
  file='ir50.pth',
  url='the ir50.pth link in the README of github.com/zczcwh/POSTER (the '
  'face.evoLVe IR-50, also backbone_ir50_ms1m_epoch120.pth)',
  description='IR-50 trained on MS-Celeb-1M (face.evoLVe)',
  crop='arcface_112',  # face.evoLVe's five-point 112 px template.
)

SPECS = (
  registry.ModelSpec(
    name='irse',
    factory=IRSE,
    input_size=112,
    converter='ferjax.weights.irse:from_torch',
    checkpoints=(MSCELEB_IR50,),
    description="face.evoLVe's IR / IR-SE (50, 100, 152 layers)",
  ),
  registry.ModelSpec(
    name='ir50',
    factory=functools.partial(IRSE, num_layers=50, mode='ir'),
    input_size=112,
    converter='ferjax.weights.irse:from_torch',
    checkpoints=(MSCELEB_IR50,),
    description="face.evoLVe's IR-50",
  ),
)

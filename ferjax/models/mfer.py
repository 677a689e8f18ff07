"""MFER: multiscale facial expression recognition with dynamic global and
static local attention (Xu et al., IEEE TAFFC 2024), ported from the
official model code (XuJ1E/MFER, `model.py`, `model/attention.py`,
`model/multiscale.py`, `train.py`).

Structure (shapes at 224 px, ConvNeXt-B):

* trunk: ConvNeXt-B (`ferjax.models.backbones.convnext`: depths 3, 3, 27,
  3; dims 128, 256, 512, 1024; stochastic depth 0.25 as in `train.py`);
* DS attention (`ferjax.layers.ds_attention`) after the last block of
  stage 3 (14x14x512) and of stage 4 (7x7x1024), as the last module of those
  stages: `stages_2_27` and `stages_3_3`, the official `stages.2.27` and
  `stages.3.3`. Their (B, H, W, C) weights are sown as
  `intermediates/stages_2_27/attention` and `.../stages_3_3/attention`;
* global average pool -> LayerNorm `norm` -> feature f (1024-d);
* Msc, the multiscale classifier: heads `msc_0`, `msc_1`, `msc_2` on the
  first 512, 768 and 1024 dims of f (dims[-1] / 2 + i * dims[-1] / 4), each
  Dense(d, d) `fc1` -> GELU -> Dense(d, num_classes) `fc2`. The prediction
  is the sum of the three heads' logits (the paper's Fig. 1); each head has
  its own loss in `train.py`.

Two fields ablate the paper's modules: `ds_stages` (which stages end with
DS attention) and `head` ('single': one Msc-style head on the whole feature,
i.e. Msc without its scales; 'linear': ConvNeXt's plain classifier).

The model also owns the learnable class centres of the DSF loss, which was
never released (the loss itself is in `ferjax.losses`): `dsf_centers` of
shape (num_classes, D), initialised xavier-uniform with gain sqrt(2) as in
the L-GM reference implementation (ChaofWang/L-GM_loss_pytorch) the paper
compares with and in the authors' own centre loss (XUJ1Er/FAER,
`utils/loss.py`). Keeping them in the params lets the optimiser and the
checkpoints handle them like any other weight; `train.py` likewise optimises
the loss's parameters together with the model's.

Initialisation follows the code: trunk and DS attention normal(std .02) with
zero biases (ConvNeXt's `_init_weights`), LayerNorms at 1 and 0, the Msc
heads PyTorch's default Linear init (they live outside the official
ConvNeXt, so its init does not reach them). Inputs are [0, 1] images,
normalised with ImageNet's mean and std as in `train.py`.

Two fields change how the model is computed but not its variables:
`depthwise_grad` picks the implementation of the depthwise convs (the
trunk's 7x7 ones and a 'depthwise' DS attention conv; 'auto': element-wise
loops on CPU, whose native depthwise kernel gradient is a dense
convolution, and XLA's convolutions on GPU and TPU;
`ferjax.layers.depthwise`), and `remat` rematerialises every ConvNeXt block
in the backward pass (about 30% more compute, much less activation memory).

Parameters of the default 7-class model: 155,357,013 with the dense DS
attention conv of the code (the count of the official PyTorch modules),
91,206,997 with the depthwise one; the DSF centres add 7 * 1024 = 7,168
(155,364,181 and 91,214,165 in all). The ablation switches remove exactly
their layers (counts without the centres): DS attention at stage 3
13,175,360 (`ds_stages=(4,)`: 142,181,653), at stage 4 52,696,192
(`ds_stages=(3,)`: 102,660,821; `ds_stages=()`: 89,485,461); the Msc heads
are 1,918,997, one 'single' head 1,056,775 (`head='single'`: 154,494,791)
and a 'linear' one 7,175 (153,445,191).
"""

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from ferjax.layers import ds_attention
from ferjax.layers import torch_nn
from ferjax.models import registry
from ferjax.models import sown
from ferjax.models.backbones import convnext

Dtype = Any

NUM_HEADS = 3
# The classifier on the pooled feature: the Msc heads (the paper's), one
# Msc-style MLP head on the whole feature, or ConvNeXt's linear head.
HEADS = ('msc', 'single', 'linear')
# The stages (1-based, as the paper counts them) that end with DS attention.
DS_STAGES = (3, 4)

# L-GM's means and the centre-loss centres: xavier_uniform_(gain=sqrt(2)).
centers_init = nn.initializers.variance_scaling(2.0, 'fan_avg', 'uniform')


def head_widths(dim: int) -> tuple[int, ...]:
  """Input widths of the Msc heads: dim / 2 + i * dim / 4, i = 0, 1, 2."""
  return tuple(dim // 2 + i * dim // 4 for i in range(NUM_HEADS))


class MscHead(nn.Module):
  """One Msc head: fc1 (d -> d) -> GELU -> fc2 (d -> num_classes).

  Attributes:
    num_classes: outputs of `fc2`.
  """

  num_classes: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Maps (B, d) float32 features to (B, num_classes) logits."""
    x = torch_nn.linear(x, x.shape[-1], 'fc1')
    return torch_nn.linear(
      nn.gelu(x, approximate=False), self.num_classes, 'fc2'
    )


class MFER(nn.Module):
  """MFER: ConvNeXt + DS attention + multiscale classifier.

  Attributes:
    num_classes: expression classes of every Msc head and of the centres.
    depths: ConvNeXt blocks per stage (ConvNeXt-B by default).
    dims: ConvNeXt channels per stage; dims[-1] must be divisible by 4.
    drop_path_rate: stochastic depth rate of the last block (0.25 as in
      `train.py`).
    layer_scale_init: ConvNeXt's initial layer scale.
    ds_conv: DS attention query conv, 'dense' (code) or 'depthwise'.
    ds_order: DS attention query branch, 'code' (conv -> GELU -> LayerNorm)
      or 'paper' (conv -> LayerNorm -> GELU, Fig. 2).
    ds_residual: DS attention adds its input back (code) or not (Fig. 2).
    ds_kernel_size: side of the DS attention query conv (7).
    ds_stages: the stages (1-based) that end with DS attention: (3, 4) as
      the code and Fig. 1; (4,), (3,) or () ablate it per stage.
    head: the classifier: 'msc' (the three Msc heads, summed), 'single'
      (one Msc-style head, Dense(D, D) - GELU - Dense(D, classes), on the
      whole feature: Msc without its multiple scales) or 'linear'
      (ConvNeXt's own Dense(D, classes)).
    dsf_centers: create the DSF loss's learnable class centres.
    dtype: compute dtype of the trunk and the attention; parameters,
      features, logits and centres stay float32.
    pixel_mean: per-channel mean subtracted from the [0, 1] input
      (ImageNet's); None: none.
    pixel_std: per-channel std dividing the input; None: none.
    depthwise_grad: implementation of the depthwise convs, 'auto' (element-
      wise on CPU, XLA's convolutions elsewhere), 'native' or 'custom'.
    remat: rematerialise every ConvNeXt block in the backward pass (about
      30% more compute, much less activation memory); same variables.
  """

  num_classes: int = 7
  depths: Sequence[int] = convnext.BASE_DEPTHS
  dims: Sequence[int] = convnext.BASE_DIMS
  drop_path_rate: float = 0.25
  layer_scale_init: float = 1e-6
  ds_conv: str = 'dense'
  ds_order: str = 'code'
  ds_residual: bool = True
  ds_kernel_size: int = 7
  ds_stages: tuple[int, ...] = DS_STAGES
  head: str = 'msc'
  dsf_centers: bool = True
  dtype: Dtype = jnp.float32
  pixel_mean: tuple[float, ...] | None = torch_nn.IMAGENET_MEAN
  pixel_std: tuple[float, ...] | None = torch_nn.IMAGENET_STD
  depthwise_grad: str = 'auto'
  remat: bool = False

  def _check_fields(self) -> None:
    convnext.check_fields(
      'MFER',
      self.depths,
      self.dims,
      self.drop_path_rate,
      self.depthwise_grad,
    )
    ds_attention.check_fields(
      self.ds_conv,
      self.ds_order,
      self.ds_kernel_size,
      owner='MFER',
      prefix='ds_',
    )
    stages = tuple(self.ds_stages)
    valid = tuple(range(1, len(self.depths) + 1))
    if len(set(stages)) != len(stages) or not set(stages) <= set(valid):
      raise ValueError(
        f'MFER ds_stages={stages}; pick distinct stages among {valid} '
        '(the paper: 3 and 4), or () for none.'
      )
    if self.head not in HEADS:
      raise ValueError(f'MFER head={self.head!r}; use one of {HEADS}.')
    if self.head == 'msc' and self.dims[-1] % 4:
      raise ValueError(
        f'MFER dims[-1]={self.dims[-1]} must be divisible by 4: the Msc heads '
        'read the first 2, 3 and 4 quarters of the feature.'
      )

  def _stage_end(self, i: int, x: jax.Array) -> jax.Array:
    """DS attention after the last block of the stages in `ds_stages`."""
    if i + 1 not in self.ds_stages:
      return x
    return ds_attention.DSAttention(
      conv=self.ds_conv,
      order=self.ds_order,
      residual=self.ds_residual,
      kernel_size=self.ds_kernel_size,
      dtype=self.dtype,
      depthwise_grad=self.depthwise_grad,
      name=f'stages_{i}_{self.depths[i]}',
    )(x)

  @nn.compact
  def __call__(
    self, images: jax.Array, train: bool = False
  ) -> dict[str, jax.Array]:
    """Classifies images.

    Args:
      images: (B, H, W, 3) float images in [0, 1], sides of at least 32
        (224 as trained).
      train: enables stochastic depth (rng stream 'dropout').

    Returns:
      float32 arrays: 'logits' (B, num_classes), the sum of the heads;
      'head_logits' (H, B, num_classes), the heads in order (H = 3 for
      'msc', 1 otherwise);
      'features' (B, dims[-1]), the normalised pooled feature; 'centers'
      (num_classes, dims[-1]), the DSF centres, when `dsf_centers`.

    Raises:
      ValueError: a bad field or input shape.
    """
    self._check_fields()
    convnext.check_input('MFER', images)
    x = torch_nn.normalize(
      images.astype(jnp.float32), self.pixel_mean, self.pixel_std
    ).astype(self.dtype)
    x = convnext.trunk(
      x,
      depths=self.depths,
      dims=self.dims,
      drop_path_rate=self.drop_path_rate,
      layer_scale_init=self.layer_scale_init,
      train=train,
      dtype=self.dtype,
      stage_end=self._stage_end,
      depthwise_grad=self.depthwise_grad,
      remat=self.remat,
    )
    features = convnext.pooled_features(x)
    head_logits = classify(features, self.head, self.num_classes)
    outputs = {
      'logits': jnp.sum(head_logits, axis=0),
      'head_logits': head_logits,
      'features': features,
    }
    if self.dsf_centers:
      outputs['centers'] = self.param(
        'dsf_centers', centers_init, (self.num_classes, features.shape[-1])
      )
    return outputs


def classify(features: jax.Array, head: str, num_classes: int) -> jax.Array:
  """(H, B, num_classes) logits of the classifier `head` on (B, D) features.

  Call it inside an `nn.compact` method: the heads are created in the
  calling module, 'msc_0'..'msc_2' (H = 3) or 'head' (H = 1).
  """
  if head == 'msc':
    widths = head_widths(features.shape[-1])
    return jnp.stack(
      [
        MscHead(num_classes, name=f'msc_{i}')(features[:, :width])
        for i, width in enumerate(widths)
      ]
    )
  if head == 'single':
    return MscHead(num_classes, name='head')(features)[None]
  return torch_nn.linear(features, num_classes, 'head')[None]


def attention_maps(model, outputs, intermediates) -> dict:
  """'ds_stage3', 'ds_stage4' (those of `ds_stages`): the DS attention
  weights (a spatial softmax per channel) averaged over the channels,
  min-max scaled per example."""
  del outputs
  return {
    f'ds_stage{i}': sown.rescale(
      sown.sown(
        intermediates, f'stages_{i - 1}_{model.depths[i - 1]}', 'attention'
      ).mean(-1)
    )
    for i in model.ds_stages
  }


SPECS = (
  registry.ModelSpec(
    name='mfer',
    factory=MFER,
    input_size=224,
    loss='mfer',
    converter='ferjax.weights.mfer:from_torch',
    # MFER's own MS-Celeb ConvNeXt-B was never released.
    checkpoints=(convnext.IMAGENET22K_BASE, convnext.IMAGENET1K_BASE),
    attention=attention_maps,
    description='MFER (TAFFC 2024): ConvNeXt-B, DS attention, Msc heads, DSF',
  ),
)

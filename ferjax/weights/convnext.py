"""PyTorch -> Flax converter for ConvNeXt ('convnext', 'convnext_base').

It reads the facebookresearch ConvNeXt checkpoints
(`downsample_layers.{i}.{0,1}`, `stages.{i}.{j}.{dwconv, norm, pwconv1,
pwconv2, gamma}`, `norm`, `head`); the names map one to one onto
`ferjax.models.backbones.convnext`. A head of another class count (the
ImageNet-22k checkpoint has 21,841 outputs) is refused unless
`ignore=('head.',)`, which keeps a fresh head, as for the ResNets. MFER's
converter, which also reads these checkpoints, is `ferjax.weights.mfer`.

Linear weights become transposed Dense kernels, conv weights OIHW become
HWIO (the depthwise (C, 1, 7, 7) ones (7, 7, 1, C), for
`feature_group_count=C`), LayerNorm weights become `scale` and `gamma` stays
the block's layer-scale parameter (`ferjax.weights.torch_convert`).
"""

from ferjax.weights import torch_convert

# The smallest input ConvNeXt accepts: one pixel after the last stage.
INPUT_SHAPE = (1, 32, 32, 3)


# The spec converter of 'convnext' and 'convnext_base'.
from_torch = torch_convert.classifier('head', input_shape=INPUT_SHAPE)

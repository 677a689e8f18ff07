"""PyTorch -> Flax converter for the torchvision-layout ResNets.

Names map one to one (`layer1.0.conv1` -> `layer1_0/conv1`); the head is
`fc`, and one of another class count is refused unless `ignore=('fc.',)`
keeps a fresh one.
"""

from ferjax.weights import torch_convert

# The spec converter of 'resnet18' and 'resnet34'.
from_torch = torch_convert.classifier('fc', input_shape=(1, 32, 32, 3))

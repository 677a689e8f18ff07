"""PyTorch -> Flax converter for the torchvision-layout ResNets.

Names map one to one (`layer1.0.conv1` -> `layer1_0/conv1`); the head is
`fc`, and one of another class count is refused unless `ignore=('fc.',)`
keeps a fresh one.
"""

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from ferjax.weights import torch_convert


def from_torch(
  state_dict: Mapping[str, np.ndarray],
  *,
  spec: Any,
  ignore: tuple[str, ...],
  rng: int | jax.Array,
  **fields: Any,
) -> dict[str, Any]:
  """Variables of `spec`'s ResNet (resnet18, resnet34) from a state_dict."""
  model = spec.build(**fields)
  torch_convert.check_head(state_dict, 'fc', model.num_classes, ignore)
  return torch_convert.convert_module(
    model, state_dict, input_shape=(1, 32, 32, 3), ignore=ignore, rng=rng
  )

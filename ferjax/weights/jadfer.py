"""PyTorch -> Flax converter for JADFER's backbone.

JADFER has no released weights; it starts, as TransFER, APViT and POSTER
do, from the IR-50 that face.evoLVe trained on MS-Celeb-1M (`ir50.pth`).
`from_torch('jadfer', 'ir50.pth', num_classes=7)` converts that checkpoint's
first three stages into the 'backbone' submodule and initialises everything
else (spatial paths, encoder, interaction, head) afresh from `rng`, at the
112 px input JADFER is built for (the position embeddings' size depends on
it). `config.init_from=weights/ir50.pth` goes through this converter.
"""

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from ferjax.weights import irse as irse_weights

INPUT_SIZE = 112


def from_torch(
  state_dict: Mapping[str, np.ndarray],
  *,
  spec: Any,
  ignore: tuple[str, ...],
  rng: int | jax.Array,
  **fields: Any,
) -> dict[str, Any]:
  """JADFER variables with the backbone from a face.evoLVe checkpoint."""
  model = spec.build(**fields)
  trunk = irse_weights.convert_trunk(
    state_dict,
    num_layers=model.num_layers,
    mode=model.backbone_mode,
    stages=3,
    ignore=ignore,
    rng=rng,
    pixel_mean=model.pixel_mean,
    pixel_std=model.pixel_std,
  )
  key = jax.random.key(rng) if isinstance(rng, int) else rng
  images = jnp.zeros((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32)
  variables = jax.device_get(
    jax.jit(model.init, compiler_options={'xla_backend_optimization_level': 0})(
      key, images
    )
  )
  variables = {k: dict(v) for k, v in variables.items()}
  for collection, tree in trunk.items():
    variables[collection]['backbone'] = tree
  logging.info(
    'JADFER from an IR checkpoint: backbone loaded; %s start fresh.',
    ', '.join(sorted(k for k in variables['params'] if k != 'backbone')),
  )
  return variables

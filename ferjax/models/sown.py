"""Reading what a model sows: helpers of the specs' attention extractors.

A model that sows its attention (`self.sow('intermediates', name, value)`)
declares an extractor in its `ModelSpec.attention`; `ferjax.viz.
attention_maps` applies the model with `mutable=['intermediates']` and
hands the extractor what was sown. These helpers read a value at its path
and scale maps for display.
"""

from collections.abc import Mapping

import numpy as np


def sown(intermediates: Mapping, *path: str) -> np.ndarray:
  """The one value sown at `path`, e.g. ('layer2_0', 'channel_weights')."""
  node = intermediates
  for name in path:
    node = node[name]
  (value,) = node
  return np.asarray(value, np.float32)


def rescale(maps, axes=None) -> np.ndarray:
  """Min-max scales each example of `maps` to [0, 1] (constant -> 0).

  Args:
    maps: (B, ...) values.
    axes: the axes scaled together; all but the first by default.

  Returns:
    float32 maps in [0, 1].
  """
  maps = np.asarray(maps, np.float32)
  axes = tuple(range(1, maps.ndim)) if axes is None else axes
  low = maps.min(axis=axes, keepdims=True)
  span = maps.max(axis=axes, keepdims=True) - low
  scaled = np.divide(maps - low, span, out=np.zeros_like(maps), where=span > 0)
  return np.clip(scaled, 0.0, 1.0)

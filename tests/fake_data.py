"""A tiny in-memory data source whose images encode their index."""

import numpy as np


class IndexedSource:
  """`len(n)` examples; example i is a constant image of value i % 251."""

  def __init__(self, n: int, size: int = 20, num_classes: int = 7):
    self.n, self.size, self.num_classes = n, size, num_classes

  def __len__(self):
    return self.n

  def __getitem__(self, i):
    return {
      'image': np.full((self.size, self.size, 3), i % 251, np.uint8),
      'label': i % self.num_classes,
    }

  def __repr__(self):  # grain validates checkpoints against the repr.
    return f'IndexedSource(n={self.n}, size={self.size})'

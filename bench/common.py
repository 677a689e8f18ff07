"""What the benchmarks share: a config's real jitted train step on a batch."""

import time

import jax
import numpy as np

from ferjax import sharding
from ferjax import train


def random_batch(config, mesh) -> dict:
  """A global uint8 batch of the config's batch size and image size."""
  size, b = config.augment.size, config.batch_size
  rng = np.random.default_rng(0)
  return sharding.global_batch(
    {
      'image': rng.integers(0, 256, (b, size, size, 3), np.uint8),
      'label': rng.integers(0, config.data.num_classes, (b,), np.int32),
    },
    sharding.data_sharding(mesh),
  )


def compiled_train_step(config):
  """(run one step and wait, compile seconds, parameter count).

  The step is ferjax's own (`train.build_trainable`), on a fixed random
  batch; the first call, which compiles, is done and timed here.
  """
  mesh = sharding.make_mesh(config.mesh)
  trainable = train.build_trainable(config, mesh, 1, 1, jax.random.key(0))
  batch, key = random_batch(config, mesh), jax.random.key(1)
  holder = [trainable.state]

  def step():
    holder[0], metrics = trainable.step_fn(holder[0], batch, key)
    jax.block_until_ready(metrics)

  start = time.perf_counter()
  step()
  return step, time.perf_counter() - start, trainable.num_params

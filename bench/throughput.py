r"""Training-step and input-pipeline throughput of a config, in img/s.

  python bench/throughput.py --config=configs/demo.py
  python bench/throughput.py --config=configs/demo.py --config.batch_size=128

Prints the jitted train step's img/s on random batches (compile excluded),
the grain pipeline's img/s on the real dataset, and their ratio: a ratio
below 1 means the input pipeline cannot keep the step busy.
"""

import functools
import sys
import time

import jax
import numpy as np
from absl import app
from absl import flags
from ml_collections import config_flags

sys.path.insert(0, '.')

from ferjax import sharding  # noqa: E402
from ferjax import train  # noqa: E402
from ferjax.data import pipeline  # noqa: E402

config_flags.DEFINE_config_file('config', 'configs/demo.py', 'Config file.')
flags.DEFINE_integer('steps', 20, 'Timed train steps.')
flags.DEFINE_integer('batches', 50, 'Timed input batches.')
FLAGS = flags.FLAGS


def step_throughput(config, steps: int) -> float:
  mesh = sharding.make_mesh(config.mesh)
  model = train.create_model(config)
  schedule = lambda s: 0.01  # noqa: E731
  from ferjax import optim  # noqa: PLC0415

  tx = optim.make_optimizer(config.optimizer, schedule)
  init = functools.partial(
    train.init_state, model=model, tx=tx, image_size=config.augment.size
  )
  abstract = jax.eval_shape(init, jax.random.key(0))
  shardings = sharding.state_shardings(abstract, mesh, config.sharding)
  state = jax.jit(init, out_shardings=shardings)(jax.random.key(0))
  fn = train.jit_train_step(
    functools.partial(
      train.train_step,
      model=model,
      tx=tx,
      loss_fn=train._loss_fn(config),
      schedule=schedule,
    ),
    shardings,
    mesh,
  )
  size, b = config.augment.size, config.batch_size
  rng = np.random.default_rng(0)
  batch = sharding.global_batch(
    {
      'image': rng.integers(0, 256, (b, size, size, 3), np.uint8),
      'label': rng.integers(0, config.data.num_classes, (b,), np.int32),
    },
    sharding.data_sharding(mesh),
  )
  key = jax.random.key(1)
  state, metrics = fn(state, batch, key)  # Compile.
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(steps):
    state, metrics = fn(state, batch, key)
  jax.block_until_ready(metrics)
  return steps * b / (time.perf_counter() - start)


def pipeline_throughput(config, batches: int) -> float:
  ds, _ = pipeline.train_dataset(config)
  it = iter(ds)
  next(it)  # Start threads and workers.
  start = time.perf_counter()
  for _ in range(batches):
    next(it)
  return batches * config.batch_size / (time.perf_counter() - start)


def main(argv):
  del argv
  config = FLAGS.config
  print(f'devices: {jax.device_count()} x {jax.devices()[0].device_kind}')
  step = step_throughput(config, FLAGS.steps)
  print(f'train step  {config.model.name}: {step:8.1f} img/s')
  data = pipeline_throughput(config, FLAGS.batches)
  print(f'input pipeline:       {data:8.1f} img/s')
  print(f'pipeline / step ratio: {data / step:.2f}')


if __name__ == '__main__':
  app.run(main)

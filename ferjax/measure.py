"""What a config costs on this device: parameters, FLOPs, images per second.

  cost = measure(config, steps=5)
  # {'params', 'gflops_per_image', 'train_img_per_s', 'eval_img_per_s',
  #  'device'}
  cost = model_cost(config)  # {'params', 'gflops_per_image'}: no compile

The train step is the trainer's own (`train.build_trainable`: the config's
model, loss and optimizer, sharded, state donated), the eval step the
evaluator's (`evaluate.eval_step`); both run on a fixed random batch
already on the devices, so what is timed is the device work and the
dispatch, not the input pipeline. The first call of each compiles and is
not timed. An "image" is one example: a clip for clip models.

FLOPs are XLA's count in the lowered, unoptimised eval forward pass of one
example (2 per multiply-add, plus elementwise work): the model's
arithmetic, the same on every backend.

`bench/` times steps in more detail with `random_batch`, `jit_eval_step`
and `compiled_flops` from here.
"""

import functools
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ferjax import evaluate
from ferjax import models
from ferjax import sharding
from ferjax import train


def compiled_flops(compiled) -> float | None:
  """FLOPs of one run of a lowered or compiled program, per device, or None.

  `cost_analysis()` returns a dict in recent jax, a list holding one dict
  per program in older versions, and may raise or return nothing on
  backends without cost analysis.
  """
  try:
    cost = compiled.cost_analysis()
  except Exception:  # Backends without cost analysis raise various errors.
    return None
  if isinstance(cost, list | tuple):
    cost = cost[0] if cost else None
  if not cost:
    return None
  flops = cost.get('flops')
  return float(flops) if flops is not None and flops > 0 else None


def random_batch(config, mesh, batch_size: int = 0, mask: bool = False):
  """A global batch of random uint8 images (or clips) and labels.

  Args:
    config: the run's config (image size, clip length, classes).
    mesh: the device mesh; the batch is split over its 'data' axis.
    batch_size: global batch; 0 takes `config.batch_size`.
    mask: add the all-true 'mask' an eval batch carries.
  """
  b = batch_size or config.batch_size
  rng = np.random.default_rng(0)
  host = {
    'image': rng.integers(
      0, 256, (b, *models.input_shape(config)[1:]), np.uint8
    ),
    'label': rng.integers(0, config.data.num_classes, (b,), np.int32),
  }
  if mask:
    host['mask'] = np.ones((b,), bool)
  return sharding.global_batch(host, sharding.data_sharding(mesh))


def jit_eval_step(config, trainable, mesh):
  """The evaluator's jitted eval step (`evaluate.evaluator` builds the same)."""
  return jax.jit(
    functools.partial(
      evaluate.eval_step,
      model=trainable.model,
      num_classes=config.data.num_classes,
    ),
    in_shardings=(trainable.state_sharding, sharding.data_sharding(mesh)),
    out_shardings=sharding.replicated(mesh),
  )


def flops_per_example(config: ml_collections.ConfigDict, model, variables):
  """XLA's FLOPs of the eval forward pass of one example, or None."""
  abstract = jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), variables
  )
  example = jax.ShapeDtypeStruct(models.input_shape(config), jnp.float32)
  forward = jax.jit(lambda v, x: model.apply(v, x, train=False))
  return compiled_flops(forward.lower(abstract, example))


def per_second(call: Callable[[], object], examples: int, steps: int) -> float:
  """Examples per second of `steps` calls after one untimed (compiling) one."""
  jax.block_until_ready(call())
  start = time.perf_counter()
  out = None
  for _ in range(steps):
    out = call()
  jax.block_until_ready(out)
  return examples * steps / (time.perf_counter() - start)


def device() -> str:
  """This process's devices, e.g. '8 x cpu' or '1 x NVIDIA H100 80GB HBM3'."""
  return f'{jax.device_count()} x {jax.devices()[0].device_kind}'


def model_cost(config: ml_collections.ConfigDict) -> dict:
  """Parameters and GFLOPs per image, from shapes alone (nothing compiles)."""
  model = models.create_model(config)
  rngs = {'params': jax.random.key(0), 'dropout': jax.random.key(0)}
  images = jnp.zeros(models.input_shape(config), jnp.float32)
  variables = jax.eval_shape(
    functools.partial(model.init, train=False), rngs, images
  )
  flops = flops_per_example(config, model, variables)
  return {
    'params': sum(x.size for x in jax.tree.leaves(variables['params'])),
    'gflops_per_image': flops / 1e9 if flops else None,
  }


def measure(config: ml_collections.ConfigDict, steps: int = 5) -> dict:
  """`model_cost` and, for `steps` > 0, train and eval images per second
  of `config`'s jitted steps on this device."""
  result = {
    'device': device(),
    **model_cost(config),
    'train_img_per_s': None,
    'eval_img_per_s': None,
  }
  if steps <= 0:
    return result
  mesh = sharding.make_mesh(config.mesh)
  trainable = train.build_trainable(config, mesh, 1, 1, jax.random.key(0))
  holder = [trainable.state]
  batch, key = random_batch(config, mesh), jax.random.key(1)

  def train_step():
    holder[0], metrics = trainable.step_fn(holder[0], batch, key)
    return metrics

  eval_fn = jit_eval_step(config, trainable, mesh)
  eval_batch = random_batch(config, mesh, config.eval_batch_size, mask=True)
  result['train_img_per_s'] = per_second(train_step, config.batch_size, steps)
  result['eval_img_per_s'] = per_second(
    lambda: eval_fn(holder[0], eval_batch), config.eval_batch_size, steps
  )
  return result

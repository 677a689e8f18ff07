"""Sharded training on 8 fake CPU devices equals one device, compiled once."""

import functools

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ferjax import losses
from ferjax import models
from ferjax import optim
from ferjax import sharding
from ferjax import train
from ferjax.layers import toeplitz

SIZE, BATCH = 32, 16


@pytest.fixture(scope='module', autouse=True)
def xla_convolutions():
  """Every conv as XLA's: on CPU a small map's conv is a matrix product only
  from some batch size on (`toeplitz.worthwhile`), here 16 on one device but
  not 2 on each of eight, and the two sum in different orders. This module
  compares sharding alone."""
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(toeplitz, 'worthwhile', lambda *args: False)
    yield


@pytest.fixture(scope='module')
def parts():
  model = models.get_model('resnet18', num_classes=7, width=4)
  schedule = lambda step: 0.05  # noqa: E731
  tx = optim.make_optimizer(
    ml_collections.ConfigDict(
      dict(name='sgd', momentum=0.9, nesterov=False, weight_decay=1e-4)
    ),
    schedule,
  )
  init = functools.partial(
    train.init_state, model=model, tx=tx, image_size=SIZE
  )
  state = jax.jit(init, compiler_options={'xla_backend_optimization_level': 0})(
    jax.random.key(0)
  )
  step = functools.partial(
    train.train_step,
    model=model,
    tx=tx,
    loss_fn=losses.get_loss('softmax_xent'),
    schedule=schedule,
  )
  rng = np.random.default_rng(0)
  batches = [
    {
      'image': rng.integers(0, 256, (BATCH, SIZE, SIZE, 3), np.uint8),
      'label': rng.integers(0, 7, (BATCH,), np.int32),
    }
    for _ in range(3)
  ]
  return jax.device_get(state), step, batches


def _run(parts, devices, strategy='replicate', traced=None):
  host_state, step, batches = parts
  mesh = sharding.make_mesh((('data', -1),), devices=devices)
  shardings = sharding.state_shardings(host_state, mesh, strategy, min_size=0)
  state = jax.device_put(host_state, shardings)
  fn = train.jit_train_step(traced or step, shardings, mesh)
  out = []
  for batch in batches:
    batch = sharding.global_batch(batch, sharding.data_sharding(mesh))
    state, metrics = fn(state, batch, jax.random.key(1))
    out.append(jax.device_get(metrics))
  return jax.device_get(state), out


def test_make_mesh_sizes_and_errors():
  assert dict(sharding.make_mesh((('data', -1),)).shape) == {'data': 8}
  mesh = sharding.make_mesh((('data', 4), ('model', -1)))
  assert dict(mesh.shape) == {'data': 4, 'model': 2}
  with pytest.raises(ValueError, match='needs 3 devices'):
    sharding.make_mesh((('data', 3),))
  with pytest.raises(ValueError, match="needs a 'data' axis"):
    sharding.make_mesh((('model', -1),))


@pytest.fixture(scope='module')
def replicated(parts):
  """(state, metrics) of the 3 steps on 8 devices, the step traced once."""
  step = parts[1]

  @chex.assert_max_traces(n=1)
  def traced(state, batch, rng):
    return step(state, batch, rng)

  yield _run(parts, jax.devices(), traced=traced)
  chex.clear_trace_counter()


def test_eight_devices_equal_one_and_compile_once(parts, replicated):
  assert jax.device_count() == 8
  one_state, one = _run(parts, jax.devices()[:1])
  eight_state, eight = replicated
  # The first step sees identical params: same loss to float32 precision.
  np.testing.assert_allclose(one[0]['loss'], eight[0]['loss'], rtol=1e-6)
  # Later steps carry float32 summation-order noise through SGD momentum.
  for a, b in zip(one, eight, strict=True):
    np.testing.assert_allclose(a['loss'], b['loss'], rtol=5e-5)
    np.testing.assert_allclose(a['l2_grads'], b['l2_grads'], rtol=5e-5)
  chex.assert_trees_all_close(
    one_state.params, eight_state.params, atol=1e-5, rtol=1e-4
  )
  chex.assert_trees_all_close(
    one_state.model_state, eight_state.model_state, atol=1e-5, rtol=1e-4
  )


def test_grads_match_to_1e6(parts):
  """Gradients on 1 and 8 devices agree to 1e-6, computed in float64.

  In float64 only a real difference in what is computed (e.g. per-device
  instead of global BatchNorm statistics, or a wrong cross-device
  reduction) can exceed 1e-6; float32 summation order alone cannot.
  """
  host_state, _, batches = parts
  loss_fn = losses.get_loss('softmax_xent')
  with jax.enable_x64(True):
    model = models.get_model(
      'resnet18', num_classes=7, width=4, dtype=jnp.float64
    )
    to64 = lambda t: jax.tree.map(lambda x: np.asarray(x, np.float64), t)  # noqa: E731
    params, model_state = to64(host_state.params), to64(host_state.model_state)

    def grads(params, model_state, batch):
      def loss(p):
        out, _ = model.apply(
          {'params': p, **model_state},
          batch['image'].astype(jnp.float64) / 255.0,
          train=True,
          mutable=['batch_stats'],
        )
        return loss_fn(out, batch['label'])[0]

      return jax.grad(loss)(params)

    results = []
    for devices in (jax.devices()[:1], jax.devices()):
      mesh = sharding.make_mesh((('data', -1),), devices=devices)
      repl = sharding.replicated(mesh)
      batch = sharding.global_batch(batches[0], sharding.data_sharding(mesh))
      fn = jax.jit(grads, out_shardings=repl)
      out = fn(
        jax.device_put(params, repl), jax.device_put(model_state, repl), batch
      )
      results.append(jax.device_get(out))
  assert jax.tree.leaves(results[0])[0].dtype == np.float64
  chex.assert_trees_all_close(results[0], results[1], atol=1e-6, rtol=0)


def test_fsdp_shards_params_and_trains_the_same(parts, replicated):
  host_state = parts[0]
  mesh = sharding.make_mesh((('data', -1),))
  shardings = sharding.state_shardings(host_state, mesh, 'fsdp', min_size=0)
  specs = {s.spec for s in jax.tree.leaves(shardings)}
  assert any('data' in spec for spec in specs)
  repl_state, repl = replicated
  fsdp_state, fsdp = _run(parts, jax.devices(), strategy='fsdp')
  for a, b in zip(repl, fsdp, strict=True):
    np.testing.assert_allclose(a['loss'], b['loss'], rtol=1e-5)
  chex.assert_trees_all_close(
    repl_state.params, fsdp_state.params, atol=1e-5, rtol=1e-5
  )

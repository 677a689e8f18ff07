"""Device mesh, shardings and multi-host setup.

One config runs on one CPU, several GPUs or a TPU pod slice: the mesh comes
from `config.mesh`, the batch is sharded over the 'data' axis, and the train
state is replicated or (FSDP) sharded over 'data' along its largest divisible
dimension.
"""

import math
import os
from collections.abc import Sequence

import jax
import numpy as np
from absl import logging
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = 'data'


def maybe_initialize_distributed(
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
) -> bool:
  """Calls `jax.distributed.initialize()` when coordinator settings exist.

  Settings come from the arguments (run.py flags) or from JAX's standard
  environment (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID).
  On CPU the cross-process collectives use gloo.

  Returns:
    Whether the distributed runtime was initialised.
  """
  env = os.environ
  coordinator_address = coordinator_address or env.get(
    'JAX_COORDINATOR_ADDRESS'
  )
  if not coordinator_address:
    return False
  if num_processes is None and 'JAX_NUM_PROCESSES' in env:
    num_processes = int(env['JAX_NUM_PROCESSES'])
  if process_id is None and 'JAX_PROCESS_ID' in env:
    process_id = int(env['JAX_PROCESS_ID'])
  if 'cpu' in (env.get('JAX_PLATFORMS') or 'cpu').split(','):
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(
    coordinator_address=coordinator_address,
    num_processes=num_processes,
    process_id=process_id,
  )
  logging.info(
    'Process %d of %d; %d local of %d devices.',
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
  )
  return True


def make_mesh(
  axes: Sequence[tuple[str, int]], devices=None
) -> jax.sharding.Mesh:
  """Builds the mesh from `config.mesh`, e.g. `(('data', -1),)`.

  One size may be -1: it takes the devices the others leave.
  """
  devices = jax.devices() if devices is None else devices
  names = tuple(name for name, _ in axes)
  sizes = [int(size) for _, size in axes]
  if DATA_AXIS not in names:
    raise ValueError(f"config.mesh={axes!r} needs a '{DATA_AXIS}' axis.")
  if sizes.count(-1) > 1:
    raise ValueError(f'config.mesh={axes!r}: at most one size may be -1.')
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if len(devices) % known:
      raise ValueError(
        f'config.mesh={axes!r}: {len(devices)} devices are not divisible '
        f'by {known}.'
      )
    sizes[sizes.index(-1)] = len(devices) // known
  if math.prod(sizes) != len(devices):
    raise ValueError(
      f'config.mesh={axes!r} needs {math.prod(sizes)} devices, but '
      f'{len(devices)} are available; use -1 for one axis.'
    )
  return jax.make_mesh(
    tuple(sizes),
    names,
    axis_types=(jax.sharding.AxisType.Auto,) * len(names),
    devices=devices,
  )


def data_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Batch dimension split over the 'data' axis."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def _fsdp_spec(shape: tuple[int, ...], size: int, min_size: int) -> P:
  """Shards the largest dimension divisible by `size` over 'data'."""
  if math.prod(shape) < min_size:
    return P()
  for dim in np.argsort(shape)[::-1]:
    if shape[dim] % size == 0:
      spec = [None] * len(shape)
      spec[dim] = DATA_AXIS
      return P(*spec)
  return P()


def state_shardings(
  abstract_state, mesh: jax.sharding.Mesh, strategy: str, min_size: int = 2**14
):
  """Shardings for every leaf of the (abstract) train state.

  Args:
    abstract_state: a pytree of arrays or ShapeDtypeStructs.
    mesh: the device mesh.
    strategy: 'replicate' (every device holds the whole state) or 'fsdp'
      (large leaves split over the 'data' axis; XLA gathers them per layer).
    min_size: leaves with fewer elements stay replicated under 'fsdp'.

  Returns:
    A pytree of NamedShardings with the structure of `abstract_state`.
  """
  if strategy == 'replicate':
    return jax.tree.map(lambda _: replicated(mesh), abstract_state)
  if strategy == 'fsdp':
    size = mesh.shape[DATA_AXIS]
    return jax.tree.map(
      lambda x: NamedSharding(
        mesh, _fsdp_spec(tuple(np.shape(x)), size, min_size)
      ),
      abstract_state,
    )
  raise ValueError(f"config.sharding={strategy!r}: use 'replicate' or 'fsdp'.")


def global_batch(local_batch, sharding: NamedSharding):
  """Assembles each process's rows into one global array per leaf."""
  return jax.tree.map(
    lambda x: jax.make_array_from_process_local_data(sharding, x),
    local_batch,
  )

"""What the benchmarks share: a config's real jitted steps, timed.

The train step is ferjax's own (`train.build_trainable`: the config's model,
loss and optimizer, sharded in and out, state donated); the eval step is the
evaluator's (`evaluate.eval_step`, jitted as the evaluator jits it:
`ferjax.measure.jit_eval_step`). Both run on a fixed random uint8 batch
that already lies on the devices, so what is timed is the device work and
the dispatch, not the input pipeline.

Timing: `time_windows` runs a few windows of N steps each; a window
dispatches its N steps back to back and waits for the devices once, at the
end, as the training loop does between two log steps. The reported step
time is the median over windows of (window seconds / N).
"""

import dataclasses
import importlib
import resource
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import ml_collections

from bench import mfu as mfu_lib
from configs import common
from ferjax import models
from ferjax import sharding
from ferjax import train
from ferjax.measure import jit_eval_step as jit_eval_step
from ferjax.measure import random_batch as random_batch

MODELS = ('gcsa', 'jadfer', 'manet', 'mfer', 'resnet18')
# Each model's paper config (resnet18 has none: see `config_source`).
PAPER_CONFIGS = {
  'gcsa': 'gcsa_dfew',
  'jadfer': 'jadfer_rafdb',
  'manet': 'manet_rafdb',
  'mfer': 'mfer_rafdb',
}
DTYPES = {'bf16': 'bfloat16', 'f32': 'float32'}


def config_source(model: str, smoke: bool = False) -> str:
  """Where `make_config` takes the model's config from, for reports."""
  if model == 'resnet18':
    if smoke:
      return 'configs/demo.py:smoke'
    return 'configs/common.py base_config (resnet18, width 64)'
  return f'configs/{PAPER_CONFIGS[model]}.py' + (':smoke' if smoke else '')


def make_config(
  model: str,
  *,
  smoke: bool = False,
  batch: int | None = None,
  size: int | None = None,
  dtype: str | None = None,
  overrides: tuple[str, ...] = (),
) -> ml_collections.ConfigDict:
  """The model's paper config (or its `:smoke` variant), resized.

  Args:
    model: one of `MODELS`. 'resnet18' is the torchvision-width ResNet-18
      of the base config (SGD, momentum 0.9, weight decay 1e-4), or the
      narrow one of configs/demo.py:smoke.
    smoke: take the `:smoke` variant (tiny, for tests).
    batch: global batch size; None keeps the config's.
    size: image side in pixels (`config.augment.size`); None keeps it.
    dtype: compute dtype, 'bfloat16' or 'float32' (or 'bf16', 'f32'); None
      keeps the config's, with 'auto' resolved for this backend.
    overrides: 'field.path=value' assignments applied last, e.g.
      'model.remat=true' (`configs.common.override`).

  Returns:
    The config, with `init_from` cleared (benchmarks start from scratch).
  """
  if model == 'resnet18':
    if smoke:
      config = importlib.import_module('configs.demo').get_config('smoke')
    else:
      config = common.base_config()
      config.model.name = 'resnet18'
  elif model in PAPER_CONFIGS:
    module = importlib.import_module(f'configs.{PAPER_CONFIGS[model]}')
    config = module.get_config('smoke' if smoke else '')
  else:
    raise ValueError(f'Unknown model {model!r}; use one of {MODELS}.')
  config.init_from = ''
  if batch:
    config.batch_size = batch
  if size:
    config.augment.size = size
  for assignment in overrides:
    common.override(config, assignment)
  # 'auto' resolves here, so reports name the dtype that ran.
  name = DTYPES.get(dtype, dtype) if dtype else config.model.dtype
  config.model.dtype = models.compute_dtype(name).name
  return config


def check_batch(batch: int, what: str = '--batch') -> None:
  """Raises a clear error if `batch` does not split over the devices."""
  devices = jax.device_count()
  if batch % devices:
    raise ValueError(
      f'{what}={batch} must be divisible by the {devices} devices; pass a '
      f'multiple of {devices}.'
    )


def frames_per_example(config) -> int:
  """Frames in one model input: the clip length, or 1 for images."""
  shape = models.input_shape(config)
  return shape[1] if len(shape) == 5 else 1


@dataclasses.dataclass(frozen=True)
class Compiled:
  """A step compiled ahead of time, and what XLA says about it.

  Attributes:
    fn: the `jax.stages.Compiled` executable.
    seconds: wall time of tracing, lowering and compiling it.
    flops: the model FLOPs of one call, per device: XLA's cost analysis of
      the lowered, unoptimised program (None if unknown). Backends rewrite
      ops before they run them (XLA:CPU runs a depthwise convolution's
      weight gradient as a dense convolution, 30x the FLOPs; XLA:GPU's
      count of the optimised program leaves out the convolutions cuDNN
      runs), so MFU is held to the model's arithmetic, not the backend's.
    executed_flops: the cost analysis of the compiled program, as the
      backend counts it (None if unknown).
    flops_basis: 'lowered', or 'compiled' where the backend counts only the
      compiled program and `flops` is that count (XLA:GPU did so for
      JADFER's and GCSA's steps, leaving out cuDNN's convolutions), or None.
    memory: XLA's static memory analysis in bytes (argument, output, temp,
      generated code), or None where the backend gives none.
  """

  fn: Any
  seconds: float
  flops: float | None
  executed_flops: float | None
  memory: dict | None
  flops_basis: str | None = None


def _memory_analysis(compiled) -> dict | None:
  try:
    stats = compiled.memory_analysis()
  except Exception:  # Not every backend implements it.
    return None
  if stats is None:
    return None
  names = ('argument', 'output', 'temp', 'generated_code')
  return {
    f'{name}_bytes': int(getattr(stats, f'{name}_size_in_bytes', 0))
    for name in names
  }


def compile_step(jitted, *args) -> Compiled:
  """Traces, lowers and compiles `jitted` for `args`, timing all three."""
  start = time.perf_counter()
  lowered = jitted.lower(*args)
  compiled = lowered.compile()
  seconds = time.perf_counter() - start
  executed = mfu_lib.compiled_flops(compiled)
  model = mfu_lib.compiled_flops(lowered)
  basis = 'lowered' if model else 'compiled' if executed else None
  return Compiled(
    fn=compiled,
    seconds=seconds,
    flops=model or executed,
    executed_flops=executed,
    memory=_memory_analysis(compiled),
    flops_basis=basis,
  )


class TrainLoop:
  """Runs the compiled train step n times and waits once.

  The state is threaded through and donated on every call, as the training
  loop does; `state` is always the latest one.
  """

  def __init__(self, compiled, state, batch, rng):
    self.compiled, self.state, self.batch, self.rng = (
      compiled,
      state,
      batch,
      rng,
    )

  def __call__(self, n: int) -> None:
    state, metrics = self.state, None
    for _ in range(n):
      state, metrics = self.compiled(state, self.batch, self.rng)
    self.state = state
    jax.block_until_ready((state, metrics))


def eval_loop(compiled, state, batch) -> Callable[[int], None]:
  """Runs the compiled eval step n times and waits once."""

  def run(n: int) -> None:
    jax.block_until_ready([compiled(state, batch) for _ in range(n)])

  return run


def cpu_seconds() -> float:
  """CPU seconds (user + system) this process has used so far."""
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def time_windows(run: Callable[[int], None], steps: int, windows: int):
  """Seconds per step of each of `windows` calls of `run(steps)`.

  Returns {'wall': [...], 'cpu': [...]}: wall-clock seconds per step, and
  the process's CPU seconds per step (all its threads). On a shared CPU
  host the wall time also measures the neighbours' load; the CPU time
  mostly does not, so the two frameworks can be compared by either.
  """
  wall, cpu = [], []
  for _ in range(windows):
    start, start_cpu = time.perf_counter(), cpu_seconds()
    run(steps)
    wall.append((time.perf_counter() - start) / steps)
    cpu.append((cpu_seconds() - start_cpu) / steps)
  return {'wall': wall, 'cpu': cpu}


def summarise(timed: dict[str, list[float]], examples_per_step: int) -> dict:
  """Median step seconds and examples per second of timed windows."""
  seconds = timed['wall']
  median = statistics.median(seconds)
  cpu = statistics.median(timed['cpu'])
  return {
    'step_s_median': median,
    'step_s_min': min(seconds),
    'step_s_windows': seconds,
    'examples_per_s': examples_per_step / median,
    'cpu_s_per_step_median': cpu,
    'examples_per_cpu_s': examples_per_step / cpu if cpu > 0 else None,
  }


def device_peak_bytes() -> int | None:
  """Peak bytes in use on the first local device, where jax reports it."""
  try:
    stats = jax.local_devices()[0].memory_stats()
  except Exception:  # Backends without memory stats.
    return None
  if not stats or 'peak_bytes_in_use' not in stats:
    return None
  return int(stats['peak_bytes_in_use'])


def host_peak_rss_bytes() -> int:
  """This process's peak resident set size (Linux reports KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


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

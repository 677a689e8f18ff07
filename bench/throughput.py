r"""Training-step and input-pipeline throughput of a config, in img/s.

  python bench/throughput.py --config=configs/demo.py
  python bench/throughput.py --config=configs/demo.py --config.batch_size=128

Prints the jitted train step's img/s on random batches (compile excluded),
the grain pipeline's img/s on the real dataset, and their ratio: a ratio
below 1 means the input pipeline cannot keep the step busy.
"""

import sys
import time
from collections.abc import Sequence

import jax
from absl import flags
from ml_collections import config_flags

sys.path.insert(0, '.')

from bench import common as bench_common  # noqa: E402
from ferjax import cli  # noqa: E402
from ferjax.data import pipeline  # noqa: E402


def _define(fv: flags.FlagValues) -> None:
  config_flags.DEFINE_config_file(
    'config', 'configs/demo.py', 'Config file.', flag_values=fv
  )
  flags.DEFINE_integer(
    'steps', 20, 'Timed train steps.', lower_bound=1, flag_values=fv
  )
  flags.DEFINE_integer(
    'batches', 50, 'Timed input batches.', lower_bound=1, flag_values=fv
  )


def step_throughput(config, steps: int) -> float:
  step, _, _ = bench_common.compiled_train_step(config)
  start = time.perf_counter()
  for _ in range(steps):
    step()
  return steps * config.batch_size / (time.perf_counter() - start)


def pipeline_throughput(config, batches: int) -> float:
  ds, _ = pipeline.train_dataset(config)
  it = iter(ds)
  next(it)  # Start threads and workers.
  start = time.perf_counter()
  for _ in range(batches):
    next(it)
  return batches * config.batch_size / (time.perf_counter() - start)


def _main(fv: flags.FlagValues) -> None:
  config = fv.config
  print(f'devices: {jax.device_count()} x {jax.devices()[0].device_kind}')
  step = step_throughput(config, fv.steps)
  print(f'train step  {config.model.name}: {step:8.1f} img/s')
  data = pipeline_throughput(config, fv.batches)
  print(f'input pipeline:       {data:8.1f} img/s')
  print(f'pipeline / step ratio: {data / step:.2f}')


def main(argv: Sequence[str] | None = None) -> int:
  return cli.run(_main, _define, argv)


if __name__ == '__main__':
  sys.exit(main())

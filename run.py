r"""Trains or evaluates a ferjax config.

  python run.py --config=configs/demo.py --workdir=runs/demo
  python run.py --config=configs/demo.py:smoke --workdir=/tmp/smoke \
      --config.batch_size=32
  python run.py --config=configs/demo.py --workdir=runs/demo --mode=eval

Rerunning the same command resumes from the workdir's latest checkpoint.
Compiled steps are cached in ~/.cache/ferjax/xla (--compilation_cache_dir;
'' turns the cache off), so reruns start without recompiling.
Multi-host: pass --coordinator_address/--num_processes/--process_id (or set
JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID) on every process.
Exits 0 when done, 1 when training fails for a reason it names (e.g. the
dataset is not built), 2 for a bad command line (including a --config that
cannot continue the --workdir's run: another model, or fewer steps).
This file only parses flags; the logic lives in ferjax.train.
"""

import sys
from collections.abc import Sequence

from absl import flags
from ml_collections import config_flags

from ferjax import checkpoint_checks
from ferjax import cli
from ferjax import runtime
from ferjax import sharding
from ferjax import train
from ferjax import writers
from ferjax.evaluate import trained


def _define(fv: flags.FlagValues) -> None:
  config_flags.DEFINE_config_file(
    'config',
    None,
    'Config file, e.g. configs/demo.py[:arg].',
    flag_values=fv,
    lock_config=True,
  )
  flags.DEFINE_string(
    'workdir', None, 'Directory for checkpoints and logs.', flag_values=fv
  )
  flags.DEFINE_enum(
    'mode', 'train', ['train', 'eval'], 'What to do.', flag_values=fv
  )
  flags.DEFINE_string(
    'coordinator_address', None, 'host:port of process 0.', flag_values=fv
  )
  flags.DEFINE_integer(
    'num_processes', None, 'Number of processes.', flag_values=fv
  )
  flags.DEFINE_integer(
    'process_id', None, 'Index of this process.', flag_values=fv
  )
  flags.DEFINE_string(
    'compilation_cache_dir',
    None,
    'Persistent XLA compilation cache (default ~/.cache/ferjax/xla; '
    "'' turns it off; JAX_COMPILATION_CACHE_DIR takes precedence).",
    flag_values=fv,
  )
  flags.mark_flags_as_required(['config', 'workdir'], flag_values=fv)


def _main(fv: flags.FlagValues) -> None:
  writers.quiet_library_logs()
  sharding.maybe_initialize_distributed(
    fv.coordinator_address, fv.num_processes, fv.process_id
  )
  runtime.enable_compilation_cache(fv.compilation_cache_dir)
  runtime.hint_cpu_allocator()
  # A --config that cannot continue the --workdir's run is a usage error.
  with cli.usage_errors(checkpoint_checks.CannotContinueError):
    if fv.mode == 'train':
      train.train_and_evaluate(fv.config, fv.workdir)
    else:
      trained.evaluate_config(fv.config, fv.workdir)


def main(argv: Sequence[str] | None = None) -> int:
  return cli.run(_main, _define, argv)


if __name__ == '__main__':
  sys.exit(main())

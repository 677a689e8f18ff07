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
This file only parses flags; the logic lives in ferjax.train.
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from ferjax import runtime
from ferjax import sharding
from ferjax import train
from ferjax import writers

config_flags.DEFINE_config_file(
  'config', None, 'Config file, e.g. configs/demo.py[:arg].', lock_config=True
)
flags.DEFINE_string('workdir', None, 'Directory for checkpoints and logs.')
flags.DEFINE_enum('mode', 'train', ['train', 'eval'], 'What to do.')
flags.DEFINE_string('coordinator_address', None, 'host:port of process 0.')
flags.DEFINE_integer('num_processes', None, 'Number of processes.')
flags.DEFINE_integer('process_id', None, 'Index of this process.')
flags.DEFINE_string(
  'compilation_cache_dir',
  None,
  'Persistent XLA compilation cache (default ~/.cache/ferjax/xla; '
  "'' turns it off; JAX_COMPILATION_CACHE_DIR takes precedence).",
)
flags.mark_flags_as_required(['config', 'workdir'])
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.INFO)
  writers.quiet_library_logs()
  sharding.maybe_initialize_distributed(
    FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id
  )
  runtime.enable_compilation_cache(FLAGS.compilation_cache_dir)
  runtime.hint_cpu_allocator()
  if FLAGS.mode == 'train':
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  else:
    train.evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == '__main__':
  app.run(main)

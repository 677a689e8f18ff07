r"""Training-step img/s of a model in ferjax and, if torch is there, PyTorch.

  python bench/train_throughput.py --model manet --batch 64 --size 224
  python bench/train_throughput.py --model mfer --batch 32 --size 224
  python bench/train_throughput.py --model resnet18 --size 64 --batch 8 \
    --steps 3

The train and eval steps of `python -m bench.run` (which see), without the
input pipeline: ferjax's jitted step with the paper config's model, loss and
optimizer, and the same step in PyTorch where the model has a PyTorch
version (on CUDA when torch sees one), with their ratio.
"""

import sys
from collections.abc import Sequence

from absl import flags

sys.path.insert(0, '.')

from bench import common  # noqa: E402
from bench import run  # noqa: E402
from ferjax import cli  # noqa: E402

MODELS = common.MODELS


def _define(fv: flags.FlagValues) -> None:
  flags.DEFINE_enum('model', 'manet', MODELS, 'the model', flag_values=fv)
  flags.DEFINE_integer('batch', 64, 'global train batch', flag_values=fv)
  flags.DEFINE_integer('size', 224, 'image side in pixels', flag_values=fv)
  flags.DEFINE_integer('steps', 5, 'timed steps', flag_values=fv)
  flags.DEFINE_enum(
    'dtype',
    'float32',
    ['float32', 'bfloat16'],
    'compute dtype',
    flag_values=fv,
  )


def _main(fv: flags.FlagValues) -> int:
  dtype = {'float32': 'f32', 'bfloat16': 'bf16'}[fv.dtype]
  return run.main(
    [
      f'--model={fv.model}',
      f'--batch={fv.batch}',
      f'--size={fv.size}',
      f'--dtype={dtype}',
      f'--steps={fv.steps}',
      '--nopipeline',
    ]
  )


def main(argv: Sequence[str] | None = None) -> int:
  return cli.run(_main, _define, argv)


if __name__ == '__main__':
  sys.exit(main())

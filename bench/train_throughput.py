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

import argparse
import sys

sys.path.insert(0, '.')

from bench import common  # noqa: E402
from bench import run  # noqa: E402

MODELS = common.MODELS


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--model', default='manet', choices=MODELS)
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--size', type=int, default=224)
  parser.add_argument('--steps', type=int, default=5, help='timed steps')
  parser.add_argument(
    '--dtype', default='float32', choices=('float32', 'bfloat16')
  )
  args = parser.parse_args(argv)
  dtype = {'float32': 'f32', 'bfloat16': 'bf16'}[args.dtype]
  return run.main(
    [
      '--model',
      args.model,
      '--batch',
      str(args.batch),
      '--size',
      str(args.size),
      '--dtype',
      dtype,
      '--steps',
      str(args.steps),
      '--no-pipeline',
    ]
  )


if __name__ == '__main__':
  sys.exit(main())

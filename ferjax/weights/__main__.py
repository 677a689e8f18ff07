r"""Converts a PyTorch checkpoint once into a ferjax weights directory.

  python -m ferjax.weights convert --model manet \
    --src Pretrained_on_MSCeleb.pth.tar --out weights/manet_msceleb \
    --num_classes 12666
  python run.py --config=configs/manet_rafdb.py --workdir=runs/manet_rafdb \
    --config.init_from=weights/manet_msceleb

The directory (`ferjax.weights.saved`) is plain numpy and JSON, so training
from it needs neither torch nor the original file. Leaves whose shape does
not fit the run's model (e.g. a 12,666-identity head for a 7-class run) keep
their fresh init. A failure (unknown model, a checkpoint of another
architecture, a truncated file) leaves nothing at --out; an --out that exists
and is not empty is refused.
"""

import argparse
import ast
import os
import sys

from absl import logging

import ferjax
from ferjax import weights
from ferjax.weights import saved
from ferjax.weights import torch_convert


def _field(text: str) -> tuple[str, object]:
  """Parses NAME=VALUE; the value is a Python literal, else a string."""
  name, sep, value = text.partition('=')
  if not sep or not name:
    raise argparse.ArgumentTypeError(f'expected NAME=VALUE, got {text!r}')
  try:
    return name, ast.literal_eval(value)
  except (ValueError, SyntaxError):
    return name, value


def convert(
  model: str,
  src: str,
  out: str,
  num_classes: int | None = None,
  ignore: tuple[str, ...] = (),
  fields: dict | None = None,
) -> str:
  """Converts `src` for model `model` and saves it to `out`.

  Args:
    model: the model's registry name, e.g. 'resnet18'.
    src: the PyTorch `.pth`/`.pth.tar` file.
    out: the directory to write; it must not exist or be empty.
    num_classes: the checkpoint's class count (None: the model's default).
    ignore: torch key prefixes not converted; they are left out of `out`,
      so a run loading it keeps its own init there.
    fields: further model fields, e.g. {'width': 32}.

  Returns:
    The absolute path of the written directory.
  """
  out = os.path.abspath(out)
  saved.check_empty_target(out)  # Fail before a long conversion.
  fields = dict(fields or {})
  if num_classes is not None:
    fields['num_classes'] = num_classes
  variables = weights.from_torch(model, src, ignore=ignore, **fields)
  # Converted at random init: not worth keeping.
  torch_convert.drop_modules(variables, ignore)
  head = fields.get('num_classes', 7)  # get_model's default.
  meta = {
    'model': model,
    'num_classes': head,
    'fields': {k: v for k, v in fields.items() if k != 'num_classes'},
    'ignore': list(ignore),
    'source': os.path.basename(src),
    'ferjax_version': ferjax.__version__,
  }
  return saved.save(variables, out, meta)


def main(argv: list[str] | None = None) -> int:
  """Command-line entry point; returns the exit status."""
  parser = argparse.ArgumentParser(
    prog='python -m ferjax.weights',
    description='Converts PyTorch checkpoints into ferjax weights.',
  )
  commands = parser.add_subparsers(dest='command', required=True)
  conv = commands.add_parser(
    'convert', help='a .pth file -> a weights directory for init_from'
  )
  conv.add_argument('--model', required=True, help='registry name')
  conv.add_argument('--src', required=True, help='the PyTorch checkpoint')
  conv.add_argument('--out', required=True, help='the directory to write')
  conv.add_argument(
    '--num_classes',
    type=int,
    help="the checkpoint's class count (default: the model's, 7)",
  )
  conv.add_argument(
    '--ignore',
    action='append',
    default=[],
    metavar='PREFIX',
    help='a torch key prefix not to convert, e.g. fc. (repeatable)',
  )
  conv.add_argument(
    '--field',
    type=_field,
    action='append',
    default=[],
    metavar='NAME=VALUE',
    help='a model or converter field, e.g. width=32, or source=resnet18 to '
    'load a torchvision ResNet-18 into the front of manet (repeatable)',
  )
  args = parser.parse_args(argv)
  logging.set_verbosity(logging.INFO)  # The converter reports what it used.
  try:
    out = convert(
      args.model,
      args.src,
      args.out,
      num_classes=args.num_classes,
      ignore=tuple(args.ignore),
      fields=dict(args.field),
    )
  except (ValueError, OSError, ImportError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(f'{args.model} weights from {args.src} are in {out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())

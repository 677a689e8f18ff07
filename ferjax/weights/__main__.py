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
and is not empty is refused. Both exit with status 2, like a bad flag.
"""

import os
import sys
from collections.abc import Sequence

from absl import flags

import ferjax
from ferjax import cli
from ferjax import models
from ferjax import weights
from ferjax.weights import saved
from ferjax.weights import torch_convert


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
  options = weights.converter_options(model)  # Unknown model: ValueError.
  models.get_spec(model).check_fields(
    {k: v for k, v in fields.items() if k not in options}
  )
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


def _define(fv: flags.FlagValues) -> None:
  flags.DEFINE_string('model', None, 'registry name', flag_values=fv)
  flags.DEFINE_string('src', None, 'the PyTorch checkpoint', flag_values=fv)
  flags.DEFINE_string('out', None, 'the directory to write', flag_values=fv)
  flags.DEFINE_integer(
    'num_classes',
    None,
    "the checkpoint's class count (default: the model's, 7)",
    flag_values=fv,
  )
  flags.DEFINE_multi_string(
    'ignore',
    [],
    'a torch key prefix not to convert, e.g. fc.',
    flag_values=fv,
  )
  cli.define_fields(
    'field',
    'a model or converter field, e.g. width=32, or source=resnet18 to load '
    'a torchvision ResNet-18 into the front of manet',
    fv,
  )
  flags.mark_flags_as_required(['model', 'src', 'out'], flag_values=fv)


def _main(fv: flags.FlagValues, command: str) -> None:
  if command != 'convert':
    raise cli.UsageError(f'unknown command {command!r}; the command is convert')
  # Everything convert refuses is about its flags: an unknown model or
  # field, a file that is not that model's checkpoint, an --out in use (a
  # field value the model cannot build with fails in JAX as a TypeError).
  with cli.usage_errors(ValueError, OSError, TypeError):
    out = convert(
      fv.model,
      fv.src,
      fv.out,
      num_classes=fv.num_classes,
      ignore=tuple(fv.ignore),
      fields=dict(fv.field),
    )
  print(f'{fv.model} weights from {fv.src} are in {out}')


def main(argv: Sequence[str] | None = None) -> int:
  """Command-line entry point; returns the exit status."""
  return cli.run(_main, _define, argv)


if __name__ == '__main__':
  sys.exit(main())

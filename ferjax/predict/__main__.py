r"""python -m ferjax.predict: expressions in images, folders and videos.

  python -m ferjax.predict --workdir runs/demo photos/ clip.mp4 \
      --out results.csv --annotate_dir annotated/
  python -m ferjax.predict --weights weights/manet_msceleb --model manet \
      photo.jpg

Writes the table of `ferjax.predict` as CSV (stdout by default) or JSON
(records) and prints a one-line summary. Exit status: 0 if any face was
predicted, 1 if nothing could be, 2 for usage errors (bad flags, no inputs,
no such run or weights, an --out that cannot be written or exists without
--overwrite: all checked before anything is predicted).
"""

import json
import os
import sys
from collections.abc import Sequence

import pandas as pd
from absl import flags

from ferjax import cli
from ferjax import writers
from ferjax.faces import crops
from ferjax.faces import detect
from ferjax.predict.predictor import Predictor


def _define(fv: flags.FlagValues) -> None:
  flags.DEFINE_string('workdir', None, 'a ferjax training run', flag_values=fv)
  flags.DEFINE_string(
    'weights', None, 'a converted weights dir or a .pth', flag_values=fv
  )
  flags.DEFINE_string(
    'model', None, 'registry name, with --weights', flag_values=fv
  )
  flags.DEFINE_integer(
    'num_classes', None, 'classes of the head, with --weights', flag_values=fv
  )
  flags.DEFINE_integer(
    'image_size',
    None,
    "input side, with --weights (default: the model spec's)",
    flag_values=fv,
  )
  cli.define_fields(
    'field', 'a model or converter field, with --weights, e.g. width=32', fv
  )
  flags.DEFINE_string(
    'out',
    None,
    'results .csv or .json (default: CSV on stdout)',
    flag_values=fv,
  )
  flags.DEFINE_bool(
    'overwrite', False, 'replace an existing --out file', flag_values=fv
  )
  flags.DEFINE_enum(
    'detector',
    'auto',
    ('auto', *detect.list_detectors()),
    "face detector ('auto': mtcnn, or none for models of whole frames; "
    "'none': the inputs are face crops)",
    flag_values=fv,
  )
  flags.DEFINE_enum(
    'crop',
    None,
    sorted(crops.STYLES),
    "how faces are cut out (default: the run's dataset's)",
    flag_values=fv,
  )
  flags.DEFINE_integer(
    'stride', 1, 'video frame stride', lower_bound=1, flag_values=fv
  )
  flags.DEFINE_integer(
    'batch_size', 32, 'faces per forward pass', lower_bound=1, flag_values=fv
  )
  flags.DEFINE_float('margin', None, 'crop margin per side', flag_values=fv)
  flags.DEFINE_string(
    'annotate_dir', None, 'write annotated images here', flag_values=fv
  )
  flags.mark_flags_as_mutual_exclusive(
    ['workdir', 'weights'], required=True, flag_values=fv
  )


def _write(table: pd.DataFrame, out: str | None) -> None:
  """Writes the table to stdout, or atomically to `out`."""
  if out is None:
    table.to_csv(sys.stdout, index=False)
  elif out.lower().endswith('.json'):  # Re-dumped: pandas escapes '/'.
    records = json.loads(table.to_json(orient='records'))
    writers.write_json(out, records, fix=_OUT_FIX)
  else:
    writers.write_text(out, table.to_csv(index=False), fix=_OUT_FIX)


_OUT_FIX = 'pass another --out (the predictions are lost)'


def _check_out(out: str, overwrite: bool) -> None:
  """Refuses an --out that could not be written, before any prediction."""
  if not out.lower().endswith(('.csv', '.json')):
    raise cli.UsageError(f'--out={out}: use a .csv or .json file name')
  if os.path.isdir(out):
    raise cli.UsageError(f'--out={out} is a directory; name a file in it')
  if os.path.lexists(out) and not overwrite:
    raise cli.UsageError(
      f'--out={out} exists; pass --overwrite to replace it, or another --out'
    )
  parent = os.path.dirname(os.path.abspath(out))
  if not os.path.isdir(parent):
    raise cli.UsageError(f'--out={out}: there is no directory {parent}')
  try:
    writers.check_writable(parent)
  except OSError as e:
    raise cli.UsageError(f'--out={out}: {parent} is not writable') from e


def _predictor(fv: flags.FlagValues) -> Predictor:
  """The predictor the flags describe; what they name wrong is a usage
  error."""
  if fv.out:
    _check_out(fv.out, fv.overwrite)
  if fv.weights and not fv.model:
    raise cli.UsageError('--weights needs --model (the registry name)')
  options = {
    'detector': fv.detector,
    'batch_size': fv.batch_size,
    'stride': fv.stride,
  }
  if fv.margin is not None:
    options['margin'] = fv.margin
  if fv.crop is not None:
    options['crop'] = fv.crop
  with cli.usage_errors(OSError, ValueError, TypeError, ImportError):
    if fv.workdir:
      return Predictor.from_workdir(fv.workdir, **options)
    return Predictor.from_weights(
      fv.model,
      fv.weights,
      fv.num_classes,
      fv.image_size,
      **options,
      **dict(fv.field),
    )


def _main(fv: flags.FlagValues, *inputs: str) -> int:
  if not inputs:
    raise cli.UsageError('no INPUT: give images, directories or videos')
  predictor = _predictor(fv)
  table = predictor.predict(list(inputs), annotate_dir=fv.annotate_dir)
  _write(table, fv.out)
  ok = table['error'].isna()
  print(
    f'{table["input"].nunique()} inputs: {int(ok.sum())} predictions, '
    f'{int((~ok).sum())} errors' + (f' -> {fv.out}' if fv.out else ''),
    file=sys.stderr,
  )
  return 0 if ok.any() else 1


def main(argv: Sequence[str] | None = None) -> int:
  """Command-line entry point; returns the exit status (see --help)."""
  return cli.run(_main, _define, argv)


if __name__ == '__main__':
  sys.exit(main())

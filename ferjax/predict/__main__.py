r"""python -m ferjax.predict: expressions in images, folders and videos.

  python -m ferjax.predict --workdir runs/demo photos/ clip.mp4 \
      --out results.csv --annotate_dir annotated/
  python -m ferjax.predict --weights weights/manet_msceleb --model manet \
      photo.jpg

Writes the table of `ferjax.predict` as CSV (stdout by default) or JSON
(records) and prints a one-line summary; it exits with 0 if any face was
predicted, 1 if nothing could be, and 2 for usage errors (bad flags, no
such run or weights).
"""

import argparse
import ast
import json
import sys
from collections.abc import Iterable
from typing import Any

import pandas as pd

from ferjax.predict import detect
from ferjax.predict.predictor import Predictor


def _field(text: str) -> tuple[str, Any]:
  name, sep, value = text.partition('=')
  if not sep or not name:
    raise argparse.ArgumentTypeError(f'expected NAME=VALUE, got {text!r}')
  try:
    return name, ast.literal_eval(value)
  except (ValueError, SyntaxError):
    return name, value


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
    prog='python -m ferjax.predict',
    description='Predicts facial expressions in images, folders and videos.',
  )
  p.add_argument('inputs', nargs='+', metavar='INPUT', help='files or dirs')
  src = p.add_mutually_exclusive_group(required=True)
  src.add_argument('--workdir', help='a ferjax training run')
  src.add_argument('--weights', help='a converted weights dir or a .pth')
  p.add_argument('--model', help='registry name, with --weights')
  p.add_argument('--num_classes', type=int)
  p.add_argument('--image_size', type=int)
  p.add_argument(
    '--field', type=_field, action='append', default=[], metavar='NAME=VALUE'
  )
  p.add_argument('--out', help='results .csv or .json (default: CSV on stdout)')
  p.add_argument('--detector', default='haar', choices=detect.list_detectors())
  p.add_argument('--stride', type=int, default=1, help='video frame stride')
  p.add_argument('--batch_size', type=int, default=32)
  p.add_argument('--margin', type=float, help='crop margin per side')
  p.add_argument('--annotate_dir', help='write annotated images here')
  return p


def _write(table: pd.DataFrame, out: str | None) -> None:
  if out is None:
    table.to_csv(sys.stdout, index=False)
  elif out.lower().endswith('.json'):  # Re-dumped: pandas escapes '/'.
    records = json.loads(table.to_json(orient='records'))
    with open(out, 'w') as f:
      json.dump(records, f, indent=2)
  else:
    table.to_csv(out, index=False)


def main(argv: Iterable[str] | None = None) -> int:
  """Command-line entry point; returns the exit status (see --help)."""
  parser = _parser()
  args = parser.parse_args(argv)
  if args.out and not args.out.lower().endswith(('.csv', '.json')):
    parser.error(f'--out {args.out}: use a .csv or .json file name')
  if args.weights and not args.model:
    parser.error('--weights needs --model (the registry name)')
  options = {'detector': args.detector, 'batch_size': args.batch_size}
  options['stride'] = args.stride
  if args.margin is not None:
    options['margin'] = args.margin
  try:
    if args.workdir:
      predictor = Predictor.from_workdir(args.workdir, **options)
    else:
      predictor = Predictor.from_weights(
        args.model,
        args.weights,
        args.num_classes,
        args.image_size,
        **options,
        **dict(args.field),
      )
  except (OSError, ValueError, TypeError, ImportError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  table = predictor.predict(args.inputs, annotate_dir=args.annotate_dir)
  _write(table, args.out)
  ok = table['error'].isna()
  print(
    f'{table["input"].nunique()} inputs: {int(ok.sum())} predictions, '
    f'{int((~ok).sum())} errors' + (f' -> {args.out}' if args.out else ''),
    file=sys.stderr,
  )
  return 0 if ok.any() else 1


if __name__ == '__main__':
  sys.exit(main())

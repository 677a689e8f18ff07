r"""python -m ferjax.evaluate: a trained run on any built dataset.

  python -m ferjax.evaluate --workdir runs/manet_affectnet8 --dataset rafdb
  python -m ferjax.evaluate --workdir RUN --dataset ferplus/majority \
      --split validation --checkpoint final --out ferplus.json

Evaluates the run's checkpoint (--checkpoint: best, the default; final; or
a step) on a split (default: the one papers report on) of a built dataset
(default: the run's own), with the run's eval transform. Classes are
matched by canonical name: a 7-class dataset read by an 8-class model drops
the contempt logit before the argmax; a dataset class the model lacks is
left out of WAR and UAR and reported with its count. Writes WAR, UAR,
per-class recall and the confusion matrix as JSON (--out, default
<workdir>/eval/<dataset>_<split>_<checkpoint>.json) and their plots to
<workdir>/plots/, then prints a summary. Exit status: 0 done; 1 the dataset
is not built (the error gives the command that builds it); 2 usage errors
(bad flags, no such run or checkpoint, no class in common).
"""

import sys
from collections.abc import Sequence

from absl import flags

from ferjax import cli
from ferjax import writers


def _define(fv: flags.FlagValues) -> None:
  flags.DEFINE_string('workdir', None, 'a ferjax training run', flag_values=fv)
  flags.DEFINE_string(
    'dataset',
    None,
    "NAME[/CONFIG] of a built dataset (default: the run's own)",
    flag_values=fv,
  )
  flags.DEFINE_string(
    'split',
    None,
    "its split (default: the dataset's eval split)",
    flag_values=fv,
  )
  flags.DEFINE_string(
    'checkpoint', 'best', 'best, final or a step number', flag_values=fv
  )
  flags.DEFINE_string(
    'data_dir', None, "TFDS data_dir (default: the run's)", flag_values=fv
  )
  flags.DEFINE_string('out', None, 'the JSON report to write', flag_values=fv)
  flags.mark_flags_as_required(['workdir'], flag_values=fv)


def summary(metrics: dict) -> str:
  """One line: what was evaluated, WAR and UAR, and any class mismatch."""
  line = (
    f'{metrics["dataset"]} ({metrics["num_examples"]} examples), '
    f'{metrics["checkpoint"]} checkpoint (step {metrics["step"]}): '
    f'WAR {100 * metrics["war"]:.2f} %, UAR {100 * metrics["uar"]:.2f} %'
  )
  classes = metrics.get('classes')
  if classes:
    dropped = ', '.join(classes['dropped_logits']) or 'none'
    left = ', '.join(
      f'{n} ({v["num_examples"]} examples)'
      for n, v in classes['left_out'].items()
    )
    line += f'; logits dropped: {dropped}; left out: {left or "none"}'
  return f'{line}\n  -> {metrics["report"]}'


def _main(fv: flags.FlagValues) -> None:
  from ferjax.data import pipeline  # noqa: PLC0415  (heavy; flags first)
  from ferjax.evaluate import trained  # noqa: PLC0415

  writers.quiet_library_logs()
  checkpoint = fv.checkpoint
  with cli.usage_errors(ValueError, FileNotFoundError):
    if checkpoint not in ('best', 'final') and not checkpoint.isdigit():
      raise ValueError(
        f'--checkpoint={checkpoint!r}: use best, final or a step number.'
      )
    try:
      metrics = trained.evaluate_workdir(
        fv.workdir,
        fv.dataset,
        split=fv.split,
        checkpoint=checkpoint,
        data_dir=fv.data_dir,
        out=fv.out,
      )
    except pipeline.DatasetNotBuiltError as e:
      raise cli.Failure(cli.describe(e)) from e
  print(summary(metrics))


def main(argv: Sequence[str] | None = None) -> int:
  return cli.run(_main, _define, argv)


if __name__ == '__main__':
  sys.exit(main())

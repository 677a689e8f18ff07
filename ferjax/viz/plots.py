"""Evaluation and training figures, and the files `ferjax.train` writes.

* `confusion_matrix_figure` and `per_class_recall_figure` draw one
  evaluation; `save_eval_plots` writes them to `<workdir>/plots/
  confusion_<split>.png` and `recall_<split>.png`;
* `training_curves` draws loss, learning rate, train accuracy and eval
  WAR/UAR against the step from metrics.jsonl; `save_training_curves`
  writes `plots/curves.png`;
* `channel_weights_figure` shows a clip's (T, C) channel gates (GCSA).
"""

import math
import os
from collections.abc import Iterable
from collections.abc import Mapping

import numpy as np

from ferjax import writers
from ferjax.viz import files

CURVES_FILE = 'curves.png'
NORMALIZE = ('true', 'pred', 'all', None)
_NORMALIZE_TITLES = {
  'true': 'rows: recall',
  'pred': 'columns: precision',
  'all': 'fraction of all examples',
  None: 'counts',
}


def normalize_confusion(cm, normalize: str | None = 'true') -> np.ndarray:
  """The confusion matrix [true, predicted] as counts or fractions.

  Args:
    cm: (K, K) counts.
    normalize: 'true' (rows sum to one: each row is the recall of its
      class), 'pred' (columns sum to one), 'all' (the matrix sums to one)
      or None (counts). An empty row or column stays zero.

  Returns:
    (K, K) float64.
  """
  cm = np.asarray(cm, np.float64)
  if normalize not in NORMALIZE:
    raise ValueError(f'normalize={normalize!r}; use one of {NORMALIZE}.')
  if normalize is None:
    return cm
  axis = {'true': 1, 'pred': 0, 'all': None}[normalize]
  totals = cm.sum(axis=axis, keepdims=axis is not None)
  return np.divide(cm, totals, out=np.zeros_like(cm), where=totals > 0)


def class_recall(cm) -> np.ndarray:
  """Per-class recall from [true, predicted] counts; NaN for absent classes."""
  cm = np.asarray(cm, np.float64)
  support = cm.sum(axis=1)
  return np.divide(
    np.diag(cm), support, out=np.full(len(cm), np.nan), where=support > 0
  )


def _check_square(cm: np.ndarray, class_names) -> None:
  if cm.ndim != 2 or cm.shape != (len(class_names), len(class_names)):
    raise ValueError(
      f'The confusion matrix has shape {cm.shape} but there are '
      f'{len(class_names)} class names; give one name per row.'
    )


def confusion_matrix_figure(
  cm, class_names, normalize: str | None = 'true', title: str | None = None
):
  """The confusion matrix as an annotated heat map.

  Args:
    cm: (K, K) counts [true, predicted].
    class_names: K names, for both axes.
    normalize: see `normalize_confusion`; the cells show its values.
    title: first line of the title (e.g. the split and step).

  Returns:
    A Figure with one Axes: image data = the normalised matrix, title
    ending 'Confusion matrix (<normalisation>)', tick labels the names.
  """
  values = normalize_confusion(cm, normalize)
  names = [str(n) for n in class_names]
  _check_square(values, names)
  k = len(names)
  side = max(4.0, 1.8 + 0.5 * k)
  fig = files.new_figure(side + 0.4, side)
  ax = fig.add_subplot()
  vmax = 1.0 if normalize else max(float(values.max()), 1.0)
  ax.imshow(values, cmap='Blues', vmin=0.0, vmax=vmax)
  fmt = '{:.2f}' if normalize else '{:.0f}'
  for (i, j), value in np.ndenumerate(values):
    color = 'white' if value > 0.5 * vmax else 'black'
    ax.text(j, i, fmt.format(value), ha='center', va='center', color=color)
  ax.set_xticks(range(k), names, rotation=45, ha='right')
  ax.set_yticks(range(k), names)
  ax.set_xlabel('predicted')
  ax.set_ylabel('true')
  heading = f'Confusion matrix ({_NORMALIZE_TITLES[normalize]})'
  ax.set_title(f'{title}\n{heading}' if title else heading)
  fig.subplots_adjust(left=0.22, bottom=0.22, right=0.97, top=0.88)
  return fig


def per_class_recall_figure(cm, class_names, title: str | None = None):
  """Per-class recall as horizontal bars, with UAR as a dashed line.

  Args:
    cm: (K, K) counts [true, predicted].
    class_names: K names.
    title: first line of the title (e.g. the split and step).

  Returns:
    A Figure with one Axes: bar widths = recall (0 and the label 'n/a' for
    classes absent from the split), title ending 'Per-class recall (UAR
    x, WAR y)'.
  """
  counts = np.asarray(cm, np.float64)
  names = [str(n) for n in class_names]
  _check_square(counts, names)
  recall = class_recall(counts)
  present = ~np.isnan(recall)
  uar = float(recall[present].mean()) if present.any() else 0.0
  war = float(np.trace(counts) / max(counts.sum(), 1.0))
  k = len(names)
  fig = files.new_figure(6.0, max(2.5, 1.2 + 0.35 * k))
  ax = fig.add_subplot()
  ax.barh(range(k), np.nan_to_num(recall), color='tab:blue')
  support = counts.sum(axis=1)
  for i, (r, n) in enumerate(zip(recall, support, strict=True)):
    text = 'n/a' if math.isnan(r) else f'{r:.2f} (n={n:.0f})'
    ax.text(min(np.nan_to_num(r), 1.0) + 0.01, i, text, va='center')
  ax.axvline(uar, color='tab:red', linestyle='--', label='UAR')
  ax.set_yticks(range(k), names)
  ax.set_ylim(k - 0.5, -0.5)
  ax.set_xlim(0.0, 1.25)
  ax.set_xlabel('recall')
  heading = f'Per-class recall (UAR {uar:.3f}, WAR {war:.3f})'
  ax.set_title(f'{title}\n{heading}' if title else heading)
  fig.subplots_adjust(left=0.2, right=0.97, bottom=0.15, top=0.85)
  return fig


def _eval_value(metrics: Mapping, key: str):
  return metrics.get(key, metrics.get(f'eval/{key}'))


def eval_plot_paths(workdir: str, split: str) -> tuple[str, str]:
  """The confusion-matrix and recall PNGs of `split` in a workdir."""
  name = files.file_safe(split)
  plots = os.path.join(workdir, files.PLOTS_DIR)
  return (
    os.path.join(plots, f'confusion_{name}.png'),
    os.path.join(plots, f'recall_{name}.png'),
  )


def save_eval_plots(
  workdir: str, metrics: Mapping, split: str, step: int
) -> tuple[str, str]:
  """Writes one evaluation's confusion matrix and per-class recall.

  Args:
    workdir: the run's folder; the files go to its `plots/`.
    metrics: `ferjax.evaluate.metrics_from_confusion`'s dict, or an eval
      record with 'eval/' keys; its 'confusion_matrix' is drawn, and the
      keys of 'per_class_recall' name the classes.
    split: the evaluated split, in the file names and titles.
    step: the training step of the evaluated state, in the titles.

  Returns:
    The paths of `plots/confusion_<split>.png` and `plots/recall_<split>.png`.
  """
  cm = _eval_value(metrics, 'confusion_matrix')
  if cm is None:
    raise KeyError('The metrics hold no confusion_matrix to plot.')
  cm = np.asarray(cm)
  names = list(_eval_value(metrics, 'per_class_recall') or ())
  if len(names) != len(cm):
    names = [str(i) for i in range(len(cm))]
  title = f'{split}, step {step}'
  confusion, recall = eval_plot_paths(workdir, split)
  files.save_figure(confusion_matrix_figure(cm, names, title=title), confusion)
  files.save_figure(per_class_recall_figure(cm, names, title=title), recall)
  return confusion, recall


# (panel title, ((metrics.jsonl key, legend label), ...)).
CURVES = (
  ('loss', (('train/loss', 'train'), ('eval/loss', 'eval'))),
  ('learning rate', (('train/lr', 'lr'),)),
  ('train accuracy', (('train/accuracy', 'train'),)),
  ('eval WAR / UAR', (('eval/war', 'WAR'), ('eval/uar', 'UAR'))),
)


def metric_series(records: Iterable[Mapping], key: str):
  """(steps, values) of the records holding a finite number under `key`."""
  points = [
    (r['step'], float(r[key]))
    for r in records
    if isinstance(r.get(key), int | float) and math.isfinite(r[key])
  ]
  steps, values = zip(*points, strict=True) if points else ((), ())
  return np.asarray(steps, np.int64), np.asarray(values, np.float64)


def training_curves(workdir: str):
  """Loss, learning rate, train accuracy and eval WAR/UAR against the step.

  Args:
    workdir: a run's folder holding metrics.jsonl.

  Returns:
    A Figure with the four panels of `CURVES` (a panel with no data says
    so).
  """
  records = writers.read_metrics(workdir)
  fig = files.new_figure(10.0, 7.0)
  axes = fig.subplots(2, 2, sharex=True).ravel()
  for ax, (name, series) in zip(axes, CURVES, strict=True):
    drawn = False
    for key, label in series:
      steps, values = metric_series(records, key)
      if len(steps):
        marker = 'o' if key.startswith('eval/') else None
        ax.plot(steps, values, marker=marker, markersize=3, label=label)
        drawn = True
    if drawn and len(series) > 1:
      ax.legend()
    if not drawn:
      ax.text(0.5, 0.5, 'no data', ha='center', transform=ax.transAxes)
    ax.set_title(name)
    ax.grid(alpha=0.3)
  for ax in axes[2:]:
    ax.set_xlabel('step')
  fig.suptitle(os.path.basename(os.path.normpath(workdir)))
  fig.subplots_adjust(left=0.08, right=0.97, bottom=0.08, top=0.9)
  return fig


def save_training_curves(workdir: str) -> str:
  """Writes `training_curves(workdir)` to `<workdir>/plots/curves.png`."""
  path = os.path.join(workdir, files.PLOTS_DIR, CURVES_FILE)
  return files.save_figure(training_curves(workdir), path)


def channel_weights_figure(weights, title: str | None = None):
  """One clip's (T, C) channel gates as a heat map (frames x channels)."""
  weights = np.asarray(weights, np.float32)
  if weights.ndim != 2:
    raise ValueError(f'Expected (T, C) channel weights, got {weights.shape}.')
  fig = files.new_figure(8.0, 2.0 + 0.15 * len(weights))
  ax = fig.add_subplot()
  image = ax.imshow(weights, aspect='auto', cmap='viridis', vmin=0, vmax=1)
  ax.set_xlabel('channel')
  ax.set_ylabel('frame')
  fig.colorbar(image, ax=ax)
  if title:
    ax.set_title(title)
  return fig

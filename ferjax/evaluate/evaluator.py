"""The jitted evaluation of a train state over a split, a holdout or a source.

`Evaluator` runs `ferjax.evaluate.eval_step` over one padded, masked pass
(`ferjax.data.pipeline.eval_dataset`) and turns the summed confusion matrix
into metrics. The trainer builds one for the eval split and, when
`config.data.validation` names something else, one more with `validator`
for choosing the best checkpoint; `ferjax.evaluate.trained` builds one for
any dataset a trained run is evaluated on.
"""

import functools

import jax
import jax.numpy as jnp
import ml_collections

from ferjax import evaluate
from ferjax import labels as labels_lib
from ferjax import sharding
from ferjax.data import pipeline
from ferjax.evaluate import classes as classes_lib

# metrics.jsonl keys: eval/<metric> for the eval split, val/<metric> for a
# validation set that is not the eval split.
EVAL_PREFIX = 'eval'
VALIDATION_PREFIX = 'val'


class Evaluator:
  """Runs the jitted eval step over a padded split; returns metrics.

  Args:
    config: its `data`, `augment`, `clip` and `eval_batch_size` say what
      is read and how (the run's eval transform).
    split: the split to read; with `source`, only its name.
    model: the Linen module.
    mesh: the device mesh.
    state_sharding: the shardings of the states `run` takes.
    source: a random-access source to read instead of `split`.
    classes: a `ClassMatch` when the model's classes are not the dataset's
      (config.data.num_classes, canonical names); None when they are.
  """

  def __init__(
    self,
    config: ml_collections.ConfigDict,
    split: str,
    model,
    mesh,
    state_sharding,
    source=None,
    classes: classes_lib.ClassMatch | None = None,
  ):
    self.config, self.split, self.classes = config, split, classes
    self.data_sharding = sharding.data_sharding(mesh)
    self.class_names = list(labels_lib.class_names(config.data.num_classes))
    self.step_fn = jax.jit(
      functools.partial(
        evaluate.eval_step,
        model=model,
        num_classes=config.data.num_classes,
        classes=classes,
      ),
      in_shardings=(state_sharding, self.data_sharding),
      out_shardings=sharding.replicated(mesh),
    )
    self.dataset, self.num_examples, self.num_batches = pipeline.eval_dataset(
      config, split, source
    )

  def run(self, state) -> dict:
    totals = None
    for batch in self.dataset:
      sums = self.step_fn(
        state, sharding.global_batch(batch, self.data_sharding)
      )
      totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    totals = jax.device_get(totals)
    if int(totals['count']) != self.num_examples:  # Padding must not count.
      raise RuntimeError(
        f'Evaluated {int(totals["count"])} examples of {self.split!r}, '
        f'expected {self.num_examples}.'
      )
    if self.classes is None:
      metrics = evaluate.metrics_from_confusion(
        totals['confusion'], self.class_names
      )
    else:
      metrics = classes_lib.matched_metrics(totals['confusion'], self.classes)
    metrics['loss'] = float(totals['loss_sum']) / max(int(totals['scored']), 1)
    return metrics


def validation(config: ml_collections.ConfigDict) -> str:
  """What chooses the best checkpoint: a split name or 'holdout:F'."""
  return config.data.get('validation') or config.data.eval_split


def validator(
  config: ml_collections.ConfigDict, model, mesh, state_sharding
) -> Evaluator | None:
  """The evaluator of `config.data.validation`; None for the eval split.

  A holdout reads its part of the train split with the eval transform.
  """
  name = validation(config)
  if name == config.data.eval_split:
    return None
  held = pipeline.holdout_source(config, 'validation')
  source = None if held is None else held[0]
  return Evaluator(config, name, model, mesh, state_sharding, source=source)


def records(metrics: dict, prefix: str = EVAL_PREFIX) -> dict:
  """`metrics` as metrics.jsonl keys: {'<prefix>/war': ..., ...}."""
  return {f'{prefix}/{k}': v for k, v in metrics.items()}


def at_best_validation(
  config: ml_collections.ConfigDict, logged: list[dict]
) -> dict | None:
  """The eval split's metrics at the step that scored best on validation.

  Args:
    config: the run's config (`best_metric`, the validation and eval split).
    logged: the run's metrics.jsonl records (`writers.read_metrics`).

  Returns:
    {'step', 'metric', 'validation': {'on', 'war', 'uar', 'num_examples'},
    'eval': {'split', 'war', 'uar'}} for results.json, or None when the
    validation is the eval split (its 'best' already says it) or nothing
    was evaluated.
  """
  name = validation(config)
  if name == config.data.eval_split:
    return None
  key = f'{VALIDATION_PREFIX}/{config.best_metric}'
  scored = [r for r in logged if key in r and 'eval/war' in r]
  if not scored:
    return None
  best = max(scored, key=lambda r: r[key])  # The first of equal scores.
  val = VALIDATION_PREFIX
  return {
    'step': best['step'],
    'metric': config.best_metric,
    'validation': {
      'on': name,
      'war': best[f'{val}/war'],
      'uar': best[f'{val}/uar'],
      'num_examples': best[f'{val}/num_examples'],
    },
    'eval': {
      'split': config.data.eval_split,
      'war': best['eval/war'],
      'uar': best['eval/uar'],
    },
  }

"""A trained run's checkpoint, evaluated on any built dataset.

  metrics = evaluate_workdir('runs/manet_affectnet8', 'rafdb')
  metrics = evaluate_workdir('runs/x', 'ferplus/majority', checkpoint='final')

The run's config.json gives the model and its eval transform (`augment`:
size and eval resize; `clip`; the eval batch); only `config.data` is
replaced by the target dataset's. Classes are matched by canonical name
(`ferjax.evaluate.classes`): logits of classes the dataset lacks are dropped
before the argmax, and dataset classes the model lacks are left out of WAR
and UAR and reported. Only the checkpoint's saved state is read, never the
train split or the data iterator, so a run evaluates wherever its
checkpoint and the target dataset are.

`evaluate_config` is `run.py --mode=eval`: the run's own eval split with
the config given on the command line.
"""

import dataclasses
import os

import jax
import ml_collections
import numpy as np

from ferjax import checkpointing
from ferjax import labels
from ferjax import models
from ferjax import sharding
from ferjax import train
from ferjax import viz
from ferjax import writers
from ferjax.data import build as build_lib
from ferjax.data import datasets
from ferjax.data import pipeline
from ferjax.evaluate import classes as classes_lib
from ferjax.evaluate import evaluator as evaluator_lib

EVAL_DIR = 'eval'  # <workdir>/eval/<dataset>_<split>_<checkpoint>.json
WRITE_FIX = 'free space (or fix permissions) and rerun the same command'


@dataclasses.dataclass(frozen=True)
class Target:
  """A built dataset split to evaluate on.

  Attributes:
    name: the builder (a folder of tfds_builders/).
    config: its builder config; None: the builder's default.
    split: the split.
    data_dir: the TFDS data_dir it is built in; None: TFDS's default.
    class_names: its classes, by label.
  """

  name: str
  config: str | None
  split: str
  data_dir: str | None
  class_names: tuple[str, ...]

  @property
  def label(self) -> str:
    """'name[/config] split', for messages and reports."""
    return f'{self.name}{f"/{self.config}" if self.config else ""} {self.split}'


def parse_dataset(text: str) -> tuple[str, str | None]:
  """'NAME[/CONFIG]' -> (NAME, CONFIG or None)."""
  name, _, config = text.strip().partition('/')
  if not name:
    raise ValueError(f'--dataset={text!r}: expected NAME or NAME/CONFIG.')
  return name, config or None


def find_target(
  dataset: str, split: str | None = None, data_dir: str | None = None
) -> Target:
  """The built dataset `dataset` ('NAME[/CONFIG]') names, and its classes.

  Args:
    dataset: a dataset of tfds_builders/, optionally with a builder config.
    split: its split; None: the split papers report on (the dataset's eval
      split, else 'test').
    data_dir: the TFDS data_dir it is built in.

  Raises:
    ValueError: an unknown dataset, config or split.
    DatasetNotBuiltError: with the command that builds it.
  """
  name, config = parse_dataset(dataset)
  spec = datasets.SPECS.get(name)
  config = config or (spec.default_config if spec else None)
  split = split or (spec.eval_split if spec else 'test')
  data = ml_collections.ConfigDict(
    {'name': name, 'config': config, 'data_dir': data_dir}
  )
  pipeline.require_built(data)  # Unknown names and configs raise first.
  info = build_lib.builder(name, config, data_dir).info
  if split not in info.splits:
    raise ValueError(
      f'--split={split!r}: {name} has the splits '
      f'{", ".join(sorted(info.splits))}.'
    )
  return Target(
    name=name,
    config=config,
    split=split,
    data_dir=data_dir,
    class_names=tuple(info.features['label'].names),
  )


def target_config(
  run_config: ml_collections.ConfigDict, target: Target
) -> ml_collections.ConfigDict:
  """The run's config with `config.data` reading `target`.

  The eval transform (`augment`, `clip`, `eval_batch_size`) and the input
  workers stay the run's; the split is both eval split and validation.
  """
  config = ml_collections.ConfigDict(run_config.to_dict())
  spec = datasets.SPECS.get(target.name)
  data = config.data
  data.name, data.config = target.name, target.config
  data.data_dir = target.data_dir
  data.num_classes = len(target.class_names)
  data.train_split = spec.train_split if spec else target.split
  data.eval_split = data.validation = target.split
  data.auto_build = data.decoded_cache = False
  data.sampling, data.soft_target = 'uniform', None
  return config


def _put(tree, shardings):
  """Host arrays onto the devices, each process giving its own shards."""
  return jax.tree.map(
    lambda x, s: jax.make_array_from_callback(
      np.shape(x), s, lambda index: np.asarray(x)[index]
    ),
    tree,
    shardings,
  )


def eval_state(config: ml_collections.ConfigDict, variables: dict, mesh):
  """(state, its shardings) holding `variables`, for the jitted eval step."""
  variables = dict(variables)
  state = train.TrainState(
    step=np.zeros((), np.int32),
    params=variables.pop('params'),
    model_state=variables,
    opt_state=(),
  )
  shardings = sharding.state_shardings(state, mesh, config.sharding)
  return _put(state, shardings), shardings


def run_evaluator(
  model_config: ml_collections.ConfigDict,
  variables: dict,
  data_config: ml_collections.ConfigDict,
  split: str,
  *,
  source=None,
  classes: classes_lib.ClassMatch | None = None,
) -> dict:
  """Metrics of `variables` on `split` of `data_config.data`.

  Args:
    model_config: the run's config (model, classes, sharding, mesh).
    variables: the model's variables, host arrays.
    data_config: what to read and how (`target_config`, or the run's).
    split: the split.
    source: a random-access source to read instead of the split.
    classes: the class match, when the model's classes differ.
  """
  mesh = sharding.make_mesh(model_config.mesh)
  state, shardings = eval_state(model_config, variables, mesh)
  model = models.create_model(model_config)
  evaluator = evaluator_lib.Evaluator(
    data_config, split, model, mesh, shardings, source=source, classes=classes
  )
  return evaluator.run(state)


def evaluate_variables(
  run_config: ml_collections.ConfigDict,
  variables: dict,
  target: Target,
  source=None,
) -> dict:
  """Metrics of a run's variables on `target`, classes matched by name.

  Args:
    run_config: the run's config.
    variables: its model variables, host arrays.
    target: the dataset split (`find_target`).
    source: a random-access source to read instead of the split (tests).

  Raises:
    ValueError: if the model and the dataset have no class in common.
  """
  model_names = labels.class_names(run_config.data.num_classes)
  match = classes_lib.match_classes(
    model_names,
    target.class_names,
    what=f'a {run_config.data.num_classes}-class model on {target.label}',
  )
  metrics = run_evaluator(
    run_config,
    variables,
    target_config(run_config, target),
    target.split,
    source=source,
    classes=None if match.same else match,
  )
  metrics['dataset'] = target.label
  return metrics


def write_json(path: str, record: dict) -> str:
  """`writers.write_json` on process 0 (every process has the record)."""
  if jax.process_index() == 0:
    writers.write_json(path, record, fix=WRITE_FIX)
  return path


def report_name(target: Target, checkpoint: str) -> str:
  """The file stem of an evaluation, e.g. 'rafdb_test_best'."""
  parts = (target.name, target.config or '', target.split, str(checkpoint))
  return viz.files.file_safe('_'.join(p for p in parts if p))


def evaluate_workdir(
  workdir: str,
  dataset: str | None = None,
  *,
  split: str | None = None,
  checkpoint: str = 'best',
  data_dir: str | None = None,
  out: str | None = None,
) -> dict:
  """Evaluates a run's checkpoint on a built dataset and writes the report.

  Args:
    workdir: a ferjax run (config.json and a checkpoint).
    dataset: 'NAME[/CONFIG]'; None: the run's own dataset.
    split: None: the dataset's eval split.
    checkpoint: 'best', 'final' or a step (`checkpointing.find_checkpoint`).
    data_dir: where the dataset is built; None: the run's data_dir.
    out: the JSON report; None: <workdir>/eval/<dataset>_<split>_<ckpt>.json.

  Returns:
    WAR, UAR, per-class recall, the confusion matrix, the loss and the
    number of examples, with 'step', 'checkpoint', 'dataset' and 'report'
    (the JSON's path); 'classes' when the classes differ. The confusion
    matrix and recall plots go to <workdir>/plots/.
  """
  run_config = checkpointing.run_config(workdir)
  data_dir = data_dir or run_config.data.get('data_dir')
  if dataset is None:
    own = run_config.data
    dataset = f'{own.name}/{own.config}' if own.get('config') else own.name
  checkpointing.find_checkpoint(workdir, checkpoint)  # Before any work.
  target = find_target(dataset, split, data_dir)
  variables, step = checkpointing.load_checkpoint(workdir, checkpoint)
  metrics = evaluate_variables(run_config, variables, target)
  name = report_name(target, checkpoint)
  out = out or os.path.join(workdir, EVAL_DIR, f'{name}.json')
  metrics.update(step=step, checkpoint=str(checkpoint), report=out)
  write_json(out, metrics)
  train.write_plots(viz.save_eval_plots, workdir, metrics, name, step)
  return metrics


def evaluate_config(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """`run.py --mode=eval`: the best (else latest) checkpoint, eval split.

  Writes workdir/eval_<split>.json, plots/confusion_<split>.png and
  plots/recall_<split>.png, and returns the metrics with the 'step'.
  """
  variables, step = checkpointing.load_checkpoint(workdir, 'auto')
  split = config.data.eval_split
  metrics = run_evaluator(config, variables, config, split)
  metrics['step'] = step
  name = f'eval_{split.replace("/", "_").replace(":", "_")}.json'
  write_json(os.path.join(workdir, name), metrics)
  train.write_plots(viz.save_eval_plots, workdir, metrics, split, step)
  return metrics

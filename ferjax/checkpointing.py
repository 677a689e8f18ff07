"""Checkpoints of the train state and the grain iterator, saved together.

`workdir/checkpoints/<step>/` holds {state, data_iter}: restoring both makes
a killed run continue exactly where it stopped. `workdir/best/<step>/` holds
the state that scored best on the eval split. Orbax writes each step to a
temporary directory and renames it on success, so a crash mid-save never
leaves a checkpoint that looks complete.

`load_pretrained` serves step 2 of the resume order (the workdir's latest
checkpoint, else `config.init_from`, else scratch): it fills a fresh state
from another run's checkpoint, a converted weights directory or a PyTorch
file, all read by `load_variables` (which the predictor uses too).
"""

import json
import os
import shutil

import flax
import grain
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from orbax.checkpoint import checkpoint_managers as policies

from ferjax import weights
from ferjax.weights import saved
from ferjax.weights import sources
from ferjax.weights import torch_convert


def _abstract(tree):
  """ShapeDtypeStructs with shardings, the target orbax restores into."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


class Checkpointer:
  """The run's checkpoints: periodic + final (with iterator) and best.

  Args:
    workdir: the run directory.
    every_steps: save every this many steps (0 = only final and preemption).
    keep: how many periodic checkpoints to keep.
    async_save: write in a background thread while training goes on.
  """

  def __init__(
    self, workdir: str, every_steps: int, keep: int, async_save: bool = True
  ):
    self.directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
    self.best_directory = os.path.join(os.path.abspath(workdir), 'best')
    save_policy = [policies.PreemptionCheckpointingPolicy()]
    if every_steps:
      save_policy.append(policies.FixedIntervalPolicy(every_steps))
    self._manager = ocp.CheckpointManager(
      self.directory,
      options=ocp.CheckpointManagerOptions(
        save_decision_policy=policies.AnySavePolicy(save_policy),
        preservation_policy=policies.LatestN(keep),
        enable_async_checkpointing=async_save,
      ),
      item_names=('state', 'data_iter'),
    )
    self._best = ocp.CheckpointManager(
      self.best_directory,
      options=ocp.CheckpointManagerOptions(
        preservation_policy=policies.LatestN(1),
        enable_async_checkpointing=False,
      ),
      item_names=('state',),
    )

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def should_save(self, step: int) -> bool:
    return self._manager.should_save(step)

  def save(self, step: int, state, data_iter, force: bool = False) -> bool:
    """Saves state and iterator at `step` if due (or forced)."""
    saved = self._manager.save(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data_iter=grain.checkpoint.CheckpointSave(data_iter),
      ),
      force=force,
    )
    if saved:
      logging.info('Saving checkpoint at step %d to %s', step, self.directory)
    return saved

  def restore(self, step: int, state, data_iter):
    """Restores state (into `state`'s shapes and shardings) and iterator."""
    restored = self._manager.restore(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardRestore(_abstract(state)),
        data_iter=grain.checkpoint.CheckpointRestore(data_iter),
      ),
    )
    return restored['state']

  def save_best(self, step: int, state) -> None:
    self._best.save(
      step, args=ocp.args.Composite(state=ocp.args.StandardSave(state))
    )

  def best_step(self) -> int | None:
    return self._best.latest_step()

  def restore_best(self, state):
    step = self._best.latest_step()
    restored = self._best.restore(
      step,
      args=ocp.args.Composite(state=ocp.args.StandardRestore(_abstract(state))),
    )
    return restored['state']

  def drop_best_after(self, step: int) -> None:
    """Forgets best checkpoints newer than a resumed step (they recur)."""
    for s in self._best.all_steps():
      if s > step and jax.process_index() == 0:
        shutil.rmtree(os.path.join(self.best_directory, str(s)))
    self._best.reload()

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
    self._best.close()


def _restore_as_numpy(path: str) -> dict:
  """A saved pytree as host numpy arrays, whatever devices saved it.

  Restoring with the saved shardings fails when the devices differ (a run
  trained on 8 GPUs, loaded on 1 or on a CPU); numpy needs no sharding.
  """
  checkpointer = ocp.PyTreeCheckpointer()
  tree = checkpointer.metadata(path).item_metadata.tree
  restore_args = jax.tree.map(
    lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree
  )
  return checkpointer.restore(
    path, args=ocp.args.PyTreeRestore(restore_args=restore_args)
  )


def restore_raw_state(directory: str, what: str = 'config.init_from') -> dict:
  """The saved state of a run directory as nested dicts (for init_from).

  Takes the best checkpoint if there is one, else the latest.

  Args:
    directory: a ferjax workdir.
    what: how the error names `directory` (the flag or field it came from).
  """
  for sub in ('best', 'checkpoints'):
    path = os.path.join(os.path.abspath(directory), sub)
    if not os.path.isdir(path):
      continue
    with ocp.CheckpointManager(path, item_names=('state',)) as manager:
      step = manager.latest_step()
    if step is None:
      continue
    logging.info('Restoring %s step %d', path, step)
    return _restore_as_numpy(os.path.join(path, str(step), 'state'))
  raise FileNotFoundError(
    f'{what}={directory!r} holds no checkpoint (looked in best/ and '
    'checkpoints/); point it at a ferjax workdir (or, for init_from, a .pth '
    'file).'
  )


def run_config(workdir: str) -> ml_collections.ConfigDict:
  """A run's config, from the config.json training wrote.

  Raises:
    FileNotFoundError: naming the missing config.json.
  """
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    raise FileNotFoundError(
      f'{path} does not exist: {workdir!r} is not a ferjax workdir (run.py '
      'writes config.json there when training starts).'
    )
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def load_run(workdir: str) -> tuple[ml_collections.ConfigDict, dict]:
  """A finished or running workdir's config and model variables.

  For inference and export: the config is the run's config.json, the
  variables its best checkpoint's (else the latest's) params and model
  state, as host numpy arrays.

  Raises:
    FileNotFoundError: naming the missing config.json or checkpoint.
  """
  config = run_config(workdir)
  raw = restore_raw_state(workdir, what='workdir')
  variables = {'params': raw['params'], **raw.get('model_state', {})}
  return config, jax.device_get(variables)


def _saved_steps(directory: str) -> list[int]:
  if not os.path.isdir(directory):
    return []
  with ocp.CheckpointManager(directory, item_names=('state',)) as manager:
    return sorted(manager.all_steps())


def find_checkpoint(workdir: str, which: str = 'auto') -> tuple[str, int]:
  """Where one checkpoint of a run lies: (its saved state's path, step).

  Args:
    workdir: a ferjax workdir.
    which: 'best' (the state that scored best on validation), 'final' (the
      latest periodic checkpoint: the last step of a finished run), 'auto'
      (best, else final) or a step number (of either).

  Raises:
    FileNotFoundError: naming the workdir, the checkpoints it has and what
      to pass instead.
  """
  workdir = os.path.abspath(workdir)
  found = {
    sub: _saved_steps(os.path.join(workdir, sub))
    for sub in ('best', 'checkpoints')
  }
  if not any(found.values()):
    raise FileNotFoundError(
      f'--workdir={workdir} holds no checkpoint (best/ and checkpoints/ are '
      'empty or missing); train it first (python run.py ... --workdir).'
    )
  has = f'best {found["best"] or "none"}, saved {found["checkpoints"]}'
  choices = {
    'best': ('best', found['best'][-1:]),
    'final': ('checkpoints', found['checkpoints'][-1:]),
  }
  if which == 'auto':
    which = 'best' if found['best'] else 'final'
  if which in choices:
    sub, steps = choices[which]
  else:
    step = int(which) if str(which).isdigit() else None
    sub = next((k for k, v in found.items() if step in v), None)
    steps = [step] if sub else []
  if not steps:
    raise FileNotFoundError(
      f'--workdir={workdir} has no {which!r} checkpoint (it has: {has}); '
      'pass --checkpoint=best, final or one of the steps it has.'
    )
  return os.path.join(workdir, sub, str(steps[0]), 'state'), steps[0]


def load_checkpoint(workdir: str, which: str = 'auto') -> tuple[dict, int]:
  """One checkpoint's model variables as host numpy arrays, and its step.

  Reads only the saved state (no data iterator), whatever devices saved it;
  `which` as in `find_checkpoint`.
  """
  path, step = find_checkpoint(workdir, which)
  raw = _restore_as_numpy(path)
  return {'params': raw['params'], **raw.get('model_state', {})}, step


def _merge_pretrained(fresh: dict, loaded: dict, what: str) -> dict:
  """Copies loaded leaves over fresh ones where path and shape agree."""
  fresh_flat = flax.traverse_util.flatten_dict(fresh, sep='/')
  loaded_flat = flax.traverse_util.flatten_dict(loaded, sep='/')
  kept = []
  for key, value in fresh_flat.items():
    new = loaded_flat.get(key)
    if new is not None and np.shape(new) == value.shape:
      fresh_flat[key] = jax.device_put(
        np.asarray(new, value.dtype), value.sharding
      )
    else:
      kept.append(key)
  if len(kept) == len(fresh_flat):
    raise ValueError(
      f'config.init_from: no {what} matched the model; is it the same '
      'model (config.model.name)?'
    )
  if kept:
    logging.info('init_from: %s left at init: %s', what, ', '.join(kept))
  return flax.traverse_util.unflatten_dict(fresh_flat, sep='/')


# PyTorch checkpoint files `weights.from_torch` reads.
PYTORCH_EXTENSIONS = ('.pth', '.pth.tar', '.pt')


def source_kind(path: str) -> str | None:
  """What a pretrained source is: 'torch' (a .pth/.pth.tar/.pt file),
  'weights' (a directory `python -m ferjax.weights convert` wrote),
  'workdir' (any other directory: a ferjax run), or None (neither)."""
  if os.path.isfile(path) and path.endswith(PYTORCH_EXTENSIONS):
    return 'torch'
  if saved.is_weights_dir(path):
    return 'weights'
  if os.path.isdir(path):
    return 'workdir'
  return None


def load_variables(
  path: str,
  *,
  model_name: str,
  model_fields: dict,
  skip: tuple[str, ...] = (),
  seed: int = 0,
) -> dict:
  """Model variables from any pretrained source, as host numpy arrays.

  Args:
    path: a PyTorch file (converted by `ferjax.weights.from_torch` with
      `model_fields`, which may include the converter's options), a
      converted weights directory, or a ferjax workdir (its best, else
      latest, checkpoint); see `source_kind`.
    model_name: the registry name of the model the variables are for.
    model_fields: its fields, for a PyTorch converter.
    skip: PyTorch key prefixes whose modules are left out, whatever the
      source (e.g. 'fc.' for a new head).
    seed: seeds what a PyTorch converter initialises afresh.

  Returns:
    {'params': ..., 'batch_stats': ...}, less the skipped modules.

  Raises:
    FileNotFoundError: `path` is none of the three.
  """
  kind = source_kind(path)
  if kind == 'torch':
    loaded = weights.from_torch(
      model_name, path, ignore=skip, rng=seed, **model_fields
    )
  elif kind == 'weights':
    loaded, meta = saved.load(path)
    logging.info(
      'Loading %s (%s weights converted from %s)',
      path,
      meta.get('model'),
      meta.get('source'),
    )
    if meta.get('model') != model_name:  # Shapes decide; names may differ.
      logging.warning(
        '%s holds %s weights; the model is %s.',
        path,
        meta.get('model'),
        model_name,
      )
  elif kind == 'workdir':
    raw = restore_raw_state(path)
    loaded = {'params': raw['params'], **raw.get('model_state', {})}
  else:
    raise FileNotFoundError(
      f'{path!r} is neither a PyTorch {"/".join(PYTORCH_EXTENSIONS)} file, '
      'a converted weights directory nor a ferjax workdir.'
    )
  torch_convert.drop_modules(loaded, skip)  # Skipped modules keep their init.
  return loaded


def load_pretrained(
  path: str,
  state,
  *,
  model_name: str,
  model_fields: dict,
  skip: tuple[str, ...] = (),
  seed: int = 0,
):
  """`state` with params and model state loaded from `path`.

  Args:
    path: a ferjax workdir (its best, else latest, checkpoint), a weights
      directory written by `python -m ferjax.weights convert`, or a PyTorch
      `.pth`/`.pth.tar`/`.pt` file converted by `ferjax.weights.from_torch`.
    state: the freshly initialised train state (fixes shapes and shardings).
    model_name: the registry name of the model.
    model_fields: the model's fields, for the PyTorch converter.
    skip: PyTorch key prefixes not loaded (e.g. 'fc.' for a new head); those
      modules keep their fresh init, whatever the source.
    seed: seeds what a PyTorch converter initialises afresh (modules the
      checkpoint lacks), so they vary with the run's seed.

  Returns:
    The state with every matching leaf replaced; leaves whose path or shape
    differ (e.g. a head of another size) keep their fresh init.
  """
  path = os.path.expanduser(path)
  if not os.path.exists(path):
    raise FileNotFoundError(sources.missing_file_message(path))
  loaded = load_variables(
    path,
    model_name=model_name,
    model_fields=model_fields,
    skip=skip,
    seed=seed,
  )
  loaded_params = loaded.pop('params')
  loaded_state = loaded
  params = _merge_pretrained(state.params, loaded_params, 'params')
  model_state = state.model_state
  if model_state and loaded_state:
    model_state = _merge_pretrained(model_state, loaded_state, 'model state')
  return state.replace(params=params, model_state=model_state)

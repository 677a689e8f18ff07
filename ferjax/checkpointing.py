"""Checkpoints of the train state and the grain iterator, saved together.

`workdir/checkpoints/<step>/` holds {state, data_iter}: restoring both makes
a killed run continue exactly where it stopped. `workdir/best/<step>/` holds
the state that scored best on the eval split. Orbax writes each step to a
temporary directory and renames it on success, so a crash mid-save never
leaves a checkpoint that looks complete; a checkpoint damaged afterwards is
skipped with a warning, and the newest intact one is used
(`ferjax.checkpoint_checks`). A failed save is one `writers.WriteError`
naming the directory and the reason (a full disk, permissions).

`load_pretrained` serves step 2 of the resume order (the workdir's latest
checkpoint, else `config.init_from`, else scratch): it fills a fresh state
from another run's checkpoint, a converted weights directory or a PyTorch
file, all read by `load_variables` (which the predictor uses too).
"""

import contextlib
import os
import shutil
from typing import NamedTuple

import flax
import grain
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from orbax.checkpoint import checkpoint_managers as policies

from ferjax import checkpoint_checks as checks
from ferjax import weights
from ferjax import writers
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
    self.workdir = os.path.abspath(workdir)
    self.directory = os.path.join(self.workdir, 'checkpoints')
    self.best_directory = os.path.join(self.workdir, 'best')
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

  @contextlib.contextmanager
  def _writing(self, directory: str):
    """Turns a failed (or earlier failed async) save into a WriteError."""
    try:
      yield
    except Exception as e:  # noqa: BLE001 - orbax and tensorstore raise many.
      raise writers.cannot_write(directory, checks.cause(e)) from e

  def save(self, step: int, state, data_iter, force: bool = False) -> bool:
    """Saves state and iterator at `step` if due (or forced)."""
    with self._writing(self.directory):
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

  def _restore_checked(self, step: int, state, data_iter):
    """`restore`, after reading the metadata: a missing file is named."""
    checks.saved_tree(os.path.join(self.directory, str(step), 'state'))
    return self.restore(step, state, data_iter)

  def resume(self, state, data_iter, total_steps: int):
    """(step, state) of the newest checkpoint that restores; (0, state) if
    there is none.

    Refuses, before anything is written, checkpoints this config cannot
    continue (`checks.check_continues`). Newer checkpoints that cannot be
    read are skipped with a warning and moved to checkpoints.unreadable/:
    the resumed run saves those steps again.
    """
    steps = sorted(self._manager.all_steps(), reverse=True)
    if not steps:
      return 0, state
    checks.check_continues(
      self.directory, steps, state, total_steps, self.workdir
    )
    (_, step), restored, skipped = checks.newest_intact(
      [(self.directory, s) for s in steps],
      lambda _, s: self._restore_checked(s, state, data_iter),
      what=f'--workdir={self.workdir}',
      fix='pass a new --workdir, or move checkpoints/ away to start afresh',
    )
    if skipped and jax.process_index() == 0:
      for directory, s in skipped:
        checks.set_aside(directory, s)
      self._manager.reload()
    logging.info('Resuming from step %d in %s', step, self.directory)
    return step, restored

  def save_best(self, step: int, state) -> None:
    with self._writing(self.best_directory):
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
    with self._writing(self.directory):
      self._manager.wait_until_finished()

  def close(self) -> None:
    self.wait()
    self._manager.close()
    self._best.close()


def _restore_as_numpy(path: str) -> dict:
  """A saved pytree as host numpy arrays, whatever devices saved it.

  Restoring with the saved shardings fails when the devices differ (a run
  trained on 8 GPUs, loaded on 1 or on a CPU); numpy needs no sharding.
  """
  restore_args = jax.tree.map(
    lambda _: ocp.RestoreArgs(restore_type=np.ndarray), checks.saved_tree(path)
  )
  with ocp.PyTreeCheckpointer() as checkpointer:
    return checkpointer.restore(
      path, args=ocp.args.PyTreeRestore(restore_args=restore_args)
    )


def _steps(path: str) -> list[int]:
  """The finished steps of a checkpoint directory, newest first."""
  if not os.path.isdir(path):
    return []
  with ocp.CheckpointManager(path, item_names=('state',)) as manager:
    return sorted(manager.all_steps(), reverse=True)


# Where a run's state is read from, most wanted first, and what each is.
_SOURCES = (('best', 'best'), ('checkpoints', 'latest'))


def read_state(directory: str, what: str = 'config.init_from'):
  """The newest intact saved state of a run directory, best/ first.

  Args:
    directory: a ferjax workdir.
    what: how the error names `directory` (the flag or field it came from).

  Returns:
    ({'kind': 'best' or 'latest', 'step': N}, the state as nested dicts of
    numpy arrays). Unreadable checkpoints are skipped with a warning.
  """
  base = os.path.abspath(directory)
  candidates = [
    (os.path.join(base, sub), step)
    for sub, _ in _SOURCES
    for step in _steps(os.path.join(base, sub))
  ]
  if not candidates:
    raise FileNotFoundError(
      f'{what}={directory!r} holds no checkpoint (looked in best/ and '
      'checkpoints/); point it at a ferjax workdir (or, for init_from, a '
      '.pth file).'
    )
  (path, step), raw, _ = checks.newest_intact(
    candidates,
    lambda path, step: _restore_as_numpy(
      os.path.join(path, str(step), 'state')
    ),
    what=f'{what}={directory!r}',
    fix='restore the workdir from a copy, or train it again',
  )
  logging.info('Restored %s step %d', path, step)
  kind = dict(_SOURCES)[os.path.basename(path)]
  return {'kind': kind, 'step': step}, raw


def run_config(workdir: str) -> ml_collections.ConfigDict:
  """A run's config, from the config.json training wrote.

  Raises:
    FileNotFoundError: naming the missing config.json.
    ValueError: naming a damaged one.
  """
  path = os.path.join(workdir, writers.CONFIG_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(
      f'{path} does not exist: {workdir!r} is not a ferjax workdir (run.py '
      'writes config.json there when training starts).'
    )
  return ml_collections.ConfigDict(writers.read_json(path))


def restore_raw_state(directory: str, what: str = 'config.init_from') -> dict:
  """The saved state of a run directory as nested dicts (for init_from):
  its best checkpoint if intact, else the newest intact one."""
  return read_state(directory, what)[1]


class Run(NamedTuple):
  """A run's config, model variables and the checkpoint they came from."""

  config: ml_collections.ConfigDict
  variables: dict
  checkpoint: dict  # {'kind': 'best' or 'latest', 'step': N}


def read_run(workdir: str) -> Run:
  """A finished or running workdir's config and model variables.

  For inference and export: the config is the run's config.json, the
  variables its best checkpoint's (else the newest intact one's) params and
  model state, as host numpy arrays.

  Raises:
    FileNotFoundError: naming the missing config.json or checkpoint.
    ValueError: naming a damaged config.json, or every checkpoint unreadable.
  """
  config = run_config(workdir)
  used, raw = read_state(workdir, what='workdir')
  variables = {'params': raw['params'], **raw.get('model_state', {})}
  return Run(config, jax.device_get(variables), used)


def load_run(workdir: str) -> tuple[ml_collections.ConfigDict, dict]:
  """`read_run`'s config and variables."""
  return read_run(workdir)[:2]


def find_checkpoint(workdir: str, which: str = 'auto') -> tuple[str, int]:
  """Where one checkpoint of a run lies: (best/ or checkpoints/, its step).

  `which`: 'best' (scored best on validation), 'final' (the latest periodic
  checkpoint: a finished run's last step), 'auto' (best, else final) or a
  step number of either. A missing one is a FileNotFoundError naming the
  workdir, the checkpoints it has and what to pass instead.
  """
  workdir = os.path.abspath(workdir)
  found = {sub: _steps(os.path.join(workdir, sub)) for sub, _ in _SOURCES}
  if not any(found.values()):
    raise FileNotFoundError(
      f'--workdir={workdir} holds no checkpoint (best/ and checkpoints/ are '
      'empty or missing); train it first (python run.py ... --workdir).'
    )
  if which == 'auto':
    which = 'best' if found['best'] else 'final'
  named = {'best': 'best', 'final': 'checkpoints'}
  if which in named:  # The newest of its kind.
    sub, step = named[which], (found[named[which]] or [None])[0]
  else:
    step = int(which) if str(which).isdigit() else None
    sub = next((k for k, v in found.items() if step in v), None)
  if sub is None or step is None:
    best, saved = (sorted(found[k]) or 'none' for k in ('best', 'checkpoints'))
    raise FileNotFoundError(
      f'--workdir={workdir} has no {which!r} checkpoint (it has: best {best}, '
      f'saved {saved}); pass --checkpoint=best, final or one of its steps.'
    )
  return os.path.join(workdir, sub), step


def load_checkpoint(workdir: str, which: str = 'auto') -> tuple[dict, int]:
  """One checkpoint's model variables as host numpy arrays, and its step.

  Reads only the saved state (no data iterator), whatever devices saved it;
  `which` as in `find_checkpoint`. 'auto' falls back past unreadable
  checkpoints to the newest intact one (`read_state`); a checkpoint asked
  for by name that cannot be read is an UnreadableCheckpointError.
  """
  found = find_checkpoint(workdir, which)
  if which == 'auto':
    used, raw = read_state(workdir, what='--workdir')
    found = (None, used['step'])
  else:
    _, raw, _ = checks.newest_intact(
      [found],
      lambda d, n: _restore_as_numpy(os.path.join(d, str(n), 'state')),
      what=f'--workdir={workdir}',
      fix='pick another with --checkpoint, or train it again',
    )
  return {'params': raw['params'], **raw.get('model_state', {})}, found[1]


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

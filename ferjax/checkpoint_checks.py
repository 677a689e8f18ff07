"""Which checkpoints of a workdir can be used, and why the others cannot.

Orbax writes each step into a temporary directory and renames it when it is
complete, so a killed save never looks finished; a full disk, a damaged copy
or a hand edit can still leave a finished step unreadable. So every reader
takes the newest checkpoint that restores and skips the others with a
warning naming their step (`newest_intact`), and training refuses, before it
writes anything, a workdir that its config cannot continue
(`check_continues`): a checkpoint past `config.total_steps`, or saved arrays
of other shapes (another model, width or optimizer).
"""

import os
import re
import time
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

import flax
import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from ferjax import cli

# Where training moves a finished step it cannot read, beside checkpoints/.
ASIDE_SUFFIX = '.unreadable'
# What a refused workdir can do instead (the message names the workdir).
_NEW_RUN = (
  'pass a new --workdir, or --config.init_from={workdir} to start a new run '
  'from its weights'
)
# tensorstore reports an OS error as text: `... [os_error_code='28']`.
_OS_ERROR_CODE = re.compile(r"os_error_code='?(\d+)")


class UnreadableCheckpointError(ValueError):
  """No checkpoint of a directory can be read."""


class CannotContinueError(ValueError):
  """The config cannot continue the workdir's run: a usage error."""


def cause(error: BaseException) -> str:
  """The one-line reason of a failed checkpoint read or write.

  orbax wraps tensorstore's error, which says what is wrong with which file,
  into its own: the innermost error of the chain is the reason. An OS
  error in it, given as `os_error_code`, is reported as its text
  (`No space left on device`).
  """
  while (error.__cause__ or error.__context__) is not None:
    error = error.__cause__ or error.__context__
  text = cli.describe(error)
  code = _OS_ERROR_CODE.search(text)
  if code:
    return os.strerror(int(code.group(1)))
  if isinstance(error, OSError) and error.strerror:
    return error.strerror
  return text if len(text) <= 300 else text[:300] + '...'


def saved_tree(item_dir: str):
  """The metadata tree of a saved pytree (shapes and dtypes, no arrays)."""
  handler = ocp.PyTreeCheckpointHandler()
  try:
    return handler.metadata(epath.Path(item_dir)).tree
  finally:
    handler.close()


def saved_shapes(item_dir: str) -> dict[str, tuple[int, ...]]:
  """{'params.fc.kernel': shape, ...} of a saved pytree, from its metadata."""
  leaves = jax.tree.leaves(saved_tree(item_dir))
  return {m.name: tuple(m.shape) for m in leaves if hasattr(m, 'shape')}


def state_shapes(state: Any) -> dict[str, tuple[int, ...]]:
  """`saved_shapes`' names and shapes for an in-memory (abstract) state."""
  flat = flax.traverse_util.flatten_dict(
    flax.serialization.to_state_dict(state), sep='.'
  )
  return {k: tuple(np.shape(v)) for k, v in flat.items() if hasattr(v, 'shape')}


def shape_mismatch(saved: dict, expected: dict) -> str | None:
  """How two {name: shape} maps differ, in a few words; None if they agree."""
  names = sorted(set(saved) | set(expected))
  bad = [n for n in names if saved.get(n) != expected.get(n)]
  if not bad:
    return None
  first = bad[0]
  show = lambda x: 'none' if x is None else str(x)  # noqa: E731
  return (
    f'{len(bad)} of {len(names)} arrays differ, e.g. {first}: saved '
    f'{show(saved.get(first))}, this config {show(expected.get(first))}'
  )


def check_continues(
  directory: str, steps: Sequence[int], state, total_steps: int, workdir: str
) -> None:
  """Refuses a config that cannot continue the checkpoints in `directory`.

  Args:
    directory: the checkpoints directory; each step holds a 'state' item.
    steps: its finished steps, newest first.
    state: the (abstract) state this config trains.
    total_steps: this config's number of steps.
    workdir: the run directory, for the message.

  Raises:
    CannotContinueError: the newest checkpoint is past `total_steps`, or the
      newest one whose metadata reads holds arrays of other names or shapes.
  """
  fix = _NEW_RUN.format(workdir=workdir)
  if steps and steps[0] > total_steps:
    raise CannotContinueError(
      f'--workdir={workdir} holds a checkpoint at step {steps[0]}, past '
      f'config.total_steps={total_steps}: set config.total_steps to at '
      f'least {steps[0]} to continue it, or {fix}.'
    )
  expected = state_shapes(state)
  for step in steps:
    try:
      saved = saved_shapes(os.path.join(directory, str(step), 'state'))
    except Exception:  # noqa: BLE001 - unreadable: the restore skips it.
      continue
    mismatch = shape_mismatch(saved, expected)
    if mismatch:
      raise CannotContinueError(
        f'--workdir={workdir} was trained with another model or config '
        f'(checkpoint step {step}: {mismatch}); {fix}.'
      )
    return


def newest_intact(
  candidates: Sequence[tuple[str, int]],
  restore: Callable[[str, int], Any],
  what: str,
  fix: str,
) -> tuple[tuple[str, int], Any, list[tuple[str, int]]]:
  """Restores the first (directory, step) of `candidates` that restores.

  Each one that fails is skipped with a warning naming its step and why.

  Args:
    candidates: (checkpoint directory, step) pairs, most wanted first.
    restore: (directory, step) -> the restored value.
    what: names the workdir in the error, e.g. "--workdir=runs/demo".
    fix: what to do when none restores, for the error.

  Returns:
    (the (directory, step) used, its restored value, the skipped ones).

  Raises:
    UnreadableCheckpointError: none restores; names each and why.
  """
  skipped, reasons = [], []
  for directory, step in candidates:
    try:
      value = restore(directory, step)
    except Exception as e:  # noqa: BLE001 - orbax and tensorstore raise many.
      reasons.append(f'{os.path.basename(directory)}/{step}: {cause(e)}')
      skipped.append((directory, step))
      logging.warning(
        'Checkpoint step %d in %s cannot be read (%s); skipping it.',
        step,
        directory,
        cause(e),
      )
      continue
    return (directory, step), value, skipped
  raise UnreadableCheckpointError(
    f'{what}: no checkpoint can be read ({"; ".join(reasons)}); {fix}.'
  )


def set_aside(directory: str, step: int) -> str:
  """Moves an unreadable step out of orbax's sight (a resumed run saves that
  step again) into `<directory>.unreadable/`; returns where it went."""
  aside = directory.rstrip(os.sep) + ASIDE_SUFFIX
  os.makedirs(aside, exist_ok=True)
  target = os.path.join(aside, f'{step}-{time.strftime("%Y%m%d-%H%M%S")}')
  os.rename(os.path.join(directory, str(step)), target)
  logging.warning('Moved unreadable checkpoint step %d to %s.', step, target)
  return target

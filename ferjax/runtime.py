"""Process-wide settings that the command-line entry points share.

`Preemption` turns SIGTERM into a request to checkpoint and stop cleanly.

`enable_compilation_cache` turns on XLA's persistent compilation cache, so
that a rerun, a resumed run or the next seed of a sweep loads its compiled
train and eval steps from disk instead of compiling them again (MFER's train
step takes ~20 s to compile on a CPU and ~35 s on a GPU; a cache hit takes
well under a second). Entries are keyed by the program, the jax/jaxlib
version and the devices, so a stale entry is never used.
"""

import os
import signal
import sys

import jax
from absl import logging

HUGE_PAGES = 'glibc.malloc.hugetlb=1'


class Preemption:
  """Turns SIGTERM into a request to checkpoint and stop cleanly.

  Within `with Preemption() as p:`, `p.requested` becomes True when the
  process receives SIGTERM (TPU and cloud preemption send it); the previous
  handler comes back on exit.
  """

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # Not the main thread: leave signals alone.
      self._previous = None
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def cache_root(*parts: str) -> str:
  """$XDG_CACHE_HOME/ferjax/..., or ~/.cache/ferjax/...: local caches."""
  root = os.environ.get('XDG_CACHE_HOME') or os.path.join(
    os.path.expanduser('~'), '.cache'
  )
  return os.path.join(root, 'ferjax', *parts)


def default_cache_dir() -> str:
  """$XDG_CACHE_HOME/ferjax/xla, or ~/.cache/ferjax/xla."""
  return cache_root('xla')


def enable_compilation_cache(directory: str | None = None) -> str | None:
  """Points JAX's persistent compilation cache at `directory`.

  Call it before anything is compiled. A directory already configured
  (`JAX_COMPILATION_CACHE_DIR` or `jax.config`) wins, so a user's own
  setting is never overridden. The cache only speeds things up: if the
  directory cannot be created, a warning is logged and runs go on without.

  Args:
    directory: where to keep compiled programs; None picks
      `default_cache_dir()`, '' turns the cache off.

  Returns:
    The directory in use, or None when the cache is off.
  """
  configured = jax.config.jax_compilation_cache_dir
  if configured:
    return configured
  if directory == '':
    return None
  directory = os.path.abspath(
    os.path.expanduser(directory or default_cache_dir())
  )
  try:
    os.makedirs(directory, exist_ok=True)
  except OSError as e:
    logging.warning(
      'No compilation cache: cannot create %s (%s); pass '
      '--compilation_cache_dir=DIR to use another folder.',
      directory,
      e.strerror,
    )
    return None
  jax.config.update('jax_compilation_cache_dir', directory)
  logging.info('Compiled programs are cached in %s.', directory)
  return directory


def hint_cpu_allocator() -> bool:
  """Logs how to speed up CPU steps when glibc's huge pages are off.

  XLA:CPU allocates every step's temporary buffers anew; with 4 KiB pages
  they are page-faulted in on every step (~80k faults for a ResNet-18 step
  at batch 32). GLIBC_TUNABLES=glibc.malloc.hugetlb=1, set before Python
  starts (the Makefile does), lets malloc use transparent huge pages.

  Returns:
    Whether the hint was logged.
  """
  if sys.platform != 'linux' or jax.default_backend() != 'cpu':
    return False
  if 'hugetlb' in os.environ.get('GLIBC_TUNABLES', ''):
    return False
  logging.info(
    'CPU steps run ~12%% faster with GLIBC_TUNABLES=%s in the environment '
    '(docs/performance.md).',
    HUGE_PAGES,
  )
  return True

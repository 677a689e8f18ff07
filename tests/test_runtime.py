"""The persistent compilation cache that run.py and the sweep turn on."""

import os
import subprocess
import sys
import textwrap

from ferjax import runtime

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs in a fresh process: the cache directory can only be chosen before the
# first compilation, and the test session has its own cache configured.
_SCRIPT = textwrap.dedent(
  """
  import os, sys
  import jax, jax.numpy as jnp
  from ferjax import runtime
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
  arg = sys.argv[1]
  print(runtime.enable_compilation_cache(None if arg == 'default' else arg))
  jax.jit(lambda x: jnp.sin(x) * 2)(jnp.ones(3)).block_until_ready()
  """
)


def _run(tmp_path, arg: str, **env_overrides) -> str:
  env = {
    k: v for k, v in os.environ.items() if k != 'JAX_COMPILATION_CACHE_DIR'
  }
  env.update(XDG_CACHE_HOME=str(tmp_path / 'xdg'), **env_overrides)
  out = subprocess.run(
    [sys.executable, '-c', _SCRIPT, arg],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
  )
  assert out.returncode == 0, out.stderr[-2000:]
  return out.stdout.strip().splitlines()[-1]


def test_default_cache_dir_follows_xdg(monkeypatch, tmp_path):
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path))
  assert runtime.default_cache_dir() == str(tmp_path / 'ferjax' / 'xla')


def test_compiled_programs_land_in_the_default_cache(tmp_path):
  used = _run(tmp_path, 'default')
  assert used == str(tmp_path / 'xdg' / 'ferjax' / 'xla')
  assert os.listdir(used), 'no compiled program was written to the cache'


def test_an_explicit_directory_and_off(tmp_path):
  used = _run(tmp_path, str(tmp_path / 'mine'))
  assert used == str(tmp_path / 'mine') and os.listdir(used)
  assert _run(tmp_path, '') == 'None'
  assert not (tmp_path / 'xdg').exists()


def test_the_users_own_setting_wins(tmp_path):
  theirs = str(tmp_path / 'theirs')
  assert _run(tmp_path, 'default', JAX_COMPILATION_CACHE_DIR=theirs) == theirs
  assert not (tmp_path / 'xdg').exists()


def test_an_unusable_directory_only_warns(tmp_path):
  blocker = tmp_path / 'file'
  blocker.write_text('')
  assert _run(tmp_path, str(blocker / 'cache')) == 'None'


def test_the_huge_page_hint_only_when_they_are_off(monkeypatch):
  monkeypatch.setenv('GLIBC_TUNABLES', runtime.HUGE_PAGES)
  assert not runtime.hint_cpu_allocator()
  monkeypatch.setenv('GLIBC_TUNABLES', 'glibc.malloc.trim_threshold=1')
  assert runtime.hint_cpu_allocator() == (sys.platform == 'linux')

"""Helpers shared by the paper-config tests."""

import importlib


def get_config(name: str, arg: str = ''):
  """`configs/<name>.py`'s config for `arg`."""
  return importlib.import_module(f'configs.{name}').get_config(arg)


def train_smoke(name: str, data_dir: str, workdir) -> dict:
  """Trains `configs/<name>.py:smoke` on the session's smoke dataset.

  Returns:
    The run's results (`train.train_and_evaluate`), after checking that it
    reached its last step, evaluated and checkpointed.
  """
  from ferjax import train

  config = get_config(name, 'smoke')
  config.data.data_dir = data_dir
  config.data.auto_build = False
  config.checkpoint.async_save = False
  config.lock()
  results = train.train_and_evaluate(config, str(workdir))
  steps = config.total_steps
  assert results['final']['step'] == steps
  assert 0.0 <= results['final']['war'] <= 1.0
  assert (workdir / 'checkpoints' / str(steps)).is_dir()
  assert (workdir / 'results.json').is_file()
  return results

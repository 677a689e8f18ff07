"""End to end on the smoke config: train, evaluate, resume, bad input."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ferjax import checkpointing
from ferjax import models
from ferjax import train
from ferjax import writers
from ferjax.data import pipeline
from ferjax.evaluate import trained as trained_lib


def _json(workdir, name):
  with open(os.path.join(workdir, name)) as f:
    return json.load(f)


@pytest.fixture(scope='module')
def trained(smoke_run_copy):
  """The smoke run (12 steps on 8 devices), shared by the tests below."""
  config, workdir, results = smoke_run_copy
  return config, str(workdir), results


def test_smoke_run_writes_logs_checkpoints_and_results(trained):
  config, workdir, results = trained
  records = writers.read_metrics(workdir)
  evals = [r for r in records if 'eval/war' in r]
  assert [r['step'] for r in evals] == [7, 12]
  for r in evals:  # 140 test examples, eval batch 32: the last is padded.
    assert r['eval/num_examples'] == 140
    assert np.sum(r['eval/confusion_matrix']) == 140
  train_steps = [r['step'] for r in records if 'train/loss' in r]
  assert train_steps == [2, 4, 6, 7, 8, 10, 12]
  assert all(np.isfinite(r['train/loss']) for r in records if 'train/loss' in r)
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == [
    '12',
    '4',
    '8',
  ]
  assert os.listdir(os.path.join(workdir, 'best'))
  saved = _json(workdir, 'results.json')
  assert saved['final']['step'] == 12 and saved['final']['num_examples'] == 140
  assert saved['best']['war'] == max(r['eval/war'] for r in evals)
  assert saved['final']['war'] == evals[-1]['eval/war']
  assert _json(workdir, 'config.json')['seed'] == 0
  assert os.listdir(os.path.join(workdir, 'tb'))


def test_eval_mode_matches_best_checkpoint(trained, monkeypatch):
  config, workdir, _ = trained

  data_source = pipeline.data_source

  def eval_split_only(cfg, split, **kwargs):  # --mode=eval needs no train.
    assert split == config.data.eval_split, split
    return data_source(cfg, split, **kwargs)

  monkeypatch.setattr(pipeline, 'data_source', eval_split_only)
  metrics = trained_lib.evaluate_config(config, workdir)
  best = _json(workdir, 'results.json')['best']
  assert metrics['num_examples'] == 140
  assert metrics['step'] == best['step']
  assert metrics['war'] == pytest.approx(best['war'])


def test_rerun_of_a_finished_run_trains_nothing_more(trained):
  config, workdir, results = trained
  before = writers.read_metrics(workdir)
  again = train.train_and_evaluate(config, workdir)
  assert writers.read_metrics(workdir) == before
  assert again['final']['war'] == results['final']['war']


def test_init_from_a_workdir_copies_params(trained, tmp_path):
  config, workdir, _ = trained
  config = config.copy_and_resolve_references()
  config.init_from = workdir
  config.total_steps = 1
  run = train.Setup(config, str(tmp_path))
  loaded = train.load_init_from(config, run.state)
  best = checkpointing.restore_raw_state(workdir)
  np.testing.assert_array_equal(
    jax.device_get(loaded.params['fc']['kernel']),
    best['params']['fc']['kernel'],
  )
  run.checkpointer.close()


@pytest.mark.parametrize(
  ('name', 'match'),
  [
    (
      'convnext_base_22k_224.pth',
      'download it from https://dl.fbaipublicfiles',
    ),
    ('mine.pth', 'Set --config.init_from to an existing file'),
  ],
)
def test_missing_init_from_says_where_to_get_it(
  smoke_config, tmp_path, name, match
):
  smoke_config.init_from = str(tmp_path / name)
  with pytest.raises(FileNotFoundError, match=match) as err:
    train.train_and_evaluate(smoke_config, str(tmp_path / 'run'))
  assert f'config.init_from={str(tmp_path / name)!r} does not exist' in str(
    err.value
  )


def test_missing_dataset_names_the_build_command(smoke_config, tmp_path):
  config = smoke_config
  config.data.data_dir = str(tmp_path / 'empty')
  with pytest.raises(pipeline.DatasetNotBuiltError) as err:
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert (
    f'python -m ferjax.data.build synthetic_fer --config smoke '
    f'--data_dir {tmp_path / "empty"}'
  ) in str(err.value)


def test_unwritable_workdir_fails_before_any_work(smoke_config, tmp_path):
  blocker = tmp_path / 'a_file'
  blocker.write_text('')
  config = smoke_config
  config.data.data_dir = str(tmp_path / 'never_built')
  config.data.auto_build = True
  with pytest.raises(PermissionError, match='--workdir=.*is not writable'):
    train.train_and_evaluate(config, str(blocker / 'run'))
  assert not (tmp_path / 'never_built').exists()


def test_nan_stops_with_the_step_and_keeps_the_checkpoint(
  smoke_config, tmp_path
):
  config = smoke_config
  config.total_steps = 4
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(config, workdir)
  saved_config = _json(workdir, 'config.json')
  config.total_steps = 12
  config.schedule.base_lr = 1e30
  config.schedule.warmup_epochs = 0.0
  with pytest.raises(train.NonFiniteLossError, match=r'at step (5|6|7|8)\b'):
    train.train_and_evaluate(config, workdir)
  # config.json still describes the checkpoints, not the failed config.
  assert _json(workdir, 'config.json') == saved_config
  ckpt = checkpointing.Checkpointer(workdir, every_steps=4, keep=3)
  assert ckpt.latest_step() == 4
  config.schedule.base_lr = 0.1
  run = train.Setup(config, workdir)
  state = run.checkpointer.restore(4, run.state, iter(run.train_data))
  assert int(state.step) == 4
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(state.params))
  run.checkpointer.close()
  ckpt.close()


def test_load_run_gives_the_config_and_best_variables(trained, tmp_path):
  config, workdir, _ = trained
  loaded_config, variables = checkpointing.load_run(workdir)
  assert loaded_config.model.name == config.model.name
  assert tuple(loaded_config.augment.crop_scale) == tuple(
    config.augment.crop_scale
  )
  best = checkpointing.restore_raw_state(workdir)
  np.testing.assert_array_equal(
    variables['params']['fc']['kernel'], best['params']['fc']['kernel']
  )
  assert 'batch_stats' in variables
  model = models.create_model(loaded_config)
  images = np.zeros((2, 32, 32, 3), np.float32)
  assert model.apply(variables, images)['logits'].shape == (2, 7)
  # A run saved on 8 devices loads on 1 (a laptop after a pod run).
  script = (
    'import numpy as np; from ferjax import checkpointing; '
    f'_, v = checkpointing.load_run({workdir!r}); '
    "print(type(v['params']['fc']['kernel']).__name__, "
    "float(np.abs(v['params']['fc']['kernel']).sum()))"
  )
  env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=1'}
  out = subprocess.run(
    [sys.executable, '-c', script], env=env, capture_output=True, text=True
  )
  assert out.returncode == 0, out.stderr[-2000:]
  kind, total = out.stdout.split()
  assert kind == 'ndarray'
  assert float(total) == pytest.approx(
    float(np.abs(best['params']['fc']['kernel']).sum())
  )
  with pytest.raises(FileNotFoundError, match='not a ferjax workdir'):
    checkpointing.load_run(str(tmp_path))
  (tmp_path / 'config.json').write_text('{}')
  with pytest.raises(FileNotFoundError, match='workdir=.* holds no checkpoint'):
    checkpointing.load_run(str(tmp_path))


@pytest.mark.parametrize(
  'name, backend, expected',
  [
    ('auto', 'cpu', 'float32'),
    ('auto', 'gpu', 'bfloat16'),
    ('auto', 'cuda', 'bfloat16'),
    ('auto', 'tpu', 'bfloat16'),
    ('float32', 'tpu', 'float32'),
    ('bfloat16', 'cpu', 'bfloat16'),
  ],
)
def test_compute_dtype_auto_is_bf16_on_accelerators(name, backend, expected):
  assert models.compute_dtype(name, backend) == np.dtype(expected)


def test_unknown_compute_dtype_names_the_field():
  with pytest.raises(ValueError, match='config.model.dtype=.*bf32'):
    models.compute_dtype('bf32')


def test_bf16_step_keeps_float32_master_weights(smoke_config):
  """Mixed precision: bf16 activations, float32 params, state and loss."""
  smoke_config.model.dtype = 'bfloat16'
  mesh = jax.make_mesh((jax.device_count(),), ('data',))
  trainable = train.build_trainable(smoke_config, mesh, 1, 1, jax.random.key(0))
  size, b = smoke_config.augment.size, smoke_config.batch_size
  rng = np.random.default_rng(0)
  batch = {
    'image': rng.integers(0, 256, (b, size, size, 3), dtype=np.uint8),
    'label': rng.integers(0, 7, (b,), dtype=np.int32),
  }
  before = jax.tree.map(np.asarray, trainable.state.params)
  state, metrics = trainable.step_fn(trainable.state, batch, jax.random.key(1))
  for tree in (state.params, state.opt_state, state.model_state):
    for leaf in jax.tree.leaves(tree):
      if jnp.issubdtype(leaf.dtype, jnp.floating):
        assert leaf.dtype == jnp.float32
  assert metrics['loss'].dtype == jnp.float32 and np.isfinite(metrics['loss'])
  moved = jax.tree.map(
    lambda a, b: np.abs(np.asarray(a) - b).max(), state.params, before
  )
  assert max(jax.tree.leaves(moved)) > 0
  _, hidden = trainable.model.apply(
    state.variables(),
    jnp.zeros((1, size, size, 3)),
    capture_intermediates=True,
    mutable=['intermediates'],
  )
  assert jnp.dtype('bfloat16') in {x.dtype for x in jax.tree.leaves(hidden)}

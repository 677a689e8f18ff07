"""The MA-Net configs: the official recipe per dataset, and a smoke run."""

import importlib

import pytest

from ferjax import losses
from ferjax import models
from ferjax.data import datasets
from tests import config_helpers

# config module -> (data.name, data.config, eval split, classes, lr,
# StepLR period, StepLR factor, epochs, batch), from MA-Net's official logs.
RECIPES = {
  'manet_rafdb': ('rafdb', None, 'test', 7, 0.01, 15, 0.1, 100, 128),
  'manet_affectnet7': (
    'affectnet',
    '7class',
    'test',
    7,
    0.01,
    5,
    0.1,
    20,
    256,
  ),
  'manet_affectnet8': (
    'affectnet',
    '8class',
    'test',
    8,
    0.01,
    5,
    0.1,
    20,
    256,
  ),
  'manet_caer_s': ('caer_s', 'frames', 'test', 7, 0.1, 50, 0.5, 400, 128),
  'manet_sfew': ('sfew', None, 'validation', 7, 0.001, 10, 0.1, 100, 128),
}


def _config(name, arg):
  return importlib.import_module(f'configs.{name}').get_config(arg)


@pytest.mark.parametrize('name', sorted(RECIPES))
@pytest.mark.parametrize('arg', ['', 'smoke'])
def test_config_loads_and_locks(name, arg):
  config = _config(name, arg)
  config.lock()
  with pytest.raises(AttributeError, match='no_such_field'):
    config.model.no_such_field = 1
  assert config.model.name == 'manet'
  assert config.model.direction == 'same'
  assert models.loss_name(config) == 'manet'
  assert config.model.beta == config.loss.beta == 0.6
  assert config.loss.label_smoothing == 0
  assert config.init_from == ''
  assert config.best_metric == 'war'


@pytest.mark.parametrize('name', sorted(RECIPES))
def test_one_beta_for_model_and_loss(name):
  config = _config(name, '')
  config.lock()
  config.model.beta = 0.5  # What --config.model.beta=0.5 does.
  assert config.loss.beta == 0.5
  assert config.to_dict()['loss']['beta'] == 0.5


@pytest.mark.parametrize('name', sorted(RECIPES))
def test_full_config_is_the_official_recipe(name):
  dataset, builder_config, split, classes, lr, period, gamma, epochs, batch = (
    RECIPES[name]
  )
  config = _config(name, '')
  assert config.data.name == dataset
  assert config.data.config == builder_config
  assert config.data.train_split == 'train'
  assert config.data.eval_split == split
  assert config.data.num_classes == classes
  assert config.data.sampling == 'uniform'  # main.py samples uniformly.
  datasets.check_data_config(config.data)
  assert config.schedule.base_lr == lr
  assert config.schedule.step_size == period
  assert config.schedule.gamma == gamma
  assert config.num_epochs == epochs
  assert config.batch_size == batch
  assert not config.total_steps
  assert (config.schedule.name, config.schedule.unit) == ('step', 'epoch')
  assert config.schedule.warmup_epochs == 0
  assert not config.schedule.milestones
  opt = config.optimizer
  assert (opt.name, opt.momentum, opt.nesterov) == ('sgd', 0.9, False)
  assert (opt.weight_decay, opt.weight_decay_on) == (1e-4, 'all')
  assert opt.grad_clip_norm == 0
  aug = config.augment
  assert aug.size == 224
  assert tuple(aug.crop_scale) == (0.08, 1.0)
  assert tuple(aug.crop_ratio) == pytest.approx((3 / 4, 4 / 3))
  assert aug.flip == 0.5
  assert aug.rotation == 0 and aug.erasing_prob == 0
  assert not (aug.brightness or aug.contrast or aug.saturation or aug.hue)
  assert aug.grayscale_prob == 0
  assert aug.eval_resize == 'resize'


@pytest.mark.parametrize('name', sorted(RECIPES))
def test_smoke_config_is_tiny_and_synthetic(name):
  config = _config(name, 'smoke')
  assert (config.data.name, config.data.config) == ('synthetic_fer', 'smoke')
  assert config.data.auto_build
  assert config.data.eval_split == 'test'
  assert config.data.num_classes == 7
  assert config.augment.size == 32
  assert (config.batch_size, config.eval_batch_size) == (16, 32)
  assert config.total_steps == 3
  assert config.checkpoint.every_steps == 3
  # synthetic_fer/smoke: 448 // 16 = 28 steps per epoch, so only the final
  # step evaluates.
  assert round(config.eval_every_epochs * 448 // 16) > config.total_steps


def _manet_missing() -> str:
  """Why the MA-Net smoke run cannot run yet, or '' if it can."""
  if 'manet' not in models.list_models():
    return "model 'manet' is not registered in ferjax.models yet"
  try:
    losses.get_loss('manet')
  except ValueError:
    return "loss 'manet' is not registered in ferjax.losses yet"
  return ''


@pytest.mark.skipif(bool(_manet_missing()), reason=_manet_missing())
def test_manet_rafdb_smoke_trains(smoke_data_dir, tmp_path):
  config_helpers.train_smoke('manet_rafdb', smoke_data_dir, tmp_path)

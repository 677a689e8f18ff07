"""The MFER configs: the released script's recipe per dataset, and a smoke run."""

import importlib

import numpy as np
import pytest

from configs import mfer_common
from ferjax import models
from ferjax.data import datasets
from tests import config_helpers

# config module -> (data.name, data.config, classes, sampling, paper WAR).
RECIPES = {
  'mfer_rafdb': ('rafdb', None, 7, 'uniform', '92.08'),
  'mfer_affectnet7': ('affectnet', '7class', 7, 'class_balanced', '67.06'),
  'mfer_affectnet8': ('affectnet', '8class', 8, 'class_balanced', '63.15'),
  'mfer_ferplus': ('ferplus', 'majority', 8, 'uniform', '91.09'),
}


def _module(name):
  return importlib.import_module(f'configs.{name}')


@pytest.mark.parametrize('name', sorted(RECIPES))
def test_full_config_is_the_released_recipe(name):
  dataset, builder_config, classes, sampling, paper = RECIPES[name]
  module = _module(name)
  assert paper in module.__doc__ and f'configs/{name}.py' in module.__doc__
  config = module.get_config()
  config.lock()
  data = config.data
  assert (data.name, data.config, data.num_classes) == (
    dataset,
    builder_config,
    classes,
  )
  assert data.sampling == sampling
  datasets.check_data_config(data)
  model = config.model
  assert model.name == 'mfer'
  assert tuple(model.depths) == (3, 3, 27, 3)
  assert tuple(model.dims) == (128, 256, 512, 1024)
  assert model.drop_path_rate == 0.25
  assert (model.ds_conv, model.ds_order, model.ds_residual) == (
    'dense',
    'code',
    True,
  )
  np.testing.assert_allclose(model.pixel_mean, (0.485, 0.456, 0.406))
  assert (
    models.loss_name(config) == 'mfer' and config.loss.label_smoothing == 0.1
  )
  assert (config.loss.dsf, config.loss.dsf_weight) == ('lgm', 1e-3)
  opt, sched = config.optimizer, config.schedule
  assert (opt.name, opt.weight_decay, opt.weight_decay_on) == (
    'adamw',
    0.01,
    'all',
  )
  assert (sched.name, sched.unit, sched.base_lr, sched.gamma) == (
    'exponential',
    'epoch',
    1e-3,
    0.95,
  )
  assert (config.batch_size, config.num_epochs) == (32, 100)
  assert config.augment.size == 224 and config.augment.eval_resize == 'resize'
  assert tuple(config.augment.crop_scale) == (1.0, 1.0)
  assert config.init_from == mfer_common.CONVNEXT_22K
  assert config.best_metric == 'war'


@pytest.mark.parametrize('name', sorted(RECIPES))
def test_smoke_config_is_tiny_and_synthetic(name):
  config = _module(name).get_config('smoke')
  assert (config.data.name, config.data.config) == ('synthetic_fer', 'smoke')
  assert config.data.sampling == 'uniform' and config.init_from == ''
  assert config.augment.size == 32 and config.total_steps == 3
  assert tuple(config.model.dims) == (8, 16, 32, 64)
  datasets.check_data_config(config.data)


def test_mfer_rafdb_smoke_trains(smoke_data_dir, tmp_path):
  config_helpers.train_smoke('mfer_rafdb', smoke_data_dir, tmp_path)
  metrics = (tmp_path / 'metrics.jsonl').read_text()
  assert 'train/loss_dsf' in metrics and 'train/loss_heads' in metrics

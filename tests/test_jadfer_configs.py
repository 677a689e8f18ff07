"""The JADFER configs: the documented recipe per dataset, and a smoke run."""

import pytest

from configs import jadfer_common
from ferjax import models
from ferjax.data import augment
from ferjax.data import augment_config
from ferjax.data import datasets
from tests import config_helpers

# config module -> (data.name, data.config, classes, sampling, epochs,
# learning-rate milestones).
RECIPES = {
  'jadfer_rafdb': ('rafdb', None, 7, 'uniform', 40, (15, 30)),
  'jadfer_affectnet7': ('affectnet', '7class', 7, 'class_balanced', 10, (4, 8)),
  'jadfer_affectnet8': ('affectnet', '8class', 8, 'class_balanced', 10, (4, 8)),
  'jadfer_ferplus': ('ferplus', 'majority', 8, 'uniform', 40, (15, 30)),
}


@pytest.mark.parametrize('name', sorted(RECIPES))
def test_full_config_is_the_documented_recipe(name):
  dataset, builder_config, classes, sampling, epochs, milestones = RECIPES[name]
  config = config_helpers.get_config(name)
  config.lock()
  data = config.data
  assert (data.name, data.config, data.num_classes, data.sampling) == (
    dataset,
    builder_config,
    classes,
    sampling,
  )
  datasets.check_data_config(data)
  aug = augment.parse_config(config.augment)
  assert aug.size == 112 and aug.flip == 0.5
  assert aug.randaugment_ops == 2
  assert tuple(aug.randaugment_ops_list) == augment_config.RANDAUGMENT_LITE_OPS
  assert aug.erasing_prob == 0.5 and tuple(aug.erasing_scale) == (0.02, 0.4)
  model = config.model
  assert (model.name, model.num_paths, model.width, model.depth) == (
    'jadfer',
    4,
    768,
    8,
  )
  assert (model.rho, model.drop_prob, model.joint) == (0.1, 0.5, 'mean')
  assert models.loss_name(config) == 'jadfer'
  assert config.loss.variety_weight == 1.0
  assert config.optimizer.name == 'sgd' and config.schedule.base_lr == 1e-3
  assert config.num_epochs == epochs
  assert tuple(config.schedule.milestones) == milestones
  assert config.batch_size == 64 and config.init_from == jadfer_common.IR50


@pytest.mark.parametrize('name', sorted(RECIPES))
def test_smoke_config_is_tiny_and_synthetic(name):
  config = config_helpers.get_config(name, 'smoke')
  assert (config.data.name, config.data.config) == ('synthetic_fer', 'smoke')
  assert config.init_from == '' and config.total_steps == 3
  assert (config.model.width, config.model.depth) == (32, 1)
  datasets.check_data_config(config.data)


def test_jadfer_rafdb_smoke_trains(smoke_data_dir, tmp_path):
  config_helpers.train_smoke('jadfer_rafdb', smoke_data_dir, tmp_path)
  metrics = (tmp_path / 'metrics.jsonl').read_text()
  assert 'train/loss_variety' in metrics and 'train/loss_ce' in metrics

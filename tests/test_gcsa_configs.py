"""The GCSA configs: IAL's recipe on DFEW folds and FERV39K, and a smoke run."""

import importlib

import pytest

from ferjax import models
from ferjax.data import augment
from ferjax.data import clips
from ferjax.data import datasets
from tests import config_helpers


@pytest.mark.parametrize(
  ('name', 'arg', 'dataset', 'builder_config', 'reference'),
  [
    ('gcsa_dfew', 'fold=1', 'dfew', 'fold1', '69.24'),
    ('gcsa_dfew', 'fold=5,size=112', 'dfew', 'fold5_112', '69.24'),
    ('gcsa_ferv39k', '', 'ferv39k', 'default', '48.54'),
    ('gcsa_ferv39k', 'size=112', 'ferv39k', '112', '48.54'),
  ],
)
def test_full_config_is_ials_recipe(
  name, arg, dataset, builder_config, reference
):
  module = importlib.import_module(f'configs.{name}')
  assert reference in module.__doc__
  config = config_helpers.get_config(name, arg)
  config.lock()
  assert (config.data.name, config.data.config) == (dataset, builder_config)
  datasets.check_data_config(config.data)
  assert (config.clip.segments, config.clip.frames_per_segment) == (16, 1)
  assert config.model.num_frames == 16
  config.clip.segments = 8  # One field moves both: what --config does.
  assert config.model.num_frames == 8
  aug = augment.parse_config(config.augment)
  for field, value in clips.IAL_AUGMENT.items():
    assert getattr(aug, field) == pytest.approx(value)
  assert (config.model.name, config.model.attention) == ('gcsa', 'gcsa')
  loss = config.loss
  assert models.loss_name(config) == 'cai'
  assert (loss.aux2_weight, loss.aux3_weight, loss.ial_weight) == (
    0.05,
    0.0,
    0.1,
  )
  opt, sched = config.optimizer, config.schedule
  assert (opt.name, opt.momentum, opt.weight_decay) == ('sgd', 0.9, 0.1)
  assert (sched.name, sched.base_lr, sched.step_size, sched.gamma) == (
    'step',
    1e-3,
    7,
    0.5,
  )
  assert config.batch_size == 40


def test_bad_fold():
  with pytest.raises(ValueError, match='fold=6: DFEW has folds 1 to 5'):
    config_helpers.get_config('gcsa_dfew', 'fold=6')


def test_protocol_preset():
  """One switch makes the DFEW splits IAL's: clips under 16 frames dropped."""
  assert config_helpers.get_config('gcsa_dfew', 'fold=2').clip.short == 'loop'
  config = config_helpers.get_config('gcsa_dfew', 'fold=2,protocol=ial')
  assert config.clip.short == 'drop' and config.data.config == 'fold2'
  assert config.clip.segments == 16
  with pytest.raises(ValueError, match="protocol='tsn'; use one of"):
    config_helpers.get_config('gcsa_dfew', 'protocol=tsn')


def test_gcsa_smoke_trains_on_synthetic_clips(tmp_path_factory, tmp_path):
  from ferjax.data import build

  data_dir = tmp_path_factory.mktemp('clips')
  build.build('synthetic_fer', 'clip_smoke', data_dir)
  results = config_helpers.train_smoke('gcsa_dfew', str(data_dir), tmp_path)
  assert 0 <= results['final']['uar'] <= 1
  metrics = (tmp_path / 'metrics.jsonl').read_text()
  assert 'train/loss_ial' in metrics and 'train/loss_aux' in metrics

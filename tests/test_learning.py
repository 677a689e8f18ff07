"""bench.learning's variants: the paper models' modules, loss and optimiser,
smaller; and the width fields that make them smaller.

The learning runs themselves take minutes each and are not part of the
suite (docs/learning.md has their table); `python -m bench.learning
--steps 2` checks the wiring by hand.
"""

import importlib
import re

import flax
import jax
import jax.numpy as jnp
import pytest
from cli_helpers import one_error_line

from bench import learning
from ferjax import measure
from ferjax import models
from ferjax.data import datasets


def _param_tree(config):
  model = models.create_model(config)
  rngs = {'params': jax.random.key(0), 'dropout': jax.random.key(0)}
  images = jnp.zeros(models.input_shape(config), jnp.float32)
  return jax.eval_shape(lambda: model.init(rngs, images, train=False))['params']


def _kinds(tree) -> set[tuple[str, ...]]:
  """Every parameter's path with block indices dropped ('body_20' ->
  'body'): what kinds of modules and parameters a model has, not how many."""
  paths = flax.traverse_util.flatten_dict(tree)
  return {tuple(re.sub(r'(_\d+)+$', '', k) for k in p) for p in paths}


@pytest.mark.parametrize('name', learning.MODELS)
def test_a_variant_is_its_paper_model_made_smaller(name):
  variant = learning.VARIANTS[name]
  small = learning.make_config(name)
  paper = importlib.import_module(f'configs.{variant.config}').get_config(None)
  datasets.check_data_config(small.data)
  assert small.loss.name == paper.loss.name
  assert small.optimizer.name == paper.optimizer.name
  assert small.model.name == paper.model.name
  paper.augment.size = small.augment.size  # Compare at one input size.
  with paper.unlocked():
    paper.clip.segments = small.clip.segments
  small_tree, paper_tree = _param_tree(small), _param_tree(paper)
  # The same kinds of modules (a shallower trunk has fewer of them).
  assert _kinds(small_tree) == _kinds(paper_tree)
  cost = measure.model_cost(small)
  assert cost['params'] < 5e6 and cost['gflops_per_image'] < 0.05


def test_set_field_names_an_unknown_field():
  config = learning.make_config('manet')
  learning.set_field(config, 'model.width', 8)  # Model fields may be new.
  assert config.model.width == 8
  with pytest.raises(ValueError, match='schedule.nosuch: no such'):
    learning.set_field(config, 'schedule.nosuch', 1)


@pytest.mark.parametrize(
  'field, words',
  [
    ('schedule.nosuch=1', 'schedule.nosuch: no such'),
    ('data.decoded_cache=maybe', "'decoded_cache'"),
  ],
)
def test_a_bad_set_is_one_line(field, words, capsys):
  assert learning.main(['--model=manet', f'--set={field}']) == 2
  assert words in one_error_line(capsys)


def test_image_variants_decode_once_and_clips_per_frame():
  for name in learning.MODELS:
    config = learning.make_config(name)
    assert config.data.decoded_cache == (config.clip.segments == 0), name


def test_table_marks_the_target():
  row = {
    'model': 'manet',
    'variant': 'width 16',
    'params': 3_173_182,
    'gflops_per_image': 0.0263,
    'steps': 2180,
    'final_war': 0.912,
    'final_uar': 0.911,
    'best_war': 0.915,
    'minutes': 12.3,
    'target_met': True,
  }
  text = learning.table([row])
  assert '| manet | width 16 | 3.17 M | 0.026 | 2180 | 91.2 % |' in text
  assert text.endswith('| 12.3 | yes |')

"""A fifth model is one module: its spec reaches every part of ferjax.

The model, its converter and its attention extractor are defined here, in
the test, and registered with one `models.register` call; nothing else in
ferjax is touched. It then trains (with its spec's loss through
`config.loss.name='auto'`), predicts from the run and from converted
weights (at its spec's input size), exports, converts PyTorch tensors,
draws its attention and Grad-CAM maps and names its checkpoint when
`init_from` is missing.
"""

from typing import Any

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import linen as nn

from ferjax import checkpointing
from ferjax import export
from ferjax import exported
from ferjax import models
from ferjax import train
from ferjax import viz
from ferjax import weights
from ferjax.layers import torch_nn
from ferjax.models import registry
from ferjax.models import sown
from ferjax.predict import Predictor
from ferjax.weights import saved
from ferjax.weights import sources
from ferjax.weights import torch_convert

NAME = 'tiny_fer'
SIZE = 24


class TinyFER(nn.Module):
  """conv - BN - ReLU, a sown spatial gate, mean pool, fc."""

  num_classes: int = 7
  width: int = 4
  dtype: Any = jnp.float32
  pixel_mean: tuple[float, ...] | None = (0.5, 0.5, 0.5)
  pixel_std: tuple[float, ...] | None = (0.5, 0.5, 0.5)

  @nn.compact
  def __call__(self, images, train: bool = False):
    x = torch_nn.normalize(images, self.pixel_mean, self.pixel_std)
    x = nn.Conv(self.width, (3, 3), dtype=self.dtype, name='conv')(x)
    x = torch_nn.batch_norm('bn', train=train, dtype=self.dtype)(x)
    x = nn.relu(x)
    gate = nn.sigmoid(nn.Conv(1, (1, 1), dtype=self.dtype, name='gate')(x))
    self.sow('intermediates', 'gate_map', gate)
    features = jnp.mean((x * gate).astype(jnp.float32), axis=(1, 2))
    return {
      'logits': nn.Dense(self.num_classes, name='fc')(features),
      'features': features,
    }


def gate_maps(model, outputs, intermediates) -> dict:
  """'gate': the sown spatial gate."""
  del model, outputs
  return {'gate': sown.sown(intermediates, 'gate_map')[..., 0]}


def from_torch(state_dict, *, spec, ignore, rng, **fields):
  """The generic name mapping (`conv.weight` -> conv/kernel, ...)."""
  model = spec.build(**fields)
  return torch_convert.convert_module(
    model, state_dict, input_shape=(1, SIZE, SIZE, 3), ignore=ignore, rng=rng
  )


CHECKPOINT = models.Checkpoint(
  file='tiny_fer_msceleb.pth',
  url='https://example.org/tiny_fer_msceleb.pth',
  description='a tiny FER network',
)
SPEC = models.ModelSpec(
  name=NAME,
  factory=TinyFER,
  input_size=SIZE,
  loss='softmax_xent',
  converter=f'{__name__}:from_torch',
  checkpoints=(CHECKPOINT,),
  attention=gate_maps,
  cam_layer='conv',
)


@pytest.fixture(scope='module')
def spec():
  models.register(SPEC)
  yield SPEC
  registry._SPECS.pop(NAME)


@pytest.fixture(scope='module')
def run_dir(spec, tmp_path_factory, smoke_data_dir):
  from configs import demo

  config = demo.get_config('smoke')
  config.data.data_dir = smoke_data_dir
  config.data.auto_build = False
  config.checkpoint.async_save = False
  config.augment.size = spec.input_size
  config.model = ml_collections.ConfigDict({'name': NAME, 'dtype': 'auto'})
  config.total_steps = 2
  config.eval_every_epochs = 100.0  # Only the final evaluation.
  workdir = str(tmp_path_factory.mktemp('new_model'))
  train.train_and_evaluate(config, workdir)
  return workdir


def _images(n: int = 3) -> np.ndarray:
  rng = np.random.default_rng(0)
  return rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)


def test_registered_once_everywhere(spec):
  assert NAME in models.list_models()
  assert models.get_spec(NAME) is spec
  assert models.spec_of(spec.build()) is spec
  assert spec.normalization() == {'mean': (0.5,) * 3, 'std': (0.5,) * 3}
  with pytest.raises(ValueError, match='already registered'):
    models.register(models.ModelSpec(NAME, TinyFER, input_size=32))


def test_trains_with_its_own_loss(run_dir):
  config, variables = checkpointing.load_run(run_dir)
  assert config.model.name == NAME and config.loss.name == 'auto'
  assert models.loss_name(config) == 'softmax_xent'
  chex.assert_shape(variables['params']['fc']['kernel'], (4, 7))
  assert 'bn' in variables['batch_stats']


def test_predicts_from_its_run_and_its_weights(spec, run_dir, tmp_path):
  images = _images()
  table = Predictor.from_workdir(run_dir, detector=None).predict(list(images))
  assert table['error'].isna().all() and len(table) == 3
  _, variables = checkpointing.load_run(run_dir)
  weights_dir = saved.save(variables, tmp_path / 'w', {'model': NAME})
  predictor = Predictor.from_weights(NAME, weights_dir, detector=None)
  assert predictor.augment.size == spec.input_size
  again = predictor.predict(list(images))
  names = list(predictor.class_names)
  np.testing.assert_allclose(again[names], table[names], atol=1e-6)


def test_exports(run_dir, tmp_path):
  out = export.export_run(run_dir, tmp_path / 'export', platforms=('cpu',))
  loaded = exported.load(out)
  assert loaded.metadata['model'] == NAME
  images = _images()
  table = Predictor.from_workdir(run_dir, detector=None).predict(list(images))
  names = list(loaded.metadata['class_names'])
  np.testing.assert_allclose(
    loaded.probabilities(images), table[names].to_numpy(), atol=1e-5
  )


def test_converts_pytorch_tensors(spec):
  rng = np.random.default_rng(1)
  state_dict = {
    'conv.weight': rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
    'conv.bias': rng.normal(size=4).astype(np.float32),
    'bn.weight': np.ones(4, np.float32),
    'bn.bias': np.zeros(4, np.float32),
    'bn.running_mean': rng.normal(size=4).astype(np.float32),
    'bn.running_var': np.ones(4, np.float32),
    'gate.weight': rng.normal(size=(1, 4, 1, 1)).astype(np.float32),
    'gate.bias': np.zeros(1, np.float32),
    'fc.weight': rng.normal(size=(7, 4)).astype(np.float32),
    'fc.bias': np.zeros(7, np.float32),
  }
  variables = weights.from_torch(NAME, state_dict)
  np.testing.assert_array_equal(
    variables['params']['fc']['kernel'], state_dict['fc.weight'].T
  )
  np.testing.assert_array_equal(
    variables['batch_stats']['bn']['mean'], state_dict['bn.running_mean']
  )
  assert weights.converter_options(NAME) == ()


def test_attention_and_grad_cam(spec):
  model = spec.build()
  images = jnp.asarray(_images(2), jnp.float32) / 255.0
  variables = jax.jit(model.init)(jax.random.key(0), images)
  maps = viz.attention_maps(NAME, model, variables, images)
  chex.assert_shape(maps['gate'], (2, SIZE, SIZE))
  assert viz.cam_layer(model, variables, images) == 'conv'
  cams = viz.grad_cam(model, variables, images)
  chex.assert_shape(cams, (2, SIZE, SIZE))


def test_missing_checkpoint_says_where_to_get_it(spec, tmp_path):
  message = sources.missing_file_message(str(tmp_path / CHECKPOINT.file))
  assert CHECKPOINT.url in message and CHECKPOINT.description in message

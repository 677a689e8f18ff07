"""Parity of converted PyTorch MFER / ConvNeXt weights with PyTorch.

The PyTorch models (`tests/torch_mfer.py`) have the official module layout
and random weights; a tiny trunk (depths 1, 1, 2, 1; dims 16 to 128) keeps
the forward passes fast, and full-size layouts are checked by shapes only.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from ferjax import checkpointing
from ferjax import models
from ferjax import train
from ferjax import weights
from ferjax.layers import torch_nn
from ferjax.models.backbones import convnext
from ferjax.weights import mfer as mfer_weights
from ferjax.weights import torch_convert
from tests.test_convnext import random_variables

torch = pytest.importorskip('torch')

from tests import torch_mfer  # noqa: E402  (needs torch)

pytestmark = pytest.mark.torch

TINY = {'depths': (1, 1, 2, 1), 'dims': (16, 32, 64, 128)}
VARIANTS = {
  'default': {},
  'depthwise': {'conv': 'depthwise'},
  'paper_order': {'order': 'paper'},
  'no_residual': {'residual': False},
}
IN22K_CLASSES = 21_841
MFER_PARAMS = 155_357_013
CONVNEXT_B_PARAMS = 88_591_464


def _fields(variant: str) -> dict:
  ds = {f'ds_{k}': v for k, v in VARIANTS[variant].items()}
  return {**TINY, **ds}


def _numpy(module) -> dict:
  return {k: v.numpy() for k, v in module.state_dict().items()}


def _images(size: int = 64):
  rng = np.random.default_rng(0)
  return rng.uniform(size=(2, size, size, 3)).astype(np.float32)


def _torch_input(images):
  mean = np.asarray(torch_nn.IMAGENET_MEAN, np.float32)
  std = np.asarray(torch_nn.IMAGENET_STD, np.float32)
  return torch.from_numpy(((images - mean) / std).transpose(0, 3, 1, 2))


@pytest.fixture(scope='module')
def mfer_models():
  return {
    name: torch_mfer.randomise(
      torch_mfer.ConvNeXt(**TINY, attention=attention, msc_classes=7), seed
    )
    for seed, (name, attention) in enumerate(VARIANTS.items())
  }


@pytest.fixture(scope='module')
def in22k_model():
  """A tiny ConvNeXt classifier with the ImageNet-22k head size."""
  model = torch_mfer.ConvNeXt(**TINY, num_classes=IN22K_CLASSES)
  return torch_mfer.randomise(model, seed=9)


@pytest.mark.parametrize('variant', VARIANTS)
def test_mfer_logits_match_torch(mfer_models, variant):
  torch_model = mfer_models[variant]
  # A DataParallel state_dict of torch tensors.
  state_dict = {f'module.{k}': v for k, v in torch_model.state_dict().items()}
  variables = weights.from_torch(
    'mfer', state_dict, num_classes=7, **_fields(variant)
  )
  images = _images()
  with torch.no_grad():
    features, heads = torch_model(_torch_input(images))
  heads = np.stack([h.numpy() for h in heads])
  model = models.get_model('mfer', num_classes=7, **_fields(variant))
  out = jax.jit(model.apply)(variables, images)
  assert np.abs(heads.sum(0)).max() > 1.0
  np.testing.assert_allclose(out['features'], features, rtol=0, atol=1e-4)
  np.testing.assert_allclose(out['head_logits'], heads, rtol=0, atol=1e-4)
  np.testing.assert_allclose(out['logits'], heads.sum(0), rtol=0, atol=1e-4)


def test_mfer_report(mfer_models):
  state_dict = _numpy(mfer_models['default'])
  _, report = mfer_weights.convert(state_dict, num_classes=7, **TINY)
  assert report.source == 'mfer'
  assert report.unused == ()
  assert report.initialised == ('dsf_centers',)
  assert len(report.loaded) == len(state_dict)

  # The official script saves the model without the Msc heads.
  trunk = {k: v for k, v in state_dict.items() if not k.startswith('msc.')}
  variables, report = mfer_weights.convert(trunk, num_classes=7, **TINY)
  assert report.initialised == ('dsf_centers', 'msc_0', 'msc_1', 'msc_2')
  np.testing.assert_array_equal(
    variables['params']['stages_3_1']['attn']['kernel'],
    state_dict['stages.3.1.attn.weight'].transpose(2, 3, 1, 0),
  )


def test_ablated_model_leaves_its_modules_unused(mfer_models):
  """An MFER checkpoint into a model without stage-3 DS attention and Msc."""
  state_dict = _numpy(mfer_models['default'])
  variables, report = mfer_weights.convert(
    state_dict, num_classes=7, ds_stages=(4,), head='linear', **TINY
  )
  ablated = {k for k in state_dict if k.startswith(('stages.2.2.', 'msc.'))}
  assert len(ablated) == 10 + 12  # DS attention's 5 layers, 3 heads' 6.
  assert set(report.unused) == ablated
  assert report.initialised == ('dsf_centers', 'head')
  assert 'stages_2_2' not in variables['params']
  np.testing.assert_array_equal(
    variables['params']['stages_3_1']['attn']['kernel'],
    state_dict['stages.3.1.attn.weight'].transpose(2, 3, 1, 0),
  )


def test_heads_of_another_size_are_reinitialised(mfer_models):
  state_dict = _numpy(mfer_models['default'])
  variables, report = mfer_weights.convert(state_dict, num_classes=5, **TINY)
  assert report.heads_reinitialised
  assert 'heads fc2 had another class count; re-initialised' in report.summary()
  assert set(report.unused) == {
    f'msc.{i}.fc2.{leaf}' for i in range(3) for leaf in ('weight', 'bias')
  }
  head = variables['params']['msc_1']
  np.testing.assert_array_equal(
    head['fc1']['kernel'], state_dict['msc.1.fc1.weight'].T
  )
  assert head['fc2']['kernel'].shape == (96, 5)
  assert np.abs(head['fc2']['kernel']).max() <= 96**-0.5


def test_convnext_22k_head(in22k_model):
  state_dict = _numpy(in22k_model)
  with pytest.raises(ValueError, match=r"'head' has 21841 outputs.*ignore"):
    weights.from_torch('convnext', state_dict, num_classes=7, **TINY)

  images = _images(32)
  with torch.no_grad():
    features, logits = in22k_model(_torch_input(images))
  full = weights.from_torch(
    'convnext', state_dict, num_classes=IN22K_CLASSES, **TINY
  )
  model = models.get_model('convnext', num_classes=IN22K_CLASSES, **TINY)
  out = jax.jit(model.apply)(full, images)
  np.testing.assert_allclose(out['logits'], logits, rtol=0, atol=1e-4)

  fresh = weights.from_torch(
    'convnext', state_dict, num_classes=7, ignore=('head.',), **TINY
  )
  out = jax.jit(models.get_model('convnext', **TINY).apply)(fresh, images)
  np.testing.assert_allclose(out['features'], features, rtol=0, atol=1e-4)
  assert fresh['params']['head']['kernel'].shape == (128, 7)
  np.testing.assert_array_equal(fresh['params']['head']['bias'], 0.0)


def test_mfer_from_convnext(in22k_model):
  state_dict = _numpy(in22k_model)
  variables, report = mfer_weights.convert(state_dict, **TINY)
  assert report.source == 'convnext'
  assert report.unused == ('head.bias', 'head.weight')
  assert report.initialised == (
    'dsf_centers',
    'msc_0',
    'msc_1',
    'msc_2',
    'stages_2_2',
    'stages_3_1',
  )
  assert len(report.loaded) == len(state_dict) - 2
  assert 'MFER from a convnext checkpoint' in report.summary()

  # The trunk up to DS attention computes what the PyTorch trunk computes.
  images = _images(32)
  with torch.no_grad():
    x = _torch_input(images)
    for i in range(3):
      x = in22k_model.stages[i](in22k_model.downsample_layers[i](x))
  apply = functools.partial(
    models.get_model('mfer', **TINY).apply, capture_intermediates=True
  )
  _, state = jax.jit(apply)(variables, images)
  (stage3,) = state['intermediates']['stages_2_1']['__call__']
  expected = x.numpy().transpose(0, 2, 3, 1)
  np.testing.assert_allclose(stage3, expected, rtol=0, atol=1e-4)


def test_init_from_convnext_file(in22k_model, tmp_path):
  """`config.init_from=convnext_base_22k_224.pth` for model 'mfer'."""
  state_dict = in22k_model.state_dict()
  path = tmp_path / 'convnext_base_22k_224.pth'
  torch.save(state_dict, path)
  model = models.get_model('mfer', num_classes=7, **TINY)
  template = jax.eval_shape(
    model.init,
    jax.random.key(0),
    jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32),
  )
  params = jax.device_put(random_variables(template)['params'])
  state = train.TrainState(
    step=jnp.zeros((), jnp.int32), params=params, model_state={}, opt_state=()
  )
  fields = {**TINY, 'num_classes': 7, 'dtype': jnp.dtype('float32')}
  loaded = checkpointing.load_pretrained(
    str(path), state, model_name='mfer', model_fields=fields
  )
  np.testing.assert_array_equal(
    loaded.params['stages_2_1']['gamma'],
    state_dict['stages.2.1.gamma'].numpy(),
  )
  np.testing.assert_array_equal(
    loaded.params['downsample_layers_0_0']['kernel'],
    state_dict['downsample_layers.0.0.weight'].numpy().transpose(2, 3, 1, 0),
  )
  assert loaded.params['dsf_centers'].shape == (7, 128)
  # Modules the file lacks start fresh, seeded by the run's seed.
  reseeded = checkpointing.load_pretrained(
    str(path), state, model_name='mfer', model_fields=fields, seed=1
  )
  for module in ('dsf_centers', 'msc_0'):
    with pytest.raises(AssertionError):
      chex.assert_trees_all_equal(
        loaded.params[module], reseeded.params[module]
      )
  chex.assert_trees_all_equal(
    loaded.params['stages_2_1'], reseeded.params['stages_2_1']
  )


@pytest.mark.parametrize('wrapper', ['model', 'model_state_dict'])
def test_official_checkpoint_wrappers(in22k_model, tmp_path, wrapper):
  """ConvNeXt files keep weights under 'model'; MFER's under the other."""
  path = tmp_path / 'convnext_base_22k_224.pth'
  torch.save({wrapper: in22k_model.state_dict(), 'epoch': 3}, path)
  loaded = weights.from_torch('mfer', path, **TINY)
  want = in22k_model.state_dict()['stages.3.0.pwconv1.weight'].numpy()
  np.testing.assert_array_equal(
    loaded['params']['stages_3_0']['pwconv1']['kernel'], want.T
  )


def test_full_size_convnext_base_layout():
  # Shapes only: zero-stride arrays stand in for the 88.6 M weights.
  with torch.device('meta'):
    torch_model = torch_mfer.ConvNeXt(
      convnext.BASE_DEPTHS, convnext.BASE_DIMS, num_classes=1000
    )
  state_dict = {
    k: np.broadcast_to(np.float32(0), tuple(v.shape))
    for k, v in torch_model.state_dict().items()
  }
  assert sum(v.size for v in state_dict.values()) == CONVNEXT_B_PARAMS
  variables = weights.from_torch('convnext_base', state_dict, num_classes=1000)
  params = variables['params']
  assert sum(v.size for v in jax.tree.leaves(params)) == CONVNEXT_B_PARAMS
  assert params['stages_2_26']['dwconv']['kernel'].shape == (7, 7, 1, 512)
  assert params['stages_3_2']['pwconv2']['kernel'].shape == (4096, 1024)
  assert params['head']['kernel'].shape == (1024, 1000)


def test_full_size_mfer_layout():
  """The official MFER's names and sizes at full size, without weights."""
  with torch.device('meta'):
    torch_model = torch_mfer.ConvNeXt(
      convnext.BASE_DEPTHS, convnext.BASE_DIMS, attention={}, msc_classes=7
    )
  state_dict = torch_model.state_dict()
  assert sum(v.numel() for v in state_dict.values()) == MFER_PARAMS
  assert 'stages.2.27.attn.weight' in state_dict
  assert 'stages.3.3.key.2.weight' in state_dict
  template = jax.eval_shape(
    models.get_model('mfer', dsf_centers=False).init,
    jax.random.key(0),
    jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32),
  )
  flax_modules = {
    key[:-1] for key in traverse_util.flatten_dict(template['params'])
  }
  torch_modules = {
    torch_convert.module_path(k.rpartition('.')[0]) for k in state_dict
  }
  assert flax_modules == torch_modules


def test_errors(mfer_models):
  state_dict = _numpy(mfer_models['default'])
  with pytest.raises(ValueError, match="pass source='mfer'"):
    weights.from_torch('mfer', state_dict, source='convnext', **TINY)
  with pytest.raises(ValueError, match="source='sideways'"):
    weights.from_torch('mfer', state_dict, source='sideways', **TINY)
  with pytest.raises(ValueError, match='neither an MFER'):
    weights.from_torch('mfer', {'features.0.weight': np.zeros((3, 3))})
  with pytest.raises(
    ValueError,
    match=r'(?s)does not fit MFER\(depths=\(3, 3, 27, 3\).*stages\.2\.2\.attn',
  ):
    weights.from_torch('mfer', state_dict)
  with pytest.raises(ValueError, match=r'shape mismatches: stages\.2\.2\.attn'):
    weights.from_torch('mfer', state_dict, ds_conv='depthwise', **TINY)

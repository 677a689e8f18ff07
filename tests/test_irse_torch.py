"""Parity of converted face.evoLVe IR / IR-SE weights with PyTorch.

The PyTorch networks (`tests/torch_irse.py`) have face.evoLVe's module
names, random weights, random BatchNorm statistics and random PReLU slopes.
IR-50 runs whole at 112 px (batch 2); IR-SE-50, whose smallest face.evoLVe
depth is 50 as well, is compared over its first two stages on a small,
odd-sized input.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import traverse_util

from ferjax import models
from ferjax import weights
from ferjax.models.backbones import irse
from ferjax.weights import irse as irse_weights
from ferjax.weights import torch_convert

torch = pytest.importorskip('torch')

from tests import torch_irse  # noqa: E402  (needs torch)

pytestmark = pytest.mark.torch

IR50_TENSORS = 295  # state_dict entries without num_batches_tracked
ATOL = 1e-4


def _numpy(model) -> dict:
  return {k: v.numpy() for k, v in model.state_dict().items()}


def _images(height=112, width=112, seed=0):
  rng = np.random.default_rng(seed)
  return rng.uniform(size=(2, height, width, 3)).astype(np.float32)


def _after_stage3(key):
  """Whether an IR-50 key is of stage 4 (units 21-23) or output_layer."""
  parts = key.split('.')
  return parts[0] == 'output_layer' or (
    parts[0] == 'body' and int(parts[1]) >= 21
  )


def _torch_input(images):
  # face.evoLVe's Normalize([0.5] * 3, [0.5] * 3).
  return torch.from_numpy(((images - 0.5) / 0.5).transpose(0, 3, 1, 2))


def _nhwc(x):
  return x.numpy().transpose(0, 2, 3, 1)


@pytest.fixture(scope='module')
def ir50():
  """A random IR-50, its input and its outputs (stage-3 map, embedding)."""
  model = torch_irse.randomise(torch_irse.Backbone(50, 'ir'), seed=0)
  images = _images()
  with torch.no_grad():
    x = _torch_input(images)
    stage3 = _nhwc(model.trunk(x, stages=3))
    features = model(x).numpy()
  return model, images, stage3, features


def test_ir50_features_match_torch(ir50, tmp_path):
  """The full network from a bare state_dict file, as face.evoLVe saves."""
  torch_model, images, _, features = ir50
  path = tmp_path / 'backbone_ir50_ms1m_epoch120.pth'
  torch.save(torch_model.state_dict(), path)
  variables = weights.from_torch('ir50', path, num_classes=7)
  for leaf in jax.tree.leaves(variables):
    assert leaf.dtype == np.float32

  out = jax.jit(models.get_model('ir50', num_classes=7).apply)(
    variables, images
  )
  assert np.abs(features).max() > 0.5
  np.testing.assert_allclose(out['features'], features, rtol=0, atol=ATOL)
  head = variables['params']['head']
  np.testing.assert_allclose(
    out['logits'],
    features @ head['kernel'] + head['bias'],
    rtol=0,
    atol=ATOL,
  )


def test_ir50_report(ir50):
  state_dict = {f'module.{k}': v for k, v in ir50[0].state_dict().items()}
  variables, report = irse_weights.convert(state_dict, num_classes=7)
  assert report.model == 'IR-50'
  assert len(report.loaded) == IR50_TENSORS
  assert report.unused == ()
  assert report.initialised == ('head',)
  assert 'left at init: head' in report.summary()
  np.testing.assert_array_equal(
    variables['params']['body_12']['res_layer_2']['negative_slope'],
    state_dict['module.body.12.res_layer.2.weight'].numpy(),
  )
  np.testing.assert_array_equal(
    variables['batch_stats']['output_layer_4']['var'],
    state_dict['module.output_layer.4.running_var'].numpy(),
  )
  # face.evoLVe's head is a separate margin module; one here is not loaded.
  state_dict['head.weight'] = np.zeros((10, 512), np.float32)
  _, report = irse_weights.convert(state_dict, num_classes=7)
  assert report.unused == ('head.weight',)


def test_stage3_trunk_matches_torch(ir50, caplog):
  torch_model, images, stage3, _ = ir50
  state_dict = _numpy(torch_model)
  with caplog.at_level('INFO'):
    variables = irse_weights.convert_trunk(state_dict, stages=3)
  later = torch_convert.load_state_dict(
    {k: v for k, v in state_dict.items() if _after_stage3(k)}
  )
  assert len(later) == 48
  summary = caplog.text
  assert 'IR-50 trunk (3 stages) from a face.evoLVe checkpoint' in summary
  assert f'loaded {IR50_TENSORS - 48} tensors; unused 48:' in summary
  assert 'body.21.res_layer.0.bias' in summary
  assert 'left at init: none' in summary

  out = jax.jit(irse.IRTrunk(stages=3).apply)(variables, images)
  assert out.shape == (2, 14, 14, 256)
  assert np.abs(stage3).max() > 0.5
  np.testing.assert_allclose(out, stage3, rtol=0, atol=ATOL)

  # A model with the trunk as its submodule 'backbone' takes it as is.
  class WithBackbone(nn.Module):
    @nn.compact
    def __call__(self, images):
      return nn.Dense(7)(irse.IRTrunk(name='backbone')(images).mean((1, 2)))

  template = jax.eval_shape(
    WithBackbone().init,
    jax.random.key(0),
    jax.ShapeDtypeStruct((1, 112, 112, 3), jnp.float32),
  )
  for collection in ('params', 'batch_stats'):
    want = jax.tree.map(lambda s: s.shape, template[collection]['backbone'])
    got = jax.tree.map(np.shape, variables[collection])
    assert got == want


def test_ir_se_two_stages_match_torch():
  torch_model = torch_irse.randomise(torch_irse.Backbone(50, 'ir_se'), seed=1)
  images = _images(30, 37, seed=1)  # odd sides: torch's ceil(H / 2)
  with torch.no_grad():
    expected = _nhwc(torch_model.trunk(_torch_input(images), stages=2))
  variables = irse_weights.convert_trunk(
    torch_model.state_dict(), mode='ir_se', stages=2
  )
  out = irse.IRTrunk(mode='ir_se', stages=2).apply(variables, images)
  assert out.shape == expected.shape == (2, 8, 10, 128)
  assert np.abs(expected).max() > 0.5
  np.testing.assert_allclose(out, expected, rtol=0, atol=ATOL)


@pytest.mark.parametrize(
  'fields',
  [
    {'mode': 'ir_se'},
    {'num_layers': 100},
    {'num_layers': 152},
    {'input_size': 224},
  ],
)
def test_full_size_layouts(fields):
  """Every face.evoLVe tensor has its Flax leaf, of the same size."""
  with torch.device('meta'):
    torch_model = torch_irse.Backbone(**fields)
  state_dict = torch_convert.load_state_dict(
    {
      k: np.broadcast_to(np.float32(0), tuple(v.shape))
      for k, v in torch_model.state_dict().items()
    }
  )
  model = models.get_model('irse', **fields)
  side = model.input_size
  template = jax.eval_shape(
    model.init,
    jax.random.key(0),
    jax.ShapeDtypeStruct((1, side, side, 3), jnp.float32),
  )
  variables = torch_convert.fill_variables(
    template,
    irse_weights.rename_prelu(state_dict),
    ignore=('head.',),
    init_fn=functools.partial(_zeros, template),
  )
  assert (
    sum(v.size for v in jax.tree.leaves(variables))
    == sum(v.size for v in state_dict.values()) + 512 * 7 + 7
  )


def _zeros(template, keys):
  flat = traverse_util.flatten_dict(dict(template))
  return {k: np.zeros(flat[k].shape, np.float32) for k in keys}


def test_errors(ir50):
  state_dict = _numpy(ir50[0])
  trunk_only = {k: v for k, v in state_dict.items() if not _after_stage3(k)}
  with pytest.raises(
    ValueError, match=r'(?s)does not fit IR-50.*body_21.*convert_trunk'
  ):
    weights.from_torch('ir50', trunk_only)
  # The same checkpoint fills a three-stage trunk exactly.
  variables = irse_weights.convert_trunk(trunk_only, stages=3)
  assert set(variables['params']) == {
    *(f'input_layer_{i}' for i in range(3)),
    *(f'body_{i}' for i in range(21)),
  }

  with pytest.raises(ValueError, match=r'shape mismatches: output_layer\.3'):
    weights.from_torch('ir50', state_dict, input_size=224)
  with pytest.raises(
    ValueError, match=r'no torch key: params/body_0/res_layer_5/fc1/kernel'
  ):
    weights.from_torch('irse', state_dict, mode='ir_se')
  with pytest.raises(ValueError, match=r'num_layers=34'):
    irse_weights.convert_trunk(state_dict, num_layers=34)
  with pytest.raises(ValueError, match=r'stages=5; run 1 to 4'):
    irse_weights.convert_trunk(state_dict, stages=5)


def test_jadfer_starts_from_an_ir50_file(ir50, tmp_path):
  """`config.init_from=weights/ir50.pth` for JADFER: the backbone's map."""
  torch_model, images, stage3, _ = ir50
  path = tmp_path / 'ir50.pth'
  torch.save(torch_model.state_dict(), path)
  tiny = dict(width=32, depth=1, num_heads=2, num_paths=2)
  variables = weights.from_torch('jadfer', path, num_classes=7, **tiny)
  assert variables['params']['cb_pos'].shape == (1, 197, 32)  # 112 px.
  trunk = irse.IRTrunk(stages=3)
  got = trunk.apply({k: v['backbone'] for k, v in variables.items()}, images)
  np.testing.assert_allclose(got, stage3, atol=ATOL)
  model = models.get_model('jadfer', num_classes=7, **tiny)
  assert model.apply(variables, images)['logits'].shape == (2, 7)

"""Parity of IAL's converted PyTorch weights with a PyTorch forward pass.

The PyTorch IAL (`tests/torch_ial.py`) has the official module layout and
random weights and BatchNorm statistics. One comparison runs at IAL's own
size, 16 frames of 112 px; the others use 4 frames of 32 px.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from ferjax import models
from ferjax import weights
from ferjax.weights import gcsa as gcsa_weights
from ferjax.weights import torch_convert

torch = pytest.importorskip('torch')

from tests import torch_ial  # noqa: E402  (needs torch)

pytestmark = pytest.mark.torch

# IAL's state_dict parameters, and those its forward pass never uses.
IAL_PARAMS = 19_083_527
DEAD_PARAMS = 146_752
DEAD_KEYS = 15
SMALL = {'num_frames': 4, 'image_size': 32}
SE = tuple(f'layer{i}_0/se_fc{j}' for i in (2, 3) for j in (1, 2))


def _clips(frames, size, batch=2):
  """(B, T, H, W, 3) clips in [0, 1]; the second is darker."""
  rng = np.random.default_rng(0)
  x = rng.uniform(size=(batch, frames, size, size, 3)).astype(np.float32)
  return (
    x
    * np.linspace(1.0, 0.5, batch, dtype=np.float32)[:, None, None, None, None]
  )


def _numpy(module) -> dict:
  return {k: v.numpy() for k, v in module.state_dict().items()}


def _torch_outputs(model, clips):
  with torch.no_grad():
    logits, features, aux2, aux3 = model(
      torch.from_numpy(clips.transpose(0, 1, 4, 2, 3).copy())
    )
  return {
    'logits': logits.numpy(),
    'aux_logits': np.stack([aux2.numpy(), aux3.numpy()]),
    'features': features.numpy(),
  }


def _assert_parity(torch_model, variables, frames, size, **fields):
  clips = _clips(frames, size)
  want = _torch_outputs(torch_model, clips)
  model = models.get_model('gcsa', num_frames=frames, **fields)
  got = jax.jit(model.apply)(variables, clips)
  assert np.abs(want['logits']).max() > 1.0
  assert np.abs(want['logits'][0] - want['logits'][1]).max() > 1e-2
  for name, value in want.items():
    np.testing.assert_allclose(got[name], value, rtol=0, atol=1e-4)


@pytest.fixture(scope='module')
def full_ial():
  return torch_ial.randomise(torch_ial.IAL(), seed=0)


@pytest.fixture(scope='module')
def small_ial():
  return torch_ial.randomise(
    torch_ial.IAL(frames=SMALL['num_frames'], image_size=SMALL['image_size']),
    seed=1,
  )


def test_full_size_logits_match_torch(full_ial):
  # As IAL's main.py saves it: a DataParallel state_dict of tensors.
  state_dict = {f'module.{k}': v for k, v in full_ial.state_dict().items()}
  variables = weights.from_torch('gcsa', state_dict, attention='gca')
  _assert_parity(full_ial, variables, 16, 112, attention='gca')


def test_small_size_logits_match_torch(small_ial, tmp_path):
  path = tmp_path / 'pretrain_DFEW.pth'
  torch.save(
    {f'module.{k}': v for k, v in small_ial.state_dict().items()}, path
  )
  variables = weights.from_torch('gcsa', path, attention='gca', **SMALL)
  _assert_parity(small_ial, variables, 4, 32, attention='gca')


def test_report_lists_the_dead_parameters(full_ial):
  state_dict = _numpy(full_ial)
  _, report = gcsa_weights.convert(state_dict, attention='gca')
  assert len(report.unused) == DEAD_KEYS
  assert all(gcsa_weights.is_dead(k) for k in report.unused)
  assert sum(state_dict[k].size for k in report.unused) == DEAD_PARAMS
  assert {'s_former.bias', 's_former.layer1.0.gc.0.weight'} <= set(
    report.unused
  )
  assert report.initialised == ()
  assert not report.heads_reinitialised
  tensors = [k for k in state_dict if not k.endswith('num_batches_tracked')]
  assert len(report.loaded) == len(tensors) - DEAD_KEYS
  assert 'left at init: none' in report.summary()


def test_gcsa_loads_all_but_the_se_branch(small_ial):
  state_dict = _numpy(small_ial)
  gca, _ = gcsa_weights.convert(state_dict, attention='gca', **SMALL)
  gcsa, report = gcsa_weights.convert(state_dict, rng=3, **SMALL)
  assert report.initialised == SE
  assert len(report.unused) == DEAD_KEYS
  flat_gca = traverse_util.flatten_dict(gca, sep='/')
  flat = traverse_util.flatten_dict(gcsa, sep='/')
  se = {k for k in flat if any(f'/{p}/' in f'/{k}' for p in SE)}
  assert len(se) == 4
  assert set(flat) - se == set(flat_gca)
  for key, value in flat_gca.items():
    np.testing.assert_array_equal(flat[key], value)
  se_kernel = gcsa['params']['layer3_0']['se_fc1']['kernel']
  assert se_kernel.shape == (256, 16)
  assert 0 < np.abs(se_kernel).max() <= 256**-0.5  # PyTorch's Linear init


def test_gcsa_from_ial_computes_ials_logits_at_init(small_ial):
  """The fresh SE branch gates by exactly 1, so GCSA is IAL until trained."""
  state_dict = {f'module.{k}': v for k, v in _numpy(small_ial).items()}
  variables = weights.from_torch('gcsa', state_dict, rng=5, **SMALL)
  assert 'se_fc2' in variables['params']['layer2_0']
  _assert_parity(small_ial, variables, 4, 32)


def test_se_only_leaves_ials_gc_gates_unused(small_ial):
  state_dict = _numpy(small_ial)
  variables, report = gcsa_weights.convert(state_dict, attention='se', **SMALL)
  gc_gates = {
    f's_former.layer{i}.0.fc{j}.0.weight' for i in (2, 3) for j in (1, 2)
  }
  assert set(report.unused) - gc_gates == set(
    gcsa_weights.convert(state_dict, attention='gca', **SMALL)[1].unused
  )
  assert gc_gates <= set(report.unused)
  assert report.initialised == SE
  assert 'fc1_0' not in variables['params']['layer3_0']


def test_heads_of_another_size_and_ignored_layers(small_ial):
  state_dict = _numpy(small_ial)
  variables, report = gcsa_weights.convert(
    state_dict,
    attention='gca',
    num_classes=5,
    ignore=('s_former.layer4.',),
    **SMALL,
  )
  assert report.heads_reinitialised
  assert 'fc_f and the auxiliary classifiers had another class count' in (
    report.summary()
  )
  assert {
    'fc_f.weight',
    'fc_f.bias',
    's_former.layer2.0.AUX_fc.1.weight',
    's_former.layer3.0.AUX_fc.1.weight',
    's_former.layer4.2.conv2.weight',
  } <= set(report.unused)
  assert {'fc_f', 'layer2_0/AUX_fc_1', 'layer4_0/conv1'} <= set(
    report.initialised
  )
  params = variables['params']
  assert params['fc_f']['kernel'].shape == (256, 5)
  np.testing.assert_array_equal(
    params['layer2_0']['AUX_fc_0']['kernel'],
    state_dict['s_former.layer2.0.AUX_fc.0.weight'].T,
  )
  assert not np.array_equal(
    params['layer4_0']['conv1']['kernel'],
    state_dict['s_former.layer4.0.conv1.weight'].transpose(2, 3, 1, 0),
  )


def test_full_size_layout():
  """IAL's names and sizes at full size, without weights."""
  with torch.device('meta'):
    torch_model = torch_ial.IAL()
  assert sum(p.numel() for p in torch_model.parameters()) == IAL_PARAMS
  state_dict = torch_model.state_dict()
  live = [k for k in state_dict if not gcsa_weights.is_dead(k)]
  assert len(state_dict) - len(live) == DEAD_KEYS
  template = jax.eval_shape(
    models.get_model('gcsa', attention='gca').init,
    jax.random.key(0),
    jax.ShapeDtypeStruct((1, 16, 112, 112, 3), jnp.float32),
  )
  flax_modules = {
    key[:-1] for key in traverse_util.flatten_dict(template['params'])
  }
  torch_modules = {
    torch_convert.module_path(gcsa_weights.port_key(k).rpartition('.')[0])
    for k in live
  }
  assert flax_modules == torch_modules
  assert gcsa_weights.port_key(
    's_former.temporal_transformer.layers.1.0.fn.fn.to_qkv.weight'
  ) == ('temporal_transformer.layers.1.attn.to_qkv.weight')
  assert gcsa_weights.port_key(
    's_former.pos_transformer.layers.0.1.fn.norm.bias'
  ) == ('pos_transformer.layers.0.ff_norm.bias')


def test_errors(small_ial):
  state_dict = _numpy(small_ial)
  with pytest.raises(ValueError, match="not IAL's GenerateModel"):
    weights.from_torch('gcsa', {'conv1.weight': np.zeros((64, 3, 7, 7))})
  with pytest.raises(
    ValueError,
    match=r'(?s)does not fit GCSA\(num_frames=8.*shape mismatches:.*'
    r'pos_embedding',
  ):
    weights.from_torch(
      'gcsa', state_dict, attention='gca', num_frames=8, image_size=32
    )
  with pytest.raises(ValueError, match=r'(?s)at 64 px.*layer2\.0\.gc\.0'):
    weights.from_torch(
      'gcsa', state_dict, attention='gca', num_frames=4, image_size=64
    )

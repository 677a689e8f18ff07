"""Tests for the torchvision-layout ResNet and the model registry."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from ferjax import models
from ferjax.layers import torch_nn
from ferjax.models.backbones import resnet


def _count(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _init_shapes(model, size: int = 224):
  images = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
  return jax.eval_shape(model.init, jax.random.key(0), images)


@pytest.mark.parametrize(
  ('name', 'num_classes', 'expected'),
  [
    # torchvision.models.resnet18() / resnet34() parameter counts.
    ('resnet18', 1000, 11_689_512),
    ('resnet34', 1000, 21_797_672),
    ('resnet18', 7, 11_180_103),
  ],
)
def test_full_size_param_count_and_shapes(name, num_classes, expected):
  model = models.get_model(name, num_classes=num_classes)
  variables = _init_shapes(model)
  assert _count(variables['params']) == expected
  out = jax.eval_shape(
    model.apply, variables, jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32)
  )
  chex.assert_shape(out['logits'], (2, num_classes))
  chex.assert_shape(out['features'], (2, 512))
  assert out['logits'].dtype == jnp.float32


def test_torchvision_names():
  params = _init_shapes(models.get_model('resnet18'))['params']
  assert set(params) == {
    'conv1',
    'bn1',
    'fc',
    *(f'layer{s}_{b}' for s in range(1, 5) for b in range(2)),
  }
  assert set(params['layer1_0']) == {'conv1', 'bn1', 'conv2', 'bn2'}
  assert set(params['layer2_0']) == {
    'conv1',
    'bn1',
    'conv2',
    'bn2',
    'downsample_0',
    'downsample_1',
  }
  chex.assert_shape(params['conv1']['kernel'], (7, 7, 3, 64))
  chex.assert_shape(
    params['layer2_0']['downsample_0']['kernel'], (1, 1, 64, 128)
  )
  chex.assert_shape(params['fc']['kernel'], (512, 7))


def test_stem_and_stage_shapes_at_224():
  class Trunk(nn.Module):
    @nn.compact
    def __call__(self, x):
      x = resnet.stem(x)
      x = resnet.stage(x, 'layer1', features=64, num_blocks=2, strides=1)
      return resnet.stage(x, 'layer2', features=128, num_blocks=2, strides=2)

  trunk = Trunk()
  images = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
  variables = jax.eval_shape(trunk.init, jax.random.key(0), images)
  out = jax.eval_shape(trunk.apply, variables, images)
  chex.assert_shape(out, (1, 28, 28, 128))
  # MA-Net's shared stem + layer1 + layer2.
  assert _count(variables['params']) == 683_072


def test_block_refine_hook():
  class GatedBlock(resnet.BasicBlock):
    def refine(self, y, train):
      return y * nn.sigmoid(nn.Dense(y.shape[-1], name='cbam')(y))

  block = GatedBlock(features=16, strides=2)
  images = jax.ShapeDtypeStruct((1, 8, 8, 8), jnp.float32)
  variables = jax.eval_shape(block.init, jax.random.key(0), images)
  assert set(variables['params']) == {
    'conv1',
    'bn1',
    'conv2',
    'bn2',
    'downsample_0',
    'downsample_1',
    'cbam',
  }
  out = jax.eval_shape(block.apply, variables, images)
  chex.assert_shape(out, (1, 4, 4, 16))


# XLA's CPU backend compiles the initialisers' random number generation
# slowly; without optimisation a tiny ResNet initialises in seconds.
_FAST_COMPILE = {'xla_backend_optimization_level': 0}


def _apply(model, variables, images, **kwargs):
  apply = functools.partial(model.apply, **kwargs)
  return jax.jit(apply, compiler_options=_FAST_COMPILE)(variables, images)


@pytest.fixture(scope='module')
def tiny():
  """A width-8 ResNet-18, 32 px images and its initial variables."""
  model = models.get_model('resnet18', num_classes=7, width=8)
  images = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3))
  init = jax.jit(model.init, compiler_options=_FAST_COMPILE)
  return model, images, init(jax.random.key(0), images)


@pytest.mark.parametrize('train', [False, True])
def test_tiny_forward(tiny, train):
  model, images, variables = tiny
  if train:
    out, updates = _apply(
      model, variables, images, train=True, mutable=['batch_stats']
    )
    changed = jax.tree.map(
      lambda a, b: not np.allclose(a, b),
      variables['batch_stats'],
      updates['batch_stats'],
    )
    assert all(jax.tree.leaves(changed))
  else:
    out = _apply(model, variables, images)
  chex.assert_shape(out['logits'], (2, 7))
  chex.assert_shape(out['features'], (2, 64))
  chex.assert_type([out['logits'], out['features']], jnp.float32)
  chex.assert_tree_all_finite(out)


def test_bf16_compute_keeps_float32_params_and_logits(tiny):
  _, images, variables = tiny
  model = models.get_model('resnet18', width=8, dtype=jnp.bfloat16)
  shapes = jax.eval_shape(model.init, jax.random.key(0), images)
  chex.assert_type(jax.tree.leaves(shapes), jnp.float32)
  out = _apply(model, variables, images)
  chex.assert_type([out['logits'], out['features']], jnp.float32)
  chex.assert_tree_all_finite(out)
  reference = _apply(tiny[0], variables, images)['logits']
  np.testing.assert_allclose(out['logits'], reference, rtol=0.1, atol=0.1)


def test_init_matches_torchvision(tiny):
  params = tiny[2]['params']
  # kaiming_normal(fan_out): std = sqrt(2 / (3 * 3 * out)).
  kernel = np.asarray(params['layer4_0']['conv2']['kernel'])
  np.testing.assert_allclose(kernel.std(), np.sqrt(2 / (9 * 64)), rtol=0.05)
  bound = 1 / np.sqrt(64)  # PyTorch Linear default, fan_in = 64.
  for leaf in params['fc'].values():
    assert np.abs(leaf).max() <= bound
  np.testing.assert_array_equal(params['layer1_0']['bn2']['scale'], 1.0)
  np.testing.assert_array_equal(params['layer1_0']['bn2']['bias'], 0.0)


def test_zero_init_residual(tiny):
  model = resnet.ResNet(width=8, zero_init_residual=True)

  # Returning one leaf lets XLA skip the other initialisers.
  def bn2_scale(key):
    return model.init(key, tiny[1])['params']['layer1_0']['bn2']['scale']

  scale = jax.jit(bn2_scale, compiler_options=_FAST_COMPILE)(jax.random.key(0))
  np.testing.assert_array_equal(scale, 0.0)


def test_pixel_normalisation(tiny):
  model, images, variables = tiny
  normed = model.clone(
    pixel_mean=torch_nn.IMAGENET_MEAN, pixel_std=torch_nn.IMAGENET_STD
  )
  shifted = (images - jnp.asarray(torch_nn.IMAGENET_MEAN)) / jnp.asarray(
    torch_nn.IMAGENET_STD
  )
  np.testing.assert_allclose(
    _apply(normed, variables, images)['logits'],
    _apply(model, variables, shifted)['logits'],
    rtol=1e-5,
    atol=1e-5,
  )
  with pytest.raises(ValueError, match='pixel_mean has 2 values'):
    model.clone(pixel_mean=(0.5, 0.5)).apply(variables, images)


def test_bad_inputs():
  with pytest.raises(ValueError, match='depth=50'):
    _init_shapes(resnet.ResNet(depth=50), size=32)
  with pytest.raises(ValueError, match='NHWC'):
    jax.eval_shape(
      resnet.ResNet().init,
      jax.random.key(0),
      jax.ShapeDtypeStruct((1, 3, 32, 32), jnp.float32),
    )


def test_registry():
  assert {'resnet18', 'resnet34'} <= set(models.list_models())
  assert models.get_model('resnet34').depth == 34
  assert models.get_model('resnet18').num_classes == 7
  with pytest.raises(ValueError, match=r'unknown_net.*resnet18.*resnet34'):
    models.get_model('unknown_net')
  with pytest.raises(ValueError, match='already registered'):
    models.register(
      models.ModelSpec(
        'resnet18', functools.partial(resnet.ResNet, depth=34), input_size=224
      )
    )

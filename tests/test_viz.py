"""Tests for ferjax.viz: figures, plot files, attention maps, Grad-CAM."""

import logging
import os

import chex
import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from ferjax import evaluate
from ferjax import models
from ferjax import train
from ferjax import viz
from ferjax.viz import attention
from tests.test_gcsa import random_model_variables

NAMES = ['neutral', 'happiness', 'sadness']
# Rows: 10 neutral (8 right), 4 happiness (3 right), no sadness.
CM = np.array([[8, 2, 0], [1, 3, 0], [0, 0, 0]])
PNG = b'\x89PNG\r\n\x1a\n'
MFER_TINY = {'depths': (1, 1, 2, 1), 'dims': (16, 32, 64, 128)}
JADFER_TINY = dict(width=32, depth=2, num_heads=2, num_paths=3, mlp_ratio=2.0)


def _is_png(path) -> bool:
  with open(path, 'rb') as f:
    header = f.read(8)
  return header == PNG and cv2.imread(str(path)) is not None


def _texts(ax) -> list[str]:
  return [t.get_text() for t in ax.texts]


def test_confusion_figure_shows_normalised_values_and_names():
  fig = viz.confusion_matrix_figure(CM, NAMES, title='test, step 3')
  (ax,) = fig.axes
  np.testing.assert_allclose(
    ax.images[0].get_array(), [[0.8, 0.2, 0], [0.25, 0.75, 0], [0, 0, 0]]
  )
  assert ax.get_title() == 'test, step 3\nConfusion matrix (rows: recall)'
  assert [t.get_text() for t in ax.get_xticklabels()] == NAMES
  assert [t.get_text() for t in ax.get_yticklabels()] == NAMES
  assert _texts(ax)[:3] == ['0.80', '0.20', '0.00']


@pytest.mark.parametrize(
  ('normalize', 'expected', 'cell'),
  [
    ('pred', [[8 / 9, 0.4, 0], [1 / 9, 0.6, 0], [0, 0, 0]], '0.89'),
    ('all', CM / 14, '0.57'),
    (None, CM, '8'),
  ],
)
def test_confusion_figure_normalisations(normalize, expected, cell):
  fig = viz.confusion_matrix_figure(CM, NAMES, normalize=normalize)
  np.testing.assert_allclose(fig.axes[0].images[0].get_array(), expected)
  assert _texts(fig.axes[0])[0] == cell
  with pytest.raises(ValueError, match='one name per row'):
    viz.confusion_matrix_figure(CM, NAMES[:2])


def test_recall_figure_bars_and_uar():
  fig = viz.per_class_recall_figure(CM, NAMES)
  (ax,) = fig.axes
  widths = [bar.get_width() for bar in ax.patches]
  np.testing.assert_allclose(widths, [0.8, 0.75, 0.0])
  assert ax.get_title() == 'Per-class recall (UAR 0.775, WAR 0.786)'
  assert _texts(ax) == ['0.80 (n=10)', '0.75 (n=4)', 'n/a']
  assert [t.get_text() for t in ax.get_yticklabels()] == NAMES


def test_save_eval_plots_writes_pngs_atomically(tmp_path, monkeypatch):
  metrics = evaluate.metrics_from_confusion(CM, NAMES)
  paths = viz.save_eval_plots(str(tmp_path), metrics, 'test', 5)
  plots = tmp_path / 'plots'
  assert paths == (
    str(plots / 'confusion_test.png'),
    str(plots / 'recall_test.png'),
  )
  assert all(_is_png(p) for p in paths)
  assert sorted(os.listdir(plots)) == ['confusion_test.png', 'recall_test.png']
  # An eval record (keys with 'eval/') and an odd split name work as well.
  record = {f'eval/{k}': v for k, v in metrics.items()}
  odd = viz.save_eval_plots(str(tmp_path), record, 'fold1/test[:50%]', 1)
  assert os.path.basename(odd[0]) == 'confusion_fold1_test_50.png'

  # A write that fails half way leaves the old file and no temporary one.
  before = (plots / 'confusion_test.png').read_bytes()

  def broken(fig, f, **kwargs):
    f.write(PNG)
    raise OSError('disk full')

  monkeypatch.setattr(viz.files, 'save_figure', _failing_save(broken))
  with pytest.raises(OSError, match='disk full'):
    viz.save_eval_plots(str(tmp_path), metrics, 'test', 6)
  assert (plots / 'confusion_test.png').read_bytes() == before
  assert not [n for n in os.listdir(plots) if n.endswith('.tmp')]


def _failing_save(write_then_fail):
  def save(fig, path, dpi=viz.files.DPI):
    return viz.write_atomic(path, lambda f: write_then_fail(fig, f))

  return save


def test_plot_failures_are_logged_not_raised(caplog):
  def fails(*args):
    raise RuntimeError('no fonts')

  caplog.set_level(logging.ERROR, logger='absl')
  train.write_plots(fails, '/nonexistent', {}, 'test', 1)
  assert 'Writing plots with fails failed' in caplog.text
  assert 'RuntimeError: no fonts' in caplog.text


@pytest.fixture(scope='module')
def trained(smoke_run_copy):
  """The workdir of the session's smoke run (conftest.py)."""
  return smoke_run_copy[1]


def test_training_writes_eval_plots_and_curves(trained):
  plots = trained / 'plots'
  names = ('confusion_test.png', 'recall_test.png', 'curves.png')
  assert sorted(os.listdir(plots)) == sorted(names)
  assert all(_is_png(plots / name) for name in names)
  fig = viz.training_curves(str(trained))
  titles = [ax.get_title() for ax in fig.axes]
  assert titles == ['loss', 'learning rate', 'train accuracy', 'eval WAR / UAR']
  steps = fig.axes[3].lines[0].get_xdata()
  np.testing.assert_array_equal(steps, [7, 12])


def _random_variables(model, shape):
  template = jax.eval_shape(
    model.init, jax.random.key(0), jax.ShapeDtypeStruct(shape, jnp.float32)
  )
  return random_model_variables(template)


def _inputs(shape, seed=0):
  return np.random.default_rng(seed).uniform(size=shape).astype(np.float32)


def _in_unit_range(maps) -> None:
  for name, m in maps.items():
    assert m.dtype == np.float32, name
    assert m.min() >= 0.0 and m.max() <= 1.0, name


@pytest.fixture(scope='module')
def tiny_manet():
  model = models.get_model('manet', num_classes=5)
  shape = (2, 64, 64, 3)
  return model, _random_variables(model, shape), _inputs(shape)


@pytest.fixture(scope='module')
def tiny_mfer():
  model = models.get_model('mfer', num_classes=5, **MFER_TINY)
  shape = (2, 64, 64, 3)
  return model, _random_variables(model, shape), _inputs(shape)


@pytest.fixture(scope='module')
def tiny_gcsa():
  model = models.get_model('gcsa', num_classes=5, num_frames=4)
  shape = (2, 4, 32, 32, 3)
  return model, _random_variables(model, shape), _inputs(shape)


def _assert_sowing_changes_nothing(model, variables, images):
  plain = jax.jit(model.apply)(variables, images)
  sown, state = attention._apply_sown(model, variables, images)
  assert state['intermediates']
  chex.assert_trees_all_equal(plain, sown)


def test_manet_cbam_maps(tiny_manet):
  model, variables, images = tiny_manet
  maps = viz.attention_maps('manet', model, variables, images)
  assert set(maps) == {'cbam', 'cbam_p1', 'cbam_p2', 'cbam_p3', 'cbam_p4'}
  # layer2 is 8x8, each patch 4x4, its layer3/4 maps 2x2.
  chex.assert_shape([maps[f'cbam_p{i}'] for i in range(1, 5)], (2, 2, 2))
  chex.assert_shape(maps['cbam'], (2, 4, 4))
  _in_unit_range(maps)
  np.testing.assert_array_equal(maps['cbam'][:, :2, 2:], maps['cbam_p2'])
  np.testing.assert_array_equal(maps['cbam'][:, 2:, :2], maps['cbam_p3'])
  _assert_sowing_changes_nothing(model, variables, images)


def test_mfer_ds_attention_maps(tiny_mfer):
  model, variables, images = tiny_mfer
  maps = viz.attention_maps('mfer', model, variables, images)
  chex.assert_shape(maps['ds_stage3'], (2, 4, 4))
  chex.assert_shape(maps['ds_stage4'], (2, 2, 2))
  _in_unit_range(maps)
  for m in maps.values():  # Scaled per example: from 0 to 1.
    np.testing.assert_allclose(m.reshape(2, -1).min(1), 0.0)
    np.testing.assert_allclose(m.reshape(2, -1).max(1), 1.0)
  _assert_sowing_changes_nothing(model, variables, images)


def test_gcsa_channel_weights(tiny_gcsa):
  model, variables, images = tiny_gcsa
  maps = viz.attention_maps('gcsa', model, variables, images)
  chex.assert_shape(maps['channels_layer2'], (2, 4, 128))
  chex.assert_shape(maps['channels_layer3'], (2, 4, 256))
  _in_unit_range(maps)
  fig = viz.channel_weights_figure(maps['channels_layer3'][0], 'clip 0')
  assert fig.axes[0].images[0].get_array().shape == (4, 256)
  _assert_sowing_changes_nothing(model, variables, images)


def test_jadfer_attention_maps():
  model = models.get_model('jadfer', num_classes=5, **JADFER_TINY)
  images = _inputs((2, 32, 32, 3))
  variables = _random_variables(model, images.shape)
  maps = viz.attention_maps('jadfer', model, variables, images)
  paths = [f'{kind}_path_{i}' for kind in ('sb', 'sci') for i in range(3)]
  assert set(maps) == {'cb_cls', 'cb_mean', 'cb_rollout', *paths}
  chex.assert_shape(list(maps.values()), (2, 4, 4))  # The 32 px IR grid.
  _in_unit_range(maps)
  with pytest.raises(ValueError, match='use grad_cam'):
    viz.attention_maps('resnet18', model, variables, images)


def _fresh_variables(template, seed=0):
  """He-normal kernels and BatchNorm as initialised: identity, no bias."""
  rng = np.random.default_rng(seed)
  fill = {'scale': np.ones, 'var': np.ones, 'bias': np.zeros, 'mean': np.zeros}
  flat = {}
  for key, leaf in traverse_util.flatten_dict(dict(template)).items():
    if key[-1] == 'kernel':
      std = np.sqrt(2.0 / np.prod(leaf.shape[:-1]))
      flat[key] = rng.normal(0.0, std, leaf.shape).astype(np.float32)
    else:
      flat[key] = fill[key[-1]](leaf.shape, np.float32)
  return traverse_util.unflatten_dict(flat)


@pytest.fixture(scope='module')
def resnet():
  model = models.get_model('resnet18', num_classes=3, width=8)
  template = jax.eval_shape(
    model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 32, 32, 3), float)
  )
  return model, _fresh_variables(template)


def _with_fc_column(variables, column, target=1):
  params = jax.tree.map(np.array, variables['params'])
  params['fc']['kernel'][:, target] = column
  return {**variables, 'params': params}


def test_grad_cam_of_a_linear_head_is_cam(resnet):
  model, variables = resnet
  images = _inputs((2, 64, 64, 3))
  maps = viz.grad_cam(model, variables, images, target=[0, 2])
  assert viz.cam_layer(model, variables, images) == 'layer4_1'
  # Global pooling then fc: the gradient weights are fc's column / (h * w).
  _, state = model.apply(variables, images, capture_intermediates=True)
  (features,) = state['intermediates']['layer4_1']['__call__']
  kernel = variables['params']['fc']['kernel']
  cam = np.maximum(np.einsum('nhwc,cn->nhw', features, kernel[:, [0, 2]]), 0)
  peak = cam.max(axis=(1, 2), keepdims=True)
  cam = np.divide(cam, peak, out=np.zeros_like(cam), where=peak > 0)
  want = jax.image.resize(cam, (2, 64, 64), 'bilinear')
  np.testing.assert_allclose(maps, want, atol=1e-5)


@pytest.mark.parametrize('quadrant', [(0, 0), (1, 1), (0, 1), (1, 0)])
def test_grad_cam_finds_the_square_that_drives_the_logit(resnet, quadrant):
  # On black, every feature is 0 (no biases, fresh BatchNorm), and a
  # layer1 feature sees 43 px: a square in the middle of a 64 px quadrant
  # moves the features of that quadrant alone, and through them the logit.
  model, variables = resnet
  images = np.zeros((1, 128, 128, 3), np.float32)
  top, left = (32 + 64 * q for q in quadrant)
  images[0, top - 6 : top + 6, left - 6 : left + 6] = 1.0
  raising = _with_fc_column(variables, np.full(64, 1.0))
  (cam,) = viz.grad_cam(model, raising, images, target=1, layer='layer1_1')
  assert cam.min() >= 0.0 and 0.5 < cam.max() <= 1.0
  row, col = np.unravel_index(np.argmax(cam), cam.shape)
  assert (row // 64, col // 64) == quadrant
  mass = cam.reshape(2, 64, 2, 64).sum(axis=(1, 3))
  assert mass[quadrant] > 0 and mass.sum() == mass[quadrant]
  # On the pooled layer no channel raises a logit of negative weights.
  lowering = _with_fc_column(variables, np.full(64, -1.0))
  np.testing.assert_array_equal(
    viz.grad_cam(model, lowering, images, target=1, layer='layer4_1'), 0.0
  )


def test_grad_cam_on_mfer(tiny_mfer, tiny_manet):
  maps = viz.grad_cam(*tiny_mfer)
  chex.assert_shape(maps, (2, 64, 64))
  assert maps.min() >= 0.0 and maps.max() == pytest.approx(1.0, abs=0.05)
  assert viz.cam_layer(*tiny_mfer) == 'stages_3_1'  # The DS attention.
  # MA-Net's default is its sown layer2 map, the output of block layer2_1
  # (a full MA-Net backward pass takes too long to compile for this suite).
  assert viz.cam_layer(*tiny_manet) == 'layer2_1'
  with pytest.raises(ValueError, match='no submodule'):
    viz.grad_cam(*tiny_mfer, layer='stages_9_9')


def test_overlay_and_save_overlays(tmp_path):
  image = np.full((40, 60, 3), 100, np.uint8)
  heat = np.zeros((4, 6), np.float32)
  heat[0, 0] = 1.0
  np.testing.assert_array_equal(viz.overlay(image, heat, 0.0), image)
  out = viz.overlay(image, heat, 0.5)
  assert out.shape == image.shape and out.dtype == np.uint8
  assert out[2, 2, 0] > out[38, 58, 0]  # Red where hot, blue where cold.
  assert out[38, 58, 2] > out[38, 58, 0]
  paths = viz.save_overlays(
    str(tmp_path), np.stack([image, image]), {'cam': np.stack([heat, heat])}
  )
  assert [os.path.basename(p) for p in paths] == ['000_cam.png', '001_cam.png']
  assert all(_is_png(p) for p in paths)


def test_annotate_draws_inside_the_box():
  image = np.zeros((120, 180, 3), np.uint8)
  row = {'x': 30, 'y': 40, 'w': 100, 'h': 60, 'label': 'happiness'}
  row.update(neutral=0.05, happiness=0.93, sadness=0.02)
  out = viz.annotate(image, [row])
  assert not image.any()  # The input is left alone.
  changed = out.any(axis=-1)
  frame = changed[40:100, 30:130]
  assert frame[0].all() and frame[-1].all() and frame[:, 0].all()
  assert frame[:, -1].all()
  assert not changed[45:95, 35:125].any()  # The face is not covered.
  assert changed[26:40, 30:130].mean() > 0.9  # The label band above it.
  outside = changed.copy()
  outside[24:102, 28:132] = False
  assert not outside.any()
  (color,) = {tuple(c) for c in out[70, 30:31]}
  assert color == viz.label_color('happiness')


def test_annotate_reads_dataframes_and_skips_rows_without_a_face():
  import pandas as pd

  image = np.zeros((60, 120, 3), np.uint8)
  rows = pd.DataFrame(
    [
      {'x': 5, 'y': 20, 'w': 60, 'h': 30, 'label': 'anger', 'anger': 0.7},
      {'x': np.nan, 'y': np.nan, 'w': np.nan, 'h': np.nan, 'label': ''},
    ]
  )
  out = viz.annotate(image, rows)
  assert out[20, 5:65].all() and not out[:, 70:].any()
  assert viz.row_probability(rows.iloc[0], 'anger') == pytest.approx(0.7)
  np.testing.assert_array_equal(viz.annotate(image, rows.iloc[1:]), image)

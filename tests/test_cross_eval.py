"""Cross-dataset evaluation: classes matched by name, the command, bad input.

The runs here are not trained: a ResNet-18 head with a zero kernel and a
chosen bias predicts one class for every image, so what each class set does
to the logits, WAR, UAR and the reports is known exactly.
"""

import json
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import demo
from ferjax import checkpointing
from ferjax import labels
from ferjax import models
from ferjax import train
from ferjax.evaluate import __main__ as command
from ferjax.evaluate import classes
from ferjax.evaluate import trained
from tests.fake_data import IndexedSource

SURPRISE = labels.EXPRESSIONS.index('surprise')


def test_classes_match_by_name():
  eight, seven = labels.EXPRESSIONS, labels.EXPRESSIONS_7
  m = classes.match_classes(eight, seven)
  assert m.common == seven and m.dropped_logits == ('contempt',)
  assert m.left_out == () and not m.same
  m = classes.match_classes(seven, eight)
  assert m.left_out == ('contempt',) and m.dropped_logits == ()
  assert m.position == (0, 1, 2, 3, 4, 5, 6, -1)
  m = classes.match_classes(('anger', 'neutral'), ('neutral', 'pain', 'anger'))
  assert m.common == ('neutral', 'anger')
  assert m.logit_index == (1, 0) and m.data_index == (0, 2)
  assert m.position == (0, -1, 1)
  assert classes.match_classes(seven, seven).same
  with pytest.raises(ValueError, match='no class in common') as e:
    classes.match_classes(seven, ('pain',), what='runs/x on pain')
  assert '\n' not in str(e.value) and 'runs/x on pain' in str(e.value)


def test_matched_metrics_leave_out_what_the_model_lacks():
  confusion = np.zeros((8, 8), int)
  confusion[0, 0], confusion[0, 1], confusion[1, 1] = 3, 1, 4
  confusion[7, 1], confusion[7, 0] = 5, 2  # Contempt, predicted as others.
  match = classes.match_classes(labels.EXPRESSIONS_7, labels.EXPRESSIONS)
  m = classes.matched_metrics(confusion, match)
  assert m['num_examples'] == 8 and m['war'] == pytest.approx(7 / 8)
  assert m['uar'] == pytest.approx((3 / 4 + 1) / 2)
  assert 'contempt' not in m['per_class_recall']
  assert np.shape(m['confusion_matrix']) == (7, 7)
  left = m['classes']['left_out']['contempt']
  assert left['num_examples'] == 7
  assert (
    left['predicted']['happiness'] == 5 and left['predicted']['neutral'] == 2
  )


def _run_config(smoke_data_dir, num_classes):
  config = demo.get_config('smoke')
  config.data.data_dir = smoke_data_dir
  if num_classes == 8:  # An AffectNet-8 run, say.
    config.data.name, config.data.config = 'affectnet', '8class'
    config.data.num_classes = 8
  return config


def _one_class_variables(config, winner):
  """All-zero variables but the head's bias, so the logits are the bias:
  `winner` always wins, but contempt (if the head has it) scores higher
  still. Nothing is compiled."""
  model = models.create_model(config)
  rngs = {'params': jax.random.key(0), 'dropout': jax.random.key(0)}
  images = jnp.zeros(models.input_shape(config), jnp.float32)
  shapes = jax.eval_shape(lambda: model.init(rngs, images, train=False))
  variables = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
  bias = np.zeros(config.data.num_classes, np.float32)
  bias[winner] = 5.0
  if config.data.num_classes == 8:
    bias[labels.EXPRESSIONS.index('contempt')] = 100.0
  variables['params']['fc']['bias'] = bias
  return variables


@pytest.fixture(scope='module')
def run8(tmp_path_factory, smoke_data_dir):
  """An '8-class run' (config.json + a best checkpoint at step 5)."""
  config = _run_config(smoke_data_dir, 8)
  workdir = str(tmp_path_factory.mktemp('run8'))
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(config.to_json_best_effort())
  variables = _one_class_variables(config, SURPRISE)
  state = train.TrainState(
    step=np.int32(5),
    params=variables.pop('params'),
    model_state=variables,
    opt_state={},
  )
  ckpt = checkpointing.Checkpointer(workdir, 0, 1, async_save=False)
  ckpt.save_best(5, state)
  ckpt.close()
  return workdir


def test_8_class_model_on_a_7_class_dataset_drops_contempt(run8, capsys):
  argv = ['--workdir', run8, '--dataset', 'synthetic_fer/smoke']
  assert command.main(argv) == 0
  out = capsys.readouterr().out
  assert 'logits dropped: contempt' in out and 'WAR 14.29 %' in out
  path = os.path.join(run8, 'eval', 'synthetic_fer_smoke_test_best.json')
  with open(path) as f:
    report = json.load(f)
  # Contempt's logit (100) would win every image; dropped, surprise does.
  confusion = np.array(report['confusion_matrix'])
  assert confusion.shape == (7, 7) and confusion.sum() == 140
  np.testing.assert_array_equal(confusion[:, SURPRISE], [20] * 7)
  assert report['per_class_recall']['surprise'] == 1.0
  assert report['war'] == pytest.approx(1 / 7)
  assert report['uar'] == pytest.approx(1 / 7)
  assert report['classes']['dropped_logits'] == ['contempt']
  assert report['classes']['left_out'] == {}
  assert report['step'] == 5 and report['dataset'] == 'synthetic_fer/smoke test'
  name = 'synthetic_fer_smoke_test_best'
  assert os.path.exists(os.path.join(run8, 'plots', f'confusion_{name}.png'))


def test_7_class_model_on_8_class_data_reports_contempt(smoke_data_dir):
  config = _run_config(smoke_data_dir, 7)
  variables = _one_class_variables(config, SURPRISE)
  target = trained.Target(
    name='eight',
    config=None,
    split='test',
    data_dir=None,
    class_names=labels.EXPRESSIONS,
  )
  source = IndexedSource(48, num_classes=8)  # Six of each class.
  m = trained.evaluate_variables(config, variables, target, source=source)
  assert m['num_examples'] == 42 and m['war'] == pytest.approx(1 / 7)
  assert m['classes']['left_out']['contempt']['num_examples'] == 6
  assert m['classes']['left_out']['contempt']['predicted']['surprise'] == 6
  assert m['classes']['dropped_logits'] == []
  assert list(m['per_class_recall']) == list(labels.EXPRESSIONS_7)
  assert np.isfinite(m['loss'])


def _fails(argv, capsys, code):
  assert command.main(argv) == code
  err = capsys.readouterr().err.strip()
  assert err.startswith('error: ') and '\n' not in err
  return err


def test_bad_input_is_one_line(run8, tmp_path, capsys, monkeypatch):
  empty = tmp_path / 'untrained'
  empty.mkdir()
  (empty / 'config.json').write_text(
    pathlib.Path(run8, 'config.json').read_text()
  )
  err = _fails(['--workdir', str(empty)], capsys, 2)
  assert 'holds no checkpoint' in err
  err = _fails(['--workdir', str(tmp_path)], capsys, 2)
  assert 'not a ferjax workdir' in err
  err = _fails(['--workdir', run8, '--checkpoint', '7'], capsys, 2)
  assert "no '7' checkpoint (it has: best [5]" in err
  err = _fails(['--workdir', run8, '--checkpoint', 'last'], capsys, 2)
  assert 'use best, final or a step number' in err
  # Built only at 32 px: the error spells out the build command.
  err = _fails(['--workdir', run8, '--dataset', 'synthetic_fer/64'], capsys, 1)
  assert 'python -m ferjax.data.build synthetic_fer --config 64' in err
  err = _fails(['--workdir', run8, '--dataset', 'nosuch'], capsys, 2)
  assert "Unknown dataset 'nosuch'" in err
  argv = ['--workdir', run8, '--dataset', 'synthetic_fer/smoke', '--split', 'x']
  assert 'has the splits test, train' in _fails(argv, capsys, 2)
  alien = trained.Target('pain', None, 'test', None, ('pain', 'boredom'))
  monkeypatch.setattr(trained, 'find_target', lambda *a, **k: alien)
  err = _fails(['--workdir', run8, '--dataset', 'pain'], capsys, 2)
  assert 'no class in common' in err

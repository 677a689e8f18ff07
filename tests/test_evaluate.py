"""Metrics, and evaluation that counts every example exactly once."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ferjax import evaluate
from ferjax.data import pipeline
from tests.fake_data import IndexedSource


def test_metrics_from_confusion():
  confusion = np.array([[3, 1, 0], [2, 2, 0], [0, 0, 0]])
  m = evaluate.metrics_from_confusion(confusion, ['a', 'b', 'c'])
  assert m['war'] == pytest.approx(5 / 8)
  assert m['uar'] == pytest.approx((3 / 4 + 2 / 4) / 2)  # 'c' is absent.
  assert m['per_class_recall'] == {'a': 0.75, 'b': 0.5, 'c': None}
  assert m['num_examples'] == 8


def test_confusion_matrix_respects_mask():
  labels = jnp.array([0, 1, 2, 2])
  preds = jnp.array([0, 2, 2, 1])
  mask = jnp.array([True, True, True, False])
  got = evaluate.confusion_matrix(labels, preds, mask, 3)
  np.testing.assert_array_equal(got, [[1, 0, 0], [0, 0, 1], [0, 0, 1]])


@pytest.mark.parametrize('n,batch', [(37, 8), (37, 16), (140, 32), (8, 24)])
def test_eval_pipeline_covers_each_example_once(smoke_config, n, batch):
  config = smoke_config
  config.eval_batch_size = batch
  config.augment.size = 8
  ds, num, num_batches = pipeline.eval_dataset(
    config, 'test', source=IndexedSource(n)
  )
  seen = []
  batches = list(ds)
  assert len(batches) == num_batches == -(-n // batch)
  for b in batches:
    assert b['image'].shape == (batch, 8, 8, 3) and b['image'].dtype == np.uint8
    seen += list(b['image'][b['mask'], 0, 0, 0])
    assert not b['image'][~b['mask']].any()
  assert num == n and sorted(seen) == list(range(n))


def test_eval_step_counts_masked_examples_once(smoke_config):
  """The jitted eval step with a model that predicts the label when even."""

  class Oracle:
    def apply(self, variables, images, train):
      label = jnp.round(images[:, 0, 0, 0] * 255).astype(jnp.int32) % 7
      pred = jnp.where(label % 2 == 0, label, (label + 1) % 7)
      return {'logits': jax.nn.one_hot(pred, 7)}

  class State:
    def variables(self):
      return {}

  config = smoke_config
  config.augment.size = 8
  config.eval_batch_size = 16
  ds, n, _ = pipeline.eval_dataset(config, 'test', source=IndexedSource(45))
  step = jax.jit(
    lambda b: evaluate.eval_step(State(), b, model=Oracle(), num_classes=7)
  )
  total = sum(np.asarray(step(b)['confusion']) for b in ds)
  m = evaluate.metrics_from_confusion(total)
  assert m['num_examples'] == 45
  labels = np.arange(45) % 7
  assert m['war'] == pytest.approx(np.mean(labels % 2 == 0))

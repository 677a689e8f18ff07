"""config.data.validation: a stratified holdout of the train split, or a split.

The holdout is disjoint from what trains, stratified, fixed by the seed,
the same on every process count and again on resume; the best checkpoint is
chosen on it and results.json reports the test metrics at its best step.
"""

import json
import os

import jax
import numpy as np
import pytest

from configs import common
from ferjax import train
from ferjax import writers
from ferjax.data import datasets
from ferjax.data import holdout
from ferjax.data import pipeline


def test_split_is_disjoint_stratified_and_fixed_by_the_seed():
  labels = np.repeat(np.arange(7), [50, 40, 30, 20, 10, 3, 1])
  np.random.default_rng(0).shuffle(labels)
  train_idx, val_idx = holdout.split_indices(labels, 0.2, seed=3)
  assert np.intersect1d(train_idx, val_idx).size == 0
  np.testing.assert_array_equal(
    np.sort(np.concatenate([train_idx, val_idx])), np.arange(len(labels))
  )
  held = np.bincount(labels[val_idx], minlength=7)
  np.testing.assert_array_equal(held, [10, 8, 6, 4, 2, 1, 0])
  again = holdout.split_indices(labels.copy(), 0.2, seed=3)
  np.testing.assert_array_equal(again[1], val_idx)
  other = holdout.split_indices(labels, 0.2, seed=4)[1]
  assert not np.array_equal(other, val_idx)
  np.testing.assert_array_equal(np.bincount(labels[other], minlength=7), held)


def test_class_counts_keep_every_class_on_both_sides():
  assert [holdout.class_count(n, 0.1) for n in (0, 1, 2, 5, 20, 26)] == [
    0,
    0,
    1,
    1,
    2,
    3,
  ]
  assert holdout.class_count(10, 0.99) == 9


def test_validation_values_are_checked():
  assert holdout.fraction('test') is None
  assert holdout.fraction('holdout:0.25') == 0.25
  for bad in ('holdout:0', 'holdout:1.5', 'holdout:x'):
    with pytest.raises(ValueError, match='between 0 and 1'):
      holdout.fraction(bad)
  config = common.base_config()
  datasets.set_dataset(config, 'ferplus', 'majority')
  assert config.data.validation == 'test'
  config.data.validation = 'validation'  # FERPlus's own, by name.
  datasets.check_data_config(config.data)
  datasets.set_dataset(config, 'sfew')
  assert config.data.validation == 'validation' == config.data.eval_split
  config.data.validation = 'test'  # SFEW has no test split.
  with pytest.raises(ValueError, match="validation='test' does not fit"):
    datasets.check_data_config(config.data)


def _holdout_config(smoke_config):
  config = smoke_config
  config.data.validation = 'holdout:0.2'
  return config


def test_holdout_is_the_same_on_every_process_count(smoke_config, monkeypatch):
  config = _holdout_config(smoke_config)
  source, labels = pipeline.holdout_source(config, 'validation')
  train_source, _ = pipeline.holdout_source(config, 'train')
  assert len(source) == 91 and len(train_source) == 357  # 13 of each 64.
  np.testing.assert_array_equal(np.bincount(labels), [13] * 7)
  assert np.intersect1d(source.indices, train_source.indices).size == 0

  def batches(processes, index, n=3):
    monkeypatch.setattr(jax, 'process_count', lambda: processes)
    monkeypatch.setattr(jax, 'process_index', lambda: index)
    assert np.array_equal(
      pipeline.holdout_source(config, 'validation')[0].indices, source.indices
    )
    it = iter(pipeline.train_dataset(config)[0])
    return [next(it)['image'] for _ in range(n)]

  single = batches(1, 0)
  halves = [batches(2, 0), batches(2, 1)]
  for b in range(3):
    joined = np.concatenate([h[b] for h in halves])
    np.testing.assert_array_equal(joined, single[b])


def test_holdout_training_resumes_on_the_same_examples(smoke_config):
  config = _holdout_config(smoke_config)
  ds, num_train = pipeline.train_dataset(config)
  assert num_train == 357
  it = iter(ds)
  for _ in range(2):
    next(it)
  state = it.get_state()
  expected = [next(it)['image'] for _ in range(2)]
  resumed = iter(pipeline.train_dataset(config)[0])  # Built afresh.
  resumed.set_state(state)
  for want in expected:
    np.testing.assert_array_equal(next(resumed)['image'], want)


# What tests/test_compare.py trains too (the same compiled programs).
HOLDOUT_RUN = {
  'data.validation': 'holdout:0.2',
  'total_steps': 2,
  'eval_every_epochs': 0.05,  # 357 // 16 = 22 steps/epoch: every step.
}


def test_best_checkpoint_is_chosen_on_the_holdout(smoke_config, tmp_path):
  config = smoke_config
  for field, value in HOLDOUT_RUN.items():
    common.override(config, f'{field}={value}')
  workdir = str(tmp_path)
  results = train.train_and_evaluate(config, workdir)
  evals = [r for r in writers.read_metrics(workdir) if 'eval/war' in r]
  assert [r['step'] for r in evals] == [1, 2]
  for r in evals:
    assert r['val/num_examples'] == 91 and r['eval/num_examples'] == 140
  best = max(evals, key=lambda r: r['val/war'])
  assert os.listdir(os.path.join(workdir, 'best')) == [str(best['step'])]
  chosen = results['at_best_validation']
  assert chosen['step'] == best['step']
  assert chosen['validation'] == {
    'on': 'holdout:0.2',
    'war': best['val/war'],
    'uar': best['val/uar'],
    'num_examples': 91,
  }
  assert chosen['eval'] == {
    'split': 'test',
    'war': best['eval/war'],
    'uar': best['eval/uar'],
  }
  with open(os.path.join(workdir, 'results.json')) as f:
    assert json.load(f)['at_best_validation'] == chosen
  assert results['best']['war'] == max(r['eval/war'] for r in evals)

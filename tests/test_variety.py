"""The Variety loss: DAN's partition loss and the cosine option."""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ferjax import losses as variety

RNG = np.random.default_rng(0)
EMBEDDINGS = RNG.normal(size=(3, 4, 6)).astype(np.float32)  # (B, N, C)
MAPS = RNG.uniform(size=(2, 4, 5, 5)).astype(np.float32)  # (B, N, H, W)


def _hand_partition(x, eps=sys.float_info.epsilon):
  """DAN's PartitionLoss: unbiased variance over paths, one mean, log."""
  num_paths = x.shape[1]
  var = np.var(x.astype(np.float64), axis=1, ddof=1).mean()
  return np.log(1 + num_paths / (var + eps))


def _hand_cosine(x):
  batch, num_paths = x.shape[:2]
  flat = x.reshape(batch, num_paths, -1).astype(np.float64)
  values = []
  for b in range(batch):
    for i in range(num_paths):
      for j in range(i + 1, num_paths):
        u, v = flat[b, i], flat[b, j]
        values.append(u @ v / np.linalg.norm(u) / np.linalg.norm(v))
  return np.mean(values)


def _log_softmax(z, axis):
  z = z - z.max(axis, keepdims=True)
  return z - np.log(np.exp(z).sum(axis, keepdims=True))


@pytest.mark.parametrize('x', [EMBEDDINGS, MAPS], ids=['embeddings', 'maps'])
def test_partition_matches_dan_formula(x):
  np.testing.assert_allclose(
    variety.partition_loss(x), _hand_partition(x), rtol=1e-5
  )
  np.testing.assert_allclose(
    variety.partition_loss(x, eps=0.5), _hand_partition(x, 0.5), rtol=1e-5
  )


def test_partition_on_dan_head_scores():
  # DAN feeds the log_softmax over heads of the heads' embeddings.
  scores = jax.nn.log_softmax(EMBEDDINGS, axis=1)
  np.testing.assert_allclose(
    variety.partition_loss(scores),
    _hand_partition(_log_softmax(EMBEDDINGS, axis=1)),
    rtol=1e-5,
  )


def _spread_embeddings(spread):
  """The same base for every path, plus per-path offsets times `spread`."""
  base = RNG.normal(size=(3, 1, 6)).astype(np.float32)
  offsets = np.random.default_rng(1).normal(size=(3, 4, 6))
  return base + spread * offsets.astype(np.float32)


def test_partition_falls_as_paths_spread():
  spreads = [0.0, 0.01, 0.1, 0.5, 1.0, 3.0]
  values = [
    float(variety.partition_loss(_spread_embeddings(s))) for s in spreads
  ]
  # Identical paths: only eps keeps it finite.
  np.testing.assert_allclose(values[0], np.log1p(4 / sys.float_info.epsilon))
  assert values[0] > 30
  assert np.all(np.diff(values) < 0), values


def _blob_maps(spread, size=12):
  """(1, 3, size, size) Gaussian blobs moving apart from the centre."""
  grid = np.arange(size, dtype=np.float32)
  yy, xx = np.meshgrid(grid, grid, indexing='ij')
  centre = (size - 1) / 2
  maps = []
  for angle in (0.0, 2.1, 4.2):
    cy = centre + spread * np.sin(angle)
    cx = centre + spread * np.cos(angle)
    maps.append(np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 4.0))
  return np.stack(maps)[None]


def test_cosine_matches_hand_computation():
  for x in (EMBEDDINGS, MAPS, _blob_maps(2.0)):
    np.testing.assert_allclose(
      variety.cosine_loss(x), _hand_cosine(x), rtol=1e-5
    )


def test_cosine_falls_as_maps_move_apart():
  spreads = [0.0, 0.5, 1.0, 2.0, 3.0, 4.0]
  values = [float(variety.cosine_loss(_blob_maps(s))) for s in spreads]
  np.testing.assert_allclose(values[0], 1.0, rtol=1e-6)
  assert np.all(np.diff(values) < 0), values
  assert values[-1] < 0.05


@pytest.mark.parametrize('kind', variety.VARIETY_KINDS)
@pytest.mark.parametrize('x', [EMBEDDINGS, MAPS], ids=['embeddings', 'maps'])
def test_gradient_reaches_every_path(kind, x):
  grad = jax.grad(lambda x: variety.variety_loss(x, kind))(jnp.asarray(x))
  per_path = np.abs(np.asarray(grad)).reshape(x.shape[0], x.shape[1], -1)
  assert np.all(np.isfinite(per_path))
  assert np.all(per_path.sum(-1) > 1e-6), per_path.sum(-1)


@pytest.mark.parametrize('kind', variety.VARIETY_KINDS)
def test_one_path_has_no_variety(kind):
  x = jnp.asarray(EMBEDDINGS[:, :1])
  loss = variety.variety_loss(x, kind)
  grad = jax.grad(lambda x: variety.variety_loss(x, kind))(x)
  assert loss.shape == ()
  assert float(loss) == 0.0
  np.testing.assert_array_equal(grad, np.zeros_like(grad))


def test_dispatcher_and_jit():
  for kind, fn in (
    ('partition', variety.partition_loss),
    ('cosine', variety.cosine_loss),
  ):
    want = fn(MAPS)
    got = jax.jit(variety.variety_loss, static_argnames='kind')(MAPS, kind)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert got.dtype == jnp.float32
  np.testing.assert_allclose(
    variety.variety_loss(EMBEDDINGS, 'partition', eps=0.5),
    _hand_partition(EMBEDDINGS, 0.5),
    rtol=1e-5,
  )


def test_bf16_paths_compute_in_float32():
  x = jnp.asarray(EMBEDDINGS, jnp.bfloat16)
  for kind in variety.VARIETY_KINDS:
    assert variety.variety_loss(x, kind).dtype == jnp.float32


def test_unknown_kind():
  with pytest.raises(ValueError, match="kind='diversity'.*partition"):
    variety.variety_loss(EMBEDDINGS, 'diversity')

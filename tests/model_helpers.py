"""Helpers shared by the model tests: parameter counts, shapes, inputs."""

import jax
import jax.numpy as jnp
import numpy as np


def param_count(tree) -> int:
  """Number of scalars in a tree of arrays or shape structs."""
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def init_shapes(model, size: int = 224, batch: int = 2):
  """The model's variables as shapes, for a square input, without FLOPs."""
  images = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32)
  return jax.eval_shape(model.init, jax.random.key(0), images)


def random_images(size: int = 32, batch: int = 2, seed: int = 0):
  """Uniform [0, 1) float32 images, (batch, size, size, 3)."""
  rng = np.random.default_rng(seed)
  return rng.uniform(size=(batch, size, size, 3)).astype(np.float32)


def assert_stochastic_only_in_training(apply, variables, images) -> None:
  """Training applies vary with the 'dropout' key, and differ from eval.

  Args:
    apply: a jitted `model.apply` with `train` static.
    variables: the model's variables.
    images: a batch the model takes.
  """

  def train(seed):
    rngs = {'dropout': jax.random.key(seed)}
    return apply(variables, images, train=True, rngs=rngs)['logits']

  evaluated = apply(variables, images)['logits']
  np.testing.assert_array_equal(train(0), train(0))
  # Several seeds, so that a draw that happens to drop nothing cannot fail it.
  assert max(np.abs(train(s) - train(0)).max() for s in (1, 2, 3)) > 1e-3
  assert max(np.abs(train(s) - evaluated).max() for s in (0, 1, 2)) > 1e-3

"""Helpers shared by the model tests: parameter counts, shapes, inputs."""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ferjax.models.backbones import irse

# XLA's CPU backend compiles the initialisers' random number generation
# slowly; unoptimised, a model initialises in a fraction of the time (as in
# ferjax.train). Pass as `jax.jit(..., compiler_options=FAST_COMPILE)`.
FAST_COMPILE = {'xla_backend_optimization_level': 0}

# A depth face.evoLVe does not have: 2, 1, 1 and 1 units per stage, where
# IR-50 has 3, 4, 14 and 3. JADFER's backbone exists only as IR-50, whose 21
# units (3 stages) take most of its compilation time; checks that do not
# depend on the depth build it this short (`short_ir`).
SHORT_IR_LAYERS = 5


@contextlib.contextmanager
def short_ir():
  """Accepts num_layers=SHORT_IR_LAYERS in the IR backbones while it lasts."""
  with pytest.MonkeyPatch.context() as patch:
    patch.setitem(irse.STAGE_UNITS, SHORT_IR_LAYERS, (2, 1, 1, 1))
    yield


def jit_init(model, *args):
  """`model.init(*args)`, jitted and compiled without optimisation."""
  return jax.jit(model.init, compiler_options=FAST_COMPILE)(*args)


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

"""ONNX export of the eval function (optional packages).

ONNX (`onnx_model`, `export_onnx`, --onnx) needs the optional packages
`jax2onnx` and `onnx` (and `onnxruntime` to check the result); without them
it raises an ImportError naming the package. With jax2onnx 0.17.1, onnx
1.23.2 and onnxruntime 1.32.0, resnet18, manet, mfer, jadfer and gcsa
convert with a symbolic batch ('images' uint8 -> 'logits' float32, opset
23, weights inside the file) and match the jax logits on a CPU within
1.4e-6 at the smoke configs' sizes (batches of 1, 3 and 8) and within
8.8e-6 at the papers' (224 px manet and mfer, 112 px jadfer, 16 x 112 px
gcsa; batches of 1 and 2). jax2onnx's own max-pool conversions fail on
these models, so max pools are rewritten first (`_max_pool_by_slices`). A
conversion whose logits differ from the model's by more than
`ONNX_TOLERANCE` on this host is refused.
"""

from __future__ import annotations

import importlib
import itertools
import os
from collections.abc import Callable
from collections.abc import Sequence
from importlib import metadata as importlib_metadata

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from ferjax import checkpointing
from ferjax import export_common
from ferjax import exported as exported_lib
from ferjax import writers

ONNX_OPSET = 23
ONNX_FILE = 'model.onnx'
# The largest |logit| difference accepted between the ONNX model and JAX.
ONNX_TOLERANCE = 1e-4


def _require(package: str, why: str):
  try:
    return importlib.import_module(package)
  except ImportError as e:
    raise ImportError(
      f'{why} needs the optional {package!r} package: pip install {package}'
    ) from e


def _max_pool_by_slices(
  x,
  *,
  window_dimensions,
  window_strides,
  padding,
  base_dilation,
  window_dilation,
):
  """`lax.reduce_window_max` as the max of strided slices of its input.

  jax2onnx 0.17 converts a max pool over NHWC to a 4-d MaxPool, which
  onnxruntime refuses ("Unsupported pooling size"), and its Pad cannot take
  a symbolic batch; slices, Concat and Max convert. The -inf padding is
  replaced by repeating the edge, which gives the same maximum whenever a
  window reaches at most window - 1 pixels past the edge (every window then
  holds the edge pixel). Axes with a window and stride of 1 (batch,
  channels) are left whole, so a symbolic batch stays symbolic.
  """
  if any(d != 1 for d in (*base_dilation, *window_dilation)):
    raise NotImplementedError('dilated max pooling does not convert to ONNX.')
  for axis, ((lo, hi), window) in enumerate(
    zip(padding, window_dimensions, strict=True)
  ):
    if max(lo, hi) >= window:
      raise NotImplementedError(
        f'max pooling padded by {(lo, hi)} >= its window {window} does not '
        'convert to ONNX.'
      )
    if lo or hi:
      size = x.shape[axis]
      first = jax.lax.slice_in_dim(x, 0, 1, axis=axis)
      last = jax.lax.slice_in_dim(x, size - 1, size, axis=axis)
      x = jax.lax.concatenate([first] * lo + [x] + [last] * hi, axis)
  pooled = None
  for offset in itertools.product(*(range(w) for w in window_dimensions)):
    part = x
    for axis, (start, window, stride) in enumerate(
      zip(offset, window_dimensions, window_strides, strict=True)
    ):
      if window == 1 and stride == 1:
        continue
      count = (x.shape[axis] - window) // stride + 1
      limit = start + (count - 1) * stride + 1
      part = jax.lax.slice_in_dim(part, start, limit, stride, axis)
    pooled = part if pooled is None else jnp.maximum(pooled, part)
  return pooled


def _with_max_pools_as_slices(closed) -> Callable:
  """A function evaluating `closed` (a ClosedJaxpr), max pools rewritten."""
  jaxpr = closed.jaxpr

  def fn(*args):
    env = dict(zip(jaxpr.constvars, closed.consts, strict=True))
    env.update(zip(jaxpr.invars, args, strict=True))

    def read(v):
      return v.val if isinstance(v, jax.extend.core.Literal) else env[v]

    for eqn in jaxpr.eqns:
      invals = [read(v) for v in eqn.invars]
      if eqn.primitive.name == 'reduce_window_max':
        outs = [_max_pool_by_slices(*invals, **eqn.params)]
      else:
        params = eqn.primitive.get_bind_params(eqn.params)
        outs = eqn.primitive.bind(*invals, **params)
        if not eqn.primitive.multiple_results:
          outs = [outs]
      env.update(zip(eqn.outvars, outs, strict=True))
    return [read(v) for v in jaxpr.outvars]

  return fn


def onnx_model(
  fn: Callable[[jax.Array], jax.Array],
  shape: Sequence[int],
  *,
  batch_polymorphic: bool = True,
  batch_size: int = 1,
  opset: int = ONNX_OPSET,
  name: str = 'ferjax',
):
  """Converts `fn` (uint8 images -> logits) to an ONNX model with jax2onnx.

  Args:
    fn: images -> logits, traceable by jax.
    shape: one example's shape.
    batch_polymorphic: try a symbolic batch axis ('b') first.
    batch_size: the fixed batch otherwise, or when 'b' does not convert.
    opset: the ONNX opset.
    name: the ONNX graph's name.

  Returns:
    (an onnx.ModelProto with input 'images' and output 'logits', the batch
    record as `export_logits` returns it).

  Raises:
    ImportError: naming jax2onnx when it is not installed.
  """
  jax2onnx = _require('jax2onnx', 'ONNX export')

  def convert(lead):
    spec = jax.ShapeDtypeStruct((lead, *shape), jnp.uint8)
    # Traced outside jax2onnx, whose flax hooks reject these models' pools.
    flat = _with_max_pools_as_slices(jax.make_jaxpr(fn)(spec))
    return jax2onnx.to_onnx(
      lambda images: flat(images)[0],
      [spec],
      model_name=name,
      opset=opset,
      input_names=['images'],
      output_names=['logits'],
    )

  note = 'fixed batch requested'
  if batch_polymorphic:
    (b,) = jax.export.symbolic_shape(exported_lib.BATCH_DIM)
    try:
      return convert(b), {'polymorphic': True}
    except Exception as e:  # Any conversion failure: try a fixed batch.
      first = str(e).strip().splitlines()[0] if str(e).strip() else ''
      note = f'a symbolic batch did not convert ({type(e).__name__}: {first})'
      logging.warning('ONNX export with batch %d: %s', batch_size, note)
  model = convert(batch_size)
  return model, {'polymorphic': False, 'size': batch_size, 'note': note}


def require_onnx(verify: bool) -> None:
  _require('jax2onnx', 'ONNX export')
  _require('onnx', 'ONNX export')
  if verify:
    _require('onnxruntime', 'Checking an ONNX export (verify=False skips it)')


def _onnx_max_abs_diff(model, fn, shape, batch: dict) -> float:
  """onnxruntime on `model` against `fn`, on random images."""
  ort = _require('onnxruntime', 'Checking an ONNX export')
  session = ort.InferenceSession(
    model.SerializeToString(), providers=['CPUExecutionProvider']
  )
  size = 3 if batch['polymorphic'] else batch['size']
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (size, *shape), dtype=np.uint8)
  (got,) = session.run(['logits'], {'images': images})
  return float(np.max(np.abs(got - np.asarray(jax.jit(fn)(images)))))


def onnx_record(model, batch: dict, shape, fn, verify: bool) -> dict:
  """metadata.json's 'onnx': the file, its interface and its check."""
  lead = exported_lib.BATCH_DIM if batch['polymorphic'] else batch['size']
  record = {
    'file': ONNX_FILE,
    'opset': ONNX_OPSET,
    'input': {'name': 'images', 'shape': [lead, *shape], 'dtype': 'uint8'},
    'output': {'name': 'logits', 'dtype': 'float32'},
    'batch': batch,
    'jax2onnx': importlib_metadata.version('jax2onnx'),
    'check': None,
  }
  if verify:
    diff = _onnx_max_abs_diff(model, fn, shape, batch)
    export_common.check_diff(
      diff, ONNX_TOLERANCE, 'the ONNX model (onnxruntime)'
    )
    record['check'] = {
      'runtime': 'onnxruntime ' + importlib_metadata.version('onnxruntime'),
      'max_abs_diff': diff,
    }
  return record


def export_onnx(
  workdir: str | os.PathLike,
  out_path: str | os.PathLike,
  *,
  batch_polymorphic: bool = True,
  batch_size: int = 1,
  verify: bool = True,
) -> str:
  """Writes a run's logits function as one ONNX file (needs jax2onnx).

  The function `export_run` exports: input 'images', uint8 (b, H, W, 3) or
  (b, T, H, W, 3) RGB, output 'logits', float32 (b, C), the weights inside
  the file; the caller preprocesses as `export_common.preprocess_spec` says. The module
  docstring lists the models checked.

  Args:
    workdir: a ferjax workdir.
    out_path: the .onnx file to write; it must not exist.
    batch_polymorphic: a symbolic batch axis where it converts.
    batch_size: the fixed batch otherwise.
    verify: run the file with onnxruntime against the model; a difference
      over `ONNX_TOLERANCE` raises and writes nothing.

  Returns:
    The absolute path of the file.

  Raises:
    ImportError: jax2onnx or onnx (or, to verify, onnxruntime) is missing.
    FileNotFoundError: `workdir` has no config.json or no checkpoint.
    FileExistsError: `out_path` exists.
    RuntimeError: the ONNX model's logits differ from the model's.
  """
  workdir = os.path.abspath(os.fspath(workdir))
  out_path = os.path.abspath(os.fspath(out_path))
  if os.path.lexists(out_path):
    raise FileExistsError(
      f'{out_path!r} already exists; choose a new output file or remove it.'
    )
  require_onnx(verify)
  config, variables = checkpointing.load_run(workdir)
  fn = export_common.logits_function(
    export_common.export_model(config), variables
  )
  shape = export_common.example_shape(config)
  model, batch = onnx_model(
    fn,
    shape,
    batch_polymorphic=batch_polymorphic,
    batch_size=batch_size,
    name=config.model.name,
  )
  if verify:
    diff = _onnx_max_abs_diff(model, fn, shape, batch)
    export_common.check_diff(
      diff, ONNX_TOLERANCE, 'the ONNX model (onnxruntime)'
    )
  return writers.write_atomic(
    out_path, lambda f: f.write(model.SerializeToString())
  )

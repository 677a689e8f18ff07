r"""Exports a trained run for inference without ferjax, flax or the config.

  python -m ferjax.export --workdir runs/mfer_rafdb --out exports/mfer_rafdb
  python -m ferjax.export --workdir RUN --out DIR --platforms cpu,cuda --batch 8
  python -m ferjax.export --workdir RUN --out DIR --onnx  # + model.onnx

The run's best checkpoint (else its latest) becomes one function, serialized
with `jax.export`: uint8 RGB images (b, H, W, 3), or clips (b, T, H, W, 3)
for clip models (`config.clip.segments` > 0), to float32 logits (b, C). The
/255 scaling is inside it, the weights are constants in it and BatchNorm
runs in inference mode. The batch axis is symbolic, so one export takes any
batch size; a model that does not lower that way is exported for a fixed
batch (`--batch`, default 1), and metadata.json says which and why.

The output directory holds

  model.jaxexport   the serialized function, lowered for every platform of
                    --platforms (default cpu, cuda and tpu) at once;
  metadata.json     class names, model name, input shape ('b' for any batch
                    size) and dtype, the preprocessing the caller does first
                    (the run's eval resize and size; for clip models which
                    frames), the ferjax and jax versions, the platforms, the
                    run's best metrics and the check below;
  model.onnx        with --onnx only: the same function in ONNX (below).

`ferjax.exported.load(DIR)` runs it with jax and numpy alone (its docstring
says how to use it from another project). Before writing, the export is
deserialized and run on this host against the model (metadata.json's
'check'; --noverify skips it). An export is written to a temporary
directory beside --out and renamed at the end, so a failure leaves nothing;
an --out that exists and is not empty is refused. jax.export serializes with
the flatbuffers package.

Every model of the registry lowers with a symbolic batch for cpu, cuda and
tpu: resnet18, manet, mfer, jadfer and gcsa (clips), with weights at the
smoke configs' sizes and, traced with abstract weights, at the papers'.

ONNX (`--onnx`) lives in `ferjax.export_onnx`.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from collections.abc import Sequence

import jax
import jax.extend
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import flags
from absl import logging

import ferjax
from ferjax import checkpointing
from ferjax import cli
from ferjax import export_common
from ferjax import exported as exported_lib
from ferjax import labels as labels_lib
from ferjax import writers
from ferjax.weights import saved

# jax.export's platform names ('cuda', not 'gpu').
PLATFORMS = ('cpu', 'cuda', 'rocm', 'tpu')
DEFAULT_PLATFORMS = ('cpu', 'cuda', 'tpu')
# The largest |logit| difference accepted between an export and the model.
TOLERANCE = 1e-4


def parse_platforms(platforms: str | Sequence[str]) -> tuple[str, ...]:
  """Validates platform names, e.g. 'cpu,cuda' -> ('cpu', 'cuda').

  Raises:
    ValueError: naming an unknown platform and the valid ones.
  """
  if isinstance(platforms, str):
    platforms = platforms.split(',')
  names = tuple(dict.fromkeys(p.strip().lower() for p in platforms if p))
  for name in names:
    if name not in PLATFORMS:
      hint = " ('gpu' is 'cuda' or 'rocm' here)" if name == 'gpu' else ''
      raise ValueError(
        f'--platforms: {name!r} is not a platform jax.export lowers for'
        f'{hint}; choose from {", ".join(PLATFORMS)}, e.g. --platforms '
        'cpu,cuda.'
      )
  if not names:
    raise ValueError('--platforms is empty; e.g. --platforms cpu,cuda,tpu.')
  return names


def _require_flatbuffers() -> None:
  if importlib.util.find_spec('flatbuffers') is None:
    raise ImportError(
      'Exporting needs the flatbuffers package, which jax.export serializes '
      'with: pip install flatbuffers'
    )


def export_logits(
  fn: Callable[[jax.Array], jax.Array],
  shape: Sequence[int],
  *,
  platforms: Sequence[str] = DEFAULT_PLATFORMS,
  batch_polymorphic: bool = True,
  batch_size: int = 1,
) -> tuple[jax.export.Exported, dict]:
  """Exports `fn` on uint8 batches of examples of `shape`.

  Args:
    fn: images -> logits, traceable by jax.
    shape: one example's shape.
    platforms: jax.export platform names.
    batch_polymorphic: try a symbolic batch axis first.
    batch_size: the fixed batch, when not polymorphic or when the symbolic
      batch does not lower.

  Returns:
    (the Exported, a 'batch' record for metadata.json: 'polymorphic' and,
    for a fixed batch, 'size' and why).
  """
  platforms = parse_platforms(platforms)
  if batch_size < 1:
    raise ValueError(f'--batch={batch_size}: expected a batch size >= 1.')
  export = jax.export.export(jax.jit(fn), platforms=platforms)
  note = 'fixed batch requested'
  if batch_polymorphic:
    (b,) = jax.export.symbolic_shape(exported_lib.BATCH_DIM)
    try:
      spec = jax.ShapeDtypeStruct((b, *shape), jnp.uint8)
      return export(spec), {'polymorphic': True}
    except Exception as e:  # Any lowering failure falls back to a fixed batch.
      first = str(e).strip().splitlines()[0] if str(e).strip() else ''
      note = f'a symbolic batch did not lower ({type(e).__name__}: {first})'
      logging.warning('Exporting with batch %d: %s', batch_size, note)
  spec = jax.ShapeDtypeStruct((batch_size, *shape), jnp.uint8)
  return export(spec), {
    'polymorphic': False,
    'size': batch_size,
    'note': note,
  }


def _has_checkpoint(workdir: str) -> bool:
  """Whether best/ or checkpoints/ holds a finished step (none is read)."""
  dirs = [os.path.join(workdir, sub) for sub in ('best', 'checkpoints')]
  return any(
    name.isdigit() for d in dirs if os.path.isdir(d) for name in os.listdir(d)
  )


def run_metrics(workdir: str, config: ml_collections.ConfigDict) -> dict:
  """The run's best (and final) eval metrics, from results.json if written.

  A run still training has no results.json; its best eval record in
  metrics.jsonl stands in.
  """
  path = os.path.join(workdir, writers.RESULTS_FILE)
  if os.path.exists(path):
    results = writers.read_json(path)
    return {k: results[k] for k in ('best', 'final') if k in results}
  metric = config.get('best_metric', 'war')
  evals = [r for r in writers.read_metrics(workdir) if f'eval/{metric}' in r]
  if not evals:
    return {}
  best = max(evals, key=lambda r: r[f'eval/{metric}'])
  return {
    'best': {
      'step': best['step'],
      'metric': metric,
      **{k: best[f'eval/{k}'] for k in ('war', 'uar') if f'eval/{k}' in best},
    }
  }


def build_metadata(
  config: ml_collections.ConfigDict,
  exp: jax.export.Exported,
  batch: dict,
  run: dict | None = None,
) -> dict:
  """metadata.json for an export of `config`'s model.

  Args:
    config: the run's config.
    exp: the exported function.
    batch: `export_logits`'s batch record.
    run: where the weights came from (workdir, checkpoint, metrics).
  """
  num_classes = config.data.num_classes
  lead = exported_lib.BATCH_DIM if batch['polymorphic'] else batch['size']
  shape = [lead, *export_common.example_shape(config)]
  clip = export_common.clip_spec(config)
  return {
    'format': exported_lib.FORMAT,
    'format_version': exported_lib.FORMAT_VERSION,
    'file': exported_lib.MODEL_FILE,
    'model': config.model.name,
    'class_names': list(labels_lib.class_names(num_classes)),
    'num_classes': num_classes,
    'input': {
      'shape': shape,
      'layout': 'NTHWC' if clip else 'NHWC',
      'dtype': 'uint8',
      'color': 'RGB',
      'range': [0, 255],
    },
    'output': {'shape': [lead, num_classes], 'dtype': 'float32'},
    'batch': batch,
    'preprocess': export_common.preprocess_spec(config),
    'clip': clip,
    'platforms': list(exp.platforms),
    'versions': {
      'ferjax': ferjax.__version__,
      'jax': jax.__version__,
      'jaxlib': jax.lib.__version__,
      'calling_convention': exp.calling_convention_version,
    },
    'run': run or {},
  }


def _max_abs_diff(exp, fn, shape: Sequence[int], batch: dict) -> float:
  """The exported function against `fn` on random images, on this host."""
  rng = np.random.default_rng(0)
  size = 2 if batch['polymorphic'] else batch['size']
  images = rng.integers(0, 256, (size, *shape), dtype=np.uint8)
  got = jax.jit(exp.call)(images)
  want = jax.jit(fn)(images)
  return float(jnp.max(jnp.abs(got - want)))


def _write(out_dir: str, files: dict[str, bytes], metadata: dict) -> str:
  """Writes the files to a temporary directory and renames it to out_dir."""
  saved.check_empty_target(out_dir)
  parent = os.path.dirname(out_dir)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(dir=parent, prefix=f'.{os.path.basename(out_dir)}.')
  try:
    for name, data in files.items():
      with open(os.path.join(tmp, name), 'wb') as f:
        f.write(data)
    _write_json(os.path.join(tmp, exported_lib.METADATA_FILE), metadata)
    saved.check_empty_target(out_dir)  # Another writer?
    os.rename(tmp, out_dir)  # Replaces an empty directory only.
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return out_dir


def _write_json(path: str, record: dict) -> None:
  with open(path, 'w') as f:
    json.dump(record, f, indent=2)
    f.write('\n')


def export_variables(
  config: ml_collections.ConfigDict,
  variables: dict,
  out_dir: str | os.PathLike,
  *,
  platforms: Sequence[str] = DEFAULT_PLATFORMS,
  batch_polymorphic: bool = True,
  batch_size: int = 1,
  verify: bool = True,
  onnx: bool = False,
  run: dict | None = None,
) -> str:
  """Exports `config`'s model with `variables` to `out_dir`.

  Args:
    config: a run config (model, data.num_classes, augment, clip).
    variables: {'params': ..., 'batch_stats': ...}.
    out_dir: the directory to create; it must not exist or be empty.
    platforms: jax.export platform names to lower for.
    batch_polymorphic: try a symbolic batch axis (else `batch_size`).
    batch_size: the fixed batch when not polymorphic.
    verify: run the deserialized export (and the ONNX model) on this host
      against the model, refuse a difference over `TOLERANCE` and record
      it in metadata.json (when this host's platform is among `platforms`).
    onnx: also write model.onnx (needs jax2onnx and onnx; onnxruntime to
      verify it).
    run: facts about the source run for metadata.json.

  Returns:
    The absolute path of the export.
  """
  out_dir = os.path.abspath(os.fspath(out_dir))
  platforms = parse_platforms(platforms)
  saved.check_empty_target(out_dir)  # Fail before lowering.
  _require_flatbuffers()
  if onnx:
    from ferjax import export_onnx as export_onnx_lib  # noqa: PLC0415

    export_onnx_lib.require_onnx(verify)
  fn = export_common.logits_function(
    export_common.export_model(config), variables
  )
  shape = export_common.example_shape(config)
  exp, batch = export_logits(
    fn,
    shape,
    platforms=platforms,
    batch_polymorphic=batch_polymorphic,
    batch_size=batch_size,
  )
  files = {exported_lib.MODEL_FILE: bytes(exp.serialize())}
  metadata = build_metadata(config, exp, batch, run)
  here = jax.export.default_export_platform()
  if verify and here in platforms:
    reloaded = jax.export.deserialize(bytearray(files[exported_lib.MODEL_FILE]))
    diff = _max_abs_diff(reloaded, fn, shape, batch)
    export_common.check_diff(diff, TOLERANCE, 'the exported function')
    metadata['check'] = {'platform': here, 'max_abs_diff': diff}
  if onnx:
    model, onnx_batch = export_onnx_lib.onnx_model(
      fn,
      shape,
      batch_polymorphic=batch_polymorphic,
      batch_size=batch_size,
      name=config.model.name,
    )
    files[export_onnx_lib.ONNX_FILE] = model.SerializeToString()
    metadata['onnx'] = export_onnx_lib.onnx_record(
      model, onnx_batch, shape, fn, verify
    )
  return _write(out_dir, files, metadata)


def export_run(
  workdir: str | os.PathLike,
  out_dir: str | os.PathLike,
  *,
  platforms: Sequence[str] = DEFAULT_PLATFORMS,
  batch_polymorphic: bool = True,
  batch_size: int = 1,
  verify: bool = True,
  onnx: bool = False,
) -> str:
  """Exports a run's best (else latest) checkpoint to `out_dir`.

  Args:
    workdir: a ferjax workdir (config.json and a checkpoint).
    out_dir: the directory to create; it must not exist or be empty.
    platforms: jax.export platform names: cpu, cuda, rocm, tpu.
    batch_polymorphic: export for any batch size where the model lowers
      that way; else (or when it does not) for `batch_size`.
    batch_size: the fixed batch size.
    verify: check the export against the model on this host.
    onnx: also write model.onnx (`export_variables`).

  Returns:
    The absolute path of the export.

  Raises:
    FileNotFoundError: `workdir` has no config.json or no checkpoint.
    FileExistsError: `out_dir` exists and is not empty.
    ValueError: an unknown platform or a bad batch size.
    ImportError: flatbuffers (or, for `onnx`, jax2onnx) is missing.
    RuntimeError: the export's logits differ from the model's.
  """
  workdir = os.path.abspath(os.fspath(workdir))
  out_dir = os.path.abspath(os.fspath(out_dir))
  platforms = parse_platforms(platforms)
  if batch_size < 1:
    raise ValueError(f'--batch={batch_size}: expected a batch size >= 1.')
  if not os.path.isdir(workdir):
    raise FileNotFoundError(
      f'--workdir={workdir} does not exist; pass the --workdir of a run.py '
      'training run.'
    )
  saved.check_empty_target(out_dir)
  has_config = os.path.exists(os.path.join(workdir, 'config.json'))
  if has_config and not _has_checkpoint(workdir):
    raise FileNotFoundError(
      f'--workdir={workdir} has no checkpoint yet (best/ or checkpoints/); '
      'export it once training has saved one.'
    )
  config, variables, used = checkpointing.read_run(workdir)
  run = {
    'workdir': workdir,
    'checkpoint': used,
    'metrics': run_metrics(workdir, config),
  }
  return export_variables(
    config,
    variables,
    out_dir,
    platforms=platforms,
    batch_polymorphic=batch_polymorphic,
    batch_size=batch_size,
    verify=verify,
    onnx=onnx,
    run=run,
  )


def _define(fv: flags.FlagValues) -> None:
  flags.DEFINE_string('workdir', None, 'the run directory', flag_values=fv)
  flags.DEFINE_string('out', None, 'the directory to write', flag_values=fv)
  flags.DEFINE_string(
    'platforms',
    ','.join(DEFAULT_PLATFORMS),
    'comma-separated jax.export platforms',
    flag_values=fv,
  )
  flags.DEFINE_integer(
    'batch',
    None,
    'export for a fixed batch of N (default: any batch size)',
    flag_values=fv,
  )
  flags.DEFINE_bool(
    'verify',
    True,
    'run the export against the model on this host (--noverify skips it)',
    flag_values=fv,
  )
  flags.DEFINE_bool(
    'onnx',
    False,
    'also write model.onnx (needs the jax2onnx and onnx packages)',
    flag_values=fv,
  )
  flags.mark_flags_as_required(['workdir', 'out'], flag_values=fv)


def _main(fv: flags.FlagValues) -> None:
  # A bad --workdir, --out, --platforms or --batch is a usage error; a
  # failed verification (RuntimeError) is a failure.
  usage = (ValueError, FileNotFoundError, FileExistsError)
  with cli.failures(RuntimeError), cli.usage_errors(*usage):
    out = export_run(
      fv.workdir,
      fv.out,
      platforms=fv.platforms,
      batch_polymorphic=fv.batch is None,
      batch_size=fv.batch or 1,
      verify=fv.verify,
      onnx=fv.onnx,
    )
  with open(os.path.join(out, exported_lib.METADATA_FILE)) as f:
    metadata = json.load(f)
  print(
    f'{metadata["model"]} from {fv.workdir} -> {out}: input '
    f'{metadata["input"]["shape"]} uint8, platforms '
    f'{",".join(metadata["platforms"])}'
  )


def main(argv: Sequence[str] | None = None) -> int:
  """Command-line entry point; returns the exit status."""
  return cli.run(_main, _define, argv)


if __name__ == '__main__':
  sys.exit(main())

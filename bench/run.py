r"""Speed of one model: compile, train and eval steps, MFU, memory, input.

  python -m bench.run --model manet --batch 64 --size 224 --dtype bf16
  python -m bench.run --model mfer --batch 8 --steps 3 --json mfer.json
  python -m bench.run --model resnet18 --smoke --steps 2 --notorch

For the model's paper config (configs/{manet,mfer,jadfer}_rafdb.py,
configs/gcsa_dfew.py; `resnet18`: the base config's torchvision-width
ResNet-18; `--smoke`: the config's `:smoke` variant) this measures:

  * compile: seconds to trace, lower and compile ferjax's train step
    (`train.build_trainable`) and eval step (`evaluate.eval_step`).
  * train / eval examples/s (images, or clips for GCSA): the median over
    `--windows` windows of `--steps` steps each, after `--warmup` steps;
    a window dispatches its steps back to back (train state donated) and
    waits for the devices once, at its end.
  * FLOPs per step from XLA's cost analysis of the compiled train step,
    and MFU = FLOPs x steps/s / the device's peak FLOP/s (`bench.mfu`; null
    on CPUs unless `--peak_tflops` is given).
  * memory: the device's peak bytes in use where jax reports them, XLA's
    static memory analysis of the train step, the host's peak RSS.
  * PyTorch (when installed and the model has a PyTorch version,
    `bench.torch_step`): the same train step and an eval forward pass, on
    CUDA if torch sees a GPU, else on the CPU; and the ferjax/PyTorch
    ratio of examples/s.
  * the input pipeline (`bench.input_pipeline`): examples/s and examples
    per CPU-second of ferjax's grain pipeline with the config's
    augmentation, decoding JPEGs or reading the decoded cache, each also
    with the augmentation left to the device (`augment.on_device`, whose
    device time per batch is reported too), with `--workers` grain worker
    processes; and how many such cores the train step would need.

Prints a table; `--json OUT` writes every number with the devices, the
versions, dtype, batch and size.
"""

import gc
import importlib.metadata
import json
import os
import platform
import sys
import types
from collections.abc import Sequence

import jax
from absl import flags

from bench import common
from bench import input_pipeline
from bench import mfu as mfu_lib
from bench import torch_step
from ferjax import cli
from ferjax import sharding
from ferjax import train
from ferjax.data import pipeline

_PACKAGES = (
  'jax',
  'jaxlib',
  'flax',
  'optax',
  'grain',
  'numpy',
  'tensorflow-datasets',
  'opencv-python-headless',
  'torch',
)


# Environment variables that change speed: XLA and JAX flags, thread
# counts, glibc malloc tuning.
_ENV_PREFIXES = (
  'XLA_',
  'JAX_',
  'OMP_',
  'MKL_',
  'MALLOC_',
  'GLIBC_',
  'CUDA_',
  'TF_',
)


def versions() -> dict[str, str | None]:
  """Python's and the installed packages' versions (None: not installed)."""
  out = {'python': platform.python_version()}
  for name in _PACKAGES:
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      out[name] = None
  return out


def _cpu_model() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor()


def devices() -> dict:
  """The devices the run uses and the host's CPUs."""
  device = jax.devices()[0]
  return {
    'platform': device.platform,
    'kind': device.device_kind,
    'count': jax.device_count(),
    'process_count': jax.process_count(),
    'host_cpus': len(os.sched_getaffinity(0)),
    # Other work on the host slows CPU timings: the 1-minute load at start.
    'host_load_1m': os.getloadavg()[0],
    'host_cpu_model': _cpu_model(),
  }


class JaxSteps:
  """ferjax's compiled train and eval steps on fixed random batches.

  The train step compiles on construction; the eval step on
  `compile_eval`, after the last train step (it reads the state as it is
  then, which a later train step would donate).
  """

  def __init__(self, config, eval_batch: int):
    self.config, self.eval_batch = config, eval_batch
    self.mesh = sharding.make_mesh(config.mesh)
    self.trainable = train.build_trainable(
      config, self.mesh, 1, 1, jax.random.key(0)
    )
    batch = common.random_batch(config, self.mesh)
    rng = jax.random.key(1)
    state = self.trainable.state
    self.train_compiled = common.compile_step(
      self.trainable.step_fn, state, batch, rng
    )
    # The first step donates `state`; `train.state` is the latest.
    self.train = common.TrainLoop(self.train_compiled.fn, state, batch, rng)
    self.eval_compiled = self.eval = None

  def compile_eval(self) -> None:
    batch = common.random_batch(
      self.config, self.mesh, self.eval_batch, mask=True
    )
    jitted = common.jit_eval_step(self.config, self.trainable, self.mesh)
    self.eval_compiled = common.compile_step(jitted, self.train.state, batch)
    self.eval = common.eval_loop(self.eval_compiled.fn, self.train.state, batch)

  def results(self, seconds: dict[str, dict]) -> dict:
    """The report's 'jax' part, from the timed seconds per step."""
    out = {'params': self.trainable.num_params}
    devices_ = jax.device_count()
    for name, c, b in (
      ('train', self.train_compiled, self.config.batch_size),
      ('eval', self.eval_compiled, self.eval_batch),
    ):
      flops = c.flops
      out[name] = {
        'batch': b,
        'compile_s': c.seconds,
        **common.summarise(seconds[name], b),
        'flops_per_step_per_device': flops,
        'flops_per_step': flops * devices_ if flops else None,
        'flops_per_example': flops * devices_ / b if flops else None,
        'executed_flops_per_step_per_device': c.executed_flops,
        'flops_basis': c.flops_basis,
        'compiled_memory': c.memory,
      }
    out['device_peak_bytes'] = common.device_peak_bytes()
    out['host_peak_rss_bytes'] = common.host_peak_rss_bytes()
    return out


def mfu_report(results: dict, dev: dict, dtype: str, override: float | None):
  """MFU of the train step, with the peak it is held to."""
  if override:
    peak, basis = override, '--peak_tflops'
  else:
    peak, basis = mfu_lib.peak_tflops(dev['kind'], dev['platform'], dtype)
  train_r = results['train']
  value = mfu_lib.mfu(
    train_r['flops_per_step_per_device'], train_r['step_s_median'], peak
  )
  report = {'value': value, 'peak_tflops': peak, 'peak_basis': basis}
  if value is None:
    report['reason'] = basis if peak is None else 'no FLOP count from XLA'
  else:
    report['achieved_tflops_per_device'] = value * peak
  return report


def torch_steps(config, args):
  """(the config's `torch_step.TorchSteps`, its model) or (None, why not)."""
  if not args.torch:
    return None, '--notorch'
  net, what = torch_step.model_for(config)
  if net is None:
    return None, what
  return torch_step.TorchSteps(net, config, args.eval_batch), what


def torch_results(steps, what, seconds: dict, jax_results: dict) -> dict:
  """The report's 'torch' part, with the ferjax/PyTorch ratios."""
  if steps is None:
    return {'available': False, 'reason': what}
  out = {'available': True, 'model': what, 'version': steps.torch.__version__}
  for name in ('train', 'eval'):
    out[name] = common.summarise(seconds[name], jax_results[name]['batch'])
    out[f'ratio_{name}'] = (
      jax_results[name]['examples_per_s'] / out[name]['examples_per_s']
    )
    # The same ratio per CPU-second: on a shared host it is less affected
    # by other processes than the wall-clock one (GPU runs: host work only).
    jax_cpu = jax_results[name]['examples_per_cpu_s']
    torch_cpu = out[name]['examples_per_cpu_s']
    out[f'ratio_{name}_per_cpu_s'] = (
      jax_cpu / torch_cpu if jax_cpu and torch_cpu else None
    )
  out.update(steps.describe())
  return out


def _time(steps, args) -> dict[str, dict]:
  """Seconds per step of `steps.train` then `steps.eval`, after warm-up."""
  seconds = {}
  for phase in ('train', 'eval'):
    if phase == 'eval' and hasattr(steps, 'compile_eval'):
      steps.compile_eval()
    step = getattr(steps, phase)
    step(args.warmup)
    seconds[phase] = common.time_windows(step, args.steps, args.windows)
  return seconds


def time_steps(config, args):
  """Compiles and times ferjax's steps, then PyTorch's where there are.

  One framework runs at a time, each after its own warm-up: switching
  between them in one process slows the first steps after each switch.
  Returns the report's 'jax' and 'torch' parts.
  """
  jax_steps = JaxSteps(config, args.eval_batch)
  jax_results = jax_steps.results(_time(jax_steps, args))
  del jax_steps  # Frees the state and batches before PyTorch allocates.
  gc.collect()
  pt, what = torch_steps(config, args)
  pt_seconds = None if pt is None else _time(pt, args)
  return jax_results, torch_results(pt, what, pt_seconds, jax_results)


PIPELINE_ROWS = ('jpeg', 'cache', 'jpeg_on_device', 'cache_on_device')


def bench_pipeline(config, args, train_rate: float) -> dict:
  """The input pipeline on JPEGs and on a decoded cache, vs the step."""
  if not args.pipeline:
    return {'skipped': '--nopipeline'}
  clip = pipeline.clip_config(config)
  default_size = 48 if args.smoke else (224 if clip else 100)
  default_examples = (
    (8 if clip else 64) if args.smoke else (24 if clip else 256)
  )
  results = input_pipeline.run(
    config,
    image_size=args.source_size or default_size,
    num_examples=args.source_examples or default_examples,
    workers=args.workers,
    seconds=args.pipeline_seconds or (0.5 if args.smoke else 3.0),
  )
  for name in PIPELINE_ROWS:
    if not isinstance(results.get(name), list):
      continue
    for m in results[name]:
      per_core = m['examples_per_cpu_s']
      m['cores_to_feed_train_step'] = (
        train_rate / per_core if per_core else None
      )
      m['pipeline_over_train_step'] = m['examples_per_s'] / train_rate
  return results


def _fmt(value, spec: str = '.1f', none: str = '-') -> str:
  return none if value is None else format(value, spec)


def _gib(n: int | None) -> float | None:
  return None if n is None else n / 2**30


def table(report: dict) -> str:
  """The human-readable summary of a report."""
  unit = 'clip' if report['frames_per_example'] > 1 else 'img'
  dev, j, t = report['device'], report['jax'], report['torch']
  lines = [
    f'{report["model"]} ({report["config"]}), {report["dtype"]}, batch '
    f'{report["batch"]} (eval {report["eval_batch"]}), {report["size"]} px'
    + (
      f', {report["frames_per_example"]} frames'
      if report['frames_per_example'] > 1
      else ''
    )
    + f', {j["params"] / 1e6:.2f} M params',
    f'{dev["count"]} x {dev["kind"]} ({dev["platform"]}); host '
    f'{dev["host_cpus"]} CPUs (load {dev["host_load_1m"]:.1f}); jax '
    f'{report["versions"]["jax"]}; median of '
    f'{report["timing"]["windows"]} windows x {report["timing"]["steps"]} '
    'steps',
    '',
    f'{"":16}{"compile s":>10}{"step ms":>10}{unit + "/s":>10}'
    f'{"cpu ms":>10}{"GFLOP/step":>12}',
  ]
  for name in ('train', 'eval'):
    r = j[name]
    flops = r['flops_per_step']
    lines.append(
      f'{"ferjax " + name:16}{r["compile_s"]:10.1f}'
      f'{r["step_s_median"] * 1e3:10.1f}{r["examples_per_s"]:10.1f}'
      f'{r["cpu_s_per_step_median"] * 1e3:10.1f}'
      f'{_fmt(flops and flops / 1e9, ".4g"):>12}'
    )
  if t.get('available'):
    for name in ('train', 'eval'):
      r = t[name]
      lines.append(
        f'{"pytorch " + name:16}{"":>10}{r["step_s_median"] * 1e3:10.1f}'
        f'{r["examples_per_s"]:10.1f}{r["cpu_s_per_step_median"] * 1e3:10.1f}'
      )
    lines.append(
      f'ferjax / pytorch {unit}/s: train {t["ratio_train"]:.2f}, eval '
      f'{t["ratio_eval"]:.2f}; per CPU-second: train '
      f'{_fmt(t["ratio_train_per_cpu_s"], ".2f")}, eval '
      f'{_fmt(t["ratio_eval_per_cpu_s"], ".2f")}  (pytorch {t["version"]} on '
      f'{t["torch_device"]}, {t["threads"]} threads, {t["model"]})'
    )
  else:
    lines.append(f'pytorch: not run ({t["reason"]})')
  m = report['mfu']
  if m['value'] is None:
    lines.append(f'MFU: n/a ({m["reason"]})')
  else:
    lines.append(
      f'MFU: {m["value"] * 100:.1f} % of {m["peak_tflops"]:g} TFLOP/s '
      f'({m["peak_basis"]})'
    )
    if report['jax']['train'].get('flops_basis') == 'compiled':
      lines.append(
        '  (FLOPs as the backend counts the compiled step: it gave no count '
        'of the lowered one, and may leave out library calls such as cuDNN '
        'convolutions, so this MFU can read low)'
      )
  mem = report['memory']
  device_gib = _gib(mem['device_peak_bytes'])
  lines.append(
    f'memory: device peak {_fmt(device_gib, ".2f", "n/a")} GiB; host peak '
    f'RSS {_gib(mem["host_peak_rss_bytes_ferjax"]):.2f} GiB after ferjax, '
    f'{_gib(mem["host_peak_rss_bytes"]):.2f} GiB in all'
  )
  p = report['pipeline']
  if 'skipped' in p:
    lines.append(f'input pipeline: not run ({p["skipped"]})')
    return '\n'.join(lines)
  s = p['source']
  lines += [
    '',
    f'input pipeline, config augmentation, {s["num_examples"]} '
    f'{s["image_size"]} px JPEG {unit}s'
    + (f' of {s["frames_stored"]} frames' if s['frames_stored'] else '')
    + f' (train step: {j["train"]["examples_per_s"]:.1f} {unit}/s)',
    f'{"source":15}{"workers":>8}{unit + "/s":>10}{"cores":>7}'
    f'{unit + "/core-s":>13}{"cores to feed":>15}',
  ]
  for name in PIPELINE_ROWS:
    if not isinstance(p.get(name), list):
      lines.append(f'{name}: not run ({p[name]["skipped"]})')
      continue
    for r in p[name]:
      lines.append(
        f'{name:15}{r["workers"]:8d}{r["examples_per_s"]:10.1f}'
        f'{r["cores_busy"]:7.2f}{_fmt(r["examples_per_cpu_s"]):>13}'
        f'{_fmt(r["cores_to_feed_train_step"], ".2f"):>15}'
      )
  if 'device_augment' in p:
    d = p['device_augment']
    lines.append(
      f'on-device augmentation: {d["seconds_per_batch"] * 1e3:.1f} ms per '
      f'batch of {d["batch"]} ({d["examples_per_s"]:.0f} {unit}/s)'
    )
  return '\n'.join(lines)


def _define(fv: flags.FlagValues) -> None:
  def integer(name, default, help_, **kwargs):
    flags.DEFINE_integer(name, default, help_, flag_values=fv, **kwargs)

  flags.DEFINE_enum('model', None, common.MODELS, 'the model', flag_values=fv)
  flags.DEFINE_bool(
    'smoke', False, "the config's :smoke variant", flag_values=fv
  )
  integer('batch', None, 'global train batch')
  integer('eval_batch', None, 'global eval batch (default: --batch)')
  integer('size', None, 'image side in pixels')
  flags.DEFINE_enum(
    'dtype',
    None,
    sorted(common.DTYPES),
    "compute dtype (default: the config's)",
    flag_values=fv,
  )
  integer('steps', 10, 'steps per timed window', lower_bound=1)
  integer('windows', 3, 'timed windows', lower_bound=1)
  integer('warmup', 2, 'untimed steps after compiling', lower_bound=0)
  flags.DEFINE_float(
    'peak_tflops', None, 'peak TFLOP/s per device for MFU', flag_values=fv
  )
  flags.DEFINE_bool(
    'torch', True, 'time PyTorch too (--notorch skips it)', flag_values=fv
  )
  flags.DEFINE_bool(
    'pipeline',
    True,
    'time the input pipeline (--nopipeline skips it)',
    flag_values=fv,
  )
  integer('workers', 0, 'grain worker processes to time', lower_bound=0)
  integer('source_size', None, 'stored JPEG side (100; clips 224)')
  integer('source_examples', None, 'examples in the JPEG dataset')
  flags.DEFINE_float(
    'pipeline_seconds', None, 'seconds per pipeline timing', flag_values=fv
  )
  flags.DEFINE_multi_string(
    'set',
    [],
    'override a config field, FIELD=VALUE, e.g. model.remat=true',
    flag_values=fv,
  )
  flags.DEFINE_string(
    'json', None, 'write the full report here', flag_values=fv
  )
  flags.mark_flag_as_required('model', flag_values=fv)


def run(args: types.SimpleNamespace) -> dict:
  """Every measurement of `args` (the flags), as the JSON report."""
  with cli.usage_errors(ValueError):  # A bad --set, --batch, --eval_batch.
    config = common.make_config(
      args.model,
      smoke=args.smoke,
      batch=args.batch,
      size=args.size,
      dtype=args.dtype,
      overrides=tuple(args.set),
    )
    args.eval_batch = args.eval_batch or config.batch_size
    common.check_batch(config.batch_size)
    common.check_batch(args.eval_batch, '--eval_batch')
  dev = devices()
  jax_results, torch_report = time_steps(config, args)
  report = {
    'model': args.model,
    'config': common.config_source(args.model, args.smoke),
    'smoke': args.smoke,
    'overrides': list(args.set),
    'dtype': config.model.dtype,
    'batch': config.batch_size,
    'eval_batch': args.eval_batch,
    'size': config.augment.size,
    'frames_per_example': common.frames_per_example(config),
    'device': dev,
    'versions': versions(),
    'compilation_cache_dir': jax.config.jax_compilation_cache_dir,
    'env': {
      k: v for k, v in sorted(os.environ.items()) if k.startswith(_ENV_PREFIXES)
    },
    'timing': {
      'warmup': args.warmup,
      'steps': args.steps,
      'windows': args.windows,
    },
    'jax': jax_results,
    'mfu': mfu_report(jax_results, dev, config.model.dtype, args.peak_tflops),
  }
  report['torch'] = torch_report
  report['memory'] = {
    'device_peak_bytes': jax_results['device_peak_bytes'],
    'train_step_compiled': jax_results['train']['compiled_memory'],
    # The process's peak RSS after the ferjax steps (before PyTorch and
    # the input pipeline ran) and at the end of the run.
    'host_peak_rss_bytes_ferjax': jax_results['host_peak_rss_bytes'],
    'host_peak_rss_bytes': common.host_peak_rss_bytes(),
  }
  train_rate = jax_results['train']['examples_per_s']
  report['pipeline'] = bench_pipeline(config, args, train_rate)
  return report


def _main(fv: flags.FlagValues) -> None:
  args = types.SimpleNamespace(**fv.flag_values_dict())
  report = run(args)
  print(table(report))
  if args.json:  # Written whole or not at all.
    with open(args.json + '.tmp', 'w') as f:
      json.dump(report, f, indent=2)
    os.replace(args.json + '.tmp', args.json)
    print(f'wrote {args.json}')


def main(argv: Sequence[str] | None = None) -> int:
  return cli.run(_main, _define, argv)


if __name__ == '__main__':
  sys.exit(main())

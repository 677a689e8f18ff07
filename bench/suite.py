"""Runs a plan of `bench.run` measurements within a time budget.

    python -m bench.suite --plan gpu --out bench_out --budget_s 540 --max_entry_s 180
    python -m bench.suite --plan cpu --out bench_out

Each entry of the plan is one `python -m bench.run ... --json` in its own
process, in the plan's order of importance, with a timeout of what is left
of the budget (an entry that cannot start with at least `--min_entry_s` left
is skipped). `OUT/<entry>.json` keeps each report; `OUT/suite.json` the
status of every entry (ok, timeout, error with the end of its stderr), and
`OUT/suite.md` one table row per report, in the layout of
docs/performance.md. A machine lent for a few minutes thus yields a
complete table of whatever fitted, never a half-written report.

Plans:
  gpu    MFER (the MFU target) in bf16 with PyTorch, then MFER's depthwise
         convolutions forced to the element-wise form, JADFER, GCSA,
         ResNet-18 with the input pipeline at 8 workers, MA-Net, and MFER
         with remat.
  cpu    the CPU table of docs/performance.md.
  smoke  two tiny entries, for tests.
"""

import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence

from absl import flags

from ferjax import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(frozen=True)
class Entry:
  name: str
  args: tuple[str, ...]


def _entry(name: str, *args: str) -> Entry:
  return Entry(name, args)


_GPU_TIMING = ('--steps', '10', '--windows', '3', '--warmup', '3')
_CPU_TIMING = ('--steps', '2', '--windows', '3', '--warmup', '2')
# fmt: off
PLANS = {
  'gpu': (
    _entry('mfer_bf16', '--model', 'mfer', '--batch', '32', '--size', '224',
           '--dtype', 'bf16', '--nopipeline', *_GPU_TIMING),
    _entry('mfer_bf16_dw_custom', '--model', 'mfer', '--batch', '32',
           '--size', '224', '--dtype', 'bf16', '--nopipeline', '--notorch',
           '--set', 'model.depthwise_grad=custom', *_GPU_TIMING),
    _entry('jadfer_bf16', '--model', 'jadfer', '--batch', '64', '--size',
           '112', '--dtype', 'bf16', '--nopipeline', *_GPU_TIMING),
    _entry('gcsa_bf16', '--model', 'gcsa', '--batch', '16', '--size', '112',
           '--dtype', 'bf16', '--nopipeline', *_GPU_TIMING),
    _entry('resnet18_bf16', '--model', 'resnet18', '--batch', '256',
           '--size', '112', '--dtype', 'bf16', '--workers', '8',
           '--pipeline_seconds', '3', *_GPU_TIMING),
    _entry('manet_bf16', '--model', 'manet', '--batch', '64', '--size',
           '224', '--dtype', 'bf16', '--nopipeline', *_GPU_TIMING),
    _entry('mfer_bf16_remat', '--model', 'mfer', '--batch', '32', '--size',
           '224', '--dtype', 'bf16', '--nopipeline', '--notorch', '--set',
           'model.remat=true', *_GPU_TIMING),
  ),
  'cpu': (
    _entry('resnet18', '--model', 'resnet18', '--batch', '32', '--size',
           '112', '--workers', '2', '--pipeline_seconds', '2', '--steps', '3',
           '--windows', '3', '--warmup', '2'),
    _entry('manet', '--model', 'manet', '--batch', '8', '--size', '224',
           '--pipeline_seconds', '1.5', *_CPU_TIMING),
    _entry('mfer', '--model', 'mfer', '--batch', '8', '--size', '224',
           '--pipeline_seconds', '1.5', *_CPU_TIMING),
    _entry('jadfer', '--model', 'jadfer', '--batch', '8', '--size', '112',
           '--pipeline_seconds', '1.5', '--steps', '2', '--windows', '2',
           '--warmup', '2'),
    _entry('gcsa', '--model', 'gcsa', '--batch', '2', '--size', '112',
           '--pipeline_seconds', '1.5', '--steps', '2', '--windows', '2',
           '--warmup', '2'),
  ),
  'smoke': (
    _entry('resnet18_smoke', '--model', 'resnet18', '--smoke', '--steps',
           '1', '--windows', '1', '--warmup', '1', '--nopipeline',
           '--notorch'),
    _entry('gcsa_smoke', '--model', 'gcsa', '--smoke', '--steps', '1',
           '--windows', '1', '--warmup', '1', '--nopipeline', '--notorch'),
  ),
}
# fmt: on


def run_entry(entry: Entry, out: str, timeout: float) -> dict:
  """Runs one entry; returns its status record."""
  path = os.path.join(out, f'{entry.name}.json')
  cmd = [sys.executable, '-m', 'bench.run', *entry.args, '--json', path]
  start = time.perf_counter()
  try:
    proc = subprocess.run(
      cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout
    )
  except subprocess.TimeoutExpired:
    status, tail = 'timeout', f'stopped after {timeout:.0f} s'
  else:
    ok = proc.returncode == 0 and os.path.isfile(path)
    status = 'ok' if ok else 'error'
    tail = proc.stdout[-1500:] if ok else proc.stderr[-1500:]
  return {
    'name': entry.name,
    'command': ' '.join(['python -m bench.run', *entry.args]),
    'status': status,
    'seconds': time.perf_counter() - start,
    'output_tail': tail,
  }


def _num(value, spec: str = '.1f') -> str:
  return '–' if value is None else format(value, spec)


def table_row(name: str, r: dict) -> str:
  """One markdown row of a `bench.run` report."""
  tr, ev, t = r['jax']['train'], r['jax']['eval'], r['torch']
  torch_cols = ('–', '–')
  if t.get('available'):
    torch_cols = (
      f'{t["train"]["examples_per_s"]:.1f} / {t["eval"]["examples_per_s"]:.1f}',
      f'{t["ratio_train"]:.2f}, {t["ratio_eval"]:.2f}',
    )
  peak = r['memory']['device_peak_bytes']
  mfu = r['mfu']['value']
  cells = (
    name,
    r['device']['kind'],
    r['dtype'],
    str(r['batch']),
    str(r['size']),
    ', '.join(r.get('overrides', [])) or '–',
    f'{tr["compile_s"]:.1f} / {ev["compile_s"]:.1f}',
    f'{tr["examples_per_s"]:.1f}',
    f'{ev["examples_per_s"]:.1f}',
    *torch_cols,
    _num(mfu and mfu * 100),
    _num(peak and peak / 2**30, '.2f'),
  )
  return '| ' + ' | '.join(cells) + ' |'


HEADER = (
  '| entry | device | dtype | batch | size | overrides | compile train / '
  'eval (s) | train ex/s | eval ex/s | PyTorch train / eval ex/s | ratio '
  'train, eval | MFU % | device peak GiB |\n' + '|---' * 13 + '|'
)


def markdown(statuses: list[dict], out: str) -> str:
  rows, notes = [], []
  for s in statuses:
    if s['status'] == 'ok':
      with open(os.path.join(out, f'{s["name"]}.json')) as f:
        rows.append(table_row(s['name'], json.load(f)))
    else:
      notes.append(f'- {s["name"]}: {s["status"]} ({s["command"]})')
  return '\n'.join([HEADER, *rows, '', *notes]) + '\n'


def run(
  plan: str,
  out: str,
  budget_s: float,
  min_entry_s: float,
  max_entry_s: float = 0.0,
) -> list:
  os.makedirs(out, exist_ok=True)
  deadline = time.perf_counter() + budget_s
  statuses = []
  for entry in PLANS[plan]:
    left = deadline - time.perf_counter()
    if left < min_entry_s:
      statuses.append(
        {
          'name': entry.name,
          'command': ' '.join(['python -m bench.run', *entry.args]),
          'status': 'skipped',
          'seconds': 0.0,
          'output_tail': f'{left:.0f} s of the budget left',
        }
      )
      continue
    timeout = min(left, max_entry_s) if max_entry_s else left
    statuses.append(run_entry(entry, out, timeout))
    status = statuses[-1]
    print(
      f'{entry.name}: {status["status"]} in {status["seconds"]:.0f} s',
      flush=True,
    )
    if status['status'] != 'ok':
      print(status['output_tail'], flush=True)
  with open(os.path.join(out, 'suite.json'), 'w') as f:
    json.dump(statuses, f, indent=2)
  text = markdown(statuses, out)
  with open(os.path.join(out, 'suite.md'), 'w') as f:
    f.write(text)
  print(text)
  return statuses


def _define(fv: flags.FlagValues) -> None:
  flags.DEFINE_enum('plan', 'gpu', sorted(PLANS), 'the plan', flag_values=fv)
  flags.DEFINE_string('out', None, 'folder for the reports', flag_values=fv)
  flags.DEFINE_float('budget_s', 540.0, 'seconds for the plan', flag_values=fv)
  flags.DEFINE_float(
    'min_entry_s',
    60.0,
    'skip entries that would start with less than this left',
    flag_values=fv,
  )
  flags.DEFINE_float(
    'max_entry_s',
    0.0,
    'stop an entry after this many seconds (0: what is left of the budget), '
    'so that one slow compile cannot take the whole plan',
    flag_values=fv,
  )
  flags.mark_flag_as_required('out', flag_values=fv)


def _main(fv: flags.FlagValues) -> int:
  statuses = run(fv.plan, fv.out, fv.budget_s, fv.min_entry_s, fv.max_entry_s)
  return 0 if any(s['status'] == 'ok' for s in statuses) else 1


def main(argv: Sequence[str] | None = None) -> int:
  return cli.run(_main, _define, argv)


if __name__ == '__main__':
  sys.exit(main())

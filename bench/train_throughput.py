r"""Training-step img/s of a model in ferjax and, if torch is there, PyTorch.

  python bench/train_throughput.py --model manet --batch 64 --size 224
  python bench/train_throughput.py --model resnet18 --size 64 --batch 8 \
    --steps 3

The ferjax side is the real jitted train step (`ferjax.train.train_step`
with its model, loss and SGD as the model's config sets them) on a random
uint8 batch. The PyTorch side, when torch is importable and a torch version
of the model exists, runs the same forward + backward + SGD step (momentum
0.9, weight decay 1e-4) on the same batch shape; its class gets those of the
config's model fields (num_classes, direction, ...) that it takes. Both report the median of
`--steps` timed steps after compilation and one untimed warm step.

The torch models are the hand-written ones the parity tests use, looked up
as TORCH_MODELS[model] = (module, class name); if that class is missing, the
module's first nn.Module subclass whose name contains the model's name (case
and '_' ignored) is used. 'manet' expects `tests/test_manet_torch.py`; if
there is no such model, the bench says 'torch model not available'.
"""

import argparse
import importlib
import importlib.util
import inspect
import statistics
import sys
import time

import jax

sys.path.insert(0, '.')

from bench import common as bench_common  # noqa: E402
from configs import common  # noqa: E402

# model -> (module, class) of its hand-written PyTorch version.
TORCH_MODELS = {
  'resnet18': ('tests.test_weights_torch', '_ResNet18'),
  'manet': ('tests.test_manet_torch', '_MANet'),
}
LR, MOMENTUM, WEIGHT_DECAY = 0.01, 0.9, 1e-4


def make_config(model: str, batch: int, size: int):
  """The model's training config at the benchmark's batch and size."""
  if model == 'manet':
    from configs import manet_rafdb  # noqa: PLC0415

    config = manet_rafdb.get_config('')
  else:
    config = common.base_config()
    config.model.name = model
  config.optimizer.momentum = MOMENTUM
  config.optimizer.weight_decay = WEIGHT_DECAY
  config.batch_size = batch
  config.augment.size = size
  return config


def _median_seconds(step, steps: int) -> float:
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def jax_step_seconds(config, steps: int) -> tuple[float, float, int]:
  """(median step seconds, compile seconds, parameter count)."""
  step, compile_seconds, params = bench_common.compiled_train_step(config)
  step()  # Warm.
  return _median_seconds(step, steps), compile_seconds, params


def torch_model_class(model: str):
  """The hand-written torch class of `model`, or None with the reason."""
  if importlib.util.find_spec('torch') is None:
    return None, 'torch is not installed'
  if model not in TORCH_MODELS:
    return None, f'no torch version of {model!r} is listed'
  module_name, class_name = TORCH_MODELS[model]
  try:
    module = importlib.import_module(module_name)
  except ImportError as e:
    return None, f'{module_name} cannot be imported ({e})'
  if hasattr(module, class_name):
    return getattr(module, class_name), ''
  import torch  # noqa: PLC0415

  wanted = model.replace('_', '').lower()
  for value in vars(module).values():
    if (
      isinstance(value, type)
      and issubclass(value, torch.nn.Module)
      and wanted in value.__name__.replace('_', '').lower()
    ):
      return value, ''
  return None, f'{module_name} has no {class_name}'


def _torch_loss(outputs, labels, beta: float):
  """CE of one logits tensor; beta-weighted CE of a (local, global) pair."""
  import torch  # noqa: PLC0415

  ce = torch.nn.functional.cross_entropy
  if isinstance(outputs, dict):
    if 'logits_local' in outputs:
      outputs = (outputs['logits_local'], outputs['logits_global'])
    else:
      outputs = outputs['logits']
  if isinstance(outputs, tuple | list):
    local, global_ = outputs[:2]
    return beta * ce(local, labels) + (1 - beta) * ce(global_, labels)
  return ce(outputs, labels)


def torch_step_seconds(cls, config, steps: int) -> tuple[float, int]:
  """(median step seconds, thread count) of the same step in PyTorch."""
  import torch  # noqa: PLC0415

  torch.manual_seed(0)
  # The model's config fields that the torch class takes, e.g. direction.
  fields = {**config.model.to_dict(), 'num_classes': config.data.num_classes}
  accepted = inspect.signature(cls).parameters
  net = cls(**{k: v for k, v in fields.items() if k in accepted})
  net.train()
  opt = torch.optim.SGD(
    net.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY
  )
  size, b = config.augment.size, config.batch_size
  images = torch.rand(b, 3, size, size)
  labels = torch.randint(0, config.data.num_classes, (b,))
  beta = config.model.get('beta', 0.6)

  def step():
    opt.zero_grad(set_to_none=True)
    _torch_loss(net(images), labels, beta).backward()
    opt.step()

  step()  # Warm: allocator and kernels.
  step()
  return _median_seconds(step, steps), torch.get_num_threads()


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--model', default='manet', choices=sorted(TORCH_MODELS))
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--size', type=int, default=224)
  parser.add_argument('--steps', type=int, default=5, help='timed steps')
  args = parser.parse_args(argv)

  config = make_config(args.model, args.batch, args.size)
  print(
    f'{args.model}, batch {args.batch}, {args.size} px, median of '
    f'{args.steps} steps; devices: {jax.device_count()} x '
    f'{jax.devices()[0].device_kind}'
  )
  seconds, compile_seconds, params = jax_step_seconds(config, args.steps)
  jax_rate = args.batch / seconds
  print(
    f'ferjax (jax {jax.__version__}): {seconds:8.3f} s/step '
    f'{jax_rate:8.1f} img/s  ({params / 1e6:.2f} M params, compile '
    f'{compile_seconds:.1f} s)'
  )
  cls, why = torch_model_class(args.model)
  if cls is None:
    print(f'torch model not available: {why}')
    return 0
  import torch  # noqa: PLC0415

  seconds, threads = torch_step_seconds(cls, config, args.steps)
  torch_rate = args.batch / seconds
  print(
    f'pytorch (torch {torch.__version__}, {threads} threads, '
    f'{cls.__name__}): {seconds:8.3f} s/step {torch_rate:8.1f} img/s'
  )
  print(f'ferjax / pytorch img/s: {jax_rate / torch_rate:.2f}')
  return 0


if __name__ == '__main__':
  sys.exit(main())

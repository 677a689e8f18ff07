r"""Training-step img/s of a model in ferjax and, if torch is there, PyTorch.

  python bench/train_throughput.py --model manet --batch 64 --size 224
  python bench/train_throughput.py --model mfer --batch 32 --size 224
  python bench/train_throughput.py --model resnet18 --size 64 --batch 8 \
    --steps 3

The ferjax side is the real jitted train step (`ferjax.train.train_step`
with the model, loss and optimizer of the model's paper config:
configs/{jadfer,manet,mfer}_rafdb.py) on a random uint8 batch. The
PyTorch side, when torch is importable, runs the hand-written PyTorch model
of the parity tests through the same step: forward, the same kind of loss
(beta-weighted heads for MA-Net, label-smoothed CE on each head for MFER),
backward and the config's optimizer (SGD with momentum or AdamW). MFER's DSF
term and drop path are left out of the PyTorch step (the reference has
neither); both cost little next to the trunk. Both report the median of
`--steps` timed steps after compilation and one untimed warm step. On a GPU
the PyTorch step runs on CUDA when torch sees one; `--dtype bfloat16` runs
both in bfloat16 compute with float32 weights (autocast in PyTorch).
"""

import argparse
import importlib.util
import statistics
import sys
import time

import jax

sys.path.insert(0, '.')

from bench import common as bench_common  # noqa: E402
from configs import common  # noqa: E402

MODELS = ('jadfer', 'manet', 'mfer', 'resnet18')


def make_config(model: str, batch: int, size: int, dtype: str = 'float32'):
  """The model's training config at the benchmark's batch, size and dtype."""
  if model in ('jadfer', 'manet', 'mfer'):
    config = importlib.import_module(f'configs.{model}_rafdb').get_config('')
    config.init_from = ''
  else:
    config = common.base_config()
    config.model.name = model
    config.optimizer.weight_decay = 1e-4
  config.batch_size = batch
  config.augment.size = size
  config.model.dtype = dtype
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


def torch_model(config):
  """The hand-written PyTorch model of `config.model`, or None and why."""
  if importlib.util.find_spec('torch') is None:
    return None, 'torch is not installed'
  name, classes = config.model.name, config.data.num_classes
  if name == 'resnet18':
    from tests import test_weights_torch  # noqa: PLC0415

    return test_weights_torch._ResNet18(classes), ''
  if name == 'manet':
    from tests import test_manet_torch  # noqa: PLC0415

    return test_manet_torch._MANet(classes, config.model.direction), ''
  if name == 'mfer':
    from tests import torch_mfer  # noqa: PLC0415

    m = config.model
    attention = dict(conv=m.ds_conv, order=m.ds_order, residual=m.ds_residual)
    net = torch_mfer.ConvNeXt(
      m.depths, m.dims, attention=attention, msc_classes=classes
    )
    return net, ''
  return None, f'no PyTorch version of {name!r}'


def _torch_loss(config, outputs, labels):
  """The PyTorch counterpart of the config's loss."""
  import torch  # noqa: PLC0415

  ce = torch.nn.functional.cross_entropy
  if config.loss.name == 'manet':
    beta = config.loss.beta
    local, global_ = outputs[:2]
    return beta * ce(local, labels) + (1 - beta) * ce(global_, labels)
  if config.loss.name == 'mfer':
    _, heads = outputs
    eps = config.loss.label_smoothing
    return sum(ce(h, labels, label_smoothing=eps) for h in heads)
  return ce(outputs, labels)


def _torch_optimizer(config, params):
  import torch  # noqa: PLC0415

  opt = config.optimizer
  lr = config.schedule.base_lr
  if opt.name == 'adamw':
    return torch.optim.AdamW(
      params,
      lr=lr,
      betas=(opt.b1, opt.b2),
      eps=opt.eps,
      weight_decay=opt.weight_decay,
    )
  return torch.optim.SGD(
    params, lr=lr, momentum=opt.momentum, weight_decay=opt.weight_decay
  )


def torch_step_seconds(net, config, steps: int) -> tuple[float, int]:
  """(median step seconds, thread count) of the same step in PyTorch."""
  import torch  # noqa: PLC0415

  torch.manual_seed(0)
  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  net.to(device).train()
  opt = _torch_optimizer(config, net.parameters())
  size, b = config.augment.size, config.batch_size
  images = torch.rand(b, 3, size, size, device=device)
  labels = torch.randint(0, config.data.num_classes, (b,), device=device)
  # bfloat16 compute with float32 weights, as ferjax's dtype field does.
  autocast = torch.autocast(
    device, torch.bfloat16, enabled=config.model.dtype == 'bfloat16'
  )

  def step():
    opt.zero_grad(set_to_none=True)
    with autocast:
      loss = _torch_loss(config, net(images), labels)
    loss.backward()
    opt.step()
    if device == 'cuda':
      torch.cuda.synchronize()

  step()  # Warm: allocator and kernels.
  step()
  return _median_seconds(step, steps), torch.get_num_threads()


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--model', default='manet', choices=MODELS)
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--size', type=int, default=224)
  parser.add_argument('--steps', type=int, default=5, help='timed steps')
  parser.add_argument(
    '--dtype', default='float32', choices=('float32', 'bfloat16')
  )
  args = parser.parse_args(argv)

  config = make_config(args.model, args.batch, args.size, args.dtype)
  print(
    f'{args.model}, {args.dtype}, batch {args.batch}, {args.size} px, median of '
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
  net, why = torch_model(config)
  if net is None:
    print(f'torch model not available: {why}')
    return 0
  import torch  # noqa: PLC0415

  seconds, threads = torch_step_seconds(net, config, args.steps)
  torch_rate = args.batch / seconds
  print(
    f'pytorch (torch {torch.__version__}, {threads} threads, '
    f'{type(net).__name__}): {seconds:8.3f} s/step {torch_rate:8.1f} img/s'
  )
  print(f'ferjax / pytorch img/s: {jax_rate / torch_rate:.2f}')
  return 0


if __name__ == '__main__':
  sys.exit(main())

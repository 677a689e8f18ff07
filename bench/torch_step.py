"""The same train step in PyTorch, for the ferjax/PyTorch speed ratio.

The models are the hand-written PyTorch versions of the parity tests:
ResNet-18 (tests/test_weights_torch.py), MA-Net (tests/test_manet_torch.py),
MFER (tests/torch_mfer.py) and IAL (tests/torch_ial.py, GCSA without its SE
branch, i.e. `attention='gca'`); JADFER has none. A step is forward, the
PyTorch counterpart of the config's loss, backward and the config's
optimizer (SGD with momentum or AdamW). Left out, each small next to the
trunk: MFER's DSF term and drop path, and GCSA's SE branch. `bfloat16` runs
autocast with float32 weights, as ferjax's dtype field does. Import only
where torch is installed.
"""

import importlib.util

import ml_collections


def available() -> bool:
  return importlib.util.find_spec('torch') is not None


def model_for(config: ml_collections.ConfigDict):
  """(the PyTorch model of `config.model`, its description), or (None, why)."""
  if not available():
    return None, 'torch is not installed'
  m, classes = config.model, config.data.num_classes
  if m.name == 'resnet18':
    from tests import test_weights_torch  # noqa: PLC0415

    width = m.get('width', 64)
    net = test_weights_torch._ResNet18(classes, width=width)
    return net, f'ResNet-18 (width {width})'
  if m.name == 'manet':
    from tests import test_manet_torch  # noqa: PLC0415

    return test_manet_torch._MANet(classes, m.direction), 'MA-Net'
  if m.name == 'mfer':
    from tests import torch_mfer  # noqa: PLC0415

    attention = dict(conv=m.ds_conv, order=m.ds_order, residual=m.ds_residual)
    net = torch_mfer.ConvNeXt(
      m.depths, m.dims, attention=attention, msc_classes=classes
    )
    return net, 'MFER (no DSF term, no drop path)'
  if m.name == 'gcsa':
    from tests import torch_ial  # noqa: PLC0415

    net = torch_ial.IAL(m.num_frames, config.augment.size, classes)
    return net, 'IAL (GCSA without the SE branch)'
  return None, f'no PyTorch version of {m.name!r}'


def _loss(config, outputs, labels):
  """The PyTorch counterpart of the config's loss."""
  import torch  # noqa: PLC0415

  ce = torch.nn.functional.cross_entropy
  cfg = config.loss
  if cfg.name == 'manet':
    local, global_ = outputs[:2]
    return cfg.beta * ce(local, labels) + (1 - cfg.beta) * ce(global_, labels)
  if cfg.name == 'mfer':
    _, heads = outputs
    eps = cfg.label_smoothing
    return sum(ce(h, labels, label_smoothing=eps) for h in heads)
  if cfg.name == 'cai':
    logits, _, aux2, aux3 = outputs
    target = torch.nn.functional.one_hot(labels, logits.shape[-1]).bool()
    confusing = logits.masked_fill(target, float('-inf')).amax(-1)
    z_y = logits.gather(1, labels[:, None])[:, 0]
    ial = torch.nn.functional.softplus(confusing - z_y).mean()
    return (
      ce(logits, labels)
      + cfg.aux2_weight * ce(aux2, labels)
      + cfg.aux3_weight * ce(aux3, labels)
      + cfg.ial_weight * ial
    )
  logits = outputs[1] if isinstance(outputs, tuple) else outputs
  return ce(logits, labels, label_smoothing=cfg.get('label_smoothing', 0.0))


def _optimizer(config, params):
  import torch  # noqa: PLC0415

  opt, lr = config.optimizer, config.schedule.base_lr
  if opt.name == 'adamw':
    return torch.optim.AdamW(
      params,
      lr=lr,
      betas=(opt.b1, opt.b2),
      eps=opt.eps,
      weight_decay=opt.weight_decay,
    )
  return torch.optim.SGD(
    params,
    lr=lr,
    momentum=opt.momentum,
    nesterov=opt.nesterov,
    weight_decay=opt.weight_decay,
  )


class TorchSteps:
  """The train and eval steps of `net` on a fixed random batch.

  `train(n)` and `eval(n)` run n steps and synchronise once, at the end
  (CUDA runs asynchronously; the CPU does not).
  """

  def __init__(self, net, config, eval_batch: int = 0):
    import torch  # noqa: PLC0415

    self.torch = torch
    torch.manual_seed(0)
    self.device = 'cuda' if torch.cuda.is_available() else 'cpu'
    self.net = net.to(self.device)
    self.config = config
    self.opt = _optimizer(config, net.parameters())
    self.images = self._images(config.batch_size)
    self.eval_images = self._images(eval_batch or config.batch_size)
    self.labels = torch.randint(
      0, config.data.num_classes, (config.batch_size,), device=self.device
    )
    self.autocast = torch.autocast(
      self.device,
      torch.bfloat16,
      enabled=config.model.dtype == 'bfloat16',
    )

  def _images(self, batch: int):
    """(B, 3, S, S) images, or (B, T, 3, S, S) clips, in [0, 1]."""
    from ferjax import models  # noqa: PLC0415

    _, *frames, size, _, _ = models.input_shape(self.config)
    shape = (batch, *frames, 3, size, size)
    return self.torch.rand(*shape, device=self.device)

  def _sync(self):
    if self.device == 'cuda':
      self.torch.cuda.synchronize()

  def train(self, n: int) -> None:
    self.net.train()
    for _ in range(n):
      self.opt.zero_grad(set_to_none=True)
      with self.autocast:
        loss = _loss(self.config, self.net(self.images), self.labels)
      loss.backward()
      self.opt.step()
    self._sync()

  def eval(self, n: int) -> None:
    self.net.eval()
    with self.torch.inference_mode(), self.autocast:
      for _ in range(n):
        self.net(self.eval_images)
    self._sync()

  def describe(self) -> dict:
    torch = self.torch
    info = {
      'torch_device': self.device,
      'threads': torch.get_num_threads(),
    }
    if self.device == 'cuda':
      info['cuda_device'] = torch.cuda.get_device_name()
      info['peak_bytes'] = int(torch.cuda.max_memory_allocated())
    return info

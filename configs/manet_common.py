"""The MA-Net training recipe shared by the per-dataset configs.

Every field follows the official main.py of MA-Net (TIP 2021); the
per-dataset numbers (learning rate, StepLR period and factor, epochs, batch)
come from its training logs (log/*.txt of github.com/zengqunzhao/MA-Net):

  train: RandomResizedCrop(224) (scale 0.08-1, ratio 3/4-4/3), horizontal
    flip; test: Resize((224, 224)); ToTensor only, no mean/std
    normalisation.
  loss: beta * CE(local head) + (1 - beta) * CE(global head), beta 0.6; the
    prediction mixes the two heads' logits with the same beta.
  SGD, momentum 0.9, weight decay 1e-4 on every parameter, one learning rate
    for all; StepLR stepped per epoch, no warmup.
  model selection: best test accuracy (WAR) over the epochs.

`manet_config` returns the full config; a `:smoke` variant trains three
steps on synthetic_fer/smoke for the tests.
"""

import ml_collections

from configs import common
from ferjax.data import datasets


def manet_config(
  arg: str | None,
  *,
  dataset: str,
  dataset_config: str = '',
  base_lr: float,
  step_size: int,
  gamma: float,
  num_epochs: int,
  batch_size: int = 128,
) -> ml_collections.ConfigDict:
  """MA-Net on `dataset` with the official recipe's per-dataset numbers.

  Args:
    arg: the text after `:` in --config (`smoke` or nothing).
    dataset: the TFDS builder name (config.data.name); its classes and the
      split the paper reports (and selects the best epoch on) come from
      `ferjax.data.datasets`.
    dataset_config: its builder config, e.g. '7class'.
    base_lr: SGD learning rate.
    step_size: StepLR period in epochs.
    gamma: StepLR factor.
    num_epochs: training epochs.
    batch_size: global batch size.

  Returns:
    The unlocked config; run.py locks it.
  """
  arg = common.parse_arg(arg, smoke=False)
  config = datasets.set_dataset(common.base_config(), dataset, dataset_config)
  # main.py shuffles uniformly, AffectNet included.
  config.data.sampling = 'uniform'

  # torchvision's RandomResizedCrop defaults, then flip; nothing else.
  config.augment.size = 224
  config.augment.crop_scale = (0.08, 1.0)
  config.augment.crop_ratio = (3 / 4, 4 / 3)
  config.augment.rotation = 0.0
  config.augment.flip = 0.5
  config.augment.erasing_prob = 0.0
  config.augment.eval_resize = 'resize'

  # One beta for the model's logit mix and the loss's head weighting: an
  # override of model.beta moves loss.beta with it.
  beta = ml_collections.FieldReference(0.6)
  config.model.name = 'manet'
  config.model.beta = beta
  # The multi-scale block's second cascade runs in the first's direction, as
  # in the code that produced the logs and the MS-Celeb checkpoint.
  config.model.direction = 'same'
  # 'local' or 'global' keeps one branch and its head (the ablation).
  config.model.branches = 'both'
  # Channels of the stem and layer1 (ResNet-18's 64; x2, x4, x8 after):
  # narrower only in reduced variants (bench.learning).
  config.model.width = 64
  # No input normalisation: main.py feeds ToTensor's [0, 1] images.
  config.model.pixel_mean = ml_collections.config_dict.placeholder(tuple)
  config.model.pixel_std = ml_collections.config_dict.placeholder(tuple)
  # config.loss.name stays 'auto': the model's own loss, 'manet'.
  config.loss.beta = beta

  config.optimizer.name = 'sgd'
  config.optimizer.momentum = 0.9
  config.optimizer.nesterov = False
  config.optimizer.weight_decay = 1e-4
  config.optimizer.weight_decay_on = 'all'
  config.schedule.name = 'step'
  config.schedule.unit = 'epoch'
  config.schedule.base_lr = base_lr
  config.schedule.step_size = step_size
  config.schedule.gamma = gamma
  config.schedule.warmup_epochs = 0.0

  config.batch_size = batch_size
  config.eval_batch_size = 256
  config.num_epochs = float(num_epochs)
  config.log_every_steps = 50
  config.eval_every_epochs = 1.0
  config.best_metric = 'war'
  config.checkpoint.every_steps = 1000

  # The paper starts from the whole MA-Net pretrained on MS-Celeb-1M
  # (12,666 identities). Convert the official checkpoint once:
  #   python -m ferjax.weights convert --model manet \
  #     --src Pretrained_on_MSCeleb.pth.tar --out DIR --num_classes 12666
  # then pass --config.init_from=DIR. Its 12,666-way fc_1/fc_2 do not fit
  # and keep their fresh init, like main.py's new Linear(512, 7) heads.
  config.init_from = ''

  if arg.smoke:
    # 32 px: layer2 gives 4x4, which the local branch cuts into 2x2 patches.
    common.smoke(config)
  return config

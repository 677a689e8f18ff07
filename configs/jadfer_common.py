"""The JADFER training recipe shared by the per-dataset configs.

JADFER (Gao et al., IEEE TAFFC 2024) published neither code, training
details nor numbers we could find (its abstract gives none), so the recipe
follows TransFER (ICCV 2021), its closest predecessor with a public
configuration, everywhere it says something (docs/design_notes.md has the
evidence for the model's and the recipe's choices):

  input: 112 px faces (IR-50's input), face.evoLVe's 0.5/0.5 normalisation.
  augment: random crop (RandomResizedCrop scale 0.8-1, as APViT), flip,
    RandAugment with 2 ops, and random erasing (p 0.5, area 0.02-0.4,
    aspect 0.3-3.3, TransFER's). RandAugment is "lite": the ops that keep
    an expression legible (`ferjax.data.augment_config.RANDAUGMENT_LITE_OPS`:
    no posterize, solarize, equalize or shear), at magnitude 9 of 31
    (torchvision's default; TransFER's PaddleClas magnitude 5 reaches other
    strengths).
  optimizer: SGD, momentum 0.9, weight decay 1e-4 (TransFER's L2), batch 64,
    40 epochs, learning rate 1e-3 (TransFER's `learning_rate`) divided by 10
    at epochs 15 and 30 (TransFER's piecewise decay epochs).
  init: the MS-Celeb-1M IR-50 (`weights/ir50.pth`); everything after the
    backbone starts fresh.
  loss: CE + 1.0 x Variety (DAN's partition loss on the paths' embeddings,
    log-softmaxed over the paths as the SCI reads them).
  model selection: best test accuracy (WAR), as every FER paper.

AffectNet (`jadfer_affectnet7`, `jadfer_affectnet8`) trains class-balanced
(`config.data.sampling`, as DAN's ImbalancedDatasetSampler) for 10 epochs,
the learning rate dropping 10x at epochs 4 and 8. The length is ours,
guided by DAN: DAN's affectnet.py defaults to 40 epochs (Adam 1e-4,
ExponentialLR 0.6 per epoch, batch 256), but its README trains AffectNet
with `--epochs 10`, its released AffectNet models come from epochs 5 and 6,
and 0.6^10 leaves 0.6% of the learning rate by epoch 10 anyway. The
optimizer stays this recipe's SGD; the milestones scale TransFER's 15 and
30 of 40 epochs to 10. `--config.num_epochs=40
--config.schedule.milestones='(15, 30)'` trains as long as RAF-DB.

`jadfer_config` returns the full config; `:smoke` trains a narrow JADFER for
three steps on synthetic_fer/smoke for the tests.
"""

import ml_collections

from configs import common
from ferjax.data import augment_config
from ferjax.data import datasets
from ferjax.models.backbones import irse

IR50 = 'weights/ir50.pth'


def jadfer_config(
  arg: str | None,
  *,
  dataset: str,
  dataset_config: str = '',
  num_epochs: int = 40,
  milestones: tuple[int, ...] = (15, 30),
) -> ml_collections.ConfigDict:
  """JADFER on `dataset` with the TransFER-like recipe.

  Args:
    arg: the text after `:` in --config (`smoke` or nothing).
    dataset: the TFDS builder name; classes, splits and sampling come from
      `ferjax.data.datasets`.
    dataset_config: its builder config, e.g. '7class'.
    num_epochs: training epochs.
    milestones: epochs at which the learning rate drops 10x.

  Returns:
    The unlocked config; run.py locks it.
  """
  arg = common.parse_arg(arg, smoke=False)
  config = datasets.set_dataset(common.base_config(), dataset, dataset_config)

  config.augment.size = 112
  config.augment.crop_scale = (0.8, 1.0)
  config.augment.crop_ratio = (3 / 4, 4 / 3)
  config.augment.rotation = 0.0
  config.augment.flip = 0.5
  config.augment.randaugment_ops = 2
  config.augment.randaugment_magnitude = 9
  config.augment.randaugment_ops_list = augment_config.RANDAUGMENT_LITE_OPS
  config.augment.erasing_prob = 0.5
  config.augment.erasing_scale = (0.02, 0.4)
  config.augment.erasing_ratio = (0.3, 1 / 0.3)
  config.augment.eval_resize = 'resize'

  config.model.name = 'jadfer'
  # IR-50 ('ir_se': with squeeze-excitation), its stages 1-3 at 112 px.
  config.model.num_layers = 50
  config.model.backbone_mode = 'ir'
  config.model.pixel_mean = irse.PIXEL_MEAN
  config.model.pixel_std = irse.PIXEL_STD
  # The IR trunk's first-stage channels and units per stage (None: IR-50's
  # 3-4-14); other values only in reduced variants (bench.learning).
  config.model.trunk_width = 64
  config.model.trunk_units = ml_collections.config_dict.placeholder(tuple)
  # SB: DAN's attention heads as paths; 0 paths (with sci_depth=0) is the
  # model without SB.
  config.model.num_paths = 4
  config.model.path_hidden_ratio = 2
  config.model.channel_attention = True
  # The paths' log-softmax over paths (DAN) feeds SCI and the Variety loss.
  config.model.path_log_softmax = True
  # CB (depth 0: without CB) and SCI (sci_depth 0: without SCI),
  # TransFER's encoder sizes.
  config.model.width = 768
  config.model.depth = 8
  config.model.sci_depth = 1
  config.model.num_heads = 8
  config.model.mlp_ratio = 3.0
  config.model.qkv_bias = False
  config.model.dropout = 0.0
  # JAD (drop_prob 0: JAD off).
  config.model.rho = 0.1
  config.model.drop_prob = 0.5
  config.model.joint = 'mean'
  config.model.mask_at = 'logits'
  config.model.fusion = 'concat'
  # True rematerialises the IR-50 units and the transformer blocks in the
  # backward pass: about 30% more compute for much less activation memory
  # on GPU/TPU.
  config.model.remat = False

  # config.loss.name stays 'auto': the model's own loss, 'jadfer'.
  config.loss.label_smoothing = 0.0
  config.loss.variety = 'partition'
  config.loss.variety_weight = 1.0
  config.loss.variety_on = 'embeddings'

  config.optimizer.name = 'sgd'
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = 1e-4
  config.optimizer.weight_decay_on = 'all'
  config.schedule.name = 'step'
  config.schedule.unit = 'epoch'
  config.schedule.base_lr = 1e-3
  config.schedule.milestones = milestones
  config.schedule.gamma = 0.1
  config.schedule.warmup_epochs = 0.0

  config.batch_size = 64
  config.eval_batch_size = 256
  config.num_epochs = float(num_epochs)
  config.log_every_steps = 100
  config.eval_every_epochs = 1.0
  config.best_metric = 'war'
  config.checkpoint.every_steps = 2000
  config.init_from = IR50

  if arg.smoke:
    common.smoke(config)
    config.model.width = 32
    config.model.depth = 1
    config.model.num_heads = 2
    config.model.num_paths = 2
    config.model.mlp_ratio = 2.0
  return config

"""The GCSA training recipe shared by the video configs.

GCSA (Liang, Dong, Li, 2024) published no code or training details; its
wording follows IAL (Li et al., AAAI 2023), whose code is public, so the
recipe is IAL's (muse1998/IAL-for-Facial-Expression-Recognition, main.py and
dataset_DFEW.py; papers.md §4):

  clips: 16 segments x 1 frame at 112 px; a random frame per segment in
    training (TSN), the segment centre in evaluation; no normalisation.
  augment: one draw per clip of a crop of area 0.85-1 and aspect 3/5-5/3,
    horizontal flip, brightness 0.6 and rotation 4 degrees
    (`ferjax.data.clips.IAL_AUGMENT`).
  loss: CAI = CE + 0.05 CE(aux, stage 2) + 0 CE(aux, stage 3) + 0.1 IAL
    (IAL's code; its "lamda=0.5" comment is not what it runs).
  SGD, lr 1e-3, momentum 0.9, weight decay 0.1; StepLR x0.5 every 7 epochs;
    batch 40 (drop_last).
  model selection: best test accuracy (WAR) per fold, as IAL saves.

Choices where IAL is silent or ferjax differs, each a field:
  - epochs: IAL's default of 1000 means "until stopped"; 50 epochs take the
    learning rate down 2^7 = 128x, past which StepLR changes little.
  - short clips: IAL drops clips under 16 frames from train and test;
    ferjax loops them (`config.clip.short='loop'`, DFEW's official loader)
    so WAR and UAR count every test clip of the official protocol.
  - attention: 'gcsa' (GCA plus a squeeze-and-excitation branch, fused
    geometrically; `ferjax.models.gcsa`); `--config.model.attention=gca` is
    IAL exactly.

`gcsa_config` returns the full config; `:smoke` trains a 4-frame, 32 px GCSA
for three steps on synthetic_fer/clip_smoke for the tests.
"""

import ml_collections

from configs import common
from ferjax.data import clips
from ferjax.data import datasets


def gcsa_config(
  smoke: bool, *, dataset: str, dataset_config: str = ''
) -> ml_collections.ConfigDict:
  """GCSA on a video dataset with IAL's recipe.

  Args:
    smoke: the tiny synthetic variant for the tests.
    dataset: 'dfew' or 'ferv39k'.
    dataset_config: its builder config (a DFEW fold).

  Returns:
    The unlocked config; run.py locks it.
  """
  config = datasets.set_dataset(common.base_config(), dataset, dataset_config)
  frames = ml_collections.FieldReference(16)
  config.clip.segments = frames
  config.clip.frames_per_segment = 1
  config.clip.short = 'loop'
  for name, value in clips.IAL_AUGMENT.items():
    config.augment[name] = value
  config.augment.eval_resize = 'resize'

  config.model.name = 'gcsa'
  config.model.num_frames = frames
  config.model.attention = 'gcsa'
  config.model.fusion = 'geometric'
  # The global convs are depthwise: 'auto' computes them element-wise on CPU
  # (XLA's depthwise kernel gradient is a dense conv there) and with XLA's
  # convolutions on GPU/TPU; 'native' or 'custom' force one. Same weights.
  config.model.depthwise_grad = 'auto'
  # True rematerialises the residual blocks and transformer layers in the
  # backward pass: about 30% more compute for much less activation memory
  # on GPU/TPU.
  config.model.remat = False

  # config.loss.name stays 'auto': the model's own loss, 'cai'.
  config.loss.aux2_weight = 0.05
  config.loss.aux3_weight = 0.0
  config.loss.ial_weight = 0.1

  config.optimizer.name = 'sgd'
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = 0.1
  config.optimizer.weight_decay_on = 'all'
  config.schedule.name = 'step'
  config.schedule.unit = 'epoch'
  config.schedule.base_lr = 1e-3
  config.schedule.step_size = 7
  config.schedule.gamma = 0.5
  config.schedule.warmup_epochs = 0.0

  config.batch_size = 40
  config.eval_batch_size = 40
  config.num_epochs = 50.0
  config.log_every_steps = 50
  config.eval_every_epochs = 1.0
  config.best_metric = 'war'
  config.checkpoint.every_steps = 1000

  if smoke:
    common.smoke(config)
    config.data.config = 'clip_smoke'
    frames.set(4)
    config.batch_size = 8
    config.eval_batch_size = 16
  return config

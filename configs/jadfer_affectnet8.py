r"""JADFER (TAFFC 2024) on AffectNet, 8 classes.

  python run.py --config=configs/jadfer_affectnet8.py --workdir=runs/jadfer_affectnet8
  python run.py --config=configs/jadfer_affectnet8.py:smoke --workdir=/tmp/smoke

Paper: none published. JADFER's abstract gives no numbers, and neither its
code nor its results tables are public; compare against MA-Net and MFER
on the same split.
Recipe: configs/jadfer_common.py (TransFER-like: 112 px, flip, RandAugment
lite, random erasing; SGD 1e-3, batch 64), starting from the MS-Celeb IR-50
at weights/ir50.pth.

AffectNet trains class-balanced for 10 epochs, the learning rate dropping
at epochs 4 and 8: our choice, guided by DAN's AffectNet runs
(configs/jadfer_common.py says what DAN does and why 10).

The dataset build, the initial weights, the ablation switches and the
expected GPU time are in docs/reproduce.md.
"""

from configs import jadfer_common


def get_config(arg=None):
  return jadfer_common.jadfer_config(
    arg,
    dataset='affectnet',
    dataset_config='8class',
    num_epochs=10,
    milestones=(4, 8),
  )

r"""JADFER (TAFFC 2024) on RAF-DB (basic, 7 classes).

  python run.py --config=configs/jadfer_rafdb.py --workdir=runs/jadfer_rafdb
  python run.py --config=configs/jadfer_rafdb.py:smoke --workdir=/tmp/smoke

Paper: none published. JADFER's abstract gives no numbers, and neither its
code nor its results tables are public; compare against MA-Net and MFER
on the same split.
Recipe: configs/jadfer_common.py (TransFER-like: 112 px, flip, RandAugment
lite, random erasing; SGD 1e-3, batch 64), starting from the MS-Celeb IR-50
at weights/ir50.pth.

The dataset build, the initial weights, the ablation switches and the
expected GPU time are in docs/reproduce.md.
"""

from configs import jadfer_common


def get_config(arg=None):
  return jadfer_common.jadfer_config(arg, dataset='rafdb')

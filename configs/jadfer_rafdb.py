r"""JADFER (TAFFC 2024) on RAF-DB (basic, 7 classes).

  python run.py --config=configs/jadfer_rafdb.py --workdir=runs/jadfer_rafdb
  python run.py --config=configs/jadfer_rafdb.py:smoke --workdir=/tmp/smoke

Paper: no number is public (the abstract gives none, and the paper's tables
were not available); compare against MA-Net and MFER on the same split.
Recipe: configs/jadfer_common.py (TransFER-like: 112 px, flip, RandAugment
lite, random erasing; SGD 1e-3, batch 64), starting from the MS-Celeb IR-50
at weights/ir50.pth.
"""

from configs import jadfer_common


def get_config(arg=None):
  return jadfer_common.jadfer_config(arg, dataset='rafdb')

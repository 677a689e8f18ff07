r"""MFER (TAFFC 2024) on RAF-DB (basic, 7 classes).

  python run.py --config=configs/mfer_rafdb.py --workdir=runs/mfer_rafdb
  python run.py --config=configs/mfer_rafdb.py:smoke --workdir=/tmp/smoke

Paper: 92.08 % accuracy on the test split (3,068 images). Recipe: the released train.py of github.com/XuJ1E/MFER
(AdamW lr 1e-3, ExponentialLR 0.95 per epoch, 100 epochs, batch 32, 224 px),
with the deviations listed in configs/mfer_common.py (flip and random
erasing; ImageNet-22k ConvNeXt-B instead of the unreleased MS-Celeb one,
expected at weights/convnext_base_22k_224.pth).

The dataset build, the initial weights, the ablation switches and the
expected GPU time are in docs/reproduce.md.
"""

from configs import mfer_common


def get_config(arg=None):
  return mfer_common.mfer_config(arg, dataset='rafdb')

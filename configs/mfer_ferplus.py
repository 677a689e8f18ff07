r"""MFER (TAFFC 2024) on FERPlus (8 classes, majority labels).

  python run.py --config=configs/mfer_ferplus.py --workdir=runs/mfer_ferplus
  python run.py --config=configs/mfer_ferplus.py:smoke --workdir=/tmp/smoke

Paper: 91.09 % accuracy on the FERPlus test split (PrivateTest, majority
labels). Recipe: the released train.py of github.com/XuJ1E/MFER
(AdamW lr 1e-3, ExponentialLR 0.95 per epoch, 100 epochs, batch 32, 224 px),
with the deviations listed in configs/mfer_common.py (flip and random
erasing; ImageNet-22k ConvNeXt-B instead of the unreleased MS-Celeb one,
expected at weights/convnext_base_22k_224.pth).

FERPlus's 48 px grayscale faces are repeated to RGB and resized to 224.

The dataset build, the initial weights, the ablation switches and the
expected GPU time are in docs/reproduce.md.
"""

from configs import mfer_common


def get_config(arg=None):
  return mfer_common.mfer_config(
    arg, dataset='ferplus', dataset_config='majority'
  )

r"""MA-Net (TIP 2021) on AffectNet, 7 classes, the official recipe.

  python run.py --config=configs/manet_affectnet7.py \
    --workdir=runs/manet_affectnet7 --config.init_from=weights/manet_msceleb
  python run.py --config=configs/manet_affectnet7.py:smoke --workdir=/tmp/smoke

Paper: 64.53 % accuracy on the official validation set (AffectNet's de-facto
test set); the official AffectNet7 log reaches it at epoch 6. Recipe: main.py
of github.com/zengqunzhao/MA-Net with the numbers of that log: SGD lr 0.01,
x0.1 every 5 epochs, 20 epochs, batch 256, no class-balanced sampling. The
shared part is in configs/manet_common.py. The best checkpoint is chosen on
the test split (AffectNet's official validation set), as main.py does.

The dataset build, the initial weights, the ablation switches and the
expected GPU time are in docs/reproduce.md.
"""

from configs import manet_common


def get_config(arg=None):
  return manet_common.manet_config(
    arg,
    dataset='affectnet',
    dataset_config='7class',
    base_lr=0.01,
    step_size=5,
    gamma=0.1,
    num_epochs=20,
    batch_size=256,
  )

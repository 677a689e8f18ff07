r"""MA-Net (TIP 2021) on RAF-DB (basic, 7 classes), the official recipe.

  python run.py --config=configs/manet_rafdb.py --workdir=runs/manet_rafdb \
    --config.init_from=weights/manet_msceleb
  python run.py --config=configs/manet_rafdb.py:smoke --workdir=/tmp/smoke

Paper: 88.40 % test accuracy; the official RAF-DB log reaches it at epoch 29.
Recipe: main.py of github.com/zengqunzhao/MA-Net with the numbers of that log:
SGD lr 0.01, x0.1 every 15 epochs, 100 epochs, batch 128. The shared part is
in configs/manet_common.py. The best checkpoint is chosen on the test split
(3,068 images), as main.py does.

The dataset build, the initial weights, the ablation switches and the
expected GPU time are in docs/reproduce.md.
"""

from configs import manet_common


def get_config(arg=None):
  return manet_common.manet_config(
    arg,
    dataset='rafdb',
    base_lr=0.01,
    step_size=15,
    gamma=0.1,
    num_epochs=100,
    batch_size=128,
  )

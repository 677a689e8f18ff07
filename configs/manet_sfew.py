r"""MA-Net (TIP 2021) on SFEW 2.0 (7 classes), the official recipe.

  python run.py --config=configs/manet_sfew.py --workdir=runs/manet_sfew \
    --config.init_from=weights/manet_msceleb
  python run.py --config=configs/manet_sfew.py:smoke --workdir=/tmp/smoke

Paper: 59.40 % accuracy on the official Val set (436 faces; the Test labels
are not public); the official SFEW log reaches it at epoch 40. Recipe: main.py
of github.com/zengqunzhao/MA-Net with the numbers of that log: SGD lr 0.001,
x0.1 every 10 epochs, 100 epochs, batch 128. The shared part is in
configs/manet_common.py. The best checkpoint is chosen on the validation
split, as main.py does with its test set.

The dataset build, the initial weights, the ablation switches and the
expected GPU time are in docs/reproduce.md.
"""

from configs import manet_common


def get_config(arg=None):
  return manet_common.manet_config(
    arg,
    dataset='sfew',
    base_lr=0.001,
    step_size=10,
    gamma=0.1,
    num_epochs=100,
    batch_size=128,
  )

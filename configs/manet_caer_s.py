r"""MA-Net (TIP 2021) on CAER-S (7 classes), the official recipe.

  python run.py --config=configs/manet_caer_s.py --workdir=runs/manet_caer_s \
    --config.init_from=weights/manet_msceleb
  python run.py --config=configs/manet_caer_s.py:smoke --workdir=/tmp/smoke

Paper: 88.42 % test accuracy; the official CAER-S log reaches it at epoch 398.
Recipe: main.py of github.com/zengqunzhao/MA-Net with the numbers of that log:
SGD lr 0.1, x0.5 every 50 epochs, 400 epochs, batch 128. The shared part is in
configs/manet_common.py. The best checkpoint is chosen on the test split
(20,987 frames), as main.py does.

The dataset build, the initial weights, the ablation switches and the
expected GPU time are in docs/reproduce.md.
"""

from configs import manet_common


def get_config(arg=None):
  return manet_common.manet_config(
    arg,
    dataset='caer_s',
    base_lr=0.1,
    step_size=50,
    gamma=0.5,
    num_epochs=400,
    batch_size=128,
  )

r"""GCSA (2024) on FERV39K with IAL's recipe.

  python run.py --config=configs/gcsa_ferv39k.py --workdir=runs/gcsa_ferv39k
  python -m ferjax.sweep --config=configs/gcsa_ferv39k.py \
      --workdir=runs/gcsa_ferv39k_seeds --seeds=0,1,2
  python run.py --config=configs/gcsa_ferv39k.py:smoke --workdir=/tmp/smoke

Reference: GCSA published no numbers we could read; its predecessor IAL is
cited at UAR 35.82 / WAR 48.54 on FERV39K (its single train/test split;
figures as comparison tables quote them, not re-read from the paper). Recipe
and choices: configs/gcsa_common.py. `:size=112` reads the build with 112 px
frames.

The dataset build, the initial weights, the ablation switches and the
expected GPU time are in docs/reproduce.md.
"""

from configs import common
from configs import gcsa_common


def get_config(arg=None):
  arg = common.parse_arg(arg, smoke=False, size=0)
  return gcsa_common.gcsa_config(
    arg.smoke,
    dataset='ferv39k',
    dataset_config=str(arg.size) if arg.size else 'default',
  )

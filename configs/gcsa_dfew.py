r"""GCSA (2024) on DFEW, one fold, with IAL's recipe.

  python run.py --config=configs/gcsa_dfew.py:fold=1 --workdir=runs/gcsa_dfew1
  python -m ferjax.sweep --config=configs/gcsa_dfew.py \
      --workdir=runs/gcsa_dfew --folds=all        # the 5-fold protocol
  python -m ferjax.sweep --config=configs/gcsa_dfew.py:protocol=ial \
      --workdir=runs/gcsa_dfew_ial --folds=all    # comparable with IAL
  python run.py --config=configs/gcsa_dfew.py:smoke --workdir=/tmp/smoke

Reference: GCSA published no numbers we could read; its predecessor IAL is
cited at UAR 55.71 / WAR 69.24 on DFEW (mean over the five folds; figures as
comparison tables quote them, not re-read from the paper). Recipe and
choices: configs/gcsa_common.py; docs/reproduce.md has the full table.
`:fold=k` picks the fold (builder config `foldk`; `:fold=k,size=112` reads
the `foldk_112` build with frames stored at 112 px). `:protocol=ial` drops
the clips shorter than 16 frames from both splits, as IAL's loader does
(the default, 'official', keeps every clip of the official folds).
"""

from configs import common
from configs import gcsa_common


def get_config(arg=None):
  arg = common.parse_arg(arg, smoke=False, fold=1, size=0, protocol='official')
  if not 1 <= arg.fold <= 5:
    raise ValueError(f'config arg fold={arg.fold}: DFEW has folds 1 to 5.')
  suffix = f'_{arg.size}' if arg.size else ''
  return gcsa_common.gcsa_config(
    arg.smoke,
    dataset='dfew',
    dataset_config=f'fold{arg.fold}{suffix}',
    protocol=arg.protocol,
  )

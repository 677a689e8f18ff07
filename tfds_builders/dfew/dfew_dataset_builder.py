"""dfew: DFEW video clips, 7 expressions, 5 folds, from the manual download.

Reads the official single-labelled release:

  Clip/clip_224x224/<5-digit id>/*.jpg                frames of one clip
  EmoLabel_DataSplit/train(single-labeled)/set_<k>.csv  fold k's training
  EmoLabel_DataSplit/test(single-labeled)/set_<k>.csv   and test clips

Each CSV has a header line, then `<video id>,<label>` per clip: the id
without zero padding (`1` is folder `00001`) and the label 1..7 (1 happy,
2 sad, 3 neutral, 4 angry, 5 surprise, 6 disgust, 7 fear). Configs `fold1`
... `fold5` pick the fold; `fold<k>_112` store the same clips with frames
shrunk to 112 px (`clip_folders.ClipBuilderConfig.frame_size`). Labels are
mapped into ferjax's canonical order; the dataset's own id is kept as
`original_label`.
"""

import csv
import dataclasses
import os
import pathlib

import numpy as np
import tensorflow_datasets as tfds

from ferjax.labels import EXPRESSIONS_7
from tfds_builders import clip_folders
from tfds_builders import manual_data

SPLITS = ('train', 'test')
FOLDS = (1, 2, 3, 4, 5)
CLIP_DIR = pathlib.PurePosixPath('Clip/clip_224x224')
LIST_DIR = pathlib.PurePosixPath('EmoLabel_DataSplit')
# Split -> folder of its fold lists inside LIST_DIR.
LIST_FOLDERS = {
  'train': 'train(single-labeled)',
  'test': 'test(single-labeled)',
}
# Folder names the release may be unpacked under, inside --manual_dir.
RELEASE_DIRS = ('DFEW',)
# The frames of a clip are `<5-digit id>/...`.
ID_DIGITS = 5
# The frame size of the resized configs.
SMALL_FRAME = 112

# DFEW label id (1..7) -> its name, as in the release.
DFEW_NAMES = {
  1: 'happiness',
  2: 'sadness',
  3: 'neutral',
  4: 'anger',
  5: 'surprise',
  6: 'disgust',
  7: 'fear',
}
# DFEW label id -> index into `ferjax.labels.EXPRESSIONS_7`.
DFEW_TO_CANONICAL = {k: EXPRESSIONS_7.index(v) for k, v in DFEW_NAMES.items()}

_MANUAL_HELP = (
  'Point --manual_dir at the folder that holds `Clip/` and '
  '`EmoLabel_DataSplit/` (or at the one that holds `DFEW/` with them '
  'inside), unpacked from the DFEW release; see the manual download '
  'instructions in tfds_builders/dfew/README.md.'
)
_FIX = 'Restore the file or folder from the DFEW release.'


@dataclasses.dataclass(kw_only=True)
class DfewConfig(clip_folders.ClipBuilderConfig):
  """One fold of DFEW, with frames as shipped or resized.

  Attributes:
    fold: which of the five official folds (1..5).
  """

  fold: int = 1


def _configs() -> list[DfewConfig]:
  configs = [
    DfewConfig(
      name=f'fold{k}',
      description=f'Fold {k}, frames as shipped (224x224 JPEG).',
      fold=k,
    )
    for k in FOLDS
  ]
  configs += [
    DfewConfig(
      name=f'fold{k}_{SMALL_FRAME}',
      description=f'Fold {k}, frames shrunk to {SMALL_FRAME} px.',
      fold=k,
      frame_size=SMALL_FRAME,
    )
    for k in FOLDS
  ]
  return configs


def find_release_dir(manual_dir: os.PathLike | str) -> pathlib.Path:
  """Returns the folder holding `EmoLabel_DataSplit/` given `--manual_dir`.

  Raises:
    manual_data.ManualDataError: naming the paths tried if there is none.
  """
  return manual_data.find_release_dir(
    manual_dir, LIST_DIR, RELEASE_DIRS, _MANUAL_HELP
  )


def list_file(release_dir: pathlib.Path, split: str, fold: int) -> pathlib.Path:
  """Path of the CSV listing `split`'s clips of `fold`."""
  return release_dir / LIST_DIR / LIST_FOLDERS[split] / f'set_{fold}.csv'


def is_header(line: str) -> bool:
  """Whether a list's first line is its header (no video id first)."""
  return not next(csv.reader([line]))[0].strip().isdigit()


def parse_line(line: str, clip_dir: pathlib.Path) -> clip_folders.Clip:
  """Parses one CSV line `<video id>,<label>[,...]` into a clip.

  Args:
    line: the line; fields after the label are ignored.
    clip_dir: the release's `Clip/clip_224x224` folder.

  Raises:
    ValueError: describing a malformed line, id or label.
  """
  fields = [f.strip() for f in next(csv.reader([line]))]
  if len(fields) < 2:
    raise ValueError('expected `<video id>,<label>`')
  video, label = fields[:2]
  if not video.isdigit() or len(video.lstrip('0')) > ID_DIGITS:
    raise ValueError(f'video id {video!r} is not a number of 1 to 5 digits')
  dfew_label = int(label) if label.isdigit() else None
  if dfew_label not in DFEW_NAMES:
    raise ValueError(f'unknown label {label!r}; DFEW labels are 1..7')
  clip_id = video.lstrip('0').zfill(ID_DIGITS)
  return clip_folders.Clip(
    id=clip_id,
    folder=clip_dir / clip_id,
    label=DFEW_TO_CANONICAL[dfew_label],
    original_label=dfew_label,
  )


def read_fold(release_dir: pathlib.Path, fold: int) -> dict:
  """Reads and checks both lists of `fold` and every clip folder they name.

  Returns:
    split -> its clips, with their frames listed.

  Raises:
    manual_data.ManualDataError: naming a missing list, a malformed line, a
      clip listed twice or in both splits, a missing or empty clip folder.
  """
  clip_dir = release_dir / CLIP_DIR
  if not clip_dir.is_dir():
    raise manual_data.ManualDataError(
      f'{clip_dir} not found: the frames of every clip go there. {_MANUAL_HELP}'
    )
  lists = {split: list_file(release_dir, split, fold) for split in SPLITS}
  for path in lists.values():
    if not path.is_file():
      raise manual_data.ManualDataError(f'{path} not found. {_FIX}')
  splits = {
    split: clip_folders.read_clip_list(
      path, lambda line: parse_line(line, clip_dir), is_header, _FIX
    )
    for split, path in lists.items()
  }
  return clip_folders.list_frames(splits, _FIX)


class Builder(tfds.core.GeneratorBasedBuilder):
  """DatasetBuilder for dfew (single-labelled clips, five folds)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  # The first config is the default.
  BUILDER_CONFIGS = _configs()
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  DFEW (Dynamic Facial Expressions in the Wild) is distributed by its
  authors for non-commercial research only. Request it on the official
  site, https://dfew-dataset.github.io/ : sign the license agreement as the
  site says and email it; the authors reply with the download link.

  Unpack the single-labelled release so that these exist:

    Clip/clip_224x224/00001/...
    EmoLabel_DataSplit/train(single-labeled)/set_1.csv ... set_5.csv
    EmoLabel_DataSplit/test(single-labeled)/set_1.csv ... set_5.csv

  and pass `--manual_dir` pointing at the folder that holds them (or at the
  one holding `DFEW/` with them inside), e.g.
  `python -m ferjax.data.build dfew --config fold1 --manual_dir ~/data/DFEW`.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    """Returns the dataset metadata."""
    return self.dataset_info_from_configs(
      features=clip_folders.clip_features(
        EXPRESSIONS_7,
        tfds.features.Scalar(
          dtype=np.int64,
          doc='DFEW label id: 1 happy, 2 sad, 3 neutral, 4 angry, '
          '5 surprise, 6 disgust, 7 fear.',
        ),
        id_doc='Video id, zero-padded to 5 digits (its folder name).',
      ),
      supervised_keys=('frames', 'label'),
      homepage='https://dfew-dataset.github.io/',
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    """Checks the fold's lists and clip folders, then returns generators."""
    release_dir = find_release_dir(dl_manager.manual_dir)
    splits = read_fold(release_dir, self.builder_config.fold)
    return {
      split: self._generate_examples(clips) for split, clips in splits.items()
    }

  def _generate_examples(self, clips: list[clip_folders.Clip]):
    """Yields (id, example) for the clips of one split."""
    size = self.builder_config.frame_size
    for clip in clips:
      yield clip.id, clip_folders.clip_example(clip, size)

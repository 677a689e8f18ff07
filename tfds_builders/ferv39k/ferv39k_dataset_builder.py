"""ferv39k: FERV39K video clips, 7 expressions, from the manual download.

Reads the face-crop clips and the official all-scenes split:

  2_ClipsforFaceCrop/<Scene>/<Emotion>/<clip id>/*.jpg   frames of one clip
  4_setups/All_scenes/train_All.csv, test_All.csv         the split lists

Each list line is `<Scene>/<Emotion>/<clip id> <Emotion>`: the clip's
folder under `2_ClipsforFaceCrop/` and its label word (Angry, Disgust, Fear,
Happy, Neutral, Sad, Surprise), which must match the folder's emotion. A
header line, if present, is skipped. Config `default` stores the frames as
shipped, `112` shrinks them to 112 px
(`clip_folders.ClipBuilderConfig.frame_size`). Labels are mapped into
ferjax's canonical order; the word is kept as `original_label` and the scene
as `scene`.
"""

import os
import pathlib
import re

import tensorflow_datasets as tfds

from ferjax.labels import EXPRESSIONS_7
from tfds_builders import clip_folders
from tfds_builders import manual_data

SPLITS = ('train', 'test')
CLIP_DIR = '2_ClipsforFaceCrop'
LIST_DIR = pathlib.PurePosixPath('4_setups/All_scenes')
LIST_FILES = {'train': 'train_All.csv', 'test': 'test_All.csv'}
# Folder names the release may be unpacked under, inside --manual_dir: the
# clips and the lists are looked for separately, as they ship in two zips.
RELEASE_DIRS = ('FERV39K', 'FERV39k', 'FERV39K/FERV39k')
# The frame size of the resized config.
SMALL_FRAME = 112

# Emotion folder / label word -> its expression name.
FERV_NAMES = manual_data.EXPRESSION_FOLDERS
# Emotion word -> index into `ferjax.labels.EXPRESSIONS_7`.
FERV_TO_CANONICAL = {k: EXPRESSIONS_7.index(v) for k, v in FERV_NAMES.items()}

_MANUAL_HELP = (
  'Point --manual_dir at the folder that holds `2_ClipsforFaceCrop/` and '
  '`4_setups/` (or at the one that holds `FERV39K/` with them inside), '
  'unpacked from the FERV39K release; see the manual download instructions '
  'in tfds_builders/ferv39k/README.md.'
)
_FIX = 'Restore the file or folder from the FERV39K release.'


def find_list_dir(manual_dir: os.PathLike | str) -> pathlib.Path:
  """Returns the `4_setups/All_scenes` folder given `--manual_dir`."""
  marker = LIST_DIR / LIST_FILES['train']
  release = manual_data.find_release_dir(
    manual_dir, marker, RELEASE_DIRS, _MANUAL_HELP
  )
  return release / LIST_DIR


def find_clip_dir(manual_dir: os.PathLike | str) -> pathlib.Path:
  """Returns the `2_ClipsforFaceCrop` folder of scenes given `--manual_dir`.

  A zip unpacked into a folder of its own name
  (`2_ClipsforFaceCrop/2_ClipsforFaceCrop/<Scene>`) is accepted too.
  """
  release = manual_data.find_release_dir(
    manual_dir, CLIP_DIR, RELEASE_DIRS, _MANUAL_HELP
  )
  clip_dir = release / CLIP_DIR
  return clip_dir / CLIP_DIR if (clip_dir / CLIP_DIR).is_dir() else clip_dir


def is_header(line: str) -> bool:
  """Whether a list's first line is its header (no clip path first)."""
  fields = line.split()
  return not fields or not re.search(r'[/\\]', fields[0])


def parse_line(line: str, clip_dir: pathlib.Path) -> clip_folders.Clip:
  """Parses one list line `<Scene>/<Emotion>/<clip id> <Emotion>`.

  Quotes are ignored (the line may be quoted as one CSV field), a comma may
  stand for the space, and backslashes in the path are read as slashes.

  Args:
    line: the line.
    clip_dir: the release's `2_ClipsforFaceCrop` folder.

  Raises:
    ValueError: describing a malformed line, an unknown label word, or a
      word that disagrees with the path's emotion folder.
  """
  fields = [f for f in re.split(r'[\s,"]+', line) if f]
  if len(fields) != 2:
    raise ValueError('expected `<Scene>/<Emotion>/<clip id> <Emotion>`')
  path, word = fields
  parts = path.replace('\\', '/').strip('/').split('/')
  if len(parts) != 3 or not all(parts):
    raise ValueError(f'{path!r} is not `<Scene>/<Emotion>/<clip id>`')
  if word not in FERV_TO_CANONICAL:
    raise ValueError(
      f'unknown label {word!r}; FERV39K labels are {", ".join(FERV_NAMES)}'
    )
  if parts[1] != word:
    raise ValueError(f'label {word!r} but the path is in {parts[1]}/')
  clip_id = '/'.join(parts)
  return clip_folders.Clip(
    id=clip_id,
    folder=clip_dir.joinpath(*parts),
    label=FERV_TO_CANONICAL[word],
    original_label=word,
  )


def read_splits(manual_dir: os.PathLike | str) -> dict:
  """Reads and checks both lists and every clip folder they name.

  Returns:
    split -> its clips, with their frames listed.

  Raises:
    manual_data.ManualDataError: naming a missing list or clip folder, a
      malformed line, a clip listed twice or in both splits, an empty clip
      folder.
  """
  list_dir = find_list_dir(manual_dir)
  clip_dir = find_clip_dir(manual_dir)
  splits = {}
  for split, name in LIST_FILES.items():
    path = list_dir / name
    if not path.is_file():
      raise manual_data.ManualDataError(f'{path} not found. {_FIX}')
    splits[split] = clip_folders.read_clip_list(
      path, lambda line: parse_line(line, clip_dir), is_header, _FIX
    )
  return clip_folders.list_frames(splits, _FIX)


class Builder(tfds.core.GeneratorBasedBuilder):
  """DatasetBuilder for ferv39k (face-crop clips, official split)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  # The first config is the default.
  BUILDER_CONFIGS = [
    clip_folders.ClipBuilderConfig(
      name='default', description='Frames as shipped (JPEG face crops).'
    ),
    clip_folders.ClipBuilderConfig(
      name=str(SMALL_FRAME),
      description=f'Frames shrunk to {SMALL_FRAME} px.',
      frame_size=SMALL_FRAME,
    ),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  FERV39K is distributed by its authors (Fudan University) for
  non-commercial research only. Follow "How to get the Password" in
  https://github.com/wangyanckxx/FERV39k : email the authors from a
  university account with the text given there; they reply with the
  password of the download.

  Unpack the face crops and the setups so that these exist:

    2_ClipsforFaceCrop/Action/Angry/0001/...
    4_setups/All_scenes/train_All.csv
    4_setups/All_scenes/test_All.csv

  and pass `--manual_dir` pointing at the folder that holds them (or at the
  one holding `FERV39K/` with them inside), e.g.
  `python -m ferjax.data.build ferv39k --manual_dir ~/data/FERV39K`.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    """Returns the dataset metadata."""
    return self.dataset_info_from_configs(
      features=clip_folders.clip_features(
        EXPRESSIONS_7,
        tfds.features.Text(
          doc=f'Label word as listed: {", ".join(FERV_NAMES)}.'
        ),
        id_doc='<Scene>/<Emotion>/<clip id>, the clip folder as listed.',
        scene=tfds.features.Text(doc='Scene folder, e.g. DailyLife.'),
      ),
      supervised_keys=('frames', 'label'),
      homepage='https://wangyanckxx.github.io/Proj_CVPR2022_FERV39k.html',
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    """Checks both lists and all clip folders, then returns generators."""
    splits = read_splits(dl_manager.manual_dir)
    return {
      split: self._generate_examples(clips) for split, clips in splits.items()
    }

  def _generate_examples(self, clips: list[clip_folders.Clip]):
    """Yields (id, example) for the clips of one split."""
    size = self.builder_config.frame_size
    for clip in clips:
      scene = clip.id.split('/', 1)[0]
      yield clip.id, {**clip_folders.clip_example(clip, size), 'scene': scene}

"""sfew: SFEW 2.0 aligned faces, 7 expressions, from the manual download.

Reads the official Train and Val folders of aligned face crops, one folder
per class:

  Train_Aligned_Faces/<Class>/<name>.png   -> split `train`
  Val_Aligned_Faces/<Class>/<name>.png     -> split `validation`

each directly under `--manual_dir` or inside `Train/` and `Val/`, as the
zips unpack. The Test labels are not public, so papers report on Val. Class
folders map into ferjax's canonical order; the folder name is kept as
`original_label`. Images are stored as shipped, without re-encoding.
"""

import os
import pathlib

import tensorflow_datasets as tfds

from ferjax.labels import EXPRESSIONS_7
from tfds_builders import class_folders
from tfds_builders import manual_data

# Split -> (its folder, the folder the zip unpacks it in).
SPLIT_DIRS = {
  'train': ('Train_Aligned_Faces', 'Train'),
  'validation': ('Val_Aligned_Faces', 'Val'),
}
# SFEW class folder -> its expression name: Angry, Disgust, Fear, Happy,
# Neutral, Sad, Surprise.
SFEW_NAMES = manual_data.EXPRESSION_FOLDERS
# SFEW class folder -> index into `ferjax.labels.EXPRESSIONS_7`.
SFEW_TO_CANONICAL = {k: EXPRESSIONS_7.index(v) for k, v in SFEW_NAMES.items()}
# The release ships PNG; JPEG copies are accepted as they are.
EXTENSIONS = ('.png', '.jpg')

_MANUAL_HELP = (
  'Point --manual_dir at the folder that holds `Train_Aligned_Faces/` and '
  '`Val_Aligned_Faces/` (or `Train/` and `Val/` with them inside), unpacked '
  'from the SFEW 2.0 release; see the manual download instructions in '
  'tfds_builders/sfew/README.md.'
)
_FIX = (
  'Unzip the folder again from the SFEW 2.0 release, which holds only the '
  'seven class folders, each with its face images.'
)


def find_split_dir(manual_dir: os.PathLike | str, split: str) -> pathlib.Path:
  """Returns the folder of `split` ('train' or 'validation').

  Args:
    manual_dir: the folder holding `Train_Aligned_Faces/` (or `Train/` with
      it inside) and the same for Val.
    split: 'train' or 'validation'.

  Raises:
    manual_data.ManualDataError: naming the paths tried if neither exists.
  """
  name, parent = SPLIT_DIRS[split]
  return (
    manual_data.find_release_dir(manual_dir, name, (parent,), _MANUAL_HELP)
    / name
  )


class Builder(tfds.core.GeneratorBasedBuilder):
  """DatasetBuilder for sfew (SFEW 2.0 aligned faces, Train and Val)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  SFEW 2.0 (Static Facial Expressions in the Wild, the image set of the
  EmotiW challenges) is distributed by its authors for research only.
  Request it on the AFEW/SFEW page of Abhinav Dhall's group,
  https://users.cecs.anu.edu.au/~few_group/AFEW.html : sign the license
  agreement as that page describes; the authors then grant access to the
  zips.

  Unzip the aligned faces of Train and Val so that these exist:

    Train_Aligned_Faces/Angry/... Train_Aligned_Faces/Surprise/...
    Val_Aligned_Faces/Angry/...   Val_Aligned_Faces/Surprise/...

  (`Train/Train_Aligned_Faces/` and `Val/Val_Aligned_Faces/`, as the zips
  unpack, are accepted too) and pass `--manual_dir` pointing at the folder
  that holds them, e.g.
  `python -m ferjax.data.build sfew --manual_dir ~/data/SFEW2`.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    """Returns the dataset metadata."""
    return self.dataset_info_from_configs(
      # PNG in the release, JPEG accepted: no single format to declare.
      features=class_folders.class_folder_features(
        EXPRESSIONS_7, None, ', '.join(SFEW_NAMES)
      ),
      supervised_keys=('image', 'label'),
      homepage='https://users.cecs.anu.edu.au/~few_group/AFEW.html',
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    """Lists and checks both splits, then returns their generators."""
    files = {
      split: class_folders.class_folder_files(
        find_split_dir(dl_manager.manual_dir, split),
        SFEW_TO_CANONICAL,
        EXTENSIONS,
        _FIX,
      )
      for split in SPLIT_DIRS
    }
    return {split: self._generate_examples(f) for split, f in files.items()}

  def _generate_examples(self, files: list[class_folders.ClassFile]):
    """Yields (id, example) for the files of one split."""
    return class_folders.class_folder_examples(files)

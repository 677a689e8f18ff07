"""caer_s: CAER-S video frames, 7 expressions, from the manual download.

Reads the official layout, one folder per class in each split:

  CAER-S/train/<Class>/<NNNN>.png   -> split `train`
  CAER-S/test/<Class>/<NNNN>.png    -> split `test`

The anger folder is `Angry` in train and `Anger` in test; either name is
accepted in either split. Images are whole frames of TV-show clips (face and
context). Config 'frames' (the default) stores them as shipped PNGs without
re-encoding; config 'aligned' stores each frame's largest face instead, found
by MTCNN and aligned onto RAF-DB's 100 px template ('rafdb' crops), keeping
frames without a face whole (`tfds_builders.face_align`; the detector,
template and count of frames without a face are in
`info.metadata['alignment']`). Class folders map into ferjax's canonical
order; the folder name is kept as `original_label`.
"""

import dataclasses
import os
import pathlib

import cv2
import numpy as np
import tensorflow_datasets as tfds

from ferjax.labels import EXPRESSIONS_7
from tfds_builders import class_folders
from tfds_builders import face_align
from tfds_builders import manual_data

SPLITS = ('train', 'test')
RELEASE_DIR = 'CAER-S'
# CAER-S class folder -> its expression name: Angry (train) or Anger (test),
# Disgust, Fear, Happy, Neutral, Sad, Surprise.
CAER_NAMES = {**manual_data.EXPRESSION_FOLDERS, 'Anger': 'anger'}
# CAER-S class folder -> index into `ferjax.labels.EXPRESSIONS_7`.
CAER_TO_CANONICAL = {k: EXPRESSIONS_7.index(v) for k, v in CAER_NAMES.items()}
EXTENSIONS = ('.png',)

_MANUAL_HELP = (
  'Point --manual_dir at `CAER-S/` (the folder with `train/` and `test/`) '
  'or at the folder containing it, unpacked from the CAER-S release; see '
  'the manual download instructions in tfds_builders/caer_s/README.md.'
)
_FIX = (
  'Unpack the folder again from the CAER-S release, which holds only the '
  'seven class folders, each with its PNG frames.'
)


@dataclasses.dataclass(kw_only=True)
class CaerSConfig(tfds.core.BuilderConfig):
  """Whole frames, or aligned faces.

  Attributes:
    align: None stores the frames; a `ferjax.faces.crops` style name stores
      each frame's largest face cut in that style.
    no_face: 'keep' (store the frame whole) or 'drop' a frame without a
      face, when aligning.
  """

  align: str | None = None
  no_face: str = 'keep'


def find_release(manual_dir: os.PathLike | str) -> pathlib.Path:
  """Returns the `CAER-S/` folder given `--manual_dir`.

  Args:
    manual_dir: `CAER-S/` itself or the folder containing it.

  Raises:
    manual_data.ManualDataError: naming the paths tried if neither holds
      `train/`.
  """
  return manual_data.find_release_dir(
    manual_dir, SPLITS[0], (RELEASE_DIR,), _MANUAL_HELP
  )


class Builder(tfds.core.GeneratorBasedBuilder):
  """DatasetBuilder for caer_s (CAER-S frames, train and test)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  # The first config is the default.
  BUILDER_CONFIGS = [
    CaerSConfig(name='frames', description='Whole frames, as shipped.'),
    CaerSConfig(
      name='aligned',
      description="Each frame's largest face, aligned as RAF-DB's images.",
      align='rafdb',
    ),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  CAER-S (the static-image part of CAER, Yonsei University) is distributed
  by its authors for non-commercial research only. Request it on the
  official site, https://caer-dataset.github.io/ : fill in the request form
  there, agreeing to its terms, and the authors send the download link.

  Unpack the archive so that these exist:

    CAER-S/train/Angry/0001.png ... CAER-S/train/Surprise/...
    CAER-S/test/Anger/0001.png  ... CAER-S/test/Surprise/...

  and pass `--manual_dir` pointing at `CAER-S/` or at the folder containing
  it, e.g. `python -m ferjax.data.build caer_s --manual_dir ~/data/CAER-S`.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    """Returns the dataset metadata."""
    return self.dataset_info_from_configs(
      features=class_folders.class_folder_features(
        EXPRESSIONS_7, 'png', ', '.join(sorted(CAER_NAMES))
      ),
      supervised_keys=('image', 'label'),
      homepage='https://caer-dataset.github.io/',
      metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    """Lists and checks both splits, then returns their generators."""
    release = find_release(dl_manager.manual_dir)
    files = {
      split: class_folders.class_folder_files(
        release / split, CAER_TO_CANONICAL, EXTENSIONS, _FIX
      )
      for split in SPLITS
    }
    aligner = None
    if self.builder_config.align:
      aligner = face_align.Aligner(
        self.builder_config.align, self.builder_config.no_face
      )
      self.info.metadata['alignment'] = aligner.metadata()
    return {
      split: self._generate_examples(f, split, aligner)
      for split, f in files.items()
    }

  def _generate_examples(self, files, split: str, aligner=None):
    """Yields (id, example) for the files of one split."""
    for key, example in class_folders.class_folder_examples(files):
      if aligner is not None:
        frame = cv2.imdecode(np.frombuffer(example['image'], np.uint8), 1)
        face, _ = aligner.align(frame, split)
        if face is None:
          continue
        example['image'] = face_align.encode_png(face)
      yield key, example

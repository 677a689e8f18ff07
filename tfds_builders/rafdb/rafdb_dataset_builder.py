"""rafdb: RAF-DB basic, 7 expressions, from the manually downloaded release.

Reads the official layout under `basic/`:

  EmoLabel/list_patition_label.txt   lines `<name>.jpg <label>`, label 1..7
  Image/aligned/<stem>_aligned.jpg   100x100 aligned faces

The split is the file name's prefix (`train_` or `test_`). Labels are mapped
into ferjax's canonical order; the dataset's own id is kept as
`original_label`. JPEGs are stored as shipped, without re-encoding.
"""

import os
import pathlib

import numpy as np
import tensorflow_datasets as tfds

from ferjax.labels import EXPRESSIONS_7
from tfds_builders import manual_data

LABEL_FILE = pathlib.PurePosixPath('EmoLabel/list_patition_label.txt')
IMAGE_DIR = pathlib.PurePosixPath('Image/aligned')
# Folder names the release may be unpacked under, inside --manual_dir.
BASIC_DIRS = ('basic', 'raf-basic')
SPLITS = ('train', 'test')

# RAF-DB label id (1..7) -> its name, as in the release's readme.
RAF_NAMES = {
  1: 'surprise',
  2: 'fear',
  3: 'disgust',
  4: 'happiness',
  5: 'sadness',
  6: 'anger',
  7: 'neutral',
}
# RAF-DB label id -> index into `ferjax.labels.EXPRESSIONS_7`.
RAF_TO_CANONICAL = {k: EXPRESSIONS_7.index(v) for k, v in RAF_NAMES.items()}

_MANUAL_HELP = (
  'Point --manual_dir at the folder that contains `basic/` (or at `basic/` '
  'itself), unpacked from the RAF-DB release; see the manual download '
  'instructions in tfds_builders/rafdb/README.md.'
)


def find_basic_dir(manual_dir: os.PathLike | str) -> pathlib.Path:
  """Returns the `basic/` folder of the release given `--manual_dir`.

  Args:
    manual_dir: `basic/` itself or a folder containing it (also accepted
      under the name `raf-basic/`, as many code bases unpack it).

  Raises:
    manual_data.ManualDataError: if no candidate holds the label file.
  """
  return manual_data.find_release_dir(
    manual_dir, LABEL_FILE, BASIC_DIRS, _MANUAL_HELP
  )


def read_labels(label_file: os.PathLike | str) -> list[tuple[str, str, int]]:
  """Parses the partition/label list.

  Args:
    label_file: path of `list_patition_label.txt`.

  Returns:
    (split, file name, RAF label 1..7) per line, in file order.

  Raises:
    manual_data.ManualDataError: naming the file and line of the first
      malformed line, unknown label, unknown split prefix or repeated name.
  """
  rows = []
  seen = {}
  with manual_data.open_text(label_file) as f:
    text = f.read()
  for lineno, line in enumerate(text.splitlines(), start=1):
    where = manual_data.where(label_file, lineno)
    fields = line.split()
    if not fields:  # Blank lines carry nothing, e.g. a trailing one.
      continue
    if len(fields) != 2 or not fields[0].endswith('.jpg'):
      raise manual_data.ManualDataError(
        f'{where}: malformed line {line!r}; expected `<name>.jpg <label>` '
        'as in the official release. Restore the file from the download.'
      )
    name, label = fields
    try:
      raf_label = int(label)
    except ValueError:
      raf_label = None
    if raf_label not in RAF_NAMES:
      raise manual_data.ManualDataError(
        f'{where}: unknown label {label!r} for {name}; RAF-DB basic labels '
        'are 1..7. Restore the file from the download.'
      )
    split = name.split('_', 1)[0]
    if split not in SPLITS or '_' not in name:
      raise manual_data.ManualDataError(
        f'{where}: {name} starts with neither `train_` nor `test_`, so its '
        'split is unknown. Restore the file from the download.'
      )
    if name in seen:
      raise manual_data.ManualDataError(
        f'{where}: {name} is listed again (first at line {seen[name]}). '
        'Restore the file from the download.'
      )
    seen[name] = lineno
    rows.append((split, name, raf_label))
  if not rows:
    raise manual_data.ManualDataError(
      f'{label_file} lists no images. {_MANUAL_HELP}'
    )
  return rows


def image_path(basic_dir: pathlib.Path, name: str) -> pathlib.Path:
  """Path of the aligned image of list entry `name` (`x.jpg`)."""
  return basic_dir / IMAGE_DIR / f'{name.removesuffix(".jpg")}_aligned.jpg'


class Builder(tfds.core.GeneratorBasedBuilder):
  """DatasetBuilder for rafdb (basic, aligned 100x100 images)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  RAF-DB is distributed by its authors for non-commercial research only.
  Request access on the official site, http://www.whdeng.cn/RAF/model1.html
  (Pattern Recognition and Intelligent System Laboratory, Beijing University
  of Posts and Telecommunications): read and sign the license agreement and
  email it as the site says; the authors reply with the download password.

  Unpack the basic set so that these exist:

    basic/EmoLabel/list_patition_label.txt
    basic/Image/aligned/train_00001_aligned.jpg ...

  and pass `--manual_dir` pointing at the folder containing `basic/` or at
  `basic/` itself, e.g.
  `python -m ferjax.data.build rafdb --manual_dir ~/data/RAF-DB`.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    """Returns the dataset metadata."""
    return self.dataset_info_from_configs(
      features=tfds.features.FeaturesDict(
        {
          'image': tfds.features.Image(
            shape=(None, None, 3), encoding_format='jpeg'
          ),
          'label': tfds.features.ClassLabel(names=EXPRESSIONS_7),
          'original_label': tfds.features.Scalar(
            dtype=np.int64,
            doc='RAF-DB label id: 1 surprise, 2 fear, 3 disgust, '
            '4 happiness, 5 sadness, 6 anger, 7 neutral.',
          ),
          'id': tfds.features.Text(doc='File name in the label list.'),
        }
      ),
      supervised_keys=('image', 'label'),
      homepage='http://www.whdeng.cn/RAF/model1.html',
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    """Checks the whole release, then returns the train and test generators."""
    basic_dir = find_basic_dir(dl_manager.manual_dir)
    rows = read_labels(basic_dir / LABEL_FILE)
    # Check every image up front so a bad release fails before writing.
    manual_data.check_files_exist(
      ((image_path(basic_dir, name), name) for _, name, _ in rows),
      f'Unpack the complete `{IMAGE_DIR}` folder of the release into '
      f'{basic_dir}.',
    )
    return {
      split: self._generate_examples(
        basic_dir, [r for r in rows if r[0] == split]
      )
      for split in SPLITS
    }

  def _generate_examples(self, basic_dir: pathlib.Path, rows):
    """Yields (file name, example) for the rows of one split."""
    for _, name, raf_label in rows:
      yield name, make_example(basic_dir, name, raf_label)


def make_example(basic_dir: pathlib.Path, name: str, raf_label: int) -> dict:
  """Reads one aligned image as a feature dict.

  Args:
    basic_dir: the release's `basic/` folder.
    name: file name from the label list (`train_00001.jpg`).
    raf_label: its RAF-DB label, 1..7.

  Returns:
    {'image': JPEG bytes as shipped, 'label': canonical index,
    'original_label': raf_label, 'id': name}.

  Raises:
    manual_data.ManualDataError: if the file is not a decodable 3-channel image.
  """
  path = image_path(basic_dir, name)
  data = path.read_bytes()
  # Stored bytes are decoded later as they are, so check them now: a
  # truncated or grayscale file would break readers, not this build.
  manual_data.decode_image(data, path, channels=(3,))
  return {
    'image': data,
    'label': RAF_TO_CANONICAL[raf_label],
    'original_label': raf_label,
    'id': name,
  }

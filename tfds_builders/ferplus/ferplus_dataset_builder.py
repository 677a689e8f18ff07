"""ferplus: FER2013 faces with the FERPlus crowd-sourced labels, 8 classes.

Reads two manually downloaded CSV files that align row by row:

  fer2013.csv     `emotion,pixels,Usage`: 48x48 grayscale faces (Kaggle)
  fer2013new.csv  `Usage,Image name,<10 vote counts>`: FERPlus's votes

Row i of one file describes the face in row i of the other; the image names
are not row numbers. Usage picks the split: Training -> train, PublicTest ->
validation, PrivateTest -> test. Votes become labels by the rules of the
FERPlus reference code (see `vote_rules.py`): config `majority` keeps the
examples with a majority expression, config `probability` adds the vote
distribution that FERPlus trains on with cross-entropy. Pixels are stored
as lossless PNG.
"""

import collections
import csv
import dataclasses
import logging
import os
import pathlib
from collections.abc import Sequence

import cv2
import numpy as np
import tensorflow_datasets as tfds

from ferjax.labels import EXPRESSIONS
from tfds_builders import manual_data
from tfds_builders.ferplus import vote_rules

FER_FILE = 'fer2013.csv'
FERPLUS_FILE = 'fer2013new.csv'
FER_HEADER = ('emotion', 'pixels', 'Usage')
FERPLUS_HEADER = ('Usage', 'Image name', *vote_rules.VOTE_COLUMNS)
SPLITS = {
  'Training': 'train',
  'PublicTest': 'validation',
  'PrivateTest': 'test',
}
NUM_FER_LABELS = 7  # FER2013 emotion 0..6.
IMAGE_SIZE = 48
NUM_PIXELS = IMAGE_SIZE * IMAGE_SIZE
# Folders the two files may sit in, inside --manual_dir.
SEARCH_DIRS = ('fer2013', 'FERPlus', 'ferplus')

_MANUAL_HELP = (
  f'Put {FER_FILE} (Kaggle FER2013 download) and {FERPLUS_FILE} '
  '(github.com/microsoft/FERPlus) in --manual_dir or in its '
  f'{", ".join(d + "/" for d in SEARCH_DIRS)} subfolders; see the manual '
  'download instructions in tfds_builders/ferplus/README.md.'
)
_RESTORE = 'Restore the file from the download.'


def find_inputs(
  manual_dir: os.PathLike | str,
) -> tuple[pathlib.Path, pathlib.Path]:
  """Returns the paths of fer2013.csv and fer2013new.csv.

  Args:
    manual_dir: the folder holding both files, directly or in one of the
      `SEARCH_DIRS` subfolders (each file is looked for on its own).

  Raises:
    manual_data.ManualDataError: naming every path tried for each missing file.
  """
  found, missing = [], []
  for name in (FER_FILE, FERPLUS_FILE):
    try:
      found.append(
        manual_data.find_release_dir(manual_dir, name, SEARCH_DIRS, '') / name
      )
    except manual_data.ManualDataError as e:
      missing.append(str(e).strip())
  if missing:
    raise manual_data.ManualDataError('\n'.join([*missing, _MANUAL_HELP]))
  return found[0], found[1]


def _rows(path: pathlib.Path, header: tuple[str, ...]):
  """Yields (line, stripped fields) of each data row of a CSV file.

  Raises:
    manual_data.ManualDataError: naming the file and line of a wrong header, a
      row with another number of columns or an unknown Usage.
  """
  with manual_data.open_text(path) as f:
    reader = csv.reader(f)
    first = [x.strip() for x in next(reader, [])]
    if tuple(first) != header:
      raise manual_data.ManualDataError(
        f'{manual_data.where(path, 1)}: header {",".join(first)[:60]!r}; '
        f'expected `{",".join(header)}` as in the official file. {_RESTORE}'
      )
    for fields in reader:
      where = manual_data.where(path, reader.line_num)
      if not fields:  # Blank lines carry nothing, e.g. a trailing one.
        continue
      fields = [x.strip() for x in fields]
      if len(fields) != len(header):
        raise manual_data.ManualDataError(
          f'{where}: {len(fields)} columns; expected {len(header)} '
          f'({",".join(header)}). {_RESTORE}'
        )
      usage = fields[header.index('Usage')]
      if usage not in SPLITS:
        raise manual_data.ManualDataError(
          f'{where}: unknown Usage {usage!r}; expected one of '
          f'{", ".join(SPLITS)}. {_RESTORE}'
        )
      yield reader.line_num, fields


def _is_count(text: str) -> bool:
  """Whether `text` is a non-negative integer in ASCII digits."""
  return text.isascii() and text.isdigit()


def parse_pixels(text: str, where: str) -> np.ndarray:
  """Parses FER2013's space-separated pixels into a 48x48 uint8 image.

  Raises:
    manual_data.ManualDataError: starting with `where` if there are not 2304
      integers in 0..255.
  """
  tokens = text.split()
  if len(tokens) != NUM_PIXELS:
    raise manual_data.ManualDataError(
      f'{where}: {len(tokens)} pixel values; expected {NUM_PIXELS} '
      f'({IMAGE_SIZE}x{IMAGE_SIZE}). {_RESTORE}'
    )
  values = None
  if _is_count(''.join(tokens)):  # One check for the whole row.
    values = np.array(tokens, dtype=np.int64)
  if values is None or values.max() > 255:
    bad = next(t for t in tokens if not _is_count(t) or int(t) > 255)
    raise manual_data.ManualDataError(
      f'{where}: pixel value {bad!r} is not an integer in 0..255. {_RESTORE}'
    )
  return values.astype(np.uint8).reshape(IMAGE_SIZE, IMAGE_SIZE)


def read_fer2013(path: pathlib.Path) -> list[tuple[int, str, int, np.ndarray]]:
  """(line, Usage, emotion 0..6, 48x48 uint8 pixels) per row of fer2013.csv.

  Raises:
    manual_data.ManualDataError: naming the file and line of the first bad row.
  """
  rows = []
  for lineno, fields in _rows(path, FER_HEADER):
    where = manual_data.where(path, lineno)
    emotion, pixels, usage = fields
    if not _is_count(emotion) or int(emotion) >= NUM_FER_LABELS:
      raise manual_data.ManualDataError(
        f'{where}: emotion {emotion!r} is not a FER2013 label 0..6. {_RESTORE}'
      )
    rows.append((lineno, usage, int(emotion), parse_pixels(pixels, where)))
  return rows


def read_ferplus(
  path: pathlib.Path,
) -> list[tuple[int, str, str, tuple[int, ...]]]:
  """(line, Usage, image name or '', 10 votes) per row of fer2013new.csv.

  Raises:
    manual_data.ManualDataError: naming the file and line of the first bad row.
  """
  rows = []
  for lineno, fields in _rows(path, FERPLUS_HEADER):
    where = manual_data.where(path, lineno)
    usage, name, *counts = fields
    for column, count in zip(vote_rules.VOTE_COLUMNS, counts, strict=True):
      if not _is_count(count):
        raise manual_data.ManualDataError(
          f'{where}: {column} vote count {count!r} is not a non-negative '
          f'integer. {_RESTORE}'
        )
    rows.append((lineno, usage, name, tuple(int(c) for c in counts)))
  return rows


@dataclasses.dataclass(frozen=True)
class Row:
  """One face: a row of fer2013.csv with the same row of fer2013new.csv.

  Attributes:
    index: 0-based data row (the header is not counted), same in both files.
    line: its line in fer2013new.csv.
    split: 'train', 'validation' or 'test'.
    name: FERPlus image name; '' where FERPlus marks the row as no face.
    votes: the 10 vote counts in `vote_rules.VOTE_COLUMNS` order.
    emotion: FER2013 emotion 0..6.
    pixels: 48x48 uint8 grayscale.
  """

  index: int
  line: int
  split: str
  name: str
  votes: tuple[int, ...]
  emotion: int
  pixels: np.ndarray


def align(fer_path: pathlib.Path, ferplus_path: pathlib.Path) -> list[Row]:
  """Reads both files and pairs their rows by position.

  Raises:
    manual_data.ManualDataError: for a malformed row, or if the files differ in
      row count or in the Usage of a row.
  """
  fer = read_fer2013(fer_path)
  plus = read_ferplus(ferplus_path)
  if not plus:
    raise manual_data.ManualDataError(
      f'{ferplus_path} has no data rows. {_RESTORE}'
    )
  if len(fer) != len(plus):
    n = min(len(fer), len(plus))
    longer, extra = (fer_path, fer) if len(fer) > n else (ferplus_path, plus)
    raise manual_data.ManualDataError(
      f'{manual_data.where(longer, extra[n][0])}: no matching row in the other '
      f'file ({fer_path}: {len(fer)} data rows, {ferplus_path}: '
      f'{len(plus)}). The files pair up row by row, so both must be '
      'complete (35,887 rows each).'
    )
  rows = []
  for index, ((line_a, usage_a, emotion, pixels), plus_row) in enumerate(
    zip(fer, plus, strict=True)
  ):
    line, usage, name, votes = plus_row
    if usage != usage_a:
      raise manual_data.ManualDataError(
        f'{manual_data.where(ferplus_path, line)}: Usage {usage!r}, but the '
        f'same row of {manual_data.where(fer_path, line_a)} has {usage_a!r}. '
        'The files pair up row by row; restore both from the downloads.'
      )
    rows.append(Row(index, line, SPLITS[usage], name, votes, emotion, pixels))
  return rows


def example_ids(rows: Sequence[Row]) -> list[str]:
  """The image name of each row, or `row-<index>` where it is not unique."""
  names = collections.Counter(r.name for r in rows)
  return [
    r.name if r.name and names[r.name] == 1 else f'row-{r.index}' for r in rows
  ]


def select(rows: Sequence[Row], config: str, source: str):
  """Applies the config's rules, splitting rows into kept and dropped.

  Args:
    rows: every row of the two files.
    config: 'majority' or 'probability'.
    source: the name fer2013new.csv goes by, for the skip report.

  Returns:
    (kept, skips, dropped): kept[split] lists (id, row, label, distribution)
    with the canonical label; skips lists the rows without an image name;
    dropped[split] counts the other dropped rows by result ('unknown',
    'NF').
  """
  kept = {split: [] for split in SPLITS.values()}
  dropped = {split: {'unknown': 0, 'NF': 0} for split in SPLITS.values()}
  skips = manual_data.SkipReport()
  for key, row in zip(example_ids(rows), rows, strict=True):
    if not row.name:
      skips.add(row.split, f'{source}:{row.line}', 'no image name: not a face')
      continue
    # FERPlus evaluates (validation, test) with 'majority' in every mode.
    train = config == 'probability' and row.split == 'train'
    column, dist = vote_rules.row_target(
      row.votes, 'probability' if train else 'majority'
    )
    if column >= vote_rules.UNKNOWN:
      dropped[row.split][vote_rules.VOTE_COLUMNS[column]] += 1
      continue
    kept[row.split].append(
      (key, row, vote_rules.FERPLUS_TO_CANONICAL[column], dist)
    )
  return kept, skips, dropped


def make_example(
  key: str, row: Row, label: int, dist: np.ndarray | None
) -> dict:
  """One feature dict; `dist` (config 'probability' only) may be None."""
  png = cv2.imencode('.png', row.pixels)[1]  # Lossless, one channel.
  example = {
    'image': png.tobytes(),
    'label': label,
    'votes': np.asarray(row.votes, np.int64),
    'original_label': row.emotion,
    'id': key,
  }
  if dist is not None:
    example['label_distribution'] = dist
  return example


class Builder(tfds.core.GeneratorBasedBuilder):
  """DatasetBuilder for ferplus (FER2013 images, FERPlus labels)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  # The first config is the default.
  BUILDER_CONFIGS = [
    tfds.core.BuilderConfig(
      name='majority',
      description='Examples with a majority expression, as FERPlus keeps '
      'them; label = the majority.',
    ),
    tfds.core.BuilderConfig(
      name='probability',
      description='Adds label_distribution, the vote distribution FERPlus '
      'trains on with cross-entropy; validation and test as in majority.',
    ),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  FERPlus relabels the FER2013 faces; the two come from different places.

  1. fer2013.csv: sign in to Kaggle, accept the rules of the competition
     "Challenges in Representation Learning: Facial Expression Recognition
     Challenge" and download fer2013.tar.gz from its data page,
     https://www.kaggle.com/c/challenges-in-representation-learning-facial-expression-recognition-challenge/data
     Unpacking it gives fer2013/fer2013.csv.
  2. fer2013new.csv: from https://github.com/microsoft/FERPlus (the labels
     are MIT-licensed), e.g. `git clone` it or download the one file.

  Put both files in one folder, or each in a subfolder fer2013/, FERPlus/
  or ferplus/ of it, and pass `--manual_dir` pointing at that folder, e.g.
  `python -m ferjax.data.build ferplus --config majority
  --manual_dir ~/data/fer` with ~/data/fer/fer2013/fer2013.csv and
  ~/data/fer/FERPlus/fer2013new.csv.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    """Returns the dataset metadata."""
    features = {
      'image': tfds.features.Image(
        shape=(IMAGE_SIZE, IMAGE_SIZE, 1), encoding_format='png'
      ),
      'label': tfds.features.ClassLabel(names=EXPRESSIONS),
      'votes': tfds.features.Tensor(
        shape=(len(vote_rules.VOTE_COLUMNS),),
        dtype=np.int64,
        doc='FERPlus vote counts, in its column order: '
        + ', '.join(vote_rules.VOTE_COLUMNS)
        + ' (NF: not a face).',
      ),
      'original_label': tfds.features.Scalar(
        dtype=np.int64,
        doc='FER2013 emotion: 0 angry, 1 disgust, 2 fear, 3 happy, 4 sad, '
        '5 surprise, 6 neutral.',
      ),
      'id': tfds.features.Text(
        doc='FERPlus image name, or row-<0-based row> where it is repeated.'
      ),
    }
    if self.builder_config.name == 'probability':
      features['label_distribution'] = tfds.features.Tensor(
        shape=(len(EXPRESSIONS),),
        dtype=np.float32,
        doc='Training target over the canonical classes (train: FERPlus '
        'probability rule; validation/test: one-hot majority).',
      )
    return self.dataset_info_from_configs(
      features=tfds.features.FeaturesDict(features),
      supervised_keys=('image', 'label'),
      homepage='https://github.com/microsoft/FERPlus',
      metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    """Checks both files entirely, then returns the three generators."""
    fer_path, ferplus_path = find_inputs(dl_manager.manual_dir)
    rows = align(fer_path, ferplus_path)
    config = self.builder_config.name
    kept, skips, dropped = select(rows, config, ferplus_path.name)
    skips.save(self.info)
    self.info.metadata['dropped'] = dropped
    logging.info('ferplus/%s: dropped by the label rule: %s', config, dropped)
    with_dist = config == 'probability'
    return {
      split: self._generate_examples(examples, with_dist)
      for split, examples in kept.items()
    }

  def _generate_examples(self, examples, with_dist: bool):
    """Yields (id, example) for the kept rows of one split."""
    for key, row, label, dist in examples:
      yield key, make_example(key, row, label, dist if with_dist else None)

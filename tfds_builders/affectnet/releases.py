"""Reading AffectNet's two releases: where they sit and what they list.

The original release lists its images in `Manually_Annotated_file_lists/
{training,validation}.csv` (path, face box, 68 landmarks, expression,
valence, arousal per row); the newer one keeps `annotations/<id>_<kind>.npy`
files beside 224 px face crops in `train_set/` and `val_set/`. Both are read
into `Row`s here; `affectnet_dataset_builder` turns rows into examples.
"""

import csv
import dataclasses
import math
import os
import pathlib

import numpy as np

from ferjax.labels import EXPRESSIONS
from tfds_builders import manual_data

SPLITS = ('train', 'test')
# Original release: label lists and image folder.
CSV_DIR = pathlib.PurePosixPath('Manually_Annotated_file_lists')
CSV_FILES = {'train': 'training.csv', 'test': 'validation.csv'}
IMAGE_DIR = 'Manually_Annotated_Images'
IMAGE_PARENTS = ('Manually_Annotated',)  # where IMAGE_DIR may sit instead
COLUMNS = (
  'subDirectory_filePath',
  'face_x',
  'face_y',
  'face_width',
  'face_height',
  'facial_landmarks',
  'expression',
  'valence',
  'arousal',
)
# Newer release: one folder per split.
NPY_DIRS = {'train': 'train_set', 'test': 'val_set'}
NPY_KINDS = ('exp', 'val', 'aro', 'lnd')  # annotations/<id>_<kind>.npy
# Folder names a release may be unpacked under, inside --manual_dir.
RELEASE_DIRS = ('AffectNet', 'affectnet')
NUM_LANDMARKS = 68
# Listed in the original validation set, but shipped unreadable.
KNOWN_BROKEN = frozenset(
  {'103/29a31ebf1567693f4644c8ba3476ca9a72ee07fe67a5860d98707a0a.jpg'}
)

# AffectNet expression id -> its name, as in the release.
AFFECTNET_NAMES = {
  0: 'neutral',
  1: 'happiness',
  2: 'sadness',
  3: 'surprise',
  4: 'fear',
  5: 'disgust',
  6: 'anger',
  7: 'contempt',
  8: 'none',
  9: 'uncertain',
  10: 'non-face',
}
# AffectNet id -> index into `ferjax.labels.EXPRESSIONS`; 8..10 have none.
AFFECTNET_TO_CANONICAL = {
  k: EXPRESSIONS.index(v) for k, v in AFFECTNET_NAMES.items() if k <= 7
}

_MANUAL_HELP = (
  'Point --manual_dir at the folder holding `Manually_Annotated_file_lists/` '
  'and `Manually_Annotated_Images/` (original release) or `train_set/` and '
  '`val_set/` (newer release); see the manual download instructions in '
  'tfds_builders/affectnet/README.md.'
)


@dataclasses.dataclass(frozen=True)
class Row:
  """One listed image of either release.

  `key` is unique within its split; `where` says where the image is listed
  (`file:line`, or its `_exp.npy` file). `box` is None for the newer
  release, whose images are face crops already.
  """

  split: str
  key: str
  id: str
  where: str
  path: pathlib.Path
  original_label: int
  landmarks: np.ndarray
  valence: float
  arousal: float
  box: tuple[float, float, float, float] | None = None


def data_error(
  where: manual_data.PathLike, problem: str
) -> manual_data.ManualDataError:
  """A damaged release file: where, what is wrong, and the fix."""
  return manual_data.ManualDataError(
    f'{where}: {problem}. Restore the file from the download.'
  )


def find_release(manual_dir: os.PathLike | str) -> tuple[str, pathlib.Path]:
  """Returns ('original' or 'npy', the release folder) inside `manual_dir`.

  Raises:
    manual_data.ManualDataError: naming every path tried, for both releases.
  """
  errors = []
  for kind, marker in (('original', CSV_DIR), ('npy', NPY_DIRS['train'])):
    try:
      return kind, manual_data.find_release_dir(
        manual_dir, marker, RELEASE_DIRS, ''
      )
    except manual_data.ManualDataError as e:
      errors.append(str(e).strip())
  raise manual_data.ManualDataError(
    f'No AffectNet release in {manual_dir}: {" ".join(errors)} {_MANUAL_HELP}'
  )


def find_image_dir(release_dir: pathlib.Path) -> pathlib.Path:
  """`Manually_Annotated_Images/` of the original release."""
  parent = manual_data.find_release_dir(
    release_dir, IMAGE_DIR, IMAGE_PARENTS, _MANUAL_HELP
  )
  return parent / IMAGE_DIR


def _require(path: pathlib.Path) -> pathlib.Path:
  if not path.exists():
    raise manual_data.ManualDataError(f'{path} not found. {_MANUAL_HELP}')
  return path


def _float(text) -> float:
  try:
    return float(text)
  except ValueError:
    return math.nan


def _number(text: str, what: str, where: manual_data.PathLike) -> float:
  value = _float(text)
  if not math.isfinite(value):
    raise data_error(where, f'{what} {text!r} is not a number')
  return value


def _label(value, where: manual_data.PathLike) -> int:
  """Checks an expression id is an integer in 0..10."""
  label = _float(value)
  if not (label.is_integer() and int(label) in AFFECTNET_NAMES):
    raise data_error(where, f'unknown expression {value!r}; ids are 0..10')
  return int(label)


def _landmarks(values: list[float], where: manual_data.PathLike) -> np.ndarray:
  if len(values) != 2 * NUM_LANDMARKS:
    raise data_error(
      where, f'{len(values)} landmark values, expected 136 (68 x, y pairs)'
    )
  return np.asarray(values, np.float32).reshape(NUM_LANDMARKS, 2)


def parse_csv_line(fields: list[str], where: str) -> dict:
  """Checks one data line of a CSV and returns its values."""
  if len(fields) != len(COLUMNS):
    raise data_error(
      where, f'{len(fields)} columns, expected {len(COLUMNS)}: {COLUMNS}'
    )
  row = dict(zip(COLUMNS, fields, strict=True))
  box = tuple(_number(row[c], c, where) for c in COLUMNS[1:5])
  if box[2] <= 0 or box[3] <= 0:
    raise data_error(where, f'face box {box} has no area')
  points = [p for p in row['facial_landmarks'].split(';') if p.strip()]
  return {
    'id': row['subDirectory_filePath'].strip(),
    'box': box,
    'landmarks': _landmarks(
      [_number(p, 'landmark', where) for p in points], where
    ),
    'original_label': _label(row['expression'], where),
    'valence': _number(row['valence'], 'valence', where),
    'arousal': _number(row['arousal'], 'arousal', where),
  }


def read_csv(path: pathlib.Path) -> list[tuple[int, dict]]:
  """Parses a label list, with or without its header line (and BOM).

  Returns:
    (line number, `parse_csv_line` values) per data line, in file order.

  Raises:
    manual_data.ManualDataError: naming the file and line of the first bad line.
  """
  rows = []
  header = [c.lower() for c in COLUMNS]
  with manual_data.open_text(path) as f:  # BOM or not
    for lineno, fields in enumerate(csv.reader(f), start=1):
      where = manual_data.where(path, lineno)
      if not ''.join(fields).strip():
        continue
      if not rows and fields[0].strip().lower() == header[0]:
        if [c.strip().lower() for c in fields] != header:
          raise data_error(where, f'unexpected header; expected {COLUMNS}')
        continue
      rows.append((lineno, parse_csv_line(fields, where)))
  if not rows:
    raise manual_data.ManualDataError(f'{path} lists no images. {_MANUAL_HELP}')
  return rows


def load_npy(path: pathlib.Path) -> list[float]:
  """The numbers in one annotation file: numbers or numeric strings."""
  try:
    array = np.load(path, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise data_error(path, f'not a readable .npy file ({e})') from None
  if array.dtype.kind in 'US':
    text = ' '.join(str(s) for s in array.ravel()).replace(';', ' ')
    return [_number(t, 'value', path) for t in text.split()]
  if array.dtype.kind not in 'iuf':
    raise data_error(path, f'holds {array.dtype} data, expected numbers')
  return array.astype(np.float64).ravel().tolist()


def _scalar(path: pathlib.Path) -> float:
  values = load_npy(path)
  if len(values) != 1:
    raise data_error(path, f'holds {len(values)} values, expected one')
  return values[0]


def npy_path(split_dir: pathlib.Path, image_id: str, kind: str) -> pathlib.Path:
  """Annotation file `<id>_<kind>.npy` of the newer release."""
  return split_dir / 'annotations' / f'{image_id}_{kind}.npy'


def list_npy(split_dir: pathlib.Path) -> list[str]:
  """Ids of every `annotations/<id>_exp.npy` of one split, by number."""
  ann_dir = _require(split_dir / 'annotations')
  _require(split_dir / 'images')
  ids = sorted(
    (p.name.removesuffix('_exp.npy') for p in ann_dir.glob('*_exp.npy')),
    key=lambda i: (0, int(i), '') if i.isdigit() else (1, 0, i),
  )
  if not ids:
    raise manual_data.ManualDataError(f'{ann_dir} holds no *_exp.npy files.')
  return ids


def original_rows(release_dir: pathlib.Path) -> list[Row]:
  """Every line of both CSVs of the original release."""
  image_dir = find_image_dir(release_dir)
  rows = []
  for split in SPLITS:
    path = _require(release_dir / CSV_DIR / CSV_FILES[split])
    for lineno, values in read_csv(path):
      rel = values.pop('id')
      where = manual_data.where(path, lineno)
      image = image_dir / rel
      rows.append(Row(split, str(lineno), rel, where, image, **values))
  return rows


def npy_rows(release_dir: pathlib.Path) -> list[Row]:
  """Every annotated image of the newer release.

  Raises:
    manual_data.ManualDataError: listing every missing annotation file, or
      naming the first unreadable or out-of-range one.
  """
  dirs = {s: _require(release_dir / NPY_DIRS[s]) for s in SPLITS}
  ids = {s: list_npy(d) for s, d in dirs.items()}
  missing = [
    str(path)
    for s in SPLITS
    for i in ids[s]
    for kind in NPY_KINDS[1:]
    if not (path := npy_path(dirs[s], i, kind)).is_file()
  ]
  if missing:
    shown = '\n  '.join(missing[:10])
    raise manual_data.ManualDataError(
      f'{len(missing)} annotation file(s) are missing:\n  {shown}\n'
      f'Unpack the complete `annotations/` folders into {release_dir}.'
    )
  return [npy_row(s, dirs[s], i) for s in SPLITS for i in ids[s]]


def npy_row(split: str, split_dir: pathlib.Path, image_id: str) -> Row:
  """Reads the annotation files of one image of the newer release."""
  exp, val, aro, lnd = (npy_path(split_dir, image_id, k) for k in NPY_KINDS)
  return Row(
    split=split,
    key=image_id,
    id=image_id,
    where=str(exp),
    path=split_dir / 'images' / f'{image_id}.jpg',
    original_label=_label(_scalar(exp), exp),
    landmarks=_landmarks(load_npy(lnd), lnd),
    valence=_scalar(val),
    arousal=_scalar(aro),
  )


def select(rows: list[Row], num_classes: int):
  """Rows whose label is one of the first `num_classes` canonical classes.

  Returns:
    The kept rows, and {split: {expression name: count}} of the dropped ones.
  """
  kept = []
  dropped = {split: {} for split in SPLITS}
  for row in rows:
    if AFFECTNET_TO_CANONICAL.get(row.original_label, 99) < num_classes:
      kept.append(row)
    else:
      counts = dropped[row.split]
      name = AFFECTNET_NAMES[row.original_label]
      counts[name] = counts.get(name, 0) + 1
  return kept, dropped

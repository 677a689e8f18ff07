"""Tests for the affectnet builder, on the tiny release copies in dummy_data/.

`dummy_data/original/` is laid out like the original release (CSV lists,
full images with a face box), `dummy_data/npy_release/` like the newer one
(face crops, .npy annotations). The images are rendered cartoon faces; the
validation list names the release's known broken file, shipped truncated.
"""

import csv
import pathlib
import re
import shutil

import cv2
import numpy as np
import pytest

from ferjax.data import build
from ferjax.labels import EXPRESSIONS
from ferjax.labels import EXPRESSIONS_7
from tfds_builders import manual_data
from tfds_builders.affectnet import affectnet_dataset_builder as affectnet
from tfds_builders.affectnet import releases

DUMMY = pathlib.Path(__file__).parent / 'dummy_data'
LISTS = pathlib.Path('Manually_Annotated_file_lists')
IMAGES = pathlib.Path('Manually_Annotated_Images')
BROKEN = '103/29a31ebf1567693f4644c8ba3476ca9a72ee07fe67a5860d98707a0a.jpg'
CSV_FILES = {'train': 'training.csv', 'test': 'validation.csv'}
NPY_DIRS = {'train': 'train_set', 'test': 'val_set'}


@pytest.fixture(scope='module')
def built(tmp_path_factory):
  """Builds each (release folder, config) once, through ferjax.data.build."""
  cache = {}

  def get(release: str, config: str):
    if (release, config) not in cache:
      cache[release, config] = build.build(
        'affectnet',
        config=config,
        manual_dir=DUMMY / release,
        data_dir=tmp_path_factory.mktemp('tfds'),
      )
    return cache[release, config]

  return get


def _examples(builder, split):
  """{id: example} of one split."""
  src = builder.as_data_source(split=split)
  return {ex['id'].decode(): ex for ex in (src[i] for i in range(len(src)))}


def _listed(split):
  """{image path: CSV row as a dict of strings, plus its line number}."""
  with open(DUMMY / 'original' / LISTS / CSV_FILES[split], newline='') as f:
    reader = csv.DictReader(f)
    return {
      r['subDirectory_filePath']: r | {'line': reader.line_num} for r in reader
    }


def test_label_table():
  # AffectNet's ids 0..7 are the canonical order; 8..10 have no class.
  table = releases.AFFECTNET_TO_CANONICAL
  assert table == {i: i for i in range(8)}
  for i, name in enumerate(EXPRESSIONS):
    assert releases.AFFECTNET_NAMES[i] == name


@pytest.mark.parametrize(
  ('release', 'config', 'train', 'test'),
  [
    ('original', '7class', 7, 3),
    ('original', '8class', 8, 4),
    ('npy_release', '7class', 4, 3),
    ('npy_release', '8class', 5, 4),
  ],
)
def test_split_sizes_and_features(built, release, config, train, test):
  builder = built(release, config)
  assert builder.info.splits['train'].num_examples == train
  assert builder.info.splits['test'].num_examples == test
  names = EXPRESSIONS_7 if config == '7class' else EXPRESSIONS
  assert builder.info.features['label'].names == list(names)
  assert builder.info.supervised_keys == ('image', 'label')
  kind = 'original' if release == 'original' else 'npy'
  assert builder.info.metadata['release'] == kind


@pytest.mark.parametrize('config', ['7class', '8class'])
@pytest.mark.parametrize('split', ['train', 'test'])
def test_labels_follow_the_csv(built, config, split):
  num_classes = int(config[0])
  examples = _examples(built('original', config), split)
  listed = _listed(split)
  kept = {
    p for p, r in listed.items() if int(r['expression']) < num_classes
  } - {BROKEN}
  assert set(examples) == kept
  names = built('original', config).info.features['label'].names
  for name, ex in examples.items():
    assert ex['original_label'] == int(listed[name]['expression'])
    assert names[ex['label']] == releases.AFFECTNET_NAMES[ex['original_label']]
  labels = sorted(ex['label'] for ex in examples.values())
  if split == 'train':  # One row per id 0..10: ids 8..10 (and 7) dropped.
    assert labels == list(range(num_classes))


def test_dropped_rows_are_counted(built):
  seven = built('original', '7class').info.metadata['dropped']
  assert seven == {
    'train': {'contempt': 1, 'none': 1, 'uncertain': 1, 'non-face': 1},
    'test': {'contempt': 1, 'uncertain': 1},
  }
  eight = built('original', '8class').info.metadata['dropped']
  assert eight == {
    'train': {'none': 1, 'uncertain': 1, 'non-face': 1},
    'test': {'uncertain': 1},
  }


@pytest.mark.parametrize('config', ['7class', '8class'])
def test_known_broken_file_is_skipped_and_reported(built, config):
  builder = built('original', config)
  expected = [
    {
      'split': 'test',
      'file': BROKEN,
      'reason': 'known broken file, undecodable',
    }
  ]
  assert builder.info.metadata['skipped'] == expected
  # The report is saved with the dataset, not only held in memory.
  data_dir = pathlib.Path(builder.data_dir).parents[2]
  again = build.builder('affectnet', config, data_dir)
  assert again.is_prepared()
  assert again.info.metadata['skipped'] == expected


# CSV line -> (crop window x0, y0, x1, y1, stored width, height), worked out
# by hand from the box and image size: margin 0.1, longer side <= 256.
WINDOWS = {
  # 480x360 image, box (110, 40, 300, 300): 30 px margin, clipped at the
  # bottom; the 360x350 crop shrinks by 256/360.
  2: (80, 10, 440, 360, 256, 249),
  # 200x170 image, box (4, 6, 96, 96): 9.6 px margin, clipped left and top.
  3: (0, 0, 110, 112, 110, 112),
  # 190x150 grayscale image, box (60, 20, 100, 100).
  5: (50, 10, 170, 130, 120, 120),
}


@pytest.mark.parametrize('line', sorted(WINDOWS))
def test_image_landmarks_and_box_follow_the_crop(built, line):
  listed = _listed('train')
  name = next(p for p, r in listed.items() if r['line'] == line)
  row = listed[name]
  x0, y0, x1, y1, w, h = WINDOWS[line]
  src = cv2.imread(str(DUMMY / 'original' / IMAGES / name), cv2.IMREAD_COLOR)
  crop = cv2.resize(src[y0:y1, x0:x1], (w, h), interpolation=cv2.INTER_AREA)
  ok, jpeg = cv2.imencode('.jpg', crop, [cv2.IMWRITE_JPEG_QUALITY, 95])
  expected = cv2.imdecode(jpeg, cv2.IMREAD_COLOR)[..., ::-1]

  ex = _examples(built('original', '8class'), 'train')[name]
  assert ex['image'].shape == (h, w, 3)
  np.testing.assert_array_equal(ex['image'], expected)
  points = np.array(row['facial_landmarks'].split(';'), float).reshape(68, 2)
  scale = np.array([w / (x1 - x0), h / (y1 - y0)])
  np.testing.assert_allclose(
    ex['landmarks'], (points - [x0, y0]) * scale, rtol=1e-5, atol=1e-3
  )
  bx, by, bw, bh = (float(row[c]) for c in releases.COLUMNS[1:5])
  np.testing.assert_allclose(
    ex['face_box'],
    [(bx - x0) * scale[0], (by - y0) * scale[1], bw * scale[0], bh * scale[1]],
    rtol=1e-5,
  )


@pytest.mark.parametrize('split', ['train', 'test'])
def test_valence_and_arousal_are_kept(built, split):
  listed = _listed(split)
  examples = _examples(built('original', '8class'), split)
  for name, ex in examples.items():
    assert ex['valence'] == np.float32(listed[name]['valence'])
    assert ex['arousal'] == np.float32(listed[name]['arousal'])
  # -2 (not annotated) is kept as it is.
  assert any(ex['valence'] == -2 for ex in examples.values()) == (
    split == 'train'
  )


def _npy(split, image_id, kind):
  root = DUMMY / 'npy_release' / NPY_DIRS[split]
  return np.load(root / 'annotations' / f'{image_id}_{kind}.npy')


@pytest.mark.parametrize('split', ['train', 'test'])
def test_npy_release(built, split):
  examples = _examples(built('npy_release', '8class'), split)
  images = DUMMY / 'npy_release' / NPY_DIRS[split] / 'images'
  ids = {p.stem for p in images.glob('*.jpg')}
  assert set(examples) == {i for i in ids if int(_npy(split, i, 'exp')) < 8}
  for image_id, ex in examples.items():
    assert ex['original_label'] == int(_npy(split, image_id, 'exp'))
    assert ex['valence'] == np.float32(float(_npy(split, image_id, 'val')))
    assert ex['arousal'] == np.float32(float(_npy(split, image_id, 'aro')))
    bgr = cv2.imread(str(images / f'{image_id}.jpg'), cv2.IMREAD_COLOR)
    points = _npy(split, image_id, 'lnd').astype(float).reshape(68, 2)
    size = bgr.shape[0]
    if size > 256:  # Shrunk and re-encoded.
      bgr = cv2.resize(bgr, (256, 256), interpolation=cv2.INTER_AREA)
      jpeg = cv2.imencode('.jpg', bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])[1]
      bgr = cv2.imdecode(jpeg, cv2.IMREAD_COLOR)
    # Otherwise the shipped JPEG, decoded as it is.
    np.testing.assert_array_equal(ex['image'], bgr[..., ::-1])
    scale = min(1, 256 / size)
    np.testing.assert_allclose(ex['landmarks'], points * scale, rtol=1e-5)
    side = size * scale
    np.testing.assert_allclose(ex['face_box'], [0, 0, side, side])
  if split == 'train':
    assert examples['305']['image'].shape == (256, 256, 3)  # Shipped 288.


@pytest.mark.parametrize('header', [True, False])
def test_header_bom_and_crlf_are_optional(tmp_path, header):
  path = DUMMY / 'original' / LISTS / 'training.csv'
  lines = path.read_text().splitlines()
  copy = tmp_path / 'training.csv'
  text = '\r\n'.join(lines if header else lines[1:]) + '\r\n'
  copy.write_bytes(('\ufeff' + text).encode())
  expected = releases.read_csv(path)
  got = releases.read_csv(copy)
  assert [n - (not header) for n, _ in expected] == [n for n, _ in got]
  for (_, a), (_, b) in zip(expected, got, strict=True):
    np.testing.assert_array_equal(a.pop('landmarks'), b.pop('landmarks'))
    assert a == b


def test_original_release_is_preferred(tmp_path):
  for folder in ('Manually_Annotated_file_lists', 'train_set'):
    (tmp_path / 'AffectNet' / folder).mkdir(parents=True)
  assert releases.find_release(tmp_path) == (
    'original',
    tmp_path / 'AffectNet',
  )
  shutil.rmtree(tmp_path / 'AffectNet' / 'Manually_Annotated_file_lists')
  assert releases.find_release(tmp_path) == ('npy', tmp_path / 'AffectNet')


def _build(tmp_path, manual_dir, config='7class'):
  return build.build(
    'affectnet',
    config=config,
    manual_dir=manual_dir,
    data_dir=tmp_path / 'tfds',
  )


@pytest.fixture
def original(tmp_path):
  """A writable copy of the original release."""
  shutil.copytree(DUMMY / 'original', tmp_path / 'manual')
  return tmp_path / 'manual'


@pytest.fixture
def npy_release(tmp_path):
  """A writable copy of the newer release."""
  shutil.copytree(DUMMY / 'npy_release', tmp_path / 'manual')
  return tmp_path / 'manual'


def test_nested_image_folder_is_found(tmp_path, original, built):
  (original / 'Manually_Annotated').mkdir()
  (original / IMAGES).rename(original / 'Manually_Annotated' / IMAGES)
  builder = _build(tmp_path, original)
  for split in ('train', 'test'):
    a = _examples(builder, split)
    b = _examples(built('original', '7class'), split)
    assert sorted(a) == sorted(b)


def test_readable_known_broken_file_is_kept(tmp_path, original):
  good = next((original / IMAGES).glob('615/*.jpg'))
  shutil.copy(good, original / IMAGES / BROKEN)
  builder = _build(tmp_path, original)
  assert builder.info.metadata['skipped'] == []
  assert BROKEN in _examples(builder, 'test')


def test_missing_known_broken_file_is_skipped(tmp_path, original):
  (original / IMAGES / BROKEN).unlink()
  builder = _build(tmp_path, original)
  [skipped] = builder.info.metadata['skipped']
  assert skipped['reason'] == 'known broken file, missing'
  assert builder.info.splits['test'].num_examples == 3


def _fails(tmp_path, manual_dir, match, config='7class'):
  with pytest.raises(manual_data.ManualDataError, match=match) as info:
    _build(tmp_path, manual_dir, config)
  assert not build.is_built('affectnet', config, tmp_path / 'tfds')
  return str(info.value)


def test_folder_without_either_release(tmp_path):
  (tmp_path / 'other' / 'Manually_Annotated_Images').mkdir(parents=True)
  msg = _fails(tmp_path, tmp_path / 'other', 'No AffectNet release')
  for expected in ('Manually_Annotated_file_lists', 'train_set'):
    assert str(tmp_path / 'other' / expected) in msg
    assert str(tmp_path / 'other' / 'AffectNet' / expected) in msg
  assert '--manual_dir' in msg
  assert 'tfds_builders/affectnet/README.md' in msg


def test_empty_manual_dir_shows_the_instructions(tmp_path):
  # The build refuses it before TFDS would, with our instructions.
  (tmp_path / 'empty').mkdir()
  with pytest.raises(
    manual_data.ManualDataError, match='mohammadmahoor.com/affectnet'
  ):
    _build(tmp_path, tmp_path / 'empty')


@pytest.mark.parametrize('split', ['train', 'test'])
def test_missing_list_file(tmp_path, original, split):
  path = original / LISTS / CSV_FILES[split]
  path.unlink()
  msg = _fails(tmp_path, original, re.escape(f'{path} not found'))
  assert '--manual_dir' in msg


def test_missing_images_are_all_named(tmp_path, original):
  train, test = _listed('train'), _listed('test')
  gone = [
    (next(p for p, r in train.items() if r['expression'] == '3'), 'training'),
    (next(p for p, r in test.items() if r['expression'] == '1'), 'validation'),
  ]
  for name, _ in gone:
    (original / IMAGES / name).unlink()
  msg = _fails(tmp_path, original, r'2 listed image\(s\) are missing')
  for (name, csv_name), listed in zip(gone, (train, test), strict=True):
    assert f'{name} (listed at ' in msg
    assert f'{csv_name}.csv:{listed[name]["line"]})' in msg


def test_missing_dropped_image_is_fine(tmp_path, original):
  # Rows of dropped classes are checked but their images are never read.
  name = next(p for p, r in _listed('train').items() if r['expression'] == '9')
  (original / IMAGES / name).unlink()
  assert _build(tmp_path, original).info.splits['train'].num_examples == 7


@pytest.mark.parametrize('content', [b'not an image', b''])
def test_undecodable_image_names_file_and_line(tmp_path, original, content):
  name, row = next(
    (p, r) for p, r in _listed('train').items() if r['expression'] == '4'
  )
  path = original / IMAGES / name
  path.write_bytes(content)
  csv_path = original / LISTS / 'training.csv'
  _fails(
    tmp_path,
    original,
    re.escape(f'{path} (listed at {csv_path}:{row["line"]}): '),
  )


def _edit_line(path, lineno, edit):
  lines = path.read_text().splitlines()
  lines[lineno - 1] = edit(lines[lineno - 1])
  path.write_text('\n'.join(lines) + '\n')


def _field(index, value):
  def edit(line):
    fields = line.split(',')
    fields[index] = value
    return ','.join(fields)

  return edit


@pytest.mark.parametrize(
  ('edit', 'match'),
  [
    (_field(6, '11'), "unknown expression '11'"),
    (_field(6, '-1'), "unknown expression '-1'"),
    (_field(6, 'x'), "unknown expression 'x'"),
    (_field(6, '2.5'), "unknown expression '2.5'"),
    (_field(1, 'abc'), "face_x 'abc' is not a number"),
    (_field(4, '0'), r'face box .* has no area'),
    (_field(7, 'n/a'), "valence 'n/a' is not a number"),
    (_field(5, '1;2;3'), '3 landmark values, expected 136'),
    (lambda line: line.rsplit(',', 1)[0], '8 columns, expected 9'),
    (lambda line: line + ',1', '10 columns, expected 9'),
    (lambda line: line.replace(';', ','), r'\d+ columns, expected 9'),
  ],
)
def test_bad_list_line_names_file_and_line(tmp_path, original, edit, match):
  path = original / LISTS / 'validation.csv'
  _edit_line(path, 4, edit)
  msg = _fails(tmp_path, original, match)
  assert msg.startswith(f'{path}:4: ')


def test_bad_header(tmp_path, original):
  path = original / LISTS / 'training.csv'
  _edit_line(path, 1, lambda line: line.replace('valence', 'valency'))
  msg = _fails(tmp_path, original, 'unexpected header')
  assert msg.startswith(f'{path}:1: ')


def test_face_box_outside_the_image(tmp_path, original):
  path = original / LISTS / 'training.csv'
  _edit_line(path, 3, _field(1, '900'))
  _fails(tmp_path, original, re.escape(f'{path}:3: face box (900.0,'))


def test_npy_missing_annotation_files_are_all_named(tmp_path, npy_release):
  gone = [
    npy_release / 'train_set' / 'annotations' / '12_val.npy',
    npy_release / 'val_set' / 'annotations' / '51_lnd.npy',
  ]
  for path in gone:
    path.unlink()
  msg = _fails(tmp_path, npy_release, r'2 annotation file\(s\) are missing')
  for path in gone:
    assert str(path) in msg


def test_npy_missing_image(tmp_path, npy_release):
  path = npy_release / 'val_set' / 'images' / '19.jpg'
  path.unlink()
  msg = _fails(tmp_path, npy_release, r'1 listed image\(s\) are missing')
  assert f'{path} (listed at ' in msg
  assert '19_exp.npy' in msg


@pytest.mark.parametrize(
  ('value', 'match'),
  [
    (np.array('11'), 'unknown expression 11.0'),
    (np.array('x'), "value 'x' is not a number"),
    (np.array([1, 2]), 'holds 2 values, expected one'),
  ],
)
def test_npy_bad_expression(tmp_path, npy_release, value, match):
  path = npy_release / 'train_set' / 'annotations' / '950_exp.npy'
  np.save(path, value)
  msg = _fails(tmp_path, npy_release, re.escape(match))
  assert msg.startswith(f'{path}: ')


def test_npy_bad_landmarks(tmp_path, npy_release):
  path = npy_release / 'val_set' / 'annotations' / '3_lnd.npy'
  np.save(path, np.zeros(134))
  msg = _fails(tmp_path, npy_release, '134 landmark values, expected 136')
  assert msg.startswith(f'{path}: ')


def test_crop_window_and_fit_size():
  window = affectnet.crop_window
  assert window((10, 20, 100, 50), 0.1, 500, 500) == (0, 15, 120, 75)
  assert window((10.5, 20, 100, 50), 0.1, 500, 500) == (0, 15, 121, 75)
  assert window((450, 20, 100, 50), 0.2, 500, 500) == (430, 10, 500, 80)
  assert window((600, 10, 100, 100), 0.1, 500, 500) is None
  assert affectnet.fit_size(300, 150, 256) == (256, 128)
  assert affectnet.fit_size(100, 50, 256) == (100, 50)


def test_failed_build_can_be_rerun(tmp_path, original):
  (original / LISTS / 'training.csv').unlink()
  _fails(tmp_path, original, 'not found')
  shutil.copy(DUMMY / 'original' / LISTS / 'training.csv', original / LISTS)
  assert _build(tmp_path, original).info.splits['train'].num_examples == 7


def test_aligned_config_moves_the_annotations_with_the_face(
  tmp_path, npy_release
):
  from tests import photos
  from tfds_builders import face_align

  photo = photos.read('single_face')[..., ::-1]  # A real face, as BGR.
  path = npy_release / 'train_set' / 'images' / '12.jpg'
  cv2.imwrite(str(path), cv2.resize(photo, (224, 224)))
  builder = _build(tmp_path, npy_release, '7class_aligned')
  meta = builder.info.metadata['alignment']
  assert (meta['detector'], meta['crop'], meta['no_face']) == (
    'mtcnn',
    'rafdb',
    'keep',
  )
  aligner = face_align.Aligner('rafdb')
  missed = {'train': 0, 'test': 0}
  examples = {s: _examples(builder, s) for s in missed}
  for split, found in examples.items():
    for image_id, ex in found.items():
      folder = npy_release / NPY_DIRS[split] / 'images'
      faces = aligner.faces(cv2.imread(str(folder / f'{image_id}.jpg')))
      missed[split] += not faces
      assert ex['image'].shape[:2] == ((100, 100) if faces else (224, 224))
  assert meta['images_without_face'] == missed
  assert missed['train'] < len(examples['train'])  # The photo, at least.
  (face, *_) = aligner.faces(cv2.imread(str(path)))
  matrix = aligner.matrix(face)
  points = np.load(npy_release / 'train_set' / 'annotations' / '12_lnd.npy')
  points = np.asarray(points, float).reshape(68, 2)
  np.testing.assert_allclose(
    examples['train']['12']['landmarks'],
    points @ matrix[:, :2].T + matrix[:, 2],
    rtol=1e-4,
    atol=1e-3,
  )

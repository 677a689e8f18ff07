"""Tests for the rafdb builder, on the tiny release copy in dummy_data/."""

import pathlib
import re
import shutil

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds

from ferjax.data import build
from ferjax.labels import EXPRESSIONS_7
from tfds_builders import manual_data
from tfds_builders.rafdb import rafdb_dataset_builder as rafdb

DUMMY = pathlib.Path(__file__).parent / 'dummy_data'
LIST = DUMMY / 'basic' / rafdb.LABEL_FILE


@pytest.fixture(scope='module')
def built(tmp_path_factory):
  """dummy_data built once through ferjax.data.build, parent-folder form."""
  data_dir = tmp_path_factory.mktemp('tfds')
  return build.build('rafdb', manual_dir=DUMMY, data_dir=data_dir)


def _listed():
  """{file name: RAF label} straight from the dummy list file."""
  pairs = (line.split() for line in LIST.read_text().splitlines())
  return {name: int(label) for name, label in pairs}


def _examples(builder, split):
  src = builder.as_data_source(split=split)
  return [src[i] for i in range(len(src))]


def test_label_table():
  assert rafdb.RAF_TO_CANONICAL == {1: 3, 2: 4, 3: 5, 4: 1, 5: 2, 6: 6, 7: 0}


def test_splits_and_features(built):
  assert built.info.splits['train'].num_examples == 8
  assert built.info.splits['test'].num_examples == 4
  assert built.info.features['label'].names == list(EXPRESSIONS_7)
  assert built.info.supervised_keys == ('image', 'label')


@pytest.mark.parametrize('split', ['train', 'test'])
def test_labels_follow_the_list_file(built, split):
  listed = _listed()
  got = {}
  for ex in _examples(built, split):
    name = ex['id'].decode()
    assert name.startswith(f'{split}_')
    assert ex['original_label'] == listed[name]
    got[name] = ex['label']
  assert sorted(got) == sorted(n for n in listed if n.startswith(split))
  if split == 'train':
    names = built.info.features['label'].names
    # RAF 4 is happiness, canonical index 1; RAF 7 neutral -> 0.
    assert got['train_00004.jpg'] == 1 == names.index('happiness')
    assert got['train_00007.jpg'] == 0 == names.index('neutral')
    assert got['train_00001.jpg'] == names.index('surprise')
    assert sorted(set(got.values())) == list(range(7))


def test_images_are_the_shipped_jpegs(built):
  """Pixels equal a cv2 decode of the file (RGB): no re-encoding."""
  for split in ('train', 'test'):
    for ex in _examples(built, split):
      path = rafdb.image_path(DUMMY / 'basic', ex['id'].decode())
      bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
      assert ex['image'].dtype == np.uint8
      assert ex['image'].shape == (100, 100, 3)
      np.testing.assert_array_equal(ex['image'], bgr[..., ::-1])


def _build(tmp_path, manual_dir):
  builder = rafdb.Builder(
    data_dir=str(tmp_path / 'tfds'), file_format='array_record'
  )
  builder.download_and_prepare(
    download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir))
  )
  return builder


def test_basic_folder_itself_is_accepted(tmp_path, built):
  builder = _build(tmp_path, DUMMY / 'basic')
  for split in ('train', 'test'):
    a = _examples(builder, split)
    b = _examples(built, split)
    assert [x['id'] for x in a] == [x['id'] for x in b]


@pytest.fixture
def release(tmp_path):
  """A writable copy of dummy_data; returns its `basic/` folder."""
  shutil.copytree(DUMMY, tmp_path / 'manual')
  return tmp_path / 'manual' / 'basic'


def _fails(tmp_path, basic, match):
  with pytest.raises(manual_data.ManualDataError, match=match) as info:
    _build(tmp_path, basic.parent)
  assert not rafdb.Builder(data_dir=str(tmp_path / 'tfds')).is_prepared()
  return str(info.value)


def test_missing_label_file(tmp_path, release):
  (release / rafdb.LABEL_FILE).unlink()
  msg = _fails(tmp_path, release, 'list_patition_label.txt not found')
  assert str(release / rafdb.LABEL_FILE) in msg
  assert '--manual_dir' in msg


def test_missing_images_are_all_named(tmp_path, release):
  for name in ('train_00003.jpg', 'test_0002.jpg'):
    rafdb.image_path(release, name).unlink()
  msg = _fails(tmp_path, release, r'2 listed image\(s\) are missing')
  assert 'train_00003_aligned.jpg' in msg
  assert 'test_0002_aligned.jpg' in msg
  assert 'Image/aligned' in msg


def _edit_line(release, lineno, text):
  path = release / rafdb.LABEL_FILE
  lines = path.read_text().splitlines()
  lines[lineno - 1] = text
  path.write_text('\n'.join(lines))
  return path


@pytest.mark.parametrize(
  ('text', 'match'),
  [
    ('train_00005.jpg 9', "unknown label '9'"),
    ('train_00005.jpg 0', "unknown label '0'"),
    ('train_00005.jpg happy', "unknown label 'happy'"),
    ('train_00005.jpg', 'malformed line'),
    ('train_00005.jpg,5', 'malformed line'),
    ('train_00005.jpg 5 1', 'malformed line'),
    ('val_0001.jpg 5', 'neither `train_` nor `test_`'),
    ('train_00001.jpg 5', r'listed again \(first at line 1\)'),
  ],
)
def test_bad_list_line_names_file_and_line(tmp_path, release, text, match):
  path = _edit_line(release, 5, text)
  msg = _fails(tmp_path, release, match)
  assert msg.startswith(f'{path}:5: ')


def test_trailing_newline_and_crlf_are_fine(tmp_path):
  path = tmp_path / 'list.txt'
  path.write_bytes(LIST.read_bytes().replace(b'\n', b'\r\n') + b'\r\n')
  rows = rafdb.read_labels(path)
  assert len(rows) == 12
  assert rows[3] == ('train', 'train_00004.jpg', 4)


def test_grayscale_image_is_rejected(tmp_path, release):
  path = rafdb.image_path(release, 'test_0003.jpg')
  gray = np.full((100, 100), 128, np.uint8)
  assert cv2.imwrite(str(path), gray)
  _fails(tmp_path, release, re.escape(f'{path}: not a 3-channel image'))


def test_empty_manual_dir_shows_the_instructions(tmp_path):
  # TFDS itself rejects an empty or absent manual_dir, with our instructions.
  (tmp_path / 'empty').mkdir()
  with pytest.raises(AssertionError, match='official site'):
    _build(tmp_path, tmp_path / 'empty')


def test_folder_without_release(tmp_path):
  (tmp_path / 'other' / 'basic').mkdir(parents=True)
  (tmp_path / 'other' / 'notes.txt').write_text('x')
  with pytest.raises(
    manual_data.ManualDataError, match='list_patition_label.txt not found'
  ):
    _build(tmp_path, tmp_path / 'other')

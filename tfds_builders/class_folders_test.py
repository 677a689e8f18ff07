"""Tests for tfds_builders.class_folders, the class-folder release reader."""

import logging
import pathlib
import re

import cv2
import numpy as np
import pytest

from ferjax.labels import EXPRESSIONS_7
from tfds_builders import class_folders
from tfds_builders import manual_data

CLASS_MAP = {'Happy': 1, 'Sad': 2, 'Anger': 6, 'Angry': 6}
FIX = 'Unpack the split again.'


def _png(path: pathlib.Path, value: int = 90, shape=(5, 4, 3)) -> bytes:
  path.parent.mkdir(parents=True, exist_ok=True)
  img = np.full(shape, value, np.uint8)
  img[0, 0] = 255 - value  # Not flat, so channel order shows.
  ok, data = cv2.imencode('.png', img)
  assert ok
  path.write_bytes(data.tobytes())
  return data.tobytes()


@pytest.fixture
def split(tmp_path):
  """train/{Happy,Sad,Angry}/ with two images each."""
  root = tmp_path / 'release' / 'train'
  for folder in ('Happy', 'Sad', 'Angry'):
    for name in ('b.png', 'a.png'):
      _png(root / folder / name)
  return root


def _fails(split_dir, *patterns):
  with pytest.raises(manual_data.ManualDataError) as info:
    class_folders.class_folder_files(split_dir, CLASS_MAP, ('.png',), FIX)
  msg = str(info.value)
  for pattern in patterns:
    assert re.search(pattern, msg), (pattern, msg)
  assert msg.endswith(FIX)
  return msg


def test_files_are_listed_sorted_with_labels(split):
  files = class_folders.class_folder_files(split, CLASS_MAP, ('.png',), FIX)
  assert [f.id for f in files] == [
    'train/Angry/a.png',
    'train/Angry/b.png',
    'train/Happy/a.png',
    'train/Happy/b.png',
    'train/Sad/a.png',
    'train/Sad/b.png',
  ]
  assert files[0] == (split / 'Angry' / 'a.png', 'Angry', 6)
  assert [f.label for f in files] == [6, 6, 1, 1, 2, 2]
  assert all(f.folder == f.path.parent.name for f in files)


def test_order_does_not_depend_on_case_or_locale(split):
  _png(split / 'Sad' / 'B.png')
  files = class_folders.class_folder_files(split, CLASS_MAP, ('.png',), FIX)
  # Code point order: upper case sorts before lower case.
  assert [f.path.name for f in files if f.folder == 'Sad'] == [
    'B.png',
    'a.png',
    'b.png',
  ]


def test_either_alias_of_a_class_is_enough(split):
  (split / 'Angry').rename(split / 'Anger')
  files = class_folders.class_folder_files(split, CLASS_MAP, ('.png',), FIX)
  assert {(f.folder, f.label) for f in files if f.label == 6} == {('Anger', 6)}
  _png(split / 'Angry' / 'c.png')  # Both spellings at once are fine too.
  files = class_folders.class_folder_files(split, CLASS_MAP, ('.png',), FIX)
  assert [f.id for f in files if f.label == 6] == [
    'train/Anger/a.png',
    'train/Anger/b.png',
    'train/Angry/c.png',
  ]


def test_system_files_are_passed_over_and_logged(split, caplog):
  for junk in ('Thumbs.db', '.DS_Store', 'Happy/Thumbs.db', 'Sad/._a.png'):
    (split / junk).write_bytes(b'\0junk')
  (split / 'Sad' / 'desktop.ini').write_text('[.ShellClassInfo]')
  with caplog.at_level(logging.INFO):
    files = class_folders.class_folder_files(split, CLASS_MAP, ('.png',), FIX)
  assert len(files) == 6
  assert 'passed over 5 system file(s)' in caplog.text


def test_extension_case_does_not_matter(split):
  _png(split / 'Happy' / 'c.PNG')
  files = class_folders.class_folder_files(split, CLASS_MAP, ('.png',), FIX)
  assert 'train/Happy/c.PNG' in [f.id for f in files]


def test_unknown_class_folder_is_named_with_the_expected_ones(split):
  (split / 'Sad').rename(split / 'Sadness')
  msg = _fails(
    split,
    r'\(2 problem\(s\)\)',
    re.escape(f'{split / "Sadness"}: not a class folder'),
    re.escape('(expected folders: Anger, Angry, Happy, Sad)'),
    re.escape(f'{split}: missing class folder Sad'),
  )
  assert msg.startswith(f'{split} does not hold the expected class folders')


def test_missing_class_folder_names_every_spelling(split):
  for path in (split / 'Angry').iterdir():
    path.unlink()
  (split / 'Angry').rmdir()
  _fails(split, re.escape(f'{split}: missing class folder Anger or Angry'))


def test_empty_class_folder(split):
  for path in (split / 'Happy').iterdir():
    path.unlink()
  _fails(split, re.escape(f'{split / "Happy"}: no images'))


@pytest.mark.parametrize(
  'stray', ['Happy/notes.txt', 'Happy/a.jpg', 'Happy/a', 'labels.csv']
)
def test_stray_files_are_errors(split, stray):
  (split / stray).write_text('x')
  what = 'not a class folder' if '/' not in stray else 'not an image file'
  _fails(split, re.escape(f'{split / stray}: {what}'))


def test_folder_inside_a_class_folder_is_an_error(split):
  _png(split / 'Happy' / 'more' / 'c.png')
  _fails(split, re.escape(f'{split / "Happy" / "more"}: not an image file'))


def test_a_class_name_used_by_a_file_is_an_error(tmp_path, split):
  (split / 'Sad' / 'a.png').rename(tmp_path / 'a.png')
  for path in (split / 'Sad').iterdir():
    path.unlink()
  (split / 'Sad').rmdir()
  (tmp_path / 'a.png').rename(split / 'Sad')
  _fails(split, re.escape(f'{split / "Sad"}: not a class folder'))


def test_every_problem_is_reported_at_once(split):
  (split / 'Happy' / 'x.gif').write_text('x')
  (split / 'Sad').rename(split / 'sad')
  _fails(split, r'\(3 problem\(s\)\)', 'x.gif', '/sad: ', 'folder Sad')


@pytest.mark.parametrize('make', [False, True])
def test_absent_or_empty_split_folder(tmp_path, make):
  split_dir = tmp_path / 'test'
  if make:
    split_dir.mkdir()
    _fails(split_dir, r'\(3 problem\(s\)\)', 'missing class folder Happy')
  else:
    with pytest.raises(manual_data.ManualDataError, match='is not a folder'):
      class_folders.class_folder_files(split_dir, CLASS_MAP, ('.png',), FIX)


def test_example_keeps_the_bytes_as_shipped(tmp_path):
  path = tmp_path / 'val' / 'Sad' / 'x.png'
  data = _png(path, value=30)
  item = class_folders.ClassFile(path, 'Sad', 2)
  assert class_folders.class_file_example(item) == {
    'image': data,
    'label': 2,
    'original_label': 'Sad',
    'id': 'val/Sad/x.png',
  }
  assert (
    list(class_folders.class_folder_examples([item, item]))
    == [('val/Sad/x.png', class_folders.class_file_example(item))] * 2
  )


@pytest.mark.parametrize(
  ('image', 'match'),
  [
    (b'', 'empty file'),
    (None, r'not a 3-channel image \(undecodable\)'),
    (np.zeros((4, 4), np.uint8), r'not a 3-channel image \(shape \(4, 4\)\)'),
    (np.zeros((4, 4, 4), np.uint8), 'not a 3-channel image'),
    (np.zeros((4, 4, 3), np.uint16), 'uint16 samples, not 8-bit'),
  ],
)
def test_bad_image_is_named(tmp_path, image, match):
  path = tmp_path / 'train' / 'Happy' / 'x.png'
  path.parent.mkdir(parents=True)
  if isinstance(image, bytes):
    path.write_bytes(image)
  elif image is None:
    path.write_bytes(_png(tmp_path / 'ok.png')[:40])  # Truncated.
  else:
    assert cv2.imwrite(str(path), image)
  with pytest.raises(manual_data.ManualDataError, match=match) as info:
    class_folders.class_file_example(class_folders.ClassFile(path, 'Happy', 1))
  assert str(info.value).startswith(f'{path}: ')


@pytest.mark.parametrize('encoding', [None, 'png'])
def test_features(encoding):
  features = class_folders.class_folder_features(
    EXPRESSIONS_7, encoding, 'A, B'
  )
  assert features['label'].names == list(EXPRESSIONS_7)
  assert features['image'].encoding_format == encoding
  assert features['image'].shape == (None, None, 3)
  assert 'A, B' in features['original_label'].doc.desc

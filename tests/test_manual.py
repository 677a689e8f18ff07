"""Tests for the class-folder reader in ferjax.data.manual."""

import logging
import pathlib
import re

import cv2
import numpy as np
import pytest

from ferjax.data import manual
from ferjax.labels import EXPRESSIONS_7

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
  with pytest.raises(manual.ManualDataError) as info:
    manual.class_folder_files(split_dir, CLASS_MAP, ('.png',), FIX)
  msg = str(info.value)
  for pattern in patterns:
    assert re.search(pattern, msg), (pattern, msg)
  assert msg.endswith(FIX)
  return msg


def test_files_are_listed_sorted_with_labels(split):
  files = manual.class_folder_files(split, CLASS_MAP, ('.png',), FIX)
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
  files = manual.class_folder_files(split, CLASS_MAP, ('.png',), FIX)
  # Code point order: upper case sorts before lower case.
  assert [f.path.name for f in files if f.folder == 'Sad'] == [
    'B.png',
    'a.png',
    'b.png',
  ]


def test_either_alias_of_a_class_is_enough(split):
  (split / 'Angry').rename(split / 'Anger')
  files = manual.class_folder_files(split, CLASS_MAP, ('.png',), FIX)
  assert {(f.folder, f.label) for f in files if f.label == 6} == {('Anger', 6)}
  _png(split / 'Angry' / 'c.png')  # Both spellings at once are fine too.
  files = manual.class_folder_files(split, CLASS_MAP, ('.png',), FIX)
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
    files = manual.class_folder_files(split, CLASS_MAP, ('.png',), FIX)
  assert len(files) == 6
  assert 'passed over 5 system file(s)' in caplog.text


def test_extension_case_does_not_matter(split):
  _png(split / 'Happy' / 'c.PNG')
  files = manual.class_folder_files(split, CLASS_MAP, ('.png',), FIX)
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
    with pytest.raises(manual.ManualDataError, match='is not a folder'):
      manual.class_folder_files(split_dir, CLASS_MAP, ('.png',), FIX)


def test_example_keeps_the_bytes_as_shipped(tmp_path):
  path = tmp_path / 'val' / 'Sad' / 'x.png'
  data = _png(path, value=30)
  item = manual.ClassFile(path, 'Sad', 2)
  assert manual.class_file_example(item) == {
    'image': data,
    'label': 2,
    'original_label': 'Sad',
    'id': 'val/Sad/x.png',
  }
  assert (
    list(manual.class_folder_examples([item, item]))
    == [('val/Sad/x.png', manual.class_file_example(item))] * 2
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
  with pytest.raises(manual.ManualDataError, match=match) as info:
    manual.class_file_example(manual.ClassFile(path, 'Happy', 1))
  assert str(info.value).startswith(f'{path}: ')


def test_expression_folders_name_the_canonical_classes():
  assert sorted(manual.EXPRESSION_FOLDERS.values()) == sorted(EXPRESSIONS_7)


@pytest.mark.parametrize('encoding', [None, 'png'])
def test_features(encoding):
  features = manual.class_folder_features(EXPRESSIONS_7, encoding, 'A, B')
  assert features['label'].names == list(EXPRESSIONS_7)
  assert features['image'].encoding_format == encoding
  assert features['image'].shape == (None, None, 3)
  assert 'A, B' in features['original_label'].doc.desc


@pytest.mark.parametrize('data', [b'', b'not an image', b'\xff\xd8\xff'])
def test_decode_image_names_the_file_for_any_bad_bytes(data):
  with pytest.raises(manual.ManualDataError, match='a.png: not a 3-channel'):
    manual.decode_image(data, 'a.png', channels=(3,))


# Video releases: clip lists and folders of frames.


def _jpg(path: pathlib.Path, shape=(6, 8, 3), value: int = 100) -> bytes:
  path.parent.mkdir(parents=True, exist_ok=True)
  img = np.full(shape, value, np.uint8)
  ok, data = cv2.imencode('.jpg', img)
  assert ok
  path.write_bytes(data.tobytes())
  return data.tobytes()


def _parse(line: str) -> manual.Clip:
  """`<name> <label>` with an integer label, as a test list format."""
  name, label = line.split()
  if not label.isdigit():
    raise ValueError(f'bad label {label!r}')
  return manual.Clip(name, pathlib.Path(name), int(label), label)


def _is_header(line: str) -> bool:
  return line.startswith('name')


def test_natural_key_orders_frame_numbers_by_value():
  names = ['10.jpg', '9.jpg', '1.jpg', '01.jpg', 'a2.jpg', 'a10.jpg', 'a', 'b']
  assert sorted(names, key=manual.natural_key) == [
    '01.jpg',
    '1.jpg',
    '9.jpg',
    '10.jpg',
    'a',
    'a2.jpg',
    'a10.jpg',
    'b',
  ]
  padded = [f'00001_{k:05d}.jpg' for k in range(30)]
  assert sorted(padded, key=manual.natural_key) == sorted(padded)


def test_clip_list_skips_bom_header_and_blank_lines(tmp_path):
  path = tmp_path / 'list.csv'
  path.write_text('\ufeffname label\n\nb 2\n  \na 1\n', encoding='utf-8')
  clips = manual.read_clip_list(path, _parse, _is_header, FIX)
  assert [(c.id, c.label, c.listed_at) for c in clips] == [
    ('b', 2, f'{path}:3'),
    ('a', 1, f'{path}:5'),
  ]
  # Without a header the first line is a clip.
  path.write_text('b 2\na 1\n')
  assert len(manual.read_clip_list(path, _parse, _is_header, FIX)) == 2


@pytest.mark.parametrize(
  ('text', 'match'),
  [
    ('name label\na 1\nb x\n', r':3: bad label .x. \(line .b x.\)\. '),
    # Only the first line may be a header.
    ('a 1\nname label\n', r":2: bad label 'label'"),
    ('a 1\nb 2\na 3\n', r':3: clip a is listed again \(first at .*:1\)'),
    ('name label\n\n', 'lists no clips'),
  ],
)
def test_clip_list_errors_name_file_and_line(tmp_path, text, match):
  path = tmp_path / 'list.csv'
  path.write_text(text)
  with pytest.raises(manual.ManualDataError, match=match) as info:
    manual.read_clip_list(path, _parse, _is_header, FIX)
  assert str(info.value).startswith(str(path))
  assert str(info.value).endswith(FIX)


def _clip(folder: pathlib.Path, at: str = 'list:1') -> manual.Clip:
  return manual.Clip(folder.name, folder, 3, 'x', at)


def test_frames_are_listed_in_natural_order_past_clutter(tmp_path):
  for name in ('10.jpg', '2.JPG', '1.jpeg', 'Thumbs.db', '._1.jpg'):
    _jpg(tmp_path / 'c' / name)
  splits = manual.list_frames({'test': [_clip(tmp_path / 'c')]}, FIX)
  frames = splits['test'][0].frames
  assert [p.name for p in frames] == ['1.jpeg', '2.JPG', '10.jpg']


def test_frame_problems_of_every_split_are_reported_at_once(tmp_path):
  _jpg(tmp_path / 'ok' / '0.jpg')
  (tmp_path / 'empty').mkdir()
  (tmp_path / 'odd').mkdir()
  (tmp_path / 'odd' / '0.png').write_text('x')
  _jpg(tmp_path / 'odd' / 'sub' / '0.jpg')
  splits = {
    'train': [_clip(tmp_path / 'ok'), _clip(tmp_path / 'gone', 'l:2')],
    'test': [_clip(tmp_path / 'empty', 'l:7'), _clip(tmp_path / 'odd')],
  }
  with pytest.raises(manual.ManualDataError) as info:
    manual.list_frames(splits, FIX)
  msg = str(info.value)
  assert msg.startswith('4 problem(s) with the listed clips')
  assert f'{tmp_path / "gone"}: no such folder (listed at l:2)' in msg
  assert f'{tmp_path / "empty"}: no frames (listed at l:7)' in msg
  assert f'{tmp_path / "odd" / "0.png"}: not a JPEG frame' in msg
  assert f'{tmp_path / "odd" / "sub"}: not a JPEG frame' in msg
  assert msg.endswith(FIX)


def test_a_clip_in_two_splits_is_named_with_both_entries(tmp_path):
  _jpg(tmp_path / 'a' / '0.jpg')
  clip = _clip(tmp_path / 'a', 'train.csv:2')
  splits = {'train': [clip], 'test': [clip._replace(listed_at='test.csv:9')]}
  with pytest.raises(
    manual.ManualDataError,
    match=re.escape('test.csv:9: clip a of test is in train too (train.csv:2)'),
  ):
    manual.list_frames(splits, FIX)
  # Listing a clip twice within a split is read_clip_list's error.
  assert len(manual.list_frames({'x': [clip, clip]}, FIX)['x']) == 2


def test_clip_example_keeps_frames_as_shipped(tmp_path):
  data = [_jpg(tmp_path / 'c' / f'{k}.jpg', value=40 * k) for k in range(3)]
  clip = manual.list_frames({'x': [_clip(tmp_path / 'c')]}, FIX)['x'][0]
  assert manual.clip_example(clip) == {
    'frames': data,
    'label': 3,
    'original_label': 'x',
    'id': 'c',
    'num_frames': 3,
  }
  # Frames no larger than frame_size are kept as shipped too.
  assert manual.read_clip_frames(clip, frame_size=6) == data


def test_frames_larger_than_frame_size_are_shrunk(tmp_path):
  _jpg(tmp_path / 'c' / '0.jpg', shape=(30, 40, 3))
  clip = manual.list_frames({'x': [_clip(tmp_path / 'c')]}, FIX)['x'][0]
  (data,) = manual.read_clip_frames(clip, frame_size=12)
  small = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
  assert small.shape == (12, 16, 3)
  assert data == manual.shrink_frame(np.full((30, 40, 3), 100, np.uint8), 12)


@pytest.mark.parametrize(
  ('bad', 'match'),
  [
    (b'\xff\xd8 not a jpeg', 'not a 3-channel image'),
    (None, 'not a 3-channel image'),  # Grayscale.
    ((5, 8, 3), r': 8x5 pixels, but 0.jpg of the same clip is 8x6'),
  ],
)
def test_bad_frames_are_named(tmp_path, bad, match):
  _jpg(tmp_path / 'c' / '0.jpg')
  path = tmp_path / 'c' / '1.jpg'
  if isinstance(bad, bytes):
    path.write_bytes(bad)
  else:
    _jpg(path, shape=bad or (6, 8))
  clip = manual.list_frames({'x': [_clip(tmp_path / 'c')]}, FIX)['x'][0]
  with pytest.raises(manual.ManualDataError, match=re.escape(f'{path}')):
    manual.read_clip_frames(clip)
  with pytest.raises(manual.ManualDataError, match=match):
    manual.read_clip_frames(clip)

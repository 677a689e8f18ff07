"""Tests for tfds_builders.clip_folders: clip lists and folders of frames."""

import pathlib
import re

import cv2
import numpy as np
import pytest

from tfds_builders import clip_folders
from tfds_builders import manual_data

FIX = 'Unpack the split again.'


def _jpg(path: pathlib.Path, shape=(6, 8, 3), value: int = 100) -> bytes:
  path.parent.mkdir(parents=True, exist_ok=True)
  img = np.full(shape, value, np.uint8)
  ok, data = cv2.imencode('.jpg', img)
  assert ok
  path.write_bytes(data.tobytes())
  return data.tobytes()


def _parse(line: str) -> clip_folders.Clip:
  """`<name> <label>` with an integer label, as a test list format."""
  name, label = line.split()
  if not label.isdigit():
    raise ValueError(f'bad label {label!r}')
  return clip_folders.Clip(name, pathlib.Path(name), int(label), label)


def _is_header(line: str) -> bool:
  return line.startswith('name')


def test_natural_key_orders_frame_numbers_by_value():
  names = ['10.jpg', '9.jpg', '1.jpg', '01.jpg', 'a2.jpg', 'a10.jpg', 'a', 'b']
  assert sorted(names, key=clip_folders.natural_key) == [
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
  assert sorted(padded, key=clip_folders.natural_key) == sorted(padded)


def test_clip_list_skips_bom_header_and_blank_lines(tmp_path):
  path = tmp_path / 'list.csv'
  path.write_text('\ufeffname label\n\nb 2\n  \na 1\n', encoding='utf-8')
  clips = clip_folders.read_clip_list(path, _parse, _is_header, FIX)
  assert [(c.id, c.label, c.listed_at) for c in clips] == [
    ('b', 2, f'{path}:3'),
    ('a', 1, f'{path}:5'),
  ]
  # Without a header the first line is a clip.
  path.write_text('b 2\na 1\n')
  assert len(clip_folders.read_clip_list(path, _parse, _is_header, FIX)) == 2


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
  with pytest.raises(manual_data.ManualDataError, match=match) as info:
    clip_folders.read_clip_list(path, _parse, _is_header, FIX)
  assert str(info.value).startswith(str(path))
  assert str(info.value).endswith(FIX)


def _clip(folder: pathlib.Path, at: str = 'list:1') -> clip_folders.Clip:
  return clip_folders.Clip(folder.name, folder, 3, 'x', at)


def test_frames_are_listed_in_natural_order_past_clutter(tmp_path):
  for name in ('10.jpg', '2.JPG', '1.jpeg', 'Thumbs.db', '._1.jpg'):
    _jpg(tmp_path / 'c' / name)
  splits = clip_folders.list_frames({'test': [_clip(tmp_path / 'c')]}, FIX)
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
  with pytest.raises(manual_data.ManualDataError) as info:
    clip_folders.list_frames(splits, FIX)
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
    manual_data.ManualDataError,
    match=re.escape('test.csv:9: clip a of test is in train too (train.csv:2)'),
  ):
    clip_folders.list_frames(splits, FIX)
  # Listing a clip twice within a split is read_clip_list's error.
  assert len(clip_folders.list_frames({'x': [clip, clip]}, FIX)['x']) == 2


def test_clip_example_keeps_frames_as_shipped(tmp_path):
  data = [_jpg(tmp_path / 'c' / f'{k}.jpg', value=40 * k) for k in range(3)]
  clip = clip_folders.list_frames({'x': [_clip(tmp_path / 'c')]}, FIX)['x'][0]
  assert clip_folders.clip_example(clip) == {
    'frames': data,
    'label': 3,
    'original_label': 'x',
    'id': 'c',
    'num_frames': 3,
  }
  # Frames no larger than frame_size are kept as shipped too.
  assert clip_folders.read_clip_frames(clip, frame_size=6) == data


def test_frames_larger_than_frame_size_are_shrunk(tmp_path):
  _jpg(tmp_path / 'c' / '0.jpg', shape=(30, 40, 3))
  clip = clip_folders.list_frames({'x': [_clip(tmp_path / 'c')]}, FIX)['x'][0]
  (data,) = clip_folders.read_clip_frames(clip, frame_size=12)
  small = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
  assert small.shape == (12, 16, 3)
  assert data == clip_folders.shrink_frame(
    np.full((30, 40, 3), 100, np.uint8), 12
  )


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
  clip = clip_folders.list_frames({'x': [_clip(tmp_path / 'c')]}, FIX)['x'][0]
  with pytest.raises(manual_data.ManualDataError, match=re.escape(f'{path}')):
    clip_folders.read_clip_frames(clip)
  with pytest.raises(manual_data.ManualDataError, match=match):
    clip_folders.read_clip_frames(clip)

"""Tests for the ferv39k builder, on the tiny release copy in dummy_data/."""

import pathlib
import re
import shutil

import cv2
import numpy as np
import pytest

from ferjax.data import build
from ferjax.labels import EXPRESSIONS_7
from tfds_builders import clip_folders
from tfds_builders import manual_data
from tfds_builders.ferv39k import ferv39k_dataset_builder as ferv

DUMMY = pathlib.Path(__file__).parent / 'dummy_data'
CLIPS = DUMMY / ferv.CLIP_DIR
LISTS = DUMMY / ferv.LIST_DIR
# Dummy clips: one with unpadded frame names (0.jpg ... 11.jpg), one with
# 160x120 frames (the only ones larger than 112 px).
UNPADDED = 'Interview/Disgust/0004'
LARGE = 'Action/Fear/0006'


def _listed(split: str) -> list[str]:
  """The clip paths of a dummy list, in order, without its header."""
  lines = (LISTS / ferv.LIST_FILES[split]).read_text().splitlines()
  return [line.split()[0] for line in lines if '/' in line]


def _examples(builder, split):
  src = builder.as_data_source(split=split)
  return [src[i] for i in range(len(src))]


def _frame_files(clip_id: str) -> list[pathlib.Path]:
  """A dummy clip's frame files in temporal order (by frame number)."""
  return sorted((CLIPS / clip_id).iterdir(), key=lambda p: int(p.stem))


@pytest.fixture(scope='module')
def built(tmp_path_factory):
  """dummy_data built once through ferjax.data.build."""
  data_dir = tmp_path_factory.mktemp('tfds')
  return build.build('ferv39k', data_dir=data_dir, manual_dir=DUMMY)


def test_label_table():
  assert ferv.FERV_TO_CANONICAL == {
    'Neutral': 0,
    'Happy': 1,
    'Sad': 2,
    'Surprise': 3,
    'Fear': 4,
    'Disgust': 5,
    'Angry': 6,
  }


def test_configs():
  configs = ferv.Builder.BUILDER_CONFIGS
  assert [(c.name, c.frame_size) for c in configs] == [
    ('default', None),
    ('112', 112),
  ]


def test_splits_and_features(built):
  assert built.builder_config.name == 'default'
  assert {s: v.num_examples for s, v in built.info.splits.items()} == {
    'train': 14,
    'test': 7,
  }
  features = built.info.features
  assert set(features) == {
    'frames',
    'label',
    'original_label',
    'id',
    'num_frames',
    'scene',
  }
  assert features['frames'].feature.encoding_format == 'jpeg'
  assert features['label'].names == list(EXPRESSIONS_7)
  assert built.info.supervised_keys == ('frames', 'label')


@pytest.mark.parametrize('split', ['train', 'test'])
def test_clips_follow_the_lists(built, split):
  examples = _examples(built, split)
  # train_All.csv has a header line, test_All.csv has none: both are read.
  assert sorted(ex['id'].decode() for ex in examples) == sorted(_listed(split))
  names = built.info.features['label'].names
  for ex in examples:
    scene, emotion, _ = ex['id'].decode().split('/')
    assert ex['scene'].decode() == scene
    assert ex['original_label'].decode() == emotion
    assert names[ex['label']] == ferv.FERV_NAMES[emotion]
  assert sorted({ex['label'] for ex in examples}) == list(range(7))


@pytest.mark.parametrize('split', ['train', 'test'])
def test_frames_are_the_shipped_files_in_order(built, split):
  for ex in _examples(built, split):
    files = _frame_files(ex['id'].decode())
    assert ex['num_frames'] == len(ex['frames']) == len(files)
    for got, path in zip(ex['frames'], files, strict=True):
      bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
      np.testing.assert_array_equal(got, bgr[..., ::-1])


def test_unpadded_frame_names_keep_their_order():
  clip = clip_folders.Clip(UNPADDED, CLIPS / UNPADDED, 5, 'Disgust')
  listed = clip_folders.list_frames({'train': [clip]}, 'fix')['train'][0]
  assert [p.name for p in listed.frames] == [f'{k}.jpg' for k in range(12)]


def test_resized_config_shrinks_large_frames_only(tmp_path, built):
  small = build.build('ferv39k', '112', tmp_path, manual_dir=DUMMY)
  shipped = {ex['id']: ex['frames'] for ex in _examples(built, 'test')}
  for ex in _examples(small, 'test'):
    assert ex['id'] in shipped and ex['id'].decode() != LARGE
    for got, want in zip(ex['frames'], shipped[ex['id']], strict=True):
      np.testing.assert_array_equal(got, want)  # 40 px: kept as shipped.
  large = [ex for ex in _examples(small, 'train') if ex['id'] == LARGE.encode()]
  files = _frame_files(LARGE)
  for got, path in zip(large[0]['frames'], files, strict=True):
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert bgr.shape == (120, 160, 3)
    data = clip_folders.shrink_frame(bgr, 112)
    want = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert got.shape == (112, 149, 3)  # The aspect ratio is kept.
    np.testing.assert_array_equal(got, want[..., ::-1])


def test_lists_and_clips_in_other_folders(tmp_path, built):
  """The clips zip unpacked into its own name; the lists deeper down."""
  root = tmp_path / 'data' / 'FERV39K'
  shutil.copytree(CLIPS, root / ferv.CLIP_DIR / ferv.CLIP_DIR)
  shutil.copytree(DUMMY / '4_setups', root / 'FERV39k' / '4_setups')
  other = build.build('ferv39k', None, tmp_path / 'tfds', tmp_path / 'data')
  assert sorted(ex['id'] for ex in _examples(other, 'test')) == sorted(
    ex['id'] for ex in _examples(built, 'test')
  )


@pytest.mark.parametrize(
  'line',
  [
    'Action/Sad/0010 Sad',
    '"Action/Sad/0010 Sad"',
    'Action/Sad/0010,Sad',
    'Action\\Sad\\0010  Sad ',
  ],
)
def test_line_forms(line):
  clip = ferv.parse_line(line, pathlib.Path('clips'))
  assert clip.id == 'Action/Sad/0010'
  assert clip.folder == pathlib.Path('clips/Action/Sad/0010')
  assert (clip.label, clip.original_label) == (2, 'Sad')


def test_header_detection():
  assert ferv.is_header('name label')
  assert ferv.is_header('path,label')
  assert not ferv.is_header('Action/Sad/0010 Sad')


@pytest.fixture
def release(tmp_path):
  """A writable copy of dummy_data."""
  return shutil.copytree(DUMMY, tmp_path / 'manual')


def _fails(tmp_path, manual_dir, match):
  data_dir = tmp_path / 'tfds'
  with pytest.raises(manual_data.ManualDataError, match=match) as info:
    build.build('ferv39k', None, data_dir, manual_dir=manual_dir)
  assert not build.is_built('ferv39k', None, data_dir)
  return str(info.value)


def test_folder_without_lists(tmp_path, release):
  shutil.rmtree(release / '4_setups')
  msg = _fails(tmp_path, release, 'train_All.csv not found')
  for tried in ('', 'FERV39K/', 'FERV39k/', 'FERV39K/FERV39k/'):
    assert f'{release}/{tried}4_setups/All_scenes/train_All.csv' in msg
  assert '--manual_dir' in msg


def test_folder_without_clips(tmp_path, release):
  shutil.rmtree(release / ferv.CLIP_DIR)
  msg = _fails(tmp_path, release, f'{ferv.CLIP_DIR} not found')
  assert str(release / 'FERV39K' / ferv.CLIP_DIR) in msg


def test_empty_manual_dir_shows_the_instructions(tmp_path):
  (tmp_path / 'empty').mkdir()
  with pytest.raises(manual_data.ManualDataError, match='wangyanckxx/FERV39k'):
    build.build('ferv39k', None, tmp_path / 'tfds', tmp_path / 'empty')


def test_missing_test_list_is_named(tmp_path, release):
  path = release / ferv.LIST_DIR / 'test_All.csv'
  path.unlink()
  _fails(tmp_path, release, re.escape(f'{path} not found'))


def test_missing_and_empty_clip_folders_are_all_named(tmp_path, release):
  clips = release / ferv.CLIP_DIR
  shutil.rmtree(clips / 'Action' / 'Angry' / '0001')  # train line 2
  for path in (clips / 'Action' / 'Fear' / '0017').iterdir():  # test line 3
    path.unlink()
  msg = _fails(tmp_path, release, r'2 problem\(s\)')
  train = release / ferv.LIST_DIR / 'train_All.csv'
  test = release / ferv.LIST_DIR / 'test_All.csv'
  missing = clips / 'Action' / 'Angry' / '0001'
  assert f'{missing}: no such folder (listed at {train}:2)' in msg
  empty = clips / 'Action' / 'Fear' / '0017'
  assert f'{empty}: no frames (listed at {test}:3)' in msg


def test_unreadable_frame_is_named(tmp_path, release):
  path = release / ferv.CLIP_DIR / UNPADDED / '10.jpg'
  path.write_bytes(b'')
  _fails(tmp_path, release, re.escape(f'{path}: not a 3-channel image'))


@pytest.mark.parametrize(
  ('line', 'match'),
  [
    ('Action/Sad/0099 Sadness', "unknown label 'Sadness'; FERV39K labels"),
    ('Action/Sad/0099 Happy', "label 'Happy' but the path is in Sad/"),
    ('Action/0099 Sad', "'Action/0099' is not `<Scene>/<Emotion>/<clip id>`"),
    ('Action/Sad/0099', 'expected `<Scene>/<Emotion>/<clip id> <Emotion>`'),
    ('Action/Sad/0099 Sad extra', 'expected'),
  ],
)
def test_malformed_line_is_named_with_its_line(tmp_path, release, line, match):
  path = release / ferv.LIST_DIR / 'train_All.csv'
  lines = path.read_text().splitlines()
  path.write_text('\n'.join([*lines[:4], line, *lines[4:]]) + '\n')
  _fails(tmp_path, release, re.escape(f'{path}:5: ') + match)


def test_clip_in_both_splits(tmp_path, release):
  path = release / ferv.LIST_DIR / 'test_All.csv'
  with path.open('a') as f:
    f.write('Action/Angry/0001 Angry\n')
  _fails(
    tmp_path,
    release,
    re.escape(f'{path}:8: clip Action/Angry/0001 of test is in train'),
  )

"""Tests for the dfew builder, on the tiny release copy in dummy_data/."""

import csv
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
from tfds_builders.dfew import dfew_dataset_builder as dfew

DUMMY = pathlib.Path(__file__).parent / 'dummy_data'
CLIPS = DUMMY / 'Clip' / 'clip_224x224'
# The one dummy clip with frames larger than 112 px (144x144).
LARGE = '00021'


def _listed(split: str, fold: int = 1) -> dict[str, int]:
  """Clip id -> DFEW label, as the dummy list of `split` and `fold` says."""
  with dfew.list_file(DUMMY, split, fold).open() as f:
    rows = list(csv.reader(f))[1:]
  return {f'{int(v):05d}': int(label) for v, label in rows}


def _examples(builder, split):
  src = builder.as_data_source(split=split)
  return [src[i] for i in range(len(src))]


def _shipped(clip_id: str) -> list[np.ndarray]:
  """The frames of a dummy clip, decoded by cv2 as RGB, in name order."""
  paths = sorted((CLIPS / clip_id).iterdir())
  return [cv2.imread(str(p), cv2.IMREAD_COLOR)[..., ::-1] for p in paths]


@pytest.fixture(scope='module')
def built(tmp_path_factory):
  """dummy_data's fold 1 built once through ferjax.data.build."""
  data_dir = tmp_path_factory.mktemp('tfds')
  return build.build('dfew', 'fold1', data_dir=data_dir, manual_dir=DUMMY)


def test_label_table():
  assert dfew.DFEW_TO_CANONICAL == {1: 1, 2: 2, 3: 0, 4: 6, 5: 3, 6: 5, 7: 4}


def test_configs():
  configs = {c.name: c for c in dfew.Builder.BUILDER_CONFIGS}
  assert list(configs) == [
    *(f'fold{k}' for k in range(1, 6)),
    *(f'fold{k}_112' for k in range(1, 6)),
  ]
  assert dfew.Builder.BUILDER_CONFIGS[0].name == 'fold1'
  assert configs['fold3'].fold == 3 and configs['fold3'].frame_size is None
  assert configs['fold5_112'].fold == 5
  assert configs['fold5_112'].frame_size == 112


def test_splits_and_features(built):
  assert {s: v.num_examples for s, v in built.info.splits.items()} == {
    'train': 11,
    'test': 3,
  }
  features = built.info.features
  assert set(features) == {
    'frames',
    'label',
    'original_label',
    'id',
    'num_frames',
  }
  assert features['frames'].feature.encoding_format == 'jpeg'
  assert features['label'].names == list(EXPRESSIONS_7)
  assert built.info.supervised_keys == ('frames', 'label')


@pytest.mark.parametrize('split', ['train', 'test'])
def test_clips_follow_the_lists(built, split):
  listed = _listed(split)
  examples = _examples(built, split)
  assert sorted(ex['id'].decode() for ex in examples) == sorted(listed)
  names = built.info.features['label'].names
  for ex in examples:
    dfew_label = listed[ex['id'].decode()]
    assert ex['original_label'] == dfew_label
    assert names[ex['label']] == dfew.DFEW_NAMES[dfew_label]
    n = len(list((CLIPS / ex['id'].decode()).iterdir()))
    assert ex['num_frames'] == len(ex['frames']) == n


def test_every_label_and_short_and_long_clips(built):
  examples = _examples(built, 'train') + _examples(built, 'test')
  assert sorted({ex['label'] for ex in examples}) == list(range(7))
  lengths = {ex['num_frames'] for ex in examples}
  assert min(lengths) == 3 and max(lengths) == 20


@pytest.mark.parametrize('split', ['train', 'test'])
def test_frames_are_the_shipped_files_in_order(built, split):
  for ex in _examples(built, split):
    frames = ex['frames']
    shipped = _shipped(ex['id'].decode())
    assert len(frames) == len(shipped)
    for got, want in zip(frames, shipped, strict=True):
      assert got.dtype == np.uint8
      np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize('fold', dfew.FOLDS)
def test_folds_split_all_clips(fold):
  splits = dfew.read_fold(DUMMY, fold)
  ids = {s: {c.id for c in clips} for s, clips in splits.items()}
  assert ids['train'].isdisjoint(ids['test'])
  assert ids['train'] | ids['test'] == {p.name for p in CLIPS.iterdir()}
  assert ids['test'] == set(_listed('test', fold))
  for clip in splits['train']:
    assert clip.listed_at.startswith(f'{dfew.list_file(DUMMY, "train", fold)}:')


def _shrunk(path: pathlib.Path) -> np.ndarray:
  """A frame as the 112 px configs store it, decoded as RGB."""
  bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
  if min(bgr.shape[:2]) > 112:
    data = clip_folders.shrink_frame(bgr, 112)
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
  return bgr[..., ::-1]


def test_resized_config_shrinks_large_frames_only(tmp_path):
  small = build.build('dfew', 'fold1_112', tmp_path, manual_dir=DUMMY)
  shapes = {}
  for ex in _examples(small, 'train'):
    paths = sorted((CLIPS / ex['id'].decode()).iterdir())
    for got, path in zip(ex['frames'], paths, strict=True):
      np.testing.assert_array_equal(got, _shrunk(path))
    shapes[ex['id'].decode()] = ex['frames'][0].shape
  assert shapes.pop(LARGE) == (112, 112, 3)  # From 144x144.
  assert set(shapes.values()) == {(40, 40, 3)}  # Kept as shipped.


def test_release_inside_a_dfew_folder(tmp_path, built):
  shutil.copytree(DUMMY, tmp_path / 'data' / 'DFEW')
  nested = build.build('dfew', 'fold1', tmp_path / 'tfds', tmp_path / 'data')
  assert sorted(ex['id'] for ex in _examples(nested, 'test')) == sorted(
    ex['id'] for ex in _examples(built, 'test')
  )


@pytest.fixture
def release(tmp_path):
  """A writable copy of dummy_data."""
  return shutil.copytree(DUMMY, tmp_path / 'manual')


def _fails(tmp_path, manual_dir, match):
  data_dir = tmp_path / 'tfds'
  with pytest.raises(manual_data.ManualDataError, match=match) as info:
    build.build('dfew', 'fold1', data_dir, manual_dir=manual_dir)
  assert not build.is_built('dfew', 'fold1', data_dir)
  return str(info.value)


def _edit_list(release, split, edit):
  path = dfew.list_file(release, split, 1)
  lines = path.read_text().splitlines()
  path.write_text('\n'.join(edit(lines)) + '\n')
  return path


def test_folder_without_release(tmp_path):
  (tmp_path / 'other' / 'Clip').mkdir(parents=True)
  msg = _fails(tmp_path, tmp_path / 'other', 'EmoLabel_DataSplit not found')
  for tried in ('EmoLabel_DataSplit', 'DFEW/EmoLabel_DataSplit'):
    assert str(tmp_path / 'other' / tried) in msg
  assert '--manual_dir' in msg


def test_empty_manual_dir_shows_the_instructions(tmp_path):
  # The build refuses it before TFDS would, with our instructions.
  (tmp_path / 'empty').mkdir()
  with pytest.raises(
    manual_data.ManualDataError, match='dfew-dataset.github.io'
  ):
    build.build('dfew', 'fold1', tmp_path / 'tfds', tmp_path / 'empty')


def test_missing_list_is_named(tmp_path, release):
  path = dfew.list_file(release, 'test', 1)
  path.unlink()
  _fails(tmp_path, release, re.escape(f'{path} not found'))


def test_missing_clip_dir_is_named(tmp_path, release):
  shutil.rmtree(release / 'Clip')
  _fails(tmp_path, release, re.escape(f'{release / dfew.CLIP_DIR} not found'))


def test_missing_and_empty_clip_folders_are_all_named(tmp_path, release):
  clips = release / dfew.CLIP_DIR
  shutil.rmtree(clips / '00002')  # train line 2
  for path in (clips / '00013').iterdir():  # test line 3
    path.unlink()
  msg = _fails(tmp_path, release, r'2 problem\(s\)')
  train = dfew.list_file(release, 'train', 1)
  test = dfew.list_file(release, 'test', 1)
  assert f'{clips / "00002"}: no such folder (listed at {train}:2)' in msg
  assert f'{clips / "00013"}: no frames (listed at {test}:3)' in msg


def test_stray_file_in_a_clip_folder(tmp_path, release):
  stray = release / dfew.CLIP_DIR / '00003' / 'notes.txt'
  stray.write_text('x')
  (stray.parent / 'Thumbs.db').write_text('x')  # Clutter passes.
  _fails(tmp_path, release, re.escape(f'{stray}: not a JPEG frame'))


def test_unreadable_frame_is_named(tmp_path, release):
  path = sorted((release / dfew.CLIP_DIR / '00005').iterdir())[2]
  path.write_bytes(path.read_bytes()[:40])
  _fails(tmp_path, release, re.escape(f'{path}: not a 3-channel image'))


def test_frame_of_another_size_is_named(tmp_path, release):
  path = sorted((release / dfew.CLIP_DIR / '00005').iterdir())[1]
  ok, data = cv2.imencode('.jpg', np.zeros((40, 41, 3), np.uint8))
  path.write_bytes(data.tobytes())
  _fails(tmp_path, release, re.escape(f'{path}: 41x40 pixels, but'))


@pytest.mark.parametrize(
  ('line', 'match'),
  [
    ('8,9', "unknown label '9'; DFEW labels are 1..7"),
    ('8,happy', "unknown label 'happy'"),
    ('8', r'expected `<video id>,<label>`'),
    ('x8,1', "video id 'x8' is not a number"),
    ('123456,1', "video id '123456' is not a number of 1 to 5 digits"),
  ],
)
def test_malformed_line_is_named_with_its_line(tmp_path, release, line, match):
  path = _edit_list(release, 'train', lambda ls: [*ls[:3], line, *ls[3:]])
  _fails(tmp_path, release, re.escape(f'{path}:4: ') + match)


def test_clip_listed_twice(tmp_path, release):
  path = _edit_list(release, 'train', lambda ls: [*ls, ls[2]])
  n = len(path.read_text().splitlines())
  _fails(
    tmp_path,
    release,
    re.escape(f'{path}:{n}: clip 00003 is listed again (first at {path}:3)'),
  )


def test_clip_in_both_splits(tmp_path, release):
  path = _edit_list(release, 'test', lambda ls: [*ls, '2,2'])
  _fails(
    tmp_path, release, re.escape(f'{path}:5: clip 00002 of test is in train')
  )


def test_header_is_optional_and_padding_accepted(tmp_path, release):
  _edit_list(
    release,
    'train',
    lambda ls: [
      f'{int(v):05d},{x}' for v, x in (line.split(',') for line in ls[1:])
    ],
  )
  splits = dfew.read_fold(release, 1)
  assert [c.id for c in splits['train']] == list(_listed('train'))

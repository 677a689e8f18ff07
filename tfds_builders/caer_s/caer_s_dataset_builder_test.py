"""Tests for the caer_s builder, on the tiny release copy in dummy_data/."""

import pathlib
import shutil

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds

from ferjax.data import build
from ferjax.labels import EXPRESSIONS_7
from tfds_builders import manual_data
from tfds_builders.caer_s import caer_s_dataset_builder as caer_s

DUMMY = pathlib.Path(__file__).parent / 'dummy_data'
RELEASE = DUMMY / 'CAER-S'


@pytest.fixture(scope='module')
def built(tmp_path_factory):
  """dummy_data built once through ferjax.data.build, parent-folder form."""
  data_dir = tmp_path_factory.mktemp('tfds')
  return build.build('caer_s', manual_dir=DUMMY, data_dir=data_dir)


def _by_id(builder, split) -> dict[str, dict]:
  """{id: example} of one split."""
  src = builder.as_data_source(split=split)
  return {ex['id'].decode(): ex for ex in (src[i] for i in range(len(src)))}


def test_label_table():
  table = caer_s.CAER_TO_CANONICAL
  folders = [sorted(k for k in table if table[k] == i) for i in range(7)]
  # By canonical label: neutral, happiness, ..., anger (either spelling).
  assert folders == [
    ['Neutral'],
    ['Happy'],
    ['Sad'],
    ['Surprise'],
    ['Fear'],
    ['Disgust'],
    ['Anger', 'Angry'],
  ]


def test_splits_and_features(built):
  assert {k: v.num_examples for k, v in built.info.splits.items()} == {
    'train': 14,
    'test': 7,
  }
  assert built.info.features['label'].names == list(EXPRESSIONS_7)
  assert built.info.features['image'].encoding_format == 'png'
  assert built.info.supervised_keys == ('image', 'label')


def test_known_files_and_both_anger_folders(built):
  names = built.info.features['label'].names
  train, test = _by_id(built, 'train'), _by_id(built, 'test')
  assert train['train/Angry/0002.png']['label'] == names.index('anger')
  assert test['test/Anger/0001.png']['label'] == names.index('anger')
  assert test['test/Anger/0001.png']['original_label'] == b'Anger'
  assert train['train/Happy/0001.png']['label'] == names.index('happiness')
  assert test['test/Neutral/0001.png']['label'] == names.index('neutral')
  assert test['test/Surprise/0001.png']['original_label'] == b'Surprise'


@pytest.mark.parametrize('split', ['train', 'test'])
def test_every_file_once_with_its_folder_label(built, split):
  examples = _by_id(built, split)
  on_disk = (RELEASE / split).glob('*/*.png')
  assert sorted(examples) == sorted(
    p.relative_to(RELEASE).as_posix() for p in on_disk
  )
  for key, ex in examples.items():
    folder = key.split('/')[1]
    assert ex['original_label'].decode() == folder
    assert ex['label'] == caer_s.CAER_TO_CANONICAL[folder]


def test_frame_is_the_shipped_png(built):
  """One frame: pixels equal a cv2 decode (RGB), bytes equal the file."""
  path = RELEASE / 'test' / 'Fear' / '0001.png'
  frame = _by_id(built, 'test')['test/Fear/0001.png']['image']
  assert frame.shape == (27, 48, 3)
  assert frame.dtype == np.uint8
  np.testing.assert_array_equal(frame, cv2.imread(str(path))[..., ::-1])
  raw = built.as_data_source(
    split='test', decoders={'image': tfds.decode.SkipDecoding()}
  )
  assert path.read_bytes() in {raw[i]['image'] for i in range(len(raw))}


@pytest.fixture
def copy(tmp_path):
  """A writable copy of dummy_data/CAER-S."""
  return shutil.copytree(RELEASE, tmp_path / 'data' / 'CAER-S')


def _build(tmp_path, manual_dir):
  return build.build(
    'caer_s', manual_dir=manual_dir, data_dir=tmp_path / 'tfds'
  )


def test_release_folder_itself_and_swapped_anger_names(tmp_path, copy):
  (copy / 'train' / 'Angry').rename(copy / 'train' / 'Anger')
  (copy / 'test' / 'Anger').rename(copy / 'test' / 'Angry')
  builder = _build(tmp_path, copy)
  train = _by_id(builder, 'train')
  assert train['train/Anger/0001.png']['label'] == 6
  assert _by_id(builder, 'test')['test/Angry/0001.png']['label'] == 6
  assert len(train) == 14


def test_folder_without_release(tmp_path):
  other = tmp_path / 'other'
  (other / 'CAER').mkdir(parents=True)
  (other / 'readme.txt').write_text('x')
  with pytest.raises(
    manual_data.ManualDataError, match='train not found'
  ) as info:
    _build(tmp_path, other)
  tried = f'tried {other / "train"}, {other / "CAER-S" / "train"}.'
  assert tried in str(info.value)
  assert '--manual_dir' in str(info.value)


def test_empty_manual_dir_shows_the_instructions(tmp_path):
  # The build refuses it before TFDS would, with our instructions.
  with pytest.raises(
    manual_data.ManualDataError, match='caer-dataset.github.io'
  ):
    _build(tmp_path, tmp_path / 'absent')


def _truncate(path: pathlib.Path, keep: int) -> None:
  path.write_bytes(path.read_bytes()[:keep])


# (how a release copy is broken, what the error says, after the copy's path).
BROKEN = {
  'no_test_split': (
    lambda r: shutil.rmtree(r / 'test'),
    ['/test is not a folder'],
  ),
  'unknown_class_folder': (
    lambda r: (r / 'test' / 'Sad').rename(r / 'test' / 'Sadness'),
    ['/test/Sadness: not a class folder', '/test: missing class folder Sad'],
  ),
  'missing_class_folder': (
    lambda r: shutil.rmtree(r / 'train' / 'Angry'),
    ['/train: missing class folder Anger or Angry'],
  ),
  'jpeg_file': (
    lambda r: r.joinpath('train/Happy/0003.jpg').write_bytes(b'x'),
    ['/train/Happy/0003.jpg: not an image file ending in .png'],
  ),
  'empty_frame': (
    lambda r: _truncate(r / 'train' / 'Disgust' / '0002.png', 0),
    ['/train/Disgust/0002.png: empty file'],
  ),
  'truncated_frame': (
    lambda r: _truncate(r / 'test' / 'Happy' / '0001.png', 60),
    ['/test/Happy/0001.png: not a 3-channel image (undecodable)'],
  ),
}


@pytest.mark.parametrize('case', sorted(BROKEN))
def test_broken_release_is_named_and_nothing_is_built(tmp_path, copy, case):
  breaks, expected = BROKEN[case]
  breaks(copy)
  with pytest.raises(manual_data.ManualDataError) as info:
    _build(tmp_path, copy.parent)
  for text in expected:
    assert f'{copy}{text}' in str(info.value)
  assert not build.is_built('caer_s', data_dir=tmp_path / 'tfds')


def test_aligned_config_stores_faces_and_counts_frames_without(tmp_path, copy):
  from tests import photos

  face = photos.read('grace_hopper')[..., ::-1]  # A real face, as BGR.
  cv2.imwrite(str(copy / 'test' / 'Happy' / '0001.png'), face)
  build.build(
    'caer_s', 'aligned', manual_dir=copy.parent, data_dir=tmp_path / 'tfds'
  )
  builder = build.builder('caer_s', 'aligned', tmp_path / 'tfds')  # Reread.
  meta = builder.info.metadata['alignment']
  assert meta['detector'] == 'mtcnn' and meta['crop'] == 'rafdb'
  assert meta['size'] == [100, 100] and len(meta['template']) == 5
  assert meta['no_face'] == 'keep'
  # Besides the photo, MTCNN finds the tiny drawn faces of two dummy
  # frames (train/Disgust/0002, test/Surprise/0001).
  assert meta['images_without_face'] == {'train': 13, 'test': 5}
  test = _by_id(builder, 'test')
  for found in ('Happy', 'Surprise'):
    assert test[f'test/{found}/0001.png']['image'].shape == (100, 100, 3)
  assert test['test/Fear/0001.png']['image'].shape == (27, 48, 3)  # Whole.
  assert len(test) == 7
  assert 'alignment' not in build.builder('caer_s').info.metadata


def test_aligner_policies_and_styles():
  from tfds_builders import face_align

  flat = np.full((60, 80, 3), 128, np.uint8)
  keep = face_align.Aligner('rafdb')
  assert keep.align(flat, 'train')[0] is flat
  drop = face_align.Aligner('arcface_112', no_face='drop')
  assert drop.align(flat, 'test') == (None, None)
  assert drop.metadata()['images_without_face'] == {'test': 1}
  with pytest.raises(ValueError, match='template styles only'):
    face_align.Aligner('affectnet')
  with pytest.raises(ValueError, match="no_face='skip'"):
    face_align.Aligner('rafdb', no_face='skip')

"""Tests for the sfew builder, on the tiny release copy in dummy_data/."""

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
from tfds_builders.sfew import sfew_dataset_builder as sfew

DUMMY = pathlib.Path(__file__).parent / 'dummy_data'
# Where each split's folder is in dummy_data (nested, as the zips unpack).
SPLIT_DIRS = {
  'train': DUMMY / 'Train' / 'Train_Aligned_Faces',
  'validation': DUMMY / 'Val' / 'Val_Aligned_Faces',
}


@pytest.fixture(scope='module')
def built(tmp_path_factory):
  """dummy_data built once through ferjax.data.build."""
  data_dir = tmp_path_factory.mktemp('tfds')
  return build.build('sfew', manual_dir=DUMMY, data_dir=data_dir)


def _examples(builder, split, **kwargs):
  src = builder.as_data_source(split=split, **kwargs)
  return [src[i] for i in range(len(src))]


def _file(ex) -> pathlib.Path:
  """The dummy_data file of an example, from its id."""
  split_dir, folder, name = ex['id'].decode().split('/')
  parent = split_dir.split('_')[0]  # Train_Aligned_Faces is in Train/.
  return DUMMY / parent / split_dir / folder / name


def test_label_table():
  assert sfew.SFEW_TO_CANONICAL == {
    'Neutral': 0,
    'Happy': 1,
    'Sad': 2,
    'Surprise': 3,
    'Fear': 4,
    'Disgust': 5,
    'Angry': 6,
  }


def test_splits_and_features(built):
  assert built.info.splits['train'].num_examples == 14
  assert built.info.splits['validation'].num_examples == 7
  assert set(built.info.splits) == {'train', 'validation'}
  assert built.info.features['label'].names == list(EXPRESSIONS_7)
  assert built.info.features['image'].encoding_format is None
  assert built.info.supervised_keys == ('image', 'label')


@pytest.mark.parametrize('split', ['train', 'validation'])
def test_labels_follow_the_class_folders(built, split):
  examples = _examples(built, split)
  ids = sorted(ex['id'].decode() for ex in examples)
  on_disk = sorted(
    f'{SPLIT_DIRS[split].name}/{p.parent.name}/{p.name}'
    for p in SPLIT_DIRS[split].glob('*/*')
  )
  assert ids == on_disk
  names = built.info.features['label'].names
  for ex in examples:
    folder = ex['original_label'].decode()
    assert ex['id'].decode().split('/')[1] == folder
    assert names[ex['label']] == sfew.SFEW_NAMES[folder]
  assert sorted({ex['label'] for ex in examples}) == list(range(7))


def test_known_files(built):
  labels = {ex['id']: ex['label'] for ex in _examples(built, 'validation')}
  names = built.info.features['label'].names
  key = b'Val_Aligned_Faces/Happy/Synthetic_000000203_00000001.png'
  assert labels[key] == 1 == names.index('happiness')
  key = b'Val_Aligned_Faces/Angry/Synthetic_000000200_00000001.png'
  assert labels[key] == 6 == names.index('anger')
  # The JPEG face among the PNGs.
  key = b'Val_Aligned_Faces/Neutral/Synthetic_000000204_00000001.jpg'
  assert labels[key] == 0 == names.index('neutral')


@pytest.mark.parametrize('split', ['train', 'validation'])
def test_images_are_the_shipped_files(built, split):
  """Pixels equal a cv2 decode of the file (RGB), bytes equal the file."""
  decoded = _examples(built, split)
  raw = _examples(built, split, decoders={'image': tfds.decode.SkipDecoding()})
  for ex, stored in zip(decoded, raw, strict=True):
    path = _file(ex)
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert ex['image'].dtype == np.uint8
    assert ex['image'].shape == (45, 36, 3)
    np.testing.assert_array_equal(ex['image'], bgr[..., ::-1])
    assert stored['image'] == path.read_bytes()


def _build(tmp_path, manual_dir):
  return build.build('sfew', manual_dir=manual_dir, data_dir=tmp_path / 'tfds')


def _ids(builder):
  return {s: [x['id'] for x in _examples(builder, s)] for s in SPLIT_DIRS}


def test_split_folders_directly_in_manual_dir(tmp_path, built):
  flat = tmp_path / 'flat'
  for split_dir in SPLIT_DIRS.values():
    shutil.copytree(split_dir, flat / split_dir.name)
  assert _ids(_build(tmp_path, flat)) == _ids(built)


@pytest.fixture
def release(tmp_path):
  """A writable copy of dummy_data."""
  return shutil.copytree(DUMMY, tmp_path / 'manual')


def _fails(tmp_path, manual_dir, match):
  with pytest.raises(manual_data.ManualDataError, match=match) as info:
    _build(tmp_path, manual_dir)
  assert not build.is_built('sfew', data_dir=tmp_path / 'tfds')
  return str(info.value)


def test_folder_without_release(tmp_path):
  (tmp_path / 'other' / 'Train').mkdir(parents=True)
  (tmp_path / 'other' / 'notes.txt').write_text('x')
  msg = _fails(tmp_path, tmp_path / 'other', 'Train_Aligned_Faces not found')
  for tried in ('Train_Aligned_Faces', 'Train/Train_Aligned_Faces'):
    assert str(tmp_path / 'other' / tried) in msg
  assert '--manual_dir' in msg


def test_missing_val_folder_is_named(tmp_path, release):
  shutil.rmtree(release / 'Val')
  msg = _fails(tmp_path, release, 'Val_Aligned_Faces not found')
  assert str(release / 'Val' / 'Val_Aligned_Faces') in msg


def test_empty_manual_dir_shows_the_instructions(tmp_path):
  # The build refuses it before TFDS would, with our instructions.
  (tmp_path / 'empty').mkdir()
  with pytest.raises(manual_data.ManualDataError, match='few_group/AFEW.html'):
    _build(tmp_path, tmp_path / 'empty')


def test_unknown_and_missing_class_folders_are_named(tmp_path, release):
  split_dir = release / 'Train' / 'Train_Aligned_Faces'
  (split_dir / 'Angry').rename(split_dir / 'Anger')
  msg = _fails(tmp_path, release, re.escape(f'{split_dir / "Anger"}: not a'))
  assert f'{split_dir}: missing class folder Angry' in msg


def test_missing_class_folder_is_named(tmp_path, release):
  split_dir = release / 'Val' / 'Val_Aligned_Faces'
  shutil.rmtree(split_dir / 'Fear')
  _fails(
    tmp_path, release, re.escape(f'{split_dir}: missing class folder Fear')
  )


def test_undecodable_image_is_named(tmp_path, release):
  path = release / 'Val' / 'Val_Aligned_Faces' / 'Sad'
  path = next(path.iterdir())
  path.write_bytes(path.read_bytes()[:50])
  _fails(tmp_path, release, re.escape(f'{path}: not a 3-channel image'))

"""Tests for tfds_builders.manual_data, the checks shared by the builders."""

import io
import struct
import zlib

import pytest
from PIL import Image

from ferjax.labels import EXPRESSIONS_7
from tfds_builders import manual_data
from tfds_builders.rafdb import rafdb_dataset_builder as rafdb


def test_expression_folders_name_the_canonical_classes():
  assert sorted(manual_data.EXPRESSION_FOLDERS.values()) == sorted(
    EXPRESSIONS_7
  )


@pytest.mark.parametrize('data', [b'', b'not an image', b'\xff\xd8\xff'])
def test_decode_image_names_the_file_for_any_bad_bytes(data):
  with pytest.raises(
    manual_data.ManualDataError, match='a.png: not a 3-channel'
  ):
    manual_data.decode_image(data, 'a.png', channels=(3,))


def _png(width: int, height: int, claimed=None) -> bytes:
  """A PNG of width x height, or a 1x1 one whose header claims `claimed`."""
  buf = io.BytesIO()
  Image.new('RGB', (width, height), (90, 120, 150)).save(buf, 'PNG')
  data = bytearray(buf.getvalue())
  if claimed:
    struct.pack_into('>II', data, 16, *claimed)  # IHDR width, height.
    struct.pack_into('>I', data, 29, zlib.crc32(bytes(data[12:29])))
  return bytes(data)


@pytest.mark.parametrize(
  'claimed, match',
  [
    ((10000, 10000), r'10000x10000 pixels, more than a face image has'),
    ((16000, 16000), r'exceeds limit of \d+ pixels.* refused before'),
    ((60000, 60000), r'exceeds limit of \d+ pixels.* refused before'),
  ],
)
def test_huge_images_are_refused_from_their_header(claimed, match):
  data = _png(1, 1, claimed)
  with pytest.raises(manual_data.ManualDataError, match=f'big.jpg: .*{match}'):
    manual_data.decode_image(data, 'big.jpg', channels=(3,))


def test_an_image_in_another_format_than_its_name_is_refused():
  data = _png(4, 4)
  assert manual_data.decode_image(data, 'a.png', channels=(3,)).shape[:2] == (
    4,
    4,
  )
  with pytest.raises(
    manual_data.ManualDataError, match='a.jpg: a PNG file named .jpg, not JPEG'
  ):
    manual_data.decode_image(data, 'a.jpg', channels=(3,))


def test_a_label_file_that_is_not_utf8_is_named(tmp_path):
  path = tmp_path / 'list_patition_label.txt'
  path.write_bytes(b'train_00001.jpg 1\ntrain_00002.jpg \xff\xfe 2\n')
  with pytest.raises(
    manual_data.ManualDataError, match=f'{path}: not UTF-8 text'
  ):
    rafdb.read_labels(path)

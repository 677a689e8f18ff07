"""Tests for tfds_builders.manual_data, the checks shared by the builders."""

import pytest

from ferjax.labels import EXPRESSIONS_7
from tfds_builders import manual_data


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

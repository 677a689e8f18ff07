"""Crop styles: five-point alignment and each dataset's convention."""

import math

import numpy as np
import pytest

from configs import common
from ferjax.data import datasets
from ferjax.faces import crops
from ferjax.faces import detect
from tests import photos


@pytest.fixture(scope='module')
def hopper():
  image = photos.read('grace_hopper')
  (face,) = detect.get_detector('mtcnn')(image)
  return image, face


def test_similarity_recovers_a_known_transform():
  rng = np.random.default_rng(0)
  src = rng.uniform(0, 100, (5, 2))
  angle, scale, shift = math.radians(17), 0.6, np.array([12.0, -3.0])
  rotation = np.array(
    [[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]]
  )
  dst = scale * src @ rotation.T + shift
  matrix = crops.similarity(src, dst)
  np.testing.assert_allclose(matrix[:, :2], scale * rotation, atol=1e-9)
  np.testing.assert_allclose(matrix[:, 2], shift, atol=1e-9)
  # A mirror image is not a similarity: the fit stays a rotation.
  mirrored = crops.similarity(src, dst * [-1, 1])
  assert np.linalg.det(mirrored[:, :2]) > 0


@pytest.mark.parametrize('name', ['rafdb', 'arcface_112', 'sfew'])
def test_template_crop_puts_the_landmarks_on_the_template(hopper, name):
  """The aligned crop, detected again, has its landmarks where the
  dataset's template puts them (the crop and the style agree)."""
  image, face = hopper
  style = crops.get_style(name)
  out = crops.crop(image, face, name)
  assert out.shape == (style.size[1], style.size[0], 3)
  assert out.dtype == np.uint8
  (again,) = detect.get_detector('mtcnn', min_face_size=12)(out)
  found = np.array(again.landmarks)
  matrix = crops.similarity(face.landmarks, style.points)
  moved = np.array(face.landmarks) @ matrix[:, :2].T + matrix[:, 2]
  eye_distance = style.points[1][0] - style.points[0][0]
  # MTCNN finds the landmarks where the warp moved them, and so on the
  # template, up to how this face differs from the mean face and MTCNN's
  # own error on a tight crop (measured: up to 4.5 px, 13 % of the eye
  # distance, mostly downwards; 2.6 to 4.2 px, 9 to 12 %, on average).
  assert np.abs(found - moved).max() < 0.15 * eye_distance
  distance = np.linalg.norm(found - np.array(style.points), axis=1)
  assert distance.mean() < 0.15 * eye_distance, distance


def test_template_warp_moves_points_exactly():
  import cv2

  image = np.zeros((300, 400), np.uint8)
  points = np.array(
    [[150, 120], [230, 110], [195, 160], [160, 200], [225, 195]]
  )
  for x, y in points:
    cv2.circle(image, (int(x), int(y)), 4, 255, -1)
  face = detect.Face(100, 60, 180, 200, landmarks=tuple(map(tuple, points)))
  out = crops.crop(image, face, 'arcface_112')
  matrix = crops.similarity(points, crops.ARCFACE_112)
  moved = points @ matrix[:, :2].T + matrix[:, 2]
  _, _, _, centres = cv2.connectedComponentsWithStats(
    (out > 60).astype(np.uint8)
  )
  centres = centres[1:][
    np.argsort(centres[1:, 0] + 1000 * (centres[1:, 1] > 85))
  ]
  moved = moved[np.argsort(moved[:, 0] + 1000 * (moved[:, 1] > 85))]
  np.testing.assert_allclose(centres, moved, atol=0.5)


def test_box_styles_sizes_margins_and_grey(hopper):
  image, face = hopper
  ferplus = crops.crop(image, face, 'ferplus')
  assert ferplus.shape == (48, 48, 3)
  assert (ferplus[..., 0] == ferplus[..., 1]).all()  # Grey as RGB.
  affectnet = crops.crop(image, face, 'affectnet')  # Per axis, unsquared.
  dx, dy = round(face.w * 0.1), round(face.h * 0.1)
  assert affectnet.shape == (face.h + 2 * dy, face.w + 2 * dx, 3)
  np.testing.assert_array_equal(
    affectnet,
    image[face.y - dy : face.y + face.h + dy, face.x - dx :][
      :, : face.w + 2 * dx
    ],
  )
  assert crops.crop(image, face, 'caer_s') is image  # Whole frames.
  # A template style falls back to a box crop for a face without landmarks.
  bare = detect.Face(face.x, face.y, face.w, face.h)
  assert crops.crop(image, bare, 'rafdb').shape == (100, 100, 3)


def test_unknown_styles_are_named():
  with pytest.raises(ValueError, match="unknown crop style 'raf'.*rafdb"):
    crops.get_style('raf')
  with pytest.raises(ValueError, match='five points'):
    crops.CropStyle('template', (10, 10))
  config = common.base_config()
  config.data.crop = 'raf'
  with pytest.raises(ValueError, match="config.data.crop='raf'"):
    datasets.check_data_config(config.data)


@pytest.mark.parametrize(
  ('name', 'builder_config', 'crop'),
  [
    ('rafdb', '', 'rafdb'),
    ('sfew', '', 'sfew'),
    ('ferplus', 'majority', 'ferplus'),
    ('affectnet', '8class', 'affectnet'),
    ('affectnet', '7class_aligned', 'rafdb'),
    ('caer_s', '', 'caer_s'),
    ('caer_s', 'aligned', 'rafdb'),
    ('dfew', 'fold1', 'dfew'),
  ],
)
def test_set_dataset_records_the_crop_style(name, builder_config, crop):
  config = datasets.set_dataset(common.base_config(), name, builder_config)
  assert config.data.crop == crop
  datasets.check_data_config(config.data)
  assert crop in crops.STYLES


def test_every_dataset_crop_is_a_style():
  for spec in datasets.SPECS.values():
    for builder_config in spec.configs:
      assert spec.crop_for(builder_config) in crops.STYLES

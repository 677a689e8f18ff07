"""Face detection and alignment: Haar on rendered faces, align, registry."""

import math

import cv2
import numpy as np
import pytest

from ferjax.faces import detect
from tfds_builders.synthetic_fer import render


def _face(index: int, size: int) -> np.ndarray:
  """Rendered test face `index` as RGB."""
  bgr = render.render_example(0, 1, index, index % 7, size)
  return np.ascontiguousarray(bgr[..., ::-1])


def _background(seed: int, width: int, height: int) -> np.ndarray:
  """A smooth random colour field, free of face-like detail."""
  rng = np.random.default_rng(seed)
  coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
  return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR)


def test_haar_finds_most_rendered_faces_with_boxes_inside():
  detector = detect.get_detector('haar')
  found = 0
  for index in range(20):
    image = _face(index, 224)
    faces = detector(image)
    found += bool(faces)
    for f in faces:
      assert min(f.x, f.y) >= 0 and f.w > 0 and f.h > 0
      assert f.x + f.w <= 224 and f.y + f.h <= 224
      assert f.score >= detector.min_neighbors
  # Measured: 15 of these 20 (32 of the first 40).
  assert found >= 13


def test_haar_orders_faces_largest_first():
  image = _background(0, 520, 300)
  image[30:254, 10:234] = _face(1, 224)
  image[100:212, 380:492] = _face(2, 112)
  faces = detect.get_detector('haar')(image)
  assert len(faces) == 2
  big, small = faces
  assert big.area > small.area
  assert 10 <= big.x + big.w / 2 <= 234
  assert 380 <= small.x + small.w / 2 <= 492


def test_haar_finds_nothing_in_a_flat_image():
  assert (
    detect.get_detector('haar')(np.full((200, 200, 3), 128, np.uint8)) == []
  )


def test_haar_eye_search_keeps_valid_pairs_only():
  detector = detect.get_detector('haar', eyes=True, max_roll=25.0)
  for index in (1, 2, 4):
    for f in detector(_face(index, 224)):
      if f.left_eye is not None:
        assert f.left_eye[0] < f.right_eye[0]
        assert f.y <= f.left_eye[1] <= f.y + f.h / 2
        assert abs(f.roll) <= 25.0


def test_detectors_reject_non_rgb_input():
  with pytest.raises(ValueError, match='RGB uint8'):
    detect.get_detector('haar')(np.zeros((50, 50), np.uint8))


def test_none_detector_is_the_whole_image():
  image = np.zeros((30, 40, 3), np.uint8)
  for name in (None, 'none'):
    (face,) = detect.get_detector(name)(image)
    assert (face.x, face.y, face.w, face.h) == (0, 0, 40, 30)


def test_registry_names_callables_and_errors():
  assert {'haar', 'none'} <= set(detect.list_detectors())

  def mine(image):
    return [detect.Face(1, 2, 3, 4)]

  assert detect.get_detector(mine) is mine
  detect.register_detector('test-fixed', lambda: mine)
  assert detect.get_detector('test-fixed') is mine
  with pytest.raises(ValueError, match="unknown face detector 'retina'.*haar"):
    detect.get_detector('retina')
  assert detect.get_detector('haar', min_neighbors=7).min_neighbors == 7


def test_detect_resized_maps_boxes_back_to_the_full_image():
  seen = []

  def fixed(image):
    seen.append(image.shape)
    return [detect.Face(10, 20, 30, 30, left_eye=(15.0, 25.0))]

  image = np.zeros((800, 1200, 3), np.uint8)
  (face,) = detect.detect_resized(fixed, image, max_side=300)
  assert seen == [(200, 300, 3)]
  assert (face.x, face.y, face.w, face.h) == (40, 80, 120, 120)
  assert face.left_eye == (60.0, 100.0)
  detect.detect_resized(fixed, image, max_side=None)
  assert seen[-1] == image.shape


def test_haar_on_a_large_image_detects_on_a_smaller_copy():
  image = _background(3, 560, 420)
  image[98:322, 168:392] = _face(4, 224)
  big = cv2.resize(image, None, fx=3, fy=3, interpolation=cv2.INTER_LINEAR)
  faces = detect.detect_resized(detect.get_detector('haar'), big, 640)
  assert faces
  cx, cy = faces[0].x + faces[0].w / 2, faces[0].y + faces[0].h / 2
  assert abs(cx - 3 * 280) < 60 and abs(cy - 3 * 210) < 60
  assert faces[0].w > 224  # In the pixels of the 3x image.


def test_align_size_margin_and_border():
  image = np.full((100, 120, 3), 200, np.uint8)
  face = detect.Face(40, 30, 40, 40)
  assert detect.align(image, face, margin=0.25).shape == (60, 60, 3)
  assert detect.align(image, face, margin=0.0, size=16).shape == (16, 16, 3)
  crop = detect.align(image, face, margin=0.0)
  np.testing.assert_array_equal(crop, image[30:70, 40:80])
  gray = detect.align(image[..., 0], face, margin=0.1)
  assert gray.shape == (48, 48)
  # A face at the corner: the crop leaves the image, the rest is border.
  corner = detect.Face(0, 0, 20, 20)
  black = detect.align(image, corner, margin=0.5)
  assert black.shape == (40, 40, 3)
  assert black[:10, :10].max() == 0 and black[20:, 20:].min() == 200
  edge = detect.align(image, corner, margin=0.5, border='replicate')
  assert edge.min() == 200
  with pytest.raises(ValueError, match='margin'):
    detect.align(image, face, margin=-0.1)


def _blob_centres(gray: np.ndarray) -> np.ndarray:
  """Centroids of the bright blobs, left to right."""
  n, _, _, centroids = cv2.connectedComponentsWithStats(
    (gray > 127).astype(np.uint8)
  )
  return centroids[1:][np.argsort(centroids[1:, 0])]


def test_align_turns_the_eye_line_horizontal():
  image = np.zeros((200, 200), np.uint8)
  left, right = (70.0, 80.0), (130.0, 104.0)  # Right eye lower: roll > 0.
  for x, y in (left, right):
    cv2.circle(image, (int(x), int(y)), 5, 255, -1)
  face = detect.Face(50, 50, 100, 100, left_eye=left, right_eye=right)
  assert face.roll == pytest.approx(math.degrees(math.atan2(24, 60)))
  crop = detect.align(image, face, margin=0.1)
  assert crop.shape == (120, 120)
  (lx, ly), (rx, ry) = _blob_centres(crop)
  assert abs(ly - ry) < 1.0
  # Rotation about the box centre keeps the eye distance.
  assert rx - lx == pytest.approx(math.hypot(60, 24), abs=1.0)
  # Without eyes the same face is a plain crop: still tilted.
  plain = detect.align(image, detect.Face(50, 50, 100, 100), margin=0.1)
  (_, ly), (_, ry) = _blob_centres(plain)
  assert ry - ly == pytest.approx(24, abs=1.0)


def test_face_scaled_and_roll_without_eyes():
  face = detect.Face(3, 4, 10, 12, 2.0, (4.0, 6.0), (9.0, 6.0))
  assert face.roll == 0.0
  double = face.scaled(2)
  assert (double.x, double.y, double.w, double.h) == (6, 8, 20, 24)
  assert double.right_eye == (18.0, 12.0) and double.score == 2.0
  assert detect.Face(0, 0, 5, 5).roll == 0.0

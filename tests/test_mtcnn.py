"""MTCNN in JAX: shipped weights, parity with facenet-pytorch, compiles."""

import hashlib
import importlib.util
import os
import re
import sys
import types

import chex
import cv2
import numpy as np
import pytest

from ferjax.faces import detect
from ferjax.faces import mtcnn
from ferjax.faces import mtcnn_nets
from ferjax.faces import mtcnn_weights
from tests import photos

DATA = os.path.join(os.path.dirname(mtcnn_nets.__file__), 'data')


def test_shipped_weights_match_their_recorded_source():
  with open(os.path.join(DATA, 'mtcnn_SOURCE.md')) as f:
    recorded = re.search(r'`mtcnn.npz` \| .* sha256 `(\w+)`', f.read())[1]
  with open(os.path.join(DATA, mtcnn_nets.WEIGHTS), 'rb') as f:
    assert hashlib.sha256(f.read()).hexdigest() == recorded
  arrays = mtcnn_nets.read_weights()
  assert len(arrays) == 50
  chex.assert_trees_all_equal_dtypes(
    list(arrays.values()), [np.zeros(1, np.float32)] * 50
  )
  mtcnn_nets.check_variables(mtcnn_nets.variables())
  assert os.path.isfile(os.path.join(DATA, 'facenet_pytorch_LICENSE.md'))


@pytest.mark.torch
def test_conversion_rebuilds_the_file_byte_for_byte(tmp_path):
  pytest.importorskip('torch')
  spec = importlib.util.find_spec('facenet_pytorch')
  if spec is None:
    pytest.skip('facenet-pytorch is not installed (make .venv/.dev)')
  out = tmp_path / 'mtcnn.npz'
  package = os.path.dirname(spec.origin)
  argv = ['--package_dir', package, '--out', str(out)]
  assert mtcnn_weights.main(argv) == 0
  with open(os.path.join(DATA, mtcnn_nets.WEIGHTS), 'rb') as f:
    assert out.read_bytes() == f.read()


def _batched_nms(boxes, scores, idxs, iou_threshold):
  """torchvision.ops.batched_nms in plain torch (IoU, no +1 on areas)."""
  import torch

  keep = []
  for c in torch.unique(idxs):
    ids = torch.nonzero(idxs == c).flatten()
    b = boxes[ids]
    order = torch.argsort(scores[ids], descending=True, stable=True)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    while order.numel():
      i, rest = order[0], order[1:]
      keep.append(int(ids[i]))
      lt = torch.maximum(b[i, :2], b[rest, :2])
      rb = torch.minimum(b[i, 2:], b[rest, 2:])
      inter = (rb - lt).clamp(min=0).prod(1)
      order = rest[inter / (area[i] + area[rest] - inter) <= iou_threshold]
  keep = torch.tensor(keep, dtype=torch.long)
  return keep[torch.argsort(scores[keep], descending=True, stable=True)]


@pytest.fixture(scope='module')
def facenet(request):
  """facenet-pytorch's MTCNN, with a stand-in for the torchvision it
  imports (PyPI's torchvision does not load beside the CPU torch wheel)."""
  pytest.importorskip('torch')
  if importlib.util.find_spec('facenet_pytorch') is None:
    pytest.skip('facenet-pytorch is not installed (make .venv/.dev)')
  names = ('', '.ops', '.ops.boxes', '.transforms', '.transforms.functional')
  stubs = {
    f'torchvision{n}': types.ModuleType(f'torchvision{n}') for n in names
  }
  stubs['torchvision.ops.boxes'].batched_nms = _batched_nms
  saved = {k: sys.modules.get(k) for k in stubs}
  sys.modules.update(stubs)
  request.addfinalizer(
    lambda: [
      sys.modules.pop(k) if v is None else sys.modules.update({k: v})
      for k, v in saved.items()
    ]
  )
  from facenet_pytorch import MTCNN

  return MTCNN(keep_all=True)


def _by_score(boxes, points, scores):
  order = np.argsort(-np.asarray(scores, np.float64))
  as_float = lambda a: np.asarray(a, np.float64)[order]  # noqa: E731
  return as_float(boxes), as_float(points)


# Measured on these three: boxes and landmarks agree to 1.3e-4 px and
# scores to 6e-7 (float32 rounding of the area resize and the convs).
@pytest.mark.torch
@pytest.mark.parametrize('name', ['multi_face', 'camera', 'grace_hopper'])
def test_parity_with_facenet_pytorch(facenet, name):
  image = photos.read(name)
  if name == 'multi_face':  # 600x400: faster, faces still 50 px or more.
    image = cv2.resize(image, (600, 400), interpolation=cv2.INTER_AREA)
  boxes, scores, points = facenet.detect(image, landmarks=True)
  ours, our_points = mtcnn.MTCNN().detect(image)
  assert len(ours) == len(boxes) == photos.PHOTOS[name].faces
  want_boxes, want_points = _by_score(boxes, points, scores)
  got_boxes, got_points = _by_score(ours[:, :4], our_points, ours[:, 4])
  np.testing.assert_allclose(got_boxes, want_boxes, atol=0.01)
  np.testing.assert_allclose(got_points, want_points, atol=0.01)
  np.testing.assert_allclose(
    np.sort(ours[:, 4]), np.sort(np.asarray(scores, float)), atol=1e-5
  )


def test_faces_have_boxes_scores_and_five_landmarks_inside():
  image = photos.read('grace_hopper')
  (face,) = detect.get_detector()(image)
  assert isinstance(detect.get_detector(), mtcnn.MTCNN)
  assert face.score > 0.99 and len(face.landmarks) == 5
  (lx, ly), (rx, ry), (nx, ny), (mlx, mly), (mrx, mry) = face.landmarks
  assert face.left_eye == (lx, ly) and face.right_eye == (rx, ry)
  assert lx < nx < rx and mlx < mrx  # Left to right on screen.
  assert max(ly, ry) < ny < min(mly, mry)  # Eyes, nose, mouth downwards.
  for x, y in face.landmarks:
    assert face.x < x < face.x + face.w and face.y < y < face.y + face.h


def test_nms_keeps_the_best_of_overlapping_boxes():
  boxes = np.array(
    [[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [2, 2, 6, 6]],
    np.float32,
  )
  scores = np.array([0.8, 0.9, 0.5, 0.7], np.float32)
  # IoU of the first two: 81 / 119 = 0.68; the small box lies inside the
  # second, IoU 0.16 but 1.0 over the smaller box.
  assert list(mtcnn.nms(boxes, scores, 0.5)) == [1, 3, 2]
  assert list(mtcnn.nms(boxes, scores, 0.7)) == [1, 0, 3, 2]
  assert list(mtcnn.nms(boxes, scores, 0.7, smaller=True)) == [1, 2]


def test_area_resize_is_adaptive_average_pooling():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (7, 10, 3)).astype(np.uint8)
  table = mtcnn.summed_area(image)
  out = mtcnn.area_resize(table, [1], [7], [2], [9], 4, 3)[0]
  # Rows 1..6 into 4: [1,3), [2,4), [4,6), [5,7); columns 2..8 into 3:
  # [2,5), [4,7), [6,9) (PyTorch's floor/ceil windows).
  rows = [(1, 3), (2, 4), (4, 6), (5, 7)]
  cols = [(2, 5), (4, 7), (6, 9)]
  want = np.array(
    [[image[a:b, c:d].mean((0, 1)) for c, d in cols] for a, b in rows]
  )
  np.testing.assert_allclose(out, (want - 127.5) / 128, atol=1e-6)


def test_a_directory_of_sizes_compiles_a_bounded_number_of_times(
  monkeypatch,
):
  traces = []

  def counted(variables, x, valid):  # Runs once per trace (compile).
    traces.append(x.shape)
    return mtcnn.mtcnn_nets.PNet().apply(variables, x, valid)

  monkeypatch.setattr(mtcnn, '_pnet', counted)
  chex.clear_trace_counter()
  limit = len(mtcnn.BATCHES)
  monkeypatch.setattr(
    mtcnn, '_rnet', chex.assert_max_traces(mtcnn._rnet, limit)
  )
  monkeypatch.setattr(
    mtcnn, '_onet', chex.assert_max_traces(mtcnn._onet, limit)
  )
  detector = mtcnn.MTCNN()
  face = photos.read('grace_hopper')
  sizes = [(90, 100), (110, 120), (130, 150), (160, 170), (200, 230)]
  images = [
    cv2.resize(np.roll(face, 7 * k, axis=1), size, interpolation=cv2.INTER_AREA)
    for size in sizes
    for k in range(4)
  ]
  found = [len(detector(image)) for image in images]
  assert found == [1] * 20
  shapes = {
    (mtcnn.bucket(lh), mtcnn.bucket(lw))
    for h, w in {image.shape[:2] for image in images}
    for s in mtcnn.scales(min(h, w), 20.0, 0.709)
    for lh, lw in [mtcnn.level_shape(h, w, s)]
  }
  # One compile per padded level shape, shared across sizes: fewer than
  # the 5 sizes' 35 pyramid levels.
  assert sorted(set(traces)) == sorted((1, *s, 3) for s in shapes)
  assert len(traces) == len(shapes) < 35
  for image in images:  # Nothing new to compile the second time.
    detector(image)
  assert len(traces) == len(shapes)

"""MTCNN in JAX: faces with five landmarks, as facenet-pytorch finds them.

    detector = detect.get_detector('mtcnn')        # ferjax.faces.detect
    faces = detector(rgb)   # list[Face]: box, score, five landmarks

The cascade of Zhang et al. (2016) exactly as facenet-pytorch 2.6.0 runs it
(`models/utils/detect_face.py`), with the same defaults: an image pyramid
from `min_face_size` (20 px) down by `factor` (0.709); P-Net proposals
above `thresholds[0]` (0.6), non-maximum suppression (NMS) per scale (IoU
0.5) and across scales (0.7), box regression, boxes made square; R-Net on
24x24 crops (> 0.7), NMS 0.7, regression, square; O-Net on 48x48 crops
(> 0.7) gives the score, the regression and five landmarks (the eye on the
image's left, the other eye, the nose tip, the left and right mouth
corners), then NMS 0.7 over the smaller box ('Min'). Resizing is PyTorch's
`interpolate(mode='area')` (adaptive average pooling), computed exactly
from a summed-area table; crops that leave the image are clipped to it
before resizing, as facenet does. One difference: facenet keeps a
candidate box that lies wholly outside the image without a crop (which
misaligns its later rows); here it is dropped.

The networks (`mtcnn_nets`) run jitted; everything between them (the
pyramid, thresholds, NMS) is a little numpy on the host. So that photos of
many sizes compile a bounded number of times, shapes are padded to fixed
sets: each pyramid level's height and width are rounded up to the next
`LADDER` size (multiples of 16: each up to 128, then about 2^(1/4)
apart), and
P-Net is masked to the level's real size (`mtcnn_nets.PNet`'s `valid`),
so the result equals the unpadded computation; R-Net and O-Net take
batches padded to `BATCHES` candidates (larger sets run in chunks of the
largest). P-Net thus compiles once per padded level shape, a set bounded
by the ladder and shared by images of all sizes (the small levels of every
photo fall on the same few shapes), and R-Net and O-Net at most
len(BATCHES) times each.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np

from ferjax.faces import face as face_lib
from ferjax.faces import mtcnn_nets

# Padded image sides: 16 * 2^(k/4) rounded up to a multiple of 16.
LADDER = tuple(sorted({16 * math.ceil(2 ** (k / 4)) for k in range(0, 4 * 9)}))
BATCHES = (16, 64, 256)  # Padded R-Net / O-Net batch sizes.
_MEAN, _SCALE = 127.5, 0.0078125  # facenet's (x - 127.5) / 128.


def bucket(n: int) -> int:
  """The padded side for a side of `n` pixels (multiples of 16 above)."""
  for size in LADDER:
    if size >= n:
      return size
  return 16 * math.ceil(n / 16)


def scales(min_side: int, min_face_size: float, factor: float) -> list[float]:
  """facenet's pyramid scales for an image whose shorter side is given."""
  scale = 12.0 / min_face_size
  smallest = min_side * scale
  found = []
  while smallest >= 12:
    found.append(scale)
    scale *= factor
    smallest *= factor
  return found


def level_shape(height: int, width: int, scale: float) -> tuple[int, int]:
  """A pyramid level's size, as facenet rounds it."""
  return int(height * scale + 1), int(width * scale + 1)


def summed_area(image: np.ndarray) -> np.ndarray:
  """(H+1, W+1, C) float64 table: entry [y, x] sums image[:y, :x]."""
  table = np.zeros((image.shape[0] + 1, image.shape[1] + 1, image.shape[2]))
  np.cumsum(np.cumsum(image, 0, dtype=np.float64), 1, out=table[1:, 1:])
  return table


def _windows(start, end, n_out: int) -> tuple[np.ndarray, np.ndarray]:
  """Adaptive average pooling's input [from, to) per output index, for
  regions [start, end): (N, n_out) each."""
  start = np.asarray(start, np.int64)[:, None]
  n_in = np.asarray(end, np.int64)[:, None] - start
  i = np.arange(n_out)[None]
  return start + (i * n_in) // n_out, start - ((-(i + 1) * n_in) // n_out)


def area_resize(table, y0, y1, x0, x1, out_h: int, out_w: int):
  """Regions [y0:y1, x0:x1] resized like interpolate(mode='area').

  Args:
    table: `summed_area` of the image.
    y0, y1, x0, x1: int arrays (N,) of region bounds inside the image.
    out_h, out_w: the output size.

  Returns:
    float32 (N, out_h, out_w, C), normalised as the networks expect.
  """
  ys, ye = _windows(y0, y1, out_h)
  xs, xe = _windows(x0, x1, out_w)
  ys, ye = ys[:, :, None], ye[:, :, None]
  xs, xe = xs[:, None, :], xe[:, None, :]
  total = table[ye, xe] - table[ys, xe] - table[ye, xs] + table[ys, xs]
  count = ((ye - ys) * (xe - xs))[..., None]
  return ((total / count - _MEAN) * _SCALE).astype(np.float32)


def nms(boxes, scores, threshold: float, smaller: bool = False) -> np.ndarray:
  """Greedy non-maximum suppression; kept indices, best score first.

  smaller=False is torchvision's `nms` (IoU, areas without +1);
  smaller=True is facenet's numpy 'Min' (overlap over the smaller box,
  pixel-inclusive areas), used after O-Net.
  """
  one = 1.0 if smaller else 0.0
  x1, y1, x2, y2 = (boxes[:, i] for i in range(4))
  area = (x2 - x1 + one) * (y2 - y1 + one)
  order = np.argsort(-scores, kind='stable')
  keep = []
  while order.size:
    i, rest = order[0], order[1:]
    keep.append(i)
    w = np.maximum(
      0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + one
    )
    h = np.maximum(
      0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + one
    )
    inter = w * h
    if smaller:
      overlap = inter / np.minimum(area[i], area[rest])
    else:
      overlap = inter / (area[i] + area[rest] - inter)
    order = rest[~(overlap > threshold)]
  return np.asarray(keep, np.int64)


def _square(boxes: np.ndarray) -> np.ndarray:
  """facenet's `rerec`: each box grown to a square about its centre."""
  boxes = boxes.copy()
  h = boxes[:, 3] - boxes[:, 1]
  w = boxes[:, 2] - boxes[:, 0]
  side = np.maximum(w, h)
  boxes[:, 0] += w * 0.5 - side * 0.5
  boxes[:, 1] += h * 0.5 - side * 0.5
  boxes[:, 2] = boxes[:, 0] + side
  boxes[:, 3] = boxes[:, 1] + side
  return boxes


def _regress(boxes: np.ndarray, reg: np.ndarray, one: float) -> np.ndarray:
  """Box regression: corners moved by `reg` times the box size."""
  boxes = boxes.copy()
  w = boxes[:, 2] - boxes[:, 0] + one
  h = boxes[:, 3] - boxes[:, 1] + one
  boxes[:, :4] += reg * np.stack([w, h, w, h], 1)
  return boxes


def _crop_windows(boxes: np.ndarray, width: int, height: int):
  """facenet's `pad`: integer windows clipped to the image, and which
  boxes have one (a box wholly outside the image has none)."""
  b = np.trunc(boxes[:, :4]).astype(np.int64)
  x0 = np.maximum(b[:, 0], 1) - 1
  y0 = np.maximum(b[:, 1], 1) - 1
  x1 = np.minimum(b[:, 2], width)
  y1 = np.minimum(b[:, 3], height)
  ok = (x1 > x0) & (y1 > y0)
  return (y0[ok], y1[ok], x0[ok], x1[ok]), ok


def _pnet(variables, x, valid):
  return mtcnn_nets.PNet().apply(variables, x, valid)


def _rnet(variables, x):
  return mtcnn_nets.RNet().apply(variables, x)


def _onet(variables, x):
  return mtcnn_nets.ONet().apply(variables, x)


def _batched(fn, variables, crops: np.ndarray):
  """`fn` on crops in padded batches of a `BATCHES` size; numpy outputs."""
  outs = []
  for start in range(0, len(crops), BATCHES[-1]):
    chunk = crops[start : start + BATCHES[-1]]
    size = next(b for b in BATCHES if b >= len(chunk))
    padded = np.zeros((size, *chunk.shape[1:]), np.float32)
    padded[: len(chunk)] = chunk
    out = jax.device_get(fn(variables, padded))
    outs.append([np.asarray(o)[: len(chunk)] for o in out])
  return [np.concatenate(parts) for parts in zip(*outs, strict=True)]


@dataclasses.dataclass(frozen=True)
class MTCNN:
  """MTCNN face detector with five landmarks (see the module docstring).

  Attributes:
    min_face_size: smallest face side searched for, in pixels.
    thresholds: face-probability thresholds of P-Net, R-Net and O-Net.
    factor: pyramid step (each level is this times the previous).
    nms_thresholds: overlap above which a weaker box is suppressed: P-Net
      within a scale, P-Net across scales, R-Net, O-Net (over the smaller
      box).
  """

  min_face_size: float = 20.0
  thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
  factor: float = 0.709
  nms_thresholds: tuple[float, float, float, float] = (0.5, 0.7, 0.7, 0.7)

  def __post_init__(self):
    if not 0 < self.factor < 1 or self.min_face_size < 12:
      raise ValueError(
        f'factor={self.factor}, min_face_size={self.min_face_size}: need '
        '0 < factor < 1 and min_face_size >= 12 (P-Net sees 12x12 windows).'
      )
    jits = {
      '_pnet': jax.jit(_pnet),
      '_rnet': jax.jit(_rnet),
      '_onet': jax.jit(_onet),
    }
    for name, fn in jits.items():  # Per detector, so tests can count.
      object.__setattr__(self, name, fn)

  def __call__(self, image: np.ndarray) -> list[face_lib.Face]:
    boxes, points = self.detect(image)
    faces = [
      face_lib.Face.from_corners(b[:4], float(b[4]), p)
      for b, p in zip(boxes, points, strict=True)
    ]
    return face_lib.largest_first(faces)

  def detect(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (N, 5): x1, y1, x2, y2, score; landmarks (N, 5, 2)."""
    image = face_lib.check_rgb(image)
    height, width = image.shape[:2]
    variables = mtcnn_nets.variables()
    table = summed_area(image)
    boxes = self._proposals(table, height, width, variables['pnet'])
    if len(boxes):
      boxes = self._refine(table, boxes, variables['rnet'])
    if not len(boxes):
      return np.zeros((0, 5), np.float32), np.zeros((0, 5, 2), np.float32)
    return self._output(table, boxes, variables['onet'])

  def _proposals(self, table, height, width, variables) -> np.ndarray:
    """Stage 1: P-Net over the pyramid -> square candidate boxes."""
    steps = scales(min(height, width), self.min_face_size, self.factor)
    whole = ([0], [height], [0], [width])
    outputs = []
    for scale in steps:  # Dispatched together, read back after.
      lh, lw = level_shape(height, width, scale)
      padded = np.zeros((1, bucket(lh), bucket(lw), 3), np.float32)
      padded[0, :lh, :lw] = area_resize(table, *whole, lh, lw)[0]
      valid = np.array([[lh, lw]], np.int32)
      outputs.append((self._pnet(variables, padded, valid), (lh, lw)))
    found = [np.zeros((0, 9), np.float32)]
    for scale, ((reg, probs), valid) in zip(steps, outputs, strict=True):
      cells = self._cells(np.asarray(reg[0]), np.asarray(probs[0]), valid)
      boxes = _level_boxes(cells, scale, self.thresholds[0])
      found.append(boxes[nms(boxes, boxes[:, 4], self.nms_thresholds[0])])
    boxes = np.concatenate(found)
    boxes = boxes[nms(boxes, boxes[:, 4], self.nms_thresholds[1])]
    moved = _regress(boxes[:, :5], boxes[:, 5:9], 0.0)
    return _square(moved)

  @staticmethod
  def _cells(reg, probs, valid):
    """The output cells of a level's real pixels (padding cut off)."""
    pooled = [-(-(v - 4) // 2) + 1 for v in valid]  # conv 3, ceil pool 2.
    rows, cols = (max(0, p - 4) for p in pooled)  # Two more 3x3 convs.
    return reg[:rows, :cols], probs[:rows, :cols]

  def _refine(self, table, boxes, variables) -> np.ndarray:
    """Stage 2: R-Net on 24x24 crops -> fewer, tighter square boxes."""
    height, width = table.shape[0] - 1, table.shape[1] - 1
    window, ok = _crop_windows(boxes, width, height)
    boxes = boxes[ok]
    reg, probs = _batched(
      self._rnet, variables, area_resize(table, *window, 24, 24)
    )
    keep = probs > self.thresholds[1]
    boxes = np.concatenate([boxes[keep, :4], probs[keep, None]], 1)
    reg = reg[keep]
    pick = nms(boxes, boxes[:, 4], self.nms_thresholds[2])
    return _square(_regress(boxes[pick], reg[pick], 1.0))

  def _output(self, table, boxes, variables):
    """Stage 3: O-Net on 48x48 crops -> scores, landmarks, final boxes."""
    height, width = table.shape[0] - 1, table.shape[1] - 1
    window, ok = _crop_windows(boxes, width, height)
    boxes = boxes[ok]
    reg, points, probs = _batched(
      self._onet, variables, area_resize(table, *window, 48, 48)
    )
    keep = probs > self.thresholds[2]
    boxes = np.concatenate([boxes[keep, :4], probs[keep, None]], 1)
    reg, points = reg[keep], points[keep]
    size = boxes[:, 2:4] - boxes[:, 0:2] + 1
    xs = size[:, None, 0] * points[:, :5] + boxes[:, None, 0] - 1
    ys = size[:, None, 1] * points[:, 5:] + boxes[:, None, 1] - 1
    points = np.stack([xs, ys], -1)
    boxes = _regress(boxes, reg, 1.0)
    pick = nms(boxes, boxes[:, 4], self.nms_thresholds[3], smaller=True)
    return boxes[pick].astype(np.float32), points[pick].astype(np.float32)


def _level_boxes(cells, scale: float, threshold: float) -> np.ndarray:
  """facenet's `generateBoundingBox`: (N, 9) x1, y1, x2, y2, score, reg."""
  reg, probs = cells
  rows, cols = np.nonzero(probs >= threshold)
  corner = np.stack([cols, rows], 1).astype(np.float32)
  scale = np.float32(scale)
  q1 = np.floor((2 * corner + 1) / scale)
  q2 = np.floor((2 * corner + 12) / scale)
  score = probs[rows, cols][:, None]
  return np.concatenate([q1, q2, score, reg[rows, cols]], 1).astype(np.float32)

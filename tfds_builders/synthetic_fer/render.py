"""Procedural renderer of cartoon faces in the seven canonical expressions.

Pure numpy + cv2. A face is drawn in *face units* (half the face width is 1,
x to the right, y down) and mapped to pixels by one similarity transform, so
head rotation, scale and translation cost nothing extra. The expression only
changes geometry (mouth curve and opening, brow height and slant, eye
opening, nose wrinkle); everything else (identity, pose, colours, lighting,
clutter, occlusion, blur, noise) is nuisance shared by all classes.

Rendering is split in three so tests can hold nuisance fixed and vary the
expression:

  expression = sample_expression(rng, label)
  nuisance = sample_nuisance(rng)
  image = draw(expression, nuisance, size)

`render_example` chains them from a per-example generator.
"""

import dataclasses
import math

import cv2
import numpy as np

from ferjax.labels import EXPRESSIONS_7

# Fixed-point bits for cv2 drawing: sub-pixel vertex positions.
_SHIFT = 4
_ONE = 1 << _SHIFT
# Faces are drawn at this multiple of the output size, then area-downsampled.
_SUPERSAMPLE = 2


@dataclasses.dataclass(frozen=True)
class Expression:
  """Geometry of one expression, in face units (half face width = 1).

  Attributes:
    mouth_curve: lift of the mouth corners; > 0 smile, < 0 frown.
    mouth_open: gap between the lips.
    mouth_width: mouth width relative to neutral.
    mouth_asym: one corner raised above the other (a sneer).
    upper_lip_raise: upper lip pulled up towards the nose.
    lip_thickness: lip height relative to neutral; < 1 is pressed lips.
    brow_raise: whole brow up (> 0) or lowered (< 0).
    brow_inner: inner brow ends up (> 0, sadness) or down (< 0, anger's V).
    eye_open: eye height relative to neutral.
    nose_wrinkle: strength of wrinkles across the nose bridge, 0 to 1.
  """

  mouth_curve: float = 0.0
  mouth_open: float = 0.0
  mouth_width: float = 1.0
  mouth_asym: float = 0.0
  upper_lip_raise: float = 0.0
  lip_thickness: float = 1.0
  brow_raise: float = 0.0
  brow_inner: float = 0.0
  eye_open: float = 1.0
  nose_wrinkle: float = 0.0


# Full-intensity prototypes, one per canonical label.
PROTOTYPES = {
  'neutral': Expression(),
  'happiness': Expression(
    mouth_curve=0.9, mouth_open=0.35, mouth_width=1.3, eye_open=0.6
  ),
  'sadness': Expression(
    mouth_curve=-0.75,
    mouth_width=0.9,
    brow_raise=-0.05,
    brow_inner=0.85,
    eye_open=0.75,
  ),
  'surprise': Expression(
    mouth_open=1.1, mouth_width=0.62, brow_raise=1.0, eye_open=1.6
  ),
  'fear': Expression(
    mouth_curve=-0.35,
    mouth_open=0.5,
    mouth_width=1.2,
    brow_raise=0.6,
    brow_inner=0.6,
    eye_open=1.45,
  ),
  'disgust': Expression(
    mouth_curve=-0.3,
    mouth_open=0.12,
    mouth_width=0.95,
    mouth_asym=0.6,
    upper_lip_raise=0.6,
    brow_raise=-0.4,
    brow_inner=-0.2,
    eye_open=0.5,
    nose_wrinkle=1.0,
  ),
  'anger': Expression(
    mouth_curve=-0.15,
    mouth_width=0.8,
    lip_thickness=0.45,
    brow_raise=-0.55,
    brow_inner=-1.0,
    eye_open=0.75,
  ),
}
assert tuple(PROTOTYPES) == EXPRESSIONS_7

# Within-class spread of each parameter (standard deviation).
_SPREAD = Expression(
  mouth_curve=0.18,
  mouth_open=0.12,
  mouth_width=0.1,
  mouth_asym=0.1,
  upper_lip_raise=0.1,
  lip_thickness=0.12,
  brow_raise=0.18,
  brow_inner=0.2,
  eye_open=0.14,
  nose_wrinkle=0.15,
)
_FIELDS = tuple(f.name for f in dataclasses.fields(Expression))
_NEUTRAL = np.array([getattr(PROTOTYPES['neutral'], f) for f in _FIELDS])
_PROTO = np.array(
  [[getattr(p, f) for f in _FIELDS] for p in PROTOTYPES.values()]
)
_SD = np.array([getattr(_SPREAD, f) for f in _FIELDS])
_LOW = np.array([-1.5, 0.0, 0.4, 0.0, 0.0, 0.3, -1.5, -1.5, 0.3, 0.0])
_HIGH = np.array([1.5, 1.6, 1.7, 1.0, 1.0, 1.5, 1.5, 1.5, 2.0, 1.0])


def sample_expression(rng: np.random.Generator, label: int) -> Expression:
  """Samples the geometry of one face showing expression `label`.

  Each example has its own intensity (0.55 to 1.15 of the prototype's
  distance from neutral) and Gaussian jitter, so neighbouring classes
  overlap a little and weak expressions look close to neutral.

  Args:
    rng: the example's generator.
    label: index into `ferjax.labels.EXPRESSIONS_7`.

  Returns:
    The expression parameters.
  """
  intensity = rng.uniform(0.55, 1.15)
  values = _NEUTRAL + intensity * (_PROTO[label] - _NEUTRAL)
  values = np.clip(
    values + _SD * rng.standard_normal(len(_FIELDS)), _LOW, _HIGH
  )
  return Expression(*values.tolist())


@dataclasses.dataclass(frozen=True)
class Nuisance:
  """Everything about an image that does not depend on the expression.

  Attributes:
    angle: in-plane head rotation in degrees.
    scale: half face width as a fraction of the image size.
    center: face centre as fractions of the image size.
    aspect: face height over width.
    eye_x: eye distance from the midline.
    eye_y: eye height (negative is above the face centre).
    mouth_y: mouth height.
    gaze: horizontal iris offset.
    sneer_side: which mouth corner a sneer raises (+1 or -1).
    skin: BGR skin colour.
    hair: BGR hair and brow colour, or None for no hair.
    iris: BGR iris colour.
    lip: BGR lip colour.
    light: (gain along x, gain along y, brightness, contrast).
    blur: Gaussian blur sigma in output pixels (0 for none).
    noise: pixel noise standard deviation in grey levels.
    seed: seeds the background clutter, occluder and noise.
    occlude: whether a patch hides part of the face.
  """

  angle: float
  scale: float
  center: tuple[float, float]
  aspect: float
  eye_x: float
  eye_y: float
  mouth_y: float
  gaze: float
  sneer_side: int
  skin: tuple[float, float, float]
  hair: tuple[float, float, float] | None
  iris: tuple[float, float, float]
  lip: tuple[float, float, float]
  light: tuple[float, float, float, float]
  blur: float
  noise: float
  seed: int
  occlude: bool

  def to_pixels(self, points: np.ndarray, size: int) -> np.ndarray:
    """Maps face-unit points (..., 2) to pixel coordinates of a size² image."""
    return _to_canvas(np.asarray(points, np.float64), self, float(size))


# Skin tones from dark to light (BGR).
_SKIN_DARK = np.array([55.0, 80.0, 115.0])
_SKIN_LIGHT = np.array([185.0, 205.0, 240.0])


def sample_nuisance(rng: np.random.Generator) -> Nuisance:
  """Samples pose, identity, colours, lighting and corruption of one image."""
  tone = rng.uniform()
  skin = _SKIN_DARK + tone * (_SKIN_LIGHT - _SKIN_DARK)
  skin = np.clip(skin + rng.normal(0, 12, 3), 0, 255)
  lip = np.clip(skin * rng.uniform(0.55, 0.8) + [0, 0, 45], 0, 255)
  hair = None
  if rng.uniform() < 0.85:
    hair = tuple((rng.uniform(10, 110) * rng.uniform(0.6, 1.0, 3)).tolist())
  return Nuisance(
    angle=rng.uniform(-20, 20),
    scale=rng.uniform(0.24, 0.33),
    center=(0.5 + rng.uniform(-0.08, 0.08), 0.5 + rng.uniform(-0.06, 0.06)),
    aspect=rng.uniform(1.12, 1.42),
    eye_x=rng.uniform(0.34, 0.44),
    eye_y=rng.uniform(-0.2, -0.08),
    mouth_y=rng.uniform(0.5, 0.62),
    gaze=rng.uniform(-0.05, 0.05),
    sneer_side=int(rng.choice([-1, 1])),
    skin=tuple(skin.tolist()),
    hair=hair,
    iris=tuple(rng.uniform(20, 140, 3).tolist()),
    lip=tuple(lip.tolist()),
    light=(
      rng.uniform(-0.35, 0.35),
      rng.uniform(-0.35, 0.35),
      rng.uniform(-35, 35),
      rng.uniform(0.65, 1.25),
    ),
    blur=rng.uniform(0.0, 0.9) if rng.uniform() < 0.5 else 0.0,
    noise=rng.uniform(0.0, 10.0),
    seed=int(rng.integers(2**63)),
    occlude=bool(rng.uniform() < 0.3),
  )


def _to_canvas(pts: np.ndarray, nz: Nuisance, canvas: float) -> np.ndarray:
  """Face units -> canvas pixels (float)."""
  a = math.radians(nz.angle)
  s = nz.scale * canvas
  c, si = s * math.cos(a), s * math.sin(a)
  x, y = pts[..., 0], pts[..., 1]
  cx, cy = nz.center[0] * canvas, nz.center[1] * canvas
  return np.stack([cx + c * x - si * y, cy + si * x + c * y], axis=-1)


class _Painter:
  """Draws face-unit shapes onto a canvas through the nuisance's pose."""

  def __init__(self, img: np.ndarray, nz: Nuisance):
    self.img = img
    n = float(img.shape[0])
    self.px = nz.scale * n  # pixels per face unit
    a = math.radians(nz.angle)
    c, s = self.px * math.cos(a), self.px * math.sin(a)
    # Row-vector affine map straight to fixed-point pixel coordinates.
    self.mat = np.array([[c, s], [-s, c]]) * _ONE
    self.off = np.array([nz.center[0] * n, nz.center[1] * n]) * _ONE

  def _fixed(self, pts: np.ndarray) -> np.ndarray:
    return np.rint(pts @ self.mat + self.off).astype(np.int32)

  def poly(self, pts: np.ndarray, color) -> None:
    cv2.fillPoly(self.img, [self._fixed(pts)], color, cv2.LINE_8, _SHIFT)

  def line(self, pts: np.ndarray, color, width: float) -> None:
    t = max(1, round(width * self.px))
    pts = self._fixed(pts)
    cv2.polylines(self.img, [pts], False, color, t, cv2.LINE_8, _SHIFT)

  def ellipse(self, center, axes, color, arc=(0, 360), n=24) -> None:
    self.poly(_ellipse_pts(center, axes, arc, n), color)


_ARCS = {}


def _ellipse_pts(center, axes, arc=(0, 360), n=24) -> np.ndarray:
  key = (arc, n)
  if key not in _ARCS:
    t = np.radians(np.linspace(arc[0], arc[1], n))
    _ARCS[key] = np.stack([np.cos(t), np.sin(t)], -1)
  return _ARCS[key] * axes + center


_T = np.linspace(0.0, 1.0, 13)
# Bernstein basis of a quadratic Bezier at _T, (13, 3).
_BASIS = np.stack([(1 - _T) ** 2, 2 * (1 - _T) * _T, _T**2], -1)


def _bezier(p0, p1, p2) -> np.ndarray:
  """Quadratic Bezier from p0 to p2 whose midpoint is p1."""
  ctrl = (
    2.0 * p1[0] - 0.5 * (p0[0] + p2[0]),
    2.0 * p1[1] - 0.5 * (p0[1] + p2[1]),
  )
  return _BASIS @ np.array([p0, ctrl, p2], np.float64)


def _mix(a, b, w: float) -> tuple:
  return tuple((1 - w) * np.asarray(a) + w * np.asarray(b))


def _background(rng: np.random.Generator, n: int) -> np.ndarray:
  """Smooth colour texture plus random shapes and lines."""
  k = int(rng.integers(2, 6))
  # Interpolating a few random colours is cheaper than a full-size texture.
  base = rng.uniform(40, 215, 3)
  colors = np.clip(base + rng.uniform(-90, 90, (k, k, 3)), 0, 255)
  colors = colors.astype(np.uint8)
  img = cv2.resize(colors, (n, n), interpolation=cv2.INTER_CUBIC)
  for _ in range(int(rng.integers(3, 10))):
    color = rng.uniform(0, 255, 3).tolist()
    kind = rng.integers(4)
    x0, y0, x1, y1 = (rng.uniform(-0.1, 1.1, 4) * n * _ONE).astype(int).tolist()
    t = int(rng.integers(1, max(2, n // 20)))
    if kind == 0:
      cv2.line(img, (x0, y0), (x1, y1), color, t, cv2.LINE_8, _SHIFT)
    elif kind == 1:
      fill = -1 if t % 2 else t
      cv2.rectangle(img, (x0, y0), (x1, y1), color, fill, cv2.LINE_8, _SHIFT)
    else:
      r = int(rng.uniform(0.03, 0.2) * n * _ONE)
      fill = -1 if kind == 2 else t
      cv2.circle(img, (x0, y0), r, color, fill, cv2.LINE_8, _SHIFT)
  return img


def _draw_face(p: _Painter, ex: Expression, nz: Nuisance) -> None:
  """Draws head, eyes, brows, nose and mouth."""
  asp = nz.aspect
  skin = nz.skin
  dark = _mix(skin, (20, 20, 30), 0.7)
  if nz.hair is not None:
    p.ellipse((0, -0.04 * asp), (1.08, 1.04 * asp), nz.hair)
  for side in (-1, 1):
    p.ellipse((side * 0.98, -0.05), (0.14, 0.24), _mix(skin, (0, 0, 0), 0.12))
  p.ellipse((0, 0), (1.0, asp), skin)
  if nz.hair is not None:
    p.ellipse((0, -0.72 * asp), (0.98, 0.32 * asp), nz.hair, arc=(180, 360))

  # Eyes: sclera, iris clipped to the opening, upper lid line.
  eh = 0.1 * ex.eye_open
  for side in (-1, 1):
    c = (side * nz.eye_x, nz.eye_y)
    p.ellipse(c, (0.19, eh), (235, 240, 240))
    r = min(0.075, 0.95 * eh)
    p.ellipse((c[0] + nz.gaze, c[1]), (0.075, r), nz.iris)
    p.ellipse((c[0] + nz.gaze, c[1]), (0.032, min(0.032, r)), (15, 15, 15))
    p.line(_ellipse_pts(c, (0.2, eh * 1.05), (180, 360), 12), dark, 0.03)

  # Brows: inner end, arch, outer end; raise moves all, inner tilts.
  hair = nz.hair if nz.hair is not None else dark
  by = nz.eye_y - 0.2 - 0.13 * ex.brow_raise
  for side in (-1, 1):
    inner = (side * 0.12, by - 0.13 * ex.brow_inner + 0.02)
    mid = (side * nz.eye_x, by - 0.05)
    outer = (side * (nz.eye_x + 0.24), by + 0.03 + 0.04 * ex.brow_inner)
    p.line(np.array([inner, mid, outer]), hair, 0.065)

  # Nose, with wrinkles across the bridge for disgust.
  ny = 0.5 * (nz.eye_y + nz.mouth_y) + 0.08
  nose = _mix(skin, (0, 0, 0), 0.35)
  p.line(
    np.array([(0.02, nz.eye_y + 0.05), (0.08, ny), (0.0, ny + 0.04)]),
    nose,
    0.025,
  )
  p.line(_bezier((-0.14, ny), (0, ny + 0.07), (0.14, ny)), nose, 0.025)
  if ex.nose_wrinkle > 0.15:
    wr = _mix(skin, (0, 0, 0), 0.5 * min(1.0, ex.nose_wrinkle))
    for k in range(3):
      y = nz.eye_y + 0.02 + 0.06 * k
      p.line(
        _bezier((-0.11, y + 0.02), (0, y - 0.015), (0.11, y + 0.02)), wr, 0.02
      )

  # Mouth: corners, inner lip curves around the gap, outer lip curves.
  my = nz.mouth_y
  w = 0.3 * ex.mouth_width
  lift = 0.15 * ex.mouth_curve
  asym = 0.12 * ex.mouth_asym * nz.sneer_side
  left = (-w, my - lift + asym)
  right = (w, my - lift - asym)
  gap = 0.24 * ex.mouth_open
  mid_y = my - 0.07 * ex.upper_lip_raise
  lip_h = 0.055 * ex.lip_thickness
  up_in = _bezier(left, (0, mid_y - gap / 2), right)
  lo_in = _bezier(left, (0, mid_y + gap / 2), right)
  up_out = _bezier(left, (0, mid_y - gap / 2 - lip_h), right)
  lo_out = _bezier(left, (0, mid_y + gap / 2 + 1.2 * lip_h), right)
  p.poly(np.concatenate([up_out, lo_out[::-1]]), nz.lip)
  if gap > 0.02:
    p.poly(np.concatenate([up_in, lo_in[::-1]]), (35, 25, 70))
    teeth = up_in.copy()
    teeth[:, 1] += np.minimum(0.35 * gap, 0.05) * np.sin(np.pi * _T)
    p.poly(np.concatenate([up_in, teeth[::-1]]), (225, 235, 235))
  else:
    p.line(up_in, _mix(nz.lip, (0, 0, 0), 0.5), 0.02)

  # Smile folds from the nose wings to beyond the mouth corners.
  fold = min(1.0, max(0.0, ex.mouth_curve) * 1.2)
  if fold > 0.15:
    fc = _mix(skin, (0, 0, 0), 0.3 * fold)
    for side, corner in ((-1, left), (1, right)):
      a = (side * 0.17, ny - 0.03)
      b = (corner[0] + side * 0.07, corner[1] + 0.05)
      m = (0.5 * (a[0] + b[0]) + side * 0.05, 0.5 * (a[1] + b[1]))
      p.line(_bezier(a, m, b), fc, 0.02)


def _occlude(p: _Painter, rng: np.random.Generator, nz: Nuisance) -> None:
  """Covers a random part of the face with a patch or a bar."""
  cx = rng.uniform(-0.8, 0.8)
  cy = rng.uniform(-0.8, 0.8) * nz.aspect
  hw, hh = rng.uniform(0.12, 0.4, 2)
  color = rng.uniform(0, 255, 3).tolist()
  if rng.uniform() < 0.5:
    box = np.array(
      [
        (cx - hw, cy - hh),
        (cx + hw, cy - hh),
        (cx + hw, cy + hh),
        (cx - hw, cy + hh),
      ]
    )
    p.poly(box, color)
  else:
    p.ellipse((cx, cy), (hw, hh), color)


def draw(ex: Expression, nz: Nuisance, size: int) -> np.ndarray:
  """Renders one face.

  Args:
    ex: expression geometry.
    nz: everything else.
    size: output height and width in pixels.

  Returns:
    A (size, size, 3) uint8 BGR image.
  """
  rng = np.random.default_rng(nz.seed)
  n = size * _SUPERSAMPLE
  img = _background(rng, n)
  p = _Painter(img, nz)
  _draw_face(p, ex, nz)
  if nz.occlude:
    _occlude(p, rng, nz)
  img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)

  # Lighting: a linear gradient, then brightness and contrast, plus noise;
  # folded into one gain and one offset map to keep it cheap.
  gx, gy, bright, contrast = nz.light
  ramp = np.linspace(-0.5, 0.5, size, dtype=np.float32)
  gain = contrast * (1.0 + gx * ramp[None, :] + gy * ramp[:, None])
  offset = rng.standard_normal((size, size), dtype=np.float32) * nz.noise
  offset += 128.0 * (1.0 - contrast) + bright
  out = img.astype(np.float32)
  out *= gain[..., None]
  out += offset[..., None]
  if nz.blur > 0.3:
    out = cv2.GaussianBlur(out, (0, 0), nz.blur * size / 112.0)
  return np.clip(out, 0, 255).astype(np.uint8)


def example_rng(seed: int, split_id: int, index: int) -> np.random.Generator:
  """The generator of example `index` of split `split_id`."""
  return np.random.default_rng([seed, split_id, index])


def render_example(
  seed: int, split_id: int, index: int, label: int, size: int
) -> np.ndarray:
  """Renders example `index` of split `split_id` deterministically.

  Args:
    seed: dataset seed.
    split_id: small integer naming the split (0 train, 1 test).
    index: example index within the split.
    label: index into `ferjax.labels.EXPRESSIONS_7`.
    size: output height and width in pixels.

  Returns:
    A (size, size, 3) uint8 BGR image.
  """
  rng = example_rng(seed, split_id, index)
  ex = sample_expression(rng, label)
  nz = sample_nuisance(rng)
  return draw(ex, nz, size)

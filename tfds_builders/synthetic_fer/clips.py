"""Procedural clips: one face whose expression unfolds over the frames.

A clip holds one identity in one scene (`render.sample_nuisance`) and one
apex expression (`render.sample_expression`). Over the clip the expression's
intensity follows a timeline: neutral until the onset, rising smoothly to
the apex, holding, then fading part of the way back to neutral by the last
frame. Intensity scales every geometry parameter's distance from the neutral
prototype, so a frame at intensity 0 is exactly the neutral face. The head
drifts a little meanwhile (rotation, position, scale follow slow sine
waves); the background, colours and occluder stay put.

  clip = render_clip(seed, split_id, index, label, size, (12, 24))

draws clip `index` of split `split_id` from its own generator, so clips are
identical across runs and machines and independent of generation order.
"""

import dataclasses
import math

import numpy as np

from tfds_builders.synthetic_fer import render

# Added to an example's seed sequence, so a clip never shares its generator
# with the image of the same (seed, split, index).
CLIP_STREAM = 1

_FIELDS = tuple(f.name for f in dataclasses.fields(render.Expression))
_NEUTRAL = np.array([getattr(render.PROTOTYPES['neutral'], f) for f in _FIELDS])


@dataclasses.dataclass(frozen=True)
class Timeline:
  """When the expression of a clip rises and fades, as fractions of it.

  Attributes:
    onset: where the expression starts (intensity 0 up to here).
    apex: where it reaches full intensity.
    offset: where it starts to fade.
    end_level: the intensity left at the last frame.
  """

  onset: float
  apex: float
  offset: float
  end_level: float


@dataclasses.dataclass(frozen=True)
class Motion:
  """Slow head drift over a clip: sine waves of time in [0, 1].

  Attributes:
    angle: rotation amplitude in degrees.
    shift: (x, y) translation amplitudes as fractions of the image size.
    zoom: relative scale amplitude.
    cycles: waves per clip.
    phases: phase of the angle, x, y and scale waves, in radians.
  """

  angle: float
  shift: tuple[float, float]
  zoom: float
  cycles: float
  phases: tuple[float, float, float, float]


def sample_timeline(rng: np.random.Generator) -> Timeline:
  """Samples a timeline: onset in [0, 0.3], apex by 0.7, fade from <= 0.9."""
  onset = rng.uniform(0.0, 0.3)
  apex = onset + rng.uniform(0.15, 0.4)
  offset = apex + rng.uniform(0.05, 0.2)
  return Timeline(onset, apex, offset, end_level=rng.uniform(0.3, 0.8))


def sample_motion(rng: np.random.Generator) -> Motion:
  """Samples a small head drift: up to 4 degrees, 2 % shift, 3 % zoom."""
  return Motion(
    angle=rng.uniform(0.0, 4.0),
    shift=(rng.uniform(0.0, 0.02), rng.uniform(0.0, 0.02)),
    zoom=rng.uniform(0.0, 0.03),
    cycles=rng.uniform(0.3, 1.2),
    phases=tuple(rng.uniform(0.0, 2 * math.pi, 4).tolist()),
  )


def _smoothstep(x: np.ndarray) -> np.ndarray:
  x = np.clip(x, 0.0, 1.0)
  return x * x * (3.0 - 2.0 * x)


def intensity(timeline: Timeline, t: np.ndarray) -> np.ndarray:
  """Expression intensity at times `t` in [0, 1] (0 neutral, 1 apex)."""
  t = np.asarray(t, np.float64)
  tl = timeline
  rise = _smoothstep((t - tl.onset) / (tl.apex - tl.onset))
  fall = _smoothstep((t - tl.offset) / (1.0 - tl.offset))
  return rise * (1.0 - (1.0 - tl.end_level) * fall)


def expression_at(apex: render.Expression, level: float) -> render.Expression:
  """The expression `level` of the way from neutral to `apex`."""
  values = np.array([getattr(apex, f) for f in _FIELDS])
  return render.Expression(*(_NEUTRAL + level * (values - _NEUTRAL)).tolist())


def pose_at(nz: render.Nuisance, motion: Motion, t: float) -> render.Nuisance:
  """The nuisance of the frame at time `t`: the head drifted by `motion`."""
  waves = [math.sin(2 * math.pi * motion.cycles * t + p) for p in motion.phases]
  return dataclasses.replace(
    nz,
    angle=nz.angle + motion.angle * waves[0],
    center=(
      nz.center[0] + motion.shift[0] * waves[1],
      nz.center[1] + motion.shift[1] * waves[2],
    ),
    scale=nz.scale * (1.0 + motion.zoom * waves[3]),
  )


def clip_rng(seed: int, split_id: int, index: int) -> np.random.Generator:
  """The generator of clip `index` of split `split_id`."""
  return np.random.default_rng([seed, split_id, index, CLIP_STREAM])


def render_clip(
  seed: int,
  split_id: int,
  index: int,
  label: int,
  size: int,
  frames: tuple[int, int],
) -> list[np.ndarray]:
  """Renders clip `index` of split `split_id` deterministically.

  Args:
    seed: dataset seed.
    split_id: small integer naming the split (0 train, 1 test).
    index: clip index within the split.
    label: index into `ferjax.labels.EXPRESSIONS_7`.
    size: frame height and width in pixels.
    frames: the fewest and most frames a clip may have (inclusive).

  Returns:
    The frames, each a (size, size, 3) uint8 BGR image.
  """
  rng = clip_rng(seed, split_id, index)
  num_frames = int(rng.integers(frames[0], frames[1] + 1))
  apex = render.sample_expression(rng, label)
  nz = render.sample_nuisance(rng)
  timeline = sample_timeline(rng)
  motion = sample_motion(rng)
  times = np.linspace(0.0, 1.0, num_frames)
  return [
    render.draw(expression_at(apex, level), pose_at(nz, motion, t), size)
    for t, level in zip(times, intensity(timeline, times), strict=True)
  ]

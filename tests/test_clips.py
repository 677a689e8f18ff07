"""Clip sampling (TSN segments) and one augmentation per clip."""

import cv2
import numpy as np
import pytest

from configs import common
from ferjax.data import augment
from ferjax.data import clips


def _rng(seed=0):
  return np.random.default_rng(seed)


def _runs(indices, frames_per_segment):
  return indices.reshape(-1, frames_per_segment)


# -------------------------------------------------------------------- indices


@pytest.mark.parametrize(
  'num_frames, segments, per_segment', [(50, 4, 3), (16, 8, 2), (847, 16, 1)]
)
def test_train_indices_take_one_run_per_segment(
  num_frames, segments, per_segment
):
  step = (num_frames - per_segment + 1) // segments
  for seed in range(20):
    idx = clips.train_indices(num_frames, segments, per_segment, _rng(seed))
    assert idx.shape == (segments * per_segment,) and idx.dtype == np.int64
    runs = _runs(idx, per_segment)
    np.testing.assert_array_equal(np.diff(runs, axis=1), 1)  # Consecutive.
    starts = runs[:, 0]
    lo = np.arange(segments) * step
    assert np.all((lo <= starts) & (starts < lo + step)), starts
    assert idx.max() < num_frames


def test_train_indices_follow_the_seed():
  draw = [clips.train_indices(100, 8, 2, _rng(s)) for s in (0, 0, 1, 2)]
  np.testing.assert_array_equal(draw[0], draw[1])
  assert not np.array_equal(draw[0], draw[2])
  assert not np.array_equal(draw[2], draw[3])


def test_eval_indices_are_the_segment_centres():
  # t = (50 - 3 + 1) / 4 = 12: starts floor(6 + 12 u).
  np.testing.assert_array_equal(
    clips.eval_indices(50, 4, 3), [6, 7, 8, 18, 19, 20, 30, 31, 32, 42, 43, 44]
  )
  # t = 100 / 16 = 6.25: starts floor(3.125 + 6.25 u).
  np.testing.assert_array_equal(
    clips.eval_indices(100, 16, 1), np.floor(3.125 + 6.25 * np.arange(16))
  )
  # Exactly U*V frames: every frame once (the reference code's guard would
  # give frame 0 sixteen times for U=16, V=1).
  np.testing.assert_array_equal(clips.eval_indices(16, 16, 1), np.arange(16))
  np.testing.assert_array_equal(clips.eval_indices(16, 8, 2), np.arange(16))


def test_short_clips_loop():
  # 5 frames looped twice (10) for 4 x 2: t = 9 / 4, starts 1, 3, 5, 7.
  np.testing.assert_array_equal(
    clips.eval_indices(5, 4, 2), [1, 2, 3, 4, 0, 1, 2, 3]
  )
  np.testing.assert_array_equal(clips.eval_indices(1, 4, 2), np.zeros(8))
  for seed in range(20):
    idx = clips.train_indices(5, 4, 2, _rng(seed))
    assert idx.min() >= 0 and idx.max() < 5
    runs = _runs(idx, 2)
    np.testing.assert_array_equal((runs[:, 1] - runs[:, 0]) % 5, 1)
    # Segment u of the looped 10 frames starts at 2u or 2u + 1.
    assert np.all((runs[:, 0] - 2 * np.arange(4)) % 5 <= 1)


def test_short_clips_are_dropped_and_counted():
  counts = np.array([3, 16, 20, 15, 16, 40])
  drop = clips.ClipConfig(16, 1, 'drop')
  kept = clips.kept_indices(counts, drop)
  np.testing.assert_array_equal(kept, [1, 2, 4, 5])
  assert len(counts) - len(kept) == 2
  loop = clips.ClipConfig(8, 2, 'loop')
  np.testing.assert_array_equal(clips.kept_indices(counts, loop), range(6))


def test_bad_counts_are_rejected():
  with pytest.raises(ValueError, match='at least one frame'):
    clips.eval_indices(0, 4, 2)
  with pytest.raises(ValueError, match='must both be >= 1'):
    clips.train_indices(10, 0, 2, _rng())


# --------------------------------------------------------------------- config


def test_clip_config_defaults_and_validation():
  config = common.base_config()
  assert config.clip.segments == 0 and config.clip.short == 'loop'
  assert clips.parse_config(config.clip) is None  # Images.
  config.clip.segments = 8
  config.clip.frames_per_segment = 2
  clip = clips.parse_config(config.clip)
  assert clip == clips.ClipConfig(8, 2, 'loop') and clip.length == 16
  for field, value, match in [
    ('segments', -1, 'segments=-1'),
    ('frames_per_segment', 0, 'frames_per_segment=0'),
    ('short', 'pad', "short='pad'.*'loop', 'drop'"),
  ]:
    bad = common.base_config().clip
    bad.segments = 4
    bad[field] = value
    with pytest.raises(ValueError, match=match):
      clips.parse_config(bad)


def test_ial_recipe_parses():
  config = common.base_config()
  config.augment.update(clips.IAL_AUGMENT)
  c = augment.parse_config(config.augment)
  assert c.size == 112 and c.crop_scale == (0.85, 1.0)
  assert c.crop_ratio == pytest.approx((0.6, 5 / 3))
  assert (c.flip, c.brightness, c.rotation) == (0.5, 0.6, 4.0)
  assert not (c.contrast or c.saturation or c.hue or c.erasing_prob)


# --------------------------------------------------------------- augmentation

_ALL_ON = {
  **clips.IAL_AUGMENT,
  'size': 32,
  'contrast': 0.4,
  'saturation': 0.4,
  'hue': 0.1,
  'grayscale_prob': 0.3,
  'randaugment_ops': 2,
  'erasing_prob': 0.5,
  'erasing_value': 'random',
}


def test_identical_frames_stay_identical():
  noise = _rng(1).integers(0, 256, (4, 40, 48, 3), dtype=np.uint8)
  frames = noise[[0, 1, 0, 2, 0]]
  cfg = augment.parse_config(_ALL_ON)
  for seed in range(10):
    out = clips.train_clip_transform(frames, _rng(seed), cfg)
    assert out.shape == (5, 32, 32, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0], out[2])
    np.testing.assert_array_equal(out[0], out[4])
    assert not np.array_equal(out[0], out[1])


def test_one_draw_is_applied_to_every_frame():
  frames = _rng(2).integers(0, 256, (3, 40, 48, 3), dtype=np.uint8)
  cfg = augment.parse_config(_ALL_ON)
  for seed in range(10):
    out = clips.train_clip_transform(frames, _rng(seed), cfg)
    params = augment.sample_train_params(40, 48, _rng(seed), cfg)
    for frame, got in zip(frames, out, strict=True):
      want = augment.apply_train_params(frame, params, cfg)
      np.testing.assert_array_equal(got, want)
    # The first frame is what train_transform would make of it alone.
    alone = augment.train_transform(frames[0], _rng(seed), cfg)
    np.testing.assert_array_equal(out[0], alone)


def _centroid(image):
  weights = image[..., 0].astype(np.float64)
  ys, xs = np.indices(weights.shape)
  return np.array([(ys * weights).sum(), (xs * weights).sum()]) / weights.sum()


def test_a_moving_marker_moves_consistently():
  """Markers equally spaced over the frames stay equally spaced.

  One affine warp for all frames keeps equal spacing; a crop, rotation or
  flip drawn per frame would not.
  """
  frames = np.zeros((4, 64, 64, 3), np.uint8)
  for t in range(4):
    frames[t, 30:34, 22 + 6 * t : 26 + 6 * t] = 255
  cfg = augment.parse_config({**clips.IAL_AUGMENT, 'size': 64})
  flips = set()
  for seed in range(12):
    out = clips.train_clip_transform(frames, _rng(seed), cfg)
    centres = np.stack([_centroid(f) for f in out])
    steps = np.diff(centres, axis=0)
    np.testing.assert_allclose(steps, steps[[0, 0, 0]], atol=0.35)
    flips.add(bool(steps[0, 1] < 0))
  assert flips == {True, False}  # Both flip outcomes were exercised.


def test_eval_clip_transform_is_deterministic():
  frames = _rng(3).integers(0, 256, (4, 30, 40, 3), dtype=np.uint8)
  cfg = augment.parse_config({'size': 16})
  a = clips.eval_clip_transform(frames, cfg)
  b = clips.eval_clip_transform(list(frames), cfg)
  np.testing.assert_array_equal(a, b)
  for frame, got in zip(frames, a, strict=True):
    np.testing.assert_array_equal(got, augment.eval_transform(frame, cfg))


def test_grayscale_frames_become_rgb():
  frames = _rng(4).integers(0, 256, (3, 20, 20), dtype=np.uint8)
  cfg = augment.parse_config({'size': 8})
  for out in (
    clips.eval_clip_transform(frames, cfg),
    clips.train_clip_transform(frames[..., None], _rng(), cfg),
  ):
    assert out.shape == (3, 8, 8, 3)
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_take_frames_decodes_only_encoded_frames():
  frames = _rng(5).integers(0, 256, (6, 10, 12, 3), dtype=np.uint8)
  encoded = [cv2.imencode('.png', f[..., ::-1])[1].tobytes() for f in frames]
  idx = np.array([5, 0, 0, 3])
  np.testing.assert_array_equal(clips.take_frames(frames, idx), frames[idx])
  np.testing.assert_array_equal(clips.take_frames(encoded, idx), frames[idx])
  np.testing.assert_array_equal(
    clips.take_frames(list(frames), idx), frames[idx]
  )


def test_bad_clips_are_rejected():
  cfg = augment.parse_config({'size': 8})
  mixed = [np.zeros((8, 8, 3), np.uint8), np.zeros((9, 8, 3), np.uint8)]
  with pytest.raises(ValueError, match='differ in shape'):
    clips.train_clip_transform(mixed, _rng(), cfg)
  with pytest.raises(ValueError, match='uint8 frames'):
    clips.eval_clip_transform([np.zeros((8, 8, 3), np.float32)], cfg)
  with pytest.raises(ValueError, match='cannot decode'):
    clips.take_frames([b'not an image'], [0])


def test_train_clip_is_reproducible():
  frames = _rng(6).integers(0, 256, (30, 24, 24, 3), dtype=np.uint8)
  clip = clips.ClipConfig(4, 2, 'loop')
  cfg = augment.parse_config(_ALL_ON)
  a = clips.train_clip(frames, _rng(7), clip, cfg)
  b = clips.train_clip(frames, _rng(7), clip, cfg)
  assert a.shape == (8, 32, 32, 3)
  np.testing.assert_array_equal(a, b)
  e = clips.eval_clip(frames, clip, cfg)
  np.testing.assert_array_equal(e, clips.eval_clip(frames, clip, cfg))

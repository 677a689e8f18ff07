"""Tests for the synthetic_fer builder and its renderer."""

import dataclasses

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds

from ferjax.labels import EXPRESSIONS_7
from tfds_builders.synthetic_fer import clips
from tfds_builders.synthetic_fer import render
from tfds_builders.synthetic_fer import synthetic_fer_dataset_builder as sfer


@pytest.fixture(scope='module')
def smoke(tmp_path_factory):
  """The smoke config, built once into a temporary data dir."""
  data_dir = tmp_path_factory.mktemp('tfds')
  builder = sfer.Builder(
    config='smoke', data_dir=str(data_dir), file_format='array_record'
  )
  builder.download_and_prepare()
  return builder


def test_default_config_is_first():
  assert sfer.Builder.BUILDER_CONFIGS[0].name == '112'
  assert sfer.Builder().builder_config.name == '112'


@pytest.mark.parametrize(('split', 'n'), [('train', 448), ('test', 140)])
def test_smoke_contents(smoke, split, n):
  src = smoke.as_data_source(split=split)
  assert len(src) == n
  labels, ids = [], set()
  for i in range(n):
    ex = src[i]
    assert ex['image'].shape == (32, 32, 3)
    assert ex['image'].dtype == np.uint8
    labels.append(ex['label'])
    ids.add(ex['id'])
  assert len(ids) == n
  # n is a multiple of 7 and label = index % 7: exactly balanced.
  counts = np.bincount(labels, minlength=len(EXPRESSIONS_7))
  assert counts.tolist() == [n // 7] * 7
  assert smoke.info.features['label'].names == list(EXPRESSIONS_7)
  assert smoke.info.supervised_keys == ('image', 'label')


def test_data_source_reads_without_builder_object(smoke):
  src = tfds.data_source(
    'synthetic_fer/smoke', data_dir=smoke.data_dir_root, split='test'
  )
  assert len(src) == 140


def test_stored_pixels_are_the_rendered_ones(smoke):
  """Lossless PNG, RGB channel order, and the (seed, split, index) seeding."""
  src = smoke.as_data_source(split='test')
  for i in (0, 77):
    ex = src[i]
    split, index = ex['id'].decode().split('_')
    assert split == 'test'
    index = int(index)
    assert ex['label'] == index % 7
    bgr = render.render_example(0, sfer.SPLIT_IDS[split], index, index % 7, 32)
    np.testing.assert_array_equal(ex['image'], bgr[..., ::-1])


def test_rendering_is_deterministic_and_seeded():
  a = render.render_example(0, 0, 5, 3, 64)
  b = render.render_example(0, 0, 5, 3, 64)
  np.testing.assert_array_equal(a, b)
  assert a.shape == (64, 64, 3) and a.dtype == np.uint8
  for other in (
    render.render_example(1, 0, 5, 3, 64),  # seed
    render.render_example(0, 1, 5, 3, 64),  # split
    render.render_example(0, 0, 6, 3, 64),  # index
  ):
    assert np.abs(a.astype(int) - other).mean() > 10


def test_prototype_geometry_orders():
  """The expression tables say what the dataset description says."""
  p = render.PROTOTYPES
  assert p['happiness'].mouth_curve > 0.5 > 0 > p['sadness'].mouth_curve
  assert p['surprise'].mouth_open > p['fear'].mouth_open > 0.3
  assert p['surprise'].mouth_width < 0.8 < p['fear'].mouth_width
  assert p['surprise'].eye_open > 1.3 and p['fear'].eye_open > 1.3
  assert p['happiness'].eye_open < 1 and p['disgust'].eye_open < 1
  assert p['sadness'].brow_inner > 0.5 and p['anger'].brow_inner < -0.5
  assert p['surprise'].brow_raise > 0.5 and p['anger'].brow_raise < 0
  assert p['disgust'].nose_wrinkle > 0.5 and p['disgust'].mouth_asym > 0.3
  assert p['anger'].lip_thickness < 0.7


def test_sampled_expressions_spread_around_prototypes():
  rng = np.random.default_rng(0)
  eye = {
    name: np.mean(
      [render.sample_expression(rng, k).eye_open for _ in range(200)]
    )
    for k, name in enumerate(EXPRESSIONS_7)
  }
  assert eye['surprise'] > eye['neutral'] + 0.3
  assert eye['disgust'] < eye['neutral'] - 0.3
  curves = [render.sample_expression(rng, 1).mouth_curve for _ in range(200)]
  assert np.std(curves) > 0.1  # Within-class variation exists.


def _clean_nuisance(index: int) -> render.Nuisance:
  nz = render.sample_nuisance(np.random.default_rng([7, index]))
  return dataclasses.replace(nz, occlude=False, noise=0.0, blur=0.0)


def _box(img, center, half):
  x, y = np.round(center).astype(int)
  return img[y - half : y + half + 1, x - half : x + half + 1].astype(int)


@pytest.mark.parametrize('index', range(3))
@pytest.mark.parametrize('label', range(1, 7))
def test_expression_changes_face_geometry_only(index, label):
  """Same nuisance, neutral vs another expression: only the face changes."""
  size = 112
  nz = _clean_nuisance(index)
  neutral = render.draw(render.PROTOTYPES['neutral'], nz, size)
  other = render.draw(render.PROTOTYPES[EXPRESSIONS_7[label]], nz, size)
  diff = np.abs(neutral.astype(int) - other).max(-1)
  # Background corners are untouched.
  for corner in (diff[:4, :4], diff[:4, -4:], diff[-4:, :4], diff[-4:, -4:]):
    assert corner.max() == 0
  # Mouth or eye/brow regions change.
  mouth = nz.to_pixels([0.0, nz.mouth_y], size)
  eyes = nz.to_pixels(
    [[-nz.eye_x, nz.eye_y - 0.1], [nz.eye_x, nz.eye_y - 0.1]], size
  )
  half = max(2, round(0.2 * nz.scale * size))
  changed = [
    (_box(diff, c, half) > 30).mean() for c in (mouth, eyes[0], eyes[1])
  ]
  assert max(changed) > 0.1, changed


def test_mouth_opens_for_surprise():
  """The mouth box of surprise is darker than neutral's (open mouth)."""
  size = 112
  for index in range(5):
    # Light skin and flat lighting, so the dark open mouth stands out.
    nz = dataclasses.replace(
      _clean_nuisance(index),
      skin=(180.0, 200.0, 235.0),
      lip=(120.0, 130.0, 200.0),
      light=(0.0, 0.0, 0.0, 1.0),
    )
    centre = nz.to_pixels([0.0, nz.mouth_y], size)
    half = max(2, round(0.08 * nz.scale * size))
    lum = {
      name: _box(
        render.draw(render.PROTOTYPES[name], nz, size), centre, half
      ).mean()
      for name in ('neutral', 'surprise')
    }
    assert lum['surprise'] < lum['neutral'] - 10, lum


@pytest.fixture(scope='module')
def clip_smoke(tmp_path_factory):
  """The clip_smoke config, built once into a temporary data dir."""
  data_dir = tmp_path_factory.mktemp('tfds')
  builder = sfer.Builder(
    config='clip_smoke', data_dir=str(data_dir), file_format='array_record'
  )
  builder.download_and_prepare()
  return builder


def test_image_configs_come_first_and_clip_configs_after():
  configs = {c.name: c for c in sfer.Builder.BUILDER_CONFIGS}
  assert list(configs) == ['112', '64', 'smoke', 'clip', 'clip_smoke']
  for name in ('112', '64', 'smoke'):
    assert type(configs[name]) is sfer.SyntheticFerConfig
  clip, smoke = configs['clip'], configs['clip_smoke']
  assert (clip.image_size, clip.num_train, clip.num_test) == (64, 3500, 700)
  assert (clip.min_frames, clip.max_frames) == (12, 24)
  assert (smoke.image_size, smoke.num_train, smoke.num_test) == (32, 280, 70)
  assert (smoke.min_frames, smoke.max_frames) == (8, 20)


def test_clip_features_are_the_video_datasets(clip_smoke):
  features = clip_smoke.info.features
  assert set(features) == {'frames', 'label', 'id', 'num_frames'}
  assert features['frames'].feature.encoding_format == 'jpeg'
  assert features['frames'].feature.shape == (32, 32, 3)
  assert features['label'].names == list(EXPRESSIONS_7)
  assert clip_smoke.info.supervised_keys == ('frames', 'label')


@pytest.mark.parametrize(('split', 'n'), [('train', 280), ('test', 70)])
def test_clip_smoke_contents(clip_smoke, split, n):
  src = clip_smoke.as_data_source(split=split)
  assert len(src) == n
  labels, lengths = [], []
  for i in range(n):
    ex = src[i]
    assert ex['num_frames'] == len(ex['frames'])
    assert {f.shape for f in ex['frames']} == {(32, 32, 3)}
    labels.append(ex['label'])
    lengths.append(ex['num_frames'])
  assert np.bincount(labels, minlength=7).tolist() == [n // 7] * 7
  assert 8 <= min(lengths) < 16 <= max(lengths) <= 20


def test_stored_clip_frames_are_the_rendered_ones(clip_smoke):
  src = clip_smoke.as_data_source(split='test')
  for i in (0, 33):
    ex = src[i]
    split, index = ex['id'].decode().split('_')
    index = int(index)
    assert ex['label'] == index % 7
    frames = clips.render_clip(0, 1, index, index % 7, 32, (8, 20))
    assert len(frames) == ex['num_frames']
    for got, bgr in zip(ex['frames'], frames, strict=True):
      data = np.frombuffer(sfer.encode_frame(bgr), np.uint8)
      want = cv2.imdecode(data, cv2.IMREAD_COLOR)
      np.testing.assert_array_equal(got, want[..., ::-1])


def test_timeline_rises_holds_and_fades_part_way():
  rng = np.random.default_rng(0)
  for _ in range(50):
    tl = clips.sample_timeline(rng)
    assert 0 <= tl.onset < tl.apex < tl.offset <= 0.9
    t = np.linspace(0, 1, 101)
    level = clips.intensity(tl, t)
    assert level[0] == 0 and np.all((level >= 0) & (level <= 1))
    assert clips.intensity(tl, [tl.apex, tl.offset]).tolist() == [1, 1]
    assert level[-1] == pytest.approx(tl.end_level)
    assert 0.3 <= tl.end_level <= 0.8
    peak = int(np.argmax(level))
    assert np.all(np.diff(level[: peak + 1]) >= 0)  # Rises, then
    assert np.all(np.diff(level[peak:]) <= 0)  # fades.


def test_expression_interpolates_from_neutral_to_apex():
  apex = render.PROTOTYPES['surprise']
  neutral = render.PROTOTYPES['neutral']
  assert clips.expression_at(apex, 0.0) == neutral
  assert clips.expression_at(apex, 1.0) == apex
  half = clips.expression_at(apex, 0.5)
  assert half.mouth_open == pytest.approx(apex.mouth_open / 2)
  assert half.eye_open == pytest.approx((1 + apex.eye_open) / 2)


def test_clip_pose_drifts_a_little():
  nz = render.sample_nuisance(np.random.default_rng(3))
  motion = clips.sample_motion(np.random.default_rng(4))
  poses = [clips.pose_at(nz, motion, t) for t in np.linspace(0, 1, 9)]
  angles = [p.angle for p in poses]
  assert max(angles) - min(angles) <= 2 * motion.angle + 1e-9
  assert len(set(angles)) > 1
  assert all(p.skin == nz.skin and p.seed == nz.seed for p in poses)


def test_clips_are_deterministic_and_unfold():
  a = clips.render_clip(0, 0, 8, 1, 32, (12, 24))
  b = clips.render_clip(0, 0, 8, 1, 32, (12, 24))
  assert len(a) == len(b) and 12 <= len(a) <= 24
  for x, y in zip(a, b, strict=True):
    np.testing.assert_array_equal(x, y)
  other = clips.render_clip(0, 0, 9, 1, 32, (12, 24))
  assert np.abs(a[0].astype(int) - other[0]).mean() > 10
  # The face changes over the clip: later frames differ from the first.
  assert max(np.abs(f.astype(int) - a[0]).mean() for f in a[1:]) > 1

"""ferjax.predict on real photographs and videos: faces, crops, tracks."""

import copy

import cv2
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from PIL import Image

import ferjax
from ferjax import models
from ferjax import predict
from ferjax.faces import crops
from ferjax.faces import detect
from ferjax.predict import loading
from ferjax.predict import rows
from ferjax.predict import tracking
from tests import photos


class _Means(nn.Module):
  """A toy model: logits from the mean colour (of each frame of a clip)."""

  num_classes: int = 7

  @nn.compact
  def __call__(self, x, train=False):
    del train
    feats = x.mean(axis=(-3, -2)).reshape(x.shape[0], -1)
    return {'logits': nn.Dense(self.num_classes)(feats)}


def _predictor(frames=0, **options) -> predict.Predictor:
  shape = (1, frames, 16, 16, 3) if frames else (1, 16, 16, 3)
  model = _Means()
  variables = model.init(jax.random.key(0), jnp.zeros(shape))
  clip = {'segments': frames, 'frames_per_segment': 1} if frames else None
  return predict.Predictor(
    model,
    variables,
    num_classes=7,
    augment_config={'size': 16},
    clip_config=clip,
    batch_size=4,
    **options,
  )


@pytest.fixture(scope='module')
def predictor():
  return _predictor()


def test_real_photos_every_face_found_none_invented(predictor):
  names = list(photos.PHOTOS)
  small = copy.copy(predictor)
  small.max_detect_side = 640  # Faster; the smallest face stays 50 px.
  table = small.predict([photos.path(n) for n in names])
  for name in names:
    found = table[table['input'] == photos.path(name)]
    want = photos.PHOTOS[name].faces
    if want:
      assert found['error'].isna().all() and len(found) == want, name
      assert (found['score'] > 0.9).all(), name
      assert found[list(rows.POINTS)].notna().all().all(), name
    else:
      assert list(found['error']) == ['no face found'], name


def test_an_rgba_png_reads_as_its_rgb(predictor, tmp_path):
  """A real photo with a varying alpha channel, saved as RGBA PNG: read as
  its colours (alpha dropped, not composited), same faces, same rows."""
  rgb = photos.read('single_face')
  alpha = np.linspace(40, 255, rgb.shape[1]).astype(np.uint8)
  rgba = np.dstack([rgb, np.broadcast_to(alpha, rgb.shape[:2])])
  path = tmp_path / 'rgba.png'
  Image.fromarray(rgba, 'RGBA').save(path)
  with Image.open(path) as im:
    assert im.mode == 'RGBA'
  np.testing.assert_array_equal(predict.media.read_image(str(path)), rgb)
  table = predictor.predict([str(path), rgb])
  assert table['error'].isna().all() and len(table) == 2
  columns = ['x', 'y', 'w', 'h', 'score', *rows.POINTS, 'label']
  assert table.loc[0, columns].equals(table.loc[1, columns])


def _panned(image: np.ndarray, steps: int, size=(320, 240), step=12):
  """Frames of a camera panning right over `image`, shrunk to `size`."""
  frames = []
  for t in range(steps):
    window = image[:, t * step : t * step + image.shape[1] - steps * step]
    frames.append(cv2.resize(window, size, interpolation=cv2.INTER_AREA))
  return frames


def _video(path, frames, fps=10.0) -> str:
  height, width = frames[0].shape[:2]
  writer = cv2.VideoWriter(
    str(path), cv2.VideoWriter_fourcc(*'MJPG'), fps, (width, height)
  )
  for frame in frames:
    writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
  writer.release()
  return str(path)


@pytest.fixture(scope='module')
def group_video(tmp_path_factory):
  """Five people, the camera panning: each keeps a place in the group."""
  frames = _panned(photos.read('multi_face'), 6)
  return _video(tmp_path_factory.mktemp('video') / 'group.avi', frames)


def test_video_faces_keep_their_number(predictor, group_video, capsys):
  table = predictor.predict(group_video, progress=True)
  assert 'frame' in capsys.readouterr().err  # The bar counts frames.
  assert table['error'].isna().all()
  assert (
    list(table.groupby('frame')['face'].apply(sorted)) == [list(range(5))] * 6
  )
  # A face's number follows it: its box moves left with the pan, smoothly,
  # and people never swap numbers (their left-to-right order holds).
  centres = table.assign(cx=table['x'] + table['w'] / 2)
  by_face = centres.pivot(index='frame', columns='face', values='cx')
  steps = by_face.diff().dropna()
  assert (steps < 0).all().all() and (steps > -12).all().all()
  order = by_face.apply(lambda r: tuple(np.argsort(r.to_numpy())), axis=1)
  assert order.nunique() == 1


def test_clip_models_read_each_persons_crops(group_video):
  clip = _predictor(frames=4)
  table = clip.predict(group_video)
  # Six frames per person: one window of four, then the last four.
  assert sorted(table['face']) == sorted(list(range(5)) * 2)
  assert set(table['frame']) == {0, 2}
  frames = predict.media.read_video(group_video, 1, None)
  decoded = [f for _, f in frames.frames]
  tracker = tracking.IoUTracker()
  faces = [
    dict(zip(tracker.update(clip._faces(f))[0], clip._faces(f), strict=True))
    for f in decoded
  ]
  first = table[(table['face'] == 3) & (table['frame'] == 0)]
  stack = np.stack([clip.preprocess(decoded[i], faces[i][3]) for i in range(4)])
  x = jnp.asarray(stack[None], jnp.float32) / 255
  want = jax.nn.softmax(clip.model.apply(clip._variables, x)['logits'])
  np.testing.assert_allclose(
    first[list(clip.class_names)].to_numpy(), np.asarray(want), atol=1e-5
  )


def test_tracker_ends_tracks_and_never_reuses_numbers():
  tracker = tracking.IoUTracker(min_iou=0.3, max_age=1)
  a, b = detect.Face(0, 0, 10, 10), detect.Face(50, 50, 10, 10)
  assert tracker.update([a, b]) == ([0, 1], [])
  moved = detect.Face(2, 1, 10, 10)
  assert tracker.update([moved]) == ([0], [])  # b unseen once: kept.
  assert tracker.update([moved]) == ([0], [1])  # Twice: ended.
  assert tracker.update([b, moved]) == ([2, 0], [])  # b again: a new number.
  assert [t.id for t in tracker.live()] == [0, 2]


def _data(**fields) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({'name': 'rafdb', 'config': None, **fields})


def test_crop_styles_of_runs_and_weights():
  # A run trained before config.data.crop: the margin crop, as then.
  legacy = loading.run_crop(_data(name='synthetic_fer'))
  assert legacy.kind == 'box' and legacy.margin == 0.3
  assert loading.run_crop(_data()).margin == detect.DEFAULT_MARGIN
  # A run with the field: its value, or its dataset's.
  assert loading.run_crop(_data(crop=None)) == crops.STYLES['rafdb']
  assert loading.run_crop(_data(crop='ferplus')) == crops.STYLES['ferplus']
  unknown = _data(name='mine', crop=None)
  assert loading.run_crop(unknown) == crops.STYLES['box']
  # Weights: the metadata's, else the checkpoint's (IR-50: the template).
  for name in ('ir50', 'irse', 'jadfer'):
    style = loading.weights_crop(models.get_spec(name), {})
    assert style == crops.STYLES['arcface_112'], name
  resnet = models.get_spec('resnet18')
  assert loading.weights_crop(resnet, {}) == crops.STYLES['box']
  assert loading.weights_crop(resnet, {'crop': 'sfew'}) == crops.STYLES['sfew']


def test_whole_frame_styles_need_no_detector():
  p = _predictor(crop='caer_s')
  assert isinstance(p.detector, detect.WholeImage)
  assert isinstance(
    _predictor(crop='rafdb').detector, type(detect.get_detector())
  )
  q = _predictor(crop='rafdb', margin=0.5)
  assert q.crop.margin == 0.5 and q.crop.points == crops.STYLES['rafdb'].points


def test_annotations_draw_the_landmarks(predictor, tmp_path, monkeypatch):
  import sys
  import types

  stub = types.ModuleType('ferjax.viz')
  stub.annotate = lambda image, table: image.copy()  # Boxes not drawn.
  monkeypatch.setitem(sys.modules, 'ferjax.viz', stub)
  monkeypatch.setattr(ferjax, 'viz', stub, raising=False)
  image = photos.read('grace_hopper')
  (row,) = predictor.predict([image], annotate_dir=str(tmp_path)).itertuples()
  drawn = cv2.imread(str(tmp_path / 'array_0.png'))[..., ::-1]
  for name in ('left_eye', 'right_eye', 'nose', 'mouth_left', 'mouth_right'):
    x, y = round(getattr(row, f'{name}_x')), round(getattr(row, f'{name}_y'))
    assert (drawn[y, x] != image[y, x]).any(), name
  changed = (drawn != image).any(-1)
  assert changed.sum() < 5 * 150  # Five dots of radius 5, nothing else.

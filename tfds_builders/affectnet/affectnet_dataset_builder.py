"""affectnet: AffectNet's manually annotated images, 7 or 8 expressions.

Reads either release of AffectNet from `--manual_dir`:

* Original: `Manually_Annotated_file_lists/{training,validation}.csv` (path,
  face box, 68 landmarks, expression, valence, arousal per row; with or
  without a header line) and the full images under
  `Manually_Annotated_Images/` (or `Manually_Annotated/Manually_Annotated_
  Images/`). Each image is cropped to its face box grown by
  `AffectNetConfig.margin` on every side and clipped to the image, shrunk so
  its longer side is at most `max_size` (never enlarged), and re-encoded.
* Newer: `train_set/` and `val_set/`, each with `images/<id>.jpg` (224x224
  face crops) and `annotations/<id>_{exp,val,aro,lnd}.npy`. These JPEGs are
  stored as shipped unless they exceed `max_size` or are not 3-channel JPEGs;
  then they are shrunk and re-encoded likewise.

If both are present the original release is used: it has the face boxes, so
the crop's margin and size are set here rather than fixed by the release.

Configs '7class_aligned' and '8class_aligned' (`AffectNetConfig.align`)
store instead the largest face that MTCNN finds in each crop (the face box
grown by the margin, or the newer release's image), aligned onto RAF-DB's
100 px template (`tfds_builders.face_align`), with the landmarks and box
moved into the aligned face's pixels; a crop without a face is stored as
above. `info.metadata['alignment']` records the detector, template and
count of images without a face.

Splits: `train` is the training list, `test` the official validation set,
which papers report as AffectNet's test set (the test set was never
released). Expression ids 0..7 map into ferjax's canonical order; 8 none,
9 uncertain, 10 non-face, and 7 contempt in `7class`, are dropped and
counted in `info.metadata['dropped']`. The validation image known to ship
broken is skipped (if it is) and listed in `info.metadata['skipped']`.
`releases` finds and reads either release; this module stores the images.

Re-encoding uses JPEG at quality 95 (`jpeg_quality`), not PNG: the sources
are JPEGs already, and PNG would store their artefacts losslessly at 3-4
times the size (on photos, ~130 KB against ~35 KB for a 256 px crop: some
35 GB against 10 GB for ~290k images), while one more pass at quality 95
changes pixels by a few grey levels on average, well below the sources' own
compression noise and training augmentation.
"""

import dataclasses
import logging
import math

import cv2
import numpy as np
import tensorflow_datasets as tfds

from ferjax.labels import class_names
from tfds_builders import face_align
from tfds_builders import manual_data
from tfds_builders.affectnet import releases


@dataclasses.dataclass(kw_only=True)
class AffectNetConfig(tfds.core.BuilderConfig):
  """Classes kept and how images are stored.

  Attributes:
    num_classes: 7 (ids 0..6) or 8 (adds 7 contempt).
    margin: the original release's face box grows by this fraction of its
      width on the left and right, and of its height at the top and bottom,
      before cropping. 0.1 keeps the chin, forehead and ears that the tight
      detector boxes often cut, and leaves room for random crops and
      rotations; `face_box` still gives the box in the stored image.
    max_size: stored images are shrunk so their longer side is at most this
      (never enlarged); 256 leaves room for the usual 224 px random crops.
    jpeg_quality: quality of re-encoded JPEGs.
    align: None, or a `ferjax.faces.crops` template style to align each
      crop's largest face onto.
    no_face: when aligning, 'keep' a crop without a face unaligned, or
      'drop' it.
  """

  num_classes: int = 7
  margin: float = 0.1
  max_size: int = 256
  jpeg_quality: int = 95
  align: str | None = None
  no_face: str = 'keep'


def crop_window(box, margin: float, width: int, height: int):
  """Pixel window (x0, y0, x1, y1) of `box` grown by `margin`, clipped.

  Bounds round outwards, after rounding off float error (so a margin of 0.1
  grows a 100 px box by exactly 10 px).

  Returns:
    The window, or None if no part of it lies inside the image.
  """
  x, y, w, h = box
  x0 = max(0, math.floor(round(x - margin * w, 6)))
  y0 = max(0, math.floor(round(y - margin * h, 6)))
  x1 = min(width, math.ceil(round(x + w + margin * w, 6)))
  y1 = min(height, math.ceil(round(y + h + margin * h, 6)))
  return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def fit_size(width: int, height: int, max_size: int) -> tuple[int, int]:
  """(width, height) shrunk so the longer side is at most `max_size`."""
  scale = min(1.0, max_size / max(width, height))
  return max(1, round(width * scale)), max(1, round(height * scale))


def to_bgr(img: np.ndarray) -> np.ndarray:
  """A decoded image (gray, BGR or BGRA; 8 or 16 bit) as uint8 BGR."""
  if img.dtype == np.uint16:
    img = (img >> 8).astype(np.uint8)
  if img.ndim == 2:
    return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
  return cv2.cvtColor(img, cv2.COLOR_BGRA2BGR) if img.shape[2] == 4 else img


def read_image(row: releases.Row) -> tuple[bytes, np.ndarray]:
  """The image file's bytes and its decoded pixels (cv2 order)."""
  data = row.path.read_bytes()
  where = f'{row.path} (listed at {row.where})'
  if not data:  # cv2 raises its own error on empty input.
    raise manual_data.ManualDataError(
      f'{where}: empty file. Replace it with the file from the release.'
    )
  return data, manual_data.decode_image(data, where, channels=(1, 3, 4))


def is_known_broken(row: releases.Row) -> str | None:
  """Why a known-broken image is skipped; None if it is readable after all."""
  if row.id not in releases.KNOWN_BROKEN:
    return None
  if not row.path.is_file():
    return 'missing'
  try:
    read_image(row)
  except manual_data.ManualDataError:
    return 'undecodable'
  return None


def store_image(
  data: bytes, img: np.ndarray, window, cfg: AffectNetConfig
) -> tuple[bytes, tuple[int, int]]:
  """Crops `img` to `window`, bounds its size and encodes it.

  Args:
    data: the file, stored as it is if `window` is the whole image, no
      shrinking is needed and it is a 3-channel JPEG.
    img: the decoded file.
    window: (x0, y0, x1, y1) to keep.
    cfg: gives `max_size` and `jpeg_quality`.

  Returns:
    The bytes to store and their (width, height).
  """
  x0, y0, x1, y1 = window
  size = fit_size(x1 - x0, y1 - y0, cfg.max_size)
  is_jpeg = data[:2] == b'\xff\xd8' and img.ndim == 3 and img.shape[2] == 3
  if is_jpeg and size == (img.shape[1], img.shape[0]):
    return data, size
  crop = to_bgr(img)[y0:y1, x0:x1]
  if size != (x1 - x0, y1 - y0):
    crop = cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
  params = [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality]
  ok, encoded = cv2.imencode('.jpg', crop, params)
  if not ok:
    raise RuntimeError(f'JPEG encoding failed for {window} of an image.')
  return encoded.tobytes(), size


def _moved(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
  return (points @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32)


def aligned_example(row, img, window, cfg, aligner) -> dict | None:
  """The window's face aligned (`cfg.align`); None if it has no face (the
  caller stores the window as usual, or drops it)."""
  x0, y0, x1, y1 = window
  face_bgr, face = aligner.align(to_bgr(img)[y0:y1, x0:x1], row.split)
  if face is None:
    return None
  matrix = aligner.matrix(face)
  corner = np.array([x0, y0], np.float32)
  x, y, w, h = row.box or (0, 0, img.shape[1], img.shape[0])
  box = _moved(np.array([[x, y], [x + w, y + h]]) - corner, matrix)
  params = [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality]
  return {
    'image': cv2.imencode('.jpg', face_bgr, params)[1].tobytes(),
    'landmarks': _moved(row.landmarks - corner, matrix),
    'face_box': np.concatenate([box.min(0), box.max(0) - box.min(0)]),
  }


def make_example(
  row: releases.Row,
  cfg: AffectNetConfig,
  aligner: face_align.Aligner | None = None,
) -> dict | None:
  """Reads, crops and stores one image with its annotations.

  Landmarks and face box move into the stored image's pixel frame (origin at
  its top-left corner): minus the crop window's corner, times each axis's
  shrink factor (or through the alignment's similarity transform). None:
  an image without a face that aligning drops.

  Raises:
    manual_data.ManualDataError: naming the file and where it is listed, if the
      image does not decode or the box lies outside it.
  """
  data, img = read_image(row)
  height, width = img.shape[:2]
  window = (0, 0, width, height)
  if row.box is not None:
    window = crop_window(row.box, cfg.margin, width, height)
    if window is None:
      raise releases.data_error(
        row.where,
        f'face box {row.box} lies outside {row.path} ({width}x{height})',
      )
  labels = {
    'label': releases.AFFECTNET_TO_CANONICAL[row.original_label],
    'original_label': row.original_label,
    'valence': np.float32(row.valence),
    'arousal': np.float32(row.arousal),
    'id': row.id,
  }
  if aligner is not None:
    aligned = aligned_example(row, img, window, cfg, aligner)
    if aligned is not None:
      return {**aligned, **labels}
    if aligner.no_face == 'drop':
      return None
  data, (out_w, out_h) = store_image(data, img, window, cfg)
  x0, y0, x1, y1 = window
  scale = np.array([out_w / (x1 - x0), out_h / (y1 - y0)], np.float32)
  corner = np.array([x0, y0], np.float32)
  box = np.array(row.box or (0, 0, width, height), np.float32).reshape(2, 2)
  return {
    'image': data,
    'landmarks': ((row.landmarks - corner) * scale).astype(np.float32),
    'face_box': np.concatenate([(box[0] - corner) * scale, box[1] * scale]),
    **labels,
  }


class Builder(tfds.core.GeneratorBasedBuilder):
  """DatasetBuilder for affectnet (the manually annotated images)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  # The first config is the default.
  BUILDER_CONFIGS = [
    AffectNetConfig(name='7class', description='Neutral ... anger, ids 0..6.'),
    AffectNetConfig(
      name='8class', description='Adds contempt, ids 0..7.', num_classes=8
    ),
    AffectNetConfig(
      name='7class_aligned',
      description='7class, faces aligned as RAF-DB images.',
      align='rafdb',
    ),
    AffectNetConfig(
      name='8class_aligned',
      description='8class, faces aligned as RAF-DB images.',
      num_classes=8,
      align='rafdb',
    ),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  AffectNet is distributed by its authors for academic, non-commercial
  research only. Request it on the official site,
  http://mohammadmahoor.com/affectnet/ : fill in the AffectNet request form
  and accept its academic license agreement; the authors reply with the
  download links.

  Unpack either release. The original one must give

    Manually_Annotated_file_lists/training.csv
    Manually_Annotated_file_lists/validation.csv
    Manually_Annotated_Images/<subdir>/<name>.jpg ...
      (or Manually_Annotated/Manually_Annotated_Images/...)

  and the newer one

    train_set/images/<id>.jpg, train_set/annotations/<id>_exp.npy ...
    val_set/images/<id>.jpg, val_set/annotations/<id>_exp.npy ...

  Pass `--manual_dir` pointing at the folder holding these (or at its
  parent, if that folder is named `AffectNet`), e.g.
  `python -m ferjax.data.build affectnet --config 8class
  --manual_dir ~/data/AffectNet`.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    """Returns the dataset metadata."""
    geometry = 'in pixels of the stored image, origin at its top-left corner'
    va = 'In [-1, 1]; -2 means not annotated.'
    return self.dataset_info_from_configs(
      features=tfds.features.FeaturesDict(
        {
          'image': tfds.features.Image(
            shape=(None, None, 3), encoding_format='jpeg'
          ),
          'label': tfds.features.ClassLabel(
            names=class_names(self.builder_config.num_classes)
          ),
          'original_label': tfds.features.Scalar(
            dtype=np.int64,
            doc='AffectNet expression id: 0 neutral, 1 happy, 2 sad, '
            '3 surprise, 4 fear, 5 disgust, 6 anger, 7 contempt.',
          ),
          'valence': tfds.features.Scalar(dtype=np.float32, doc=va),
          'arousal': tfds.features.Scalar(dtype=np.float32, doc=va),
          'landmarks': tfds.features.Tensor(
            shape=(releases.NUM_LANDMARKS, 2),
            dtype=np.float32,
            doc=f'68 (x, y) points, {geometry}.',
          ),
          'face_box': tfds.features.Tensor(
            shape=(4,), dtype=np.float32, doc=f'(x, y, w, h), {geometry}.'
          ),
          'id': tfds.features.Text(doc='CSV image path, or newer-release id.'),
        }
      ),
      supervised_keys=('image', 'label'),
      homepage='http://mohammadmahoor.com/affectnet/',
      metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    """Checks the whole release, then returns the train and test generators."""
    kind, release_dir = releases.find_release(dl_manager.manual_dir)
    logging.info('affectnet: reading the %s release in %s', kind, release_dir)
    read = releases.original_rows if kind == 'original' else releases.npy_rows
    kept, dropped = releases.select(
      read(release_dir), self.builder_config.num_classes
    )
    logging.info('affectnet: dropped (not in this config) %s', dropped)
    report = manual_data.SkipReport()
    for row in kept:
      if reason := is_known_broken(row):
        report.add(row.split, row.id, f'known broken file, {reason}')
    skipped = {(s['split'], s['file']) for s in report.skipped}
    kept = [r for r in kept if (r.split, r.id) not in skipped]
    # Check every image up front so a bad release fails before writing.
    manual_data.check_files_exist(
      ((r.path, r.where) for r in kept),
      f'Unpack the complete release into {release_dir}.',
    )
    self.info.metadata.update(release=kind, dropped=dropped)
    report.save(self.info)
    cfg = self.builder_config
    aligner = cfg.align and face_align.Aligner(cfg.align, cfg.no_face)
    if aligner:
      self.info.metadata['alignment'] = aligner.metadata()
    return {
      split: self._generate_examples(
        [r for r in kept if r.split == split], aligner or None
      )
      for split in releases.SPLITS
    }

  def _generate_examples(self, rows: list[releases.Row], aligner=None):
    """Yields (key, example) for the rows of one split."""
    for row in rows:
      example = make_example(row, self.builder_config, aligner)
      if example is not None:
        yield row.key, example

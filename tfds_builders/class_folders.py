"""Reader of releases that keep each class's images in a folder of its own.

SFEW and CAER-S ship a split as `<split folder>/<class folder>/<image>`.
`class_folder_files` lists one split and checks every entry before anything
is written; `class_folder_examples` reads the images into the features of
`class_folder_features`, keeping their bytes as shipped.
"""

import collections
import collections.abc
import logging
import pathlib
import typing

import numpy as np
import tensorflow_datasets as tfds

from tfds_builders import manual_data


class ClassFile(typing.NamedTuple):
  """One image of a release that stores each class in its own folder.

  Attributes:
    path: the file, `<split folder>/<class folder>/<name>`.
    folder: the class folder's name as shipped (the dataset's own label).
    label: the canonical label the folder maps to.
  """

  path: pathlib.Path
  folder: str
  label: int

  @property
  def id(self) -> str:
    """`<split folder>/<class folder>/<name>`, unique within a release."""
    return '/'.join(self.path.parts[-3:])


def class_folder_files(
  split_dir: manual_data.PathLike,
  class_map: collections.abc.Mapping[str, int],
  extensions: collections.abc.Collection[str],
  fix: str,
) -> list[ClassFile]:
  """Lists the images of one split stored as `split_dir/<class folder>/*`.

  Every entry must be expected: each entry of `split_dir` is a folder named
  in `class_map`, each entry of a class folder is a file with an allowed
  ending, every label of `class_map` has a folder and every folder has an
  image. Names in `manual_data.IGNORED_FILES` and `._*` files are passed over
  (and counted in an info log line). Everything wrong is reported at once.

  Args:
    split_dir: the split's folder.
    class_map: class folder name -> canonical label. Several names may map
      to one label (a release that spells a class differently in two
      splits); a split needs one of them.
    extensions: allowed file endings with the dot (`.png`); case does not
      matter.
    fix: what the user should do, appended to the message.

  Returns:
    The images, by class folder name, then file name (code point order, the
    same on every machine).

  Raises:
    manual_data.ManualDataError: if `split_dir` is not a folder, or naming
      every unknown class folder, stray file or folder, unexpected file
      ending, empty class folder and missing class folder.
  """
  split_dir = pathlib.Path(split_dir)
  if not split_dir.is_dir():
    raise manual_data.ManualDataError(f'{split_dir} is not a folder. {fix}')
  extensions = {e.lower() for e in extensions}
  allowed = ', '.join(sorted(extensions))
  files = []
  problems = []
  ignored = 0
  present = set()
  for entry in sorted(split_dir.iterdir(), key=lambda p: p.name):
    if manual_data.is_ignored(entry.name):
      ignored += 1
    elif entry.name not in class_map or not entry.is_dir():
      problems.append(
        f'{entry}: not a class folder (expected folders: '
        f'{", ".join(sorted(class_map))})'
      )
    else:
      present.add(class_map[entry.name])
      before = len(files)
      for path in sorted(entry.iterdir(), key=lambda p: p.name):
        if manual_data.is_ignored(path.name):
          ignored += 1
        elif path.is_file() and path.suffix.lower() in extensions:
          files.append(ClassFile(path, entry.name, class_map[entry.name]))
        else:
          problems.append(f'{path}: not an image file ending in {allowed}')
      if len(files) == before:
        problems.append(f'{entry}: no images')
  names = collections.defaultdict(list)
  for name, label in class_map.items():
    names[label].append(name)
  problems += [
    f'{split_dir}: missing class folder {" or ".join(sorted(names[label]))}'
    for label in sorted(names)
    if label not in present
  ]
  if problems:
    raise manual_data.ManualDataError(
      f'{split_dir} does not hold the expected class folders '
      f'({len(problems)} problem(s)):{manual_data.listing(problems)}\n{fix}'
    )
  if ignored:
    logging.info('%s: passed over %d system file(s).', split_dir, ignored)
  return files


def class_file_example(item: ClassFile) -> dict:
  """Reads one image of a class-folder release as a feature dict.

  Args:
    item: the image, from `class_folder_files`.

  Returns:
    {'image': the file's bytes as shipped, 'label': item.label,
    'original_label': item.folder, 'id': item.id}.

  Raises:
    manual_data.ManualDataError: naming the file if it is not a decodable
      3-channel image with 8-bit samples.
  """
  data = item.path.read_bytes()
  if not data:  # cv2 raises its own error on empty input.
    raise manual_data.ManualDataError(
      f'{item.path}: empty file. Replace it with the file from the release.'
    )
  # Stored bytes are decoded later as they are, so check them now: a
  # truncated, grayscale or 16-bit file would break readers, not this build.
  image = manual_data.decode_image(data, item.path, channels=(3,))
  if image.dtype != np.uint8:
    raise manual_data.ManualDataError(
      f'{item.path}: {image.dtype} samples, not 8-bit. Replace it with the '
      'file from the release.'
    )
  return {
    'image': data,
    'label': item.label,
    'original_label': item.folder,
    'id': item.id,
  }


def class_folder_examples(
  files: collections.abc.Iterable[ClassFile],
) -> collections.abc.Iterator[tuple[str, dict]]:
  """Yields (id, example) per file: what a builder's generator yields."""
  for item in files:
    yield item.id, class_file_example(item)


def class_folder_features(
  names: collections.abc.Sequence[str],
  encoding_format: str | None,
  folders: str,
) -> tfds.features.FeaturesDict:
  """The features of a class-folder dataset, as `class_file_example` fills.

  Args:
    names: the canonical class names, in label order.
    encoding_format: the format the release's images are in, or None where
      it ships several. Bytes are stored as shipped either way: TFDS keeps
      them unchanged and decodes them by their content.
    folders: the release's class folder names, for the documentation.
  """
  return tfds.features.FeaturesDict(
    {
      'image': tfds.features.Image(
        shape=(None, None, 3), encoding_format=encoding_format
      ),
      'label': tfds.features.ClassLabel(names=names),
      'original_label': tfds.features.Text(
        doc=f'Class folder name as shipped: {folders}.'
      ),
      'id': tfds.features.Text(
        doc='<split folder>/<class folder>/<file name>, as shipped.'
      ),
    }
  )

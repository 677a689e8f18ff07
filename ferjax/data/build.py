"""Builds the TFDS datasets in `tfds_builders/` without TensorFlow.

Usage:

  python -m ferjax.data.build NAME [--config CFG] [--data_dir DIR]
      [--manual_dir DIR]

NAME is a folder of `tfds_builders/` (e.g. `synthetic_fer`). Datasets are
written as array_record files, which read back with `tfds.data_source` and
grain without TensorFlow. TFDS writes into a temporary directory and renames
it at the end, so an interrupted build never looks built.

The library functions (`builder`, `is_built`, `build_command`, `build`) let
the training pipeline check for a dataset and tell the user how to make it.
"""

import importlib
import os
import pathlib
import shlex
import sys
import time
from collections.abc import Sequence

import tensorflow_datasets as tfds
from absl import flags

import tfds_builders
from ferjax import cli
from tfds_builders import manual_data

PathLike = str | os.PathLike

BUILDERS_DIR = pathlib.Path(tfds_builders.__file__).parent
FILE_FORMAT = 'array_record'


def available() -> list[str]:
  """Names of the builder folders in `tfds_builders/`, sorted."""
  return sorted(
    d.name
    for d in BUILDERS_DIR.iterdir()
    if (d / f'{d.name}_dataset_builder.py').is_file()
  )


def builder_class(name: str) -> type[tfds.core.DatasetBuilder]:
  """Imports `tfds_builders.<name>.<name>_dataset_builder.Builder`.

  Args:
    name: a folder of `tfds_builders/`.

  Returns:
    The builder class.

  Raises:
    ValueError: if there is no such builder.
  """
  names = available()
  if name not in names:
    raise ValueError(
      f'Unknown dataset {name!r}. Available in {BUILDERS_DIR}: '
      f'{", ".join(names)}.'
    )
  module = importlib.import_module(
    f'tfds_builders.{name}.{name}_dataset_builder'
  )
  return module.Builder


def builder(
  name: str, config: str | None = None, data_dir: PathLike | None = None
) -> tfds.core.DatasetBuilder:
  """Returns the builder of dataset `name`, writing array_record files.

  Args:
    name: a folder of `tfds_builders/`.
    config: builder config name; None picks the builder's default.
    data_dir: TFDS data directory; None uses TFDS's default
      (`$TFDS_DATA_DIR` or `~/tensorflow_datasets`).

  Raises:
    ValueError: for an unknown dataset or config.
  """
  cls = builder_class(name)
  configs = list(cls.builder_configs)
  if config is not None and config not in configs:
    valid = ', '.join(configs) if configs else 'none (omit --config)'
    raise ValueError(
      f'Unknown config {config!r} for {name}. Valid configs: {valid}.'
    )
  return cls(
    config=config,
    data_dir=None if data_dir is None else os.fspath(data_dir),
    file_format=FILE_FORMAT,
  )


def is_built(
  name: str, config: str | None = None, data_dir: PathLike | None = None
) -> bool:
  """Whether dataset `name` (config, current version) is fully built."""
  return builder(name, config, data_dir).is_prepared()


def build_command(
  name: str,
  config: str | None = None,
  data_dir: PathLike | None = None,
  manual_dir: PathLike | None = None,
) -> str:
  """The shell command that builds dataset `name` with these options.

  A dataset built from a manual download without `manual_dir` gets
  `--manual_dir RELEASE_DIR`, for the user to fill in.
  """
  args = ['python', '-m', 'ferjax.data.build', name]
  if manual_dir is None and needs_manual_dir(name):
    manual_dir = 'RELEASE_DIR'  # Only the user knows; the README says.
  for flag, value in (
    ('--config', config),
    ('--data_dir', data_dir),
    ('--manual_dir', manual_dir),
  ):
    if value is not None:
      args += [flag, os.fspath(value)]
  return shlex.join(args)


def build(
  name: str,
  config: str | None = None,
  data_dir: PathLike | None = None,
  manual_dir: PathLike | None = None,
) -> tfds.core.DatasetBuilder:
  """Builds dataset `name` unless it is already built.

  Args:
    name: a folder of `tfds_builders/`.
    config: builder config name; None picks the builder's default.
    data_dir: TFDS data directory; None uses TFDS's default.
    manual_dir: where manually downloaded files are; None uses
      `<data_dir>/downloads/manual`.

  Returns:
    The prepared builder (`.data_dir`, `.info.splits`, `.as_data_source()`).
  """
  b = builder(name, config, data_dir)
  if not b.is_prepared():
    check_manual_dir(b, manual_dir)
  b.download_and_prepare(
    download_config=tfds.download.DownloadConfig(
      manual_dir=None if manual_dir is None else os.fspath(manual_dir)
    )
  )
  return b


def needs_manual_dir(name: str) -> bool:
  """Whether dataset `name` is built from a release downloaded by hand."""
  return bool(builder_class(name).MANUAL_DOWNLOAD_INSTRUCTIONS)


def check_manual_dir(
  b: tfds.core.DatasetBuilder, manual_dir: PathLike | None
) -> None:
  """Refuses a missing or empty --manual_dir before TFDS asserts on it.

  Raises:
    manual_data.ManualDataError: naming the folder, with the builder's
      download instructions on the same line.
  """
  if not b.MANUAL_DOWNLOAD_INSTRUCTIONS:
    return
  given = manual_dir is not None
  path = pathlib.Path(manual_dir or b.data_dir_root / 'downloads' / 'manual')
  if path.is_dir() and any(path.iterdir()):
    return
  state = 'is empty' if path.is_dir() else 'does not exist'
  where = f'--manual_dir={path}' if given else f'{path} (no --manual_dir)'
  how = ' '.join(b.MANUAL_DOWNLOAD_INSTRUCTIONS.split())  # On one line.
  raise manual_data.ManualDataError(
    f'{where} {state}: {b.name} is built from its release, downloaded by '
    f'hand. {how}'
  )


def _define(fv: flags.FlagValues) -> None:
  flags.DEFINE_string(
    'config', None, 'builder config (default: its first)', flag_values=fv
  )
  flags.DEFINE_string('data_dir', None, 'TFDS data directory', flag_values=fv)
  flags.DEFINE_string(
    'manual_dir', None, 'manually downloaded files', flag_values=fv
  )


def _main(fv: flags.FlagValues, name: str) -> None:
  with cli.usage_errors(ValueError):  # An unknown name or config.
    builder(name, fv.config, fv.data_dir)
  start = time.perf_counter()
  with cli.failures(manual_data.ManualDataError):  # Names the file and the fix.
    b = build(name, fv.config, fv.data_dir, fv.manual_dir)
  seconds = time.perf_counter() - start
  config = f'/{b.builder_config.name}' if b.builder_config else ''
  print(f'{name}{config} {b.version} is in {b.data_dir} ({seconds:.1f} s)')
  for split, info in sorted(b.info.splits.items()):
    print(f'  {split}: {info.num_examples} examples')


def main(argv: Sequence[str] | None = None) -> int:
  """Command-line entry point; returns the exit status."""
  return cli.run(_main, _define, argv)


if __name__ == '__main__':
  sys.exit(main())

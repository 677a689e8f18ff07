"""Where the pretrained checkpoints that configs start from come from.

Nothing is downloaded at run time: a config's `init_from` names a local
file, and when it is missing the error says where to get it, from the
checkpoints the model specs list (`ModelSpec.checkpoints`).
"""

import pathlib

from ferjax import models


def known_checkpoints() -> dict[str, models.Checkpoint]:
  """Every checkpoint some model spec lists, by file name."""
  return {
    checkpoint.file: checkpoint
    for spec in models.list_specs()
    for checkpoint in spec.checkpoints
  }


def missing_file_message(path: str) -> str:
  """Says that `path` is missing and, for a known checkpoint, where it is."""
  name = pathlib.Path(path).name
  message = f'config.init_from={path!r} does not exist.'
  known = known_checkpoints().get(name)
  if known is not None:
    message += (
      f' It is {known.description}: download it from {known.url} and point '
      '--config.init_from at it.'
    )
  else:
    message += ' Set --config.init_from to an existing file or workdir.'
  return message

r"""Rewrites `ferjax/faces/data/mtcnn.npz` from facenet-pytorch's weights.

  pip download facenet-pytorch==2.6.0 --no-deps
  python -m ferjax.faces.mtcnn_weights \
      --wheel facenet_pytorch-2.6.0-py3-none-any.whl

(or `--package_dir` pointing at an installed `facenet_pytorch/`). Needs
torch, to read the three `data/{pnet,rnet,onet}.pt` state dicts. The arrays
are stored as they are (float32, PyTorch names and layouts; `mtcnn_nets`
transposes them on loading) in a zip whose entries have fixed dates and a
fixed order, so the same wheel gives the same file, byte for byte: the
SHA-256 printed at the end is the one `data/mtcnn_SOURCE.md` records. The
file is written beside the target and renamed into place.
"""

import hashlib
import io
import os
import pathlib
import sys
import tempfile
import zipfile
from collections.abc import Sequence

import numpy as np
from absl import flags

from ferjax import cli
from ferjax.faces import mtcnn_nets

_IN_WHEEL = 'facenet_pytorch/data/{}.pt'
_FIXED_DATE = (1980, 1, 1, 0, 0, 0)


def _define(fv: flags.FlagValues) -> None:
  flags.DEFINE_string(
    'wheel', None, 'a facenet_pytorch-*.whl file', flag_values=fv
  )
  flags.DEFINE_string(
    'package_dir', None, 'an installed facenet_pytorch/ folder', flag_values=fv
  )
  flags.DEFINE_string(
    'out',
    str(mtcnn_nets.weights_path()),
    'where to write the .npz',
    flag_values=fv,
  )
  flags.mark_flags_as_mutual_exclusive(
    ['wheel', 'package_dir'], required=True, flag_values=fv
  )


def read_state_dicts(wheel=None, package_dir=None) -> dict[str, np.ndarray]:
  """{'pnet/conv1.weight': float32 array, ...} from a wheel or a folder.

  Raises:
    FileNotFoundError: the wheel, folder or a .pt file in it is missing.
    ImportError: torch is not installed.
  """
  import torch

  def raw(net: str) -> bytes:
    if wheel:
      with zipfile.ZipFile(wheel) as z:
        try:
          return z.read(_IN_WHEEL.format(net))
        except KeyError:
          raise FileNotFoundError(
            f'{wheel} has no {_IN_WHEEL.format(net)}; pass a facenet-pytorch '
            'wheel (pip download facenet-pytorch==2.6.0 --no-deps).'
          ) from None
    return pathlib.Path(package_dir, 'data', f'{net}.pt').read_bytes()

  arrays = {}
  for net in mtcnn_nets.NETS:
    state = torch.load(io.BytesIO(raw(net)), weights_only=True)
    for name, tensor in state.items():
      arrays[f'{net}/{name}'] = tensor.numpy().astype(np.float32)
  return arrays


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
  """An .npz of `arrays` (sorted, fixed dates): same arrays, same bytes."""
  buf = io.BytesIO()
  # Stored, not deflated: float weights barely compress, and the bytes
  # then cannot depend on the zlib version.
  with zipfile.ZipFile(buf, 'w', zipfile.ZIP_STORED) as z:
    for key in sorted(arrays):
      info = zipfile.ZipInfo(f'{key}.npy', date_time=_FIXED_DATE)
      array = io.BytesIO()
      np.lib.format.write_array(array, np.ascontiguousarray(arrays[key]))
      z.writestr(info, array.getvalue())
  return buf.getvalue()


def write_atomic(data: bytes, out: str) -> None:
  """Writes `data` to `out` through a temporary file beside it."""
  out = os.path.abspath(out)
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(out), prefix='.mtcnn.')
  try:
    with os.fdopen(fd, 'wb') as f:
      f.write(data)
    os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide it from other users.
    os.replace(tmp, out)
  except BaseException:
    os.unlink(tmp)
    raise


def _main(fv: flags.FlagValues) -> None:
  arrays = read_state_dicts(fv.wheel, fv.package_dir)
  data = npz_bytes(arrays)
  mtcnn_nets.check_variables(
    {n: mtcnn_nets._flax_params(arrays, n) for n in mtcnn_nets.NETS}
  )
  write_atomic(data, fv.out)
  print(
    f'{fv.out}: {len(arrays)} arrays, {len(data)} bytes, sha256 '
    f'{hashlib.sha256(data).hexdigest()}'
  )


def main(argv: Sequence[str] | None = None) -> int:
  """Command-line entry point; returns the exit status (see --help)."""
  return cli.run(_main, _define, argv)


if __name__ == '__main__':
  sys.exit(main())

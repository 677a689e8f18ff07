r"""docs/alignment.png: real faces cut in each dataset's crop style.

  python -m bench.alignment_figure --out docs/alignment.png

One row per photograph (`tests/photos.py`), one column per crop style
(`ferjax.faces.crops`): first the photo around MTCNN's box with its five
landmarks, then the face as each dataset's images frame it. On the
template styles, crosses mark where the dataset's template puts the eyes,
nose tip and mouth corners, and dots where this face's landmarks land
after the five-point alignment: the closer they sit, the more this crop
looks like the dataset's images.
"""

import sys
from collections.abc import Sequence

import numpy as np
from absl import flags

sys.path.insert(0, '.')

from ferjax import cli  # noqa: E402
from ferjax.faces import crops  # noqa: E402
from ferjax.faces import detect  # noqa: E402
from ferjax.predict import media  # noqa: E402
from tests import photos  # noqa: E402

PHOTOS = ('grace_hopper', 'hand_over_face', 'camera', 'multi_face')
STYLES = ('rafdb', 'sfew', 'arcface_112', 'ferplus', 'affectnet', 'dfew')


def _define(fv: flags.FlagValues) -> None:
  flags.DEFINE_string(
    'out', 'docs/alignment.png', 'the PNG to write', flag_values=fv
  )


def _context(ax, image, face) -> None:
  """The photo around the face, with its box and landmarks."""
  pad = face.w
  x0, y0 = max(0, face.x - pad), max(0, face.y - pad)
  x1 = min(image.shape[1], face.x + face.w + pad)
  y1 = min(image.shape[0], face.y + face.h + pad)
  ax.imshow(image[y0:y1, x0:x1])
  from matplotlib import patches

  box = (face.x - x0, face.y - y0)
  ax.add_patch(patches.Rectangle(box, face.w, face.h, fill=False, color='lime'))
  points = np.array(face.landmarks) - [x0, y0]
  ax.scatter(*points.T, s=12, c='lime')


def _styled(ax, image, face, name) -> None:
  style = crops.get_style(name)
  ax.imshow(crops.crop(image, face, name))
  if style.kind != 'template':
    return
  template = np.array(style.points)
  matrix = crops.similarity(face.landmarks, style.points)
  moved = np.array(face.landmarks) @ matrix[:, :2].T + matrix[:, 2]
  ax.scatter(*template.T, s=40, marker='+', c='red', linewidths=1.2)
  ax.scatter(*moved.T, s=10, c='yellow')


def figure(out: str) -> str:
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  rows = [n for n in PHOTOS if photos.find(n)]
  fig, axes = plt.subplots(
    len(rows), 1 + len(STYLES), figsize=(2 * (1 + len(STYLES)), 2.2 * len(rows))
  )
  axes = np.atleast_2d(axes)
  for row, name in zip(axes, rows, strict=True):
    image = media.read_image(photos.find(name))
    face = detect.get_detector('mtcnn')(image)[0]
    _context(row[0], image, face)
    for ax, style in zip(row[1:], STYLES, strict=True):
      _styled(ax, image, face, style)
  for ax, title in zip(axes[0], ('MTCNN', *STYLES), strict=True):
    ax.set_title(title, fontsize=10)
  for ax in axes.ravel():
    ax.set_xticks([])
    ax.set_yticks([])
  fig.tight_layout()
  fig.savefig(out, dpi=60)
  plt.close(fig)
  return out


def _main(fv: flags.FlagValues) -> None:
  print(figure(fv.out))


def main(argv: Sequence[str] | None = None) -> int:
  """Command-line entry point; returns the exit status (see --help)."""
  return cli.run(_main, _define, argv)


if __name__ == '__main__':
  sys.exit(main())

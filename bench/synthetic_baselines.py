"""Linear baselines on synthetic_fer: how hard is the dataset for raw pixels?

Builds (or reuses) a synthetic_fer config, downsamples every image with
INTER_AREA, standardizes pixels with training statistics and reports the
test accuracy of two linear classifiers on them:

  * ridge regression on one-hot targets (closed form, penalty picked on a
    held-out tenth of train),
  * multinomial logistic regression (full-batch Adam with weight decay).

Also reports the build time (when this run builds) and the rendering time
per image. Usage:

  python bench/synthetic_baselines.py [--config 112] [--data_dir DIR]
      [--resize 32 --resize 64] [--color rgb --color gray]
"""

import sys
import time
from collections.abc import Sequence

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import flags

from ferjax import cli
from ferjax.data import build
from tfds_builders.synthetic_fer import render
from tfds_builders.synthetic_fer import synthetic_fer_dataset_builder as sfer


def load(b, split: str, size: int, gray: bool) -> tuple[np.ndarray, np.ndarray]:
  """All images of `split`, resized to size² and flattened, and labels."""
  src = b.as_data_source(split=split)
  xs, ys = [], []
  for i in range(len(src)):
    ex = src[i]
    img = cv2.resize(ex['image'], (size, size), interpolation=cv2.INTER_AREA)
    if gray:
      img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    xs.append(img.reshape(-1))
    ys.append(ex['label'])
  return np.stack(xs).astype(np.float32), np.array(ys)


def ridge(xtr, ytr, xte, yte, num_classes) -> tuple[float, float]:
  """Test accuracy of one-hot ridge regression and the chosen penalty."""
  n_val = len(xtr) // 10
  xfit, yfit, xval, yval = xtr[n_val:], ytr[n_val:], xtr[:n_val], ytr[:n_val]
  eye = np.eye(xtr.shape[1], dtype=np.float64)

  def fit(x, y, lam):
    x = x.astype(np.float64)
    return np.linalg.solve(x.T @ x + lam * eye, x.T @ np.eye(num_classes)[y])

  def acc(w, x, y):
    return float(np.mean(np.argmax(x @ w, 1) == y))

  lams = [1e1, 1e2, 1e3, 1e4, 1e5]
  best = max(lams, key=lambda lam: acc(fit(xfit, yfit, lam), xval, yval))
  return acc(fit(xtr, ytr, best), xte, yte), best


def logistic(xtr, ytr, xte, yte, num_classes, steps=300) -> float:
  """Test accuracy of full-batch multinomial logistic regression."""
  xtr, xte = jnp.asarray(xtr), jnp.asarray(xte)
  params = (jnp.zeros((xtr.shape[1], num_classes)), jnp.zeros(num_classes))
  tx = optax.adamw(1e-2, weight_decay=1e-2)
  opt = tx.init(params)

  def loss(p):
    logits = xtr @ p[0] + p[1]
    return optax.softmax_cross_entropy_with_integer_labels(logits, ytr).mean()

  @jax.jit
  def step(p, o):
    g = jax.grad(loss)(p)
    u, o = tx.update(g, o, p)
    return optax.apply_updates(p, u), o

  for _ in range(steps):
    params, opt = step(params, opt)
  pred = jnp.argmax(xte @ params[0] + params[1], 1)
  return float(jnp.mean(pred == yte))


def render_ms(
  cfg: sfer.SyntheticFerConfig, n: int = 500
) -> tuple[float, float]:
  """Milliseconds per image: rendering alone, and rendering + PNG."""
  start = time.perf_counter()
  for i in range(n):
    render.render_example(cfg.seed, 0, i, i % 7, cfg.image_size)
  mid = time.perf_counter()
  for i in range(n):
    sfer.make_example(cfg, 'train', i)
  end = time.perf_counter()
  return 1e3 * (mid - start) / n, 1e3 * (end - mid) / n


def _define(fv: flags.FlagValues) -> None:
  flags.DEFINE_string('config', '112', 'synthetic_fer config', flag_values=fv)
  flags.DEFINE_string('data_dir', None, 'TFDS data directory', flag_values=fv)
  flags.DEFINE_multi_integer(
    'resize', [32], 'side to downsample to (repeatable)', flag_values=fv
  )
  flags.DEFINE_multi_enum(
    'color', ['rgb'], ['rgb', 'gray'], 'pixels (repeatable)', flag_values=fv
  )


def _main(fv: flags.FlagValues) -> None:
  with cli.usage_errors(ValueError):  # An unknown --config.
    built = build.is_built('synthetic_fer', fv.config, fv.data_dir)
  start = time.perf_counter()
  b = build.build('synthetic_fer', fv.config, fv.data_dir)
  if not built:
    print(f'built in {time.perf_counter() - start:.1f} s: {b.data_dir}')
  cfg = b.builder_config
  alone, with_png = render_ms(cfg)
  print(
    f'render: {alone:.2f} ms/image, with PNG encoding {with_png:.2f} ms/image'
    f' ({cfg.image_size} px)'
  )
  num_classes = b.info.features['label'].num_classes
  for size in fv.resize:
    for color in fv.color:
      gray = color == 'gray'
      xtr, ytr = load(b, 'train', size, gray)
      xte, yte = load(b, 'test', size, gray)
      mu, sd = xtr.mean(0), xtr.std(0) + 1e-3
      xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
      r_acc, lam = ridge(xtr, ytr, xte, yte, num_classes)
      l_acc = logistic(xtr, ytr, xte, yte, num_classes)
      print(
        f'{size}px {color} ({xtr.shape[1]} features, {len(xtr)} train, '
        f'{len(xte)} test): ridge {r_acc:.3f} (lambda {lam:g}), '
        f'logistic {l_acc:.3f}, chance {1 / num_classes:.3f}'
      )


def main(argv: Sequence[str] | None = None) -> int:
  return cli.run(_main, _define, argv)


if __name__ == '__main__':
  sys.exit(main())

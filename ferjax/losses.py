"""Losses as pure functions of the model's output dict and the labels.

Each registered loss has the signature
  loss_fn(outputs, labels, **fields) -> (scalar loss, dict of scalar metrics)
where `outputs` is the dict a ferjax model returns, `labels` are integer
labels (B,) or per-class target distributions (B, C), and `fields` come from
`config.loss` (minus its name). The train step picks one by name
(`bind`); `config.loss.name='auto'` is the loss of the model's spec.
"""

import functools
import inspect
import sys
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

_LOSSES: dict[str, Callable] = {}


def register(name: str):
  def wrap(fn):
    _LOSSES[name] = fn
    return fn

  return wrap


def get_loss(name: str) -> Callable:
  if name not in _LOSSES:
    raise ValueError(
      f'config.loss.name={name!r}; known losses: {", ".join(sorted(_LOSSES))}.'
    )
  return _LOSSES[name]


def bind(name: str, **fields) -> Callable:
  """Loss `name` with its `config.loss` fields: (outputs, labels) -> ...

  Raises:
    ValueError: an unknown loss, or fields it does not take (e.g. MA-Net's
      `beta` left in `config.loss` when another model's loss is used).
  """
  fn = get_loss(name)
  accepted = list(inspect.signature(fn).parameters)[2:]
  unknown = sorted(set(fields) - set(accepted))
  if unknown:
    raise ValueError(
      f'config.loss has {", ".join(unknown)}, which loss {name!r} does not '
      f'take (it takes {", ".join(accepted) or "nothing"}); set '
      'config.loss.name to the loss these fields belong to.'
    )
  return functools.partial(fn, **fields)


def softmax_cross_entropy(
  logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0
) -> jax.Array:
  """Per-example CE with integer labels or targets, smoothed like PyTorch's.

  PyTorch's `label_smoothing=eps` mixes the one-hot (or given) target with
  the uniform distribution over all classes: (1 - eps) * target + eps / C.
  `labels` of shape (B, C) are taken as target distributions.
  """
  num_classes = logits.shape[-1]
  if labels.ndim == logits.ndim:
    targets = labels.astype(jnp.float32)
  else:
    targets = jax.nn.one_hot(labels, num_classes)
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


@register('softmax_xent')
def softmax_xent(outputs, labels, label_smoothing: float = 0.0):
  """Mean cross-entropy of `outputs['logits']`."""
  loss = softmax_cross_entropy(outputs['logits'], labels, label_smoothing)
  return loss.mean(), {}


@register('manet')
def manet(outputs, labels, beta: float = 0.6, label_smoothing: float = 0.0):
  """MA-Net's loss: beta * CE(local head) + (1 - beta) * CE(global head).

  A one-branch model (`branches`) trains on its one head's cross-entropy.

  Args:
    outputs: a dict with 'logits_local' and/or 'logits_global' (the
      'manet' model's output).
    labels: (B,) integer labels.
    beta: weight of the local head (0.6 in MA-Net's `main.py`).
    label_smoothing: as in `softmax_cross_entropy` (0 in MA-Net).

  Returns:
    The weighted mean loss and the heads' mean losses as metrics
    'loss_local' and 'loss_global' (those the model has).
  """
  weights = {'local': beta, 'global': 1.0 - beta}
  metrics = {
    f'loss_{head}': softmax_cross_entropy(
      outputs[f'logits_{head}'], labels, label_smoothing
    ).mean()
    for head in weights
    if f'logits_{head}' in outputs
  }
  if len(metrics) == 1:
    return next(iter(metrics.values())), metrics
  loss = sum(weights[k.removeprefix('loss_')] * v for k, v in metrics.items())
  return loss, metrics


def _hard_labels(labels: jax.Array, num_classes: int) -> jax.Array:
  """Integer labels; soft targets (B, C) give their most likely class."""
  if labels.ndim == 2:
    if labels.shape[-1] != num_classes:
      raise ValueError(
        f'Targets of shape {labels.shape} do not fit {num_classes} classes.'
      )
    return jnp.argmax(labels, -1)
  return labels


def half_sq_distances(features: jax.Array, centers: jax.Array) -> jax.Array:
  """d[b, k] = 0.5 * ||features[b] - centers[k]||^2, in float32."""
  f = features.astype(jnp.float32)
  c = centers.astype(jnp.float32)
  return 0.5 * jnp.sum(jnp.square(f[:, None, :] - c[None, :, :]), axis=-1)


def dsf_loss(
  features: jax.Array,
  centers: jax.Array,
  labels: jax.Array,
  *,
  kind: str = 'lgm',
  alpha: float = 0.1,
  lam: float = 0.01,
  smoothing: float = 0.1,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """MFER's Deep Smooth Feature (DSF) loss, per example.

  What is known: the paper's abstract says DSF "balance[s] the probability
  difference of encoded intra-class features and promote[s] intra-class
  features towards corresponding centers"; the official training script
  (XuJ1E/MFER, train.py) optimises the loss's parameters with the model's;
  its README compares features without a feature loss, with the L-GM loss
  (Wan et al., CVPR 2018) and with DSF, whose code was never released. The
  author's earlier centre loss (XUJ1Er/FAER) is sum ||f - c_y||^2 / 2 / B
  with xavier-initialised centres (docs/design_notes.md).

  What is implemented: `kind='lgm'` (default) is L-GM with identity
  covariances and label smoothing, the reading that fits every clue —
  with d_k = 0.5 ||f - mu_k||^2 the classification term is the smoothed
  cross-entropy of the logits -d_k (1 + alpha [k = y]) (alpha is L-GM's
  margin), and lam * d_y is L-GM's likelihood term, the pull towards the
  class centre. Defaults alpha 0.1 and lam 0.01 are those of the L-GM
  reference implementation; smoothing 0.1 matches MFER's heads.
  `kind='center'` is the plain centre loss d_y (the author's template);
  its centres follow the autograd gradient, not FAER's per-class-count
  normalised update.

  Args:
    features: (B, D) features the centres live in.
    centers: (C, D) learnable class centres (a model parameter).
    labels: (B,) integer labels, or (B, C) targets (their argmax is used).
    kind: 'lgm' or 'center'.
    alpha: L-GM margin (lgm only).
    lam: weight of the centre pull d_y (lgm only).
    smoothing: label smoothing of the classification term (lgm only).

  Returns:
    Per-example loss (B,) and per-example metrics {'dsf_distance': d_y}.
  """
  num_classes = centers.shape[0]
  labels = _hard_labels(labels, num_classes)
  d = half_sq_distances(features, centers)
  d_y = jnp.take_along_axis(d, labels[:, None], axis=1)[:, 0]
  if kind == 'center':
    return d_y, {'dsf_distance': d_y}
  if kind != 'lgm':
    raise ValueError(f"DSF kind={kind!r}; use 'lgm' or 'center'.")
  margin = 1.0 + alpha * jax.nn.one_hot(labels, num_classes)
  classify = softmax_cross_entropy(-d * margin, labels, smoothing)
  return classify + lam * d_y, {'dsf_distance': d_y}


@register('mfer')
def mfer(
  outputs,
  labels,
  label_smoothing: float = 0.1,
  dsf: str = 'lgm',
  dsf_weight: float = 1e-3,
  dsf_alpha: float = 0.1,
  dsf_lambda: float = 0.01,
  dsf_smoothing: float = 0.1,
):
  """MFER's loss: label-smoothed CE on each head plus weighted DSF.

  As MFER's train.py: each head (three Msc heads, or an ablated model's
  one) gets LabelSmoothingCrossEntropy(0.1) and their losses add up; DSF on
  the pooled feature is added times `dsf_weight`, ferjax's choice: train.py
  names 0.001 (`--weight_loss`) but adds DSF unweighted, i.e. times 1.
  With `dsf=''` (or weight 0) the centres are left out.

  Args:
    outputs: the 'mfer' model's dict: 'head_logits' (H, B, C), 'features'
      (B, D) and 'centers' (C, D).
    labels: (B,) integer labels or (B, C) targets.
    label_smoothing: smoothing of the heads' cross-entropy.
    dsf: 'lgm', 'center' or '' (none); see `dsf_loss`.
    dsf_weight: weight of the DSF loss in the total.
    dsf_alpha: L-GM margin.
    dsf_lambda: L-GM centre-pull weight.
    dsf_smoothing: label smoothing inside DSF's classification term.

  Returns:
    The mean loss and metrics 'loss_heads', 'loss_dsf', 'dsf_distance'.
  """
  heads = jax.vmap(
    lambda logits: softmax_cross_entropy(logits, labels, label_smoothing)
  )(outputs['head_logits'])
  loss_heads = heads.sum(0).mean()
  metrics = {'loss_heads': loss_heads}
  if not dsf or not dsf_weight:
    return loss_heads, metrics
  per_example, aux = dsf_loss(
    outputs['features'],
    outputs['centers'],
    labels,
    kind=dsf,
    alpha=dsf_alpha,
    lam=dsf_lambda,
    smoothing=dsf_smoothing,
  )
  loss_dsf = per_example.mean()
  metrics.update(loss_dsf=loss_dsf, dsf_distance=aux['dsf_distance'].mean())
  return loss_heads + dsf_weight * loss_dsf, metrics


# JADFER's Variety loss, which pushes its N spatial paths apart.
#
# What is known. JADFER's spatial branch runs N paths in parallel, "guided by
# a Variety loss to focus on different discriminative regions" (the abstract;
# no code or formula is public). Its template is DAN (Wen et al., 2021,
# yaoing/DAN), whose N attention heads are kept apart by a partition loss.
# In DAN's code (`rafdb.py`, `affectnet.py`, class `PartitionLoss`) it is
#
#     log(1 + N / (var + eps)),
#
# where var is the unbiased (N - 1) variance across the head axis, averaged
# over every other axis (the batch and the 512 channels) into one number, and
# eps is Python's float epsilon, 2.2e-16 (added "to avoid empty var case";
# an earlier revision had none). With one head the loss is 0. What DAN feeds
# it is not the raw head output: `networks/dan.py` stacks the heads' 512-d
# outputs (spatial then channel attention, pooled) to (B, N, 512) and, when
# N > 1, takes log_softmax over the head axis; the same tensor is summed over
# heads for the classifier. DAN weighs the loss 1.
#
# What is implemented, as pure functions of the paths' attention maps
# (B, N, H, W) or embeddings (B, N, C) (any trailing shape):
#
# * `partition_loss`: DAN's formula, with DAN's variance, reduction and eps
#   (the default). The log_softmax over paths belongs to the model, which
#   feeds the same tensor to its interaction module (JADFER's
#   `path_log_softmax`, DAN's choice, is on by default), so the loss takes
#   the paths as the model outputs them.
# * `cosine_loss`: the mean cosine similarity over the N (N - 1) / 2 pairs of
#   flattened paths, averaged over the batch. It compares directions only:
#   unlike the variance, it cannot be lowered by scaling every path up, and
#   it stays in [-1, 1] where the partition loss climbs to log(1 + N / eps),
#   about 37 for N = 4, as the paths collapse onto one.
#
# With N = 1 both return 0: one path has nothing to differ from (DAN returns
# 0 too, and the unbiased variance of one value is undefined), and a constant
# adds no gradient. Both compute in float32 and return a scalar.

# DAN adds Python's float epsilon to the variance.
DAN_EPS = sys.float_info.epsilon
# The norm floor of a cosine, as torch.nn.functional.cosine_similarity.
COSINE_EPS = 1e-8
VARIETY_KINDS = ('partition', 'cosine')


def partition_loss(x: jax.Array, eps: float = DAN_EPS) -> jax.Array:
  """DAN's partition loss log(1 + N / (mean variance across paths + eps)).

  Args:
    x: (B, N, ...) the N paths' maps or embeddings; DAN passes the
      log_softmax over paths of the heads' (B, N, 512) outputs.
    eps: added to the mean variance (DAN: Python's float epsilon).

  Returns:
    A float32 scalar: large when the paths agree, falling towards 0 as they
    spread; 0 for N = 1.
  """
  num_paths = x.shape[1]
  if num_paths < 2:
    return jnp.zeros((), jnp.float32)
  # Unbiased as torch.var's default; one mean over batch and features.
  var = jnp.var(x.astype(jnp.float32), axis=1, ddof=1).mean()
  return jnp.log1p(num_paths / (var + eps))


def cosine_loss(x: jax.Array, eps: float = COSINE_EPS) -> jax.Array:
  """Mean pairwise cosine similarity between the N flattened paths.

  Args:
    x: (B, N, ...) the N paths' maps or embeddings.
    eps: lower bound of each path's norm, so all-zero paths stay finite.

  Returns:
    A float32 scalar in [-1, 1]: 1 when every path points the same way, 0
    when they are orthogonal (e.g. non-negative maps on disjoint regions);
    0 for N = 1.
  """
  batch, num_paths = x.shape[:2]
  if num_paths < 2:
    return jnp.zeros((), jnp.float32)
  flat = x.reshape(batch, num_paths, -1).astype(jnp.float32)
  norm = jnp.linalg.norm(flat, axis=-1, keepdims=True)
  unit = flat / jnp.maximum(norm, eps)
  similarity = jnp.einsum('bnc,bmc->bnm', unit, unit)
  first, second = jnp.triu_indices(num_paths, k=1)
  return similarity[:, first, second].mean()


def variety_loss(
  x: jax.Array, kind: str = 'partition', eps: float | None = None
) -> jax.Array:
  """The Variety loss of the N paths, by name.

  Args:
    x: (B, N, ...) the N paths' maps or embeddings.
    kind: 'partition' (DAN's, the default) or 'cosine'.
    eps: the kind's eps; None takes its default (`DAN_EPS`, `COSINE_EPS`).

  Returns:
    A float32 scalar; 0 for N = 1.
  """
  if kind == 'partition':
    return partition_loss(x, DAN_EPS if eps is None else eps)
  if kind == 'cosine':
    return cosine_loss(x, COSINE_EPS if eps is None else eps)
  raise ValueError(f'Variety loss kind={kind!r}; use one of {VARIETY_KINDS}.')


@register('jadfer')
def jadfer(
  outputs,
  labels,
  label_smoothing: float = 0.0,
  variety: str = 'partition',
  variety_weight: float = 1.0,
  variety_on: str = 'embeddings',
):
  """JADFER's loss: CE + variety_weight * Variety(SB paths).

  The abstract names only "a Variety loss" guiding the N paths apart. The
  default is DAN's: the partition loss, weight 1, on the paths' embeddings
  as the model outputs them, i.e. after its log_softmax over the paths
  (JADFER's `path_log_softmax`), the tensor its SCI reads too (see the
  Variety section above).

  Args:
    outputs: the 'jadfer' model's dict: 'logits', 'sb_embeddings' (B, N, C)
      and 'sb_maps' (B, N, H, W).
    labels: (B,) integer labels or (B, C) targets.
    label_smoothing: smoothing of the cross-entropy.
    variety: 'partition' or 'cosine' (`variety_loss`).
    variety_weight: lambda; 0 leaves the Variety loss out.
    variety_on: 'embeddings' (the model's 'sb_embeddings', log-softmaxed
      over the paths by default, as DAN) or 'maps' (the paths' spatial
      attention maps).

  Returns:
    The loss and metrics 'loss_ce' and 'loss_variety'.
  """
  ce = softmax_cross_entropy(outputs['logits'], labels, label_smoothing).mean()
  if variety_on == 'embeddings':
    paths = outputs['sb_embeddings']
  elif variety_on == 'maps':
    paths = outputs['sb_maps']
  else:
    raise ValueError(
      f"JADFER variety_on={variety_on!r}; use 'embeddings' or 'maps'."
    )
  loss_variety = variety_loss(paths, variety)
  return ce + variety_weight * loss_variety, {
    'loss_ce': ce,
    'loss_variety': loss_variety,
  }


# IAL's intensity-aware loss and GCSA's CAI loss.
#
# What is known. GCSA's abstract names a "cross entropy-auxiliary-intensity
# aware" (CAI) loss for "frames with different perceptual intensities"; no
# formula is public. Its predecessor IAL (muse1998/IAL-for-Facial-Expression-
# Recognition, `main.py`) trains with exactly three such terms:
#
#     loss = CE(z) + 0.05 * CE(aux layer2) + 0 * CE(aux layer3) + 0.1 * IAL
#
# (a comment beside it says "lamda=0.5", the code uses 0.1). Its IAL masks
# the target to find m, the non-target class of the largest logit
# (torch.max, first index on ties), then takes CE over the logits with every
# class but y and m lowered by 9999, i.e. CE restricted to {y, m}:
#
#     IAL = -log(e^{z_y} / (e^{z_y} + e^{z_m})) = softplus(z_m - z_y).
#
# It is large when the target does not beat the most confusable class, the
# case of low-intensity frames, whatever the other classes do. Here it is
# computed as that softplus, exact where the code's -9999 shift is
# approximate, with the same class choice (jnp.argmax takes the first index
# too); the gradient reaches z_y and z_m only.


def intensity_aware_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """IAL's per-example loss: CE over the target and the top non-target.

  Args:
    logits: (B, C) logits, C >= 2.
    labels: (B,) integer labels, or (B, C) targets whose argmax is taken as
      the target class.

  Returns:
    (B,) float32 softplus(z_m - z_y), m = argmax_{j != y} z_j (the first
    such j on ties).
  """
  logits = logits.astype(jnp.float32)
  num_classes = logits.shape[-1]
  if num_classes < 2:
    raise ValueError(
      f'The intensity-aware loss needs at least 2 classes, got {num_classes}.'
    )
  labels = _hard_labels(labels, num_classes)
  target = jax.nn.one_hot(labels, num_classes, dtype=bool)
  # The class index, not the max value, so that ties send the gradient to
  # the one class IAL picks.
  confusing = jnp.argmax(jnp.where(target, -jnp.inf, logits), axis=-1)
  z_y, z_m = (
    jnp.take_along_axis(logits, c[:, None], axis=1)[:, 0]
    for c in (labels, confusing)
  )
  return jax.nn.softplus(z_m - z_y)


@register('cai')
def cai(
  outputs,
  labels,
  aux2_weight: float = 0.05,
  aux3_weight: float = 0.0,
  ial_weight: float = 0.1,
  label_smoothing: float = 0.0,
):
  """GCSA's CAI loss: CE + auxiliary CEs + intensity-aware loss.

  loss = CE(logits) + aux2_weight * CE(aux layer2) + aux3_weight * CE(aux
  layer3) + ial_weight * IAL(logits), with IAL's released weights as the
  defaults (see the section above).

  Args:
    outputs: the 'gcsa' model's dict: 'logits' (B, C) and 'aux_logits'
      (2, B, C), layer2's then layer3's.
    labels: (B,) integer labels or (B, C) targets.
    aux2_weight: weight of layer2's auxiliary CE (0.05 in IAL).
    aux3_weight: weight of layer3's auxiliary CE (0 in IAL).
    ial_weight: weight of the intensity-aware loss (0.1 in IAL's code).
    label_smoothing: smoothing of the three CE terms (0 in IAL); the
      intensity-aware loss is never smoothed.

  Returns:
    The mean loss and metrics 'loss_ce' (mean CE of the logits), 'loss_aux'
    (the weighted auxiliary sum, IAL's `loss_auxiliary`) and 'loss_ial'
    (mean intensity-aware loss, unweighted).
  """
  ce = softmax_cross_entropy(outputs['logits'], labels, label_smoothing).mean()
  aux = jax.vmap(
    lambda logits: softmax_cross_entropy(logits, labels, label_smoothing)
  )(outputs['aux_logits']).mean(axis=1)
  if aux.shape != (2,):
    raise ValueError(
      f"CAI expects 'aux_logits' of shape (2, B, C), layer2's and layer3's; "
      f'got {outputs["aux_logits"].shape}.'
    )
  loss_aux = aux2_weight * aux[0] + aux3_weight * aux[1]
  loss_ial = intensity_aware_loss(outputs['logits'], labels).mean()
  return ce + loss_aux + ial_weight * loss_ial, {
    'loss_ce': ce,
    'loss_aux': loss_aux,
    'loss_ial': loss_ial,
  }

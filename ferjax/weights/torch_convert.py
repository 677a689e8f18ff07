"""Generic PyTorch `state_dict` -> Flax variables conversion.

A Flax port that keeps torch's attribute names converts mechanically:

* `a.0.b.weight` -> module path `('a_0', 'b')` (a list/Sequential index joins
  the name before it, as in Flax's `layers_0`);
* conv weight (O, I, *k) -> `kernel` (*k, I, O); Linear (out, in) -> `kernel`
  (in, out); 1-D weights (LayerNorm) -> `scale`; `bias` -> `bias`;
* a module with running statistics is a BatchNorm: weight/bias -> params
  `scale`/`bias`, running_mean/var -> batch_stats `mean`/`var`;
* any other name is kept as is.

Checkpoints may come from `nn.DataParallel` (`module.` prefixes), carry
`num_batches_tracked` buffers or wrap the weights as `{'state_dict': ...}`;
all three are accepted. Conversion is strict: every Flax leaf must be filled
and every torch key used, unless the caller names torch key prefixes to
ignore, whose Flax leaves then keep a fresh initialisation.

torch is only needed to read checkpoint files (the `torch` extra).
"""

import dataclasses
import functools
import os
import pickle
import re
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

StateDict = dict[str, np.ndarray]
FlaxKey = tuple[str, ...]  # (collection, *module_path, leaf)

_BN_STATS = {'running_mean': 'mean', 'running_var': 'var'}
_MAX_LISTED = 20


def _read_checkpoint(path: str | os.PathLike, weights_only: bool) -> Any:
  """torch.load with a clear error when torch or the file is missing."""
  path = os.fspath(path)
  try:
    import torch  # The optional extra, imported only when a file is read.
  except ImportError as e:
    raise ImportError(
      f'Reading the PyTorch checkpoint {path!r} needs torch, which is the '
      "optional 'torch' extra: pip install 'ferjax[torch]'."
    ) from e
  if not os.path.isfile(path):
    raise FileNotFoundError(f'PyTorch checkpoint {path!r} does not exist.')
  try:
    return torch.load(path, map_location='cpu', weights_only=weights_only)
  except pickle.UnpicklingError as e:
    # weights_only=True refuses pickled Python objects other than tensors and
    # containers: loading them would run arbitrary code from the file.
    raise ValueError(
      f'{path!r} holds pickled Python objects beyond tensors, which '
      'torch.load(weights_only=True) refuses to run. Re-save it as a plain '
      'state_dict (torch.save(model.state_dict(), ...)) from a source you '
      f'trust. torch said: {e}'
    ) from e
  except Exception as e:  # torch raises RuntimeError and others here.
    raise ValueError(
      f'{path!r} is not a readable PyTorch checkpoint (truncated or '
      f'corrupt?): {e}'
    ) from e


def _to_numpy(value: Any) -> np.ndarray:
  if hasattr(value, 'detach'):  # a torch.Tensor
    value = value.detach().cpu()
    if value.is_floating_point():
      value = value.float()  # numpy has no bfloat16
    value = value.numpy()
  return np.asarray(value, dtype=np.float32)


# Keys under which training checkpoints keep their state_dict, in the order
# they are looked for.
_WRAPPERS = ('state_dict', 'model', 'model_state_dict')


def load_state_dict(
  state_dict_or_path: Mapping[str, Any] | str | os.PathLike,
  *,
  weights_only: bool = True,
) -> StateDict:
  """Reads and cleans a PyTorch state_dict.

  Args:
    state_dict_or_path: a `.pth`/`.pth.tar` file, or a mapping of names to
      torch tensors or arrays. A training checkpoint that holds the weights
      under 'state_dict', 'model' (facebookresearch/ConvNeXt) or
      'model_state_dict' is unwrapped.
    weights_only: passed to `torch.load`; keep True unless the file is
      trusted and holds pickled non-tensor objects.

  Returns:
    name -> float32 array, without `module.` prefixes and without
    `num_batches_tracked` buffers.

  Raises:
    ImportError: a path is given and torch is not installed.
    FileNotFoundError: the path does not exist.
    ValueError: the input holds no state_dict.
  """
  source = state_dict_or_path
  if isinstance(source, (str, os.PathLike)):
    source = _read_checkpoint(source, weights_only)
  for wrapper in _WRAPPERS:  # A training checkpoint: take its weights.
    if isinstance(source, Mapping) and isinstance(source.get(wrapper), Mapping):
      source = source[wrapper]
      break
  if not isinstance(source, Mapping):
    raise ValueError(
      f'Expected a state_dict (a mapping of names to tensors), got '
      f'{type(source).__name__}.'
    )
  out = {}
  for key, value in source.items():
    name = key
    while name.startswith('module.'):
      name = name[len('module.') :]
    if name.endswith('num_batches_tracked'):
      continue
    if name in out:
      raise ValueError(f'Key {name!r} occurs twice after removing "module.".')
    out[name] = _to_numpy(value)
  return out


def module_path(torch_module: str) -> tuple[str, ...]:
  """Maps a dotted torch module name to a Flax module path.

  Example: 'layer1.0.downsample.0' -> ('layer1_0', 'downsample_0').

  Args:
    torch_module: module part of a state_dict key (without the leaf name).

  Returns:
    The Flax path; an index joins the name before it with '_'.
  """
  path: list[str] = []
  for part in torch_module.split('.') if torch_module else ():
    if part.isdigit() and path:
      path[-1] = f'{path[-1]}_{part}'
    else:
      path.append(part)
  return tuple(path)


def drop_modules(variables: Mapping[str, Any], prefixes) -> None:
  """Deletes, in place, the modules of torch key `prefixes` (e.g. 'fc.')
  from every collection of `variables`, where present."""
  for prefix in prefixes:
    path = module_path(prefix.rstrip('.'))
    for tree in variables.values():
      for key in path[:-1]:
        tree = tree.get(key, {})
      tree.pop(path[-1], None)


def convert_state_dict(
  state_dict: Mapping[str, np.ndarray],
) -> dict[FlaxKey, tuple[str, np.ndarray]]:
  """Maps every torch entry to its Flax leaf.

  Args:
    state_dict: cleaned state_dict (see `load_state_dict`).

  Returns:
    (collection, *module_path, leaf) -> (torch key, converted array).
  """
  modules = {k.rpartition('.')[0] for k in state_dict}
  is_bn = {
    m for m in modules if any(f'{m}.{s}' in state_dict for s in _BN_STATS)
  }
  out = {}
  for key, value in state_dict.items():
    module, _, leaf = key.rpartition('.')
    path = module_path(module)
    collection = 'params'
    if module in is_bn:
      if leaf in _BN_STATS:
        collection, leaf = 'batch_stats', _BN_STATS[leaf]
      elif leaf == 'weight':
        leaf = 'scale'
    elif leaf == 'weight':
      if value.ndim >= 3:  # conv (O, I, *k) -> (*k, I, O)
        value = value.transpose(*range(2, value.ndim), 1, 0)
      elif value.ndim == 2:  # Linear (out, in) -> (in, out)
        value = value.T
      leaf = 'kernel' if value.ndim >= 2 else 'scale'
    out[(collection, *path, leaf)] = (
      key,
      np.ascontiguousarray(value, np.float32),
    )
  return out


def _prefix_pattern(prefix: str) -> re.Pattern[str]:
  """Matches Flax paths ('a_0/b/kernel') under a torch key prefix ('a.0.')."""
  module, dot, rest = prefix.rpartition('.')
  flax = '/'.join(module_path(module))
  if dot and flax:
    # 'layer4.' covers 'layer4/...' and 'layer4_0/...'.
    flax = re.escape(flax) + r'(_\d+)?/'
  else:
    flax = re.escape(flax)
  return re.compile(flax + re.escape(rest))


def _listed(items: Sequence[str]) -> str:
  shown = ', '.join(items[:_MAX_LISTED])
  more = len(items) - _MAX_LISTED
  return shown + (f' ... ({more} more)' if more > 0 else '')


@dataclasses.dataclass(frozen=True)
class Report:
  """What a conversion into a model with several sources loaded and did not.

  Attributes:
    model: the model's display name, e.g. 'MA-Net'.
    source: which kind of checkpoint was read, e.g. 'resnet18'.
    loaded: torch keys copied into the variables.
    unused: torch keys not loaded (parts the model lacks, heads of another
      class count, keys under `ignore`).
    initialised: top-level Flax modules or params that keep a fresh
      initialisation, wholly or in part.
    heads_reinitialised: the checkpoint's heads had another class count and
      were initialised afresh.
    heads: how the summary names those heads.
  """

  model: str
  source: str
  loaded: tuple[str, ...]
  unused: tuple[str, ...]
  initialised: tuple[str, ...]
  heads_reinitialised: bool
  heads: str = 'the heads'

  def summary(self) -> str:
    """One human-readable paragraph."""
    text = (
      f'{self.model} from a {self.source} checkpoint: loaded '
      f'{len(self.loaded)} tensors; unused {len(self.unused)}: '
      f'{_listed(self.unused) or "none"}; left at init: '
      f'{_listed(self.initialised) or "none"}.'
    )
    if self.heads_reinitialised:
      text += f' {self.heads} had another class count; re-initialised.'
    return text


def fill_variables(
  template: Mapping[str, Any],
  state_dict: Mapping[str, np.ndarray],
  *,
  ignore: Iterable[str] = (),
  init_fn: Callable[[list[FlaxKey]], Mapping[FlaxKey, Any]] | None = None,
) -> dict[str, Any]:
  """Fills a Flax variable template from a cleaned torch state_dict.

  Args:
    template: variables or their `jax.eval_shape` structs, e.g.
      `jax.eval_shape(model.init, rng, images)`.
    state_dict: cleaned state_dict (see `load_state_dict`).
    ignore: torch key prefixes (e.g. 'fc.') that are not loaded; the Flax
      leaves they would fill, or whose path lies under the prefix, take their
      values from `init_fn`.
    init_fn: maps a list of flattened Flax keys (collection, *path, leaf) to
      freshly initialised values; needed when `ignore` leaves Flax leaves
      unfilled.

  Returns:
    Variables with the template's structure as nested dicts of float32
    numpy arrays.

  Raises:
    ValueError: naming every Flax leaf left unfilled, every torch key not
      used, and every shape mismatch.
  """
  ignore = tuple(ignore)
  flat_template = traverse_util.flatten_dict(dict(template))
  converted = convert_state_dict(state_dict)
  patterns = [_prefix_pattern(p) for p in ignore]

  filled: dict[FlaxKey, np.ndarray] = {}
  fresh: set[FlaxKey] = set()
  unexpected, mismatched = [], []
  for flax_key, (torch_key, value) in converted.items():
    if torch_key.startswith(ignore):
      fresh.add(flax_key)
      continue
    if flax_key not in flat_template:
      unexpected.append(torch_key)
      continue
    want = tuple(flat_template[flax_key].shape)
    if value.shape != want:
      mismatched.append(
        f'{torch_key} -> {"/".join(flax_key)}: converted shape '
        f'{value.shape}, model expects {want}'
      )
      continue
    filled[flax_key] = value

  missing = []
  for flax_key in flat_template:
    if flax_key in filled:
      continue
    path = '/'.join(flax_key[1:])
    if flax_key in fresh or any(p.match(path) for p in patterns):
      fresh.add(flax_key)
    else:
      missing.append('/'.join(flax_key))

  problems = []
  if missing:
    problems.append(f'Flax leaves with no torch key: {_listed(missing)}')
  if unexpected:
    problems.append(f'torch keys the model lacks: {_listed(unexpected)}')
  if mismatched:
    problems.append(f'shape mismatches: {_listed(mismatched)}')
  if problems:
    raise ValueError(
      'The PyTorch state_dict does not match the Flax model.\n'
      + '\n'.join(problems)
      + '\nCheck the model fields (depth, width, num_classes, ...); to keep '
      'a layer freshly initialised instead (e.g. a head of another size), '
      "pass ignore=('fc.',) with its torch key prefix."
    )

  fresh = sorted(k for k in fresh if k in flat_template)
  if fresh:
    if init_fn is None:
      raise ValueError(
        'Leaves to initialise afresh but no init_fn: '
        f'{_listed(["/".join(k) for k in fresh])}'
      )
    initial = init_fn(fresh)
    for flax_key in fresh:
      filled[flax_key] = np.asarray(initial[flax_key], np.float32)
  return traverse_util.unflatten_dict(filled)


def check_head(
  state_dict: Mapping[str, np.ndarray],
  head: str,
  num_classes: int,
  ignore: Iterable[str] = (),
) -> None:
  """Raises a clear error if a classifier head has another class count.

  Args:
    state_dict: cleaned state_dict.
    head: torch name of the Linear head, e.g. 'fc'.
    num_classes: the model's class count.
    ignore: torch key prefixes that will not be loaded.

  Raises:
    ValueError: `{head}.weight` is loaded and has another number of rows.
  """
  weight = state_dict.get(f'{head}.weight')
  if weight is None or f'{head}.weight'.startswith(tuple(ignore)):
    return
  if weight.shape[0] != num_classes:
    raise ValueError(
      f"The checkpoint's head {head!r} has {weight.shape[0]} outputs but "
      f'num_classes={num_classes}. Pass num_classes={weight.shape[0]} to '
      f"keep it, or ignore=('{head}.',) to start a fresh {num_classes}-class "
      'head.'
    )


def convert_module(
  module: Any,
  state_dict: Mapping[str, np.ndarray],
  *,
  input_shape: Sequence[int],
  ignore: Iterable[str] = (),
  rng: int | jax.Array = 0,
) -> dict[str, Any]:
  """Converts a state_dict for a Linen module with torch's attribute names.

  Args:
    module: unbound Linen module; `module.init(rng, images)` must work.
    state_dict: cleaned state_dict (see `load_state_dict`).
    input_shape: shape of a dummy input for `init`, e.g. (1, 32, 32, 3).
    ignore: torch key prefixes to leave freshly initialised.
    rng: seed or key of that fresh initialisation.

  Returns:
    {'params': ..., 'batch_stats': ...} as nested dicts of float32 numpy
    arrays.
  """
  key = jax.random.key(rng) if isinstance(rng, int) else rng
  images = jax.ShapeDtypeStruct(tuple(input_shape), jnp.float32)
  template = jax.eval_shape(module.init, key, images)

  def init_fn(keys):
    # Returning only the needed leaves lets XLA drop the other initialisers,
    # whose random number generation dominates compile time on CPU.
    def init(key):
      flat = traverse_util.flatten_dict(
        dict(module.init(key, jnp.zeros(input_shape, jnp.float32)))
      )
      return {k: flat[k] for k in keys}

    return jax.jit(init)(key)

  return fill_variables(template, state_dict, ignore=ignore, init_fn=init_fn)


def reported(convert: Callable[..., tuple[dict, Report]]) -> Callable:
  """A spec converter (`ModelSpec.converter`) from a model's `convert`.

  `convert(state_dict, *, ignore, rng, **options_and_fields)` returns
  (variables, Report) and logs the report; the spec converter returns the
  variables. Its signature is `convert`'s, so `ferjax.weights.
  converter_options` reads the options (e.g. 'source') from it.
  """

  @functools.wraps(convert)
  def from_torch(state_dict, *, spec, ignore, rng, **fields):
    del spec  # `convert` belongs to one model.
    return convert(state_dict, ignore=ignore, rng=rng, **fields)[0]

  return from_torch


def classifier(head: str, input_shape: Sequence[int]) -> Callable:
  """A spec converter for a model whose module names are PyTorch's.

  The torch names map one to one (`convert_module`); a `head` of another
  class count is refused unless `ignore` holds it, which keeps a fresh one.

  Args:
    head: the classifier's torch module name, e.g. 'fc'.
    input_shape: a dummy input the model takes, e.g. (1, 32, 32, 3).
  """

  def from_torch(state_dict, *, spec, ignore, rng, **fields):
    model = spec.build(**fields)
    check_head(state_dict, head, model.num_classes, ignore)
    return convert_module(
      model, state_dict, input_shape=input_shape, ignore=ignore, rng=rng
    )

  return from_torch

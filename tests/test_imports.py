"""The import graph: imports point down the layers, and there are no cycles.

Every `import` in ferjax/, tfds_builders/, configs/, bench/ and run.py,
lazy ones inside functions included, is read with `ast` (nothing is
imported). The layers, lowest first, are the design's:

    leaves (labels, writers, runtime, cli, exported)
    -> layers, losses, data, faces, tfds_builders, optim, sharding, evaluate
    -> models -> weights -> checkpointing, checkpoint_checks, viz
    -> export_common
    -> train, evaluate.trained, evaluate.__main__, measure, compare,
       predict, export, export_onnx, sweep
    -> configs, bench, run.py

`ferjax.evaluate` spans two layers: its metrics, class matching and
evaluator need only data and sharding (the trainer uses them); evaluating a
trained run and the command load checkpoints and models.
"""

import ast
import pathlib

import pytest

from tests.conftest import REPO

ROOTS = ('ferjax', 'tfds_builders', 'configs', 'bench')
# Prefixes of module names, lowest layer first; a module belongs to the
# first layer with a prefix of it (the longest prefix wins within a layer).
LAYERS = (
  (
    'ferjax',  # The package itself (its version).
    'ferjax.labels',
    'ferjax.writers',
    'ferjax.runtime',
    'ferjax.cli',
    'ferjax.exported',
  ),
  (
    'ferjax.layers',
    'ferjax.losses',
    'ferjax.data',
    'ferjax.faces',
    'tfds_builders',
    'ferjax.optim',
    'ferjax.sharding',
    'ferjax.evaluate',
  ),
  ('ferjax.models',),
  ('ferjax.weights',),
  ('ferjax.checkpointing', 'ferjax.checkpoint_checks', 'ferjax.viz'),
  ('ferjax.export_common',),
  (
    'ferjax.train',
    'ferjax.evaluate.trained',
    'ferjax.evaluate.__main__',
    'ferjax.measure',
    'ferjax.compare',
    'ferjax.predict',
    'ferjax.export',
    'ferjax.export_onnx',
    'ferjax.sweep',
  ),
  ('configs', 'bench', 'run'),
)
# What inference may never reach, directly or through anything it imports.
INFERENCE = ('ferjax.predict', 'ferjax.export', 'ferjax.export_onnx')


def _module_name(path: pathlib.Path) -> str:
  parts = list(path.relative_to(REPO).with_suffix('').parts)
  if parts[-1] == '__init__':
    parts.pop()
  return '.'.join(parts)


def _sources() -> dict[str, pathlib.Path]:
  """Module name -> file, for the project's modules (tests excluded)."""
  found = {'run': pathlib.Path(REPO) / 'run.py'}
  for root in ROOTS:
    for path in sorted((pathlib.Path(REPO) / root).rglob('*.py')):
      if path.name.endswith('_test.py') or 'dummy_data' in path.parts:
        continue
      found[_module_name(path)] = path
  return found


def _imports(path: pathlib.Path, name: str, known: set[str]) -> set[str]:
  """The project modules `path` imports, anywhere in the file."""
  package = name if path.name == '__init__.py' else name.rpartition('.')[0]
  targets = set()
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      targets.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ''
      if node.level:
        anchor = package.split('.')[: len(package.split('.')) - node.level + 1]
        base = '.'.join([*anchor, base] if base else anchor)
      for alias in node.names:
        sub = f'{base}.{alias.name}'
        targets.add(sub if sub in known else base)
  return {t for t in targets if t in known and t != name}


@pytest.fixture(scope='module')
def graph() -> dict[str, set[str]]:
  sources = _sources()
  known = set(sources)
  return {name: _imports(path, name, known) for name, path in sources.items()}


def _prefix(name: str) -> tuple[int, str] | None:
  """(layer, prefix) of the longest prefix in `LAYERS` naming `name`."""
  matches = [
    (len(prefix), rank, prefix)
    for rank, prefixes in enumerate(LAYERS)
    for prefix in prefixes
    if name == prefix or name.startswith(prefix + '.')
  ]
  return max(matches)[1:] if matches else None


def _layer(name: str) -> int:
  found = _prefix(name)
  assert found is not None, f'{name} is in no layer of test_imports.LAYERS'
  return found[0]


def _reachable(graph, start: str) -> set[str]:
  seen, todo = set(), [start]
  while todo:
    for target in graph[todo.pop()]:
      if target not in seen:
        seen.add(target)
        todo.append(target)
  return seen


def _cycles(graph) -> list[list[str]]:
  """Strongly connected components of more than one module (Tarjan)."""
  index, low, stack, on_stack, found = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in sorted(graph[v]):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        found.append(sorted(component))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return found


def test_the_graph_is_read(graph):
  """The parser sees real edges (a broken parser would pass every rule)."""
  assert 'ferjax.models.registry' in graph['ferjax.models.manet']
  assert 'ferjax.layers.torch_nn' in graph['ferjax.layers.cbam']
  assert 'ferjax.checkpointing' in graph['ferjax.predict.loading']
  assert 'ferjax.train' in graph['run']


def test_no_import_cycles(graph):
  assert _cycles(graph) == []


def test_cycles_are_found():
  graph = {'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}
  assert _cycles(graph) == [['a', 'b', 'c']]


def test_imports_point_down(graph):
  upward = sorted(
    f'{src} -> {dst}'
    for src, targets in graph.items()
    for dst in targets
    if _layer(dst) > _layer(src)
  )
  assert upward == []


def test_layers_never_import_models(graph):
  bad = sorted(
    f'{src} -> {dst}'
    for src, targets in graph.items()
    if src.startswith('ferjax.layers')
    for dst in targets
    if dst.startswith('ferjax.models')
  )
  assert bad == []


@pytest.mark.parametrize('start', INFERENCE)
def test_inference_never_reaches_the_trainer(graph, start):
  modules = [m for m in graph if m == start or m.startswith(start + '.')]
  assert modules
  for module in modules:
    reached = _reachable(graph, module)
    assert 'ferjax.train' not in reached, module


def test_no_file_in_ferjax_is_over_500_lines():
  long = {
    str(path.relative_to(REPO)): n
    for path in pathlib.Path(REPO, 'ferjax').rglob('*.py')
    if (n := len(path.read_text().splitlines())) > 500
  }
  assert long == {}


def test_every_module_is_in_a_layer(graph):
  """A new module is placed in `LAYERS` on purpose, not by the fallback."""
  unplaced = [name for name in graph if _prefix(name)[1] == 'ferjax' != name]
  assert unplaced == []

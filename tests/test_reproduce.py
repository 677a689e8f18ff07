"""docs/reproduce.md's commands, and the paper configs' model fields.

Every command in the guide's shell blocks is parsed by its own command's
flags; a training or sweep command's config is loaded with its overrides,
checked against its dataset and loss, and its model is built as shapes
(`jax.eval_shape`, once per distinct model), so that a switch with a bad
value fails here. Every field of every paper config's model is in the
config, so that `--config.model.FIELD` reaches it.
"""

import dataclasses
import functools
import importlib
import pathlib
import re
import shlex

import jax
import jax.numpy as jnp
import pytest

from ferjax import cli
from ferjax import losses
from ferjax import models
from ferjax import sweep
from ferjax.data import build
from ferjax.data import datasets
from ferjax.weights import sources
from tests.conftest import REPO

# config_flags loads config files with importlib's deprecated load_module.
pytestmark = pytest.mark.filterwarnings(
  'ignore:the load_module:DeprecationWarning'
)

GUIDE = pathlib.Path(REPO) / 'docs' / 'reproduce.md'
PAPER_CONFIGS = sorted(
  p.stem
  for p in (pathlib.Path(REPO) / 'configs').glob('*_*.py')
  if p.stem.split('_')[0] in ('manet', 'mfer', 'jadfer', 'gcsa')
  and not p.stem.endswith('_common')
)
# The module the first words of a command run, and how it is invoked.
COMMANDS = {
  ('python', 'run.py'): 'run',
  ('python', '-m', 'ferjax.sweep'): 'ferjax.sweep',
  ('python', '-m', 'ferjax.weights'): 'ferjax.weights.__main__',
  ('python', '-m', 'ferjax.data.build'): 'ferjax.data.build',
}


def guide_commands() -> list[list[str]]:
  """Each command of the guide's ```sh blocks, split like a shell would."""
  blocks = re.findall(r'```sh\n(.*?)```', GUIDE.read_text(), re.S)
  lines = '\n'.join(blocks).replace('\\\n', ' ').splitlines()
  return [shlex.split(line) for line in lines if line.strip()]


def _split(words: list[str]) -> tuple[str, list[str]]:
  for prefix, module in COMMANDS.items():
    if tuple(words[: len(prefix)]) == prefix:
      return module, words[len(prefix) :]
  raise AssertionError(f'{shlex.join(words)}: not a ferjax command.')


def _parse(module: str, argv: list[str]):
  """Runs `module`'s flag parsing on argv; returns what its main would get."""
  got = []
  status = cli.run(
    lambda fv, *args: got.append((fv, args)),
    importlib.import_module(module)._define,
    argv,
    doc='',
  )
  assert status == 0, f'{module} {shlex.join(argv)}: exit {status}'
  (parsed,) = got
  return parsed


@functools.cache
def _model_shapes(name: str, fields: tuple, shape: tuple) -> int:
  """Builds a model's variables as shapes; returns its parameter count."""
  model = models.get_model(name, **dict(fields))
  variables = jax.eval_shape(
    model.init, jax.random.key(0), jax.ShapeDtypeStruct(shape, jnp.float32)
  )
  return sum(x.size for x in jax.tree.leaves(variables['params']))


def _freeze(value):
  return tuple(value) if isinstance(value, list) else value


def _check_config(config) -> None:
  """The config's dataset, loss and model fit together."""
  datasets.check_data_config(config.data)
  loss_fields = {k: v for k, v in config.loss.items() if k != 'name'}
  losses.bind(models.loss_name(config), **loss_fields)
  name, fields = models.model_fields(config)
  # One build per distinct model; the class count changes no field's check.
  fields = tuple(
    sorted((k, _freeze(v)) for k, v in fields.items() if k != 'num_classes')
  )
  # A small input: the fields are what is checked, not the input size.
  shape = models.input_shape(config)
  shape = (*shape[:-3], 32, 32, 3)
  assert _model_shapes(name, fields, shape) > 0


def _check(words: list[str]) -> None:
  module, argv = _split(words)
  fv, args = _parse(module, argv)
  if module in ('run', 'ferjax.sweep'):
    _check_config(fv.config)
  if module == 'ferjax.sweep' and fv.folds:
    data = fv.config.data
    folds = sweep.expand_folds(data.name, fv.folds, data.get('config'))
    assert folds == [f'fold{k}' for k in range(1, 6)]
  if module == 'ferjax.weights.__main__':
    assert args == ('convert',)
    assert fv.model in models.list_models()
    assert pathlib.Path(fv.src).name in sources.known_checkpoints()
  if module == 'ferjax.data.build':
    (name,) = args
    configs = list(build.builder_class(name).builder_configs)
    assert fv.config is None or fv.config in configs  # None: the first.
    assert fv.manual_dir


def test_every_command_parses_and_its_config_builds(monkeypatch):
  monkeypatch.chdir(REPO)  # The configs are relative paths.
  commands = guide_commands()
  modules = {_split(words)[0] for words in commands}
  assert modules == set(COMMANDS.values())
  for words in commands:
    _check(words)
  # Every paper config appears, and every ablation switch was built.
  text = ' '.join(shlex.join(words) for words in commands)
  for name in PAPER_CONFIGS:
    assert f'configs/{name}.py' in text, name


def test_the_table_has_a_row_per_reported_result():
  text = GUIDE.read_text()
  section = text[text.index('## The table') : text.index('## Commands')]
  lines = section.splitlines()
  rows = '\n'.join(line for line in lines if line.startswith('| '))
  for paper in ('88.40', '64.53', '60.29', '88.42', '59.40'):  # MA-Net
    assert f'| {paper} |' in rows
  for paper in ('92.08', '67.06', '63.15', '91.09'):  # MFER
    assert f'| {paper} |' in rows
  assert rows.count('| JADFER |') == 4 and rows.count('none published') == 4
  assert rows.count('| GCSA | DFEW fold') == 5


def _model_field_names(name: str) -> set[str]:
  cls = models.get_spec(name).module_class
  fields = {f.name for f in dataclasses.fields(cls)}
  return fields - {'parent', 'name', 'num_classes'}


@pytest.mark.parametrize('name', PAPER_CONFIGS)
def test_every_model_field_is_in_the_config(name):
  """So that `--config.model.FIELD=...` can set each one."""
  arg = 'fold=1' if name == 'gcsa_dfew' else ''
  config = importlib.import_module(f'configs.{name}').get_config(arg)
  given = set(config.model) - {'name'}
  assert given == _model_field_names(config.model.name)


def _first_run_command(doc: str) -> str:
  """The first `python run.py` command of a docstring, on one line."""
  text = re.sub(r'\\\n\s*', '', doc)
  lines = [line for line in text.splitlines() if 'python run.py' in line]
  return ' '.join(lines[0].split())


@pytest.mark.parametrize('name', PAPER_CONFIGS)
def test_config_docstrings_agree_with_the_guide(name):
  """The config's command is the guide's, and so is the paper's number."""
  doc = importlib.import_module(f'configs.{name}').__doc__
  commands = {shlex.join(words) for words in guide_commands()}
  assert _first_run_command(doc) in commands
  text = GUIDE.read_text()
  (row,) = [
    line
    for line in text[: text.index('## Commands')].splitlines()
    if f'`configs/{name}.py' in line
  ][:1]
  paper = row.split(' | ')[3]
  if name.startswith(('manet', 'mfer')):
    assert f'{paper} %' in doc
  elif name.startswith('jadfer'):
    assert paper == 'none published' and 'Paper: none published.' in doc
  else:
    assert paper.startswith('not public') and 'GCSA published no' in doc

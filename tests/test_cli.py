"""ferjax.cli: help, exit codes, one-line errors, NAME=VALUE, fresh flags."""

import asyncio
import contextlib
import gc
import importlib
import logging
import subprocess
import sys
import textwrap
import warnings

import pytest
from absl import app
from absl import flags
from absl.testing import flagsaver
from ml_collections import config_flags

from ferjax import cli
from tests.conftest import REPO

# config_flags loads config files with importlib's deprecated load_module.
pytestmark = pytest.mark.filterwarnings(
  'ignore:the load_module:DeprecationWarning'
)

DOC = """Does a thing.

  python -m thing --workdir DIR
"""


def _define(fv):
  flags.DEFINE_string('workdir', None, 'the run', flag_values=fv, required=True)
  flags.DEFINE_integer('steps', 3, 'how many', flag_values=fv, lower_bound=1)
  flags.DEFINE_bool('verify', True, 'check the result', flag_values=fv)
  flags.DEFINE_multi_string('ignore', [], 'a prefix', flag_values=fv)
  cli.define_fields('field', 'a model field', fv)


def _command(calls, raises=None):
  """A command that records its flags (and raises `raises` if given)."""

  def main(fv):
    calls.append((fv.workdir, fv.steps, fv.verify, fv.ignore, dict(fv.field)))
    if raises is not None:
      raise raises

  return main


def _run(main, *argv, define=_define):
  return cli.run(main, define, list(argv), doc=DOC)


def _one_line(capsys) -> str:
  captured = capsys.readouterr()
  lines = captured.err.splitlines()
  assert len(lines) == 1, captured.err
  assert captured.out == ''
  return lines[0]


@pytest.mark.parametrize('flag', ['--help', '-h', '--helpshort'])
def test_help_prints_the_docstring_and_flags_and_exits_0(flag, capsys):
  calls = []
  assert _run(_command(calls), flag) == 0  # Despite no --workdir.
  out = capsys.readouterr().out
  assert out.startswith('Does a thing.\n\n  python -m thing --workdir DIR')
  assert '--workdir: the run' in out and '--[no]verify' in out
  assert '--field: a model field' in out
  assert '--verbosity' not in out  # absl's own only with --helpfull.
  assert calls == []


def test_helpfull_adds_absl_flags_and_arguments_are_listed(capsys):
  def main(fv, name, *inputs):
    del fv, name, inputs

  assert cli.run(main, None, ['--helpfull'], doc=DOC) == 0
  out = capsys.readouterr().out
  assert 'arguments: NAME [INPUTS...]' in out and '--verbosity' in out


def test_flags_reach_the_command(capsys):
  calls = []
  argv = ['--workdir=/w', '--steps', '5', '--noverify', '--ignore=fc.']
  argv += ['--ignore', 'head.', '--field', 'width=32', '--field=name=abc']
  assert _run(_command(calls), *argv) == 0
  assert calls == [
    ('/w', 5, False, ['fc.', 'head.'], {'width': 32, 'name': 'abc'})
  ]
  assert capsys.readouterr().err == ''


def test_repeated_calls_start_from_the_defaults():
  calls = []
  main = _command(calls)
  _run(main, '--workdir=a', '--steps=9', '--ignore=x', '--field=w=1')
  _run(main, '--workdir=b')
  assert calls[1] == ('b', 3, True, [], {})


@pytest.mark.parametrize(
  'argv, message',
  [
    (['--steps=0'], 'flag --steps=0'),
    (['--steps=many'], 'flag --steps=many'),
    ([], 'flag --workdir=None'),  # Required.
    (['--wrkdir=/w'], "Unknown command line flag 'wrkdir'. Did you mean"),
    (['--workdir=/w', 'extra', 'words'], 'unexpected arguments: extra words'),
    (['--workdir=/w', '--field', 'width'], "expected NAME=VALUE, got 'width'"),
    (['--workdir=/w', '--field==3'], "expected NAME=VALUE, got '=3'"),
    (['--workdir'], 'Missing value for flag --workdir'),
    (['--workdir=/w', '--verbosity=loud'], 'flag --verbosity=loud'),
  ],
)
def test_a_bad_command_line_is_one_line_and_exit_2(argv, message, capsys):
  calls = []
  with flagsaver.flagsaver():
    assert _run(_command(calls), *argv) == 2
  line = _one_line(capsys)
  assert line.startswith('error: ') and line.endswith(' (see --help)')
  assert message in line
  assert calls == []


@pytest.mark.parametrize(
  'error',
  [cli.UsageError('no such run'), app.UsageError('no such run')],
)
def test_usage_errors_from_the_command_exit_2(error, capsys):
  assert _run(_command([], error), '--workdir=/w') == 2
  assert _one_line(capsys) == 'error: no such run (see --help)'


def test_usage_errors_converts_what_names_a_bad_argument(capsys):
  def main(fv):
    with cli.usage_errors():
      raise FileNotFoundError(f'{fv.workdir} is not a run')

  assert _run(main, '--workdir=/w') == 2
  assert _one_line(capsys) == 'error: /w is not a run (see --help)'

  def only_value_errors(fv):
    with cli.usage_errors(KeyError):
      raise ValueError('failed later')

  assert _run(only_value_errors, '--workdir=/w') == 1
  assert _one_line(capsys) == 'error: failed later'


@pytest.mark.parametrize(
  'error, message',
  [
    (ValueError('bad data\nin two lines'), 'bad data in two lines'),
    (FileNotFoundError(2, 'No such file', 'x.jpg'), 'x.jpg'),
    (ImportError('pip install flatbuffers'), 'pip install flatbuffers'),
    (FloatingPointError('loss is nan'), 'loss is nan'),
    (cli.Failure('nothing predicted'), 'nothing predicted'),
  ],
)
def test_expected_failures_are_one_line_and_exit_1(error, message, capsys):
  assert _run(_command([], error), '--workdir=/w') == 1
  line = _one_line(capsys)
  assert line.startswith('error: ') and message in line
  assert 'see --help' not in line


def test_failures_opts_in_other_types(capsys):
  def main(fv):
    del fv
    with cli.failures(RuntimeError):
      raise RuntimeError('the export differs from the model')

  assert _run(main, '--workdir=/w') == 1
  assert _one_line(capsys) == 'error: the export differs from the model'


@pytest.mark.parametrize(
  'argv, env',
  [
    (['--debug'], None),
    ([], '1'),
    (['--debug', '--steps=0'], None),  # A flag error shows its parse too.
  ],
)
def test_debug_shows_the_traceback_above_the_line(
  argv, env, capsys, monkeypatch
):
  if env:
    monkeypatch.setenv(cli.DEBUG_ENV, env)
  error = FileNotFoundError(2, 'No such file', 'x.jpg')
  status = _run(_command([], error), '--workdir=/w', *argv)
  err = capsys.readouterr().err
  assert err.startswith('Traceback (most recent call last):'), err
  assert err.splitlines()[-1].startswith('error: ')
  assert status == (2 if '--steps=0' in argv else 1)


def test_event_loop_noise_is_dropped_and_the_rest_kept(monkeypatch):
  seen = []
  monkeypatch.setattr(sys, 'unraisablehook', seen.append)
  cli.quiet_async_noise()
  cli.quiet_async_noise()  # Installed once.

  class Unraisable:
    def __init__(self, error):
      self.exc_value = error

  sys.unraisablehook(Unraisable(RuntimeError('Event loop is closed')))
  abandoned = Exception('Encountered error while reading array index')
  abandoned.__cause__ = GeneratorExit()
  sys.unraisablehook(Unraisable(abandoned))
  other = Unraisable(RuntimeError('something else'))
  sys.unraisablehook(other)
  assert seen == [other]


def _two_writes_fail() -> None:
  """What orbax's save does when two writes fail: it awaits the first, which
  raises, and leaves the second's failure unread, reported when collected."""

  async def write(i):
    raise ValueError(f'write {i} failed')

  async def save():
    writes = [asyncio.ensure_future(write(i)) for i in range(2)]
    not_started = write(2)  # noqa: F841 (freed unawaited: a RuntimeWarning)
    unread = asyncio.gather(write(3))  # noqa: F841 (its failure never read)
    for done in writes:
      await done

  with contextlib.suppress(ValueError):
    asyncio.run(save())
  gc.collect()


def test_abandoned_futures_are_not_reported(caplog, monkeypatch):
  monkeypatch.setattr(sys, 'unraisablehook', sys.unraisablehook)
  asyncio_logger = logging.getLogger('asyncio')
  monkeypatch.setattr(
    asyncio_logger,
    'filters',
    [f for f in asyncio_logger.filters if type(f).__module__ != cli.__name__],
  )
  with warnings.catch_warnings(record=True) as warned:
    warnings.simplefilter('always')
    _two_writes_fail()
    assert 'Task exception was never retrieved' in caplog.text  # The noise.
    assert '_GatheringFuture exception was never retrieved' in caplog.text
    assert ['never awaited' in str(w.message) for w in warned] == [True]
    caplog.clear()
    del warned[:]
    cli.quiet_async_noise()
    cli.quiet_async_noise()  # Installed once.
    assert len(asyncio_logger.filters) == 1
    _two_writes_fail()
    asyncio_logger.error('Unclosed client session')
    warnings.warn('something else', RuntimeWarning, stacklevel=1)
  assert [r.getMessage() for r in caplog.records] == ['Unclosed client session']
  assert [str(w.message) for w in warned] == ['something else']


@pytest.mark.parametrize('error', [ZeroDivisionError, RuntimeError, KeyError])
def test_bugs_keep_their_traceback(error):
  with pytest.raises(error):
    _run(_command([], error('bug')), '--workdir=/w')


def test_the_commands_status_is_the_exit_status():
  assert _run(lambda fv: 1, '--workdir=/w') == 1
  assert _run(lambda fv: None, '--workdir=/w') == 0


def test_positional_arguments_follow_the_signature(capsys):
  seen = []

  def one(fv, name):
    seen.append((name, fv.config))

  def define(fv):
    flags.DEFINE_string('config', None, 'builder config', flag_values=fv)

  assert cli.run(one, define, ['rafdb', '--config', 'basic']) == 0
  assert cli.run(one, define, ['--config=x', 'sfew']) == 0
  assert seen == [('rafdb', 'basic'), ('sfew', 'x')]
  assert cli.run(one, define, []) == 2
  assert _one_line(capsys) == 'error: missing argument NAME (see --help)'
  assert cli.run(one, define, ['a', 'b']) == 2
  assert _one_line(capsys) == 'error: unexpected arguments: b (see --help)'

  def many(fv, *inputs):
    seen.append(inputs)

  assert cli.run(many, None, ['a.jpg', 'b/', '--', '--odd.jpg']) == 0
  assert seen[-1] == ('a.jpg', 'b/', '--odd.jpg')


def test_two_commands_in_one_process_define_nothing_globally():
  def define_a(fv):
    flags.DEFINE_string('out', 'a', 'out', flag_values=fv)

  def define_b(fv):
    flags.DEFINE_integer('out', 2, 'out', flag_values=fv)

  got = []
  assert cli.run(lambda fv: got.append(fv.out), define_a, []) == 0
  assert cli.run(lambda fv: got.append(fv.out), define_b, ['--out=5']) == 0
  assert got == ['a', 5]
  assert 'out' not in flags.FLAGS
  assert flags.FLAGS.is_parsed()  # grain reads absl flags.


def test_global_absl_flags_are_accepted_but_not_the_commands():
  seen = []
  with flagsaver.flagsaver():
    main = lambda fv: seen.append(sorted(fv.flag_values_dict()))  # noqa: E731
    assert _run(main, '--workdir=/w', '--verbosity', '1') == 0
    assert flags.FLAGS.verbosity == 1
  # --debug is every command's.
  assert seen == [['debug', 'field', 'ignore', 'steps', 'verify', 'workdir']]


COMMANDS = [
  'run',
  'ferjax.sweep',
  'ferjax.compare',
  'ferjax.evaluate.__main__',
  'ferjax.export',
  'ferjax.weights.__main__',
  'ferjax.predict.__main__',
  'ferjax.data.build',
  'ferjax.faces.mtcnn_weights',
  'bench.run',
  'bench.suite',
  'bench.memory',
  'bench.learning',
  'bench.throughput',
  'bench.train_throughput',
  'bench.synthetic_baselines',
  'bench.faces',
  'bench.alignment_figure',
]


@pytest.mark.parametrize('name', COMMANDS)
def test_every_command_defines_nothing_globally_and_has_help(
  name, capsys, monkeypatch
):
  monkeypatch.chdir(REPO)  # bench.throughput's default config is relative.
  before = set(flags.FLAGS)
  module = importlib.import_module(name)
  own = flags.FlagValues()
  module._define(own)
  assert not (set(flags.FLAGS) - before) & set(own)  # Libraries' may come.
  assert module.main(['--help']) == 0
  out = capsys.readouterr().out
  assert out.startswith(module.__doc__.strip().splitlines()[0])
  assert '\nflags:\n  --' in out


def _config_define(fv):
  config_flags.DEFINE_config_file(
    'config', None, 'a config', flag_values=fv, lock_config=True
  )


def test_config_files_and_overrides_in_process(monkeypatch, capsys):
  monkeypatch.chdir(REPO)
  got = []

  def main(fv):
    got.append((fv.config.batch_size, fv.config.model.name))

  argv = ['--config=configs/demo.py:smoke', '--config.batch_size=8']
  assert cli.run(main, _config_define, argv) == 0
  assert cli.run(main, _config_define, argv[:1]) == 0  # Fresh: no override.
  assert got[0][0] == 8 and got[1][0] != 8

  bad = [
    (
      argv[:1] + ['--config.optimizer.no_such_field=3'],
      "--config.optimizer.no_such_field=3: config.optimizer has no field 'no_",
    ),
    (['--config=configs/demo.py:smok'], "Unknown config arg 'smok'"),
    (['--config=configs/no_such.py'], 'configs/no_such.py'),
    (argv[:1] + ['--config.batch_size=big'], 'flag --config.batch_size=big'),
  ]
  for args, message in bad:
    assert cli.run(main, _config_define, args) == 2
    line = _one_line(capsys)
    assert message in line and line.endswith('(see --help)'), line
    assert 'Traceback' not in line
  assert len(got) == 2


def test_parse_field():
  assert cli.parse_field('width=32') == ('width', 32)
  assert cli.parse_field('scale=0.5') == ('scale', 0.5)
  assert cli.parse_field('source=resnet18') == ('source', 'resnet18')
  assert cli.parse_field('size=(3, 4)') == ('size', (3, 4))
  assert cli.parse_field('flag=True') == ('flag', True)
  assert cli.parse_field('flag=true') == ('flag', True)
  assert cli.parse_field('flag=FALSE') == ('flag', False)
  assert cli.parse_field('name=') == ('name', '')
  assert cli.parse_field('expr=a=b') == ('expr', 'a=b')
  assert cli.split_field(' model.remat = true') == ('model.remat', ' true')
  for text in ('width', '=3', ''):
    with pytest.raises(ValueError, match=f'expected NAME=VALUE, got {text!r}'):
      cli.parse_field(text)


def test_describe_keeps_one_line():
  assert cli.describe(KeyError('x')) == 'x'
  assert cli.describe(AttributeError(KeyError("'x'"))) == "'x'"
  assert cli.describe(ValueError()) == 'ValueError'
  embedded = ValueError(
    'flag --config=c.py:x: Error whilst parsing config file:\n\n'
    'Traceback (most recent call last):\n  File "c.py", line 3\n'
    'ValueError: Unknown config arg x'
  )
  assert cli.describe(embedded) == (
    'flag --config=c.py:x: Error whilst parsing config file: '
    'ValueError: Unknown config arg x'
  )


def test_in_a_real_process_bugs_show_a_traceback_and_logging_works(tmp_path):
  """The one subprocess: exit statuses as a shell sees them."""
  script = tmp_path / 'command.py'
  script.write_text(
    textwrap.dedent("""
      '''A test command.'''
      import sys
      from absl import flags
      from absl import logging
      from ferjax import cli

      def define(fv):
        flags.DEFINE_enum('do', 'ok', ['ok', 'fail', 'bug'], 'what',
                          flag_values=fv)

      def main(fv):
        logging.info('logged at INFO')
        if fv.do == 'fail':
          raise OSError('disk full')
        if fv.do == 'bug':
          raise ZeroDivisionError('a bug')

      if __name__ == '__main__':
        sys.exit(cli.run(main, define))
    """)
  )
  results = {}
  for do in ('ok', 'fail', 'bug', 'typo'):
    results[do] = subprocess.run(
      [sys.executable, str(script), f'--do={do}'],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=60,
    )
  assert results['ok'].returncode == 0
  assert 'logged at INFO' in results['ok'].stderr
  assert results['fail'].returncode == 1
  assert results['fail'].stderr.splitlines()[-1] == 'error: disk full'
  assert 'Traceback' not in results['fail'].stderr
  assert results['bug'].returncode == 1
  assert 'Traceback' in results['bug'].stderr
  assert 'ZeroDivisionError: a bug' in results['bug'].stderr
  assert results['typo'].returncode == 2
  assert results['typo'].stderr.count('\n') == 1

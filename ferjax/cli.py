r"""One way to write a ferjax command line, on absl flags.

A command module defines its flags on the `FlagValues` it is given (never on
the global `absl.flags.FLAGS`, so importing it defines nothing and every
call of its `main` starts from the defaults) and hands both functions to
`run`:

  def _define(fv: flags.FlagValues) -> None:
    flags.DEFINE_string('workdir', None, 'the run', flag_values=fv,
                        required=True)
    cli.define_fields('field', 'a model field, e.g. width=32', fv)

  def _main(fv: flags.FlagValues) -> int | None:  # (fv, name), (fv, *inputs)
    with cli.usage_errors():  # A workdir that is not a run is a usage error.
      run = load(fv.workdir)
    ...

  def main(argv: Sequence[str] | None = None) -> int:
    return cli.run(_main, _define, argv)

  if __name__ == '__main__':
    sys.exit(main())

The positional arguments a command takes are the parameters of its function
after the flags: none, named ones (`def _main(fv, name)`: exactly one, shown
as NAME) or `*inputs` (any number). `argv` holds the arguments without the
program name; None reads sys.argv.

The contract of every command:

  --help, -h, --helpshort  print the module's docstring (its usage) and its
                           flags to stdout; exit 0. --helpfull adds absl's
                           own flags (logging: --verbosity, --logtostderr...).
  exit 0                   done (the function returned None or 0).
  exit 2, usage error      a bad flag value, a missing required flag, an
                           unknown flag, unexpected or missing positional
                           arguments, a `UsageError` (or absl's), and
                           whatever `usage_errors` converts: one line
                           `error: <message> (see --help)` on stderr.
  exit 1, failure          an expected failure: ValueError, OSError,
                           ImportError, FloatingPointError (the project's
                           own errors derive from these) or a `Failure`
                           (`failures` converts other types): one line
                           `error: <message>` on stderr. The function may
                           also return 1 itself.
  traceback                anything else is a bug: the exception propagates
                           (exit 1 from the interpreter, with its traceback).
  --debug, FERJAX_DEBUG=1  print the traceback above a usage error's or a
                           failure's line too (exit status unchanged).

RuntimeError is not an expected failure: jax (XlaRuntimeError), orbax and
most libraries raise it for internal faults, whose traceback is needed. A
command that raises RuntimeError for a failure it explains (e.g. export's
verification) opts in with `with cli.failures(RuntimeError):`.

absl's global flags are parsed with the command's own, so its logging flags
and library flags (grain's) keep working and the global FLAGS ends up parsed
(grain reads it, also in its worker processes). As under `absl.app.run`,
logging goes through absl's handler, at INFO unless --verbosity is given.

`parse_field` is the one parser of NAME=VALUE (`--field`, config overrides).

Every command also drops the "Event loop is closed" reports that orbax's and
tensorstore's background threads print after a failed checkpoint read or
write, and the reports of the reads abandoned when one read failed: the error
itself is reported once, by the command.
"""

import ast
import contextlib
import faulthandler
import inspect
import logging as std_logging
import os
import sys
import traceback
import warnings
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence
from typing import Any

from absl import app
from absl import flags
from absl import logging

USAGE = 2
FAILED = 1
HELP_FLAGS = ('--help', '-h', '-?', '--helpshort', '--helpfull')
# What an expected failure raises; anything else keeps its traceback.
EXPECTED = (ValueError, OSError, ImportError, FloatingPointError)
# What parsing the flags raises for a bad value beyond absl's flags.Error:
# config_flags lets a config file's or an override's errors through.
_PARSE_ERRORS = (
  flags.Error,
  ValueError,
  TypeError,
  LookupError,
  AttributeError,
  OSError,
  ImportError,
)
_TRACEBACK = 'Traceback (most recent call last):'
DEBUG_ENV = 'FERJAX_DEBUG'


class UsageError(app.UsageError):
  """The command line is wrong: exit 2 with one line and a --help hint."""


class Failure(Exception):
  """An expected failure the message explains: exit 1 with one line."""


@contextlib.contextmanager
def _reraise_as(kind: type[Exception], types: tuple) -> Iterator[None]:
  try:
    yield
  except types as e:
    raise kind(describe(e)) from e


def usage_errors(*types: type[BaseException]):
  """Turns `types` (default ValueError, OSError) into `UsageError`s.

  For errors that mean the command line names something wrong: no such
  workdir, a bad weights file, an unknown model or dataset.
  """
  return _reraise_as(UsageError, types or (ValueError, OSError))


def failures(*types: type[BaseException]):
  """Turns `types` into `Failure`s: one line and exit 1, no traceback."""
  return _reraise_as(Failure, types)


def describe(error: BaseException) -> str:
  """An exception's message on one line (its type when it has none).

  A message that embeds a traceback (config_flags puts a config file's in
  its error) keeps its first lines and the traceback's last one.
  """
  if isinstance(error, LookupError | AttributeError) and len(error.args) == 1:
    arg = error.args[0]  # KeyError's str() is the repr of its key.
    text = describe(arg) if isinstance(arg, BaseException) else str(arg)
  else:
    text = str(error)
  lines = [line.strip() for line in text.splitlines() if line.strip()]
  if _TRACEBACK in lines:
    lines = lines[: lines.index(_TRACEBACK)] + lines[-1:]
  return ' '.join(lines) or type(error).__name__


def unknown_field(args: Sequence[str], error: BaseException) -> str | None:
  """The override among `args` that names a field `error` says is missing.

  config_flags reports `--config.model.bogus=3` as a bare KeyError or
  AttributeError 'bogus'; this names the flag and where the field is not.
  """
  if not isinstance(error, LookupError | AttributeError) or not error.args:
    return None
  key = str(error.args[0]).strip('\'"')
  for arg in args:
    path = arg.lstrip('-').partition('=')[0].split('.')
    if arg.startswith('--') and key in path[1:]:
      parent = '.'.join(path[: path.index(key, 1)])
      return f'{arg}: {parent} has no field {key!r}'
  return None


def split_field(text: str) -> tuple[str, str]:
  """'NAME=VALUE' -> (NAME, VALUE) as text; ValueError naming `text`."""
  name, sep, value = text.partition('=')
  name = name.strip()
  if not sep or not name:
    raise ValueError(f'expected NAME=VALUE, got {text!r}')
  return name, value


def parse_field(text: str) -> tuple[str, Any]:
  """'NAME=VALUE' -> (NAME, value): a Python literal, else the text.

  'true' and 'false' (any case) are booleans, as `--config.X=` takes them.
  """
  name, value = split_field(text)
  if value.strip().lower() in ('true', 'false'):
    return name, value.strip().lower() == 'true'
  try:
    return name, ast.literal_eval(value)
  except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
    return name, value


class _FieldParser(flags.ArgumentParser):
  def parse(self, argument):
    return parse_field(argument)

  def flag_type(self) -> str:
    return 'NAME=VALUE'


def define_fields(
  name: str, help: str, flag_values: flags.FlagValues
) -> flags.FlagHolder:
  """A repeatable `--<name> NAME=VALUE` flag; its value: [(NAME, value)].

  A value without '=' or without a name is a usage error naming it.
  """
  return flags.DEFINE_multi(
    _FieldParser(),
    flags.ArgumentSerializer(),
    name,
    [],
    help,
    flag_values=flag_values,
  )


def positional(main: Callable) -> tuple[list[str], str | None]:
  """`main`'s argument names after the flags, upper-case, and its *args'."""
  params = list(inspect.signature(main).parameters.values())[1:]
  names = [
    p.name.upper()
    for p in params
    if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
  ]
  rest = [p.name.upper() for p in params if p.kind == p.VAR_POSITIONAL]
  return names, (rest or [None])[0]


def check_positional(main: Callable, args: Sequence[str]) -> None:
  """UsageError unless `args` fit `main`'s positional parameters."""
  names, rest = positional(main)
  if len(args) < len(names):
    raise UsageError(f'missing argument {" ".join(names[len(args) :])}')
  if len(args) > len(names) and rest is None:
    raise UsageError(f'unexpected arguments: {" ".join(args[len(names) :])}')


def wants_help(args: Sequence[str]) -> str | None:
  """The help flag among `args` (before any '--'), or None."""
  for arg in args:
    if arg == '--':
      return None
    if arg in HELP_FLAGS:
      return arg
  return None


def _unique(fv: flags.FlagValues) -> list[flags.Flag]:
  """`fv`'s flags, each once (`fv` maps both a name and a short name)."""
  return list({id(fv[name]): fv[name] for name in fv}.values())


def _flags_text(fv: flags.FlagValues) -> str:
  """absl's rendering of `fv`'s flags as one list, without module headers."""
  flat = flags.FlagValues()  # Registered by no module: rendered flat.
  for flag in _unique(fv):
    flat[flag.name] = flag
  return flat.get_help(prefix='  ', include_special_flags=False)


def help_text(
  doc: str, fv: flags.FlagValues, arguments: Sequence[str], full: bool
) -> str:
  """The docstring, then the flags (and with `full` absl's global ones)."""
  parts = [(doc or '').strip()]
  if arguments:
    parts.append('arguments: ' + ' '.join(arguments))
  parts.append('flags:\n' + (_flags_text(fv) or '  (none)'))
  if full:
    parts.append('absl flags:\n' + _flags_text(flags.FLAGS))
  return '\n\n'.join(p for p in parts if p) + '\n'


@contextlib.contextmanager
def _argv_as(argv: list[str]) -> Iterator[None]:
  """config_flags reads --config.* overrides from sys.argv: give it argv."""
  saved = sys.argv
  sys.argv = argv
  try:
    yield
  finally:
    sys.argv = saved


@contextlib.contextmanager
def _global_flags_in(fv: flags.FlagValues) -> Iterator[None]:
  """Lets `fv` parse absl's global flags (logging, grain's) for a while.

  The Flag objects are shared, so what is parsed lands in the global FLAGS;
  a command's own flag of the same name wins. Afterwards `fv` holds only
  the command's flags again.
  """
  added = []
  for flag in _unique(flags.FLAGS):
    names = [n for n in (flag.name, flag.short_name) if n]
    if not any(n in fv for n in names):
      fv[flag.name] = flag
      added += names
  try:
    yield
  finally:
    for name in added:
      delattr(fv, name)


def parse(fv: flags.FlagValues, argv: list[str]) -> list[str]:
  """Parses argv (program name first) into `fv`; returns the positionals.

  The global FLAGS is parsed with it and ends up marked parsed.
  """
  with _argv_as(argv), _global_flags_in(fv):
    args = fv(argv)[1:]
  flags.FLAGS.validate_all_flags()
  flags.FLAGS.mark_as_parsed()
  for name in fv:
    if fv[name].flag_type() == 'config object':
      # config_flags defers a config file's load error to its first use.
      getattr(fv[name].value, 'lock', None)
  return args


CONFIG_OVERRIDE = '--config.'


def load_config(spec: str, overrides: Sequence[str] = ()):
  """A config file as `--config=spec` loads it, overrides applied, locked.

  For commands that take several config files (`ferjax.compare`): each is
  loaded as run.py loads its one, with the same `--config.FIELD=VALUE`
  overrides.

  Args:
    spec: 'path/to/config.py[:arg]'.
    overrides: '--config.FIELD=VALUE' arguments.

  Raises:
    UsageError: naming `spec` and what is wrong (no such file, a bad arg,
      an override of no field or of the wrong type).
  """
  from ml_collections import config_flags  # noqa: PLC0415  (only here)

  fv = flags.FlagValues()
  argv = ['load_config', f'--config={spec}', *overrides]
  try:
    with _argv_as(argv):
      config_flags.DEFINE_config_file(
        'config', None, spec, flag_values=fv, lock_config=True
      )
      fv(argv)
      return fv.config.lock()
  except (AttributeError, LookupError) as e:  # An override of no field.
    raise UsageError(f'{spec} has no config field {describe(e)}') from e
  except _PARSE_ERRORS as e:
    raise UsageError(f'{spec}: {type(e).__name__}: {describe(e)}') from e


def _init_logging() -> None:
  """What absl.app.run sets up: absl's handler, INFO unless --verbosity."""
  logging.use_absl_handler()
  if flags.FLAGS['verbosity'].using_default_value:
    logging.set_verbosity(logging.INFO)
  if not faulthandler.is_enabled():
    with contextlib.suppress(Exception):  # No real stderr (e.g. in tests).
      faulthandler.enable()


def _debugging(fv: flags.FlagValues | None = None, args=()) -> bool:
  """--debug (parsed into `fv`, else among `args`) or FERJAX_DEBUG set."""
  if os.environ.get(DEBUG_ENV, '') not in ('', '0') or '--debug' in args:
    return True
  return bool(fv is not None and 'debug' in fv and fv['debug'].value)


def _error(message: str, hint: bool, debug: bool = False) -> None:
  if debug:  # The traceback of the exception being handled.
    traceback.print_exc()
  suffix = ' (see --help)' if hint else ''
  print(f'error: {message}{suffix}', file=sys.stderr)


def _is_event_loop_noise(unraisable) -> bool:
  error = unraisable.exc_value
  if isinstance(error, RuntimeError) and str(error) == 'Event loop is closed':
    return True
  # A read coroutine closed unfinished (its peer failed first): orbax wraps
  # the GeneratorExit of the close in an error of its own.
  return isinstance(error, Exception) and isinstance(
    error.__cause__, GeneratorExit
  )


class _AbandonedFutures(std_logging.Filter):
  """Drops asyncio's "exception was never retrieved" reports."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    # '<Task|Future|_GatheringFuture...> exception was never retrieved'.
    first_line = str(record.msg).split('\n', 1)[0]
    return not first_line.endswith(' exception was never retrieved')


def quiet_async_noise() -> None:
  """Drops the after-the-fact reports of orbax's async checkpoint I/O.

  When a checkpoint read or write fails, tensorstore still completes the
  other pending reads or writes and posts them to the event loop orbax has
  already closed; each posting is reported as an unraisable RuntimeError
  with a traceback, hundreds of them for one failure. The read coroutines
  abandoned by the failure are closed when collected, and orbax reports each
  close as an error caused by GeneratorExit. The gather that raised the
  first failed write leaves its sibling writes' failures unread, and asyncio
  logs each one with a traceback whenever the garbage collector frees it,
  often after the command's error line; the writes not yet started are
  coroutines never awaited, each a RuntimeWarning when freed. None of them
  says anything about the failure, which the command reports once. ferjax
  has no coroutines or event loops of its own, so every such report comes
  from orbax. Other unraisable exceptions still reach the previous hook.
  """
  asyncio_logger = std_logging.getLogger('asyncio')
  if not any(isinstance(f, _AbandonedFutures) for f in asyncio_logger.filters):
    asyncio_logger.addFilter(_AbandonedFutures())
  warnings.filterwarnings(
    'ignore', "coroutine '.*' was never awaited", RuntimeWarning
  )
  previous = sys.unraisablehook
  if getattr(previous, 'ferjax_quiet', False):
    return

  def hook(unraisable):
    if not _is_event_loop_noise(unraisable):
      previous(unraisable)

  hook.ferjax_quiet = True
  sys.unraisablehook = hook


def run(
  main: Callable[..., int | None],
  define: Callable[[flags.FlagValues], object] | None = None,
  argv: Sequence[str] | None = None,
  *,
  doc: str | None = None,
) -> int:
  """Runs a command: parse, help, call `main(fv, *positional)`, exit code.

  Args:
    main: the command; its parameters after the flags are its positional
      arguments (see the module docstring). Returns None/0, or an int.
    define: defines the command's flags on the FlagValues it gets.
    argv: the arguments without the program name; None: sys.argv[1:].
    doc: the usage text for --help; None: `main`'s module docstring.

  Returns:
    The exit status: 0, 1 (failed) or 2 (usage error).
  """
  prog = sys.argv[0] if sys.argv else 'ferjax'
  args = list(sys.argv[1:] if argv is None else argv)
  fv = flags.FlagValues()
  with _argv_as([prog, *args]):  # A config flag's default loads at define.
    if define is not None:
      define(fv)
  if 'debug' not in fv:
    flags.DEFINE_bool(
      'debug',
      False,
      f'show the traceback of an error too (or set {DEBUG_ENV}=1)',
      flag_values=fv,
    )
  wanted = wants_help(args)
  if wanted:
    if doc is None:
      doc = getattr(sys.modules.get(main.__module__), '__doc__', '')
    names, rest = positional(main)
    arguments = names + ([f'[{rest}...]'] if rest else [])
    print(help_text(doc, fv, arguments, wanted == '--helpfull'), end='')
    return 0
  quiet_async_noise()
  try:
    given = parse(fv, [prog, *args])
  except _PARSE_ERRORS as e:
    named = unknown_field(args, e)
    message = named or describe(e)
    if not named and not isinstance(e, flags.Error):
      message = f'{type(e).__name__}: {message}'
    _error(message, hint=True, debug=_debugging(args=args))
    return USAGE
  try:
    check_positional(main, given)
    _init_logging()
    status = main(fv, *given)
  except (app.UsageError, flags.Error) as e:
    _error(describe(e), hint=True, debug=_debugging(fv))
    return USAGE
  except (Failure, *EXPECTED) as e:
    _error(describe(e), hint=False, debug=_debugging(fv))
    return FAILED
  return int(status or 0)

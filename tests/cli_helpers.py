"""What a command printed: its one error line among absl's log lines."""

import re

# absl's log lines: I1203 23:25:42.315298 140481186765696 file.py:12] ...
_LOG_LINE = re.compile(r'[IWE]\d{4} \d\d:')


def one_error_line(capsys) -> str:
  """The one line a command printed on stderr besides its log lines."""
  err = capsys.readouterr().err
  lines = [ln for ln in err.splitlines() if not _LOG_LINE.match(ln)]
  assert len(lines) == 1 and lines[0].startswith('error: '), err[-3000:]
  return lines[0]

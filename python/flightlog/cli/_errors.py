"""The CLI's errors: :class:`CLIError` (a message shown as is) and the exit statuses."""

from __future__ import annotations

from .._errors import InputError, RunNotFoundError
from .._render import error_line

__all__ = ["EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "CLIError", "RunNotFoundError", "error_line"]

#: Exit statuses: success, an error (one line on stderr), bad usage (argparse), Ctrl-C.
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class CLIError(InputError):
    """An error whose message is shown as is (one line, exit status 1)."""

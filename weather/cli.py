"""``diffsci weather ...``: subcommands of the weather domain.

Each subcommand lives in its own module named in COMMANDS, whose ``add_parser(subparsers)``
adds its parser and sets ``func``. Keep this file thin: parse here, work in the library.
"""

from __future__ import annotations

import sys
import warnings
from contextlib import contextmanager

from diffsci.core.cli import add_command_group

__all__ = ["COMMANDS", "register", "warning_lines"]

COMMANDS: tuple[str, ...] = ("make_data_cmd", "train_cmd", "forecast_cmd", "evaluate_cmd")


def register(subparsers) -> None:
    add_command_group(subparsers, "weather", "weather models: see 'diffsci weather --help'", "diffsci.weather", COMMANDS)


@contextmanager
def warning_lines():
    """Inside the block, each warning (a unit conversion of the reader, a library's warning) is
    printed as it comes as one line ``warning: MESSAGE`` on stderr, each message once, instead of
    Python's ``FILE:LINE: UserWarning: MESSAGE`` and the source line under it."""
    said: set[str] = set()

    def show(message, category, filename, lineno, file=None, line=None):
        text = str(message)
        if text not in said:
            said.add(text)
            print(f"warning: {text}", file=sys.stderr, flush=True)

    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)  # said once each by ``show``, also in a long-lived process
        warnings.showwarning = show
        yield

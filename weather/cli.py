"""``diffsci weather ...``: subcommands of the weather domain.

Each subcommand lives in its own module named in COMMANDS, whose ``add_parser(subparsers)``
adds its parser and sets ``func``. Keep this file thin: parse here, work in the library.
"""

from __future__ import annotations

from diffsci.core.cli import add_command_group

COMMANDS: tuple[str, ...] = ("make_data_cmd", "train_cmd", "forecast_cmd", "evaluate_cmd")


def register(subparsers) -> None:
    add_command_group(subparsers, "weather", "weather models: see 'diffsci weather --help'", "diffsci.weather", COMMANDS)

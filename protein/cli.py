"""``diffsci protein ...``: subcommands of the protein domain.

Each subcommand lives in its own module named in COMMANDS, whose ``add_parser(subparsers)``
adds its parser and sets ``func``. Keep this file thin: parse here, work in the library.
"""

from __future__ import annotations

from diffsci.core.cli import add_command_group

COMMANDS: tuple[str, ...] = ("prepare_cmd", "evaluate_cmd", "train_cmd", "sample_cmd")


def register(subparsers) -> None:
    add_command_group(subparsers, "protein", "protein models: see 'diffsci protein --help'", "diffsci.protein", COMMANDS)

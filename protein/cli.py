"""``diffsci protein ...``: subcommands of the protein domain.

Each subcommand lives in its own module named in COMMANDS; that module defines
``add_parser(subparsers)`` which adds its parser and sets ``func`` (a function of the
parsed arguments returning an exit code). Keep this file thin: parse here, work in the library.
"""

from __future__ import annotations

import importlib

COMMANDS: tuple[str, ...] = ("prepare", "evaluate", "train_cmd", "sample_cmd")


def register(subparsers) -> None:
    parser = subparsers.add_parser("protein", help="protein models: see 'diffsci protein --help'")
    sub = parser.add_subparsers(dest="protein_command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"diffsci.protein.{name}").add_parser(sub)

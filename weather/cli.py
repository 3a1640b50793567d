"""``diffsci weather ...``: subcommands of the weather domain.

Each subcommand lives in its own module named in COMMANDS; that module defines
``add_parser(subparsers)`` which adds its parser and sets ``func`` (a function of the
parsed arguments returning an exit code). Keep this file thin: parse here, work in the library.
"""

from __future__ import annotations

import importlib

COMMANDS: tuple[str, ...] = ("make_data", "train_cmd", "forecast", "metrics")


def register(subparsers) -> None:
    parser = subparsers.add_parser("weather", help="weather models: see 'diffsci weather --help'")
    sub = parser.add_subparsers(dest="weather_command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"diffsci.weather.{name}").add_parser(sub)

"""The ``diffsci`` command line.

The core knows no domain: the ``protein``, ``weather`` and ``bench`` subcommands are plug-ins
found through the ``diffsci.commands`` entry-point group (see pyproject.toml). Each plug-in is
a function ``register(subparsers)`` that adds its parser and sets ``func`` on it; ``func``
receives the parsed namespace and returns an exit code (or None for 0).

Errors raised as :class:`diffsci.core.errors.DiffsciError` are printed as a single
``error: ...`` line on stderr and give exit status 2, with no traceback.
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import PackageNotFoundError, entry_points, version

from diffsci.core.errors import DiffsciError

__all__ = ["main", "build_parser"]


def _version() -> str:
    try:
        return version("diffsci")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0+unknown"


class _Parser(argparse.ArgumentParser):
    """argparse that exits with status 2 and one line for usage errors (its default)."""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="diffsci",
        description="diffsci: scientific diffusion models for protein backbones and weather.",
    )
    parser.add_argument("--version", action="version", version=f"diffsci {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for ep in sorted(entry_points(group="diffsci.commands"), key=lambda e: e.name):
        ep.load()(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``diffsci`` console command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 0
    try:
        code = func(args)
    except DiffsciError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

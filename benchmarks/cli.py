"""``diffsci bench ...``: benchmarks against baselines, and speed/memory measurements.

Each benchmark lives in its own module named in COMMANDS and defines ``add_parser(subparsers)``.
"""

from __future__ import annotations

import importlib

COMMANDS: tuple[str, ...] = ("protein_bench", "motif_bench", "weather_bench", "speed")


def register(subparsers) -> None:
    parser = subparsers.add_parser("bench", help="benchmarks: see 'diffsci bench --help'")
    sub = parser.add_subparsers(dest="bench_command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"diffsci.benchmarks.{name}").add_parser(sub)

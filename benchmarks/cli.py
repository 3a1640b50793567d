"""``diffsci bench ...``: benchmarks against baselines, merging of benchmark halves, and
speed/memory measurements.

Each benchmark lives in its own module named in COMMANDS and defines ``add_parser(subparsers)``.
"""

from __future__ import annotations

from diffsci.core.cli import add_command_group

COMMANDS: tuple[str, ...] = ("protein_bench", "motif_bench", "modes_bench", "weather_bench", "merge", "compare", "speed", "denoiser")


def register(subparsers) -> None:
    add_command_group(subparsers, "bench", "benchmarks: see 'diffsci bench --help'", "diffsci.benchmarks", COMMANDS)

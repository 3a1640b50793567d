"""``diffsci weather make-data``: write synthetic ERA5-style weather to a netCDF file.

Example::

    diffsci weather make-data --out train.nc --grid 32x64 --hours 2000 --seed 0
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from diffsci.core.errors import DiffsciError
from diffsci.core.utils import atomic_output

__all__ = ["add_parser", "run", "write_netcdf"]


def write_netcdf(ds, out: str | os.PathLike) -> Path:
    """Write ``ds`` to ``out`` (engine netcdf4) atomically: temp file in the same folder, then rename."""
    final = Path(out)
    if not final.parent.exists():
        raise DiffsciError(f"--out {final}: folder {final.parent} does not exist")
    with atomic_output(final) as tmp:
        ds.to_netcdf(tmp, engine="netcdf4")
    return final


def _grid(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise DiffsciError(f"--grid: expected NLATxNLON such as 32x64, got {text!r}")
    return int(parts[0]), int(parts[1])


def run(args: argparse.Namespace) -> int:
    from diffsci.weather.data import check_output_path
    from diffsci.weather.generator import generate

    check_output_path(args.out)
    grid = _grid(args.grid)
    if args.hours <= 0:
        raise DiffsciError(f"--hours must be > 0, got {args.hours}")
    if args.trajectories < 1:
        raise DiffsciError(f"--trajectories must be >= 1, got {args.trajectories}")
    if args.members is not None and args.members < 1:
        raise DiffsciError(f"--members must be >= 1, got {args.members}")
    if args.spinup_hours < 0:
        raise DiffsciError(f"--spinup-hours must be >= 0, got {args.spinup_hours}")
    ds = generate(
        grid,
        hours=args.hours,
        trajectories=args.trajectories,
        seed=args.seed,
        spinup_hours=args.spinup_hours,
        members=args.members,
        start=args.start,
        store_state=not args.no_state,
        progress=not args.quiet,
    )
    path = write_netcdf(ds, args.out)
    if not args.quiet:
        print(f"wrote {path} ({dict(ds.sizes)})")
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "make-data",
        help="generate synthetic ERA5-style weather (shallow water on the sphere) to netCDF",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", required=True, help="output netCDF file")
    p.add_argument("--grid", default="32x64", help="NLATxNLON, nlon = 2 nlat (default 32x64)")
    p.add_argument("--hours", type=int, required=True, help="hourly states per trajectory")
    p.add_argument("--trajectories", type=int, default=1, help="independent runs laid end to end in time")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--members", type=int, default=None, help="perfect-model ensemble members per trajectory")
    p.add_argument("--spinup-hours", type=int, default=480, help="spin-up hours (discarded)")
    p.add_argument("--start", default="2000-01-01T00:00", help="first time stamp")
    p.add_argument("--no-state", action="store_true", help="do not store the simulator state (no restarts)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)

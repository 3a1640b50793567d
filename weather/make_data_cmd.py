"""``diffsci weather make-data``: write synthetic ERA5-style weather to a netCDF file.

Example::

    diffsci weather make-data --out train.nc --grid 32x64 --hours 2000 --seed 0
    diffsci weather make-data --out wb2.nc --grid 121x240 --hours 400 --seed 0   # 1.5 deg, poles

Grids: cell centres (nlon = 2 nlat, nlat even) or WeatherBench 2 equiangular grids with poles
(nlat odd, nlon = 2 (nlat - 1): 33x64, 121x240, 181x360, 721x1440). The simulator runs at most at
64x128 (T42); a finer grid gets its spectral state evaluated there (exact, no interpolation;
recorded in the attributes simulator_grid, output_grid, regridding), and such a simulator spins
up at 32x64 but for its last 48 hours.
"""

from __future__ import annotations

import argparse

__all__ = ["add_parser", "run"]


def run(args: argparse.Namespace) -> int:
    """Check ``--out``, generate (the generator validates the grid and counts) and write the file."""
    from diffsci.core.io import check_output_path, write_netcdf
    from diffsci.weather.generator import GeneratorOutput, generate

    check_output_path(args.out)
    ds = generate(
        args.grid,
        hours=args.hours,
        trajectories=args.trajectories,
        seed=args.seed,
        spinup_hours=args.spinup_hours,
        output=GeneratorOutput(members=args.members, start=args.start, store_state=not args.no_state,
                               step_hours=args.step_hours),
        progress=not args.quiet,
    )
    path = write_netcdf(ds, args.out, must_have_folder=True)
    if not args.quiet:
        print(f"wrote {path} ({dict(ds.sizes)})")
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("make-data", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                              help="generate synthetic ERA5-style weather (shallow water on the sphere) to netCDF")
    p.add_argument("--out", required=True, help="output netCDF file")
    p.add_argument("--grid", default="32x64", help="NLATxNLON: nlon = 2 nlat (cell centres) or, nlat odd, "
                                                      "2 (nlat - 1) (WB2 with poles, e.g. 121x240) (default 32x64)")
    p.add_argument("--hours", type=int, required=True, help="states per trajectory (hourly unless --step-hours)")
    p.add_argument("--step-hours", type=int, default=1,
                   help="hours between the states written (default 1; 6: 6-hourly data, a 6 h model step)")
    p.add_argument("--trajectories", type=int, default=1, help="independent runs laid end to end in time")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--members", type=int, default=None, help="perfect-model ensemble members per trajectory")
    p.add_argument("--spinup-hours", type=int, default=480, help="spin-up hours (discarded)")
    p.add_argument("--start", default="2000-01-01T00:00", help="first time stamp")
    p.add_argument("--no-state", action="store_true", help="do not store the simulator state (no restarts)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)

"""``diffsci weather train``: train the graph diffusion model (or, ``--deterministic``, the MSE baseline).

The command only parses: a config file's ``model``/``data``/``train`` tables and the command
line become a :class:`diffsci.core.train.Recipe` of kind ``weather-graph-diffusion`` (or
``weather-graph-deterministic``), which :func:`diffsci.core.train.fit` runs through the kind's
training task (:func:`diffsci.weather.diffusion.make_task`).
"""

from __future__ import annotations

from diffsci.core.cli import add_train_arguments, run_train_command
from diffsci.weather.cli import warning_lines

__all__ = ["add_parser"]


def _run(args) -> int:
    from diffsci.core.io import check_output_path
    from diffsci.weather.diffusion import KIND, KIND_DETERMINISTIC

    check_output_path(args.out, inputs=[args.data], folder=True)  # before any work
    with warning_lines():  # the reader's unit conversions, xarray's warnings: one line each
        return run_train_command(KIND_DETERMINISTIC if args.deterministic else KIND, args,
                                 data={"path": args.data, "variables": args.variables})


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("train", help="train the weather graph diffusion model",
                              description="Train the graph diffusion model on ERA5-style data (netCDF or zarr: cfgrib, CDS, "
                                          "WeatherBench 2 or NCEP layouts). One model step is the data's time step "
                                          "(recorded in the checkpoint). Checkpoints go to OUT (latest.pt); "
                                          "--resume continues.")
    p.add_argument("--data", required=True, help="training data: netCDF file or zarr store, regular time steps")
    p.add_argument("--variables", nargs="+", help="variables to model (default: all in the file)")
    p.add_argument("--deterministic", action="store_true", help="train the MSE (GraphCast-style) baseline instead")
    add_train_arguments(p, default_steps=2000)
    p.set_defaults(func=_run)

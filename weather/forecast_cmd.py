"""``diffsci weather forecast``: ensemble forecast with a weather checkpoint (WB2 netCDF).

The forecast is streamed to ``--out`` lead by lead (:func:`diffsci.weather.forecast.forecast_to_file`):
memory holds one ``--chunk`` of members x a few states, whatever ``--lead-hours`` and ``--members``.
Under ``torchrun --no-python diffsci weather forecast ...`` the members and init times are
spread over the ranks; rank 0 writes the one output file (bitwise that of one process).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

from diffsci.core.cli import THREADS_HELP, default_threads
from diffsci.core.errors import DiffsciError

__all__ = ["add_parser", "CheckpointHelpFormatter", "STEPS_HELP", "default_threads"]

#: what ``--steps`` means in the weather commands (in ``protein sample`` it counts ODE steps)
STEPS_HELP = ("noise levels per forecast step: the diffusion sampler's grid of noise levels, run once for every "
              "model time step of the rollout (so 2 levels = 2 network evaluations per step with euler); not the "
              "number of forecast steps, which is --lead-hours over the checkpoint's time step")


def shipped_sampling() -> str:
    """The shipped checkpoint's own sampling settings, read from it: ``"euler, 2 noise levels"``."""
    from diffsci.weather.forecast import load_forecaster, sampling_settings

    try:
        sampler, steps, churn = sampling_settings(load_forecaster().config)
    except DiffsciError:  # no shipped checkpoint in this install: say where the settings come from
        return "those recorded in it"
    return f"{sampler}, {steps} noise levels" + (f", churn {churn:g}" if churn else "")


class CheckpointHelpFormatter(argparse.HelpFormatter):
    """Help texts with ``{shipped_sampling}`` replaced, when the help is printed (never while
    parsing), by the shipped checkpoint's own settings (:func:`shipped_sampling`), so the help
    says what the checkpoint records, whichever checkpoint is shipped."""

    def _get_help_string(self, action):
        text = super()._get_help_string(action)
        if text and "{shipped_sampling}" in text:
            text = text.replace("{shipped_sampling}", shipped_sampling())
        return text


def _positive_int(text: str, flag: str) -> int:
    """An option's text as an integer >= 1, else a one-line :class:`DiffsciError`."""
    from diffsci.core.io import check_int

    try:
        value = int(text)
    except ValueError:
        raise DiffsciError(f"{flag} must be an integer >= 1, got {text!r}") from None
    return check_int(value, flag)


def _run(args) -> int:
    import torch
    import xarray as xr

    from diffsci.core.io import check_int, check_output_path
    from diffsci.weather.forecast import ForecastSettings, forecast_to_file, load_forecaster

    torch.set_num_threads(default_threads() if args.threads is None else check_int(args.threads, "--threads"))
    chunk = None if args.chunk is None else _positive_int(args.chunk, "--chunk")
    settings = ForecastSettings(lead_hours=args.lead_hours, members=args.members, seed=args.seed,
                                init_times=args.init_time, sampler=args.sampler, steps=args.steps, churn=args.churn,
                                boundary=args.boundary, boundary_width=args.boundary_width, chunk=chunk)
    check_output_path(args.out, inputs=[args.init, args.checkpoint, args.boundary])  # before any work
    forecaster = load_forecaster(args.checkpoint, device=args.device)  # the one place the device is resolved
    t0 = time.time()
    with warnings.catch_warnings():  # unit conversions: printed once below as a note
        warnings.simplefilter("ignore", UserWarning)
        out = forecast_to_file(forecaster, args.init, args.out, settings, progress=not args.quiet)
    if out is None:  # a torchrun rank other than 0: its members went to rank 0, which writes the file
        return 0
    with xr.open_dataset(out) as fds:  # the layout and attributes only; no values are read
        sizes, notes = dict(fds.sizes), fds.attrs.get("input_notes")
    if notes:
        print(f"note: {args.init}: {notes}", file=sys.stderr)
    print(f"wrote {args.out}: {sizes['time']} init time(s) x {args.lead_hours} h "
          f"({sizes['prediction_timedelta']} steps) x {args.members} members "
          f"in {time.time() - t0:.1f} s")
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("forecast", help="ensemble forecast with the graph diffusion model",
                              description="Autoregressive ensemble forecast in WeatherBench 2 layout (netCDF).",
                              formatter_class=CheckpointHelpFormatter)
    p.add_argument("--checkpoint", help="model checkpoint (default: the shipped one)")
    p.add_argument("--init", required=True,
                   help="initial conditions: netCDF/zarr (cfgrib, CDS, WB2 or NCEP layout) with at least two states "
                        "one checkpoint time step apart")
    p.add_argument("--init-time", action="append", help="ISO 8601 init time (repeatable); default: the last time")
    p.add_argument("--lead-hours", type=int, required=True, help="a multiple of the checkpoint's time step")
    p.add_argument("--members", type=int, required=True)
    p.add_argument("--out", required=True, help="output netCDF (not an input; its folder must exist)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sampler", default=None,
                   help="sampler name (default: the checkpoint's own, recorded with it; the shipped checkpoint's: "
                        "{shipped_sampling})")
    p.add_argument("--steps", type=int, default=None,
                   help=STEPS_HELP + " (default: the checkpoint's with its own sampler; else 5, 20 for "
                        "euler_maruyama, whose first-order SDE steps diverge on a coarser grid)")
    p.add_argument("--churn", type=float, default=None,
                   help="EDM stochastic churn for the heun/euler samplers (default: the checkpoint's with its own "
                        "sampler, else 2.5; 0: deterministic ODE steps)")
    p.add_argument("--boundary",
                   help="regional models: lateral boundary values (any layout --init takes, the checkpoint's grid, "
                        "every valid time of the forecast); the boundary band is replaced by them after every step")
    p.add_argument("--boundary-width", type=int, default=None,
                   help="boundary band in grid cells at each open edge (default: the checkpoint's, at least that)")
    p.add_argument("--device", default="cpu",
                   help="cpu (default: the recorded, bit-reproducible results), cuda[:N], or auto (CUDA when "
                        "present); members are reproducible on one device, not across devices")
    p.add_argument("--chunk", default=None,
                   help="members rolled out together: memory holds one chunk of members x a few states, written "
                        "to --out lead by lead (default: as many as a quarter of the free memory holds, at most "
                        "--members); members are the same bit for bit whatever the chunk (the network always "
                        "sees groups of 4 member slots, padded: a multiple of 4 wastes no evaluation)")
    p.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_run)

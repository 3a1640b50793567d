"""Peak memory of a weather forecast against its number of leads (issue 31).

An untrained small model (latent 16, one processor layer, weights perturbed by N(0, 0.02^2))
built for a WeatherBench 2 grid (poles included, 4 channels z, u, v, vo, one-hour step) rolls
out ``--members`` members for ``--leads`` steps from random initial conditions and writes the
forecast to ``--out``: streamed lead by lead (``forecast_to_file``, where the library has it), or
built in memory and then written (``--in-memory``, the only path before streaming). Prints one
JSON line; run it under ``/usr/bin/time -v`` for the maximum resident set size::

    /usr/bin/time -v python benchmarks/forecast_memory.py --grid 121x240 --members 8 --leads 24 --out /tmp/fc.nc

The sampler is euler over ``--steps`` noise levels per model step (default 2, the setting of the
tables in docs/benchmarks.md). The peak memory does not depend on the number of noise levels
(each network call's activations are freed before the next; the states kept are the same), but
the time is proportional to it, so ``--steps 1`` halves the network calls of a long 0.25-degree
run without changing what is measured. The init file is written beside ``--out``
(``<out>.init.nc``).

It imports nothing from ``diffsci.benchmarks``, so the same file measures an older checkout
(``PYTHONPATH`` pointing at it) too.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from diffsci.weather import forecast as F
from diffsci.weather.data import NormStats
from diffsci.weather.diffusion import KIND, WeatherModelConfig, build_denoiser

CHANNELS = ("z", "u", "v", "vo")
UNITS = {"z": "m**2 s**-2", "u": "m s**-1", "v": "m s**-1", "vo": "s**-1"}


def _forecaster(h: int, w: int, steps: int = 2) -> F.Forecaster:
    lat = tuple(np.linspace(-90.0, 90.0, h).tolist())
    lon = tuple((np.arange(w) * (360.0 / w)).tolist())
    cfg = WeatherModelConfig(latent=16, layers=1, refinements=3, channels=CHANNELS, variables=CHANNELS, latitude=lat,
                             longitude=lon, time_step_hours=1.0, sampler="euler", sampler_steps=steps)
    torch.manual_seed(0)
    model = build_denoiser(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    stats = NormStats(CHANNELS, (0.0,) * 4, (1.0,) * 4, (0.1,) * 4)
    return F.Forecaster(KIND, cfg, stats, model, "untrained")


def _init_file(cfg: WeatherModelConfig, path: Path) -> Path:
    h, w = cfg.grid_shape
    rng = np.random.default_rng(0)
    times = np.datetime64("2000-01-01T00", "ns") + np.arange(2) * np.timedelta64(1, "h")
    data = {v: (("time", "latitude", "longitude"), rng.normal(size=(2, h, w)).astype(np.float32), {"units": UNITS[v]})
            for v in CHANNELS}
    xr.Dataset(data, coords={"time": times, "latitude": np.array(cfg.latitude), "longitude": np.array(cfg.longitude)}
               ).to_netcdf(path, engine="netcdf4")
    return path


def _grid(parser: argparse.ArgumentParser, text: str) -> tuple[int, int]:
    """``NLATxNLON`` as two ints; otherwise the parser's one-line usage error (exit 2)."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 1 for p in parts):
        parser.error(f"--grid must be NLATxNLON (e.g. 121x240), got {text!r}")
    return int(parts[0]), int(parts[1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--grid", default="121x240", help="NLATxNLON")
    p.add_argument("--members", type=int, default=8)
    p.add_argument("--leads", type=int, default=24)
    p.add_argument("--chunk", type=int, default=None)
    p.add_argument("--steps", type=int, default=2, help="euler noise levels per model step (time, not memory)")
    p.add_argument("--out", required=True)
    p.add_argument("--in-memory", action="store_true", help="forecast() in memory, then write_forecast")
    args = p.parse_args(argv)
    h, w = _grid(p, args.grid)
    torch.set_num_threads(1)
    forecaster = _forecaster(h, w, args.steps)
    init = _init_file(forecaster.config, Path(args.out).with_suffix(".init.nc"))
    extra = {"chunk": args.chunk} if args.chunk else {}
    settings = F.ForecastSettings(lead_hours=args.leads, members=args.members, seed=0, **extra)
    t0 = time.perf_counter()
    streamed = hasattr(F, "forecast_to_file") and not args.in_memory
    if streamed:
        F.forecast_to_file(forecaster, init, args.out, settings, progress=False)
    else:
        F.write_forecast(F.forecast(forecaster, init, settings, progress=False), args.out)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"grid": [h, w], "members": args.members, "leads": args.leads, "steps": args.steps,
                      "streamed": streamed,
                      "seconds": round(seconds, 1), "peak_rss_mb": round(peak, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

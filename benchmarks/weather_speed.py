"""Wall time of a weather ensemble forecast (``python -m diffsci.benchmarks.weather_speed``).

The reference job: a 16-member, 24-step (hourly, 24 h) forecast at 32x64
with the shipped checkpoint and the forecast's default sampler; target <= 60 s on 2 CPU cores.
Initial conditions come from the built-in generator (seed 99, never used for training).
Also reports the time of one denoiser evaluation of a member chunk, and the peak RSS;
``--simulator`` also times the simulator's perfect-model ensemble of the same size and length
from the same initial state (``diffsci bench speed --weather`` does).

Example::

    python -m diffsci.benchmarks.weather_speed --members 16 --lead-hours 24 --threads 1
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from diffsci.benchmarks.measure import peak_memory, reset_peak_memory
from diffsci.core.io import write_json
from diffsci.weather.forecast_cmd import STEPS_HELP

__all__ = ["weather_forecast_speed", "main"]


def weather_forecast_speed(*, checkpoint=None, members: int = 16, lead_hours: int = 24, steps: int | None = None,
                           sampler: str | None = None, churn: float | None = None, threads: int | None = None,
                           device=None, simulator: bool = False) -> dict:
    """Time one forecast from the last time of a generated file; ``None`` options take the
    forecast's defaults. ``device``: where the network runs (None: CPU).

    ``simulator``: also time :func:`diffsci.weather.generator.perfect_model_ensemble` (the
    simulator restarted from the same state, ``members`` x ``lead_hours``; it runs on one
    thread) and add ``simulator_seconds``, ``emulator_to_simulator`` (seconds / simulator
    seconds) and ``simulator_peak_rss_mb``. Returns a JSON-able dict (memory: MiB,
    :func:`diffsci.benchmarks.measure.peak_memory`)."""
    from diffsci.weather.forecast import CHUNK, ForecastSettings, forecast, load_forecaster, sampling_settings
    from diffsci.weather.predictor import WeatherCond
    from diffsci.weather.generator import generate, perfect_model_ensemble

    if threads:
        torch.set_num_threads(threads)
    forecaster = load_forecaster(checkpoint, device=device or "cpu")
    sampler, steps, churn = sampling_settings(forecaster.config, sampler, steps, churn)
    opts = {"steps": steps, "sampler": sampler, "churn": churn}
    dev = forecaster.device
    ds = generate(grid=forecaster.config.grid_shape, hours=4, trajectories=1, seed=99, spinup_hours=24, progress=False)
    # one denoiser evaluation of a member chunk (warm-up first)
    c, (h, w) = len(forecaster.config.channels), forecaster.config.grid_shape
    cond = WeatherCond(torch.randn(CHUNK, 2 * c, h, w, device=dev), torch.randn(CHUNK, 2, device=dev))
    x, t = torch.randn(CHUNK, c, h, w, device=dev), torch.full((CHUNK,), 0.5, device=dev)
    with torch.inference_mode():
        forecaster.model(x, t, cond)
        t0 = time.perf_counter()
        for _ in range(5):
            forecaster.model(x, t, cond)
        eval_ms = (time.perf_counter() - t0) / 5 * 1000
    reset_peak_memory(dev)
    t0 = time.perf_counter()
    forecast(forecaster, ds, ForecastSettings(lead_hours=lead_hours, members=members, **opts), progress=False)
    seconds = time.perf_counter() - t0
    out = {"grid": list(forecaster.config.grid_shape), "members": members, "lead_hours": lead_hours, **opts,
           "seconds": round(seconds, 3), "target_seconds": 60, "chunk": CHUNK, "device": str(dev),
           "denoiser_eval_ms_per_chunk": round(eval_ms, 1), "threads": torch.get_num_threads(), **peak_memory(dev)}
    if simulator:
        reset_peak_memory()
        t0 = time.perf_counter()
        perfect_model_ensemble(ds, len(ds.time) - 1, lead_hours, members)
        sim_seconds = time.perf_counter() - t0
        out.update(simulator_seconds=round(sim_seconds, 3), emulator_to_simulator=round(seconds / sim_seconds, 3),
                   simulator_peak_rss_mb=peak_memory()["peak_rss_mb"])
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m diffsci.benchmarks.weather_speed", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", help="default: the shipped checkpoint")
    p.add_argument("--members", type=int, default=16)
    p.add_argument("--lead-hours", type=int, default=24)
    p.add_argument("--steps", type=int, help=STEPS_HELP + " (default: the forecast default)")
    p.add_argument("--sampler", help="default: the forecast default")
    p.add_argument("--churn", type=float)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as 'diffsci weather forecast')")
    p.add_argument("--device", help="where the network runs (default cpu)")
    p.add_argument("--simulator", action="store_true", help="also time the simulator's perfect-model ensemble")
    p.add_argument("--out", help="also write the result as JSON here")
    args = p.parse_args(argv)
    res = weather_forecast_speed(checkpoint=args.checkpoint, members=args.members, lead_hours=args.lead_hours,
                                 steps=args.steps, sampler=args.sampler, churn=args.churn, threads=args.threads,
                                 device=args.device, simulator=args.simulator)
    res["command"] = "python -m diffsci.benchmarks.weather_speed " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.out:
        write_json(args.out, res)
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

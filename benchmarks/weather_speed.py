"""Wall time of a weather ensemble forecast (``python -m diffsci.benchmarks.weather_speed``).

The reference job: a 16-member, 24-step (hourly, 24 h) forecast at 32x64
with the shipped checkpoint and the forecast's default sampler; target <= 60 s on 2 CPU cores.
Initial conditions come from the built-in generator (seed 99, never used for training).
Also reports the time of one denoiser evaluation of a member chunk, and the peak RSS.

Example::

    python -m diffsci.benchmarks.weather_speed --members 16 --lead-hours 24 --threads 1
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import torch

from diffsci.core.io import write_json

__all__ = ["weather_forecast_speed", "main"]


def weather_forecast_speed(*, checkpoint=None, members: int = 16, lead_hours: int = 24, steps: int | None = None,
                           sampler: str | None = None, churn: float | None = None, threads: int | None = None) -> dict:
    """Time one forecast; ``None`` options take the forecast's defaults. Returns a JSON-able dict."""
    import inspect

    from diffsci.weather.forecast import CHUNK, forecast, load_forecaster
    from diffsci.weather.predictor import WeatherCond
    from diffsci.weather.generator import generate

    if threads:
        torch.set_num_threads(threads)
    defaults = {k: v.default for k, v in inspect.signature(forecast).parameters.items()
                if v.default is not inspect.Parameter.empty}
    opts = {"steps": steps if steps is not None else defaults["steps"],
            "sampler": sampler or defaults["sampler"],
            "churn": churn if churn is not None else defaults["churn"]}
    forecaster = load_forecaster(checkpoint)
    ds = generate(grid=forecaster.config.grid_shape, hours=4, trajectories=1, seed=99, spinup_hours=24, progress=False)
    # one denoiser evaluation of a member chunk (warm-up first)
    c, (h, w) = len(forecaster.config.channels), forecaster.config.grid_shape
    cond = WeatherCond(torch.randn(CHUNK, 2 * c, h, w), torch.randn(CHUNK, 2))
    x, t = torch.randn(CHUNK, c, h, w), torch.full((CHUNK,), 0.5)
    with torch.inference_mode():
        forecaster.model(x, t, cond)
        t0 = time.perf_counter()
        for _ in range(5):
            forecaster.model(x, t, cond)
        eval_ms = (time.perf_counter() - t0) / 5 * 1000
    t0 = time.perf_counter()
    forecast(forecaster, ds, lead_hours=lead_hours, members=members, progress=False, **opts)
    seconds = time.perf_counter() - t0
    return {"grid": list(forecaster.config.grid_shape), "members": members, "lead_hours": lead_hours, **opts,
            "seconds": round(seconds, 3), "target_seconds": 60, "chunk": CHUNK,
            "denoiser_eval_ms_per_chunk": round(eval_ms, 1), "threads": torch.get_num_threads(),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m diffsci.benchmarks.weather_speed", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", help="default: the shipped checkpoint")
    p.add_argument("--members", type=int, default=16)
    p.add_argument("--lead-hours", type=int, default=24)
    p.add_argument("--steps", type=int, help="noise levels (default: the forecast default)")
    p.add_argument("--sampler", help="default: the forecast default")
    p.add_argument("--churn", type=float)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as 'diffsci weather forecast')")
    p.add_argument("--out", help="also write the result as JSON here")
    args = p.parse_args(argv)
    res = weather_forecast_speed(checkpoint=args.checkpoint, members=args.members, lead_hours=args.lead_hours,
                                 steps=args.steps, sampler=args.sampler, churn=args.churn, threads=args.threads)
    res["command"] = "python -m diffsci.benchmarks.weather_speed " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.out:
        write_json(args.out, res)
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

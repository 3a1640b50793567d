"""``diffsci bench speed [--protein] [--weather]``: wall time and peak memory of the main jobs.

- protein: one L = 100 backbone at 100 steps with the shipped checkpoint, batch 1 and batch 16
  (seconds per backbone); target <= 5 s at batch 1 on 2 CPU cores.
- weather: a 16-member, 24-step (hourly, 24 h) forecast at 32x64 with the shipped checkpoint
  and its default sampler; target <= 60 s on 2 CPU cores.
Peak resident memory is the process's maximum RSS (``resource.getrusage``).
"""

from __future__ import annotations

import json
import resource
import sys
import time

import torch

from diffsci.core.io import write_json

__all__ = ["protein_speed", "weather_speed", "add_parser"]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def protein_speed(length: int = 100, steps: int = 100, batches=(1, 16)) -> dict:
    from diffsci.core.utils import make_generator
    from diffsci.protein.sampling import default_sampler, load_model, sample_states

    lm = load_model()
    sampler = default_sampler(lm.config)
    out = {"length": length, "steps": steps, "sampler": sampler, "threads": torch.get_num_threads()}
    sample_states(lm, length, make_generator(0, "warmup"), steps=2, sampler=sampler)  # warm-up
    for b in batches:
        gens = [make_generator(0, "speed", i) for i in range(b)]
        t0 = time.perf_counter()
        sample_states(lm, length, gens, steps=steps, sampler=sampler, batch=b)
        dt = time.perf_counter() - t0
        out[f"batch{b}_seconds_total"] = round(dt, 2)
        out[f"batch{b}_seconds_per_backbone"] = round(dt / b, 3)
    out["peak_rss_mb"] = round(_rss_mb(), 1)
    return out


def weather_speed(members: int = 16, lead_hours: int = 24) -> dict:
    from diffsci.weather.forecast import forecast, load_forecaster
    from diffsci.weather.generator import generate

    forecaster = load_forecaster()
    ds = generate(grid=forecaster.config.grid_shape, hours=4, trajectories=1, seed=99, spinup_hours=24, progress=False)
    t0 = time.perf_counter()
    forecast(forecaster, ds, lead_hours=lead_hours, members=members, progress=False)
    dt = time.perf_counter() - t0
    return {"grid": list(forecaster.config.grid_shape), "members": members, "lead_hours": lead_hours, "seconds": round(dt, 1),
            "sampler": "heun (churn 2.5)", "noise_levels": 5, "threads": torch.get_num_threads(), "peak_rss_mb": round(_rss_mb(), 1)}


def _run(args) -> int:
    do_p = args.protein or not args.weather
    do_w = args.weather or not args.protein
    res = {}
    if do_p:
        res["protein"] = protein_speed()
        print(f"protein: L=100, 100 steps: {res['protein']['batch1_seconds_per_backbone']} s/backbone at batch 1, "
              f"{res['protein']['batch16_seconds_per_backbone']} s/backbone at batch 16 (target <= 5 s at batch 1)")
    if do_w:
        res["weather"] = weather_speed()
        print(f"weather: 16 members x 24 h at {res['weather']['grid']}: {res['weather']['seconds']} s (target <= 60 s)")
    res["command"] = "diffsci bench speed" + (" --protein" if args.protein else "") + (" --weather" if args.weather else "")
    if args.out:
        write_json(args.out, res)
    print(json.dumps(res), file=sys.stderr)
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("speed", help="speed and memory of sampling and forecasting", description=__doc__.splitlines()[0])
    p.add_argument("--protein", action="store_true")
    p.add_argument("--weather", action="store_true")
    p.add_argument("--out", help="write the measurements as JSON")
    p.set_defaults(func=_run)

"""Wall time of a weather ensemble forecast (``python -m diffsci.benchmarks.weather_speed``).

The reference job: a 16-member, 24-step (hourly, 24 h) forecast at 32x64
with the shipped checkpoint and the forecast's default sampler; target <= 60 s on 2 CPU cores.
Initial conditions come from the built-in generator (seed 99, never used for training).
Also reports the time of one denoiser evaluation of a member chunk, and the peak RSS;
``--simulator`` also times the simulator's perfect-model ensemble of the same size and length
from the same initial state (``diffsci bench speed --weather`` does).

Example::

    python -m diffsci.benchmarks.weather_speed --members 16 --lead-hours 24 --threads 1

:func:`weather_scale_speed` (``diffsci bench speed --weather --grid 121x240``) measures the cost
at the field's resolutions instead: an untrained model built for a WeatherBench 2 grid (poles
included), one training step with and without activation checkpointing, and one forecast step
of a few members, each with its time and peak memory.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import numpy as np
import torch
from torch.utils.checkpoint import checkpoint

from diffsci.benchmarks.measure import peak_memory, reset_peak_memory
from diffsci.core.io import check_choice, check_int, write_json
from diffsci.core.samplers import get_sampler
from diffsci.core.spaces import Euclidean
from diffsci.core.train import set_activation_checkpointing
from diffsci.weather.data import NormStats
from diffsci.weather.diffusion import ResidualTask, WeatherModelConfig, build_denoiser, effective_churn
from diffsci.weather.forecast_cmd import STEPS_HELP
from diffsci.weather.predictor import WeatherCond

__all__ = ["weather_forecast_speed", "weather_scale_speed", "scale_refinements", "main"]

#: the channels of the scale benchmark's model (those of the shipped model)
SCALE_CHANNELS = ("z", "u", "v", "vo")


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


def scale_refinements(nlat: int) -> int:
    """The mesh level for a grid of ``nlat`` latitudes (poles included, spacing 180 / (nlat - 1)
    degrees): the smallest refinement whose mesh edge (about 63.4 / 2**k degrees) is at most four
    grid spacings, between 1 and 6 (6 at 0.25 degrees, GraphCast's finest level; 4 at 1.5 and 1)."""
    spacing = 180.0 / (check_int(nlat, "nlat", minimum=3) - 1)
    return int(min(6, max(1, math.ceil(math.log2(63.4 / (4 * spacing)) - 1e-9))))


def _scale_task(grid: tuple[int, int], refinements: int, step_hours: float, sampler: str, steps: int) -> ResidualTask:
    """A training task on random states of a WB2 grid (equiangular, poles included)."""
    h, w = grid
    lat = tuple(np.linspace(-90.0, 90.0, h).tolist())
    lon = tuple((np.arange(w) * (360.0 / w)).tolist())
    cfg = WeatherModelConfig(refinements=refinements, channels=SCALE_CHANNELS, variables=SCALE_CHANNELS, latitude=lat,
                             longitude=lon, time_step_hours=step_hours, sampler=sampler, sampler_steps=steps)
    c = len(SCALE_CHANNELS)
    stats = NormStats(SCALE_CHANNELS, (0.0,) * c, (1.0,) * c, (0.1,) * c)
    fields = np.random.default_rng(0).normal(size=(3, c, h, w)).astype(np.float32)
    times = np.datetime64("2000-01-01T00") + np.arange(3) * np.timedelta64(int(step_hours * 60), "m")
    return ResidualTask(cfg, stats, fields, np.arange(1), times)


def _train_step(task: ResidualTask, model, on: bool) -> dict:
    """One training step (batch 1: loss, backward, AdamW step on a copy of the optimiser state)
    with activation checkpointing ``on``: seconds, loss, gradient norm, peak memory."""
    set_activation_checkpointing(model, on)
    model.zero_grad(set_to_none=True)
    batch = task.sample_batch(torch.Generator().manual_seed(0), 1)
    reset_peak_memory()
    t0 = time.perf_counter()
    loss = task.loss(model, batch)
    loss.backward()
    seconds = time.perf_counter() - t0
    mem = peak_memory()
    gnorm = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in model.parameters() if p.grad is not None))
    model.zero_grad(set_to_none=True)
    return {"activation_checkpointing": on, "seconds_per_step": round(seconds, 3),
            "seconds_per_model_hour_per_member": round(seconds / task.config.time_step_hours, 4),
            "loss": float(loss.detach()), "grad_norm": float(gnorm), **mem}


def _forecast_step(task: ResidualTask, model, members: int) -> dict:
    """One model step of ``members`` members with the config's sampler (inference mode)."""
    cfg, (h, w) = task.config, task.config.grid_shape
    c = len(cfg.channels)
    gen = torch.Generator().manual_seed(1)
    cond = WeatherCond(torch.randn(members, 2 * c, h, w, generator=gen), torch.randn(members, 2, generator=gen))
    times = cfg.schedule.time_grid(cfg.sampler_steps)
    prior = cfg.schedule.sigma(times[:1]).item() * torch.randn(members, c, h, w, generator=gen)
    churn = effective_churn(cfg.sampler, cfg.churn)
    reset_peak_memory()
    t0 = time.perf_counter()
    with torch.inference_mode():
        get_sampler(cfg.sampler)(model, prior, times, space=Euclidean(cfg.schedule), cond=cond, generator=gen,
                                 **({"churn": churn} if churn else {}))
    seconds = time.perf_counter() - t0
    return {"members": members, "sampler": cfg.sampler, "sampler_steps": cfg.sampler_steps,
            "seconds_per_step": round(seconds, 3),
            "seconds_per_model_hour_per_member": round(seconds / members / cfg.time_step_hours, 4), **peak_memory()}


def weather_scale_speed(grid=(121, 240), *, refinements: int | None = None, checkpointing: str = "both",
                        members: int = 2, step_hours: float = 6.0, forecast: bool = True, threads: int | None = None,
                        sampler: tuple[str, int] = ("euler", 2)) -> dict:
    """Cost of the weather model at a WeatherBench 2 grid ``(nlat, nlon)`` (poles included) on
    the CPU, with an untrained model of the default size (latent 48, 4 processor layers; mesh level
    ``refinements``, default :func:`scale_refinements`) whose weights are perturbed by N(0, 0.02^2)
    so that its zero-initialised read-out and FiLM layers do not hide a difference in the loss.

    ``checkpointing``: ``both`` (with, then without), ``on``, ``off`` or ``none``: one training step each
    (batch 1, the EDM denoising loss and its backward pass). ``forecast``: first, one model step of
    ``members`` members with ``sampler`` (name, noise levels; the shipped model's euler over 2).
    Rows give seconds per step and per model hour (``step_hours``) per member, and peak memory
    (:func:`diffsci.benchmarks.measure.peak_memory`, reset before each row; ``base_rss_mb``: the
    resident set before the first row, model and graph built). Returns a JSON-able dict."""
    h, w = (check_int(n, "grid") for n in grid)
    check_choice(checkpointing, "checkpointing", ("both", "on", "off", "none"))
    if threads:
        torch.set_num_threads(threads)
    k = scale_refinements(h) if refinements is None else check_int(refinements, "refinements")
    t0 = time.perf_counter()
    task = _scale_task((h, w), k, step_hours, *sampler)
    torch.manual_seed(0)
    model = build_denoiser(task.config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    build_s = time.perf_counter() - t0
    warm = torch.ones(1, requires_grad=True)  # torch's one-off set-up of checkpointed backward passes, untimed
    checkpoint(torch.sin, warm, use_reentrant=False).backward()
    graph = model.net.net
    out = {"grid": [h, w], "grid_points": h * w, "refinements": k, "mesh_nodes": graph.n_mesh,
           "edges": {n: int(getattr(graph, f"g_{n}_edge_index").shape[1]) for n in ("g2m", "mesh", "m2g")},
           "latent": task.config.latent, "layers": task.config.layers, "channels": len(SCALE_CHANNELS),
           "step_hours": step_hours, "threads": torch.get_num_threads(), "build_seconds": round(build_s, 2),
           "base_rss_mb": peak_memory()["process_peak_rss_mb"]}
    if forecast:
        out["forecast"] = _forecast_step(task, model, check_int(members, "members"))
    modes = {"both": (True, False), "on": (True,), "off": (False,), "none": ()}[checkpointing]
    out["train"] = [_train_step(task, model, on) for on in modes]
    if len(modes) == 2:
        on, off = out["train"]
        out["train_loss_difference"] = abs(on["loss"] - off["loss"])
        out["train_peak_ratio"] = round(off["peak_rss_mb"] / on["peak_rss_mb"], 3)
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

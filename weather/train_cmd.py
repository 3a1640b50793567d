"""``diffsci weather train``: train the graph diffusion model (or the deterministic baseline)."""

from __future__ import annotations

from diffsci.core.errors import DiffsciError
from diffsci.core.train import TrainConfig, train
from diffsci.core.utils import load_config_file

__all__ = ["add_parser", "run_training"]


def run_training(data, out, *, variables=None, steps=2000, device="auto", resume=False, config=None,
                 deterministic=False, max_minutes=None, progress=True, seed=0):
    """Open ``data``, compute normalisation statistics, build the model and train it.

    ``data`` in any layout :func:`~diffsci.weather.data.open_weather` reads; a level variable
    gives channels ``{name}{level}``; ensemble members are trained on as separate runs. The
    checkpoint records the channels, the grid, the data's
    time step (one model step) and each variable's units. ``out`` is checked first (not the
    data file or inside it; writable)."""
    import pandas as pd
    import torch

    from diffsci.weather.data import (check_output_path, compute_norm_stats, open_weather, stack_channels,
                                      time_step, window_starts)
    from diffsci.weather.diffusion import ResidualTask, WeatherModelConfig, build_model

    config = config or {}
    check_output_path(out, inputs=[data], folder=True)
    ds = open_weather(data, variables=variables)
    variables = tuple(str(v) for v in ds.data_vars)  # short names, in the order asked for
    step = time_step(ds)
    if step is None:
        raise DiffsciError(f"{data}: one time only; training needs at least 3 consecutive states")
    if "realization" in ds.dims:
        ds = _members_as_trajectories(ds)
    stats = compute_norm_stats(ds, variables)
    fields, channels = stack_channels(ds, variables)
    model_opts = dict(config.get("model", {}))
    if deterministic:
        model_opts["deterministic"] = True
    cfg = WeatherModelConfig(
        variables=variables, channels=tuple(channels),
        latitude=tuple(float(x) for x in ds.latitude.values), longitude=tuple(float(x) for x in ds.longitude.values),
        time_step_hours=step / pd.Timedelta(hours=1), units=tuple(str(ds[v].attrs.get("units", "")) for v in variables),
        **model_opts,
    )
    starts = window_starts(ds, history=2, lead=1)
    task = ResidualTask(cfg, stats, fields, starts, ds.time.values)
    train_opts = {"steps": steps, "batch_size": 8, "lr": 1e-3, "ema_decay": 0.995, "ckpt_every": 50,
                  "log_every": 10, "warmup_steps": 100, "grad_clip": 1.0, "device": device,
                  "max_minutes": max_minutes, "seed": seed}
    train_opts.update(config.get("train", {}))
    if steps is not None:
        train_opts["steps"] = steps
    tcfg = TrainConfig.from_dict(train_opts)
    torch.manual_seed(0)
    model = build_model(cfg)
    return train(model, task, tcfg, out, resume=resume, progress=progress)


def _members_as_trajectories(ds):
    """An ensemble (ERA5 EDA, a perfect-model ensemble): each member becomes its own run of
    states, laid end to end along ``time`` with its own ``trajectory`` ids, so no training
    window and no residual statistic crosses from one member to another."""
    import numpy as np
    import xarray as xr

    nt = ds.sizes["time"]
    base = np.asarray(ds["trajectory"].values) if "trajectory" in ds.coords else np.zeros(nt, dtype=np.int64)
    span = int(base.max()) + 1
    parts = [ds.isel(realization=m, drop=True).assign_coords(trajectory=("time", base + m * span))
             for m in range(ds.sizes["realization"])]
    return xr.concat(parts, "time")


def _run(args) -> int:
    config = load_config_file(args.config)
    res = run_training(args.data, args.out, variables=args.variables, steps=args.steps, device=args.device,
                       resume=args.resume, config=config, deterministic=args.deterministic,
                       max_minutes=args.max_minutes, seed=args.seed)
    print(f"trained to step {res.step}, last loss {res.last_loss:.4f}; checkpoint {res.checkpoint}")
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("train", help="train the weather graph diffusion model",
                              description="Train the graph diffusion model on ERA5-style data (netCDF or zarr: cfgrib, CDS, "
                                          "WeatherBench 2 or NCEP layouts). One model step is the data's time step "
                                          "(recorded in the checkpoint). Checkpoints go to OUT (latest.pt); "
                                          "--resume continues.")
    p.add_argument("--data", required=True, help="training data: netCDF file or zarr store, regular time steps")
    p.add_argument("--out", required=True, help="run folder for checkpoints and metrics.jsonl")
    p.add_argument("--config", help="JSON/TOML with optional tables 'model' and 'train'")
    p.add_argument("--variables", nargs="+", help="variables to model (default: all in the file)")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda[:N]")
    p.add_argument("--resume", action="store_true", help="continue from OUT/latest.pt")
    p.add_argument("--deterministic", action="store_true", help="train the MSE (GraphCast-style) baseline instead")
    p.add_argument("--max-minutes", type=float, help="stop with a checkpoint after this wall time")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_run)

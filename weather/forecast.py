"""Ensemble forecasts: autoregressive rollouts of the residual diffusion model.

Member ``m`` of the forecast from init time ``T`` draws all its noise from the generator of
``(seed, T, m)``, and members are evaluated in fixed-size chunks (padded with throw-away
members), so member ``m`` is bit-for-bit the same whatever the ensemble size on a CPU.

One model step is the checkpoint's time step (``WeatherModelConfig.time_step_hours``, read
from the training data); the initial-condition file must have that step (and the state one
step before each init time), ``--lead-hours`` a multiple of it.

Output: WeatherBench 2 forecast layout, dims ``time`` (init), ``prediction_timedelta``
(CF ``forecast_period``), ``realization``, ``level`` for pressure-level variables (hPa, the
checkpoint's levels, ascending), ``latitude`` (ascending), ``longitude``; a 2-D ``valid_time``
coordinate (init + lead); CDS short names with CF ``units`` / ``standard_name`` / ``long_name``
(units as in the checkpoint); written atomically (temp file + ``os.replace``). Reading it back
with ``open_weather(path, forecast=True)`` gives the same layout.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import xarray as xr

from diffsci.core.errors import DiffsciError
from diffsci.core.samplers import get_sampler
from diffsci.core.spaces import Euclidean
from diffsci.core.train import load_checkpoint
from diffsci.core.utils import atomic_output, make_generator
from diffsci.weather.data import (CANONICAL_UNITS, NormStats, _norm_unit, channel_names, check_grid,
                                  check_output_path, open_weather, stack_channels, time_step)
from diffsci.weather.diffusion import KIND, KIND_DETERMINISTIC, WeatherCond, WeatherModelConfig, build_model, hour_features
from diffsci.weather.grid import boundary_mask

__all__ = ["Forecaster", "load_forecaster", "default_checkpoint_path", "forecast", "write_forecast", "add_parser"]

CHUNK = 4  # members evaluated together (fixed, so results do not depend on the ensemble size)

#: noise levels per forecast step when none are given: the first-order SDE sampler needs a finer
#: grid (5 EDM levels make its steps overshoot: core.samplers.sde_step_gain 3.2 > 2)
DEFAULT_STEPS = {"euler_maruyama": 20}
DEFAULT_STEPS_OTHERS = 5

STANDARD_NAMES = {  # CF standard names of the CDS short names
    "z": "geopotential", "t": "air_temperature", "t2m": "air_temperature", "u": "eastward_wind",
    "v": "northward_wind", "u10": "eastward_wind", "v10": "northward_wind", "vo": "atmosphere_relative_vorticity",
    "d": "divergence_of_wind", "q": "specific_humidity", "r": "relative_humidity",
    "w": "lagrangian_tendency_of_air_pressure", "msl": "air_pressure_at_mean_sea_level", "sp": "surface_air_pressure",
    "tp": "lwe_thickness_of_precipitation_amount",
}


def default_checkpoint_path() -> Path:
    return Path(str(resources.files("diffsci.weather") / "data" / "default_checkpoint.pt"))


@dataclass
class Forecaster:
    """A loaded model: its config, normalisation statistics and network (EMA weights, eval mode)."""

    cfg: WeatherModelConfig
    stats: NormStats
    model: torch.nn.Module
    source: str

    @property
    def deterministic(self) -> bool:
        return self.cfg.deterministic


def load_forecaster(checkpoint: str | os.PathLike | None = None, *, device="cpu") -> Forecaster:
    """Load a weather checkpoint (default: the shipped one); refuses other kinds of checkpoint."""
    path = Path(checkpoint) if checkpoint else default_checkpoint_path()
    if checkpoint is None and not path.exists():
        raise DiffsciError(f"no --checkpoint given and the default checkpoint {path} is missing")
    ck = load_checkpoint(path)
    if ck.get("kind") not in (KIND, KIND_DETERMINISTIC):
        raise DiffsciError(f"{path}: checkpoint is for model kind {ck.get('kind')!r}, not a weather model")
    cfg = WeatherModelConfig.from_dict(ck["model_config"])
    stats = NormStats.from_dict(ck["extra"]["norm_stats"])
    model = build_model(cfg)
    model.load_state_dict(ck["ema"] if "ema" in ck else ck["model"])
    model.eval().to(device)
    return Forecaster(cfg, stats, model, str(path))


def _check_step(ds: xr.Dataset, step: pd.Timedelta) -> None:
    """The init file's time step must be the checkpoint's (one model step)."""
    got = time_step(ds)
    if got is not None and got != step:
        raise DiffsciError(f"{ds.attrs.get('diffsci_source', '<dataset>')}: states every {_hours(got)}, but the "
                           f"checkpoint steps {_hours(step)} (its training data's step); give initial conditions "
                           f"{_hours(step)} apart")


def _hours(td: pd.Timedelta) -> str:
    h = td / pd.Timedelta(hours=1)
    return f"{h:g} h"


def _check_units(ds: xr.Dataset, fc: "Forecaster") -> None:
    """Units of the (normalised) init file against those the checkpoint was trained on."""
    if fc.cfg.units is None:
        return
    for v, want in zip(fc.cfg.variables, fc.cfg.units):
        got = ds[v].attrs.get("units", "")
        if got and want and _norm_unit(got) != _norm_unit(want):
            raise DiffsciError(f"{ds.attrs.get('diffsci_source', '<dataset>')}: {v} in {got!r}, but the checkpoint "
                               f"was trained on {want!r}")


def _select_channels(ds: xr.Dataset, fc: "Forecaster") -> xr.Dataset:
    """Keep the checkpoint's pressure levels; the channels must then be the checkpoint's."""
    want = [c.replace("@", "") for c in fc.cfg.channels]  # "t@500": checkpoints before channels were "t500"
    name = ds.attrs.get("diffsci_source", "<dataset>")
    if "level" in ds.dims:
        lev_vars = [v for v in fc.cfg.variables if "level" in ds[v].dims]
        keep = [lev for lev in ds.level.values if any(f"{v}{float(lev):g}" in want for v in lev_vars)]
        ds = ds.sel(level=keep)
    got = channel_names(ds, fc.cfg.variables)
    if got != want:
        raise DiffsciError(f"{name}: channels {got} do not match the checkpoint's {want}")
    return ds


def _init_indices(ds: xr.Dataset, init_times, step: pd.Timedelta = pd.Timedelta(hours=1)) -> list[int]:
    times = pd.DatetimeIndex(ds.time.values)
    if not init_times:
        idx = [len(times) - 1]
    else:
        idx = []
        for t in init_times:
            try:
                ts = pd.Timestamp(t)
            except Exception:
                raise DiffsciError(f"--init-time {t!r}: not an ISO 8601 time (e.g. 2000-01-03T06:00)") from None
            hit = np.nonzero(times == ts)[0]
            if len(hit) == 0:
                raise DiffsciError(f"--init-time {t}: not in the initial-condition file ({times[0]} .. {times[-1]})")
            idx.append(int(hit[0]))
    for i in idx:
        if i < 1 or times[i] - times[i - 1] != step:
            raise DiffsciError(f"init time {times[i]}: needs the previous state ({_hours(step)} before) too "
                               "(two states of history)")
        if "trajectory" in ds.coords and ds.trajectory.values[i] != ds.trajectory.values[i - 1]:
            raise DiffsciError(f"init time {times[i]}: the previous state belongs to another trajectory")
    return idx


def _boundary_forcing(fc: Forecaster, boundary, width, init_stamps, n_steps: int, step: pd.Timedelta):
    """Band mask (H, W) bool tensor, boundary values (I, L, C, H, W) float32 and the band width;
    ``(None, None, 0)`` for a global checkpoint without boundary file. Refuses what cannot be used."""
    trained = int(fc.cfg.boundary_width or 0)
    if boundary is None:
        if trained > 0:
            raise DiffsciError(f"{fc.source}: a regional model (boundary band {trained} cells): give the lateral "
                               "boundary values with --boundary FILE (every valid time of the forecast, same grid)")
        if width:
            raise DiffsciError("--boundary-width needs --boundary FILE")
        return None, None, 0
    width = trained if width is None else int(width)
    if width < max(trained, 1):
        raise DiffsciError(f"--boundary-width {width}: must be >= 1 and at least the band the model was trained "
                           f"with ({trained} cells)")
    mask = boundary_mask(fc.cfg.latitude, fc.cfg.longitude, width)
    if not mask.any():
        raise DiffsciError(f"{fc.source}: the checkpoint's grid is global (no open edge), so a boundary file has "
                           "nothing to force; forecast without --boundary")
    bds = open_weather(boundary, variables=list(fc.cfg.variables))
    name = bds.attrs.get("diffsci_source", str(boundary))
    if "realization" in bds.dims:
        if bds.sizes["realization"] != 1:
            raise DiffsciError(f"{name}: boundary file has {bds.sizes['realization']} ensemble members; give one")
        bds = bds.isel(realization=0, drop=True)
    check_grid(bds, fc.cfg.latitude, fc.cfg.longitude)
    _check_units(bds, fc)
    bds = _select_channels(bds, fc)
    valid = pd.DatetimeIndex([t0 + (j + 1) * step for t0 in init_stamps for j in range(n_steps)])
    have = pd.DatetimeIndex(bds.time.values)
    missing = valid[~valid.isin(have)].unique()
    if len(missing):
        raise DiffsciError(f"{name}: boundary values missing for {len(missing)} valid time(s) of the forecast "
                           f"({missing[0]} .. {missing[-1]}); the file covers {have.min()} .. {have.max()}")
    vals, _ = stack_channels(bds.sel(time=valid.values), fc.cfg.variables)  # (I * L, C, H, W)
    if not np.isfinite(vals[:, :, mask]).all():
        raise DiffsciError(f"{name}: boundary values in the band are NaN or infinite")
    h, w = fc.cfg.grid_shape
    bvals = torch.from_numpy(np.ascontiguousarray(vals, dtype=np.float32)).reshape(len(init_stamps), n_steps, -1, h, w)
    return torch.from_numpy(mask), bvals, width


@torch.inference_mode()
def forecast(fc: Forecaster, init, *, init_times=None, lead_hours: int = 24, members: int = 8, seed: int = 0,
             steps: int | None = None, sampler: str = "heun", churn: float = 2.5, progress: bool = True,
             boundary=None, boundary_width: int | None = None) -> xr.Dataset:
    """Ensemble rollouts from each init time of ``init`` (path or Dataset, ERA5/WB2 style).

    Returns the WB2-layout forecast dataset (not yet written; module docstring). Units are the
    checkpoint's: the init file is converted where unambiguous (see ``open_weather``) and
    refused where its units differ. ``lead_hours`` must be a multiple of the checkpoint's step.
    ``steps``: noise levels per step (None: :data:`DEFAULT_STEPS`, 5 for most samplers).

    Regional checkpoints (``cfg.boundary_width > 0``) need ``boundary`` (path or Dataset, any
    layout ``open_weather`` reads, on the checkpoint's grid, with every valid time of the
    forecast): after every step the lateral boundary band
    (:func:`diffsci.weather.grid.boundary_mask`, ``boundary_width`` cells at each open edge,
    default the checkpoint's, not less) is replaced by the boundary file's values at that valid
    time, as limited-area models do (neural-lam, Oskarsson et al. 2023).
    """
    if members < 1:
        raise DiffsciError(f"--members must be >= 1, got {members}")
    if lead_hours < 1:
        raise DiffsciError(f"--lead-hours must be >= 1, got {lead_hours}")
    step = pd.Timedelta(hours=fc.cfg.time_step_hours)
    n_steps = pd.Timedelta(hours=lead_hours) / step
    if abs(n_steps - round(n_steps)) > 1e-9:
        raise DiffsciError(f"--lead-hours {lead_hours} is not a multiple of the checkpoint's time step {_hours(step)}")
    n_steps = int(round(n_steps))
    if steps is None:
        steps = DEFAULT_STEPS.get(sampler, DEFAULT_STEPS_OTHERS)
    if steps < 1:
        raise DiffsciError(f"--steps must be >= 1, got {steps}")
    sample_fn = get_sampler(sampler)
    # EDM churn applies to the heun/euler samplers only; others run without (recorded as 0)
    churn = float(churn) if sampler in ("heun", "euler") else 0.0
    opts = {"churn": churn} if churn else {}
    ds = open_weather(init, variables=list(fc.cfg.variables))
    if "realization" in ds.dims:
        if ds.sizes["realization"] != 1:
            raise DiffsciError(f"{ds.attrs['diffsci_source']}: initial conditions have {ds.sizes['realization']} "
                               "ensemble members; give one")
        ds = ds.isel(realization=0, drop=True)
    check_grid(ds, fc.cfg.latitude, fc.cfg.longitude)
    _check_units(ds, fc)
    ds = _select_channels(ds, fc)
    _check_step(ds, step)
    idx = _init_indices(ds, init_times, step)
    init_stamps = pd.DatetimeIndex(ds.time.values[idx])
    band, bvals, width = _boundary_forcing(fc, boundary, boundary_width, init_stamps, n_steps, step)
    mean, std, rstd = (torch.as_tensor(a)[:, None, None] for a in fc.stats.arrays())
    sched = fc.cfg.schedule
    space = Euclidean(sched)
    times_grid = sched.time_grid(steps)
    h, w = fc.cfg.grid_shape
    c = len(fc.cfg.channels)
    out = np.zeros((len(idx), n_steps, members, c, h, w), dtype=np.float32)
    n_chunks = -(-members // CHUNK)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(idx) * n_chunks * n_steps, desc="forecast", file=sys.stderr, mininterval=1.0)
    for k, i in enumerate(idx):
        pair, _ = stack_channels(ds.isel(time=[i - 1, i]), fc.cfg.variables)
        x_prev0, x_cur0 = torch.from_numpy(pair[0]), torch.from_numpy(pair[1])
        key = str(init_stamps[k])
        for ch in range(n_chunks):
            ids = list(range(ch * CHUNK, (ch + 1) * CHUNK))
            gens = [make_generator(seed, key, "member", m) if m < members else make_generator(seed, key, "pad", m)
                    for m in ids]
            x_prev = x_prev0.expand(CHUNK, -1, -1, -1).clone()
            x_cur = x_cur0.expand(CHUNK, -1, -1, -1).clone()
            for lead in range(n_steps):
                valid = init_stamps[k] + (lead + 1) * step
                cond = WeatherCond(torch.cat([(x_prev - mean) / std, (x_cur - mean) / std], 1),
                                   hour_features(np.full(CHUNK, valid.to_datetime64())))
                if fc.deterministic:
                    r = fc.model(None, None, cond)
                else:
                    x_init = space.prior(x_cur, gens)
                    r = sample_fn(lambda x, t, cnd: fc.model(x, t, cnd), x_init, times_grid, space=space,
                                  cond=cond, generator=gens, **opts)
                x_next = x_cur + r * rstd
                if band is not None:  # lateral boundary forcing: the band takes the boundary file's values
                    x_next = torch.where(band, bvals[k, lead], x_next)
                x_prev, x_cur = x_cur, x_next
                keep = [j for j, m in enumerate(ids) if m < members]
                out[k, lead, [ids[j] for j in keep]] = x_next[keep].numpy()
                if bar is not None:
                    bar.update(1)
    if bar is not None:
        bar.close()
    fds = _to_dataset(out, ds, fc, init_stamps, n_steps, members, seed, steps, sampler, churn)
    if band is not None:
        fds.attrs.update(boundary_file=str(boundary if not isinstance(boundary, xr.Dataset)
                                           else boundary.attrs.get("diffsci_source", "<dataset>")),
                         boundary_width=width)
    if ds.attrs.get("diffsci_notes"):  # unit conversions of the init file, recorded with the forecast
        fds.attrs["input_notes"] = ds.attrs["diffsci_notes"]
    return fds


def _to_dataset(out, ds, fc, init_stamps, n_steps, members, seed, steps, sampler, churn=0.0) -> xr.Dataset:
    """``out`` (I, L, M, C, H, W) -> WB2 layout; ``ds`` the normalised init file (its levels)."""
    step = pd.Timedelta(hours=fc.cfg.time_step_hours).to_timedelta64().astype("timedelta64[ns]")
    leads = np.arange(1, n_steps + 1) * step
    coords = {
        "time": ("time", init_stamps.values, {"long_name": "forecast initialisation time",
                                              "standard_name": "forecast_reference_time"}),
        "prediction_timedelta": ("prediction_timedelta", leads, {"long_name": "lead time",
                                                                 "standard_name": "forecast_period"}),
        "realization": ("realization", np.arange(members), {"long_name": "ensemble member",
                                                            "standard_name": "realization"}),
        "latitude": ("latitude", np.asarray(fc.cfg.latitude, dtype=np.float64),
                     {"units": "degrees_north", "standard_name": "latitude", "long_name": "latitude"}),
        "longitude": ("longitude", np.asarray(fc.cfg.longitude, dtype=np.float64),
                      {"units": "degrees_east", "standard_name": "longitude", "long_name": "longitude"}),
        "valid_time": (("time", "prediction_timedelta"), init_stamps.values[:, None] + leads[None, :],
                       {"long_name": "valid time (init + lead)", "standard_name": "time"}),
    }
    data_vars = {}
    c0 = 0
    dims = ("time", "prediction_timedelta", "realization")
    for j, var in enumerate(fc.cfg.variables):
        src = ds[var].attrs if var in ds else {}
        units = fc.cfg.units[j] if fc.cfg.units and fc.cfg.units[j] else src.get("units", CANONICAL_UNITS.get(var, ""))
        attrs = {"units": units, "standard_name": STANDARD_NAMES.get(var, src.get("standard_name", "")),
                 "long_name": src.get("long_name", var)}
        attrs = {k: a for k, a in attrs.items() if a}
        if "level" in ds[var].dims:
            n = ds.sizes["level"]
            coords.setdefault("level", ("level", np.asarray(ds.level.values, dtype=np.float64),
                                        {"units": "hPa", "long_name": "pressure level",
                                         "standard_name": "air_pressure", "positive": "down"}))
            data_vars[var] = (dims + ("level", "latitude", "longitude"), out[:, :, :, c0:c0 + n], attrs)
        else:
            n = 1
            data_vars[var] = (dims + ("latitude", "longitude"), out[:, :, :, c0], attrs)
        c0 += n
    fds = xr.Dataset(data_vars, coords=coords)
    fds.attrs.update(
        title="diffsci ensemble forecast",
        source=f"diffsci weather forecast ({'deterministic graph model' if fc.deterministic else 'graph diffusion model'})",
        checkpoint=fc.source, seed=seed, sampler=sampler, noise_levels=steps, churn=churn,
        Conventions="CF-1.8", history=f"created {time.strftime('%Y-%m-%dT%H:%M:%S')}",
    )
    return fds


def write_forecast(fds: xr.Dataset, path: str | os.PathLike) -> Path:
    """Write netCDF (engine netcdf4) atomically: a temp file in the same (existing) folder, then rename."""
    with atomic_output(path, must_have_folder=True) as tmp:
        fds.to_netcdf(tmp, engine="netcdf4")
    return Path(path)


def _run(args) -> int:
    if args.threads < 1:
        raise DiffsciError(f"--threads must be >= 1, got {args.threads}")
    # The network is many small ops: with 2 threads on a 2-core machine that is also running
    # anything else, OpenMP waits make each evaluation ~20x slower (1.2 s instead of 52 ms per
    # 4-member chunk, measured), so forecasts default to one thread.
    torch.set_num_threads(args.threads)
    check_output_path(args.out, inputs=[args.init, args.checkpoint, args.boundary])  # before any work
    fc = load_forecaster(args.checkpoint)
    t0 = time.time()
    with warnings.catch_warnings():  # unit conversions: printed once below as a note
        warnings.simplefilter("ignore", UserWarning)
        fds = forecast(fc, args.init, init_times=args.init_time, lead_hours=args.lead_hours, members=args.members,
                       seed=args.seed, steps=args.steps, sampler=args.sampler, churn=args.churn,
                       progress=not args.quiet, boundary=args.boundary, boundary_width=args.boundary_width)
    if fds.attrs.get("input_notes"):
        print(f"note: {args.init}: {fds.attrs['input_notes']}", file=sys.stderr)
    write_forecast(fds, args.out)
    print(f"wrote {args.out}: {fds.sizes['time']} init time(s) x {args.lead_hours} h "
          f"({fds.sizes['prediction_timedelta']} steps) x {args.members} members "
          f"in {time.time() - t0:.1f} s")
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("forecast", help="ensemble forecast with the graph diffusion model",
                              description="Autoregressive ensemble forecast in WeatherBench 2 layout (netCDF).")
    p.add_argument("--checkpoint", help="model checkpoint (default: the shipped one)")
    p.add_argument("--init", required=True,
                   help="initial conditions: netCDF/zarr (cfgrib, CDS, WB2 or NCEP layout) with at least two states "
                        "one checkpoint time step apart")
    p.add_argument("--init-time", action="append", help="ISO 8601 init time (repeatable); default: the last time")
    p.add_argument("--lead-hours", type=int, required=True, help="a multiple of the checkpoint's time step")
    p.add_argument("--members", type=int, required=True)
    p.add_argument("--out", required=True, help="output netCDF (not an input; its folder must exist)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None,
                   help="noise levels per forecast step (default 5; 20 for euler_maruyama, whose first-order SDE "
                        "steps diverge on a coarser grid)")
    p.add_argument("--sampler", default="heun", help="sampler name (default heun, with --churn 2.5)")
    p.add_argument("--churn", type=float, default=2.5,
                   help="EDM stochastic churn for the heun/euler samplers (default 2.5; 0: deterministic ODE steps)")
    p.add_argument("--boundary",
                   help="regional models: lateral boundary values (any layout --init takes, the checkpoint's grid, "
                        "every valid time of the forecast); the boundary band is replaced by them after every step")
    p.add_argument("--boundary-width", type=int, default=None,
                   help="boundary band in grid cells at each open edge (default: the checkpoint's, at least that)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: robust when other jobs share the cores)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_run)

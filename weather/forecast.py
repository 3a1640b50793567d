"""Ensemble forecasts: autoregressive rollouts of a loaded weather model on any torch device.

Member ``m`` of the forecast from init time ``T`` draws all its noise from the generator of
``(seed, T, m)`` (on the forecast's device), and members are evaluated in fixed-size chunks
(padded with throw-away members), so member ``m`` is bit-for-bit the same whatever the ensemble
size on one device. Under ``torchrun`` the (init time, chunk) units are spread over the ranks
(:func:`diffsci.core.distributed.gather_shares`) and gathered to rank 0, so the forecast is
bitwise that of one process.

One model step is the checkpoint's time step (``WeatherModelConfig.time_step_hours``, read
from the training data); the initial-condition file must have that step (and the state one
step before each init time), ``lead_hours`` a multiple of it. The step itself is the predictor
stack of :mod:`diffsci.weather.predictor` (the checkpoint's kind says which).

Output: WeatherBench 2 forecast layout, dims ``time`` (init), ``prediction_timedelta``
(CF ``forecast_period``), ``realization``, ``level`` for pressure-level variables (hPa, the
checkpoint's levels, ascending), ``latitude`` (ascending), ``longitude``; a 2-D ``valid_time``
coordinate (init + lead); CDS short names with CF ``units`` / ``standard_name`` / ``long_name``
(units as in the checkpoint); written atomically (temp file + ``os.replace``). Reading it back
with ``open_weather(path, forecast=True)`` gives the same layout.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import xarray as xr

from diffsci.core.checkpoint import load_bundle
from diffsci.core.config import Provenance
from diffsci.core.distributed import gather_shares, is_root, rank_device
from diffsci.core.errors import DiffsciError
from diffsci.core.io import check_int, progress as progress_bar, write_netcdf
from diffsci.core.samplers import get_sampler
from diffsci.core.spaces import Euclidean
from diffsci.core.utils import make_generator, resolve_device
from diffsci.weather.data import (CANONICAL_UNITS, NormStats, channel_names, check_grid, open_weather, stack_channels,
                                  time_step)
from diffsci.weather.diffusion import KIND, KIND_DETERMINISTIC, WeatherModelConfig, effective_churn
from diffsci.weather.grid import boundary_mask
from diffsci.weather.layouts import normalize_unit
from diffsci.weather.predictor import DiffusionStep, DirectStep, NormalizedResidual, StepPredictor, rollout
from diffsci.weather.static import read_static_fields

__all__ = ["effective_churn", "sampling_settings", "Forecaster", "load_forecaster", "forecast", "write_forecast", "CHUNK", "DEFAULT_STEPS"]

CHUNK = 4  # members evaluated together (fixed, so results do not depend on the ensemble size)

#: noise levels per forecast step when none are given: the first-order SDE sampler needs a finer
#: grid (5 EDM levels make its steps overshoot: core.samplers.sde_step_gain 3.2 > 2)
DEFAULT_STEPS = {"euler_maruyama": 20}
DEFAULT_STEPS_OTHERS = 5

#: a static field in the init file may differ from the checkpoint's by this fraction of its std
STATIC_TOLERANCE = 1e-4

STANDARD_NAMES = {  # CF standard names of the CDS short names
    "z": "geopotential", "t": "air_temperature", "t2m": "air_temperature", "u": "eastward_wind",
    "v": "northward_wind", "u10": "eastward_wind", "v10": "northward_wind", "vo": "atmosphere_relative_vorticity",
    "d": "divergence_of_wind", "q": "specific_humidity", "r": "relative_humidity",
    "w": "lagrangian_tendency_of_air_pressure", "msl": "air_pressure_at_mean_sea_level", "sp": "surface_air_pressure",
    "tp": "lwe_thickness_of_precipitation_amount",
}


@dataclass
class Forecaster:
    """A loaded weather model: its kind (:data:`~diffsci.weather.diffusion.KIND` or
    ``KIND_DETERMINISTIC``), config, normalisation statistics, network (EMA weights, eval mode),
    where it came from and its training data's provenance (None: not recorded)."""

    kind: str
    config: WeatherModelConfig
    stats: NormStats
    model: torch.nn.Module
    source: str
    provenance: Provenance | None = None

    @property
    def deterministic(self) -> bool:
        return self.kind == KIND_DETERMINISTIC

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def predictor(self, *, sampler: str = "heun", steps: int = DEFAULT_STEPS_OTHERS, churn: float = 0.0) -> StepPredictor:
        """One model step: :class:`~diffsci.weather.predictor.NormalizedResidual` around a
        ``DirectStep`` (deterministic kind) or a ``DiffusionStep`` with ``sampler`` over
        ``steps`` noise levels (``churn``: EDM stochastic churn, where the sampler takes it)."""
        if self.deterministic:
            return NormalizedResidual(DirectStep(self.model), self.stats)
        schedule = self.config.schedule
        options = {"churn": churn} if churn else {}
        inner = DiffusionStep(self.model, Euclidean(schedule), get_sampler(sampler), schedule.time_grid(steps), **options)
        return NormalizedResidual(inner, self.stats)


def load_forecaster(path: str | os.PathLike | None = None, *, device="cpu") -> Forecaster:
    """Load a weather checkpoint of either kind (None: the shipped diffusion model) through
    :func:`diffsci.core.checkpoint.load_bundle` (old checkpoints are migrated); the network is
    put on ``device``."""
    bundle = load_bundle(path, (KIND, KIND_DETERMINISTIC), device=resolve_device(device))
    return Forecaster(bundle.kind, bundle.config, NormStats.from_dict(bundle.extra["norm_stats"]), bundle.model,
                      bundle.source, bundle.provenance)


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


def _check_units(ds: xr.Dataset, forecaster: "Forecaster") -> None:
    """Units of the (normalised) init file against those the checkpoint was trained on."""
    if forecaster.config.units is None:
        return
    for v, want in zip(forecaster.config.variables, forecaster.config.units):
        got = ds[v].attrs.get("units", "")
        if got and want and normalize_unit(got) != normalize_unit(want):
            raise DiffsciError(f"{ds.attrs.get('diffsci_source', '<dataset>')}: {v} in {got!r}, but the checkpoint "
                               f"was trained on {want!r}")


def _select_channels(ds: xr.Dataset, forecaster: "Forecaster") -> xr.Dataset:
    """Keep the checkpoint's pressure levels; the channels must then be the checkpoint's."""
    want = list(forecaster.config.channels)
    name = ds.attrs.get("diffsci_source", "<dataset>")
    if "level" in ds.dims:
        lev_vars = [v for v in forecaster.config.variables if "level" in ds[v].dims]
        keep = [lev for lev in ds.level.values if any(f"{v}{float(lev):g}" in want for v in lev_vars)]
        ds = ds.sel(level=keep)
    got = channel_names(ds, forecaster.config.variables)
    if got != want:
        raise DiffsciError(f"{name}: channels {got} do not match the checkpoint's {want}")
    return ds


def _check_static_fields(init, cfg: WeatherModelConfig, name: str) -> None:
    """The model uses the static fields stored in its checkpoint; one the init file also carries
    must be the same (within ``STATIC_TOLERANCE`` of its std), else :class:`DiffsciError`."""
    got = read_static_fields(init, cfg.static_fields, cfg.latitude, cfg.longitude, required=False)
    for field, stored in zip(cfg.static_fields, cfg.static_values):
        if field not in got:
            continue
        ref = np.asarray(stored, dtype=np.float64).reshape(cfg.grid_shape)
        diff = float(np.max(np.abs(got[field] - ref)))
        if diff > STATIC_TOLERANCE * ref.std():
            raise DiffsciError(f"{name}: static field {field!r} differs from the one the checkpoint was trained "
                               f"with (by up to {diff:.4g}, {diff / ref.std():.3g} of its std); the model uses its "
                               f"own stored {field!r}: remove it from the file or use a checkpoint trained with it")


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
                raise DiffsciError(f"init time {t!r}: not an ISO 8601 time (e.g. 2000-01-03T06:00)") from None
            hit = np.nonzero(times == ts)[0]
            if len(hit) == 0:
                raise DiffsciError(f"init time {t}: not in the initial-condition file ({times[0]} .. {times[-1]})")
            idx.append(int(hit[0]))
    for i in idx:
        if i < 1 or times[i] - times[i - 1] != step:
            raise DiffsciError(f"init time {times[i]}: needs the previous state ({_hours(step)} before) too "
                               "(two states of history)")
        if "trajectory" in ds.coords and ds.trajectory.values[i] != ds.trajectory.values[i - 1]:
            raise DiffsciError(f"init time {times[i]}: the previous state belongs to another trajectory")
    return idx


def _boundary_forcing(forecaster: Forecaster, boundary, width, init_stamps, n_steps: int, step: pd.Timedelta):
    """Band mask (H, W) bool tensor, boundary values (I, L, C, H, W) float32 and the band width;
    ``(None, None, 0)`` for a global checkpoint without boundary file. Refuses what cannot be used."""
    trained = int(forecaster.config.boundary_width or 0)
    if boundary is None:
        if trained > 0:
            raise DiffsciError(f"{forecaster.source}: a regional model (boundary band {trained} cells): give the lateral "
                               "boundary values (boundary: a file with every valid time of the forecast, same grid)")
        if width:
            raise DiffsciError("boundary_width needs boundary values (a boundary file)")
        return None, None, 0
    width = trained if width is None else int(width)
    if width < max(trained, 1):
        raise DiffsciError(f"boundary_width {width}: must be >= 1 and at least the band the model was trained "
                           f"with ({trained} cells)")
    mask = boundary_mask(forecaster.config.latitude, forecaster.config.longitude, width)
    if not mask.any():
        raise DiffsciError(f"{forecaster.source}: the checkpoint's grid is global (no open edge), so a boundary file has "
                           "nothing to force; forecast without --boundary")
    bds = open_weather(boundary, variables=list(forecaster.config.variables))
    name = bds.attrs.get("diffsci_source", str(boundary))
    if "realization" in bds.dims:
        if bds.sizes["realization"] != 1:
            raise DiffsciError(f"{name}: boundary file has {bds.sizes['realization']} ensemble members; give one")
        bds = bds.isel(realization=0, drop=True)
    check_grid(bds, forecaster.config.latitude, forecaster.config.longitude)
    _check_units(bds, forecaster)
    bds = _select_channels(bds, forecaster)
    valid = pd.DatetimeIndex([t0 + (j + 1) * step for t0 in init_stamps for j in range(n_steps)])
    have = pd.DatetimeIndex(bds.time.values)
    missing = valid[~valid.isin(have)].unique()
    if len(missing):
        raise DiffsciError(f"{name}: boundary values missing for {len(missing)} valid time(s) of the forecast "
                           f"({missing[0]} .. {missing[-1]}); the file covers {have.min()} .. {have.max()}")
    vals, _ = stack_channels(bds.sel(time=valid.values), forecaster.config.variables)  # (I * L, C, H, W)
    if not np.isfinite(vals[:, :, mask]).all():
        raise DiffsciError(f"{name}: boundary values in the band are NaN or infinite")
    h, w = forecaster.config.grid_shape
    bvals = torch.from_numpy(np.ascontiguousarray(vals, dtype=np.float32)).reshape(len(init_stamps), n_steps, -1, h, w)
    return torch.from_numpy(mask), bvals, width


@torch.inference_mode()
def forecast(forecaster: Forecaster, init, *, init_times=None, lead_hours: int = 24, members: int = 8, seed: int = 0,
             steps: int | None = None, sampler: str | None = None, churn: float | None = None, progress: bool = True,
             boundary=None, boundary_width: int | None = None, device=None) -> xr.Dataset | None:
    """Ensemble rollouts from each init time of ``init`` (path or Dataset, ERA5/WB2 style).

    Returns the WB2-layout forecast dataset (not yet written; module docstring). Units are the
    checkpoint's: the init file is converted where unambiguous (see ``open_weather``) and
    refused where its units differ. ``lead_hours`` must be a multiple of the checkpoint's step.
    ``sampler``, ``steps`` (noise levels per step), ``churn``: None takes the checkpoint's own
    sampling settings (:func:`sampling_settings`).
    ``device``: where the model runs (``"cpu"``, ``"cuda:1"``, ``"auto"``; None: where the
    forecaster's network is); the network is moved there.

    Under ``torchrun`` every rank calls this with the same arguments: each rolls out its share
    of the (init time, member chunk) units, rank 0 returns the whole forecast and the other
    ranks return None. With several ranks, a CUDA device is the ``LOCAL_RANK``-th GPU.

    Regional checkpoints (``config.boundary_width > 0``) need ``boundary`` (path or Dataset, any
    layout ``open_weather`` reads, on the checkpoint's grid, with every valid time of the
    forecast): after every step the lateral boundary band
    (:func:`diffsci.weather.grid.boundary_mask`, ``boundary_width`` cells at each open edge,
    default the checkpoint's, not less) is replaced by the boundary file's values at that valid
    time, as limited-area models do (neural-lam, Oskarsson et al. 2023).
    """
    cfg = forecaster.config
    members = check_int(members, "members")
    lead_hours = check_int(lead_hours, "lead_hours")
    step = pd.Timedelta(hours=cfg.time_step_hours)
    n_steps = pd.Timedelta(hours=lead_hours) / step
    if abs(n_steps - round(n_steps)) > 1e-9:
        raise DiffsciError(f"lead_hours {lead_hours} is not a multiple of the checkpoint's time step {_hours(step)}")
    n_steps = int(round(n_steps))
    sampler, steps, churn = sampling_settings(cfg, sampler, steps, churn)
    device = rank_device(forecaster.device if device is None else resolve_device(device))
    forecaster.model.to(device)
    predictor = forecaster.predictor(sampler=sampler, steps=steps, churn=churn)
    ds = open_weather(init, variables=list(cfg.variables))
    if "realization" in ds.dims:
        if ds.sizes["realization"] != 1:
            raise DiffsciError(f"{ds.attrs['diffsci_source']}: initial conditions have {ds.sizes['realization']} "
                               "ensemble members; give one")
        ds = ds.isel(realization=0, drop=True)
    check_grid(ds, cfg.latitude, cfg.longitude)
    if cfg.static_fields:
        _check_static_fields(init, cfg, ds.attrs["diffsci_source"])
    _check_units(ds, forecaster)
    ds = _select_channels(ds, forecaster)
    _check_step(ds, step)
    idx = _init_indices(ds, init_times, step)
    init_stamps = pd.DatetimeIndex(ds.time.values[idx])
    band, bvals, width = _boundary_forcing(forecaster, boundary, boundary_width, init_stamps, n_steps, step)
    chunks = _run_chunks(predictor, ds, cfg.variables, idx, init_stamps, step, n_steps, members, seed,
                         band, bvals, device, progress)
    if chunks is None:
        return None
    n_chunks = -(-members // CHUNK)
    h, w = cfg.grid_shape
    out = np.zeros((len(idx), n_steps, members, len(cfg.channels), h, w), dtype=np.float32)
    for u, states in enumerate(chunks):
        k, ch = divmod(u, n_chunks)
        out[k, :, ch * CHUNK:ch * CHUNK + states.shape[1]] = states
    fds = _to_dataset(out, ds, forecaster, init_stamps, n_steps, members, seed, steps, sampler, churn)
    if band is not None:
        fds.attrs.update(boundary_file=str(boundary if not isinstance(boundary, xr.Dataset)
                                           else boundary.attrs.get("diffsci_source", "<dataset>")),
                         boundary_width=width)
    if ds.attrs.get("diffsci_notes"):  # unit conversions of the init file, recorded with the forecast
        fds.attrs["input_notes"] = ds.attrs["diffsci_notes"]
    return fds


def _run_chunks(predictor, ds, variables, idx, init_stamps, step, n_steps, members, seed, band, bvals, device,
                progress):
    """Roll out every (init time k, member chunk) unit of the forecast, spread over the
    ``torchrun`` ranks (:func:`diffsci.core.distributed.gather_shares`). Unit ``u`` is init
    ``u // n_chunks``, chunk ``u % n_chunks``; its result is (L, n_kept, C, H, W) float32.
    Returns every unit's result in order on rank 0, None on the other ranks."""
    n_chunks = -(-members // CHUNK)

    def work(units):
        bar = progress_bar(total=len(units) * n_steps, desc="forecast", enabled=progress and is_root())
        results, pair, pair_k = [], None, None
        for u in units:
            k, ch = divmod(u, n_chunks)
            if k != pair_k:
                both, _ = stack_channels(ds.isel(time=[idx[k] - 1, idx[k]]), variables)
                pair, pair_k = torch.from_numpy(both).to(device), k  # (2, C, H, W)
            valid_times = np.array([(init_stamps[k] + (j + 1) * step).to_datetime64() for j in range(n_steps)])
            forcing = None if band is None else (band, bvals[k])
            first, n_kept = ch * CHUNK, min(CHUNK, members - ch * CHUNK)
            gens = [make_generator(seed, str(init_stamps[k]), "member" if m < members else "pad", m, device=device)
                    for m in range(first, first + CHUNK)]
            x_prev, x_cur = (pair[j].expand(CHUNK, -1, -1, -1).clone() for j in (0, 1))
            states = rollout(predictor, x_prev, x_cur, valid_times, gens, boundary=forcing, on_step=lambda: bar.update(1))
            results.append(states[:n_kept].transpose(0, 1).cpu().numpy())
        bar.close()
        return results

    return gather_shares(len(idx) * n_chunks, work, device=device)


def _to_dataset(out, ds, forecaster, init_stamps, n_steps, members, seed, steps, sampler, churn=0.0) -> xr.Dataset:
    """``out`` (I, L, M, C, H, W) -> WB2 layout; ``ds`` the normalised init file (its levels)."""
    step = pd.Timedelta(hours=forecaster.config.time_step_hours).to_timedelta64().astype("timedelta64[ns]")
    leads = np.arange(1, n_steps + 1) * step
    coords = {
        "time": ("time", init_stamps.values, {"long_name": "forecast initialisation time",
                                              "standard_name": "forecast_reference_time"}),
        "prediction_timedelta": ("prediction_timedelta", leads, {"long_name": "lead time",
                                                                 "standard_name": "forecast_period"}),
        "realization": ("realization", np.arange(members), {"long_name": "ensemble member",
                                                            "standard_name": "realization"}),
        "latitude": ("latitude", np.asarray(forecaster.config.latitude, dtype=np.float64),
                     {"units": "degrees_north", "standard_name": "latitude", "long_name": "latitude"}),
        "longitude": ("longitude", np.asarray(forecaster.config.longitude, dtype=np.float64),
                      {"units": "degrees_east", "standard_name": "longitude", "long_name": "longitude"}),
        "valid_time": (("time", "prediction_timedelta"), init_stamps.values[:, None] + leads[None, :],
                       {"long_name": "valid time (init + lead)", "standard_name": "time"}),
    }
    data_vars = {}
    c0 = 0
    dims = ("time", "prediction_timedelta", "realization")
    cfg = forecaster.config
    for j, var in enumerate(cfg.variables):
        src = ds[var].attrs if var in ds else {}
        units = cfg.units[j] if cfg.units and cfg.units[j] else src.get("units", CANONICAL_UNITS.get(var, ""))
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
    model = "deterministic graph model" if forecaster.deterministic else "graph diffusion model"
    fds.attrs.update(
        title="diffsci ensemble forecast",
        source=f"diffsci weather forecast ({model})",
        checkpoint=forecaster.source, seed=seed, sampler=sampler, noise_levels=steps, churn=churn,
        Conventions="CF-1.8", history=f"created {time.strftime('%Y-%m-%dT%H:%M:%S')}",
    )
    return fds


def sampling_settings(cfg: WeatherModelConfig, sampler: str | None = None, steps: int | None = None,
                      churn: float | None = None) -> tuple[str, int, float]:
    """The ``(sampler, noise levels, effective churn)`` of a forecast: what is given, the rest
    from the checkpoint (``cfg.sampler``, ``cfg.sampler_steps``, ``cfg.churn``: the settings the
    model was chosen with) when the sampler is the checkpoint's, else :data:`DEFAULT_STEPS` (5
    levels for most samplers) and churn 2.5 (heun/euler only)."""
    own = sampler is None or sampler == cfg.sampler
    sampler = cfg.sampler if sampler is None else sampler
    get_sampler(sampler)
    if steps is None:
        steps = cfg.sampler_steps if own else DEFAULT_STEPS.get(sampler, DEFAULT_STEPS_OTHERS)
    if churn is None:
        churn = cfg.churn if own else 2.5
    return sampler, check_int(steps, "steps"), effective_churn(sampler, churn)


def write_forecast(fds: xr.Dataset, path: str | os.PathLike) -> Path:
    """Write netCDF (engine netcdf4) atomically: a temp file in the same (existing) folder, then rename."""
    return write_netcdf(fds, path, must_have_folder=True)

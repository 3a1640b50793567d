"""Weather baselines for ``diffsci bench weather``, each a forecast in WeatherBench 2 layout.

Every function here returns an ``xr.Dataset`` with dims ``time`` (init), ``prediction_timedelta``
(1 h .. ``lead_hours`` h), ``realization``, ``latitude`` (ascending), ``longitude`` — the layout
of :func:`diffsci.weather.forecast.forecast` — so that all systems are scored by the same code
(:func:`diffsci.weather.metrics.evaluate_forecast`).

Dimension letters used below: I init times, T leads, M members, H latitudes, W longitudes.

- :func:`persistence`: the init state repeated (one member);
- :func:`climatology`: the training-period mean by hour of day of the valid time (one member);
- :func:`prob_climatology`: members are stretches of the training period that start at the
  init's hour of day (so every valid time gets a training state of its own hour);
- :func:`perfect_model`: the generator's own dynamics restarted from the stored true
  simulator state with independent forcing noise (the practical bound on this data);
- :func:`deterministic_forecast`: the GraphCast-style baseline (the diffusion model's graph
  network trained with MSE on the residual, see :func:`train_deterministic`) rolled out by the
  same code as the diffusion ensemble.

:class:`TrainingPeriod` regenerates (exactly) the training data of the shipped checkpoints,
the period over which the climatologies are computed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from diffsci.core.errors import DiffsciError
from diffsci.core.io import check_int
from diffsci.core.io import progress as progress_bar  # ``progress`` names the functions' on/off argument

__all__ = [
    "TrainingPeriod", "SHIPPED_TRAINING_PERIOD", "forecast_layout", "persistence", "hourly_climatology",
    "climatology", "prob_climatology", "perfect_model", "deterministic_forecast", "train_deterministic",
]

DIMS = ("time", "prediction_timedelta", "realization", "latitude", "longitude")


@dataclass(frozen=True)
class TrainingPeriod:
    """The generator call that made a training set (``diffsci weather make-data`` arguments).

    Trajectory ``k`` of :func:`diffsci.weather.generator.generate` depends only on
    ``(seed, k)``, and its hours do not depend on ``hours``, so :meth:`generate` with fewer
    hours or trajectories returns an exact prefix of the training data.
    """

    seed: int = 0
    grid: tuple[int, int] = (32, 64)
    hours: int = 1000
    trajectories: int = 4
    spinup_hours: int = 480

    def __post_init__(self):
        check_int(self.hours, "TrainingPeriod.hours")
        check_int(self.trajectories, "TrainingPeriod.trajectories")
        check_int(self.spinup_hours, "TrainingPeriod.spinup_hours", minimum=0)

    def generate(self, hours: int | None = None, trajectories: int | None = None, progress: bool = False) -> xr.Dataset:
        """The first ``hours`` hours of the first ``trajectories`` trajectories (default: all)."""
        from diffsci.weather.generator import GeneratorOutput, generate

        hours = min(hours or self.hours, self.hours)
        trajectories = min(trajectories or self.trajectories, self.trajectories)
        return generate(grid=self.grid, hours=hours, trajectories=trajectories, seed=self.seed,
                        spinup_hours=self.spinup_hours, output=GeneratorOutput(store_state=False), progress=progress)


#: ``diffsci weather make-data --grid 32x64 --hours 1000 --trajectories 4 --seed 0`` (default
#: spin-up 480 h): the training data of weather/data/default_checkpoint.pt and
#: benchmarks/data/deterministic_weather.pt (see weather/data/CHECKPOINT.md).
SHIPPED_TRAINING_PERIOD = TrainingPeriod()


def _leads(lead_hours: int) -> np.ndarray:
    return (np.arange(1, lead_hours + 1) * np.timedelta64(1, "h")).astype("timedelta64[ns]")


def _check(truth: xr.Dataset, init_times, lead_hours: int, variables) -> pd.DatetimeIndex:
    check_int(lead_hours, "lead_hours")
    missing = [v for v in variables if v not in truth]
    if missing:
        raise DiffsciError(f"variables {missing} not in the truth data (has {list(truth.data_vars)})")
    inits = pd.DatetimeIndex(np.atleast_1d(np.asarray(init_times, dtype="datetime64[ns]")))
    if len(inits) == 0:
        raise DiffsciError("no init times given")
    return inits


def forecast_layout(values: dict, init_times, lead_hours: int, latitude, longitude, attrs: dict | None = None) -> xr.Dataset:
    """Wrap arrays into the WB2 forecast layout.

    Parameters
    ----------
    values : dict of str -> np.ndarray
        Shape (I, T, M, H, W) per variable; latitude ascending.
    """
    first = next(iter(values.values()))
    coords = {"time": pd.DatetimeIndex(init_times).values, "prediction_timedelta": _leads(lead_hours),
              "realization": np.arange(first.shape[2]),
              "latitude": np.asarray(latitude, np.float64), "longitude": np.asarray(longitude, np.float64)}
    ds = xr.Dataset({v: (DIMS, np.asarray(a, np.float32)) for v, a in values.items()}, coords=coords)
    ds.attrs.update(attrs or {})
    return ds


def _valid_hours(inits: pd.DatetimeIndex, lead_hours: int) -> np.ndarray:
    """Hour of day of each valid time. Shape (I, T)."""
    return (inits.hour.values[:, None] + np.arange(1, lead_hours + 1)[None]) % 24


def persistence(truth: xr.Dataset, init_times, lead_hours: int, variables) -> xr.Dataset:
    """The state at the init time, repeated at every lead (one realization)."""
    inits = _check(truth, init_times, lead_hours, variables)
    vals = {}
    for v in variables:
        x0 = truth[v].sel(time=inits.values).transpose("time", "latitude", "longitude").values  # (I, H, W)
        vals[v] = np.broadcast_to(x0[:, None, None], (len(inits), lead_hours, 1) + x0.shape[1:])
    return forecast_layout(vals, inits, lead_hours, truth.latitude, truth.longitude, {"system": "persistence"})


def hourly_climatology(train: xr.Dataset, variables) -> xr.Dataset:
    """Mean over the training period by hour of day: dims (hour, latitude, longitude), hour 0..23."""
    hours = pd.DatetimeIndex(train.time.values).hour
    absent = sorted(set(range(24)) - set(hours))
    if absent:
        raise DiffsciError(f"the climatology period has no state at hours {absent} (needs >= 24 hourly states)")
    return train[list(variables)].groupby("time.hour").mean("time").load()


def climatology(clim: xr.Dataset, truth: xr.Dataset, init_times, lead_hours: int, variables) -> xr.Dataset:
    """The hour-of-day climatology ``clim`` (from :func:`hourly_climatology`) at each valid time."""
    inits = _check(truth, init_times, lead_hours, variables)
    vh = _valid_hours(inits, lead_hours)
    vals = {v: clim[v].transpose("hour", "latitude", "longitude").sel(hour=vh.ravel()).values
            .reshape(vh.shape + (1,) + (clim.sizes["latitude"], clim.sizes["longitude"])) for v in variables}
    return forecast_layout(vals, inits, lead_hours, truth.latitude, truth.longitude, {"system": "climatology"})


def prob_climatology(train: xr.Dataset, truth: xr.Dataset, init_times, lead_hours: int, variables,
                     members: int, seed: int = 0) -> xr.Dataset:
    """Members are stretches of the training period starting at the init's hour of day.

    Member ``m`` of init ``i`` is ``train[s + 1 .. s + lead_hours]`` for a start ``s`` drawn
    (without replacement where possible) among training hours with the same hour of day as
    the init and the whole stretch inside one trajectory; so each valid time gets a training
    state of its own hour of day, and each member is a physically consistent trajectory.
    """
    inits = _check(truth, init_times, lead_hours, variables)
    check_int(members, "members")
    times = pd.DatetimeIndex(train.time.values)
    traj = np.asarray(train.trajectory.values) if "trajectory" in train.coords else np.zeros(len(times), int)
    starts = np.arange(len(times) - lead_hours)
    starts = starts[traj[starts] == traj[starts + lead_hours]]
    rng = np.random.default_rng(seed)
    picks = np.zeros((len(inits), members), np.int64)
    for i, t in enumerate(inits):
        pool = starts[times.hour[starts] == t.hour]
        if len(pool) == 0:
            raise DiffsciError(f"the climatology period has no {lead_hours}-hour stretch starting at hour {t.hour}")
        picks[i] = rng.choice(pool, size=members, replace=len(pool) < members)
    idx = picks[:, None, :] + np.arange(1, lead_hours + 1)[None, :, None]  # (I, T, M)
    vals = {}
    for v in variables:
        data = train[v].transpose("time", "latitude", "longitude").values  # (N, H, W)
        vals[v] = data[idx]
    return forecast_layout(vals, inits, lead_hours, truth.latitude, truth.longitude,
                           {"system": "prob_climatology", "seed": seed})


def perfect_model(raw: xr.Dataset, init_times, lead_hours: int, variables, members: int, seed: int = 0,
                  progress: bool = False) -> xr.Dataset:
    """The generator restarted from the true simulator state with independent forcing noise.

    ``raw`` is the file written by ``diffsci weather make-data`` (with ``sim_state``). Member
    ``m`` of an init depends only on ``(seed, init index, m)``.
    """
    from diffsci.weather.generator import perfect_model_ensemble

    check_int(lead_hours, "lead_hours")
    check_int(members, "members")
    inits = pd.DatetimeIndex(np.atleast_1d(np.asarray(init_times, dtype="datetime64[ns]")))
    vals = {v: [] for v in variables}
    lat = lon = None
    for t in progress_bar(inits, desc="perfect-model ensemble", enabled=progress):
        ens = perfect_model_ensemble(raw, t, lead_hours, members, seed=seed)
        ens = ens.sortby("latitude")
        lat, lon = ens.latitude.values, ens.longitude.values
        for v in variables:
            if v not in ens:
                raise DiffsciError(f"perfect_model: the generator has no variable {v!r}")
            vals[v].append(ens[v].transpose("time", "member", "latitude", "longitude").values)  # (T, M, H, W)
    vals = {v: np.stack(a) for v, a in vals.items()}
    return forecast_layout(vals, inits, lead_hours, lat, lon, {"system": "perfect_model", "seed": seed})


def deterministic_forecast(checkpoint, truth: xr.Dataset, init_times, lead_hours: int) -> xr.Dataset:
    """Roll out the MSE-trained graph network (one realization) with the diffusion model's code."""
    from diffsci.weather.forecast import ForecastSettings, forecast, load_forecaster

    forecaster = load_forecaster(checkpoint)
    if not forecaster.deterministic:
        raise DiffsciError(f"{checkpoint}: not a deterministic weather checkpoint (train with --deterministic)")
    inits = pd.DatetimeIndex(np.atleast_1d(np.asarray(init_times, dtype="datetime64[ns]")))
    settings = ForecastSettings(init_times=[str(t) for t in inits], lead_hours=lead_hours, members=1)
    out = forecast(forecaster, truth, settings, progress=False)
    out.attrs["system"] = "deterministic"
    return out


def train_deterministic(data, out, *, max_minutes: float | None = 15.0, steps: int = 100_000,
                        export_to: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """Train the GraphCast-style baseline: the diffusion model's graph network, MSE on the residual.

    A recipe of kind ``weather-graph-deterministic`` (no noise input, area-weighted MSE on the
    normalised next-step residual) run by :func:`diffsci.core.train.fit`, with the same
    optimiser settings as the diffusion model. Returns the checkpoint path (``out/latest.pt``,
    or ``export_to``: a slim copy with the EMA weights, config and normalisation statistics).
    """
    from diffsci.core.checkpoint import export_checkpoint
    from diffsci.core.train import Recipe, fit
    from diffsci.weather.diffusion import KIND_DETERMINISTIC

    recipe = Recipe.from_tables(KIND_DETERMINISTIC, data={"path": str(data)},
                                train={"steps": steps, "device": "cpu", "max_minutes": max_minutes})
    res = fit(recipe, out, progress=progress, resume=(Path(out) / "latest.pt").exists())
    ckpt = Path(res.checkpoint)
    if export_to is not None:
        export_checkpoint(ckpt, export_to)
        return Path(export_to)
    return ckpt

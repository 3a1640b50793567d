"""Ensemble forecasts: autoregressive rollouts of a loaded weather model on any torch device.

Member ``m`` of the forecast from init time ``T`` draws all its noise from the generator of
``(seed, T, m)`` (on the forecast's device). Members are rolled out ``chunk`` at a time
(:attr:`ForecastSettings.chunk`; default: as many as free memory holds, :func:`default_chunk`),
and within a chunk the network always sees groups of :data:`EVAL_BATCH` member slots, member
``m`` in slot ``m % EVAL_BATCH`` (slots without a member of the chunk are throw-away padding,
never written; :class:`~diffsci.weather.predictor.GroupedBatch`): batched kernels round
differently at other batch sizes (measured: a batch of 1 or 2 differs from 4 by up to 0.012 in
z after 3 steps on CPU), so member ``m`` is bit-for-bit the same whatever the ensemble size and
chunk on one device. Under ``torchrun`` the (init time, chunk) units are spread over the ranks
(:func:`diffsci.core.distributed.gather_shares`) and gathered to rank 0, so the forecast is
bitwise that of one process.

Streaming: :func:`forecast_to_file` writes every lead of a chunk to the netCDF file as soon as
it is made (a temp file beside the target, renamed onto it at the end; an interrupted forecast
leaves nothing under the target name), so host and device memory hold one chunk of members x a
few states (plus one group of network activations), whatever the number of leads and members;
:func:`forecast` runs the same per-lead machinery into an in-memory dataset. Under ``torchrun``
rank 0 streams its own units and writes the other ranks' units when they are gathered (those
are held in memory there).

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

import contextlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import netCDF4
import numpy as np
import pandas as pd
import torch
import xarray as xr

from diffsci.core.checkpoint import load_bundle
from diffsci.core.config import Provenance
from diffsci.core.distributed import gather_shares, is_root, rank_device
from diffsci.core.errors import DiffsciError
from diffsci.core.io import atomic_output, check_int, progress as progress_bar, write_netcdf
from diffsci.core.samplers import get_sampler
from diffsci.core.spaces import Euclidean
from diffsci.core.utils import make_generator, resolve_device
from diffsci.weather.data import (CANONICAL_UNITS, NormStats, channel_names, check_grid, checked_weather, open_layout,
                                  open_weather, split_channels, stack_channels, time_step)
from diffsci.weather.diffusion import KIND, KIND_DETERMINISTIC, WeatherModelConfig, effective_churn
from diffsci.weather.grid import boundary_mask
from diffsci.weather.layouts import normalize_unit
from diffsci.weather.predictor import (DiffusionStep, DirectStep, GroupedBatch, NormalizedResidual, StepPredictor,
                                       rollout_steps)
from diffsci.weather.static import static_values

__all__ = ["effective_churn", "sampling_settings", "ForecastSettings", "Forecaster", "load_forecaster", "forecast",
           "forecast_to_file", "write_forecast", "default_chunk", "available_memory", "EVAL_BATCH", "CHUNK",
           "DEFAULT_STEPS"]

#: member slots per network evaluation (fixed, so results do not depend on the ensemble size or chunk)
EVAL_BATCH = 4
#: the former name of :data:`EVAL_BATCH` (the batch one network evaluation sees; kept for its callers)
CHUNK = EVAL_BATCH

#: share of the free memory (host, or the GPU's) that the default chunk's states may take
CHUNK_MEMORY_SHARE = 0.25
#: float32 states held per member of a chunk: the two states a step reads, the one it makes, the
#: concatenation of the groups' results, its host copy and the channel split written out
STATES_PER_MEMBER = 6

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


@dataclass(frozen=True)
class ForecastSettings:
    """What one forecast computes (the options of ``diffsci weather forecast``).

    ``lead_hours``: a multiple of the checkpoint's time step; ``members``; ``seed``;
    ``init_times``: ISO 8601 times of the init file (None: its last time). ``sampler``,
    ``steps`` (noise levels per forecast step: the sampler's grid, run once per model step) and
    ``churn``: None takes the checkpoint's own (:func:`sampling_settings`). ``chunk``: members
    rolled out together (memory holds one chunk's states; results do not depend on it; None:
    :func:`default_chunk`, from free memory, at most ``members``). Regional
    checkpoints: ``boundary`` values (path or Dataset) and ``boundary_width`` (cells; None: the
    checkpoint's band). Checked when made.
    """

    lead_hours: int = 24
    members: int = 8
    seed: int = 0
    init_times: tuple[str, ...] | None = None
    sampler: str | None = None
    steps: int | None = None
    churn: float | None = None
    boundary: object = None
    boundary_width: int | None = None
    chunk: int | None = None

    def __post_init__(self):
        check_int(self.members, "members")
        if self.chunk is not None:
            check_int(self.chunk, "chunk")
        check_int(self.lead_hours, "lead_hours")
        if isinstance(self.init_times, str):
            object.__setattr__(self, "init_times", (self.init_times,))
        elif self.init_times is not None:
            object.__setattr__(self, "init_times", tuple(self.init_times))
        if self.sampler is not None:
            get_sampler(self.sampler)


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
    put on ``device`` (``"auto"``: CUDA when present; under ``torchrun``, a CUDA device is the
    ``LOCAL_RANK``-th GPU): the one place a forecast's device is resolved."""
    bundle = load_bundle(path, (KIND, KIND_DETERMINISTIC), device=rank_device(resolve_device(device)))
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


def _check_static_fields(full: xr.Dataset, cfg: WeatherModelConfig) -> None:
    """The model uses the static fields stored in its checkpoint; one the init file (``full``,
    every variable, in the internal layout) also carries must be the same (within
    ``STATIC_TOLERANCE`` of its std), else :class:`DiffsciError`."""
    name = full.attrs.get("diffsci_source", "<dataset>")
    got = static_values(full, cfg.static_fields, required=False)
    for field_name, stored in zip(cfg.static_fields, cfg.static_values):
        if field_name not in got:
            continue
        ref = np.asarray(stored, dtype=np.float64).reshape(cfg.grid_shape)
        diff = float(np.max(np.abs(got[field_name] - ref)))
        if diff > STATIC_TOLERANCE * ref.std():
            raise DiffsciError(f"{name}: static field {field_name!r} differs from the one the checkpoint was trained "
                               f"with (by up to {diff:.4g}, {diff / ref.std():.3g} of its std); the model uses its "
                               f"own stored {field_name!r}: remove it from the file or use a checkpoint trained with it")


def _initial_conditions(init, forecaster: Forecaster, step: pd.Timedelta) -> xr.Dataset:
    """The init file opened once and checked once: one member, the checkpoint's grid, its
    static fields (when the file has them), units, channels (levels picked) and time step."""
    cfg = forecaster.config
    full = open_layout(init)
    ds = checked_weather(full, variables=list(cfg.variables))
    name = ds.attrs["diffsci_source"]
    if "realization" in ds.dims:
        if ds.sizes["realization"] != 1:
            raise DiffsciError(f"{name}: initial conditions have {ds.sizes['realization']} ensemble members; give one")
        ds = ds.isel(realization=0, drop=True)
    check_grid(ds, cfg.latitude, cfg.longitude)
    if cfg.static_fields:
        _check_static_fields(full, cfg)
    _check_units(ds, forecaster)
    ds = _select_channels(ds, forecaster)
    _check_step(ds, step)
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


@dataclass(frozen=True)
class _Rollout:
    """One forecast's units of work: the checked init file ``ds`` (the checkpoint's channels),
    its ``variables``, the init indices ``idx`` and times ``init_stamps``, ``n_steps`` model
    steps of ``step``, ``members``, ``seed`` and ``chunk`` (members rolled out together), and
    for a regional model the boundary band ``band`` (H, W) bool and values ``boundary_values``
    (:class:`_BoundaryValues`: ``[k][lead]`` one (C, H, W) state) (None: global). A unit is (init ``k``, chunk ``c``): members
    :meth:`members_of` ``(c)``."""

    ds: xr.Dataset
    variables: tuple[str, ...]
    idx: list[int]
    init_stamps: pd.DatetimeIndex
    step: pd.Timedelta
    n_steps: int
    members: int
    seed: int
    chunk: int
    band: torch.Tensor | None = None
    boundary_values: "_BoundaryValues | None" = None

    @property
    def n_chunks(self) -> int:
        return -(-self.members // self.chunk)

    def members_of(self, c: int) -> range:
        return range(c * self.chunk, min((c + 1) * self.chunk, self.members))


def _boundary_forcing(forecaster: Forecaster, settings: ForecastSettings, init_stamps, n_steps: int,
                      step: pd.Timedelta):
    """Band mask (H, W) bool tensor, boundary values (:class:`_BoundaryValues`: ``[k][lead]``
    the (C, H, W) float32 state, read when used) and the band width; ``(None, None, 0)`` for a
    global checkpoint without boundary file. Refuses what cannot be used."""
    boundary, width = settings.boundary, settings.boundary_width
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
    values = _BoundaryValues(bds, forecaster.config.variables, valid, n_steps)
    for i in range(len(valid)):  # one valid time at a time: memory holds one state
        if not torch.isfinite(values.state(i)[:, mask]).all():
            raise DiffsciError(f"{name}: boundary values in the band are NaN or infinite")
    return torch.from_numpy(mask), values, width


class _BoundaryValues:
    """A boundary file's states at a forecast's valid times (init-major, ``n_steps`` per init),
    read one valid time at a time from the (lazily opened) dataset ``bds``: ``self[k][lead]`` is
    the (C, H, W) float32 tensor of init ``k``'s step ``lead``, so a regional forecast holds one
    boundary state, not all (I, L) of them."""

    def __init__(self, bds: xr.Dataset, variables, valid: pd.DatetimeIndex, n_steps: int):
        self.bds, self.variables, self.valid, self.n_steps = bds, tuple(variables), valid, n_steps

    def state(self, i: int) -> torch.Tensor:
        vals, _ = stack_channels(self.bds.sel(time=self.valid.values[i:i + 1]), self.variables)
        return torch.from_numpy(np.ascontiguousarray(vals[0], dtype=np.float32))

    def __getitem__(self, k: int) -> "_Lazy":
        return _Lazy(lambda lead: self.state(k * self.n_steps + lead), self.n_steps)


@dataclass(frozen=True)
class _Lazy:
    """A sequence of ``n`` items made by ``fn(i)`` when asked for."""

    fn: object
    n: int

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        if not 0 <= i < self.n:
            raise IndexError(i)
        return self.fn(i)


def _model_steps(cfg: WeatherModelConfig, lead_hours: int) -> tuple[pd.Timedelta, int]:
    """One model step (the checkpoint's) and the number of them in ``lead_hours``."""
    step = pd.Timedelta(hours=cfg.time_step_hours)
    n_steps = pd.Timedelta(hours=lead_hours) / step
    if abs(n_steps - round(n_steps)) > 1e-9:
        raise DiffsciError(f"lead_hours {lead_hours} is not a multiple of the checkpoint's time step {_hours(step)}")
    return step, int(round(n_steps))


@dataclass(frozen=True)
class _Job:
    """A prepared forecast: its units of work (``plan``), the step predictor (the network in
    groups of :data:`EVAL_BATCH` member slots), the device it runs on, the checkpoint's config
    and the output's global attributes."""

    plan: _Rollout
    predictor: StepPredictor
    device: torch.device
    config: WeatherModelConfig
    attrs: dict


def _prepare(forecaster: Forecaster, init, settings: ForecastSettings | None, device) -> _Job:
    """Everything checked and resolved before any step is taken (:func:`forecast`'s arguments)."""
    settings = ForecastSettings() if settings is None else settings
    cfg = forecaster.config
    step, n_steps = _model_steps(cfg, settings.lead_hours)
    sampling = sampling_settings(cfg, settings.sampler, settings.steps, settings.churn)
    if device is not None:
        forecaster.model.to(rank_device(resolve_device(device)))
    sampler, steps, churn = sampling
    predictor = GroupedBatch(forecaster.predictor(sampler=sampler, steps=steps, churn=churn), EVAL_BATCH)
    ds = _initial_conditions(init, forecaster, step)
    idx = _init_indices(ds, settings.init_times, step)
    init_stamps = pd.DatetimeIndex(ds.time.values[idx])
    band, bvals, width = _boundary_forcing(forecaster, settings, init_stamps, n_steps, step)
    chunk = min(settings.chunk or default_chunk(forecaster, settings.members), settings.members)
    plan = _Rollout(ds, tuple(cfg.variables), idx, init_stamps, step, n_steps, settings.members, settings.seed,
                    chunk, band, bvals)
    attrs = _global_attrs(forecaster, plan.seed, sampling)
    if band is not None:
        attrs.update(boundary_file=_source_name(settings.boundary), boundary_width=width)
    if ds.attrs.get("diffsci_notes"):  # unit conversions of the init file, recorded with the forecast
        attrs["input_notes"] = ds.attrs["diffsci_notes"]
    return _Job(plan, predictor, forecaster.device, cfg, attrs)


@torch.inference_mode()
def forecast(forecaster: Forecaster, init, settings: ForecastSettings | None = None, *, device=None,
             progress: bool = True) -> xr.Dataset | None:
    """Ensemble rollouts from each init time of ``init`` (path or Dataset, ERA5/WB2 style).

    ``settings`` (:class:`ForecastSettings`; None: its defaults): lead, members, seed, init
    times, sampling (None fields: the checkpoint's own, :func:`sampling_settings`), the chunk of
    members rolled out together and, for a regional checkpoint, the boundary values. Returns the
    WB2-layout forecast dataset, in memory (not yet written; module docstring; for forecasts
    larger than memory, :func:`forecast_to_file` streams them to disk). Units are the
    checkpoint's: the init file is converted where unambiguous (see ``open_weather``) and
    refused where its units differ.
    ``device``: where the model runs (``"cpu"``, ``"cuda:1"``, ``"auto"``; None: where the
    forecaster's network is, placed by :func:`load_forecaster`); the network is moved there.

    Under ``torchrun`` every rank calls this with the same arguments: each rolls out its share
    of the (init time, member chunk) units, rank 0 returns the whole forecast and the other
    ranks return None. With several ranks, a CUDA device is the ``LOCAL_RANK``-th GPU.

    Regional checkpoints (``config.boundary_width > 0``) need ``settings.boundary`` (path or
    Dataset, any layout ``open_weather`` reads, on the checkpoint's grid, with every valid time
    of the forecast): after every step the lateral boundary band
    (:func:`diffsci.weather.grid.boundary_mask`, ``boundary_width`` cells at each open edge,
    default the checkpoint's, not less) is replaced by the boundary file's values at that valid
    time, as limited-area models do (neural-lam, Oskarsson et al. 2023).
    """
    job = _prepare(forecaster, init, settings, device)
    sink = _MemorySink(job.plan) if is_root() else None
    _run_units(job, sink, progress)
    return None if sink is None else _to_dataset(sink.out, job)


@torch.inference_mode()
def forecast_to_file(forecaster: Forecaster, init, path: str | os.PathLike, settings: ForecastSettings | None = None,
                     *, device=None, progress: bool = True) -> Path | None:
    """:func:`forecast` streamed to the netCDF file ``path`` (its folder must exist): every lead
    of a chunk is written as soon as it is made, so memory holds one chunk of members x a few
    states whatever the number of leads and members. The file is the one
    ``write_forecast(forecast(...), path)`` writes (same layout, attributes and values), written
    atomically: a temp file beside ``path``, renamed onto it at the end; on any error (or
    interrupt) the temp file is removed and nothing is left under ``path``. Returns ``path``
    (None on a ``torchrun`` rank other than 0, which writes nothing: rank 0 writes its own units
    as it makes them and the other ranks' when they are gathered)."""
    job = _prepare(forecaster, init, settings, device)
    if not is_root():
        _run_units(job, None, progress)
        return None
    with atomic_output(path, must_have_folder=True) as tmp:
        with _create_file(tmp, job) as nc:
            _run_units(job, _FileSink(nc, job.plan), progress)
    return Path(path)


def _source_name(path_or_dataset) -> str:
    if isinstance(path_or_dataset, xr.Dataset):
        return path_or_dataset.attrs.get("diffsci_source", "<dataset>")
    return str(path_or_dataset)


def default_chunk(forecaster: Forecaster, members: int, device=None) -> int:
    """Members rolled out together when :attr:`ForecastSettings.chunk` is None: as many as
    :data:`CHUNK_MEMORY_SHARE` of the free memory holds at :data:`STATES_PER_MEMBER` float32
    states (C, H, W) per member, at most ``members``, and a multiple of :data:`EVAL_BATCH` when
    fewer (no padded evaluation but the last). Free memory: the GPU's
    (``torch.cuda.mem_get_info``) on CUDA, else the host's available memory
    (:func:`available_memory`). ``device``: None, the forecaster's."""
    cfg = forecaster.config
    h, w = cfg.grid_shape
    per_member = STATES_PER_MEMBER * 4 * len(cfg.channels) * h * w
    device = torch.device(forecaster.device if device is None else device)
    free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else available_memory()
    fit = int(CHUNK_MEMORY_SHARE * free) // per_member
    if fit >= members:
        return members
    return fit - fit % EVAL_BATCH if fit >= EVAL_BATCH else max(1, fit)


def available_memory() -> int:
    """Bytes of host memory available to this process: ``MemAvailable`` of /proc/meminfo (else
    the free pages), less when a cgroup v2 memory limit (``memory.max - memory.current``) is lower."""
    free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    with contextlib.suppress(OSError, ValueError):
        text = Path("/proc/meminfo").read_text()
        free = int(re.search(r"^MemAvailable:\s+(\d+) kB", text, re.M).group(1)) * 1024
    with contextlib.suppress(OSError, ValueError):
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            free = min(free, int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text()))
    return max(free, 0)


def _unit_leads(job: _Job, k: int, c: int, pair: torch.Tensor):
    """Roll out unit (init ``k``, chunk ``c``) from ``pair`` (2, C, H, W) on the device: yields
    each lead's states of the chunk's members, (n, C, H, W) float32 numpy. The members sit in
    slot ``m % EVAL_BATCH`` of their group of :data:`EVAL_BATCH` slots; the other slots are
    padding with generators of their own (never returned)."""
    plan, device = job.plan, job.device
    members = plan.members_of(c)
    first = members.start - members.start % EVAL_BATCH
    stop = -(-members.stop // EVAL_BATCH) * EVAL_BATCH
    stamp = plan.init_stamps[k]
    gens = [make_generator(plan.seed, str(stamp), "member" if m in members else "pad", m, device=device)
            for m in range(first, stop)]
    x_prev, x_cur = (pair[j].expand(stop - first, -1, -1, -1).clone() for j in (0, 1))
    valid_times = np.array([(stamp + (j + 1) * plan.step).to_datetime64() for j in range(plan.n_steps)])
    forcing = None if plan.band is None else (plan.band, plan.boundary_values[k])
    keep = slice(members.start - first, members.stop - first)
    for x_next in rollout_steps(job.predictor, x_prev, x_cur, valid_times, gens, boundary=forcing):
        yield x_next[keep].cpu().numpy()


def _run_units(job: _Job, sink, progress: bool) -> None:
    """Roll out every (init time k, member chunk c) unit, spread over the ``torchrun`` ranks
    (:func:`diffsci.core.distributed.gather_shares`; unit ``u`` is ``divmod(u, n_chunks)``).
    Each lead's states go to ``sink.put(k, lead, first member, states)`` as they are made; a
    rank without a sink (not rank 0) returns its units' (L, n, C, H, W) states, which rank 0
    puts into its sink when they are gathered."""
    plan = job.plan

    def work(units):
        bar = progress_bar(total=len(units) * plan.n_steps, desc="forecast", enabled=progress and is_root())
        results, pair, pair_k = [], None, None
        for u in units:
            k, c = divmod(u, plan.n_chunks)
            if k != pair_k:
                both, _ = stack_channels(plan.ds.isel(time=[plan.idx[k] - 1, plan.idx[k]]), plan.variables)
                pair, pair_k = torch.from_numpy(both).to(job.device), k  # (2, C, H, W)
            kept = []
            for lead, states in enumerate(_unit_leads(job, k, c, pair)):
                if sink is None:
                    kept.append(states)
                else:
                    sink.put(k, lead, plan.members_of(c).start, states)
                bar.update(1)
            results.append(np.stack(kept) if sink is None else None)
        bar.close()
        return results

    gathered = gather_shares(len(plan.idx) * plan.n_chunks, work, device=job.device)
    for u, states in enumerate(gathered or ()):
        if states is not None:  # another rank's unit, on rank 0
            k, c = divmod(u, plan.n_chunks)
            for lead, block in enumerate(states):
                sink.put(k, lead, plan.members_of(c).start, block)


class _MemorySink:
    """The whole forecast in memory: ``out`` (I, L, M, C, H, W) float32."""

    def __init__(self, plan: _Rollout):
        self.shape, self.out = (len(plan.idx), plan.n_steps, plan.members), None  # made at the first put

    def put(self, k: int, lead: int, first: int, states: np.ndarray) -> None:
        if self.out is None:
            self.out = np.zeros(self.shape + states.shape[1:], dtype=np.float32)
        self.out[k, lead, first:first + len(states)] = states


class _FileSink:
    """The forecast's netCDF file (open, its variables made by :func:`_create_file`): each
    lead's states (n, C, H, W) are split into the variables and written in place."""

    def __init__(self, nc: netCDF4.Dataset, plan: _Rollout):
        self.nc, self.plan = nc, plan

    def put(self, k: int, lead: int, first: int, states: np.ndarray) -> None:
        for var, values in split_channels(states, self.plan.ds, self.plan.variables).items():
            self.nc[var][k, lead, first:first + len(states)] = values


def _coords(plan: _Rollout, cfg: WeatherModelConfig) -> dict:
    """The forecast's coordinates (WB2 layout, CF attributes); ``level`` when a variable has one."""
    step = pd.Timedelta(hours=cfg.time_step_hours).to_timedelta64().astype("timedelta64[ns]")
    leads = np.arange(1, plan.n_steps + 1) * step
    stamps = plan.init_stamps.values
    coords = {
        "time": ("time", stamps, {"long_name": "forecast initialisation time",
                                  "standard_name": "forecast_reference_time"}),
        "prediction_timedelta": ("prediction_timedelta", leads, {"long_name": "lead time",
                                                                 "standard_name": "forecast_period"}),
        "realization": ("realization", np.arange(plan.members), {"long_name": "ensemble member",
                                                                 "standard_name": "realization"}),
        "latitude": ("latitude", np.asarray(cfg.latitude, dtype=np.float64),
                     {"units": "degrees_north", "standard_name": "latitude", "long_name": "latitude"}),
        "longitude": ("longitude", np.asarray(cfg.longitude, dtype=np.float64),
                      {"units": "degrees_east", "standard_name": "longitude", "long_name": "longitude"}),
        "valid_time": (("time", "prediction_timedelta"), stamps[:, None] + leads[None, :],
                       {"long_name": "valid time (init + lead)", "standard_name": "time"}),
    }
    if any("level" in plan.ds[v].dims for v in cfg.variables):
        coords["level"] = ("level", np.asarray(plan.ds.level.values, dtype=np.float64),
                           {"units": "hPa", "long_name": "pressure level", "standard_name": "air_pressure",
                            "positive": "down"})
    return coords


def _variable_attrs(var: str, j: int, ds: xr.Dataset, cfg: WeatherModelConfig) -> dict:
    """CF attributes of forecast variable ``var`` (the ``j``-th): units as in the checkpoint."""
    src = ds[var].attrs
    units = cfg.units[j] if cfg.units and cfg.units[j] else src.get("units", CANONICAL_UNITS.get(var, ""))
    attrs = {"units": units, "standard_name": STANDARD_NAMES.get(var, src.get("standard_name", "")),
             "long_name": src.get("long_name", var)}
    return {k: a for k, a in attrs.items() if a}


def _variables(plan: _Rollout, cfg: WeatherModelConfig) -> dict[str, tuple[tuple[str, ...], dict]]:
    """Each forecast variable's dims and CF attributes, in the checkpoint's order."""
    dims = ("time", "prediction_timedelta", "realization")
    return {var: (dims + (("level",) if "level" in plan.ds[var].dims else ()) + ("latitude", "longitude"),
                  _variable_attrs(var, j, plan.ds, cfg)) for j, var in enumerate(cfg.variables)}


def _global_attrs(forecaster: Forecaster, seed: int, sampling: tuple[str, int, float]) -> dict:
    """The forecast's global attributes; ``sampling`` the (sampler, noise levels, churn) used."""
    model = "deterministic graph model" if forecaster.deterministic else "graph diffusion model"
    sampler, steps, churn = sampling
    return dict(title="diffsci ensemble forecast", source=f"diffsci weather forecast ({model})",
                checkpoint=forecaster.source, seed=seed, sampler=sampler, noise_levels=steps, churn=churn,
                Conventions="CF-1.8", history=f"created {time.strftime('%Y-%m-%dT%H:%M:%S')}")


def _to_dataset(out: np.ndarray, job: _Job) -> xr.Dataset:
    """``out`` (I, L, M, C, H, W) -> WB2 layout (module docstring), with the job's attributes."""
    plan = job.plan
    fields = split_channels(out, plan.ds, job.config.variables)  # (I, L, M, [level,] H, W) each
    data_vars = {var: (dims, fields[var], attrs) for var, (dims, attrs) in _variables(plan, job.config).items()}
    return xr.Dataset(data_vars, coords=_coords(plan, job.config), attrs=dict(job.attrs))


def _create_file(path: Path, job: _Job) -> netCDF4.Dataset:
    """The forecast file at ``path`` with every variable, coordinate and attribute of
    ``write_forecast(_to_dataset(...))`` and no values yet (the data variables are made with
    netCDF4 as xarray makes them: float32, ``_FillValue`` NaN, contiguous, ``coordinates`` naming
    the non-dimension coordinates; the coordinates and global attributes are then written by
    xarray itself). Returns the file opened for writing the values."""
    plan, cfg = job.plan, job.config
    coords = _coords(plan, cfg)
    sizes = {name: len(values) for name, (dims, values, _) in coords.items() if dims == name}
    aux = [name for name, (dims, _, _) in coords.items() if dims != name]
    with netCDF4.Dataset(path, "w", format="NETCDF4") as nc:
        for var, (dims, attrs) in _variables(plan, cfg).items():
            for dim in dims:
                if dim not in nc.dimensions:
                    nc.createDimension(dim, sizes[dim])
            v = nc.createVariable(var, np.float32, dims, fill_value=np.float32(np.nan))
            v.setncatts(attrs)
            linked = [name for name in aux if set(np.atleast_1d(coords[name][0])) <= set(dims)]
            if linked:
                v.setncattr("coordinates", " ".join(linked))
    # a non-dimension coordinate as a plain variable here: the data variables name it already
    xr.Dataset(coords=coords, attrs=job.attrs).reset_coords(aux).to_netcdf(path, mode="a", engine="netcdf4")
    return netCDF4.Dataset(path, "a")


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

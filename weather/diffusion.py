"""Conditional diffusion on the next-step residual (GenCast style): the model config, the
network, the training task, and the two registered checkpoint kinds.

Dimension legend: B batch, C channels, H latitude, W longitude, G = H * W grid points.

Target: ``r = (X[t+1] - X[t]) / residual_std`` per channel (``NormStats.residual_std``).
Conditioning: the two previous states normalised by the per-channel mean/std
(:class:`diffsci.weather.predictor.Normalizer`, shared with forecasting), static fields
(sin/cos latitude and longitude, and the time-invariant fields of the training data named in
``static_fields``, e.g. the land-sea mask, each at zero mean and unit std) and the hour of day of
the target time (sin/cos).
Noise: EDM (Karras) sigmas, training levels from the rho distribution (``t ~ U(0, 1)``),
EDM preconditioning from the core; loss weighted by EDM's ``lambda(sigma)``, by cell area
(:func:`diffsci.weather.grid.cell_area_weights`: WB2's weights on a global grid, each cell's own
area on a regional one) and per channel.

Regional (limited-area) grids: the state in the lateral boundary band
(:func:`diffsci.weather.grid.boundary_mask`, ``boundary_width`` cells at each open edge) is
replaced by given boundary values at every forecast step, so the training loss gives the band
weight 0 (the model is trained on the interior only, as neural-lam does); the band's values
still enter as conditioning. The interior weights are normalised to mean 1.

Two checkpoint kinds share :class:`WeatherModelConfig` (registered with
:func:`diffsci.core.checkpoint.register_kind`):

- :data:`KIND` ``weather-graph-diffusion``: :func:`build_denoiser`, the EDM-preconditioned
  :class:`ResidualNet` (``(r_t, t, cond) -> r0_hat``), sampled by
  :class:`~diffsci.weather.predictor.DiffusionStep`;
- :data:`KIND_DETERMINISTIC` ``weather-graph-deterministic``: :func:`build_direct_net`, the same
  network without noise input or conditioning, trained with MSE on the residual (GraphCast
  style) and called once per step by :class:`~diffsci.weather.predictor.DirectStep`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import xarray as xr
from torch import nn

from diffsci.core.checkpoint import register_kind
from diffsci.core.config import Provenance, file_record, to_dict
from diffsci.core.errors import CheckpointError, DiffsciError
from diffsci.core.io import check_choice, check_int, check_range
from diffsci.core.losses import fair_crps
from diffsci.core.precond import EDMPrecond, edm_loss_weight
from diffsci.core.samplers import effective_churn, get_sampler
from diffsci.core.schedules import EDM
from diffsci.core.spaces import Euclidean
from diffsci.weather.data import (NormStats, StateReader, compute_norm_stats, open_weather, static_features,
                                  time_step, window_starts)
from diffsci.weather.layouts import short_name
from diffsci.weather.static import normalize_static_fields, read_static_fields
from diffsci.weather.graph import cached_graph, is_global_grid
from diffsci.weather.grid import boundary_mask, cell_area_weights
from diffsci.weather.model import GraphNet, GraphNetConfig
from diffsci.weather.predictor import Normalizer, WeatherCond, hour_features

__all__ = [
    "KIND",
    "KIND_DETERMINISTIC",
    "WeatherModelOptions",
    "WeatherModelConfig",
    "WeatherData",
    "WeatherBatch",
    "ResidualNet",
    "build_denoiser",
    "build_direct_net",
    "ResidualTask",
    "make_task",
    "loss_weights",
    "DEFAULT_BOUNDARY_WIDTH",
    "TRAIN_DEFAULTS",
]

KIND = "weather-graph-diffusion"
KIND_DETERMINISTIC = "weather-graph-deterministic"

#: lateral boundary band of a regional grid, in grid cells at each open edge (config ``boundary_width``)
DEFAULT_BOUNDARY_WIDTH = 2

#: training objectives of the diffusion kind (``WeatherModelOptions.objective``)
OBJECTIVES = ("denoise", "crps")

#: training options of both kinds unless the config file or the command line says otherwise
TRAIN_DEFAULTS = {"steps": 2000, "batch_size": 8, "lr": 1e-3, "ema_decay": 0.995, "ckpt_every": 50, "log_every": 10,
                  "warmup_steps": 100, "grad_clip": 1.0}


@dataclass(frozen=True)
class WeatherModelOptions:
    """The model options a user sets (the ``model`` table of a training config); the grid,
    channels, units and time step come from the training data."""

    refinements: int = 3
    multimesh: bool = False
    latent: int = 48
    layers: int = 4
    sigma_min: float = 0.03
    sigma_max: float = 80.0
    rho: float = 7.0
    sigma_data: float = 1.0
    channel_weights: tuple[float, ...] | None = None
    # lateral boundary band (cells at each open edge) of a regional grid; None: 0 on a global
    # grid, DEFAULT_BOUNDARY_WIDTH on a regional one (resolved when the config is made)
    boundary_width: int | None = None
    # the sampler a forecast uses unless told otherwise: a core sampler name, its number of
    # noise levels per model step and the EDM churn (heun/euler only)
    sampler: str = "heun"
    sampler_steps: int = 5
    churn: float = 2.5
    # training objective: "denoise" (EDM denoising loss at random noise levels) or "crps" (the
    # fair CRPS of crps_members members drawn with the sampler above, differentiated through its
    # sampling steps: trains the few network calls of that sampler to give a calibrated ensemble)
    objective: str = "denoise"
    crps_members: int = 2
    # "crps": model steps each training example rolls out; after the first, members condition on
    # their own states (gradients through the whole rollout) and the loss averages the steps
    crps_rollout: int = 1
    # rollout steps' weights lead^-p (lead in model steps), the loss their weighted mean: a state's error grows
    # about linearly with lead, so p = 0 lets the last steps dominate and p = 1 weighs the leads alike
    crps_lead_power: float = 0.0
    # time-invariant fields of the training data (land-sea mask "lsm", orography...) fed as extra
    # static inputs; their values are read at training time and kept in the config
    static_fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class WeatherModelConfig(WeatherModelOptions):
    """Everything needed to rebuild a weather model (saved in its checkpoints): the options and
    what the training data fixed. ``latitude``/``longitude`` in degrees (ascending),
    ``time_step_hours`` one model step (the data's step: 1 h nowcasting, 6 h, 12 h), ``units``
    per variable as trained (None: not recorded), ``static_values`` the values of each of the
    ``static_fields`` in the data's units, Shape (S, H * W) row-major (latitude-major), so a
    checkpoint needs no file to rebuild its inputs."""

    variables: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()
    latitude: tuple[float, ...] = ()
    longitude: tuple[float, ...] = ()
    time_step_hours: float = 1.0
    units: tuple[str, ...] | None = None
    static_values: tuple[tuple[float, ...], ...] = dataclasses.field(default=(), repr=False)

    def __post_init__(self):
        if not self.channels or len(self.latitude) < 2 or len(self.longitude) < 2:
            raise DiffsciError("WeatherModelConfig: needs channels and a grid of at least 2x2")
        if self.channel_weights is not None and len(self.channel_weights) != len(self.channels):
            raise DiffsciError("WeatherModelConfig: one channel weight per channel")
        if not self.time_step_hours > 0:
            raise DiffsciError(f"WeatherModelConfig: time_step_hours must be > 0, got {self.time_step_hours}")
        if self.units is not None and len(self.units) != len(self.variables):
            raise DiffsciError("WeatherModelConfig: one units string per variable")
        if self.boundary_width is None:
            width = 0 if is_global_grid(self.latitude, self.longitude) else DEFAULT_BOUNDARY_WIDTH
            object.__setattr__(self, "boundary_width", width)
        if not isinstance(self.boundary_width, int) or self.boundary_width < 0:
            raise DiffsciError(f"WeatherModelConfig: boundary_width must be an integer >= 0, got {self.boundary_width!r}")
        get_sampler(self.sampler)
        check_int(self.sampler_steps, "sampler_steps")
        check_range(self.churn, "churn", 0.0, None)
        check_choice(self.objective, "objective", OBJECTIVES)
        check_int(self.crps_members, "crps_members", minimum=2)
        check_int(self.crps_rollout, "crps_rollout")
        check_range(self.crps_lead_power, "crps_lead_power", 0.0, 4.0)
        h, w = len(self.latitude), len(self.longitude)
        self._check_static(h * w)
        band = boundary_mask(self.latitude, self.longitude, self.boundary_width)
        if band.all():
            raise DiffsciError(f"WeatherModelConfig: a boundary band of {self.boundary_width} cells covers the whole "
                               f"{h}x{w} grid; use a smaller boundary_width")

    def _check_static(self, points: int) -> None:
        fields = self.static_fields
        if len(set(fields)) != len(fields) or set(fields) & set(self.variables):
            raise DiffsciError(f"WeatherModelConfig: static_fields {list(fields)} must be distinct and not among "
                               f"the variables {list(self.variables)}")
        if len(self.static_values) != len(fields):
            raise DiffsciError(f"WeatherModelConfig: static_fields {list(fields)} need one row of static_values each "
                               f"(got {len(self.static_values)}); training reads them from the data")
        for name, row in zip(fields, self.static_values):
            if len(row) != points:
                raise DiffsciError(f"WeatherModelConfig: static field {name!r} has {len(row)} values, the grid "
                                   f"{points} points")

    @property
    def grid_shape(self) -> tuple[int, int]:
        return len(self.latitude), len(self.longitude)

    @property
    def schedule(self) -> EDM:
        return EDM(sigma_min=self.sigma_min, sigma_max=self.sigma_max, rho=self.rho, sigma_data=self.sigma_data)


@dataclass(frozen=True)
class WeatherData:
    """The ``data`` table of a training recipe: a file in any layout
    :func:`~diffsci.weather.data.open_weather` reads, the variables to model (None: all), and
    ``chunk_mb``: the largest piece of the data (MiB) read at once: dask chunks, blocks of the
    normalisation statistics. Training holds a few such pieces and each batch's states in
    memory, never the whole file."""

    path: str
    variables: tuple[str, ...] | None = None
    chunk_mb: float = 64.0

    def __post_init__(self):
        check_range(self.chunk_mb, "chunk_mb", 0.0, None, lo_open=True)


@dataclass(frozen=True)
class WeatherBatch:
    """A training batch. Shapes: cond.prev (B, 2C, H, W), cond.hour (B, 2); target (B, C, H, W)
    the normalised residual; t (B,) diffusion times; eps (B, C, H, W) standard normal noise
    (objective ``crps``: (M, B, C, H, W), the members' prior noise of the first step, and
    ``noise_seed`` seeds the rest of their noise; with ``crps_rollout`` K > 1, ``later`` holds the
    true states (K + 1, B, C, H, W) from the current one on, physical units, and ``later_hour``
    (K - 1, B, 2) the hour features of steps 2..K)."""

    cond: WeatherCond
    target: torch.Tensor
    t: torch.Tensor
    eps: torch.Tensor
    noise_seed: int | None = None
    later: torch.Tensor | None = None
    later_hour: torch.Tensor | None = None


def loss_weights(cfg: WeatherModelConfig) -> torch.Tensor:
    """Per-point loss weights, shape (C, H, W) float32: channel weight x cell area, 0 in the
    lateral boundary band (regional grids), the area part normalised to mean 1 over the rest."""
    area = cell_area_weights(cfg.latitude, cfg.longitude)  # (H, W), mean 1
    area = np.where(boundary_mask(cfg.latitude, cfg.longitude, cfg.boundary_width), 0.0, area)
    area = area / area.sum() * (area > 0).sum()
    cw = np.ones(len(cfg.channels)) if cfg.channel_weights is None else np.asarray(cfg.channel_weights, dtype=np.float64)
    return torch.as_tensor(cw[:, None, None] * area[None], dtype=torch.float32)


class ResidualNet(nn.Module):
    """Grid fields -> graph network -> grid fields.

    ``forward(x_in (B, C, H, W) or None, c_noise (B,) or None, cond: WeatherCond) -> (B, C, H, W)``.
    ``noisy=False`` (the direct, deterministic network): no noisy input and no noise
    conditioning; pass ``x_in = c_noise = None``.

    Inputs per grid point: ``x_in``, ``cond.prev``, the 4 sin/cos static features, the 2 hour
    features, and the S ``static_fields`` (normalised, buffer ``static_extra`` (G, S)). The last
    enter the grid embedding's first layer through their own weights ``static_embed`` (D, S), the
    same as S more input columns, initialised to zero: a checkpoint trained without them
    warm-starts this net unchanged at step 0 (``warm_start_optional``).
    """

    warm_start_optional = ("static_embed.",)

    def __init__(self, cfg: WeatherModelConfig, *, noisy: bool = True):
        super().__init__()
        self.cfg = cfg
        c = len(cfg.channels)
        graph = cached_graph(np.asarray(cfg.latitude), np.asarray(cfg.longitude),
                             refinements=cfg.refinements, multimesh=cfg.multimesh)
        n_in = (c if noisy else 0) + 2 * c + 4 + 2
        self.net = GraphNet(
            GraphNetConfig(in_features=n_in, out_channels=c, latent=cfg.latent, layers=cfg.layers, conditional=noisy),
            graph,
        )
        self.register_buffer("static", torch.from_numpy(static_features(cfg.latitude, cfg.longitude)), persistent=False)
        self.static_embed = None
        if cfg.static_fields:
            s, (h, w) = len(cfg.static_fields), cfg.grid_shape
            extra = normalize_static_fields(np.asarray(cfg.static_values).reshape(s, h, w), cfg.static_fields)
            self.register_buffer("static_extra", torch.from_numpy(extra.reshape(s, h * w).T.copy()), persistent=False)
            self.static_embed = nn.Linear(s, cfg.latent, bias=False)
            nn.init.zeros_(self.static_embed.weight)

    def forward(self, x_in, c_noise, cond: WeatherCond):
        b = cond.prev.shape[0]
        h, w = self.cfg.grid_shape
        parts = [] if x_in is None else [x_in]
        parts += [cond.prev, self.static.to(cond.prev.dtype).expand(b, -1, -1, -1),
                  cond.hour.to(cond.prev.dtype)[:, :, None, None].expand(b, 2, h, w)]
        feats = torch.cat(parts, 1)  # (B, F, H, W)
        bias = None if self.static_embed is None else self.static_embed(self.static_extra.to(cond.prev.dtype))  # (G, D)
        y = self.net(feats.flatten(2).transpose(1, 2), c_noise, grid_bias=bias)  # (B, G, C)
        return y.transpose(1, 2).reshape(b, -1, h, w)


def build_denoiser(cfg: WeatherModelConfig) -> nn.Module:
    """The EDM-preconditioned denoiser ``(r_t (B, C, H, W), t (B,), cond) -> r0_hat (B, C, H, W)``
    of the normalised residual (kind :data:`KIND`)."""
    return EDMPrecond(ResidualNet(cfg), cfg.schedule, cfg.sigma_data)


def build_direct_net(cfg: WeatherModelConfig) -> nn.Module:
    """The direct residual network ``(None, None, cond) -> r (B, C, H, W)`` (kind :data:`KIND_DETERMINISTIC`)."""
    return ResidualNet(cfg, noisy=False)


class ResidualTask:
    """Training task for :func:`diffsci.core.train.fit` (kind :data:`KIND`: EDM denoising loss;
    :data:`KIND_DETERMINISTIC`: MSE of the direct residual).

    ``fields``: the T states in physical units, indexable by a 1-D integer array of times
    Shape (n,) -> Shape (n, C, H, W) float32: an array (T, C, H, W) in memory, or a
    :class:`~diffsci.weather.data.StateReader` that reads each batch's states from the file.
    ``starts`` valid window starts (two previous states and one target inside one trajectory),
    ``times`` datetime64 (T,) of each index, ``provenance`` the training data's files, period
    and seed.
    """

    def __init__(self, config: WeatherModelConfig, stats: NormStats, fields, starts: np.ndarray, times, *,
                 kind: str = KIND, provenance: Provenance | None = None):
        if len(starts) == 0:
            raise DiffsciError("training data has no window of 3 consecutive states (one time step apart)")
        if kind not in (KIND, KIND_DETERMINISTIC):
            raise DiffsciError(f"ResidualTask: kind must be {KIND!r} or {KIND_DETERMINISTIC!r}, got {kind!r}")
        self.config, self.kind, self.stats, self._provenance = config, kind, stats, provenance
        self.fields = fields if isinstance(fields, StateReader) else np.ascontiguousarray(fields, dtype=np.float32)
        self.starts = torch.as_tensor(starts, dtype=torch.long)
        self.hours = hour_features(times)
        self.normalizer = Normalizer.from_stats(stats)
        self.weights = loss_weights(config)  # (C, H, W): channel x cell area, 0 in a regional boundary band

    def model_config(self) -> dict:
        """The config as a dict; without static fields their two empty keys are left out, so such
        a checkpoint's config is the one written before static fields existed (resumable by both)."""
        config = to_dict(self.config)
        if not self.config.static_fields:
            del config["static_fields"], config["static_values"]
        return config

    def extra_state(self) -> dict:
        return {"norm_stats": self.stats.to_dict()}

    def provenance(self) -> Provenance | None:
        return self._provenance

    def sample_batch(self, generator, batch_size) -> WeatherBatch:
        i = self.starts[torch.randint(len(self.starts), (batch_size,), generator=generator)]
        k = self.config.crps_rollout if self.objective == "crps" else 1
        states = torch.from_numpy(self.fields[torch.cat([i + j for j in range(k + 2)]).numpy()])  # ((K+2)B, C, H, W)
        x0, x1, x2, *rest = states.split(batch_size)
        cond = WeatherCond(self.normalizer.condition(x0, x1), self.hours[i + 2])
        target = self.normalizer.residual(x1, x2)
        t = torch.rand(batch_size, generator=generator)
        if self.objective == "crps":
            eps = torch.randn((self.config.crps_members, *target.shape), generator=generator)
            seed = int(torch.randint(2**62, (1,), generator=generator))
            if k == 1:
                return WeatherBatch(cond, target, t, eps, seed)
            later_hour = torch.stack([self.hours[i + 2 + j] for j in range(1, k)])
            return WeatherBatch(cond, target, t, eps, seed, torch.stack([x1, x2, *rest]), later_hour)
        eps = torch.randn(target.shape, generator=generator)
        return WeatherBatch(cond, target, t, eps)

    def loss(self, model, batch: WeatherBatch):
        w = self.weights.to(batch.target.device)
        if self.kind == KIND_DETERMINISTIC:
            return (w * (model(None, None, batch.cond) - batch.target) ** 2).mean()
        if self.objective == "crps":
            return self.crps_loss(model, batch)
        sigma = self.config.schedule.sigma(batch.t).to(batch.target.dtype)
        x_t = batch.target + sigma[:, None, None, None] * batch.eps
        r_hat = model(x_t, batch.t, batch.cond)
        lam = edm_loss_weight(sigma, self.config.sigma_data)[:, None, None, None]
        return (lam * w * (r_hat - batch.target) ** 2).mean()

    @property
    def objective(self) -> str:
        return "denoise" if self.kind == KIND_DETERMINISTIC else self.config.objective

    def sample_members(self, model, batch: WeatherBatch) -> torch.Tensor:
        """The first-step residuals of ``M`` members for every example of a ``crps`` batch,
        drawn with the model's own sampler (``config.sampler`` over ``config.sampler_steps``
        noise levels, its churn) from the prior noise ``sigma_max * batch.eps``, with gradients
        through every sampling step. Shape (M, B, C, H, W)."""
        m, b = batch.eps.shape[:2]
        cond = WeatherCond(batch.cond.prev.repeat(m, 1, 1, 1), batch.cond.hour.repeat(m, 1))
        gen = torch.Generator(device=batch.target.device).manual_seed(batch.noise_seed)
        return self._draw(model, cond, batch.eps.flatten(0, 1), gen).reshape(m, b, *batch.target.shape[1:])

    def _draw(self, model, cond: WeatherCond, eps: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """One sampled residual per row of ``cond`` from the prior ``sigma(t_max) * eps``."""
        cfg = self.config
        times = cfg.schedule.time_grid(cfg.sampler_steps)
        prior = cfg.schedule.sigma(times[:1]).to(eps.dtype).item() * eps
        churn = effective_churn(cfg.sampler, cfg.churn)
        options = {"churn": churn} if churn else {}
        return get_sampler(cfg.sampler)(lambda x, t, c: model(x, t, c), prior, times, space=Euclidean(cfg.schedule),
                                        cond=cond, generator=gen, **options)

    def crps_loss(self, model, batch: WeatherBatch) -> torch.Tensor:
        """Objective ``crps``: the weighted fair CRPS of the members' first-step residuals; with
        a rollout of K steps (``batch.later``), the weighted mean over the K steps of the fair CRPS
        of the members' states against the true ones, in units of the residual std (the first
        step's term is the same as without a rollout), each member conditioned on its own states;
        step k (lead k model steps) has weight ``k ** -crps_lead_power``."""
        w = self.weights.to(batch.target.device)
        first = self.sample_members(model, batch)  # (M, B, C, H, W)
        loss = (w * fair_crps(first, batch.target)).mean()
        if batch.later is None:
            return loss
        m, b = first.shape[:2]
        norm = self.normalizer.to(batch.target.device)
        gen = torch.Generator(device=batch.target.device).manual_seed(batch.noise_seed + 1)
        truth = batch.later  # (K+1, B, C, H, W): the current state, then the true next ones
        x_prev = truth[0].repeat(m, 1, 1, 1)
        x_cur = norm.state(x_prev, first.flatten(0, 1))
        power, total = self.config.crps_lead_power, 1.0
        for j, hour in enumerate(batch.later_hour):
            cond = WeatherCond(norm.condition(x_prev, x_cur), hour.repeat(m, 1))
            eps = torch.randn(x_cur.shape, generator=gen, device=x_cur.device, dtype=x_cur.dtype)
            x_prev, x_cur = x_cur, norm.state(x_cur, self._draw(model, cond, eps, gen))
            err = ((x_cur - truth[j + 2].repeat(m, 1, 1, 1)) / norm.residual_std).reshape(m, b, *first.shape[2:])
            weight = float(j + 2) ** -power
            loss = loss + weight * (w * fair_crps(err, torch.zeros_like(err[0]))).mean()
            total += weight
        return loss / total


# ------------------------------------------------------------------------- training recipes
def make_task(recipe) -> ResidualTask:
    """The training task of a :class:`~diffsci.core.train.Recipe` of either weather kind: opens
    ``recipe.data`` (:class:`WeatherData`), computes the normalisation statistics, completes the
    model options with the data's variables, channels (a level variable gives ``{name}{level}``),
    grid, time step (one model step) and units, and records the data's provenance. Ensemble
    members are trained on as separate runs. The data stay lazy (dask chunks of at most
    ``recipe.data.chunk_mb`` MiB): statistics stream over the file and each batch reads its
    own states (:class:`~diffsci.weather.data.StateReader`). The model's ``static_fields`` are
    read from the same file (:func:`~diffsci.weather.static.read_static_fields`), never modelled as
    variables, and their values go into the config."""
    data: WeatherData = recipe.data
    static = recipe.model.static_fields
    if isinstance(static, str) or not all(isinstance(f, str) for f in static):
        raise DiffsciError(f"model.static_fields must be a list of variable names, got {static!r}")
    static = tuple(short_name(f) for f in static)
    both = sorted(set(static) & {short_name(v) for v in data.variables or ()})
    if both:
        raise DiffsciError(f"{both} named both in data.variables and in model.static_fields; a static field is "
                           "an input only")
    ds = open_weather(data.path, variables=list(data.variables) if data.variables else None, chunk_mb=data.chunk_mb)
    ds = ds.drop_vars([f for f in static if f in ds.data_vars])  # CDS files give lsm a time dim
    variables = tuple(str(v) for v in ds.data_vars)  # short names, in the order asked for
    step = time_step(ds)
    if step is None:
        raise DiffsciError(f"{data.path}: one time only; training needs at least 3 consecutive states")
    if "realization" in ds.dims:
        ds = members_as_trajectories(ds)
    stats = compute_norm_stats(ds, variables, max_mb=data.chunk_mb)
    fields = StateReader(ds, variables)
    latitude, longitude = (tuple(float(x) for x in ds[c].values) for c in ("latitude", "longitude"))
    static_values = read_static_fields(data.path, static, latitude, longitude) if static else {}
    config = WeatherModelConfig(
        **{f.name: getattr(recipe.model, f.name) for f in dataclasses.fields(WeatherModelOptions)
           if f.name != "static_fields"},
        variables=variables, channels=tuple(fields.channels),
        latitude=latitude, longitude=longitude, time_step_hours=step / pd.Timedelta(hours=1),
        units=tuple(str(ds[v].attrs.get("units", "")) for v in variables), static_fields=static,
        static_values=tuple(tuple(a.ravel().tolist()) for a in static_values.values()),
    )
    rollout = config.crps_rollout if recipe.kind == KIND and config.objective == "crps" else 1
    times = ds.time.values
    start, end = (str(np.datetime_as_string(t, unit="s")) for t in (times.min(), times.max()))
    provenance = Provenance(files=(file_record(data.path),), time_start=start, time_end=end, seed=recipe.train.seed)
    return ResidualTask(config, stats, fields, window_starts(ds, history=2, lead=rollout), times, kind=recipe.kind,
                        provenance=provenance)


def members_as_trajectories(ds):
    """An ensemble (ERA5 EDA, a perfect-model ensemble): each member becomes its own run of
    states, laid end to end along ``time`` with its own ``trajectory`` ids, so no training
    window and no residual statistic crosses from one member to another."""
    nt = ds.sizes["time"]
    base = np.asarray(ds["trajectory"].values) if "trajectory" in ds.coords else np.zeros(nt, dtype=np.int64)
    span = int(base.max()) + 1
    parts = [ds.isel(realization=m, drop=True).assign_coords(trajectory=("time", base + m * span))
             for m in range(ds.sizes["realization"])]
    return xr.concat(parts, "time")


# ------------------------------------------------------------------------------- the kinds
def upgrade_v0(ck: dict) -> dict:
    """Config version 0 -> 1 (checkpoints written before versions, e.g. both shipped ones).

    ``model_config``: drops ``deterministic`` (the kind says which model it is; a value that
    contradicts the kind is refused), fills ``time_step_hours`` (1 h), ``units`` (None: not
    recorded) and ``boundary_width`` (None: resolved from the grid) where absent, and writes
    channels ``t@500`` as ``t500`` (also in ``extra.norm_stats``). Kind
    :data:`KIND_DETERMINISTIC`: the weights of the old wrapper module, ``net.<ResidualNet key>``,
    become the network's own keys (``net.net.out.weight`` -> ``net.out.weight``)."""
    mc = dict(ck["model_config"])
    if bool(mc.pop("deterministic", False)) != (ck["kind"] == KIND_DETERMINISTIC):
        raise CheckpointError(f"model_config.deterministic contradicts the checkpoint kind {ck['kind']!r}")
    mc.setdefault("time_step_hours", 1.0)
    mc.setdefault("units", None)
    mc.setdefault("boundary_width", None)
    mc["channels"] = [c.replace("@", "") for c in mc["channels"]]
    ck["model_config"] = mc
    stats = (ck.get("extra") or {}).get("norm_stats")
    if stats is not None:
        ck["extra"] = {**ck["extra"], "norm_stats": {**stats, "channels": [c.replace("@", "") for c in stats["channels"]]}}
    if ck["kind"] == KIND_DETERMINISTIC:
        for key in ("model", "ema"):
            if key in ck:
                if not all(k.startswith("net.") for k in ck[key]):
                    raise CheckpointError(f"{key} weights are not those of the version-0 wrapper (keys net.*)")
                ck[key] = {k[len("net."):]: v for k, v in ck[key].items()}
    return ck


def shipped_checkpoint() -> Path:
    """weather/data/default_checkpoint.pt (see weather/data/CHECKPOINT.md)."""
    return Path(str(resources.files("diffsci.weather") / "data" / "default_checkpoint.pt"))


_KIND_OPTIONS = dict(version=1, migrations={0: upgrade_v0}, make_task=make_task, data_cls=WeatherData,
                     options_cls=WeatherModelOptions, train_defaults=TRAIN_DEFAULTS)
register_kind(KIND, WeatherModelConfig, build_denoiser, default_path=shipped_checkpoint, **_KIND_OPTIONS)
register_kind(KIND_DETERMINISTIC, WeatherModelConfig, build_direct_net, **_KIND_OPTIONS)

"""Conditional diffusion on the next-step residual (GenCast style), and its training task.

Dimension legend: B batch, C channels, H latitude, W longitude, G = H * W grid points.

Target: ``r = (X[t+1] - X[t]) / residual_std`` per channel (``NormStats.residual_std``).
Conditioning: the two previous states normalised by the per-channel mean/std, static fields
(sin/cos latitude and longitude) and the hour of day of the target time (sin/cos).
Noise: EDM (Karras) sigmas, training levels from the rho distribution (``t ~ U(0, 1)``),
EDM preconditioning from the core; loss weighted by EDM's ``lambda(sigma)``, by cell area
(:func:`diffsci.weather.grid.cell_area_weights`: WB2's weights on a global grid, each cell's own
area on a regional one) and per channel.

Regional (limited-area) grids: the state in the lateral boundary band
(:func:`diffsci.weather.grid.boundary_mask`, ``boundary_width`` cells at each open edge) is
replaced by given boundary values at every forecast step, so the training loss gives the band
weight 0 (the model is trained on the interior only, as neural-lam does); the band's values
still enter as conditioning. The interior weights are normalised to mean 1.

The pieces are thin modules around the graph network (STYLE.md item 6):
:class:`ResidualNet` turns grid fields into graph-node features and back;
:class:`~diffsci.core.precond.EDMPrecond` makes it a clean-residual denoiser;
:class:`ResidualTask` is the training task for :func:`diffsci.core.train.train`.
``deterministic=True`` in the config gives the GraphCast-style baseline: the same network
without noise conditioning, trained with MSE on the residual.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from diffsci.core.errors import DiffsciError
from diffsci.core.precond import EDMPrecond, edm_loss_weight
from diffsci.core.schedules import EDM
from diffsci.weather.data import NormStats, static_features
from diffsci.weather.graph import cached_graph, is_global_grid
from diffsci.weather.grid import boundary_mask, cell_area_weights
from diffsci.weather.model import GraphNet, GraphNetConfig

__all__ = [
    "WeatherModelConfig",
    "WeatherCond",
    "ResidualNet",
    "build_model",
    "ResidualTask",
    "loss_weights",
    "DEFAULT_BOUNDARY_WIDTH",
    "hour_features",
    "KIND",
]

KIND = "weather-graph-diffusion"
KIND_DETERMINISTIC = "weather-graph-deterministic"

#: lateral boundary band of a regional grid, in grid cells at each open edge (config ``boundary_width``)
DEFAULT_BOUNDARY_WIDTH = 2


@dataclass(frozen=True)
class WeatherModelConfig:
    """Everything needed to rebuild a weather model (saved in its checkpoints)."""

    variables: tuple[str, ...]
    channels: tuple[str, ...]
    latitude: tuple[float, ...]
    longitude: tuple[float, ...]
    refinements: int = 3
    multimesh: bool = False
    latent: int = 48
    layers: int = 4
    sigma_min: float = 0.03
    sigma_max: float = 80.0
    rho: float = 7.0
    sigma_data: float = 1.0
    deterministic: bool = False
    channel_weights: tuple[float, ...] | None = None
    time_step_hours: float = 1.0  # the data's step: one model step (1 h nowcasting, 6 h, 12 h)
    units: tuple[str, ...] | None = None  # per variable, as trained (None: not recorded, old checkpoints)
    # lateral boundary band (cells at each open edge) of a regional grid; None: 0 on a global
    # grid, DEFAULT_BOUNDARY_WIDTH on a regional one (resolved when the config is made)
    boundary_width: int | None = None

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
        h, w = len(self.latitude), len(self.longitude)
        band = boundary_mask(self.latitude, self.longitude, self.boundary_width)
        if band.all():
            raise DiffsciError(f"WeatherModelConfig: a boundary band of {self.boundary_width} cells covers the whole "
                               f"{h}x{w} grid; use a smaller boundary_width")

    @property
    def grid_shape(self) -> tuple[int, int]:
        return len(self.latitude), len(self.longitude)

    @property
    def schedule(self) -> EDM:
        return EDM(sigma_min=self.sigma_min, sigma_max=self.sigma_max, rho=self.rho, sigma_data=self.sigma_data)

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "WeatherModelConfig":
        tup = {"variables", "channels", "latitude", "longitude", "channel_weights", "units"}
        return cls(**{k: (tuple(v) if k in tup and v is not None else v) for k, v in d.items()})


@dataclass(frozen=True)
class WeatherCond:
    """Conditioning of one step. Shapes: prev (B, 2C, H, W) normalised; hour (B, 2) sin/cos."""

    prev: torch.Tensor
    hour: torch.Tensor


def hour_features(times) -> torch.Tensor:
    """Sin/cos of the hour of day of datetime64 ``times``. Shape (B, 2)."""
    hours = (np.asarray(times, dtype="datetime64[m]").astype(np.int64) / 60.0) % 24.0
    ang = torch.as_tensor(hours * 2 * np.pi / 24.0, dtype=torch.float32)
    return torch.stack([torch.sin(ang), torch.cos(ang)], -1).reshape(-1, 2)


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

    ``forward(x_in (B, C, H, W), c_noise (B,) or None, cond: WeatherCond) -> (B, C, H, W)``.
    For the deterministic variant ``x_in`` is ignored (pass None).
    """

    def __init__(self, cfg: WeatherModelConfig):
        super().__init__()
        self.cfg = cfg
        c = len(cfg.channels)
        graph = cached_graph(np.asarray(cfg.latitude), np.asarray(cfg.longitude),
                             refinements=cfg.refinements, multimesh=cfg.multimesh)
        n_in = (0 if cfg.deterministic else c) + 2 * c + 4 + 2
        self.net = GraphNet(
            GraphNetConfig(in_features=n_in, out_channels=c, latent=cfg.latent, layers=cfg.layers,
                           conditional=not cfg.deterministic),
            graph,
        )
        self.register_buffer("static", torch.from_numpy(static_features(cfg.latitude, cfg.longitude)), persistent=False)

    def forward(self, x_in, c_noise, cond: WeatherCond):
        b = cond.prev.shape[0]
        h, w = self.cfg.grid_shape
        parts = [] if x_in is None else [x_in]
        parts += [cond.prev, self.static.to(cond.prev.dtype).expand(b, -1, -1, -1),
                  cond.hour.to(cond.prev.dtype)[:, :, None, None].expand(b, 2, h, w)]
        feats = torch.cat(parts, 1)  # (B, F, H, W)
        y = self.net(feats.flatten(2).transpose(1, 2), c_noise)  # (B, G, C)
        return y.transpose(1, 2).reshape(b, -1, h, w)


class _Deterministic(nn.Module):
    """The MSE baseline as a module with the same call as the denoiser: ``(x, t, cond) -> r``."""

    def __init__(self, net: ResidualNet):
        super().__init__()
        self.net = net

    def forward(self, x, t, cond):
        return self.net(None, None, cond)


def build_model(cfg: WeatherModelConfig) -> nn.Module:
    """The denoiser ``(x_t (B,C,H,W), t (B,), cond) -> r0_hat`` (EDM-preconditioned), or for
    ``deterministic=True`` the residual predictor with the same call signature."""
    net = ResidualNet(cfg)
    if cfg.deterministic:
        return _Deterministic(net)
    return EDMPrecond(net, cfg.schedule, cfg.sigma_data)


class ResidualTask:
    """Training task for :func:`diffsci.core.train.train`.

    ``fields`` (T, C, H, W) float32 physical units, ``starts`` valid window starts (two
    previous states and one target inside one trajectory), ``times`` datetime64 of each index.
    """

    def __init__(self, cfg: WeatherModelConfig, stats: NormStats, fields: np.ndarray, starts: np.ndarray, times):
        if len(starts) == 0:
            raise DiffsciError("training data has no window of 3 consecutive states (one time step apart)")
        self.cfg = cfg
        self.kind = KIND_DETERMINISTIC if cfg.deterministic else KIND
        self.stats = stats
        self.fields = torch.from_numpy(np.ascontiguousarray(fields, dtype=np.float32))
        self.starts = torch.as_tensor(starts, dtype=torch.long)
        self.hours = hour_features(times)
        mean, std, rstd = (torch.as_tensor(a, dtype=torch.float32)[:, None, None] for a in stats.arrays())
        self.mean, self.std, self.rstd = mean, std, rstd
        self.weights = loss_weights(cfg)  # (C, H, W): channel x cell area, 0 in a regional boundary band

    def model_config(self) -> dict:
        return self.cfg.to_dict()

    def extra_state(self) -> dict:
        return {"norm_stats": self.stats.to_dict()}

    def sample_batch(self, generator, batch_size):
        i = self.starts[torch.randint(len(self.starts), (batch_size,), generator=generator)]
        x0, x1, x2 = self.fields[i], self.fields[i + 1], self.fields[i + 2]
        prev = torch.cat([(x0 - self.mean) / self.std, (x1 - self.mean) / self.std], 1)
        target = (x2 - x1) / self.rstd
        t = torch.rand(batch_size, generator=generator)
        eps = torch.randn(target.shape, generator=generator)
        return {"prev": prev, "hour": self.hours[i + 2], "target": target, "t": t, "eps": eps}

    def loss(self, model, batch):
        cond = WeatherCond(batch["prev"], batch["hour"])
        target = batch["target"]
        w = self.weights.to(target.device)
        if self.cfg.deterministic:
            pred = model(None, None, cond)
            return (w * (pred - target) ** 2).mean()
        sched = self.cfg.schedule
        sigma = sched.sigma(batch["t"]).to(target.dtype)
        x_t = target + sigma[:, None, None, None] * batch["eps"]
        r_hat = model(x_t, batch["t"], cond)
        lam = edm_loss_weight(sigma, self.cfg.sigma_data)[:, None, None, None]
        return (lam * w * (r_hat - target) ** 2).mean()

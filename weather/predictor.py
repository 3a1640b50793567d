"""The weather predictor stack (GenCast's shape): one model step, composed of thin wrappers, and
the autoregressive rollout.

Dimension legend: B batch (ensemble members), C channels, H latitude, W longitude, L leads.

::

    rollout(predictor, x_prev, x_cur, valid_times, generators)   -> (B, L, C, H, W)
    rollout_steps(...)                     the same states one lead at a time, (B, C, H, W) each
      GroupedBatch(predictor, size)        evaluates a batch in fixed groups of ``size`` rows
      NormalizedResidual(inner, stats)     physical states <-> normalised conditioning/residual
        DiffusionStep(denoiser, space, sampler, times)   residual sampled from the denoiser
        DirectStep(net)                    residual from one network call (the MSE baseline)

:class:`Normalizer` is the one place where states are normalised and residuals are turned back
into states; training (:class:`diffsci.weather.diffusion.ResidualTask`) uses it too. Every
tensor a step or the rollout makes is made on the device of its inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Protocol, Sequence

import numpy as np
import torch

from diffsci.weather.data import NormStats

__all__ = ["WeatherCond", "hour_features", "Normalizer", "StepPredictor", "ResidualPredictor", "NormalizedResidual",
           "DiffusionStep", "DirectStep", "GroupedBatch", "rollout", "rollout_steps"]

Generators = Sequence[torch.Generator] | None


@dataclass(frozen=True)
class WeatherCond:
    """Conditioning of one step. Shapes: prev (B, 2C, H, W), the two previous states
    normalised; hour (B, 2), sin/cos of the hour of day of the valid time."""

    prev: torch.Tensor
    hour: torch.Tensor


def hour_features(times, device=None) -> torch.Tensor:
    """Sin/cos of the hour of day of datetime64 ``times`` (B,). Shape (B, 2), float32, on ``device``."""
    hours = (np.asarray(times, dtype="datetime64[m]").astype(np.int64) / 60.0) % 24.0
    ang = torch.as_tensor(hours * 2 * np.pi / 24.0, dtype=torch.float32, device=device)
    return torch.stack([torch.sin(ang), torch.cos(ang)], -1).reshape(-1, 2)


@dataclass(frozen=True)
class Normalizer:
    """Per-channel normalisation of states and of one-step residuals (:class:`NormStats`).

    ``mean``, ``std``, ``residual_std``: float32 tensors of shape (C, 1, 1), physical units."""

    mean: torch.Tensor
    std: torch.Tensor
    residual_std: torch.Tensor

    @classmethod
    def from_stats(cls, stats: NormStats, device=None) -> "Normalizer":
        return cls(*(torch.as_tensor(a, dtype=torch.float32, device=device)[:, None, None] for a in stats.arrays()))

    def to(self, device) -> "Normalizer":
        return Normalizer(self.mean.to(device), self.std.to(device), self.residual_std.to(device))

    def condition(self, x_prev: torch.Tensor, x_cur: torch.Tensor) -> torch.Tensor:
        """The two states (B, C, H, W) as ``(x - mean) / std``, concatenated: (B, 2C, H, W)."""
        return torch.cat([(x_prev - self.mean) / self.std, (x_cur - self.mean) / self.std], 1)

    def residual(self, x_cur: torch.Tensor, x_next: torch.Tensor) -> torch.Tensor:
        """The normalised residual ``(x_next - x_cur) / residual_std``, (B, C, H, W)."""
        return (x_next - x_cur) / self.residual_std

    def state(self, x_cur: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """The next state ``x_cur + residual * residual_std``, (B, C, H, W), physical units."""
        return x_cur + residual * self.residual_std


class StepPredictor(Protocol):
    """One model step: ``(x_prev, x_cur (B, C, H, W) physical units, hour (B, 2) of the valid
    time, generators: one per member or None) -> x_next (B, C, H, W)``."""

    def __call__(self, x_prev: torch.Tensor, x_cur: torch.Tensor, hour: torch.Tensor,
                 generators: Generators) -> torch.Tensor: ...


class ResidualPredictor(Protocol):
    """The normalised residual (B, C, H, W) of one step given its :class:`WeatherCond`."""

    def __call__(self, cond: WeatherCond, generators: Generators) -> torch.Tensor: ...


class NormalizedResidual:
    """A :class:`StepPredictor` from a :class:`ResidualPredictor`: normalises the two states for
    the conditioning and turns the predicted normalised residual back into the next state."""

    def __init__(self, inner: ResidualPredictor, stats: NormStats):
        self.inner = inner
        self.normalizer = Normalizer.from_stats(stats)

    def __call__(self, x_prev, x_cur, hour, generators):
        if self.normalizer.mean.device != x_cur.device:
            self.normalizer = self.normalizer.to(x_cur.device)
        norm = self.normalizer
        return norm.state(x_cur, self.inner(WeatherCond(norm.condition(x_prev, x_cur), hour), generators))


class DiffusionStep:
    """The residual sampled with ``sampler`` from the denoiser ``(r_t, t, cond) -> r0_hat``:
    the prior is drawn from ``generators`` in ``space`` (shape, dtype and device of the
    state), then ``sampler(denoiser, prior, times, space=space, cond=cond,
    generator=generators, **sampler_options)``."""

    def __init__(self, denoiser: Callable, space, sampler: Callable, times: torch.Tensor, **sampler_options):
        self.denoiser, self.space, self.sampler, self.times = denoiser, space, sampler, times
        self.options = sampler_options

    def __call__(self, cond: WeatherCond, generators):
        c = cond.prev.shape[1] // 2
        prior = self.space.prior(cond.prev[:, :c], generators)  # the template gives shape, dtype and device
        return self.sampler(lambda x, t, cnd: self.denoiser(x, t, cnd), prior, self.times, space=self.space,
                            cond=cond, generator=generators, **self.options)


class DirectStep:
    """The residual from one call of ``net(None, None, cond)`` (no noise: the MSE baseline)."""

    def __init__(self, net: Callable):
        self.net = net

    def __call__(self, cond: WeatherCond, generators=None):
        return self.net(None, None, cond)


class GroupedBatch:
    """A :class:`StepPredictor` that evaluates ``inner`` on consecutive groups of ``size`` rows
    of the batch (B a multiple of ``size``) and concatenates the results.

    Batched kernels (matmuls, vectorised transcendental functions) may round differently at
    different batch sizes and row positions, so a row's result is only reproducible when it is
    always computed in a batch of the same size at the same position: ensemble forecasts lay
    member ``m`` out at row ``m % size`` of a group (padded with throw-away rows) and wrap their
    predictor in this, so member ``m`` is bit-for-bit the same whatever the number of members
    rolled out together."""

    def __init__(self, inner: StepPredictor, size: int):
        self.inner, self.size = inner, int(size)

    def __call__(self, x_prev, x_cur, hour, generators):
        b, s = x_cur.shape[0], self.size
        if b % s:
            raise ValueError(f"GroupedBatch: a batch of {b} rows is not a multiple of {s}")
        outs = [self.inner(x_prev[i:i + s], x_cur[i:i + s], hour[i:i + s],
                           None if generators is None else generators[i:i + s]) for i in range(0, b, s)]
        return outs[0] if len(outs) == 1 else torch.cat(outs)


def rollout_steps(predictor: StepPredictor, x_prev: torch.Tensor, x_cur: torch.Tensor, valid_times,
                  generators: Generators, *, boundary: tuple[torch.Tensor, Sequence] | None = None
                  ) -> Iterator[torch.Tensor]:
    """The autoregressive rollout of :func:`rollout`, one lead at a time: yields each step's
    state (B, C, H, W) as soon as it is made, so only the last two states (and the one being
    made) are held. ``boundary``: ``(mask (H, W) bool, values)`` with ``values[lead]`` the
    (C, H, W) band values of that step (a tensor (L, C, H, W) or any sequence of them), moved
    to the inputs' device one lead at a time."""
    device = x_cur.device
    b = x_cur.shape[0]
    mask = None if boundary is None else boundary[0].to(device)
    for lead, valid in enumerate(np.asarray(valid_times, dtype="datetime64[ns]")):
        x_next = predictor(x_prev, x_cur, hour_features(np.full(b, valid), device=device), generators)
        if mask is not None:
            x_next = torch.where(mask, torch.as_tensor(boundary[1][lead]).to(device), x_next)
        yield x_next
        x_prev, x_cur = x_cur, x_next


def rollout(predictor: StepPredictor, x_prev: torch.Tensor, x_cur: torch.Tensor, valid_times, generators: Generators,
            *, boundary: tuple[torch.Tensor, torch.Tensor] | None = None,
            on_step: Callable[[], object] | None = None) -> torch.Tensor:
    """Autoregressive rollout of ``predictor`` from ``x_prev``, ``x_cur`` (B, C, H, W).

    ``valid_times``: datetime64 (L,), the valid time of each step (its hour of day is the
    forcing). ``generators``: one ``torch.Generator`` per member on the inputs' device (or
    None). ``boundary``: ``(mask (H, W) bool, values (L, C, H, W))``: after every step the
    masked band takes that step's values (lateral boundary forcing of a regional model).
    ``on_step`` is called after every step. Returns the states (B, L, C, H, W) (every lead held:
    :func:`rollout_steps` streams them instead); every tensor is made on the inputs' device."""
    states = []
    for x_next in rollout_steps(predictor, x_prev, x_cur, valid_times, generators, boundary=boundary):
        states.append(x_next)
        if on_step is not None:
            on_step()
    return torch.stack(states, 1)

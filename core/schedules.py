"""Noise schedules: the noise level as a function of time ``t`` in [0, 1].

Convention: ``t = 0`` is clean data, ``t = 1`` is the prior. A Euclidean state at time ``t`` is
``x_t = alpha(t) * x0 + sigma(t) * eps`` (a Gaussian path), so every schedule gives
``alpha(t)``, ``sigma(t)`` and the inverse of the noise-to-signal ratio ``r = sigma / alpha``
(needed by samplers that pick intermediate times, e.g. DPM-Solver++ 2S and EDM churn), and the
closed-form time derivatives ``alpha_dot(t)``, ``sigma_dot(t)`` (the SDE drift and diffusion
``f = alpha'/alpha``, ``g^2 = 2 sigma sigma' - 2 f sigma^2`` of :meth:`Schedule.sde_coefficients`,
and flow-matching velocities). They are plain formulas, not autograd, so they are the same
under ``torch.inference_mode()``, ``torch.no_grad()`` and with gradients on (autograd inside a
sampler returns zeros under inference mode).

Schedules are small frozen dataclasses with pure methods (no hidden counters); sampling time
grids and training noise levels come from the same parameterised family (k-diffusion's
``get_sigmas_karras``, GenCast's ``samplers_utils``):

- :class:`VPLinear`, :class:`VPCosine`: variance preserving (DDPM, Ho et al. 2020; Nichol &
  Dhariwal 2021), ``alpha^2 + sigma^2 = 1``.
- :class:`EDM`: variance exploding with Karras et al. (2022) sigmas,
  ``sigma(t) = (sigma_min^(1/rho) + t (sigma_max^(1/rho) - sigma_min^(1/rho)))^rho``; a uniform
  ``t`` grid is the Karras grid and ``t ~ U(0, 1)`` is the "rho" training distribution GenCast
  trains with. ``sigma(0) = 0`` exactly (clean data), continuous for ``t > 0``.
- :class:`FlowMatching`: the linear interpolant ``x_t = (1 - t) x0 + t eps`` (rectified flow).
- :class:`LogLinear`: a log-linear sigma for IGSO3 rotation noise (FrameDiff),
  ``sigma(t) = sigma_min^(1-t) sigma_max^t`` for ``t > 0`` and 0 at ``t = 0``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from diffsci.core.errors import DiffsciError
from diffsci.core.io import check_int

__all__ = [
    "Schedule",
    "VPLinear",
    "VPCosine",
    "EDM",
    "FlowMatching",
    "LogLinear",
    "karras_sigmas",
    "time_grid",
    "SCHEDULES",
    "get_schedule",
]


def _as_tensor(t) -> torch.Tensor:
    return t if isinstance(t, torch.Tensor) else torch.as_tensor(t, dtype=torch.float64)


@dataclass(frozen=True, kw_only=True)
class Schedule:
    """Base class: subclasses define ``alpha``, ``sigma`` and ``t_from_ratio``."""

    #: largest time used by the default sampling grid (< 1 where alpha(1) = 0)
    t_max: float = 1.0

    def alpha(self, t: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def sigma(self, t: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def alpha_dot(self, t: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """``d alpha / dt`` in closed form."""
        raise NotImplementedError

    def sigma_dot(self, t: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """``d sigma / dt`` in closed form (for t > 0; the right derivative at t = 0)."""
        raise NotImplementedError

    def sde_coefficients(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Drift and squared diffusion ``(f, g^2)`` of the forward SDE ``dx = f x dt + g dW``
        whose marginals are ``alpha(t) x0 + sigma(t) eps`` (Song et al. 2021; Karras et al. 2022,
        eq. 4-6): ``f = alpha' / alpha``, ``g^2 = d sigma^2/dt - 2 f sigma^2``."""
        t = _as_tensor(t)
        a, s = self.alpha(t), self.sigma(t)
        f = self.alpha_dot(t) / a
        return f, 2 * s * self.sigma_dot(t) - 2 * f * s * s

    def ratio(self, t: torch.Tensor) -> torch.Tensor:
        """Noise-to-signal ratio ``r = sigma / alpha`` (inf where alpha = 0)."""
        return self.sigma(t) / self.alpha(t)

    def t_from_ratio(self, r: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def time_grid(self, steps: int, t_max: float | None = None, t_min: float = 0.0, power: float = 1.0,
                  t_stop: float = 0.0) -> torch.Tensor:
        """Decreasing sampling times ``t_max -> t_min``, ``steps + 1`` points, float64 (see :func:`time_grid`)."""
        return time_grid(steps, self.t_max if t_max is None else t_max, t_min, power, t_stop)

    def sample_t(self, n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """Training times ``t ~ U(0, t_max]`` (the same family the sampler uses)."""
        u = torch.rand(n, generator=generator, dtype=torch.float64, device=device)
        return (1.0 - u) * self.t_max


def time_grid(steps: int, t_max: float = 1.0, t_min: float = 0.0, power: float = 1.0,
              t_stop: float = 0.0) -> torch.Tensor:
    """``steps + 1`` decreasing times from ``t_max`` to ``t_min`` (float64):
    ``t_i = t_min + (t_max - t_min) u_i^power`` with ``u`` uniform from 1 to 0. ``power = 1`` is
    uniform; ``power > 1`` puts more steps near the clean end (as Karras' rho does for sigma).

    ``t_stop`` > t_min (and ``steps`` >= 2): the first ``steps - 1`` steps end at ``t_stop`` and
    the last goes from there to ``t_min``; a sampler's last step then lands on the denoiser's clean
    prediction at ``t_stop``, which is never asked about a lower time (FrameFlow samples to
    min_t = 0.01, the lowest time it trains on, in the same way)."""
    check_int(steps, "steps")
    if t_stop > t_min and steps >= 2:
        if t_stop >= t_max:
            raise DiffsciError(f"time grid needs t_stop < t_max, got t_stop={t_stop}, t_max={t_max}")
        grid = time_grid(steps - 1, t_max, t_stop, power)
        return torch.cat([grid, grid.new_full((1,), float(t_min))])
    if not 0.0 <= t_min < t_max <= 1.0:
        raise DiffsciError(f"time grid needs 0 <= t_min < t_max <= 1, got t_min={t_min}, t_max={t_max}")
    if not (isinstance(power, (int, float)) and 0 < power <= 10 and math.isfinite(power)):
        raise DiffsciError(f"time grid power must lie in (0, 10], got {power!r}")
    if power == 1:
        return torch.linspace(t_max, t_min, steps + 1, dtype=torch.float64)
    u = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    return t_min + (t_max - t_min) * u**power


@dataclass(frozen=True, kw_only=True)
class VPLinear(Schedule):
    """Continuous DDPM linear-beta schedule: ``log abar(t) = -(b0 t + (b1 - b0) t^2 / 2)``."""

    beta_min: float = 0.1
    beta_max: float = 20.0

    def _log_abar(self, t):
        t = _as_tensor(t)
        return -(self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2)

    def alpha(self, t):
        return torch.exp(0.5 * self._log_abar(t))

    def sigma(self, t):
        return torch.sqrt(-torch.expm1(self._log_abar(t)))

    def _beta(self, t):
        return self.beta_min + (self.beta_max - self.beta_min) * _as_tensor(t)

    def alpha_dot(self, t):
        # alpha = exp(L / 2), L' = -beta(t)
        return -0.5 * self._beta(t) * self.alpha(t)

    def sigma_dot(self, t):
        # sigma^2 = 1 - exp(L): 2 sigma sigma' = beta exp(L)
        return 0.5 * self._beta(t) * torch.exp(self._log_abar(t)) / self.sigma(t)

    def sde_coefficients(self, t):
        # f = -beta / 2, g^2 = beta (finite at t = 0, where sigma' is not)
        b = self._beta(t)
        return -0.5 * b, b.clone()

    def t_from_ratio(self, r):
        # log(1 + r^2) = b0 t + (b1 - b0) t^2 / 2
        r = _as_tensor(r)
        log1p = torch.log1p(r**2)
        a = 0.5 * (self.beta_max - self.beta_min)
        b = self.beta_min
        return (-b + torch.sqrt(b * b + 4 * a * log1p)) / (2 * a)


@dataclass(frozen=True, kw_only=True)
class VPCosine(Schedule):
    """Cosine schedule (Nichol & Dhariwal 2021): ``abar(t) = cos^2(pi/2 (t+s)/(1+s)) / cos^2(pi/2 s/(1+s))``.

    alpha(1) = 0, so the default sampling grid starts at ``t_max = 0.999``.
    """

    s: float = 0.008
    t_max: float = 0.999

    def _phase(self, t):
        return 0.5 * math.pi * (_as_tensor(t) + self.s) / (1 + self.s)

    def alpha(self, t):
        c0 = math.cos(0.5 * math.pi * self.s / (1 + self.s))
        return torch.clamp(torch.cos(self._phase(t)) / c0, min=0.0, max=1.0)

    def sigma(self, t):
        a = self.alpha(t)
        return torch.sqrt(torch.clamp(1 - a * a, min=0.0))

    def alpha_dot(self, t):
        c0 = math.cos(0.5 * math.pi * self.s / (1 + self.s))
        ph = self._phase(t)
        d = -torch.sin(ph) * (0.5 * math.pi / (1 + self.s)) / c0
        return torch.where(torch.cos(ph) / c0 < 0, torch.zeros_like(d), d)  # alpha is clamped at 0 past t = 1

    def sigma_dot(self, t):
        # sigma^2 = 1 - alpha^2: sigma' = -alpha alpha' / sigma
        return -self.alpha(t) * self.alpha_dot(t) / self.sigma(t)

    def t_from_ratio(self, r):
        r = _as_tensor(r)
        alpha = 1 / torch.sqrt(1 + r**2)
        c0 = math.cos(0.5 * math.pi * self.s / (1 + self.s))
        phase = torch.acos(torch.clamp(alpha * c0, -1.0, 1.0))
        return phase * (1 + self.s) / (0.5 * math.pi) - self.s


@dataclass(frozen=True, kw_only=True)
class EDM(Schedule):
    """Variance-exploding schedule with Karras sigmas (alpha = 1).

    ``sigma(t) = (sigma_min^(1/rho) + t (sigma_max^(1/rho) - sigma_min^(1/rho)))^rho`` for t > 0,
    ``sigma(0) = 0``. ``sigma_data`` is the data scale used by EDM preconditioning.
    """

    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0
    sigma_data: float = 1.0

    def __post_init__(self):
        if not 0 < self.sigma_min < self.sigma_max:
            raise DiffsciError(f"EDM schedule needs 0 < sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}")

    def alpha(self, t):
        return torch.ones_like(_as_tensor(t))

    def sigma(self, t):
        t = _as_tensor(t)
        lo, hi = self.sigma_min ** (1 / self.rho), self.sigma_max ** (1 / self.rho)
        s = (lo + t * (hi - lo)) ** self.rho
        return torch.where(t > 0, s, torch.zeros_like(s))

    def alpha_dot(self, t):
        return torch.zeros_like(_as_tensor(t))

    def sigma_dot(self, t):
        t = _as_tensor(t)
        lo, hi = self.sigma_min ** (1 / self.rho), self.sigma_max ** (1 / self.rho)
        return self.rho * (hi - lo) * (lo + t * (hi - lo)) ** (self.rho - 1)

    def t_from_ratio(self, r):
        r = _as_tensor(r)
        lo, hi = self.sigma_min ** (1 / self.rho), self.sigma_max ** (1 / self.rho)
        t = (r ** (1 / self.rho) - lo) / (hi - lo)
        return torch.where(r > 0, t.clamp(min=0.0), torch.zeros_like(t))


@dataclass(frozen=True, kw_only=True)
class FlowMatching(Schedule):
    """Linear interpolant ``x_t = (1 - t) x0 + t eps``; alpha(1) = 0, so sampling starts at 0.999."""

    t_max: float = 0.999

    def alpha(self, t):
        return 1 - _as_tensor(t)

    def sigma(self, t):
        return _as_tensor(t).clone()

    def alpha_dot(self, t):
        return -torch.ones_like(_as_tensor(t))

    def sigma_dot(self, t):
        return torch.ones_like(_as_tensor(t))

    def t_from_ratio(self, r):
        r = _as_tensor(r)
        return r / (1 + r)


@dataclass(frozen=True, kw_only=True)
class LogLinear(Schedule):
    """IGSO3 rotation-noise scale ``sigma(t) = sigma_min^(1-t) sigma_max^t`` (t > 0), 0 at t = 0.

    alpha is 1 (rotations are not shrunk); FrameDiff uses sigma in [0.1, 1.5].
    """

    sigma_min: float = 0.1
    sigma_max: float = 1.5

    def alpha(self, t):
        return torch.ones_like(_as_tensor(t))

    def sigma(self, t):
        t = _as_tensor(t)
        s = self.sigma_min ** (1 - t) * self.sigma_max**t
        return torch.where(t > 0, s, torch.zeros_like(s))

    def alpha_dot(self, t):
        return torch.zeros_like(_as_tensor(t))

    def sigma_dot(self, t):
        t = _as_tensor(t)
        return math.log(self.sigma_max / self.sigma_min) * self.sigma_min ** (1 - t) * self.sigma_max**t

    def t_from_ratio(self, r):
        r = _as_tensor(r)
        t = torch.log(r / self.sigma_min) / math.log(self.sigma_max / self.sigma_min)
        return torch.where(r > 0, t.clamp(min=0.0), torch.zeros_like(t))


def karras_sigmas(steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. (2022) sigmas: ``steps`` values from sigma_max down to sigma_min, then 0."""
    if steps < 2:
        raise DiffsciError(f"karras_sigmas needs steps >= 2, got {steps}")
    t = torch.linspace(1.0, 0.0, steps, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return torch.cat([(lo + t * (hi - lo)) ** rho, torch.zeros(1, dtype=torch.float64)])


SCHEDULES: dict[str, type[Schedule]] = {
    "vp_linear": VPLinear,
    "vp_cosine": VPCosine,
    "edm": EDM,
    "flow": FlowMatching,
    "loglinear": LogLinear,
}


def get_schedule(name: str, **kwargs) -> Schedule:
    """Build a schedule by registry name (``vp_linear``, ``vp_cosine``, ``edm``, ``flow``, ``loglinear``)."""
    try:
        cls = SCHEDULES[name]
    except KeyError:
        raise DiffsciError(f"unknown schedule {name!r}; choose one of {sorted(SCHEDULES)}") from None
    return cls(**kwargs)

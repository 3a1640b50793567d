"""Samplers: plain functions of a denoiser, a space and a time grid (k-diffusion style).

Every sampler has the same signature::

    sampler(denoise, x, times, *, space, cond=None, generator=None, constraint=None,
            callback=None, **options) -> x0

- ``denoise(x_t, t, cond) -> x0_hat`` predicts clean data; ``t`` is a (B,) tensor.
- ``x`` is the initial state at ``times[0]`` (e.g. ``space.prior(like, generator)``).
- ``times`` is a decreasing 1-D tensor of times in [0, 1] (``schedule.time_grid(steps)``);
  when it ends at 0 the result is clean data.
- ``generator``: a ``torch.Generator`` or a list with one per batch element (so sample ``i``
  does not depend on the batch it is in: ``make_generator(seed, "member", i)`` per element, see
  :func:`diffsci.core.utils.make_generator`).
- ``constraint(x, t) -> x`` is applied to the initial state and after every step: fixing
  known parts of the state (:func:`fix_known`, motif scaffolding / inpainting) or a symmetry.
- ``callback(i, t, x, x0_hat)`` sees every step (progress bars, trajectories).

No sampler holds state between calls and none knows a domain. The registry
:data:`SAMPLERS` maps names to functions; :func:`get_sampler` looks one up.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from diffsci.core.errors import DiffsciError
from diffsci.core.spaces import Euclidean, Product, Space, batch_size

__all__ = [
    "sample_ddpm",
    "sample_ddim",
    "ddim_invert",
    "sample_euler",
    "sample_heun",
    "sample_dpmpp_2s",
    "sample_dpmpp_2m",
    "sample_euler_maruyama",
    "sample_renoise",
    "sde_step_gain",
    "SAMPLERS",
    "get_sampler",
    "CHURN_SAMPLERS",
    "effective_churn",
    "fix_known",
    "classifier_free_guidance",
    "check_times",
]

Denoiser = Callable[..., object]


def check_times(times, *, increasing: bool = False) -> torch.Tensor:
    """Validate a time grid: 1-D, >= 2 points, finite, in [0, 1], strictly monotone."""
    times = torch.as_tensor(times, dtype=torch.float64)
    if times.ndim != 1 or times.numel() < 2:
        raise DiffsciError(f"times must be a 1-D grid with at least 2 points, got shape {tuple(times.shape)}")
    if not torch.isfinite(times).all() or times.min() < 0 or times.max() > 1:
        raise DiffsciError("times must be finite and lie in [0, 1]")
    diffs = times.diff()
    if increasing and not (diffs > 0).all():
        raise DiffsciError("times must be strictly increasing for inversion")
    if not increasing and not (diffs < 0).all():
        raise DiffsciError("times must be strictly decreasing (from noise at t near 1 to data at t = 0)")
    return times


def _t(t: torch.Tensor, x) -> torch.Tensor:
    ref = x[0] if isinstance(x, (tuple, list)) else x
    return t.to(device=ref.device, dtype=ref.dtype).expand(batch_size(x))


def _time_schedule(space: Space):
    return space.spaces[0].schedule if isinstance(space, Product) else space.schedule


def _prologue(x, times, space, constraint):
    if not isinstance(space, Space):
        raise DiffsciError(f"space must be a diffsci.core.spaces.Space, got {type(space).__name__}")
    times = check_times(times)
    if constraint is not None:
        x = constraint(x, _t(times[0], x))
    return x, times


def _post(x, t, constraint):
    return constraint(x, _t(t, x)) if constraint is not None else x


def sample_ddim(denoise, x, times, *, space, cond=None, generator=None, constraint=None, callback=None, eta=0.0):
    """DDIM (Song et al. 2021) on any space: eta = 0 deterministic, eta = 1 ancestral (DDPM)."""
    if not 0.0 <= float(eta) <= 1.0:
        raise DiffsciError(f"DDIM eta must lie in [0, 1], got {eta}")
    x, times = _prologue(x, times, space, constraint)
    for i in range(len(times) - 1):
        t, s = times[i], times[i + 1]
        x0_hat = denoise(x, _t(t, x), cond)
        x = space.step(x, x0_hat, _t(t, x), _t(s, x), eta, generator)
        x = _post(x, s, constraint)
        if callback is not None:
            callback(i, t, x, x0_hat)
    return x


def sample_ddpm(denoise, x, times, *, space, cond=None, generator=None, constraint=None, callback=None):
    """Ancestral sampling (Ho et al. 2020): each step draws from the Gaussian posterior
    ``q(x_s | x_t, x0 = x0_hat)``; DDIM with eta = 1."""
    return sample_ddim(
        denoise, x, times, space=space, cond=cond, generator=generator, constraint=constraint, callback=callback, eta=1.0
    )


def ddim_invert(denoise, x0, times, *, space, cond=None):
    """Deterministic DDIM inversion: run the eta = 0 step forward along an increasing grid.

    ``times`` increases from 0 (data) to the noise level wanted; at each step the denoiser is
    evaluated at the current time (at the next time for the first step from t = 0, where the
    implied noise is undefined). Sampling back with :func:`sample_ddim` on the reversed grid
    recovers ``x0`` up to the discretisation error.
    """
    times = check_times(times, increasing=True)
    x = x0
    for i in range(len(times) - 1):
        t, s = times[i], times[i + 1]
        t_eval = s if float(t) == 0.0 else t
        x0_hat = denoise(x, _t(t_eval, x), cond)
        x = space.step(x, x0_hat, _t(t_eval, x), _t(s, x), 0.0, None)
    return x


def _churn_time(space, t, gamma):
    """The time whose noise-to-signal ratio is (1 + gamma) times that of t (capped at 1)."""
    sched = _time_schedule(space)
    r = sched.ratio(t)
    return torch.clamp(sched.t_from_ratio(r * (1 + gamma)), max=1.0)


def _heun_like(denoise, x, times, space, cond, generator, constraint, callback, churn, s_tmin, s_tmax, second_order):
    if second_order:
        space.check_second_order()
    x, times = _prologue(x, times, space, constraint)
    n = len(times) - 1
    gamma0 = min(churn / n, math.sqrt(2) - 1) if churn > 0 else 0.0
    for i in range(n):
        t, s = times[i], times[i + 1]
        if gamma0 > 0 and s_tmin <= float(t) <= s_tmax and float(t) < 1.0:
            t_hat = _churn_time(space, t, gamma0)
            x = _post(space.renoise(x, _t(t, x), _t(t_hat, x), generator), t_hat, constraint)
            t = t_hat
        x0_hat = denoise(x, _t(t, x), cond)
        d = space.ode_derivative(x, x0_hat, _t(t, x))
        x_next = space.ode_move(x, d, _t(t, x), _t(s, x))
        if second_order and float(s) > 0:
            x0_2 = denoise(x_next, _t(s, x), cond)
            d2 = space.ode_derivative(x_next, x0_2, _t(s, x))
            x_next = space.ode_move(x, space.lincomb([(0.5, d), (0.5, d2)]), _t(t, x), _t(s, x))
        x = _post(x_next, s, constraint)
        if callback is not None:
            callback(i, t, x, x0_hat)
    return x


def sample_euler(
    denoise, x, times, *, space, cond=None, generator=None, constraint=None, callback=None,
    churn=0.0, s_tmin=0.0, s_tmax=1.0,
):
    """Euler on the probability-flow ODE (EDM Algorithm 2 with first-order steps).

    On SO(3) and products the step follows the geodesic (exp map): this is also the
    "geodesic Euler" sampler of flow matching. ``churn`` > 0 adds EDM stochastic churn: before
    each step with ``s_tmin <= t <= s_tmax`` the state is renoised from t to the time whose
    noise ratio is ``1 + min(churn / steps, sqrt 2 - 1)`` times larger (then ``constraint`` is
    applied at that time, so fixed parts stay as the constraint holds them).
    """
    return _heun_like(denoise, x, times, space, cond, generator, constraint, callback, churn, s_tmin, s_tmax, False)


def sample_heun(
    denoise, x, times, *, space, cond=None, generator=None, constraint=None, callback=None,
    churn=0.0, s_tmin=0.0, s_tmax=1.0,
):
    """Heun's second-order method on the probability-flow ODE (Karras et al. 2022, Alg. 2),
    with optional stochastic churn; the last step to t = 0 is an Euler step, as in EDM."""
    return _heun_like(denoise, x, times, space, cond, generator, constraint, callback, churn, s_tmin, s_tmax, True)


def _require_euclidean(space, name):
    if not isinstance(space, Euclidean):
        raise DiffsciError(f"{name} is defined for Euclidean spaces only, got {type(space).__name__}")


def _lambda(sched, t):
    a, s = sched.alpha(t), sched.sigma(t)
    return torch.log(a) - torch.log(s)


def sample_dpmpp_2m(denoise, x, times, *, space, cond=None, generator=None, constraint=None, callback=None):
    """DPM-Solver++(2M) (Lu et al. 2022), the multistep second-order data-prediction solver, on
    any space: one denoiser evaluation per step, like Euler.

    With ``lambda = log(alpha / sigma)`` and ``h = lambda_s - lambda_t`` the Euclidean update is
    ``x_s = (sigma_s / sigma_t) x_t - alpha_s expm1(-h) D`` with
    ``D = (1 + 1/(2r)) x0_i - 1/(2r) x0_{i-1}``, ``r = h_{i-1} / h``; first order on the first
    step and on the final step to sigma = 0. That update is the deterministic DDIM step towards
    ``D``, so the sampler takes ``space.step(x, D, t, s)`` with
    ``D = space.extrapolate(x0_{i-1}, x0_i, 1 + 1/(2r))``: on SO(3) the extrapolation follows
    the geodesic and the step is the space's (with ``SO3Flow``'s rotation rate). lambda comes
    from the time schedule (a product's first factor: all factors share t).
    """
    x, times = _prologue(x, times, space, constraint)
    sched = _time_schedule(space)
    prev_x0, prev_h = None, None
    for i in range(len(times) - 1):
        t, s = times[i], times[i + 1]
        x0_hat = denoise(x, _t(t, x), cond)
        d = x0_hat
        if float(sched.sigma(s)) > 0:
            h = _lambda(sched, s) - _lambda(sched, t)
            if prev_x0 is not None and torch.isfinite(h) and torch.isfinite(prev_h):
                d = space.extrapolate(prev_x0, x0_hat, 1.0 + float(h / (2 * prev_h)))
            prev_h = h
        x = space.step(x, d, _t(t, x), _t(s, x), 0.0, generator)
        prev_x0 = x0_hat
        x = _post(x, s, constraint)
        if callback is not None:
            callback(i, t, x, x0_hat)
    return x


def sample_dpmpp_2s(denoise, x, times, *, space, cond=None, generator=None, constraint=None, callback=None):
    """DPM-Solver++(2S) (Lu et al. 2022; GenCast's sampler without churn): a single-step
    second-order solver that evaluates the denoiser at the lambda-midpoint of every step."""
    _require_euclidean(space, "DPM-Solver++")
    x, times = _prologue(x, times, space, constraint)
    sched = space.schedule
    for i in range(len(times) - 1):
        t, s = times[i], times[i + 1]
        x0_hat = denoise(x, _t(t, x), cond)
        a_s, sg_s, sg_t = sched.alpha(s), sched.sigma(s), sched.sigma(t)
        lam_t, lam_s = _lambda(sched, t), _lambda(sched, s)
        if float(sg_s) == 0.0:
            x = (a_s * x0_hat).to(x.dtype)
        elif not torch.isfinite(lam_t):
            x = ((sg_s / sg_t) * x - a_s * torch.expm1(lam_t - lam_s) * x0_hat).to(x.dtype)
        else:
            h = lam_s - lam_t
            lam_m = lam_t + 0.5 * h
            t_m = sched.t_from_ratio(torch.exp(-lam_m))
            a_m, sg_m = sched.alpha(t_m), sched.sigma(t_m)
            x_m = ((sg_m / sg_t) * x - a_m * torch.expm1(-0.5 * h) * x0_hat).to(x.dtype)
            x0_m = denoise(x_m, _t(t_m, x), cond)
            x = ((sg_s / sg_t) * x - a_s * torch.expm1(-h) * x0_m).to(x.dtype)
        x = _post(x, s, constraint)
        if callback is not None:
            callback(i, t, x, x0_hat)
    return x


#: largest ``g^2 dt / sigma^2`` of an Euler-Maruyama step (see :func:`sde_step_gain`)
EM_MAX_GAIN = 2.0


def sde_step_gain(schedule, times) -> torch.Tensor:
    """``g(t)^2 (t - s) / sigma(t)^2`` for each step ``t -> s`` of ``times`` with ``s > 0``.

    The score drift of an Euler-Maruyama step moves ``x`` towards the denoised state by this
    fraction of the implied noise: above 1 it overshoots, above 2 the noise part grows at every
    step and the sample diverges (the explicit-Euler stability bound of the linear drift; exact
    for variance-exploding schedules, ``f = 0``, which is where the sampler checks it: with
    ``f != 0`` the ``f dt`` term shifts the bound, and VP/flow grids that start near t = 1
    overshoot on the first step yet recover). On
    EDM's schedule it is ``2 rho (hi - lo) (t - s) / (lo + t (hi - lo))`` with
    ``lo, hi = sigma_min^(1/rho), sigma_max^(1/rho)``: largest near t = 0, 3.2 on a uniform
    5-step grid with rho = 7, sigma_min = 0.03, sigma_max = 80 (a 5-step grid is unstable there).
    Shape: times (N + 1,) -> (number of steps with s > 0,).
    """
    times = torch.as_tensor(times, dtype=torch.float64)
    t, s = times[:-1], times[1:]
    keep = s > 0
    t, s = t[keep], s[keep]
    _, g2 = schedule.sde_coefficients(t)
    return g2 * (t - s) / schedule.sigma(t) ** 2


def _check_em_grid(space, times):
    spaces = space.spaces if isinstance(space, Product) else (space,)
    for sp in spaces:
        if not hasattr(sp.schedule, "sde_coefficients"):
            continue
        t = times[:-1][times[1:] > 0]
        if not t.numel() or bool((sp.schedule.sde_coefficients(t)[0] != 0).any()):
            continue  # only variance-exploding schedules (f = 0), where the bound is exact
        gain = sde_step_gain(sp.schedule, times)
        if float(gain.max()) > EM_MAX_GAIN:
            i = int(gain.argmax())
            raise DiffsciError(
                f"euler_maruyama: the step from t={float(times[i]):.4g} to t={float(times[i + 1]):.4g} is unstable "
                f"(g^2 dt / sigma^2 = {float(gain.max()):.2f} > {EM_MAX_GAIN:g}: the SDE step overshoots and the "
                f"sample diverges); use a finer time grid (more steps) or another sampler"
            )


def _last_step_deterministic(denoise, x, times, space, cond, generator, constraint, callback, move):
    """The loop of a sampler whose steps are ``move(x, x0_hat, t, s, generator)`` except the step
    to t = 0, which is the deterministic ``space.step`` (it lands on x0_hat)."""
    for i in range(len(times) - 1):
        t, s = times[i], times[i + 1]
        x0_hat = denoise(x, _t(t, x), cond)
        if float(s) == 0.0:
            x = space.step(x, x0_hat, _t(t, x), _t(s, x), 0.0, generator)
        else:
            x = move(x, x0_hat, _t(t, x), _t(s, x), generator)
        x = _post(x, s, constraint)
        if callback is not None:
            callback(i, t, x, x0_hat)
    return x


def sample_euler_maruyama(denoise, x, times, *, space, cond=None, generator=None, constraint=None, callback=None):
    """Euler-Maruyama on the reverse-time SDE ``dx = [f x - g^2 score] dt + g dW`` (Song et al.
    2021); on SO(3) the increment is applied through the exp map (FrameDiff). The final step to
    t = 0 returns the denoised state.

    ``f`` and ``g^2`` are the schedule's closed forms (:meth:`Schedule.sde_coefficients`), so
    the sampler is the same under ``torch.inference_mode()``. A first-order SDE step needs a fine
    grid: on a variance-exploding schedule (EDM, log-linear) a grid with a step whose
    :func:`sde_step_gain` exceeds :data:`EM_MAX_GAIN` (e.g. 5 steps on EDM's Karras grid) is
    refused with a :class:`DiffsciError`.
    """
    x, times = _prologue(x, times, space, constraint)
    _check_em_grid(space, times)
    return _last_step_deterministic(denoise, x, times, space, cond, generator, constraint, callback, space.sde_step)


def sample_renoise(denoise, x, times, *, space, cond=None, generator=None, constraint=None, callback=None):
    """The re-noising sampler (the multistep sampler of consistency models, Song et al. 2023,
    Algorithm 1, run with a denoiser): each step predicts the clean state and draws the state at
    the next time afresh around it, ``x_s = alpha_s x0_hat + sigma_s z`` with new noise ``z``
    (:meth:`~diffsci.core.spaces.Space.renoise_step`: DDIM's step with the largest noise
    ``c = sigma_s``; ``SO3Flow`` with a rotation rate takes its deterministic step). The step to
    t = 0 is the deterministic step, so the result is the last clean prediction. One denoiser
    evaluation per step. With the exact denoiser it is not an exact sampler (each state keeps
    only the posterior mean of the previous one), but every state it passes the denoiser lies on
    the forward marginal of its time around a prediction, where few-step ODE states do not.
    """
    x, times = _prologue(x, times, space, constraint)
    return _last_step_deterministic(denoise, x, times, space, cond, generator, constraint, callback, space.renoise_step)


SAMPLERS: dict[str, Callable] = {
    "ddpm": sample_ddpm,
    "ddim": sample_ddim,
    "euler": sample_euler,
    "geodesic_euler": sample_euler,
    "heun": sample_heun,
    "dpmpp_2s": sample_dpmpp_2s,
    "dpmpp_2m": sample_dpmpp_2m,
    "euler_maruyama": sample_euler_maruyama,
    "renoise": sample_renoise,
}


#: the samplers that take EDM's stochastic churn (``churn=``)
CHURN_SAMPLERS: tuple[str, ...] = ("euler", "heun")


def effective_churn(sampler: str, churn: float) -> float:
    """The EDM churn sampling with ``sampler`` uses: ``churn`` for the samplers of
    :data:`CHURN_SAMPLERS`, which take it; 0 for the others (recorded so in results)."""
    return float(churn) if sampler in CHURN_SAMPLERS else 0.0


def get_sampler(name: str) -> Callable:
    """Look up a sampler by name; an unknown name raises a DiffsciError listing the choices."""
    try:
        return SAMPLERS[name]
    except KeyError:
        raise DiffsciError(f"unknown sampler {name!r}; choose one of {', '.join(sorted(SAMPLERS))}") from None


# ============================================================================ conditioning
def fix_known(space: Space, known, mask, *, mode: str = "clean", generator=None):
    """A ``constraint`` holding known parts of the state fixed (inpainting, motif scaffolding).

    ``mask`` marks the known entries (a prefix-shaped bool tensor such as (B, N), or a tuple of
    them for a product space). ``mode="clean"`` keeps the clean known values at every step (the
    model sees the motif as given, as RFdiffusion does); ``mode="noised"`` replaces them by a
    fresh forward-noised copy at the current time (replacement/RePaint-style inpainting). At
    t = 0 both modes return the known values exactly.
    """
    if mode not in ("clean", "noised"):
        raise DiffsciError(f"fix_known: mode must be 'clean' or 'noised', got {mode!r}")

    def constraint(x, t):
        if mode == "noised" and float(t.reshape(-1)[0]) > 0:
            return space.replace(x, space.noise(known, t, generator), mask)
        return space.replace(x, known, mask)

    return constraint


def classifier_free_guidance(denoise, space: Space, scale: float, uncond=None):
    """Classifier-free guidance (Ho & Salimans 2022) on clean-data predictions:
    ``D = D(x, t, uncond) + scale (D(x, t, cond) - D(x, t, uncond))``, extrapolated on the
    space's manifold (geodesically for rotations). ``scale = 1`` is the conditional model."""

    def guided(x, t, cond):
        x_u = denoise(x, t, uncond)
        if scale == 0:
            return x_u
        x_c = denoise(x, t, cond)
        return space.extrapolate(x_u, x_c, scale)

    return guided

"""The re-noising sampler against its exact output law on Gaussian data (closed-form denoiser)."""

import torch

from diffsci.core.samplers import get_sampler
from diffsci.core.schedules import FlowMatching
from diffsci.core.spaces import Euclidean

M, V = 2.0, 0.5  # data N(M, V) in 1-D
N = 200_000


def _gain(t: float) -> float:
    """``E[x0 | x_t] = M + k (x_t - (1 - t) M)`` under ``x_t = (1 - t) x0 + t z``: the gain k."""
    return (1 - t) * V / ((1 - t) ** 2 * V + t**2)


def _law(times) -> tuple[float, float]:
    """Mean and variance of the sampler's output: each step takes the posterior mean of the state
    and draws ``x_s = (1 - s) x0_hat + s z`` (s > 0), the last step returns x0_hat."""
    mean, var = 0.0, 1.0  # the prior at t = 1
    for t, s in zip(times[:-1], times[1:]):
        k = _gain(t)
        d_mean, d_var = M + k * (mean - (1 - t) * M), k**2 * var
        mean, var = (d_mean, d_var) if s == 0 else ((1 - s) * d_mean, (1 - s) ** 2 * d_var + s**2)
    return mean, var


def test_renoise_sampler_has_its_analytic_output_law():
    sched = FlowMatching()
    space = Euclidean(sched)
    times = sched.time_grid(6, power=2.0)
    den = lambda x, t, c: M + (1 - t[:, None]) * V / ((1 - t[:, None]) ** 2 * V + t[:, None] ** 2) * (x - (1 - t[:, None]) * M)  # noqa: E731
    x = space.prior(torch.zeros(N, 1, dtype=torch.float64), torch.Generator().manual_seed(0))
    out = get_sampler("renoise")(den, x, times, space=space, generator=torch.Generator().manual_seed(1))[:, 0]
    mean, var = _law(times.tolist())
    assert var < 0.99 * V  # not the data law: each state keeps only the previous posterior mean
    assert abs(float(out.mean()) - mean) < 4 * (var / N) ** 0.5
    assert abs(float(out.var()) / var - 1) < 0.02

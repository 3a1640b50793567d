"""Closed-form schedule derivatives against finite differences, under every grad mode.

Regression for issue 14, bug 8: ``core.schedules.derivative`` used autograd and returned zeros
under ``torch.inference_mode()``, so the Euler-Maruyama SDE lost its drift and diffusion.
"""

import contextlib

import pytest
import torch

from diffsci.core.errors import DiffsciError
from diffsci.core.schedules import EDM, SCHEDULES, FlowMatching, LogLinear, VPCosine, VPLinear

SCHEDS = [VPLinear(), VPCosine(), EDM(sigma_max=80.0), EDM(sigma_min=0.01, sigma_max=5.0, rho=3.0), FlowMatching(),
          LogLinear(), LogLinear(sigma_min=0.05, sigma_max=2.0)]
# interior times (EDM and LogLinear jump to 0 at t = 0; the cosine alpha reaches 0 at t = 1)
T = torch.tensor([0.01, 0.1, 0.3, 0.5, 0.77, 0.95], dtype=torch.float64)
MODES = [contextlib.nullcontext, torch.no_grad, torch.inference_mode]


def _fd(fn, t, h=1e-6):
    return (fn(t + h) - fn(t - h)) / (2 * h)


def test_every_registered_schedule_is_covered():
    assert {type(s) for s in SCHEDS} == set(SCHEDULES.values())


@pytest.mark.parametrize("mode", MODES, ids=["grad", "no_grad", "inference"])
@pytest.mark.parametrize("sched", SCHEDS, ids=repr)
def test_closed_form_derivatives_match_finite_differences(sched, mode):
    with mode():
        for name in ("alpha", "sigma"):
            exact = getattr(sched, f"{name}_dot")(T)
            fd = _fd(getattr(sched, name), T)
            assert torch.allclose(exact, fd, rtol=1e-6, atol=1e-7), (name, exact, fd)
        f, g2 = sched.sde_coefficients(T)
        f_fd = _fd(lambda u: torch.log(sched.alpha(u)), T)
        g2_fd = _fd(lambda u: sched.sigma(u) ** 2, T) - 2 * f_fd * sched.sigma(T) ** 2
        assert torch.allclose(f, f_fd, rtol=1e-6, atol=1e-7)
        assert torch.allclose(g2, g2_fd, rtol=1e-6, atol=1e-6)
        assert (g2 > 0).all()  # every schedule adds noise as t grows


def test_vp_linear_sde_is_the_ddpm_sde():
    s = VPLinear(beta_min=0.1, beta_max=20.0)
    f, g2 = s.sde_coefficients(T)
    beta = 0.1 + 19.9 * T
    assert torch.allclose(f, -beta / 2) and torch.allclose(g2, beta)
    # finite at t = 0, where sigma' is not
    f0, g0 = s.sde_coefficients(torch.zeros(1, dtype=torch.float64))
    assert torch.isfinite(f0).all() and torch.allclose(g0, torch.tensor([0.1], dtype=torch.float64))


@pytest.mark.parametrize("mode", MODES, ids=["grad", "no_grad", "inference"])
@pytest.mark.parametrize("sched", [FlowMatching(), VPLinear(), VPCosine()], ids=repr)
def test_closed_form_derivatives_recover_x0_from_velocity_under_every_grad_mode(sched, mode):
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(6, 3, generator=g, dtype=torch.float64), torch.randn(6, 3, generator=g, dtype=torch.float64)
    t = T
    a, s = sched.alpha(t)[:, None], sched.sigma(t)[:, None]
    da, ds = _fd(sched.alpha, t)[:, None], _fd(sched.sigma, t)[:, None]
    u = da * x0 + ds * eps  # the true velocity, from finite differences
    with mode():  # x0 from x and u with the closed-form derivatives: (s' x - s u) / (s' a - s a')
        tt = torch.as_tensor(t, dtype=torch.float64)
        ca, cs, cda, cds = (f(tt)[:, None] for f in (sched.alpha, sched.sigma, sched.alpha_dot, sched.sigma_dot))
        x0_hat = (cds * (a * x0 + s * eps) - cs * u) / (cds * ca - cs * cda)
    assert torch.allclose(x0_hat, x0, rtol=1e-5, atol=1e-6)


def test_time_grid_stops_at_t_stop_then_jumps_to_t_min():
    from diffsci.core.schedules import time_grid

    g = time_grid(6, 0.999, 0.0, 2.0, t_stop=0.01)
    assert len(g) == 7 and float(g[-1]) == 0.0 and float(g[-2]) == pytest.approx(0.01)
    assert bool((g[1:] < g[:-1]).all()) and float(g[1:-1].min()) >= 0.01 - 1e-12
    torch.testing.assert_close(g[:-1], time_grid(5, 0.999, 0.01, 2.0))
    torch.testing.assert_close(time_grid(6, 0.999, 0.0, 2.0, t_stop=0.0), time_grid(6, 0.999, 0.0, 2.0))
    torch.testing.assert_close(time_grid(1, 0.999, 0.0, 2.0, t_stop=0.01), time_grid(1, 0.999, 0.0, 2.0))
    with pytest.raises(DiffsciError, match="t_stop < t_max"):
        time_grid(6, 0.5, 0.0, 1.0, t_stop=0.5)

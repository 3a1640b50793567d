"""Forward marginals of every space and the exactness of the reverse processes."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from diffsci.core import so3
from diffsci.core.errors import DiffsciError
from diffsci.core.samplers import get_sampler
from diffsci.core.schedules import EDM, FlowMatching, LogLinear, VPCosine, VPLinear
from diffsci.core.spaces import Euclidean, EuclideanCoM, Product, SO3Diffusion, SO3Flow, remove_com

N = 10_000


@pytest.mark.parametrize("schedule", [VPLinear(), VPCosine(), EDM(), FlowMatching()], ids=lambda s: type(s).__name__)
def test_euclidean_forward_marginal(schedule):
    space = Euclidean(schedule)
    x0 = torch.tensor([1.5, -2.0], dtype=torch.float64).expand(N, 2)
    t = torch.full((N,), 0.4, dtype=torch.float64)
    xt = space.noise(x0, t, torch.Generator().manual_seed(0))
    a, s = float(schedule.alpha(t[0])), float(schedule.sigma(t[0]))
    assert torch.allclose(xt.mean(0), a * x0[0], atol=4 * s / math.sqrt(N))
    assert torch.allclose(xt.std(0), torch.full((2,), s, dtype=torch.float64), rtol=0.03)


def test_schedule_inverse_ratio():
    t = torch.linspace(0.01, 0.99, 50, dtype=torch.float64)
    for sched in (VPLinear(), VPCosine(), EDM(), FlowMatching(), LogLinear()):
        assert torch.allclose(sched.t_from_ratio(sched.ratio(t)), t, atol=1e-8), type(sched).__name__


def test_com_forward_marginal_with_mask():
    space = EuclideanCoM(VPLinear())
    b, n = N, 6
    mask = torch.ones(b, n, dtype=torch.bool)
    mask[:, 4:] = False
    space = space.with_mask(mask)
    x0 = remove_com(torch.randn(1, n, 3, dtype=torch.float64).expand(b, n, 3), mask)
    t = torch.full((b,), 0.3, dtype=torch.float64)
    xt = space.noise(x0, t, torch.Generator().manual_seed(1))
    assert (xt[:, 4:] == 0).all()
    assert xt[:, :4].mean(1).abs().max() < 1e-12  # zero CoM per example
    a, s = float(space.schedule.alpha(t[0])), float(space.schedule.sigma(t[0]))
    noise = xt[:, :4] - a * x0[:, :4]
    # covariance of the projected noise along one coordinate: s^2 (I - 11^T / n_valid)
    cov = torch.cov(noise[..., 0].T)
    expect = s**2 * (torch.eye(4, dtype=torch.float64) - 1 / 4)
    assert (cov - expect).abs().max() < 0.05 * s**2


def test_so3_forward_marginal_is_igso3():
    space = SO3Diffusion(LogLinear())
    r0 = so3.random_rotations((1,), torch.Generator().manual_seed(2), torch.float64).expand(N, 3, 3)
    t = torch.full((N,), 0.6, dtype=torch.float64)
    rt = space.noise(r0[:, None], t, torch.Generator().manual_seed(3))[:, 0]
    sigma = float(space.schedule.sigma(t[0]))
    w = so3.geodesic_distance(r0, rt).numpy()
    assert stats.kstest(w, lambda x: so3.igso3_angle_cdf(x, sigma)).pvalue > 0.01


def test_so3_flow_forward_marginal():
    space = SO3Flow()
    r0 = so3.random_rotations((1,), torch.Generator().manual_seed(4), torch.float64).expand(N, 3, 3)
    t = 0.7
    rt = space.noise(r0[:, None], torch.full((N,), t, dtype=torch.float64), torch.Generator().manual_seed(5))[:, 0]
    w = so3.geodesic_distance(r0, rt).numpy() / t  # the angle to a uniform rotation, scaled by t
    assert stats.kstest(w, so3.uniform_angle_cdf).pvalue > 0.01


def test_product_forward_marginal():
    space = Product((Euclidean(VPLinear()), SO3Diffusion(LogLinear())))
    x0 = (torch.zeros(N, 1, 3, dtype=torch.float64), torch.eye(3, dtype=torch.float64).expand(N, 1, 3, 3))
    t = torch.full((N,), 0.5, dtype=torch.float64)
    xt = space.noise(x0, t, torch.Generator().manual_seed(6))
    assert abs(float(xt[0].std()) - float(VPLinear().sigma(t[0]))) < 0.03 * float(VPLinear().sigma(t[0]))
    sigma = float(LogLinear().sigma(t[0]))
    w = so3.rotation_angle(xt[1][:, 0]).numpy()
    assert stats.kstest(w, lambda x: so3.igso3_angle_cdf(x, sigma)).pvalue > 0.01
    with pytest.raises(DiffsciError):
        space.noise(x0[0], t)


def _exact_x0_for_score(space, r_star, rt, t, sigma0):
    """x0_hat whose IGSO3(sigma_t) score at rt equals the exact score of IGSO3(sqrt(sigma0^2 + sigma_t^2))
    around r_star: same axis, angle w' solving dlogf_t(w') = dlogf_tot(w)."""
    sig_t = float(space.schedule.sigma(t))
    sig_tot = math.sqrt(sigma0**2 + sig_t**2)
    v = so3.log_map(r_star.transpose(-1, -2) @ rt)  # (B, 3)
    w = v.norm(dim=-1).numpy()
    target = so3.igso3_dlogf(w, sig_tot)
    # dlogf_t decreases from 0 at w = 0 to its minimum at w*: invert it on [0, w*] by interpolation
    grid = np.linspace(0, math.pi, 20001)
    vals = so3.igso3_dlogf(grid, sig_t)
    k = int(np.argmin(vals))
    wp = np.interp(-target, -vals[: k + 1], grid[: k + 1])
    axis = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return rt @ so3.exp_map(-axis * torch.as_tensor(wp)[:, None])


def test_so3_reverse_process_recovers_igso3_target():
    sigma0 = 0.3
    space = SO3Diffusion(LogLinear(sigma_min=0.05, sigma_max=1.2))
    n = 4000
    r_star = so3.random_rotations((1,), torch.Generator().manual_seed(7), torch.float64)[0]
    sig_max = float(space.schedule.sigma(torch.tensor(1.0, dtype=torch.float64)))
    sig_tot = math.sqrt(sigma0**2 + sig_max**2)
    # exact marginal at t = 1: IGSO3(sig_tot) around r_star
    v = so3.sample_igso3(torch.full((1,), sig_tot, dtype=torch.float64), (1, n), torch.Generator().manual_seed(8), torch.float64)[0]
    x = (r_star @ so3.exp_map(v))[:, None]

    def den(x, t, cond):
        return _exact_x0_for_score(space, r_star, x[:, 0], t[0], sigma0)[:, None]

    out = get_sampler("euler_maruyama")(den, x, space.schedule.time_grid(200), space=space,
                                        generator=torch.Generator().manual_seed(9))
    w = so3.geodesic_distance(r_star.expand(n, 3, 3), out[:, 0]).numpy()
    assert stats.kstest(w, lambda u: so3.igso3_angle_cdf(u, sigma0)).pvalue > 0.01


def test_com_gaussian_reverse_process():
    s0, n_pts = 1.3, 5
    space = EuclideanCoM(EDM(sigma_max=40.0))
    sched = space.schedule

    def den(x, t, cond):  # exact E[x0 | x_t] for x0 ~ N(0, s0^2) projected to zero CoM
        s = sched.sigma(t).to(x.dtype)[:, None, None]
        return remove_com(x) * s0**2 / (s0**2 + s**2)

    n = 4000
    x = space.prior(torch.zeros(n, n_pts, 3, dtype=torch.float64), torch.Generator().manual_seed(10))
    out = get_sampler("heun")(den, x, sched.time_grid(60), space=space)
    assert out.mean(1).abs().max() < 1e-10
    # each coordinate of a point ~ N(0, s0^2 (1 - 1/n_pts))
    z = out[:, 0, 0].numpy() / (s0 * math.sqrt(1 - 1 / n_pts))
    assert stats.kstest(z, "norm").pvalue > 0.01


def test_renoise_step_is_a_fresh_draw_around_the_prediction():
    """``renoise_step`` = ``alpha_s x0_hat + sigma_s z`` with the generator's next normal draws
    (centred for EuclideanCoM), whatever ``x``; SO3Flow with a rate takes its deterministic step,
    at rate 1 it draws its forward marginal at s."""
    b, n = 3, 5
    t, s = torch.full((b,), 0.6, dtype=torch.float64), torch.full((b,), 0.25, dtype=torch.float64)
    x0 = torch.randn(b, n, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    z = torch.randn(b, n, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for space, noise in ((Euclidean(FlowMatching()), z), (EuclideanCoM(FlowMatching()), z - z.mean(1, keepdim=True))):
        for x in (torch.zeros_like(x0), 5 + x0):
            got = space.renoise_step(x, x0, t, s, torch.Generator().manual_seed(2))
            torch.testing.assert_close(got, 0.75 * x0 + 0.25 * noise, rtol=0, atol=1e-12)
    r0 = so3.random_rotations((b, n), torch.Generator().manual_seed(3), torch.float64)
    r = so3.random_rotations((b, n), torch.Generator().manual_seed(4), torch.float64)
    rated = SO3Flow(inference_rate=10.0)
    assert torch.equal(rated.renoise_step(r, r0, t, s, torch.Generator().manual_seed(5)), rated.step(r, r0, t, s))
    exact = SO3Flow()
    torch.testing.assert_close(exact.renoise_step(r, r0, t, s, torch.Generator().manual_seed(5)),
                               exact.noise(r0, s, torch.Generator().manual_seed(5)), rtol=0, atol=1e-12)
    prod = Product((EuclideanCoM(FlowMatching()), rated))
    trans, rots = prod.renoise_step((x0, r), (x0, r0), t, s, torch.Generator().manual_seed(2))
    torch.testing.assert_close(trans, 0.75 * x0 + 0.25 * (z - z.mean(1, keepdim=True)), rtol=0, atol=1e-12)
    assert torch.equal(rots, rated.step(r, r0, t, s))


def test_so3_flow_churn_leaves_rotations_at_a_rate_and_is_refused_for_the_exact_flow():
    """EDM churn on protein frames: a Product renoises its translations from t to t_hat (the
    Euclidean renoise, ``a_h/a_t x + sqrt(s_h^2 - (a_h/a_t)^2 s_t^2) z``) and, at a rotation rate
    != 1, leaves the rotations as they are; the exact flow refuses."""
    b, n = 2, 6
    t, t_hat = torch.full((b,), 0.2, dtype=torch.float64), torch.full((b,), 0.3, dtype=torch.float64)
    x = torch.randn(b, n, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    r = so3.random_rotations((b, n), torch.Generator().manual_seed(3), torch.float64)
    prod = Product((EuclideanCoM(FlowMatching()), SO3Flow(inference_rate=10.0)))
    trans, rots = prod.renoise((x, r), t, t_hat, torch.Generator().manual_seed(2))
    assert torch.equal(rots, r)
    z = torch.randn(b, n, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ratio = 0.7 / 0.8
    add = math.sqrt(0.3**2 - ratio**2 * 0.2**2)
    torch.testing.assert_close(trans, ratio * x + add * (z - z.mean(1, keepdim=True)), rtol=0, atol=1e-12)
    with pytest.raises(DiffsciError, match="rotation rate 1"):
        SO3Flow().renoise(r, t, t_hat)

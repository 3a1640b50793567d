"""Every sampler against the exact answer of a 2-D Gaussian mixture (closed-form denoiser)."""

import numpy as np
import pytest
import torch

from diffsci.core import DiffsciError
from diffsci.core.samplers import SAMPLERS, classifier_free_guidance, ddim_invert, fix_known, get_sampler
from diffsci.core.schedules import EDM, FlowMatching, VPLinear
from diffsci.core.spaces import Euclidean
from diffsci.core.toy import ring_mixture

GM = ring_mixture(center=(3.0, 2.0))
N = 20_000
# steps per sampler: first-order and stochastic samplers need more
STEPS = {"ddpm": 400, "euler_maruyama": 400, "ddim": 200, "euler": 200, "geodesic_euler": 200,
         "heun": 40, "dpmpp_2s": 40, "dpmpp_2m": 40}


def _run(name, schedule, steps, n=N, seed=1):
    space = Euclidean(schedule)
    den = lambda x, t, c: GM.denoise(x, t, schedule)  # noqa: E731
    x = space.prior(torch.zeros(n, 2, dtype=torch.float64), torch.Generator().manual_seed(seed))
    return get_sampler(name)(den, x, schedule.time_grid(steps), space=space, generator=torch.Generator().manual_seed(seed + 1))


# renoise is not an exact sampler; tests/test_core_renoise.py checks its own output law
@pytest.mark.parametrize("name", sorted(set(SAMPLERS) - {"renoise"}))
def test_sampler_matches_mixture_moments(name):
    x = _run(name, EDM(sigma_max=80.0), STEPS[name])
    m_err = (x.mean(0) - GM.mean).norm() / GM.mean.norm()
    c_err = (torch.cov(x.T) - GM.covariance).norm() / GM.covariance.norm()
    assert m_err < 0.03 and c_err < 0.03, (float(m_err), float(c_err))


@pytest.mark.parametrize("name,schedule", [("ddpm", VPLinear()), ("dpmpp_2m", VPLinear()), ("heun", FlowMatching())])
def test_other_schedules(name, schedule):
    x = _run(name, schedule, 400 if name == "ddpm" else 60)
    assert (x.mean(0) - GM.mean).norm() / GM.mean.norm() < 0.03
    assert (torch.cov(x.T) - GM.covariance).norm() / GM.covariance.norm() < 0.03


def _order(name, ref, x0, space, den, schedule, ns):
    errs = [(get_sampler(name)(den, x0, schedule.time_grid(n), space=space) - ref).norm(dim=1).mean().item() for n in ns]
    return -np.polyfit(np.log(ns), np.log(errs), 1)[0]


def test_convergence_orders():
    schedule = EDM(sigma_max=80.0)
    space = Euclidean(schedule)
    den = lambda x, t, c: GM.denoise(x, t, schedule)  # noqa: E731
    x0 = space.prior(torch.zeros(1000, 2, dtype=torch.float64), torch.Generator().manual_seed(3))
    ref = get_sampler("heun")(den, x0, schedule.time_grid(1000), space=space)
    ns = [16, 32, 64, 128]
    orders = {name: _order(name, ref, x0, space, den, schedule, ns) for name in ("euler", "heun", "dpmpp_2s", "dpmpp_2m")}
    assert 0.8 < orders["euler"] < 1.3, orders
    for name in ("heun", "dpmpp_2s", "dpmpp_2m"):
        assert orders[name] >= 1.7, orders


def test_power_time_grid():
    lin = FlowMatching().time_grid(8)
    torch.testing.assert_close(lin, torch.linspace(0.999, 0.0, 9, dtype=torch.float64))
    g = FlowMatching().time_grid(8, power=2.0)
    assert g[0] == 0.999 and g[-1] == 0.0 and bool((g.diff() < 0).all())
    torch.testing.assert_close(g, 0.999 * torch.linspace(1.0, 0.0, 9, dtype=torch.float64) ** 2)
    assert float(g[-2]) < float(lin[-2]) / 4  # finer steps at the clean end
    with pytest.raises(DiffsciError, match="power"):
        FlowMatching().time_grid(8, power=0.0)


def test_power_grid_euler_converges_to_the_same_flow():
    """A non-uniform grid changes the discretisation, not the ODE: first-order convergence to the
    1000-step Heun solution of the exact mixture flow."""
    schedule = FlowMatching()
    space = Euclidean(schedule)
    den = lambda x, t, c: GM.denoise(x, t, schedule)  # noqa: E731
    x0 = space.prior(torch.zeros(1000, 2, dtype=torch.float64), torch.Generator().manual_seed(4))
    ref = get_sampler("heun")(den, x0, schedule.time_grid(1000), space=space)
    ns = [16, 32, 64, 128]
    errs = [(get_sampler("euler")(den, x0, schedule.time_grid(n, power=2.0), space=space) - ref).norm(dim=1).mean().item()
            for n in ns]
    order = -np.polyfit(np.log(ns), np.log(errs), 1)[0]
    assert errs[-1] < 0.05 and 0.7 < order < 1.5, (errs, order)


def test_ddim_inversion_round_trip():
    schedule = VPLinear()
    space = Euclidean(schedule)
    den = lambda x, t, c: GM.denoise(x, t, schedule)  # noqa: E731
    data = GM.sample(500, torch.Generator().manual_seed(4))
    times = torch.linspace(0, 0.9, 301, dtype=torch.float64)
    z = ddim_invert(den, data, times, space=space)
    back = get_sampler("ddim")(den, z, times.flip(0), space=space)
    assert (back - data).norm(dim=1).median() < 0.02


def test_member_independent_of_batch():
    schedule = EDM(sigma_max=80.0)
    space = Euclidean(schedule)
    den = lambda x, t, c: GM.denoise(x, t, schedule)  # noqa: E731
    from diffsci.core.utils import make_generator

    def run(m):
        gens = [make_generator(7, "member", i) for i in range(m)]
        x = space.prior(torch.zeros(m, 2, dtype=torch.float64), gens)
        return get_sampler("euler_maruyama")(den, x, schedule.time_grid(20), space=space, generator=gens)

    assert torch.equal(run(3)[2], run(6)[2])


def test_fixed_parts_come_back_exactly():
    schedule = EDM(sigma_max=80.0)
    space = Euclidean(schedule)
    den = lambda x, t, c: GM.denoise(x.reshape(-1, 2), t.repeat_interleave(x.shape[1]), schedule).reshape(x.shape)  # noqa: E731
    known = torch.randn(8, 5, 2, dtype=torch.float64)
    mask = torch.zeros(8, 5, dtype=torch.bool)
    mask[:, 1:3] = True
    for mode in ("clean", "noised"):
        for name in ("heun", "ddpm", "dpmpp_2m"):
            x = space.prior(known, torch.Generator().manual_seed(5))
            out = get_sampler(name)(den, x, schedule.time_grid(10), space=space,
                                    constraint=fix_known(space, known, mask, mode=mode, generator=torch.Generator().manual_seed(6)),
                                    generator=torch.Generator().manual_seed(7))
            assert torch.equal(out[mask], known[mask])
            assert not torch.equal(out[~mask], known[~mask])


def test_classifier_free_guidance_extrapolates():
    space = Euclidean(EDM())
    den = lambda x, t, c: x * 0 + (1.0 if c is None else 3.0)  # noqa: E731
    g = classifier_free_guidance(den, space, 2.0)
    out = g(torch.zeros(4, 2), torch.ones(4), "c")
    assert torch.allclose(out, torch.full((4, 2), 5.0))


def test_bad_inputs_raise_clear_errors():
    space = Euclidean(EDM())
    den = lambda x, t, c: x  # noqa: E731
    x = torch.zeros(2, 2)
    with pytest.raises(DiffsciError, match="unknown sampler"):
        get_sampler("nope")
    with pytest.raises(DiffsciError, match="steps must be >= 1"):
        EDM().time_grid(-3)
    with pytest.raises(DiffsciError, match="decreasing"):
        get_sampler("heun")(den, x, torch.linspace(0, 1, 5), space=space)
    with pytest.raises(DiffsciError, match="eta"):
        get_sampler("ddim")(den, x, EDM().time_grid(4), space=space, eta=2.0)
    with pytest.raises(DiffsciError, match="space"):
        get_sampler("euler")(den, x, EDM().time_grid(4), space="R2")
    from diffsci.core.spaces import EuclideanCoM, SO3Diffusion

    with pytest.raises(DiffsciError, match=r"\(B, N, D\)"):
        get_sampler("heun")(den, x, EDM().time_grid(4), space=EuclideanCoM(EDM()), generator=torch.Generator())
    with pytest.raises(DiffsciError, match="rotation matrices"):
        get_sampler("heun")(den, torch.zeros(2, 5, 3), EDM().time_grid(4), space=SO3Diffusion())
    with pytest.raises(DiffsciError, match="Euclidean"):
        get_sampler("dpmpp_2s")(den, torch.eye(3).expand(2, 3, 3), EDM().time_grid(4), space=SO3Diffusion())


# ---------------------------------------------------------------- grad modes (issue 14, bug 8)
_MODES = {"grad": None, "no_grad": torch.no_grad, "inference": torch.inference_mode}


def _sample_in_mode(mode, name, space, den, x, times):
    run = lambda: get_sampler(name)(den, x, times, space=space, generator=torch.Generator().manual_seed(5))  # noqa: E731
    if _MODES[mode] is None:
        return run()
    with _MODES[mode]():
        return run().clone()


@pytest.mark.parametrize("schedule", [EDM(sigma_max=80.0), VPLinear(), FlowMatching()], ids=repr)
@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_is_the_same_under_every_grad_mode(name, schedule):
    """``forecast`` samples under inference_mode: a sampler must not depend on autograd there
    (the SDE drift came from autograd and was 0, so Euler-Maruyama exploded)."""
    space = Euclidean(schedule)
    den = lambda x, t, c: GM.denoise(x, t, schedule)  # noqa: E731
    x = space.prior(torch.zeros(256, 2, dtype=torch.float64), torch.Generator().manual_seed(4))
    times = schedule.time_grid(30)
    out = {m: _sample_in_mode(m, name, space, den, x, times) for m in _MODES}
    assert torch.isfinite(out["grad"]).all()
    assert torch.equal(out["grad"], out["no_grad"]) and torch.equal(out["grad"], out["inference"])
    # and the samples are the mixture's, not noise: the mean is within a few standard errors
    assert (out["inference"].mean(0) - GM.mean).norm() < 0.5


def test_so3_euler_maruyama_is_the_same_under_every_grad_mode():
    from diffsci.core.schedules import LogLinear
    from diffsci.core.spaces import SO3Diffusion

    space = SO3Diffusion(LogLinear())
    target = torch.linalg.matrix_exp(torch.tensor([[0.0, -0.4, 0.2], [0.4, 0.0, -0.1], [-0.2, 0.1, 0.0]], dtype=torch.float64))
    den = lambda x, t, c: target.expand_as(x)  # noqa: E731
    x = space.prior(torch.zeros(64, 3, 3, dtype=torch.float64), torch.Generator().manual_seed(2))
    times = space.schedule.time_grid(20, t_min=0.05)  # every step an SDE step (the last step to 0 is not)
    out = {m: _sample_in_mode(m, "euler_maruyama", space, den, x, times) for m in _MODES}
    assert torch.equal(out["grad"], out["no_grad"]) and torch.equal(out["grad"], out["inference"])
    # the SDE moved the rotations toward the target (with g^2 = 0 they would not move)
    dist = lambda r: torch.linalg.matrix_norm(r - target).mean()  # noqa: E731
    assert dist(out["inference"]) < 0.5 * dist(x)


def test_euler_maruyama_refuses_an_unstable_grid():
    """5 Karras steps (EDM, rho 7): the SDE step overshoots by g^2 dt / sigma^2 = 3.2 > 2 and the
    sample diverges (what made ``forecast --sampler euler_maruyama`` move z by ~40,000)."""
    from diffsci.core.samplers import EM_MAX_GAIN, sde_step_gain

    schedule = EDM(sigma_min=0.03, sigma_max=80.0)
    space = Euclidean(schedule)
    den = lambda x, t, c: GM.denoise(x, t, schedule)  # noqa: E731
    x = space.prior(torch.zeros(64, 2, dtype=torch.float64), torch.Generator().manual_seed(0))
    # the gain in closed form: 2 rho (hi - lo) dt / (lo + t (hi - lo)), largest at the last SDE step
    lo, hi = 0.03 ** (1 / 7), 80.0 ** (1 / 7)
    assert abs(float(sde_step_gain(schedule, schedule.time_grid(5)).max()) - 14 * (hi - lo) * 0.2 / (lo + 0.4 * (hi - lo))) < 1e-9
    with pytest.raises(DiffsciError, match="unstable"):
        get_sampler("euler_maruyama")(den, x, schedule.time_grid(5), space=space)
    assert float(sde_step_gain(schedule, schedule.time_grid(20)).max()) < EM_MAX_GAIN
    out = get_sampler("euler_maruyama")(den, x, schedule.time_grid(20), space=space, generator=torch.Generator().manual_seed(1))
    assert (out.mean(0) - GM.mean).norm() < 0.5


# ------------------------------------------------------------ DPM-Solver++(2M) on any space
def test_dpmpp_2m_is_the_closed_form_update_on_euclidean():
    """The space.step form equals Lu et al.'s update written out: x_s = (sigma_s/sigma_t) x_t -
    alpha_s expm1(-h) D, D = (1 + 1/(2r)) x0_i - 1/(2r) x0_{i-1}, first order first and last."""
    for schedule in (EDM(sigma_max=80.0), FlowMatching()):
        den = lambda x, t, c, s=schedule: GM.denoise(x, t, s)  # noqa: E731
        x = Euclidean(schedule).prior(torch.zeros(500, 2, dtype=torch.float64), torch.Generator().manual_seed(8))
        times = schedule.time_grid(12, power=2.0) if isinstance(schedule, FlowMatching) else schedule.time_grid(12)
        out = get_sampler("dpmpp_2m")(den, x, times, space=Euclidean(schedule))
        lam = lambda t: torch.log(schedule.alpha(t)) - torch.log(schedule.sigma(t))  # noqa: E731
        y, prev, prev_h = x, None, None
        for t, s in zip(times[:-1], times[1:]):
            x0 = GM.denoise(y, t.expand(len(y)), schedule)
            if float(schedule.sigma(s)) == 0:
                y = schedule.alpha(s) * x0
                continue
            h = lam(s) - lam(t)
            r = None if prev is None else prev_h / h
            d = x0 if prev is None else (1 + 1 / (2 * r)) * x0 - 1 / (2 * r) * prev
            y = schedule.sigma(s) / schedule.sigma(t) * y - schedule.alpha(s) * torch.expm1(-h) * d
            prev, prev_h = x0, h
        torch.testing.assert_close(out, y, rtol=1e-9, atol=1e-9)


def _so3_flow_problem():
    from diffsci.core import so3
    from diffsci.core.spaces import SO3Flow

    space = SO3Flow()
    skew = torch.tensor([[0.0, -0.9, 0.4], [0.9, 0.0, -0.6], [-0.4, 0.6, 0.0]], dtype=torch.float64)
    target = torch.linalg.matrix_exp(0.3 * skew)

    def den(x, t, c):  # x0_hat = x exp(t log(x^T T(t))): the flow dR/dt = -R log(R^T T(t)) bends with t
        turned = target @ torch.linalg.matrix_exp(t.reshape(-1, 1, 1, 1) * skew)
        return so3.geodesic(x, turned.expand_as(x), t.reshape(-1, 1))

    x = space.prior(torch.zeros(64, 5, 3, 3, dtype=torch.float64), torch.Generator().manual_seed(9))
    return space, den, x


def test_dpmpp_2m_beats_euler_on_so3():
    from diffsci.core import so3

    space, den, x = _so3_flow_problem()
    ref = get_sampler("dpmpp_2m")(den, x, space.schedule.time_grid(2000, t_max=0.999, power=2.0), space=space)
    ns = [8, 16, 32, 64]

    def order(name):
        errs = [so3.log_map(ref.transpose(-1, -2) @ get_sampler(name)(
            den, x, space.schedule.time_grid(n, t_max=0.999, power=2.0), space=space)).norm(dim=-1).mean().item() for n in ns]
        return -np.polyfit(np.log(ns), np.log(errs), 1)[0], errs

    (o_e, e_e), (o_2m, e_2m) = order("euler"), order("dpmpp_2m")
    # measured: Euler 1.03; 2M 1.40 over 8..64 steps (local slopes rising 1.3 -> 1.55), 10x smaller at 64
    assert 0.8 < o_e < 1.2 and o_2m > 1.25 and e_2m[-1] < e_e[-1] / 5, (o_e, e_e, o_2m, e_2m)


def test_dpmpp_2m_on_a_product_is_the_factors_run_alone():
    from diffsci.core.spaces import Product

    so3_space, so3_den, r = _so3_flow_problem()
    schedule = FlowMatching()
    x = Euclidean(schedule).prior(torch.zeros(64, 2, dtype=torch.float64), torch.Generator().manual_seed(10))
    times = schedule.time_grid(10, power=2.0)
    both = get_sampler("dpmpp_2m")(lambda s, t, c: (GM.denoise(s[0], t, schedule), so3_den(s[1], t, c)), (x, r), times,
                                   space=Product((Euclidean(schedule), so3_space)))
    alone_x = get_sampler("dpmpp_2m")(lambda s, t, c: GM.denoise(s, t, schedule), x, times, space=Euclidean(schedule))
    alone_r = get_sampler("dpmpp_2m")(so3_den, r, times, space=so3_space)
    torch.testing.assert_close(both[0], alone_x)
    torch.testing.assert_close(both[1], alone_r)


def test_heun_refused_on_the_rate_scaled_rotation_flow():
    """SO3Flow with inference_rate != 1 takes fractional steps towards x0_hat, not ODE steps:
    Heun (which averages two velocities) is refused, also inside a Product; Euler runs; at rate 1
    Heun runs too."""
    from diffsci.core.so3 import random_rotations
    from diffsci.core.spaces import Product, SO3Flow

    target = random_rotations((3,), torch.Generator().manual_seed(1), torch.float64)
    x = random_rotations((3,), torch.Generator().manual_seed(2), torch.float64)
    times = FlowMatching().time_grid(4)
    with pytest.raises(DiffsciError, match="second-order samplers"):
        get_sampler("heun")(lambda s, t, c: target, x, times, space=SO3Flow(inference_rate=10.0))
    pair = Product((Euclidean(FlowMatching()), SO3Flow(inference_rate=10.0)))
    with pytest.raises(DiffsciError, match="second-order samplers"):
        get_sampler("heun")(lambda s, t, c: (s[0], target), (torch.zeros(3, 2, dtype=torch.float64), x), times,
                            space=pair)
    out = get_sampler("euler")(lambda s, t, c: target, x, times, space=SO3Flow(inference_rate=10.0))
    assert torch.allclose(out, target, atol=1e-6)  # the last fractional step lands on x0_hat
    out = get_sampler("heun")(lambda s, t, c: target, x, times, space=SO3Flow())
    assert torch.allclose(out, target, atol=1e-6)


def test_churned_states_keep_the_constraint():
    """Under EDM churn the state is renoised before a step: the constraint (here fixed known points)
    holds on that state too, so the denoiser never sees a known part the constraint would not give."""
    schedule = FlowMatching()
    space = Euclidean(schedule)
    known = torch.tensor([[[1.0, 2.0], [3.0, -1.0], [0.0, 0.0]]], dtype=torch.float64)
    mask = torch.tensor([[True, True, False]])
    seen = []

    def den(x, t, c):
        seen.append((x.clone(), t.clone()))
        return torch.zeros_like(x)

    constraint = fix_known(space, known, mask, mode="clean")
    x = space.prior(torch.zeros(1, 3, 2, dtype=torch.float64), torch.Generator().manual_seed(0))
    get_sampler("euler")(den, x, schedule.time_grid(10), space=space, generator=torch.Generator().manual_seed(1),
                         constraint=constraint, churn=30.0)
    assert len(seen) == 10
    assert all(torch.equal(s[0][mask], known[mask]) for s in seen)
    # and the churn acted: the free point's states are not those of the plain ODE
    plain = []
    get_sampler("euler")(lambda x, t, c: plain.append(x.clone()) or torch.zeros_like(x), x, schedule.time_grid(10),
                         space=space, constraint=constraint)
    assert not torch.equal(plain[3][~mask], seen[3][0][~mask])

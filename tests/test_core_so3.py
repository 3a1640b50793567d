"""SO(3) maths and IGSO3 against exact identities and independent computations."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from diffsci.core import so3


@pytest.mark.parametrize("angle", [1e-8, 1.0, math.pi - 1e-6])
def test_exp_log_round_trip(angle):
    g = torch.Generator().manual_seed(0)
    axis = torch.randn(50, 3, generator=g, dtype=torch.float64)
    v = axis / axis.norm(dim=-1, keepdim=True) * angle
    r = so3.exp_map(v)
    assert (so3.log_map(r) - v).abs().max() < 1e-10
    # and exp is a rotation
    eye = torch.eye(3, dtype=torch.float64)
    assert (r.transpose(-1, -2) @ r - eye).abs().max() < 1e-12
    assert (torch.linalg.det(r) - 1).abs().max() < 1e-12


def test_log_exp_round_trip_random_rotations():
    r = so3.random_rotations((1000,), torch.Generator().manual_seed(1), dtype=torch.float64)
    assert (so3.exp_map(so3.log_map(r)) - r).abs().max() < 1e-10


def test_exp_matches_matrix_exponential():
    v = torch.randn(20, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    assert (so3.exp_map(v) - torch.linalg.matrix_exp(so3.hat(v))).abs().max() < 1e-12


def test_geodesic_endpoints_and_midpoint():
    g = torch.Generator().manual_seed(3)
    r0, r1 = so3.random_rotations((10,), g, torch.float64), so3.random_rotations((10,), g, torch.float64)
    assert (so3.geodesic(r0, r1, 0.0) - r0).abs().max() < 1e-12
    assert (so3.geodesic(r0, r1, 1.0) - r1).abs().max() < 1e-10
    mid = so3.geodesic(r0, r1, 0.5)
    d = so3.geodesic_distance(r0, r1)
    assert torch.allclose(so3.geodesic_distance(r0, mid), d / 2, atol=1e-10)
    assert torch.allclose(so3.geodesic_distance(mid, r1), d / 2, atol=1e-10)


@pytest.mark.parametrize("sigma", [0.05, 0.5, 1.5])
def test_angle_density_integrates_to_one(sigma):
    val, _ = integrate.quad(lambda w: so3.igso3_angle_pdf(w, sigma), 0, math.pi, limit=400, points=[sigma, 3 * sigma])
    assert abs(val - 1) < 1e-4


@pytest.mark.parametrize("sigma", [0.3, 1.0, 2.0, 2.5])
def test_two_series_forms_agree(sigma):
    # the Poisson-summed form (sigma <= 2) against the character series with many terms
    w = np.linspace(0.05, math.pi - 0.01, 40)
    ell = np.arange(0, 4000)[:, None]
    ref = ((2 * ell + 1) * np.exp(-ell * (ell + 1) * sigma**2 / 2) * np.sin((ell + 0.5) * w)).sum(0) / np.sin(w / 2)
    np.testing.assert_allclose(so3.igso3_f(w, sigma), ref, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("sigma", [0.05, 0.5, 1.5])
def test_sampled_angles_pass_ks(sigma):
    n = 10_000
    sig = torch.full((1,), sigma, dtype=torch.float64)
    w = so3.sample_igso3_angle(sig, (1, n), torch.Generator().manual_seed(4))[0].numpy()
    p = stats.kstest(w, lambda x: so3.igso3_angle_cdf(x, sigma)).pvalue
    assert p > 0.01


def test_uniform_rotations_angle_distribution():
    r = so3.random_rotations((10_000,), torch.Generator().manual_seed(5), dtype=torch.float64)
    p = stats.kstest(so3.rotation_angle(r).numpy(), so3.uniform_angle_cdf).pvalue
    assert p > 0.01


@pytest.mark.parametrize("sigma", [0.1, 0.7, 1.5, 3.0])
def test_score_is_gradient_of_log_density(sigma):
    g = torch.Generator().manual_seed(6)
    v = so3.sample_igso3(torch.full((1,), sigma, dtype=torch.float64), (1, 64), g, dtype=torch.float64)[0]
    v = v[(v.norm(dim=-1) > 0.05) & (v.norm(dim=-1) < math.pi - 0.05)]
    score = so3.igso3_score(v, sigma)
    r = so3.exp_map(v)
    h = 1e-6
    fd = torch.zeros_like(v)
    for k in range(3):
        e = torch.zeros(3, dtype=torch.float64)
        e[k] = h
        lp = np.log(so3.igso3_f(so3.rotation_angle(r @ so3.exp_map(e)).numpy(), sigma))
        lm = np.log(so3.igso3_f(so3.rotation_angle(r @ so3.exp_map(-e)).numpy(), sigma))
        fd[:, k] = torch.as_tensor((lp - lm) / (2 * h))
    rel = (score - fd).norm(dim=-1) / fd.norm(dim=-1)
    assert rel.max() < 1e-4

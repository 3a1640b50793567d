"""Rotation maths on SO(3) and the isotropic Gaussian on SO(3) (IGSO3).

Dimension legend: ``...`` any batch dims; rotations are ``(..., 3, 3)`` matrices, rotation
vectors (axis * angle, the Lie algebra so(3) in the body frame) are ``(..., 3)``.

IGSO3(sigma) is the law of Brownian motion on SO(3) run for time ``sigma^2`` (generator
``Laplacian / 2``); its density w.r.t. the normalised Haar measure depends on the rotation
angle ``w`` only (Nikolayev & Savyolova 1970; Leach et al. 2022; FrameDiff, Yim et al. 2023):

    f(w) = sum_l (2l + 1) exp(-l (l + 1) sigma^2 / 2) sin((l + 1/2) w) / sin(w / 2)       (A)

and the density of the angle on [0, pi] is ``p(w) = (1 - cos w) / pi * f(w)``. The series (A)
converges fast for large sigma but needs ~1/sigma terms for small sigma. By Poisson
summation (A) equals exactly, with ``x = w / 2`` and ``tau = sigma^2 / 2``,

    f(w) = exp(tau / 4) sqrt(pi / tau) / tau * sum_m (-1)^m (x - pi m) exp(-(x - pi m)^2 / tau) / sin x   (B)

which converges fast for small sigma. :func:`igso3_f` uses (B) for sigma <= 2 and (A) above;
the two are checked against each other in the tests. The score of IGSO3 around a mean
rotation ``mu`` at ``R``, in the body frame of ``R``, is ``d log f / dw * axis`` with
``w * axis = log(mu^T R)``.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from diffsci.core.utils import rand as _rand
from diffsci.core.utils import randn as _randn

__all__ = [
    "hat",
    "vee",
    "exp_map",
    "log_map",
    "rotation_angle",
    "geodesic",
    "geodesic_distance",
    "random_rotations",
    "igso3_f",
    "igso3_dlogf",
    "igso3_angle_pdf",
    "igso3_angle_cdf",
    "sample_igso3_angle",
    "sample_igso3",
    "igso3_score",
    "uniform_angle_cdf",
]

_SMALL = 1e-4  # below this angle (radians) the Taylor series is used


def hat(v: torch.Tensor) -> torch.Tensor:
    """Skew matrix of ``v``: ``hat(v) @ u = cross(v, u)``. Shape (..., 3) -> (..., 3, 3)."""
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], dim=-1).reshape(*v.shape, 3)


def vee(m: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`hat` on the skew part: ``(m - m^T) / 2`` -> vector. (..., 3, 3) -> (..., 3)."""
    return 0.5 * torch.stack(
        [m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], dim=-1
    )


def exp_map(v: torch.Tensor) -> torch.Tensor:
    """Rodrigues: ``exp(hat(v)) = I + a K + b K^2`` with ``a = sin w / w``, ``b = (1 - cos w) / w^2``.

    ``w = |v|``; for ``w < 1e-4`` the Taylor series ``a = 1 - w^2/6 + w^4/120``,
    ``b = 1/2 - w^2/24 + w^4/720`` is used (exact to float64 rounding). Shape (..., 3) -> (..., 3, 3).
    """
    w2 = (v * v).sum(-1)
    w = torch.sqrt(w2)
    small = w < _SMALL
    ws = torch.where(small, torch.ones_like(w), w)
    a = torch.where(small, 1 - w2 / 6 + w2 * w2 / 120, torch.sin(ws) / ws)
    b = torch.where(small, 0.5 - w2 / 24 + w2 * w2 / 720, (1 - torch.cos(ws)) / (ws * ws))
    k = hat(v)
    eye = torch.eye(3, dtype=v.dtype, device=v.device).expand(k.shape)
    return eye + a[..., None, None] * k + b[..., None, None] * (k @ k)


def rotation_angle(r: torch.Tensor) -> torch.Tensor:
    """Angle in [0, pi] of rotation matrices, as ``atan2(|vee(R)|, (tr R - 1) / 2)`` (accurate everywhere)."""
    s = vee(r).norm(dim=-1)
    c = 0.5 * (r[..., 0, 0] + r[..., 1, 1] + r[..., 2, 2] - 1)
    return torch.atan2(s, c)


def log_map(r: torch.Tensor) -> torch.Tensor:
    """Rotation vector ``w * axis`` of ``R`` (the inverse of :func:`exp_map`), w in [0, pi].

    Three regimes: small angles use ``vee(R) / sinc(w)`` with a Taylor series; generic angles
    the same formula; angles near pi (where ``sin w -> 0`` loses the axis) take the axis from
    the symmetric part ``(R + R^T)/2 - cos w I = (1 - cos w) a a^T``, with its sign fixed by
    ``vee(R)``. Shape (..., 3, 3) -> (..., 3).
    """
    w = rotation_angle(r)
    s = vee(r)  # = sin(w) * axis
    small = w < _SMALL
    ws = torch.where(small, torch.ones_like(w), w)
    scale = torch.where(small, 1 + w * w / 6 + 7 * w**4 / 360, ws / torch.sin(ws).clamp_min(1e-300))
    v_generic = scale[..., None] * s

    # near pi: axis from the symmetric part
    c = torch.cos(w)
    sym = 0.5 * (r + r.transpose(-1, -2)) - c[..., None, None] * torch.eye(3, dtype=r.dtype, device=r.device)
    denom = (1 - c).clamp_min(1e-300)[..., None, None]
    aat = sym / denom  # a a^T
    diag = torch.diagonal(aat, dim1=-2, dim2=-1)
    idx = diag.argmax(-1, keepdim=True)
    col = torch.gather(aat, -1, idx[..., None, :].expand(*aat.shape[:-1], 1)).squeeze(-1)
    axis = col / col.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    sign = torch.sign((axis * s).sum(-1))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    v_pi = (sign * w)[..., None] * axis
    near_pi = w > math.pi - 1e-2
    return torch.where(near_pi[..., None], v_pi, v_generic)


def geodesic(r0: torch.Tensor, r1: torch.Tensor, u) -> torch.Tensor:
    """Point at fraction ``u`` along the geodesic from ``r0`` to ``r1``: ``r0 exp(u log(r0^T r1))``."""
    u = torch.as_tensor(u, dtype=r0.dtype, device=r0.device)
    v = log_map(r0.transpose(-1, -2) @ r1)
    while u.ndim < v.ndim:
        u = u[..., None]
    return r0 @ exp_map(u * v)


def geodesic_distance(r0: torch.Tensor, r1: torch.Tensor) -> torch.Tensor:
    """Angle of ``r0^T r1`` (radians)."""
    return rotation_angle(r0.transpose(-1, -2) @ r1)


def random_rotations(shape, generator=None, dtype=torch.float32, device=None) -> torch.Tensor:
    """Haar-uniform rotations of batch shape ``shape`` (normalised Gaussian quaternions)."""
    q = _randn((*shape, 4), generator, torch.float64, device)
    q = q / q.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    r = torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(*shape, 3, 3)
    return r.to(dtype)


# ----------------------------------------------------------------------------- IGSO3 density
_SERIES_SWITCH = 2.0  # sigma <= switch: Poisson form (B); above: character series (A)


def _f_and_dlogf(w: np.ndarray, sigma: float, l_max: int = 60, m_max: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """IGSO3 density f(w) (Haar) and d log f / dw, float64 numpy, w in (0, pi]."""
    shape = np.shape(w)
    w = np.atleast_1d(np.asarray(w, dtype=np.float64))
    if sigma <= _SERIES_SWITCH:
        tau = 0.5 * sigma * sigma
        x = 0.5 * w
        m = np.arange(-m_max, m_max + 1)[:, None]
        d = x[None, :] - math.pi * m
        q = d * d / tau
        qmin = q.min(0)
        e = np.exp(-(q - qmin))  # rescaled so the log-derivative never sees 0/0
        sgn = np.where(m % 2 == 0, 1.0, -1.0)
        s = (sgn * d * e).sum(0)
        ds = (sgn * (1 - 2 * d * d / tau) * e).sum(0)
        const = math.exp(tau / 4) * math.sqrt(math.pi / tau) / tau
        sx = np.sin(x)
        f = const * np.exp(-qmin) * s / sx
        # d/dw log f = 0.5 * (S'/S - cot x); for tiny x use S'/S - cot x ~ O(x) limit via S/x forms
        dlogf = 0.5 * (ds / s - np.cos(x) / sx)
        return f.reshape(shape), dlogf.reshape(shape)
    ell = np.arange(0, l_max + 1)[:, None]
    c = (2 * ell + 1) * np.exp(-ell * (ell + 1) * sigma * sigma / 2)
    half = 0.5 * w[None, :]
    num = np.sin((ell + 0.5) * w[None, :])
    dnum = (ell + 0.5) * np.cos((ell + 0.5) * w[None, :])
    sh = np.sin(half)
    f = (c * num).sum(0) / sh
    df = ((c * dnum).sum(0) * sh - (c * num).sum(0) * 0.5 * np.cos(half)) / (sh * sh)
    return f.reshape(shape), (df / f).reshape(shape)


def igso3_f(w, sigma: float) -> np.ndarray:
    """IGSO3 density w.r.t. the normalised Haar measure at angle ``w`` (float64 numpy)."""
    w = np.clip(np.asarray(w, dtype=np.float64), 1e-6, math.pi)
    return _f_and_dlogf(w, float(sigma))[0]


def igso3_dlogf(w, sigma: float) -> np.ndarray:
    """d log f / dw of the IGSO3 density (float64 numpy). Near w = 0 it is ~ -w / sigma^2."""
    w = np.asarray(w, dtype=np.float64)
    wc = np.clip(w, 1e-3 * min(sigma, 1.0), math.pi)
    return _f_and_dlogf(wc, float(sigma))[1] * np.where(w < wc, w / wc, 1.0)


def igso3_angle_pdf(w, sigma: float) -> np.ndarray:
    """Density of the rotation angle on [0, pi]: ``(1 - cos w) / pi * f(w)``."""
    w = np.asarray(w, dtype=np.float64)
    return (1 - np.cos(w)) / math.pi * igso3_f(w, sigma)


@functools.lru_cache(maxsize=512)
def _cdf_table(sigma: float, n: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    w = np.linspace(0.0, math.pi, n + 1)
    pdf = igso3_angle_pdf(w, sigma)
    pdf[0] = 0.0
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (pdf[1:] + pdf[:-1]) * np.diff(w))])
    cdf /= cdf[-1]
    return w, cdf


def igso3_angle_cdf(w, sigma: float) -> np.ndarray:
    """CDF of the IGSO3 rotation angle (numerical integral of the pdf on a fine grid)."""
    grid, cdf = _cdf_table(float(sigma))
    return np.interp(np.asarray(w, dtype=np.float64), grid, cdf)


def uniform_angle_cdf(w) -> np.ndarray:
    """CDF of the angle of a Haar-uniform rotation: ``(w - sin w) / pi``."""
    w = np.asarray(w, dtype=np.float64)
    return (w - np.sin(w)) / math.pi


def _sigma_key(sigma: float) -> float:
    # CDF tables are cached per sigma rounded to 12 significant digits
    return float(f"{sigma:.12g}")


def sample_igso3_angle(sigma: torch.Tensor, shape, generator=None) -> torch.Tensor:
    """Angles ``w ~ IGSO3(sigma)`` by inverse CDF, float64.

    ``sigma`` has shape ``(B,)`` (one noise level per example) and ``shape = (B, ...)``; each
    example's uniforms come from its own generator when ``generator`` is a list.
    """
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    u = _rand(tuple(shape), generator, torch.float64, sigma.device)
    out = torch.zeros_like(u)
    flat_sig = sigma.reshape(-1).cpu().numpy()
    for b, s in enumerate(flat_sig):
        if s <= 0:
            continue
        grid, cdf = _cdf_table(_sigma_key(float(s)))
        ub = u[b].cpu().numpy()
        out[b] = torch.as_tensor(np.interp(ub, cdf, grid), dtype=torch.float64)
    return out


def sample_igso3(sigma: torch.Tensor, shape, generator=None, dtype=torch.float32) -> torch.Tensor:
    """Rotation vectors (..., 3) of IGSO3(sigma) draws: uniform axis times an IGSO3 angle.

    ``shape = (B, ...)`` is the batch shape; returns ``(B, ..., 3)``.
    """
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    axis = _randn((*shape, 3), generator, torch.float64, sigma.device)
    axis = axis / axis.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    ang = sample_igso3_angle(sigma, shape, generator)
    return (axis * ang[..., None]).to(dtype)


def igso3_score(v: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Score of IGSO3(sigma) at the rotation with rotation vector ``v`` relative to the mean.

    ``v = log(mu^T R)`` (..., 3) in the body frame of R; returns ``d log f/dw * v / |v|``
    (..., 3), the Riemannian gradient of log f in the body frame. ``sigma`` broadcasts against
    ``v[..., 0]`` (e.g. shape (B,) with v of shape (B, N, 3) after :func:`append_dims`).
    """
    w = v.norm(dim=-1)
    sig = torch.as_tensor(sigma, dtype=torch.float64, device=v.device).expand_as(w)
    wn = w.detach().to(torch.float64).cpu().numpy()
    sn = sig.detach().cpu().numpy()
    ratio = np.zeros_like(wn)  # (d log f / dw) / w
    for s in np.unique(sn):
        if s <= 0:
            continue
        sel = sn == s
        ww = np.maximum(wn[sel], 1e-3 * min(s, 1.0))
        ratio[sel] = igso3_dlogf(ww, float(s)) / ww
    return torch.as_tensor(ratio, dtype=v.dtype, device=v.device)[..., None] * v

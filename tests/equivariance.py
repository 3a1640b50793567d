"""A reusable equivariance check (in the spirit of e3nn's ``assert_equivariant``)."""

from __future__ import annotations

import torch

from diffsci.core import so3

TOLERANCE = {torch.float64: 1e-5, torch.float32: 2e-3}


def assert_frames_equivariant(fn, trans, rots, *, dtype=torch.float64, seed=0, trials=3):
    """``fn(trans (B,N,3), rots (B,N,3,3)) -> (trans0, rots0)`` must commute with rigid motions:
    ``fn(Q x + s, Q R) == (Q x0 + s, Q R0)`` for random rotations Q and translations s.
    Returns the largest error seen; raises AssertionError above the dtype's tolerance."""
    g = torch.Generator().manual_seed(seed)
    trans, rots = trans.to(dtype), rots.to(dtype)
    t0, r0 = fn(trans, rots)
    worst = 0.0
    for _ in range(trials):
        q = so3.random_rotations((1,), g, dtype)[0]
        s = torch.randn(3, generator=g, dtype=torch.float64).to(dtype)
        t1, r1 = fn(trans @ q.T + s, q @ rots)
        err = max(float((t1 - (t0 @ q.T + s)).abs().max().detach()), float((r1 - q @ r0).abs().max().detach()))
        worst = max(worst, err)
        assert err < TOLERANCE[dtype], f"equivariance error {err:.2e} >= {TOLERANCE[dtype]:.0e} in {dtype}"
    return worst

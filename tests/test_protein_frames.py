"""Residue frames: Gram-Schmidt construction, ideal backbone rebuild, equivariance."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from diffsci.protein.io.dataset import bundled_dataset_path, load_dataset
from diffsci.protein.frames import (
    IDEAL_LOCAL,
    backbone_from_frames,
    frames_from_backbone,
    to_global,
    to_local,
)

TOL = {torch.float32: 1e-4, torch.float64: 1e-9}


@pytest.fixture(scope="module")
def coords() -> torch.Tensor:
    ds = load_dataset(bundled_dataset_path())
    i = int(np.argmin(np.abs(ds.lengths - 80)))
    return torch.from_numpy(ds.chain(i).coords.astype(np.float64))  # (L, 4, 3)


def random_rotation(gen: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=gen, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q.to(dtype)


def dihedral(a, b, c, d):
    b0, b1, b2 = a - b, c - b, d - c
    b1 = b1 / torch.linalg.vector_norm(b1, dim=-1, keepdim=True)
    v = b0 - (b0 * b1).sum(-1, keepdim=True) * b1
    w = b2 - (b2 * b1).sum(-1, keepdim=True) * b1
    x = (v * w).sum(-1)
    y = (torch.linalg.cross(b1, v, dim=-1) * w).sum(-1)
    return torch.atan2(y, x)


def angle(a, b, c):
    u, v = a - b, c - b
    cos = (u * v).sum(-1) / (torch.linalg.vector_norm(u, dim=-1) * torch.linalg.vector_norm(v, dim=-1))
    return torch.rad2deg(torch.arccos(cos))


def test_frames_orthonormal_and_convention(coords):
    n, ca, c = coords[:, 0], coords[:, 1], coords[:, 2]
    rots, trans = frames_from_backbone(n, ca, c)
    eye = torch.eye(3, dtype=torch.float64).expand_as(rots)
    assert torch.allclose(rots.transpose(-1, -2) @ rots, eye, atol=1e-12)
    assert torch.allclose(torch.det(rots), torch.ones(len(coords), dtype=torch.float64), atol=1e-12)
    assert torch.equal(trans, ca)
    # stated convention: C on +x, N in the xy plane with y > 0
    c_loc, n_loc = to_local(rots, trans, c), to_local(rots, trans, n)
    assert torch.allclose(c_loc[:, 1:], torch.zeros_like(c_loc[:, 1:]), atol=1e-10) and (c_loc[:, 0] > 1.3).all()
    assert torch.allclose(n_loc[:, 2], torch.zeros_like(n_loc[:, 2]), atol=1e-10) and (n_loc[:, 1] > 0).all()
    # local -> global reproduces N, CA, C
    for x in (n, ca, c):
        assert (to_global(rots, trans, to_local(rots, trans, x)) - x).abs().max() < 1e-4


def test_ideal_rebuild_close_to_real_and_round_trip(coords):
    rots, trans = frames_from_backbone(coords[:, 0], coords[:, 1], coords[:, 2])
    ideal = backbone_from_frames(rots, trans)
    assert ideal.shape == coords.shape and ideal.dtype == coords.dtype
    assert torch.allclose(ideal[:, 1], coords[:, 1])  # CA exact
    rmsd = lambda a, b: float(((a - b) ** 2).sum(-1).mean().sqrt())  # noqa: E731
    assert rmsd(ideal[:, 0], coords[:, 0]) < 0.1  # real bond lengths/angles differ slightly
    assert rmsd(ideal[:, 2], coords[:, 2]) < 0.1
    assert rmsd(ideal[:-1, 3], coords[:-1, 3]) < 0.3  # O from the peptide plane
    # frames of the ideal backbone are the same frames; rebuilding again changes nothing
    rots2, trans2 = frames_from_backbone(ideal[:, 0], ideal[:, 1], ideal[:, 2])
    assert torch.allclose(rots2, rots, atol=1e-10) and torch.allclose(trans2, trans)
    assert (backbone_from_frames(rots2, trans2) - ideal).abs().max() < 1e-4


def test_oxygen_geometry(coords):
    rots, trans = frames_from_backbone(coords[:, 0], coords[:, 1], coords[:, 2])
    bb = backbone_from_frames(rots, trans)
    n, ca, c, o = bb.unbind(-2)
    d_co = torch.linalg.vector_norm(o - c, dim=-1)
    assert torch.allclose(d_co, torch.full_like(d_co, math.hypot(0.627, 1.062)), atol=1e-9)
    assert torch.allclose(angle(ca, c, o), torch.full_like(d_co, 180 - math.degrees(math.atan2(1.062, 0.627))), atol=1e-6)
    # O(i) is in the plane CA(i), C(i), N(i+1), trans to N(i+1)
    omega_o = dihedral(ca[:-1], c[:-1], n[1:], o[:-1])
    assert torch.sin(omega_o).abs().max() < 1e-9  # coplanar
    assert (angle(o[:-1], c[:-1], n[1:]) > 110).all()
    # last residue: the fixed ideal position
    o_last = to_local(rots[-1], trans[-1], o[-1])
    assert torch.allclose(o_last, torch.tensor(IDEAL_LOCAL["O_terminal"], dtype=o.dtype), atol=1e-9)
    # chain_end flags give the same fixed position inside the chain
    end = torch.zeros(len(coords), dtype=torch.bool)
    end[10] = True
    o10 = to_local(rots[10], trans[10], backbone_from_frames(rots, trans, chain_end=end)[10, 3])
    assert torch.allclose(o10, torch.tensor(IDEAL_LOCAL["O_terminal"], dtype=o.dtype), atol=1e-9)
    assert backbone_from_frames(rots, trans, oxygen=False).shape == (len(coords), 3, 3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_equivariance_and_batch(coords, dtype):
    gen = torch.Generator().manual_seed(0)
    x = coords.to(dtype)
    q = random_rotation(gen, dtype)
    s = torch.randn(3, generator=gen, dtype=torch.float64).to(dtype) * 10
    y = x @ q.T + s
    batch = torch.stack([x, y])  # (2, L, 4, 3)
    rots, trans = frames_from_backbone(batch[..., 0, :], batch[..., 1, :], batch[..., 2, :])
    assert rots.shape == (2, len(coords), 3, 3) and rots.dtype == dtype
    tol = TOL[dtype]
    assert (rots[1] - q @ rots[0]).abs().max() < tol
    assert (trans[1] - (trans[0] @ q.T + s)).abs().max() < tol * 100  # |t| ~ 50 Å
    bb = backbone_from_frames(rots, trans)
    assert bb.shape == (2, len(coords), 4, 3) and bb.dtype == dtype
    assert (bb[1] - (bb[0] @ q.T + s)).abs().max() < tol * 100


def test_ideal_constants():
    n, c = torch.tensor(IDEAL_LOCAL["N"]), torch.tensor(IDEAL_LOCAL["C"])
    assert abs(float(torch.linalg.vector_norm(n)) - 1.458) < 5e-3  # Engh & Huber N-CA
    assert abs(float(torch.linalg.vector_norm(c)) - 1.525) < 5e-3  # Engh & Huber CA-C
    assert abs(float(angle(n, torch.zeros(3), c)) - 111.2) < 0.5  # N-CA-C

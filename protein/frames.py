"""Residue frames from backbone atoms, and backbones from frames.

Dimension letters: ``...`` any leading batch dims, L residues, 3 Cartesian coordinates.

Axis convention (the AlphaFold / OpenFold backbone rigid group): the frame of residue i has
its origin at CA; its x axis points from CA to C; its y axis lies in the N-CA-C plane,
perpendicular to x, on the side of N (so N has a positive y coordinate); z = x cross y.
A point with local coordinates ``p`` sits at ``R @ p + t`` in the global frame, where R holds
the frame axes as its columns.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "ANGSTROM_PER_NM",
    "IDEAL_LOCAL",
    "frames_from_backbone",
    "backbone_from_frames",
    "to_local",
    "to_global",
]

#: the model works in nanometres (translations, CA coordinates); files and metrics in Å
ANGSTROM_PER_NM = 10.0

IDEAL_LOCAL: dict[str, tuple[float, float, float]] = {
    "N": (-0.525, 1.363, 0.0),
    "CA": (0.0, 0.0, 0.0),
    "C": (1.526, 0.0, 0.0),
    # O of the last residue: the AlphaFold psi-group position (0.627, 1.062, 0) with the psi
    # frame unrotated (x along CA->C, y away from N, origin at C), i.e. O in the N-CA-C plane,
    # trans to N (dihedral N-CA-C-O = 180 deg).
    "O_terminal": (1.526 + 0.627, -1.062, 0.0),
}
"""Ideal local coordinates (Å) of the backbone atoms in the residue frame.

N, CA, C: AlphaFold 2 ``residue_constants.rigid_group_atom_positions`` for alanine (the
backbone group; these match Engh & Huber 1991: N-CA 1.461 Å, CA-C 1.526 Å, N-CA-C 111.1 deg).
O: the same table places O in the psi group at (0.627, 1.062, 0) relative to C, i.e.
C=O 1.233 Å and CA-C-O 120.5 deg; :func:`backbone_from_frames` puts O in the plane of
CA(i), C(i), N(i+1), on the side away from N(i+1) (planar peptide), and uses
``IDEAL_LOCAL["O_terminal"]`` where there is no next residue.
"""

_O_ALONG = 0.627  # along CA->C, from C (AlphaFold psi-group O)
_O_PERP = 1.062  # perpendicular, away from N(i+1)


def frames_from_backbone(n: Tensor, ca: Tensor, c: Tensor, *, eps: float = 1e-8) -> tuple[Tensor, Tensor]:
    """Rigid frames by Gram-Schmidt on N, CA, C.

    ``e1 = (C - CA) / |C - CA|``, ``u2 = (N - CA) - ((N - CA) . e1) e1``, ``e2 = u2 / |u2|``,
    ``e3 = e1 x e2``; ``R = [e1 e2 e3]`` (columns), ``t = CA``.

    Parameters
    ----------
    n, ca, c : Tensor
        Shape (..., 3) each, float32 or float64 (usually (..., L, 3)).

    Returns
    -------
    rots : Tensor
        Shape (..., 3, 3), proper rotations (det +1), axes as columns.
    trans : Tensor
        Shape (..., 3), the CA positions.
    """
    v1 = c - ca
    v2 = n - ca
    e1 = v1 / torch.linalg.vector_norm(v1, dim=-1, keepdim=True).clamp_min(eps)
    u2 = v2 - (v2 * e1).sum(-1, keepdim=True) * e1
    e2 = u2 / torch.linalg.vector_norm(u2, dim=-1, keepdim=True).clamp_min(eps)
    e3 = torch.linalg.cross(e1, e2, dim=-1)
    rots = torch.stack([e1, e2, e3], dim=-1)
    return rots, ca.clone()


def to_global(rots: Tensor, trans: Tensor, local: Tensor) -> Tensor:
    """``R @ p + t``.

    Parameters
    ----------
    rots : Tensor
        Shape (..., 3, 3).
    trans : Tensor
        Shape (..., 3).
    local : Tensor
        Shape (..., 3) (broadcast against the frames).
    """
    return torch.einsum("...ij,...j->...i", rots, local) + trans


def to_local(rots: Tensor, trans: Tensor, x: Tensor) -> Tensor:
    """``R^T (x - t)``, the inverse of :func:`to_global`. Shapes as in :func:`to_global`."""
    return torch.einsum("...ji,...j->...i", rots, x - trans)


def backbone_from_frames(
    rots: Tensor,
    trans: Tensor,
    *,
    oxygen: bool = True,
    chain_end: Tensor | None = None,
    eps: float = 1e-8,
) -> Tensor:
    """Backbone atoms N, CA, C (and O) from residue frames and ideal geometry.

    N, CA and C are :data:`IDEAL_LOCAL` mapped to the global frame. O(i) lies in the plane of
    CA(i), C(i), N(i+1) on the side away from N(i+1): ``O = C + 0.627 e_x - 1.062 e_p``,
    with ``e_x`` the unit vector CA->C and ``e_p`` the unit component of ``N(i+1) - C(i)``
    perpendicular to ``e_x``. The last residue (and any residue flagged in ``chain_end``, or
    one whose N(i+1) is collinear with CA->C) takes ``IDEAL_LOCAL["O_terminal"]``.

    Parameters
    ----------
    rots : Tensor
        Shape (..., L, 3, 3).
    trans : Tensor
        Shape (..., L, 3).
    oxygen : bool
        Return O as the fourth atom (else only N, CA, C).
    chain_end : Tensor, optional
        Shape (..., L) bool; True where residue i is the last of its chain (multi-chain inputs).

    Returns
    -------
    Tensor
        Shape (..., L, 4, 3) (or (..., L, 3, 3) without oxygen), same dtype and device as ``trans``.
    """
    ideal = torch.tensor(
        [IDEAL_LOCAL["N"], IDEAL_LOCAL["CA"], IDEAL_LOCAL["C"]], dtype=trans.dtype, device=trans.device
    )  # (3 atoms, 3)
    ncac = to_global(rots.unsqueeze(-3), trans.unsqueeze(-2), ideal)  # (..., L, 3, 3)
    if not oxygen:
        return ncac
    n_at, ca_at, c_at = ncac.unbind(-2)
    o_term = to_global(rots, trans, torch.tensor(IDEAL_LOCAL["O_terminal"], dtype=trans.dtype, device=trans.device))
    ex = c_at - ca_at
    ex = ex / torch.linalg.vector_norm(ex, dim=-1, keepdim=True).clamp_min(eps)
    n_next = torch.cat([n_at[..., 1:, :], torch.zeros_like(n_at[..., :1, :])], dim=-2)
    w = n_next - c_at
    wp = w - (w * ex).sum(-1, keepdim=True) * ex
    wp_norm = torch.linalg.vector_norm(wp, dim=-1, keepdim=True)
    ep = wp / wp_norm.clamp_min(eps)
    o_next = c_at + _O_ALONG * ex - _O_PERP * ep
    has_next = torch.ones(trans.shape[:-1], dtype=torch.bool, device=trans.device)
    has_next[..., -1] = False
    if chain_end is not None:
        has_next = has_next & ~chain_end.to(torch.bool)
    has_next = has_next & (wp_norm.squeeze(-1) > 1e-3)
    o_at = torch.where(has_next.unsqueeze(-1), o_next, o_term)
    return torch.cat([ncac, o_at.unsqueeze(-2)], dim=-2)

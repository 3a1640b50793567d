"""Point-group symmetry of a designed oligomer: the groups, the symmetrising projection, the
symmetric starting noise, and the copies kept off the symmetry axes.

Dimension legend: B batch, n copies (the group's order), L residues per copy, N = n L residues
in the state.

A symmetric design's state is n equal chains of L residues, concatenated (chain k is residues
``k L .. (k + 1) L - 1``); chain k is chain 0 moved by the group's k-th operator ``g_k`` (a
rotation about the origin; ``g_0`` the identity): CA ``t_k = g_k t_0``, frame ``Q_k = g_k Q_0``.

Groups (:func:`parse_symmetry`): ``Cn``, n = 2..12, the rotations by ``2 pi k / n`` about z;
``D2``, the identity and the 180 degree rotations about z, x and y (4 copies).

:func:`symmetrise` is the projection onto symmetric states: every copy mapped back to chain 0's
place (``g_k^T t_k``, ``g_k^T Q_k``), averaged (rotations: the mean projected back onto SO(3)),
and the n copies rebuilt. It is idempotent and leaves a symmetric state as it is. The builder
applies it to the state after every sampler step and to every clean prediction (so the
sampling-time potentials relax a symmetric structure), where it also keeps the copies apart:
when the predicted subunit's centre comes so close to an axis that two copies' centres are
nearer than :func:`min_copy_spacing`, the subunit is moved straight out from that axis (one
rigid shift of chain 0, so every copy moves with it and the state stays symmetric): a floor,
should a prediction pull the copies in. The network keeps each copy near the centre of its
noise cloud; when each copy drew its own noise and the state was symmetrised, every copy's
noise was centred near the origin, and the copies ended stacked on the axis (C6, L = 80: their
centres 3-4 Å from it, 84 CA pairs of two copies under 3 Å).

:func:`symmetric_prior` is the starting noise: one subunit's noise copied by the operators, as
RFdiffusion does for symmetric design (Watson et al. 2023, Nature 620, 1089; its
``inference/symmetry.py``, ``SymGen``, applies the group's rotations to the first subunit, and
with ``recenter`` places each subunit at ``radius`` off the origin). Here the subunit's centre
goes where neighbouring copies' centres are ``2 Rg`` apart, ``Rg = 2.2 L^0.38`` Å the radius of
gyration of a real chain of L residues (RFdiffusion's ROG potentials and the training filter):

- ``Cn``: the centre at radius R on the x axis; neighbouring copies are a chord
  ``2 R sin(pi / n)`` apart, so ``R = Rg / sin(pi / n)`` (C2: ``R = Rg``);
- ``D2``: every copy is the neighbour of every other (each pair is related by one 2-fold
  axis), so the centre goes on the diagonal ``s (1, 1, 1)``: the four centres are then the
  corners of a regular tetrahedron, each pair ``2 sqrt(2) s`` apart (twice the centre's
  distance ``sqrt(2) s`` from each axis), and ``s = 2 Rg / (2 sqrt 2)``, at
  ``sqrt(3 / 8) 2 Rg`` from the origin.

The noise of one subunit spreads ~10 Å per coordinate (the flow prior's sigma = 1 nm), more
than a folded chain, so at that spacing neighbouring noise clouds interleave (the nearest CAs
of two copies ~1.5-2 Å apart): the copies are apart as bodies, not atom by atom. Growing the
radius until no CAs of two copies are within 4 Å (~1.6 x the spacing) was measured and dropped:
the network keeps each copy near its noise cloud's centre, so the C6 copies (L = 80, seed 0,
shipped checkpoint) ended 15 Å apart, without contact; at ``2 Rg`` they end 6-8 Å apart.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

from diffsci.core.errors import DiffsciError
from diffsci.protein.frames import ANGSTROM_PER_NM

__all__ = ["SymmetryGroup", "parse_symmetry", "OFFERED", "expected_rg", "placement", "min_copy_spacing", "copy_spacing",
           "symmetrise", "symmetric_prior", "symmetry_constraint", "symmetric_denoiser", "project_so3", "MIN_SPACING"]

#: the cyclic orders offered (``C2`` .. ``C12``); beside them ``D2``
CYCLIC_ORDERS = range(2, 13)
OFFERED = "C2 to C12 (n copies about z) and D2 (4 copies: 2-fold axes z, x and y)"
#: the clean prediction's copies keep their centres at least ``MIN_SPACING * 2 Rg`` apart
#: (:func:`min_copy_spacing`); the starting noise places them ``2 Rg`` apart
MIN_SPACING = 0.75


@dataclass(frozen=True)
class SymmetryGroup:
    """A point group of rotations about the origin, by ``name`` (``"C6"``, ``"D2"``; see
    :func:`parse_symmetry`, which also reads lower case). ``order`` copies; operator k is
    ``axis_angles()[k]``, operator 0 the identity.

    >>> SymmetryGroup("C4").order, SymmetryGroup("D2").order
    (4, 4)
    """

    name: str

    def __post_init__(self):
        m = re.fullmatch(r"C(\d+)", self.name)
        if not (self.name == "D2" or (m and int(m.group(1)) in CYCLIC_ORDERS)):
            raise DiffsciError(f"symmetry {self.name!r}: offered are {OFFERED}")

    @property
    def order(self) -> int:
        return 4 if self.name == "D2" else int(self.name[1:])

    def axis_angles(self) -> tuple[tuple[tuple[float, float, float], float], ...]:
        """(unit axis, angle in radians) of each operator, the identity first."""
        z = (0.0, 0.0, 1.0)
        if self.name == "D2":
            return (z, 0.0), (z, math.pi), ((1.0, 0.0, 0.0), math.pi), ((0.0, 1.0, 0.0), math.pi)
        return tuple((z, 2 * math.pi * k / self.order) for k in range(self.order))

    def operators(self, dtype=torch.float64, device=None) -> torch.Tensor:
        """The rotation matrices, Shape (n, 3, 3): Rodrigues' ``I + sin(a) K + (1 - cos(a)) K^2``
        with K the cross-product matrix of the unit axis."""
        mats = []
        for (x, y, z), a in self.axis_angles():
            k = torch.tensor([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]], dtype=torch.float64)
            mats.append(torch.eye(3, dtype=torch.float64) + math.sin(a) * k + (1 - math.cos(a)) * (k @ k))
        return torch.stack(mats).to(dtype=dtype, device=device)

    def placement_direction(self) -> torch.Tensor:
        """Unit vector (3,) float64 along which the prior places chain 0's centre: x for Cn, the
        diagonal (1, 1, 1) / sqrt 3 for D2 (module docstring)."""
        u = torch.ones(3, dtype=torch.float64) if self.name == "D2" else torch.tensor([1.0, 0.0, 0.0],
                                                                                      dtype=torch.float64)
        return u / u.norm()


def parse_symmetry(symmetry) -> SymmetryGroup | None:
    """The group a user names (``"C3"``, ``"c3"``, ``"D2"``, a :class:`SymmetryGroup`); None for
    no symmetry (None or ``""``). Every other name is refused in one line naming what is offered.

    >>> parse_symmetry("c6").name
    'C6'
    >>> parse_symmetry("T")
    Traceback (most recent call last):
    ...
    diffsci.core.errors.DiffsciError: symmetry 'T': offered are C2 to C12 (n copies about z) and D2 (4 copies: 2-fold axes z, x and y)
    """
    if isinstance(symmetry, SymmetryGroup):
        return symmetry
    if not symmetry:
        return None
    text = str(symmetry).strip()
    if not re.fullmatch(r"[CcDd]\d+", text):
        raise DiffsciError(f"symmetry {text!r}: offered are {OFFERED}")
    try:
        return SymmetryGroup(text.upper())
    except DiffsciError:
        raise DiffsciError(f"symmetry {text!r}: offered are {OFFERED}") from None


def expected_rg(length: int) -> float:
    """Radius of gyration (Å) of a real chain of ``length`` residues, ``2.2 L^0.38`` (the bound
    RFdiffusion's ROG potentials and the training filter use)."""
    return 2.2 * length ** 0.38


def min_copy_spacing(length: int) -> float:
    """Å: the smallest distance between two copies' centres that the builder lets a clean
    prediction keep, ``MIN_SPACING * 2 Rg(L)``."""
    return MIN_SPACING * 2 * expected_rg(length)


def copy_spacing(group: SymmetryGroup, centre: torch.Tensor) -> torch.Tensor:
    """The distance from chain 0's centre ``centre`` (B, 3) to the nearest other copy's centre,
    ``min_k |g_k c - c|`` over k > 0. Shape (B,)."""
    ops = group.operators(centre.dtype, centre.device)[1:]
    return (torch.einsum("kij,bj->bki", ops, centre) - centre[:, None]).norm(dim=-1).min(1).values


def _push_off_axes(group: SymmetryGroup, centre: torch.Tensor, min_spacing: float) -> torch.Tensor:
    """``centre`` (B, 3) moved out from each operator's axis to where that operator's copy is at
    least ``min_spacing`` away: copies by angle a about axis u are ``2 sin(a / 2) rho`` apart, rho
    the centre's distance from u. A centre on the axis moves along the basis vector least
    aligned with it. Each move scales the distances from the other axes up (Cn: one axis; D2:
    orthogonal axes), so one pass suffices. Shape (B, 3)."""
    c = centre
    for axis, angle in group.axis_angles()[1:]:
        u = torch.tensor(axis, dtype=c.dtype, device=c.device)
        rho_min = min_spacing / (2 * math.sin(angle / 2))
        along = (c @ u)[:, None] * u
        perp = c - along
        rho = perp.norm(dim=-1, keepdim=True)
        e = torch.eye(3, dtype=c.dtype, device=c.device)[int(u.abs().argmin())]
        fallback = (e - (e @ u) * u) / (e - (e @ u) * u).norm()
        direction = torch.where(rho > 1e-9, perp / rho.clamp_min(1e-12), fallback)
        c = torch.where(rho < rho_min, along + direction * rho_min, c)
    return c


def project_so3(m: torch.Tensor) -> torch.Tensor:
    """The nearest rotation to each 3x3 matrix (Frobenius norm): ``U diag(1, 1, det(U V^T)) V^T``
    from the SVD ``m = U S V^T``. Shape (..., 3, 3)."""
    u, _, vh = torch.linalg.svd(m)
    fix = torch.ones_like(u[..., 0])
    fix[..., -1] = torch.sign(torch.linalg.det(u @ vh))
    return u @ torch.diag_embed(fix) @ vh


def symmetrise(group: SymmetryGroup, x, *, min_spacing: float = 0.0):
    """The symmetric state nearest ``x = (trans (B, N, 3), rots (B, N, 3, 3))`` (module
    docstring); ``min_spacing`` (the units of ``trans``; 0: off): chain 0 is first moved off the
    axes so that no two copies' centres are nearer (:func:`_push_off_axes`). Returns
    (trans (B, N, 3), rots (B, N, 3, 3))."""
    trans, rots = x
    b, N = trans.shape[:2]
    n = group.order
    if N % n:
        raise DiffsciError(f"symmetry {group.name}: a state of {N} residues is not {n} equal chains")
    L = N // n
    ops = group.operators(trans.dtype, trans.device)
    back_t = torch.einsum("kji,bklj->bkli", ops, trans.reshape(b, n, L, 3)).mean(1)  # g_k^T t_k, averaged
    back_r = project_so3(torch.einsum("kji,bkljm->bklim", ops, rots.reshape(b, n, L, 3, 3)).mean(1))
    if min_spacing > 0:
        centre = back_t.mean(1)
        back_t = back_t + (_push_off_axes(group, centre, min_spacing) - centre)[:, None]
    new_t = torch.einsum("kij,blj->bkli", ops, back_t).reshape(b, N, 3)
    new_r = torch.einsum("kij,bljm->bklim", ops, back_r).reshape(b, N, 3, 3)
    return new_t, new_r


def placement(group: SymmetryGroup, length: int) -> torch.Tensor:
    """Å: where the starting noise puts chain 0's centre, along
    :meth:`SymmetryGroup.placement_direction` at the distance that puts neighbouring copies'
    centres ``2 Rg(L)`` apart (module docstring). Shape (3,) float64."""
    u = group.placement_direction()
    ops = group.operators()[1:]
    return 2 * expected_rg(length) / float((ops @ u - u).norm(dim=-1).min()) * u


def symmetric_prior(group: SymmetryGroup, space, like, generator):
    """The starting state of a symmetric design: ``space.prior(like, generator)`` drawn as for
    an asymmetric one, chain 0's part kept (CA noise centred on its own mean), moved to
    :func:`placement` (translations in nm) and copied by the operators. ``like`` = (trans
    (B, N, 3), rots (B, N, 3, 3)); returns the same shapes."""
    trans, rots = space.prior(like, generator)
    b, N = trans.shape[:2]
    L = N // group.order
    centre = (placement(group, L) / ANGSTROM_PER_NM).to(dtype=trans.dtype, device=trans.device)
    sub = trans[:, :L] - trans[:, :L].mean(1, keepdim=True) + centre
    ops = group.operators(trans.dtype, trans.device)
    new_t = torch.einsum("kij,blj->bkli", ops, sub).reshape(b, N, 3)
    new_r = torch.einsum("kij,bljm->bklim", ops, rots[:, :L]).reshape(b, N, 3, 3)
    return new_t, new_r


def symmetry_constraint(group: SymmetryGroup):
    """A sampler ``constraint(x, t)``: :func:`symmetrise` after every step."""

    def constraint(x, t):
        return symmetrise(group, x)

    return constraint


def symmetric_denoiser(group: SymmetryGroup, denoise, *, min_spacing: float = 0.0):
    """``denoise(x, t, cond)`` whose clean prediction is symmetrised, with the copies' centres
    kept ``min_spacing`` apart (the units of the translations; :func:`symmetrise`)."""

    def symmetric(x, t, cond):
        return symmetrise(group, denoise(x, t, cond), min_spacing=min_spacing)

    return symmetric

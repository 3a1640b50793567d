"""Strand restraints: sampling-time sheet geometry for the strands of a secondary-structure request.

Dimension legend: B batch, N residues, C distance restraints, K H-bonds.

A request such as ``--ss L2E8L3E8L3H16L2 --ss-pairs 1-2:A`` says which residues are strands
and which strands pair. The SS-conditioned network takes it as input, but a small network
trained on a few hundred chains honours it for helices far better than for strands
(protein/data/CHECKPOINT.md, "SS conditioning"). The restraints add what is known about a
β-sheet, as RFdiffusion steers sampling with auxiliary potentials (Watson et al. 2023). Every
figure below is measured on the DSSP strands and bridges of the training split of
protein/data/chains.npz (10-90% ranges unless said; tests/test_protein_strands.py re-measures
the frame and H-bond parts on the held-out chains):

- a strand is extended and straight: CA(i)-CA(i+k) within :data:`STRAND_SPAN` for k = 2, 3, 4
  (medians 6.7, 10.1, 13.2 Å; an α-helix has 5.4, 5.0, 6.2 Å), and twists right-handed
  (:data:`TWIST_SIN`; its mirror image meets every distance and makes no DSSP ladder);
- paired strands are in register: in an antiparallel pair residues ``i`` and ``j`` with
  ``i + j`` constant (the segments' centres facing each other), in a parallel pair ``j - i``
  constant, have CA-CA within :data:`PAIR_LO`-:data:`PAIR_HI`, and a residue and its partner's
  chain neighbours within :data:`DIAGONAL`;
- partners' pleats agree and the partner lies across the pleat (:data:`PLEAT_DOT`,
  :data:`PLEAT_ACROSS`): without these two strands may lie side by side with their zigzag in
  the sheet's plane, where no N-H points at a C=O;
- every other partner pair is a DSSP bridge: in an antiparallel pair H-bonded both ways, in a
  parallel pair ``(i, j)`` by C=O(i-1)...H-N(j) and C=O(j)...H-N(i+1); the DSSP energy of those
  bonds, on the backbone the CA trace implies (:func:`strand_hbond_energy`), is pushed below
  :data:`HBOND_TARGET`, in whichever of the two phases fits the current structure better;
- the chain stays a chain: CA(i)-CA(i+1) = 3.8 Å. (A clash bound, CA-CA >= 4.2 Å for residues
  three or more apart, made things worse: strands that had to pass each other stayed trapped;
  the network keeps residues apart by itself.)

After every call of the denoiser the predicted clean CA positions are moved to (near) the
nearest positions that satisfy these terms (L-BFGS on a flat-bottom energy, :func:`relax`), by
the fraction ``strength``, and re-centred (zero CoM). The frame of each strand residue is then
turned, by the same fraction along the geodesic, to the frame its CA trace implies
(:func:`strand_frames`): in a β-strand the N-CA-C frame is fixed by CA(i-1), CA(i), CA(i+1) up
to a few degrees (a constant rotation :data:`STRAND_Q` from the trace's frame: median error
5.0°, 90% within 10.1°, 7,346 residues). Helix and loop frames stay the network's. Like motif
replacement (:mod:`diffsci.protein.design.motif`) this acts on the clean prediction, so the network
always sees a state noised like its training data, and the last step lands on a restrained
prediction.

Which strands pair: the ``--ss-pairs`` list; without it, two strands joined by a loop of at
most :data:`HAIRPIN_LOOP` residues (a β-hairpin: with so short a loop they can only pair
antiparallel, or not at all), and nothing else.

Cost: one L-BFGS solve (15 iterations) per step; measured in protein/data/CHECKPOINT.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Callable

import numpy as np
import torch
from torch import nn

from diffsci.core.errors import DiffsciError
from diffsci.core.so3 import geodesic
from diffsci.core.spaces import remove_com
from diffsci.protein.frames import _O_ALONG, _O_PERP, ANGSTROM_PER_NM, IDEAL_LOCAL
from diffsci.protein.ss import HAIRPIN_LOOP, PAIR_ANTIPARALLEL, PAIR_PARALLEL, PAIR_UNKNOWN, hairpin_pairs, strand_segments

__all__ = ["HAIRPIN_LOOP", "Restraints", "hairpin_pairs", "strand_restraints", "request_restraints", "relax",
           "ca_trace_frames", "strand_frames", "pseudo_dihedral_sin", "strand_hbond_energy",
           "restraint_energy", "StrandRestraints"]

CA_CA = 3.8  # Å, consecutive CA atoms (trans peptide)
# Å, bounds of CA(i)-CA(i+k), k = 2, 3, 4, inside a strand: the 10-90% range over the training
# split's DSSP strands (1,844 EEEEE windows of protein/data/chains.npz: medians 6.7, 10.1, 13.2 Å;
# an α-helix has 5.4, 5.0, 6.2 Å). k = 4 keeps the strand straight: with wide CA angles, k <= 3
# alone allows a twisted or cis-like trace
STRAND_SPAN = {2: (6.3, 7.1), 3: (9.6, 10.5), 4: (12.6, 13.8)}
# Å, CA-CA of registered partners (DSSP bridge partners: 4.3-5.5, median 4.9, antiparallel and
# parallel alike), and of a residue and its partner's chain neighbours (antiparallel 5.3-6.8,
# medians 5.7 and 6.4; parallel 5.5-6.6, median 6.1)
PAIR_LO, PAIR_HI = 4.3, 5.5
DIAGONAL = {False: (5.3, 6.8), True: (5.5, 6.6)}
# registered partners: pleats agree (v_i . v_j over the DSSP bridges of chains.npz: median 0.78, 94% > 0)
# and the partner lies across the pleat (|r_ij . v_i|: median 0.24)
PLEAT_DOT, PLEAT_ACROSS, PLEAT_WEIGHT = 0.5, 0.4, 4.0
# strands twist right-handed: the CA pseudo-dihedral of four strand residues (IUPAC sign) has
# sin <= TWIST_SIN (DSSP strands of chains.npz: 5-95% from -176 to +176 deg, median -155, sin <=
# 0.09 for 95%); its mirror image (median +155) meets every distance above and makes no DSSP ladder
TWIST_SIN = 0.1
# ladders: DSSP energy of each H-bond of the H-bonded pairs <= HBOND_TARGET kcal/mol
# (DSSP counts a bond below -0.5); weight: (kcal/mol)^-2 in Å^2
HBOND_TARGET, HBOND_WEIGHT = -1.5, 0.25
#: the frame of a strand residue in the frame of its CA trace (:func:`ca_trace_frames`): the mean
#: of ``F^T R`` over the DSSP-E residues of the training split of protein/data/chains.npz, projected
#: onto SO(3) (tests/test_protein_strands.py re-fits it on the held-out chains)
STRAND_Q = ((0.7664, -0.6424, 0.0058), (-0.5708, -0.6851, -0.4526), (0.2947, 0.3435, -0.8917))


@dataclass(frozen=True)
class Restraints:
    """The restraints of a request: distance bounds ``lo <= |CA_i - CA_j| <= hi`` (``i``, ``j``,
    ``lo``, ``hi``: (C,), Å), the strand residues whose frames follow their CA trace (``framed``
    (S,): both chain neighbours present) and the registered partners whose pleats must agree
    (``ladder`` (P, 2), both framed)."""

    i: np.ndarray
    j: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    framed: np.ndarray
    ladder: np.ndarray
    twist: np.ndarray  # (T,) first residue of each four-residue window inside a strand
    #: per strand pair, its registered partners (K, 2) in ladder order whose bond atoms can be built
    #: (two residues of the same chain either side of each): every other one is a bridge
    hbond_ladders: tuple = ()
    #: per entry of ``hbond_ladders``: True for a parallel pair
    hbond_parallel: tuple = ()

    @cached_property
    def hbond_index(self) -> tuple:
        """Acceptors, donors and groups of the ladders' H-bonds (:func:`_hbond_index`), built once
        per request rather than at every relaxation."""
        return _hbond_index(self.hbond_ladders, self.hbond_parallel or (False,) * len(self.hbond_ladders))


def strand_restraints(codes, segment_pairs, chain_index=None) -> Restraints:
    """The :class:`Restraints` of a request.

    ``codes`` (N,) SS classes of one chain or of several chains one after another
    (``chain_index`` (N,) says which; restraints never join two chains); ``segment_pairs``
    ``(a, b, parallel)`` over the strand segments of ``codes`` (numbered in order, as
    :func:`diffsci.protein.ss.strand_segments`), each optionally with a fourth entry, its register
    (``i + j`` of antiparallel partners ``i`` in ``a`` and ``j`` in ``b``, ``j - i`` of parallel
    ones; without it the segments' centres face each other)."""
    codes = np.asarray(codes)
    n = len(codes)
    chains = np.zeros(n, dtype=np.int64) if chain_index is None else np.asarray(chain_index, dtype=np.int64)
    segs = strand_segments(codes)
    rows: list[tuple[int, int, float, float]] = []
    for i in range(n - 1):
        if chains[i] == chains[i + 1]:
            rows.append((i, i + 1, CA_CA, CA_CA))
    for lo, hi in segs:
        for k, bounds in STRAND_SPAN.items():
            rows += [(i, i + k, *bounds) for i in range(lo, hi - k + 1)]
    ladder, per_pair = [], []
    for a, b, parallel, *register in segment_pairs:
        per_pair.append((bool(parallel), []))
        if not (0 <= a < len(segs) and 0 <= b < len(segs)) or a == b:
            raise DiffsciError(f"strand pair {a + 1}-{b + 1}: the request has {len(segs)} strand segment(s)")
        (a0, a1), (b0, b1) = segs[a], segs[b]
        if register and register[0] is not None:
            reg = int(register[0])
        else:  # the segments' centres face each other
            reg = round(((b0 + b1) - (a0 + a1)) / 2) if parallel else round((a0 + a1 + b0 + b1) / 2)
        for i in range(a0, a1 + 1):
            j = i + reg if parallel else reg - i
            if b0 <= j <= b1 and chains[i] == chains[j]:
                rows.append((min(i, j), max(i, j), PAIR_LO, PAIR_HI))
                ladder.append((i, j))
                per_pair[-1][1].append((i, j))
                for jd in (j - 1, j + 1):
                    if 0 <= jd < n and chains[jd] == chains[i] and abs(jd - i) >= 3:
                        rows.append((min(i, jd), max(i, jd), *DIAGONAL[bool(parallel)]))
    arr = np.array(rows, dtype=np.float64).reshape(-1, 4)
    framed = [i for lo, hi in segs for i in range(lo, hi + 1)
              if 0 < i < n - 1 and chains[i - 1] == chains[i] == chains[i + 1]]
    ladder = [(i, j) for i, j in ladder if i in framed and j in framed]
    twist = [i for lo, hi in segs for i in range(lo, hi - 2) if len(set(chains[i : i + 4].tolist())) == 1]
    strand = set(framed)
    hb, hb_par = [], []
    for parallel, pp in per_pair:
        # partners whose bond atoms can be built: residues k - 2 .. k + 2 of the same chain around each
        q = [(i, j) for i, j in pp if i in strand and j in strand and all(
            k >= 2 and k + 2 < n and len(set(chains[k - 2 : k + 3].tolist())) == 1 for k in (i, j))]
        if len(q) >= 2:
            hb.append(np.array(q, dtype=np.int64).reshape(-1, 2))
            hb_par.append(parallel)
    return Restraints(arr[:, 0].astype(np.int64), arr[:, 1].astype(np.int64), arr[:, 2], arr[:, 3],
                      np.array(framed, dtype=np.int64), np.array(ladder, dtype=np.int64).reshape(-1, 2),
                      np.array(twist, dtype=np.int64), tuple(hb), tuple(hb_par))


def request_restraints(ss, ss_pair=None):
    """The restraints of one chain's request: SS classes ``ss`` (N,) and pair classes ``ss_pair``
    (N, N) (:func:`diffsci.protein.ss.ss_condition`); strand segments pair as ``ss_pair`` says
    (parallel / antiparallel between their first residues), or, where it says nothing (all
    unknown, or None), as hairpins (:func:`hairpin_pairs`)."""
    codes = np.asarray(torch.as_tensor(ss).cpu())
    segs = strand_segments(codes)
    pair = None if ss_pair is None else np.asarray(torch.as_tensor(ss_pair).cpu())
    if pair is None or not segs or (pair[[lo for lo, _ in segs]][:, [lo for lo, _ in segs]] == PAIR_UNKNOWN).all():
        return strand_restraints(codes, hairpin_pairs(codes))
    pairs = [(a, b, pair[segs[a][0], segs[b][0]] == PAIR_PARALLEL) for a in range(len(segs))
             for b in range(a + 1, len(segs)) if pair[segs[a][0], segs[b][0]] in (PAIR_PARALLEL, PAIR_ANTIPARALLEL)]
    return strand_restraints(codes, pairs)


def ca_trace_frames(ca: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """The frames (..., N-2, 3, 3) of a CA trace ``ca`` (..., N, 3) at residues 1..N-2: columns
    ``u`` along CA(i+1) - CA(i-1), ``v`` the part of 2 CA(i) - CA(i-1) - CA(i+1) orthogonal to u
    (in a strand the pleat; in a helix it points away from the axis), ``w = u x v``."""
    u = ca[..., 2:, :] - ca[..., :-2, :]
    u = u / u.norm(dim=-1, keepdim=True).clamp_min(eps)
    v = 2 * ca[..., 1:-1, :] - ca[..., :-2, :] - ca[..., 2:, :]
    v = v - (v * u).sum(-1, keepdim=True) * u
    v = v / v.norm(dim=-1, keepdim=True).clamp_min(eps)
    return torch.stack([u, v, torch.cross(u, v, dim=-1)], dim=-1)


def strand_frames(ca: torch.Tensor) -> torch.Tensor:
    """The residue frames (..., N-2, 3, 3) a β-strand with CA trace ``ca`` (..., N, 3) has at
    residues 1..N-2: :func:`ca_trace_frames` times :data:`STRAND_Q`."""
    return ca_trace_frames(ca) @ torch.tensor(STRAND_Q, dtype=ca.dtype, device=ca.device)


def pseudo_dihedral_sin(ca: torch.Tensor, first: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """sin of the CA pseudo-dihedral CA(k)-CA(k+1)-CA(k+2)-CA(k+3) (IUPAC sign: about +50 deg in
    an α-helix) for each ``k`` in ``first`` (T,), of a trace ``ca`` (..., N, 3). Shape (..., T)."""
    p0, p1, p2, p3 = (ca[..., first + o, :] for o in range(4))
    b0, b1, b2 = p1 - p0, p2 - p1, p3 - p2
    n1, n2 = torch.cross(b0, b1, dim=-1), torch.cross(b1, b2, dim=-1)
    m1 = torch.cross(n1, b1 / b1.norm(dim=-1, keepdim=True).clamp_min(eps), dim=-1)
    return -(m1 * n2).sum(-1) / (n1.norm(dim=-1) * n2.norm(dim=-1)).clamp_min(eps)


def strand_hbond_energy(ca: torch.Tensor, acceptor: torch.Tensor, donor: torch.Tensor,
                        frames: torch.Tensor | None = None) -> torch.Tensor:
    """DSSP energies (kcal/mol) of the H-bonds C=O(acceptor) ... H-N(donor), (..., K), of a strand
    whose backbone is rebuilt from its CA trace ``ca`` (..., N, 3) in Å (:func:`strand_frames`,
    ideal geometry, O as :func:`diffsci.protein.frames.backbone_from_frames` places it; H on the
    bisector of C(d-1)->N(d) and CA(d)->N(d) as DSSP places it):
    ``0.084 * 332 * (1/r_ON + 1/r_CH - 1/r_OH - 1/r_CN)`` (Kabsch & Sander 1983). The bonds need
    the atoms of residues ``acceptor``, ``acceptor + 1``, ``donor - 1`` and ``donor``, which must
    lie in 1..N-2 (a residue's frame needs both chain neighbours). ``frames``: the trace's
    :func:`strand_frames` (..., N-2, 3, 3) where the caller has them (the relaxation builds the
    frames once per energy evaluation, for this term and the pleat term)."""
    if frames is None:
        frames = strand_frames(ca)
    n_loc = torch.tensor(IDEAL_LOCAL["N"], dtype=ca.dtype, device=ca.device)
    c_loc = torch.tensor(IDEAL_LOCAL["C"], dtype=ca.dtype, device=ca.device)

    def atom(k, local):  # (..., K, 3): atom of residues k from their CA-trace strand frames
        return ca[..., k, :] + frames[..., k - 1, :, :] @ local

    def unit(v):
        return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-8)

    c_a = atom(acceptor, c_loc)
    ex = unit(c_a - ca[..., acceptor, :])
    w = atom(acceptor + 1, n_loc) - c_a
    o_a = c_a + _O_ALONG * ex - _O_PERP * unit(w - (w * ex).sum(-1, keepdim=True) * ex)
    n_d = atom(donor, n_loc)
    h = n_d + 1.01 * unit(unit(n_d - atom(donor - 1, c_loc)) + unit(n_d - ca[..., donor, :]))
    r_on, r_ch = (o_a - n_d).norm(dim=-1), (c_a - h).norm(dim=-1)
    r_oh, r_cn = (o_a - h).norm(dim=-1), (c_a - n_d).norm(dim=-1)
    return 0.084 * 332.0 * (1 / r_on + 1 / r_ch - 1 / r_oh - 1 / r_cn)


def _hbond_index(ladders, parallel):
    """Acceptors, donors and group (ladder l, phase p -> 2 l + p) of the H-bonds of every ladder in
    both phases: in phase p the partner pairs (i, j) number p, p + 2, ... are bridges. An
    antiparallel bridge is bonded both ways, C=O(i)...H-N(j) and C=O(j)...H-N(i); a parallel one
    C=O(i-1)...H-N(j) and C=O(j)...H-N(i+1) (Kabsch & Sander 1983; the next bridge of the ladder,
    (i+1, j+1), shares the second bond: DSSP's other parallel pattern)."""
    acc, don, grp = [], [], []
    for g, (lad, par) in enumerate(zip(ladders, parallel)):
        for phase in (0, 1):
            q = np.asarray(lad)[phase::2]
            if par:
                acc += [*(q[:, 0] - 1), *q[:, 1]]
                don += [*q[:, 1], *(q[:, 0] + 1)]
            else:
                acc += [*q[:, 0], *q[:, 1]]
                don += [*q[:, 1], *q[:, 0]]
            grp += [2 * g + phase] * (2 * len(q))
    return tuple(np.asarray(v, dtype=np.int64) for v in (acc, don, grp))


def restraint_energy(r: Restraints, *, anchor: float = 1e-3, scale: float = 1.0):
    """``energy(y, x0) -> (B,)``: the flat-bottom energy :func:`relax` minimises for CA positions
    ``y`` (B, N, 3) anchored at ``x0``, the restraints ``r`` with distances divided by ``scale``
    (10 for nm). Invariant under a common rigid motion of ``y`` and ``x0``. Index tensors are
    built at the first call, on its device."""
    cache = {}
    unit = PLEAT_WEIGHT / scale ** 2
    n_ladders = len(r.hbond_ladders)

    def energy(y: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        key = (y.device, y.dtype, torch.is_inference_mode_enabled())  # no inference tensors in a graph
        if key not in cache:
            dev, dt = y.device, y.dtype
            cache[key] = (
                torch.as_tensor(r.i, device=dev), torch.as_tensor(r.j, device=dev),
                torch.as_tensor(r.lo, dtype=dt, device=dev) / scale, torch.as_tensor(r.hi, dtype=dt, device=dev) / scale,
                *(torch.as_tensor(r.ladder[:, k], device=dev) for k in (0, 1)), torch.as_tensor(r.twist, device=dev),
                *(torch.as_tensor(v, device=dev) for v in r.hbond_index), torch.tensor(STRAND_Q, dtype=dt, device=dev))
        i, j, lo, hi, pi, pj, tw, hb_acc, hb_don, hb_group, strand_q = cache[key]
        d = (y[:, j] - y[:, i]).norm(dim=-1)
        e = (((lo - d).clamp_min(0) + (d - hi).clamp_min(0)) ** 2).sum(-1) + anchor * ((y - x0) ** 2).sum((-1, -2))
        frames = ca_trace_frames(y) if pi.numel() or hb_acc.numel() else None  # (B, N-2, 3, 3): residues 1..N-2
        if pi.numel():
            v = frames[..., 1]
            vi, vj = v[:, pi - 1], v[:, pj - 1]
            rij = y[:, pj] - y[:, pi]
            rij = rij / rij.norm(dim=-1, keepdim=True).clamp_min(1e-8)
            e = e + unit * (((PLEAT_DOT - (vi * vj).sum(-1)).clamp_min(0) ** 2).sum(-1)
                            + (((rij * vi).sum(-1).abs() - PLEAT_ACROSS).clamp_min(0) ** 2).sum(-1))
        if tw.numel():
            e = e + unit * ((pseudo_dihedral_sin(y, tw) - TWIST_SIN).clamp_min(0) ** 2).sum(-1)
        if hb_acc.numel():  # every other partner pair a bridge (_hbond_index), in the phase that fits
            # the frames of y * scale are those of y (scale > 0): built once for both terms
            hb = strand_hbond_energy(y * scale, hb_acc, hb_don, frames=frames @ strand_q)
            pen = (hb - HBOND_TARGET).clamp_min(0) ** 2  # (B, H)
            per = torch.zeros(y.shape[0], 2 * n_ladders, dtype=y.dtype, device=y.device).index_add_(1, hb_group, pen)
            e = e + HBOND_WEIGHT / scale ** 2 * per.view(-1, n_ladders, 2).min(-1).values.sum(-1)
        return e

    return energy


def relax(x: torch.Tensor, r: Restraints, *, iters: int = 30, anchor: float = 1e-3,
          scale: float = 1.0) -> torch.Tensor:
    """CA positions ``x`` (B, N, 3) moved to (near) the closest positions that satisfy the
    restraints ``r`` (its distances divided by ``scale``: 10 for nm).

    Minimises by L-BFGS (``iters`` iterations, strong-Wolfe line search) the flat-bottom energy
    (:func:`restraint_energy`, summed over the batch)
    ``sum(distance violation^2) + sum(pleat violation^2) + anchor |y - x|^2``: the pleat terms ask
    registered partners for pleats that agree, ``v_i . v_j >= PLEAT_DOT``, and lie across the
    sheet, ``|r_ij . v_i| <= PLEAT_ACROSS`` (``v``: :func:`ca_trace_frames`' second axis; ``r_ij``
    the unit vector to the partner), and the twist term asks strands to twist right-handed,
    ``sin(pseudo-dihedral) <= TWIST_SIN``; these scaled to Å^2 like the distance terms. The anchor keeps the
    move small and the minimum unique. Works under ``torch.no_grad`` and ``inference_mode``."""
    energy_of = restraint_energy(r, anchor=anchor, scale=scale)
    with torch.inference_mode(False), torch.enable_grad():
        x0 = x.detach().clone()
        y = x0.clone().requires_grad_(True)
        opt = torch.optim.LBFGS([y], lr=1.0, max_iter=iters, line_search_fn="strong_wolfe",
                                tolerance_grad=1e-10, tolerance_change=1e-14)

        def closure():
            opt.zero_grad()
            e = energy_of(y, x0).sum()
            e.backward()
            return e

        opt.step(closure)
        return y.detach().clone()


class StrandRestraints(nn.Module):
    """A denoiser wrapper: the clean translations it predicts are moved towards the strand
    :class:`Restraints` (:func:`relax`) and its strand residues' frames turned towards their
    CA-trace frames (:func:`strand_frames`), both by the fraction ``strength`` (0: unchanged, 1:
    all the way); module docstring."""

    def __init__(self, denoise: Callable, restraints: Restraints, *, strength: float = 1.0,
                 mask: torch.Tensor | None = None, iters: int = 15):
        super().__init__()
        self.denoise, self.restraints, self.strength, self.mask, self.iters = (denoise, restraints, float(strength),
                                                                                mask, iters)
        self.framed = torch.as_tensor(restraints.framed, dtype=torch.long)

    def forward(self, x, t, cond):
        trans0, rots0 = self.denoise(x, t, cond)
        if self.strength == 0 or len(self.restraints.i) == 0:
            return trans0, rots0
        moved = relax(trans0, self.restraints, iters=self.iters, scale=ANGSTROM_PER_NM)
        trans0 = trans0 + self.strength * (moved - trans0)
        if self.framed.numel():
            k = self.framed.to(trans0.device)
            target = strand_frames(torch.stack([trans0[:, k - 1], trans0[:, k], trans0[:, k + 1]], 2))[:, :, 0]
            rots0 = rots0.clone()
            rots0[:, k] = geodesic(rots0[:, k], target.to(rots0.dtype), self.strength)
        mask = self.mask.expand(trans0.shape[0], -1) if self.mask is not None else None
        return remove_com(trans0, mask), rots0

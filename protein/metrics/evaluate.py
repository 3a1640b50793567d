"""Metrics for designed protein backbones: geometry, secondary structure, diversity, novelty.

Dimension letters: L residues, 4 backbone atoms (N, CA, C, O), 3 Cartesian coordinates (Å),
N samples, M reference chains.

Every function takes coordinate arrays, so in-memory samples can be scored without files;
:func:`evaluate_folder` reads a folder of structure files (:func:`read_samples`: one sample
per protein chain, each chain whole, never split at a gap) and calls
:func:`evaluate_structures`. Evaluators measure what they are given: a gap is reported, not cut.
Memory is O(L) per chain (neighbour searches, no L x L array), so a 10,000-residue chain
evaluates in well under 2 GB.

Per-sample metrics (:func:`sample_metrics`)
-------------------------------------------
``chain_breaks``, ``ca_ca_max``
    Number of consecutive CA-CA distances above 4.2 Å (a chain break: a missing residue, a
    design whose chain does not connect) and the largest consecutive CA-CA distance (Å).
    The summary counts the samples with a break (``n_broken``, ``broken_fraction``).
``ca_ca_mean``, ``ca_ca_ok``
    Mean consecutive CA-CA distance (Å) and the fraction of consecutive CA-CA distances
    within 3.8 ± 0.3 Å (trans peptide ~3.80 Å).
``clashes``, ``clash_fraction``
    Number of non-adjacent CA pairs (``|i - j| >= 2``) closer than 3.0 Å, and that count
    divided by the number of non-adjacent pairs ``(L - 1)(L - 2) / 2``.
``radius_of_gyration``
    CA radius of gyration, ``sqrt(mean_i |x_i - mean(x)|^2)`` (Å).
``ca_contacts``
    Mean number, per residue, of CA atoms within 8 Å that are at least 6 residues away in
    sequence (tertiary packing: folded chains have several, an extended chain or a random
    walk fewer). Separation 6 is where CASP starts counting contacts (there between CB atoms);
    closer pairs are fixed by secondary structure alone (in an alpha helix CA(i)-CA(i+3) and
    CA(i+4) are 5.0 and 6.2 Å apart, CA(i+5) 8.6 Å), so a smaller separation would count helix
    content rather than packing.
``helix``, ``strand``, ``coil``
    Fractions of residues that biotite's P-SEA (:func:`biotite.structure.annotate_sse`, CA
    only) labels ``'a'``, ``'b'`` and anything else.
``dssp_helix``, ``dssp_strand``, ``dssp_coil``
    Fractions of residues labelled ``H``, ``E``, ``-`` by pydssp's simplified DSSP
    (``pydssp.assign(coords, out_type="c3")``, backbone N, CA, C, O; hydrogens placed as
    pydssp places them), computed by :func:`dssp_labels` from a neighbour search in O(L)
    memory and tested equal to pydssp. Chains shorter than 6 residues (which pydssp cannot
    process and which cannot hold a DSSP helix or ladder) count as all coil.
``bond_N_CA_mad``, ``bond_CA_C_mad``, ``bond_C_N_mad``
    Mean absolute deviation (Å) of backbone bond lengths from Engh & Huber ideal values
    (N-CA 1.458, CA-C 1.525, peptide C-N 1.329 Å). R. A. Engh and R. Huber, "Accurate bond and
    angle parameters for X-ray protein structure refinement", Acta Cryst. A47, 392-400 (1991).
``angle_N_CA_C_mad``, ``angle_CA_C_N_mad``, ``angle_C_N_CA_mad``
    Mean absolute deviation (degrees) of backbone bond angles from Engh & Huber (1991):
    N-CA-C 111.2°, CA-C-N 116.2°, C-N-CA 121.7°.
``rama_alpha``, ``rama_beta``, ``rama_left``, ``rama_other``
    Fractions of the L - 2 interior residues (those with both phi and psi) in these
    Ramachandran regions (degrees, half-open intervals, checked in this order):

    * alpha (right-handed helix): phi in [-160, -20) and psi in [-120, 50);
    * beta (extended / strand, incl. PPII): phi in [-180, -40) and (psi in [90, 180] or
      psi in [-180, -150));
    * left (left-handed helix): phi in [20, 120) and psi in [-60, 90);
    * other: everything else.

    The three regions do not overlap, so the four fractions sum to 1.
``max_tm_reference`` (novelty, :func:`novelty`)
    Highest TM-score of the sample to any reference chain, normalised by the sample's
    length (TM-align via ``tmtools``). Lower = more novel.

Set metrics (:func:`evaluate_structures`)
-----------------------------------------
``pairwise_tm``: N x N matrix, entry (i, j) = TM-score of sample i aligned to sample j
normalised by the length of i (``tmtools.tm_align(ca_i, ca_j, ...).tm_norm_chain1``);
the diagonal is 1. Two chains of the same file (the copies of a symmetric design, the partners
of a complex) are one design: their entry is NaN (not aligned; a copy's TM-score of 1 is not a
diversity signal) and they always share a cluster. ``summary``: the numbers of samples, files
and broken samples, mean off-diagonal pairwise TM (over pairs from different files), the number
and fraction (clusters / files) of single-linkage clusters at TM 0.5 (FrameDiff's MaxCluster
setting) and at TM 0.6 (Genie2's), the mean novelty and the mean of every numeric per-sample
field.

TM-align (``tmtools``) aligns on structure only; where no sequence is known poly-glycine
(``'G' * L``) is passed.
"""

from __future__ import annotations

import math
import os
import pathlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from diffsci.core.errors import DiffsciError

__all__ = [
    "IDEAL_BONDS",
    "IDEAL_ANGLES",
    "RAMA_REGIONS",
    "MAX_TM_RESIDUE_PRODUCT",
    "NUMERIC_FIELDS",
    "ca_ca_stats",
    "ca_clashes",
    "ca_contacts",
    "chain_breaks",
    "radius_of_gyration",
    "psea_labels",
    "psea_fractions",
    "dssp_hbonds",
    "dssp_labels",
    "dssp_fractions",
    "backbone_geometry_deviation",
    "backbone_dihedrals",
    "ramachandran_fractions",
    "sample_metrics",
    "tm_score",
    "pairwise_tm",
    "cluster_by_tm",
    "novelty",
    "reference_ca_list",
    "INDEX_FILE_NAMES",
    "EvalSample",
    "read_samples",
    "read_folder",
    "evaluate_structures",
    "subset_evaluation",
    "evaluate_folder",
    "to_jsonable",
]

IDEAL_BONDS: dict[str, float] = {"N_CA": 1.458, "CA_C": 1.525, "C_N": 1.329}
"""Engh & Huber (1991) backbone bond lengths (Å)."""
IDEAL_ANGLES: dict[str, float] = {"N_CA_C": 111.2, "CA_C_N": 116.2, "C_N_CA": 121.7}
"""Engh & Huber (1991) backbone bond angles (degrees)."""

RAMA_REGIONS: tuple[str, ...] = ("alpha", "beta", "left", "other")

CA_CA_IDEAL = 3.8
CA_CA_TOL = 0.3
CA_CA_BREAK = 4.2  # the same threshold as diffsci.protein.structure.CA_CA_BREAK
CLASH_DISTANCE = 3.0
DSSP_MIN_LENGTH = 6
MAX_TM_RESIDUE_PRODUCT = 25_000_000
"""TM-align is run only on pairs with L1 * L2 at most this (two 5,000-residue chains): its
memory (about 16 bytes per residue pair) and time grow with the product. Larger pairs get NaN."""

NUMERIC_FIELDS: tuple[str, ...] = (
    "length",
    "chain_breaks",
    "ca_ca_max",
    "ca_ca_mean",
    "ca_ca_ok",
    "clashes",
    "clash_fraction",
    "radius_of_gyration",
    "helix",
    "strand",
    "coil",
    "dssp_helix",
    "dssp_strand",
    "dssp_coil",
    "bond_N_CA_mad",
    "bond_CA_C_mad",
    "bond_C_N_mad",
    "angle_N_CA_C_mad",
    "angle_CA_C_N_mad",
    "angle_C_N_CA_mad",
    "rama_alpha",
    "rama_beta",
    "rama_left",
    "rama_other",
    "max_tm_reference",
)
"""Numeric per-sample fields, in the order of the CSV columns (after ``file``, ``source_file``, ``chain``)."""


# ----------------------------------------------------------------------------- checks


def _backbone(coords, what: str = "coords") -> np.ndarray:
    """Validate a backbone array; Shape (L, 4, 3) -> float64 copy."""
    x = np.asarray(coords, dtype=np.float64)
    if x.ndim != 3 or x.shape[1:] != (4, 3):
        raise DiffsciError(f"{what}: expected backbone coordinates of shape (L, 4, 3), got {x.shape}")
    if x.shape[0] == 0:
        raise DiffsciError(f"{what}: zero-length chain (no residues)")
    if not np.isfinite(x).all():
        raise DiffsciError(f"{what}: coordinates contain NaN or infinite values")
    return x


def _ca(coords, what: str = "coords") -> np.ndarray:
    """CA coordinates from (L, 3) or (L, 4, 3) input; Shape (L, 3) float64, C-contiguous."""
    x = np.asarray(coords, dtype=np.float64)
    if x.ndim == 3 and x.shape[1:] == (4, 3):
        x = x[:, 1]
    if x.ndim != 2 or x.shape[1] != 3:
        raise DiffsciError(f"{what}: expected CA coordinates (L, 3) or a backbone (L, 4, 3), got {x.shape}")
    if x.shape[0] == 0:
        raise DiffsciError(f"{what}: zero-length chain (no residues)")
    if not np.isfinite(x).all():
        raise DiffsciError(f"{what}: coordinates contain NaN or infinite values")
    return np.ascontiguousarray(x)


def _nanmean(x: np.ndarray) -> float:
    return float(np.mean(x)) if x.size else float("nan")


# ----------------------------------------------------------------------------- geometry


def ca_ca_stats(ca: np.ndarray) -> tuple[float, float]:
    """Mean consecutive CA-CA distance and fraction within 3.8 ± 0.3 Å.

    Parameters
    ----------
    ca : np.ndarray
        Shape (L, 3) CA coordinates (or (L, 4, 3) backbone).

    Returns
    -------
    (mean, ok_fraction); both NaN when L < 2.
    """
    x = _ca(ca)
    d = np.linalg.norm(np.diff(x, axis=0), axis=-1)
    if d.size == 0:
        return float("nan"), float("nan")
    return float(d.mean()), float(np.mean(np.abs(d - CA_CA_IDEAL) <= CA_CA_TOL))


def ca_clashes(ca: np.ndarray, threshold: float = CLASH_DISTANCE) -> tuple[int, float]:
    """Non-adjacent CA pairs (``|i - j| >= 2``) closer than ``threshold`` Å.

    Parameters
    ----------
    ca : np.ndarray
        Shape (L, 3) CA coordinates (or (L, 4, 3) backbone).

    Returns
    -------
    (count, fraction of the (L-1)(L-2)/2 non-adjacent pairs); fraction is 0 when L < 3.
    """
    x = _ca(ca)
    n = x.shape[0]
    if n < 3:
        return 0, 0.0
    i, j, d = _close_pairs(x, threshold)
    count = int(np.sum((d < threshold) & (j - i >= 2)))
    return count, count / ((n - 1) * (n - 2) / 2)


def ca_contacts(ca: np.ndarray, cutoff: float = 8.0, min_separation: int = 6) -> float:
    """Mean number per residue of CA atoms within ``cutoff`` Å and ``>= min_separation`` apart in sequence.

    Parameters
    ----------
    ca : np.ndarray
        Shape (L, 3) CA coordinates in Å.
    """
    ca = _ca(ca)
    n = ca.shape[0]
    i, j, d = _close_pairs(ca, cutoff)
    return float(2 * np.sum((d < cutoff) & (j - i >= min_separation)) / n)


def _close_pairs(x: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs i < j of points at most ``radius`` apart, from a k-d tree (memory O(pairs), not O(L^2)).

    Parameters
    ----------
    x : np.ndarray
        Shape (L, 3).

    Returns
    -------
    (i, j, distance), each Shape (P,), i < j.
    """
    from scipy.spatial import cKDTree

    pairs = cKDTree(x).query_pairs(radius, output_type="ndarray")
    if pairs.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0)
    i, j = pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64)
    return i, j, np.linalg.norm(x[i] - x[j], axis=-1)


def chain_breaks(ca: np.ndarray, threshold: float = CA_CA_BREAK) -> tuple[int, float]:
    """Chain breaks measured on the whole chain: consecutive CA-CA distances above ``threshold`` Å.

    Parameters
    ----------
    ca : np.ndarray
        Shape (L, 3) CA coordinates (or (L, 4, 3) backbone), in chain order.

    Returns
    -------
    (count of consecutive CA-CA > threshold, largest consecutive CA-CA in Å (NaN when L < 2)).
    """
    x = _ca(ca)
    d = np.linalg.norm(np.diff(x, axis=0), axis=-1)
    if d.size == 0:
        return 0, float("nan")
    return int(np.sum(d > threshold)), float(d.max())


def radius_of_gyration(ca: np.ndarray) -> float:
    """CA radius of gyration ``sqrt(mean_i |x_i - mean(x)|^2)`` in Å.

    Parameters
    ----------
    ca : np.ndarray
        Shape (L, 3) CA coordinates (or (L, 4, 3) backbone).
    """
    x = _ca(ca)
    return float(np.sqrt(np.mean(np.sum((x - x.mean(axis=0)) ** 2, axis=-1))))


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.linalg.norm(a - b, axis=-1)


def _angles_deg(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Angle a-b-c at b, degrees. Shapes (K, 3)."""
    u, v = a - b, c - b
    cos = np.sum(u * v, axis=-1) / (np.linalg.norm(u, axis=-1) * np.linalg.norm(v, axis=-1))
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def backbone_geometry_deviation(coords: np.ndarray) -> dict[str, float]:
    """Mean absolute deviations of backbone bond lengths and angles from Engh & Huber (1991).

    Parameters
    ----------
    coords : np.ndarray
        Shape (L, 4, 3) backbone N, CA, C, O (Å).

    Returns
    -------
    dict with ``bond_N_CA_mad``, ``bond_CA_C_mad``, ``bond_C_N_mad`` (Å) and
    ``angle_N_CA_C_mad``, ``angle_CA_C_N_mad``, ``angle_C_N_CA_mad`` (degrees). Terms that
    span the peptide bond (C_i-N_i+1, CA_i-C_i-N_i+1, C_i-N_i+1-CA_i+1) are NaN when L < 2.
    """
    x = _backbone(coords)
    n, ca, c = x[:, 0], x[:, 1], x[:, 2]
    out = {
        "bond_N_CA_mad": _nanmean(np.abs(_distances(n, ca) - IDEAL_BONDS["N_CA"])),
        "bond_CA_C_mad": _nanmean(np.abs(_distances(ca, c) - IDEAL_BONDS["CA_C"])),
        "bond_C_N_mad": _nanmean(np.abs(_distances(c[:-1], n[1:]) - IDEAL_BONDS["C_N"])),
        "angle_N_CA_C_mad": _nanmean(np.abs(_angles_deg(n, ca, c) - IDEAL_ANGLES["N_CA_C"])),
        "angle_CA_C_N_mad": _nanmean(np.abs(_angles_deg(ca[:-1], c[:-1], n[1:]) - IDEAL_ANGLES["CA_C_N"])),
        "angle_C_N_CA_mad": _nanmean(np.abs(_angles_deg(c[:-1], n[1:], ca[1:]) - IDEAL_ANGLES["C_N_CA"])),
    }
    return out


def _dihedral_deg(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, p3: np.ndarray) -> np.ndarray:
    """Dihedral p0-p1-p2-p3 in degrees, range (-180, 180]. Shapes (K, 3).

    ``atan2(|b1| b0 . (b1 x b2), (b0 x b1) . (b1 x b2))`` with ``b0 = p1 - p0``,
    ``b1 = p2 - p1``, ``b2 = p3 - p2`` (IUPAC sign convention).
    """
    b0, b1, b2 = p1 - p0, p2 - p1, p3 - p2
    n1, n2 = np.cross(b0, b1), np.cross(b1, b2)
    y = np.linalg.norm(b1, axis=-1) * np.sum(b0 * n2, axis=-1)
    xx = np.sum(n1 * n2, axis=-1)
    return np.degrees(np.arctan2(y, xx))


def backbone_dihedrals(coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Backbone phi and psi of the interior residues 1..L-2.

    ``phi_i = dihedral(C_{i-1}, N_i, CA_i, C_i)``, ``psi_i = dihedral(N_i, CA_i, C_i, N_{i+1})``.

    Parameters
    ----------
    coords : np.ndarray
        Shape (L, 4, 3) backbone N, CA, C, O.

    Returns
    -------
    (phi, psi), each Shape (max(L - 2, 0),) in degrees.
    """
    x = _backbone(coords)
    n, ca, c = x[:, 0], x[:, 1], x[:, 2]
    if x.shape[0] < 3:
        return np.zeros(0), np.zeros(0)
    phi = _dihedral_deg(c[:-2], n[1:-1], ca[1:-1], c[1:-1])
    psi = _dihedral_deg(n[1:-1], ca[1:-1], c[1:-1], n[2:])
    return phi, psi


def ramachandran_fractions(coords: np.ndarray) -> dict[str, float]:
    """Fractions of interior residues in the alpha / beta / left / other regions.

    Regions are defined in the module docstring. All NaN when L < 3.

    Parameters
    ----------
    coords : np.ndarray
        Shape (L, 4, 3) backbone N, CA, C, O.
    """
    phi, psi = backbone_dihedrals(coords)
    if phi.size == 0:
        return {f"rama_{r}": float("nan") for r in RAMA_REGIONS}
    alpha = (phi >= -160) & (phi < -20) & (psi >= -120) & (psi < 50)
    beta = (phi >= -180) & (phi < -40) & ((psi >= 90) | (psi < -150)) & ~alpha
    left = (phi >= 20) & (phi < 120) & (psi >= -60) & (psi < 90)
    other = ~(alpha | beta | left)
    k = phi.size
    return {
        "rama_alpha": float(alpha.sum() / k),
        "rama_beta": float(beta.sum() / k),
        "rama_left": float(left.sum() / k),
        "rama_other": float(other.sum() / k),
    }


# ----------------------------------------------------------------------------- secondary structure


def _ca_atom_array(ca: np.ndarray, res_ids=None, ins_codes=None):
    import biotite.structure as struc

    n = ca.shape[0]
    atoms = struc.AtomArray(n)
    atoms.coord = ca.astype(np.float32)
    atoms.chain_id = np.full(n, "A")
    atoms.res_id = np.arange(1, n + 1) if res_ids is None else np.asarray(res_ids, dtype=np.int64)
    if ins_codes is not None:
        atoms.ins_code = np.asarray(ins_codes, dtype="<U1")
    atoms.res_name = np.full(n, "GLY")
    atoms.atom_name = np.full(n, "CA")
    atoms.element = np.full(n, "C")
    atoms.hetero = np.zeros(n, dtype=bool)
    return atoms


def psea_labels(ca: np.ndarray, res_ids=None, ins_codes=None) -> np.ndarray:
    """P-SEA labels (``'a'``, ``'b'``, ``'c'``) from biotite's ``annotate_sse`` on the whole chain.

    Parameters
    ----------
    ca : np.ndarray
        Shape (L, 3) CA coordinates (or (L, 4, 3) backbone) of one chain, in chain order.
    res_ids, ins_codes
        Shape (L,) author residue numbers and insertion codes (default: 1..L, none). As in
        biotite, a residue number that jumps by more than one marks a discontinuity, so the
        labels equal ``annotate_sse`` on the chain's atoms read from its file.
    """
    import biotite.structure as struc

    x = _ca(ca)
    for name, v in (("res_ids", res_ids), ("ins_codes", ins_codes)):
        if v is not None and len(v) != x.shape[0]:
            raise DiffsciError(f"{name}: {len(v)} entries for {x.shape[0]} residues")
    return np.asarray(struc.annotate_sse(_ca_atom_array(x, res_ids, ins_codes)))


def psea_fractions(ca: np.ndarray, res_ids=None, ins_codes=None) -> dict[str, float]:
    """Helix / strand / coil fractions from P-SEA (``'a'``, ``'b'``, anything else).

    Parameters
    ----------
    ca : np.ndarray
        Shape (L, 3) CA coordinates (or (L, 4, 3) backbone).
    res_ids, ins_codes
        Optional Shape (L,) residue numbering, see :func:`psea_labels`.
    """
    sse = psea_labels(ca, res_ids, ins_codes)
    n = sse.size
    helix = float(np.sum(sse == "a") / n)
    strand = float(np.sum(sse == "b") / n)
    return {"helix": helix, "strand": strand, "coil": 1.0 - helix - strand}


DSSP_CUTOFF = -0.5
"""DSSP hydrogen-bond energy cutoff (kcal/mol): a bond when E < -0.5 (Kabsch & Sander 1983)."""
_DSSP_Q1Q2 = 0.084  # partial charges product (e^2), Kabsch & Sander 1983
_DSSP_F = 332.0  # kcal Å / (mol e^2)
_NH_BOND = 1.01  # Å, N-H placed on the bisector of C(i-1)->N(i) and CA(i)->N(i)
_DSSP_CHUNK = 512  # donors per neighbour search


def _dssp_search_radius(max_co: float) -> float:
    """O-N distance beyond which |E| < 0.5 kcal/mol for any orientation (so no DSSP H-bond).

    With |N-H| = 1.01 Å and |C-O| <= ``max_co``: ``|1/r_ON - 1/r_OH| <= 1.01 / (r_ON (r_ON - 1.01))``
    and ``|1/r_CH - 1/r_CN| <= 1.01 / ((r_ON - c) (r_ON - c - 1.01))``; the radius is where
    ``0.084 * 332 *`` their sum falls below 0.5 (about 12 Å for ``c`` = 1.3 Å).
    """
    c = max(float(max_co), 0.0)
    r = c + _NH_BOND + 0.5
    while _DSSP_Q1Q2 * _DSSP_F * (_NH_BOND / (r * (r - _NH_BOND)) + _NH_BOND / ((r - c) * (r - c - _NH_BOND))) >= 0.49:
        r += 0.25
    return r


def dssp_hbonds(coords: np.ndarray, donor_mask=None) -> tuple[np.ndarray, np.ndarray]:
    """Backbone hydrogen bonds C=O(i) ... H-N(j) with DSSP energy below -0.5 kcal/mol.

    ``E = 0.084 * 332 * (1/r_ON + 1/r_CH - 1/r_OH - 1/r_CN)`` kcal/mol (Kabsch & Sander, Biopolymers
    22, 2577-2637, 1983), H placed 1.01 Å from N(j) on the bisector of C(j-1)->N(j) and CA(j)->N(j)
    (as pydssp does; residue 0 has no H); pairs with j - i in {0, 1, 2} are excluded (as in pydssp).
    Candidate pairs come from a k-d tree search within the radius beyond which no pair can reach the
    cutoff (:func:`_dssp_search_radius`), so memory grows with the number of close pairs, not L^2.

    Parameters
    ----------
    coords : np.ndarray
        Shape (L, 4, 3) backbone N, CA, C, O.
    donor_mask : np.ndarray, optional
        Shape (L,) bool: residues allowed to donate (default all).

    Returns
    -------
    (acceptor i, donor j), each Shape (P,) int64.
    """
    from scipy.spatial import cKDTree

    x = _backbone(coords)
    n_res = x.shape[0]
    empty = np.zeros(0, dtype=np.int64)
    if n_res < 2:
        return empty, empty
    n, ca, c, o = x[:, 0], x[:, 1], x[:, 2], x[:, 3]

    def unit(v):
        return v / np.linalg.norm(v, axis=-1, keepdims=True)

    with np.errstate(invalid="ignore", divide="ignore"):  # degenerate input gives NaN, never a bond
        h = n[1:] + _NH_BOND * unit(unit(n[1:] - c[:-1]) + unit(n[1:] - ca[1:]))  # donors 1..L-1
    acc_c, acc_o = c[:-1], o[:-1]  # acceptors 0..L-2
    radius = _dssp_search_radius(np.linalg.norm(acc_c - acc_o, axis=-1).max())
    acc_tree = cKDTree(acc_o)
    mask = None if donor_mask is None else np.asarray(donor_mask, dtype=bool)
    found_acc, found_don = [], []
    for lo in range(1, n_res, _DSSP_CHUNK):  # donors in chunks: memory bounded by the chunk's close pairs
        hi = min(lo + _DSSP_CHUNK, n_res)
        sdm = cKDTree(n[lo:hi]).sparse_distance_matrix(acc_tree, radius, output_type="ndarray")
        donor = sdm["i"].astype(np.int64) + lo
        acceptor = sdm["j"].astype(np.int64)
        keep = (donor - acceptor < 0) | (donor - acceptor > 2)
        if mask is not None:
            keep &= mask[donor]
        donor, acceptor = donor[keep], acceptor[keep]
        hn, nn, cc, oo = h[donor - 1], n[donor], acc_c[acceptor], acc_o[acceptor]
        with np.errstate(invalid="ignore", divide="ignore"):
            d_on = np.linalg.norm(oo - nn, axis=-1)
            d_ch = np.linalg.norm(cc - hn, axis=-1)
            d_oh = np.linalg.norm(oo - hn, axis=-1)
            d_cn = np.linalg.norm(cc - nn, axis=-1)
            e = _DSSP_Q1Q2 * (1.0 / d_on + 1.0 / d_ch - 1.0 / d_oh - 1.0 / d_cn) * _DSSP_F
        bond = e < DSSP_CUTOFF  # NaN compares False
        found_acc.append(acceptor[bond])
        found_don.append(donor[bond])
    return np.concatenate(found_acc), np.concatenate(found_don)


def _shift(a: np.ndarray, k: int) -> np.ndarray:
    """``out[i] = a[i - k]`` (zero-filled), for k of either sign."""
    out = np.zeros_like(a)
    if k > 0:
        out[k:] = a[:-k]
    elif k < 0:
        out[:k] = a[-k:]
    else:
        out[:] = a
    return out


def dssp_labels(coords: np.ndarray) -> np.ndarray:
    """DSSP three-state labels (``'H'``, ``'E'``, ``'-'``) on the whole chain.

    The simplified DSSP of pydssp (``pydssp.assign(coords, out_type="c3")``), computed from the
    sparse hydrogen bonds of :func:`dssp_hbonds` so a long chain needs O(L) memory, not pydssp's
    dense L x L maps (tested equal to pydssp). With hb(i, j) the bond C=O(i) -> H-N(j):

    * an n-turn at i (n = 3, 4, 5) is hb(i, i + n); a minimal n-helix starts at k when there are
      n-turns at k - 1 and k, and covers k .. k + n - 1; 4-helices take priority: a 3- or
      5-helix start is dropped when k or k + 1 is already in a 4-helix;
    * residues i, j (both in 1..L-2) form a parallel bridge when hb(i-1, j) and hb(j, i+1) (or
      i, j swapped), an antiparallel one when hb(i, j) and hb(j, i), or hb(i-1, j+1) and
      hb(j-1, i+1); a residue in any bridge is ``'E'`` (a ladder of one bridge counts);
    * ``'H'`` wins over ``'E'``; everything else is ``'-'``.

    The donor after a chain break (consecutive CA-CA > 4.2 Å) has no H (its H would be placed
    from a carbonyl it is not bonded to). Chains shorter than 6 residues get all ``'-'``.

    Parameters
    ----------
    coords : np.ndarray
        Shape (L, 4, 3) backbone N, CA, C, O.
    """
    x = _backbone(coords)
    n_res = x.shape[0]
    if n_res < DSSP_MIN_LENGTH:
        return np.full(n_res, "-")
    donor_mask = np.ones(n_res, dtype=bool)
    donor_mask[1:] = np.linalg.norm(np.diff(x[:, 1], axis=0), axis=-1) <= CA_CA_BREAK
    acc, don = dssp_hbonds(x, donor_mask)
    helix_parts = {}
    for k in (3, 4, 5):
        turn = np.zeros(n_res, dtype=bool)
        turn[acc[don - acc == k]] = True
        start = np.zeros(n_res, dtype=bool)
        start[1:] = turn[:-1] & turn[1:]
        helix_parts[k] = start
    h4 = helix_parts[4]
    helix4 = h4 | _shift(h4, 1) | _shift(h4, 2) | _shift(h4, 3)
    helix = helix4.copy()
    for k in (3, 5):
        start = helix_parts[k] & ~_shift(helix4, -1) & ~helix4
        for s in range(k):
            helix |= _shift(start, s)
    bonds = np.sort(acc * n_res + don)

    def has(a, d):
        """Shape (P,) bool: is there a bond C=O(a) -> H-N(d)?"""
        ok = (a >= 0) & (a < n_res) & (d >= 0) & (d < n_res)
        if bonds.size == 0:
            return np.zeros_like(ok)
        k = np.where(ok, a * n_res + d, -1)
        pos = np.minimum(np.searchsorted(bonds, k), bonds.size - 1)
        return ok & (bonds[pos] == k)

    strand = np.zeros(n_res, dtype=bool)
    # each H-bond (a, d) proposes the bridges it can be the first bond of: (residues, partner bond)
    for ri, rj, partner in (
        (acc + 1, don, has(don, acc + 2)),  # parallel: hb(i-1, j) & hb(j, i+1) (and its mirror)
        (acc, don, has(don, acc)),  # antiparallel: hb(i, j) & hb(j, i)
        (acc + 1, don - 1, has(don - 2, acc + 2)),  # antiparallel: hb(i-1, j+1) & hb(j-1, i+1)
    ):
        ok = partner & (ri >= 1) & (ri <= n_res - 2) & (rj >= 1) & (rj <= n_res - 2)
        strand[ri[ok]] = True
        strand[rj[ok]] = True
    return np.where(helix, "H", np.where(strand, "E", "-"))


def dssp_fractions(coords: np.ndarray) -> dict[str, float]:
    """Helix / strand / coil fractions (``H``, ``E``, ``-``) from pydssp's DSSP.

    Parameters
    ----------
    coords : np.ndarray
        Shape (L, 4, 3) backbone N, CA, C, O.
    """
    ss = dssp_labels(coords)
    n = ss.size
    helix = float(np.sum(ss == "H") / n)
    strand = float(np.sum(ss == "E") / n)
    return {"dssp_helix": helix, "dssp_strand": strand, "dssp_coil": 1.0 - helix - strand}


def sample_metrics(coords: np.ndarray, *, res_ids=None, ins_codes=None) -> dict[str, float]:
    """All per-sample metrics of one backbone, measured on the whole chain (no novelty; see
    :func:`evaluate_structures`).

    Parameters
    ----------
    coords : np.ndarray
        Shape (L, 4, 3) backbone N, CA, C, O in Å.
    res_ids, ins_codes
        Optional Shape (L,) author numbering, used by P-SEA (see :func:`psea_labels`).

    Returns
    -------
    dict with ``length`` and the fields listed in the module docstring (NaN where a metric
    is undefined for a chain that short).
    """
    x = _backbone(coords)
    ca = x[:, 1]
    mean, ok = ca_ca_stats(ca)
    count, frac = ca_clashes(ca)
    breaks, largest = chain_breaks(ca)
    out: dict[str, float] = {
        "length": int(x.shape[0]),
        "chain_breaks": breaks,
        "ca_ca_max": largest,
        "ca_ca_mean": mean,
        "ca_ca_ok": ok,
        "clashes": count,
        "clash_fraction": frac,
        "radius_of_gyration": radius_of_gyration(ca),
        "ca_contacts": ca_contacts(ca),
    }
    out.update(psea_fractions(ca, res_ids, ins_codes))
    out.update(dssp_fractions(x))
    out.update(backbone_geometry_deviation(x))
    out.update(ramachandran_fractions(x))
    return out


# ----------------------------------------------------------------------------- TM-score


def _tmtools():
    try:
        import tmtools
    except ImportError as exc:
        raise DiffsciError("TM-score metrics need tmtools: pip install 'tmtools==0.3.0'") from exc
    return tmtools


def tm_score(ca1: np.ndarray, ca2: np.ndarray, seq1: str | None = None, seq2: str | None = None) -> float:
    """TM-score of structure 1 aligned to structure 2, normalised by the length of 1.

    Parameters
    ----------
    ca1, ca2 : np.ndarray
        Shape (L1, 3) and (L2, 3) CA coordinates (or (L, 4, 3) backbones). Chains shorter
        than 3 residues have no TM-score (TM-align refuses them): NaN. Pairs with
        L1 * L2 > :data:`MAX_TM_RESIDUE_PRODUCT` are not aligned: NaN.
    seq1, seq2
        One-letter sequences (poly-glycine when None).
    """
    a, b = _ca(ca1, "ca1"), _ca(ca2, "ca2")
    if a.shape[0] < 3 or b.shape[0] < 3:
        return float("nan")
    if a.shape[0] * b.shape[0] > MAX_TM_RESIDUE_PRODUCT:
        return float("nan")
    res = _tmtools().tm_align(a, b, seq1 or "G" * a.shape[0], seq2 or "G" * b.shape[0])
    return float(res.tm_norm_chain1)


def _progress(iterable, total: int, desc: str, enabled: bool):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False)


def pairwise_tm(
    ca_list: Sequence[np.ndarray],
    seqs: Sequence[str] | None = None,
    *,
    groups: Sequence[Any] | None = None,
    progress: bool = False,
) -> np.ndarray:
    """TM-score matrix between structures.

    Entry (i, j) is ``tmtools.tm_align(ca_i, ca_j, seq_i, seq_j).tm_norm_chain1`` (TM-score
    normalised by the length of i); each ordered pair is aligned separately, so the matrix
    equals direct calls exactly and is only approximately symmetric. The diagonal is 1.

    Parameters
    ----------
    ca_list
        N arrays, each Shape (L_i, 3) CA coordinates (or (L_i, 4, 3) backbones).
    seqs
        N one-letter sequences (poly-glycine when None).
    groups
        N labels (e.g. file names): pairs with the same label are not aligned (NaN), e.g. the
        copies of one symmetric design. Pairs whose length product exceeds
        :data:`MAX_TM_RESIDUE_PRODUCT` are not aligned either (NaN).

    Returns
    -------
    np.ndarray
        Shape (N, N) float64.
    """
    cas = [_ca(c, f"structure {k}") for k, c in enumerate(ca_list)]
    n = len(cas)
    if seqs is not None and len(seqs) != n:
        raise DiffsciError(f"seqs: {len(seqs)} sequences for {n} structures")
    s = list(seqs) if seqs is not None else [None] * n
    if groups is not None and len(groups) != n:
        raise DiffsciError(f"groups: {len(groups)} labels for {n} structures")
    g = list(groups) if groups is not None else list(range(n))
    tm = np.full((n, n), np.nan)
    np.fill_diagonal(tm, 1.0)
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j and g[i] != g[j]]
    for i, j in _progress(pairs, len(pairs), "pairwise TM", progress):
        tm[i, j] = tm_score(cas[i], cas[j], s[i], s[j])
    return tm


def cluster_by_tm(
    tm: np.ndarray, threshold: float, *, link: str = "mean", groups: Sequence[Any] | None = None
) -> np.ndarray:
    """Single-linkage clusters of structures at a TM-score threshold.

    Two structures are *linked* when their symmetrised TM-score is >= ``threshold``;
    clusters are the connected components of that graph (single linkage: A and C share a
    cluster when A-B and B-C are linked even if A-C is not — clusters can *chain*). This is
    the flat cut of single-linkage hierarchical clustering at ``threshold``, the setting in
    which FrameDiff counts MaxCluster clusters at TM 0.5 (Genie2 reports TM 0.6).

    Parameters
    ----------
    tm : np.ndarray
        Shape (N, N) TM-scores as from :func:`pairwise_tm` (NaN entries never link).
    threshold
        TM-score at or above which two structures are linked.
    link
        How the two normalisations are symmetrised: ``"mean"`` (default), ``"min"`` or ``"max"``.
    groups
        N labels (e.g. file names): structures with the same label are always linked (the
        chains of one design share its cluster).

    Returns
    -------
    np.ndarray
        Shape (N,) int64 labels 0..K-1, numbered by first appearance.
    """
    tm = np.asarray(tm, dtype=np.float64)
    if tm.ndim != 2 or tm.shape[0] != tm.shape[1]:
        raise DiffsciError(f"tm: expected a square matrix, got shape {tm.shape}")
    ops: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
        "mean": lambda a, b: (a + b) / 2,
        "min": np.minimum,
        "max": np.maximum,
    }
    if link not in ops:
        raise DiffsciError(f"link must be one of {sorted(ops)}, got {link!r}")
    sym = ops[link](tm, tm.T)
    n = tm.shape[0]
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    g = list(groups) if groups is not None else list(range(n))
    if len(g) != n:
        raise DiffsciError(f"groups: {len(g)} labels for {n} structures")
    for i in range(n):
        for j in range(i + 1, n):
            if sym[i, j] >= threshold or g[i] == g[j]:  # NaN compares False
                ri, rj = find(i), find(j)
                if ri != rj:
                    parent[max(ri, rj)] = min(ri, rj)
    labels = np.empty(n, dtype=np.int64)
    names: dict[int, int] = {}
    for i in range(n):
        labels[i] = names.setdefault(find(i), len(names))
    return labels


def novelty(
    ca_list: Sequence[np.ndarray],
    reference_ca_list: Sequence[np.ndarray],
    *,
    seqs: Sequence[str] | None = None,
    reference_seqs: Sequence[str] | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Highest TM-score of each structure to any reference chain (normalised by the structure).

    Parameters
    ----------
    ca_list
        N arrays Shape (L_i, 3) (or (L_i, 4, 3)).
    reference_ca_list
        M arrays Shape (L_m, 3) (or (L_m, 4, 3)); M >= 1.

    Returns
    -------
    np.ndarray
        Shape (N,) float64 ``max_m TM(sample_i -> reference_m)``.
    """
    cas = [_ca(c, f"structure {k}") for k, c in enumerate(ca_list)]
    refs = [_ca(c, f"reference {k}") for k, c in enumerate(reference_ca_list)]
    if not refs:
        raise DiffsciError("reference: no reference chains to compare with")
    s = list(seqs) if seqs is not None else [None] * len(cas)
    rs = list(reference_seqs) if reference_seqs is not None else [None] * len(refs)
    out = np.full(len(cas), np.nan)
    for i in _progress(range(len(cas)), len(cas), "novelty", progress):
        scores = [tm_score(cas[i], r, s[i], q) for r, q in zip(refs, rs)]
        scores = [v for v in scores if not math.isnan(v)]
        if scores:
            out[i] = max(scores)
    return out


# ----------------------------------------------------------------------------- files


def _structure_suffix(path: pathlib.Path) -> bool:
    from diffsci.protein.structure import STRUCTURE_SUFFIXES

    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return any(name.endswith(s) for s in STRUCTURE_SUFFIXES)


INDEX_FILE_NAMES: tuple[str, ...] = ("samples.csv",)
"""Files a design folder holds beside its structures and that evaluation recognises silently:
``samples.csv`` (written by ``diffsci protein sample``), every ``*.json`` (per-design records,
evaluation reports) and a ``X.csv`` beside an ``X.json`` (the table ``diffsci protein evaluate``
writes next to its report)."""


def _index_file(path: pathlib.Path, names: set[str]) -> bool:
    low = path.name.lower()
    if low in INDEX_FILE_NAMES or low.endswith(".json"):
        return True
    return low.endswith(".csv") and f"{path.name[:-4]}.json" in names


@dataclass(frozen=True)
class EvalSample:
    """One sample to evaluate: one whole chain of one file.

    Attributes
    ----------
    name : str
        ``file`` or ``file:chain`` (see :func:`read_samples`); the ``file`` column of the report.
    file : str or None
        The file name; chains of one file are one design (see :func:`evaluate_structures`).
        None for an in-memory sample (each is its own design).
    chain : str or None
        Author chain id (None for in-memory samples).
    coords : np.ndarray
        Shape (L, 4, 3) N, CA, C, O in Å, every complete residue of the chain in file order.
    res_ids, ins_codes : np.ndarray or None
        Shape (L,) author residue numbers and insertion codes (P-SEA discontinuities).
    """

    name: str
    file: str | None
    chain: str | None
    coords: np.ndarray
    res_ids: np.ndarray | None = None
    ins_codes: np.ndarray | None = None


def read_samples(
    folder: str | os.PathLike,
    *,
    chains: Sequence[str] | None = None,
    on_warning: Callable[[str], None] | None = None,
    on_note: Callable[[str], None] | None = None,
) -> tuple[list[EvalSample], list[str], list[str]]:
    """Read every structure file of a folder (not recursive): one sample per protein chain, never split.

    Each chain is read whole (:func:`diffsci.protein.structure.read_report` with
    ``on_break="keep"``): a gap (consecutive CA-CA > 4.2 Å, or a residue left out for missing
    backbone atoms) is measured by :func:`sample_metrics` (``chain_breaks``, ``ca_ca_max``) and
    described in a note, never cut. A sample is named by its file, with ``:chain`` appended when
    the file gives more than one chain or ``chains`` is given (``design.pdb``, ``complex.cif:B``).

    Parameters
    ----------
    chains
        Author chain ids to read from every file (default: all chains with an amino-acid
        backbone). A file lacking one of them is skipped with a warning.
    on_warning, on_note
        Called with each warning (a file skipped) and each note (something measured or
        ignored inside a file that was read: a non-protein chain, a residue left out, a break).

    Returns
    -------
    (samples, warnings, notes)

    Raises
    ------
    DiffsciError
        When the folder does not exist, holds no file at all, or no readable chain.

    Files that are not structure files, cannot be read or hold non-finite coordinates are
    skipped with one warning each; the folder's index files (:data:`INDEX_FILE_NAMES`) are
    recognised and skipped silently.
    """
    from diffsci.protein.structure import read_report

    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise DiffsciError(f"{folder}: not a folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise DiffsciError(f"{folder}: empty folder, no structure files to evaluate")
    names = {p.name for p in files}
    warns: list[str] = []
    notes: list[str] = []

    def warn(msg: str) -> None:
        warns.append(msg)
        if on_warning is not None:
            on_warning(msg)

    def note(msg: str) -> None:
        notes.append(msg)
        if on_note is not None:
            on_note(msg)

    wanted = list(chains) if chains is not None else None
    samples: list[EvalSample] = []
    n_structure = 0
    for path in files:
        if not _structure_suffix(path):
            if not _index_file(path, names):
                warn(f"{path}: not a structure file (expected .pdb, .ent, .cif, .mmcif, .bcif, optionally .gz); skipped")
            continue
        n_structure += 1
        try:
            got, report = read_report(path, wanted, on_break="keep")
        except DiffsciError as exc:
            warn(f"{exc}; skipped")
            continue
        except Exception as exc:  # a reader crash on a malformed file is still one file's problem
            warn(f"{path}: unreadable ({type(exc).__name__}: {exc}); skipped")
            continue
        for row in report:
            if row.status == "dropped":
                tail = " (not a protein chain)" if row.length == 0 else ""
                note(f"{path.name}: chain {row.chain_id!r} ignored: {row.reason}{tail}")
            elif row.status == "warning" or (row.status == "kept" and row.reason):
                note(f"{path.name}: chain {row.chain_id!r}: {row.reason}")
        multi = len(got) > 1 or wanted is not None
        for ch in got:
            name = f"{path.name}:{ch.chain_id or '_'}" if multi else path.name
            samples.append(
                EvalSample(name, path.name, ch.chain_id, np.asarray(ch.coords, dtype=np.float32),
                           np.asarray(ch.res_ids), np.asarray(ch.ins_codes))
            )
    if not samples:
        raise DiffsciError(f"{folder}: no readable protein chain in {n_structure} structure file(s)")
    return samples, warns, notes


def read_folder(
    folder: str | os.PathLike, *, on_warning: Callable[[str], None] | None = None,
    chains: Sequence[str] | None = None,
) -> tuple[list[tuple[str, np.ndarray]], list[str]]:
    """:func:`read_samples` as ``(name, coords)`` pairs (coords Shape (L, 4, 3) float32), and the warnings."""
    samples, warns, _ = read_samples(folder, chains=chains, on_warning=on_warning)
    return [(x.name, x.coords) for x in samples], warns


def reference_ca_list(reference, *, split: str | None = None) -> tuple[list[np.ndarray], list[str]]:
    """CA arrays and sequences of a reference set.

    Parameters
    ----------
    reference
        A dataset ``.npz`` (:func:`diffsci.protein.dataset.load_dataset`), a folder of
        structure files, a :class:`~diffsci.protein.dataset.BackboneDataset`, or a sequence
        of arrays Shape (L, 3) / (L, 4, 3).
    split
        For datasets: ``"train"``, ``"heldout"`` or None (all chains).

    Returns
    -------
    (ca_list, sequences)
    """
    from diffsci.protein.dataset import BackboneDataset, load_dataset

    if isinstance(reference, (str, os.PathLike)):
        path = pathlib.Path(reference)
        if path.is_dir():
            items, _ = read_folder(path)
            return [c[:, 1] for _, c in items], ["G" * len(c) for _, c in items]
        reference = load_dataset(path)
    if isinstance(reference, BackboneDataset):
        idx = range(len(reference)) if split is None else reference.indices(split)
        chains = [reference.chain(int(i)) for i in idx]
        return [np.asarray(c.coords[:, 1], dtype=np.float64) for c in chains], [c.sequence for c in chains]
    cas = [_ca(c, f"reference {k}") for k, c in enumerate(reference)]
    return cas, ["G" * len(c) for c in cas]


# ----------------------------------------------------------------------------- evaluation


def _finite_mean(values: Sequence[Any]) -> float | None:
    v = [float(x) for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return float(np.mean(v)) if v else None


def _as_sample(item) -> EvalSample:
    if isinstance(item, EvalSample):
        return item
    name, coords = item
    return EvalSample(str(name), None, None, coords)


def evaluate_structures(
    items: Sequence[tuple[str, np.ndarray] | EvalSample],
    reference=None,
    *,
    reference_split: str | None = None,
    thresholds: Sequence[float] = (0.5, 0.6),
    link: str = "mean",
    progress: bool = True,
) -> dict[str, Any]:
    """Score a set of backbones: per-sample metrics, pairwise TM, clusters, novelty.

    Parameters
    ----------
    items
        ``(name, coords)`` pairs (coords Shape (L, 4, 3) N, CA, C, O in Å), or
        :class:`EvalSample` records (from :func:`read_samples`). Each item is scored whole.
    reference
        Anything :func:`reference_ca_list` accepts, or None (no novelty:
        ``max_tm_reference`` is None).
    thresholds
        TM-score thresholds for the cluster counts (summary keys ``clusters_tm0.5`` etc.).
    link
        Symmetrisation for :func:`cluster_by_tm`.
    progress
        Show tqdm progress bars.

    Returns
    -------
    dict with ``per_sample`` (list of dicts: ``file`` (the sample's name), ``source_file``,
    ``chain`` and the metric fields), ``pairwise_tm`` (N x N list of lists), ``cluster_labels``
    (per threshold), ``summary`` and ``notes``.

    Chains of one file (``source_file``) are one design: copies of a symmetric design, or the
    partners of a complex, are not compared with each other (their ``pairwise_tm`` entry is NaN
    and they do not enter ``mean_pairwise_tm``) and always share a cluster, so the cluster
    counts count groups of files and ``cluster_fraction`` is clusters / files. TM-align is not
    run on a pair whose length product exceeds :data:`MAX_TM_RESIDUE_PRODUCT` (its memory grows
    with it): that entry (pairwise or novelty) is NaN, with a note.
    NaN values (metrics undefined for very short chains) are kept as float NaN here;
    :func:`to_jsonable` turns them into None.
    """
    if not items:
        raise DiffsciError("no structures to evaluate")
    samples = [_as_sample(it) for it in items]
    rows: list[dict[str, Any]] = []
    coords_list = []
    for smp in _progress(samples, len(samples), "per-sample metrics", progress):
        x = _backbone(smp.coords, smp.name)
        row: dict[str, Any] = {"file": smp.name, "source_file": smp.file, "chain": smp.chain}
        row.update(sample_metrics(x, res_ids=smp.res_ids, ins_codes=smp.ins_codes))
        rows.append(row)
        coords_list.append(x)
    ca_list = [c[:, 1] for c in coords_list]
    notes: list[str] = []
    if reference is not None:
        ref_ca, ref_seqs = reference_ca_list(reference, split=reference_split)
        nov = novelty(ca_list, ref_ca, reference_seqs=ref_seqs, progress=progress)
        for row, v in zip(rows, nov):
            row["max_tm_reference"] = float(v)
        n_ref = len(ref_ca)
        longest = max(len(r) for r in ref_ca)
        for row, ca in zip(rows, ca_list):
            if len(ca) * longest > MAX_TM_RESIDUE_PRODUCT:
                notes.append(f"{row['file']}: novelty leaves out reference chains with length x {len(ca)} > "
                             f"{MAX_TM_RESIDUE_PRODUCT} (TM-align memory)")
    else:
        for row in rows:
            row["max_tm_reference"] = None
        n_ref = 0
    groups = _groups(smp.file for smp in samples)
    tm = pairwise_tm(ca_list, groups=groups, progress=progress)
    skipped = sum(
        1 for i in range(len(ca_list)) for j in range(len(ca_list))
        if i != j and groups[i] != groups[j] and len(ca_list[i]) * len(ca_list[j]) > MAX_TM_RESIDUE_PRODUCT
    )
    if skipped:
        notes.append(f"pairwise TM: {skipped} ordered pair(s) not aligned (length product > {MAX_TM_RESIDUE_PRODUCT})")
    out = _assemble_evaluation(rows, tm, n_ref, thresholds, link)
    out["notes"] = notes
    return out


def subset_evaluation(result: dict[str, Any], indices: Sequence[int], *, thresholds: Sequence[float] = (0.5, 0.6),
                      link: str = "mean") -> dict[str, Any]:
    """The :func:`evaluate_structures` result of a subset of its structures, without recomputing
    any TM-score: the chosen per-sample rows, the sub-matrix of ``pairwise_tm``, a new summary."""
    idx = [int(i) for i in indices]
    if not idx:
        raise DiffsciError("subset_evaluation: empty subset")
    tm = np.asarray(result["pairwise_tm"], dtype=float)[np.ix_(idx, idx)]
    rows = [dict(result["per_sample"][i]) for i in idx]
    return _assemble_evaluation(rows, tm, result["summary"]["n_reference"], thresholds, link)


def _groups(files) -> list[Any]:
    """Design labels: the file name, or a label of its own for an in-memory sample (file None)."""
    return [("file", f) if f is not None else ("item", k) for k, f in enumerate(files)]


def _assemble_evaluation(rows, tm, n_ref, thresholds, link) -> dict[str, Any]:
    n = len(rows)
    groups = _groups(r.get("source_file") for r in rows)
    n_files = len(set(groups))
    tm = np.asarray(tm, dtype=np.float64)
    off = tm[~np.eye(n, dtype=bool)]
    off = off[np.isfinite(off)]
    broken = sum(1 for r in rows if (r.get("chain_breaks") or 0) > 0)
    summary: dict[str, Any] = {
        "n_samples": n,
        "n_files": n_files,
        "n_reference": n_ref,
        "n_broken": broken,
        "broken_fraction": broken / n,
        "mean_pairwise_tm": float(off.mean()) if off.size else None,
        "cluster_link": link,
    }
    labels_out: dict[str, list[int]] = {}
    for t in thresholds:
        labels = cluster_by_tm(tm, t, link=link, groups=groups)
        k = int(labels.max()) + 1
        summary[f"clusters_tm{t:g}"] = k
        summary[f"cluster_fraction_tm{t:g}"] = k / n_files
        labels_out[f"tm{t:g}"] = labels.tolist()
    summary["mean_novelty"] = _finite_mean([r["max_tm_reference"] for r in rows])
    for key in NUMERIC_FIELDS:
        summary[f"mean_{key}"] = _finite_mean([r.get(key) for r in rows])
    return {"per_sample": rows, "pairwise_tm": tm.tolist(), "cluster_labels": labels_out, "summary": summary}


def evaluate_folder(
    folder: str | os.PathLike,
    reference=None,
    *,
    chains: Sequence[str] | None = None,
    on_warning: Callable[[str], None] | None = None,
    on_note: Callable[[str], None] | None = None,
    **kwargs,
) -> dict[str, Any]:
    """:func:`read_samples` then :func:`evaluate_structures`; the result has ``warnings``
    (files skipped) and ``notes`` (what was measured or ignored inside the files read) too."""
    samples, warns, notes = read_samples(folder, chains=chains, on_warning=on_warning, on_note=on_note)
    result = evaluate_structures(samples, reference, **kwargs)
    for msg in result["notes"]:
        if on_note is not None:
            on_note(msg)
    result["notes"] = notes + result["notes"]
    result["warnings"] = warns
    return result


def to_jsonable(obj: Any) -> Any:
    """Replace NaN/inf floats by None and numpy scalars by Python ones, recursively."""
    if isinstance(obj, dict):
        return {k: to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj

"""Metrics for designed protein backbones: geometry, secondary structure, diversity, novelty.

Dimension letters: L residues, 4 backbone atoms (N, CA, C, O), 3 Cartesian coordinates (Å),
N samples, M reference chains.

Every function takes coordinate arrays, so in-memory samples can be scored without files;
:func:`evaluate_folder` reads a folder of structure files and calls
:func:`evaluate_structures`.

Per-sample metrics (:func:`sample_metrics`)
-------------------------------------------
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
    Fractions of residues labelled ``H``, ``E``, ``-`` by pydssp's DSSP
    (``pydssp.assign(coords, out_type="c3")``, backbone N, CA, C, O; hydrogens placed by
    pydssp). Chains shorter than 6 residues (which pydssp cannot process and which cannot
    hold a DSSP helix or ladder) count as all coil.
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
the diagonal is 1. ``summary``: mean off-diagonal pairwise TM, the number and fraction
(clusters / samples) of single-linkage clusters at TM 0.5 (FrameDiff's MaxCluster setting)
and at TM 0.6 (Genie2's), the mean novelty and the mean of every numeric per-sample field.

TM-align (``tmtools``) aligns on structure only; where no sequence is known poly-glycine
(``'G' * L``) is passed.
"""

from __future__ import annotations

import math
import os
import pathlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from diffsci.core.errors import DiffsciError

__all__ = [
    "IDEAL_BONDS",
    "IDEAL_ANGLES",
    "RAMA_REGIONS",
    "NUMERIC_FIELDS",
    "ca_ca_stats",
    "ca_clashes",
    "radius_of_gyration",
    "psea_labels",
    "psea_fractions",
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
CLASH_DISTANCE = 3.0
DSSP_MIN_LENGTH = 6

NUMERIC_FIELDS: tuple[str, ...] = (
    "length",
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
"""Numeric per-sample fields, in the order of the CSV columns (after ``file``)."""


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
    i, j = np.triu_indices(n, k=2)
    if i.size == 0:
        return 0, 0.0
    d = np.linalg.norm(x[i] - x[j], axis=-1)
    count = int(np.sum(d < threshold))
    return count, count / i.size


def ca_contacts(ca: np.ndarray, cutoff: float = 8.0, min_separation: int = 6) -> float:
    """Mean number per residue of CA atoms within ``cutoff`` Å and ``>= min_separation`` apart in sequence.

    Parameters
    ----------
    ca : np.ndarray
        Shape (L, 3) CA coordinates in Å.
    """
    ca = _ca(ca)
    n = ca.shape[0]
    d = np.linalg.norm(ca[:, None] - ca[None], axis=-1)
    sep = np.abs(np.arange(n)[:, None] - np.arange(n)[None])
    return float(((d < cutoff) & (sep >= min_separation)).sum() / n)


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


def _ca_atom_array(ca: np.ndarray):
    import biotite.structure as struc

    n = ca.shape[0]
    atoms = struc.AtomArray(n)
    atoms.coord = ca.astype(np.float32)
    atoms.chain_id = np.full(n, "A")
    atoms.res_id = np.arange(1, n + 1)
    atoms.res_name = np.full(n, "GLY")
    atoms.atom_name = np.full(n, "CA")
    atoms.element = np.full(n, "C")
    atoms.hetero = np.zeros(n, dtype=bool)
    return atoms


def psea_labels(ca: np.ndarray) -> np.ndarray:
    """P-SEA labels (``'a'``, ``'b'``, ``'c'``) from biotite's ``annotate_sse``.

    Parameters
    ----------
    ca : np.ndarray
        Shape (L, 3) CA coordinates (or (L, 4, 3) backbone); residues numbered 1..L, one chain.
    """
    import biotite.structure as struc

    return np.asarray(struc.annotate_sse(_ca_atom_array(_ca(ca))))


def psea_fractions(ca: np.ndarray) -> dict[str, float]:
    """Helix / strand / coil fractions from P-SEA (``'a'``, ``'b'``, anything else).

    Parameters
    ----------
    ca : np.ndarray
        Shape (L, 3) CA coordinates (or (L, 4, 3) backbone).
    """
    sse = psea_labels(ca)
    n = sse.size
    helix = float(np.sum(sse == "a") / n)
    strand = float(np.sum(sse == "b") / n)
    return {"helix": helix, "strand": strand, "coil": 1.0 - helix - strand}


def dssp_labels(coords: np.ndarray) -> np.ndarray:
    """DSSP three-state labels (``'H'``, ``'E'``, ``'-'``) from pydssp.

    Parameters
    ----------
    coords : np.ndarray
        Shape (L, 4, 3) backbone N, CA, C, O. Chains shorter than 6 residues get all ``'-'``.
    """
    x = _backbone(coords)
    if x.shape[0] < DSSP_MIN_LENGTH:
        return np.full(x.shape[0], "-")
    try:
        import pydssp
    except ImportError as exc:  # pragma: no cover - pydssp is in the dev/eval extras
        raise DiffsciError("DSSP metrics need pydssp: pip install 'pydssp==0.9.1' einops") from exc
    return np.asarray(pydssp.assign(x, out_type="c3"))


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


def sample_metrics(coords: np.ndarray) -> dict[str, float]:
    """All per-sample metrics of one backbone (no novelty; see :func:`evaluate_structures`).

    Parameters
    ----------
    coords : np.ndarray
        Shape (L, 4, 3) backbone N, CA, C, O in Å.

    Returns
    -------
    dict with ``length`` and the fields listed in the module docstring (NaN where a metric
    is undefined for a chain that short).
    """
    x = _backbone(coords)
    ca = x[:, 1]
    mean, ok = ca_ca_stats(ca)
    count, frac = ca_clashes(ca)
    out: dict[str, float] = {
        "length": int(x.shape[0]),
        "ca_ca_mean": mean,
        "ca_ca_ok": ok,
        "clashes": count,
        "clash_fraction": frac,
        "radius_of_gyration": radius_of_gyration(ca),
        "ca_contacts": ca_contacts(ca),
    }
    out.update(psea_fractions(ca))
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
        than 3 residues have no TM-score (TM-align refuses them): NaN.
    seq1, seq2
        One-letter sequences (poly-glycine when None).
    """
    a, b = _ca(ca1, "ca1"), _ca(ca2, "ca2")
    if a.shape[0] < 3 or b.shape[0] < 3:
        return float("nan")
    res = _tmtools().tm_align(a, b, seq1 or "G" * a.shape[0], seq2 or "G" * b.shape[0])
    return float(res.tm_norm_chain1)


def _progress(iterable, total: int, desc: str, enabled: bool):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False)


def pairwise_tm(
    ca_list: Sequence[np.ndarray], seqs: Sequence[str] | None = None, *, progress: bool = False
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
    tm = np.eye(n, dtype=np.float64)
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
    for i, j in _progress(pairs, len(pairs), "pairwise TM", progress):
        tm[i, j] = tm_score(cas[i], cas[j], s[i], s[j])
    return tm


def cluster_by_tm(tm: np.ndarray, threshold: float, *, link: str = "mean") -> np.ndarray:
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

    for i in range(n):
        for j in range(i + 1, n):
            if sym[i, j] >= threshold:  # NaN compares False
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


def read_folder(
    folder: str | os.PathLike, *, on_warning: Callable[[str], None] | None = None
) -> tuple[list[tuple[str, np.ndarray]], list[str]]:
    """Read every structure file in a folder (not recursive) as samples.

    Each protein chain (or chain piece) becomes one sample named after its file (with
    ``:chain`` appended when a file holds more than one). Files that are not structure
    files, or that cannot be read, are reported as warnings and skipped.

    Returns
    -------
    (items, warnings): items are ``(name, coords)`` with coords Shape (L, 4, 3) float32.

    Raises
    ------
    DiffsciError
        When the folder does not exist, holds no file at all, or no readable chain.
    """
    from diffsci.protein.structure import read_structure_chains

    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise DiffsciError(f"{folder}: not a folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise DiffsciError(f"{folder}: empty folder, no structure files to evaluate")
    warns: list[str] = []

    def warn(msg: str) -> None:
        warns.append(msg)
        if on_warning is not None:
            on_warning(msg)

    items: list[tuple[str, np.ndarray]] = []
    for path in files:
        if not _structure_suffix(path):
            warn(f"{path}: not a structure file (expected .pdb, .ent, .cif, .mmcif, .bcif, optionally .gz); skipped")
            continue
        try:
            chains = read_structure_chains(path)
        except DiffsciError as exc:
            warn(f"{exc}; skipped")
            continue
        except Exception as exc:  # a reader crash on a malformed file is still one file's problem
            warn(f"{path}: unreadable ({type(exc).__name__}: {exc}); skipped")
            continue
        for ch in chains:
            if ch.coords.shape[0] == 0:
                warn(f"{path}: chain {ch.chain_id!r} has zero length; skipped")
                continue
            name = path.name if len(chains) == 1 else f"{path.name}:{ch.chain_id or '_'}{_piece(ch.source)}"
            items.append((name, np.asarray(ch.coords, dtype=np.float32)))
    if not items:
        raise DiffsciError(f"{folder}: no readable protein chain in {len(files)} file(s)")
    return items, warns


def _piece(source: str) -> str:
    marker = " piece "
    return f"#{source.split(marker, 1)[1].split('/', 1)[0]}" if marker in source else ""


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


def evaluate_structures(
    items: Sequence[tuple[str, np.ndarray]],
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
        ``(name, coords)`` pairs, coords Shape (L, 4, 3) N, CA, C, O in Å.
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
    dict with ``per_sample`` (list of dicts: ``file`` plus the metric fields),
    ``pairwise_tm`` (N x N list of lists), ``cluster_labels`` (per threshold) and ``summary``.
    NaN values (metrics undefined for very short chains) are kept as float NaN here;
    :func:`to_jsonable` turns them into None.
    """
    if not items:
        raise DiffsciError("no structures to evaluate")
    rows: list[dict[str, Any]] = []
    coords_list = []
    for name, coords in _progress(items, len(items), "per-sample metrics", progress):
        x = _backbone(coords, str(name))
        row: dict[str, Any] = {"file": str(name)}
        row.update(sample_metrics(x))
        rows.append(row)
        coords_list.append(x)
    ca_list = [c[:, 1] for c in coords_list]
    if reference is not None:
        ref_ca, ref_seqs = reference_ca_list(reference, split=reference_split)
        nov = novelty(ca_list, ref_ca, reference_seqs=ref_seqs, progress=progress)
        for row, v in zip(rows, nov):
            row["max_tm_reference"] = float(v)
        n_ref = len(ref_ca)
    else:
        for row in rows:
            row["max_tm_reference"] = None
        n_ref = 0
    tm = pairwise_tm(ca_list, progress=progress)
    return _assemble_evaluation(rows, tm, n_ref, thresholds, link)


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


def _assemble_evaluation(rows, tm, n_ref, thresholds, link) -> dict[str, Any]:
    n = len(rows)
    off = tm[~np.eye(n, dtype=bool)]
    off = off[np.isfinite(off)]
    summary: dict[str, Any] = {
        "n_samples": n,
        "n_reference": n_ref,
        "mean_pairwise_tm": float(off.mean()) if off.size else None,
        "cluster_link": link,
    }
    labels_out: dict[str, list[int]] = {}
    for t in thresholds:
        labels = cluster_by_tm(tm, t, link=link)
        k = int(labels.max()) + 1
        summary[f"clusters_tm{t:g}"] = k
        summary[f"cluster_fraction_tm{t:g}"] = k / n
        labels_out[f"tm{t:g}"] = labels.tolist()
    summary["mean_novelty"] = _finite_mean([r["max_tm_reference"] for r in rows])
    for key in NUMERIC_FIELDS:
        summary[f"mean_{key}"] = _finite_mean([r.get(key) for r in rows])
    return {"per_sample": rows, "pairwise_tm": tm.tolist(), "cluster_labels": labels_out, "summary": summary}


def evaluate_folder(
    folder: str | os.PathLike,
    reference=None,
    *,
    on_warning: Callable[[str], None] | None = None,
    **kwargs,
) -> dict[str, Any]:
    """:func:`read_folder` then :func:`evaluate_structures`; the result has ``warnings`` too."""
    items, warns = read_folder(folder, on_warning=on_warning)
    result = evaluate_structures(items, reference, **kwargs)
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

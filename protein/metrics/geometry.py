"""Backbone geometry: CA-CA spacing, clashes, contacts, chain breaks, radius of gyration, bond
lengths and angles, dihedrals and Ramachandran regions.

Dimension letters: L residues, 4 backbone atoms (N, CA, C, O), 3 Cartesian coordinates (Å).
Definitions of the per-sample fields: :mod:`diffsci.protein.metrics`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from diffsci.core.errors import DiffsciError

__all__ = [
    "INTERCHAIN_CLASH",
    "INTERFACE_DISTANCE",
    "between_chains",
    "HOTSPOT_CONTACT",
    "hotspot_contacts",
    "IDEAL_BONDS",
    "IDEAL_ANGLES",
    "RAMA_REGIONS",
    "CA_CA_IDEAL",
    "CA_CA_TOL",
    "CA_CA_BREAK",
    "CLASH_DISTANCE",
    "RG_PREFACTOR",
    "RG_EXPONENT",
    "expected_radius_of_gyration",
    "ca_ca_distances",
    "ca_ca_stats",
    "ca_clashes",
    "ca_contacts",
    "chain_breaks",
    "radius_of_gyration",
    "backbone_geometry_deviation",
    "backbone_dihedrals",
    "ramachandran_fractions",
]

IDEAL_BONDS: dict[str, float] = {"N_CA": 1.458, "CA_C": 1.525, "C_N": 1.329}
"""Engh & Huber (1991) backbone bond lengths (Å)."""
IDEAL_ANGLES: dict[str, float] = {"N_CA_C": 111.2, "CA_C_N": 116.2, "C_N_CA": 121.7}
"""Engh & Huber (1991) backbone bond angles (degrees)."""

RAMA_REGIONS: tuple[str, ...] = ("alpha", "beta", "left", "other")

CA_CA_IDEAL = 3.8
"""Consecutive CA-CA distance of a trans peptide (Å)."""
CA_CA_TOL = 0.3
"""``ca_ca_ok`` counts consecutive CA-CA distances within ``CA_CA_IDEAL ± CA_CA_TOL`` Å."""
CA_CA_BREAK = 4.2  # the same threshold as diffsci.protein.io.structure.CA_CA_BREAK
CLASH_DISTANCE = 3.0
RG_PREFACTOR = 2.2
RG_EXPONENT = 0.38
"""The radius of gyration of a compact globular chain of L residues: ``2.2 L^0.38`` Å (Skolnick,
Kolinski & Ortiz, J. Mol. Biol. 265, 217-241, 1997), the law of the training filter
``max_rg_ratio`` and of the acceptance figure ``rg_ok``."""


def expected_radius_of_gyration(length):
    """``RG_PREFACTOR * length ** RG_EXPONENT`` = 2.2 L^0.38 Å, the CA radius of gyration of a
    compact globular chain of ``length`` residues (an int, float or array, elementwise)."""
    return RG_PREFACTOR * length**RG_EXPONENT


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


def ca_ca_distances(ca: np.ndarray) -> np.ndarray:
    """Consecutive CA-CA distances ``|x_{i+1} - x_i|`` in Å.

    Parameters
    ----------
    ca : np.ndarray
        Shape (L, 3) CA coordinates (or (L, 4, 3) backbone), in chain order.

    Returns
    -------
    np.ndarray
        Shape (max(L - 1, 0),) float64.
    """
    return np.linalg.norm(np.diff(_ca(ca), axis=0), axis=-1)


def ca_ca_stats(ca: np.ndarray) -> tuple[float, float]:
    """Mean consecutive CA-CA distance and fraction within 3.8 ± 0.3 Å of ``ca``, shape (L, 3)
    CA coordinates (or (L, 4, 3) backbone), in Å. Returns (mean, ok_fraction); both NaN when L < 2.
    """
    d = ca_ca_distances(ca)
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
    (count, fraction of the (L-1)(L-2)/2 non-adjacent pairs); when L < 3 there is no such pair:
    the count is 0 and the fraction NaN (undefined; null in a JSON report).
    """
    x = _ca(ca)
    n = x.shape[0]
    if n < 3:
        return 0, float("nan")
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
    pairs = cKDTree(x).query_pairs(radius, output_type="ndarray")
    if pairs.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0)
    i, j = pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64)
    return i, j, np.linalg.norm(x[i] - x[j], axis=-1)


INTERCHAIN_CLASH = 3.0
"""Å: two CA of different chains closer than this overlap (real complexes keep them >= ~4 Å)."""
INTERFACE_DISTANCE = 10.0
"""Å: a residue is at the interface when its CA lies within this of another chain's CA."""


def between_chains(ca: np.ndarray, others: Sequence[np.ndarray], *, clash: float = INTERCHAIN_CLASH,
                   interface: float = INTERFACE_DISTANCE) -> dict[str, float]:
    """How one chain meets the other chains of its design (a binder and its target, the copies
    of an oligomer).

    Parameters
    ----------
    ca : np.ndarray
        Shape (L, 3) this chain's CA (Å).
    others : sequence of np.ndarray
        The other chains' CA, each Shape (L_k, 3).

    Returns
    -------
    ``interchain_clashes``: pairs (a CA of this chain, a CA of another chain) closer than
    ``clash`` Å; ``interchain_min_ca``: the smallest such CA-CA distance (Å); ``interface_residues``:
    residues of this chain with a CA within ``interface`` Å of another chain's CA. All NaN when
    there is no other chain. Memory O(L) (k-d tree).
    """
    ca = _ca(ca)
    rest = [_ca(o, "others") for o in others if len(o)]
    if not rest or not len(ca):
        return {"interchain_clashes": float("nan"), "interchain_min_ca": float("nan"),
                "interface_residues": float("nan")}
    tree = cKDTree(np.concatenate(rest))
    nearest, _ = tree.query(ca)
    return {"interchain_clashes": int(sum(len(h) for h in tree.query_ball_point(ca, clash - 1e-9))),
            "interchain_min_ca": float(nearest.min()),
            "interface_residues": int((nearest <= interface).sum())}


HOTSPOT_CONTACT = 8.0
"""Å: RFdiffusion's hotspot contact (``ppi.hotspot_res``): a hotspot residue of the target is in
contact when a CA of another chain (the binder) lies within this of its CA. The same distance as
the sampler's hotspots potential (``CONTACT_RADIUS`` of :mod:`diffsci.protein.design.potentials`)."""


def hotspot_contacts(ca: np.ndarray, hotspots: Sequence[int], others: Sequence[np.ndarray], *,
                     contact: float = HOTSPOT_CONTACT) -> dict[str, Any]:
    """How close the other chains of a design come to the hotspot residues of one chain.

    Parameters
    ----------
    ca : np.ndarray
        Shape (L, 3) this chain's CA (Å).
    hotspots : sequence of int
        Indices into ``ca`` of the hotspot residues, in the order they are reported.
    others : sequence of np.ndarray
        The other chains' CA, each Shape (L_k, 3).

    Returns
    -------
    ``hotspot_nearest_ca``: for each hotspot, ``min_k |ca[h] - others_k|`` (Å; NaN when there is no
    other chain), a list; ``hotspots_in_contact``: how many of them are <= ``contact`` Å.
    """
    ca = _ca(ca)
    rest = [_ca(o, "others") for o in others if len(o)]
    idx = np.asarray(list(hotspots), dtype=np.int64)
    if not rest:
        nearest = np.full(len(idx), np.nan)
    else:
        nearest, _ = cKDTree(np.concatenate(rest)).query(ca[idx].reshape(-1, 3))
    return {"hotspot_nearest_ca": [float(d) for d in nearest],
            "hotspots_in_contact": int((np.asarray(nearest) <= contact).sum())}


def chain_breaks(ca: np.ndarray, threshold: float = CA_CA_BREAK) -> tuple[int, float]:
    """Chain breaks measured on the whole chain: consecutive CA-CA distances above ``threshold`` Å.

    ``ca``: shape (L, 3) CA coordinates (or (L, 4, 3) backbone), in chain order. Returns the
    count of consecutive CA-CA > threshold and the largest consecutive CA-CA in Å (NaN when L < 2).
    """
    d = ca_ca_distances(ca)
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

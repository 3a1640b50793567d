"""Secondary structure of backbones: P-SEA (CA only, biotite), the simplified three-state
DSSP of pydssp (N, CA, C, O), computed from sparse hydrogen bonds in O(L) memory, and the
agreement of DSSP labels with a requested secondary structure.

Dimension letters: L residues, 4 backbone atoms (N, CA, C, O), 3 Cartesian coordinates (Å),
P hydrogen bonds.
"""

from __future__ import annotations

import biotite.structure as struc
import numpy as np
from scipy.spatial import cKDTree

from diffsci.core.errors import DiffsciError
from diffsci.protein.metrics.geometry import CA_CA_BREAK, _backbone, _ca

__all__ = [
    "DSSP_CUTOFF",
    "DSSP_MIN_LENGTH",
    "psea_labels",
    "psea_fractions",
    "psea_label_fractions",
    "dssp_hbonds",
    "chain_hbonds",
    "dssp_labels",
    "dssp_fractions",
    "dssp_label_fractions",
    "ss_agreement",
]

DSSP_MIN_LENGTH = 6
"""Chains shorter than this (which pydssp cannot process) are all coil."""

def _ca_atom_array(ca: np.ndarray, res_ids=None, ins_codes=None):
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
    return psea_label_fractions(psea_labels(ca, res_ids, ins_codes))


def psea_label_fractions(sse: np.ndarray) -> dict[str, float]:
    """:func:`psea_fractions` of given P-SEA labels, Shape (L,)."""
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


def chain_hbonds(coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`dssp_hbonds` of a backbone (Shape (L, 4, 3) N, CA, C, O, Å) as :func:`dssp_labels`
    counts them: no donor right after a chain break (consecutive CA-CA > 4.2 Å: its H would be
    placed from a carbonyl it is not bonded to). Returns (acceptor i, donor j), each Shape (P,)."""
    x = _backbone(coords)
    donor_mask = np.ones(x.shape[0], dtype=bool)
    donor_mask[1:] = np.linalg.norm(np.diff(x[:, 1], axis=0), axis=-1) <= CA_CA_BREAK
    return dssp_hbonds(x, donor_mask)


def _bridges(acc: np.ndarray, don: np.ndarray, n_res: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The bridges (i, j) of pydssp's DSSP, from hydrogen bonds hb(a, d) = C=O(a) -> H-N(d).

    Parallel: hb(i-1, j) and hb(j, i+1); antiparallel: hb(i, j) and hb(j, i), or hb(i-1, j+1) and
    hb(j-1, i+1) (Kabsch & Sander 1983). Each bond proposes the bridges it can be the first bond of,
    so a bridge may be listed twice and in either order (i > j too); i and j are in 1..L-2, and no
    minimum separation |i - j| is imposed (as in pydssp).

    Parameters
    ----------
    acc, don : np.ndarray
        Shape (P,) acceptor and donor residue indices of the bonds (:func:`dssp_hbonds`).
    n_res : int
        Chain length L.

    Returns
    -------
    (i, j, parallel), each Shape (Q,): residue indices (int64) and the bridge type (bool).
    """
    bonds = np.sort(acc * n_res + don)

    def has(a, d):
        """Shape (P,) bool: is there a bond C=O(a) -> H-N(d)?"""
        ok = (a >= 0) & (a < n_res) & (d >= 0) & (d < n_res)
        if bonds.size == 0:
            return np.zeros_like(ok)
        k = np.where(ok, a * n_res + d, -1)
        pos = np.minimum(np.searchsorted(bonds, k), bonds.size - 1)
        return ok & (bonds[pos] == k)

    out_i, out_j, out_p = [], [], []
    for ri, rj, partner, parallel in (
        (acc + 1, don, has(don, acc + 2), True),  # hb(i-1, j) & hb(j, i+1)
        (acc, don, has(don, acc), False),  # hb(i, j) & hb(j, i)
        (acc + 1, don - 1, has(don - 2, acc + 2), False),  # hb(i-1, j+1) & hb(j-1, i+1)
    ):
        ok = partner & (ri >= 1) & (ri <= n_res - 2) & (rj >= 1) & (rj <= n_res - 2)
        out_i.append(ri[ok])
        out_j.append(rj[ok])
        out_p.append(np.full(int(ok.sum()), parallel))
    return np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_p)


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
    acc, don = chain_hbonds(x)
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
    strand = np.zeros(n_res, dtype=bool)
    ri, rj, _ = _bridges(acc, don, n_res)
    strand[ri] = True
    strand[rj] = True
    return np.where(helix, "H", np.where(strand, "E", "-"))


def dssp_fractions(coords: np.ndarray) -> dict[str, float]:
    """Helix / strand / coil fractions (``H``, ``E``, ``-``) from pydssp's DSSP.

    Parameters
    ----------
    coords : np.ndarray
        Shape (L, 4, 3) backbone N, CA, C, O.
    """
    return dssp_label_fractions(dssp_labels(coords))


def dssp_label_fractions(ss: np.ndarray) -> dict[str, float]:
    """:func:`dssp_fractions` of given DSSP labels, Shape (L,)."""
    n = ss.size
    helix = float(np.sum(ss == "H") / n)
    strand = float(np.sum(ss == "E") / n)
    return {"dssp_helix": helix, "dssp_strand": strand, "dssp_coil": 1.0 - helix - strand}


def ss_agreement(labels, request: str) -> dict[str, float]:
    """Agreement of DSSP three-state labels with a requested secondary structure.

    DSSP ``'-'`` counts as loop ``L``. Residues whose request is not ``H``, ``E`` or ``L``
    (case-insensitive; e.g. ``'-'`` or ``'X'``: no request) are left out.

    Parameters
    ----------
    labels
        Shape (L,) DSSP labels ``'H'``, ``'E'``, ``'-'`` (:func:`dssp_labels`), an array or a string.
    request : str
        One letter per residue, length L.

    Returns
    -------
    dict with ``ss_agreement`` (fraction of requested residues whose label equals the request)
    and ``ss_agreement_H``, ``ss_agreement_E``, ``ss_agreement_L`` (the same over the residues
    requested as that class, e.g. the DSSP helix fraction of the requested helix residues); NaN
    where no residue is requested (as that class).
    """
    got = np.array(list(labels) if isinstance(labels, str) else labels, dtype="<U1")
    want = np.array(list(str(request).upper()), dtype="<U1")
    if want.shape != got.shape:
        raise DiffsciError(f"request: {want.size} letters for {got.size} residues")
    got = np.where(got == "-", "L", got)
    out = {}
    for key, classes in (("ss_agreement", "HEL"), ("ss_agreement_H", "H"), ("ss_agreement_E", "E"), ("ss_agreement_L", "L")):
        sel = np.isin(want, list(classes))
        out[key] = float(np.mean(got[sel] == want[sel])) if sel.any() else float("nan")
    return out

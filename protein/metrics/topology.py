"""Beta-sheet topology (bridges, ladders, strands, sheets) from backbone hydrogen bonds, and
contact order.

Dimension letters: L residues, 4 backbone atoms (N, CA, C, O), 3 Cartesian coordinates (Å),
B bridges.

The hydrogen bonds are those of pydssp's DSSP (:func:`~diffsci.protein.metrics.dssp_hbonds`,
energy below -0.5 kcal/mol, no donor right after a chain break), so a residue of a bridge here is
a residue that :func:`~diffsci.protein.metrics.dssp_labels` calls ``'E'`` (unless it is in a
helix). The sheet rules are those of DSSP (W. Kabsch and C. Sander, "Dictionary of protein
secondary structure", Biopolymers 22, 2577-2637, 1983; bulges as in mkdssp):

* **bridge** (i, j), i < j, j - i >= 3: parallel when hb(i-1, j) and hb(j, i+1), or hb(j-1, i)
  and hb(i, j+1); antiparallel when hb(i, j) and hb(j, i), or hb(i-1, j+1) and hb(j-1, i+1),
  with hb(a, d) the bond C=O(a) -> H-N(d);
* **ladder**: consecutive bridges of one type, (i, j), (i+1, j+1) parallel or (i, j), (i+1, j-1)
  antiparallel; two ladders of one type are joined across a **bulge** when the gap between them
  is at most 1 extra residue on one strand and at most 4 on the other (mkdssp: with gaps
  ``g_i`` and ``g_j`` between the ends of the two ladders on the N- and C-terminal strands,
  ``1 <= g_i < 6``, ``g_j >= 0`` and (``g_i < 3`` and ``g_j < 6``, or ``g_j < 3``)), the residues
  of the gap belonging to the ladder;
* a ladder of one bridge (DSSP's ``B``, an isolated bridge) is not a strand: **strands** are the
  maximal runs of consecutive residues covered by the two sides (residue ranges) of the ladders
  of two or more bridges;
* **sheet**: a connected component of strands, two strands being linked by a ladder between them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from diffsci.core.errors import DiffsciError
from diffsci.protein.metrics.geometry import _backbone, _ca, _close_pairs
from diffsci.protein.metrics.secondary import DSSP_MIN_LENGTH, _bridges, chain_hbonds, dssp_labels, psea_labels

__all__ = [
    "MIN_BRIDGE_SEPARATION",
    "TOPOLOGY_FIELDS",
    "Ladder",
    "SheetTopology",
    "dssp_bridges",
    "sheet_topology",
    "pairing_metrics",
    "contact_order",
]

MIN_BRIDGE_SEPARATION = 3
"""A bridge (i, j) needs j - i >= 3 (DSSP; pydssp's ``'E'`` has no such bound)."""

TOPOLOGY_FIELDS: tuple[str, ...] = (
    "sheets",
    "strands",
    "ladders_parallel",
    "ladders_antiparallel",
    "paired_fraction",
    "psea_strand_paired",
    "contact_order",
    "absolute_contact_order",
)
"""Per-sample fields of :func:`pairing_metrics` and :func:`contact_order`, in column order."""


@dataclass(frozen=True)
class Ladder:
    """One ladder: ``first`` and ``second`` are its two sides as inclusive residue ranges
    (``first`` the N-terminal one), ``bridges`` the number of bridges in it."""

    first: tuple[int, int]
    second: tuple[int, int]
    parallel: bool
    bridges: int


@dataclass(frozen=True)
class SheetTopology:
    """The sheets of one chain.

    ``bridges``: Shape (B, 3) int64 rows (i, j, parallel), i < j, sorted; ``ladders``: every
    ladder, isolated bridges included; ``strands``: inclusive residue ranges of the strands, in
    chain order; ``sheet_of_strand``: the sheet number (0, 1, ...) of each strand.
    """

    length: int
    bridges: np.ndarray
    ladders: tuple[Ladder, ...]
    strands: tuple[tuple[int, int], ...]
    sheet_of_strand: tuple[int, ...]

    @property
    def n_sheets(self) -> int:
        return len(set(self.sheet_of_strand))

    def strand_mask(self) -> np.ndarray:
        """Shape (L,) bool: residues on a strand."""
        mask = np.zeros(self.length, dtype=bool)
        for a, b in self.strands:
            mask[a : b + 1] = True
        return mask


def dssp_bridges(coords: np.ndarray) -> np.ndarray:
    """DSSP bridges of a backbone (the rules in the module docstring).

    Parameters
    ----------
    coords : np.ndarray
        Shape (L, 4, 3) backbone N, CA, C, O in Å.

    Returns
    -------
    np.ndarray
        Shape (B, 3) int64 rows (i, j, parallel), i < j, j - i >= 3, unique, sorted.
    """
    x = _backbone(coords)
    n_res = x.shape[0]
    if n_res < DSSP_MIN_LENGTH:
        return np.zeros((0, 3), dtype=np.int64)
    acc, don = chain_hbonds(x)
    ri, rj, parallel = _bridges(acc, don, n_res)
    rows = np.stack([np.minimum(ri, rj), np.maximum(ri, rj), parallel.astype(np.int64)], axis=1)
    rows = rows[rows[:, 1] - rows[:, 0] >= MIN_BRIDGE_SEPARATION]
    return np.unique(rows, axis=0).reshape(-1, 3)


def _ladders(bridges: np.ndarray) -> list[list]:
    """Ladders as ``[i_lo, i_hi, j_lo, j_hi, parallel, n_bridges]``: consecutive bridges, then
    bulge-linked ladders joined (mkdssp's rule, ladders taken in order of their first residue)."""
    ladders: list[list] = []
    open_end: dict[tuple[int, int, int], int] = {}  # (parallel, next i, next j) -> ladder index
    for i, j, par in bridges.tolist():
        k = open_end.pop((par, i, j), None)
        if k is None:
            ladders.append([i, i, j, j, bool(par), 1])
            k = len(ladders) - 1
        else:
            lad = ladders[k]
            lad[1] = i
            lad[2], lad[3] = min(lad[2], j), max(lad[3], j)
            lad[5] += 1
        open_end[(par, i + 1, j + 1 if par else j - 1)] = k
    merged = True
    while merged:
        merged = False
        ladders.sort(key=lambda lad: (lad[0], lad[2]))
        for a in range(len(ladders)):
            for b in range(a + 1, len(ladders)):
                ia_lo, ia_hi, ja_lo, ja_hi, par, _ = ladders[a]
                ib_lo, ib_hi, jb_lo, jb_hi, par_b, _ = ladders[b]
                if par != par_b or ib_lo - ia_hi >= 6 or (ia_hi >= ib_lo and ia_lo <= ib_hi):
                    continue
                gap_i = ib_lo - ia_hi
                gap_j = jb_lo - ja_hi if par else ja_lo - jb_hi
                if gap_j >= 0 and ((gap_j < 6 and gap_i < 3) or gap_j < 3):
                    ladders[a] = [ia_lo, max(ia_hi, ib_hi), min(ja_lo, jb_lo), max(ja_hi, jb_hi), par,
                                  ladders[a][5] + ladders[b][5]]
                    del ladders[b]
                    merged = True
                    break
            if merged:
                break
    return ladders


def sheet_topology(coords: np.ndarray) -> SheetTopology:
    """Bridges, ladders, strands and sheets of one chain (rules in the module docstring).

    Parameters
    ----------
    coords : np.ndarray
        Shape (L, 4, 3) backbone N, CA, C, O in Å.
    """
    x = _backbone(coords)
    bridges = dssp_bridges(x)
    raw = _ladders(bridges)
    ladders = tuple(Ladder((a, b), (c, d), par, n) for a, b, c, d, par, n in raw)
    sides = sorted(side for lad in ladders if lad.bridges >= 2 for side in (lad.first, lad.second))
    strands: list[list[int]] = []
    for lo, hi in sides:
        if strands and lo <= strands[-1][1] + 1:
            strands[-1][1] = max(strands[-1][1], hi)
        else:
            strands.append([lo, hi])
    parent = list(range(len(strands)))

    def find(k: int) -> int:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    starts = np.array([s[0] for s in strands], dtype=np.int64)
    for lad in ladders:
        if lad.bridges >= 2:
            a = int(np.searchsorted(starts, lad.first[0], side="right")) - 1
            b = int(np.searchsorted(starts, lad.second[0], side="right")) - 1
            parent[find(a)] = find(b)
    roots = [find(k) for k in range(len(strands))]
    number = {r: n for n, r in enumerate(dict.fromkeys(roots))}
    return SheetTopology(length=x.shape[0], bridges=bridges, ladders=ladders,
                         strands=tuple((a, b) for a, b in strands), sheet_of_strand=tuple(number[r] for r in roots))


def pairing_metrics(coords: np.ndarray, psea=None, dssp=None) -> dict[str, float]:
    """Strand pairing of one chain.

    Parameters
    ----------
    coords : np.ndarray
        Shape (L, 4, 3) backbone N, CA, C, O in Å.
    psea : np.ndarray, optional
        Shape (L,) P-SEA labels (:func:`~diffsci.protein.metrics.psea_labels`); computed from
        the CA atoms when not given.
    dssp : np.ndarray, optional
        Shape (L,) DSSP labels (:func:`~diffsci.protein.metrics.dssp_labels`); computed when not given.

    Returns
    -------
    dict with ``sheets``, ``strands``, ``ladders_parallel`` and ``ladders_antiparallel`` (counts;
    ladders of two or more bridges), ``paired_fraction`` (fraction of DSSP ``'E'`` residues that
    lie on a strand: in a ladder, not an isolated bridge) and ``psea_strand_paired`` (fraction of
    P-SEA strand residues that have a bridge partner); a fraction is NaN when there is no residue
    to count.
    """
    x = _backbone(coords)
    top = sheet_topology(x)
    on_strand = top.strand_mask()
    dssp_e = np.asarray(dssp_labels(x) if dssp is None else dssp) == "E"
    psea_b = np.asarray(psea_labels(x[:, 1]) if psea is None else psea) == "b"
    for name, v in (("psea", psea_b), ("dssp", dssp_e)):
        if v.shape != (x.shape[0],):
            raise DiffsciError(f"{name}: {v.size} labels for {x.shape[0]} residues")
    partnered = np.zeros(x.shape[0], dtype=bool)
    partnered[top.bridges[:, 0]] = True
    partnered[top.bridges[:, 1]] = True
    real = [lad for lad in top.ladders if lad.bridges >= 2]
    return {
        "sheets": top.n_sheets,
        "strands": len(top.strands),
        "ladders_parallel": sum(1 for lad in real if lad.parallel),
        "ladders_antiparallel": sum(1 for lad in real if not lad.parallel),
        "paired_fraction": float(on_strand[dssp_e].mean()) if dssp_e.any() else float("nan"),
        "psea_strand_paired": float(partnered[psea_b].mean()) if psea_b.any() else float("nan"),
    }


def contact_order(ca: np.ndarray, cutoff: float = 8.0, min_separation: int = 6) -> dict[str, float]:
    """Relative and absolute contact order on CA atoms (K. W. Plaxco, K. T. Simons and D. Baker,
    "Contact order, transition state placement and the refolding rates of single domain
    proteins", J. Mol. Biol. 277, 985-994, 1998).

    Contacts are the CA pairs closer than ``cutoff`` Å at sequence separation ``j - i >=
    min_separation`` (the contacts of ``ca_contacts``; Plaxco et al. count heavy-atom pairs within
    6 Å at any separation). With N contacts of separations ``ΔS``: absolute CO = ``sum(ΔS) / N``
    (residues), relative CO = absolute CO / L. Both NaN without a contact.

    Parameters
    ----------
    ca : np.ndarray
        Shape (L, 3) CA coordinates (or (L, 4, 3) backbone) in Å.

    Returns
    -------
    dict with ``contact_order`` (relative) and ``absolute_contact_order``.
    """
    x = _ca(ca)
    i, j, d = _close_pairs(x, cutoff)
    sep = (j - i)[(d < cutoff) & (j - i >= min_separation)]
    if sep.size == 0:
        return {"contact_order": float("nan"), "absolute_contact_order": float("nan")}
    absolute = float(sep.mean())
    return {"contact_order": absolute / x.shape[0], "absolute_contact_order": absolute}

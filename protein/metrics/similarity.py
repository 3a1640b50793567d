"""Structural similarity of backbones: TM-score (TM-align via ``tmtools``), the pairwise TM
matrix of a set, single-linkage clusters at a TM threshold, and novelty against reference chains.

Dimension letters: N structures, M reference chains, L residues (CA coordinates in Å).
TM-align aligns on structure only; where no sequence is known poly-glycine (``'G' * L``) is passed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from diffsci.core.errors import DiffsciError
from diffsci.core.io import progress as progress_bar
from diffsci.protein.metrics.geometry import _ca

__all__ = ["MAX_TM_RESIDUE_PRODUCT", "tm_score", "pairwise_tm", "cluster_by_tm", "novelty"]

MAX_TM_RESIDUE_PRODUCT = 25_000_000
"""TM-align is run only on pairs with L1 * L2 at most this (two 5,000-residue chains): its
memory (about 16 bytes per residue pair) and time grow with the product. Larger pairs get NaN."""


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
    for i, j in progress_bar(pairs, total=len(pairs), desc="pairwise TM", enabled=progress, leave=False):
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
    for i in progress_bar(range(len(cas)), total=len(cas), desc="novelty", enabled=progress, leave=False):
        scores = [tm_score(cas[i], r, s[i], q) for r, q in zip(refs, rs)]
        scores = [v for v in scores if not math.isnan(v)]
        if scores:
            out[i] = max(scores)
    return out

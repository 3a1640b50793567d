"""Topology prior: secondary structure and strand pairing drawn from real chains (``--ss prior``).

Dimension legend: L residues, P bridges.

An unconditional design samples ``p(x)``; an SS-conditioned network can sample it in two steps,
``p(x) = sum_s p(s) p(x | s)``: draw a topology ``s`` (which residues are helix, strand, loop and
which strands pair, in which register) from the training chains, then sample a backbone that
has it (the SS conditioning plus the strand restraints, :mod:`diffsci.protein.design.strands`). This is
the scaffold library of RFdiffusion's fold conditioning (Watson et al. 2023: secondary
structure and block adjacency of real scaffolds) with the library drawn at random (Proteina,
Geffner et al. 2025, likewise conditions one network on fold labels). The small network
alone makes almost no sheet unconditionally (protein/data/CHECKPOINT.md): the prior gives it the
strand content of real chains.

The library (:class:`TopologyLibrary`) holds the training-split chains that pass the
checkpoint's training filters (the chains its network learned from: 107 of the 222 bundled
training chains; 45 of the 63 chains of the ribosome 6ZU5, many with long extended loops, do not
pass). A draw for length ``L`` (:meth:`TopologyLibrary.draw`):
a chain of ``L / NEAR`` to ``NEAR L`` residues (else one of at least ``L``), uniformly, and a
window of ``L`` residues in it, or holding it with loop termini, uniformly; its pydssp DSSP classes
(:func:`diffsci.protein.io.dataset.ss_arrays`) and the DSSP bridges inside the window. A strand
residue whose every bridge partner lies outside the window is made loop (in the design there is
nothing for it to pair with), and so is a strand segment of fewer than :data:`MIN_STRAND`
residues, repeated until nothing changes (a strand whose only partner was such a short segment
is loop too); strand segments pair as their bridges say
(:func:`diffsci.protein.ss.segment_pairs_from_bridges`), in the register of their bridges (the
median of ``i + j`` for an antiparallel pair, of ``j - i`` for a parallel one). The held-out
split is never drawn from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from diffsci.core.errors import DiffsciError
from diffsci.protein.io.dataset import bundled_dataset_path, load_dataset, with_ss_labels
from diffsci.protein.model.diffusion import filter_reason
from diffsci.protein.ss import SS_LETTERS, format_ss_pairs, segment_pairs_from_bridges, strand_segments

__all__ = ["Topology", "TopologyLibrary", "window_topology"]

#: a design of length L draws from training chains of L / NEAR to L * NEAR residues (when there are any):
#: whole domains, mostly, so strands keep their partners
NEAR = 1.25
#: strand segments shorter than this (residues) are made loop: too short to restrain as a strand
MIN_STRAND = 3
STRAND = SS_LETTERS.index("E")
LOOP = SS_LETTERS.index("L")


@dataclass(frozen=True)
class Topology:
    """A drawn topology: SS classes ``codes`` (L,), strand-segment pairs ``(a, b, parallel,
    register)`` (segments numbered as :func:`diffsci.protein.ss.strand_segments`; register:
    ``i + j`` of antiparallel partners, ``j - i`` of parallel ones) and where it came from
    (``source``: ``"<PDB id>_<chain>[ piece k/n] residues <first>..<last>"``, residues numbered
    from 0 in the dataset's chain, negative or past its end for loop termini; ``chain``,
    ``start``: the dataset index of that chain and the window's first residue; -1 and 0 when not
    drawn from a dataset)."""

    codes: np.ndarray
    pairs: tuple
    source: str
    chain: int = -1
    start: int = 0

    @property
    def ss(self) -> str:
        return "".join(SS_LETTERS[c] for c in self.codes)

    @property
    def pairs_text(self) -> str | None:
        """The pairs as ``--ss-pairs`` writes them (``"1-2:A,2-3:P"``; None: no pair)."""
        return format_ss_pairs(q[:3] for q in self.pairs)


def window_topology(codes, bridges, start: int, length: int, source: str = "", chain: int = -1) -> Topology:
    """The :class:`Topology` of residues ``start .. start + length - 1`` of a chain with DSSP
    classes ``codes`` (L,) and bridges ``bridges`` (P, 3) rows ``(i, j, parallel)``, i < j
    (module docstring); window positions before the chain's first or after its last residue are
    loop (a chain shorter than the design gets loop termini)."""
    codes = np.asarray(codes, dtype=np.int64)
    bridges = np.asarray(bridges, dtype=np.int64).reshape(-1, 3)
    if start > 0 and start + length > len(codes) or start < 0 and start + length < len(codes) or start >= len(codes) \
            or start + length <= 0:
        raise DiffsciError(f"window {start}..{start + length - 1} does not lie in, or hold, the chain's "
                           f"{len(codes)} residues")
    w = np.full(length, LOOP, dtype=np.int64)
    lo, hi = max(start, 0), min(start + length, len(codes))
    w[lo - start : hi - start] = codes[lo:hi]
    inside = (bridges[:, 0] >= start) & (bridges[:, 1] < start + length)
    b = bridges[inside].copy()
    b[:, :2] -= start
    while True:  # until nothing changes: dropping a short strand can leave its partners unpartnered
        b = b[(w[b[:, 0]] == STRAND) & (w[b[:, 1]] == STRAND)]
        partnered = np.zeros(length, dtype=bool)
        partnered[b[:, 0]] = partnered[b[:, 1]] = True
        before = w.copy()
        w[(w == STRAND) & ~partnered] = LOOP
        for lo, hi in strand_segments(w):
            if hi - lo + 1 < MIN_STRAND:
                w[lo : hi + 1] = LOOP
        if np.array_equal(w, before):
            break
    segs = strand_segments(w)
    segment = np.full(length, -1, dtype=np.int64)
    for k, (lo, hi) in enumerate(segs):
        segment[lo : hi + 1] = k
    pairs = []
    for a, c, par in segment_pairs_from_bridges(w, b):
        rows = b[(b[:, 2].astype(bool) == par) & (((segment[b[:, 0]] == a) & (segment[b[:, 1]] == c))
                                                  | ((segment[b[:, 0]] == c) & (segment[b[:, 1]] == a)))]
        if not len(rows):  # the pair's bridges all have the other direction: take those
            rows = b[((segment[b[:, 0]] == a) & (segment[b[:, 1]] == c)) | ((segment[b[:, 0]] == c) & (segment[b[:, 1]] == a))]
        i = np.where(segment[rows[:, 0]] == a, rows[:, 0], rows[:, 1])  # residue in segment a
        j = rows[:, 0] + rows[:, 1] - i
        register = int(round(float(np.median(j - i if par else i + j))))
        pairs.append((a, c, bool(par), register))
    return Topology(w, tuple(pairs), source, chain, start)


class TopologyLibrary:
    """Topologies of the training split of a :class:`~diffsci.protein.io.dataset.BackboneDataset`
    (None: the bundled chains); :meth:`draw` one for a design (module docstring). ``config``: a
    :class:`~diffsci.protein.model.diffusion.ProteinModelConfig` whose training filters
    (:func:`~diffsci.protein.model.diffusion.filter_reason`: radius of gyration, P-SEA coil) a chain must
    pass, so that the library holds the chains that checkpoint was trained on (None: every chain)."""

    def __init__(self, dataset=None, split: str = "train", config=None):
        ds = load_dataset(bundled_dataset_path()) if dataset is None else dataset
        ds = with_ss_labels(ds)
        self.chains = []  # (dataset index, label, classes (L,), bridges (P, 3))
        for i in map(int, ds.indices(split)):
            if config is not None and filter_reason(np.asarray(ds.chain(i).coords)[:, 1], config) is not None:
                continue
            codes, bridges = ds.chain_ss(i)
            self.chains.append((i, _label(ds, i), np.asarray(codes, dtype=np.int64), bridges))
        if not self.chains:
            raise DiffsciError(f"topology library: the dataset has no {split!r} chains")
        self.lengths = np.array([len(c) for _, _, c, _ in self.chains])

    def candidates(self, length: int) -> np.ndarray:
        """Indices into ``chains`` that a design of ``length`` draws from (:meth:`draw`); refuses
        a length no training chain can give."""
        fits = np.flatnonzero((self.lengths * NEAR >= length) & (self.lengths <= length * NEAR))
        if not len(fits):
            fits = np.flatnonzero(self.lengths >= length)
        if not len(fits):
            raise DiffsciError(f"ss prior: no training chain has {length / NEAR:.0f} or more residues (the longest "
                               f"has {self.lengths.max()}); ask for a design of at most "
                               f"{int(self.lengths.max() * NEAR)} residues")
        return fits

    def draw(self, length: int, generator: torch.Generator) -> Topology:
        """A topology of ``length`` residues, drawn with ``generator`` (a CPU ``torch.Generator``):
        a chain uniformly among those whose length is within a factor :data:`NEAR` of ``length``
        (else among those at least ``length`` long), then a window of ``length`` uniformly: inside
        a longer chain, or holding a shorter one (loop termini)."""
        fits = self.candidates(length)
        k = int(fits[int(torch.randint(len(fits), (1,), generator=generator))])
        index, label, codes, bridges = self.chains[k]
        lo, hi = sorted((0, len(codes) - length))
        start = lo + int(torch.randint(hi - lo + 1, (1,), generator=generator))
        return window_topology(codes, bridges, start, length, f"{label} residues {start}..{start + length - 1}", index)


def _label(ds, i: int) -> str:
    """``<PDB id>_<chain>`` (plus `` piece k/n`` for a piece of a chain split at a gap) of chain ``i``."""
    prov = ds.provenance[i] if ds.provenance is not None else {}
    name = f"{prov.get('pdb_id') or 'chain' + str(i)}_{ds.chain_ids[i] or '-'}"
    piece = str(prov.get("piece") or "").split()
    return f"{name} piece {piece[1]}" if len(piece) >= 2 else name

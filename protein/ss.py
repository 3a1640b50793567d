"""Secondary-structure (SS) conditioning: label codes, the ``--ss`` / ``--ss-pairs`` parsers and
strand-pairing (block-adjacency) matrices.

Dimension legend: L residues, P bridges, S strand (E) segments.

Per-residue SS classes (:data:`SS_CLASSES`): 0 loop ``L``, 1 helix ``H``, 2 strand ``E``, 3
unknown (:data:`SS_UNKNOWN`: no request; what the model sees for an unconditional prediction).
Labels come from pydssp's three-state DSSP (:func:`diffsci.protein.metrics.dssp_labels`: ``'-'``
is ``L``), the assignment the evaluation scores designs with.

Residue-pair classes (:data:`PAIR_CLASSES`, RFdiffusion's block adjacency restricted to strand
pairing): 0 not paired, 1 parallel, 2 antiparallel, 3 unknown (:data:`PAIR_UNKNOWN`). A strand
segment is a maximal run of ``E``; two segments pair when they are given as a pair (``--ss-pairs``)
or, for a training chain, when DSSP bridges join them (:func:`segment_pairs_from_bridges`). Every
residue of one segment has the pair's class with every residue of the other; residues of two
known-SS elements that do not pair are "not paired"; a residue of unknown SS has unknown pairs.

Example
-------
>>> "".join(SS_LETTERS[c] for c in parse_ss("L2E3L1"))
'LLEEEL'
>>> parse_ss_pairs("1-2:A", n_segments=2)
[(0, 1, False)]
"""

from __future__ import annotations

import re

import numpy as np

from diffsci.core.errors import DiffsciError

__all__ = ["BETA_REQUEST", "SS_LETTERS", "SS_CLASSES", "SS_UNKNOWN", "PAIR_CLASSES", "PAIR_NONE", "PAIR_PARALLEL",
           "PAIR_ANTIPARALLEL", "PAIR_UNKNOWN", "ss_codes", "parse_ss", "parse_ss_pairs", "ss_segments",
           "strand_segments", "segment_pairs_from_bridges", "pair_classes", "ss_condition", "HAIRPIN_LOOP",
           "hairpin_pairs", "format_ss_pairs"]

SS_LETTERS = "LHE"
#: number of per-residue classes the model embeds (L, H, E, unknown)
SS_CLASSES = 4
SS_UNKNOWN = 3
#: number of residue-pair classes the model embeds (not paired, parallel, antiparallel, unknown)
PAIR_CLASSES = 4
PAIR_NONE, PAIR_PARALLEL, PAIR_ANTIPARALLEL, PAIR_UNKNOWN = 0, 1, 2, 3

#: a β-rich request (L = 64): a four-stranded meander sheet and a helix; issue 16's acceptance
#: request, the demo's SS panel and the SS row of ``diffsci bench protein``
BETA_REQUEST = "L2E8L3E8L3E8L3E8L3H16L2"

_LETTER_CODE = {"L": 0, "-": 0, "H": 1, "E": 2}
_RUN = re.compile(r"([A-Za-z])(\d+)")
_PAIR = re.compile(r"\s*(\d+)\s*-\s*(\d+)\s*:\s*([AaPp])\s*")


def ss_codes(labels) -> np.ndarray:
    """Class codes (L,) int8 of DSSP three-state labels (``'H'``, ``'E'``, ``'-'``; an array or a string)."""
    letters = list(labels) if isinstance(labels, str) else [str(v) for v in np.asarray(labels).ravel()]
    bad = sorted(set(letters) - set(_LETTER_CODE))
    if bad:
        raise DiffsciError(f"labels: unknown DSSP label(s) {bad} (expected 'H', 'E', '-')")
    return np.array([_LETTER_CODE[v] for v in letters], dtype=np.int8)


def parse_ss(spec: str, length: int | None = None, *, name: str = "ss") -> np.ndarray:
    """The per-residue classes (L,) int64 of an SS request.

    ``spec``: one letter per residue over ``H``, ``E``, ``L`` (``HHHHLLEEEE``) or its run-length
    form (``L2E8L3H16``: each letter followed by its count); case-insensitive. ``length``: the
    design length the request must have (None: any). Errors name ``name`` (e.g. ``--ss``)."""
    text = str(spec).strip().upper()
    if not text:
        raise DiffsciError(f"{name}: empty secondary-structure request")
    if any(ch.isdigit() for ch in text):
        runs = _RUN.findall(text)
        if "".join(f"{a}{n}" for a, n in runs) != text:
            raise DiffsciError(f"{name} {spec!r}: the run-length form is letters each followed by a count, "
                               f"e.g. L2E8L3H16")
        if any(int(n) < 1 for _, n in runs):
            raise DiffsciError(f"{name} {spec!r}: every run needs a count >= 1")
        text = "".join(a * int(n) for a, n in runs)
    bad = sorted(set(text) - set("HEL"))
    if bad:
        raise DiffsciError(f"{name} {spec!r}: unknown letter(s) {', '.join(bad)} (use H helix, E strand, L loop)")
    if length is not None and len(text) != length:
        raise DiffsciError(f"{name} {spec!r}: describes {len(text)} residues but the design length is {length}")
    return np.array([_LETTER_CODE[c] for c in text], dtype=np.int64)


def ss_segments(codes) -> list[tuple[int, int]]:
    """Inclusive residue ranges of the SS segments (maximal runs of one class) in chain order."""
    codes = np.asarray(codes)
    if codes.size == 0:
        return []
    starts = np.flatnonzero(np.concatenate([[True], codes[1:] != codes[:-1]]))
    ends = np.concatenate([starts[1:], [codes.size]]) - 1
    return [(int(a), int(b)) for a, b in zip(starts, ends)]


def strand_segments(codes) -> list[tuple[int, int]]:
    """Inclusive residue ranges of the strand segments (maximal runs of class E) in chain order."""
    codes = np.asarray(codes)
    return [(a, b) for a, b in ss_segments(codes) if codes[a] == _LETTER_CODE["E"]]


def parse_ss_pairs(text: str, n_segments: int, *, name: str = "ss_pairs") -> list[tuple[int, int, bool]]:
    """Strand pairs ``"1-2:A,2-3:A,3-4:P"`` (E segments numbered from 1 in chain order; ``A``
    antiparallel, ``P`` parallel) as ``(a, b, parallel)`` with 0-based ``a < b``.

    ``n_segments``: the number of E segments of the SS request."""
    out: dict[tuple[int, int], bool] = {}
    for item in str(text).split(","):
        m = _PAIR.fullmatch(item)
        if not m:
            hint = ("; 'unknown' (lower case, alone) leaves every pair to the network"
                    if item.strip().lower() == "unknown" else "")
            raise DiffsciError(f"{name} {text!r}: {item.strip()!r} is not a pair such as 1-2:A (A antiparallel, "
                               f"P parallel){hint}")
        a, b = sorted((int(m.group(1)), int(m.group(2))))
        if a == b:
            raise DiffsciError(f"{name} {text!r}: strand {a} cannot pair with itself")
        if a < 1 or b > n_segments:
            raise DiffsciError(f"{name} {text!r}: strands are numbered 1..{n_segments} (the E segments of the "
                               f"request), got {a}-{b}")
        if (a - 1, b - 1) in out:
            raise DiffsciError(f"{name} {text!r}: pair {a}-{b} given twice")
        out[(a - 1, b - 1)] = m.group(3).upper() == "P"
    return [(a, b, par) for (a, b), par in out.items()]


#: the longest loop (residues) between two strands that pair as a hairpin by default
HAIRPIN_LOOP = 5


def hairpin_pairs(codes) -> list[tuple[int, int, bool]]:
    """Strand-segment pairs ``(a, b, parallel=False)`` of consecutive strands joined by a loop
    of at most :data:`HAIRPIN_LOOP` residues (SS classes ``codes`` (N,)): a β-hairpin, the only
    way two strands so close in sequence can pair (antiparallel, or not at all)."""
    segs = strand_segments(codes)
    return [(k, k + 1, False) for k in range(len(segs) - 1) if segs[k + 1][0] - segs[k][1] - 1 <= HAIRPIN_LOOP]


def format_ss_pairs(segment_pairs) -> str | None:
    """Segment pairs ``(a, b, parallel)`` (0-based) as :func:`parse_ss_pairs` reads them
    (``"1-2:A,2-3:P"``); None for no pair."""
    items = [f"{a + 1}-{b + 1}:{'P' if par else 'A'}" for a, b, par in segment_pairs]
    return ",".join(items) or None


def segment_pairs_from_bridges(codes, bridges) -> list[tuple[int, int, bool]]:
    """The strand-segment pairs of a chain: segments a < b (numbered as by :func:`strand_segments`)
    pair when a DSSP bridge (i, j) has i in one and j in the other; ``parallel`` when most of
    their bridges are parallel (ties: antiparallel).

    ``codes`` (L,) classes; ``bridges`` (P, 3) rows (i, j, parallel)
    (:func:`diffsci.protein.metrics.dssp_bridges`), indices into the same residues."""
    segment = np.full(len(codes), -1, dtype=np.int64)
    for k, (lo, hi) in enumerate(strand_segments(codes)):
        segment[lo : hi + 1] = k
    votes: dict[tuple[int, int], list[int]] = {}
    for i, j, par in np.asarray(bridges, dtype=np.int64).reshape(-1, 3).tolist():
        a, b = sorted((int(segment[i]), int(segment[j])))
        if a < 0 or a == b:
            continue
        votes.setdefault((a, b), [0, 0])[int(bool(par))] += 1
    return [(a, b, v[1] > v[0]) for (a, b), v in sorted(votes.items())]


def pair_classes(codes, segment_pairs) -> np.ndarray:
    """The residue-pair classes (L, L) int64 of SS classes ``codes`` (L,) and strand-segment
    pairs ``(a, b, parallel)``: parallel / antiparallel between the residues of paired
    segments, unknown where either residue's class is unknown, not paired elsewhere."""
    codes = np.asarray(codes)
    out = np.full((len(codes), len(codes)), PAIR_NONE, dtype=np.int64)
    segs = strand_segments(codes)
    for a, b, par in segment_pairs:
        (i0, i1), (j0, j1) = segs[a], segs[b]
        out[i0 : i1 + 1, j0 : j1 + 1] = out[j0 : j1 + 1, i0 : i1 + 1] = PAIR_PARALLEL if par else PAIR_ANTIPARALLEL
    unknown = codes == SS_UNKNOWN
    out[unknown, :] = PAIR_UNKNOWN
    out[:, unknown] = PAIR_UNKNOWN
    return out


def ss_condition(spec: str, length: int | None = None, pairs: str | None = None, *, name: str = "ss",
                 pairs_name: str = "ss_pairs") -> tuple[np.ndarray, np.ndarray]:
    """The model inputs of a user's request: SS classes (L,) and pair classes (L, L), both int64.

    ``spec``, ``length``: see :func:`parse_ss`; ``pairs``: see :func:`parse_ss_pairs` (None: the
    pairing is left to the model, every pair class unknown; given: the listed strand pairs, all
    other pairs "not paired")."""
    codes = parse_ss(spec, length, name=name)
    if pairs is None:
        return codes, np.full((len(codes), len(codes)), PAIR_UNKNOWN, dtype=np.int64)
    return codes, pair_classes(codes, parse_ss_pairs(pairs, len(strand_segments(codes)), name=pairs_name))

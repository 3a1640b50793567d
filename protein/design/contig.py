"""The contig language and the layouts drawn from it (motif scaffolding).

Dimension legend: N residues in the designed state, M motif residues.

Contigs (RFdiffusion's ``contigmap.contigs`` notation, :func:`parse_contig`): segments
separated by ``/``, optionally in brackets (``[10-40/A163-181/10-40]``); ``10-40`` is a
scaffold segment whose length is drawn uniformly in [10, 40] from the sample's generator, ``15``
a fixed-length one, ``A163-181`` the motif residues 163..181 of chain A of the motif file
(``A52A``: insertion code A). ``/0`` and a space end a chain: ``[B1-100/0 60-80]`` keeps chain B
of the input as its own fixed chain (the model's chain index tells the chains apart) and
designs a new 60-80 residue chain beside it; chains with a designed segment are written first
(A), fixed chains after (B), as RFdiffusion does.

A contig is parsed (:func:`parse_contig`), its motif segments are looked up in the motif file
(:func:`load_motif`, :func:`resolve_contig`) and its possible totals checked
(:func:`contig_length_limits`) before any sampling; each design then draws its scaffold lengths
and places the motif (:func:`draw_layout`), redrawing until the total lies in
MIN_LENGTH..MAX_LENGTH and the optional total-length range (``contigmap.length``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from diffsci.core.errors import DiffsciError
from diffsci.protein.frames import ANGSTROM_PER_NM, frames_from_backbone
from diffsci.protein.io.pdb import _ONE_TO_THREE
from diffsci.protein.io.structure import read_structure_chains

__all__ = [
    "MIN_LENGTH", "MAX_LENGTH", "Segment", "Contig", "parse_contig", "parse_length_range", "Motif", "load_motif",
    "resolve_contig", "contig_length_limits", "fixed_residues", "Layout", "draw_layout", "residue_label",
]

MIN_LENGTH, MAX_LENGTH = 40, 512  # residues per design


@dataclass(frozen=True)
class Segment:
    """A contig segment: scaffold (``chain`` None, length drawn in [lo, hi]) or the motif
    residues of ``chain`` from number ``lo`` (insertion code ``lo_ins``) to ``hi`` (``hi_ins``)
    of the motif file, in file order (``A163-181``; ``A52A``; ``A50-52B``; ``H112C-112A`` on a
    chain numbered 112C, 112B, 112A as Kabat-style entries are). Whether the end comes before
    the start is known only from the file (:meth:`Motif.keys`)."""

    lo: int
    hi: int
    chain: str | None = None
    lo_ins: str = ""
    hi_ins: str = ""

    @property
    def label(self) -> str:
        if self.chain is None:
            return str(self.lo) if self.lo == self.hi else f"{self.lo}-{self.hi}"
        a, b = f"{self.lo}{self.lo_ins}", f"{self.hi}{self.hi_ins}"
        return f"{self.chain}{a}" + ("" if a == b else f"-{b}")


@dataclass(frozen=True)
class Contig:
    """A parsed contig: ``chains`` holds the segments of each chain of the designed state, in
    output order (chains with a scaffold segment first, then chains that are all motif, as
    RFdiffusion writes a binder as chain A beside its target). Iterating gives all segments."""

    text: str
    chains: tuple[tuple[Segment, ...], ...]

    def __iter__(self):
        return (s for ch in self.chains for s in ch)

    def __len__(self) -> int:
        return sum(len(ch) for ch in self.chains)

    @property
    def has_motif(self) -> bool:
        return any(s.chain for s in self)


_MOTIF_SEG = re.compile(r"^(?P<chain>[A-Za-z])(?P<a>-?\d+)(?P<ai>[A-Za-z]?)(?:-(?P<b>-?\d+)(?P<bi>[A-Za-z]?))?$")
_SCAFFOLD_SEG = re.compile(r"^(?P<lo>\d+)(?:-(?P<hi>\d+))?$")


def _strip_contig(text: str) -> str:
    s = str(text).strip().strip("'\"").strip()
    if s.startswith("contigmap.contigs="):
        s = s[len("contigmap.contigs="):]
    s = s.strip().strip("'\"").strip()
    if s.startswith("[") and s.endswith("]"):
        s = s[1:-1].strip().strip("'\"").strip()
    return re.sub(r"\s*/\s*", "/", s)


def parse_contig(contig: str) -> Contig:
    """Parse an RFdiffusion contig (``contigmap.contigs``) into a :class:`Contig`.

    ``10-40/A163-181/10-40`` (optionally in brackets, ``[10-40/A163-181/10-40]``): segments
    separated by ``/``; ``10-40`` a scaffold segment whose length is drawn in [10, 40], ``15`` a
    fixed-length one, ``A163-181`` residues 163..181 of chain A of the motif file (``A52A``: a
    residue with insertion code A). ``/0`` followed by a space (or any ``0`` segment, or a
    space) ends a chain: ``[B1-100/0 60-80]`` keeps chain B of the input as its own fixed
    chain and designs a new 60-80 residue chain beside it. A malformed contig raises DiffsciError.
    """
    s = _strip_contig(contig)
    chains: list[list[Segment]] = []
    for group in s.split():
        current: list[Segment] = []
        for part in group.split("/"):
            if not part:
                continue
            if part == "0":  # RFdiffusion's chain break
                if current:
                    chains.append(current)
                current = []
                continue
            m = _MOTIF_SEG.match(part)
            if m:
                a, ai = int(m.group("a")), m.group("ai").upper()
                b, bi = (int(m.group("b")), m.group("bi").upper()) if m.group("b") else (a, ai)
                # no order check here: a range follows the motif file's order (Kabat numbering
                # runs 112C, 112B, 112A, 112), checked when it is resolved (Motif.keys)
                current.append(Segment(a, b, m.group("chain"), ai, bi))
                continue
            m = _SCAFFOLD_SEG.match(part)
            if not m:
                raise DiffsciError(
                    f"--contig {contig!r}: cannot parse segment {part!r} "
                    "(use e.g. 10-40/A163-181/10-40, or [B1-100/0 60-80] for a chain beside a fixed target)")
            lo = int(m.group("lo"))
            hi = int(m.group("hi")) if m.group("hi") else lo
            if hi < lo:
                raise DiffsciError(f"contig: scaffold segment {part!r} has max < min")
            current.append(Segment(lo, hi))
        if current:
            chains.append(current)
    if not chains:
        raise DiffsciError(f"contig {contig!r}: empty")
    for k, ch in enumerate(chains):
        if not any(x.chain for x in ch) and sum(x.lo for x in ch) < 1:
            raise DiffsciError(f"contig {contig!r}: chain {k + 1} ({'/'.join(x.label for x in ch)}) may be drawn "
                               "with no residue; give its segments a minimum of at least 1")
    designed = [tuple(ch) for ch in chains if any(x.chain is None for x in ch)]
    fixed = [tuple(ch) for ch in chains if all(x.chain for x in ch)]
    return Contig(str(contig), tuple(designed + fixed))


def parse_length_range(value, what: str = "--total-length") -> tuple[int, int] | None:
    """``"80-120"``, ``"100"``, ``100`` or ``(80, 120)`` -> (lo, hi) inclusive; None stays None."""
    if value is None:
        return None
    if isinstance(value, (tuple, list)) and len(value) == 2:
        lo, hi = value
    else:
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", str(value))
        if not m:
            raise DiffsciError(f"{what} {value!r}: use a length or a range such as 80-120")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
    if not (isinstance(lo, int) and isinstance(hi, int)) or lo < 1 or hi < lo:
        raise DiffsciError(f"{what} {value!r}: needs 1 <= min <= max")
    return int(lo), int(hi)


@dataclass
class Motif:
    """Motif residues from a structure file: ``chains``, the file's chains as read (the one
    backbone type, :class:`~diffsci.protein.io.structure.BackboneChain`, split at gaps), in file
    order.

    ``residues`` maps (chain, residue number, insertion code) to backbone coords (4, 3) Å, in
    file order, and ``names`` the same keys to three-letter residue names (UNK when unknown):
    views of ``chains``."""

    path: str
    chains: tuple

    @cached_property
    def residues(self) -> dict:
        return {key: np.asarray(xyz, dtype=np.float32) for ch in self.chains
                for key, xyz in zip(_keys(ch), ch.coords)}

    @cached_property
    def names(self) -> dict:
        return {key: _ONE_TO_THREE.get(aa, "UNK") for ch in self.chains for key, aa in zip(_keys(ch), ch.sequence)}

    def keys(self, seg: Segment) -> list[tuple]:
        """The residue keys of a motif segment: from its start residue to its end residue as they
        appear in the file (insertion codes in file order, whatever their letters); refuses an end
        that comes before the start in the file, and missing or non-finite residues."""
        start, end = (seg.chain, seg.lo, seg.lo_ins), (seg.chain, seg.hi, seg.hi_ins)
        order = [k for k in self.residues if k[0] == seg.chain]
        missing = [residue_label(k) for k in (start, end) if k not in self.residues]
        if not missing:
            i, j = order.index(start), order.index(end)
            if j < i:
                raise DiffsciError(f"contig: in the motif file {self.path}, {residue_label(end)} comes before "
                                   f"{residue_label(start)}")
            keys = order[i:j + 1]
            have = {k[1] for k in keys}
            missing = [f"{seg.chain}{r}" for r in range(seg.lo, seg.hi + 1) if r not in have]
        else:
            keys = []
            have = {k[1] for k in order}
            missing = sorted(set(missing) | {f"{seg.chain}{r}" for r in range(seg.lo, seg.hi + 1) if r not in have},
                             key=lambda x: (len(x), x))
        if missing:
            shown = ", ".join(missing[:6]) + (" ..." if len(missing) > 6 else "")
            raise DiffsciError(f"contig {seg.label}: residues {shown} are not in the motif file {self.path}"
                               " (or have no complete N/CA/C/O backbone)")
        bad = [residue_label(k) for k in keys if not np.isfinite(self.residues[k]).all()]
        if bad:
            shown = ", ".join(bad[:6]) + (" ..." if len(bad) > 6 else "")
            raise DiffsciError(f"motif file {self.path}: residues {shown} have NaN or infinite coordinates")
        return keys

    def segment(self, seg: Segment) -> np.ndarray:
        """Shape (M, 4, 3): the backbone of a motif segment (see :meth:`keys`)."""
        return np.stack([self.residues[k] for k in self.keys(seg)])


def residue_label(key) -> str:
    """``A52`` or ``A52A``: a residue key (chain, number, insertion code) as contigs and hotspots name it."""
    return f"{key[0]}{key[1]}{key[2]}"


def _keys(ch) -> list[tuple]:
    """(chain, residue number, insertion code) of each residue of a BackboneChain."""
    return [(ch.chain_id, int(r), str(ins).strip().upper()) for r, ins in zip(ch.res_ids, ch.ins_codes)]


def load_motif(path) -> Motif:
    """Read the motif file (PDB/mmCIF): every residue with a complete backbone, with its name."""
    if not Path(path).exists():
        raise DiffsciError(f"motif file {path}: file not found")
    chains = tuple(ch for ch in read_structure_chains(path, on_break="split") if len(ch))
    if not chains:
        raise DiffsciError(f"motif file {path}: no residue with a complete backbone")
    return Motif(str(path), chains)


@dataclass(frozen=True)
class _Block:
    """One resolved contig segment: a scaffold range or motif residues (keys, atoms, names)."""

    seg: Segment
    keys: tuple = ()
    atoms: np.ndarray | None = None
    names: tuple = ()


def resolve_contig(contig: Contig, motif: Motif | None) -> list[list[_Block]]:
    """Look the contig's motif segments up in the motif file (before any sampling)."""
    plan = []
    for ch in contig.chains:
        blocks = []
        for s in ch:
            if s.chain is None:
                blocks.append(_Block(s))
                continue
            if motif is None:
                raise DiffsciError(f"contig {contig.text!r} names motif residues ({s.label}): give the motif file")
            keys = motif.keys(s)
            atoms = np.stack([motif.residues[k] for k in keys])
            blocks.append(_Block(s, tuple(keys), atoms, tuple(motif.names.get(k, "GLY") for k in keys)))
        plan.append(blocks)
    return plan


def _length(b: _Block, which: str) -> int:
    return len(b.keys) if b.seg.chain else getattr(b.seg, which)


def fixed_residues(plan) -> int:
    """Residues of the contig's fixed chains (chains of motif segments only, such as a binder's
    target): RFdiffusion's ``contigmap.length`` does not count them."""
    return sum(len(b.keys) for ch in plan if all(b.seg.chain for b in ch) for b in ch)


def contig_length_limits(plan, total_length=None, *, text: str = "") -> tuple[int, int]:
    """The totals (every residue of the design, fixed chains included) a design may have:
    [MIN_LENGTH, MAX_LENGTH] intersected with what the contig can give and, when given,
    ``total_length`` (``(lo, hi)``, RFdiffusion's ``contigmap.length``), which bounds the residues
    of the designed chains only (chains with a scaffold segment; fixed chains do not count, as in
    RFdiffusion). Refuses a contig that can never fit."""
    mn = sum(_length(b, "lo") for ch in plan for b in ch)
    mx = sum(_length(b, "hi") for ch in plan for b in ch)
    lo, hi = MIN_LENGTH, MAX_LENGTH
    if max(lo, mn) > min(hi, mx):
        raise DiffsciError(f"contig {text!r}: its total length is {mn}..{mx} residues, which can never fit "
                           f"{MIN_LENGTH}..{MAX_LENGTH} residues")
    if total_length is not None:
        fixed = fixed_residues(plan)
        lo, hi = max(lo, total_length[0] + fixed), min(hi, total_length[1] + fixed)
        if max(lo, mn) > min(hi, mx):
            note = f" (fixed chains, {fixed} residues, do not count)" if fixed else ""
            raise DiffsciError(f"contig {text!r}: its designed chains have {mn - fixed}..{mx - fixed} residues"
                               f"{note}, which can never fit --total-length {total_length[0]}-{total_length[1]}"
                               f" within {MIN_LENGTH}..{MAX_LENGTH} residues in all")
    return max(lo, mn), min(hi, mx)


def _draw_lengths(plan, gen, lo: int, hi: int, tries: int = 1000) -> list[list[int]]:
    """Residues per block. Scaffold lengths are drawn uniformly per segment, in order, and
    redrawn (up to ``tries`` times) until the total lies in [lo, hi]; after that a sequential
    draw bounded so that the total must fit (lo <= hi is checked by contig_length_limits)."""

    def one(b):
        s = b.seg
        if s.chain:
            return len(b.keys)
        return s.lo if s.hi == s.lo else int(torch.randint(s.lo, s.hi + 1, (1,), generator=gen))

    for _ in range(tries):
        n = [[one(b) for b in ch] for ch in plan]
        if lo <= sum(map(sum, n)) <= hi:
            return n
    flat = [b for ch in plan for b in ch]
    rest_lo = [sum(_length(b, "lo") for b in flat[i + 1:]) for i in range(len(flat))]
    rest_hi = [sum(_length(b, "hi") for b in flat[i + 1:]) for i in range(len(flat))]
    out, total = [], 0
    for i, b in enumerate(flat):
        a = max(_length(b, "lo"), lo - total - rest_hi[i])
        z = min(_length(b, "hi"), hi - total - rest_lo[i])
        k = a if z <= a else int(torch.randint(a, z + 1, (1,), generator=gen))
        out.append(k)
        total += k
    it = iter(out)
    return [[next(it) for _ in ch] for ch in plan]


@dataclass
class Layout:
    """One drawn contig: where each residue of the designed state comes from.

    ``known`` is ((trans (1, N, 3) nm, rots (1, N, 3, 3)), mask (1, N)) with the motif's frames
    (CA centred on the motif's mean); ``motif_index`` (M,) positions of the motif residues in
    the state, ``motif_atoms`` (M, 4, 3) Å their input backbone, ``motif_labels`` their input
    names (``A163``); ``chain_lengths`` residues per output chain; ``residue_names`` (N,)."""

    known: tuple | None
    motif_index: np.ndarray
    motif_atoms: np.ndarray
    motif_labels: tuple
    chain_lengths: tuple
    residue_names: tuple
    drawn: str

    @property
    def length(self) -> int:
        return int(sum(self.chain_lengths))


def draw_layout(plan, gen, lo: int, hi: int) -> Layout:
    """Draw the scaffold lengths of a resolved contig and place the motif residues."""
    counts = _draw_lengths(plan, gen, lo, hi)
    motif_pos, motif_atoms, labels, names, chain_lengths, drawn = [], [], [], [], [], []
    pos = 0
    for ch, ns in zip(plan, counts):
        start, parts = pos, []
        for b, n in zip(ch, ns):
            if b.seg.chain:
                motif_pos.extend(range(pos, pos + n))
                motif_atoms.append(b.atoms)
                labels.extend(residue_label(k) for k in b.keys)
                names.extend(b.names)
                parts.append(b.seg.label)
            elif n:
                names.extend(["GLY"] * n)
                parts.append(str(n))
            pos += n
        chain_lengths.append(pos - start)
        drawn.append("/".join(parts))
    length = pos
    known = None
    if motif_atoms:
        atoms = torch.as_tensor(np.concatenate(motif_atoms), dtype=torch.float32)  # (M, 4, 3) Å
        rots, ca = frames_from_backbone(atoms[:, 0], atoms[:, 1], atoms[:, 2])
        ca = (ca - ca.mean(0, keepdim=True)) / ANGSTROM_PER_NM
        trans_known = torch.zeros(1, length, 3)
        rots_known = torch.eye(3).expand(1, length, 3, 3).clone()
        idx = torch.as_tensor(motif_pos)
        trans_known[0, idx], rots_known[0, idx] = ca, rots
        mask = torch.zeros(1, length, dtype=torch.bool)
        mask[0, idx] = True
        known = ((trans_known, rots_known), mask)
        atoms_np = atoms.numpy()
    else:
        atoms_np = np.zeros((0, 4, 3), dtype=np.float32)
    return Layout(known, np.asarray(motif_pos, dtype=np.int64), atoms_np, tuple(labels), tuple(chain_lengths),
                  tuple(names), "/0 ".join(drawn))

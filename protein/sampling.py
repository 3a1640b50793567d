"""Designing backbones: unconditional sampling, motif scaffolding (contigs), cyclic symmetry.

Dimension legend: N residues in the designed state, L residues per chain, n chains.

Every sample has its own generator derived from ``(seed, length, index)`` (and the contig or
symmetry), so the same seed gives the same files whatever else is sampled in the run.

Contigs (RFdiffusion's ``contigmap.contigs`` notation, :func:`parse_contig`): segments
separated by ``/``, optionally in brackets (``[10-40/A163-181/10-40]``); ``10-40`` is a
scaffold segment whose length is drawn uniformly in [10, 40] from the sample's generator, ``15``
a fixed-length one, ``A163-181`` the motif residues 163..181 of chain A of the motif file
(``A52A``: insertion code A). ``/0`` and a space end a chain: ``[B1-100/0 60-80]`` keeps chain B
of the input as its own fixed chain (the model's chain index tells the chains apart) and
designs a new 60-80 residue chain beside it; chains with a designed segment are written first
(A), fixed chains after (B), as RFdiffusion does. Each design redraws its scaffold lengths until
the total lies in MIN_LENGTH..MAX_LENGTH and the optional total-length range (``contigmap.length``);
a contig that can never fit is refused before sampling. The motif residues are kept exact up to
a rigid motion during sampling by :func:`diffsci.protein.motif.condition_on_motif`.

Cyclic symmetry ``Cn``: the state holds n chains of L residues; after every step it is
symmetrised (each chain mapped back by its n-fold rotation about z, averaged, rotations
projected back onto SO(3), and the n copies rebuilt), so the chains are exact copies.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from diffsci.core.errors import DiffsciError
from diffsci.core.samplers import get_sampler
from diffsci.core.train import load_checkpoint
from diffsci.core.utils import make_generator
from diffsci.protein.diffusion import KIND, NM, ProteinCond, ProteinModelConfig, SelfConditioned, build_model, build_space
from diffsci.protein.frames import backbone_from_frames, frames_from_backbone
from diffsci.protein.motif import METHODS as MOTIF_METHODS
from diffsci.protein.motif import TAPER, condition_on_motif

__all__ = [
    "LoadedModel", "load_model", "default_checkpoint_path", "parse_contig", "parse_length_range", "Segment", "Contig",
    "Motif", "load_motif", "resolve_contig", "contig_length_limits", "Layout", "draw_layout", "cyclic_constraint",
    "Design", "sample_backbones", "MIN_LENGTH", "MAX_LENGTH",
]

MIN_LENGTH, MAX_LENGTH = 40, 512
# sampling time grid t_i = 0.999 u_i^TIME_POWER (u uniform 1 -> 0): more of the steps near the clean
# end, where local geometry (CA spacing, helices) is settled; measured in protein/data/CHECKPOINT.md
TIME_POWER = 2.0


def default_checkpoint_path() -> Path:
    return Path(str(resources.files("diffsci.protein") / "data" / "default_checkpoint.pt"))


@dataclass
class LoadedModel:
    model: torch.nn.Module
    cfg: ProteinModelConfig
    source: str


def load_model(checkpoint=None, *, untrained: bool = False) -> LoadedModel:
    """Load a protein checkpoint (default: the shipped one) with its EMA weights.

    ``untrained=True`` builds the same architecture with its initial weights (a baseline).
    """
    path = Path(checkpoint) if checkpoint else default_checkpoint_path()
    if checkpoint is None and not path.exists():
        raise DiffsciError(f"no --checkpoint given and the default checkpoint {path} is missing")
    ck = load_checkpoint(path, expected_kind=KIND)
    cfg = ProteinModelConfig.from_dict(ck["model_config"])
    model = build_model(cfg)
    if not untrained:
        model.load_state_dict(ck["ema"] if "ema" in ck else ck["model"])
    return LoadedModel(model.eval(), cfg, str(path) + (" (untrained weights)" if untrained else ""))


# ---------------------------------------------------------------------------------- contigs
@dataclass(frozen=True)
class Segment:
    """A contig segment: scaffold (``chain`` None, length drawn in [lo, hi]) or the motif
    residues of ``chain`` from number ``lo`` (insertion code ``lo_ins``) to ``hi`` (``hi_ins``)
    of the motif file, in file order (``A163-181``; ``A52A``; ``A50-52B``)."""

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
                if (b, bi) < (a, ai):
                    raise DiffsciError(f"--contig: motif segment {part!r} ends before it starts")
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
                raise DiffsciError(f"--contig: scaffold segment {part!r} has max < min")
            current.append(Segment(lo, hi))
        if current:
            chains.append(current)
    if not chains:
        raise DiffsciError(f"--contig {contig!r}: empty")
    for k, ch in enumerate(chains):
        if not any(x.chain for x in ch) and sum(x.lo for x in ch) < 1:
            raise DiffsciError(f"--contig {contig!r}: chain {k + 1} ({'/'.join(x.label for x in ch)}) may be drawn "
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
    """Motif residues from a structure file.

    ``residues`` maps (chain, residue number, insertion code) to backbone coords (4, 3) Å, in
    file order; ``names`` the same keys to three-letter residue names (GLY when unknown)."""

    path: str
    residues: dict
    names: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:  # accept the older (chain, number) keys
        self.residues = {(k if len(k) == 3 else (k[0], int(k[1]), "")): v for k, v in self.residues.items()}
        self.names = {(k if len(k) == 3 else (k[0], int(k[1]), "")): v for k, v in self.names.items()}

    def keys(self, seg: Segment) -> list[tuple]:
        """The residue keys of a motif segment, in file order; refuses missing or non-finite residues."""
        start, end = (seg.chain, seg.lo, seg.lo_ins), (seg.chain, seg.hi, seg.hi_ins)
        order = [k for k in self.residues if k[0] == seg.chain]
        missing = [_label(k) for k in (start, end) if k not in self.residues]
        if not missing:
            i, j = order.index(start), order.index(end)
            if j < i:
                raise DiffsciError(f"--contig: in the motif file {self.path}, {_label(end)} comes before {_label(start)}")
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
            raise DiffsciError(f"--contig {seg.label}: residues {shown} are not in the motif file {self.path}"
                               " (or have no complete N/CA/C/O backbone)")
        bad = [_label(k) for k in keys if not np.isfinite(self.residues[k]).all()]
        if bad:
            shown = ", ".join(bad[:6]) + (" ..." if len(bad) > 6 else "")
            raise DiffsciError(f"--motif {self.path}: residues {shown} have NaN or infinite coordinates")
        return keys

    def segment(self, seg: Segment) -> np.ndarray:
        """Shape (M, 4, 3): the backbone of a motif segment (see :meth:`keys`)."""
        return np.stack([self.residues[k] for k in self.keys(seg)])


def _label(key) -> str:
    return f"{key[0]}{key[1]}{key[2]}"


def load_motif(path) -> Motif:
    """Read the motif file (PDB/mmCIF): every residue with a complete backbone, with its name."""
    from diffsci.protein.pdb_io import _ONE_TO_THREE
    from diffsci.protein.structure import read_structure_chains

    if not Path(path).exists():
        raise DiffsciError(f"--motif {path}: file not found")
    chains = read_structure_chains(path, on_break="split")
    residues, names = {}, {}
    for ch in chains:
        for r, ins, aa, xyz in zip(ch.res_ids, ch.ins_codes, ch.sequence, ch.coords):
            key = (ch.chain_id, int(r), str(ins).strip().upper())
            residues[key] = np.asarray(xyz, dtype=np.float32)
            names[key] = _ONE_TO_THREE.get(aa, "UNK")
    if not residues:
        raise DiffsciError(f"--motif {path}: no residue with a complete backbone")
    return Motif(str(path), residues, names)


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
                raise DiffsciError(f"--contig {contig.text!r} names motif residues ({s.label}): give --motif FILE.pdb")
            keys = motif.keys(s)
            atoms = np.stack([motif.residues[k] for k in keys])
            blocks.append(_Block(s, tuple(keys), atoms, tuple(motif.names.get(k, "GLY") for k in keys)))
        plan.append(blocks)
    return plan


def _length(b: _Block, which: str) -> int:
    return len(b.keys) if b.seg.chain else getattr(b.seg, which)


def contig_length_limits(plan, total_length=None, *, text: str = "") -> tuple[int, int]:
    """The totals a design may have: [MIN_LENGTH, MAX_LENGTH] and ``total_length`` intersected
    with what the contig can give; refuses a contig that can never fit."""
    mn = sum(_length(b, "lo") for ch in plan for b in ch)
    mx = sum(_length(b, "hi") for ch in plan for b in ch)
    lo, hi = MIN_LENGTH, MAX_LENGTH
    limits = f"{MIN_LENGTH}..{MAX_LENGTH} residues"
    if total_length is not None:
        lo, hi = max(lo, total_length[0]), min(hi, total_length[1])
        limits += f" and --total-length {total_length[0]}-{total_length[1]}"
    if max(lo, mn) > min(hi, mx):
        raise DiffsciError(f"--contig {text!r}: its total length is {mn}..{mx} residues, which can never fit "
                           f"{limits}")
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
                labels.extend(_label(k) for k in b.keys)
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
        ca = (ca - ca.mean(0, keepdim=True)) / NM
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


# --------------------------------------------------------------------------------- symmetry
def _rz(angle: float, dtype, device) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=dtype, device=device)


def _project_so3(m: torch.Tensor) -> torch.Tensor:
    u, _, vh = torch.linalg.svd(m)
    d = torch.sign(torch.linalg.det(u @ vh))
    fix = torch.ones_like(u[..., 0])
    fix[..., -1] = d
    return u @ torch.diag_embed(fix) @ vh


def cyclic_constraint(n: int):
    """A sampler ``constraint`` making a state of n equal-length chains Cn-symmetric about z."""

    def constraint(x, t):
        trans, rots = x
        b, N = trans.shape[:2]
        L = N // n
        rz = torch.stack([_rz(2 * math.pi * k / n, trans.dtype, trans.device) for k in range(n)])  # (n, 3, 3)
        tr = trans.reshape(b, n, L, 3)
        ro = rots.reshape(b, n, L, 3, 3)
        back_t = torch.einsum("kji,bklj->bkli", rz, tr).mean(1)  # R_k^T t_k, averaged
        back_r = _project_so3(torch.einsum("kji,bkljm->bklim", rz, ro).mean(1))
        new_t = torch.einsum("kij,blj->bkli", rz, back_t).reshape(b, N, 3)
        new_r = torch.einsum("kij,bljm->bklim", rz, back_r).reshape(b, N, 3, 3)
        return new_t, new_r

    return constraint


# ----------------------------------------------------------------------------------- design
_CHAIN_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass
class Design:
    """One designed backbone.

    ``coords`` (S, N, 4, 3) Å: S symmetric copies (``--symmetry Cn``: S = n; else 1) of N
    residues each; one copy holds the chains of ``chain_lengths`` (default one chain of N),
    written as chains A, B, ... copy by copy. ``motif_index`` (M,): positions of the motif
    residues in a copy, ``motif_coords`` (M, 4, 3) their input backbone, ``motif_labels`` their
    input residue names (``A163``, ``A52A``). ``residue_names`` (N,): three-letter names (the
    motif's from its file, GLY elsewhere; None: all GLY). ``drawn_contig``: the contig with the
    drawn scaffold lengths (``12/A163-181/25``). ``trajectory``: the model's clean prediction
    x0_hat at every step as the sampler receives it (a motif design's holds the aligned motif; the
    symmetry constraint comes after), each (S, N, 4, 3) Å, with ``trajectory_times``.
    ``length`` is the chain length for ``--length`` designs and the total for contig designs."""

    name: str
    coords: np.ndarray
    length: int
    index: int
    seed: int
    seconds: float
    sampler: str
    steps: int
    motif_index: np.ndarray | None = None
    motif_coords: np.ndarray | None = None
    time_power: float = TIME_POWER
    rotation_rate: float | None = None
    chain_lengths: tuple = ()
    residue_names: tuple | None = None
    motif_labels: tuple | None = None
    contig: str | None = None
    drawn_contig: str | None = None
    motif_file: str | None = None
    symmetry: str | None = None
    total_length_limits: tuple | None = None
    trajectory: list | None = None
    trajectory_times: list | None = None

    def __post_init__(self) -> None:
        if not self.chain_lengths:
            self.chain_lengths = (int(self.coords.shape[1]),)

    @property
    def total_length(self) -> int:
        return int(self.coords.shape[0] * self.coords.shape[1])

    def chain_ids(self) -> list[str]:
        n = self.coords.shape[0] * len(self.chain_lengths)
        if n > len(_CHAIN_LETTERS):
            raise DiffsciError(f"{self.name}: {n} chains exceed the 26 chain letters")
        return list(_CHAIN_LETTERS[:n])

    def chains(self, coords: np.ndarray | None = None) -> list[np.ndarray]:
        """The chains of ``coords`` (default the design's), each (L_c, 4, 3), in output order."""
        coords = self.coords if coords is None else coords
        cuts = np.cumsum(self.chain_lengths)[:-1]
        return [c for copy in coords for c in np.split(copy, cuts)]

    def _per_chain(self, values) -> list[list]:
        cuts = np.cumsum(self.chain_lengths)[:-1]
        per_copy = [list(v) for v in np.split(np.asarray(values, dtype=object), cuts)]
        return [v for _ in range(self.coords.shape[0]) for v in per_copy]

    def chain_residue_names(self) -> list[list[str]]:
        names = self.residue_names or ("GLY",) * self.coords.shape[1]
        return self._per_chain(names)

    def motif_flags(self) -> np.ndarray:
        """(N,) bool: True at the motif residues of a copy."""
        flags = np.zeros(self.coords.shape[1], dtype=bool)
        if self.motif_index is not None:
            flags[np.asarray(self.motif_index, dtype=int)] = True
        return flags

    def b_factors(self) -> list[list[float]]:
        """The B-factor column written: 1.0 for motif residues, 0.0 for designed ones."""
        return self._per_chain(self.motif_flags().astype(float))

    def output_labels(self) -> list[str]:
        """(N,) output residue names of the first copy: chain letter + number (``A13``)."""
        ids = self.chain_ids()
        return [f"{ids[c]}{r + 1}" for c, n in enumerate(self.chain_lengths) for r in range(n)]

    def residue_mapping(self) -> dict[str, str]:
        """Input motif residue -> output residue, e.g. ``{"A163": "A13", ...}``."""
        if self.motif_index is None or self.motif_labels is None:
            return {}
        out = self.output_labels()
        return {lab: out[int(i)] for lab, i in zip(self.motif_labels, self.motif_index)}


def _check_length(length: int) -> None:
    if not isinstance(length, int) or not MIN_LENGTH <= length <= MAX_LENGTH:
        raise DiffsciError(f"--length {length}: must be an integer between {MIN_LENGTH} and {MAX_LENGTH}")


def default_sampler(cfg: ProteinModelConfig) -> str:
    return "euler" if cfg.formulation == "flow" else "euler_maruyama"


@torch.no_grad()
def sample_one(lm: LoadedModel, n_res: int, generator, *, steps: int, sampler: str, n_chains: int = 1,
               known=None, batch: int = 1, time_power: float = TIME_POWER, rotation_rate: float | None = None,
               chain_index=None, res_index=None, callback=None, motif_method: str = "align", motif_taper: int = TAPER):
    """Sample ``batch`` states of ``n_res`` residues (per chain: n_res // n_chains). Returns (trans nm, rots).

    ``known``: the motif (:class:`Layout`), held by :func:`diffsci.protein.motif.condition_on_motif`
    with ``motif_method`` and ``motif_taper`` (its docstring).

    ``rotation_rate`` overrides the checkpoint's ``inference_rate`` (flow formulation only).
    ``chain_index``, ``res_index``: shape (n_res,) chain id and residue index per residue (default:
    n_chains equal chains numbered from 0). ``callback(i, t, x, x0_hat)`` goes to the sampler."""
    cfg = lm.cfg
    if rotation_rate is not None and cfg.formulation == "flow":
        cfg = dataclasses.replace(cfg, inference_rate=float(rotation_rate))
    mask = torch.ones(batch, n_res, dtype=torch.bool)
    L = n_res // n_chains
    res_idx = torch.arange(L).repeat(n_chains).expand(batch, n_res).clone()
    chain = torch.arange(n_chains).repeat_interleave(L).expand(batch, n_res).clone()
    if res_index is not None:
        res_idx = torch.as_tensor(res_index, dtype=torch.long).reshape(1, n_res).expand(batch, n_res).clone()
    if chain_index is not None:
        chain = torch.as_tensor(chain_index, dtype=torch.long).reshape(1, n_res).expand(batch, n_res).clone()
    space = build_space(cfg, mask, sampling=True)
    like = (torch.zeros(batch, n_res, 3), torch.eye(3).expand(batch, n_res, 3, 3).clone())
    x = space.prior(like, generator)
    times = space.spaces[0].schedule.time_grid(steps, power=time_power)
    constraint = None
    if n_chains > 1:
        constraint = cyclic_constraint(n_chains)
    cond = ProteinCond(mask, res_idx, chain)
    denoise = SelfConditioned(lm.model) if cfg.net.self_condition else lm.model
    if known is not None:  # the motif follows the scaffold's frame (protein/motif.py)
        denoise, constraint = condition_on_motif(space, denoise, known, method=motif_method, taper=motif_taper,
                                                 constraint=constraint, generator=generator, chain_index=chain[0])
    return get_sampler(sampler)(denoise, x, times, space=space, cond=cond, generator=generator, constraint=constraint,
                                callback=callback)


def _to_atoms(trans, rots, n_copies: int, chain_lengths=None) -> np.ndarray:
    """Shape (n_copies, N, 4, 3) Å from the first state of a batch; O of each chain's last residue
    from its own frame (never from the next chain's N)."""
    n_all = trans.shape[1]
    per_copy = n_all // n_copies
    lengths = list(chain_lengths) if chain_lengths else [per_copy]
    chain_end = torch.zeros(n_all, dtype=torch.bool)
    ends = np.cumsum(lengths) - 1
    for c in range(n_copies):
        chain_end[c * per_copy + ends] = True
    bb = backbone_from_frames(rots[0], trans[0] * NM, chain_end=chain_end)  # (N_all, 4, 3) Å
    return bb.reshape(n_copies, per_copy, 4, 3).numpy()


def _symmetry_order(symmetry) -> int:
    if not symmetry:
        return 1
    m = re.fullmatch(r"[Cc](\d+)", str(symmetry))
    if not m or int(m.group(1)) < 2:
        raise DiffsciError(f"--symmetry {symmetry!r}: use Cn with n >= 2 (e.g. C3)")
    return int(m.group(1))


def sample_backbones(lm: LoadedModel, lengths, num: int, *, seed: int = 0, steps: int = 100, sampler: str | None = None,
                     motif: Motif | None = None, contig: str | None = None, symmetry: str | None = None,
                     progress: bool = True, time_power: float = TIME_POWER,
                     rotation_rate: float | None = None, total_length=None,
                     trajectory: bool = False, motif_method: str = "align", motif_taper: int = TAPER) -> list[Design]:
    """Design ``num`` backbones per length (or per contig). See the module docstring.

    ``time_power``: the sampling time grid is ``0.999 u^time_power`` for u uniform from 1 to 0
    (1: uniform steps). ``rotation_rate``: FrameFlow's exponential rotation rate at sampling
    (None: the checkpoint's ``inference_rate``; 1: plain geodesic steps; higher settles
    rotations earlier, which gives more helix). ``total_length``: with a contig, the range
    ``(lo, hi)`` (or ``"80-120"``) the total length must lie in (RFdiffusion's
    ``contigmap.length``). ``trajectory``: keep the model's x0 prediction at every step.
    ``motif_method``, ``motif_taper``: how the motif is held (:func:`diffsci.protein.motif.condition_on_motif`;
    ``"fixed"`` is the method before issue 13, kept for comparison).
    Everything is checked before the first design is sampled.
    """
    sampler = sampler or default_sampler(lm.cfg)
    get_sampler(sampler)  # fail early on an unknown name
    if num < 1:
        raise DiffsciError(f"--num must be >= 1, got {num}")
    if steps < 1:
        raise DiffsciError(f"--steps must be >= 1, got {steps}")
    if not 0 < time_power <= 10:
        raise DiffsciError(f"--time-power must lie in (0, 10], got {time_power}")
    if rotation_rate is not None:
        if lm.cfg.formulation != "flow":
            raise DiffsciError("--rotation-rate applies to flow checkpoints only (this one is a score model)")
        if not 0 < rotation_rate <= 100:
            raise DiffsciError(f"--rotation-rate must lie in (0, 100], got {rotation_rate}")
    if motif_method not in MOTIF_METHODS:
        raise DiffsciError(f"motif method must be one of {', '.join(MOTIF_METHODS)}, got {motif_method!r}")
    if not isinstance(motif_taper, int) or motif_taper < 0:
        raise DiffsciError(f"motif taper must be an integer >= 0, got {motif_taper!r}")
    rate = lm.cfg.inference_rate if rotation_rate is None and lm.cfg.formulation == "flow" else rotation_rate
    n_copies = _symmetry_order(symmetry)
    total = parse_length_range(total_length)
    plan, limits, parsed = None, None, None
    if contig is not None:
        if lengths:
            raise DiffsciError("--length cannot be combined with --contig: the contig sets the length "
                               "(use a scaffold range, or --total-length 80-120 for the total)")
        if n_copies > 1:
            raise DiffsciError("--symmetry cannot be combined with --contig/--motif: placing a motif in every "
                               "subunit is not supported; design the symmetric assembly without a motif")
        parsed = parse_contig(contig)
        plan = resolve_contig(parsed, motif)
        limits = contig_length_limits(plan, total, text=contig)
    else:
        if motif is not None:
            raise DiffsciError("--motif needs --contig (e.g. --contig 10-20/A5-20/30-40)")
        if total is not None:
            raise DiffsciError("--total-length applies to --contig designs (use --length for plain designs)")
        if not lengths:
            raise DiffsciError("give at least one --length (or --contig)")
        for length in lengths:
            _check_length(length)
    jobs = [(length, i) for length in (lengths if plan is None else [0]) for i in range(num)]
    designs = []
    bar = None
    if progress:
        import sys

        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), desc="sample", file=sys.stderr)
    for length, i in jobs:
        t0 = time.time()
        key = contig if plan is not None else f"L{length}" + (f"-{symmetry}" if symmetry else "")
        gen = make_generator(seed, "protein-sample", key, i)
        kw, lay = {}, None
        if plan is not None:
            lay = draw_layout(plan, gen, *limits)
            length = lay.length
            n = len(lay.chain_lengths)
            kw = dict(known=lay.known,
                      chain_index=torch.arange(n).repeat_interleave(torch.as_tensor(lay.chain_lengths)),
                      res_index=torch.cat([torch.arange(c) for c in lay.chain_lengths]))
        traj, times = ([], []) if trajectory else (None, None)
        chain_lengths = lay.chain_lengths if lay is not None else (length,)
        if trajectory:
            def keep(step, t, x, x0_hat, _cl=chain_lengths):
                traj.append(_to_atoms(x0_hat[0].float(), x0_hat[1].float(), n_copies, _cl))
                times.append(float(t))
            kw["callback"] = keep
        trans, rots = sample_one(lm, length * n_copies, gen, steps=steps, sampler=sampler, n_chains=n_copies,
                                 time_power=time_power, rotation_rate=rotation_rate, motif_method=motif_method,
                                 motif_taper=motif_taper, **kw)
        coords = _to_atoms(trans, rots, n_copies, chain_lengths)
        if lay is None:
            designs.append(Design(f"len{length}_{i:03d}", coords, length, i, seed, time.time() - t0, sampler, steps,
                                  time_power=time_power, rotation_rate=rate, symmetry=symmetry,
                                  trajectory=traj, trajectory_times=times))
        else:
            name = f"{'motif' if parsed.has_motif else 'contig'}_{i:03d}"
            designs.append(Design(
                name, coords, length, i, seed, time.time() - t0, sampler, steps,
                lay.motif_index if parsed.has_motif else None, lay.motif_atoms if parsed.has_motif else None,
                time_power, rate, chain_lengths=lay.chain_lengths, residue_names=lay.residue_names,
                motif_labels=lay.motif_labels, contig=contig, drawn_contig=lay.drawn,
                motif_file=motif.path if motif is not None and parsed.has_motif else None,
                total_length_limits=limits, trajectory=traj, trajectory_times=times))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return designs

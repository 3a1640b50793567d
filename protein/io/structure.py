"""Reading protein backbones (N, CA, C, O) from PDB, mmCIF and BinaryCIF files.

Dimension letters: L residues, 4 backbone atoms (N, CA, C, O), 3 Cartesian coordinates (Å).

The reader keeps the first model, per residue the alternate location (altloc) of highest
occupancy (biotite's ``altloc="occupancy"``: the altloc whose atoms' occupancies sum highest,
the first letter on a tie; the first altloc for an mmCIF without occupancies), and the 20
standard amino acids plus selenomethionine (MSE, read as MET / ``M``). Every other residue
(waters, ligands, nucleotides, other modified residues) is ignored. A residue missing any of
N, CA, C, O is dropped and reported. A chain is *broken* between two kept consecutive residues
when their CA-CA distance exceeds :data:`CA_CA_BREAK` (4.2 Å) or when a residue between them
was dropped (missing backbone atoms or a non-standard residue); broken chains are split,
skipped or rejected (the training-data reader, ``prepare``), or kept whole with their breaks
reported (``on_break="keep"``, the evaluation reader: an evaluator measures what it is given),
never glued silently. A file with a non-finite (NaN or infinite) backbone coordinate in a chain
that is read is refused with one :class:`DiffsciError` naming the file, chain and residue; a PDB
file with an ATOM/HETATM record cut short inside its coordinates or occupancy (``-13.684``
cut to ``-1``) is refused naming the file and the line.

Example
-------
>>> from diffsci.protein.io.structure import read_structure_chains  # doctest: +SKIP
>>> chains = read_structure_chains("1abc.cif.gz", chains=["A"])  # doctest: +SKIP
>>> chains[0].coords.shape  # doctest: +SKIP
(120, 4, 3)
"""

from __future__ import annotations

import gzip
import io
import os
import pathlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import biotite.structure as struc
import numpy as np
from biotite.structure.io import pdb, pdbx

from diffsci.core.errors import DiffsciError
from diffsci.core.io import check_int

__all__ = [
    "BACKBONE_ATOMS",
    "CA_CA_BREAK",
    "THREE_TO_ONE",
    "RESIDUE_ALIASES",
    "STRUCTURE_SUFFIXES",
    "BackboneChain",
    "ReportRow",
    "read_structure_chains",
    "read_report",
    "structure_format",
]

BACKBONE_ATOMS: tuple[str, ...] = ("N", "CA", "C", "O")
CA_CA_BREAK: float = 4.2
"""Consecutive CA atoms farther apart than this (Å) mark a chain break (trans peptide: 3.8 Å)."""

THREE_TO_ONE: dict[str, str] = {
    "ALA": "A", "ARG": "R", "ASN": "N", "ASP": "D", "CYS": "C", "GLN": "Q", "GLU": "E",
    "GLY": "G", "HIS": "H", "ILE": "I", "LEU": "L", "LYS": "K", "MET": "M", "PHE": "F",
    "PRO": "P", "SER": "S", "THR": "T", "TRP": "W", "TYR": "Y", "VAL": "V",
    "MSE": "M",  # selenomethionine, read as methionine
}  # fmt: skip

RESIDUE_ALIASES: dict[str, str] = {
    "HID": "HIS", "HIE": "HIS", "HIP": "HIS", "HSD": "HIS", "HSE": "HIS", "HSP": "HIS",
    "CYX": "CYS", "CYM": "CYS", "ASH": "ASP", "GLH": "GLU", "LYN": "LYS",
}  # fmt: skip
"""Protonation/disulfide names of standard amino acids written by Amber and CHARMM tools
(HID, HSD, CYX, ...): the same residues, read under their standard names."""

STRUCTURE_SUFFIXES: tuple[str, ...] = (".pdb", ".ent", ".cif", ".mmcif", ".bcif")
"""File endings the reader understands, each also with ``.gz``."""

_ON_BREAK = ("split", "skip", "error", "keep")
# A C-terminal carboxylate names its oxygens OT1/OT2 (CHARMM), O1/O2 or O/OXT: either one is "O".
_ATOM_ALIASES: dict[str, tuple[str, ...]] = {"O": ("O", "OT1", "O1", "OXT", "OT2", "O2")}


@dataclass(frozen=True)
class BackboneChain:
    """One contiguous (or, with ``on_break='split'``, one piece of a) protein chain.

    Attributes
    ----------
    coords : np.ndarray
        Shape (L, 4, 3) float32, atoms N, CA, C, O in Å.
    sequence : str
        One-letter codes, length L (MSE read as ``M``).
    chain_id : str
        Author chain identifier (may be ``""`` for old PDB files with a blank chain).
    res_ids : np.ndarray
        Shape (L,) int, author residue numbers.
    ins_codes : np.ndarray
        Shape (L,) str, insertion codes (``""`` when none).
    source : str
        File path or provenance string (notes the piece when a chain was split).
    """

    coords: np.ndarray
    sequence: str
    chain_id: str
    res_ids: np.ndarray
    ins_codes: np.ndarray
    source: str

    def __post_init__(self) -> None:
        n = self.coords.shape[0]
        if self.coords.shape != (n, 4, 3):
            raise DiffsciError(f"{self.source}: backbone coords must have shape (L, 4, 3), got {self.coords.shape}")
        if len(self.sequence) != n or len(self.res_ids) != n or len(self.ins_codes) != n:
            raise DiffsciError(f"{self.source}: sequence/res_ids/ins_codes lengths differ from coords ({n})")

    def __len__(self) -> int:
        return int(self.coords.shape[0])


@dataclass(frozen=True)
class ReportRow:
    """What happened to one chain (or piece, or whole file) while reading.

    ``status`` is ``"kept"``, ``"dropped"`` (the chain or piece was left out, see ``reason``),
    ``"warning"`` (kept, but something was removed, e.g. a residue missing backbone atoms), or
    ``"error"`` (the whole file could not be used). A ``"dropped"`` row's ``kind`` says why in one
    word: ``"short"`` / ``"long"`` (outside min_length / max_length), ``"broken"`` (a chain break,
    ``on_break='skip'``) or ``"no_backbone"`` (a chain without an amino-acid backbone).
    """

    file: str
    chain_id: str
    status: str
    length: int = 0
    reason: str = ""
    piece: str = field(default="")
    kind: str = ""

    def __str__(self) -> str:
        chain = f" chain {self.chain_id!r}" if self.chain_id is not None else ""
        piece = f" {self.piece}" if self.piece else ""
        length = f" ({self.length} residues)" if self.length else ""
        reason = f": {self.reason}" if self.reason else ""
        return f"{self.status:8s} {self.file}{chain}{piece}{length}{reason}"


def structure_format(path: str | os.PathLike) -> tuple[str, bool]:
    """Format of a structure file from its name: (``"pdb"|"cif"|"bcif"``, gzipped)."""
    name = os.fspath(path).lower()
    gz = name.endswith(".gz")
    if gz:
        name = name[:-3]
    if name.endswith((".pdb", ".ent")):
        return "pdb", gz
    if name.endswith((".cif", ".mmcif")):
        return "cif", gz
    if name.endswith(".bcif"):
        return "bcif", gz
    raise DiffsciError(
        f"{path}: unknown structure file type (expected one of {', '.join(STRUCTURE_SUFFIXES)}, optionally .gz)"
    )


def _read_bytes(path: pathlib.Path, gz: bool) -> bytes:
    if not path.exists():
        raise DiffsciError(f"{path}: file does not exist")
    if not path.is_file():
        raise DiffsciError(f"{path}: not a regular file")
    try:
        if gz:
            with gzip.open(path, "rb") as fh:
                data = fh.read()
        else:
            data = path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DiffsciError(f"{path}: cannot read file ({exc})") from exc
    if not data.strip():
        raise DiffsciError(f"{path}: file is empty")
    return data


def _load_atoms(path: pathlib.Path):
    """Parse a structure file into a biotite AtomArray of its first model."""
    fmt, gz = structure_format(path)
    data = _read_bytes(path, gz)
    try:
        with warnings.catch_warnings():
            # biotite warns about guessed elements and missing author fields: harmless here
            warnings.simplefilter("ignore", UserWarning)
            atoms = _parse(fmt, data, path)
    except DiffsciError:
        raise
    except Exception as exc:  # biotite raises many kinds for malformed input
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DiffsciError(f"{path}: malformed {fmt.upper()} file ({msg})") from exc
    if isinstance(atoms, struc.AtomArrayStack):  # defensive: model=1 returns an AtomArray
        atoms = atoms[0]
    if atoms.array_length() == 0:
        raise DiffsciError(f"{path}: no atoms in the first model")
    return atoms


# Columns (1-based, inclusive) of the PDB coordinate-record fields this reader uses.
_PDB_COORDS_END = 54  # x 31-38, y 39-46, z 47-54
_PDB_OCCUPANCY_END = 60  # occupancy 55-60 (chooses the altloc)


def _check_pdb_record(line: str, number: int, path: pathlib.Path) -> None:
    """Refuse an ATOM/HETATM record cut inside its coordinates or occupancy.

    The fields are right-justified in fixed columns, so a complete record's text runs at least
    to column 54 (the end of z) and, when it has an occupancy, to column 60. A record that ends
    before (``-13.684`` cut to ``-1``) would be padded and read as a wrong number.
    """
    end = len(line.rstrip())
    if end < _PDB_COORDS_END:
        where = "its coordinates (x, y, z: columns 31-54)"
    elif _PDB_COORDS_END < end < _PDB_OCCUPANCY_END:
        where = "its occupancy (columns 55-60)"
    else:
        return
    raise DiffsciError(
        f"{path}: line {number}: {line[:6].strip()} record cut short at column {end}, inside {where}; "
        "the file is truncated or corrupt"
    )


def _pad_pdb_records(text: str, path: pathlib.Path) -> str:
    """Refuse cut coordinate records; fill blank occupancy / B-factor columns (e.g. OPM dummy atoms).

    biotite cannot parse a coordinate record whose occupancy or temperature factor is blank;
    a blank occupancy gets the default 1.00, a blank B-factor 0.00 (not used here). A record cut
    inside its coordinates or occupancy raises :class:`DiffsciError` naming the file and line.
    """
    out = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith(("ATOM", "HETATM")):
            _check_pdb_record(line, number, path)
            line = line.ljust(80)
            if not line[54:60].strip():
                line = line[:54] + "  1.00" + line[60:]
            if not line[60:66].strip():
                line = line[:60] + "  0.00" + line[66:]
        out.append(line)
    return "\n".join(out) + "\n"


def _cif_altloc(cif) -> str:
    """``"occupancy"``, or ``"first"`` for an mmCIF without an occupancy column (nothing to choose
    by; biotite 1.6 raises for ``altloc="occupancy"`` there instead of falling back)."""
    try:
        return "occupancy" if "occupancy" in cif.block["atom_site"] else "first"
    except Exception:  # no block or no atom_site: get_structure reports it
        return "occupancy"


def _parse(fmt: str, data: bytes, path: pathlib.Path):
    """biotite AtomArray of the first model; per residue the altloc of highest occupancy (may raise
    biotite's errors)."""
    if fmt == "pdb":
        text = data.decode("utf-8", errors="replace")
        if not any(line.startswith(("ATOM", "HETATM")) for line in text.splitlines()):
            raise DiffsciError(f"{path}: no ATOM/HETATM records (not a PDB file, or no coordinates)")
        return pdb.PDBFile.read(io.StringIO(_pad_pdb_records(text, path))).get_structure(model=1, altloc="occupancy")
    if fmt == "cif":
        cif = pdbx.CIFFile.read(io.StringIO(data.decode("utf-8", errors="replace")))
    else:
        cif = pdbx.BinaryCIFFile.read(io.BytesIO(data))
    return pdbx.get_structure(cif, model=1, altloc=_cif_altloc(cif), use_author_fields=True)


def _residue_label(res_id: int, ins: str, res_name: str) -> str:
    return f"{res_name} {res_id}{ins}"


def _chain_residues(atoms, path: pathlib.Path):
    """Group standard-residue backbones by chain.

    Returns a dict chain_id -> list of residue records in file order; each record is
    (res_id, ins_code, res_name, coords (4, 3) or None, missing atom names).
    Also returns the set of chain ids that have any atom at all.
    """
    starts = struc.get_residue_starts(atoms, add_exclusive_stop=True)
    chains: dict[str, list] = {}
    all_chains: list[str] = []
    for a, b in zip(starts[:-1], starts[1:]):
        cid = str(atoms.chain_id[a]).strip()
        if cid not in all_chains:
            all_chains.append(cid)
        res_name = str(atoms.res_name[a]).strip().upper()
        res_name = RESIDUE_ALIASES.get(res_name, res_name)
        if res_name not in THREE_TO_ONE:
            # Non-standard residue: a gap if it sits inside a polymer (hetero flag off or a
            # HETATM residue with a backbone, i.e. a modified amino acid); ignored otherwise.
            names = set(str(n).strip() for n in atoms.atom_name[a:b])
            if {"N", "CA", "C"} <= names:
                chains.setdefault(cid, []).append(
                    (int(atoms.res_id[a]), str(atoms.ins_code[a]).strip(), res_name, None, ("non-standard residue",))
                )
            continue
        names = [str(n).strip() for n in atoms.atom_name[a:b]]
        xyz = np.full((4, 3), np.nan, dtype=np.float32)
        missing = []
        for k, atom in enumerate(BACKBONE_ATOMS):
            found = next((alt for alt in _ATOM_ALIASES.get(atom, (atom,)) if alt in names), None)
            if found is not None:
                xyz[k] = atoms.coord[a + names.index(found)]
            else:
                missing.append(atom)
        chains.setdefault(cid, []).append(
            (int(atoms.res_id[a]), str(atoms.ins_code[a]).strip(), res_name, None if missing else xyz, tuple(missing))
        )
    return chains, all_chains


def _segment(records, max_ca: float):
    """Split residue records into contiguous pieces of complete residues.

    Returns (pieces, breaks, dropped): the pieces (lists of records), why the chain was
    broken (one reason per break) and the dropped residues worth reporting.
    """
    pieces: list[list] = []
    current: list = []
    breaks: list[str] = []
    dropped: list[str] = []
    pending_gap = ""
    pending_nonstandard = ""
    for rec in records:
        res_id, ins, name, xyz, missing = rec
        if xyz is None:
            nonstandard = missing == ("non-standard residue",)
            what = missing[0] if nonstandard else "missing " + "/".join(missing)
            label = f"{_residue_label(res_id, ins, name)} ({what})"
            if not nonstandard:
                dropped.append(label)  # a standard residue without its full backbone: always said
            if current and not pending_gap:
                pending_gap = f"residue {label} dropped"
                if nonstandard:
                    pending_nonstandard = label
            continue
        if current:
            prev = current[-1]
            d = float(np.linalg.norm(xyz[1] - prev[3][1]))
            reason = ""
            if pending_gap:
                reason = pending_gap
                if pending_nonstandard:  # a modified residue inside the chain: say so
                    dropped.append(pending_nonstandard)
            elif d > max_ca:
                reason = (
                    f"CA-CA {d:.2f} A > {max_ca} A between {_residue_label(prev[0], prev[1], prev[2])}"
                    f" and {_residue_label(res_id, ins, name)}"
                )
            if reason:
                breaks.append(reason)
                pieces.append(current)
                current = []
        pending_gap = ""
        pending_nonstandard = ""
        current.append(rec)
    if current:
        pieces.append(current)
    return pieces, breaks, dropped


def _to_chain(records, chain_id: str, source: str) -> BackboneChain:
    coords = np.stack([r[3] for r in records]).astype(np.float32)
    return BackboneChain(
        coords=coords,
        sequence="".join(THREE_TO_ONE[r[2]] for r in records),
        chain_id=chain_id,
        res_ids=np.array([r[0] for r in records], dtype=np.int64),
        ins_codes=np.array([r[1] for r in records], dtype="<U1"),
        source=source,
    )


def _refuse_non_finite(path: pathlib.Path, by_chain: dict[str, list]) -> None:
    """Raise DiffsciError when a complete backbone residue of a chain read has a NaN/inf coordinate."""
    bad = [
        (cid, r)
        for cid, records in by_chain.items()
        for r in records
        if r[3] is not None and not np.isfinite(r[3]).all()
    ]
    if bad:
        cid, (res_id, ins, name, xyz, _) = bad[0]
        atom = BACKBONE_ATOMS[int(np.argmin(np.isfinite(xyz).all(axis=1)))]
        more = f" and {len(bad) - 1} more residue(s)" if len(bad) > 1 else ""
        raise DiffsciError(
            f"{path}: non-finite (NaN or infinite) coordinates in chain {cid!r} residue "
            f"{_residue_label(res_id, ins, name)} atom {atom}{more}"
        )


def _chains_to_read(path: pathlib.Path, chains, by_chain: dict[str, list], all_chains: list[str]) -> list[str]:
    """The chain ids to read, in order: ``chains`` (deduplicated, each checked to exist and to have
    a complete backbone residue) or every chain of the file (at least one with a backbone)."""
    if chains is None:
        if not any(r[3] is not None for recs in by_chain.values() for r in recs):
            raise DiffsciError(f"{path}: no amino-acid chain with a complete N/CA/C/O backbone")
        return all_chains
    wanted = list(dict.fromkeys(c.strip() for c in chains))
    absent = [c for c in wanted if c not in all_chains]
    if absent:
        raise DiffsciError(
            f"{path}: chain(s) {', '.join(repr(c) for c in absent)} not found "
            f"(chains present: {', '.join(repr(c) for c in all_chains) or 'none'})"
        )
    no_bb = [c for c in wanted if not any(r[3] is not None for r in by_chain.get(c, []))]
    if no_bb:
        raise DiffsciError(
            f"{path}: chain(s) {', '.join(repr(c) for c in no_bb)} have no amino-acid residue with a complete N/CA/C/O backbone"
        )
    return wanted


@dataclass(frozen=True)
class _ChainRule:
    """How :func:`read_report` treats each chain: break handling and the length window."""

    on_break: str
    min_length: int
    max_length: int | None
    max_ca_distance: float

    def length_problem(self, n: int) -> tuple[str, str] | None:
        """(kind, reason) when ``n`` residues lie outside the window, else None."""
        if n < self.min_length:
            return "short", f"shorter than min_length {self.min_length}"
        if self.max_length is not None and n > self.max_length:
            return "long", f"longer than max_length {self.max_length}"
        return None


def _keep_whole(fname: str, cid: str, pieces, breaks, rule: _ChainRule):
    """``on_break='keep'``: the whole chain (its complete residues), breaks reported, never split."""
    kept = [r for piece in pieces for r in piece]
    problem = rule.length_problem(len(kept))
    if problem:
        return [], [ReportRow(fname, cid, "dropped", len(kept), problem[1], kind=problem[0])]
    why = f"{len(breaks)} chain break(s) kept, not split: {'; '.join(breaks)}" if breaks else ""
    return [_to_chain(kept, cid, f"{fname} chain {cid}")], [ReportRow(fname, cid, "kept", len(kept), why)]


def _split_pieces(fname: str, cid: str, pieces, breaks, rule: _ChainRule):
    """``on_break='split'`` (or an unbroken chain): each piece kept or dropped on its length."""
    out, rows = [], []
    n_pieces = len(pieces)
    for k, piece in enumerate(pieces):
        first, last = piece[0], piece[-1]
        span = f"residues {first[0]}{first[1]}-{last[0]}{last[1]}"
        label = f"piece {k + 1}/{n_pieces} {span}" if n_pieces > 1 else ""
        problem = rule.length_problem(len(piece))
        if problem:
            rows.append(ReportRow(fname, cid, "dropped", len(piece), problem[1], label, kind=problem[0]))
            continue
        source = f"{fname} chain {cid}" + (f" {label}" if label else "")
        out.append(_to_chain(piece, cid, source))
        around = ([f"after {breaks[k - 1]}"] if k > 0 else []) + ([f"before {breaks[k]}"] if k < len(breaks) else [])
        why = f"piece of a broken chain: {'; '.join(around)}" if n_pieces > 1 else ""
        rows.append(ReportRow(fname, cid, "kept", len(piece), why, label))
    return out, rows


def _read_chain(path: pathlib.Path, cid: str, records, rule: _ChainRule):
    """The chains (or pieces) kept of one chain's residue records, and its report rows."""
    fname = str(path)
    if not any(r[3] is not None for r in records):
        return [], [ReportRow(fname, cid, "dropped", 0, "no amino-acid residue with a complete backbone",
                              kind="no_backbone")]
    pieces, breaks, dropped = _segment(records, rule.max_ca_distance)
    rows = [ReportRow(fname, cid, "warning", 0, f"residue {d} left out") for d in dropped]
    if rule.on_break == "keep":
        got, more = _keep_whole(fname, cid, pieces, breaks, rule)
        return got, rows + more
    if breaks and rule.on_break == "error":
        raise DiffsciError(f"{path}: chain {cid!r} is broken ({breaks[0]}; {len(breaks)} break(s) in all)")
    if breaks and rule.on_break == "skip":
        total = sum(len(p) for p in pieces)
        return [], rows + [ReportRow(fname, cid, "dropped", total, f"chain break ({len(breaks)}): {'; '.join(breaks)}",
                                     kind="broken")]
    got, more = _split_pieces(fname, cid, pieces, breaks, rule)
    return got, rows + more


def read_report(
    path: str | os.PathLike,
    chains: Sequence[str] | None = None,
    *,
    on_break: str = "split",
    min_length: int = 1,
    max_length: int | None = None,
    max_ca_distance: float = CA_CA_BREAK,
) -> tuple[list[BackboneChain], list[ReportRow]]:
    """Read backbone chains and say, per chain, what was kept or dropped and why.

    Same arguments as :func:`read_structure_chains` (plus ``max_length``: longer chains or
    pieces are dropped). Returns ``(chains, report)``. Raises :class:`DiffsciError` naming the
    file when it is missing, empty or malformed, when it holds no amino-acid chain with a
    complete backbone, when a requested chain is absent or has no backbone, and (with
    ``on_break='error'``) when a chain is broken.
    """
    if on_break not in _ON_BREAK:
        raise DiffsciError(f"on_break must be one of {_ON_BREAK}, got {on_break!r}")
    check_int(min_length, "min_length")
    rule = _ChainRule(on_break, min_length, max_length, max_ca_distance)
    path = pathlib.Path(path)
    atoms = _load_atoms(path)
    by_chain, all_chains = _chain_residues(atoms, path)
    order = _chains_to_read(path, chains, by_chain, all_chains)
    _refuse_non_finite(path, {cid: by_chain.get(cid, []) for cid in order})
    out: list[BackboneChain] = []
    report: list[ReportRow] = []
    for cid in order:
        got, rows = _read_chain(path, cid, by_chain.get(cid, []), rule)
        out.extend(got)
        report.extend(rows)
    return out, report


def read_structure_chains(path: str | os.PathLike, chains: Sequence[str] | None = None, **options) -> list[BackboneChain]:
    """Read the protein backbone chains of a structure file.

    Parameters
    ----------
    path
        PDB (``.pdb``, ``.ent``), mmCIF (``.cif``, ``.mmcif``) or BinaryCIF (``.bcif``) file,
        each optionally gzipped (``.gz``). The first model is used and, per residue, the altloc of
        highest occupancy.
    chains
        Author chain ids to read (all chains with an amino-acid backbone when None).
    on_break
        What to do with a broken chain (CA-CA > ``max_ca_distance`` or a dropped residue):
        ``"split"`` returns its pieces as separate chains (their ``source`` names the piece),
        ``"skip"`` leaves the chain out, ``"error"`` raises :class:`DiffsciError`, ``"keep"``
        returns the whole chain (its complete residues, in file order) and reports the breaks
        in the ``"kept"`` report row (what :mod:`diffsci.protein.metrics` reads for evaluation).
    min_length
        Chains (or pieces) shorter than this are left out (default 1).
    max_length
        Chains (or pieces) longer than this are left out (default: no limit).
    max_ca_distance
        Consecutive CA-CA distance in Å above which a chain counts as broken (default
        ``CA_CA_BREAK``).

    Returns
    -------
    list of BackboneChain
        In file order. Use :func:`read_report` (same arguments) to learn what was dropped and why.
    """
    return read_report(path, chains, **options)[0]

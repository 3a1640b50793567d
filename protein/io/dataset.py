"""A flat, pickle-free dataset of backbone chains with provenance and a cluster split.

Dimension letters: M chains, N = sum of chain lengths, 4 backbone atoms (N, CA, C, O), 3 (Å).

The chains are stored concatenated (``coords`` Shape (N, 4, 3)) with ``offsets`` Shape (M + 1,)
so chain i is ``coords[offsets[i]:offsets[i + 1]]``. Saved as a ``.npz`` holding only numeric
and fixed-width unicode arrays, loaded with ``allow_pickle=False``. The per-residue arrays
(:data:`MAPPED`: ``coords``, ``res_ids``, ``ins_codes``, ``ss``, ``bridges``) are stored
uncompressed and loaded as read-only memory maps, so a dataset larger than memory trains without being read in; the
per-chain arrays are compressed and read. Older files with every member compressed (the
bundled ``chains.npz``) load too, their arrays read into memory.

Secondary structure (for SS-conditioned training, :mod:`diffsci.protein.ss`): ``ss`` holds each
residue's pydssp three-state DSSP class (0 L, 1 H, 2 E) and ``bridges`` the DSSP bridges, both
computed per chain by :func:`build_dataset`. A file without them (the bundled ``chains.npz``) gets
them computed by ``load_dataset(path, ss_labels=True)`` with a one-line note.

Example
-------
>>> from diffsci.protein.io.dataset import bundled_dataset_path, load_dataset
>>> ds = load_dataset(bundled_dataset_path())
>>> ds.chain(0).coords.shape[1:]
(4, 3)
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import os
import pathlib
import struct
import sys
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from biotite.sequence import ProteinSequence
from biotite.sequence.align import SubstitutionMatrix, align_optimal, get_sequence_identity

from diffsci.core.errors import DiffsciError
from diffsci.core.io import atomic_output
from diffsci.core.io import progress as progress_bar
from diffsci.protein.metrics.secondary import dssp_labels
from diffsci.protein.metrics.topology import dssp_bridges
from diffsci.protein.ss import ss_codes
from diffsci.protein.io.structure import (
    STRUCTURE_SUFFIXES,
    BackboneChain,
    ReportRow,
    read_report,
)

__all__ = [
    "MAPPED",
    "PROVENANCE_KEYS",
    "BackboneDataset",
    "DatasetOptions",
    "Source",
    "build_dataset",
    "bundled_dataset_path",
    "cluster_split",
    "find_structure_files",
    "load_dataset",
    "save_dataset",
    "sequence_identity",
    "ss_arrays",
    "with_ss_labels",
]

PROVENANCE_KEYS: tuple[str, ...] = ("package", "version", "file", "chain", "pdb_id", "piece")
#: arrays stored uncompressed by :func:`save_dataset` and memory-mapped by :func:`load_dataset`
MAPPED: tuple[str, ...] = ("coords", "res_ids", "ins_codes", "ss", "bridges")
_FORMAT_VERSION = 1


@dataclass(frozen=True)
class BackboneDataset:
    """Backbone chains, concatenated.

    Attributes
    ----------
    coords : np.ndarray
        Shape (N, 4, 3) float32, atoms N, CA, C, O in Å.
    offsets : np.ndarray
        Shape (M + 1,) int64; chain i spans ``offsets[i]:offsets[i + 1]``.
    sequences : tuple of str
        M one-letter sequences.
    chain_ids : tuple of str
        M author chain ids.
    res_ids : np.ndarray
        Shape (N,) int64 author residue numbers.
    ins_codes : np.ndarray
        Shape (N,) str insertion codes.
    provenance : tuple of dict
        M dicts with keys :data:`PROVENANCE_KEYS` (package, version, file, chain, pdb_id, piece).
    split : tuple of str
        M labels, ``"train"`` or ``"heldout"``.
    cluster_ids : np.ndarray
        Shape (M,) int64 sequence-cluster ids (single linkage at the split's identity).
    ss : np.ndarray or None
        Shape (N,) int8 DSSP class per residue (0 L, 1 H, 2 E; :func:`ss_arrays`), None when not computed.
    bridges : np.ndarray or None
        Shape (P, 3) int64 DSSP bridges (i, j, parallel) with i < j indices into the N residues (both
        in one chain), sorted; None when not computed.
    """

    coords: np.ndarray
    offsets: np.ndarray
    sequences: tuple[str, ...]
    chain_ids: tuple[str, ...]
    res_ids: np.ndarray
    ins_codes: np.ndarray
    provenance: tuple[Mapping[str, str], ...]
    split: tuple[str, ...]
    cluster_ids: np.ndarray
    meta: Mapping[str, str] = field(default_factory=dict)
    ss: np.ndarray | None = None
    bridges: np.ndarray | None = None

    def __post_init__(self) -> None:
        m = len(self.sequences)
        n = self.coords.shape[0]
        if self.coords.shape != (n, 4, 3):
            raise DiffsciError(f"dataset coords must have shape (N, 4, 3), got {self.coords.shape}")
        if not all(np.isfinite(self.coords[i : i + 2**16]).all() for i in range(0, n, 2**16)):
            raise DiffsciError("dataset coords contain NaN or infinite values")
        if self.offsets.shape != (m + 1,) or (m >= 0 and (self.offsets[0] != 0 or self.offsets[-1] != n)):
            raise DiffsciError("dataset offsets do not match the chains")
        if np.any(np.diff(self.offsets) < 1):
            raise DiffsciError("dataset has an empty chain")
        lens = np.diff(self.offsets)
        if any(len(s) != int(k) for s, k in zip(self.sequences, lens)):
            raise DiffsciError("dataset sequences do not match the chain lengths")
        for name in ("chain_ids", "provenance", "split"):
            if len(getattr(self, name)) != m:
                raise DiffsciError(f"dataset {name} has {len(getattr(self, name))} entries for {m} chains")
        if self.cluster_ids.shape != (m,):
            raise DiffsciError("dataset cluster_ids do not match the chains")
        if self.res_ids.shape != (n,) or self.ins_codes.shape != (n,):
            raise DiffsciError("dataset res_ids/ins_codes do not match the residues")
        if (self.ss is None) != (self.bridges is None):
            raise DiffsciError("dataset ss and bridges come together (both or neither)")
        if self.ss is not None and (self.ss.shape != (n,) or self.bridges.ndim != 2 or self.bridges.shape[1] != 3):
            raise DiffsciError(f"dataset ss must have shape (N,) and bridges (P, 3), got {self.ss.shape} and "
                               f"{self.bridges.shape}")
        bad = set(self.split) - {"train", "heldout"}
        if bad:
            raise DiffsciError(f"dataset split labels must be 'train' or 'heldout', got {sorted(bad)}")

    def __len__(self) -> int:
        return len(self.sequences)

    @property
    def lengths(self) -> np.ndarray:
        """Shape (M,) chain lengths."""
        return np.diff(self.offsets)

    def chain(self, i: int) -> BackboneChain:
        """Chain ``i`` as a :class:`BackboneChain` (its ``source`` is the provenance string)."""
        if not -len(self) <= i < len(self):
            raise IndexError(f"chain index {i} out of range for {len(self)} chains")
        i = i % len(self)
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        p = self.provenance[i]
        source = " ".join(f"{k}={p[k]}" for k in PROVENANCE_KEYS if p.get(k))
        return BackboneChain(
            coords=self.coords[a:b],
            sequence=self.sequences[i],
            chain_id=self.chain_ids[i],
            res_ids=self.res_ids[a:b],
            ins_codes=self.ins_codes[a:b],
            source=source,
        )

    def chain_ss(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Chain ``i``'s DSSP classes (L,) int8 and bridges (P, 3) int64 with indices into the chain."""
        if self.ss is None:
            raise DiffsciError("dataset has no secondary-structure labels (load it with ss_labels=True)")
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        lo, hi = np.searchsorted(self.bridges[:, 0], [a, b])
        bridges = np.asarray(self.bridges[lo:hi]).copy()
        bridges[:, :2] -= a
        return self.ss[a:b], bridges

    def indices(self, split: str) -> np.ndarray:
        """Indices of the chains in ``split`` (``"train"`` or ``"heldout"``)."""
        if split not in ("train", "heldout"):
            raise DiffsciError(f"split must be 'train' or 'heldout', got {split!r}")
        return np.array([i for i, s in enumerate(self.split) if s == split], dtype=np.int64)


@dataclass(frozen=True)
class Source:
    """One structure file to read, with the chains wanted and its provenance."""

    path: pathlib.Path
    chains: tuple[str, ...] | None = None
    provenance: Mapping[str, str] = field(default_factory=dict)


# ----------------------------------------------------------------------------- split


def sequence_identity(a: str, b: str) -> float:
    """Identical aligned positions / length of the shorter sequence.

    Optimal local (Smith-Waterman) alignment with BLOSUM62 and affine gaps (-10, -1), biotite
    ``align_optimal``; identical positions inside the aligned region are divided by the full
    length of the shorter sequence. (A semi-global alignment was tried first: it lets a short
    sequence scatter across a long one with free end gaps, and about 1% of unrelated pairs of
    the bundled chains then reached 30%, chaining most chains into one single-linkage cluster.
    With the local alignment the 99th percentile of random pairs is ~21%.)
    """
    if not a or not b:
        return 0.0
    matrix = SubstitutionMatrix.std_protein_matrix()
    aln = align_optimal(
        ProteinSequence(a), ProteinSequence(b), matrix, gap_penalty=(-10, -1), local=True, max_number=1
    )[0]
    return float(get_sequence_identity(aln, mode="shortest"))


def _find(parent: list[int], i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def cluster_split(
    sequences: Sequence[str],
    *,
    identity: float = 0.30,
    heldout_fraction: float = 0.1,
    seed: int = 0,
    groups: Sequence[object] | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Single-linkage sequence clusters and a held-out split of whole clusters.

    Two chains are linked when :func:`sequence_identity` >= ``identity`` (or when they share a
    ``groups`` label, e.g. pieces of one chain). Cluster ids number the clusters in order of
    their first member. Clusters are visited in a seeded random order and moved to held-out
    while that keeps the held-out count <= round(heldout_fraction * M), so no held-out chain
    reaches ``identity`` with a train chain. Deterministic for a given input and seed.

    Returns
    -------
    cluster_ids : np.ndarray
        Shape (M,) int64.
    split : tuple of str
        ``"train"`` / ``"heldout"`` per chain.
    """
    if not 0.0 <= heldout_fraction < 1.0:
        raise DiffsciError(f"heldout_fraction must be in [0, 1), got {heldout_fraction}")
    m = len(sequences)
    parent = list(range(m))

    def union(i: int, j: int) -> None:
        ri, rj = _find(parent, i), _find(parent, j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)

    if groups is not None:
        if len(groups) != m:
            raise DiffsciError(f"groups has {len(groups)} entries for {m} sequences")
        first: dict[object, int] = {}
        for i, g in enumerate(groups):
            if g in first:
                union(first[g], i)
            else:
                first[g] = i
    pairs = [(i, j) for i in range(m) for j in range(i + 1, m)]
    for i, j in progress_bar(pairs, desc="pairwise identity", enabled=progress):
        if _find(parent, i) == _find(parent, j):
            continue  # already linked: single linkage needs no more evidence
        if sequence_identity(sequences[i], sequences[j]) >= identity:
            union(i, j)
    roots = [_find(parent, i) for i in range(m)]
    ids: dict[int, int] = {}
    cluster_ids = np.array([ids.setdefault(r, len(ids)) for r in roots], dtype=np.int64)
    n_clusters = len(ids)
    sizes = np.bincount(cluster_ids, minlength=n_clusters)
    target = int(round(heldout_fraction * m))
    order = np.random.default_rng(seed).permutation(n_clusters)
    held: set[int] = set()
    count = 0
    for c in order:
        if count >= target:
            break
        if count + sizes[c] <= target:
            held.add(int(c))
            count += int(sizes[c])
    split = tuple("heldout" if int(c) in held else "train" for c in cluster_ids)
    return cluster_ids, split


# ----------------------------------------------------------------------------- building


def find_structure_files(paths: Iterable[str | os.PathLike]) -> list[pathlib.Path]:
    """Structure files under the given files or folders (recursive), sorted per folder.

    Raises :class:`DiffsciError` for a path that does not exist.
    """
    suffixes = STRUCTURE_SUFFIXES + tuple(s + ".gz" for s in STRUCTURE_SUFFIXES)
    out: list[pathlib.Path] = []
    for p in paths:
        p = pathlib.Path(p)
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.name.lower().endswith(suffixes)))
        elif p.exists():
            out.append(p)
        else:
            raise DiffsciError(f"{p}: no such file or folder")
    return out


@dataclass(frozen=True)
class DatasetOptions:
    """What :func:`build_dataset` keeps and how it splits (the options of ``diffsci protein prepare``).

    Attributes
    ----------
    min_length, max_length
        Chains or pieces outside this range are dropped (and reported).
    on_break
        ``"split"`` or ``"skip"`` broken chains (see :func:`read_structure_chains`).
    chains
        Chain ids to read from plain paths (all when None; files lacking them are reported).
    identity, heldout_fraction, seed
        The cluster split (:func:`cluster_split`).
    """

    min_length: int = 40
    max_length: int = 512
    on_break: str = "split"
    chains: tuple[str, ...] | None = None
    identity: float = 0.30
    heldout_fraction: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.on_break not in ("split", "skip"):
            raise DiffsciError(f"on_break must be 'split' or 'skip' when building a dataset, got {self.on_break!r}")
        if self.min_length < 1 or self.max_length < self.min_length:
            raise DiffsciError(f"need 1 <= min_length <= max_length, got {self.min_length}, {self.max_length}")
        if self.chains is not None:
            object.__setattr__(self, "chains", tuple(self.chains))


def _sources(sources: Iterable[str | os.PathLike | Source], chains: tuple[str, ...] | None) -> list[Source]:
    """:class:`Source` items as given, then the structure files under the plain paths."""
    items: list[Source] = []
    plain: list[str | os.PathLike] = []
    for s in sources:
        if isinstance(s, Source):
            items.append(s)
        else:
            plain.append(s)
    for f in find_structure_files(plain):
        items.append(Source(f, chains, {"file": str(f)}))
    if not items:
        raise DiffsciError("no structure files found (expected .pdb .ent .cif .bcif, optionally .gz)")
    return items


def _provenance(src: Source, chain: BackboneChain, row: ReportRow) -> dict[str, str]:
    prov = {k: "" for k in PROVENANCE_KEYS}
    prov.update({k: str(v) for k, v in src.provenance.items()})
    if not prov.get("file"):
        prov["file"] = str(src.path)
    prov["chain"] = chain.chain_id
    prov["piece"] = row.piece
    return prov


def _read_sources(items: list[Source], options: DatasetOptions, report: list[ReportRow], progress: bool):
    """(chain, provenance) of every chain kept; report rows appended as files are read, a file
    that cannot be read as one ``"error"`` row."""
    kept: list[tuple[BackboneChain, dict[str, str]]] = []
    for src in progress_bar(items, desc="reading structures", enabled=progress):
        try:
            got, rows = read_report(src.path, src.chains, on_break=options.on_break,
                                    min_length=options.min_length, max_length=options.max_length)
        except DiffsciError as exc:
            report.append(ReportRow(str(src.path), "", "error", 0, str(exc)))
            continue
        report.extend(rows)
        kept_rows = [r for r in rows if r.status == "kept"]
        kept.extend((chain, _provenance(src, chain, row)) for chain, row in zip(got, kept_rows))
    return kept


def _file_failure(rows: list[ReportRow], options: DatasetOptions) -> str:
    """Why one file gave no chain, in words that follow "<file> ..." / "all N files ..."."""
    if any(r.status == "error" for r in rows):
        return "could not be read"
    dropped = [r for r in rows if r.status == "dropped"]
    kinds = {r.kind for r in dropped} - {"no_backbone"} or {r.kind for r in dropped}
    if len(kinds) != 1:
        words = {"short": f"shorter than {options.min_length} residues", "broken": "broken",
                 "long": f"longer than {options.max_length} residues", "no_backbone": "without a backbone"}
        return "had no usable chain (" + ", ".join(sorted(words.get(k, "unusable") for k in kinds)) + ")"
    (kind,) = kinds
    pieces = " between chain breaks" if any(r.piece for r in dropped if r.kind == kind) else ""
    return {
        "short": f"had no protein chain of >= {options.min_length} residues{pieces}",
        "long": f"had no protein chain of <= {options.max_length} residues{pieces}",
        "broken": f"had only broken chains (skipped: on_break {options.on_break!r})",
        "no_backbone": "had no chain with an amino-acid backbone",
    }.get(kind, "had no usable chain")


def _nothing_usable(report: list[ReportRow], options: DatasetOptions) -> str:
    """The error when no file gave a chain: the one reason all files share (naming the file when
    there is one, quoting the first read error), or the count of files per reason."""
    by_file: dict[str, list[ReportRow]] = {}
    for r in report:
        by_file.setdefault(r.file, []).append(r)
    reasons = {f: _file_failure(rows, options) for f, rows in by_file.items()}
    counts: dict[str, int] = {}
    for why in reasons.values():
        counts[why] = counts.get(why, 0) + 1
    first_error = next((r.reason for r in report if r.status == "error"), "")
    if len(counts) == 1:
        (why,) = counts
        if why == "could not be read":
            why += f" (first: {first_error})"
        who = next(iter(reasons)) if len(reasons) == 1 else f"all {len(reasons)} files"
        return f"no usable chains found: {who} {why}"
    parts = ", ".join(f"{n} {why}" for why, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    return f"no usable chains found in {len(reasons)} files: {parts}"


def build_dataset(
    sources: Iterable[str | os.PathLike | Source],
    options: DatasetOptions | None = None,
    *,
    progress: bool = False,
    report: list[ReportRow] | None = None,
) -> tuple[BackboneDataset, list[ReportRow]]:
    """Read structure files into a :class:`BackboneDataset` with a cluster split.

    Parameters
    ----------
    sources
        Files, folders (searched recursively for structure files) or :class:`Source` items
        (one file with its chains and provenance).
    options
        Lengths, broken chains, chains to read and the split (:class:`DatasetOptions`; its
        defaults when None).
    report
        A list to append the report rows to as files are read (so a caller still has them
        when no chain is usable and :class:`DiffsciError` is raised).

    Returns
    -------
    (dataset, report)
        Files that cannot be read appear in the report with status ``"error"`` and are skipped.
        Raises :class:`DiffsciError` when no chain is usable, saying why: the reason all files
        share (``no usable chains found: all 3 files had no protein chain of >= 40 residues``)
        or the number of files per reason.
    """
    options = DatasetOptions() if options is None else options
    items = _sources(sources, options.chains)
    report = [] if report is None else report
    kept = _read_sources(items, options, report, progress)
    if not kept:
        raise DiffsciError(_nothing_usable(report, options))
    groups = [(p.get("package", ""), p.get("file", ""), p["chain"]) for _, p in kept]
    cluster_ids, split = cluster_split(
        [c.sequence for c, _ in kept],
        identity=options.identity,
        heldout_fraction=options.heldout_fraction,
        seed=options.seed,
        groups=groups,
        progress=progress,
    )
    ds = _assemble(kept, cluster_ids, split, meta={"identity": str(options.identity), "seed": str(options.seed)})
    return ds, report


def _assemble(kept, cluster_ids, split, meta) -> BackboneDataset:
    lengths = np.array([len(c) for c, _ in kept], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    ss, bridges = ss_arrays([c.coords for c, _ in kept])
    return BackboneDataset(
        coords=np.concatenate([c.coords for c, _ in kept]).astype(np.float32),
        offsets=offsets,
        sequences=tuple(c.sequence for c, _ in kept),
        chain_ids=tuple(c.chain_id for c, _ in kept),
        res_ids=np.concatenate([c.res_ids for c, _ in kept]).astype(np.int64),
        ins_codes=np.concatenate([c.ins_codes for c, _ in kept]).astype("<U1"),
        provenance=tuple(dict(p) for _, p in kept),
        split=tuple(split),
        cluster_ids=np.asarray(cluster_ids, dtype=np.int64),
        meta=dict(meta),
        ss=ss,
        bridges=bridges,
    )


def ss_arrays(chains: Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The ``ss`` (N,) int8 and ``bridges`` (P, 3) int64 arrays of a dataset holding ``chains``
    (each (L, 4, 3) Å, concatenated in order): pydssp's three-state DSSP classes
    (:func:`diffsci.protein.metrics.dssp_labels`, ``'-'``/``'H'``/``'E'`` -> 0/1/2) and the DSSP
    bridges (:func:`diffsci.protein.metrics.dssp_bridges`) shifted to dataset residue indices."""
    ss, bridges, start = [], [], 0
    for coords in chains:
        x = np.asarray(coords, dtype=np.float64)
        ss.append(ss_codes(dssp_labels(x)))
        b = dssp_bridges(x)
        b[:, :2] += start
        bridges.append(b)
        start += len(x)
    return (np.concatenate(ss).astype(np.int8) if ss else np.zeros(0, np.int8),
            np.concatenate(bridges).astype(np.int64) if bridges else np.zeros((0, 3), np.int64))


def with_ss_labels(ds: BackboneDataset, *, note: str | None = None) -> BackboneDataset:
    """``ds`` with its ``ss`` and ``bridges`` arrays (:func:`ss_arrays`; ``ds`` itself when it
    has them), printing ``note`` to stderr when they are computed."""
    if ds.ss is not None:
        return ds
    if note:
        print(note, file=sys.stderr)
    ss, bridges = ss_arrays(ds.coords[int(a) : int(b)] for a, b in zip(ds.offsets[:-1], ds.offsets[1:]))
    return dataclasses.replace(ds, ss=_read_only(ss), bridges=_read_only(bridges))


# ----------------------------------------------------------------------------- files


def _str_array(values: Sequence[str]) -> np.ndarray:
    width = max([1] + [len(v) for v in values])
    return np.array(list(values), dtype=f"<U{width}")


def save_dataset(ds: BackboneDataset, path: str | os.PathLike) -> None:
    """Write ``ds`` as a pickle-free ``.npz``, atomically (temp + ``os.replace``): the
    :data:`MAPPED` arrays stored uncompressed (so :func:`load_dataset` memory-maps them), the
    others compressed. The bytes depend only on ``ds`` (members dated 1980-01-01)."""
    path = pathlib.Path(path)
    folder = path.parent if str(path.parent) else pathlib.Path(".")
    if not folder.is_dir():
        raise DiffsciError(f"{path}: output folder {folder} does not exist")
    arrays = {
        "format_version": np.array(_FORMAT_VERSION, dtype=np.int64),
        "coords": np.asarray(ds.coords, dtype=np.float32),
        "offsets": ds.offsets.astype(np.int64),
        "sequences": _str_array(ds.sequences),
        "chain_ids": _str_array(ds.chain_ids),
        "res_ids": np.asarray(ds.res_ids, dtype=np.int64),
        "ins_codes": np.asarray(ds.ins_codes, dtype="<U1"),
        "split": _str_array(ds.split),
        "cluster_ids": ds.cluster_ids.astype(np.int64),
        "meta_keys": _str_array(list(ds.meta.keys())),
        "meta_values": _str_array([str(v) for v in ds.meta.values()]),
    }
    if ds.ss is not None:
        arrays["ss"] = np.asarray(ds.ss, dtype=np.int8)
        arrays["bridges"] = np.asarray(ds.bridges, dtype=np.int64).reshape(-1, 3)
    for key in PROVENANCE_KEYS:
        arrays[f"prov_{key}"] = _str_array([str(p.get(key, "")) for p in ds.provenance])
    with atomic_output(path) as tmp:
        with zipfile.ZipFile(tmp, "w") as zf:
            for key, arr in arrays.items():
                info = zipfile.ZipInfo(f"{key}.npy")
                info.compress_type = zipfile.ZIP_STORED if key in MAPPED else zipfile.ZIP_DEFLATED
                with zf.open(info, "w", force_zip64=True) as fh:
                    np.lib.format.write_array(fh, arr, allow_pickle=False)


def _memory_map(path: pathlib.Path, info: zipfile.ZipInfo) -> np.ndarray | None:
    """The .npy member ``info`` of the zip file at ``path`` as a read-only memory map, or None
    when it cannot be mapped (compressed, empty, or holding objects)."""
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        local = fh.read(30)  # the zip local file header; name and extra field follow it
        if len(local) < 30 or local[:4] != b"PK\x03\x04":
            return None
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        fh.seek(info.header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(fh)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(fh)
        offset = fh.tell()
    if dtype.hasobject or int(np.prod(shape)) == 0:
        return None
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


def _read_npz(path: pathlib.Path) -> dict[str, np.ndarray]:
    """Every array of the .npz at ``path``: the :data:`MAPPED` ones memory-mapped where stored
    uncompressed, the others read."""
    data = {}
    with np.load(path, allow_pickle=False) as z:
        for key in z.files:
            mapped = _memory_map(path, z.zip.getinfo(f"{key}.npy")) if key in MAPPED else None
            data[key] = z[key] if mapped is None else mapped
    return data


def load_dataset(path: str | os.PathLike, *, ss_labels: bool = False) -> BackboneDataset:
    """Read a dataset written by :func:`save_dataset` (``allow_pickle=False``); the :data:`MAPPED`
    arrays are read-only memory maps of the file when it stores them uncompressed (files written
    by :func:`save_dataset`), arrays in memory otherwise.

    ``ss_labels``: the dataset must carry its DSSP classes and bridges; a file without them gets
    them computed (:func:`with_ss_labels`) with a one-line note on stderr."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise DiffsciError(f"{path}: dataset file does not exist")
    try:
        data = _read_npz(path)
    except Exception as exc:
        raise DiffsciError(f"{path}: not a readable .npz dataset ({exc})") from exc
    required = ("coords", "offsets", "sequences", "chain_ids", "res_ids", "ins_codes", "split", "cluster_ids")
    missing = [k for k in required if k not in data]
    if missing:
        raise DiffsciError(f"{path}: not a diffsci backbone dataset (missing {', '.join(missing)})")
    m = len(data["sequences"])
    prov = tuple(
        {k: str(data[f"prov_{k}"][i]) if f"prov_{k}" in data else "" for k in PROVENANCE_KEYS} for i in range(m)
    )
    meta = dict(zip(map(str, data.get("meta_keys", [])), map(str, data.get("meta_values", []))))
    try:
        ds = BackboneDataset(
            coords=_read_only(data["coords"].astype(np.float32, copy=False)),
            offsets=_read_only(data["offsets"].astype(np.int64, copy=False)),
            sequences=tuple(str(s) for s in data["sequences"]),
            chain_ids=tuple(str(s) for s in data["chain_ids"]),
            res_ids=_read_only(data["res_ids"].astype(np.int64, copy=False)),
            ins_codes=_read_only(data["ins_codes"].astype("<U1", copy=False)),
            provenance=prov,
            split=tuple(str(s) for s in data["split"]),
            cluster_ids=_read_only(data["cluster_ids"].astype(np.int64, copy=False)),
            meta=meta,
            ss=_read_only(data["ss"].astype(np.int8, copy=False)) if "ss" in data else None,
            bridges=(_read_only(data["bridges"].reshape(-1, 3).astype(np.int64, copy=False))
                     if "bridges" in data else None),
        )
    except DiffsciError as exc:
        raise DiffsciError(f"{path}: {exc}") from exc
    if ss_labels:
        ds = with_ss_labels(ds, note=f"{path}: no secondary-structure labels stored; computing pydssp DSSP of "
                                     f"{len(ds)} chains (diffsci protein prepare stores them)")
    return ds


def _read_only(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False  # chains are views into these arrays: guard them
    return a


def bundled_dataset_path() -> pathlib.Path:
    """Path of the real-chain dataset shipped with diffsci (``protein/data/chains.npz``)."""
    ref = importlib.resources.files("diffsci.protein").joinpath("data", "chains.npz")
    path = pathlib.Path(str(ref))
    if not path.is_file():
        raise DiffsciError(f"{path}: bundled dataset missing (rebuild with 'python -m diffsci.protein.io.bundle')")
    return path

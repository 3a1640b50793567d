"""Reading structures for evaluation: every protein chain of every file in a folder, each chain
whole (never split at a gap), and reference chain sets for novelty.

Dimension letters: L residues, 4 backbone atoms (N, CA, C, O), 3 Cartesian coordinates (Å).
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from diffsci.core.errors import DiffsciError
from diffsci.protein.io.dataset import BackboneDataset, load_dataset
from diffsci.protein.metrics.geometry import _ca
from diffsci.protein.io.structure import STRUCTURE_SUFFIXES, read_report

__all__ = ["INDEX_FILE_NAMES", "EvalSample", "read_samples", "read_folder", "reference_ca_list"]


def _structure_suffix(path: pathlib.Path) -> bool:
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return any(name.endswith(s) for s in STRUCTURE_SUFFIXES)


INDEX_FILE_NAMES: tuple[str, ...] = ("samples.csv",)
"""Files a design folder holds beside its structures and that evaluation recognises silently:
``samples.csv`` (written by ``diffsci protein sample``), every ``*.json`` (per-design records,
evaluation reports) and a ``X.csv`` beside an ``X.json`` (the table ``diffsci protein evaluate``
writes next to its report)."""


def _index_file(path: pathlib.Path, names: set[str]) -> bool:
    low = path.name.lower()
    if low in INDEX_FILE_NAMES or low.endswith(".json"):
        return True
    return low.endswith(".csv") and f"{path.name[:-4]}.json" in names


@dataclass(frozen=True)
class EvalSample:
    """One sample to evaluate: one whole chain of one file.

    Attributes
    ----------
    name : str
        ``file`` or ``file:chain`` (see :func:`read_samples`); the ``file`` column of the report.
    file : str or None
        The file name; chains of one file are one design (see :func:`evaluate_structures`).
        None for an in-memory sample (each is its own design).
    chain : str or None
        Author chain id (None for in-memory samples).
    coords : np.ndarray
        Shape (L, 4, 3) N, CA, C, O in Å, every complete residue of the chain in file order.
    res_ids, ins_codes : np.ndarray or None
        Shape (L,) author residue numbers and insertion codes (P-SEA discontinuities).
    """

    name: str
    file: str | None
    chain: str | None
    coords: np.ndarray
    res_ids: np.ndarray | None = None
    ins_codes: np.ndarray | None = None


def read_samples(
    folder: str | os.PathLike,
    *,
    chains: Sequence[str] | None = None,
    on_warning: Callable[[str], None] | None = None,
    on_note: Callable[[str], None] | None = None,
) -> tuple[list[EvalSample], list[str], list[str]]:
    """Read every structure file of a folder (not recursive): one sample per protein chain, never split.

    Each chain is read whole (:func:`diffsci.protein.io.structure.read_report` with
    ``on_break="keep"``): a gap (consecutive CA-CA > 4.2 Å, or a residue left out for missing
    backbone atoms) is measured by :func:`sample_metrics` (``chain_breaks``, ``ca_ca_max``) and
    described in a note, never cut. A sample is named by its file, with ``:chain`` appended when
    the file gives more than one chain or ``chains`` is given (``design.pdb``, ``complex.cif:B``).

    Parameters
    ----------
    chains
        Author chain ids to read from every file (default: all chains with an amino-acid
        backbone). A file lacking one of them is skipped with a warning.
    on_warning, on_note
        Called with each warning (a file skipped) and each note (something measured or
        ignored inside a file that was read: a non-protein chain, a residue left out, a break).

    Returns
    -------
    (samples, warnings, notes)

    Raises
    ------
    DiffsciError
        When the folder does not exist, holds no file at all, or no readable chain.

    Files that are not structure files, cannot be read or hold non-finite coordinates are
    skipped with one warning each; the folder's index files (:data:`INDEX_FILE_NAMES`) are
    recognised and skipped silently.
    """
    folder = pathlib.Path(folder)
    files = _folder_files(folder)
    names = {p.name for p in files}
    warns: list[str] = []
    notes: list[str] = []

    def warn(msg: str) -> None:
        warns.append(msg)
        if on_warning is not None:
            on_warning(msg)

    def note(msg: str) -> None:
        notes.append(msg)
        if on_note is not None:
            on_note(msg)

    wanted = list(chains) if chains is not None else None
    samples: list[EvalSample] = []
    n_structure = 0
    for path in files:
        if not _structure_suffix(path):
            if not _index_file(path, names):
                warn(f"{path}: not a structure file (expected .pdb, .ent, .cif, .mmcif, .bcif, optionally .gz); skipped")
            continue
        n_structure += 1
        samples.extend(_read_file(path, wanted, warn, note))
    if not samples:
        raise DiffsciError(f"{folder}: no readable protein chain in {n_structure} structure file(s)")
    return samples, warns, notes


def _folder_files(folder: pathlib.Path) -> list[pathlib.Path]:
    """The files of a folder (not hidden, not recursive), sorted; refuses a missing or empty folder."""
    if not folder.is_dir():
        raise DiffsciError(f"{folder}: not a folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise DiffsciError(f"{folder}: empty folder, no structure files to evaluate")
    return files


def _read_file(path: pathlib.Path, wanted: list[str] | None, warn: Callable[[str], None],
               note: Callable[[str], None]) -> list[EvalSample]:
    """The samples of one structure file (each chain whole), its notes through ``note``; a file
    that cannot be read is one ``warn`` and no sample."""
    try:
        got, report = read_report(path, wanted, on_break="keep")
    except DiffsciError as exc:
        warn(f"{exc}; skipped")
        return []
    except Exception as exc:  # a reader crash on a malformed file is still one file's problem
        warn(f"{path}: unreadable ({type(exc).__name__}: {exc}); skipped")
        return []
    for row in report:
        if row.status == "dropped":
            tail = " (not a protein chain)" if row.length == 0 else ""
            note(f"{path.name}: chain {row.chain_id!r} ignored: {row.reason}{tail}")
        elif row.status == "warning" or (row.status == "kept" and row.reason):
            note(f"{path.name}: chain {row.chain_id!r}: {row.reason}")
    multi = len(got) > 1 or wanted is not None
    return [
        EvalSample(f"{path.name}:{ch.chain_id or '_'}" if multi else path.name, path.name, ch.chain_id,
                   np.asarray(ch.coords, dtype=np.float32), np.asarray(ch.res_ids), np.asarray(ch.ins_codes))
        for ch in got
    ]


def read_folder(
    folder: str | os.PathLike, *, on_warning: Callable[[str], None] | None = None,
    chains: Sequence[str] | None = None,
) -> tuple[list[tuple[str, np.ndarray]], list[str]]:
    """:func:`read_samples` as ``(name, coords)`` pairs (coords Shape (L, 4, 3) float32), and the warnings."""
    samples, warns, _ = read_samples(folder, chains=chains, on_warning=on_warning)
    return [(x.name, x.coords) for x in samples], warns


def reference_ca_list(reference, *, split: str | None = None) -> tuple[list[np.ndarray], list[str]]:
    """CA arrays and sequences of a reference set.

    Parameters
    ----------
    reference
        A dataset ``.npz`` (:func:`diffsci.protein.io.dataset.load_dataset`), a folder of
        structure files, a :class:`~diffsci.protein.io.dataset.BackboneDataset`, or a sequence
        of arrays Shape (L, 3) / (L, 4, 3).
    split
        For datasets: ``"train"``, ``"heldout"`` or None (all chains).

    Returns
    -------
    (ca_list, sequences)
    """
    if isinstance(reference, (str, os.PathLike)):
        path = pathlib.Path(reference)
        if path.is_dir():
            items, _ = read_folder(path)
            return [c[:, 1] for _, c in items], ["G" * len(c) for _, c in items]
        reference = load_dataset(path)
    if isinstance(reference, BackboneDataset):
        idx = range(len(reference)) if split is None else reference.indices(split)
        chains = [reference.chain(int(i)) for i in idx]
        return [np.asarray(c.coords[:, 1], dtype=np.float64) for c in chains], [c.sequence for c in chains]
    cas = [_ca(c, f"reference {k}") for k, c in enumerate(reference)]
    return cas, ["G" * len(c) for c in cas]

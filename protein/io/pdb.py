"""Writing backbone PDB files (N, CA, C, O per residue) and reading back their remarks.

Dimension letters: C chains, L residues, 4 backbone atoms (N, CA, C, O), 3 coordinates (Å).

Remarks are written as ``REMARK 250 key: value`` lines of at most 80 columns. A value too long
for one line continues on further lines that repeat ``REMARK 250 key:`` (the value is cut, no
character is dropped or added); :func:`read_remarks` joins them back.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping, Sequence

import numpy as np

from diffsci.core.errors import DiffsciError
from diffsci.core.io import write_text

__all__ = ["write_backbone_pdb", "format_backbone_pdb", "write_backbone_models", "format_remarks", "read_remarks"]

_ATOMS = (("N", "N"), ("CA", "C"), ("C", "C"), ("O", "O"))
_ONE_TO_THREE = {
    "A": "ALA", "R": "ARG", "N": "ASN", "D": "ASP", "C": "CYS", "Q": "GLN", "E": "GLU",
    "G": "GLY", "H": "HIS", "I": "ILE", "L": "LEU", "K": "LYS", "M": "MET", "F": "PHE",
    "P": "PRO", "S": "SER", "T": "THR", "W": "TRP", "Y": "TYR", "V": "VAL", "X": "UNK",
}  # fmt: skip
_DEFAULT_CHAIN_IDS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_REMARK = "REMARK 250 "
_WIDTH = 80


def _as_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _residue_names(sequence, n_chains: int, lengths: list[int], residue_name: str) -> list[list[str]]:
    if sequence is None:
        return [[residue_name] * n for n in lengths]
    seqs = [sequence] * n_chains if isinstance(sequence, str) else list(sequence)
    if len(seqs) != n_chains:
        raise DiffsciError(f"sequence: expected {n_chains} sequences (one per chain), got {len(seqs)}")
    out = []
    for s, n in zip(seqs, lengths):
        if len(s) != n:
            raise DiffsciError(f"sequence: length {len(s)} differs from the number of residues {n}")
        try:
            out.append([_ONE_TO_THREE[a.upper()] for a in s])
        except KeyError as exc:
            raise DiffsciError(f"sequence: unknown one-letter code {exc.args[0]!r}") from exc
    return out


def _chains(coords) -> list[np.ndarray]:
    """Coords as a list of (L_c, 4, 3) arrays (chains may differ in length when given as a list)."""
    if isinstance(coords, (list, tuple)):
        chains = [_as_numpy(c) for c in coords]
        if not chains:
            raise DiffsciError("coords: no chain to write")
        for c in chains:
            if c.ndim != 3 or c.shape[-2:] != (4, 3):
                raise DiffsciError(f"coords: each chain must have shape (L, 4, 3), got {c.shape}")
        return chains
    xyz = _as_numpy(coords)
    if xyz.ndim == 3:
        xyz = xyz[None]
    if xyz.ndim != 4 or xyz.shape[-2:] != (4, 3):
        raise DiffsciError(f"coords: expected shape (L, 4, 3) or (n_chains, L, 4, 3), got {tuple(np.shape(coords))}")
    return list(xyz)


def _per_chain(values, lengths: list[int], what: str, cast):
    """A per-residue option given for one chain (flat) or one list per chain."""
    if values is None:
        return None
    vals = list(values)
    if len(lengths) == 1 and len(vals) == lengths[0] and not (vals and isinstance(vals[0], (list, tuple, np.ndarray))):
        vals = [vals]
    if len(vals) != len(lengths) or any(len(v) != n for v, n in zip(vals, lengths)):
        raise DiffsciError(f"{what}: expected one value per residue of each chain (lengths {lengths})")
    return [[cast(x) for x in v] for v in vals]


def format_remarks(remarks: Mapping[str, object] | None) -> list[str]:
    """``REMARK 250 key: value`` lines, each at most 80 columns; long values continue on lines
    repeating the key (split after a comma or before a space where possible)."""
    lines = []
    for key, value in (remarks or {}).items():
        key = str(key).replace("\n", " ").replace(":", "_")
        head = f"{_REMARK}{key}: "
        room = _WIDTH - len(head)
        if room < 10:
            raise DiffsciError(f"remark key {key!r} is too long for an 80-column REMARK line")
        text = str(value).replace("\n", " ")
        while True:
            if len(text) <= room:
                lines.append((head + text).rstrip() if not text.strip() else head + text)
                break
            cut = room
            window = text[:room]
            for k in range(room, room // 2, -1):  # after a comma, or before a space
                if window[k - 1] == "," or (k < len(text) and text[k] == " " and window[k - 1] != " "):
                    cut = k
                    break
            lines.append(head + text[:cut])
            text = text[cut:]
    return lines


def read_remarks(source) -> dict[str, str]:
    """The ``REMARK 250 key: value`` pairs of a PDB file (path) or text, continuation lines
    (the same key on consecutive lines) joined back into one value."""
    text = source if isinstance(source, str) and "\n" in source else pathlib.Path(source).read_text(errors="replace")
    out: dict[str, str] = {}
    last = None
    for line in text.splitlines():
        body = line[len(_REMARK):].rstrip("\r")
        if not line.startswith(_REMARK) or ":" not in body:
            last = None
            continue
        key, _, value = body.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if key == last:
            out[key] += value
        else:
            out[key] = value
        last = key
    return out


def _model_lines(chains, chain_ids, names, numbers, b_factors) -> list[str]:
    lines = []
    serial = 1
    for ci, xyz in enumerate(chains):
        cid = chain_ids[ci] or " "
        for r in range(xyz.shape[0]):
            b = 0.0 if b_factors is None else b_factors[ci][r]
            for k, (atom, element) in enumerate(_ATOMS):
                x, y, z = xyz[r, k]
                lines.append(
                    f"ATOM  {serial % 100000:5d}  {atom:<3s} {names[ci][r]:>3s} {cid:1s}{int(numbers[ci][r]):4d}    "
                    f"{x:8.3f}{y:8.3f}{z:8.3f}{1.0:6.2f}{b:6.2f}          {element:>2s}"
                )
                serial += 1
        lines.append(f"TER   {serial % 100000:5d}      {names[ci][-1]:>3s} {cid:1s}{int(numbers[ci][-1]):4d}")
        serial += 1
    return lines


def _prepare(coords, chain_ids, residue_name, sequence, res_ids, residue_names, b_factors):
    chains = _chains(coords)
    n_chains = len(chains)
    lengths = [c.shape[0] for c in chains]
    if min(lengths) == 0:
        raise DiffsciError("coords: length 0, nothing to write")
    if max(lengths) > 9999:
        raise DiffsciError(f"coords: {max(lengths)} residues do not fit the PDB format (max 9999 per chain)")
    for xyz in chains:
        if not np.isfinite(xyz).all():
            raise DiffsciError("coords: contain NaN or infinite values")
        if xyz.min() <= -1000.0 or xyz.max() >= 10000.0:
            raise DiffsciError("coords: values outside the PDB coordinate range (-999.999 to 9999.999 Å)")
    if chain_ids is None:
        if n_chains > len(_DEFAULT_CHAIN_IDS):
            raise DiffsciError(f"coords: {n_chains} chains exceed the {len(_DEFAULT_CHAIN_IDS)} PDB chain ids")
        chain_ids = list(_DEFAULT_CHAIN_IDS[:n_chains])
    chain_ids = list(chain_ids)
    if len(chain_ids) != n_chains or any(len(c) > 1 for c in chain_ids):
        raise DiffsciError(f"chain_ids: need {n_chains} single-character ids, got {chain_ids!r}")
    if len(residue_name) > 3 or not residue_name:
        raise DiffsciError(f"residue_name: must have 1-3 characters, got {residue_name!r}")
    if residue_names is not None:
        if sequence is not None:
            raise DiffsciError("give sequence or residue_names, not both")
        names = _per_chain(residue_names, lengths, "residue_names", lambda s: str(s).strip().upper())
        if any(not 1 <= len(s) <= 3 for v in names for s in v):
            raise DiffsciError("residue_names: each name must have 1-3 characters")
    else:
        names = _residue_names(sequence, n_chains, lengths, residue_name.upper())
    bf = _per_chain(b_factors, lengths, "b_factors", float)
    if bf is not None and any(not (-99.99 <= b <= 999.99) for v in bf for b in v):
        raise DiffsciError("b_factors: values must lie in -99.99..999.99")
    if res_ids is None:
        numbers = [np.arange(1, n + 1) for n in lengths]
    else:
        numbers = np.asarray(res_ids).astype(int)
        if len(set(lengths)) != 1 or numbers.shape != (lengths[0],):
            raise DiffsciError(f"res_ids: expected shape ({lengths[0]},), got {numbers.shape}")
        if numbers.min() < -999 or numbers.max() > 9999:
            raise DiffsciError("res_ids: residue numbers must lie in -999..9999")
        numbers = [numbers] * n_chains
    return chains, chain_ids, names, numbers, bf


def format_backbone_pdb(
    coords,
    *,
    chain_ids: Sequence[str] | None = None,
    residue_name: str = "GLY",
    sequence: str | Sequence[str] | None = None,
    res_ids=None,
    remarks: Mapping[str, object] | None = None,
    residue_names=None,
    b_factors=None,
) -> str:
    """The PDB text of a backbone: REMARK lines, then ATOM records (N, CA, C, O per residue)
    and TER per chain, then END.

    Parameters
    ----------
    coords : array, Tensor or list of arrays
        Shape (L, 4, 3) or (C, L, 4, 3): atoms N, CA, C, O in Å (several chains of equal
        length, e.g. a symmetric assembly); or a list of (L_c, 4, 3) arrays, one per chain
        (chains of different lengths, e.g. a binder beside its target).
    chain_ids
        One single-character id per chain (default ``A``, ``B``, ...).
    residue_name
        Residue name written for every residue when ``sequence`` and ``residue_names`` are None
        (default GLY).
    sequence
        One-letter sequence (or one per chain) to name the residues instead.
    residue_names
        Three-letter names, one per residue (a flat list for one chain, else one list per chain).
    b_factors
        Temperature-factor column, one value per residue (same layout as ``residue_names``;
        default 0.0 everywhere). ``diffsci protein sample`` writes 1.0 for motif residues.
    res_ids
        Shape (L,) residue numbers for equal-length chains (default 1..L_c per chain).
    remarks
        Written first as ``REMARK 250 key: value`` lines (seed, length, checkpoint, sampler, ...);
        long values continue on further lines with the same key (see :func:`read_remarks`).
    """
    chains, chain_ids, names, numbers, bf = _prepare(coords, chain_ids, residue_name, sequence, res_ids,
                                                     residue_names, b_factors)
    lines = format_remarks(remarks) + _model_lines(chains, chain_ids, names, numbers, bf)
    lines.append("END")
    return "\n".join(lines) + "\n"


def write_backbone_pdb(path: str | os.PathLike, coords, **options) -> None:
    """Write :func:`format_backbone_pdb`'s text (``options``: its keyword arguments) to ``path``,
    atomically; the folder must exist. A failed write leaves no half-written file."""
    write_text(path, format_backbone_pdb(coords, **options), must_have_folder=True)


def write_backbone_models(path: str | os.PathLike, models, *, chain_ids=None, residue_names=None, b_factors=None,
                          remarks: Mapping[str, object] | None = None) -> None:
    """Write several states of one backbone as a multi-model PDB file (MODEL 1, 2, ...).

    ``models``: a sequence of ``coords`` as accepted by :func:`write_backbone_pdb`, all with the
    same chains and lengths (e.g. a denoising trajectory). Written atomically.
    """
    models = list(models)
    if not models:
        raise DiffsciError(f"{path}: no model to write")
    lines = format_remarks(remarks)
    shape = None
    for k, coords in enumerate(models, start=1):
        chains, ids, names, numbers, bf = _prepare(coords, chain_ids, "GLY", None, None, residue_names, b_factors)
        here = [c.shape for c in chains]
        if shape is not None and here != shape:
            raise DiffsciError(f"{path}: model {k} has other chain shapes than model 1")
        shape = here
        lines.append(f"MODEL     {k:4d}")
        lines.extend(_model_lines(chains, ids, names, numbers, bf))
        lines.append("ENDMDL")
    lines.append("END")
    write_text(path, "\n".join(lines) + "\n", must_have_folder=True)


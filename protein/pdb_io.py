"""Writing backbone PDB files (N, CA, C, O per residue).

Dimension letters: C chains, L residues, 4 backbone atoms (N, CA, C, O), 3 coordinates (Å).
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping, Sequence

import numpy as np

from diffsci.core.errors import DiffsciError
from diffsci.core.utils import atomic_output

__all__ = ["write_backbone_pdb", "format_backbone_pdb"]

_ATOMS = (("N", "N"), ("CA", "C"), ("C", "C"), ("O", "O"))
_ONE_TO_THREE = {
    "A": "ALA", "R": "ARG", "N": "ASN", "D": "ASP", "C": "CYS", "Q": "GLN", "E": "GLU",
    "G": "GLY", "H": "HIS", "I": "ILE", "L": "LEU", "K": "LYS", "M": "MET", "F": "PHE",
    "P": "PRO", "S": "SER", "T": "THR", "W": "TRP", "Y": "TYR", "V": "VAL", "X": "UNK",
}  # fmt: skip
_DEFAULT_CHAIN_IDS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def _as_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _residue_names(sequence, n_chains: int, length: int, residue_name: str) -> list[list[str]]:
    if sequence is None:
        return [[residue_name] * length for _ in range(n_chains)]
    seqs = [sequence] * n_chains if isinstance(sequence, str) else list(sequence)
    if len(seqs) != n_chains:
        raise DiffsciError(f"sequence: expected {n_chains} sequences (one per chain), got {len(seqs)}")
    out = []
    for s in seqs:
        if len(s) != length:
            raise DiffsciError(f"sequence: length {len(s)} differs from the number of residues {length}")
        try:
            out.append([_ONE_TO_THREE[a.upper()] for a in s])
        except KeyError as exc:
            raise DiffsciError(f"sequence: unknown one-letter code {exc.args[0]!r}") from exc
    return out


def format_backbone_pdb(
    coords,
    *,
    chain_ids: Sequence[str] | None = None,
    residue_name: str = "GLY",
    sequence: str | Sequence[str] | None = None,
    res_ids=None,
    remarks: Mapping[str, object] | None = None,
) -> str:
    """The PDB text of :func:`write_backbone_pdb` (see there for the arguments)."""
    xyz = _as_numpy(coords)
    if xyz.ndim == 3:
        xyz = xyz[None]
    if xyz.ndim != 4 or xyz.shape[-2:] != (4, 3):
        raise DiffsciError(f"coords: expected shape (L, 4, 3) or (n_chains, L, 4, 3), got {tuple(np.shape(coords))}")
    n_chains, length = xyz.shape[:2]
    if length == 0:
        raise DiffsciError("coords: length 0, nothing to write")
    if length > 9999:
        raise DiffsciError(f"coords: {length} residues do not fit the PDB format (max 9999 per chain)")
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
    names = _residue_names(sequence, n_chains, length, residue_name.upper())
    if res_ids is None:
        numbers = np.arange(1, length + 1)
    else:
        numbers = np.asarray(res_ids).astype(int)
        if numbers.shape != (length,):
            raise DiffsciError(f"res_ids: expected shape ({length},), got {numbers.shape}")
        if numbers.min() < -999 or numbers.max() > 9999:
            raise DiffsciError("res_ids: residue numbers must lie in -999..9999")
    lines = []
    for key, value in (remarks or {}).items():
        text = f"REMARK 250 {key}: {value}".replace("\n", " ")
        lines.append(text[:80])
    serial = 1
    for ci in range(n_chains):
        cid = chain_ids[ci] or " "
        for r in range(length):
            for k, (atom, element) in enumerate(_ATOMS):
                x, y, z = xyz[ci, r, k]
                lines.append(
                    f"ATOM  {serial % 100000:5d}  {atom:<3s} {names[ci][r]:>3s} {cid:1s}{int(numbers[r]):4d}    "
                    f"{x:8.3f}{y:8.3f}{z:8.3f}{1.0:6.2f}{0.0:6.2f}          {element:>2s}"
                )
                serial += 1
        lines.append(f"TER   {serial % 100000:5d}      {names[ci][-1]:>3s} {cid:1s}{int(numbers[-1]):4d}")
        serial += 1
    lines.append("END")
    return "\n".join(lines) + "\n"


def write_backbone_pdb(
    path: str | os.PathLike,
    coords,
    *,
    chain_ids: Sequence[str] | None = None,
    residue_name: str = "GLY",
    sequence: str | Sequence[str] | None = None,
    res_ids=None,
    remarks: Mapping[str, object] | None = None,
) -> None:
    """Write backbone coordinates as a PDB file, atomically (temp file + ``os.replace``).

    Parameters
    ----------
    path
        Output file; its folder must exist. Never left half-written.
    coords : array or Tensor
        Shape (L, 4, 3) or (C, L, 4, 3): atoms N, CA, C, O in Å (several chains of equal
        length, e.g. a symmetric assembly).
    chain_ids
        One single-character id per chain (default ``A``, ``B``, ...).
    residue_name
        Residue name written for every residue when ``sequence`` is None (default GLY).
    sequence
        One-letter sequence (or one per chain) to name the residues instead.
    res_ids
        Shape (L,) residue numbers (default 1..L).
    remarks
        Written first as ``REMARK 250 key: value`` lines (seed, length, checkpoint, sampler, ...).
    """
    text = format_backbone_pdb(
        coords, chain_ids=chain_ids, residue_name=residue_name, sequence=sequence, res_ids=res_ids, remarks=remarks
    )
    path = pathlib.Path(path)
    folder = path.parent if str(path.parent) else pathlib.Path(".")
    if not folder.is_dir():
        raise DiffsciError(f"{path}: output folder {folder} does not exist")
    with atomic_output(path) as tmp:
        tmp.write_text(text)

"""Typed configuration: frozen dataclasses read from plain dicts (JSON/TOML tables, checkpoints).

:func:`from_dict` is the one reader of every configuration: it follows the dataclass's type
hints recursively (nested dataclasses, tuples, optional fields), converts JSON lists to tuples,
and rejects unknown keys with an error that names the full key path (``model.net.layerz``).
Old checkpoints are not read leniently: their stored dicts are brought up to date by the
explicit migrations of :mod:`diffsci.core.checkpoint` first.

:class:`Provenance` records where a model's training data came from (files with their SHA-256,
the time range, the seed), saved in every checkpoint, so a benchmark can refuse evaluation data
that overlaps the training period.
"""

from __future__ import annotations

import dataclasses
import hashlib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from diffsci.core.errors import DiffsciError

__all__ = ["from_dict", "to_dict", "Provenance", "DataFile", "file_record"]


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _convert(value, hint, where: str):
    """``value`` read as type ``hint`` (dataclass, tuple, Optional, plain)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            if dataclasses.is_dataclass(arg) or typing.get_origin(arg) in (tuple, dict):
                return _convert(value, arg, where)
        return value
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        if isinstance(value, hint):
            return value
        if not isinstance(value, dict):
            raise DiffsciError(f"{where}: expected a table of {hint.__name__} options, got {type(value).__name__}")
        return from_dict(hint, value, where=where)
    if origin is tuple and isinstance(value, (list, tuple)):
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        return tuple(value)
    return value


def from_dict(cls, data: dict | None, *, where: str = "config"):
    """An instance of dataclass ``cls`` from the dict ``data`` (None: all defaults).

    Nested dataclass fields are read from nested dicts; lists become tuples where the field is
    a tuple. Unknown keys and missing required fields raise DiffsciError naming the key path
    (``where`` is the prefix, e.g. ``"model"``); the dataclass's own ``__post_init__`` checks
    the values."""
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise DiffsciError(f"{where}: expected a table of options, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise DiffsciError(f"{where}: unknown option(s) {', '.join(f'{where}.{k}' for k in unknown)} "
                           f"(known: {', '.join(fields)})")
    hints = _hints(cls)
    kwargs = {k: _convert(v, hints.get(k, Any), f"{where}.{k}") for k, v in data.items()}
    missing = [n for n, f in fields.items() if n not in kwargs and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise DiffsciError(f"{where}: missing required option(s) {', '.join(f'{where}.{k}' for k in missing)}")
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise DiffsciError(f"{where}: {exc}") from None


def to_dict(obj) -> Any:
    """A dataclass (recursively) as a JSON-able dict: tuples as lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


@dataclass(frozen=True)
class DataFile:
    """One input file (or folder, e.g. a zarr store): its path as given, SHA-256 of its bytes
    (a folder: of its files' relative paths and bytes, in sorted order) and total size in bytes."""

    path: str
    sha256: str
    size: int


def file_record(path) -> DataFile:
    """The :class:`DataFile` of ``path`` (streamed in 1 MiB blocks)."""
    p = Path(path)
    if not p.exists():
        raise DiffsciError(f"{path}: not found (cannot record its provenance)")
    h = hashlib.sha256()
    size = 0
    files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())
    for q in files:
        if p.is_dir():
            h.update(str(q.relative_to(p)).encode() + b"\0")
        with open(q, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
                size += len(block)
    return DataFile(str(path), h.hexdigest(), size)


@dataclass(frozen=True)
class Provenance:
    """Where a model's training data came from (saved in its checkpoints).

    ``files``: the data files; ``time_start``/``time_end``: ISO 8601 bounds of the states used
    (time-series data) or None; ``seed``: the training seed; ``note``: free text (e.g. the
    split used)."""

    files: tuple[DataFile, ...] = ()
    time_start: str | None = None
    time_end: str | None = None
    seed: int | None = None
    note: str = ""

    def overlaps(self, start, end) -> bool:
        """Whether [start, end] (anything ``numpy.datetime64`` reads) meets the training period;
        False when no period is recorded."""
        if self.time_start is None or self.time_end is None:
            return False
        return bool(np.datetime64(start) <= np.datetime64(self.time_end)
                    and np.datetime64(end) >= np.datetime64(self.time_start))

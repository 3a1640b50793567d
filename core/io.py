"""One way to write files, show progress and check arguments.

- Writers: every file diffsci writes goes through :func:`atomic_output` (a temporary file in
  the same folder, renamed onto the final name when complete, removed on failure), so a crash
  or a kill never leaves a half-written file under the final name. :func:`write_text`,
  :func:`write_json` (strict JSON: NaN and infinities become ``null``), :func:`write_netcdf`
  (engine netcdf4) and :func:`write_torch` (fsync before the rename) are the per-format entry
  points; PDB text goes through :func:`write_text`.
- :func:`progress`: the one progress bar (tqdm on stderr, refreshed at most once a second).
- Validators (:func:`check_int`, :func:`check_range`, :func:`check_choice`): library errors
  name the *parameter* (``num``), not a command-line flag; they raise
  :class:`~diffsci.core.errors.DiffsciError`, which the CLI prints as one line.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from diffsci.core.errors import DiffsciError

__all__ = [
    "atomic_output",
    "write_text",
    "write_json",
    "write_netcdf",
    "write_torch",
    "jsonable",
    "progress",
    "check_int",
    "check_range",
    "check_choice",
    "check_output_path",
]


# ------------------------------------------------------------------------------------ writers
@contextlib.contextmanager
def atomic_output(path, *, must_have_folder: bool = False):
    """Yield a temporary path beside ``path``; rename it onto ``path`` (``os.replace``) when the
    block succeeds, delete it when the block fails. The file gets the usual permissions
    (umask), not mkstemp's 0600. ``must_have_folder``: refuse a missing output folder instead
    of creating it.

    >>> with atomic_output("out.txt") as tmp:   # doctest: +SKIP
    ...     tmp.write_text("done")
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        if must_have_folder:
            raise DiffsciError(f"{path}: output folder {folder} does not exist")
        folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path, text: str, *, must_have_folder: bool = False) -> Path:
    """Write ``text`` to ``path`` atomically; returns the path."""
    with atomic_output(path, must_have_folder=must_have_folder) as tmp:
        tmp.write_text(text)
    return Path(path)


def jsonable(obj: Any) -> Any:
    """``obj`` with numpy scalars/arrays as Python values and NaN/inf floats as None, recursively
    (dicts, lists, tuples)."""
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path, obj: Any, *, indent: int | None = 1, must_have_folder: bool = False) -> Path:
    """Write ``obj`` as strict JSON (:func:`jsonable` first: NaN is written as null, never as the
    non-standard ``NaN``), atomically, with a final newline."""
    text = json.dumps(jsonable(obj), indent=indent, allow_nan=False) + "\n"
    return write_text(path, text, must_have_folder=must_have_folder)


def write_netcdf(ds, path, *, must_have_folder: bool = False, **kwargs) -> Path:
    """Write an xarray Dataset as netCDF-4 (engine netcdf4) atomically; ``kwargs`` go to
    ``Dataset.to_netcdf`` (e.g. ``encoding``)."""
    with atomic_output(path, must_have_folder=must_have_folder) as tmp:
        ds.to_netcdf(tmp, engine="netcdf4", **kwargs)
    return Path(path)


def write_torch(path, obj: Any) -> Path:
    """``torch.save(obj)`` to ``path`` atomically, fsync'd before the rename (checkpoints, caches)."""
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
    return Path(path)


# ----------------------------------------------------------------------------------- progress
def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
             enabled: bool = True, initial: int = 0, unit: str = "it", leave: bool = True):
    """The progress bar of every long job: tqdm on stderr, refreshed at most once a second.

    Use as an iterable wrapper (``for x in progress(items, desc="read")``) or as a bar
    (``bar = progress(total=n, desc="sample"); bar.update(1); bar.close()``; also a context
    manager). ``enabled=False`` gives a silent bar with the same methods."""
    return tqdm(iterable, total=total, desc=desc, disable=not enabled, initial=initial, unit=unit, leave=leave,
                mininterval=1.0, file=sys.stderr)


# --------------------------------------------------------------------------------- validators
def check_int(value, name: str, *, minimum: int = 1, maximum: int | None = None) -> int:
    """``value`` as an int in [minimum, maximum]; otherwise a DiffsciError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise DiffsciError(f"{name} must be an integer, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        span = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise DiffsciError(f"{name} must be {span}, got {value}")
    return int(value)


def check_range(value, name: str, lo: float | None = None, hi: float | None = None, *,
                lo_open: bool = False, hi_open: bool = False) -> float:
    """``value`` as a finite float in the interval (open or closed at each end); otherwise a
    DiffsciError naming ``name`` and the interval."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise DiffsciError(f"{name} must be a number, got {value!r}") from None
    bad = not math.isfinite(v)
    bad |= lo is not None and (v <= lo if lo_open else v < lo)
    bad |= hi is not None and (v >= hi if hi_open else v > hi)
    if bad:
        left = "-inf" if lo is None else f"{lo:g}"
        right = "inf" if hi is None else f"{hi:g}"
        interval = f"{'(' if lo_open or lo is None else '['}{left}, {right}{')' if hi_open or hi is None else ']'}"
        raise DiffsciError(f"{name} must lie in {interval}, got {value!r}")
    return v


def check_choice(value, name: str, choices: Sequence) -> Any:
    """``value`` if it is one of ``choices``; otherwise a DiffsciError listing them."""
    if value not in choices:
        raise DiffsciError(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")
    return value


def check_output_path(out, *, inputs=(), folder: bool = False, flag: str = "--out") -> Path:
    """Refuse an output that is one of ``inputs`` or cannot be written, before any work.

    ``out`` equal to an input (after resolving symlinks), inside an input store (zarr
    folder), a folder where a file is expected (or the reverse), a missing parent folder (for
    a file), or a folder where a test file cannot be created -> :class:`DiffsciError`.
    ``folder=True``: ``out`` is a run folder, created later with its parents.
    """
    p = Path(out)
    rp = p.resolve()
    for inp in inputs:
        if inp is None or not isinstance(inp, (str, os.PathLike)):  # e.g. an in-memory dataset
            continue
        ri = Path(inp).resolve()
        if rp == ri:
            raise DiffsciError(f"{flag} {out} is the input {inp}: refusing to overwrite it")
        if ri.is_dir() and ri in rp.parents:
            raise DiffsciError(f"{flag} {out} lies inside the input store {inp}")
    if folder:
        if p.exists() and not p.is_dir():
            raise DiffsciError(f"{flag} {out}: exists and is not a folder")
        probe = p
        while not probe.exists():
            probe = probe.parent
        if not probe.is_dir():
            raise DiffsciError(f"{flag} {out}: {probe} is not a folder")
    else:
        if p.is_dir():
            raise DiffsciError(f"{flag} {out}: is a folder, expected a file name")
        probe = p.parent if str(p.parent) else Path(".")
        if not probe.is_dir():
            raise DiffsciError(f"{flag} {out}: folder {probe} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".diffsci-write-test.", dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise DiffsciError(f"{flag} {out}: cannot write in {probe} ({exc.strerror or exc})") from None
    return p

"""Time-invariant fields of the training data (land-sea mask ``lsm``, orography) as static
inputs of the weather model: read from a weather file, checked and normalised.

A static field is named in the model option ``static_fields``; training reads its values from
the training data (:func:`read_static_fields`) and keeps them in the model config, so a
checkpoint rebuilds its inputs without the file; the network sees them at zero mean and unit
std (:func:`normalize_static_fields`). Such a field is never one of the modelled variables.

Dimension letters: S static fields, H latitude, W longitude.
"""

from __future__ import annotations

import numpy as np

from diffsci.core.errors import DiffsciError
from diffsci.weather.data import check_grid, open_layout
from diffsci.weather.layouts import NON_WEATHER, short_name

__all__ = ["read_static_fields", "static_values", "normalize_static_fields", "STATIC_CHUNK_MB"]

#: MiB per dask chunk when a static field with a time dim is checked for constancy
STATIC_CHUNK_MB = 64.0


def read_static_fields(path_or_dataset, names, latitude, longitude, *, required: bool = True) -> dict[str, np.ndarray]:
    """The time-invariant fields ``names`` (short, long or NCEP names) of a weather file, checked.

    The file is read in the internal layout (:func:`~diffsci.weather.data.open_layout`) and must
    be on the grid ``latitude`` Shape (H,), ``longitude`` Shape (W,) (degrees,
    :func:`check_grid`); each field as :func:`static_values` takes it. Returns ``{short name:
    Shape (H, W) float32}`` in the file's units, in the order of ``names``; ``required=False``
    skips the names the file lacks instead of refusing them.
    """
    ds = open_layout(path_or_dataset, chunks=None, chunk_mb=STATIC_CHUNK_MB)
    check_grid(ds, latitude, longitude, what="model")
    return static_values(ds, names, required=required)


def static_values(ds, names, *, required: bool = True) -> dict[str, np.ndarray]:
    """The time-invariant fields ``names`` of a dataset in the internal layout (from
    :func:`~diffsci.weather.data.open_layout`, its grid already checked). A field's dims must be
    ``(latitude, longitude)``, or ``(time, latitude, longitude)`` with the same values at every
    time (CDS files archive ``lsm`` at each time), finite and not constant
    (:func:`normalize_static_fields`). Returns ``{short name: Shape (H, W) float32}``;
    ``required=False`` skips the names the dataset lacks."""
    name = ds.attrs.get("diffsci_source", "<dataset>")
    out: dict[str, np.ndarray] = {}
    for asked in names:
        v = short_name(asked)
        if v not in ds.data_vars:
            if not required:
                continue
            avail = sorted(str(k) for k in ds.data_vars if k not in NON_WEATHER)
            raise DiffsciError(f"{name}: static field {asked!r} is missing (has {avail})")
        da = ds[v]
        if set(da.dims) - {"time"} != {"latitude", "longitude"}:
            raise DiffsciError(f"{name}: static field {asked!r} has dims {tuple(map(str, da.dims))}; expected "
                               "(latitude, longitude), or a time dim over which it does not vary")
        if "time" in da.dims:
            first = da.isel(time=0)
            differs = (da != first) & (da == da)  # NaNs, refused below, do not count as changes
            if bool(differs.any().compute(scheduler="synchronous")):  # one chunk at a time
                raise DiffsciError(f"{name}: static field {asked!r} varies in time; a static input must be the "
                                   "same at every time")
            da = first
        out[v] = np.asarray(da.values, dtype=np.float32)
    if out:
        normalize_static_fields(np.stack(list(out.values())), tuple(out), where=f"{name}: ")
    return out


def normalize_static_fields(values, names, *, where: str = "") -> np.ndarray:
    """Static fields at zero mean and unit standard deviation, each over its grid points
    (unweighted, population std), computed in float64.

    ``values`` Shape (S, H, W) in any units, ``names`` the S field names. A field with a NaN or
    infinite value, or with the same value everywhere (nothing to learn from; e.g. the land-sea
    mask of an all-ocean region), is refused: :class:`DiffsciError` naming it (``where``
    prefixes the message). Returns Shape (S, H, W) float32.
    """
    a = np.asarray(values, dtype=np.float64)
    if a.ndim != 3 or a.shape[0] != len(names):
        raise DiffsciError(f"{where}static fields: values of shape {a.shape}, expected ({len(names)}, H, W)")
    for field_name, f in zip(names, a):
        bad = int(np.count_nonzero(~np.isfinite(f)))
        if bad:
            raise DiffsciError(f"{where}static field {field_name!r} has {bad} NaN or infinite values of {f.size}")
        if f.min() == f.max():
            raise DiffsciError(f"{where}static field {field_name!r} is constant ({f.min():g} everywhere on the "
                               "grid): it carries no information; drop it from static_fields")
    mean = a.mean(axis=(1, 2), keepdims=True)
    return ((a - mean) / a.std(axis=(1, 2), keepdims=True)).astype(np.float32)

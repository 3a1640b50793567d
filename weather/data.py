"""Reading weather data in the internal convention, and what training and forecasting take from it.

:func:`open_weather` opens a file (netCDF, zarr) or a Dataset, brings it to the internal
convention with :func:`diffsci.weather.layouts.normalize_layout` (names, dims, coordinates,
units: see that module) and checks what a layout cannot: float32, read lazily (dask chunks) so a
file larger than memory streams; time steps regular (the step is read from the data,
:func:`time_step`); no NaNs; values inside the physical ranges of ``PHYSICAL_RANGES`` (and a
``z`` whose level means are near the standard atmosphere's). A ``trajectory(time)`` coordinate
(from the generator) marks runs: consecutive times with different ``trajectory`` are not
consecutive states of one run (see :func:`window_starts`).

Channels (:func:`stack_channels`): variables in the order requested; a variable with a
``level`` dim gives one channel per level in ascending level order, named ``{name}{level}``
(``"z500"``, ``"t850"``, WeatherBench 2's naming); a variable without levels gives one channel
named like the variable (``"z"``, ``"t2m"``). Two channels with one name (``u`` at 10 hPa and
the 10 m wind ``u10``) are refused.

Data larger than memory: ``open_weather(..., chunk_mb=M)`` splits every variable into dask
chunks of at most M MiB, :func:`compute_norm_stats` streams over blocks of time, and
:class:`StateReader` reads only the states a training batch asks for.

Also here: per-channel normalisation statistics (:class:`NormStats`), training windows, static
input features (sin/cos of latitude and longitude; the time-invariant fields of the data, such as
the land-sea mask, are read by :mod:`diffsci.weather.static`), and the grid check run before any
work (:func:`check_grid`; an output path is checked by :func:`diffsci.core.io.check_output_path`).

Dimension letters: T time, C channels, H latitude, W longitude, S static features.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import dask
import numpy as np
import pandas as pd
import xarray as xr

from diffsci.core.errors import DiffsciError
from diffsci.core.io import check_range
from diffsci.weather.layouts import G, NON_WEATHER, _check_monotonic, normalize_climatology, normalize_layout, short_name

# re-exported: weather.forecast imports these names from here
from diffsci.weather.layouts import CANONICAL_UNITS, normalize_unit as _norm_unit

__all__ = [
    "PHYSICAL_RANGES",
    "open_weather",
    "open_layout",
    "checked_weather",
    "open_climatology",
    "time_step",
    "check_grid",
    "channel_names",
    "stack_channels",
    "split_channels",
    "StateReader",
    "bounded_chunks",
    "NormStats",
    "compute_norm_stats",
    "static_features",
    "window_starts",
    "CANONICAL_UNITS",
    "_norm_unit",
]

# physically possible ranges in canonical units (refused outside); z is also checked per level
PHYSICAL_RANGES: dict[str, tuple[float, float]] = {
    "z": (-1.0e4, 6.0e5),  # 1000 hPa heights go below sea level (-1000 m) ; 1 hPa is ~48 km
    "t": (100.0, 400.0), "t2m": (150.0, 350.0),
    "u": (-250.0, 250.0), "v": (-250.0, 250.0), "u10": (-150.0, 150.0), "v10": (-150.0, 150.0),
    "q": (-1e-3, 0.1), "r": (-10.0, 200.0),
    "msl": (8.0e4, 1.15e5), "sp": (3.0e4, 1.15e5), "tp": (-1e-6, 1.0),
}


def _open(path_or_dataset, chunks, chunk_mb: float | None) -> tuple[xr.Dataset, str]:
    if isinstance(path_or_dataset, xr.Dataset):
        ds = path_or_dataset
        return (ds if chunk_mb is None else ds.chunk(bounded_chunks(ds, chunk_mb))), ds.attrs.get(
            "diffsci_source", "<dataset>")
    path = Path(path_or_dataset)
    name = str(path)
    if not path.exists():
        raise DiffsciError(f"{name}: no such file or directory")
    engine = "zarr" if path.is_dir() or path.suffix == ".zarr" else "netcdf4"
    try:
        if chunk_mb is None:
            ds = xr.open_zarr(path, chunks=chunks) if engine == "zarr" else xr.open_dataset(path, engine=engine,
                                                                                            chunks=chunks)
        else:
            # lazily indexed (nothing read, nothing cached), then dask chunks that read only their own part
            ds = xr.open_dataset(path, engine=engine, chunks=None, cache=False)
            ds = ds.chunk(bounded_chunks(ds, chunk_mb))
    except DiffsciError:
        raise
    except Exception as exc:  # netCDF4/zarr raise many types for a bad file
        raise DiffsciError(f"{name}: cannot open as netCDF or zarr ({type(exc).__name__}: {exc})") from None
    return ds, name


def bounded_chunks(ds: xr.Dataset, chunk_mb: float) -> dict[str, int]:
    """Dask chunk sizes per dim such that no chunk of a data variable exceeds ``chunk_mb`` MiB.

    Each variable is split along its leading dims first (a variable ``(time, level, lat, lon)``
    gets whole ``(level, lat, lon)`` slabs and as many times as fit; when one slab is too large,
    one time and as many levels as fit, and so on); a dim shared by variables takes the smallest
    size any of them needs. A size is rounded down to a multiple of the store's own chunks
    (``preferred_chunks``) but never below one stored chunk. Returns ``{dim: size}``.
    """
    budget = check_range(chunk_mb, "chunk_mb", 0.0, None, lo_open=True) * 2**20
    sizes: dict[str, int] = {}
    for var in ds.data_vars.values():
        shape, itemsize = var.shape, max(var.dtype.itemsize, 4)  # float32 after open_weather's cast
        for j, dim in enumerate(var.dims):
            inner = int(np.prod(shape[j + 1:], dtype=np.int64)) * itemsize
            if inner * shape[j] <= budget:
                break
            want = 1 if inner > budget else int(budget // inner)
            sizes[str(dim)] = min(sizes.get(str(dim), shape[j]), want)
            if inner <= budget:
                break
    preferred = {}
    for var in ds.data_vars.values():
        preferred.update(var.encoding.get("preferred_chunks") or {})
    for dim, n in sizes.items():
        p = int(preferred.get(dim, 1))
        sizes[dim] = max(p, n // p * p)
    return sizes


def open_weather(
    path_or_dataset,
    *,
    variables: list[str] | tuple[str, ...] | None = None,
    chunks="auto",
    chunk_mb: float | None = None,
    check_nans: bool = True,
    check_values: bool | str | None = None,
    forecast: bool = False,
) -> xr.Dataset:
    """Open ERA5 / WB2 / NCEP style data (netCDF, zarr or an in-memory Dataset) lazily, normalised.

    Parameters
    ----------
    path_or_dataset : str, Path or xr.Dataset
        A netCDF file (engine netcdf4), a zarr store (directory or ``*.zarr``) or a Dataset.
    variables : sequence of str, optional
        Variables to keep, by short, long or NCEP name; default: every variable with time,
        latitude and longitude dims.
    chunks : passed to xarray (dask chunks); ``None`` loads eagerly.
    chunk_mb : float, optional
        Instead of ``chunks``: dask chunks of at most this many MiB per data variable
        (:func:`bounded_chunks`), each reading only its own part of the file; the checks below
        then run one chunk at a time (the threaded scheduler would read many chunks ahead), so
        they hold a few chunks in memory, not the file.
    check_nans : bool
        Count NaNs per variable (streams over the data once) and raise if any.
    check_values : bool or "warn", optional
        Refuse values outside ``PHYSICAL_RANGES`` and ``z`` level means far from the standard
        atmosphere (same pass over the data as the NaN count); ``"warn"``: a warning naming the
        variable and its range instead. Default: on for states (data, initial conditions,
        truth), off for a forecast (an evaluator scores a forecast that went wrong, with
        ``"warn"``; it does not refuse it).
    forecast : bool
        The file is a forecast (init ``time`` and a lead dim, see :func:`normalize_layout`):
        init times must be distinct (they are sorted) but need not be regular.

    Returns
    -------
    xr.Dataset
        In the internal convention (:mod:`diffsci.weather.layouts`), variables float32: data
        variables ``([realization,] time, [prediction_timedelta,] [level,] latitude, longitude)``.

    Raises
    ------
    DiffsciError
        Unrecognised layouts, missing variables or coordinates, NaNs, impossible values,
        irregular time steps, duplicate or non-monotonic coordinates; the message names the file.
    """
    ds = open_layout(path_or_dataset, chunks=chunks, chunk_mb=chunk_mb, forecast=forecast)
    return checked_weather(ds, variables=variables, forecast=forecast, check_nans=check_nans,
                           check_values=check_values, scheduler=None if chunk_mb is None else "synchronous")


def open_layout(path_or_dataset, *, chunks="auto", chunk_mb: float | None = None, forecast: bool = False) -> xr.Dataset:
    """The first half of :func:`open_weather`: open (the arguments as there) and bring to the
    internal layout (:func:`~diffsci.weather.layouts.normalize_layout`), every variable kept
    (time-invariant fields too), nothing checked or loaded; ``attrs["diffsci_source"]`` names
    the file. A caller that needs two things from one file (the forecast's initial conditions
    and their static fields) opens it once with this."""
    ds, name = _open(path_or_dataset, chunks, chunk_mb)
    return normalize_layout(ds, path=name, forecast=forecast)


def checked_weather(ds: xr.Dataset, *, variables=None, forecast: bool = False, check_nans: bool = True,
                    check_values: bool | str | None = None, scheduler: str | None = None) -> xr.Dataset:
    """The second half of :func:`open_weather`, on a dataset from :func:`open_layout`: the
    variables kept, times, float32 and values checked (arguments as :func:`open_weather`'s;
    ``scheduler``: the dask scheduler of the checks, ``"synchronous"`` for one chunk at a time)."""
    name = ds.attrs.get("diffsci_source", "<dataset>")
    keep = _weather_variables(ds, variables, name)
    ds = _check_times(ds[keep], name, forecast)
    for v in keep:
        if ds[v].dtype != np.float32:
            ds[v] = ds[v].astype(np.float32)
    if check_values is None:
        check_values = not forecast
    _check_values(ds, keep, name, check_nans=check_nans, check_values=check_values, scheduler=scheduler)
    ds.attrs["diffsci_source"] = name
    return ds


def _weather_variables(ds: xr.Dataset, variables, name: str) -> list[str]:
    """The short names of the variables to keep, in order, each once: ``variables`` (short,
    long or NCEP names; each must be there, with a time dim), else every variable with time,
    latitude and longitude dims."""
    if variables is None:
        keep = [
            str(v) for v in ds.data_vars
            if v not in NON_WEATHER and {"time", "latitude", "longitude"} <= set(ds[v].dims)
        ]
        if not keep:
            raise DiffsciError(f"{name}: no variable with time, latitude and longitude dims")
        return keep
    keep = [short_name(v) for v in variables]
    missing = [v for v, k in zip(variables, keep) if k not in ds.data_vars]
    if missing:
        avail = sorted(str(v) for v in ds.data_vars if v not in NON_WEATHER)
        raise DiffsciError(f"{name}: missing variables {missing} (has {avail})")
    timeless = [v for v, k in zip(variables, keep) if "time" not in ds[k].dims]
    if timeless:
        raise DiffsciError(f"{name}: variables {timeless} have no time dim; a time-invariant field (land-sea "
                           "mask, orography) is a static input: name it in the model's static_fields")
    return list(dict.fromkeys(keep))


def _check_times(ds: xr.Dataset, name: str, forecast: bool) -> xr.Dataset:
    """Times must be dates; a forecast's init times distinct (then sorted), a series' increasing
    and regular (the step is the most common one; the others are named)."""
    times = np.asarray(ds["time"].values)
    if not np.issubdtype(times.dtype, np.datetime64):
        raise DiffsciError(f"{name}: time coordinate is {times.dtype}, expected dates (CF units 'hours since ...')")
    if forecast:
        uniq, counts = np.unique(times, return_counts=True)
        if np.any(counts > 1):
            dup = [str(pd.Timestamp(t)) for t in uniq[counts > 1][:5]]
            raise DiffsciError(f"{name}: duplicate init times {dup}")
        return ds.sortby("time")
    _check_monotonic(times, "time", name)
    if times.size > 1 and np.any(np.diff(times) < np.timedelta64(0)):
        raise DiffsciError(f"{name}: time is decreasing")
    if times.size > 2:
        d = np.diff(times)
        step = pd.Series(d).mode().iloc[0]
        bad = np.nonzero(d != step)[0]
        if bad.size:
            shown = ", ".join(f"{pd.Timestamp(times[i])} -> {pd.Timestamp(times[i + 1])}" for i in bad[:5])
            raise DiffsciError(
                f"{name}: irregular time steps (usual step {pd.Timedelta(step)}): {shown}"
                + (f" and {bad.size - 5} more" if bad.size > 5 else "")
            )
    return ds


def open_climatology(path_or_dataset) -> xr.Dataset:
    """Open a climatology (the reference of the anomaly correlation) with the truth's reader.

    ``path_or_dataset``: a netCDF file, zarr store or Dataset in any layout :func:`open_weather`
    reads (short, WB2 long or NCEP names; ``lat``/``lon``; levels named ``pressure``, ``lev``,
    ``isobaricInhPa``... or any CF pressure coordinate; units converted as the truth's, with the
    same warning), with dims ``[dayofyear,] [hour,] [level,] latitude, longitude``
    (:func:`~diffsci.weather.layouts.normalize_climatology`). Variables float32; NaNs and
    physically impossible values are refused, as in a truth.
    """
    ds, name = _open(path_or_dataset, "auto", None)
    ds = normalize_climatology(ds, path=name)
    keep = [str(v) for v in ds.data_vars if v not in NON_WEATHER and {"latitude", "longitude"} <= set(ds[v].dims)]
    if not keep:
        raise DiffsciError(f"{name}: no variable with latitude and longitude dims")
    ds = ds[keep]
    for v in keep:
        if ds[v].dtype != np.float32:
            ds[v] = ds[v].astype(np.float32)
    _check_values(ds, keep, name, check_nans=True, check_values=True)
    ds.attrs["diffsci_source"] = name
    return ds


def _check_values(ds: xr.Dataset, keep, name: str, *, check_nans: bool, check_values: bool | str,
                  scheduler: str | None = None) -> None:
    """NaN counts, ranges and z level means in one pass over the data (dask ``scheduler``:
    ``"synchronous"`` reads one chunk at a time, None the default threads). NaNs and impossible
    values raise :class:`DiffsciError`; with ``check_values="warn"`` the impossible values are
    a warning each instead."""
    keys, tasks = [], []
    for v in keep:
        if check_nans:
            keys.append((v, "nan")); tasks.append(ds[v].isnull().sum())
        if check_values and v in PHYSICAL_RANGES:
            keys.append((v, "min")); tasks.append(ds[v].min())
            keys.append((v, "max")); tasks.append(ds[v].max())
            if v == "z" and "level" in ds[v].dims:
                keys.append((v, "level_mean")); tasks.append(ds[v].mean([d for d in ds[v].dims if d != "level"]))
    if not tasks:
        return
    got = dict(zip(keys, dask.compute(*tasks, scheduler=scheduler)))
    bad = {v: int(got[(v, "nan")]) for v in keep if (v, "nan") in got and int(got[(v, "nan")])}
    if bad:
        shown = ", ".join(f"{v}: {n} NaN of {ds[v].size}" for v, n in bad.items())
        raise DiffsciError(f"{name}: NaN values ({shown})")
    problems = [p for v in keep if (v, "min") in got for p in _impossible_values(ds, v, got, name)]
    if problems and check_values == "warn":
        for p in problems:
            warnings.warn(f"{p}; scored as given", stacklevel=3)
    elif problems:
        raise DiffsciError(problems[0])


def _impossible_values(ds: xr.Dataset, v: str, got: dict, name: str) -> list[str]:
    """What is physically impossible in ``v`` given its min, max (and z level means) in ``got``."""
    lo, hi = PHYSICAL_RANGES[v]
    vmin, vmax = float(got[(v, "min")]), float(got[(v, "max")])
    units = ds[v].attrs.get("units", CANONICAL_UNITS.get(v, "?"))
    out = []
    if np.isfinite(vmin) and (vmin < lo or vmax > hi):
        out.append(f"{name}: {v} ranges {vmin:.6g}..{vmax:.6g} {units}, outside the physically "
                   f"possible {lo:g}..{hi:g} {CANONICAL_UNITS.get(v, '')} (wrong units?)")
    if (v, "level_mean") in got:
        means = np.asarray(got[(v, "level_mean")].values, dtype=np.float64)
        levels = np.asarray(ds["level"].values, dtype=np.float64)
        expect = _isa_height(levels)
        off = (means / G < 0.5 * expect - 1000.0) | (means / G > 1.5 * expect + 1000.0)
        if np.any(off):
            k = int(np.argmax(off))
            out.append(f"{name}: z at {levels[k]:g} hPa averages {means[k]:.6g} {units}, far from the standard "
                       f"atmosphere's {G * expect[k]:.6g} m**2 s**-2 (geopotential height in m labelled as geopotential?)")
    return out


def _isa_height(p_hpa) -> np.ndarray:
    """Geopotential height (m) of pressure levels in the ICAO standard atmosphere (ICAO 1993)."""
    p = np.asarray(p_hpa, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        tropo = 44330.8 * (1.0 - (p / 1013.25) ** 0.190263)
        strato = 11000.0 + 6341.62 * np.log(226.321 / p)
    return np.where(p >= 226.321, tropo, strato)


def time_step(ds: xr.Dataset) -> pd.Timedelta | None:
    """The (regular, checked by :func:`open_weather`) time step of ``ds``; None with one time."""
    t = np.asarray(ds["time"].values)
    if t.size < 2:
        return None
    return pd.Timedelta(t[1] - t[0])


def check_grid(ds: xr.Dataset, latitude, longitude, *, what: str = "checkpoint", atol: float = 1e-3) -> None:
    """Raise :class:`DiffsciError` unless ``ds`` is on the grid (latitude, longitude).

    ``latitude`` Shape (H,) and ``longitude`` Shape (W,), degrees, compared within ``atol``
    degrees in the internal convention (ascending latitude, longitude in [0, 360) or one
    contiguous run for a regional domain across 0 deg). ``what`` names the reference in the message.
    """
    name = ds.attrs.get("diffsci_source", "<dataset>")
    lat = np.asarray(ds["latitude"].values, dtype=np.float64)
    lon = np.asarray(ds["longitude"].values, dtype=np.float64)
    want_lat = np.asarray(latitude, dtype=np.float64)
    want_lon = np.asarray(longitude, dtype=np.float64)
    def desc(a: np.ndarray) -> str:
        return f"{a.size} points {a[0]:g}..{a[-1]:g}" if a.size else "0 points"
    if lat.shape != want_lat.shape or not np.allclose(lat, want_lat, atol=atol):
        raise DiffsciError(f"{name}: latitude grid ({desc(lat)}) does not match the {what} ({desc(want_lat)})")
    if lon.shape != want_lon.shape or not np.allclose(lon, want_lon, atol=atol):
        raise DiffsciError(f"{name}: longitude grid ({desc(lon)}) does not match the {what} ({desc(want_lon)})")


def channel_names(ds: xr.Dataset, variables) -> list[str]:
    """Channel names in stacking order: ``"z"`` or ``"t500"`` (see module docstring)."""
    names: list[str] = []
    for v in variables:
        v = short_name(v)
        if v not in ds:
            raise DiffsciError(f"{ds.attrs.get('diffsci_source', '<dataset>')}: missing variable {v!r}")
        if "level" in ds[v].dims:
            names += [f"{v}{lev:g}" for lev in np.asarray(ds["level"].values, dtype=np.float64)]
        else:
            names.append(v)
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DiffsciError(f"{ds.attrs.get('diffsci_source', '<dataset>')}: channel names {dup} would be ambiguous "
                           "(a level variable and a single-level one, e.g. u at 10 hPa and the 10 m wind u10); "
                           "select other --variables")
    return names


def _stack(ds: xr.Dataset, variables) -> np.ndarray:
    parts = []
    for v in variables:
        a = np.asarray(ds[short_name(v)].values, dtype=np.float32)
        if "level" in ds[short_name(v)].dims:
            parts.append(a)  # (T, level, H, W)
        else:
            parts.append(a[:, None])
    return np.concatenate(parts, axis=1)


def stack_channels(ds: xr.Dataset, variables, *, as_torch: bool = False):
    """Load ``variables`` of ``ds`` (all its times) as one array of channels.

    Parameters
    ----------
    ds : xr.Dataset
        In the internal convention (from :func:`open_weather`); slice time first if large.
    variables : sequence of str

    Returns
    -------
    (array, names)
        Shape (T, C, H, W) float32 numpy array (torch tensor if ``as_torch``) and the C
        channel names.
    """
    if "realization" in ds.dims:
        raise DiffsciError("stack_channels: select one ensemble member first (ds.isel(realization=m))")
    names = channel_names(ds, variables)
    x = _stack(ds, variables)
    if as_torch:
        import torch  # kept here: torch is heavy and reading or scoring weather files never needs it

        return torch.from_numpy(x), names
    return x, names


def split_channels(x: np.ndarray, ds: xr.Dataset, variables) -> dict[str, np.ndarray]:
    """The inverse of :func:`stack_channels`: ``x`` Shape (..., C, H, W), channels in the order
    :func:`channel_names` gives for ``ds`` and ``variables`` -> ``{short name: Shape (..., [L,]
    H, W)}`` (L the levels of ``ds`` for a variable with a level dim); views of ``x``."""
    out, c0 = {}, 0
    for v in map(short_name, variables):
        if "level" in ds[v].dims:
            n = ds.sizes["level"]
            out[v] = x[..., c0:c0 + n, :, :]
        else:
            n = 1
            out[v] = x[..., c0, :, :]
        c0 += n
    if c0 != x.shape[-3]:
        raise DiffsciError(f"split_channels: {x.shape[-3]} channels, the variables {list(variables)} give {c0}")
    return out


class StateReader:
    """The states of a lazily opened dataset, read on demand.

    ``reader[index]`` for a 1-D integer array ``index`` Shape (n,) returns Shape (n, C, H, W)
    float32, equal to ``stack_channels(ds, variables)[0][index]``: each run of consecutive
    indices is read as one slice of ``time`` (all in one dask compute), so memory holds the
    states asked for and the dask chunks being read, never the whole dataset.
    """

    def __init__(self, ds: xr.Dataset, variables):
        if "realization" in ds.dims:
            raise DiffsciError("StateReader: select one ensemble member first (ds.isel(realization=m))")
        self.channels = channel_names(ds, variables)
        self.variables = [short_name(v) for v in variables]
        self.ds = ds[self.variables]

    def __len__(self) -> int:
        return self.ds.sizes["time"]

    def __getitem__(self, index) -> np.ndarray:
        index = np.asarray(index, dtype=np.int64)
        if index.ndim != 1:
            raise DiffsciError(f"StateReader: index must be 1-D, got shape {index.shape}")
        if index.size and (index.min() < 0 or index.max() >= len(self)):
            raise IndexError(f"StateReader: time index out of range 0..{len(self) - 1}")
        uniq, inverse = np.unique(index, return_inverse=True)
        runs = np.split(uniq, np.flatnonzero(np.diff(uniq) != 1) + 1) if uniq.size else []
        parts = dask.compute(*(self.ds.isel(time=slice(int(r[0]), int(r[-1]) + 1)) for r in runs))
        x = np.concatenate([_stack(part, self.variables) for part in parts]) if parts else np.zeros(
            (0, len(self.channels), self.ds.sizes["latitude"], self.ds.sizes["longitude"]), np.float32)
        return x[inverse]


@dataclass(frozen=True)
class NormStats:
    """Per-channel normalisation statistics.

    Attributes
    ----------
    channels : tuple of str
    mean, std : tuple of float
        Mean and standard deviation of each channel over time and grid points.
    residual_std : tuple of float
        Standard deviation of one-step residuals ``X[t+1] - X[t]`` (within trajectories).
    """

    channels: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    residual_std: tuple[float, ...]
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        n = len(self.channels)
        if not (len(self.mean) == len(self.std) == len(self.residual_std) == n):
            raise DiffsciError("NormStats: channels, mean, std and residual_std differ in length")

    def to_dict(self) -> dict:
        return {
            "channels": list(self.channels),
            "mean": list(self.mean),
            "std": list(self.std),
            "residual_std": list(self.residual_std),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "NormStats":
        try:
            return cls(
                tuple(d["channels"]),
                tuple(float(x) for x in d["mean"]),
                tuple(float(x) for x in d["std"]),
                tuple(float(x) for x in d["residual_std"]),
            )
        except (KeyError, TypeError) as exc:
            raise DiffsciError(f"NormStats: bad dictionary ({exc})") from None

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """mean, std, residual_std as float32 arrays of shape (C,)."""
        return tuple(np.asarray(a, dtype=np.float32) for a in (self.mean, self.std, self.residual_std))


def compute_norm_stats(
    ds: xr.Dataset, variables, time_slice: slice | None = None, *, block: int = 256, max_mb: float | None = None
) -> NormStats:
    """Per-channel mean/std and one-step residual std, streaming over blocks of time.

    Residuals are only taken between consecutive times of the same ``trajectory``.
    Standard deviations are population (ddof = 0) values, accumulated in float64 around
    a per-channel shift (the first block's mean) for accuracy.

    ``block`` times are read at once (float32), the sums taken per channel in float64;
    ``max_mb`` (MiB), when given, lowers ``block`` so that a block and its working arrays stay
    within that budget.
    """
    if "realization" in ds.dims:
        raise DiffsciError("compute_norm_stats: select one ensemble member first (ds.isel(realization=m))")
    if time_slice is not None:
        ds = ds.sel(time=time_slice)
    nt = ds.sizes["time"]
    if nt < 2:
        raise DiffsciError("compute_norm_stats: need at least 2 time steps")
    names = channel_names(ds, variables)
    nc, points = len(names), ds.sizes["latitude"] * ds.sizes["longitude"]
    if max_mb is not None:
        step_bytes = points * (8 * nc + 32)  # the float32 block twice, about 4 float64 copies of one channel
        block = min(block, max(1, int(check_range(max_mb, "max_mb", 0.0, None, lo_open=True) * 2**20 // step_bytes)))
    traj = np.asarray(ds["trajectory"].values) if "trajectory" in ds.coords else np.zeros(nt, dtype=int)
    keep = [short_name(v) for v in variables]
    shift = None
    s1, s2, r1, r2 = (np.zeros(nc) for _ in range(4))
    prev = None  # (1, C, H, W) the last state of the previous block
    for start in range(0, nt, block):
        part = ds[keep].isel(time=slice(start, start + block)).compute(scheduler="synchronous")
        x = _stack(part, variables)  # (t, C, H, W) float32
        if shift is None:
            shift = x.mean(axis=(0, 2, 3), dtype=np.float64)
        first = start if prev is None else start - 1
        ok = traj[first + 1 : start + len(x)] == traj[first : start + len(x) - 1]  # (t - 1 or t,) pairs in one run
        for c in range(nc):
            xc = x[:, c].astype(np.float64) - shift[c]  # (t, H, W)
            s1[c] += xc.sum(); s2[c] += np.vdot(xc, xc)
            if prev is not None:
                xc = np.concatenate([prev[:, c].astype(np.float64) - shift[c], xc])
            d = (xc[1:] - xc[:-1])[ok]
            r1[c] += d.sum(); r2[c] += np.vdot(d, d)
        prev = x[-1:]
    n = nt * points
    nr = int(np.count_nonzero(traj[1:] == traj[:-1])) * points
    mean = shift + s1 / n
    var = np.maximum(s2 / n - (s1 / n) ** 2, 0.0)
    if nr == 0:
        raise DiffsciError("compute_norm_stats: no consecutive time steps within a trajectory")
    rvar = np.maximum(r2 / nr - (r1 / nr) ** 2, 0.0)
    still = [c for c, r, v in zip(names, rvar, var) if np.sqrt(r) <= 1e-7 * np.sqrt(v)]
    if still:
        raise DiffsciError(f"compute_norm_stats: {still} do not change from one time step to the next (one-step "
                           "residual std 0), so there is nothing to forecast; a time-invariant field (land-sea "
                           "mask, orography) is a static input (the model's static_fields), else leave it out "
                           "(--variables)")
    return NormStats(
        tuple(names),
        tuple(float(a) for a in mean),
        tuple(float(a) for a in np.sqrt(var)),
        tuple(float(a) for a in np.sqrt(rvar)),
    )


def static_features(latitude, longitude, land_sea_mask=None) -> np.ndarray:
    """Static input fields: sin/cos latitude, sin/cos longitude (and the mask if given).

    Parameters
    ----------
    latitude : array, Shape (H,), degrees
    longitude : array, Shape (W,), degrees
    land_sea_mask : array, optional, Shape (H, W)

    Returns
    -------
    np.ndarray
        Shape (S, H, W), float32, S = 4 (5 with the mask).
    """
    lat = np.deg2rad(np.asarray(latitude, dtype=np.float64))[:, None]
    lon = np.deg2rad(np.asarray(longitude, dtype=np.float64))[None, :]
    shape = (lat.shape[0], lon.shape[1])
    feats = [np.broadcast_to(f, shape) for f in (np.sin(lat), np.cos(lat), np.sin(lon), np.cos(lon))]
    if land_sea_mask is not None:
        m = np.asarray(land_sea_mask, dtype=np.float64)
        if m.shape != shape:
            raise DiffsciError(f"land_sea_mask: shape {m.shape} does not match the grid {shape}")
        feats.append(m)
    return np.stack(feats).astype(np.float32)


def window_starts(ds: xr.Dataset, history: int = 2, lead: int = 1) -> np.ndarray:
    """Indices ``i`` such that times ``i .. i + history - 1 + lead`` lie in one trajectory.

    Use them to draw training samples (``history`` previous states, ``lead`` targets)
    that never cross from one generated run to the next. Returns Shape (N,) int64, ascending.
    """
    nt = ds.sizes["time"]
    span = history + lead
    if span > nt:
        return np.zeros(0, dtype=np.int64)
    traj = np.asarray(ds["trajectory"].values) if "trajectory" in ds.coords else np.zeros(nt, dtype=int)
    starts = np.arange(nt - span + 1)
    ok = traj[starts] == traj[starts + span - 1]
    return starts[ok]

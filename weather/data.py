"""Loading ERA5 / WeatherBench 2 style data into one internal convention.

Internal convention (what :func:`open_weather` returns, everything else here assumes it):

* variables named by their **CDS short name** (``z``, ``t``, ``u``, ``v``, ``vo``, ``d``,
  ``q``, ``r``, ``t2m``, ``msl``, ``u10``, ``v10``, ``sp``, ``tp``, ``lsm``); WB2 long names
  (``geopotential``, ``2m_temperature``, ...) are renamed, see ``LONG_TO_SHORT``;
* dims ``time`` (renamed from ``valid_time``), optional ``level`` (from ``pressure_level``,
  ``isobaricInhPa`` or ``plev``; hPa, ascending), ``latitude`` ascending (south -> north),
  ``longitude`` in [0, 360) ascending; an optional leading ``member`` dim is kept; data
  variables are transposed to ``([member,] time, [level,] latitude, longitude)``;
* data float32, read lazily (dask chunks) so a file larger than memory streams;
* time steps regular; no NaNs; coordinates strictly monotonic without duplicates;
* a ``trajectory(time)`` coordinate (from the generator) is kept: consecutive times with
  different ``trajectory`` are not consecutive states of one run (see :func:`window_starts`).

Channels (:func:`stack_channels`): variables in the order requested; a variable with a
``level`` dim gives one channel per level in ascending level order, named ``"t@500"``; a
variable without levels gives one channel named like the variable (``"z"``, ``"t2m"``).

Dimension letters: T time, C channels, H latitude, W longitude, S static features.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from diffsci.core.errors import DiffsciError

__all__ = [
    "LONG_TO_SHORT",
    "open_weather",
    "check_grid",
    "channel_names",
    "stack_channels",
    "NormStats",
    "compute_norm_stats",
    "static_features",
    "window_starts",
]

LONG_TO_SHORT: dict[str, str] = {
    "geopotential": "z",
    "temperature": "t",
    "u_component_of_wind": "u",
    "v_component_of_wind": "v",
    "vorticity": "vo",
    "divergence": "d",
    "specific_humidity": "q",
    "relative_humidity": "r",
    "vertical_velocity": "w",
    "2m_temperature": "t2m",
    "mean_sea_level_pressure": "msl",
    "10m_u_component_of_wind": "u10",
    "10m_v_component_of_wind": "v10",
    "surface_pressure": "sp",
    "total_precipitation": "tp",
    "land_sea_mask": "lsm",
}
_DIM_ALIASES: dict[str, str] = {
    "valid_time": "time",
    "pressure_level": "level",
    "isobaricInhPa": "level",
    "plev": "level",
    "lat": "latitude",
    "lon": "longitude",
}
_NON_WEATHER = {"sim_state"}


def _short(name: str) -> str:
    return LONG_TO_SHORT.get(name, name)


def _open(path_or_dataset, chunks) -> tuple[xr.Dataset, str]:
    if isinstance(path_or_dataset, xr.Dataset):
        return path_or_dataset, "<dataset>"
    path = Path(path_or_dataset)
    name = str(path)
    if not path.exists():
        raise DiffsciError(f"{name}: no such file or directory")
    try:
        if path.is_dir() or path.suffix == ".zarr":
            ds = xr.open_zarr(path, chunks=chunks)
        else:
            ds = xr.open_dataset(path, engine="netcdf4", chunks=chunks)
    except DiffsciError:
        raise
    except Exception as exc:  # netCDF4/zarr raise many types for a bad file
        raise DiffsciError(f"{name}: cannot open as netCDF or zarr ({type(exc).__name__}: {exc})") from None
    return ds, name


def _check_monotonic(values: np.ndarray, coord: str, name: str) -> None:
    if values.size < 2:
        return
    d = np.diff(values)
    if np.any(d == 0):
        dup = values[1:][d == 0]
        raise DiffsciError(f"{name}: duplicate {coord} values {list(dup[:5])}")
    if not (np.all(d > 0) or np.all(d < 0)):
        raise DiffsciError(f"{name}: {coord} is not monotonic")


def open_weather(
    path_or_dataset,
    *,
    variables: list[str] | tuple[str, ...] | None = None,
    chunks="auto",
    check_nans: bool = True,
) -> xr.Dataset:
    """Open ERA5 / WB2 style data (netCDF, zarr or an in-memory Dataset) lazily, normalised.

    Parameters
    ----------
    path_or_dataset : str, Path or xr.Dataset
        A netCDF file (engine netcdf4), a zarr store (directory or ``*.zarr``) or a Dataset.
    variables : sequence of str, optional
        Variables to keep, by short or long name; default: every variable with time,
        latitude and longitude dims.
    chunks : passed to xarray (dask chunks); ``None`` loads eagerly.
    check_nans : bool
        Count NaNs per variable (streams over the data once) and raise if any.

    Returns
    -------
    xr.Dataset
        In the internal convention described in the module docstring.

    Raises
    ------
    DiffsciError
        Missing variables or coordinates, NaNs, irregular time steps, duplicate or
        non-monotonic coordinates; the message names the file.
    """
    ds, name = _open(path_or_dataset, chunks)
    ds = ds.rename({k: v for k, v in _DIM_ALIASES.items() if k in ds.variables or k in ds.dims})
    ds = ds.rename({k: LONG_TO_SHORT[k] for k in ds.data_vars if k in LONG_TO_SHORT})
    for coord in ("time", "latitude", "longitude"):
        if coord not in ds.dims:
            raise DiffsciError(f"{name}: no '{coord}' dimension (dims: {sorted(map(str, ds.dims))})")
    if variables is None:
        keep = [
            str(v) for v in ds.data_vars
            if v not in _NON_WEATHER and {"time", "latitude", "longitude"} <= set(ds[v].dims)
        ]
        if not keep:
            raise DiffsciError(f"{name}: no variable with time, latitude and longitude dims")
    else:
        keep = [_short(v) for v in variables]
        missing = [v for v, k in zip(variables, keep) if k not in ds.data_vars]
        if missing:
            avail = sorted(str(v) for v in ds.data_vars if v not in _NON_WEATHER)
            raise DiffsciError(f"{name}: missing variables {missing} (has {avail})")
    ds = ds[keep]
    # drop scalar bookkeeping coordinates of CDS downloads (number, expver, ...)
    ds = ds.drop_vars([c for c in ds.coords if c not in ds.dims and c != "trajectory" and ds[c].ndim == 0])

    # --- coordinates ---
    times = np.asarray(ds["time"].values)
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
    lat = np.asarray(ds["latitude"].values, dtype=np.float64)
    _check_monotonic(lat, "latitude", name)
    if np.any(np.abs(lat) > 90 + 1e-6):
        raise DiffsciError(f"{name}: latitude outside [-90, 90]")
    lon = np.asarray(ds["longitude"].values, dtype=np.float64)
    _check_monotonic(lon, "longitude", name)
    lon360 = np.mod(lon, 360.0)
    lon360[np.isclose(lon360, 360.0)] = 0.0
    if np.unique(np.round(lon360, 6)).size != lon360.size:
        raise DiffsciError(f"{name}: longitude has duplicate values modulo 360")
    ds = ds.assign_coords(longitude=("longitude", lon360, ds["longitude"].attrs))
    ds = ds.sortby("longitude")
    if lat[0] > lat[-1]:
        ds = ds.sortby("latitude")
    if "level" in ds.dims:
        lev = np.asarray(ds["level"].values)
        _check_monotonic(lev, "level", name)
        if lev[0] > lev[-1]:
            ds = ds.sortby("level")
    lead = [d for d in ("member", "time", "level") if d in ds.dims]
    ds = ds.transpose(*lead, "latitude", "longitude", ...)

    # --- values ---
    for v in keep:
        if ds[v].dtype != np.float32:
            ds[v] = ds[v].astype(np.float32)
    if check_nans:
        counts = {v: int(ds[v].isnull().sum().compute()) for v in keep}
        bad = {v: n for v, n in counts.items() if n}
        if bad:
            shown = ", ".join(f"{v}: {n} NaN of {ds[v].size}" for v, n in bad.items())
            raise DiffsciError(f"{name}: NaN values ({shown})")
    ds.attrs["diffsci_source"] = name
    return ds


def check_grid(ds: xr.Dataset, latitude, longitude, *, what: str = "checkpoint", atol: float = 1e-3) -> None:
    """Raise :class:`DiffsciError` unless ``ds`` is on the grid (latitude, longitude).

    Both are compared in the internal convention (ascending latitude, longitude in [0, 360)).
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
    """Channel names in stacking order: ``"z"`` or ``"t@500"`` (see module docstring)."""
    names: list[str] = []
    for v in variables:
        v = _short(v)
        if v not in ds:
            raise DiffsciError(f"{ds.attrs.get('diffsci_source', '<dataset>')}: missing variable {v!r}")
        if "level" in ds[v].dims:
            names += [f"{v}@{lev:g}" for lev in np.asarray(ds["level"].values, dtype=np.float64)]
        else:
            names.append(v)
    return names


def _stack(ds: xr.Dataset, variables) -> np.ndarray:
    parts = []
    for v in variables:
        a = np.asarray(ds[_short(v)].values, dtype=np.float32)
        if "level" in ds[_short(v)].dims:
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
    if "member" in ds.dims:
        raise DiffsciError("stack_channels: select one member first (ds.isel(member=m))")
    names = channel_names(ds, variables)
    x = _stack(ds, variables)
    if as_torch:
        import torch

        return torch.from_numpy(x), names
    return x, names


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
    ds: xr.Dataset, variables, time_slice: slice | None = None, *, block: int = 256
) -> NormStats:
    """Per-channel mean/std and one-step residual std, streaming over blocks of time.

    Residuals are only taken between consecutive times of the same ``trajectory``.
    Standard deviations are population (ddof = 0) values, accumulated in float64 around
    a per-channel shift (the first block's mean) for accuracy.
    """
    if "member" in ds.dims:
        raise DiffsciError("compute_norm_stats: select one member first (ds.isel(member=m))")
    if time_slice is not None:
        ds = ds.sel(time=time_slice)
    nt = ds.sizes["time"]
    if nt < 2:
        raise DiffsciError("compute_norm_stats: need at least 2 time steps")
    names = channel_names(ds, variables)
    traj = np.asarray(ds["trajectory"].values) if "trajectory" in ds.coords else np.zeros(nt, dtype=int)
    shift = None
    n = 0
    s1 = s2 = r1 = r2 = None
    nr = 0
    prev, prev_traj = None, None
    for start in range(0, nt, block):
        x = _stack(ds.isel(time=slice(start, start + block)), variables).astype(np.float64)  # (t, C, H, W)
        tj = traj[start : start + block]
        if shift is None:
            shift = x.mean(axis=(0, 2, 3))
            s1 = np.zeros_like(shift); s2 = np.zeros_like(shift)
            r1 = np.zeros_like(shift); r2 = np.zeros_like(shift)
        xc = x - shift[None, :, None, None]
        s1 += xc.sum(axis=(0, 2, 3)); s2 += (xc**2).sum(axis=(0, 2, 3))
        n += x.shape[0] * x.shape[2] * x.shape[3]
        full = x if prev is None else np.concatenate([prev, x])
        ftj = tj if prev is None else np.concatenate([prev_traj, tj])
        ok = ftj[1:] == ftj[:-1]
        d = (full[1:] - full[:-1])[ok]
        r1 += d.sum(axis=(0, 2, 3)); r2 += (d**2).sum(axis=(0, 2, 3))
        nr += d.shape[0] * x.shape[2] * x.shape[3]
        prev, prev_traj = x[-1:], tj[-1:]
    mean = shift + s1 / n
    var = np.maximum(s2 / n - (s1 / n) ** 2, 0.0)
    if nr == 0:
        raise DiffsciError("compute_norm_stats: no consecutive time steps within a trajectory")
    rvar = np.maximum(r2 / nr - (r1 / nr) ** 2, 0.0)
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
    that never cross from one generated run to the next.
    """
    nt = ds.sizes["time"]
    span = history + lead
    if span > nt:
        return np.zeros(0, dtype=np.int64)
    traj = np.asarray(ds["trajectory"].values) if "trajectory" in ds.coords else np.zeros(nt, dtype=int)
    starts = np.arange(nt - span + 1)
    ok = traj[starts] == traj[starts + span - 1]
    return starts[ok]


"""Loading ERA5 / WeatherBench 2 / NCEP style data into one internal convention.

Every input role (training data, forecast initial conditions, truth, and a forecast given to
``evaluate``) goes through :func:`normalize_layout`, once, at the edge. It recognises the
layouts these tools write:

* **cfgrib / ECMWF** (GRIB opened with ``engine="cfgrib"`` and saved): dims ``number, time,
  isobaricInhPa, latitude, longitude``; ``step`` a scalar timedelta or a dim; ``valid_time``
  over ``time`` (or ``time x step``); a scalar ``isobaricInhPa`` when one level was selected;
  scalar ``surface`` / ``heightAboveGround`` / ``meanSea`` coords; ``GRIB_*`` attributes;
* **the new CDS netCDF**: ``valid_time`` as the time dim, ``pressure_level``, ``number``
  scalar or dim, ``expver``; forecast-type data with ``forecast_reference_time`` and
  ``forecast_period``; and the CDS netCDF before 2024 (``time``, ``level``, packed int16, an
  ``expver`` dim where ERA5T fills the last times: the slots are merged);
* **WeatherBench 2** (zarr or netCDF): long names (``geopotential``, ``2m_temperature``...,
  see ``LONG_TO_SHORT``), ``level``, ``time``, dims in any order, and WB2 forecasts
  (``prediction_timedelta``, ``realization``);
* **NCEP/NCAR reanalysis**: ``lat``, ``lon``, ``level`` / ``pressure`` / ``lev`` in millibar,
  names ``hgt`` (geopotential height, m), ``air``, ``uwnd``, ``vwnd``... (``NCEP_TO_SHORT``).

Internal convention (what :func:`open_weather` returns, everything else here assumes it):

* variables named by their **CDS short name** (``z``, ``t``, ``u``, ``v``, ``vo``, ``d``,
  ``q``, ``r``, ``t2m``, ``msl``, ``u10``, ``v10``, ``sp``, ``tp``, ``lsm``);
* dims ``time`` (the valid time of each state; for a forecast, the init time) and, for a
  forecast, ``prediction_timedelta`` (the lead); an optional ensemble dim ``realization``
  (renamed from ``number``, ``member``, ``ensemble``); optional ``level`` (renamed from
  ``pressure_level``, ``isobaricInhPa``, ``plev``, ``pressure``, ``lev``; hPa, converted from
  Pa when the units say so; ascending); ``latitude`` **ascending** (south -> north: files
  stored 90 -> -90 are flipped, so every input role and every checkpoint agree);
  ``longitude`` in [0, 360) ascending (-180..180 is recognised and rolled), except a regional
  domain across 0 deg, which keeps one west-to-east run (-10..40, :func:`contiguous_longitudes`);
* data variables transposed to ``([realization,] time, [prediction_timedelta,] [level,]
  latitude, longitude)``; float32, read lazily (dask chunks) so a file larger than memory
  streams;
* units canonical for the known variables (``CANONICAL_UNITS``): what is unambiguous is
  converted with a warning (geopotential height in m / gpm given for ``z`` -> times g =
  9.80665; degC -> K; hPa -> Pa; g/kg -> kg/kg), other units are refused; values outside
  the physical ranges of ``PHYSICAL_RANGES`` (and a ``z`` whose level means are far from the
  standard atmosphere's) are refused;
* time steps regular (the step is read from the data, :func:`time_step`); no NaNs;
  coordinates strictly monotonic without duplicates;
* a ``trajectory(time)`` coordinate (from the generator) is kept: consecutive times with
  different ``trajectory`` are not consecutive states of one run (see :func:`window_starts`).

Channels (:func:`stack_channels`): variables in the order requested; a variable with a
``level`` dim gives one channel per level in ascending level order, named ``{name}{level}``
(``"z500"``, ``"t850"``, WeatherBench 2's naming); a variable without levels gives one channel
named like the variable (``"z"``, ``"t2m"``). Two channels with one name (``u`` at 10 hPa and
the 10 m wind ``u10``) are refused.

Dimension letters: T time, C channels, H latitude, W longitude, S static features.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from diffsci.core.errors import DiffsciError

__all__ = [
    "LONG_TO_SHORT",
    "NCEP_TO_SHORT",
    "CANONICAL_UNITS",
    "PHYSICAL_RANGES",
    "G",
    "normalize_layout",
    "contiguous_longitudes",
    "open_weather",
    "time_step",
    "check_grid",
    "check_output_path",
    "channel_names",
    "stack_channels",
    "NormStats",
    "compute_norm_stats",
    "static_features",
    "window_starts",
]

G = 9.80665  # standard gravity (m s-2): geopotential = G * geopotential height

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
NCEP_TO_SHORT: dict[str, str] = {
    "hgt": "z",  # geopotential height (m): converted to geopotential by its units
    "air": "t",
    "uwnd": "u",
    "vwnd": "v",
    "shum": "q",
    "rhum": "r",
    "omega": "w",
    "slp": "msl",
    "pres": "sp",
}
ENSEMBLE_DIMS = ("realization", "number", "member", "ensemble")
LEVEL_NAMES = ("level", "pressure_level", "isobaricInhPa", "plev", "pressure", "lev")
_LAT_NAMES = ("latitude", "lat")
_LON_NAMES = ("longitude", "lon")
_LEAD_NAMES = ("prediction_timedelta", "step", "forecast_period", "lead_time")
_NON_WEATHER = {"sim_state"}

# canonical units of the known variables, and the spellings accepted as the same unit
CANONICAL_UNITS: dict[str, str] = {
    "z": "m**2 s**-2", "t": "K", "t2m": "K", "u": "m s**-1", "v": "m s**-1", "u10": "m s**-1",
    "v10": "m s**-1", "vo": "s**-1", "d": "s**-1", "q": "kg kg**-1", "r": "%", "w": "Pa s**-1",
    "msl": "Pa", "sp": "Pa", "tp": "m",
}
_SAME_UNIT: dict[str, set[str]] = {
    "m**2 s**-2": {"m**2 s**-2", "m2 s-2", "m**2/s**2", "m2/s2", "m**2 s-2", "j kg**-1", "j kg-1", "j/kg"},
    "K": {"k", "kelvin", "degk", "deg k", "deg_k", "degrees_k", "degrees kelvin"},
    "m s**-1": {"m s**-1", "m s-1", "m/s", "m/sec", "meters/second", "metres per second"},
    "s**-1": {"s**-1", "s-1", "1/s", "/s", "per second"},
    "kg kg**-1": {"kg kg**-1", "kg kg-1", "kg/kg"},
    "%": {"%", "percent"},
    "Pa s**-1": {"pa s**-1", "pa s-1", "pa/s"},
    "Pa": {"pa", "pascal", "pascals"},
    "m": {"m", "metre", "metres", "meter", "meters"},
}
# (accepted spellings, factor, offset, note): canonical = factor * value + offset
_CONVERT: dict[str, list[tuple[set[str], float, float, str]]] = {
    "m**2 s**-2": [({"m", "gpm", "metre", "metres", "meter", "meters", "m (geopotential height)"}, G, 0.0,
                    "geopotential height in m multiplied by g = 9.80665 m s-2")],
    "K": [({"degc", "deg c", "deg_c", "degrees_c", "degree_celsius", "degrees_celsius", "celsius", "c", "°c"},
           1.0, 273.15, "degC converted to K (+273.15)")],
    "Pa": [({"hpa", "millibar", "millibars", "mbar", "mb"}, 100.0, 0.0, "hPa converted to Pa (x 100)")],
    "kg kg**-1": [({"g kg**-1", "g kg-1", "g/kg"}, 1e-3, 0.0, "g/kg converted to kg/kg (x 0.001)")],
    "m": [({"mm"}, 1e-3, 0.0, "mm converted to m (x 0.001)")],
}
# physically possible ranges in canonical units (refused outside); z is also checked per level
PHYSICAL_RANGES: dict[str, tuple[float, float]] = {
    "z": (-1.0e4, 6.0e5),  # 1000 hPa heights go below sea level (-1000 m) ; 1 hPa is ~48 km
    "t": (100.0, 400.0), "t2m": (150.0, 350.0),
    "u": (-250.0, 250.0), "v": (-250.0, 250.0), "u10": (-150.0, 150.0), "v10": (-150.0, 150.0),
    "q": (-1e-3, 0.1), "r": (-10.0, 200.0),
    "msl": (8.0e4, 1.15e5), "sp": (3.0e4, 1.15e5), "tp": (-1e-6, 1.0),
}


def _short(name: str) -> str:
    return LONG_TO_SHORT.get(name, NCEP_TO_SHORT.get(name, name))


def _norm_unit(u) -> str:
    return re.sub(r"\s+", " ", str(u).strip().lower().replace("^", "**"))


def _open(path_or_dataset, chunks) -> tuple[xr.Dataset, str]:
    if isinstance(path_or_dataset, xr.Dataset):
        return path_or_dataset, path_or_dataset.attrs.get("diffsci_source", "<dataset>")
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


def _one_of(ds: xr.Dataset, names, what: str, name: str) -> str | None:
    found = [n for n in names if n in ds.dims]
    if len(found) > 1:
        raise DiffsciError(f"{name}: several {what} dims {found}; expected one of {list(names)}")
    return found[0] if found else None


def _scalar_coords(ds: xr.Dataset, names) -> list[str]:
    return [n for n in names if n in ds.coords and ds[n].ndim == 0]


def _level_to_hpa(ds: xr.Dataset, name: str) -> xr.Dataset:
    lev = ds["level"]
    std = lev.attrs.get("standard_name")
    if std and std != "air_pressure":
        raise DiffsciError(f"{name}: level coordinate is {std!r}: expected pressure levels (air_pressure)")
    units = _norm_unit(lev.attrs.get("units", ""))
    values = np.asarray(lev.values)
    if units == "pa":
        values, units = values / 100.0, "hpa"
    elif units in ("hpa", "millibar", "millibars", "mbar", "mb", "hectopascal", "hectopascals"):
        units = "hpa"
    elif units in ("", "1"):
        if np.nanmax(np.abs(values)) > 1100:
            raise DiffsciError(f"{name}: pressure levels up to {np.nanmax(values):g} without units: "
                               "expected hPa (give the level coordinate units 'Pa' or 'hPa')")
    else:
        raise DiffsciError(f"{name}: level coordinate in {lev.attrs.get('units')!r}: expected pressure levels in hPa or Pa")
    attrs = {"units": "hPa", "long_name": "pressure level", "standard_name": "air_pressure", "positive": "down"}
    return ds.assign_coords(level=("level", values, attrs))


def _time_axis(ds: xr.Dataset, name: str, forecast: bool) -> xr.Dataset:
    """Make ``time`` the time dim (valid time; init time for a forecast) and the lead ``step``."""
    if "forecast_reference_time" in ds.dims and "time" not in ds.variables:
        ds = ds.rename({"forecast_reference_time": "time"})
    lead = _one_of(ds, _LEAD_NAMES, "lead-time", name)
    if lead is None:
        scal = _scalar_coords(ds, _LEAD_NAMES)
        lead = scal[0] if scal else None
    if lead is not None and lead != "step":
        if "step" in ds.variables:
            ds = ds.drop_vars("step")
        ds = ds.rename({lead: "step"})
    has_step_dim = "step" in ds.dims
    if "valid_time" in ds.dims:  # new CDS layout: valid_time is the time axis
        if "time" in ds.dims:
            raise DiffsciError(f"{name}: both 'time' and 'valid_time' are dims; expected one time axis")
        if forecast:
            raise DiffsciError(f"{name}: a forecast needs an init 'time' dim and a lead dim "
                               "('prediction_timedelta' or 'step'); found only 'valid_time'")
        ds = ds.drop_vars([c for c in ("time", "step") if c in ds.variables])
        return ds.rename({"valid_time": "time"})
    if "time" not in ds.dims:
        raise DiffsciError(f"{name}: no time dimension: expected 'time' (with 'step'/'valid_time' as cfgrib writes "
                           f"them) or 'valid_time' (dims: {sorted(map(str, ds.dims))})")
    if forecast:
        if not has_step_dim:
            if "step" not in ds.coords:
                raise DiffsciError(f"{name}: a forecast needs a lead dim ('prediction_timedelta' or cfgrib's "
                                   f"'step') (dims: {sorted(map(str, ds.dims))})")
            step = ds["step"].values
            ds = ds.drop_vars("step")
            ds = ds.expand_dims(step=[step])
        ds = ds.drop_vars([c for c in ("valid_time",) if c in ds.variables])
        if not np.issubdtype(ds["step"].dtype, np.timedelta64):
            raise DiffsciError(f"{name}: lead coordinate is {ds['step'].dtype}, expected a time interval")
        return ds.rename({"step": "prediction_timedelta"})
    # analysis / truth: the time axis is the valid time of each state
    if has_step_dim:
        if ds.sizes["step"] == 1:
            ds = ds.isel(step=0)
        elif ds.sizes["time"] == 1:  # one forecast run used as a sequence of states
            t0 = ds["time"].values[0]
            ds = ds.isel(time=0).drop_vars([c for c in ("time", "valid_time") if c in ds.variables])
            ds = ds.assign_coords(step=t0 + ds["step"].values).rename({"step": "time"})
            return ds
        else:
            raise DiffsciError(f"{name}: forecast layout (time x step = {ds.sizes['time']} x {ds.sizes['step']}); "
                               "expected states along one time axis (an analysis, one step, or one forecast run)")
    if "valid_time" in ds.coords and ds["valid_time"].dims == ("time",):
        valid = ds["valid_time"].values
    elif "step" in ds.coords and ds["step"].ndim == 0 and np.issubdtype(ds["step"].dtype, np.timedelta64):
        valid = ds["time"].values + ds["step"].values
    else:
        valid = None
    ds = ds.drop_vars([c for c in ("valid_time", "step") if c in ds.variables])
    if valid is not None:
        ds = ds.assign_coords(time=("time", np.asarray(valid), {"standard_name": "time", "long_name": "valid time"}))
    return ds


def _convert_units(ds: xr.Dataset, name: str) -> xr.Dataset:
    notes = []
    for v in list(ds.data_vars):
        canon = CANONICAL_UNITS.get(str(v))
        if canon is None or "units" not in ds[v].attrs:
            continue
        got = ds[v].attrs["units"]
        u = _norm_unit(got)
        if u in _SAME_UNIT[canon] or u == _norm_unit(canon):
            ds[v].attrs["units"] = canon
            continue
        for spellings, factor, offset, note in _CONVERT.get(canon, []):
            if u in spellings:
                attrs = dict(ds[v].attrs)
                new = ds[v].astype(np.float64) * factor + offset
                new.attrs = {**attrs, "units": canon, "diffsci_note": note}
                ds[v] = new
                notes.append(f"{v}: {note}")
                break
        else:
            raise DiffsciError(f"{name}: variable {v!r} in {got!r}: expected {canon!r} "
                               "(or a unit convertible to it without doubt)")
    if notes:
        warnings.warn(f"{name}: " + "; ".join(notes), stacklevel=3)
        ds.attrs["diffsci_notes"] = "; ".join(notes)
    return ds


def contiguous_longitudes(lon360) -> np.ndarray:
    """Longitudes in [0, 360) -> the values the internal convention uses, same order.

    A global grid, or a regional one that does not cross 0 deg, keeps [0, 360). A regional
    domain across 0 deg (Europe: 350..359, 0..40) becomes one west-to-east run with negative
    longitudes west of 0 (-10..40), so that sorting keeps its columns contiguous. Global: the
    largest circular gap between sorted columns is at most 1.5 times the median gap.
    """
    lon = np.asarray(lon360, dtype=np.float64)
    if lon.size < 2:
        return lon
    s = np.sort(lon)
    gaps = np.diff(np.concatenate([s, s[:1] + 360.0]))
    k = int(np.argmax(gaps))
    if gaps[k] <= 1.5 * np.median(gaps) + 1e-9 or k == s.size - 1:
        return lon  # global, or the domain's gap is already the one across 0 deg
    east_start = s[k + 1]  # columns from here to 360 lie west of 0 deg in the domain
    return np.where(lon >= east_start, lon - 360.0, lon)


def normalize_layout(ds: xr.Dataset, *, path=None, forecast: bool = False) -> xr.Dataset:
    """Bring a dataset in any recognised layout to the internal convention (module docstring).

    Layout only: names, dims, coordinates, order, units. No NaN or time-regularity checks and
    nothing is loaded (those are :func:`open_weather`'s).

    Parameters
    ----------
    ds : xr.Dataset
        As opened from the file (cfgrib, CDS, WB2, NCEP layouts).
    path : str or Path, optional
        Named in error messages (default: ``ds.attrs['diffsci_source']`` or ``<dataset>``).
    forecast : bool
        Forecast layout: ``time`` is the init time and the lead (``prediction_timedelta``,
        cfgrib's ``step`` dim or scalar, ``forecast_period``) becomes a
        ``prediction_timedelta`` dim. Otherwise the states' valid times form ``time``
        (cfgrib's ``valid_time``).

    Returns
    -------
    xr.Dataset
        Dims ``[realization,] time, [prediction_timedelta,] [level,] latitude, longitude``.

    Raises
    ------
    DiffsciError
        One line naming the file and what was expected.
    """
    name = str(path) if path is not None else ds.attrs.get("diffsci_source", "<dataset>")
    # --- horizontal ---
    for names, target, what in ((_LAT_NAMES, "latitude", "latitude"), (_LON_NAMES, "longitude", "longitude")):
        dim = next((n for n in names if n in ds.dims), None)
        if dim is None:
            raise DiffsciError(f"{name}: no {what} dimension: expected one of {list(names)} "
                               f"(dims: {sorted(map(str, ds.dims))})")
        if dim != target:
            if target in ds.variables:
                raise DiffsciError(f"{name}: has a '{dim}' dim and a separate '{target}' variable; expected one "
                                   f"1-D {what} coordinate (a curvilinear grid is not supported)")
            ds = ds.rename({dim: target})
    # --- ensemble ---
    ens = _one_of(ds, ENSEMBLE_DIMS, "ensemble", name)
    ds = ds.drop_vars([c for c in _scalar_coords(ds, ENSEMBLE_DIMS)])
    if ens is not None and ens != "realization":
        ds = ds.rename({ens: "realization"})
    # --- vertical ---
    lev = _one_of(ds, LEVEL_NAMES, "pressure-level", name)
    scalar_lev = _scalar_coords(ds, LEVEL_NAMES)
    if lev is not None:
        ds = ds.drop_vars(scalar_lev)
        if lev != "level":
            ds = ds.rename({lev: "level"})
        ds = _level_to_hpa(ds, name)
    elif scalar_lev:  # one pressure level selected (cfgrib): a level dim of size 1
        coord = ds[scalar_lev[0]]
        ds = ds.drop_vars(scalar_lev)
        fields = [v for v in ds.data_vars if {"latitude", "longitude"} <= set(ds[v].dims)]
        for v in fields:
            ds[v] = ds[v].expand_dims(level=[coord.values.item()])
        if fields:
            ds = ds.assign_coords(level=("level", ds["level"].values, coord.attrs))
            ds = _level_to_hpa(ds, name)
    # --- ERA5 / ERA5T mixture of the old CDS netCDF: each time is valid in one expver slot ---
    if "expver" in ds.dims:
        parts = [ds.isel(expver=i, drop=True) for i in range(ds.sizes["expver"])]
        merged = parts[0]
        for part in parts[1:]:
            merged = merged.combine_first(part)
        ds = merged
    # --- time ---
    ds = _time_axis(ds, name, forecast)
    # --- names ---
    for table in (LONG_TO_SHORT, NCEP_TO_SHORT):
        ren = {k: s for k, s in table.items() if k in ds.data_vars and s not in ds.variables}
        if ren:
            ds = ds.rename(ren)
    # bookkeeping coords (expver, surface, heightAboveGround, number, valid_time...) go
    drop = [c for c in ds.coords if c not in ds.dims and c != "trajectory"]
    ds = ds.drop_vars(drop)
    # --- coordinates ---
    lat = np.asarray(ds["latitude"].values, dtype=np.float64)
    _check_monotonic(lat, "latitude", name)
    if np.any(np.abs(lat) > 90 + 1e-6):
        raise DiffsciError(f"{name}: latitude outside [-90, 90]")
    lon = np.asarray(ds["longitude"].values, dtype=np.float64)
    # a regional domain across 0 deg may be stored as 350..359, 0..40: monotonic once unwrapped
    _check_monotonic(np.unwrap(lon, period=360.0) if lon.size > 1 else lon, "longitude", name)
    lon360 = np.mod(lon, 360.0)
    lon360[np.isclose(lon360, 360.0)] = 0.0
    if np.unique(np.round(lon360, 6)).size != lon360.size:
        raise DiffsciError(f"{name}: longitude has duplicate values modulo 360")
    lon360 = contiguous_longitudes(lon360)
    lat_attrs = {k: a for k, a in ds["latitude"].attrs.items() if k not in ("stored_direction", "actual_range")}
    lon_attrs = {k: a for k, a in ds["longitude"].attrs.items() if k != "actual_range"}
    ds = ds.assign_coords(latitude=("latitude", lat, lat_attrs), longitude=("longitude", lon360, lon_attrs))
    ds = ds.sortby("longitude")
    if lat.size > 1 and lat[0] > lat[-1]:
        ds = ds.isel(latitude=slice(None, None, -1))
    if "level" in ds.dims:
        levs = np.asarray(ds["level"].values)
        _check_monotonic(levs, "level", name)
        if levs.size > 1 and levs[0] > levs[-1]:
            ds = ds.isel(level=slice(None, None, -1))
    ds = _convert_units(ds, name)
    order = [d for d in ("realization", "time", "prediction_timedelta", "level", "latitude", "longitude") if d in ds.dims]
    for v in ds.data_vars:
        extra = [d for d in ds[v].dims if d not in order]
        if extra and {"latitude", "longitude"} <= set(ds[v].dims) and v not in _NON_WEATHER:
            raise DiffsciError(f"{name}: variable {v!r} has dims {extra} besides the expected "
                               "([realization,] time, [prediction_timedelta,] [level,] latitude, longitude)")
    ds = ds.transpose(*order, ...)
    ds.attrs["diffsci_source"] = name
    return ds


def open_weather(
    path_or_dataset,
    *,
    variables: list[str] | tuple[str, ...] | None = None,
    chunks="auto",
    check_nans: bool = True,
    check_values: bool | None = None,
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
    check_nans : bool
        Count NaNs per variable (streams over the data once) and raise if any.
    check_values : bool, optional
        Refuse values outside ``PHYSICAL_RANGES`` and ``z`` level means far from the standard
        atmosphere (same pass over the data as the NaN count). Default: on for states (data,
        initial conditions, truth), off for a forecast (an evaluator scores a forecast that went
        wrong; it does not refuse it).
    forecast : bool
        The file is a forecast (init ``time`` and a lead dim, see :func:`normalize_layout`):
        init times must be distinct (they are sorted) but need not be regular.

    Returns
    -------
    xr.Dataset
        In the internal convention described in the module docstring.

    Raises
    ------
    DiffsciError
        Unrecognised layouts, missing variables or coordinates, NaNs, impossible values,
        irregular time steps, duplicate or non-monotonic coordinates; the message names the file.
    """
    ds, name = _open(path_or_dataset, chunks)
    ds = normalize_layout(ds, path=name, forecast=forecast)
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
    keep = list(dict.fromkeys(keep))
    ds = ds[keep]

    # --- time ---
    times = np.asarray(ds["time"].values)
    if not np.issubdtype(times.dtype, np.datetime64):
        raise DiffsciError(f"{name}: time coordinate is {times.dtype}, expected dates (CF units 'hours since ...')")
    if forecast:
        uniq, counts = np.unique(times, return_counts=True)
        if np.any(counts > 1):
            dup = [str(pd.Timestamp(t)) for t in uniq[counts > 1][:5]]
            raise DiffsciError(f"{name}: duplicate init times {dup}")
        ds = ds.sortby("time")
    else:
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

    # --- values ---
    for v in keep:
        if ds[v].dtype != np.float32:
            ds[v] = ds[v].astype(np.float32)
    if check_values is None:
        check_values = not forecast
    _check_values(ds, keep, name, check_nans=check_nans, check_values=check_values)
    ds.attrs["diffsci_source"] = name
    return ds


def _check_values(ds: xr.Dataset, keep, name: str, *, check_nans: bool, check_values: bool) -> None:
    """NaN counts, ranges and z level means in one pass over the data."""
    import dask

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
    got = dict(zip(keys, dask.compute(*tasks)))
    bad = {v: int(got[(v, "nan")]) for v in keep if (v, "nan") in got and int(got[(v, "nan")])}
    if bad:
        shown = ", ".join(f"{v}: {n} NaN of {ds[v].size}" for v, n in bad.items())
        raise DiffsciError(f"{name}: NaN values ({shown})")
    for v in keep:
        if (v, "min") not in got:
            continue
        lo, hi = PHYSICAL_RANGES[v]
        vmin, vmax = float(got[(v, "min")]), float(got[(v, "max")])
        units = ds[v].attrs.get("units", CANONICAL_UNITS.get(v, "?"))
        if np.isfinite(vmin) and (vmin < lo or vmax > hi):
            raise DiffsciError(f"{name}: {v} ranges {vmin:.6g}..{vmax:.6g} {units}, outside the physically "
                               f"possible {lo:g}..{hi:g} {CANONICAL_UNITS.get(v, '')} (wrong units?)")
        if (v, "level_mean") in got:
            means = np.asarray(got[(v, "level_mean")].values, dtype=np.float64)
            levels = np.asarray(ds["level"].values, dtype=np.float64)
            expect = _isa_height(levels)
            off = (means / G < 0.5 * expect - 1000.0) | (means / G > 1.5 * expect + 1000.0)
            if np.any(off):
                k = int(np.argmax(off))
                raise DiffsciError(
                    f"{name}: z at {levels[k]:g} hPa averages {means[k]:.6g} {units}, far from the standard "
                    f"atmosphere's {G * expect[k]:.6g} m**2 s**-2 (geopotential height in m labelled as geopotential?)")


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


def check_output_path(out, *, inputs=(), folder: bool = False, flag: str = "--out") -> Path:
    """Refuse an output that is one of ``inputs`` or cannot be written, before any work.

    ``out`` equal to an input (after resolving symlinks), inside an input store (zarr
    folder), a folder where a file is expected (or the reverse), a missing parent folder (for
    a file), or a folder where a test file cannot be created -> :class:`DiffsciError`.
    ``folder=True``: ``out`` is a run folder, created later with its parents.
    """
    import tempfile

    p = Path(out)
    rp = p.resolve()
    for inp in inputs:
        if inp is None or isinstance(inp, xr.Dataset):
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


def check_grid(ds: xr.Dataset, latitude, longitude, *, what: str = "checkpoint", atol: float = 1e-3) -> None:
    """Raise :class:`DiffsciError` unless ``ds`` is on the grid (latitude, longitude).

    Both are compared in the internal convention (ascending latitude, longitude in [0, 360) or one
    contiguous run for a regional domain across 0 deg).
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
        v = _short(v)
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
    if "realization" in ds.dims:
        raise DiffsciError("stack_channels: select one ensemble member first (ds.isel(realization=m))")
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
    if "realization" in ds.dims:
        raise DiffsciError("compute_norm_stats: select one ensemble member first (ds.isel(realization=m))")
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


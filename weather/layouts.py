"""Foreign weather-file layouts -> the one internal convention (names, dims, coordinates, units).

Every input role (training data, forecast initial conditions, truth, and a forecast given to
``evaluate``) goes through :func:`normalize_layout`, once, at the edge (it is called by
:func:`diffsci.weather.data.open_weather`). It recognises the layouts these tools write:

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

Internal convention (what :func:`normalize_layout` returns):

* variables named by their **CDS short name** (``z``, ``t``, ``u``, ``v``, ``vo``, ``d``,
  ``q``, ``r``, ``t2m``, ``msl``, ``u10``, ``v10``, ``sp``, ``tp``, ``lsm``; :func:`short_name`);
* dims ``time`` (the valid time of each state; for a forecast, the init time) and, for a
  forecast, ``prediction_timedelta`` (the lead); an optional ensemble dim ``realization``
  (renamed from ``number``, ``member``, ``ensemble``); optional ``level`` (renamed from
  ``pressure_level``, ``isobaricInhPa``, ``plev``, ``pressure``, ``lev``; hPa, converted from
  Pa when the units say so; ascending); ``latitude`` **ascending** (south -> north: files
  stored 90 -> -90 are flipped, so every input role and every checkpoint agree);
  ``longitude`` in [0, 360) ascending (-180..180 is recognised and rolled), except a regional
  domain across 0 deg, which keeps one west-to-east run (-10..40, :func:`contiguous_longitudes`);
* data variables transposed to ``([realization,] time, [prediction_timedelta,] [level,]
  latitude, longitude)``; nothing is loaded;
* units canonical for the known variables (``CANONICAL_UNITS``): what is unambiguous is
  converted with a warning (geopotential height in m / gpm given for ``z`` -> times g =
  9.80665; degC -> K; hPa -> Pa; g/kg -> kg/kg; mm -> m), other units are refused;
* coordinates strictly monotonic without duplicates;
* a ``trajectory(time)`` coordinate (from the generator) is kept.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
import xarray as xr

from diffsci.core.errors import DiffsciError

__all__ = [
    "G",
    "LONG_TO_SHORT",
    "NCEP_TO_SHORT",
    "ENSEMBLE_DIMS",
    "LEVEL_NAMES",
    "NON_WEATHER",
    "CANONICAL_UNITS",
    "short_name",
    "normalize_unit",
    "CLIMATOLOGY_DIMS",
    "is_pressure_coordinate",
    "contiguous_longitudes",
    "normalize_layout",
    "normalize_climatology",
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
#: dims a climatology may have besides level, latitude and longitude (WeatherBench 2's)
CLIMATOLOGY_DIMS = ("dayofyear", "hour")
_PRESSURE_UNITS = frozenset({"pa", "hpa", "millibar", "millibars", "mbar", "mb", "hectopascal", "hectopascals"})
#: units of a lead stored as a number (CF time units, as cfgrib and the CDS write them) -> pandas unit
_TIME_UNITS = {"hours": "h", "hour": "h", "hrs": "h", "hr": "h", "h": "h", "minutes": "min", "minute": "min",
               "min": "min", "seconds": "s", "second": "s", "s": "s", "days": "D", "day": "D", "d": "D"}
#: attributes of the internal ``level`` coordinate
LEVEL_ATTRS = {"units": "hPa", "long_name": "pressure level", "standard_name": "air_pressure", "positive": "down"}
# data variables that are not weather fields (the generator's simulator state)
NON_WEATHER = frozenset({"sim_state"})

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


def short_name(name: str) -> str:
    """The CDS short name of a variable given by its short, WeatherBench 2 long or NCEP name
    (``"geopotential"`` -> ``"z"``, ``"hgt"`` -> ``"z"``); an unknown name is returned as is."""
    return LONG_TO_SHORT.get(name, NCEP_TO_SHORT.get(name, name))


def normalize_unit(unit) -> str:
    """A units string in the form the unit tables compare: stripped, lower case, ``^`` written
    ``**``, runs of white space as one space (``" M^2  S^-2"`` -> ``"m**2 s**-2"``)."""
    return re.sub(r"\s+", " ", str(unit).strip().lower().replace("^", "**"))


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


def _source(ds: xr.Dataset, path) -> str:
    return str(path) if path is not None else ds.attrs.get("diffsci_source", "<dataset>")


# ------------------------------------------------------------------------------ horizontal
def _horizontal(ds: xr.Dataset, name: str) -> xr.Dataset:
    """``lat``/``lon`` dims renamed ``latitude``/``longitude`` (values are set by :func:`_grid`)."""
    for names, target in ((_LAT_NAMES, "latitude"), (_LON_NAMES, "longitude")):
        dim = next((n for n in names if n in ds.dims), None)
        if dim is None:
            raise DiffsciError(f"{name}: no {target} dimension: expected one of {list(names)} "
                               f"(dims: {sorted(map(str, ds.dims))})")
        if dim != target:
            if target in ds.variables:
                raise DiffsciError(f"{name}: has a '{dim}' dim and a separate '{target}' variable; expected one "
                                   f"1-D {target} coordinate (a curvilinear grid is not supported)")
            ds = ds.rename({dim: target})
    return ds


def _ensemble(ds: xr.Dataset, name: str) -> xr.Dataset:
    ens = _one_of(ds, ENSEMBLE_DIMS, "ensemble", name)
    ds = ds.drop_vars(_scalar_coords(ds, ENSEMBLE_DIMS))
    return ds.rename({ens: "realization"}) if ens not in (None, "realization") else ds


# -------------------------------------------------------------------------------- vertical
def is_pressure_coordinate(coord: xr.DataArray, coord_name: str) -> bool:
    """Whether a coordinate is a pressure level, by the CF conventions (section 4.3): a name of
    ``LEVEL_NAMES``, ``standard_name: air_pressure``, or a vertical axis (a ``positive``
    attribute or ``axis: Z``) in units of pressure (Pa, hPa, mbar...). A height (``positive:
    up``, units m: cfgrib's ``heightAboveGround``) is not one."""
    attrs = coord.attrs
    if coord_name in LEVEL_NAMES or attrs.get("standard_name") == "air_pressure":
        return True
    vertical = "positive" in attrs or str(attrs.get("axis", "")).upper() == "Z"
    return vertical and normalize_unit(attrs.get("units", "")) in _PRESSURE_UNITS


def _pressure_hpa(coord: xr.DataArray, name: str) -> np.ndarray:
    """The values of a pressure coordinate in hPa (converted from Pa when its units say so)."""
    std = coord.attrs.get("standard_name")
    if std and std != "air_pressure":
        raise DiffsciError(f"{name}: level coordinate is {std!r}: expected pressure levels (air_pressure)")
    units = normalize_unit(coord.attrs.get("units", ""))
    values = np.asarray(coord.values)
    if units == "pa":
        return values / 100.0
    if units in _PRESSURE_UNITS:
        return values
    if units in ("", "1"):
        if values.size and np.nanmax(np.abs(values)) > 1100:
            raise DiffsciError(f"{name}: pressure levels up to {np.nanmax(values):g} without units: "
                               "expected hPa (give the level coordinate units 'Pa' or 'hPa')")
        return values
    raise DiffsciError(f"{name}: level coordinate in {coord.attrs.get('units')!r}: expected pressure levels in hPa or Pa")


def _vertical(ds: xr.Dataset, name: str) -> xr.Dataset:
    """The pressure-level dim (any name :func:`is_pressure_coordinate` accepts) -> ``level`` in hPa;
    a level given only as scalar coordinate(s) -> a ``level`` dim of length 1 on every field."""
    dims = [str(d) for d in ds.dims if d in LEVEL_NAMES or (d in ds.coords and is_pressure_coordinate(ds[d], str(d)))]
    if len(dims) > 1:
        raise DiffsciError(f"{name}: several pressure-level dims {dims}; expected one")
    scalars = [str(c) for c in ds.coords if ds[c].ndim == 0 and is_pressure_coordinate(ds[c], str(c))]
    if dims:
        ds = ds.drop_vars(scalars)
        if dims[0] != "level":
            ds = ds.rename({dims[0]: "level"})
        return ds.assign_coords(level=("level", _pressure_hpa(ds["level"], name), LEVEL_ATTRS))
    if not scalars:
        return ds
    hpa = {c: float(_pressure_hpa(ds[c], name)) for c in scalars}
    if len({round(v, 6) for v in hpa.values()}) > 1:
        shown = ", ".join(f"{c} {v:g} hPa" for c, v in hpa.items())
        raise DiffsciError(f"{name}: several pressure levels as scalar coordinates ({shown}): which field is at "
                           "which level is not said; give one level per file or a level dim")
    level = hpa[scalars[0]]
    ds = ds.drop_vars(scalars)
    fields = [v for v in ds.data_vars if {"latitude", "longitude"} <= set(ds[v].dims)]
    for v in fields:
        ds[v] = ds[v].expand_dims(level=[level])
    return ds.assign_coords(level=("level", [level], LEVEL_ATTRS)) if fields else ds


def _merge_expver(ds: xr.Dataset) -> xr.Dataset:
    """ERA5 / ERA5T mixture of the old CDS netCDF: each time is valid in one ``expver`` slot."""
    if "expver" not in ds.dims:
        return ds
    parts = [ds.isel(expver=i, drop=True) for i in range(ds.sizes["expver"])]
    merged = parts[0]
    for part in parts[1:]:
        merged = merged.combine_first(part)
    return merged


# ------------------------------------------------------------------------------------ time
def _promote_scalar_time(ds: xr.Dataset) -> xr.Dataset:
    """cfgrib squeezes a dim of length 1: one analysis time (or one forecast run) has a scalar
    ``time`` (or ``forecast_reference_time``) and ``valid_time``; make them dims of length 1."""
    if "time" in ds.dims or "valid_time" in ds.dims or "forecast_reference_time" in ds.dims:
        return ds
    ref = next((c for c in ("time", "forecast_reference_time") if c in ds.coords and ds[c].ndim == 0), None)
    if ref is None:
        return ds
    ds = ds.expand_dims(ref)
    if "valid_time" in ds.coords and ds["valid_time"].ndim == 0:
        ds = ds.assign_coords(valid_time=(ref, [ds["valid_time"].values], ds["valid_time"].attrs))
    return ds


def _lead_to_timedelta(ds: xr.Dataset) -> xr.Dataset:
    """A lead ``step`` stored as a number with time units (cfgrib's own netCDF: float hours; the
    new CDS ``forecast_period``: int64 hours) -> timedelta64[ns]; other leads are left as they are."""
    step = ds["step"]
    unit = _TIME_UNITS.get(normalize_unit(step.attrs.get("units", "")))
    if np.issubdtype(step.dtype, np.timedelta64) or unit is None or not np.issubdtype(step.dtype, np.number):
        return ds
    values = np.asarray(step.values, dtype=np.float64)
    td = pd.to_timedelta(values.ravel(), unit=unit).to_numpy().reshape(values.shape)
    attrs = {k: a for k, a in step.attrs.items() if k != "units"}
    return ds.assign_coords(step=(step.dims, td, attrs))


def _lead_as_step(ds: xr.Dataset, name: str) -> xr.Dataset:
    """The lead (dim, else scalar: ``prediction_timedelta``, ``step``, ``forecast_period``,
    ``lead_time``) renamed ``step``, as a timedelta where its units allow."""
    lead = _one_of(ds, _LEAD_NAMES, "lead-time", name)
    if lead is None:
        scal = _scalar_coords(ds, _LEAD_NAMES)
        lead = scal[0] if scal else None
    if lead is None:
        return ds
    if lead != "step":
        if "step" in ds.variables:
            ds = ds.drop_vars("step")
        ds = ds.rename({lead: "step"})
    return _lead_to_timedelta(ds)


def _forecast_axes(ds: xr.Dataset, name: str) -> xr.Dataset:
    """A forecast: ``time`` the init time, the lead ``step`` (dim or scalar) -> ``prediction_timedelta``."""
    if ds["time"].attrs.get("standard_name") == "time" and "forecast_reference_time" in ds.coords:
        raise DiffsciError(f"{name}: 'time' is the validity time (standard_name time) beside a "
                           "'forecast_reference_time'; expected init times along 'time' and the lead as a dim "
                           "('prediction_timedelta', 'step' or 'forecast_period')")
    if "step" not in ds.dims:
        if "step" not in ds.coords:
            raise DiffsciError(f"{name}: a forecast needs a lead dim ('prediction_timedelta' or cfgrib's "
                               f"'step') (dims: {sorted(map(str, ds.dims))})")
        step = ds["step"].values
        ds = ds.drop_vars("step").expand_dims(step=[step])
    ds = ds.drop_vars([c for c in ("valid_time",) if c in ds.variables])
    if not np.issubdtype(ds["step"].dtype, np.timedelta64):
        raise DiffsciError(f"{name}: lead coordinate is {ds['step'].dtype}, expected a time interval "
                           "(a timedelta, or a number with units 'hours')")
    return ds.rename({"step": "prediction_timedelta"})


def _state_axis(ds: xr.Dataset, name: str) -> xr.Dataset:
    """States (an analysis, a truth, training data): ``time`` the valid time of each state."""
    if "step" in ds.dims:
        if ds.sizes["step"] == 1:
            ds = ds.isel(step=0)
        elif ds.sizes["time"] == 1:  # one forecast run used as a sequence of states
            t0 = ds["time"].values[0]
            ds = ds.isel(time=0).drop_vars([c for c in ("time", "valid_time") if c in ds.variables])
            return ds.assign_coords(step=t0 + ds["step"].values).rename({"step": "time"})
        else:
            raise DiffsciError(f"{name}: forecast layout (time x step = {ds.sizes['time']} x {ds.sizes['step']}); "
                               "expected states along one time axis (an analysis, one step, or one forecast run)")
    step = ds.coords.get("step")
    if "valid_time" in ds.coords and ds["valid_time"].dims == ("time",):
        valid = ds["valid_time"].values
    elif (step is not None and step.ndim == 0 and np.issubdtype(step.dtype, np.timedelta64)
          and ds["time"].attrs.get("standard_name") != "time"):  # CF 'time' is already the validity time (iris)
        valid = ds["time"].values + step.values
    else:
        valid = None
    ds = ds.drop_vars([c for c in ("valid_time", "step") if c in ds.variables])
    if valid is not None:
        ds = ds.assign_coords(time=("time", np.asarray(valid), {"standard_name": "time", "long_name": "valid time"}))
    return ds


def _time_axis(ds: xr.Dataset, name: str, forecast: bool) -> xr.Dataset:
    """Make ``time`` the time dim (valid time; init time for a forecast) and the lead ``step``."""
    ds = _promote_scalar_time(ds)
    if "forecast_reference_time" in ds.dims and "time" not in ds.variables:
        ds = ds.rename({"forecast_reference_time": "time"})
    ds = _lead_as_step(ds, name)
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
    return _forecast_axes(ds, name) if forecast else _state_axis(ds, name)


# ------------------------------------------------------------------------- names and units
def _short_names(ds: xr.Dataset) -> xr.Dataset:
    for table in (LONG_TO_SHORT, NCEP_TO_SHORT):
        ren = {k: s for k, s in table.items() if k in ds.data_vars and s not in ds.variables}
        if ren:
            ds = ds.rename(ren)
    return ds


def _convert_units(ds: xr.Dataset, name: str) -> xr.Dataset:
    notes = []
    for v in list(ds.data_vars):
        canon = CANONICAL_UNITS.get(str(v))
        if canon is None or "units" not in ds[v].attrs:
            continue
        got = ds[v].attrs["units"]
        u = normalize_unit(got)
        if u in _SAME_UNIT[canon] or u == normalize_unit(canon):
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
        warnings.warn(f"{name}: " + "; ".join(notes), stacklevel=4)
        ds.attrs["diffsci_notes"] = "; ".join(notes)
    return ds


# ----------------------------------------------------------------------------- coordinates
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


def _grid(ds: xr.Dataset, name: str) -> xr.Dataset:
    """Latitude checked and made ascending; longitude in [0, 360) (or one contiguous run across
    0 deg for a regional domain), ascending; pressure levels ascending."""
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
    return ds


def _finish(ds: xr.Dataset, name: str, leading: tuple[str, ...]) -> xr.Dataset:
    """What every role shares once its dims are named: short names, bookkeeping coordinates
    dropped (expver, surface, heightAboveGround, number, valid_time...; ``trajectory`` kept),
    the grid, units, and data variables transposed to ``(*leading, [level,] latitude, longitude)``."""
    ds = _short_names(ds)
    ds = ds.drop_vars([c for c in ds.coords if c not in ds.dims and c != "trajectory"])
    ds = _convert_units(_grid(ds, name), name)
    order = [d for d in (*leading, "level", "latitude", "longitude") if d in ds.dims]
    expected = " ".join(f"[{d},]" if d != "time" else "time," for d in leading)
    for v in ds.data_vars:
        extra = [d for d in ds[v].dims if d not in order]
        if extra and {"latitude", "longitude"} <= set(ds[v].dims) and v not in NON_WEATHER:
            raise DiffsciError(f"{name}: variable {v!r} has dims {extra} besides the expected "
                               f"({expected} [level,] latitude, longitude)")
    ds = ds.transpose(*order, ...)
    ds.attrs["diffsci_source"] = name
    return ds


# ------------------------------------------------------------------------------ the readers
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
    name = _source(ds, path)
    ds = _vertical(_ensemble(_horizontal(ds, name), name), name)
    ds = _time_axis(_merge_expver(ds), name, forecast)
    return _finish(ds, name, ("realization", "time", "prediction_timedelta"))


def normalize_climatology(ds: xr.Dataset, *, path=None) -> xr.Dataset:
    """A climatology in any layout the truth may have (names, grid, levels, units: as
    :func:`normalize_layout` reads them) -> dims ``[dayofyear,] [hour,] [level,] latitude,
    longitude`` (WeatherBench 2's climatology dims; ``hour`` the hour of day, ``dayofyear``
    1..366). A climatology has no time axis: a ``time`` dim is refused."""
    name = _source(ds, path)
    ds = _vertical(_ensemble(_horizontal(ds, name), name), name)
    timed = [str(d) for d in ("time", "valid_time", "forecast_reference_time", "step") if d in ds.dims]
    if timed:
        raise DiffsciError(f"{name}: a climatology has no time axis (found a {timed[0]!r} dim); expected dims "
                           "[dayofyear,] [hour,] [level,] latitude, longitude, as WeatherBench 2's climatologies "
                           "(e.g. data.groupby('time.hour').mean())")
    return _finish(ds, name, CLIMATOLOGY_DIMS)

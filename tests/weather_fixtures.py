"""Tiny weather files laid out exactly as the tools people download them with write them.

Shared by the weather tests (data, forecast, evaluate). Every builder draws its values from
:func:`fields`, so the same state written in different layouts must load to the same tensors.

Layouts (what each tool writes; dims, coordinates, attributes and dtypes as the tool does):

* :func:`cfgrib_era5` -- ``xr.open_dataset(grib, engine="cfgrib")`` of ERA5 / ECMWF pressure-level
  data: dims ``number, time, isobaricInhPa, latitude, longitude`` (``number`` only for ensembles),
  ``step`` a scalar timedelta coordinate (analysis) or a dim (forecast), ``valid_time`` over
  ``time`` (or ``time x step``), latitude 90 -> -90, ``isobaricInhPa`` descending as stored,
  ``GRIB_*`` attributes. ``level=500`` gives a *scalar* ``isobaricInhPa`` coordinate (one level
  selected); :func:`cfgrib_surface` gives the ``surface`` / ``heightAboveGround`` scalar coords.
* :func:`cds_netcdf` -- the new CDS netCDF (2024 on): ``valid_time`` is the time dim (int64
  seconds since 1970 on disk), ``pressure_level``, a scalar ``number`` (a dim for ensembles) and
  ``expver`` over ``valid_time``.
* :func:`cds_legacy_netcdf` -- the CDS netCDF before 2024: ``time``, ``level`` (int32, millibars),
  float32 ``latitude``/``longitude``, data packed as int16; with ``era5t_from`` the last times
  come from ERA5T and an ``expver`` dim (1, 5) holds each time in one slot, NaN in the other.
* :func:`wb2_dataset` -- WeatherBench 2 ERA5 zarr: long names, ``level`` (int64, ascending),
  dims ordered ``time, level, longitude, latitude``, latitude ascending.
* :func:`ncep_reanalysis` -- NCEP/NCAR Reanalysis 1: ``lat``/``lon`` float32, ``level`` (or
  ``pressure``/``lev``) in millibar, ``hgt`` in metres (geopotential height, packed int16),
  ``air`` in degK, time as hours since 1800.
* :func:`iris_netcdf` -- a single-level cube saved by iris (``iris.save``): the pressure level a
  *scalar* coordinate named by its standard name, ``air_pressure`` (units Pa), listed in the
  variable's ``coordinates`` beside scalar ``forecast_reference_time`` and ``forecast_period``
  (a number of hours); ``time`` the validity time; bounds variables and a grid-mapping variable.

:func:`write` writes netCDF with engine netcdf4 (``.nc``) or zarr (``.zarr``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

G = 9.80665  # standard gravity, m s-2 (WMO)

__all__ = ["G", "isa_height", "isa_temperature", "fields", "cfgrib_era5", "cfgrib_surface", "cds_netcdf",
           "cds_legacy_netcdf", "wb2_dataset", "ncep_reanalysis", "iris_netcdf", "write", "grid"]


def isa_height(p_hpa):
    """Geopotential height (m) of pressure ``p_hpa`` in the ICAO standard atmosphere."""
    p = np.asarray(p_hpa, dtype=np.float64)
    tropo = 44330.8 * (1.0 - (p / 1013.25) ** 0.190263)
    strato = 11000.0 + 6341.62 * np.log(226.321 / p)
    return np.where(p >= 226.321, tropo, strato)


def isa_temperature(p_hpa):
    """Temperature (K) of pressure ``p_hpa`` in the standard atmosphere (isothermal above 11 km)."""
    return np.maximum(288.15 - 0.0065 * isa_height(p_hpa), 216.65)


def grid(nlat: int = 5, nlon: int = 8, *, descending: bool = True, lon180: bool = False):
    """ERA5-style regular grid with both poles: latitude 90 -> -90 (cfgrib order) or ascending."""
    lat = np.linspace(90.0, -90.0, nlat)
    if not descending:
        lat = lat[::-1].copy()
    lon = np.arange(nlon) * (360.0 / nlon)
    if lon180:
        lon = np.where(lon >= 180.0, lon - 360.0, lon)
        lon = np.sort(lon)
    return lat, lon


def fields(times, levels, lat, lon, *, members: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """Plausible values, a pure function of (valid time, level, lat, lon, member, seed).

    Returns ``z`` (m2 s-2) and ``t`` (K), shape (M, T, L, H, W), and ``t2m`` (K), shape
    (M, T, H, W), float32. ``levels`` in hPa, any order; ``lat``/``lon`` in degrees, any order
    and any longitude convention (values depend on lon modulo 360).
    """
    times = pd.DatetimeIndex(times)
    hours = ((times - pd.Timestamp("2000-01-01")) / pd.Timedelta(hours=1)).to_numpy()[None, :, None, None, None]
    lev = np.asarray(levels, dtype=np.float64)[None, None, :, None, None]
    la = np.deg2rad(np.asarray(lat, dtype=np.float64))[None, None, None, :, None]
    lo = np.deg2rad(np.mod(np.asarray(lon, dtype=np.float64), 360.0))[None, None, None, None, :]
    m = np.arange(members, dtype=np.float64)[:, None, None, None, None]
    phase = 0.3 * seed + 0.7 * m
    wave = np.cos(la) * np.sin(2 * lo - 0.05 * hours + phase) + 0.3 * np.sin(la) * np.cos(lo + 0.02 * hours * (1 + 0.1 * m))
    z = G * isa_height(lev) + 400.0 * G * wave * (lev / 1000.0) ** -0.3
    t = isa_temperature(lev) + 8.0 * wave - 20.0 * np.sin(la) ** 2
    t2m = (288.0 + 10.0 * wave - 30.0 * np.sin(la) ** 2)[:, :, 0]
    return {"z": z.astype(np.float32), "t": t.astype(np.float32), "t2m": t2m.astype(np.float32)}


_GRIB_GLOBAL = {
    "GRIB_edition": 1,
    "GRIB_centre": "ecmf",
    "GRIB_centreDescription": "European Centre for Medium-Range Weather Forecasts",
    "GRIB_subCentre": 0,
    "Conventions": "CF-1.7",
    "institution": "European Centre for Medium-Range Weather Forecasts",
    "history": "2026-12-02T10:00 GRIB to CDM+CF via cfgrib-0.9.14.1/ecCodes-2.38.0 with "
               "{\"source\": \"era5.grib\", \"filter_by_keys\": {}, \"encode_cf\": [\"parameter\", \"time\", \"geography\", \"vertical\"]}",
}


def _grib_attrs(short: str, nlat: int, nlon: int, level_type: str, data_type: str) -> dict:
    table = {
        "z": (129, "Geopotential", "m**2 s**-2", "geopotential"),
        "t": (130, "Temperature", "K", "air_temperature"),
        "t2m": (167, "2 metre temperature", "K", "unknown"),
    }
    pid, name, units, std = table[short]
    return {
        "GRIB_paramId": pid, "GRIB_dataType": data_type, "GRIB_numberOfPoints": nlat * nlon,
        "GRIB_typeOfLevel": level_type, "GRIB_stepUnits": 1, "GRIB_stepType": "instant",
        "GRIB_gridType": "regular_ll", "GRIB_NV": 0, "GRIB_Nx": nlon, "GRIB_Ny": nlat,
        "GRIB_cfName": std, "GRIB_cfVarName": short, "GRIB_gridDefinitionDescription": "Latitude/Longitude Grid",
        "GRIB_iDirectionIncrementInDegrees": 360.0 / nlon, "GRIB_iScansNegatively": 0,
        "GRIB_jDirectionIncrementInDegrees": 180.0 / (nlat - 1), "GRIB_jPointsAreConsecutive": 0,
        "GRIB_jScansPositively": 0, "GRIB_latitudeOfFirstGridPointInDegrees": 90.0,
        "GRIB_latitudeOfLastGridPointInDegrees": -90.0, "GRIB_longitudeOfFirstGridPointInDegrees": 0.0,
        "GRIB_longitudeOfLastGridPointInDegrees": 360.0 - 360.0 / nlon, "GRIB_missingValue": 3.4028234663852886e38,
        "GRIB_name": name, "GRIB_shortName": "2t" if short == "t2m" else short, "GRIB_totalNumber": 0,
        "GRIB_units": units, "long_name": name, "units": units, "standard_name": std,
    }


def _geo_coords(lat, lon) -> dict:
    return {
        "latitude": ("latitude", np.asarray(lat, np.float64),
                     {"units": "degrees_north", "standard_name": "latitude", "long_name": "latitude",
                      "stored_direction": "decreasing"}),
        "longitude": ("longitude", np.asarray(lon, np.float64),
                      {"units": "degrees_east", "standard_name": "longitude", "long_name": "longitude"}),
    }


def cfgrib_era5(*, times=None, levels=(850, 500), members: int | None = None, steps_hours=None,
                nlat: int = 5, nlon: int = 8, level: float | None = None, seed: int = 0,
                variables=("z", "t")) -> xr.Dataset:
    """ERA5 / ECMWF pressure-level data as cfgrib opens it.

    Parameters
    ----------
    times : datetime-like sequence
        Analysis times (``time`` = forecast_reference_time). Default: 4 times 6 h apart.
    levels : sequence of hPa, in the stored (descending) order.
    members : int, optional
        Ensemble members: a ``number`` dim 0..M-1 (else ``number`` is a scalar 0, as cfgrib
        writes it for deterministic ERA5).
    steps_hours : sequence of int, optional
        Forecast steps: ``step`` becomes a dim and ``valid_time`` is 2-D (time x step); values
        are those of the valid times. Default: analysis (scalar ``step`` 0).
    level : float, optional
        One selected level: ``isobaricInhPa`` is a scalar coordinate, no level dim.
    """
    times = pd.date_range("2020-01-01", periods=4, freq="6h") if times is None else pd.DatetimeIndex(times)
    lat, lon = grid(nlat, nlon)
    levs = [level] if level is not None else list(levels)
    nm = members or 1
    steps = None if steps_hours is None else pd.to_timedelta(np.asarray(steps_hours), unit="h")
    if steps is None:
        f = fields(times, levs, lat, lon, members=nm, seed=seed)  # (M, T, L, H, W)
        dims = ["number", "time", "isobaricInhPa", "latitude", "longitude"]
    else:
        per = [fields(times + s, levs, lat, lon, members=nm, seed=seed) for s in steps]
        f = {k: np.stack([p[k] for p in per], axis=2) for k in ("z", "t")}  # (M, T, S, L, H, W)
        dims = ["number", "time", "step", "isobaricInhPa", "latitude", "longitude"]
    data_vars = {}
    for v in variables:
        a = f[v]
        d = list(dims)
        if members is None:
            a, d = a[0], d[1:]
        if level is not None:
            a = a[..., 0, :, :]
            d.remove("isobaricInhPa")
        attrs = _grib_attrs(v, nlat, nlon, "isobaricInhPa", "pf" if members else "an")
        data_vars[v] = (tuple(d), a.astype(np.float32), attrs)
    coords = {
        "time": ("time", times.values.astype("datetime64[ns]"),
                 {"long_name": "initial time of forecast", "standard_name": "forecast_reference_time"}),
        **_geo_coords(lat, lon),
    }
    lev_attrs = {"long_name": "pressure", "units": "hPa", "positive": "down", "stored_direction": "decreasing",
                 "standard_name": "air_pressure"}
    if level is not None:
        coords["isobaricInhPa"] = ((), float(level), lev_attrs)
    else:
        coords["isobaricInhPa"] = ("isobaricInhPa", np.asarray(levels, np.float64), lev_attrs)
    num_attrs = {"long_name": "ensemble member numerical id", "units": "1", "standard_name": "realization"}
    coords["number"] = ("number", np.arange(members, dtype=np.int64), num_attrs) if members else ((), np.int64(0), num_attrs)
    step_attrs = {"long_name": "time since forecast_reference_time", "standard_name": "forecast_period"}
    vt_attrs = {"standard_name": "time", "long_name": "time"}
    if steps is None:
        coords["step"] = ((), np.timedelta64(0, "ns"), step_attrs)
        coords["valid_time"] = ("time", times.values.astype("datetime64[ns]"), vt_attrs)
    else:
        coords["step"] = ("step", steps.values.astype("timedelta64[ns]"), step_attrs)
        vt = times.values[:, None] + steps.values[None, :]
        coords["valid_time"] = (("time", "step"), vt.astype("datetime64[ns]"), vt_attrs)
    return xr.Dataset(data_vars, coords=coords, attrs=dict(_GRIB_GLOBAL))


def cfgrib_surface(*, times=None, nlat: int = 5, nlon: int = 8, seed: int = 0) -> xr.Dataset:
    """ERA5 single-level 2 m temperature as cfgrib opens it: ``t2m`` with scalar coords
    ``number``, ``step``, ``heightAboveGround`` (2.0) and ``valid_time`` over ``time``."""
    times = pd.date_range("2020-01-01", periods=4, freq="6h") if times is None else pd.DatetimeIndex(times)
    lat, lon = grid(nlat, nlon)
    a = fields(times, [1000], lat, lon, seed=seed)["t2m"][0]
    attrs = _grib_attrs("t2m", nlat, nlon, "heightAboveGround", "an")
    coords = {
        "number": ((), np.int64(0), {"long_name": "ensemble member numerical id", "units": "1", "standard_name": "realization"}),
        "time": ("time", times.values.astype("datetime64[ns]"),
                 {"long_name": "initial time of forecast", "standard_name": "forecast_reference_time"}),
        "step": ((), np.timedelta64(0, "ns"), {"long_name": "time since forecast_reference_time", "standard_name": "forecast_period"}),
        "heightAboveGround": ((), 2.0, {"long_name": "height above the surface", "units": "m", "positive": "up",
                                        "standard_name": "height"}),
        **_geo_coords(lat, lon),
        "valid_time": ("time", times.values.astype("datetime64[ns]"), {"standard_name": "time", "long_name": "time"}),
    }
    return xr.Dataset({"t2m": (("time", "latitude", "longitude"), a, attrs)}, coords=coords, attrs=dict(_GRIB_GLOBAL))


def cds_netcdf(*, times=None, levels=(850, 500), members: int | None = None, nlat: int = 5, nlon: int = 8,
               seed: int = 0, lon180: bool = False) -> xr.Dataset:
    """The new CDS netCDF layout (ERA5 pressure levels, 2024 on)."""
    times = pd.date_range("2020-01-01", periods=4, freq="6h") if times is None else pd.DatetimeIndex(times)
    lat, lon = grid(nlat, nlon, lon180=lon180)
    f = fields(times, levels, lat, lon, members=members or 1, seed=seed)
    dims = ("number", "valid_time", "pressure_level", "latitude", "longitude")
    data_vars = {}
    for v in ("z", "t"):
        a = f[v] if members else f[v][0]
        d = dims if members else dims[1:]
        attrs = _grib_attrs(v, nlat, nlon, "isobaricInhPa", "an")
        attrs.pop("GRIB_cfVarName")
        data_vars[v] = (d, a, attrs)
    coords = {
        "valid_time": ("valid_time", times.values.astype("datetime64[ns]"), {"long_name": "time", "standard_name": "time"}),
        "pressure_level": ("pressure_level", np.asarray(levels, np.float64),
                           {"long_name": "pressure", "units": "hPa", "positive": "down",
                            "stored_direction": "decreasing", "standard_name": "air_pressure"}),
        **_geo_coords(lat, lon),
        "expver": ("valid_time", np.array(["0001"] * len(times)), {"long_name": "Experiment version"}),
    }
    num_attrs = {"long_name": "ensemble member numerical id", "units": "1", "standard_name": "realization"}
    coords["number"] = ("number", np.arange(members, dtype=np.int64), num_attrs) if members else ((), np.int64(0), num_attrs)
    ds = xr.Dataset(data_vars, coords=coords, attrs={
        "GRIB_centre": "ecmf", "GRIB_centreDescription": "European Centre for Medium-Range Weather Forecasts",
        "GRIB_subCentre": 0, "Conventions": "CF-1.7", "institution": "European Centre for Medium-Range Weather Forecasts",
        "history": "2026-12-02T10:00 GRIB to CDM+CF via cfgrib-0.9.15.0/ecCodes-2.39.0 with {\"source\": \"tmp.grib\"}",
    })
    ds["valid_time"].encoding.update(units="seconds since 1970-01-01", calendar="proleptic_gregorian", dtype="int64")
    return ds


def cds_legacy_netcdf(*, times=None, levels=(850, 500), nlat: int = 5, nlon: int = 8, seed: int = 0,
                      era5t_from: int | None = None) -> xr.Dataset:
    """The CDS netCDF layout before 2024 (ERA5 pressure levels), optionally with ERA5T mixed in."""
    times = pd.date_range("2020-01-01", periods=4, freq="6h") if times is None else pd.DatetimeIndex(times)
    lat, lon = grid(nlat, nlon)
    f = fields(times, levels, lat, lon, seed=seed)
    data_vars = {}
    for v, name, units, std in (("z", "Geopotential", "m**2 s**-2", "geopotential"),
                                ("t", "Temperature", "K", "air_temperature")):
        a = f[v][0]
        dims = ("time", "level", "latitude", "longitude")
        if era5t_from is not None:
            b = np.full((len(times), 2) + a.shape[1:], np.nan, np.float32)
            b[:era5t_from, 0] = a[:era5t_from]
            b[era5t_from:, 1] = a[era5t_from:]
            a, dims = b, ("time", "expver") + dims[1:]
        data_vars[v] = (dims, a, {"units": units, "long_name": name, "standard_name": std})
    coords = {
        "longitude": ("longitude", lon.astype(np.float32), {"units": "degrees_east", "long_name": "longitude"}),
        "latitude": ("latitude", lat.astype(np.float32), {"units": "degrees_north", "long_name": "latitude"}),
        "level": ("level", np.asarray(levels, np.int32), {"units": "millibars", "long_name": "pressure_level"}),
        "time": ("time", times.values.astype("datetime64[ns]"), {"long_name": "time"}),
    }
    if era5t_from is not None:
        coords["expver"] = ("expver", np.array([1, 5], np.int32), {"long_name": "expver"})
    ds = xr.Dataset(data_vars, coords=coords, attrs={
        "Conventions": "CF-1.6", "history": "2023-05-01 10:00:00 GMT by grib_to_netcdf-2.25.1: /opt/ecmwf/mars-client/bin/grib_to_netcdf.bin -S param -o out.nc in.grib"})
    ds["time"].encoding.update(units="hours since 1900-01-01 00:00:00.0", calendar="gregorian", dtype="int32")
    for v in ("z", "t"):
        lo, hi = float(np.nanmin(ds[v].values)), float(np.nanmax(ds[v].values))
        scale = (hi - lo) / (2**16 - 4) or 1.0  # keeps -32767 free for the fill value
        ds[v].encoding.update(dtype="int16", scale_factor=scale, add_offset=(hi + lo) / 2, _FillValue=np.int16(-32767),
                              missing_value=np.int16(-32767))
    return ds


_WB2_LONG = {"z": ("geopotential", "Geopotential", "m**2 s**-2"), "t": ("temperature", "Temperature", "K"),
             "t2m": ("2m_temperature", "2 metre temperature", "K")}


def wb2_dataset(*, times=None, levels=(500, 850), nlat: int = 5, nlon: int = 8, seed: int = 0,
                variables=("z", "t", "t2m")) -> xr.Dataset:
    """WeatherBench 2 ERA5 zarr layout (write it with :func:`write` to a ``.zarr`` path)."""
    times = pd.date_range("2020-01-01", periods=4, freq="6h") if times is None else pd.DatetimeIndex(times)
    lat, lon = grid(nlat, nlon, descending=False)
    f = fields(times, levels, lat, lon, seed=seed)
    data_vars = {}
    for v in variables:
        long, name, units = _WB2_LONG[v]
        a = f[v][0]
        if v == "t2m":
            data_vars[long] = (("time", "longitude", "latitude"), np.ascontiguousarray(np.swapaxes(a, -1, -2)),
                               {"long_name": name, "short_name": v, "units": units})
        else:
            data_vars[long] = (("time", "level", "longitude", "latitude"), np.ascontiguousarray(np.swapaxes(a, -1, -2)),
                               {"long_name": name, "short_name": v, "units": units})
    coords = {"time": times.values.astype("datetime64[ns]"), "level": np.asarray(levels, np.int64),
              "latitude": lat.astype(np.float64), "longitude": lon.astype(np.float64)}
    return xr.Dataset(data_vars, coords=coords)


def ncep_reanalysis(*, times=None, levels=(1000, 850, 500), nlat: int = 5, nlon: int = 8, seed: int = 0,
                    level_name: str = "level", packed: bool = True) -> xr.Dataset:
    """NCEP/NCAR Reanalysis 1 layout: ``hgt`` (geopotential height, m) and ``air`` (degK)."""
    times = pd.date_range("2020-01-01", periods=4, freq="6h") if times is None else pd.DatetimeIndex(times)
    lat, lon = grid(nlat, nlon)
    f = fields(times, levels, lat, lon, seed=seed)
    hgt = f["z"][0] / G
    air = f["t"][0]
    data_vars = {
        "hgt": ((("time", level_name, "lat", "lon")), hgt.astype(np.float32),
                {"long_name": "4xDaily Geopotential height", "units": "m", "precision": 0, "GRIB_id": 7,
                 "GRIB_name": "HGT", "var_desc": "Geopotential height", "level_desc": "Multiple levels",
                 "statistic": "Individual Obs", "parent_stat": "Other", "dataset": "NCEP Reanalysis",
                 "actual_range": np.array([hgt.min(), hgt.max()], np.float32)}),
        "air": ((("time", level_name, "lat", "lon")), air.astype(np.float32),
                {"long_name": "4xDaily Air temperature", "units": "degK", "precision": 2, "GRIB_id": 11,
                 "GRIB_name": "TMP", "var_desc": "Air temperature", "level_desc": "Multiple levels",
                 "statistic": "Individual Obs", "parent_stat": "Other", "dataset": "NCEP Reanalysis",
                 "actual_range": np.array([air.min(), air.max()], np.float32)}),
    }
    coords = {
        "time": ("time", times.values.astype("datetime64[ns]"),
                 {"long_name": "Time", "delta_t": "0000-00-00 06:00:00", "standard_name": "time", "axis": "T",
                  "actual_range": np.array([0.0, 0.0])}),
        level_name: (level_name, np.asarray(levels, np.float32),
                     {"units": "millibar", "actual_range": np.array([min(levels), max(levels)], np.float32),
                      "long_name": "Level", "positive": "down", "GRIB_id": 100, "GRIB_name": "hPa", "axis": "Z"}),
        "lat": ("lat", lat.astype(np.float32), {"units": "degrees_north", "actual_range": np.array([90.0, -90.0], np.float32),
                                                "long_name": "Latitude", "standard_name": "latitude", "axis": "Y"}),
        "lon": ("lon", lon.astype(np.float32), {"units": "degrees_east", "long_name": "Longitude",
                                                "actual_range": np.array([lon.min(), lon.max()], np.float32),
                                                "standard_name": "longitude", "axis": "X"}),
    }
    ds = xr.Dataset(data_vars, coords=coords, attrs={
        "Conventions": "COARDS", "title": "4x daily NMC reanalysis (2020)", "platform": "Model",
        "dataset_title": "NCEP-NCAR Reanalysis 1", "history": "created 2020/01/01 by Hoop (netCDF2.3)"})
    ds["time"].encoding.update(units="hours since 1800-01-01 00:00:0.0", dtype="float64")
    if packed:
        for v, scale, offset in (("hgt", np.float32(1.0), np.float32(32066.0)), ("air", np.float32(0.01), np.float32(477.66))):
            ds[v].encoding.update(dtype="int16", scale_factor=scale, add_offset=offset, _FillValue=np.int16(32767))
    return ds


def iris_netcdf(*, times=None, level_hpa: float = 850.0, level_units: str = "Pa", nlat: int = 5, nlon: int = 8,
                seed: int = 0) -> xr.Dataset:
    """Temperature on one pressure level as iris saves a cube (``iris.save(cube, "t850.nc")``).

    The variable is named by the cube's ``var_name`` (``t``) with its CF ``standard_name``; dims
    ``time, latitude, longitude`` (latitude ascending, as the Met Office stores it); the level is a
    scalar coordinate named by its standard name, ``air_pressure``, in ``level_units`` (``"Pa"``
    or ``"hPa"``), and ``forecast_reference_time`` (the analysis time) and ``forecast_period`` (a
    number of hours, 0) are scalar coordinates too, all four listed in the variable's
    ``coordinates``; ``time`` is the validity time (CF ``standard_name: time``, hours since 1970);
    ``latitude_bnds``/``longitude_bnds`` and the grid-mapping variable ``latitude_longitude``.
    """
    times = pd.date_range("2020-01-01", periods=4, freq="6h") if times is None else pd.DatetimeIndex(times)
    lat, lon = grid(nlat, nlon, descending=False)
    a = fields(times, [level_hpa], lat, lon, seed=seed)["t"][0][:, 0]  # (T, H, W)
    level = float(level_hpa) * (100.0 if level_units == "Pa" else 1.0)
    dlat, dlon = 180.0 / (nlat - 1), 360.0 / nlon
    t = xr.Variable(("time", "latitude", "longitude"), a, {
        "standard_name": "air_temperature", "units": "K", "um_stash_source": "m01s16i203",
        "grid_mapping": "latitude_longitude"})
    t.encoding["coordinates"] = "forecast_period forecast_reference_time air_pressure"
    coords = {
        "time": ("time", times.values.astype("datetime64[ns]"), {"axis": "T", "bounds": "time_bnds",
                                                                  "standard_name": "time"}),
        "latitude": ("latitude", lat, {"axis": "Y", "bounds": "latitude_bnds", "units": "degrees_north",
                                       "standard_name": "latitude"}),
        "longitude": ("longitude", lon, {"axis": "X", "bounds": "longitude_bnds", "units": "degrees_east",
                                         "standard_name": "longitude"}),
        "air_pressure": ((), level, {"units": level_units, "standard_name": "air_pressure"}),
        "forecast_reference_time": ((), times.values[0].astype("datetime64[ns]"),
                                    {"standard_name": "forecast_reference_time"}),
        "forecast_period": ((), 0.0, {"units": "hours", "standard_name": "forecast_period"}),
    }
    data_vars = {
        "t": t,
        "latitude_longitude": ((), np.int32(-2147483647), {
            "grid_mapping_name": "latitude_longitude", "longitude_of_prime_meridian": 0.0,
            "earth_radius": 6371229.0}),
        "latitude_bnds": (("latitude", "bnds"), np.stack([np.clip(lat - dlat / 2, -90, 90),
                                                          np.clip(lat + dlat / 2, -90, 90)], 1)),
        "longitude_bnds": (("longitude", "bnds"), np.stack([lon - dlon / 2, lon + dlon / 2], 1)),
    }
    ds = xr.Dataset(data_vars, coords=coords, attrs={
        "source": "Data from Met Office Unified Model", "um_version": "11.2", "Conventions": "CF-1.7"})
    for name in list(ds.coords) + ["latitude_bnds", "longitude_bnds"]:
        ds[name].encoding["_FillValue"] = None  # iris writes no fill value on coordinates
    ds["time"].encoding.update(units="hours since 1970-01-01 00:00:00", calendar="standard", dtype="float64")
    ds["forecast_reference_time"].encoding.update(units="hours since 1970-01-01 00:00:00", calendar="standard",
                                                  dtype="float64")
    return ds


def write(ds: xr.Dataset, path) -> Path:
    """Write ``ds`` as the tools do: netCDF (engine netcdf4) for ``*.nc``, zarr for ``*.zarr``."""
    path = Path(path)
    if path.suffix == ".zarr":
        ds.to_zarr(path, mode="w")
    else:
        ds.to_netcdf(path, engine="netcdf4")
    return path

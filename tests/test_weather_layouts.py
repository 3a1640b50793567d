"""One reader for the layouts that exist: cfgrib/ECMWF, the new CDS netCDF, WeatherBench 2 zarr,
NCEP/NCAR (fixtures in tests/weather_fixtures.py, written as those tools write them)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import weather_fixtures as wf
from diffsci.core.cli import main
from diffsci.core.errors import DiffsciError
from diffsci.weather.data import open_weather, stack_channels, time_step
from diffsci.weather.layouts import CANONICAL_UNITS, normalize_layout, normalize_unit, short_name


def _expected(times, levels, nlat=5, nlon=8, members=1, seed=0):
    """Values in the internal convention (latitude ascending, levels ascending), from wf.fields."""
    lat, lon = wf.grid(nlat, nlon, descending=False)
    return wf.fields(times, sorted(levels), lat, lon, members=members, seed=seed)


def test_cfgrib_ensemble_opens(tmp_path):
    """Seen: ValueError 'the new name time conflicts' for cfgrib's time + valid_time."""
    times = pd.date_range("2021-03-01T06", periods=4, freq="6h")
    p = wf.write(wf.cfgrib_era5(members=3, times=times), tmp_path / "ens.nc")
    ds = open_weather(p)
    assert ds["z"].dims == ("realization", "time", "level", "latitude", "longitude")
    assert list(ds["level"].values) == [500.0, 850.0] and ds["level"].attrs["units"] == "hPa"
    assert np.all(np.diff(ds["latitude"].values) > 0)
    np.testing.assert_array_equal(ds["time"].values, times.values)
    want = _expected(times, [850, 500], members=3)
    np.testing.assert_array_equal(ds["z"].values, want["z"])
    np.testing.assert_array_equal(ds["t"].values, want["t"])
    x, names = stack_channels(ds.isel(realization=1), ["z", "t"])
    assert names == ["z500", "z850", "t500", "t850"]
    np.testing.assert_array_equal(x[:, 3], want["t"][1, :, 1])


def test_time_is_the_valid_time(tmp_path):
    """cfgrib analysis with a nonzero scalar step: time = valid_time, not the reference time."""
    ds = wf.cfgrib_era5()
    ds = ds.assign_coords(step=np.timedelta64(3, "h"), valid_time=("time", ds.time.values + np.timedelta64(3, "h")))
    got = open_weather(wf.write(ds, tmp_path / "s3.nc"))
    np.testing.assert_array_equal(got.time.values, ds.valid_time.values)
    # one forecast run (time of length 1, step a dim) is a sequence of states at its valid times
    run = wf.cfgrib_era5(times=["2020-01-01"], steps_hours=[0, 6, 12])
    got = open_weather(wf.write(run, tmp_path / "run.nc"))
    assert list(got.time.values) == list(pd.to_datetime(["2020-01-01T00", "2020-01-01T06", "2020-01-01T12"]).values)
    assert time_step(got) == pd.Timedelta(hours=6)


def test_cfgrib_forecast_layout(tmp_path):
    fc = wf.cfgrib_era5(members=2, steps_hours=[6, 12])
    p = wf.write(fc, tmp_path / "fc.nc")
    got = open_weather(p, forecast=True)
    assert got["z"].dims == ("realization", "time", "prediction_timedelta", "level", "latitude", "longitude")
    assert list(got.prediction_timedelta.values.astype("timedelta64[h]").astype(int)) == [6, 12]
    np.testing.assert_array_equal(got.time.values, fc.time.values)
    with pytest.raises(DiffsciError, match=r"fc\.nc: forecast layout \(time x step = 4 x 2\)"):
        open_weather(p)
    # an analysis given where a forecast is expected gets a lead of its scalar step
    ana = open_weather(wf.write(wf.cfgrib_era5(), tmp_path / "ana.nc"), forecast=True)
    assert ana.sizes["prediction_timedelta"] == 1
    # duplicate init times refused
    dup = xr.concat([fc.isel(time=[0]), fc.isel(time=[0, 1])], "time")
    with pytest.raises(DiffsciError, match="duplicate init times"):
        open_weather(dup, forecast=True)


def test_scalar_level_and_surface_coords(tmp_path):
    one = open_weather(wf.write(wf.cfgrib_era5(level=500), tmp_path / "z500.nc"))
    assert one["z"].dims == ("time", "level", "latitude", "longitude") and list(one.level.values) == [500.0]
    assert stack_channels(one, ["z", "t"])[1] == ["z500", "t500"]
    sfc = open_weather(wf.write(wf.cfgrib_surface(), tmp_path / "t2m.nc"))
    assert sfc["t2m"].dims == ("time", "latitude", "longitude") and "heightAboveGround" not in sfc.coords
    lat, lon = wf.grid(5, 8, descending=False)
    want = wf.fields(sfc.time.values, [1000], lat, lon)["t2m"][0]
    np.testing.assert_array_equal(sfc["t2m"].values, want)


def test_all_layouts_give_the_same_tensors(tmp_path):
    """cfgrib, new CDS (also ensemble with -180..180 longitudes), WB2 zarr and NCEP (packed, heights
    in m, level named 'level' or 'pressure') load to the same channels."""
    levels = (850, 500)
    ref, names = stack_channels(open_weather(wf.write(wf.cfgrib_era5(levels=levels), tmp_path / "cf.nc")), ["z", "t"])
    assert names == ["z500", "z850", "t500", "t850"]
    cds = open_weather(wf.write(wf.cds_netcdf(levels=levels), tmp_path / "cds.nc"))
    np.testing.assert_array_equal(stack_channels(cds, ["z", "t"])[0], ref)
    cdse = open_weather(wf.write(wf.cds_netcdf(levels=levels, members=2, lon180=True), tmp_path / "cdse.nc"))
    np.testing.assert_array_equal(stack_channels(cdse.isel(realization=0), ["z", "t"])[0], ref)
    assert cdse.longitude.values.min() == 0.0
    wb = open_weather(wf.write(wf.wb2_dataset(levels=(500, 850)), tmp_path / "wb.zarr"))
    np.testing.assert_array_equal(stack_channels(wb, ["geopotential", "temperature"])[0], ref)
    for level_name in ("level", "pressure", "lev"):
        with pytest.warns(UserWarning, match="geopotential height in m multiplied by g"):
            nc = open_weather(wf.write(wf.ncep_reanalysis(levels=(850, 500), level_name=level_name),
                                       tmp_path / f"ncep_{level_name}.nc"))
        got, got_names = stack_channels(nc, ["hgt", "air"])
        assert got_names == names
        # NCEP stores whole metres (precision 0) and 0.01 K: compare at that precision
        np.testing.assert_allclose(got[:, :2], ref[:, :2], atol=0.5 * wf.G + 0.05)
        np.testing.assert_allclose(got[:, 2:], ref[:, 2:], atol=0.006)


def test_levels_in_pa(tmp_path):
    ds = wf.cds_netcdf().rename(pressure_level="plev")
    ds = ds.assign_coords(plev=("plev", ds.plev.values * 100.0, {"units": "Pa", "standard_name": "air_pressure"}))
    got = open_weather(ds)
    assert list(got.level.values) == [500.0, 850.0]
    bare = wf.cds_netcdf().assign_coords(pressure_level=("pressure_level", [85000.0, 50000.0]))
    with pytest.raises(DiffsciError, match="pressure levels up to 85000 without units"):
        normalize_layout(bare, path="bare.nc")


def test_units_converted_or_refused(tmp_path):
    base = wf.cfgrib_era5()
    zm = base.copy()
    zm["z"] = zm["z"] / wf.G
    zm["z"].attrs = {**base["z"].attrs, "units": "m"}
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        got = open_weather(zm)
    assert any("multiplied by g" in str(x.message) for x in w)
    np.testing.assert_allclose(got["z"].values, open_weather(base)["z"].values, rtol=1e-6)
    assert got["z"].attrs["units"] == "m**2 s**-2"
    tc = base.copy()
    tc["t"] = tc["t"] - 273.15
    tc["t"].attrs = {**base["t"].attrs, "units": "degC"}
    with pytest.warns(UserWarning, match="degC converted to K"):
        np.testing.assert_allclose(open_weather(tc)["t"].values, open_weather(base)["t"].values, atol=1e-4)
    odd = base.copy()
    odd["z"].attrs["units"] = "dam"
    with pytest.raises(DiffsciError, match=r"variable 'z' in 'dam': expected 'm\*\*2 s\*\*-2'"):
        open_weather(odd)


def test_values_that_lie_about_their_units(tmp_path):
    """Seen: geopotential height in metres given as z passes without a word."""
    base = wf.cfgrib_era5()
    zm = base.copy()
    zm["z"] = zm["z"] / wf.G  # metres, but still labelled m**2 s**-2
    with pytest.raises(DiffsciError, match=r"z at 500 hPa averages .* far from the standard atmosphere"):
        open_weather(wf.write(zm, tmp_path / "zm.nc"))
    tc = base.copy()
    tc["t"] = tc["t"] - 273.15  # Celsius labelled K
    with pytest.raises(DiffsciError, match=r"t ranges .* outside the physically possible 100\.\.400 K"):
        open_weather(tc)
    # geopotential below sea level at 1000 hPa is possible
    deep = wf.cfgrib_era5(levels=(1000, 500))
    deep["z"][:, 0, 0, 0] = -3000.0
    assert float(open_weather(deep)["z"].min()) == -3000.0


@pytest.mark.parametrize("mutate,needle", [
    (lambda d: d.rename(latitude="y"), "no latitude dimension: expected one of ['latitude', 'lat']"),
    (lambda d: d.rename(time="date").drop_vars("valid_time"), "no time dimension: expected 'time'"),
    # cfgrib's model levels (the attributes it gives them; a dim with pressure attributes is a pressure level)
    (lambda d: d.rename(isobaricInhPa="hybrid").assign_coords(hybrid=("hybrid", [60.0, 90.0], {
        "long_name": "hybrid level", "units": "1", "positive": "down", "stored_direction": "increasing",
        "standard_name": "atmosphere_hybrid_sigma_pressure_coordinate"})),
     "variable 'z' has dims ['hybrid'] besides the expected"),
    (lambda d: d.expand_dims(member=[0]), "several ensemble dims ['number', 'member']"),
])
def test_unknown_layouts_one_line(tmp_path, capsys, mutate, needle):
    ds = mutate(wf.cfgrib_era5(members=2))
    p = wf.write(ds, tmp_path / "odd.nc")
    with pytest.raises(DiffsciError) as err:
        open_weather(p)
    assert needle in str(err.value) and "odd.nc" in str(err.value)
    code = main(["weather", "train", "--data", str(p), "--out", str(tmp_path / "run"), "--steps", "1"])
    msg = capsys.readouterr().err
    assert code == 2 and needle in msg and "Traceback" not in msg and msg.count("\n") == 1


def test_forecast_values_not_range_checked_by_default(tmp_path):
    """A forecast that went wrong is scored, not refused; the same values as a state are refused."""
    fc = wf.cfgrib_era5(members=2, steps_hours=[6])
    fc["t"] = fc["t"] + 500.0
    got = open_weather(fc, forecast=True)
    assert float(got["t"].max()) > 600
    with pytest.raises(DiffsciError, match="outside the physically possible"):
        open_weather(fc, forecast=True, check_values=True)
    with pytest.raises(DiffsciError, match="outside the physically possible"):
        open_weather(wf.cfgrib_era5(members=2).assign(t=lambda d: d.t + 500.0))


def test_cds_forecast_reference_time_and_period():
    """New CDS forecast-type layout: forecast_reference_time x forecast_period, valid_time 2-D."""
    fc = wf.cfgrib_era5(steps_hours=[6, 12]).rename(time="forecast_reference_time", step="forecast_period")
    got = open_weather(fc, forecast=True)
    assert got["z"].dims == ("time", "prediction_timedelta", "level", "latitude", "longitude")
    np.testing.assert_array_equal(got.time.values, fc.forecast_reference_time.values)
    ref = open_weather(wf.cfgrib_era5(steps_hours=[6, 12]), forecast=True)
    np.testing.assert_array_equal(got["z"].values, ref["z"].values)


def test_old_cds_netcdf_with_era5t(tmp_path):
    """The pre-2024 CDS netCDF (packed int16) with an expver dim (ERA5 then ERA5T) reads as one series."""
    plain = open_weather(wf.write(wf.cds_legacy_netcdf(), tmp_path / "old.nc"))
    mixed = open_weather(wf.write(wf.cds_legacy_netcdf(era5t_from=2), tmp_path / "mixed.nc"))
    assert mixed["z"].dims == ("time", "level", "latitude", "longitude") and list(mixed.level.values) == [500, 850]
    np.testing.assert_array_equal(mixed["z"].values, plain["z"].values)
    want = _expected(plain.time.values, [850, 500])["z"][0]
    scale = float(np.ptp(want)) / (2**16 - 4)
    np.testing.assert_allclose(plain["z"].values, want, atol=scale)  # int16 packing


def test_model_levels_and_curvilinear_grids_refused():
    hyb = wf.cds_netcdf().rename(pressure_level="lev")
    hyb = hyb.assign_coords(lev=("lev", [0.9, 0.5], {"standard_name": "atmosphere_hybrid_sigma_pressure_coordinate",
                                                     "units": "1"}))
    with pytest.raises(DiffsciError, match="level coordinate is 'atmosphere_hybrid_sigma_pressure_coordinate'"):
        normalize_layout(hyb, path="hyb.nc")
    curv = wf.cds_netcdf().rename(latitude="lat")
    curv = curv.assign_coords(latitude=(("lat", "longitude"), np.zeros((5, 8))))
    with pytest.raises(DiffsciError, match="curvilinear grid is not supported"):
        normalize_layout(curv, path="curv.nc")


def test_short_name_and_normalize_unit():
    assert [short_name(n) for n in ("geopotential", "hgt", "2m_temperature", "z", "unknown")] == [
        "z", "z", "t2m", "z", "unknown"]
    assert normalize_unit(" M^2  S^-2 ") == "m**2 s**-2"
    assert normalize_unit("Pa\ts**-1") == "pa s**-1"
    # every canonical unit, written with ^ and mixed case, is recognised as itself by the reader
    ds = wf.cds_netcdf()
    ds["z"].attrs["units"] = " M^2 S^-2"
    assert open_weather(ds)["z"].attrs["units"] == CANONICAL_UNITS["z"]


# ------------------------------------------------------------------ issue 27: real inputs
def test_every_cf_pressure_coordinate_is_a_level(tmp_path):
    """Issue 27.3: a pressure level is recognised by its CF attributes, not only by a known name:
    iris's scalar ``air_pressure`` (Pa), a dim with ``standard_name: air_pressure``, a dim with
    ``positive``/``axis: Z`` in a pressure unit. Old: the scalar was dropped (the field lost its
    level), the dims refused as unknown."""
    iris = open_weather(wf.write(wf.iris_netcdf(level_hpa=850), tmp_path / "iris.nc"))
    assert iris["t"].dims == ("time", "level", "latitude", "longitude") and list(iris.level.values) == [850.0]
    lat, lon = wf.grid(5, 8, descending=False)
    np.testing.assert_array_equal(iris["t"].values[:, 0], wf.fields(iris.time.values, [850], lat, lon)["t"][0][:, 0])
    ref = open_weather(wf.cds_netcdf())
    for dim, attrs, scale in (("p", {"standard_name": "air_pressure", "units": "Pa"}, 100.0),
                              ("isobaric", {"positive": "down", "units": "mbar"}, 1.0),
                              ("plevel", {"axis": "Z", "units": "hPa"}, 1.0)):
        ds = wf.cds_netcdf().rename(pressure_level=dim)
        ds = ds.assign_coords({dim: (dim, ds[dim].values * scale, attrs)})
        got = open_weather(ds)
        assert list(got.level.values) == [500.0, 850.0], dim
        np.testing.assert_array_equal(got["z"].values, ref["z"].values)
    two = wf.iris_netcdf().assign_coords(pressure=((), 500.0, {"units": "hPa", "positive": "down"}))
    with pytest.raises(DiffsciError, match=r"several pressure levels as scalar coordinates \(air_pressure 850 hPa, "
                                           r"pressure 500 hPa\)"):
        normalize_layout(two, path="two.nc")
    # a height is not a pressure level: cfgrib's 2 m temperature stays a single-level field
    assert open_weather(wf.cfgrib_surface())["t2m"].dims == ("time", "latitude", "longitude")


def test_cfgrib_one_time_layout_is_read(tmp_path):
    """Issue 27.6: cfgrib squeezes a dim of length 1, so one analysis time has scalar ``time``,
    ``step`` and ``valid_time``, and one forecast run scalar ``time`` with a ``step`` dim and
    ``valid_time(step)``. Old: 'no time dimension' for both, though documented as read."""
    t0 = pd.Timestamp("2020-01-01T06")
    one = wf.cfgrib_era5(times=[t0]).isel(time=0)
    assert one.time.ndim == one.step.ndim == one.valid_time.ndim == 0
    got = open_weather(wf.write(one, tmp_path / "one.nc"))
    assert got["z"].dims == ("time", "level", "latitude", "longitude")
    np.testing.assert_array_equal(got.time.values, [t0.to_datetime64()])
    np.testing.assert_array_equal(got["z"].values, _expected([t0], [850, 500])["z"][0])
    run = wf.cfgrib_era5(times=[t0], steps_hours=[0, 6, 12], members=2).isel(time=0)
    assert run.time.ndim == 0 and run.valid_time.dims == ("step",)
    p = wf.write(run, tmp_path / "run.nc")
    states = open_weather(p)  # a truth: the run's states at their valid times
    valid = t0 + pd.to_timedelta([0, 6, 12], unit="h")
    np.testing.assert_array_equal(states.time.values, valid.values)
    np.testing.assert_array_equal(states["t"].values, _expected(valid, [850, 500], members=2)["t"])
    fc = open_weather(p, forecast=True)  # a forecast: one init, three leads
    assert fc["t"].dims == ("realization", "time", "prediction_timedelta", "level", "latitude", "longitude")
    np.testing.assert_array_equal(fc.time.values, [t0.to_datetime64()])
    np.testing.assert_array_equal(fc["t"].values[:, 0], states["t"].values)


def test_leads_as_numbers_with_time_units(tmp_path):
    """Issue 27.7: cfgrib's own netCDF stores ``step`` as float hours, the new CDS
    ``forecast_period`` as int64 hours (``units: hours``): read as timedeltas (old: refused). A
    number without time units is still refused. iris's scalar ``forecast_period`` beside a CF
    ``time`` (already the validity time) does not move the states."""
    fc = wf.cfgrib_era5(members=2, steps_hours=[6, 12])
    ref = open_weather(fc, forecast=True)
    attrs = {"units": "hours", "long_name": "time since forecast_reference_time", "standard_name": "forecast_period"}
    for dtype in (np.float64, np.int64):
        num = fc.assign_coords(step=("step", np.array([6, 12], dtype), attrs))
        got = open_weather(wf.write(num, tmp_path / f"num_{np.dtype(dtype).name}.nc"), forecast=True)
        np.testing.assert_array_equal(got.prediction_timedelta.values, ref.prediction_timedelta.values)
        np.testing.assert_array_equal(got["z"].values, ref["z"].values)
    bare = fc.assign_coords(step=("step", np.array([6.0, 12.0])))
    with pytest.raises(DiffsciError, match="lead coordinate is float64, expected a time interval"):
        open_weather(bare, forecast=True)
    iris = wf.iris_netcdf().assign_coords(forecast_period=((), 6.0, {"units": "hours"}))
    np.testing.assert_array_equal(open_weather(iris).time.values, iris.time.values)

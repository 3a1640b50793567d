"""Tests of the synthetic-weather generator (shallow water on the sphere) and make-data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from diffsci.core.cli import main
from diffsci.core.errors import DiffsciError
from diffsci.weather.generator import (
    GeneratorConfig,
    GeneratorOutput,
    Simulator,
    generate,
    hourly_change_ratio,
    perfect_model_ensemble,
)

RADIUS = 6.37122e6
GRID = (16, 32)


@pytest.fixture(scope="module")
def run():
    """One 16x32 trajectory of 36 h after a 48 h spin-up."""
    return generate(GRID, hours=36, seed=1, spinup_hours=48, progress=False)


def test_same_seed_same_data_different_seed_different():
    a = generate(GRID, hours=3, seed=5, spinup_hours=2, progress=False)
    b = generate(GRID, hours=3, seed=5, spinup_hours=2, progress=False)
    c = generate(GRID, hours=3, seed=6, spinup_hours=2, progress=False)
    for v in ("z", "u", "v", "vo"):
        np.testing.assert_array_equal(a[v].values, b[v].values)
        assert not np.allclose(a[v].values, c[v].values)


def test_members_independent_of_ensemble_size():
    e2 = generate(GRID, hours=4, seed=2, spinup_hours=2, output=GeneratorOutput(members=2), progress=False)
    e4 = generate(GRID, hours=4, seed=2, spinup_hours=2, output=GeneratorOutput(members=4), progress=False)
    assert e4["z"].dims == ("member", "time", "latitude", "longitude")
    np.testing.assert_array_equal(e2["z"].values, e4["z"].isel(member=slice(0, 2)).values)
    np.testing.assert_array_equal(e2["vo"].values, e4["vo"].isel(member=slice(0, 2)).values)
    # same initial state, different futures
    np.testing.assert_array_equal(e4["z"].values[0, 0], e4["z"].values[3, 0])
    assert not np.allclose(e4["z"].values[0, -1], e4["z"].values[3, -1])


def test_wb2_grid_and_attributes():
    ds = generate((32, 64), hours=1, spinup_hours=0, progress=False)
    lat, lon = ds["latitude"].values, ds["longitude"].values
    assert lat[0] == pytest.approx(-87.1875) and lat[-1] == pytest.approx(87.1875)
    np.testing.assert_allclose(np.diff(lat), 5.625)
    assert lon[0] == 0 and lon[-1] == pytest.approx(354.375)
    assert ds["z"].attrs["units"] == "m**2 s**-2" and ds["u"].attrs["standard_name"] == "eastward_wind"
    assert ds.attrs["synthetic"] == 1 and json.loads(ds.attrs["generator_config"])["nlat"] == 32
    assert ds["z"].dtype == np.float32


def _fd_vort_div(u, v, lat_deg, lon_deg):
    """Centred finite-difference vorticity and divergence on a lat-lon grid (interior rows)."""
    phi = np.deg2rad(lat_deg)[:, None]
    dlon = np.deg2rad(lon_deg[1] - lon_deg[0])
    dlat = np.deg2rad(lat_deg[1] - lat_deg[0])
    cos = np.cos(phi)
    dv_dlon = (np.roll(v, -1, -1) - np.roll(v, 1, -1)) / (2 * dlon)
    du_dlon = (np.roll(u, -1, -1) - np.roll(u, 1, -1)) / (2 * dlon)
    ucos, vcos = u * cos, v * cos
    ducos = (ucos[..., 2:, :] - ucos[..., :-2, :]) / (2 * dlat)
    dvcos = (vcos[..., 2:, :] - vcos[..., :-2, :]) / (2 * dlat)
    c = cos[1:-1]
    vort = (dv_dlon[..., 1:-1, :] - ducos) / (RADIUS * c)
    div = (du_dlon[..., 1:-1, :] + dvcos) / (RADIUS * c)
    return vort, div


def test_physical_sanity(run):
    for v in ("z", "u", "v", "vo"):
        assert np.isfinite(run[v].values).all()
    z = run["z"].values
    assert 4.0e4 < z.mean() < 6.5e4  # ~500 hPa geopotential (mean depth 5500 m)
    assert np.abs(run["u"].values).max() < 150
    # vo is consistent with (u, v) (independent finite differences; checks signs/orientation)
    lat, lon = run["latitude"].values, run["longitude"].values
    fd_vort, fd_div = _fd_vort_div(run["u"].values, run["v"].values, lat, lon)
    vo = run["vo"].values[:, 1:-1]
    mid = np.abs(lat[1:-1]) < 60
    err = np.sqrt(((fd_vort - vo)[:, mid] ** 2).mean()) / np.sqrt((vo[:, mid] ** 2).mean())
    assert err < 0.35
    # nearly balanced: divergence small relative to vorticity
    assert np.sqrt((fd_div[:, mid] ** 2).mean()) < 0.2 * np.sqrt((vo[:, mid] ** 2).mean())
    # slow, forecastable flow: the 1 h change is small and much smaller than the 24 h change
    r = hourly_change_ratio(run, "z", lags=(1, 24))
    assert r[1] < 0.15 and r[24] > 4 * r[1]


def test_restart_from_stored_state(run):
    sim = Simulator(GeneratorConfig(**json.loads(run.attrs["generator_config"])))
    i = 10
    state = sim.unpack(run["sim_state"].values[i][None])
    grid = sim.to_grid(state.spec)
    for v in ("z", "u", "v", "vo"):
        np.testing.assert_array_equal(grid[v][0], run[v].values[i])
    e2 = perfect_model_ensemble(run, i, lead_hours=24, members=2, seed=4)
    e3 = perfect_model_ensemble(run, run["time"].values[i], lead_hours=24, members=3, seed=4)
    assert e3["z"].dims == ("member", "time", "latitude", "longitude")
    np.testing.assert_array_equal(e2["z"].values, e3["z"].values[:2])
    assert e3["time"].values[0] == run["time"].values[i + 1]
    truth = run["z"].values[i + 1 : i + 25]
    err = np.sqrt(((e3["z"].values - truth) ** 2).mean(axis=(0, 2, 3)))  # (lead,)
    assert err[0] < 0.3 * err[-1]  # ensemble near truth at 1 h, far less so at 24 h
    with pytest.raises(DiffsciError, match="not a time"):
        perfect_model_ensemble(run, "1999-01-01", lead_hours=1, members=1)


def test_make_data_cli_and_bad_arguments(tmp_path, capsys):
    out = tmp_path / "d.nc"
    assert main(["weather", "make-data", "--out", str(out), "--grid", "16x32", "--hours", "2",
                 "--spinup-hours", "1", "--quiet"]) == 0
    with xr.open_dataset(out, engine="netcdf4") as ds:
        assert ds.sizes["time"] == 2 and ds.sizes["latitude"] == 16
    assert [p.name for p in tmp_path.iterdir()] == ["d.nc"]  # no temp file left
    for bad, msg in [
        (["--grid", "32x6a", "--hours", "2"], "grid: expected NLATxNLON"),
        (["--grid", "32", "--hours", "2"], "grid: expected NLATxNLON"),
        (["--hours", "0"], "hours must be >= 1"),
        (["--hours", "2", "--members", "0"], "members must be >= 1"),
        (["--grid", "16x16", "--hours", "2"], "nlon must be 2 * nlat"),
    ]:
        target = tmp_path / "bad.nc"
        assert main(["weather", "make-data", "--out", str(target), *bad, "--quiet"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and msg in err[0]
        assert not target.exists()


@pytest.mark.slow
def test_64x128_runs_and_is_sane():
    ds = generate((64, 128), hours=25, spinup_hours=48, progress=False)
    assert np.isfinite(ds["z"].values).all()
    r = hourly_change_ratio(ds, "z", lags=(1, 24))
    assert r[1] < 0.15 and r[24] > 4 * r[1]


@pytest.mark.parametrize("kwargs, match", [
    (dict(nlat=6, nlon=12), "nlat must be >= 8"),
    (dict(nlat=9, nlon=18), "nlat must be even"),
    (dict(nlat=32.0), "nlat must be an integer"),
    (dict(steps_per_hour=-1), "steps_per_hour must be >= 0"),
    (dict(forcing_lmin=10, forcing_lmax=5), "forcing_lmax must be >= 10"),
    (dict(drag_days=0.0), r"drag_days must lie in \(0, inf\)"),
    (dict(hyperdiff_hours=float("nan")), "hyperdiff_hours"),
    (dict(forcing_rms=-1e-10), r"forcing_rms must lie in \[0, inf\)"),
])
def test_config_refuses_bad_values_by_name(kwargs, match):
    with pytest.raises(DiffsciError, match=match):
        GeneratorConfig(**kwargs)
    GeneratorConfig(jet_speed=0.0, eddy_speed=0.0, steps_per_hour=0)  # zero is allowed where it means "none"


def test_library_errors_name_parameters():
    for kwargs, match in ((dict(hours=0), "hours must be >= 1"), (dict(trajectories=0), "trajectories must be >= 1"),
                          (dict(hours=1, spinup_hours=-1), "spinup_hours must be >= 0"),
                          (dict(hours=1.5), "hours must be an integer")):
        with pytest.raises(DiffsciError, match=match):
            generate((8, 16), progress=False, **kwargs)

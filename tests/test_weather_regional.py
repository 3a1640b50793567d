"""Regional (limited-area) grids: cell-area weights, the regional mesh, the boundary band in the
training loss, and forecasting with lateral boundary forcing (issue 14, item 4 / acceptance 4)."""

import json

import numpy as np
import pytest
import torch
import xarray as xr
from scipy.integrate import dblquad

from diffsci.core.cli import main
from diffsci.weather.graph import build_graph
from diffsci.weather.grid import (
    EARTH_RADIUS_M, boundary_mask, cell_area_weights, cell_areas, latitude_bounds, longitude_bounds,
)

LAT_20_90 = np.arange(20.0, 90.01, 5.0)  # 15 rows, 20N .. 90N (the pole as a row)
LON_5 = np.arange(0.0, 360.0, 5.0)


# ---------------------------------------------------------------------------- weights


def _wb2_weights(lat):
    """WeatherBench 2's latitude weights (Rasp et al. 2024, weatherbench2/metrics.py
    ``get_lat_weights``): bounds at the midpoints between ascending latitudes and at +-90,
    ``w = sin(upper) - sin(lower)``, divided by the mean. Written from the formula."""
    s = np.sort(np.deg2rad(lat))
    b = np.concatenate([[-np.pi / 2], (s[1:] + s[:-1]) / 2, [np.pi / 2]])
    w = np.sin(b[1:]) - np.sin(b[:-1])
    return w / w.mean()


def test_regional_20_90n_weights_are_the_true_cell_areas():
    # cells by hand: rows 20, 25, .., 85, 90; bounds 17.5, 22.5, .., 87.5, 90 (the pole row's cell is a cap)
    south = np.concatenate([[17.5], np.arange(22.5, 87.6, 5.0)])
    north = np.concatenate([np.arange(22.5, 87.6, 5.0), [90.0]])
    assert np.allclose(latitude_bounds(LAT_20_90), np.stack([south, north], 1))
    # exact spherical areas of the 5 x 5 deg cells by numerical integration of R^2 cos(lat)
    r = EARTH_RADIUS_M
    area = np.array([dblquad(lambda la, lo: r * r * np.cos(la), 0, np.deg2rad(5.0),
                             np.deg2rad(s), np.deg2rad(n))[0] for s, n in zip(south, north)])
    assert np.allclose(cell_areas(LAT_20_90, LON_5), area[:, None], rtol=1e-10)
    w = cell_area_weights(LAT_20_90)
    assert np.allclose(w, area / area.mean(), rtol=1e-10)
    assert np.allclose(cell_area_weights(LAT_20_90, LON_5), (area / area.mean())[:, None], rtol=1e-10)
    # the numbers: the 20N row holds ~12% of the area (68% with bounds at -90 as on a global grid)
    assert abs(w[0] / w.sum() - area[0] / area.sum()) < 1e-12
    assert w[0] / w.sum() < 0.13 and _wb2_weights(LAT_20_90)[0] / len(LAT_20_90) > 0.6
    # descending rows (ERA5's 90 -> 20) get the same weights in their own order
    assert np.allclose(cell_area_weights(LAT_20_90[::-1]), w[::-1])


@pytest.mark.parametrize("lat", [
    np.linspace(-90, 90, 33),  # with poles (WB2 1.5 deg style, coarse)
    np.linspace(-90, 90, 721),  # ERA5 0.25 deg
    -90 + (np.arange(32) + 0.5) * 180 / 32,  # without poles (WB2 5.625 deg, the generator's grid)
    np.linspace(88.59375, -88.59375, 64),  # without poles, descending
], ids=["poles33", "poles721", "nopoles32", "nopoles64desc"])
def test_global_grids_keep_wb2_weights(lat):
    w = cell_area_weights(lat)
    order = np.argsort(lat)
    assert np.allclose(w[order], _wb2_weights(lat), rtol=0, atol=1e-12)
    # the whole sphere, once
    lon = np.arange(0, 360, 360 / 16)
    assert abs(cell_areas(lat, lon, radius=1.0).sum() - 4 * np.pi) < 1e-12


def test_longitude_bounds_regional_and_global():
    assert np.allclose(longitude_bounds([350.0, 355.0, 0.0, 5.0]), [[347.5, 352.5], [352.5, 357.5], [357.5, 362.5],
                                                                   [362.5, 367.5]])
    wb = longitude_bounds(np.arange(0, 360, 90.0))
    assert np.allclose(wb[:, 1] - wb[:, 0], 90.0)


def test_boundary_mask_open_edges_only():
    m = boundary_mask(LAT_20_90, LON_5, 2)  # the pole and the periodic longitudes are no edge
    assert m[:2].all() and not m[2:].any()
    sub_lon = LON_5[:20]
    m = boundary_mask(LAT_20_90[::-1][1:], sub_lon, 1)  # 85N..20N, 0..95E: every edge open, rows descending
    expect = np.zeros(m.shape, bool)
    expect[0], expect[-1], expect[:, 0], expect[:, -1] = True, True, True, True
    assert np.array_equal(m, expect)
    assert not boundary_mask(-90 + (np.arange(32) + 0.5) * 180 / 32, np.arange(64) * 5.625, 3).any()


# ---------------------------------------------------------------------------- graph


def test_regional_20_90n_mesh_covers_the_domain_only():
    g = build_graph(LAT_20_90, LON_5, refinements=3)
    lat = np.rad2deg(np.arcsin(g.mesh_pos[:, 2].double().numpy()))
    assert lat.min() >= 17.5 - 1e-6  # no mesh node south of the domain's cells
    full = build_graph(LAT_20_90, LON_5, refinements=3, regional=False)
    full_lat = np.rad2deg(np.arcsin(full.mesh_pos[:, 2].double().numpy()))
    assert g.num_mesh == int((full_lat >= 17.5).sum())  # ... and every one inside kept
    assert (np.bincount(g.m2g_edge_index[1].numpy(), minlength=g.num_grid) == 3).all()
    assert (np.bincount(g.g2m_edge_index[1].numpy(), minlength=g.num_mesh) >= 1).all()


# ---------------------------------------------------------------------------- training loss


def test_loss_weights_ignore_the_boundary_band():
    from diffsci.weather.diffusion import DEFAULT_BOUNDARY_WIDTH, WeatherModelConfig, loss_weights

    lat = tuple(-90 + (np.arange(32) + 0.5) * 180 / 32)
    glob = WeatherModelConfig(variables=("z",), channels=("z",), latitude=lat, longitude=tuple(np.arange(64) * 5.625))
    assert glob.boundary_width == 0
    assert np.allclose(loss_weights(glob)[0].numpy(), _wb2_weights(np.array(lat))[:, None], atol=1e-6)
    reg = WeatherModelConfig(variables=("z",), channels=("z",), latitude=tuple(LAT_20_90), longitude=tuple(LON_5))
    assert reg.boundary_width == DEFAULT_BOUNDARY_WIDTH
    w = loss_weights(reg)[0].numpy().astype(np.float64)
    band = boundary_mask(LAT_20_90, LON_5, reg.boundary_width)
    assert (w[band] == 0).all() and (w[~band] > 0).all() and abs(w[~band].mean() - 1) < 1e-6
    ca = cell_area_weights(LAT_20_90, LON_5)
    assert np.allclose(w[~band] / w[~band].sum(), ca[~band] / ca[~band].sum(), rtol=1e-5)
    with pytest.raises(Exception, match="boundary_width"):
        WeatherModelConfig(variables=("z",), channels=("z",), latitude=tuple(LAT_20_90), longitude=tuple(LON_5),
                           boundary_width=15)


# ---------------------------------------------------------------------------- end to end (CLI)


@pytest.fixture(scope="module")
def regional(tmp_path_factory):
    """A global 32x64 file from make-data, cut to 20..90N; a tiny regional model trained on it."""
    d = tmp_path_factory.mktemp("regional")
    glob = d / "global.nc"
    assert main(["weather", "make-data", "--out", str(glob), "--grid", "32x64", "--hours", "14",
                 "--spinup-hours", "6", "--seed", "3", "--quiet"]) == 0
    ds = xr.open_dataset(glob)
    cut = ds.sel(latitude=slice(20, 90)) if ds.latitude[0] < ds.latitude[-1] else ds.sel(latitude=slice(90, 20))
    cut = cut[["z", "u", "v", "vo"]]
    data = d / "regional.nc"
    cut.to_netcdf(data, engine="netcdf4")
    (d / "cfg.json").write_text(json.dumps({"model": {"latent": 16, "layers": 1, "refinements": 2},
                                            "train": {"batch_size": 2, "ckpt_every": 3}}))
    assert main(["weather", "train", "--data", str(data), "--out", str(d / "run"), "--config", str(d / "cfg.json"),
                 "--steps", "3", "--device", "cpu"]) == 0
    return d, data, d / "run" / "latest.pt"


def _forecast(regional, out, *extra):
    d, data, ck = regional
    times = xr.open_dataset(data).time.values
    return main(["weather", "forecast", "--checkpoint", str(ck), "--init", str(data), "--out", str(out),
                 "--init-time", str(times[5])[:16], "--lead-hours", "3", "--members", "2", "--steps", "2",
                 "--quiet", *extra])


def test_regional_model_trains_and_forecasts_with_boundary_forcing(regional, tmp_path):
    d, data, ck = regional
    ckpt = torch.load(ck, weights_only=False, map_location="cpu")
    assert ckpt["model_config"]["boundary_width"] == 2 and ckpt["step"] == 3
    assert np.isfinite(ckpt["last_loss"])
    out = tmp_path / "f.nc"
    assert _forecast(regional, out, "--boundary", str(data)) == 0
    f, truth = xr.open_dataset(out), xr.open_dataset(data)
    assert f.attrs["boundary_width"] == 2
    lat, lon = f.latitude.values, f.longitude.values
    band = boundary_mask(lat, lon, 2)
    assert band.any() and not band.all()
    for v in ("z", "u", "v", "vo"):
        fv = f[v].isel(time=0)  # (lead, member, lat, lon)
        for j, vt in enumerate(f.valid_time.values[0]):
            tv = truth[v].sel(time=vt).sel(latitude=lat, longitude=lon).values.astype(np.float32)
            for m in range(f.sizes["realization"]):
                got = fv.isel(prediction_timedelta=j, realization=m).values
                assert np.array_equal(got[band], tv[band])  # the band is the boundary file, exactly
                assert np.isfinite(got).all() and not np.array_equal(got[~band], tv[~band])  # interior: the model


def test_regional_forecast_refuses_missing_or_wrong_boundary(regional, tmp_path, capsys):
    d, data, ck = regional
    ds = xr.open_dataset(data)
    short = tmp_path / "short.nc"
    ds.isel(time=slice(0, 7)).to_netcdf(short, engine="netcdf4")  # ends at init + 1 h
    other = tmp_path / "other.nc"
    ds.isel(latitude=slice(1, None)).to_netcdf(other, engine="netcdf4")
    cases = [([], "give the lateral boundary values"), (["--boundary", str(short)], "missing for 2 valid time"),
             (["--boundary", str(other)], "latitude grid"),
             (["--boundary", str(data), "--boundary-width", "1"], "boundary_width")]
    for extra, needle in cases:
        out = tmp_path / "bad.nc"
        assert _forecast(regional, out, *extra) == 2, extra
        err = capsys.readouterr().err
        assert needle in err and "Traceback" not in err, (extra, err)
        assert not out.exists()


def test_domain_split_across_the_seam_is_refused_in_one_line():
    from diffsci.core.errors import DiffsciError

    with pytest.raises(DiffsciError, match="contiguous"):
        longitude_bounds(np.concatenate([np.arange(0, 41, 2.5), np.arange(330, 360, 2.5)]))


# ------------------------------------------------------------- a domain across 0 deg (Europe)


def test_domain_across_0_deg_opens_as_one_run_and_forecasts(regional, tmp_path):
    """A European-style domain (-25..40E) stored as CDS writes it (-25..40) and as 335..360, 0..40
    opens to one west-to-east run; a model trains on it and forecasts with boundary forcing."""
    from diffsci.weather.data import open_weather

    d, data, _ = regional
    glob = xr.open_dataset(d / "global.nc")[["z", "u", "v", "vo"]]
    west = glob.sel(longitude=slice(335, 360)).assign_coords(longitude=lambda x: x.longitude - 360)
    east = glob.sel(longitude=slice(0, 40))
    eu = xr.concat([west, east], "longitude").sel(latitude=slice(30, 70))
    as_cds = tmp_path / "eu_cds.nc"
    eu.to_netcdf(as_cds, engine="netcdf4")
    wrapped = tmp_path / "eu_360.nc"
    eu.assign_coords(longitude=np.mod(eu.longitude.values, 360.0)).to_netcdf(wrapped, engine="netcdf4")
    a, b = open_weather(as_cds), open_weather(wrapped)
    lon = a.longitude.values
    assert np.all(np.diff(lon) > 0) and lon[0] < 0 < lon[-1]  # one run, west of 0 negative
    np.testing.assert_array_equal(lon, b.longitude.values)
    np.testing.assert_array_equal(a.z.values, b.z.values)
    np.testing.assert_array_equal(a.z.values, eu.z.values.astype(np.float32))  # nothing reordered
    w = cell_area_weights(a.latitude.values, lon)
    assert np.allclose(w[:, 0], w[:, -1]) and np.isfinite(w).all()  # equal column widths
    run = tmp_path / "run"
    assert main(["weather", "train", "--data", str(wrapped), "--out", str(run), "--config", str(d / "cfg.json"),
                 "--steps", "2", "--device", "cpu"]) == 0
    times = eu.time.values
    out = tmp_path / "f.nc"
    assert main(["weather", "forecast", "--checkpoint", str(run / "latest.pt"), "--init", str(as_cds),
                 "--boundary", str(wrapped), "--out", str(out), "--init-time", str(times[5])[:16],
                 "--lead-hours", "2", "--members", "2", "--steps", "2", "--quiet"]) == 0
    f = open_weather(out, forecast=True)
    np.testing.assert_array_equal(f.longitude.values, lon)
    band = boundary_mask(f.latitude.values, lon, 2)
    got = f.z.isel(time=0, prediction_timedelta=0, realization=0).values
    want = a.z.sel(time=f.time.values[0] + f.prediction_timedelta.values[0]).values
    assert np.array_equal(got[band], want[band]) and not np.array_equal(got[~band], want[~band])

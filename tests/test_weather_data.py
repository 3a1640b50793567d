"""Tests of diffsci.weather.data: one convention whatever the file layout, clear errors, stats."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from diffsci.core.cli import main
from diffsci.core.errors import DiffsciError
from diffsci.weather.data import (
    NormStats,
    StateReader,
    bounded_chunks,
    check_grid,
    compute_norm_stats,
    open_weather,
    stack_channels,
    static_features,
    window_starts,
)
from diffsci.weather.layouts import LONG_TO_SHORT

VARS = ["z", "u", "v", "vo"]
SHORT_TO_LONG = {v: k for k, v in LONG_TO_SHORT.items()}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A tiny file written by the real CLI: 16x32 grid, 2 trajectories of 12 hours."""
    d = tmp_path_factory.mktemp("wx")
    out = d / "made.nc"
    code = main([
        "weather", "make-data", "--out", str(out), "--grid", "16x32", "--hours", "12",
        "--trajectories", "2", "--spinup-hours", "6", "--seed", "3", "--quiet",
    ])
    assert code == 0 and out.exists()
    return out


def _raw(path) -> xr.Dataset:
    with xr.open_dataset(path, engine="netcdf4") as ds:
        return ds.drop_vars("sim_state").load()


def test_layouts_load_to_identical_tensors(made, tmp_path):
    ref, names = stack_channels(open_weather(made), VARS)
    assert names == VARS and ref.shape == (24, 4, 16, 32) and ref.dtype == np.float32
    raw = _raw(made)

    # WB2 long names, 'valid_time', descending latitude, longitude in -180..180 (rolled)
    wb = raw.rename({v: SHORT_TO_LONG[v] for v in VARS}).rename({"time": "valid_time"})
    wb = wb.isel(latitude=slice(None, None, -1))
    lon = wb["longitude"].values
    wb = wb.assign_coords(longitude=np.where(lon >= 180, lon - 360, lon)).sortby("longitude")
    assert float(wb["longitude"][0]) < 0 and float(wb["latitude"][0]) > 0
    wb_path = tmp_path / "wb2.nc"
    wb.to_netcdf(wb_path, engine="netcdf4")
    got_nc, _ = stack_channels(open_weather(wb_path, variables=[SHORT_TO_LONG[v] for v in VARS]), VARS)
    np.testing.assert_array_equal(got_nc, ref)

    zarr_path = tmp_path / "copy.zarr"
    wb.to_zarr(zarr_path)
    got_zarr, _ = stack_channels(open_weather(zarr_path), VARS)
    np.testing.assert_array_equal(got_zarr, ref)

    ds = open_weather(wb_path)
    assert np.all(np.diff(ds["latitude"].values) > 0)
    assert ds["longitude"].values.min() >= 0 and ds["longitude"].values.max() < 360
    assert list(ds["z"].dims) == ["time", "latitude", "longitude"]
    assert ds["z"].chunks is not None  # lazy (dask)


def test_levels_and_channel_order():
    t = pd.date_range("2000-01-01", periods=3, freq="6h")
    lev = np.array([850, 500])  # ERA5 downloads are often descending
    rng = np.random.default_rng(0)
    ds = xr.Dataset(
        {
            "temperature": (("time", "level", "latitude", "longitude"), 250 + rng.normal(size=(3, 2, 4, 8))),
            "2m_temperature": (("time", "latitude", "longitude"), 280 + rng.normal(size=(3, 4, 8))),
        },
        coords={"time": t, "level": lev, "latitude": np.linspace(-67.5, 67.5, 4), "longitude": np.arange(8) * 45.0},
    ).rename({"level": "pressure_level"})
    x, names = stack_channels(open_weather(ds), ["t", "2m_temperature"])
    assert names == ["t500", "t850", "t2m"]
    np.testing.assert_allclose(x[:, 0], ds["temperature"].values[:, 1].astype(np.float32))
    np.testing.assert_allclose(x[:, 1], ds["temperature"].values[:, 0].astype(np.float32))
    np.testing.assert_allclose(x[:, 2], ds["2m_temperature"].values.astype(np.float32))


def test_nan_error_names_variable_and_count(made, tmp_path):
    raw = _raw(made)
    raw["u"][2, 3, 4] = np.nan
    raw["u"][5, 1, 1] = np.nan
    p = tmp_path / "nan.nc"
    raw.to_netcdf(p, engine="netcdf4")
    with pytest.raises(DiffsciError, match=r"nan\.nc.*u: 2 NaN"):
        open_weather(p)


def test_missing_variable_error(made):
    with pytest.raises(DiffsciError, match=r"made\.nc: missing variables \['t2m'\]"):
        open_weather(made, variables=["z", "t2m"])


def test_irregular_time_error_names_the_times(made):
    raw = _raw(made)
    gap = raw.isel(time=[i for i in range(raw.sizes["time"]) if i != 7])
    with pytest.raises(DiffsciError, match=r"irregular time steps.*2000-01-01 06:00:00 -> 2000-01-01 08:00:00"):
        open_weather(gap)


def test_duplicate_and_unsorted_coordinates(made):
    raw = _raw(made)
    dup = raw.isel(latitude=[0, 0, 1, 2])
    with pytest.raises(DiffsciError, match="duplicate latitude"):
        open_weather(dup)
    shuffled = raw.isel(longitude=[1, 0, 2, 3])
    with pytest.raises(DiffsciError, match="longitude is not monotonic"):
        open_weather(shuffled)
    with pytest.raises(DiffsciError, match="duplicate time"):
        open_weather(raw.isel(time=[0, 1, 1, 2]))


def test_bad_files(tmp_path):
    with pytest.raises(DiffsciError, match="no such file"):
        open_weather(tmp_path / "absent.nc")
    junk = tmp_path / "junk.nc"
    junk.write_text("not a netcdf file")
    with pytest.raises(DiffsciError, match=r"junk\.nc: cannot open"):
        open_weather(junk)


def test_norm_stats_equal_numpy(made):
    ds = open_weather(made)
    stats = compute_norm_stats(ds, VARS, block=5)  # several blocks: tests the streaming
    x = np.stack([_raw(made)[v].values.astype(np.float64) for v in VARS], axis=1)  # (T, C, H, W)
    np.testing.assert_allclose(stats.mean, x.mean(axis=(0, 2, 3)), rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(stats.std, x.std(axis=(0, 2, 3)), rtol=1e-5)
    traj = _raw(made)["trajectory"].values
    d = np.concatenate([np.diff(x[traj == k], axis=0) for k in np.unique(traj)])  # within runs only
    np.testing.assert_allclose(stats.residual_std, d.std(axis=(0, 2, 3)), rtol=1e-5)
    # crossing the trajectory boundary would give a different (larger) value
    assert not np.allclose(stats.residual_std, np.diff(x, axis=0).std(axis=(0, 2, 3)), rtol=1e-3)
    again = NormStats.from_dict(stats.to_dict())
    assert again == stats
    part = compute_norm_stats(ds, VARS, time_slice=slice("2000-01-01T00", "2000-01-01T05"))
    np.testing.assert_allclose(part.mean, x[:6].mean(axis=(0, 2, 3)), rtol=1e-6, atol=1e-12)
    # a memory budget of about two time steps gives blocks of one time step: the same numbers
    step_mb = 16 * 32 * (8 * len(VARS) + 32) / 2**20
    small = compute_norm_stats(ds, VARS, max_mb=1.5 * step_mb)
    for a, b in zip((small.mean, small.std, small.residual_std), (stats.mean, stats.std, stats.residual_std)):
        np.testing.assert_allclose(a, b, rtol=1e-9)
    with pytest.raises(DiffsciError, match="max_mb"):
        compute_norm_stats(ds, VARS, max_mb=0)


def test_bounded_chunks_limit_every_chunk():
    """Leading dims are split first; a shared dim takes the smallest size; chunks stay under the budget."""
    ds = xr.Dataset({"a": (("time", "level", "lat", "lon"), np.zeros((50, 3, 4, 8), np.float32)),
                     "b": (("time", "lat", "lon"), np.zeros((50, 4, 8), np.float32))})
    slab = 3 * 4 * 8 * 4  # bytes of one time of "a"
    assert bounded_chunks(ds, 5 * slab / 2**20) == {"time": 5}
    # a budget below one time of "a": one time, and as many levels as fit
    assert bounded_chunks(ds, 2.5 * 4 * 8 * 4 / 2**20) == {"time": 1, "level": 2}
    assert bounded_chunks(ds, 1.0) == {}  # everything fits in one chunk
    for mb in (5 * slab / 2**20, 300 / 2**20):
        chunked = ds.chunk(bounded_chunks(ds, mb))
        for v in chunked.data_vars.values():
            biggest = np.prod([max(c) for c in v.chunks]) * v.dtype.itemsize
            assert biggest <= mb * 2**20
    with pytest.raises(DiffsciError, match="chunk_mb"):
        bounded_chunks(ds, -1)


def test_open_weather_chunk_mb_reads_the_same(made):
    """chunk_mb only changes how the file is read: same values, chunks under the budget."""
    ref, names = stack_channels(open_weather(made), VARS)
    mb = 3 * 16 * 32 * 4 / 2**20  # three times of one variable
    ds = open_weather(made, chunk_mb=mb)
    assert all(len(ds[v].chunks[0]) > 1 and max(ds[v].chunks[0]) <= 3 for v in VARS)
    np.testing.assert_array_equal(stack_channels(ds, VARS)[0], ref)
    reader = StateReader(ds, VARS)
    assert reader.channels == names and len(reader) == len(ref)
    index = np.array([5, 3, 4, 5, 20, 0, 21, 22])  # unsorted, repeated, several runs
    np.testing.assert_array_equal(reader[index], ref[index])
    assert reader[np.zeros(0, dtype=int)].shape == (0, *ref.shape[1:])
    with pytest.raises(IndexError):
        reader[[len(ref)]]


def test_check_grid(made):
    ds = open_weather(made)
    check_grid(ds, ds["latitude"].values, ds["longitude"].values)
    with pytest.raises(DiffsciError, match="latitude grid .*does not match the checkpoint"):
        check_grid(ds, np.linspace(-87.1875, 87.1875, 32), ds["longitude"].values)
    with pytest.raises(DiffsciError, match="longitude grid"):
        check_grid(ds, ds["latitude"].values, ds["longitude"].values + 1.0)


def test_static_features():
    lat, lon = np.array([-45.0, 0.0, 30.0]), np.array([0.0, 90.0, 180.0, 270.0])
    f = static_features(lat, lon)
    assert f.shape == (4, 3, 4) and f.dtype == np.float32
    np.testing.assert_allclose(f[0, :, 0], np.sin(np.deg2rad(lat)), atol=1e-7)
    np.testing.assert_allclose(f[3, 0], np.cos(np.deg2rad(lon)), atol=1e-7)
    mask = np.ones((3, 4))
    assert static_features(lat, lon, mask).shape == (5, 3, 4)
    with pytest.raises(DiffsciError, match="land_sea_mask"):
        static_features(lat, lon, np.ones((4, 3)))


def test_window_starts_never_cross_trajectories(made):
    ds = open_weather(made)
    starts = window_starts(ds, history=2, lead=1)
    traj = ds["trajectory"].values
    assert len(starts) == 2 * (12 - 2)
    for i in starts:
        assert traj[i] == traj[i + 2]


def test_check_output_path(tmp_path):
    from diffsci.core.io import check_output_path

    store = tmp_path / "in.zarr"
    store.mkdir()
    data = tmp_path / "in.nc"
    data.write_text("x")
    with pytest.raises(DiffsciError, match="lies inside the input store"):
        check_output_path(store / "fc.nc", inputs=[store])
    with pytest.raises(DiffsciError, match="is the input"):
        check_output_path(tmp_path / "." / "in.nc", inputs=[data])
    with pytest.raises(DiffsciError, match="exists and is not a folder"):
        check_output_path(data, folder=True)
    with pytest.raises(DiffsciError, match=r"in\.nc is not a folder"):
        check_output_path(data / "run", folder=True)
    assert check_output_path(tmp_path / "new" / "deeper", folder=True) == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists() and not list(tmp_path.glob(".diffsci-write-test*"))
    assert check_output_path(tmp_path / "fc.nc", inputs=[data, None]) == tmp_path / "fc.nc"

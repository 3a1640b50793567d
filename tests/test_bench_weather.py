"""Weather baselines: layouts and values on tiny generated data; perfect-model calibration."""

import numpy as np
import pytest
import xarray as xr
from scipy import stats

from diffsci.benchmarks import weather_bench as B
from diffsci.weather import metrics as M
from diffsci.weather.data import open_weather
from diffsci.weather.generator import generate

VARS = ["z", "u", "v", "vo"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("wb")
    raw = generate(grid=(16, 32), hours=60, trajectories=1, seed=3, spinup_hours=24, progress=False)
    raw.to_netcdf(d / "truth.nc", engine="netcdf4")
    train = generate(grid=(16, 32), hours=72, trajectories=1, seed=4, spinup_hours=24, progress=False)
    raw = xr.open_dataset(d / "truth.nc", engine="netcdf4")
    return raw, open_weather(d / "truth.nc").load(), open_weather(train).load()


def test_persistence_repeats_the_init_state(data):
    raw, truth, _ = data
    inits = truth.time.values[[3, 10]]
    f = B.persistence(truth, inits, 4, VARS)
    assert f.z.dims == ("time", "prediction_timedelta", "realization", "latitude", "longitude")
    for k in range(4):
        assert np.array_equal(f.z.isel(time=1, prediction_timedelta=k, realization=0).values, truth.z.sel(time=inits[1]).values)


def test_climatology_is_the_mean_by_hour(data):
    _, truth, train = data
    inits = truth.time.values[[5]]
    f = B.climatology(train, truth, inits, 3, VARS)
    valid_hour = (truth.time.values[5] + np.timedelta64(2, "h")).astype("datetime64[h]").astype(int) % 24
    sel = train.z.where(train.time.dt.hour == valid_hour, drop=True).mean("time")
    assert np.allclose(f.z.isel(time=0, prediction_timedelta=1, realization=0).values, sel.values, atol=1e-3)


def test_prob_climatology_members_come_from_the_same_hour(data):
    _, truth, train = data
    f = B.prob_climatology(train, truth, truth.time.values[[5]], 2, VARS, members=6)
    member = f.z.isel(time=0, prediction_timedelta=0, realization=2).values
    hits = [t for t in range(train.sizes["time"]) if np.array_equal(train.z.isel(time=t).values, member)]
    assert hits and all(train.time.values[h].astype("datetime64[h]").astype(int) % 24 ==
                        (truth.time.values[5] + np.timedelta64(1, "h")).astype("datetime64[h]").astype(int) % 24 for h in hits)


def test_perfect_model_rank_histogram_is_flat_and_persistence_is_not(data):
    """The generator's own ensemble, restarted from the true state, against the truth (WB2 metrics issue)."""
    raw, truth, _ = data
    inits = truth.time.values[[4, 14, 24]]
    f = B.perfect_model(raw, truth, inits, 12, VARS, members=8, seed=1)
    fc = f.sel(prediction_timedelta=np.timedelta64(12, "h"))
    t = truth.sel(time=fc.time.values + np.timedelta64(12, "h")).assign_coords(time=fc.time.values)
    h = M.rank_histogram(fc.z, t.z)
    # neighbouring grid points are correlated: test on a thinned sample of points
    thin_f, thin_t = fc.z.isel(latitude=slice(None, None, 4), longitude=slice(None, None, 4)), t.z.isel(latitude=slice(None, None, 4), longitude=slice(None, None, 4))
    h = M.rank_histogram(thin_f, thin_t)
    assert stats.chisquare(h).pvalue > 0.01, h
    p = B.persistence(truth, inits, 12, VARS).sel(prediction_timedelta=np.timedelta64(12, "h"))
    pe = xr.concat([p.z.isel(realization=0)] * 8, dim="realization")
    hp = M.rank_histogram(pe.isel(latitude=slice(None, None, 4), longitude=slice(None, None, 4)), thin_t)
    assert stats.chisquare(hp).pvalue < 0.01, hp

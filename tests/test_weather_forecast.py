"""Ensemble forecasts: reproducibility across ensemble sizes, WB2 layout, bad input."""

import json

import numpy as np
import pytest
import xarray as xr

from diffsci.core.cli import main
from diffsci.weather.generator import generate


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("wfc")
    ds = generate(grid=(16, 32), hours=30, trajectories=1, seed=7, spinup_hours=12, progress=False)
    data = d / "data.nc"
    ds.to_netcdf(data, engine="netcdf4")
    (d / "cfg.json").write_text(json.dumps({"model": {"latent": 16, "layers": 1, "refinements": 1},
                                            "train": {"batch_size": 2, "ckpt_every": 2}}))
    assert main(["weather", "train", "--data", str(data), "--out", str(d / "run"), "--config", str(d / "cfg.json"),
                 "--steps", "2", "--device", "cpu"]) == 0
    return d, data, d / "run" / "latest.pt"


def _fc(setup, out, *extra):
    d, data, ck = setup
    return main(["weather", "forecast", "--checkpoint", str(ck), "--init", str(data), "--out", str(out),
                 "--quiet", "--steps", "3", *extra])


def test_member_is_independent_of_ensemble_size(setup, tmp_path):
    assert _fc(setup, tmp_path / "m4.nc", "--members", "4", "--lead-hours", "3", "--seed", "11") == 0
    assert _fc(setup, tmp_path / "m8.nc", "--members", "8", "--lead-hours", "3", "--seed", "11") == 0
    a, b = xr.open_dataset(tmp_path / "m4.nc"), xr.open_dataset(tmp_path / "m8.nc")
    for v in a.data_vars:
        assert np.array_equal(a[v].isel(realization=2).values, b[v].isel(realization=2).values)
    assert not np.array_equal(a.z.isel(realization=1).values, a.z.isel(realization=2).values)
    # 5 members: the second chunk is padded with throw-away members; member 4 is unchanged
    assert _fc(setup, tmp_path / "m5.nc", "--members", "5", "--lead-hours", "3", "--seed", "11") == 0
    c = xr.open_dataset(tmp_path / "m5.nc")
    assert c.sizes["realization"] == 5
    for v in c.data_vars:
        assert np.array_equal(c[v].isel(realization=4).values, b[v].isel(realization=4).values)
        assert np.array_equal(c[v].isel(realization=2).values, a[v].isel(realization=2).values)
    # another seed gives another ensemble
    assert _fc(setup, tmp_path / "s12.nc", "--members", "4", "--lead-hours", "3", "--seed", "12") == 0
    assert not np.array_equal(xr.open_dataset(tmp_path / "s12.nc").z.values, a.z.values)


def test_wb2_layout_and_init_times(setup, tmp_path):
    d, data, _ = setup
    times = xr.open_dataset(data).time.values
    t1, t2 = str(times[5])[:16], str(times[9])[:16]
    assert _fc(setup, tmp_path / "f.nc", "--members", "2", "--lead-hours", "2", "--init-time", t1, "--init-time", t2) == 0
    f = xr.open_dataset(tmp_path / "f.nc")
    assert f.z.dims == ("time", "prediction_timedelta", "realization", "latitude", "longitude")
    assert list(f.time.values) == [times[5], times[9]]
    assert list(f.prediction_timedelta.values.astype("timedelta64[h]").astype(int)) == [1, 2]
    assert set(f.data_vars) == {"z", "u", "v", "vo"} and f.z.attrs.get("units")
    assert np.isfinite(f.z.values).all()


@pytest.mark.parametrize("extra,needle", [
    (["--members", "0", "--lead-hours", "2"], "--members"),
    (["--members", "2", "--lead-hours", "2", "--init-time", "1999-01-01T00:00"], "not in the initial-condition file"),
    (["--members", "2", "--lead-hours", "2", "--init-time", "FIRST"], "previous hourly state"),
    (["--members", "2", "--lead-hours", "2", "--init-time", "yesterday"], "ISO 8601"),
    (["--members", "2", "--lead-hours", "2", "--sampler", "nope"], "unknown sampler"),
    (["--members", "2", "--lead-hours", "2", "--threads", "0"], "--threads"),
])
def test_bad_arguments(setup, tmp_path, capsys, extra, needle):
    d, data, _ = setup
    first = str(xr.open_dataset(data).time.values[0])[:16]
    extra = [first if e == "FIRST" else e for e in extra]
    out = tmp_path / "bad.nc"
    assert _fc(setup, out, *extra) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".bad.nc*"))


def test_bad_files(setup, tmp_path, capsys):
    d, data, ck = setup
    ds = xr.open_dataset(data).load()
    cases = {
        "grid.nc": generate(grid=(32, 64), hours=3, trajectories=1, seed=1, spinup_hours=2, progress=False),
        "novar.nc": ds.drop_vars("vo"),
        "nan.nc": ds.copy(deep=True),
    }
    cases["nan.nc"]["u"][-1, 3, 3] = np.nan
    needles = {"grid.nc": "grid", "novar.nc": "vo", "nan.nc": "NaN"}
    for name, bad in cases.items():
        bad.to_netcdf(tmp_path / name, engine="netcdf4")
        out = tmp_path / f"out_{name}"
        code = main(["weather", "forecast", "--checkpoint", str(ck), "--init", str(tmp_path / name), "--out", str(out),
                     "--members", "2", "--lead-hours", "1", "--quiet"])
        err = capsys.readouterr().err
        assert code == 2 and needles[name] in err and "Traceback" not in err, (name, err)
        assert not out.exists()


def test_bad_checkpoints(setup, tmp_path, capsys, monkeypatch):
    d, data, ck = setup
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    args = ["weather", "forecast", "--init", str(data), "--members", "2", "--lead-hours", "1", "--quiet"]
    for path, needle in ((garbage, "not a readable checkpoint"), (tmp_path / "absent.pt", "not found")):
        assert main([*args, "--checkpoint", str(path), "--out", str(tmp_path / "o.nc")]) == 2
        err = capsys.readouterr().err
        assert needle in err and "Traceback" not in err
    import diffsci.weather.forecast as fmod

    monkeypatch.setattr(fmod, "default_checkpoint_path", lambda: tmp_path / "no_default.pt")
    assert main([*args, "--out", str(tmp_path / "o.nc")]) == 2
    err = capsys.readouterr().err
    assert "default checkpoint" in err and "Traceback" not in err
    assert not (tmp_path / "o.nc").exists()


def test_forecast_values_follow_the_model(setup, tmp_path):
    """Independent check of the rollout: one member, one lead, the deterministic Euler sampler
    with one noise level from sigma_max is x_cur + rstd * D(prior noise) (EDM: x0_hat of a
    single step to t = 0), recomputed here from the library pieces."""
    import pandas as pd
    import torch

    from diffsci.core.utils import make_generator
    from diffsci.weather.data import open_weather, stack_channels
    from diffsci.weather.diffusion import WeatherCond, hour_features
    from diffsci.weather.forecast import forecast, load_forecaster

    d, data, ck = setup
    fc = load_forecaster(ck)
    torch.manual_seed(0)
    with torch.no_grad():  # a barely trained model predicts ~0 residuals: randomise it so the check bites
        for prm in fc.model.parameters():
            prm.normal_(0.0, 0.2)
    fds = forecast(fc, data, lead_hours=1, members=1, seed=3, steps=1, sampler="euler", churn=0.0, progress=False)
    ds = open_weather(data, variables=list(fc.cfg.variables))
    pair, _ = stack_channels(ds.isel(time=[-2, -1]), fc.cfg.variables)
    mean, std, rstd = (torch.as_tensor(a)[:, None, None] for a in fc.stats.arrays())
    prev = torch.cat([(torch.from_numpy(pair[0]) - mean) / std, (torch.from_numpy(pair[1]) - mean) / std])[None]
    valid = pd.Timestamp(ds.time.values[-1]) + pd.Timedelta(hours=1)
    cond = WeatherCond(prev, hour_features(np.array([valid.to_datetime64()])))
    sched = fc.cfg.schedule
    times = sched.time_grid(1)
    gen = make_generator(3, str(pd.Timestamp(ds.time.values[-1])), "member", 0)
    x = float(sched.sigma(torch.as_tensor(times[0], dtype=torch.float64))) * torch.randn(
        (1, len(fc.cfg.channels), *fc.cfg.grid_shape), generator=gen)
    with torch.no_grad():
        r = fc.model(x, torch.full((1,), float(times[0])), cond)
    for j, name in enumerate(fc.cfg.channels):
        step = (r[0, j] * rstd[j]).numpy()  # the predicted increment in physical units
        got = fds[name].isel(time=0, prediction_timedelta=0, realization=0).values - pair[1, j]
        assert np.abs(step).max() > 0
        assert np.allclose(got, step, rtol=1e-3, atol=1e-3 * np.abs(step).max()), name


def test_speed_benchmark_runs(setup, tmp_path, capsys):
    from diffsci.benchmarks.weather_speed import main as speed_main

    d, data, ck = setup
    assert speed_main(["--checkpoint", str(ck), "--members", "2", "--lead-hours", "1", "--steps", "2",
                       "--out", str(tmp_path / "s.json")]) == 0
    res = json.loads((tmp_path / "s.json").read_text())
    assert res["members"] == 2 and res["seconds"] > 0 and res["steps"] == 2

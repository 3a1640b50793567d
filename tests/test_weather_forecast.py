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

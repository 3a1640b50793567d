"""benchmarks/forecast_memory.py (issue 31): the peak-memory-against-leads script runs on a tiny
WeatherBench 2 grid, prints its one JSON line and writes the forecast; streamed and in-memory
paths write the same values; ``--steps`` sets the sampler's noise levels. No timing or memory
thresholds (those are measured, docs/benchmarks.md)."""

import json

import numpy as np
import pytest
import torch
import xarray as xr

from diffsci.benchmarks.forecast_memory import main


@pytest.fixture(autouse=True)
def _threads():
    """The script sets one thread; give the test process its own back."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _run(capsys, out, *extra) -> dict:
    assert main(["--grid", "33x64", "--members", "2", "--leads", "2", "--out", str(out), *extra]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    return json.loads(lines[0])


def test_streamed_forecast_json_and_file(tmp_path, capsys):
    out = tmp_path / "fc.nc"
    rec = _run(capsys, out, "--steps", "1")
    assert set(rec) == {"grid", "members", "leads", "steps", "streamed", "seconds", "peak_rss_mb"}
    assert rec["grid"] == [33, 64] and rec["members"] == 2 and rec["leads"] == 2 and rec["steps"] == 1
    assert rec["streamed"] is True
    assert rec["seconds"] >= 0 and rec["peak_rss_mb"] > 0
    assert (tmp_path / "fc.init.nc").exists()
    with xr.open_dataset(out) as ds:
        assert sorted(ds.data_vars) == ["u", "v", "vo", "z"]
        assert dict(ds.sizes) == {"time": 1, "prediction_timedelta": 2, "realization": 2, "latitude": 33,
                                  "longitude": 64}
        assert ds.attrs["sampler"] == "euler" and int(ds.attrs["noise_levels"]) == 1
        assert np.isfinite(ds["z"].values).all()
        # the two members differ (own noise), so the file holds a real ensemble
        assert not np.array_equal(ds["z"].isel(realization=0).values, ds["z"].isel(realization=1).values)


def test_in_memory_path_writes_the_same_values_and_steps_matter(tmp_path, capsys):
    streamed = _run(capsys, tmp_path / "a.nc")
    in_memory = _run(capsys, tmp_path / "b.nc", "--in-memory")
    one_step = _run(capsys, tmp_path / "c.nc", "--steps", "1")
    assert streamed["streamed"] is True and in_memory["streamed"] is False and streamed["steps"] == 2
    with xr.open_dataset(tmp_path / "a.nc") as a, xr.open_dataset(tmp_path / "b.nc") as b, \
            xr.open_dataset(tmp_path / "c.nc") as c:
        for v in ("z", "u", "v", "vo"):
            np.testing.assert_array_equal(a[v].values, b[v].values)
        assert int(a.attrs["noise_levels"]) == 2 and int(c.attrs["noise_levels"]) == 1
        assert not np.array_equal(a["z"].values, c["z"].values)


@pytest.mark.parametrize("grid", ["121", "121x", "axb", "1x240"])
def test_bad_grid_is_a_usage_error(tmp_path, capsys, grid):
    with pytest.raises(SystemExit) as exc:
        main(["--grid", grid, "--out", str(tmp_path / "fc.nc")])
    assert exc.value.code == 2
    assert "--grid must be NLATxNLON" in capsys.readouterr().err

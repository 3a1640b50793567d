"""Streamed forecasts (issue 31 A): the file written lead by lead is the in-memory forecast,
members do not depend on the chunk, host memory does not grow with the leads, an interrupted
forecast leaves no file, the default chunk and threads."""

import tracemalloc

import netCDF4
import numpy as np
import pytest
import xarray as xr

from diffsci.core.cli import main
from diffsci.weather import forecast as F
from diffsci.weather.generator import generate


@pytest.fixture(scope="module")
def init(tmp_path_factory):
    """Initial conditions on the shipped checkpoint's grid (32x64, hourly)."""
    path = tmp_path_factory.mktemp("wstream") / "init.nc"
    generate(grid=(32, 64), hours=4, trajectories=1, seed=7, spinup_hours=6, progress=False).to_netcdf(
        path, engine="netcdf4")
    return path


@pytest.fixture(scope="module")
def forecaster():
    return F.load_forecaster(device="cpu")


def _header(path) -> tuple:
    """Dims, variables (dims, dtype, storage, attributes) and global attribute names of a netCDF file."""
    with netCDF4.Dataset(path) as nc:
        variables = [(name, v.dimensions, str(v.dtype), v.chunking(), {a: str(v.getncattr(a)) for a in v.ncattrs()})
                     for name, v in nc.variables.items()]
        return [(n, len(d)) for n, d in nc.dimensions.items()], variables, nc.ncattrs()


def _without_history(ds: xr.Dataset) -> xr.Dataset:
    return ds.assign_attrs(history=None)


def test_streamed_file_is_the_in_memory_forecast(forecaster, init, tmp_path):
    times = xr.open_dataset(init).time.values
    settings = F.ForecastSettings(lead_hours=3, members=5, seed=2, chunk=3,
                                  init_times=[str(times[1])[:16], str(times[3])[:16]])
    memory = F.forecast(forecaster, init, settings, progress=False)
    F.write_forecast(memory, tmp_path / "memory.nc")
    assert F.forecast_to_file(forecaster, init, tmp_path / "stream.nc", settings, progress=False) == tmp_path / "stream.nc"
    assert _header(tmp_path / "stream.nc") == _header(tmp_path / "memory.nc")
    with xr.open_dataset(tmp_path / "stream.nc") as a, xr.open_dataset(tmp_path / "memory.nc") as b:
        assert _without_history(a).identical(_without_history(b))
        assert a.attrs["history"].startswith("created ")
        for v in a.variables:
            assert np.array_equal(a[v].values, b[v].values), v
        assert a.sizes["time"] == 2 and a.sizes["realization"] == 5 and np.isfinite(a.z.values).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["memory.nc", "stream.nc"]


def test_member_is_independent_of_members_and_chunk(init, tmp_path):
    """The network sees every member in the same slot of a group of EVAL_BATCH whatever the
    chunk, so member m is bit for bit the same (batches of 1 or 2 round differently on CPU)."""
    def run(name, *extra):
        out = tmp_path / f"{name}.nc"
        assert main(["weather", "forecast", "--init", str(init), "--lead-hours", "2", "--seed", "5", "--quiet",
                     "--out", str(out), *extra]) == 0
        return xr.open_dataset(out)

    ref = run("ref", "--members", "8")  # one chunk of 8
    cases = {"m2": ["--members", "2"], "m3c1": ["--members", "3", "--chunk", "1"],
             "m7c3": ["--members", "7", "--chunk", "3"], "m8c5": ["--members", "8", "--chunk", "5"],
             "m6c6": ["--members", "6", "--chunk", "6"]}
    for name, extra in cases.items():
        got = run(name, *extra)
        n = got.sizes["realization"]
        assert n == int(extra[1]) and list(got.realization.values) == list(range(n))
        for v in ref.data_vars:
            assert np.array_equal(got[v].values, ref[v].isel(realization=slice(0, n)).values), (name, v)
    assert not np.array_equal(ref.z.isel(realization=0).values, ref.z.isel(realization=1).values)


def _peak(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_streaming_host_memory_does_not_grow_with_leads(forecaster, init, tmp_path):
    """Peak traced host allocations (numpy included) of 12 leads against 2: the in-memory
    forecast grows by about its extra leads (10 x 8 members x 4 channels x 32 x 64 float32 =
    2.6 MB), the streamed one by less than a tenth of that."""
    def settings(leads):
        return F.ForecastSettings(lead_hours=leads, members=8, seed=1)

    F.forecast_to_file(forecaster, init, tmp_path / "warm.nc", settings(1), progress=False)  # imports, caches
    extra_leads = 10 * 8 * 4 * 32 * 64 * 4
    memory = [_peak(lambda n=n: F.forecast(forecaster, init, settings(n), progress=False)) for n in (2, 12)]
    stream = [_peak(lambda n=n: F.forecast_to_file(forecaster, init, tmp_path / f"s{n}.nc", settings(n),
                                                   progress=False)) for n in (2, 12)]
    assert memory[1] - memory[0] > 0.9 * extra_leads, memory
    assert stream[1] - stream[0] < extra_leads / 10, stream


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_interrupted_forecast_leaves_no_file(forecaster, init, tmp_path, monkeypatch, error):
    """An exception (or Ctrl-C) after two leads were written: no file under the target name, no
    temp file beside it, a file already there untouched."""
    real = F.rollout_steps

    def failing(*args, **kwargs):
        for lead, state in enumerate(real(*args, **kwargs)):
            if lead == 2:
                raise error
            yield state

    monkeypatch.setattr(F, "rollout_steps", failing)
    settings = F.ForecastSettings(lead_hours=4, members=2)
    with pytest.raises(type(error)):
        F.forecast_to_file(forecaster, init, tmp_path / "fc.nc", settings, progress=False)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "old.nc").write_bytes(b"previous forecast")
    with pytest.raises(type(error)):
        F.forecast_to_file(forecaster, init, tmp_path / "old.nc", settings, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["old.nc"]
    assert (tmp_path / "old.nc").read_bytes() == b"previous forecast"


@pytest.mark.parametrize("value,needle", [("0", "--chunk must be >= 1"), ("-3", "--chunk must be >= 1"),
                                          ("two", "--chunk must be an integer >= 1, got 'two'")])
def test_bad_chunk_is_one_line(init, tmp_path, capsys, value, needle):
    out = tmp_path / "bad.nc"
    assert main(["weather", "forecast", "--init", str(init), "--lead-hours", "1", "--members", "2", "--quiet",
                 "--chunk", value, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(F.DiffsciError, match="chunk must be >= 1"):
        F.ForecastSettings(chunk=0)


def test_default_chunk_from_free_memory(forecaster, monkeypatch):
    state = 4 * len(forecaster.config.channels) * 32 * 64  # bytes of one float32 state
    per_member = F.STATES_PER_MEMBER * state

    def free(n_members):
        monkeypatch.setattr(F, "available_memory", lambda: int(n_members * per_member / F.CHUNK_MEMORY_SHARE))

    free(1000)
    assert F.default_chunk(forecaster, 50) == 50 and F.default_chunk(forecaster, 2) == 2  # capped at the members
    free(10.5)
    assert F.default_chunk(forecaster, 50) == 8  # what fits, a multiple of EVAL_BATCH
    free(3)
    assert F.default_chunk(forecaster, 50) == 3
    free(0.2)
    assert F.default_chunk(forecaster, 50) == 1
    assert F.available_memory() > 0


def test_default_threads(monkeypatch):
    from diffsci.core.cli import default_threads
    from diffsci.weather.forecast_cmd import default_threads as forecast_threads

    assert forecast_threads is default_threads  # weather forecast and protein sample share the rule

    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert default_threads() == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    cores = len(__import__("os").sched_getaffinity(0))
    assert default_threads(load=0.0) == cores  # an idle machine: every core
    assert default_threads(load=cores + 2.7) == 1  # a busy one: one thread, never zero
    if cores > 1:
        assert default_threads(load=1.2) == cores - 1


def test_boundary_values_are_read_one_valid_time_at_a_time(init, monkeypatch):
    """A regional forecast's boundary values: ``values[k][lead]`` is the file's state at init
    k's lead-th valid time, each read on its own (one state in memory, not all (I, L))."""
    import pandas as pd

    from diffsci.weather.data import open_weather, stack_channels

    bds = open_weather(init, variables=["z", "u", "v", "vo"])
    times = pd.DatetimeIndex(bds.time.values)
    valid = pd.DatetimeIndex([times[1], times[2], times[2], times[3]])  # 2 inits x 2 leads
    reads = []

    def counting(ds, variables):
        reads.append(ds.sizes["time"])
        return stack_channels(ds, variables)

    monkeypatch.setattr(F, "stack_channels", counting)
    values = F._BoundaryValues(bds, ("z", "u", "v", "vo"), valid, 2)
    want, _ = stack_channels(bds, ("z", "u", "v", "vo"))
    got = values[1][0]
    assert got.shape == want.shape[1:] and np.array_equal(got.numpy(), want[2])
    assert np.array_equal(values[0][1].numpy(), want[2]) and np.array_equal(values[1][1].numpy(), want[3])
    assert len(values[0]) == 2 and reads == [1, 1, 1]
    with pytest.raises(IndexError):
        values[0][2]

"""Weather training streams its data: batches and losses as with the data in memory, and peak
memory that does not grow with the size of the file."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from diffsci.core.cli import main
from diffsci.core.train import Recipe
from diffsci.core.utils import make_generator
from diffsci.weather.data import StateReader, open_weather, stack_channels, window_starts
from diffsci.weather.diffusion import ResidualTask, make_task, members_as_trajectories
from diffsci.weather.generator import GeneratorOutput, generate

MODEL = {"latent": 16, "layers": 1, "refinements": 1}

# Losses of `diffsci weather train --steps 3` (config below) recorded with the data loaded into
# memory (stack_channels), before training streamed from the file; the data are the generated
# files of `data` below.
RECORDED = {
    "single": [0.9751846194267273, 1.0170012712478638, 1.0261975526809692],
    "ensemble": [1.0666942596435547, 0.9227253794670105, 1.0145186185836792],
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("wstream")
    generate(grid=(16, 32), hours=30, trajectories=2, seed=5, spinup_hours=12,
             progress=False).to_netcdf(d / "single.nc", engine="netcdf4")
    generate(grid=(16, 32), hours=12, trajectories=1, seed=6, spinup_hours=12, output=GeneratorOutput(members=3),
             progress=False).to_netcdf(d / "ensemble.nc", engine="netcdf4")
    return d


@pytest.mark.parametrize("name", ["single", "ensemble"])
def test_three_step_losses_as_recorded(data, tmp_path, name):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"model": MODEL, "train": {"batch_size": 3, "ckpt_every": 10, "log_every": 1}}))
    run = tmp_path / "run"
    assert main(["weather", "train", "--data", str(data / f"{name}.nc"), "--out", str(run), "--config", str(cfg),
                 "--steps", "3", "--device", "cpu"]) == 0
    losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    np.testing.assert_allclose(losses, RECORDED[name], rtol=1e-5)


@pytest.mark.parametrize("name", ["single", "ensemble"])
def test_streamed_batches_equal_in_memory_batches(data, name):
    """make_task reads each batch's states from the file (small dask chunks); a task over the
    whole data stacked in memory draws bitwise the same batches for the same generators."""
    recipe = Recipe.from_tables("weather-graph-diffusion", {"model": MODEL},
                                data={"path": str(data / f"{name}.nc"), "chunk_mb": 0.01})
    task = make_task(recipe)
    assert isinstance(task.fields, StateReader)
    assert max(task.fields.ds[task.config.variables[0]].chunks[0]) < 5  # many chunks, so reads cross them
    ds = open_weather(data / f"{name}.nc")
    if "realization" in ds.dims:
        ds = members_as_trajectories(ds)
    fields, channels = stack_channels(ds, task.config.variables)
    assert tuple(channels) == task.config.channels
    ref = ResidualTask(task.config, task.stats, fields, window_starts(ds), ds.time.values)
    for k in range(3):
        a = task.sample_batch(make_generator(0, "batch", k), 5)
        b = ref.sample_batch(make_generator(0, "batch", k), 5)
        for x, y in [(a.cond.prev, b.cond.prev), (a.cond.hour, b.cond.hour), (a.target, b.target), (a.t, b.t),
                     (a.eps, b.eps)]:
            assert torch.equal(x, y)


def _synthetic(path, hours: int, grid=(32, 64)) -> None:
    """Random float32 fields z, u, v, vo on a global grid, hourly, runs of 500 hours."""
    h, w = grid
    rng = np.random.default_rng(0)
    ds = xr.Dataset(coords={"time": pd.date_range("2000-01-01", periods=hours, freq="h"),
                            "latitude": np.linspace(-90 + 90 / h, 90 - 90 / h, h),
                            "longitude": np.arange(w) * 360.0 / w})
    ds = ds.assign_coords(trajectory=("time", np.arange(hours) // 500))
    for v, (mean, std) in {"z": (5.0e4, 500.0), "u": (0.0, 10.0), "v": (0.0, 10.0), "vo": (0.0, 1e-5)}.items():
        x = rng.standard_normal((hours, h, w), dtype=np.float32)
        ds[v] = (("time", "latitude", "longitude"), mean + std * x)
    ds.to_netcdf(path, engine="netcdf4")


# the child reports VmHWM, its own peak RSS (ru_maxrss would carry the parent's over exec)
_CHILD = ("import sys\nfrom diffsci.core.cli import main\nrc = main(sys.argv[1:])\n"
          "print([ln for ln in open('/proc/self/status') if ln.startswith('VmHWM')][0])\nsys.exit(rc)\n")


def _train_peak_mb(data, out, cfg) -> float:
    """Peak RSS (MiB) of a process running `diffsci weather train --steps 3` (Linux: VmHWM in kB)."""
    done = subprocess.run([sys.executable, "-c", _CHILD, "weather", "train", "--data", str(data), "--out", str(out),
                           "--config", str(cfg), "--steps", "3", "--device", "cpu"],
                          capture_output=True, text=True, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    line = [ln for ln in done.stdout.splitlines() if ln.startswith("VmHWM")][-1]
    return int(line.split()[1]) / 1024


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the peak RSS from /proc/self/status")
def test_training_memory_does_not_grow_with_the_data(tmp_path):
    """A 170 MB file trains within a memory allowance it exceeds 4 times.

    The cap is the peak RSS of the same command on a 40-hour file of the same grid and
    variables (torch, the model, its graph, the optimizer, the batches: everything that does
    not depend on the file's length) plus an allowance of 40 MiB, under a quarter of the big file.
    Loading the big file (as training did before it streamed) would need its 170 MB at once
    and exceed the cap by far; streaming holds a few dask chunks of ``chunk_mb`` = 4 MiB and
    one block of the normalisation statistics."""
    allowance_mb = 40.0
    small, big = tmp_path / "small.nc", tmp_path / "big.nc"
    _synthetic(small, 40)
    _synthetic(big, 5200)
    assert big.stat().st_size >= 4 * allowance_mb * 2**20
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"model": MODEL, "data": {"chunk_mb": 4},
                               "train": {"batch_size": 2, "ckpt_every": 10, "log_every": 1}}))
    base = _train_peak_mb(small, tmp_path / "run_small", cfg)
    peak = _train_peak_mb(big, tmp_path / "run_big", cfg)
    assert peak < base + allowance_mb, (base, peak)

"""Several processes through torchrun (gloo on CPU): shares, the gather to rank 0, failures that
do not hang, and forecasts and designs bitwise equal to one process."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from diffsci.core.cli import main
from diffsci.core.distributed import dist_info, gather_shares, share

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
BIN = Path(sys.executable).parent


def _torchrun(*argv, timeout=120):
    """``torchrun --standalone --nproc_per_node 2 ...``; every rank must exit 0."""
    r = subprocess.run([str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", *map(str, argv)],
                       env=ENV, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.mark.parametrize("n,world", [(0, 2), (1, 2), (5, 2), (7, 3), (12, 4)])
def test_shares_are_contiguous_balanced_and_cover_every_item(n, world):
    parts = [share(n, world, r) for r in range(world)]
    assert [i for p in parts for i in p] == list(range(n))
    sizes = [len(p) for p in parts]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] - sizes[-1] <= 1


def test_without_torchrun_one_process_does_all_the_work(monkeypatch):
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert dist_info() == (1, 0, 0)
    seen = []
    assert gather_shares(4, lambda idx: seen.append(idx) or [i * 10 for i in idx]) == [0, 10, 20, 30]
    assert seen == [range(4)]


def test_gather_in_item_order_and_a_failing_rank_fails_every_rank(tmp_path):
    """Rank 0 gets every item in order; when rank 1's work raises, rank 1 re-raises its own error and
    rank 0 raises one naming rank 1, without waiting (the run ends well within its timeout)."""
    script = tmp_path / "gather.py"
    script.write_text(
        "import json, os, sys\n"
        "from diffsci.core.distributed import dist_info, gather_shares\n"
        "from diffsci.core.errors import DiffsciError\n"
        "world, rank, _ = dist_info()\n"
        "ok = gather_shares(5, lambda idx: [(i, rank) for i in idx])\n"
        "def bad(idx):\n"
        "    if rank == 1:\n"
        "        raise ValueError('boom on rank 1')\n"
        "    return list(idx)\n"
        "try:\n"
        "    gather_shares(5, bad)\n"
        "    err = None\n"
        "except Exception as exc:\n"
        "    err = f'{type(exc).__name__}: {exc}'\n"
        "out = os.path.join(sys.argv[1], f'rank{rank}.json')\n"
        "json.dump({'world': world, 'ok': ok, 'err': err}, open(out, 'w'))\n"
    )
    _torchrun(script, tmp_path, timeout=60)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2
    assert r0["ok"] == [[0, 0], [1, 0], [2, 0], [3, 1], [4, 1]] and r1["ok"] is None
    assert r1["err"] == "ValueError: boom on rank 1"
    assert r0["err"] == "DiffsciError: rank 1 of 2 failed: ValueError: boom on rank 1"


def test_torchrun_forecast_is_bitwise_the_one_process_forecast(tmp_path):
    """Three init times x 5 members (two chunks each, the second padded): 6 units over 2 ranks, so
    the second init time is split between the ranks; rank 0 writes the only file."""
    from diffsci.weather.generator import generate

    ds = generate(grid=(32, 64), hours=4, trajectories=1, seed=7, spinup_hours=6, progress=False)
    init = tmp_path / "init.nc"
    ds.to_netcdf(init, engine="netcdf4")
    inits = [a for t in ds.time.values[1:] for a in ("--init-time", str(t)[:16])]
    args = ["weather", "forecast", "--init", init, "--lead-hours", 2, "--members", 5, "--steps", 2, "--seed", 4,
            "--quiet", *inits]
    one, two = tmp_path / "one.nc", tmp_path / "out" / "two.nc"
    two.parent.mkdir()
    assert main([str(a) for a in args] + ["--out", str(one)]) == 0
    _torchrun("--no-python", BIN / "diffsci", *args, "--out", two)
    assert sorted(p.name for p in two.parent.iterdir()) == ["two.nc"]
    with xr.open_dataset(one) as a, xr.open_dataset(two) as b:
        assert a.sizes == b.sizes and dict(a.sizes)["time"] == 3 and dict(a.sizes)["realization"] == 5
        assert set(a.data_vars) == set(b.data_vars)
        for v in list(a.data_vars) + list(a.coords):
            assert np.array_equal(a[v].values, b[v].values), v
        assert not np.array_equal(a.z.isel(realization=0).values, a.z.isel(realization=4).values)


def _without_seconds(folder: Path) -> dict:
    """Every file under ``folder`` as text, with the wall-clock ``seconds`` fields removed."""
    files = {}
    for p in sorted(folder.rglob("*")):
        if p.suffix == ".json":
            files[p.name] = {k: v for k, v in json.loads(p.read_text()).items() if k != "seconds"}
        elif p.name == "samples.csv":
            files[p.name] = [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(p.open())]
        elif p.is_file():
            files[p.name] = p.read_text()
    return files


def test_torchrun_protein_designs_are_the_one_process_files(tmp_path):
    args = ["protein", "sample", "--length", "40", "--num", "3", "--steps", "2", "--seed", "5", "--quiet"]
    assert main(args + ["--out", str(tmp_path / "one")]) == 0
    # "--" ends torchrun's options: its parser would take "--num" for an abbreviation of its "--numa-binding"
    _torchrun("--no-python", "--", BIN / "diffsci", *args, "--out", tmp_path / "two")
    one, two = _without_seconds(tmp_path / "one"), _without_seconds(tmp_path / "two")
    assert sorted(one) == ["len40_000.json", "len40_000.pdb", "len40_001.json", "len40_001.pdb", "len40_002.json",
                           "len40_002.pdb", "samples.csv"]
    assert one == two
    assert one["len40_000.pdb"] != one["len40_002.pdb"]

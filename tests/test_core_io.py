"""core.io: atomic writers leave nothing half-written; strict JSON; validators name the parameter."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from diffsci.core.errors import DiffsciError
from diffsci.core.io import (atomic_output, check_choice, check_int, check_range, progress, write_json,
                             write_netcdf, write_text, write_torch)


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = write_text(tmp_path / "a.txt", "old")
    with pytest.raises(RuntimeError):
        with atomic_output(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_missing_folder_refused_when_asked(tmp_path):
    with pytest.raises(DiffsciError, match="does not exist"):
        write_text(tmp_path / "nope" / "a.txt", "x", must_have_folder=True)
    assert write_text(tmp_path / "made" / "a.txt", "x").read_text() == "x"


def test_write_json_is_strict(tmp_path):
    path = write_json(tmp_path / "m.json", {"a": np.float32(np.nan), "b": np.arange(3), "c": [float("inf"), 1.5]})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": None, "b": [0, 1, 2], "c": [None, 1.5]}


def test_write_netcdf_and_torch_round_trip(tmp_path):
    import torch

    ds = xr.Dataset({"z": (("latitude",), np.arange(3.0))}, coords={"latitude": [-1.0, 0.0, 1.0]})
    with xr.open_dataset(write_netcdf(ds, tmp_path / "f.nc")) as back:
        np.testing.assert_array_equal(back.z.values, ds.z.values)
    obj = {"w": torch.arange(4)}
    assert torch.equal(torch.load(write_torch(tmp_path / "c.pt", obj), weights_only=True)["w"], obj["w"])


def test_validators_name_the_parameter():
    assert check_int(3, "num") == 3
    with pytest.raises(DiffsciError, match=r"^num must be >= 1, got 0$"):
        check_int(0, "num")
    with pytest.raises(DiffsciError, match="steps must be an integer"):
        check_int(2.5, "steps")
    with pytest.raises(DiffsciError, match=r"between 40 and 512"):
        check_int(600, "length", minimum=40, maximum=512)
    assert check_range(1.0, "time_power", 0, 10, lo_open=True) == 1.0
    with pytest.raises(DiffsciError, match=r"time_power must lie in \(0, 10\], got 0"):
        check_range(0, "time_power", 0, 10, lo_open=True)
    with pytest.raises(DiffsciError, match="churn must lie"):
        check_range(float("nan"), "churn", 0)
    with pytest.raises(DiffsciError, match="method must be one of align, fixed"):
        check_choice("x", "method", ("align", "fixed"))


def test_progress_counts_on_stderr(capsys):
    with progress(total=3, desc="sample") as bar:
        bar.update(2)
        assert bar.n == 2
    assert "sample" in capsys.readouterr().err
    silent = progress(total=3, enabled=False)
    silent.update(1)  # same methods, nothing shown
    silent.close()
    assert list(progress(range(3), enabled=False)) == [0, 1, 2]

"""The one-command GPU check: the no-CUDA path, and every check run small on the CPU (the JSON shape)."""

import json
import math

import pytest
import torch

from diffsci.benchmarks import gpu_check as gc


def test_without_cuda_nothing_is_checked_and_the_exit_status_is_0(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "g.json"
    assert gc.main(["--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["cuda"] is False and res["checks"] == {} and res["ok"] is None and res["devices"] == []
    assert res["torch"] == torch.__version__ and res["command"] == f"python -m diffsci.benchmarks.gpu_check --out {out}"
    assert "nothing was checked" in capsys.readouterr().out


def test_every_check_runs_small_on_the_cpu(tmp_path):
    """The checks are device-agnostic: on the CPU they compare the CPU with itself (tiny sizes)."""
    checks = gc.run_checks(
        "cpu", nproc=1, workdir=tmp_path,
        protein={"length": 12, "steps": 2, "batches": (1, 2), "design_length": 40, "design_steps": 2, "designs": 1},
        weather={"members": 2, "lead_hours": 1},
        train={"steps": 2, "protein_model": {"net": {"scalars": 8, "vectors": 4, "tensors": 0, "layers": 1,
                                                     "k_neighbors": 6}, "max_length": 32}})
    assert list(checks) == ["protein_sampling", "weather_forecast", "train_bf16", "torchrun"]
    p = checks["protein_sampling"]
    assert "error" not in p, p.get("traceback")
    assert [r["batch"] for r in p["device"]["rows"]] == [1, 2] == [r["batch"] for r in p["cpu"]["rows"]]
    assert set(p["cpu_to_device"]) == {"1", "2"} and p["designs"]["finite"] and p["seconds"] > 0
    assert p["ok"] == (p["designs"]["ca_ca_ok"] >= gc.MIN_CA_CA_OK)  # 2 steps: geometry not asserted
    w = checks["weather_forecast"]
    assert w["ok"] and w["device"]["members"] == 2 and w["cpu"]["lead_hours"] == 1
    assert w["cpu_to_device"] == pytest.approx(w["cpu"]["seconds"] / w["device"]["seconds"], rel=0.01)
    t = checks["train_bf16"]
    assert t["ok"], t.get("traceback")
    for kind in ("toy2d", "protein-frames"):
        assert t[kind]["steps"] == 2 and math.isfinite(t[kind]["last_loss"])
        assert (tmp_path / "train" / kind / "latest.pt").exists()
    assert "2 GPUs" in checks["torchrun"]["skipped"]


def test_a_failing_check_is_recorded_and_the_next_runs():
    res = gc._timed(lambda: 1 / 0)
    assert res["ok"] is False and res["error"].startswith("ZeroDivisionError") and res["seconds"] >= 0


@pytest.mark.slow  # the torchrun forecast path itself is tested in test_distributed.py
def test_torchrun_check_over_two_cpu_ranks(tmp_path):
    res = gc.check_torchrun("cpu", 2, tmp_path, members=2, lead_hours=1, timeout=300)
    assert res["ok"] and res["backend"] == "gloo" and res["finite"]
    assert res["bitwise_equal"]  # on the CPU the ranks give the one-process data bitwise

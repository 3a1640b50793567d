"""diffsci bench speed through the CLI on tiny configurations (seconds are positive; speeds not asserted)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from diffsci.benchmarks.measure import peak_memory, reset_peak_memory
from diffsci.core.cli import main


def test_protein_rows_at_each_steps_and_batch(tmp_path):
    out = tmp_path / "s.json"
    assert main(["bench", "speed", "--protein", "--length", "12", "--steps", "1", "2", "--batches", "1", "2",
                 "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    rows = res["protein"]["rows"]
    assert [(r["steps"], r["batch"]) for r in rows] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert all(r["sampler"] == "renoise" for r in rows)  # what protein sample uses below FEW_STEPS steps
    for r in rows:
        assert r["seconds_total"] > 0 and r["seconds_per_backbone"] == pytest.approx(r["seconds_total"] / r["batch"], abs=1e-3)
        assert r["peak_rss_mb"] > 0 and r["process_peak_rss_mb"] > 0
    assert "weather" not in res and len(res["load_average"]["start"]) == 3 and len(res["load_average"]["end"]) == 3
    assert res["command"] == "diffsci bench speed --protein --length 12 --steps 1 2 --batches 1 2 --device cpu"
    assert res["protein"]["device"] == "cpu" and all("cuda_peak_mb" not in r for r in rows)


def test_protein_reference_pairs_time_both_evaluations(tmp_path, monkeypatch):
    from diffsci.protein.model import network as model

    seen = []  # the evaluation each sampling run used
    real = model.FrameDenoiserNet._forward
    monkeypatch.setattr(model.FrameDenoiserNet, "_forward",
                        lambda self, *a: (seen.append(model._REFERENCE), real(self, *a))[1])
    out = tmp_path / "r.json"
    assert main(["bench", "speed", "--protein", "--length", "12", "--steps", "2", "--batches", "1",
                 "--reference", "2", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    ref = res["protein"]["rows"][0]["reference"]
    assert ref["pairs"] == 2 and len(ref["seconds_per_backbone"]) == len(ref["reference_seconds_per_backbone"]) == 2
    ratios = [f / r for f, r in zip(ref["seconds_per_backbone"], ref["reference_seconds_per_backbone"])]
    assert ref["median_ratio"] == pytest.approx(sum(ratios) / 2, abs=2e-3)  # the median of two
    assert res["command"].endswith("--batches 1 --reference 2 --device cpu")
    # warm-up (2 steps), the timed row (2 steps), then fast / reference / fast / reference (2 steps each)
    assert seen == [False] * 4 + [False, False, True, True] * 2


def test_protein_potential_pairs_time_with_and_without(tmp_path, monkeypatch):
    from diffsci.protein.design import potentials as pot

    seen = []  # the relaxations each sampling run did (one per sampling step with potentials)
    real = pot.Potentials.relax
    monkeypatch.setattr(pot.Potentials, "relax", lambda self, *a, **k: (seen.append(1), real(self, *a, **k))[1])
    out = tmp_path / "p.json"
    assert main(["bench", "speed", "--protein", "--length", "12", "--steps", "2", "--batches", "1",
                 "--potentials", "2", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    p = res["protein"]["rows"][0]["potentials"]
    assert p["pairs"] == 2 and p["terms"] == "connectivity:1,sterics:1"
    assert len(p["seconds_per_backbone"]) == len(p["network_seconds_per_backbone"]) == 2
    ratios = [a / b for a, b in zip(p["seconds_per_backbone"], p["network_seconds_per_backbone"])]
    assert p["median_ratio"] == pytest.approx(sum(ratios) / 2, abs=2e-3)
    assert res["command"].endswith("--batches 1 --potentials 2 --device cpu")
    assert len(seen) == 2 * 2  # two guided runs of 2 steps each; the network-alone runs relax nothing


def test_weather_emulator_against_simulator(tmp_path):
    out = tmp_path / "w.json"
    assert main(["bench", "speed", "--weather", "--members", "2", "--lead-hours", "1", "--out", str(out)]) == 0
    w = json.loads(out.read_text())["weather"]
    assert w["members"] == 2 and w["lead_hours"] == 1 and w["threads"] == 1
    assert w["seconds"] > 0 and w["simulator_seconds"] > 0
    assert w["emulator_to_simulator"] == pytest.approx(w["seconds"] / w["simulator_seconds"], rel=0.02)
    assert w["peak_rss_mb"] > 0 and w["simulator_peak_rss_mb"] > 0


def _rss_mb() -> float:
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024.0


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_peak_memory_sees_an_allocation():
    reset_peak_memory()
    before = peak_memory()["peak_rss_mb"]
    # the reset lowers the mark to the current size where the kernel allows it (it did not, once,
    # in a long test run): touch enough to pass the mark either way
    size = 64 + max(0.0, before - _rss_mb())
    block = np.ones(int(size * 2**20) // 8)
    after = peak_memory()["peak_rss_mb"]
    assert after >= before + 60 and block[-1] == 1.0


def test_synchronize_waits_on_cuda_only(monkeypatch):
    from diffsci.benchmarks.measure import synchronize

    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(torch.device(device)))
    synchronize("cpu")
    synchronize(torch.device("cpu"))
    assert calls == []
    synchronize("cuda:1")
    assert calls == [torch.device("cuda", 1)]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_protein_rows_on_cuda_report_the_cuda_peak():
    from diffsci.benchmarks.speed import protein_speed

    res = protein_speed(12, steps=(2,), batches=(1, 2), device="cuda")
    assert res["device"].startswith("cuda") and [r["batch"] for r in res["rows"]] == [1, 2]
    assert all(r["seconds_total"] > 0 and r["cuda_peak_mb"] > 0 for r in res["rows"])


def test_protein_checkpoint_against_the_shipped_one(tmp_path, tiny_checkpoint, monkeypatch):
    from diffsci.protein.model import network as model

    seen = []  # the layer count of the net each sampling step used
    real = model.FrameDenoiserNet._forward
    monkeypatch.setattr(model.FrameDenoiserNet, "_forward",
                        lambda self, *a: (seen.append(self.cfg.layers), real(self, *a))[1])
    out = tmp_path / "c.json"
    assert main(["bench", "speed", "--protein", "--length", "12", "--steps", "2", "--batches", "1",
                 "--checkpoint", str(tiny_checkpoint), "--against-shipped", "2", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    row = res["protein"]["rows"][0]
    vs = row["against_shipped"]
    assert vs["pairs"] == 2 and len(vs["seconds_per_backbone"]) == len(vs["shipped_seconds_per_backbone"]) == 2
    ratios = [a / b for a, b in zip(vs["seconds_per_backbone"], vs["shipped_seconds_per_backbone"])]
    assert vs["median_ratio"] == pytest.approx(sum(ratios) / 2, abs=2e-3)
    assert res["protein"]["checkpoint"] == str(tiny_checkpoint)
    assert res["command"].endswith(f"--checkpoint {tiny_checkpoint} --against-shipped 2 --device cpu")
    tiny, shipped = seen[0], 4  # the tiny net, then the shipped one's 4 layers
    assert tiny != shipped
    # warm-ups (tiny, shipped), the timed row (tiny), then tiny / shipped / tiny / shipped, 2 steps each
    assert seen == [tiny] * 2 + [shipped] * 2 + [tiny] * 2 + ([tiny] * 2 + [shipped] * 2) * 2

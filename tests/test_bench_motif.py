"""The motif-scaffolding benchmark: its problems, its scores and an end-to-end tiny run."""

import json

import numpy as np
import pytest

from diffsci.benchmarks.motif_bench import junctions, motif_problems, score_design, summarise
from diffsci.core.cli import main
from diffsci.protein.io.dataset import bundled_dataset_path, load_dataset
from diffsci.protein.metrics import psea_labels
from diffsci.protein.design.contig import parse_contig


@pytest.fixture(scope="module")
def dataset():
    return load_dataset(bundled_dataset_path())


def test_problems_are_held_out_sse_motifs(dataset):
    probs = motif_problems(dataset, "heldout", max_problems=6)
    assert len(probs) == 6
    assert {p.kind for p, _ in probs} == {"helix", "strand", "two-segment"}
    held = {dataset.chain(int(i)).source for i in dataset.indices("heldout")}
    for p, ch in probs:
        assert p.source in held
        sse = psea_labels(ch.coords)
        want = {"helix": {"a"}, "strand": {"b"}, "two-segment": {"a", "b"}}[p.kind]
        for first, last in p.segments:  # every motif residue is P-SEA helix/strand in the whole chain
            idx = [int(np.nonzero(ch.res_ids == r)[0][0]) for r in range(first, last + 1)]
            assert set(sse[idx]) <= want and len(set(sse[idx])) == 1
        segs = parse_contig(p.contig)
        assert [(s.lo, s.hi) for s in segs if s.chain] == list(p.segments)
        assert len(p.segments) == (2 if p.kind == "two-segment" else 1)
        assert sum(s.lo for s in segs if not s.chain) + sum(b - a + 1 for a, b in p.segments) >= 40
        assert sum(s.hi for s in segs if not s.chain) + sum(b - a + 1 for a, b in p.segments) <= 100


def _ideal_strand(n):
    """A straight backbone: CA every 3.8 Å along x; N and C 1.46 / 1.52 Å off it (not ideal angles)."""
    ca = np.stack([np.arange(n) * 3.8, np.zeros(n), np.zeros(n)], 1)
    out = np.zeros((n, 4, 3))
    out[:, 1] = ca
    out[:, 0] = ca + [-0.5, 1.37, 0]
    out[:, 2] = ca + [1.52, 0, 0]
    out[:, 3] = ca + [2.1, -1.0, 0]
    return out


def test_score_design_against_hand_counts():
    bb = _ideal_strand(20)
    bb[12:, :, 0] += 2.0  # a 5.8 Å step between residues 11 and 12: one chain break
    motif_index = np.arange(5, 12)
    rot = np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1.0]])
    motif = bb[motif_index] @ rot.T + 7.0  # the same motif, moved rigidly
    s = score_design(bb, motif_index, motif)
    assert s["motif_rmsd"] < 1e-6
    assert junctions(motif_index, 20) == [(4, 5), (11, 12)]
    assert np.allclose(s["junction_ca_ca"], [3.8, 5.8])
    assert s["chain_breaks"] == 1 and not s["success"]
    assert np.isclose(s["ca_ca_ok"], 18 / 19)
    s2 = score_design(_ideal_strand(20), motif_index, motif)
    assert s2["chain_breaks"] == 0 and s2["success"]
    agg = summarise([s, s2])
    assert agg["junctions"] == 4 and agg["junction_within_0.5"] == 0.75 and agg["success_rate"] == 0.5
    assert agg["designs_with_breaks"] == 1


def test_bench_motif_cli_tiny(tmp_path):
    out = tmp_path / "b"
    assert main(["bench", "motif", "--out", str(out), "--problems", "1", "--num", "1", "--steps", "3", "--quiet"]) == 0
    payload = json.loads((out / "results.json").read_text())
    assert len(payload["problems"]) == 1 and payload["overall"]["designs"] == 1
    row = payload["problems"][0]["rows"][0]
    assert row["motif_rmsd"] < 1.0  # even in 3 steps the motif is exact
    assert len(row["junction_ca_ca"]) == 4  # a two-segment problem: four junctions
    report = (out / "report.md").read_text()
    assert "| **all** |" in report and "diffsci bench motif" in report
    assert (out / "motif_junctions.png").stat().st_size > 1000
    assert payload["method"] == "align" and all(
        flag in payload["command"] for flag in ("--num 1", "--steps 3", "--problems 1"))


def test_bench_motif_records_and_runs_the_comparison_method(tmp_path, capsys):
    """--method fixed (the sampler before issue 13) is run, not just labelled: the same problem,
    seed and draws give other coordinates; the command in the report reproduces the run."""
    runs = {}
    for method in ("align", "fixed"):
        out = tmp_path / method
        assert main(["bench", "motif", "--out", str(out), "--problems", "1", "--num", "1", "--steps", "3",
                     "--method", method, "--quiet"]) == 0
        runs[method] = json.loads((out / "results.json").read_text())
    assert runs["fixed"]["method"] == "fixed" and "--method fixed" in runs["fixed"]["command"]
    a, f = (runs[m]["problems"][0]["rows"][0] for m in ("align", "fixed"))
    assert a["junction_ca_ca"] != f["junction_ca_ca"]
    with pytest.raises(SystemExit) as exc:  # argparse's own exit for a bad choice
        main(["bench", "motif", "--out", str(tmp_path / "bad"), "--method", "pinned"])
    assert exc.value.code == 2 and "invalid choice" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_bench_motif_designability_proxy_lands_on_its_design(tmp_path, monkeypatch):
    """--designability: one ProteinMPNN run for all designs; each NLL goes back to its own row
    (a stand-in for ProteinMPNN returns each backbone's length as its NLL)."""
    import diffsci.protein.metrics.designability as des

    calls = []

    def fake(items, backend, *a, progress=True):
        calls.append(len(items))
        return [{"mpnn_nll_proxy": float(len(c))} for _, c in items]

    monkeypatch.setattr(des, "designability", fake)
    monkeypatch.setattr(des, "require_proteinmpnn", lambda: None)
    from diffsci.benchmarks.motif_bench import run_benchmark

    payload = run_benchmark(tmp_path / "d", problems=2, num=2, steps=2, progress=False, designability=True)
    assert calls == [4]
    for res in payload["problems"]:
        assert [r["mpnn_nll_proxy"] for r in res["rows"]] == [r["length"] for r in res["rows"]]
        assert np.isclose(res["summary"]["mpnn_nll_proxy_mean"], np.mean([r["length"] for r in res["rows"]]))
    assert "--designability" in payload["command"]


def test_command_line_keeps_order_and_drops_defaults():
    from diffsci.benchmarks.common import command_line

    cmd = command_line("motif", "runs/m", flags=[("--quick", True), ("--designability", False)],
                       options=[("--split", None), ("--num", 2), ("--seed", 0), ("--checkpoint", None)])
    assert cmd == "diffsci bench motif --out runs/m --quick --num 2 --seed 0"


def test_score_design_counts_between_chains_not_across_their_boundary():
    """Two chains: the step from the last residue of one to the first of the next is no break
    and no junction; a designed CA on top of the fixed chain is an inter-chain clash."""
    target = _ideal_strand(10)  # chain A, fixed (the motif)
    binder = _ideal_strand(8) + np.array([0.0, 6.0, 0.0])  # chain B, 6 Å beside it, 8 designed residues
    bb = np.concatenate([target, binder])
    s = score_design(bb, np.arange(10), target, (10, 8))
    assert s["chain_breaks"] == 0 and s["junction_ca_ca"] == [] and s["ca_ca_ok"] == 1.0
    assert s["interchain_clashes"] == 0 and np.isclose(s["interchain_min_ca"], 6.0)
    assert s["interface_residues"] == 8 and s["success"]
    as_one = score_design(bb, np.arange(10), target)  # read as one chain: a break between them
    assert as_one["chain_breaks"] == 1 and "interchain_min_ca" not in as_one
    bb[12, 1] = target[3, 1] + [0.0, 1.0, 0.0]  # one binder CA 1 Å from a target CA
    s = score_design(bb, np.arange(10), target, (10, 8))
    assert s["interchain_clashes"] >= 1 and s["interchain_min_ca"] <= 1.0 + 1e-9 and not s["success"]
    summary = summarise([s, as_one])
    assert summary["designs_with_interchain_clashes"] == 1 and summary["interchain_min_ca_min"] <= 1.0 + 1e-9


def test_bench_motif_binder_problem_and_potentials(tmp_path):
    from diffsci.benchmarks.motif_bench import BINDER_PROBLEMS, run_benchmark

    payload = run_benchmark(tmp_path / "b", problems=1, num=1, steps=3, progress=False, binder=True,
                            potentials="sterics:1")
    binder = payload["problems"][-1]
    assert binder["problem"]["name"] == BINDER_PROBLEMS[0].name and binder["motif_sse"] is None
    (row,) = binder["rows"]
    assert row["length"] >= 85 + 60 and {"interchain_clashes", "interchain_min_ca", "interface_residues"} <= set(row)
    assert payload["potentials"] == "sterics:1" and "--binder --potentials sterics:1" in payload["command"]
    report = (tmp_path / "b" / "report.md").read_text()
    assert "binder:1YCR" in report and "potentials `sterics:1`" in report


def test_bench_motif_churn_reaches_the_designs(tmp_path):
    """--churn 0 (the plain ODE) against the checkpoint's default (the shipped one: 30): recorded,
    in the command, and run (other coordinates from the same problem, seed and draws)."""
    from diffsci.core.checkpoint import load_bundle
    from diffsci.protein.model.diffusion import KIND

    assert load_bundle(None, KIND).config.churn == 30.0
    runs = {}
    for name, extra in (("churn", ["--churn", "0"]), ("default", [])):
        out = tmp_path / name
        assert main(["bench", "motif", "--out", str(out), "--problems", "1", "--num", "1", "--steps", "20",
                     "--quiet", *extra]) == 0
        runs[name] = json.loads((out / "results.json").read_text())
    assert runs["churn"]["churn"] == 0.0 and "--churn 0.0" in runs["churn"]["command"]
    assert runs["default"]["churn"] == "default" and "--churn" not in runs["default"]["command"]
    c, d = (runs[m]["problems"][0]["rows"][0] for m in ("churn", "default"))
    assert c["junction_ca_ca"] != d["junction_ca_ca"]

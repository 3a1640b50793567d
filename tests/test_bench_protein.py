"""The protein benchmark's baselines and bracket logic."""

import numpy as np
import pytest
import torch

from diffsci.protein.design.request import DesignRequest
from diffsci.benchmarks.protein_bench import _bracket, random_walk_backbone
from diffsci.protein.metrics import sample_metrics


def test_random_walk_is_self_avoiding_with_3p8_steps():
    bb = random_walk_backbone(120, torch.Generator().manual_seed(0))
    ca = bb[:, 1]
    steps = np.linalg.norm(np.diff(ca, axis=0), axis=1)
    assert np.allclose(steps, 3.8, atol=1e-4)
    d = np.linalg.norm(ca[:, None] - ca[None], axis=-1)
    iu = np.triu_indices(len(ca), k=2)
    assert d[iu].min() >= 3.8 - 1e-4
    m = sample_metrics(bb)
    assert m["ca_ca_ok"] == 1.0 and m["clashes"] == 0
    # a walk is not a protein: (almost) no secondary structure
    assert m["helix"] + m["strand"] < 0.1


def test_random_walk_is_seeded():
    a = random_walk_backbone(50, torch.Generator().manual_seed(3))
    b = random_walk_backbone(50, torch.Generator().manual_seed(3))
    c = random_walk_backbone(50, torch.Generator().manual_seed(4))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def _sys(vals):
    return {"per_sample": [dict(vals)]}


def test_bracket_logic():
    systems = {"real (held-out)": _sys({"ca_ca_ok": 1.0, "clash_fraction": 0.0, "helix": 0.4, "strand": 0.2,
                                        "ca_contacts": 5.0}),
               "random walk": _sys({"ca_ca_ok": 1.0, "clash_fraction": 0.0, "helix": 0.0, "strand": 0.0,
                                    "ca_contacts": 0.5}),
               "diffsci, 100 steps": _sys({"ca_ca_ok": 0.85, "clash_fraction": 0.0, "helix": 0.2, "strand": 0.3,
                                           "ca_contacts": 6.0}),
               "diffsci, 20 steps": _sys({"ca_ca_ok": 0.95, "clash_fraction": 0.02, "helix": 0.0, "strand": 0.1,
                                          "ca_contacts": 2.0})}
    b = _bracket(systems)["diffsci, 100 steps"]
    assert b["helix"]["bracketed"] and not b["strand"]["bracketed"] and not b["ca_contacts"]["bracketed"]
    assert np.isclose(b["secondary_structure"]["model"], 0.5) and np.isclose(b["secondary_structure"]["real"], 0.6)
    assert b["secondary_structure"]["bracketed"]
    assert not b["ca_ca_ok"]["within"] and b["clash_fraction"]["within"]
    b20 = _bracket(systems)["diffsci, 20 steps"]
    assert b20["helix"]["bracketed"] and b20["strand"]["bracketed"] and b20["ca_contacts"]["bracketed"]
    assert b20["ca_ca_ok"]["within"] and not b20["clash_fraction"]["within"]
    assert b20["secondary_structure"]["bracketed"]
    assert np.isnan(b["helix"]["model_se"])  # one sample: no standard error
    systems["real (held-out)"]["per_sample"].append({"ca_ca_ok": 1.0, "clash_fraction": 0.0, "helix": 0.2,
                                                      "strand": 0.2, "ca_contacts": 5.0})
    b = _bracket(systems)["diffsci, 100 steps"]
    assert np.isclose(b["helix"]["real"], 0.3) and np.isclose(b["helix"]["real_se"], np.std([0.4, 0.2], ddof=1) / np.sqrt(2))
    # past the real end: z in combined standard errors decides "within sampling error"
    real_rows = [{"ca_ca_ok": 1.0, "clash_fraction": 0.0, "helix": h, "strand": 0.1, "ca_contacts": 5.0}
                 for h in (0.2, 0.3, 0.4, 0.5)]
    model_rows = [{"ca_ca_ok": 1.0, "clash_fraction": 0.0, "helix": h, "strand": 0.05, "ca_contacts": 3.0}
                  for h in (0.35, 0.4, 0.45, 0.5)]
    sys2 = {"real (held-out)": {"per_sample": real_rows}, "random walk": systems["random walk"],
            "diffsci, 100 steps": {"per_sample": model_rows}}
    h = _bracket(sys2)["diffsci, 100 steps"]["helix"]
    se = np.sqrt(np.var([0.2, 0.3, 0.4, 0.5], ddof=1) / 4 + np.var([0.35, 0.4, 0.45, 0.5], ddof=1) / 4)
    assert not h["bracketed"] and np.isclose(h["z_beyond_real"], (0.425 - 0.35) / se) and h["within_error"]
    for r in model_rows:
        r["helix"] += 0.3
    h = _bracket(sys2)["diffsci, 100 steps"]["helix"]
    assert h["z_beyond_real"] > 2 and not h["within_error"]
    c = _bracket(sys2)["diffsci, 100 steps"]["ca_contacts"]  # inside: z is 0
    assert c["bracketed"] and c["z_beyond_real"] == 0.0 and c["within_error"]
    for r in model_rows:  # past the random walk (fewer contacts than it): no tolerance
        r["ca_contacts"] = 0.1
    c = _bracket(sys2)["diffsci, 100 steps"]["ca_contacts"]
    assert not c["within_error"] and c["z_beyond_real"] == 0.0
    systems["diffsci, 20 steps"]["per_sample"][0].update(helix=0.5, strand=0.2)  # 0.7 > real 0.5
    assert not _bracket(systems)["diffsci, 20 steps"]["secondary_structure"]["bracketed"]


def test_published_rows_name_every_anchor_with_a_source():
    from diffsci.benchmarks.protein_bench import PUBLISHED

    names = " ".join(r[0] for r in PUBLISHED)
    for model in ("FrameDiff", "FrameFlow", "RFdiffusion", "Genie2", "Proteina"):
        assert model in names
    for _, des, div, nov, src in PUBLISHED:
        assert 0 < des <= 1 and "arXiv" in src
        assert all(v is None or 0 < v < 1 for v in (div, nov))


def test_run_benchmark_end_to_end_with_a_tiny_checkpoint(tmp_path):
    """The whole benchmark on a two-step tiny checkpoint: every row, the bracket, report and plots."""
    import json

    from diffsci.benchmarks.protein_bench import PRIOR_ROW, SS_ROW, SYSTEM_ORDER, run_benchmark
    from diffsci.core.cli import main
    from diffsci.protein.io.dataset import bundled_dataset_path
    from diffsci.protein.model.diffusion import ProteinModelConfig

    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"model": {"net": {"scalars": 8, "vectors": 4, "layers": 1, "k_neighbors": 6},
                                         "max_length": 32}, "train": {"batch_size": 2}}))
    assert main(["protein", "train", "--data", str(bundled_dataset_path()), "--out", str(tmp_path / "run"),
                 "--config", str(cfg), "--steps", "2", "--device", "cpu"]) == 0
    out = tmp_path / "bench"
    payload = run_benchmark(out, quick=True, num=1, checkpoint=tmp_path / "run" / "latest.pt", n_reference=4)
    systems = payload["systems"]
    assert list(systems) == SYSTEM_ORDER
    assert len(systems["real (held-out)"]["per_sample"]) == 25
    assert [len(systems[n]["per_sample"]) for n in SYSTEM_ORDER[2:] if n not in (SS_ROW, PRIOR_ROW)] == [4] * 4
    # the SS row: num designs of the beta-rich request with the shipped checkpoint and its restraints
    assert [r["length"] for r in systems[SS_ROW]["per_sample"]] == [64]
    assert payload["sheet_table"][SS_ROW]["dssp_strand"] > 0.1
    # the prior row: 2 num designs at L = 100, topologies drawn from the training chains
    assert [r["length"] for r in systems[PRIOR_ROW]["per_sample"]] == [100, 100]
    assert payload["command"].endswith(f"--quick --num 1 --checkpoint {tmp_path / 'run' / 'latest.pt'}")
    # the filtered real row is exactly the held-out chains that pass the default training filters
    kept = systems["real (held-out, training filters)"]["per_sample"]
    assert 0 < len(kept) < 25
    rg_limit = ProteinModelConfig().max_rg_ratio
    assert all(r["radius_of_gyration"] <= rg_limit * 2.2 * r["length"] ** 0.38 + 1e-6 for r in kept)
    assert all(r["coil"] <= ProteinModelConfig().max_coil + 1e-9 for r in kept)
    assert systems["real (held-out, training filters)"]["summary"]["n_samples"] == len(kept)
    assert all(r["max_tm_reference"] is not None for r in kept)
    assert systems["real (held-out)"]["summary"]["n_reference"] == 4
    row = payload["bracket"]["diffsci, 100 steps"]
    assert {"ca_contacts", "helix", "strand", "secondary_structure", "rg_ratio", "ca_ca_ok"} <= set(row)
    assert row["rg_ratio"]["asked"] is False
    report = (out / "report.md").read_text()
    by_length_rows = {"real (held-out)": 1, "diffsci, 100 steps": 4, "diffsci, 20 steps": 4}  # 4 quick lengths
    for name in SYSTEM_ORDER:  # the main table, the sheet table and the by-length table
        assert report.count(f"| {name} |") == 2 + by_length_rows.get(name, 0), name
    assert list(payload["sheet_table"]) == SYSTEM_ORDER
    for name in SYSTEM_ORDER:  # every row: P-SEA and DSSP, sheets, pairing, contact order
        means, rows = payload["sheet_table"][name], systems[name]["per_sample"]
        for key in ("helix", "dssp_helix", "dssp_strand", "sheets", "ladders_parallel", "contact_order"):
            vals = [r[key] for r in rows if r[key] is not None]
            assert means[key] == pytest.approx(np.mean(vals)) if vals else np.isnan(means[key]), (name, key)
    assert payload["sheet_table"]["real (held-out)"]["sheets"] > 0.5  # real chains have sheets
    assert "| system | n | P-SEA helix | P-SEA strand | DSSP H | DSSP E | sheets |" in report
    for png in ("sse_composition", "rg_vs_length", "pairwise_tm", "ca_ca_hist"):
        assert (out / f"{png}.png").stat().st_size > 1000
    assert json.loads((out / "results.json").read_text())["num_per_length"] == 1


def test_bench_protein_rates_through_the_cli(tmp_path, capsys):
    """``diffsci bench protein --rates``: one row per rate, equal to the library's sweep, written
    with the full command as JSON and a markdown table (also printed)."""
    import json

    from diffsci.core.cli import main
    from diffsci.benchmarks.protein_acceptance import rate_sweep
    from diffsci.protein.metrics import dssp_fractions
    from diffsci.protein.design.sampling import sample_backbones
    from diffsci.core.checkpoint import default_checkpoint_path
    from diffsci.protein.model.diffusion import KIND
    from diffsci.protein.design.sampling import load_model

    ck = default_checkpoint_path(KIND)
    out = tmp_path / "sweep"
    argv = ["bench", "protein", "--out", str(out), "--rates", "2", "20", "--checkpoint", str(ck), "--seed", "3",
            "--num", "1", "--lengths", "40", "--steps", "2"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    payload = json.loads((out / "rates.json").read_text())
    assert payload["command"] == "diffsci " + " ".join(argv)
    assert payload["checkpoint"] == str(ck) and payload["lengths"] == [40] and payload["steps"] == 2
    want = rate_sweep(load_model(ck), [2, 20], lengths=[40], num=1, seed=3, steps=2)
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in payload["rows"]] == \
        [{k: v for k, v in r.items() if k != "seconds"} for r in want]
    table = (out / "rates.md").read_text()
    assert table.endswith(printed) and "--rates 2 20" in table
    lines = printed.splitlines()
    assert lines[0].startswith("| rate | n | CA-CA ok |") and len(lines) == 4
    assert "| helix + strand | DSSP H | DSSP E |" in lines[0]
    designs = sample_backbones(load_model(ck), DesignRequest(lengths=[40], num=1, seed=3, steps=2, rotation_rate=2,
                                                               potentials="none"), progress=False)
    assert want[0]["dssp_helix"] == dssp_fractions(designs[0].coords[0])["dssp_helix"]
    assert lines[2].startswith(f"| 2 | 1 | {want[0]['ca_ca_ok']:.3f} |")


def test_bench_protein_acceptance_at_the_checkpoint_rate(tmp_path, capsys):
    import json

    from diffsci.core.cli import main
    from diffsci.protein.design.sampling import load_model

    out = tmp_path / "acc"
    assert main(["bench", "protein", "--out", str(out), "--acceptance", "--num", "1", "--lengths", "40",
                 "--steps", "2"]) == 0
    payload = json.loads((out / "acceptance.json").read_text())
    (row,) = payload["rows"]
    assert row["rate"] == load_model().config.inference_rate and row["n"] == 1 and row["seed"] == 0
    assert "--acceptance" in payload["command"] and (out / "acceptance.md").exists()
    assert (out / "acceptance.md").read_text().endswith(capsys.readouterr().out)


def test_bench_protein_acceptance_options_are_checked(tmp_path, capsys):
    from diffsci.core.cli import main

    assert main(["bench", "protein", "--out", str(tmp_path), "--steps", "40"]) == 2  # benchmark mode: no --steps
    assert "--steps" in capsys.readouterr().err
    assert main(["bench", "protein", "--out", str(tmp_path), "--acceptance", "--lean"]) == 2
    assert "--lean" in capsys.readouterr().err
    assert main(["bench", "protein", "--out", str(tmp_path), "--acceptance", "--churn", "0"]) == 2
    assert "--churn" in capsys.readouterr().err
    assert main(["bench", "protein", "--out", str(tmp_path), "--acceptance", "--t-stop", "0"]) == 2
    assert "--t-stop" in capsys.readouterr().err
    assert main(["bench", "protein", "--out", str(tmp_path), "--rates", "0"]) == 2
    assert "rates" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: one mode at a time
        main(["bench", "protein", "--out", str(tmp_path), "--rates", "5", "--acceptance"])


def _sample(length, breaks=0, inter=0, helix=0.5, strand=0.1, nll=None):
    return {"length": length, "chain_breaks": breaks, "interchain_clashes": inter, "ca_ca_ok": 1.0 - 0.1 * breaks,
            "dssp_helix": helix, "dssp_strand": strand, "radius_of_gyration": 2.2 * length ** 0.38,
            "max_tm_reference": 0.5, "mpnn_nll_proxy": nll}


def test_by_length_groups_the_model_rows_and_counts_broken_samples():
    from diffsci.benchmarks.protein_bench import by_length, by_length_table

    model = [_sample(60, nll=1.0), _sample(60, breaks=2, nll=2.0), _sample(100, inter=3), _sample(100, strand=0.3)]
    tm = np.eye(4) + 0.3 * (1 - np.eye(4))
    tm[0, 1] = tm[1, 0] = 0.7  # the two L = 60 designs
    systems = {"real (held-out)": {"per_sample": [_sample(80, nll=1.05)], "pairwise_tm": [[1.0]]},
               "diffsci, 100 steps": {"per_sample": model, "pairwise_tm": tm.tolist()}}
    rows = by_length(systems)
    assert [(r["system"], r["length"], r["n"]) for r in rows] == [
        ("real (held-out)", "all", 1), ("diffsci, 100 steps", 60, 2), ("diffsci, 100 steps", 100, 2)]
    real, l60, l100 = rows
    assert real["mpnn_nll"] == 1.05 and real["pairwise_tm"] is None and real["rg_ratio"] == pytest.approx(1.0)
    assert l60["broken"] == 1 and l60["breaks_per_sample"] == 1.0 and l60["mpnn_nll"] == 1.5
    assert l60["pairwise_tm"] == pytest.approx(0.7)
    assert l100["broken"] == 1 and l100["dssp_strand"] == pytest.approx(0.2) and l100["mpnn_nll"] is None
    table = by_length_table(rows)
    assert len(table) == 5 and table[3].startswith("| diffsci, 100 steps | 60 | 2 | 1 | 1.00 |") and "| - |" in table[4]


def test_lean_benchmark_with_potentials_and_designability(tmp_path, monkeypatch):
    """--lean: the model's 100-step row beside the references; --potentials reaches the designs;
    --designability gives each real chain and design its own ProteinMPNN NLL (a stand-in returns
    each backbone's length)."""
    import json

    import diffsci.protein.metrics.designability as des
    from diffsci.benchmarks.protein_bench import run_benchmark
    from diffsci.core.cli import main
    from diffsci.protein.io.dataset import bundled_dataset_path

    calls = []
    monkeypatch.setattr(des, "designability", lambda items, backend, *a, progress=True: calls.append(len(items))
                        or [{"mpnn_nll_proxy": float(len(c))} for _, c in items])
    monkeypatch.setattr(des, "require_proteinmpnn", lambda: None)
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"model": {"net": {"scalars": 8, "vectors": 4, "layers": 1, "k_neighbors": 6},
                                         "max_length": 32}, "train": {"batch_size": 2}}))
    assert main(["protein", "train", "--data", str(bundled_dataset_path()), "--out", str(tmp_path / "run"),
                 "--config", str(cfg), "--steps", "2", "--device", "cpu"]) == 0
    payload = run_benchmark(tmp_path / "b", num=1, lengths=[40, 50], checkpoint=tmp_path / "run" / "latest.pt",
                            n_reference=2, lean=True, potentials="sterics:1", designability=True, churn=0.0,
                            t_stop=0.0)
    assert set(payload["systems"]) == {"real (held-out)", "real (held-out, training filters)", "diffsci, 100 steps",
                                       "random walk"}
    assert calls == [25 + 2]
    for name in ("real (held-out)", "diffsci, 100 steps"):
        assert all(r["mpnn_nll_proxy"] == r["length"] for r in payload["systems"][name]["per_sample"])
    assert [(r["system"], r["length"], r["mpnn_nll"]) for r in payload["by_length"]][1:] == [
        ("diffsci, 100 steps", 40, 40.0), ("diffsci, 100 steps", 50, 50.0)]
    assert "--lean --designability --potentials sterics:1 --churn 0 --t-stop 0 --lengths 40 50" in payload["command"]
    report = (tmp_path / "b" / "report.md").read_text()
    assert "## By length" in report and "potentials: `sterics:1`, churn: `0.0`, t_stop: `0.0`" in report
    # the churn reaches the designs
    from diffsci.benchmarks.protein_bench import _designs
    from diffsci.protein.design.sampling import load_model

    lm = load_model(tmp_path / "run" / "latest.pt")
    plain, dflt, churned = (_designs(lm, [40], 1, 30, 0, churn=c) for c in (0.0, None, 30.0))
    assert np.array_equal(plain[0][1], dflt[0][1])  # the checkpoint's own churn: none
    assert not np.array_equal(plain[0][1], churned[0][1])
    # and so does t_stop (the checkpoint's own: 0.01)
    full, stop = (_designs(lm, [40], 1, 30, 0, t_stop=t) for t in (0.0, None))
    assert np.array_equal(stop[0][1], _designs(lm, [40], 1, 30, 0, t_stop=0.01)[0][1])
    assert not np.array_equal(full[0][1], stop[0][1])

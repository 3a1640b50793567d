"""Designing backbones: determinism, motif scaffolding, cyclic symmetry, bad input."""

import json

import numpy as np
import pytest
import torch

from diffsci.core.cli import main
from diffsci.protein.dataset import bundled_dataset_path, load_dataset
from diffsci.protein.pdb_io import write_backbone_pdb
from diffsci.protein.sampling import load_model, parse_contig, sample_backbones
from diffsci.protein.structure import read_structure_chains


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A real (two-step) training run of a tiny model through the CLI."""
    d = tmp_path_factory.mktemp("ck")
    cfg = d / "cfg.json"
    cfg.write_text(json.dumps({"model": {"net": {"scalars": 8, "vectors": 4, "tensors": 0, "layers": 2, "k_neighbors": 6},
                                         "max_length": 32},
                               "train": {"batch_size": 2, "ckpt_every": 2}}))
    assert main(["protein", "train", "--data", str(bundled_dataset_path()), "--out", str(d / "run"),
                 "--config", str(cfg), "--steps", "2", "--device", "cpu"]) == 0
    return d / "run" / "latest.pt"


@pytest.fixture(scope="module")
def motif_file(tmp_path_factory):
    ds = load_dataset(bundled_dataset_path())
    ch = ds.chain(0)
    path = tmp_path_factory.mktemp("motif") / "motif.pdb"
    write_backbone_pdb(path, ch.coords[:40], res_ids=ch.res_ids[:40], sequence=ch.sequence[:40])
    return path


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


def test_time_grid_power_is_used_and_recorded(tiny_checkpoint, tmp_path):
    lm = load_model(tiny_checkpoint)
    (a,) = sample_backbones(lm, [40], 1, steps=4, progress=False, time_power=1.0)
    (b,) = sample_backbones(lm, [40], 1, steps=4, progress=False, time_power=2.0)
    assert not np.allclose(a.coords, b.coords)  # another grid, another trajectory from the same prior
    out = tmp_path / "o"
    assert main(["protein", "sample", "--checkpoint", str(tiny_checkpoint), "--length", "40", "--steps", "3",
                 "--out", str(out), "--quiet", "--time-power", "1.5"]) == 0
    assert "time_power: 1.5" in (out / "len40_000.pdb").read_text()


def test_rotation_rate_overrides_the_checkpoint_and_is_recorded(tiny_checkpoint, tmp_path):
    lm = load_model(tiny_checkpoint)
    kw = dict(steps=4, progress=False)
    (base,) = sample_backbones(lm, [40], 1, **kw)
    (same,) = sample_backbones(lm, [40], 1, rotation_rate=lm.cfg.inference_rate, **kw)
    (plain,) = sample_backbones(lm, [40], 1, rotation_rate=1.0, **kw)
    np.testing.assert_array_equal(base.coords, same.coords)  # the checkpoint's rate is the default
    assert not np.allclose(base.coords, plain.coords)
    assert base.rotation_rate == lm.cfg.inference_rate and plain.rotation_rate == 1.0
    out = tmp_path / "o"
    assert main(["protein", "sample", "--checkpoint", str(tiny_checkpoint), "--length", "40", "--steps", "3",
                 "--out", str(out), "--quiet", "--rotation-rate", "4"]) == 0
    assert "rotation_rate: 4.0" in (out / "len40_000.pdb").read_text()


def test_motif_is_held_fixed(tiny_checkpoint, motif_file):
    lm = load_model(tiny_checkpoint)
    from diffsci.protein.sampling import load_motif

    designs = sample_backbones(lm, [], 2, steps=8, motif=load_motif(motif_file), contig="10-20/A5-20/30-40",
                               progress=False)
    for d in designs:
        assert 10 + 16 + 30 <= d.length <= 20 + 16 + 40
        got = d.coords[0][d.motif_index, 1]  # CA of the motif positions
        want = d.motif_coords[:, 1]
        assert _kabsch_rmsd(got, want) < 0.5
    assert designs[0].length != designs[1].length or not np.allclose(designs[0].coords, designs[1].coords)


def test_cyclic_symmetry_is_exact(tiny_checkpoint):
    lm = load_model(tiny_checkpoint)
    (d,) = sample_backbones(lm, [40], 1, steps=6, symmetry="C3", progress=False)
    ca = d.coords[:, :, 1]  # (3, L, 3)
    for k in range(3):
        ang = 2 * np.pi * k / 3
        rz = np.array([[np.cos(ang), -np.sin(ang), 0], [np.sin(ang), np.cos(ang), 0], [0, 0, 1]])
        err = np.sqrt(((ca[0] @ rz.T - ca[k]) ** 2).sum(-1).mean())
        assert err < 0.01, err


def test_contig_parsing():
    segs = parse_contig("10-20/A5-20/30")
    assert [(s.lo, s.hi, s.chain) for s in segs] == [(10, 20, None), (5, 20, "A"), (30, 30, None)]


@pytest.mark.parametrize("args,needle", [
    (["--length", "0"], "--length 0"),
    (["--length", "1000"], "--length 1000"),
    (["--length", "50", "--sampler", "nope"], "unknown sampler"),
    (["--length", "50", "--symmetry", "D2"], "--symmetry"),
    (["--contig", "10/A5-90/10", "--motif", "MOTIF"], "not in the motif file"),
    (["--contig", "10/A5-9/10", "--motif", "/no/such.pdb"], "not found"),
    (["--contig", "10/Q/10", "--motif", "MOTIF"], "cannot parse"),
    (["--length", "50", "--time-power", "0"], "--time-power"),
    (["--length", "50", "--rotation-rate", "-1"], "--rotation-rate"),
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
    from diffsci.core.train import save_checkpoint

    ck = save_checkpoint(tmp_path / "w.pt", {"format": "diffsci-checkpoint-v1", "kind": "weather-graph-diffusion"})
    assert main(["protein", "sample", "--checkpoint", str(ck), "--length", "50", "--out", str(tmp_path / "o")]) == 2
    assert "expected 'protein-frames'" in capsys.readouterr().err


def test_shipped_protein_checkpoint_is_the_recorded_self_conditioned_soup():
    """The shipped checkpoint is a self-conditioned net at rotation rate 10, the equal-weight
    average of two fine-tunes (recorded in the file), and loads with its EMA weights."""
    from diffsci.core.train import load_checkpoint

    default = load_model()
    assert default.cfg.inference_rate == 10.0 and default.cfg.net.self_condition
    ck = load_checkpoint(default.source)
    assert [s["weight"] for s in ck["averaged_from"]] == [0.5, 0.5]
    sd = default.model.state_dict()
    assert any("sc_fc" in k and v.abs().sum() > 0 for k, v in sd.items())  # the branch was trained

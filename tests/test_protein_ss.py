"""Secondary-structure conditioning: the request parsers, pairing matrices, dataset labels, the
zero-initialised model inputs, training with the conditioning dropout, guidance and the CLI."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from equivariance import assert_frames_equivariant

from diffsci.protein.design.request import DesignRequest
from diffsci.core import so3
from diffsci.core.checkpoint import load_checkpoint, save_checkpoint
from diffsci.core.cli import main
from diffsci.core.config import to_dict
from diffsci.core.errors import DiffsciError
from diffsci.core.train import Recipe, fit
from diffsci.protein.io.dataset import bundled_dataset_path, load_dataset
from diffsci.protein.model.diffusion import KIND, BackboneTask, ProteinCond, ProteinModelConfig, build_model, build_space
from diffsci.protein.metrics import dssp_bridges, dssp_labels
from diffsci.protein.model.network import FrameNetConfig
from diffsci.protein.design.builder import ss_denoiser
from diffsci.protein.design.sampling import load_model, sample_backbones
from diffsci.protein.ss import (PAIR_ANTIPARALLEL, PAIR_NONE, PAIR_PARALLEL, PAIR_UNKNOWN, SS_UNKNOWN, pair_classes,
                                parse_ss, parse_ss_pairs, segment_pairs_from_bridges, ss_codes, ss_condition,
                                ss_segments, strand_segments)

TINY = dict(scalars=8, vectors=4, tensors=0, layers=2, k_neighbors=6)
DSSP_DATA = Path(__file__).parent / "data" / "dssp"


# ------------------------------------------------------------------------------ parsers
def test_parse_ss_run_length_and_per_residue_forms_agree():
    want = [0, 0, 2, 2, 2, 0, 1, 1, 1, 1]
    assert parse_ss("L2E3L1H4").tolist() == want
    assert parse_ss("LLEEELHHHH").tolist() == want
    assert parse_ss(" l2e3L1h4 ", 10).tolist() == want
    assert len(parse_ss("L2E8L3E8L3E8L3E8L3H16L2")) == 64
    assert parse_ss("H12").tolist() == [1] * 12


@pytest.mark.parametrize("spec, needle", [
    ("LLXEE", "unknown letter"), ("L2X3", "unknown letter"), ("L2E", "run-length"), ("2L", "run-length"),
    ("L0E3", "count >= 1"), ("", "empty"), ("L2-3", "run-length"),
])
def test_parse_ss_refuses_bad_requests_naming_the_option(spec, needle):
    with pytest.raises(DiffsciError, match=needle) as e:
        parse_ss(spec, name="--ss")
    assert str(e.value).startswith("--ss")


def test_parse_ss_length_mismatch():
    with pytest.raises(DiffsciError, match="describes 5 residues but the design length is 6"):
        parse_ss("L2E3", 6)


def test_parse_ss_pairs():
    assert parse_ss_pairs("1-2:A, 2-3:a,4-3:P", 4) == [(0, 1, False), (1, 2, False), (2, 3, True)]
    for text, needle in [("1-2", "not a pair"), ("1-2:X", "not a pair"), ("1-1:A", "itself"),
                         ("1-5:A", r"numbered 1\.\.4"), ("0-2:A", r"numbered 1\.\.4"), ("1-2:A,2-1:P", "twice")]:
        with pytest.raises(DiffsciError, match=needle):
            parse_ss_pairs(text, 4)


def test_segments_and_pair_classes_by_hand():
    codes = parse_ss("LEELEEEH")
    assert ss_segments(codes) == [(0, 0), (1, 2), (3, 3), (4, 6), (7, 7)]
    assert strand_segments(codes) == [(1, 2), (4, 6)]
    m = pair_classes(codes, [(0, 1, False)])
    want = np.full((8, 8), PAIR_NONE)
    want[1:3, 4:7] = want[4:7, 1:3] = PAIR_ANTIPARALLEL
    np.testing.assert_array_equal(m, want)
    codes[0] = SS_UNKNOWN
    m = pair_classes(codes, [(0, 1, True)])
    assert (m[0] == PAIR_UNKNOWN).all() and (m[:, 0] == PAIR_UNKNOWN).all() and m[1, 5] == PAIR_PARALLEL
    assert m[1, 1] == PAIR_NONE and m[7, 2] == PAIR_NONE
    # without pairs the pairing is left open; with them, the rest is "not paired"
    _, open_ = ss_condition("L1E2L1E3H1", 8)
    assert (open_ == PAIR_UNKNOWN).all()
    codes2, closed = ss_condition("L1E2L1E3H1", 8, "1-2:P")
    np.testing.assert_array_equal(codes2, parse_ss("LEELEEEH"))
    assert closed[2, 6] == PAIR_PARALLEL and closed[0, 6] == PAIR_NONE


def test_segment_pairs_from_bridges_majority_vote():
    codes = parse_ss("EEELLEEELLEEE")  # segments 0: 0-2, 1: 5-7, 2: 10-12
    bridges = np.array([[0, 7, 0], [1, 6, 0], [2, 5, 1],  # 0-1: 2 antiparallel, 1 parallel
                        [5, 10, 1], [6, 11, 0],  # 1-2: a tie -> antiparallel
                        [3, 12, 1], [0, 1, 0]])  # a loop residue, one segment: no pair
    assert segment_pairs_from_bridges(codes, bridges) == [(0, 1, False), (1, 2, False)]
    assert segment_pairs_from_bridges(codes, np.array([[0, 12, 1], [1, 11, 1]])) == [(0, 2, True)]
    assert segment_pairs_from_bridges(codes, np.zeros((0, 3), np.int64)) == []


def test_ss_codes():
    assert ss_codes("-HE").tolist() == [0, 1, 2] and ss_codes(np.array(["E", "-"])).tolist() == [2, 0]
    with pytest.raises(DiffsciError, match="unknown DSSP"):
        ss_codes("HXE")


# ------------------------------------------------------------------------------ dataset labels
def test_prepare_stores_dssp_labels_and_bridges_memory_mapped(tmp_path, capsys):
    out = tmp_path / "ds.npz"
    assert main(["protein", "prepare", str(DSSP_DATA), "--out", str(out)]) == 0
    assert "secondary structure (pydssp DSSP" in capsys.readouterr().out
    ds = load_dataset(out)
    assert isinstance(ds.ss, np.memmap) and not ds.ss.flags.writeable
    assert sum(len(ds.chain_ss(i)[1]) for i in range(len(ds))) > 0  # some chain has a sheet
    for i in range(len(ds)):
        coords = np.asarray(ds.chain(i).coords, dtype=np.float64)
        labels, bridges = ds.chain_ss(i)
        np.testing.assert_array_equal(labels, ss_codes(dssp_labels(coords)))
        np.testing.assert_array_equal(bridges, dssp_bridges(coords))


def test_dataset_without_labels_gets_them_at_load(capsys):
    plain = load_dataset(bundled_dataset_path())
    assert plain.ss is None
    ds = load_dataset(bundled_dataset_path(), ss_labels=True)
    assert "no secondary-structure labels stored" in capsys.readouterr().err
    for i in (0, len(ds) - 1):
        coords = np.asarray(ds.chain(i).coords, dtype=np.float64)
        np.testing.assert_array_equal(ds.chain_ss(i)[0], ss_codes(dssp_labels(coords)))
        np.testing.assert_array_equal(ds.chain_ss(i)[1], dssp_bridges(coords))
    with pytest.raises(DiffsciError, match="ss_labels=True"):
        plain.chain_ss(0)


# ------------------------------------------------------------------------------ model
def _inputs(b=2, n=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    trans = torch.randn(b, n, 3, generator=g, dtype=torch.float64) * 1.5
    rots = so3.random_rotations((b, n), g, torch.float64)
    mask = torch.ones(b, n, dtype=torch.bool)
    ss = torch.randint(4, (b, n), generator=g)
    pair = torch.randint(4, (b, n, n), generator=g)
    cond = ProteinCond(mask, torch.arange(n).expand(b, n), torch.zeros(b, n, dtype=torch.long), ss=ss, ss_pair=pair)
    return trans, rots, cond


def _perturbed(cfg, seed=1):
    torch.manual_seed(seed)
    model = build_model(cfg).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def test_zero_initialised_ss_inputs_leave_the_output_bitwise_unchanged():
    plain_cfg = ProteinModelConfig(net=FrameNetConfig(**TINY, self_condition=True), max_length=32)
    ss_cfg = dataclasses.replace(plain_cfg, net=dataclasses.replace(plain_cfg.net, ss_conditioning=True))
    plain = _perturbed(plain_cfg)
    cond_model = build_model(ss_cfg).double()
    missing, unexpected = cond_model.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(missing) == ["net.pair_embed.weight", "net.ss_embed.weight"] and not unexpected
    assert all(float(cond_model.state_dict()[k].abs().max()) == 0 for k in missing)  # they start at zero
    trans, rots, cond = _inputs()
    t = torch.tensor([0.3, 0.8], dtype=torch.float64)
    bare = ProteinCond(cond.mask, cond.res_idx, cond.chain)
    a = plain((trans, rots), t, bare)
    for c in (cond, bare):
        b = cond_model((trans, rots), t, c)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    # with trained (non-zero) embeddings the labels change the prediction
    with torch.no_grad():
        cond_model.net.ss_embed.weight.normal_()
        cond_model.net.pair_embed.weight.normal_()
    b = cond_model((trans, rots), t, cond)
    assert (b[0] - a[0]).abs().max() > 1e-4


def test_ss_conditioned_net_is_equivariant():
    cfg = ProteinModelConfig(net=FrameNetConfig(**TINY, ss_conditioning=True), max_length=32)
    model = _perturbed(cfg)
    trans, rots, cond = _inputs()
    t = torch.tensor([0.3, 0.8], dtype=torch.float64)
    assert_frames_equivariant(lambda x, r: model((x, r), t, cond), trans, rots, dtype=torch.float64)


def test_pair_edges_join_every_requested_pair_and_keep_the_net_equivariant():
    from diffsci.protein.model.network import FrameDenoiserNet

    with pytest.raises(DiffsciError, match="pair_edges needs ss_conditioning"):
        FrameNetConfig(**TINY, pair_edges=True)
    net = FrameDenoiserNet(FrameNetConfig(**TINY, ss_conditioning=True, pair_edges=True))
    codes, pair = ss_condition("L2E6L3E6L3", 20, "1-2:A")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 20, 3, generator=g) * 3.0  # spread out: the strands are not kNN neighbours
    mask, res_idx, chain = torch.ones(1, 20, dtype=torch.bool), torch.arange(20)[None], torch.zeros(1, 20, dtype=torch.long)
    plain = set(zip(*(e.tolist() for e in net.build_edges(x, mask, res_idx, chain))))
    with_pairs = set(zip(*(e.tolist() for e in net.build_edges(x, mask, res_idx, chain, torch.as_tensor(pair)[None]))))
    paired = {(int(i), int(j)) for i, j in zip(*np.nonzero(pair == PAIR_ANTIPARALLEL))}
    assert len(paired) == 72 and paired <= with_pairs and not paired <= plain
    assert with_pairs - plain <= paired  # nothing else is added
    unknown = torch.full((1, 20, 20), PAIR_UNKNOWN)
    assert set(zip(*(e.tolist() for e in net.build_edges(x, mask, res_idx, chain, unknown)))) == plain
    cfg = ProteinModelConfig(net=FrameNetConfig(**TINY, ss_conditioning=True, pair_edges=True), max_length=32)
    model = _perturbed(cfg)
    trans, rots, cond = _inputs()
    t = torch.tensor([0.3, 0.8], dtype=torch.float64)
    assert_frames_equivariant(lambda x, r: model((x, r), t, cond), trans, rots, dtype=torch.float64)


def test_guidance_scale_one_is_conditional_zero_unconditional_two_extrapolates():
    cfg = ProteinModelConfig(net=FrameNetConfig(**TINY, ss_conditioning=True), max_length=32)
    model = _perturbed(cfg)
    with torch.no_grad():
        model.net.ss_embed.weight.normal_()
    trans, rots, cond = _inputs(b=1)
    t = torch.tensor([0.5], dtype=torch.float64)
    space = build_space(cfg, cond.mask)
    conditional = model((trans, rots), t, cond)
    unconditional = model((trans, rots), t, dataclasses.replace(cond, ss=None, ss_pair=None))
    assert (conditional[0] - unconditional[0]).abs().max() > 1e-4
    for scale, want in ((1.0, conditional), (0.0, unconditional)):
        got = ss_denoiser(model, space, cond, scale)((trans, rots), t, cond)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    got = ss_denoiser(model, space, cond, 2.0)((trans, rots), t, cond)
    torch.testing.assert_close(got[0], 2 * conditional[0] - unconditional[0], rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------ training
def test_training_batches_carry_the_labels_and_the_dropout():
    ds = load_dataset(bundled_dataset_path(), ss_labels=True)
    net = FrameNetConfig(**TINY, ss_conditioning=True)
    full = BackboneTask(ProteinModelConfig(net=net, max_length=512, ss_drop=0, ss_pair_drop=0, ss_segment_mask=0), ds)
    batch = full.sample_batch(torch.Generator().manual_seed(2), 3)
    picks = torch.randint(len(full.chains), (3,), generator=torch.Generator().manual_seed(2)).tolist()
    for b, p in enumerate(picks):  # no chain is longer than 512: no crops
        labels, bridges = full.ss_labels[p]
        m = len(labels)
        np.testing.assert_array_equal(batch.ss[b, :m].numpy(), labels)
        assert (batch.ss[b, m:] == SS_UNKNOWN).all()
        want = pair_classes(np.asarray(labels), segment_pairs_from_bridges(labels, bridges))
        np.testing.assert_array_equal(batch.ss_pair[b, :m, :m].numpy(), want)
    dropped = BackboneTask(ProteinModelConfig(net=net, max_length=40, ss_drop=1.0), ds)
    batch = dropped.sample_batch(torch.Generator().manual_seed(2), 3)
    assert (batch.ss == SS_UNKNOWN).all() and (batch.ss_pair == PAIR_UNKNOWN).all()
    pairs_dropped = BackboneTask(ProteinModelConfig(net=net, max_length=40, ss_drop=0, ss_pair_drop=1,
                                                    ss_segment_mask=0), ds)
    batch = pairs_dropped.sample_batch(torch.Generator().manual_seed(2), 3)
    assert (batch.ss[batch.mask] != SS_UNKNOWN).all() and (batch.ss_pair == PAIR_UNKNOWN).all()


def test_tiny_ss_conditioned_model_trains_with_finite_loss(tmp_path, capsys):
    recipe = Recipe.from_tables(KIND, {"model": {"net": {**TINY, "ss_conditioning": True}, "max_length": 32}},
                                data={"path": str(bundled_dataset_path())},
                                train={"steps": 24, "batch_size": 2, "device": "cpu", "lr": 3e-3, "warmup_steps": 1,
                                       "log_every": 8})
    res = fit(recipe, tmp_path / "run", progress=False)
    assert np.isfinite(res.last_loss)
    ck = load_checkpoint(res.checkpoint)
    assert ck["model_config"]["net"]["ss_conditioning"] is True
    assert float(ck["model"]["net.ss_embed.weight"].abs().max()) > 0  # the embeddings learn from zero
    assert float(ck["model"]["net.pair_embed.weight"].abs().max()) > 0


def test_loss_without_ss_conditioning_is_unchanged():
    """Recorded before SS conditioning existed (same seeds, same tiny nets)."""
    ds = load_dataset(bundled_dataset_path())
    for self_condition, want in ((False, 15.265803337097168), (True, 8.373528480529785)):
        net = FrameNetConfig(scalars=8, vectors=4, tensors=2, layers=2, k_neighbors=6, self_condition=self_condition)
        cfg = ProteinModelConfig(net=net, max_length=40)
        task = BackboneTask(cfg, ds)
        torch.manual_seed(0)
        model = build_model(cfg)
        batch = task.sample_batch(torch.Generator().manual_seed(3), 3)
        assert batch.ss is None and batch.ss_pair is None
        assert task.loss(model, batch).item() == pytest.approx(want, rel=1e-6)
        # the same net with zero SS embeddings (the warm start of ss_train.json) gives the same loss
        ss_cfg = dataclasses.replace(cfg, net=dataclasses.replace(net, ss_conditioning=True))
        ss_model = build_model(ss_cfg)
        ss_model.load_state_dict(model.state_dict(), strict=False)
        ss_batch = BackboneTask(ss_cfg, ds).sample_batch(torch.Generator().manual_seed(3), 3)
        assert torch.equal(ss_batch.trans, batch.trans) and ss_batch.ss is not None
        assert task.loss(ss_model, ss_batch).item() == pytest.approx(want, rel=1e-6)


# ------------------------------------------------------------------------------ sampling
@pytest.fixture(scope="module")
def ss_checkpoint(tmp_path_factory):
    cfg = ProteinModelConfig(net=FrameNetConfig(**TINY, ss_conditioning=True, self_condition=True), max_length=32)
    model = _perturbed(cfg).float()
    path = tmp_path_factory.mktemp("ck") / "ss.pt"
    return save_checkpoint(path, {"format": "diffsci-checkpoint-v1", "kind": KIND, "config_version": 2,
                                  "model_config": to_dict(cfg), "ema": model.state_dict()})


def test_sample_cli_ss_sets_the_length_and_records_the_request(ss_checkpoint, tmp_path):
    out = tmp_path / "o"
    args = ["protein", "sample", "--checkpoint", str(ss_checkpoint), "--steps", "3", "--quiet", "--out", str(out),
            "--ss", "L3E8L3E8L3H15", "--ss-pairs", "1-2:A", "--guidance-scale", "2"]
    assert main(args) == 0
    rec = json.loads((out / "len40_000.json").read_text())
    assert rec["length"] == 40 and rec["ss"] == "LLL" + "E" * 8 + "LLL" + "E" * 8 + "LLL" + "H" * 15
    assert rec["ss_pairs"] == "1-2:A" and rec["guidance_scale"] == 2.0
    assert "REMARK" in (out / "len40_000.pdb").read_text()


def test_sample_ss_guidance_changes_designs_and_symmetry_tiles_the_request(ss_checkpoint):
    bundle = load_model(ss_checkpoint)
    spec = "L8E10L4E10L8"
    plain = sample_backbones(bundle, DesignRequest(lengths=[40], num=1, steps=3), progress=False)[0]
    one = sample_backbones(bundle, DesignRequest(lengths=[40], num=1, steps=3, ss=spec), progress=False)[0]
    assert not np.allclose(plain.coords, one.coords) and one.ss == "L" * 8 + "E" * 10 + "LLLL" + "E" * 10 + "L" * 8
    zero = sample_backbones(bundle, DesignRequest(lengths=[40], num=1, steps=3, ss=spec, guidance_scale=0.0, strand_restraints=0.0), progress=False)[0]
    np.testing.assert_allclose(zero.coords, plain.coords, atol=1e-5)  # scale 0: the unconditional model
    sym = sample_backbones(bundle, DesignRequest(lengths=[40], num=1, steps=2, ss=spec, ss_pairs="1-2:A", symmetry="C2"), progress=False)[0]
    assert sym.coords.shape == (2, 40, 4, 3) and sym.ss_pairs == "1-2:A"


def test_hairpins_are_the_default_pairs_and_unknown_leaves_them_to_the_network(ss_checkpoint):
    spec = "L3E6L3E6L12E6L4"  # strands 1-2 joined by 3 loop residues (a hairpin), 2-3 by 12 (not one)
    r = DesignRequest(ss=spec)
    assert r.effective_ss_pairs == "1-2:A"
    codes, pair = r.ss_inputs()
    assert torch.equal(pair, torch.from_numpy(pair_classes(codes.numpy(), [(0, 1, False)])))  # as --ss-pairs 1-2:A
    assert pair[4, 13] == PAIR_ANTIPARALLEL and pair[13, 31] == PAIR_NONE
    assert torch.equal(DesignRequest(ss=spec, ss_pairs="1-2:A").ss_inputs()[1], pair)
    assert (DesignRequest(ss=spec, ss_pairs="unknown").ss_inputs()[1] == PAIR_UNKNOWN).all()
    with pytest.raises(DiffsciError, match="'unknown' \\(lower case, alone\\) leaves every pair"):
        DesignRequest(ss=spec, ss_pairs="Unknown")  # the keyword misspelt is named, not just refused
    with pytest.raises(DiffsciError, match="is not a pair such as 1-2:A \\(A antiparallel, P parallel\\)$"):
        DesignRequest(ss=spec, ss_pairs="1-2")
    assert DesignRequest(ss=spec, ss_pairs="2-3:P").effective_ss_pairs == "2-3:P"  # a list replaces the default
    assert DesignRequest(ss="L3E6L12E6L13").effective_ss_pairs is None  # no hairpin: every pair unknown
    assert (DesignRequest(ss="L3E6L12E6L13").ss_inputs()[1] == PAIR_UNKNOWN).all()
    bundle = load_model(ss_checkpoint)
    default = sample_backbones(bundle, DesignRequest(lengths=[40], num=1, steps=2, ss=spec, strand_restraints=0.0), progress=False)[0]
    given = sample_backbones(bundle, DesignRequest(lengths=[40], num=1, steps=2, ss=spec, ss_pairs="1-2:A", strand_restraints=0.0), progress=False)[0]
    unknown = sample_backbones(bundle, DesignRequest(lengths=[40], num=1, steps=2, ss=spec, ss_pairs="unknown", strand_restraints=0.0), progress=False)[0]
    np.testing.assert_array_equal(default.coords, given.coords)
    assert not np.allclose(default.coords, unknown.coords)  # the pair classes reach the network
    assert default.ss_pairs == "1-2:A" and unknown.ss_pairs == "unknown"  # the record reruns the same request


@pytest.mark.parametrize("extra, needle", [
    (["--ss", "L10", "--length", "40"], "--ss 'L10': describes 10 residues but the design length is 40"),
    (["--ss", "L20E10Q10"], "--ss 'L20E10Q10': unknown letter"),
    (["--ss", "L20E10L10", "--ss-pairs", "1-2:A"], "--ss-pairs '1-2:A': strands are numbered 1..1"),
    (["--ss-pairs", "1-2:A", "--length", "40"], "--ss-pairs needs --ss"),
    (["--guidance-scale", "2", "--length", "40"], "--guidance-scale needs --ss"),
    (["--ss", "prior", "--contig", "40"], "--ss prior: not with a contig"),
    (["--ss", "L40", "--contig", "30-50"], "give every scaffold segment one length"),
    (["--ss", "L30", "--contig", "40"], "the request has 30 residues, but contig '40' gives 40"),
])
def test_sample_cli_refuses_bad_ss_options(ss_checkpoint, tmp_path, capsys, extra, needle):
    base = ["protein", "sample", "--checkpoint", str(ss_checkpoint), "--steps", "2", "--out", str(tmp_path / "o")]
    assert main([*base, *extra]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_ss_request_with_a_motif_scaffold_covers_the_motif_and_holds_it(ss_checkpoint, tmp_path):
    """--ss with a fixed-length one-chain contig: letter i is residue i of the design, motif
    residues included; the motif is still held exactly, and the request is recorded."""
    from diffsci.benchmarks.motif_bench import score_design, write_motif_file
    from diffsci.protein.design.contig import load_motif

    ch = load_dataset(bundled_dataset_path()).chain(0)
    motif = load_motif(write_motif_file(ch, tmp_path / "m.pdb"))
    r = ch.res_ids
    spec = "L2E8L4H12L4E8L2"  # 40 residues; the 12 motif residues are the H segment
    bundle = load_model(ss_checkpoint)
    (d,) = sample_backbones(bundle, DesignRequest(lengths=[], num=1, steps=3, motif=motif, contig=f"14/A{r[5]}-{r[16]}/14", ss=spec), progress=False)
    assert d.coords.shape == (1, 40, 4, 3) and list(d.motif_index) == list(range(14, 26))
    assert d.ss == "LL" + "E" * 8 + "LLLL" + "H" * 12 + "LLLL" + "E" * 8 + "LL" and d.strand_restraints == 1.0  # a strand: restraints on
    assert score_design(d.coords[0], d.motif_index, d.motif_coords)["motif_rmsd"] < 0.1
    (plain,) = sample_backbones(bundle, DesignRequest(lengths=[], num=1, steps=3, motif=motif, contig=f"14/A{r[5]}-{r[16]}/14"), progress=False)
    assert plain.ss is None and not np.allclose(plain.coords, d.coords)  # the request reached the network
    with pytest.raises(DiffsciError, match="one designed chain only"):
        sample_backbones(bundle, DesignRequest(lengths=[], num=1, steps=2, motif=motif, contig=f"A{r[5]}-{r[16]}/0 40", ss="L52"), progress=False)
    with pytest.raises(DiffsciError, match="ss prior: not with a contig"):
        sample_backbones(bundle, DesignRequest(lengths=[], num=1, steps=2, contig="40", ss="prior"), progress=False)


def test_motif_ss_mismatches_compare_the_request_with_the_motif_files_dssp(ss_checkpoint, tmp_path, capsys):
    from diffsci.benchmarks.motif_bench import write_motif_file
    from diffsci.protein.design.contig import load_motif
    from diffsci.protein.design.sampling import motif_ss_mismatches

    ch = load_dataset(bundled_dataset_path()).chain(0)
    labels = "".join("L" if c == "-" else c for c in dssp_labels(ch.coords))
    start = labels.find("H" * 12)  # a 12-residue helix of the chain, in its own structure
    assert start > 0
    path = write_motif_file(ch, tmp_path / "m.pdb")
    r = ch.res_ids
    contig = f"14/A{r[start]}-{r[start + 11]}/14"
    motif = load_motif(path)
    assert motif_ss_mismatches(motif, contig, "L2E8L4H12L4E8L2") == []
    bad = motif_ss_mismatches(motif, contig, "L2E8L4E12L4E8L2")
    assert bad == [(f"A{r[start + i]}", "E", "H") for i in range(12)]
    # the CLI says so before sampling (and samples: the request is the user's to make)
    out = tmp_path / "o"
    assert main(["protein", "sample", "--checkpoint", str(ss_checkpoint), "--motif", str(path), "--contig", contig,
                 "--ss", "L2E8L4E12L4E8L2", "--steps", "2", "--quiet", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "note: --ss asks 12 motif residue(s) for another class" in err and f"A{r[start]} E (DSSP H)" in err
    assert json.loads((out / "motif_000.json").read_text())["ss"][14:26] == "E" * 12


def test_ss_refused_for_a_checkpoint_without_ss_conditioning(tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["protein", "sample", "--checkpoint", "v1", "--ss", "L2E8L3E8L3H16L2", "--steps", "2",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--ss: checkpoint" in err and "not trained with secondary-structure conditioning" in err
    assert "(load_model(), no --checkpoint;" in err  # the remedy is not rewritten into option names
    assert not out.exists()
    with pytest.raises(DiffsciError, match="^ss: checkpoint .* not trained with secondary-structure conditioning"):
        sample_backbones(load_model("v1"), DesignRequest(lengths=[42], num=1, steps=2, ss="L2E8L3E8L3H16L2"),
                         progress=False)
    # the shipped checkpoint itself serves the request
    assert main(["protein", "sample", "--ss", "L2E8L3E8L3H16L2", "--steps", "2", "--quiet", "--out", str(out)]) == 0


def test_ss_recipe_warm_starts_the_v1_net_with_only_the_ss_options_changed():
    from diffsci.core.checkpoint import load_bundle
    from diffsci.core.utils import load_config_file
    from diffsci.protein.model.diffusion import v1_checkpoint

    recipe_file = Path(__file__).parents[1] / "protein" / "data" / "ss_train.json"
    recipe = Recipe.from_tables(KIND, load_config_file(recipe_file), data={"path": str(bundled_dataset_path())},
                                init=str(v1_checkpoint("v1")))
    shipped = load_bundle(v1_checkpoint("v1"), KIND).config
    assert recipe.model.net == dataclasses.replace(shipped.net, ss_conditioning=True)
    changed = {k for k, v in to_dict(recipe.model).items() if v != to_dict(shipped)[k]}
    assert changed == {"net", "strand_power"}  # the dropout rates: the defaults the shipped config migrates to
    assert 0.2 <= recipe.model.ss_drop <= 0.5 and recipe.init == str(v1_checkpoint("v1"))


def test_shipped_ss_checkpoint_is_named_ss_and_honours_a_helix_request(tmp_path):
    """``--checkpoint ss`` (an alias of the shipped file, which is SS-conditioned); a 20-step
    all-helix request at L = 40 gives mostly DSSP helix."""
    from diffsci.protein.metrics import dssp_labels
    from diffsci.protein.design.sampling import load_model
    from diffsci.protein.model.diffusion import shipped_checkpoint

    lm = load_model("ss")
    assert lm.config.net.ss_conditioning and lm.source == str(shipped_checkpoint())
    out = tmp_path / "h"
    assert main(["protein", "sample", "--checkpoint", "ss", "--ss", "L2H36L2", "--num", "1", "--steps", "20",
                 "--out", str(out), "--quiet"]) == 0
    rec = json.loads((out / "len40_000.json").read_text())
    assert rec["ss"] == "LL" + "H" * 36 + "LL"
    from diffsci.protein.metrics import read_samples

    (sample,) = read_samples(out)[0]
    labels = dssp_labels(sample.coords)
    assert np.mean(labels[2:38] == "H") >= 0.5

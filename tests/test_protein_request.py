"""The design request (validated once) and the builder (one list of conditioners)."""

import dataclasses

import numpy as np
import pytest
import torch

from diffsci.core.cli import main
from diffsci.core.errors import DiffsciError
from diffsci.core.utils import make_generator
from diffsci.protein.design import builder
from diffsci.protein.design.builder import (
    BuildContext,
    DesignInputs,
    SamplerSettings,
    Stage,
    build_stage,
    sample_states,
)
from diffsci.protein.design.contig import load_motif
from diffsci.protein.design.request import SS_PRIOR, DesignRequest
from diffsci.protein.design.sampling import load_model, sample_backbones
from diffsci.protein.io.dataset import bundled_dataset_path
from diffsci.protein.model.diffusion import SelfConditioned
from diffsci.protein.sample_cmd import _as_options


def test_an_ss_request_sets_the_length_and_the_request_is_frozen():
    r = DesignRequest(ss="L5H50L5", num=2)
    assert r.lengths == (60,) and r.ss_lengths_match and not r.has_strand_request
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.num = 3
    assert DesignRequest(lengths=[60, 70]).lengths == (60, 70)  # a list is kept as a tuple


@pytest.mark.parametrize("kw, needle", [
    (dict(), "give at least one length"),
    (dict(lengths=[60], contig="40"), "lengths cannot be combined with a contig"),
    (dict(lengths=[60], ss_pairs="1-2:A"), "ss_pairs needs ss"),
    (dict(lengths=[60], guidance_scale=2.0), "guidance_scale needs ss"),
    (dict(lengths=[60], strand_restraints=0.5), "strand_restraints needs ss"),
    (dict(lengths=[60], ss=SS_PRIOR, symmetry="C2"), "single-chain designs only"),
    (dict(ss=SS_PRIOR), "ss prior needs a length"),
    (dict(lengths=[40], ss="L2E8L3E8L19", strand_restraints=1.0, symmetry="C2"), "cannot be combined with symmetry"),
    (dict(lengths=[60], symmetry="D3"), "symmetry 'D3'"),
    (dict(lengths=[60], steps=0), "steps must be"),
    (dict(lengths=[60], total_length="80-120"), "total_length applies to contig designs"),
])
def test_the_request_refuses_what_does_not_go_together(kw, needle):
    with pytest.raises(DiffsciError, match=needle):
        DesignRequest(**kw)


def test_a_motif_file_with_a_contig_that_names_none_of_it_is_refused(motif_file, tmp_path, capsys):
    """Issue 27 item 11: --motif FILE --contig '[79-79]' wrote unconditional designs with
    motif_file: null and no word."""
    motif = load_motif(motif_file)
    with pytest.raises(DiffsciError, match="names none of its residues"):
        DesignRequest(contig="[79-79]", motif=motif)
    out = tmp_path / "o"
    code = main(["protein", "sample", "--motif", str(motif_file), "--contig", "[79-79]", "--steps", "2",
                 "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "names none of its residues" in err and not out.exists()
    DesignRequest(contig="[79-79]")  # without a motif the contig is a plain design of 79 residues


def test_the_command_names_its_options_in_a_refusal():
    assert _as_options("ss_pairs needs ss (the E segments it numbers)") == "--ss-pairs needs --ss (the E segments it numbers)"
    assert _as_options("--ss 'L10': bad") == "--ss 'L10': bad"  # already an option: left alone
    assert _as_options("guidance_scale must lie in [0, 100]") == "--guidance-scale must lie in [0, 100]"
    assert _as_options("the class of a residue") == "the class of a residue"  # 'ss' only as a word


def test_checked_request_fills_in_what_the_checkpoint_decides(tiny_checkpoint):
    lm = load_model(tiny_checkpoint)
    c = DesignRequest(lengths=[40], steps=10).against(lm.config, lm.source)
    assert c.sampler == "renoise" and c.rotation_rate == lm.config.inference_rate and c.strand_restraints == 0.0
    c = DesignRequest(lengths=[40], steps=30, sampler="euler", rotation_rate=2.0).against(lm.config, lm.source)
    assert (c.sampler, c.rotation_rate) == ("euler", 2.0)
    with pytest.raises(DiffsciError, match="not trained with secondary-structure conditioning"):
        DesignRequest(lengths=[40], ss="L40").against(lm.config, lm.source)


def test_churn_is_the_checkpoints_default_for_flow_euler_and_refused_where_no_step_takes_it(tiny_checkpoint):
    lm = load_model(tiny_checkpoint)
    assert lm.config.formulation == "flow" and lm.config.inference_rate != 1.0 and lm.config.churn == 0.0
    assert DesignRequest(lengths=[40], steps=30).against(lm.config, lm.source).churn == 0.0  # its own: none
    cfg = dataclasses.replace(lm.config, churn=30.0, churn_tmax=0.6)
    check = lambda **kw: DesignRequest(lengths=[40], **kw).against(cfg, lm.source)  # noqa: E731
    assert (check(steps=30).churn, check(steps=30).churn_tmax) == (30.0, 0.6)  # euler at the checkpoint's rate
    assert check(steps=30, churn_tmax=0.2).churn_tmax == 0.2
    assert check(steps=10).churn == 0.0 and check(steps=10).churn_tmax is None  # renoise, the few-step default
    assert check(steps=30, rotation_rate=1.0).churn == 0.0  # the exact rotation flow has no renoising
    assert check(steps=30, churn=0).churn == 0.0 and check(steps=30, churn=12.5).churn == 12.5
    with pytest.raises(DiffsciError, match="sampler renoise takes no churn"):
        check(steps=30, sampler="renoise", churn=5)
    with pytest.raises(DiffsciError, match="rotation_rate 1"):
        check(steps=30, rotation_rate=1.0, churn=5)
    for bad in ({"churn": -1}, {"churn_tmax": 0}, {"churn_tmax": 1.5}):
        with pytest.raises(DiffsciError, match="churn"):
            DesignRequest(lengths=[40], **bad)
    assert _as_options("churn_tmax must lie in (0, 1]") == "--churn-tmax must lie in (0, 1]"


def test_churn_is_recorded_and_changes_the_design_only_where_it_acts(tiny_checkpoint, tmp_path):
    import csv
    import json

    runs = {}
    for name, extra in (("plain", []), ("churn", ["--churn", "30"]), ("late", ["--churn", "30", "--churn-tmax", "0.001"])):
        out = tmp_path / name
        assert main(["protein", "sample", "--checkpoint", str(tiny_checkpoint), "--length", "40", "--steps", "25",
                     "--seed", "2", "--potentials", "none", "--out", str(out), "--quiet", *extra]) == 0
        rec = json.loads((out / "len40_000.json").read_text())
        row = next(csv.DictReader((out / "samples.csv").open()))
        runs[name] = (rec, row, (out / "len40_000.pdb").read_text().split("\nATOM")[1:])
    assert (runs["plain"][0]["churn"], runs["plain"][0]["churn_tmax"]) == (0.0, None)
    assert (runs["churn"][0]["churn"], runs["churn"][0]["churn_tmax"]) == (30.0, 0.7)  # the checkpoint's tmax
    assert runs["churn"][1]["churn"] == "30.0" and runs["plain"][2] != runs["churn"][2]
    # no step of the grid (0.999 u^2) lies at t <= 0.001 but the last one, which goes to 0: the plain ODE
    assert runs["late"][0]["churn_tmax"] == 0.001 and runs["late"][2] == runs["plain"][2]


def _ctx(lm, inputs, batch=1):
    from diffsci.protein.design.builder import _cond
    from diffsci.protein.model.diffusion import build_space

    cond = _cond(inputs, batch, torch.device("cpu"))
    return BuildContext(lm, build_space(lm.config, cond.mask), cond, inputs, make_generator(0, "t"))


def test_a_plain_design_gets_the_bare_model_and_no_constraint(tiny_checkpoint):
    lm = load_model(tiny_checkpoint)
    stage = build_stage(_ctx(lm, DesignInputs(40)))
    assert stage.constraint is None
    assert isinstance(stage.denoise, SelfConditioned) == bool(lm.config.net.self_condition)
    sym = build_stage(_ctx(lm, DesignInputs(3 * 40, n_chains=3)))
    assert sym.constraint is not None and not isinstance(sym.denoise, type(stage.denoise))  # symmetrised prediction


def test_a_new_conditioner_enters_through_the_list(tiny_checkpoint, monkeypatch):
    """A potential on the clean prediction is one more entry of CONDITIONERS: here one that moves
    every predicted CA by +1 nm in x. Sampling with it gives other states; removing it gives the
    same states as before; the symmetry constraint still makes exact copies after it."""
    lm = load_model(tiny_checkpoint)
    settings, gen = SamplerSettings("euler", 4), lambda: make_generator(1, "t")
    inputs = DesignInputs(2 * 40, n_chains=2)
    base = sample_states(lm, inputs, settings, gen())

    def shift(stage: Stage, ctx: BuildContext) -> Stage:
        def denoise(x, t, cond):
            trans, rots = stage.denoise(x, t, cond)
            return trans + torch.tensor([1.0, 0.0, 0.0]), rots
        return Stage(denoise, stage.constraint)

    monkeypatch.setattr(builder, "CONDITIONERS", [*builder.CONDITIONERS, ("shift", shift)])
    moved = sample_states(lm, inputs, settings, gen())
    assert not torch.allclose(base[0], moved[0])
    a, b = moved[0][0, :40], moved[0][0, 40:]
    rz = torch.tensor([[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]])  # C2 about z
    torch.testing.assert_close(b, a @ rz.T, atol=1e-4, rtol=0)
    monkeypatch.setattr(builder, "CONDITIONERS", [c for c in builder.CONDITIONERS if c[0] != "shift"])
    again = sample_states(lm, inputs, settings, gen())
    torch.testing.assert_close(again[0], base[0], atol=0, rtol=0)


def test_sample_backbones_takes_a_request_only(tiny_checkpoint):
    lm = load_model(tiny_checkpoint)
    with pytest.raises(DiffsciError, match="must be a DesignRequest"):
        sample_backbones(lm, [40])
    (d,) = sample_backbones(lm, DesignRequest(lengths=[40], steps=2), progress=False)
    assert d.coords.shape == (1, 40, 4, 3) and np.isfinite(d.coords).all()


def test_total_length_counts_the_designed_chains_only(motif_file, tiny_checkpoint, tmp_path):
    """Issue 27 item 12: RFdiffusion's contigmap.length bounds the diffused chains; a fixed target
    chain does not count. [A5-30/0 40-80] with total length 50-52: the binder has 50..52 residues
    (counting the 26 target residues too, the old reading, this was 'can never fit')."""
    from diffsci.protein.design.contig import contig_length_limits, fixed_residues, parse_contig, resolve_contig

    motif = load_motif(motif_file)
    plan = resolve_contig(parse_contig("[A5-30/0 40-80]"), motif)
    assert fixed_residues(plan) == 26
    assert contig_length_limits(plan, (50, 52)) == (76, 78)  # every residue of the design: 26 fixed + 50..52
    assert contig_length_limits(plan) == (66, 106)
    with pytest.raises(DiffsciError, match=r"designed chains have 40\.\.80 residues \(fixed chains, 26 residues, "
                                           r"do not count\), which can never fit --total-length 90-100"):
        contig_length_limits(plan, (90, 100))
    # a chain with a motif segment and a scaffold segment counts whole, motif included (as RFdiffusion)
    plan = resolve_contig(parse_contig("10-40/A5-20/10-40"), motif)
    assert fixed_residues(plan) == 0 and contig_length_limits(plan, (50, 60)) == (50, 60)
    lm = load_model(tiny_checkpoint)
    designs = sample_backbones(lm, DesignRequest(contig="[A5-30/0 40-80]", motif=motif, total_length="50-52", num=3,
                                                 steps=2), progress=False)
    assert all(50 <= d.chain_lengths[0] <= 52 and d.chain_lengths[1] == 26 for d in designs)


def test_a_design_longer_than_the_training_crops_gets_one_warning_line(tiny_checkpoint, tmp_path, capsys):
    """Issue 29, length honesty: the tiny checkpoint was trained on crops of at most 32 residues."""
    lm = load_model(tiny_checkpoint)
    assert lm.config.max_length == 32
    c = DesignRequest(lengths=[40], steps=2).against(lm.config, lm.source)
    assert len(c.warnings) == 1 and "up to 40 residues" in c.warnings[0] and "at most 32 residues" in c.warnings[0]
    assert "40 x 2 copies = 80" in DesignRequest(lengths=[40], symmetry="C2").against(lm.config, lm.source).warnings[0]
    with pytest.warns(UserWarning, match="at most 32 residues"):
        sample_backbones(lm, DesignRequest(lengths=[40], steps=2), progress=False)
    code = main(["protein", "sample", "--checkpoint", str(tiny_checkpoint), "--length", "40", "--steps", "2",
                 "--quiet", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 0 and [line for line in err.splitlines() if line.startswith("warning:")] == [
        f"warning: {c.warnings[0]}"]
    shipped = load_model()
    assert DesignRequest(lengths=[100]).against(shipped.config, shipped.source).warnings == ()


def test_every_protein_command_refuses_a_bad_out_before_any_work(motif_file, tmp_path, capsys):
    """core.io.check_output_path in prepare, train, evaluate and sample: one line, exit 2."""
    afile = tmp_path / "a_file.txt"
    afile.write_text("x")
    cases = [
        (["protein", "prepare", str(motif_file), "--out", str(motif_file)], "is the input"),
        (["protein", "train", "--data", str(bundled_dataset_path()), "--out", str(afile), "--steps", "1"],
         "exists and is not a folder"),
        (["protein", "evaluate", str(tmp_path), "--out", str(tmp_path / "no" / "m.json")], "does not exist"),
        (["protein", "sample", "--length", "40", "--out", str(afile)], "exists and is not a folder"),
    ]
    for argv, needle in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert needle in err and err.count("\n") == 1, (argv, err)
    assert afile.read_text() == "x" and motif_file.stat().st_size > 0

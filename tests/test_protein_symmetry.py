"""Symmetric oligomers: the groups, the symmetrising projection, the symmetric starting noise,
the copies kept off the axes, and designs whose copies are exact copies."""

import itertools
import json
import math

import numpy as np
import pytest
import torch

from diffsci.core.cli import main
from diffsci.core.errors import DiffsciError
from diffsci.core.schedules import FlowMatching
from diffsci.core.spaces import EuclideanCoM, Product, SO3Flow
from diffsci.core.utils import make_generator
from diffsci.protein.design import builder
from diffsci.protein.design.builder import BuildContext, DesignInputs, SamplerSettings, _cond, sample_states
from diffsci.protein.design.request import DesignRequest, symmetry_order
from diffsci.protein.design.sampling import load_model, sample_backbones
from diffsci.protein.design.symmetry import (SymmetryGroup, copy_spacing, expected_rg, min_copy_spacing,
                                             parse_symmetry, placement, symmetric_prior, symmetrise)
from diffsci.protein.io.structure import read_structure_chains
from diffsci.protein.model.diffusion import build_space

NAMES = [f"C{n}" for n in range(2, 13)] + ["D2"]
FLOW = Product((EuclideanCoM(FlowMatching()), SO3Flow()))


def _random_rotations(shape, gen):
    q, r = torch.linalg.qr(torch.randn(*shape, 3, 3, generator=gen, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[..., None, :]
    return q * torch.sign(torch.linalg.det(q))[..., None, None]


def _symmetric_state(group, L, gen, b=2, offset=None):
    """A state built as copies: chain 0 random (its centre at ``offset``), chain k = g_k chain 0."""
    ops = group.operators()
    sub = torch.randn(b, L, 3, generator=gen, dtype=torch.float64)
    if offset is not None:
        sub = sub - sub.mean(1, keepdim=True) + offset
    rot = _random_rotations((b, L), gen)
    trans = torch.einsum("kij,blj->bkli", ops, sub).reshape(b, -1, 3)
    rots = torch.einsum("kij,bljm->bklim", ops, rot).reshape(b, -1, 3, 3)
    return trans, rots


def _is_symmetric(group, x, L, atol):
    """Chain k equals g_k applied to chain 0 (CA positions and frames)."""
    trans, rots = x
    b, n = trans.shape[0], group.order
    ops = group.operators(trans.dtype)
    t, r = trans.reshape(b, n, L, 3), rots.reshape(b, n, L, 3, 3)
    torch.testing.assert_close(t, torch.einsum("kij,blj->bkli", ops, t[:, 0]), atol=atol, rtol=0)
    torch.testing.assert_close(r, torch.einsum("kij,bljm->bklim", ops, r[:, 0]), atol=atol, rtol=0)


# ---------------------------------------------------------------------------------- the groups
@pytest.mark.parametrize("name", NAMES)
def test_the_operators_are_rotations_and_form_a_group(name):
    g = SymmetryGroup(name)
    ops = g.operators()
    assert ops.shape == (g.order, 3, 3)
    eye = torch.eye(3, dtype=torch.float64)
    torch.testing.assert_close(ops[0], eye, atol=1e-15, rtol=0)
    torch.testing.assert_close(ops.transpose(-1, -2) @ ops, eye.expand_as(ops), atol=1e-12, rtol=0)
    torch.testing.assert_close(torch.linalg.det(ops), torch.ones(g.order, dtype=torch.float64), atol=1e-12, rtol=0)
    flat = ops.reshape(g.order, 9)
    assert torch.cdist(flat, flat).add(torch.eye(g.order, dtype=torch.float64)).min() > 0.1  # all distinct
    for a, b in itertools.product(range(g.order), repeat=2):  # closure: every product is an operator
        assert torch.cdist((ops[a] @ ops[b]).reshape(1, 9), flat).min() < 1e-12, (a, b)
    for a in range(g.order):  # inverses
        assert torch.cdist(ops[a].T.reshape(1, 9), flat).min() < 1e-12


def test_the_operators_are_the_named_rotations():
    n = 6
    c, s = math.cos(2 * math.pi / n), math.sin(2 * math.pi / n)
    rz = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    ops = SymmetryGroup("C6").operators()
    for k in range(n):
        torch.testing.assert_close(ops[k], torch.linalg.matrix_power(rz, k), atol=1e-12, rtol=0)
    d2 = SymmetryGroup("D2").operators()
    want = [torch.diag(torch.tensor(v, dtype=torch.float64)) for v in ([1, 1, 1], [-1, -1, 1], [1, -1, -1],
                                                                        [-1, 1, -1])]
    torch.testing.assert_close(d2, torch.stack(want), atol=1e-12, rtol=0)


@pytest.mark.parametrize("name", ["C1", "C13", "D3", "T", "c0", "C", "I", "D2x"])
def test_other_symmetries_are_refused_in_one_line_naming_what_is_offered(name):
    with pytest.raises(DiffsciError) as err:
        parse_symmetry(name)
    msg = str(err.value)
    assert msg.startswith(f"symmetry {name!r}: offered are C2 to C12") and "D2" in msg and "\n" not in msg
    assert parse_symmetry("c7") == SymmetryGroup("C7") and parse_symmetry(None) is None and parse_symmetry("") is None


@pytest.mark.parametrize("name", ["C1", "C13", "D3", "T"])
def test_the_request_refuses_other_symmetries(name):
    with pytest.raises(DiffsciError, match=f"symmetry {name!r}: offered are C2 to C12"):
        DesignRequest(lengths=[40], symmetry=name)


@pytest.mark.parametrize("name", ["C1", "C13", "D3", "T"])
def test_the_cli_refuses_other_symmetries_with_exit_2(tiny_checkpoint, tmp_path, capsys, name):
    code = main(["protein", "sample", "--checkpoint", str(tiny_checkpoint), "--length", "40", "--symmetry", name,
                 "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and f"symmetry {name!r}: offered are C2 to C12" in err and "D2" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


def test_the_request_reads_the_group():
    r = DesignRequest(lengths=[40], symmetry="d2")
    assert (r.symmetry, r.group, r.n_copies) == ("D2", SymmetryGroup("D2"), 4)
    assert DesignRequest(lengths=[40], symmetry="c12").n_copies == 12 and DesignRequest(lengths=[40]).group is None
    assert [symmetry_order(s) for s in (None, "", "C2", "C12", "D2")] == [1, 1, 2, 12, 4]


# ----------------------------------------------------------------------------- symmetrise
@pytest.mark.parametrize("name", ["C2", "C3", "C6", "C12", "D2"])
def test_symmetrise_is_an_idempotent_projection_exact_on_symmetric_states(name):
    g, L, gen = SymmetryGroup(name), 7, torch.Generator().manual_seed(0)
    sym = _symmetric_state(g, L, gen)
    again = symmetrise(g, sym)
    torch.testing.assert_close(again[0], sym[0], atol=1e-12, rtol=0)
    torch.testing.assert_close(again[1], sym[1], atol=1e-12, rtol=0)
    n = g.order
    x = (torch.randn(2, n * L, 3, generator=gen, dtype=torch.float64), _random_rotations((2, n * L), gen))
    once = symmetrise(g, x)
    _is_symmetric(g, once, L, atol=1e-12)
    twice = symmetrise(g, once)
    torch.testing.assert_close(twice[0], once[0], atol=1e-12, rtol=0)
    torch.testing.assert_close(twice[1], once[1], atol=1e-12, rtol=0)
    # translations: the orthogonal projection onto symmetric states (the residual is orthogonal to them)
    assert abs(float(((x[0] - once[0]) * sym[0]).sum())) < 1e-9
    # the old builder entry point is the C<n> constraint
    if name.startswith("C"):
        torch.testing.assert_close(builder.cyclic_constraint(n)(x, 0.5)[0], once[0], atol=1e-12, rtol=0)


@pytest.mark.parametrize("name", ["C2", "C6", "C12", "D2"])
def test_copies_stacked_on_the_axis_are_moved_out_to_the_minimum_spacing(name):
    """A prediction whose copies all sit near the origin (their centres 0.1 Å off the axes) comes
    back symmetric with neighbouring centres exactly ``min_spacing`` apart; copies already that
    far apart are left where they are."""
    g, L, gen = SymmetryGroup(name), 9, torch.Generator().manual_seed(1)
    d = 20.0
    stacked = _symmetric_state(g, L, gen, offset=torch.tensor([0.1, 0.05, 0.02], dtype=torch.float64))
    out = symmetrise(g, stacked, min_spacing=d)
    _is_symmetric(g, out, L, atol=1e-12)
    centre = out[0][:, :L].mean(1)
    torch.testing.assert_close(copy_spacing(g, centre), torch.full((2,), d, dtype=torch.float64), atol=1e-9, rtol=0)
    moved = out[0][:, :L] - stacked[0][:, :L]  # one rigid shift of chain 0
    torch.testing.assert_close(moved, moved[:, :1].expand_as(moved), atol=1e-12, rtol=0)
    torch.testing.assert_close(out[1], symmetrise(g, stacked)[1], atol=1e-12, rtol=0)  # frames untouched
    if name.startswith("C"):  # moved straight out from z: z kept
        torch.testing.assert_close(moved[..., 2], torch.zeros_like(moved[..., 2]), atol=1e-12, rtol=0)
    apart = _symmetric_state(g, L, gen, offset=2 * placement(g, 40))
    assert float(copy_spacing(g, apart[0][:, :L].mean(1)).min()) > d
    torch.testing.assert_close(symmetrise(g, apart, min_spacing=d)[0], apart[0], atol=1e-12, rtol=0)
    on_axis = _symmetric_state(g, L, gen, offset=torch.zeros(3, dtype=torch.float64))  # exactly on it
    centre = symmetrise(g, on_axis, min_spacing=d)[0][:, :L].mean(1)
    torch.testing.assert_close(copy_spacing(g, centre), torch.full((2,), d, dtype=torch.float64), atol=1e-9, rtol=0)


# --------------------------------------------------------------------------- the starting noise
@pytest.mark.parametrize("name", ["C2", "C6", "C12", "D2"])
def test_the_symmetric_prior_is_one_subunits_noise_placed_off_the_axes(name):
    """The starting state: chain 0's part of the plain prior (same generator), centred, moved to
    where neighbouring copies' centres are 2 Rg apart, and copied. Cn: chain 0's centre at
    Rg / sin(pi / n) on x; D2: at s (1, 1, 1), s = 2 Rg / (2 sqrt 2), a regular tetrahedron of
    copies. Every pair of copies is at least 2 Rg apart (the copies are apart as bodies; the
    noise spreads ~10 Å per coordinate, so CA clouds of neighbours still interleave)."""
    g, L, b = SymmetryGroup(name), 60, 3
    n = g.order
    like = (torch.zeros(b, n * L, 3), torch.eye(3).expand(b, n * L, 3, 3).clone())
    trans, rots = symmetric_prior(g, FLOW, like, torch.Generator().manual_seed(5))
    assert trans.shape == (b, n * L, 3) and rots.shape == (b, n * L, 3, 3) and trans.dtype == torch.float32
    _is_symmetric(g, (trans.double(), rots.double()), L, atol=1e-5)
    plain_t, plain_r = FLOW.prior(like, torch.Generator().manual_seed(5))
    sub = plain_t[:, :L] - plain_t[:, :L].mean(1, keepdim=True)
    rg = expected_rg(L)
    if name == "D2":
        want = torch.full((3,), 2 * rg / (2 * math.sqrt(2)), dtype=torch.float64)
    else:
        want = torch.tensor([rg / math.sin(math.pi / n), 0.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(placement(g, L), want, atol=1e-9, rtol=0)
    torch.testing.assert_close(trans[:, :L], sub + want.float() / 10, atol=1e-5, rtol=0)  # nm
    torch.testing.assert_close(rots[:, :L], plain_r[:, :L], atol=0, rtol=0)
    centres = trans.double().reshape(b, n, L, 3).mean(2) * 10  # Å
    torch.testing.assert_close(centres.mean(1), torch.zeros(b, 3, dtype=torch.float64), atol=1e-5, rtol=0)  # CoM 0
    gaps = torch.cdist(centres, centres) + 1e9 * torch.eye(n, dtype=torch.float64)
    assert float(gaps.min()) >= 2 * rg * (1 - 1e-5)
    torch.testing.assert_close(copy_spacing(g, centres[:, 0]), torch.full((b,), 2 * rg, dtype=torch.float64),
                               atol=1e-4, rtol=0)
    if name == "D2":  # tetrahedron: all six pairs 2 Rg apart
        torch.testing.assert_close(gaps.min(-1).values, torch.full((b, n), 2 * rg, dtype=torch.float64),
                                   atol=1e-4, rtol=0)


def test_a_state_that_is_not_equal_chains_or_a_group_of_another_order_is_refused(tiny_checkpoint):
    g = SymmetryGroup("C3")
    with pytest.raises(DiffsciError, match="not 3 equal chains"):
        symmetrise(g, (torch.zeros(1, 10, 3), torch.eye(3).expand(1, 10, 3, 3)))
    lm = load_model(tiny_checkpoint)
    inputs = DesignInputs(4 * 40, n_chains=4)
    cond = _cond(inputs, 1, torch.device("cpu"))
    ctx = BuildContext(lm, build_space(lm.config, cond.mask), cond, inputs, make_generator(0, "t"))
    assert ctx.symmetry == SymmetryGroup("C4")  # old callers: n chains are Cn
    with pytest.raises(DiffsciError, match="symmetry C3: 3 copies, but the design has 4 chains"):
        BuildContext(lm, build_space(lm.config, cond.mask), cond, inputs, make_generator(0, "t"), g)


# ------------------------------------------------------------------------------------ designs
def test_a_c6_design_has_exact_copies_kept_apart(tiny_checkpoint):
    """C6 with the tiny model, the network alone: the six chains are exact copies, rotated by
    2 pi k / 6 about z, and their centres are at least min_copy_spacing apart."""
    lm = load_model(tiny_checkpoint)
    (d,) = sample_backbones(lm, DesignRequest(lengths=[40], num=1, steps=6, symmetry="C6", potentials="none"),
                            progress=False)
    assert d.coords.shape == (6, 40, 4, 3) and d.symmetry == "C6"
    ops = SymmetryGroup("C6").operators().numpy()
    for k in range(6):  # every atom, the last O included
        np.testing.assert_allclose(d.coords[0] @ ops[k].T, d.coords[k], atol=1e-3)
    centres = d.coords[:, :, 1].mean(1)
    gaps = np.linalg.norm(centres[:, None] - centres[None], axis=-1) + 1e9 * np.eye(6)
    assert gaps.min() >= min_copy_spacing(40) - 1e-3


def test_a_prediction_that_stacks_the_copies_is_moved_out_before_the_potentials(tiny_checkpoint, monkeypatch):
    """A network that predicts every copy at the origin (here: its prediction shrunk 100-fold
    before the symmetry conditioner): the design's copies end exactly min_copy_spacing apart,
    and the potentials (after the symmetry conditioner) saw symmetric, moved-out predictions."""
    lm = load_model(tiny_checkpoint)
    g, L = SymmetryGroup("C6"), 40
    seen = []

    def stack(stage, ctx):
        def denoise(x, t, cond):
            trans, rots = stage.denoise(x, t, cond)
            return trans * 0.01, rots
        return builder.Stage(denoise, stage.constraint)

    def spy(stage, ctx):  # where the potentials sit: sees what they would relax
        def denoise(x, t, cond):
            out = stage.denoise(x, t, cond)
            seen.append(out)
            return out
        return builder.Stage(denoise, stage.constraint)

    names = [c[0] for c in builder.CONDITIONERS]
    assert names.index("symmetry") < names.index("potentials")
    spied = [("stack", stack)] + [c for c in builder.CONDITIONERS if c[0] != "potentials"]
    spied.insert(names.index("potentials") + 1, ("spy", spy))
    monkeypatch.setattr(builder, "CONDITIONERS", spied)
    trans, rots = sample_states(lm, DesignInputs(6 * L, n_chains=6), SamplerSettings("euler", 4),
                                make_generator(2, "t"), symmetry=g)
    want = torch.tensor([min_copy_spacing(L) / 10])  # nm
    for x0 in seen:
        _is_symmetric(g, (x0[0].double(), x0[1].double()), L, atol=1e-5)
        torch.testing.assert_close(copy_spacing(g, x0[0][:, :L].mean(1)), want, atol=1e-5, rtol=0)
    torch.testing.assert_close(copy_spacing(g, trans[:, :L].mean(1)), want, atol=1e-5, rtol=0)


def test_the_states_start_from_the_placed_noise(tiny_checkpoint, monkeypatch):
    """sample_states with a group: the first state the denoiser sees is the symmetric prior."""
    lm = load_model(tiny_checkpoint)
    g, L = SymmetryGroup("D2"), 40
    inputs = DesignInputs(4 * L, n_chains=4)
    seen = []

    def record(stage, ctx):
        def denoise(x, t, cond):
            seen.append(x)
            return stage.denoise(x, t, cond)
        return builder.Stage(denoise, stage.constraint)

    monkeypatch.setattr(builder, "CONDITIONERS", [("record", record), *builder.CONDITIONERS])
    sample_states(lm, inputs, SamplerSettings("euler", 2), make_generator(3, "t"), symmetry=g)
    cond = _cond(inputs, 1, torch.device("cpu"))
    like = (torch.zeros(1, 4 * L, 3), torch.eye(3).expand(1, 4 * L, 3, 3).clone())
    start = symmetric_prior(g, build_space(lm.config, cond.mask), like, make_generator(3, "t"))
    torch.testing.assert_close(seen[0][0], start[0], atol=1e-6, rtol=0)  # (the sampler symmetrises it once more)
    torch.testing.assert_close(seen[0][1], start[1], atol=1e-6, rtol=0)


def test_a_d2_design_from_the_command_line(tiny_checkpoint, tmp_path):
    out = tmp_path / "d2"
    assert main(["protein", "sample", "--checkpoint", str(tiny_checkpoint), "--length", "40", "--symmetry", "d2",
                 "--steps", "4", "--potentials", "none", "--out", str(out), "--quiet"]) == 0
    chains = read_structure_chains(out / "len40_000.pdb", max_ca_distance=1e9)
    assert [c.chain_id for c in chains] == ["A", "B", "C", "D"]
    ops = SymmetryGroup("D2").operators().numpy()
    for k in range(4):  # as written (3 decimals): within rounding
        np.testing.assert_allclose(chains[0].coords @ ops[k].T, chains[k].coords, atol=3e-3)
    assert json.loads((out / "len40_000.json").read_text())["symmetry"] == "D2"

"""Symmetric oligomers: the groups, the symmetrising projection, the symmetric starting noise,
the copies kept off the axes."""

import itertools
import math

import pytest
import torch

from diffsci.core.errors import DiffsciError
from diffsci.core.schedules import FlowMatching
from diffsci.core.spaces import EuclideanCoM, Product, SO3Flow
from diffsci.protein.design import builder
from diffsci.protein.design.symmetry import (SymmetryGroup, copy_spacing, expected_rg, parse_symmetry, placement,
                                             symmetric_prior, symmetrise)

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

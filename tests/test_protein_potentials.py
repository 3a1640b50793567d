"""Sampling-time potentials: each moves a broken or clashing trace toward validity, leaves a valid
one alone, has the gradient of its energy, and enters sampling through the builder."""

import json

import numpy as np
import pytest
import torch

from backbones import ideal_backbone
from diffsci.core.cli import main
from diffsci.core.errors import DiffsciError
from diffsci.protein.design.potentials import energy, parse_potentials, relax_ca
from diffsci.protein.design.request import DesignRequest
from diffsci.protein.design.sampling import load_model, sample_backbones
from diffsci.protein.metrics import between_chains, chain_breaks

STRAND = torch.as_tensor(ideal_backbone(30, -120.0, 130.0)[:, 1])  # (30, 3) Å, CA-CA 3.8 Å, no clash


def _one_chain(n):
    return torch.zeros(n, dtype=torch.long), torch.arange(n)


def test_parse_potentials():
    assert parse_potentials("connectivity:2, sterics") == (("connectivity", 2.0), ("sterics", 1.0))
    assert parse_potentials("none") == parse_potentials(None) == ()
    for bad, needle in (("glue", "unknown potential"), ("sterics:0", "weight must lie"), ("sterics:x", "not a number"),
                        ("sterics,sterics", "given twice")):
        with pytest.raises(DiffsciError, match=needle):
            parse_potentials(bad)


def test_the_gradient_is_the_energys():
    g = torch.Generator().manual_seed(0)
    x = (STRAND + 0.8 * torch.randn(STRAND.shape, generator=g, dtype=STRAND.dtype))[None].double()
    x[0, 15:] += torch.tensor([3.0, 0.0, 0.0], dtype=x.dtype)  # a break, and clashes folded in below
    x[0, 20:] = x[0, :10] + 1.0
    chain, res = _one_chain(30)
    terms = (("connectivity", 1.0), ("sterics", 0.5))
    from diffsci.protein.design.potentials import _pair_gradient, connectivity_pairs, steric_pairs
    bonds, (clash, d0) = connectivity_pairs(chain, res), steric_pairs(chain, res)
    grad = _pair_gradient(x, bonds, 3.65, 3.95)[1] + 0.5 * _pair_gradient(x, clash, d0, float("inf"))[1]
    y = x.clone().requires_grad_(True)
    energy(y, terms, chain, res).sum().backward()  # autograd as the independent reference
    torch.testing.assert_close(grad, y.grad, rtol=1e-9, atol=1e-9)


def test_a_valid_trace_is_left_alone():
    chain, res = _one_chain(30)
    out = relax_ca(STRAND[None], (("connectivity", 1.0), ("sterics", 1.0)), chain, res)
    assert torch.equal(out, STRAND[None])


def test_connectivity_mends_a_broken_chain():
    chain, res = _one_chain(30)
    broken = STRAND.clone()
    broken[15:] += torch.tensor([4.0, 2.0, 0.0], dtype=broken.dtype)  # one CA-CA of ~8 Å
    assert chain_breaks(broken.numpy())[0] == 1
    mended = relax_ca(broken[None], (("connectivity", 1.0),), chain, res, iters=200)[0]
    assert chain_breaks(mended.numpy())[0] == 0
    assert energy(mended[None], (("connectivity", 1.0),), chain, res) < 0.01 * energy(
        broken[None], (("connectivity", 1.0),), chain, res)


def test_sterics_push_a_chain_out_of_another():
    """A binder laid through its target (CA within 1 Å) comes out to >= 3 Å from every target CA."""
    a, b = STRAND, STRAND + torch.tensor([0.5, 0.5, 0.0], dtype=STRAND.dtype)
    x = torch.cat([a, b])[None]
    chain = torch.cat([torch.zeros(30), torch.ones(30)]).long()
    res = torch.cat([torch.arange(30), torch.arange(30)])
    assert between_chains(b.numpy(), [a.numpy()])["interchain_min_ca"] < 1.0
    out = relax_ca(x, (("sterics", 1.0),), chain, res, iters=300)[0]
    assert between_chains(out[30:].numpy(), [out[:30].numpy()])["interchain_min_ca"] > 3.0


def test_potentials_enter_sampling_through_the_request(tiny_checkpoint, tmp_path):
    lm = load_model(tiny_checkpoint)
    base = DesignRequest(lengths=[40], steps=6, seed=2)
    (plain,) = sample_backbones(lm, base, progress=False)
    (none,) = sample_backbones(lm, base.with_(potentials="none"), progress=False)
    np.testing.assert_array_equal(plain.coords, none.coords)  # 'none' is the network alone, bit for bit
    (held,) = sample_backbones(lm, base.with_(potentials="connectivity:1,sterics:1"), progress=False)
    assert held.potentials == "connectivity:1,sterics:1" and plain.potentials is None
    ca_plain, ca_held = plain.coords[0][:, 1], held.coords[0][:, 1]
    d = lambda ca: np.linalg.norm(np.diff(ca, axis=0), axis=-1)  # noqa: E731
    assert np.abs(d(ca_held) - 3.8).max() < np.abs(d(ca_plain) - 3.8).max()
    out = tmp_path / "o"
    assert main(["protein", "sample", "--checkpoint", str(tiny_checkpoint), "--length", "40", "--steps", "4",
                 "--potentials", "connectivity:1", "--quiet", "--out", str(out)]) == 0
    assert json.loads((out / "len40_000.json").read_text())["potentials"] == "connectivity:1"

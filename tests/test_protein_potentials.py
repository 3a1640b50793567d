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
    base = DesignRequest(lengths=[40], steps=6, seed=2, potentials="none")
    (none,) = sample_backbones(lm, base, progress=False)
    (empty,) = sample_backbones(lm, base.with_(potentials=()), progress=False)
    np.testing.assert_array_equal(empty.coords, none.coords)
    assert none.potentials is None
    (held,) = sample_backbones(lm, base.with_(potentials="connectivity:1,sterics:1"), progress=False)
    (default,) = sample_backbones(lm, base.with_(potentials=None), progress=False)  # the defaults
    assert held.potentials == default.potentials == "connectivity:1,sterics:1"
    np.testing.assert_array_equal(held.coords, default.coords)
    ca_plain, ca_held = none.coords[0][:, 1], held.coords[0][:, 1]
    d = lambda ca: np.linalg.norm(np.diff(ca, axis=0), axis=-1)  # noqa: E731
    assert np.abs(d(ca_held) - 3.8).max() < np.abs(d(ca_plain) - 3.8).max()
    out = tmp_path / "o"
    assert main(["protein", "sample", "--checkpoint", str(tiny_checkpoint), "--length", "40", "--steps", "4",
                 "--potentials", "connectivity:1", "--quiet", "--out", str(out)]) == 0
    assert json.loads((out / "len40_000.json").read_text())["potentials"] == "connectivity:1"


# --------------------------------------------------------------------- guiding potentials
from diffsci.protein.design.potentials import Potentials, contact_count, default_potentials  # noqa: E402

TARGET = STRAND + torch.tensor([0.0, 0.0, 0.0], dtype=STRAND.dtype)


def _two_chains(binder: torch.Tensor, target: torch.Tensor = STRAND):
    x = torch.cat([binder, target])[None].double()
    n, m = len(binder), len(target)
    chain = torch.cat([torch.zeros(n), torch.ones(m)]).long()
    res = torch.cat([torch.arange(n), torch.arange(m)])
    fixed = torch.cat([torch.zeros(n, dtype=torch.bool), torch.ones(m, dtype=torch.bool)])
    return x, chain, res, fixed


@pytest.mark.parametrize("terms", [
    (("monomer_ROG", 1.0),), (("binder_ROG", 1.0),), (("monomer_contacts", 1.0),), (("interface_contacts", 1.0),),
    (("olig_contacts", 1.0),), (("hotspots", 1.0),),
    (("connectivity", 1.0), ("sterics", 2.0), ("interface_contacts", 0.5), ("hotspots", 3.0), ("binder_ROG", 1.0)),
])
def test_every_potentials_gradient_is_its_energys(terms):
    g = torch.Generator().manual_seed(1)
    far = STRAND + torch.tensor([25.0, 3.0, 0.0], dtype=STRAND.dtype) + 2 * torch.randn(STRAND.shape, generator=g,
                                                                                          dtype=STRAND.dtype)
    x, chain, res, fixed = _two_chains(far)
    where = dict(fixed=fixed, hotspots=torch.tensor([40, 45]))
    pot = Potentials(terms, chain, res, **where)
    grad = pot._energy_gradient(x)[1]
    assert grad.abs().max() > 1e-4  # something to check
    y = x.clone().requires_grad_(True)
    pot.energy(y).sum().backward()
    torch.testing.assert_close(grad, y.grad.masked_fill(fixed[None, :, None], 0.0), rtol=1e-7, atol=1e-9)
    assert (grad[0, fixed] == 0).all()  # the target never moves


def test_interface_contacts_and_hotspots_bring_a_distant_binder_to_its_target():
    far = STRAND + torch.tensor([30.0, 0.0, 0.0], dtype=STRAND.dtype)
    x, chain, res, fixed = _two_chains(far)
    terms = (("connectivity", 1.0), ("sterics", 1.0), ("interface_contacts", 1.0), ("hotspots", 1.0))
    hot = torch.tensor([30 + 5, 30 + 25])  # target residues 5 and 25
    out = relax_ca(x, terms, chain, res, iters=600, fixed=fixed, hotspots=hot)[0]
    d = torch.cdist(out[:30], out[30:])
    assert torch.equal(out[30:], x[0, 30:])  # the target did not move
    pairs = torch.cartesian_prod(torch.arange(30), torch.arange(30, 60))
    assert float(contact_count(x, pairs)) < 3 and float(contact_count(out[None], pairs)) > 24  # the target: 25
    assert d.min() >= 3.0 and int((d.min(1).values < 10).sum()) >= 5  # beside it, with an interface
    assert (d[:, [5, 25]].min(0).values <= 8.0 + 1e-3).all()  # every hotspot touched
    assert chain_breaks(out[:30].numpy())[0] == 0
    # a binder already in contact with the hotspots and the interface is left alone
    near = STRAND + torch.tensor([0.0, 0.0, 6.0], dtype=STRAND.dtype)
    x2, *_ = _two_chains(near)
    assert float(contact_count(x2, torch.cartesian_prod(torch.arange(30), torch.arange(30, 60)))) > 25
    kept = relax_ca(x2, terms, chain, res, fixed=fixed, hotspots=hot)
    assert torch.equal(kept, x2)


def test_rog_compacts_a_stretched_chain_and_leaves_a_compact_one():
    straight = torch.zeros(60, 3, dtype=torch.float64)
    straight[:, 0] = 3.8 * torch.arange(60)  # Rg 65 Å; real chains of 60: ~10 Å
    chain, res = _one_chain(60)
    pot = Potentials((("monomer_ROG", 1.0),), chain, res)
    out = pot.relax(straight[None], iters=200)
    rg = lambda y: float(((y - y.mean(0)) ** 2).sum(-1).mean().sqrt())  # noqa: E731
    assert rg(out[0]) < 0.5 * rg(straight)
    compact = out.clone()
    compact[0] = (out[0] - out[0].mean(0)) * (2.2 * 60**0.38 * 0.9 / rg(out[0]))  # below the bound
    assert torch.equal(pot.relax(compact), compact)


def test_contacts_pull_apart_copies_together_and_stop_at_their_target():
    chain = torch.arange(2).repeat_interleave(30)  # two copies 40 Å apart (C2: one interface)
    res = torch.arange(30).repeat(2)
    apart = torch.cat([STRAND + torch.tensor([40.0 * k, 0.0, 0.0], dtype=STRAND.dtype) for k in range(2)])[None]
    pot = Potentials((("olig_contacts", 1.0), ("sterics", 1.0)), chain, res)
    assert float(pot.energy(apart)) > 0
    out = pot.relax(apart, iters=2000)
    assert float(pot.energy(out)) < 1e-3 * float(pot.energy(apart))
    d01 = torch.cdist(out[0, :30], out[0, 30:60])
    assert d01.min() > 3.0 and d01.min() < 8.0


def test_olig_contacts_give_every_interface_its_own_target():
    """Three copies side by side (a C3 bundle) with 9.6, 5.2 and 9.1 contacts: each of the three
    interfaces is raised to 25, not the three together to 25."""
    import math

    chain, res = torch.arange(3).repeat_interleave(30), torch.arange(30).repeat(3)
    bundle = torch.cat([STRAND + torch.tensor([0.0, 8 * math.cos(2 * math.pi * k / 3), 8 * math.sin(2 * math.pi * k / 3)],
                                              dtype=STRAND.dtype) for k in range(3)])[None]
    interfaces = [torch.tensor([[i, 30 * ((k + 1) % 3) + j] for i in range(30 * k, 30 * k + 30) for j in range(30)])
                  for k in range(3)]
    assert sum(float(contact_count(bundle, p)[0]) for p in interfaces) < 25
    out = Potentials((("olig_contacts", 1.0), ("sterics", 1.0)), chain, res).relax(bundle, iters=1000)
    assert all(float(contact_count(out, p)[0]) > 24.9 for p in interfaces)


def test_default_potentials_follow_the_request():
    assert default_potentials() == (("connectivity", 1.0), ("sterics", 1.0))
    names = dict(default_potentials(fixed_chain=True, symmetric=True, hotspots=True))
    assert {"interface_contacts", "olig_contacts", "hotspots"} <= set(names)
    assert DesignRequest(lengths=[50]).potentials == default_potentials()
    assert dict(DesignRequest(lengths=[50], symmetry="C3").potentials).get("olig_contacts") == 1.0
    assert DesignRequest(lengths=[50], potentials="none").potentials == ()


def test_hotspots_are_checked_against_the_fixed_chain(motif_file):
    from diffsci.protein.design.contig import load_motif

    motif = load_motif(motif_file)
    chain = motif.chains[0]
    lo, hi = int(chain.res_ids[0]), int(chain.res_ids[-1])
    cid = chain.chain_id
    contig = f"[{cid}{lo}-{hi}/0 30-40]"
    req = DesignRequest(contig=contig, motif=motif, hotspots=f"{cid}{lo + 2}")
    assert req.hotspots == (f"{cid}{lo + 2}",) and "interface_contacts" in dict(req.potentials)
    for kwargs, needle in ((dict(hotspots="Z999"), "not among the fixed"),
                           (dict(hotspots=f"{cid}{lo}", potentials="connectivity"), "hotspots potential is off"),
                           (dict(potentials="hotspots"), "needs hotspot residues")):
        with pytest.raises(DiffsciError, match=needle):
            DesignRequest(contig=contig, motif=motif, **kwargs)
    with pytest.raises(DiffsciError, match="fixed chain"):
        DesignRequest(lengths=[50], hotspots="A5")


def test_with_rederives_defaulted_potentials_for_the_new_mode():
    plain = DesignRequest(lengths=[50])
    assert "olig_contacts" in dict(plain.with_(symmetry="C3").potentials)  # defaults follow the mode
    chosen = DesignRequest(lengths=[50], potentials="sterics:2")
    assert chosen.with_(symmetry="C3").potentials == (("sterics", 2.0),)  # a choice is kept


def test_sterics_unfold_a_chain_folded_back_at_one_residue():
    """CA(i+2) on top of CA(i) (seen in 512-residue designs) comes out to >= 4.2 Å, the chain kept."""
    chain, res = _one_chain(30)
    kinked = STRAND.clone()
    kinked[11] = kinked[9] + 0.3 * (kinked[10] - kinked[9]) / 3.8  # CA-CA 10-11 ~3.5 Å, CA 9-11 0.3 Å
    kinked[12:] += kinked[11] - STRAND[11]
    assert np.linalg.norm((kinked[11] - kinked[9]).numpy()) < 0.5
    terms = (("connectivity", 1.0), ("sterics", 1.0))
    out = relax_ca(kinked[None], terms, chain, res, iters=300)[0].numpy()
    assert np.linalg.norm(out[11] - out[9]) >= 4.2 and chain_breaks(out)[0] == 0


def test_target_gap_keeps_designed_residues_off_a_fixed_chain_only():
    """target_gap (early in sampling): a designed chain 4.9 Å from a fixed one is pushed to ~6 Å; the
    fixed chain does not move; without it, or between two designed chains, 4.9 Å is left alone."""
    a, b = STRAND, STRAND + torch.tensor([0.0, 5.0, 5.0], dtype=STRAND.dtype)  # nearest CA pair 4.88 Å
    x = torch.cat([a, b])[None]
    chain = torch.cat([torch.zeros(30), torch.ones(30)]).long()
    res = torch.cat([torch.arange(30), torch.arange(30)])
    fixed = chain == 0
    pot = Potentials((("sterics", 1.0),), chain, res, fixed=fixed)
    assert torch.equal(pot.relax(x), x)  # 5 Å > 4 Å: nothing to do
    out = pot.relax(x, iters=300, target_gap=6.0)[0]
    assert torch.equal(out[:30], a)
    assert between_chains(out[30:].numpy(), [out[:30].numpy()])["interchain_min_ca"] > 5.9
    free = Potentials((("sterics", 1.0),), chain, res)  # no fixed chain: the gap does not apply
    assert torch.equal(free.relax(x, iters=300, target_gap=6.0), x)


def test_olig_contacts_pull_neighbouring_copies_into_touch():
    """Two copies with 25+ smooth contacts but no CA pair within 7 Å: the nearest pair is pulled
    to 7 Å; copies already touching (nearest 6.5 Å) are left alone."""
    chain, res = torch.arange(2).repeat_interleave(30), torch.arange(30).repeat(2)
    pairs = torch.tensor([[i, 30 + j] for i in range(30) for j in range(30)])
    pot = Potentials((("olig_contacts", 1.0),), chain, res)
    near = torch.cat([STRAND, STRAND + torch.tensor([0.0, 5.0, 8.5], dtype=STRAND.dtype)])[None]
    assert float(contact_count(near, pairs)[0]) > 25 and torch.cdist(near[0, :30], near[0, 30:]).min() > 7.5
    out = pot.relax(near, iters=300)[0]
    assert 6.9 < float(torch.cdist(out[:30], out[30:]).min()) <= 7.0 + 1e-3
    touching = torch.cat([STRAND, STRAND + torch.tensor([0.0, 5.0, 7.0], dtype=STRAND.dtype)])[None]
    assert torch.equal(pot.relax(touching), touching)

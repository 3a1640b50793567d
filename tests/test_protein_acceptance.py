"""Tests of diffsci.protein.metrics.acceptance: the acceptance figures that chose the shipped
checkpoint (protein/data/CHECKPOINT.md) and the rotation-rate sweep.

Reference: the formulas of the script that made the published figures, written out inline
(``_script_figures``: dense L x L distances in the input's dtype, its own 2.2 L^0.38 and
3.5-4.1 Å window), so the library's figures are checked against an independent computation.
"""

from __future__ import annotations

import numpy as np
import pytest

from diffsci.benchmarks.protein_acceptance import rate_sweep, sample_acceptance
from diffsci.core.errors import DiffsciError
from diffsci.protein.io.dataset import bundled_dataset_path, load_dataset
from diffsci.protein.metrics import (
    ACCEPTANCE_CA_CA_WINDOW,
    acceptance_figures,
    ca_ca_stats,
    ca_contacts,
    expected_radius_of_gyration,
    psea_fractions,
)
from diffsci.protein.design.request import DesignRequest
from diffsci.protein.design.sampling import load_model, sample_backbones

#: the script's result keys -> the library's
OLD_KEYS = {"n": "n", "caca": "ca_ca_ok", "clash": "ca_clash_fraction", "helix": "helix", "strand": "strand",
            "hs": "helix_plus_strand", "rgok": "rg_ok", "contacts6": "contacts6"}


def _script_figures(cas) -> dict:
    """The published figures' formulas, from the script that made them (keys as it wrote them)."""
    ca_ok, close, helix, strand, rg_ok, contacts = [], [], [], [], [], []
    for ca in cas:
        dd = np.linalg.norm(np.diff(ca, axis=0), axis=1)
        ca_ok.append((dd > 3.5) & (dd < 4.1))
        D = np.linalg.norm(ca[:, None] - ca[None], axis=-1)
        close.append(D[np.triu_indices(len(ca), k=2)] < 3.0)
        f = psea_fractions(ca)
        helix.append(f["helix"])
        strand.append(f["strand"])
        rg = np.sqrt(((ca - ca.mean(0)) ** 2).sum(1).mean())
        rg_ok.append(abs(rg / (2.2 * len(ca) ** 0.38) - 1) <= 0.3)
        contacts.append(ca_contacts(ca))
    return {"n": len(cas), "caca": float(np.concatenate(ca_ok).mean()), "clash": float(np.concatenate(close).mean()),
            "helix": float(np.mean(helix)), "strand": float(np.mean(strand)),
            "hs": float(np.mean(np.add(helix, strand))), "rgok": float(np.mean(rg_ok)),
            "contacts6": float(np.mean(contacts))}


def _renamed(old: dict) -> dict:
    return {OLD_KEYS[k]: v for k, v in old.items()}


@pytest.fixture(scope="module")
def real_cas():
    """Six bundled real chains (float32 CA, lengths differ), one squeezed so that CA pairs clash
    and consecutive CA-CA distances leave the window."""
    ds = load_dataset(bundled_dataset_path())
    cas = [np.asarray(ds.chain(i).coords)[:, 1] for i in range(6)]
    squeezed = cas[5] * np.float32(0.55)
    return cas[:5] + [squeezed]


def test_figures_equal_the_script_on_real_chains(real_cas):
    old = _script_figures(real_cas)
    assert 0 < old["caca"] < 1 and old["clash"] > 0 and 0 < old["rgok"] < 1  # every figure is exercised
    assert acceptance_figures(real_cas) == _renamed(old)
    backbones = [np.asarray(load_dataset(bundled_dataset_path()).chain(i).coords) for i in range(3)]
    assert acceptance_figures(backbones) == _renamed(_script_figures([b[:, 1] for b in backbones]))


def test_figures_equal_the_script_on_designs():
    lm = load_model(untrained=True)
    designs = sample_backbones(lm, DesignRequest(lengths=[40, 44], num=2, seed=5, steps=3), progress=False)
    got = acceptance_figures(designs)
    assert got == _renamed(_script_figures([d.coords[0][:, 1] for d in designs]))
    assert got["n"] == 4


def test_ca_ca_window_is_open_and_pooled():
    lo, hi = ACCEPTANCE_CA_CA_WINDOW
    assert (lo, hi) == (3.5, 4.1)
    line = np.zeros((6, 3))
    line[:, 0] = np.arange(6) * 3.5  # every step exactly 3.5 Å: outside the open window
    assert acceptance_figures([line])["ca_ca_ok"] == 0.0
    assert ca_ca_stats(line)[1] == 1.0  # the per-sample ca_ca_ok: closed window
    short = np.zeros((3, 3))
    short[:, 0] = np.arange(3) * 3.0  # 2 pairs, both too short
    long_ok = np.zeros((11, 3))
    long_ok[:, 0] = np.arange(11) * 3.8  # 10 pairs, all ok
    f = acceptance_figures([short, long_ok])
    assert f["ca_ca_ok"] == 10 / 12  # pooled over pairs, not 0.5 (the mean of the two chains)
    assert f["ca_clash_fraction"] == 0.0 and f["contacts6"] == 0.0


def test_rg_ok_uses_the_shared_law():
    assert expected_radius_of_gyration(100) == 2.2 * 100**0.38
    np.testing.assert_allclose(expected_radius_of_gyration(np.array([60, 128])), 2.2 * np.array([60, 128]) ** 0.38)
    rng = np.random.default_rng(0)
    L = 64
    target = expected_radius_of_gyration(L)
    blob = rng.normal(size=(L, 3))
    blob -= blob.mean(0)
    blob /= np.sqrt((blob**2).sum(1).mean())  # Rg exactly 1
    assert acceptance_figures([blob * target * 1.29])["rg_ok"] == 1.0
    assert acceptance_figures([blob * target * 1.31])["rg_ok"] == 0.0
    assert acceptance_figures([blob * target * 0.69])["rg_ok"] == 0.0


def test_figures_refuse_nothing_and_bad_shapes():
    with pytest.raises(DiffsciError, match="designs"):
        acceptance_figures([])
    with pytest.raises(DiffsciError, match="design 1"):
        acceptance_figures([np.zeros((5, 3)), np.zeros((5, 2))])


@pytest.fixture(scope="module")
def untrained():
    return load_model(untrained=True)


def test_rate_sweep_rows_are_the_figures_of_each_rate(untrained):
    rows = rate_sweep(untrained, [2, 20.0], lengths=(40, 44), num=1, seed=2, steps=5)
    assert [r["rate"] for r in rows] == [2.0, 20.0] and all(r["seed"] == 2 and r["n"] == 2 for r in rows)
    assert all(r["seconds"] >= 0 for r in rows)
    for row in rows:  # independently: sample at that rate, then measure
        designs = sample_backbones(untrained, DesignRequest(lengths=[40, 44], num=1, seed=2, steps=5, rotation_rate=row["rate"], potentials="none"), progress=False)
        want = _renamed(_script_figures([d.coords[0][:, 1] for d in designs]))
        assert {k: row[k] for k in want} == want
    figures = [{k: v for k, v in r.items() if k not in ("rate", "seconds")} for r in rows]
    assert figures[0] != figures[1]  # the rate changes the designs


def test_sample_acceptance_uses_the_checkpoint_rate(untrained):
    row = sample_acceptance(untrained, lengths=(40,), num=1, seed=0, steps=2)
    assert row["rate"] == untrained.config.inference_rate
    same = sample_acceptance(untrained, rotation_rate=untrained.config.inference_rate, lengths=(40,), num=1, seed=0, steps=2)
    assert {k: v for k, v in row.items() if k != "seconds"} == {k: v for k, v in same.items() if k != "seconds"}


@pytest.mark.parametrize("rates", [[], [0.0], [5, 101], [float("nan")]])
def test_rate_sweep_checks_rates_before_sampling(untrained, rates):
    with pytest.raises(DiffsciError, match="rates"):
        rate_sweep(untrained, rates, lengths=(40,), num=1, steps=1)

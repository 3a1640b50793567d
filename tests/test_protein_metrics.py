"""Tests of diffsci.protein.metrics and ``diffsci protein evaluate`` (without designability).

References: direct tmtools and biotite calls, mkdssp-derived assignments shipped with
mdanalysistests (tests/data/dssp, see make_reference.py there), analytic geometry built
here with the NeRF construction from Engh & Huber bond lengths and angles.
"""

from __future__ import annotations

import gzip
import io
import json
import pathlib

import numpy as np
import pytest
from backbones import ideal_backbone

from diffsci.core.cli import main
from diffsci.core.errors import DiffsciError
from diffsci.protein import metrics as M
from diffsci.protein.io.pdb import write_backbone_pdb
from diffsci.protein.io.structure import read_structure_chains
from diffsci.protein.metrics.secondary import _dssp_search_radius

tmtools = pytest.importorskip("tmtools", reason="tmtools (dev extra) is not installed")
pytest.importorskip("pydssp", reason="pydssp (dev extra) is not installed")

DSSP_DIR = pathlib.Path(__file__).parent / "data" / "dssp"
DSSP_CHAINS = sorted(p.name[: -len(".pdb.gz")] for p in DSSP_DIR.glob("*.pdb.gz"))


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def real_chains():
    return {name: read_structure_chains(DSSP_DIR / f"{name}.pdb.gz")[0] for name in DSSP_CHAINS}


# ----------------------------------------------------------------------------- geometry


def test_ideal_backbone_geometry_and_ramachandran():
    helix = ideal_backbone(20, -57.0, -47.0)
    dev = M.backbone_geometry_deviation(helix)
    assert all(v < 1e-6 for v in dev.values()), dev
    phi, psi = M.backbone_dihedrals(helix)
    np.testing.assert_allclose(phi, -57.0, atol=1e-6)
    np.testing.assert_allclose(psi, -47.0, atol=1e-6)
    assert M.ramachandran_fractions(helix)["rama_alpha"] == 1.0
    assert M.ramachandran_fractions(ideal_backbone(12, -120.0, 130.0))["rama_beta"] == 1.0
    assert M.ramachandran_fractions(ideal_backbone(12, 60.0, 45.0))["rama_left"] == 1.0
    assert M.ramachandran_fractions(ideal_backbone(12, 60.0, 180.0))["rama_other"] == 1.0
    # stretching every N-CA bond by 0.1 A shows up in that term only
    stretched = helix.copy()
    u = stretched[:, 1] - stretched[:, 0]
    stretched[:, 0] -= 0.1 * u / np.linalg.norm(u, axis=-1, keepdims=True)
    dev = M.backbone_geometry_deviation(stretched)
    assert dev["bond_N_CA_mad"] == pytest.approx(0.1, abs=1e-6)
    assert dev["bond_CA_C_mad"] < 1e-6 and dev["bond_C_N_mad"] > 0


def test_ca_contacts_by_hand():
    # a straight chain at 3.8 Å: residues 3 apart are 11.4 Å away, so no contacts
    line = np.arange(20)[:, None] * np.array([[3.8, 0.0, 0.0]])
    assert M.ca_contacts(line) == 0.0 and M.ca_contacts(line, min_separation=3) == 0.0
    # an ideal alpha helix (radius 2.3 Å, rise 1.5 Å, 100 degrees per residue): CA(i)-CA(i+3/i+4)
    # are 5.0 / 6.2 Å, CA(i+5) 8.6 Å, so local pairs count only below the default separation 6
    k = np.arange(30)
    helix = np.stack([2.3 * np.cos(np.radians(100 * k)), 2.3 * np.sin(np.radians(100 * k)), 1.5 * k], 1)
    assert M.ca_contacts(helix) == 0.0
    assert M.ca_contacts(helix, min_separation=3) == pytest.approx(2 * (27 + 26) / 30)
    # a hairpin: two parallel strands 5 Å apart, residue i facing residue 19 - i
    hair = np.concatenate([line[:10], line[:10][::-1] + [0.0, 5.0, 0.0]])
    rng = np.random.default_rng(1)
    for x in (hair, rng.normal(size=(30, 3)) * 6):
        n = len(x)
        count = sum(1 for i in range(n) for j in range(n)
                    if abs(i - j) >= 6 and float(np.sqrt(((x[i] - x[j]) ** 2).sum())) < 8.0)
        assert M.ca_contacts(x) == pytest.approx(count / n)
    assert M.ca_contacts(hair) > 1.0


def test_radius_of_gyration_by_hand():
    square = np.array([[1.0, 1, 0], [-1, 1, 0], [-1, -1, 0], [1, -1, 0]]) + 5.0
    assert M.radius_of_gyration(square) == pytest.approx(np.sqrt(2.0))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(37, 3)) * 4
    centre = sum(x) / len(x)
    by_hand = (sum(float(np.dot(p - centre, p - centre)) for p in x) / len(x)) ** 0.5
    assert M.radius_of_gyration(x) == pytest.approx(by_hand, rel=1e-12)


def test_ca_ca_and_clashes():
    line = np.zeros((10, 3))
    line[:, 0] = 3.8 * np.arange(10)
    mean, ok = M.ca_ca_stats(line)
    assert mean == pytest.approx(3.8) and ok == 1.0
    bent = line.copy()
    bent[5:, 0] += 0.5  # one gap of 4.3 A: outside 3.8 +- 0.3
    assert M.ca_ca_stats(bent)[1] == pytest.approx(8 / 9)
    assert M.ca_clashes(line) == (0, 0.0)
    folded = line.copy()
    folded[9] = folded[0] + np.array([0.0, 2.5, 0.0])  # residue 9 sits 2.5 A from residue 0
    count, frac = M.ca_clashes(folded)
    assert count == 1 and frac == pytest.approx(1 / (9 * 8 / 2))


@pytest.mark.parametrize("length", [1, 2])
def test_clash_fraction_undefined_without_non_adjacent_pairs(length):
    """Seen: a 1-residue chain had clash_fraction 0.0; with (L-1)(L-2)/2 = 0 non-adjacent pairs it
    is undefined (NaN, null in JSON). The count of clashes is 0 (there is no pair to clash)."""
    ca = 3.8 * np.arange(length, dtype=float)[:, None] * np.array([[1.0, 0.0, 0.0]])
    count, frac = M.ca_clashes(ca)
    assert count == 0 and np.isnan(frac)
    # from 3 residues on there is a pair (0, 2): one clash of one pair is a fraction of 1
    assert M.ca_clashes(np.array([[0.0, 0.0, 0.0], [3.8, 0.0, 0.0], [0.0, 2.0, 0.0]])) == (1, 1.0)


# ----------------------------------------------------------------------------- secondary structure


@pytest.mark.filterwarnings("ignore:.*elements were guessed")
def test_psea_fractions_match_biotite_on_the_file(real_chains):
    """P-SEA on our CA-only array == biotite's annotate_sse on the full file, counted by hand."""
    import biotite.structure as struc
    import biotite.structure.io.pdb as pdb

    for name in DSSP_CHAINS[:3]:
        with gzip.open(DSSP_DIR / f"{name}.pdb.gz", "rt") as fh:
            atoms = pdb.PDBFile.read(io.StringIO(fh.read())).get_structure(model=1)
        atoms = atoms[struc.filter_amino_acids(atoms)]
        sse = struc.annotate_sse(atoms)
        n = len(sse)
        assert n == len(real_chains[name].sequence)
        got = M.psea_fractions(real_chains[name].coords)
        assert got["helix"] == pytest.approx(sum(1 for s in sse if s == "a") / n, abs=1e-12)
        assert got["strand"] == pytest.approx(sum(1 for s in sse if s == "b") / n, abs=1e-12)
        assert got["coil"] == pytest.approx(sum(1 for s in sse if s not in ("a", "b")) / n, abs=1e-12)
        assert 0 < got["helix"] + got["strand"] < 1


def test_dssp_agrees_with_mkdssp_reference(real_chains, capsys):
    agree = total = 0
    per_chain = {}
    for name in DSSP_CHAINS:
        ref = (DSSP_DIR / f"{name}.pdb.dssp").read_text().split()[0]
        labels = M.dssp_labels(real_chains[name].coords)
        assert len(labels) == len(ref), name
        hits = sum(a == b for a, b in zip(labels, ref))
        per_chain[name] = hits / len(ref)
        agree += hits
        total += len(ref)
        fr = M.dssp_fractions(real_chains[name].coords)
        assert fr["dssp_helix"] == pytest.approx(list(labels).count("H") / len(labels))
        assert fr["dssp_strand"] == pytest.approx(list(labels).count("E") / len(labels))
    overall = agree / total
    with capsys.disabled():
        print(f"\npydssp vs reference DSSP: {overall:.4f} of {total} residues; per chain {per_chain}")
    assert len(DSSP_CHAINS) >= 5
    assert overall >= 0.90
    assert min(per_chain.values()) >= 0.90


def test_dssp_equals_pydssp(real_chains):
    """Our sparse DSSP == pydssp.assign (its dense L x L maps) on real chains, noisy copies of
    them (bonds near the -0.5 kcal/mol cutoff) and a chain with a break (donor after it masked)."""
    import pydssp

    rng = np.random.default_rng(0)
    compared = labelled = 0
    for name in DSSP_CHAINS:
        base = real_chains[name].coords.astype(np.float64)
        for noise in (0.0, 0.3, 0.8):
            x = base + rng.normal(scale=noise, size=base.shape)
            ref = pydssp.assign(x, out_type="c3")
            if noise > 0:  # noise can open a CA-CA gap: the donor after it has no H in ours
                mask = np.ones(len(x), dtype=bool)
                mask[1:] = np.linalg.norm(np.diff(x[:, 1], axis=0), axis=-1) <= 4.2
                ref = pydssp.assign(x, donor_mask=mask, out_type="c3")
            np.testing.assert_array_equal(M.dssp_labels(x), ref, err_msg=f"{name} noise {noise}")
            compared += 1
            labelled += int(np.sum(ref != "-"))
    assert compared == 3 * len(DSSP_CHAINS) and labelled > 500
    x = real_chains["1ahsA"].coords.astype(np.float64)
    x[60:] += np.array([8.0, 0.0, 0.0])  # a break: no H-bond donated across it
    mask = np.ones(len(x), dtype=bool)
    mask[60] = False
    np.testing.assert_array_equal(M.dssp_labels(x), pydssp.assign(x, donor_mask=mask, out_type="c3"))


def test_dssp_search_radius_bounds_the_energy():
    """Beyond the search radius no orientation reaches -0.5 kcal/mol (sampled worst cases)."""
    rng = np.random.default_rng(1)
    for co in (1.23, 1.5):
        r = _dssp_search_radius(co)
        u = rng.normal(size=(200000, 3, 3))
        u /= np.linalg.norm(u, axis=-1, keepdims=True)
        nn = u[:, 0] * r * (1 + 1e-6)  # O at the origin, N just outside the radius
        h, c = nn + 1.01 * u[:, 1], co * u[:, 2]

        def d(a, b):
            return np.linalg.norm(a - b, axis=-1)

        e = 0.084 * 332 * (1 / np.linalg.norm(nn, axis=-1) + 1 / d(c, h) - 1 / np.linalg.norm(h, axis=-1) - 1 / d(c, nn))
        assert e.min() > -0.5, (co, r, e.min())
    assert _dssp_search_radius(1.23) < 13.0  # about 12 Å for real carbonyls


def test_dssp_ideal_helix_and_short_chain():
    helix = ideal_backbone(20, -57.0, -47.0)
    assert M.dssp_fractions(helix)["dssp_helix"] > 0.7
    assert M.psea_fractions(helix)["helix"] > 0.7
    assert M.dssp_fractions(helix[:5]) == {"dssp_helix": 0.0, "dssp_strand": 0.0, "dssp_coil": 1.0}


# ----------------------------------------------------------------------------- TM-score, clusters, novelty


def test_pairwise_tm_equals_direct_tmtools(real_chains):
    cas = [real_chains[n].coords[:, 1].astype(np.float64) for n in DSSP_CHAINS[:3]]
    cas.append(ideal_backbone(30, -57.0, -47.0)[:, 1])
    tm = M.pairwise_tm(cas)
    assert tm.shape == (4, 4)
    np.testing.assert_array_equal(np.diag(tm), 1.0)
    for i in range(4):
        for j in range(4):
            if i != j:
                direct = tmtools.tm_align(cas[i], cas[j], "G" * len(cas[i]), "G" * len(cas[j])).tm_norm_chain1
                assert abs(tm[i, j] - direct) < 1e-6
    seqs = [real_chains[n].sequence for n in DSSP_CHAINS[:2]]
    direct = tmtools.tm_align(cas[0], cas[1], seqs[0], seqs[1]).tm_norm_chain1
    assert abs(M.tm_score(cas[0], cas[1], seqs[0], seqs[1]) - direct) < 1e-6


def test_cluster_identical_and_unrelated(real_chains):
    helix = ideal_backbone(40, -57.0, -47.0)[:, 1]
    strand_chain = real_chains["1ahsA"].coords[:, 1]  # mostly beta (P-SEA/DSSP strands)
    rng = np.random.default_rng(1)
    rot, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    cas = [helix, helix @ rot.T + 7.0, strand_chain, strand_chain.copy()]
    tm = M.pairwise_tm(cas)
    for t in (0.5, 0.6):
        labels = M.cluster_by_tm(tm, t)
        assert labels[0] == labels[1] and labels[2] == labels[3] and labels[0] != labels[2]
    # identical structures only: one cluster
    assert set(M.cluster_by_tm(M.pairwise_tm([helix, helix, helix]), 0.5)) == {0}


def test_single_linkage_chains():
    # A-B and B-C above threshold, A-C below: single linkage puts all three together
    tm = np.array([[1.0, 0.62, 0.30], [0.62, 1.0, 0.58], [0.30, 0.58, 1.0]])
    assert M.cluster_by_tm(tm, 0.5).tolist() == [0, 0, 0]
    assert M.cluster_by_tm(tm, 0.6).tolist() == [0, 0, 1]
    assert M.cluster_by_tm(tm, 0.7).tolist() == [0, 1, 2]
    # asymmetric normalisations: the link rule decides
    asym = np.array([[1.0, 0.7], [0.4, 1.0]])
    assert M.cluster_by_tm(asym, 0.5, link="max").tolist() == [0, 0]
    assert M.cluster_by_tm(asym, 0.5, link="min").tolist() == [0, 1]
    assert M.cluster_by_tm(asym, 0.5, link="mean").tolist() == [0, 0]
    with pytest.raises(DiffsciError):
        M.cluster_by_tm(np.ones((2, 3)), 0.5)


def test_novelty_is_max_over_direct_calls(real_chains):
    refs = [real_chains[n].coords[:, 1] for n in DSSP_CHAINS[:3]]
    samples = [ideal_backbone(30, -57.0, -47.0)[:, 1], refs[1][:60]]
    got = M.novelty(samples, refs)
    for i, s in enumerate(samples):
        direct = max(tmtools.tm_align(s, r, "G" * len(s), "G" * len(r)).tm_norm_chain1 for r in refs)
        assert abs(got[i] - direct) < 1e-6
    assert got[1] > 0.95  # a piece of a reference chain is not novel
    assert M.novelty([refs[0]], refs)[0] == pytest.approx(1.0, abs=1e-6)


def test_evaluate_structures_summary(real_chains):
    items = [(n, real_chains[n].coords) for n in DSSP_CHAINS[:2]]
    items.append(("helix", ideal_backbone(25, -57.0, -47.0)))
    refs = [real_chains[n].coords for n in DSSP_CHAINS[2:4]]
    res = M.evaluate_structures(items, reference=refs, progress=False)
    rows, s = res["per_sample"], res["summary"]
    assert [r["file"] for r in rows] == [DSSP_CHAINS[0], DSSP_CHAINS[1], "helix"]
    tm = np.array(res["pairwise_tm"])
    assert s["mean_pairwise_tm"] == pytest.approx(tm[~np.eye(3, dtype=bool)].mean())
    assert s["clusters_tm0.5"] == int(M.cluster_by_tm(tm, 0.5).max()) + 1
    assert s["cluster_fraction_tm0.6"] == pytest.approx(s["clusters_tm0.6"] / 3)
    for key in M.NUMERIC_FIELDS:  # NaN (no strand residue in the helix: paired fractions) left out
        values = np.array([np.nan if r[key] is None else r[key] for r in rows], dtype=float)
        if np.isnan(values).all():  # undefined everywhere (single-chain designs: between chains)
            assert s[f"mean_{key}"] is None, key
            continue
        assert s[f"mean_{key}"] == pytest.approx(np.nanmean(values)), key
    assert np.isnan(rows[2]["paired_fraction"]) and rows[2]["sheets"] == 0
    assert s["mean_novelty"] == pytest.approx(np.mean([r["max_tm_reference"] for r in rows]))
    for r in rows:
        assert r["helix"] + r["strand"] + r["coil"] == pytest.approx(1.0)
        assert sum(r[f"rama_{k}"] for k in M.RAMA_REGIONS) == pytest.approx(1.0)


def test_subset_evaluation_equals_evaluating_the_subset(real_chains):
    items = [(n, real_chains[n].coords) for n in DSSP_CHAINS[:2]]
    items.append(("helix", ideal_backbone(25, -57.0, -47.0)))
    refs = [real_chains[n].coords for n in DSSP_CHAINS[2:4]]
    full = M.evaluate_structures(items, reference=refs, progress=False)
    sub = M.subset_evaluation(full, [2, 0])
    direct = M.evaluate_structures([items[2], items[0]], reference=refs, progress=False)
    assert [r["file"] for r in sub["per_sample"]] == ["helix", DSSP_CHAINS[0]]
    np.testing.assert_allclose(sub["pairwise_tm"], direct["pairwise_tm"], atol=1e-12)
    assert sub["cluster_labels"] == direct["cluster_labels"]
    for key, v in direct["summary"].items():
        assert sub["summary"][key] == (pytest.approx(v, nan_ok=True) if isinstance(v, float) else v), key
    with pytest.raises(DiffsciError, match="empty"):
        M.subset_evaluation(full, [])


# ----------------------------------------------------------------------------- bad input


def test_zero_length_and_bad_shapes():
    with pytest.raises(DiffsciError, match="zero-length"):
        M.sample_metrics(np.zeros((0, 4, 3)))
    with pytest.raises(DiffsciError, match="zero-length"):
        M.evaluate_structures([("empty", np.zeros((0, 4, 3)))], progress=False)
    with pytest.raises(DiffsciError, match=r"\(L, 4, 3\)"):
        M.sample_metrics(np.zeros((5, 3)))
    with pytest.raises(DiffsciError, match="NaN"):
        M.sample_metrics(np.full((5, 4, 3), np.nan))
    with pytest.raises(DiffsciError):
        M.evaluate_structures([], progress=False)
    one = M.sample_metrics(ideal_backbone(1, -60, -45))  # tiny chains give NaN, not errors
    assert one["length"] == 1 and np.isnan(one["ca_ca_mean"]) and np.isnan(one["rama_alpha"])


def _run(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_empty_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "m.json"
    code, _, err = _run(["protein", "evaluate", str(tmp_path / "empty"), "--out", str(out)], capsys)
    assert code == 2 and err.startswith("error:") and "empty folder" in err and "Traceback" not in err
    assert not out.exists()
    code, _, err = _run(["protein", "evaluate", str(tmp_path / "nope"), "--out", str(out)], capsys)
    assert code == 2 and "not a folder" in err


def test_cli_bad_files_warn_and_go_on(tmp_path, capsys, real_chains):
    d = tmp_path / "samples"
    d.mkdir()
    write_backbone_pdb(d / "a.pdb", real_chains["2cviA"].coords[:40])
    write_backbone_pdb(d / "b.pdb", ideal_backbone(30, -57.0, -47.0).astype(np.float32))
    (d / "notes.txt").write_text("not a structure\n")
    (d / "garbage.pdb").write_text("this is not a PDB file\n")
    (d / "water.pdb").write_text(
        "HETATM    1  O   HOH A   1       1.000   2.000   3.000  1.00  0.00           O\nEND\n"
    )  # a structure with a zero-length protein chain
    out = tmp_path / "res" / "m.json"
    out.parent.mkdir()
    code, stdout, err = _run(
        ["protein", "evaluate", str(d), "--out", str(out), "--reference", str(DSSP_DIR), "--quiet"], capsys
    )
    assert code == 0, err
    assert "Traceback" not in err
    for bad in ("notes.txt", "garbage.pdb", "water.pdb"):
        assert any(line.startswith("warning:") and bad in line for line in err.splitlines()), (bad, err)
    report = json.loads(out.read_text())
    assert [r["file"] for r in report["per_sample"]] == ["a.pdb", "b.pdb"]
    assert len(report["warnings"]) == 3
    for key in ("file", "length", "ca_ca_mean", "ca_ca_ok", "clashes", "clash_fraction", "radius_of_gyration",
                "helix", "strand", "coil", "dssp_helix", "dssp_strand", "dssp_coil", "max_tm_reference",
                "bond_N_CA_mad", "angle_C_N_CA_mad", "rama_alpha", "rama_beta", "rama_left", "rama_other"):  # fmt: skip
        assert key in report["per_sample"][0], key
    assert report["per_sample"][0]["max_tm_reference"] > 0.95  # a piece of 2cviA, which is in the reference
    assert np.array(report["pairwise_tm"]).shape == (2, 2)
    assert report["summary"]["n_samples"] == 2 and report["summary"]["n_reference"] == len(DSSP_CHAINS)
    assert "designability" not in report
    csv_lines = out.with_suffix(".csv").read_text().splitlines()
    assert len(csv_lines) == 3 and csv_lines[0].startswith("file,source_file,chain,length,chain_breaks,ca_ca_max,")
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.csv", "m.json"]  # no temp files left
    assert "2 samples" in stdout


def test_cli_only_bad_files_is_an_error(tmp_path, capsys):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "x.pdb").write_text("")
    (d / "y.txt").write_text("hello")
    out = tmp_path / "m.json"
    code, _, err = _run(["protein", "evaluate", str(d), "--out", str(out), "--quiet"], capsys)
    assert code == 2 and "no readable protein chain" in err and "Traceback" not in err
    assert not out.exists()


# ----------------------------------------------------------------------------- sheets, contact order, SS agreement


def hairpin(strand: int = 7) -> np.ndarray:
    """A 2:2 beta-hairpin: two strands of ``strand`` residues (phi -139, psi 135, antiparallel
    sheet) joined by a type II' turn (60, -120; -80, 0); Shape (2 strand + 2, 4, 3)."""
    phi = [-139.0] * strand + [60.0, -80.0] + [-139.0] * strand
    psi = [135.0] * strand + [-120.0, 0.0] + [135.0] * strand
    return ideal_backbone(len(phi), phi, psi)


def _dense_bridges(x: np.ndarray) -> set[tuple[int, int, int]]:
    """Bridges (i, j, parallel) written out from pydssp's dense H-bond map, Kabsch & Sander's rules."""
    import pydssp

    mask = np.ones(len(x), dtype=bool)
    mask[1:] = np.linalg.norm(np.diff(x[:, 1], axis=0), axis=-1) <= 4.2
    hb = pydssp.get_hbond_map(x, donor_mask=mask) > 0  # [donor, acceptor]

    def bond(a, d):  # C=O(a) -> H-N(d)
        return 0 <= a < len(x) and 0 <= d < len(x) and bool(hb[d, a])

    out = set()
    for i in range(1, len(x) - 1):
        for j in range(i + 3, len(x) - 1):
            if (bond(i - 1, j) and bond(j, i + 1)) or (bond(j - 1, i) and bond(i, j + 1)):
                out.add((i, j, 1))
            if (bond(i, j) and bond(j, i)) or (bond(i - 1, j + 1) and bond(j - 1, i + 1)):
                out.add((i, j, 0))
    return out


def test_dssp_bridges_equal_the_dense_pydssp_map(real_chains):
    total = 0
    for name in DSSP_CHAINS:
        x = real_chains[name].coords.astype(np.float64)
        got = M.dssp_bridges(x)
        assert set(map(tuple, got.tolist())) == _dense_bridges(x), name
        assert np.all(got[:, 1] - got[:, 0] >= 3)
        total += len(got)
    assert total > 100
    x = hairpin()
    assert set(map(tuple, M.dssp_bridges(x).tolist())) == _dense_bridges(x)


def test_ideal_hairpin_is_one_antiparallel_two_strand_sheet():
    x = hairpin(7)  # strands 0-6 and 9-15, turn 7-8
    top = M.sheet_topology(x)
    assert top.strands == ((1, 6), (9, 14)) and top.n_sheets == 1
    main = [lad for lad in top.ladders if lad.bridges >= 2]
    assert len(main) == 1 and not main[0].parallel and main[0].bridges == 6
    assert {(i, j) for i, j, p in top.bridges.tolist() if not p} >= {(i, 15 - i) for i in range(1, 7)}
    m = M.pairing_metrics(x)
    assert m == {"sheets": 1, "strands": 2, "ladders_parallel": 0, "ladders_antiparallel": 1,
                 "paired_fraction": 1.0, "psea_strand_paired": 1.0}
    assert "".join(M.dssp_labels(x)) == "-EEEEEE--EEEEEE-"


def test_unpaired_extended_chain_and_helix_have_no_sheet():
    """An isolated extended strand is P-SEA strand with no partner (the issue's 'strand' of designs)."""
    strand = ideal_backbone(20, -139.0, 135.0)
    m = M.pairing_metrics(strand)
    assert M.psea_fractions(strand)["strand"] > 0.5 and m["psea_strand_paired"] == 0.0
    assert m["sheets"] == m["strands"] == 0 and np.isnan(m["paired_fraction"])
    helix = M.pairing_metrics(ideal_backbone(30, -57.0, -47.0))
    assert helix["sheets"] == 0 and helix["ladders_parallel"] == helix["ladders_antiparallel"] == 0
    assert M.sheet_topology(ideal_backbone(5, -139.0, 135.0)).bridges.shape == (0, 3)


def test_sheet_topology_of_known_folds(real_chains):
    """3A4R A, a ubiquitin-like (beta-grasp) domain: one mixed sheet b2-b1-b5-b3-b4 (b1/b5
    parallel, the rest antiparallel); 2CVI A, a ferredoxin-like (b-a-b-b-a-b) domain: one
    antiparallel sheet in the order b4-b1-b3-b2; an all-helical chain (2I39 A): no sheet."""
    from diffsci.protein.io.dataset import bundled_dataset_path, load_dataset

    def pairs(top):
        return {tuple(sorted((_strand_of(top, lad.first[0]), _strand_of(top, lad.second[0])))): lad.parallel
                for lad in top.ladders if lad.bridges >= 2}

    ubl = M.sheet_topology(real_chains["3a4rA"].coords)
    assert len(ubl.strands) == 5 and ubl.n_sheets == 1
    assert pairs(ubl) == {(0, 1): False, (0, 4): True, (2, 4): False, (2, 3): False}
    fdx = M.sheet_topology(real_chains["2cviA"].coords)
    assert len(fdx.strands) == 4 and fdx.n_sheets == 1
    assert pairs(fdx) == {(0, 2): False, (0, 3): False, (1, 2): False}
    ds = load_dataset(bundled_dataset_path())
    helical = [k for k in range(len(ds)) if "2i39A" in (ds.chain(k).source or "")]
    assert helical, "2I39 A not in the bundled dataset"
    x = ds.chain(helical[0]).coords
    assert M.dssp_fractions(x)["dssp_helix"] > 0.7
    assert M.pairing_metrics(x)["sheets"] == 0


def _strand_of(top, residue: int) -> int:
    return next(k for k, (a, b) in enumerate(top.strands) if a <= residue <= b)


def test_strands_are_reference_dssp_strands(real_chains):
    """Strand residues (ladders of >= 2 bridges) against the reference E of tests/data/dssp."""
    inside = covered = 0
    for name in DSSP_CHAINS:
        ref = np.array(list((DSSP_DIR / f"{name}.pdb.dssp").read_text().split()[0])) == "E"
        on = M.sheet_topology(real_chains[name].coords).strand_mask()
        inside += np.sum(on & ref) / np.sum(on)
        covered += np.sum(on & ref) / np.sum(ref)
    assert inside / len(DSSP_CHAINS) > 0.9 and covered / len(DSSP_CHAINS) > 0.8


def test_bulge_joins_ladders():
    """mkdssp's bulge rule: gap <= 1 extra residue on one strand and <= 4 on the other."""
    from diffsci.protein.metrics.topology import _ladders

    anti = np.array([(10, 30, 0), (11, 29, 0), (12, 28, 0), (14, 27, 0), (15, 26, 0)])
    assert _ladders(anti) == [[10, 15, 26, 30, False, 5]]
    far = np.array([(10, 30, 0), (11, 29, 0), (16, 24, 0), (17, 23, 0)])  # gaps 4 and 4: two ladders
    assert len(_ladders(far)) == 2
    par = np.array([(10, 20, 1), (11, 21, 1), (12, 25, 1), (13, 26, 1)])  # gaps 1 and 4 -> one ladder
    assert _ladders(par) == [[10, 13, 20, 26, True, 4]]
    mixed = np.array([(10, 30, 0), (11, 29, 0), (12, 40, 1), (13, 41, 1)])  # types differ: no join
    assert len(_ladders(mixed)) == 2


def test_contact_order_equals_direct_sum(real_chains):
    for x in (real_chains["1ahsA"].coords, hairpin(7)):
        ca = x[:, 1].astype(np.float64)
        d = np.linalg.norm(ca[:, None] - ca[None], axis=-1)
        i, j = np.triu_indices(len(ca), k=6)
        sep = (j - i)[d[i, j] < 8.0]
        co = M.contact_order(x)
        assert co["absolute_contact_order"] == pytest.approx(sep.sum() / sep.size)
        assert co["contact_order"] == pytest.approx(sep.sum() / sep.size / len(ca))
    assert np.isnan(M.contact_order(ideal_backbone(20, -139.0, 135.0))["contact_order"])  # straight: no contact


def test_ss_agreement():
    got = M.ss_agreement("HHHEE--E", "HHLEEXLh")  # X: not requested; lower case accepted
    assert got == pytest.approx({"ss_agreement": 5 / 7, "ss_agreement_H": 2 / 3, "ss_agreement_E": 1.0,
                                 "ss_agreement_L": 0.5})
    helix = ideal_backbone(20, -57.0, -47.0)
    labels = M.dssp_labels(helix)
    on_helix = M.ss_agreement(labels, "H" * 20)
    assert on_helix["ss_agreement_H"] == pytest.approx(np.mean(labels == "H")) and np.isnan(on_helix["ss_agreement_E"])
    assert np.isnan(M.ss_agreement(labels, "-" * 20)["ss_agreement"])
    with pytest.raises(DiffsciError, match="request"):
        M.ss_agreement(labels, "H" * 19)

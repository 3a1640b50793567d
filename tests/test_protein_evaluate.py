"""``diffsci protein evaluate`` scores what it is given: one sample per chain, never split (issue 13).

Regression tests for what was seen: a design with a long CA-CA gap scored as several pieces
(7 rows for 3 designs), pieces reporting better geometry than the whole chain, secondary
structure differing from biotite's P-SEA on the whole chain, a NaN file aborting the folder,
``samples.csv`` warned about, non-strict JSON, a dense L x L path for long chains. References
are independent numpy computations and direct biotite / pydssp calls.
"""

from __future__ import annotations

import gzip
import io
import json
import pathlib
import tracemalloc

import numpy as np
import pytest
from backbones import ideal_backbone

from diffsci.core.cli import main
from diffsci.protein import metrics as M
from diffsci.protein.io.pdb import write_backbone_pdb

pytest.importorskip("tmtools", reason="tmtools (dev extra) is not installed")

DSSP_DIR = pathlib.Path(__file__).parent / "data" / "dssp"


# ----------------------------------------------------------------------------- fixtures


def broken_hairpin() -> np.ndarray:
    """A 40-residue chain: an extended strand, then (after a 20+ Å jump) the same strand run back
    2.6 Å beside the first, so non-adjacent CA pairs across the gap clash; Shape (L, 4, 3)."""
    strand = ideal_backbone(20, -120.0, 130.0)
    ca = strand[:, 1]
    axis = (ca[-1] - ca[0]) / np.linalg.norm(ca[-1] - ca[0])
    side = np.cross(axis, [0.0, 0.0, 1.0])
    side /= np.linalg.norm(side)
    back = strand[::-1] + 2.6 * side  # runs from residue 19's side back to residue 0's
    back = back[10:]  # starts beside residue 9: 20+ Å from residue 19
    return np.concatenate([strand, back, ideal_backbone(10, -57.0, -47.0) + ca[0] - 30.0])


def _run(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def _strict_json(path: pathlib.Path):
    def refuse(name):
        raise AssertionError(f"{path}: non-JSON constant {name}")

    return json.loads(path.read_text(), parse_constant=refuse)


def _gap_design(length: int = 40, gap_after: int = 19, jump: float = 3.0) -> np.ndarray:
    x = ideal_backbone(length, -57.0, -47.0)
    x[gap_after + 1:] += np.array([jump, 0.0, 0.0])
    return x


# ----------------------------------------------------------------------------- one sample per chain


def test_three_designs_give_three_rows_named_by_file(tmp_path, capsys):
    """Seen: 3 designs -> 7 rows (`len70_001.pdb:A#1`, `A#2`, ...) and a warning about samples.csv."""
    d = tmp_path / "s"
    d.mkdir()
    write_backbone_pdb(d / "len40_000.pdb", ideal_backbone(40, -57.0, -47.0))
    write_backbone_pdb(d / "len40_001.pdb", _gap_design(40, 19, 9.0))  # one break
    two = _gap_design(40, 9, 9.0)
    two[30:] += np.array([0.0, 9.0, 0.0])  # and a second one
    write_backbone_pdb(d / "len40_002.pdb", two)
    (d / "samples.csv").write_text("file,length,seed,index,seconds\nlen40_000.pdb,40,1,0,1.0\n")
    (d / "len40_000.json").write_text('{"contig": "40"}\n')  # a per-design record
    out = tmp_path / "m.json"
    code, stdout, err = _run(["protein", "evaluate", str(d), "--out", str(out), "--quiet"], capsys)
    assert code == 0, err
    assert "warning" not in err, err
    rep = _strict_json(out)
    rows = rep["per_sample"]
    assert [r["file"] for r in rows] == ["len40_000.pdb", "len40_001.pdb", "len40_002.pdb"]
    assert [r["length"] for r in rows] == [40, 40, 40]
    assert [r["chain_breaks"] for r in rows] == [0, 1, 2]
    for r, x in zip(rows, (ideal_backbone(40, -57.0, -47.0), _gap_design(40, 19, 9.0), two)):
        gaps = np.linalg.norm(np.diff(x[:, 1], axis=0), axis=-1)
        assert r["ca_ca_max"] == pytest.approx(gaps.max(), abs=2e-3)  # PDB keeps 3 decimals
        assert r["chain_breaks"] == int(np.sum(gaps > 4.2))
    s = rep["summary"]
    assert s["n_samples"] == 3 and s["n_files"] == 3 and s["n_broken"] == 2
    assert s["broken_fraction"] == pytest.approx(2 / 3)
    assert rep["warnings"] == []
    assert any("len40_001.pdb" in n and "break" in n for n in rep["notes"])
    assert "3 samples" in stdout and "2 with a chain break" in stdout
    csv_lines = out.with_suffix(".csv").read_text().splitlines()
    assert len(csv_lines) == 4 and "chain_breaks" in csv_lines[0].split(",")


def test_whole_chain_geometry_not_pieces(tmp_path):
    """Seen: pieces report better CA-CA geometry, fewer clashes and another SSE than the whole chain."""
    import biotite.structure as struc
    from biotite.structure.io import pdb

    x = broken_hairpin()
    write_backbone_pdb(tmp_path / "hairpin.pdb", x)
    (row,) = M.evaluate_folder(tmp_path, progress=False)["per_sample"]
    atoms = pdb.PDBFile.read(str(tmp_path / "hairpin.pdb")).get_structure(model=1)
    ca = atoms.coord[atoms.atom_name == "CA"].astype(np.float64)
    assert row["length"] == len(x) == len(ca)
    d = np.linalg.norm(np.diff(ca, axis=0), axis=-1)
    assert row["chain_breaks"] == int(np.sum(d > 4.2)) == 2
    assert row["ca_ca_ok"] == pytest.approx(np.mean(np.abs(d - 3.8) <= 0.3))
    assert row["ca_ca_mean"] == pytest.approx(d.mean())
    full = np.linalg.norm(ca[:, None] - ca[None], axis=-1)  # tiny L: the dense reference is fine here
    i, j = np.triu_indices(len(ca), k=2)
    clashes = int(np.sum(full[i, j] < 3.0))
    assert clashes > 0  # the two strands clash across the gap: pieces alone would show none
    assert row["clashes"] == clashes
    assert row["clash_fraction"] == pytest.approx(clashes / i.size)
    sep = np.abs(np.arange(len(ca))[:, None] - np.arange(len(ca))[None])
    assert row["ca_contacts"] == pytest.approx(((full < 8.0) & (sep >= 6)).sum() / len(ca))
    sse = struc.annotate_sse(atoms)  # biotite's P-SEA on the whole chain, directly
    assert row["helix"] == pytest.approx(np.mean(sse == "a"))
    assert row["strand"] == pytest.approx(np.mean(sse == "b"))


def test_psea_equals_biotite_on_real_chains():
    import biotite.structure as struc
    from biotite.structure.io import pdb

    from diffsci.protein.io.structure import read_structure_chains

    for path in sorted(DSSP_DIR.glob("*.pdb.gz"))[:4]:
        (chain,) = read_structure_chains(path, on_break="keep")
        with gzip.open(path, "rt") as fh:
            atoms = pdb.PDBFile.read(io.StringIO(fh.read())).get_structure(model=1, altloc="first")
        atoms = atoms[struc.filter_amino_acids(atoms) & (atoms.chain_id == chain.chain_id)]
        # the residues the reader keeps (complete backbones) are the ones biotite labels
        keep = np.isin(atoms.res_id, chain.res_ids)
        ref = struc.annotate_sse(atoms[keep])
        got = M.psea_labels(chain.coords, chain.res_ids, chain.ins_codes)
        np.testing.assert_array_equal(got, ref)


def test_symmetric_design_chains_are_samples_not_diversity(tmp_path, capsys):
    """Each chain of a multi-chain file is a sample; copies are not TM-aligned with each other."""
    a = ideal_backbone(40, -57.0, -47.0)
    rot = np.array([[-0.5, -np.sqrt(3) / 2, 0], [np.sqrt(3) / 2, -0.5, 0], [0, 0, 1.0]])  # C3 about z
    a = a + np.array([12.0, 0.0, 0.0])
    c3 = np.stack([a, a @ rot.T, a @ rot.T @ rot.T])
    write_backbone_pdb(tmp_path / "sym.pdb", c3, chain_ids=["A", "B", "C"])
    write_backbone_pdb(tmp_path / "mono.pdb", ideal_backbone(40, -120.0, 130.0))
    res = M.evaluate_folder(tmp_path, progress=False)
    names = [r["file"] for r in res["per_sample"]]
    assert names == ["mono.pdb", "sym.pdb:A", "sym.pdb:B", "sym.pdb:C"]
    assert [r["chain"] for r in res["per_sample"]] == ["A", "A", "B", "C"]
    tm = np.array(res["pairwise_tm"], dtype=float)
    assert np.isnan(tm[1:, 1:][~np.eye(3, dtype=bool)]).all()  # copies: not aligned
    assert np.isfinite(tm[0, 1:]).all() and np.isfinite(tm[1:, 0]).all()
    s = res["summary"]
    assert s["n_samples"] == 4 and s["n_files"] == 2
    off = tm[~np.eye(4, dtype=bool)]
    assert s["mean_pairwise_tm"] == pytest.approx(np.nanmean(off))
    assert s["mean_pairwise_tm"] < 0.9  # a helix vs a strand, not copies at TM 1.0
    for t in ("tm0.5", "tm0.6"):
        labels = res["cluster_labels"][t]
        assert labels[1] == labels[2] == labels[3]  # one design, one cluster
        assert s[f"cluster_fraction_{t}"] == pytest.approx(s[f"clusters_{t}"] / 2)
    out = tmp_path / "m.json"
    code, _, err = _run(["protein", "evaluate", str(tmp_path), "--out", str(out), "--chains", "B", "--quiet"], capsys)
    assert code == 0, err
    rep = _strict_json(out)
    assert [r["file"] for r in rep["per_sample"]] == ["sym.pdb:B"]  # mono.pdb has no chain B
    assert any("mono.pdb" in w and "'B'" in w for w in rep["warnings"])
    assert rep["pairwise_tm"] == [[1.0]]


# ----------------------------------------------------------------------------- real multi-chain files


def _atom_line(rec, serial, name, alt, res, chain, resi, ins, xyz, element, occ=1.0):
    return (f"{rec:<6s}{serial:5d} {name:<4s}{alt:1s}{res:>3s} {chain:1s}{resi:4d}{ins:1s}   "
            f"{xyz[0]:8.3f}{xyz[1]:8.3f}{xyz[2]:8.3f}{occ:6.2f}{20.0:6.2f}          {element:>2s}")


def real_shaped_pdb() -> tuple[str, dict]:
    """PDB text as deposited entries are written: chain A (40-residue helix, residues 11-14 missing,
    an insertion code 30A, an altloc pair, a ligand HETATM and waters), chain B (a 30-residue
    strand), chain C (a DNA strand: not a protein chain), waters in chain W.
    Returns the text and the expected per-chain backbones."""
    helix = ideal_backbone(41, -57.0, -47.0)
    strand = ideal_backbone(30, -120.0, 130.0) + np.array([30.0, 0.0, 0.0])
    lines, serial = ["HEADER    TEST COMPLEX", "CRYST1  100.000  100.000  100.000  90.00  90.00  90.00 P 1           1"], 1
    kept_a, ids_a = [], []
    numbering = list(range(1, 31)) + [(30, "A")] + list(range(31, 41))  # 41 residues, one insertion code
    for k, num in enumerate(numbering):
        resi, ins = (num if isinstance(num, int) else num[0]), ("" if isinstance(num, int) else num[1])
        if 11 <= resi <= 14:
            continue  # unmodelled residues: a gap
        for a, (name, el) in enumerate((("N", "N"), ("CA", "C"), ("C", "C"), ("O", "O"))):
            xyz = helix[k, a]
            if resi == 20 and name == "CA":  # two conformers: A is read (first altloc), B is 1 Å away
                lines.append(_atom_line("ATOM", serial, name, "A", "ALA", "A", resi, ins, xyz, el, 0.6))
                serial += 1
                lines.append(_atom_line("ATOM", serial, name, "B", "ALA", "A", resi, ins, xyz + 1.0, el, 0.4))
            else:
                lines.append(_atom_line("ATOM", serial, name, "", "ALA", "A", resi, ins, xyz, el))
            serial += 1
        kept_a.append(helix[k])
        ids_a.append((resi, ins))
    lines.append(f"TER   {serial:5d}      ALA A  40")
    serial += 1
    for k in range(30):
        for a, (name, el) in enumerate((("N", "N"), ("CA", "C"), ("C", "C"), ("O", "O"))):
            lines.append(_atom_line("ATOM", serial, name, "", "GLY", "B", k + 101, "", strand[k, a], el))
            serial += 1
    lines.append(f"TER   {serial:5d}      GLY B 130")
    serial += 1
    for k, base in enumerate(("DA", "DC", "DG")):
        for name, el, off in (("P", "P", 0.0), ("C1'", "C", 1.5), ("N9", "N", 3.0)):
            lines.append(_atom_line("ATOM", serial, name, "", base, "C", k + 1, "", np.array([-30.0, 6.0 * k, off]), el))
            serial += 1
    for k in range(6):  # a ligand bound to chain A
        lines.append(_atom_line("HETATM", serial, f"C{k + 1}", "", "LIG", "A", 901, "", np.array([5.0, 5.0, 1.4 * k]), "C"))
        serial += 1
    for k in range(3):
        lines.append(_atom_line("HETATM", serial, "O", "", "HOH", "A", 1001 + k, "", np.array([-5.0, 3.0 * k, 0.0]), "O"))
        serial += 1
        lines.append(_atom_line("HETATM", serial, "O", "", "HOH", "W", 1 + k, "", np.array([-9.0, 3.0 * k, 0.0]), "O"))
        serial += 1
    lines.append("END")
    return "\n".join(lines) + "\n", {"A": (np.array(kept_a), ids_a), "B": (strand, [(k + 101, "") for k in range(30)])}


def _to_cif(pdb_path: pathlib.Path, cif_path: pathlib.Path) -> None:
    from biotite.structure.io import pdb, pdbx

    atoms = pdb.PDBFile.read(str(pdb_path)).get_structure(model=1, altloc="first")
    f = pdbx.CIFFile()
    pdbx.set_structure(f, atoms)
    f.write(str(cif_path))


@pytest.mark.parametrize("fmt", ["pdb", "cif"])
def test_real_multichain_file(tmp_path, capsys, fmt):
    import biotite.structure as struc

    text, expected = real_shaped_pdb()
    d = tmp_path / "real"
    d.mkdir()
    src = tmp_path / "1abc.pdb"
    src.write_text(text)
    name = f"1abc.{fmt}"
    if fmt == "pdb":
        (d / name).write_text(text)
    else:
        _to_cif(src, d / name)
    res = M.evaluate_folder(d, progress=False)
    rows = res["per_sample"]
    assert [r["file"] for r in rows] == [f"{name}:A", f"{name}:B"]  # C (DNA) and W (water) are no samples
    a, b = rows
    x_a, ids_a = expected["A"]
    assert a["length"] == len(x_a) == 37  # 41 - 4 unmodelled, the insertion code kept, one altloc read
    gaps = np.linalg.norm(np.diff(x_a[:, 1], axis=0), axis=-1)
    assert a["chain_breaks"] == int(np.sum(gaps > 4.2)) == 1  # the unmodelled stretch: reported, not split
    assert a["ca_ca_max"] == pytest.approx(gaps.max(), abs=2e-3)
    assert b["chain_breaks"] == 0 and b["length"] == 30
    assert any("'C'" in n and "not a protein chain" in n for n in res["notes"]), res["notes"]
    assert res["warnings"] == []
    # P-SEA equals biotite's annotate_sse on the whole chain A read from the file (gap by residue number)
    from diffsci.protein.io.structure import _load_atoms

    atoms = _load_atoms(d / name)
    chain_a = atoms[(atoms.chain_id == "A") & struc.filter_amino_acids(atoms)]
    sse = struc.annotate_sse(chain_a)
    assert len(sse) == 37
    assert a["helix"] == pytest.approx(np.mean(sse == "a")) and a["strand"] == pytest.approx(np.mean(sse == "b"))
    # --chains selects; a chain that is absent skips the file with one warning
    out = tmp_path / "m.json"
    code, _, err = _run(["protein", "evaluate", str(d), "--out", str(out), "--chains", "A", "--quiet"], capsys)
    assert code == 0, err
    assert [r["file"] for r in _strict_json(out)["per_sample"]] == [f"{name}:A"]
    code, _, err = _run(["protein", "evaluate", str(d), "--out", str(out), "--chains", "B,Z"], capsys)
    assert code == 2 and "'Z'" in err and "Traceback" not in err  # the only file skipped: nothing to score
    assert err.count("warning:") == 1


# ----------------------------------------------------------------------------- robustness


def test_nan_file_is_skipped_with_one_warning(tmp_path, capsys):
    """Seen: a file with NaN coordinates aborted the whole folder."""
    d = tmp_path / "s"
    d.mkdir()
    write_backbone_pdb(d / "good.pdb", ideal_backbone(30, -57.0, -47.0))
    write_backbone_pdb(d / "nan.pdb", ideal_backbone(30, -57.0, -47.0))
    lines = (d / "nan.pdb").read_text().splitlines()
    k = next(i for i, ln in enumerate(lines) if ln.startswith("ATOM") and ln[12:16].strip() == "CA" and ln[22:26].strip() == "7")
    lines[k] = lines[k][:30] + f"{'nan':>8s}" + lines[k][38:]
    (d / "nan.pdb").write_text("\n".join(lines) + "\n")
    out = tmp_path / "m.json"
    code, _, err = _run(["protein", "evaluate", str(d), "--out", str(out), "--quiet"], capsys)
    assert code == 0, err
    warns = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    assert len(warns) == 1 and "nan.pdb" in warns[0] and "NaN" in warns[0] and "7" in warns[0]
    assert [r["file"] for r in _strict_json(out)["per_sample"]] == ["good.pdb"]


def test_json_is_strict(tmp_path, capsys):
    """Undefined metrics (a 2-residue chain; copies of one file) are null, never NaN."""
    write_backbone_pdb(tmp_path / "tiny.pdb", ideal_backbone(2, -57.0, -47.0))
    write_backbone_pdb(tmp_path / "pair.pdb", np.stack([ideal_backbone(20, -57, -47), ideal_backbone(20, -57, -47) + 20.0]),
                       chain_ids=["A", "B"])
    out = tmp_path / "out" / "m.json"
    out.parent.mkdir()
    code, _, err = _run(["protein", "evaluate", str(tmp_path), "--out", str(out), "--quiet"], capsys)
    assert code == 0, err
    text = out.read_text()
    assert "NaN" not in text and "Infinity" not in text
    rep = _strict_json(out)
    tiny = next(r for r in rep["per_sample"] if r["file"] == "tiny.pdb")
    assert tiny["rama_alpha"] is None and tiny["length"] == 2
    names = [r["file"] for r in rep["per_sample"]]
    assert names == ["pair.pdb:A", "pair.pdb:B", "tiny.pdb"]
    assert rep["pairwise_tm"][0][1] is None and rep["pairwise_tm"][1][0] is None  # copies: not aligned
    assert rep["pairwise_tm"][0][2] is None  # TM-align needs 3 residues


# Per-design fields undefined for a chain of 1 or 2 residues (no denominator), from their definitions:
# consecutive CA-CA (L - 1 distances), non-adjacent pairs ((L-1)(L-2)/2), peptide-bond terms (L - 1),
# Ramachandran (L - 2 interior residues), sheet pairing (no E / P-SEA strand residue), contact order
# (no contact at separation >= 6), novelty (no reference given). Every other field is a count, or a
# fraction or mean over the L >= 1 residues, and is defined.
UNDEFINED_SHORT = {
    1: {"ca_ca_max", "ca_ca_mean", "ca_ca_ok", "clash_fraction", "bond_C_N_mad", "angle_CA_C_N_mad",
        "angle_C_N_CA_mad"},
    2: {"clash_fraction"},
}
UNDEFINED_BOTH = {"rama_alpha", "rama_beta", "rama_left", "rama_other", "paired_fraction", "psea_strand_paired",
                  "contact_order", "absolute_contact_order", "max_tm_reference",
                  "interchain_clashes", "interchain_min_ca", "interface_residues"}  # one chain per design


def test_one_and_two_residue_chains_have_null_exactly_where_undefined(tmp_path, capsys):
    """Seen: a 1-residue chain had clash_fraction 0.0 where the docs say undefined values are null."""
    for n in (1, 2):
        write_backbone_pdb(tmp_path / f"len{n}.pdb", ideal_backbone(n, -57.0, -47.0))
    out = tmp_path / "out" / "m.json"
    out.parent.mkdir()
    code, _, err = _run(["protein", "evaluate", str(tmp_path), "--out", str(out), "--quiet"], capsys)
    assert code == 0, err
    rep = _strict_json(out)
    for row, n in zip(rep["per_sample"], (1, 2)):
        assert row["length"] == n
        nulls = {k for k in M.NUMERIC_FIELDS if row[k] is None}
        assert nulls == UNDEFINED_SHORT[n] | UNDEFINED_BOTH, (n, nulls)
        assert row["clashes"] == 0 and row["chain_breaks"] == 0 and row["ca_contacts"] == 0
        ca = ideal_backbone(n, -57.0, -47.0)[:, 1]
        assert row["radius_of_gyration"] == pytest.approx(np.sqrt(((ca - ca.mean(0)) ** 2).sum(1).mean()), abs=2e-3)
    assert rep["summary"]["mean_clash_fraction"] is None  # no chain with a defined fraction
    csv_head, *csv_rows = out.with_suffix(".csv").read_text().splitlines()
    k = csv_head.split(",").index("clash_fraction")
    assert [r.split(",")[k] for r in csv_rows] == ["", ""]


def test_index_files_are_not_warned_about(tmp_path, capsys):
    """Seen: evaluate warned about the samples.csv that sample writes."""
    write_backbone_pdb(tmp_path / "len40_000.pdb", ideal_backbone(40, -57.0, -47.0))
    (tmp_path / "samples.csv").write_text("file,length\nlen40_000.pdb,40\n")
    (tmp_path / "len40_000.json").write_text("{}\n")
    out = tmp_path / "m.json"  # the report written into the folder itself, then evaluated again
    assert _run(["protein", "evaluate", str(tmp_path), "--out", str(out), "--quiet"], capsys)[0] == 0
    (tmp_path / "notes.txt").write_text("a stray file\n")
    code, _, err = _run(["protein", "evaluate", str(tmp_path), "--out", str(out), "--quiet"], capsys)
    assert code == 0
    warns = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    assert len(warns) == 1 and "notes.txt" in warns[0]  # m.json, m.csv, samples.csv, len40_000.json: silent


def test_long_chain_has_no_dense_pair_arrays():
    """Seen: a 10,000-residue chain peaked at 18 GB (dense L x L arrays in clashes, contacts, DSSP).
    A 3,000-residue chain: a dense float64 L x L array alone is 72 MB; the whole evaluation stays far below."""
    rng = np.random.default_rng(0)
    pieces, start = [], np.zeros(3)
    for k in range(100):  # 100 helices of 30 residues on a 3-D grid: compact, many neighbours
        h = ideal_backbone(30, -57.0, -47.0) if k == 0 else pieces[0]
        pos = np.array([k % 5, (k // 5) % 5, k // 25], dtype=float) * 11.0
        pieces.append(h - h[:, 1].mean(axis=0) + pos + rng.normal(scale=0.01, size=3))
    x = np.concatenate(pieces)
    assert x.shape == (3000, 4, 3)
    M.sample_metrics(x[:50])  # imports outside the measurement
    tracemalloc.start()
    try:
        m = M.sample_metrics(x)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 30e6, peak / 1e6  # measured 14 MB (the old code: several dense L x L arrays, > 200 MB)
    assert m["length"] == 3000 and m["chain_breaks"] == 99
    assert m["dssp_helix"] > 0.8 and m["helix"] > 0.8


def test_in_memory_items_are_each_their_own_design():
    """Only chains of one *file* are grouped: in-memory items (even with equal names) are all compared."""
    h = ideal_backbone(30, -57.0, -47.0)
    res = M.evaluate_structures([("x", h), ("x", h + 5.0), ("y", ideal_backbone(30, -120.0, 130.0))], progress=False)
    tm = np.array(res["pairwise_tm"], dtype=float)
    assert np.isfinite(tm).all() and tm[0, 1] == pytest.approx(1.0, abs=1e-6)
    assert res["summary"]["n_files"] == 3 and [r["source_file"] for r in res["per_sample"]] == [None] * 3
    sub = M.subset_evaluation(res, [0, 1])
    assert sub["summary"]["clusters_tm0.5"] == 1 and sub["summary"]["cluster_fraction_tm0.5"] == pytest.approx(0.5)


def test_sheet_and_contact_order_columns(tmp_path, capsys):
    """The topology columns come after the columns evaluate wrote before them, in CSV and JSON,
    and equal the library's values (3A4R A: one 5-strand mixed sheet; a helix: no sheet)."""
    import shutil

    d = tmp_path / "s"
    d.mkdir()
    shutil.copy(DSSP_DIR / "3a4rA.pdb.gz", d / "ubl.pdb.gz")
    write_backbone_pdb(d / "helix.pdb", ideal_backbone(30, -57.0, -47.0))
    out = tmp_path / "m.json"
    code, _, err = _run(["protein", "evaluate", str(d), "--out", str(out), "--quiet"], capsys)
    assert code == 0, err
    header = out.with_suffix(".csv").read_text().splitlines()[0].split(",")
    before = ["file", "source_file", "chain", "length", "chain_breaks", "ca_ca_max", "ca_ca_mean", "ca_ca_ok",
              "clashes", "clash_fraction", "radius_of_gyration", "ca_contacts", "helix", "strand", "coil",
              "dssp_helix", "dssp_strand", "dssp_coil", "bond_N_CA_mad", "bond_CA_C_mad", "bond_C_N_mad",
              "angle_N_CA_C_mad", "angle_CA_C_N_mad", "angle_C_N_CA_mad", "rama_alpha", "rama_beta", "rama_left",
              "rama_other", "max_tm_reference"]
    assert header == before + list(M.TOPOLOGY_FIELDS) + ["interchain_clashes", "interchain_min_ca", "interface_residues"]
    rep = _strict_json(out)
    rows = {r["file"]: r for r in rep["per_sample"]}
    ubl, helix = rows["ubl.pdb.gz"], rows["helix.pdb"]
    assert (ubl["sheets"], ubl["strands"], ubl["ladders_parallel"], ubl["ladders_antiparallel"]) == (1, 5, 1, 3)
    assert helix["sheets"] == 0 and helix["paired_fraction"] is None  # NaN -> null
    x = next(smp.coords for smp in M.read_samples(d)[0] if smp.name == "ubl.pdb.gz")
    assert ubl["contact_order"] == pytest.approx(M.contact_order(x)["contact_order"])
    assert rep["summary"]["mean_sheets"] == pytest.approx(0.5)


def test_designs_with_an_ss_request_are_scored_against_it(tmp_path, capsys):
    """A design record NAME.json with ``ss`` (protein sample --ss) gets the DSSP agreement with its
    request, recomputed here from the DSSP labels; a request of the wrong length is a note, a
    record without one adds nothing."""
    d = tmp_path / "ss"
    d.mkdir()
    with gzip.open(DSSP_DIR / "3a4rA.pdb.gz", "rb") as f:
        (d / "ubl.pdb").write_bytes(f.read())
    write_backbone_pdb(d / "helix.pdb", ideal_backbone(30, -57.0, -47.0))
    write_backbone_pdb(d / "plain.pdb", ideal_backbone(20, -57.0, -47.0))
    write_backbone_pdb(d / "short.pdb", ideal_backbone(20, -57.0, -47.0))
    samples = {s.name: s.coords for s in M.read_samples(d)[0]}
    n_ubl = len(samples["ubl.pdb"])
    helix_request = "LL" + "H" * 26 + "LL"
    ubl_request = ("E" * 10 + "H" * 10 + "L" * n_ubl)[:n_ubl]
    for name, rec in (("helix", {"ss": helix_request}), ("ubl", {"ss": ubl_request}), ("plain", {"seed": 0}),
                      ("short", {"ss": "H" * 19})):
        (d / f"{name}.json").write_text(json.dumps(rec))
    out = tmp_path / "m.json"
    code, _, err = _run(["protein", "evaluate", str(d), "--out", str(out)], capsys)
    assert code == 0, err
    assert "short.pdb: its ss request (short.json) has 19 letters for 20 residues; not scored" in err
    rep = _strict_json(out)
    rows = {r["file"]: r for r in rep["per_sample"]}
    assert "ss_agreement" not in rows["plain.pdb"] and "ss_agreement" not in rows["short.pdb"]
    for name, request in (("helix.pdb", helix_request), ("ubl.pdb", ubl_request)):
        got = np.where(M.dssp_labels(samples[name]) == "-", "L", M.dssp_labels(samples[name]))
        want = np.array(list(request))
        assert rows[name]["ss_request"] == request
        assert rows[name]["ss_agreement"] == pytest.approx(np.mean(got == want))
        assert rows[name]["ss_agreement_H"] == pytest.approx(np.mean(got[want == "H"] == "H"))
    assert rows["helix.pdb"]["ss_agreement_E"] is None  # nothing requested as E: NaN -> null
    assert 0 < rows["ubl.pdb"]["ss_agreement_E"] < 1 and rows["helix.pdb"]["ss_agreement_H"] > 0.8
    summary = rep["summary"]
    assert summary["n_ss_requests"] == 2
    assert summary["mean_ss_agreement"] == pytest.approx((rows["helix.pdb"]["ss_agreement"]
                                                          + rows["ubl.pdb"]["ss_agreement"]) / 2)

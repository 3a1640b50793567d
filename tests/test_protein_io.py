"""Reading and writing backbones: formats, breaks, odd residues, bad input, the prepare CLI."""

from __future__ import annotations

import gzip
import pathlib

import biotite.structure as struc
import numpy as np
import pytest
from biotite.structure.io import pdb, pdbx

from diffsci.core.cli import main
from diffsci.core.errors import DiffsciError
from diffsci.protein.io.dataset import bundled_dataset_path, load_dataset
from diffsci.protein.io.pdb import write_backbone_pdb
from diffsci.protein.io.structure import BackboneChain, read_report, read_structure_chains

ONE_TO_THREE = {
    "A": "ALA", "R": "ARG", "N": "ASN", "D": "ASP", "C": "CYS", "Q": "GLN", "E": "GLU", "G": "GLY",
    "H": "HIS", "I": "ILE", "L": "LEU", "K": "LYS", "M": "MET", "F": "PHE", "P": "PRO", "S": "SER",
    "T": "THR", "W": "TRP", "Y": "TYR", "V": "VAL",
}  # fmt: skip


@pytest.fixture(scope="module")
def chain() -> BackboneChain:
    ds = load_dataset(bundled_dataset_path())
    i = int(np.argmin(np.abs(ds.lengths - 60)))  # a short real chain
    return ds.chain(i)


def to_atoms(ch: BackboneChain, chain_id: str = "A") -> struc.AtomArray:
    """A biotite AtomArray with the backbone of ``ch`` (independent of diffsci's writer)."""
    n = len(ch)
    atoms = struc.AtomArray(4 * n)
    atoms.coord = ch.coords.reshape(-1, 3).copy()
    atoms.chain_id[:] = chain_id
    atoms.res_id = np.repeat(np.arange(1, n + 1), 4)
    atoms.res_name = np.repeat([ONE_TO_THREE[a] for a in ch.sequence], 4)
    atoms.atom_name = np.tile(["N", "CA", "C", "O"], n)
    atoms.element = np.tile(["N", "C", "C", "O"], n)
    atoms.hetero[:] = False
    return atoms


def write_pdb_atoms(atoms: struc.AtomArray, path: pathlib.Path) -> pathlib.Path:
    f = pdb.PDBFile()
    f.set_structure(atoms)
    f.write(str(path))
    return path


def test_write_read_round_trip(chain, tmp_path):
    path = tmp_path / "out.pdb"
    write_backbone_pdb(path, chain.coords, sequence=chain.sequence, remarks={"seed": 7, "sampler": "heun"})
    text = path.read_text()
    assert "REMARK 250 seed: 7" in text and "REMARK 250 sampler: heun" in text
    back = read_structure_chains(path)
    assert len(back) == 1
    assert back[0].sequence == chain.sequence
    assert np.abs(back[0].coords - chain.coords).max() < 1e-3
    assert [p.name for p in tmp_path.iterdir()] == ["out.pdb"]  # no temp file left behind


def test_write_default_gly_and_multichain(chain, tmp_path):
    coords = np.stack([chain.coords, chain.coords + 30.0])
    path = tmp_path / "two.pdb"
    write_backbone_pdb(path, coords, chain_ids=["A", "C"])
    back = read_structure_chains(path)
    assert [c.chain_id for c in back] == ["A", "C"]
    assert set(back[0].sequence) == {"G"}
    assert np.abs(back[1].coords - (chain.coords + 30.0)).max() < 1e-3


def test_write_bad_coords_keeps_existing_file(chain, tmp_path):
    path = tmp_path / "keep.pdb"
    write_backbone_pdb(path, chain.coords)
    before = path.read_bytes()
    bad = chain.coords.copy()
    bad[3, 1, 0] = np.nan
    with pytest.raises(DiffsciError, match="NaN"):
        write_backbone_pdb(path, bad)
    with pytest.raises(DiffsciError, match="length 0"):
        write_backbone_pdb(path, np.zeros((0, 4, 3)))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.pdb"]


def test_formats_agree(chain, tmp_path):
    atoms = to_atoms(chain)
    files = [write_pdb_atoms(atoms, tmp_path / "s.pdb")]
    cif = pdbx.CIFFile()
    pdbx.set_structure(cif, atoms)
    cif.write(str(tmp_path / "s.cif"))
    files.append(tmp_path / "s.cif")
    bcif = pdbx.BinaryCIFFile()
    pdbx.set_structure(bcif, atoms)
    bcif.write(str(tmp_path / "s.bcif"))
    files.append(tmp_path / "s.bcif")
    for f in list(files):
        gz = f.with_name(f.name + ".gz")
        gz.write_bytes(gzip.compress(f.read_bytes()))
        files.append(gz)
    read = [read_structure_chains(f) for f in files]
    for r, f in zip(read, files):
        assert len(r) == 1, f
        assert r[0].sequence == chain.sequence, f
        np.testing.assert_array_equal(r[0].res_ids, np.arange(1, len(chain) + 1))
        # PDB rounds to 1e-3 Å; the CIF variants keep more digits
        assert np.abs(r[0].coords - chain.coords).max() < 1e-3, f
    for r in read[1:]:
        assert np.abs(r[0].coords - read[0][0].coords).max() < 1e-3


def test_chain_break_modes(chain, tmp_path):
    atoms = to_atoms(chain)
    removed = atoms[atoms.res_id != 20]
    path = write_pdb_atoms(removed, tmp_path / "gap.pdb")
    pieces = read_structure_chains(path, on_break="split")
    assert [len(p) for p in pieces] == [19, len(chain) - 20]
    assert all(p.chain_id == "A" for p in pieces)
    assert "piece 1/2" in pieces[0].source and "piece 2/2" in pieces[1].source
    np.testing.assert_array_equal(pieces[1].res_ids[:1], [21])
    assert read_structure_chains(path, on_break="skip") == []
    _, report = read_report(path, on_break="skip")
    assert any(r.status == "dropped" and "break" in r.reason for r in report)
    with pytest.raises(DiffsciError, match="gap.pdb"):
        read_structure_chains(path, on_break="error")
    # min_length drops the short piece only
    assert [len(p) for p in read_structure_chains(path, min_length=25)] == [len(chain) - 20]


def test_break_by_distance_without_missing_residue(chain, tmp_path):
    atoms = to_atoms(chain)
    atoms.coord[atoms.res_id > 20] += np.array([5.0, 0.0, 0.0], dtype=np.float32)
    path = write_pdb_atoms(atoms, tmp_path / "moved.pdb")
    _, report = read_report(path)
    assert [r.length for r in report if r.status == "kept"] == [20, len(chain) - 20]
    assert any("CA-CA" in r.reason for r in report)


def test_missing_backbone_atom_reported(chain, tmp_path):
    atoms = to_atoms(chain)
    atoms = atoms[~((atoms.res_id == 10) & (atoms.atom_name == "O"))]
    path = write_pdb_atoms(atoms, tmp_path / "noO.pdb")
    chains, report = read_report(path)
    notes = [r.reason for r in report if r.status == "warning"]
    assert len(notes) == 1 and "10" in notes[0] and "missing O" in notes[0]
    assert [len(c) for c in chains] == [9, len(chain) - 10]


def test_terminal_oxygen_names_and_trailing_ligand(chain, tmp_path):
    atoms = to_atoms(chain)
    last = atoms.res_id == len(chain)
    atoms.atom_name[last & (atoms.atom_name == "O")] = "OT1"  # CHARMM C-terminus
    lig = to_atoms(chain)[:4]  # a HETATM ligand with N/CA/C atoms after the chain
    lig.res_name[:] = "SAH"
    lig.res_id[:] = len(chain) + 1
    lig.hetero[:] = True
    lig.coord += 30.0
    path = write_pdb_atoms(atoms + lig, tmp_path / "ot1.pdb")
    (c,), report = read_report(path)
    assert len(c) == len(chain) and np.abs(c.coords - chain.coords).max() < 1e-3
    assert [r.status for r in report] == ["kept"]


def test_mse_kept_as_met(chain, tmp_path):
    atoms = to_atoms(chain)
    sel = atoms.res_id == 5
    atoms.res_name[sel] = "MSE"
    atoms.hetero[sel] = True
    path = write_pdb_atoms(atoms, tmp_path / "mse.pdb")
    assert "HETATM" in path.read_text()
    (c,) = read_structure_chains(path)
    assert len(c) == len(chain)
    assert c.sequence[4] == "M" and c.sequence[:4] + c.sequence[5:] == chain.sequence[:4] + chain.sequence[5:]


def test_non_standard_residue_breaks_chain(chain, tmp_path):
    atoms = to_atoms(chain)
    atoms.res_name[atoms.res_id == 25] = "SEP"
    path = write_pdb_atoms(atoms, tmp_path / "sep.pdb")
    assert [len(c) for c in read_structure_chains(path)] == [24, len(chain) - 25]


def test_altloc_on_one_atom_higher_occupancy_kept(chain, tmp_path):
    path = tmp_path / "plain.pdb"
    write_backbone_pdb(path, chain.coords[:12], sequence=chain.sequence[:12])
    lines = []
    for line in path.read_text().splitlines():
        if line.startswith("ATOM") and line[12:16] == " CA " and int(line[22:26]) == 5:
            a = line[:16] + "A" + line[17:54] + "  0.60" + line[60:]
            x = float(line[30:38]) + 2.0
            b = line[:16] + "B" + line[17:30] + f"{x:8.3f}" + line[38:54] + "  0.40" + line[60:]
            lines += [a, b]
        else:
            lines.append(line)
    alt = tmp_path / "alt.pdb"
    alt.write_text("\n".join(lines) + "\n")
    (c,) = read_structure_chains(alt)
    assert len(c) == 12
    assert np.abs(c.coords - chain.coords[:12]).max() < 1e-3  # altloc A (0.60), not the shifted B (0.40)


def test_insertion_codes_distinct(chain, tmp_path):
    atoms = to_atoms(chain)
    ids = atoms.res_id.copy()
    ins = np.full(atoms.array_length(), "", dtype="<U1")
    # residues 11, 12, 13 become 10A, 10B, 10C; the numbers after continue from 11
    for r, code in ((11, "A"), (12, "B"), (13, "C")):
        ins[ids == r] = code
        atoms.res_id[ids == r] = 10
    atoms.res_id[ids > 13] -= 3
    atoms.ins_code = ins
    path = write_pdb_atoms(atoms, tmp_path / "ins.pdb")
    (c,) = read_structure_chains(path)
    assert len(c) == len(chain)
    np.testing.assert_array_equal(c.res_ids[9:14], [10, 10, 10, 10, 11])
    assert list(c.ins_codes[9:14]) == ["", "A", "B", "C", ""]


def test_chain_selection(chain, tmp_path):
    coords = np.stack([chain.coords, chain.coords + 40.0])
    path = tmp_path / "ab.pdb"
    write_backbone_pdb(path, coords, chain_ids=["A", "B"])
    (b,) = read_structure_chains(path, chains=["B"])
    assert b.chain_id == "B"
    with pytest.raises(DiffsciError, match="'Z' not found"):
        read_structure_chains(path, chains=["Z"])


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("empty.pdb", b""),
        ("garbage.pdb", b"hello, this is not a structure\n\x00\x01"),
        ("garbage.cif", b"this is not mmCIF at all\n"),
        ("garbage.bcif", b"\x93\xa5hello\x00\x01\x02"),
        ("garbage.pdb.gz", b"not gzip data"),
        ("ligand.pdb", b"HETATM    1  O   HOH A   1       1.000   2.000   3.000  1.00  0.00           O\n"),
    ],
)
def test_bad_files_name_the_file(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DiffsciError, match=name.replace(".", r"\.")):
        read_structure_chains(path)


def test_missing_file(tmp_path):
    with pytest.raises(DiffsciError, match="nope.cif.*does not exist"):
        read_structure_chains(tmp_path / "nope.cif")


def test_prepare_cli_reports_bad_file_and_continues(chain, tmp_path, capsys):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    write_backbone_pdb(src / "good.pdb", chain.coords, sequence=chain.sequence)
    atoms = to_atoms(chain, "B")
    cif = pdbx.CIFFile()
    pdbx.set_structure(cif, atoms[atoms.res_id != 30])  # a break: split in two pieces
    cif.write(str(src / "sub" / "gap.cif"))
    (src / "sub" / "bad.pdb").write_text("garbage\n")
    (src / "notes.txt").write_text("ignored: not a structure file\n")
    out = tmp_path / "ds.npz"
    code = main(["protein", "prepare", str(src), "--out", str(out), "--min-length", "25"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "bad.pdb" in captured.out and "error" in captured.out
    assert "Traceback" not in captured.out + captured.err
    ds = load_dataset(out)
    assert sorted(ds.lengths.tolist()) == sorted([len(chain), 29, len(chain) - 30])
    assert {p["chain"] for p in ds.provenance} == {"A", "B"}


def test_prepare_cli_nothing_usable(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.pdb").write_text("")
    (src / "b.cif").write_text("nonsense\n")
    out = tmp_path / "ds.npz"
    code = main(["protein", "prepare", str(src), "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 2
    err_lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(err_lines) == 1 and err_lines[0].startswith("error:") and "no usable chains" in err_lines[0]
    assert "Traceback" not in captured.out + captured.err
    assert not out.exists()


def test_prepare_cli_missing_source(tmp_path, capsys):
    code = main(["protein", "prepare", str(tmp_path / "absent"), "--out", str(tmp_path / "x.npz")])
    captured = capsys.readouterr()
    assert code == 2 and "absent" in captured.err and "Traceback" not in captured.err


# ----------------------------------------------------------------------- keep mode, NaN coordinates


def test_keep_mode_returns_whole_chain_and_reports_breaks(chain, tmp_path):
    """The evaluation reader: a gap (a missing residue, a long CA-CA) is reported, never split."""
    atoms = to_atoms(chain)
    atoms.coord[atoms.res_id > 40] += np.array([6.0, 0.0, 0.0], dtype=np.float32)
    path = write_pdb_atoms(atoms[atoms.res_id != 20], tmp_path / "gaps.pdb")
    (c,), report = read_report(path, on_break="keep")
    assert len(c) == len(chain) - 1  # every complete residue, in file order
    np.testing.assert_array_equal(c.res_ids, [i for i in range(1, len(chain) + 1) if i != 20])
    np.testing.assert_allclose(c.coords, np.delete(atoms.coord.reshape(-1, 4, 3), 19, axis=0), atol=1e-3)
    (row,) = [r for r in report if r.status == "kept"]
    assert "2 chain break(s) kept, not split" in row.reason
    assert " 19 and " in row.reason and " 21;" in row.reason and " 40 and " in row.reason and row.reason.endswith(" 41")
    # the training reader still splits the same file
    assert len(read_structure_chains(path, on_break="split")) == 3


def _with_nan(path: pathlib.Path, res: int, atom: str = "CA") -> None:
    lines = path.read_text().splitlines()
    k = next(i for i, ln in enumerate(lines)
             if ln.startswith("ATOM") and ln[12:16].strip() == atom and ln[22:26].strip() == str(res))
    lines[k] = lines[k][:38] + f"{'nan':>8s}" + lines[k][46:]
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("on_break", ["split", "skip", "keep"])
def test_nan_coordinates_refused_naming_file_and_residue(chain, tmp_path, on_break):
    path = tmp_path / "nan.pdb"
    write_backbone_pdb(path, chain.coords, sequence=chain.sequence)
    _with_nan(path, 12)
    with pytest.raises(DiffsciError, match=r"nan\.pdb: non-finite .*chain 'A' residue [A-Z]{3} 12 atom CA"):
        read_structure_chains(path, on_break=on_break)
    # a NaN in a chain that is not read does not matter
    two = tmp_path / "two.pdb"
    write_backbone_pdb(two, np.stack([chain.coords, chain.coords + 30.0]), chain_ids=["A", "B"])
    _with_nan(two, 5)  # the first match: chain A
    (b,) = read_structure_chains(two, chains=["B"])
    assert np.isfinite(b.coords).all()


def test_prepare_never_writes_nan(chain, tmp_path, capsys):
    """Seen: prepare wrote NaN coordinates into a dataset."""
    src = tmp_path / "src"
    src.mkdir()
    write_backbone_pdb(src / "good.pdb", chain.coords, sequence=chain.sequence)
    write_backbone_pdb(src / "nan.pdb", chain.coords + 5.0, sequence=chain.sequence)
    _with_nan(src / "nan.pdb", 7)
    out = tmp_path / "ds.npz"
    code = main(["protein", "prepare", str(src), "--out", str(out), "--min-length", "25"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert any("nan.pdb" in ln and "non-finite" in ln for ln in captured.out.splitlines()), captured.out
    ds = load_dataset(out)
    assert len(ds) == 1 and np.isfinite(ds.coords).all()
    # only the NaN file: one clear error, nothing written
    (src / "good.pdb").unlink()
    out2 = tmp_path / "ds2.npz"
    code = main(["protein", "prepare", str(src), "--out", str(out2), "--min-length", "25"])
    captured = capsys.readouterr()
    assert code == 2 and "no usable chains" in captured.err and "non-finite" in captured.out
    assert not out2.exists()


def test_dataset_refuses_nan(chain):
    from diffsci.protein.io.dataset import BackboneDataset

    coords = np.array(chain.coords)
    coords[3, 1, 0] = np.nan
    with pytest.raises(DiffsciError, match="NaN"):
        BackboneDataset(coords=coords, offsets=np.array([0, len(chain)]), sequences=(chain.sequence,),
                        chain_ids=("A",), res_ids=np.asarray(chain.res_ids), ins_codes=np.asarray(chain.ins_codes),
                        provenance=({},), split=("train",), cluster_ids=np.array([0]))


# ----------------------------------------------------------------------- truncated records (issue 27)


def _cut_line(path: pathlib.Path, res: int, atom: str, column: int) -> int:
    """Cut the ATOM record of ``atom`` of residue ``res`` after ``column`` characters, as a file
    cut in transit or by a careless edit looks (``-13.684`` becomes ``-1``); returns its line number."""
    lines = path.read_text().splitlines()
    k = next(i for i, ln in enumerate(lines)
             if ln.startswith("ATOM") and ln[12:16].strip() == atom and ln[22:26].strip() == str(res))
    lines[k] = lines[k][:column]
    path.write_text("\n".join(lines) + "\n")
    return k + 1


@pytest.mark.parametrize("column", [48, 40, 33, 57])  # inside z, y, x; inside the occupancy
def test_truncated_coordinate_record_is_refused_naming_file_and_line(chain, tmp_path, column):
    """Seen: a record cut inside its z coordinate (``-13.684`` -> ``-1``) was padded and read as -1.0."""
    path = tmp_path / "cut.pdb"
    write_backbone_pdb(path, chain.coords, sequence=chain.sequence)
    number = _cut_line(path, 9, "CA", column)
    with pytest.raises(DiffsciError, match=rf"cut\.pdb: line {number}: ATOM record cut short at column {column}"):
        read_structure_chains(path, on_break="keep")


def test_short_records_that_are_complete_are_read(chain, tmp_path):
    """Records that end after the coordinates (no occupancy / B-factor, as OPM writes its dummy
    atoms) or after the B-factor (no element column, as older programs write) are complete."""
    path = tmp_path / "short.pdb"
    write_backbone_pdb(path, chain.coords[:10], sequence=chain.sequence[:10])
    lines = path.read_text().splitlines()
    atom = [i for i, ln in enumerate(lines) if ln.startswith("ATOM")]
    for k in atom[:8]:
        lines[k] = lines[k][:54]
    for k in atom[8:16]:
        lines[k] = lines[k][:66]
    path.write_text("\n".join(lines) + "\n")
    (c,) = read_structure_chains(path)
    np.testing.assert_allclose(c.coords, chain.coords[:10], atol=1e-3)


def test_truncated_record_through_the_cli(chain, tmp_path, capsys):
    """``evaluate`` skips the cut file with one warning naming it and the line; ``sample --motif``
    refuses it with one error line (exit 2) before any model is loaded."""
    d = tmp_path / "designs"
    d.mkdir()
    write_backbone_pdb(d / "good.pdb", chain.coords, sequence=chain.sequence)
    write_backbone_pdb(d / "cut.pdb", chain.coords, sequence=chain.sequence)
    number = _cut_line(d / "cut.pdb", 9, "CA", 48)
    code = main(["protein", "evaluate", str(d), "--out", str(tmp_path / "m.json"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 0, err
    warns = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    assert len(warns) == 1 and "cut.pdb" in warns[0] and f"line {number}:" in warns[0], err
    assert "Traceback" not in err
    import json

    assert [r["file"] for r in json.loads((tmp_path / "m.json").read_text())["per_sample"]] == ["good.pdb"]
    out = tmp_path / "out"
    code = main(["protein", "sample", "--checkpoint", str(tmp_path / "no_such.pt"), "--steps", "2", "--quiet",
                 "--motif", str(d / "cut.pdb"), "--contig", "10-20/A5-15/10-20", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("error:") and "cut.pdb" in err and f"line {number}:" in err and "no_such.pt" not in err
    assert not out.exists()


# ----------------------------------------------------------------------- altlocs by occupancy (issue 27)


def _altloc_records(ch: BackboneChain, res: int, shift: np.ndarray):
    """(record fields) per atom of ``ch`` as a deposited entry lists a residue in two conformers:
    interleaved per atom, altloc A (occupancy 0.30, shifted by ``shift``) before B (0.70, in place)."""
    rows = []
    for r, aa, xyz in zip(ch.res_ids, ch.sequence, ch.coords):
        for k, (atom, el) in enumerate((("N", "N"), ("CA", "C"), ("C", "C"), ("O", "O"))):
            if int(r) == res:
                rows.append((atom, el, "A", ONE_TO_THREE[aa], int(r), xyz[k] + shift, 0.30))
                rows.append((atom, el, "B", ONE_TO_THREE[aa], int(r), xyz[k], 0.70))
            else:
                rows.append((atom, el, "", ONE_TO_THREE[aa], int(r), xyz[k], 1.00))
    return rows


def _altloc_pdb(rows, path: pathlib.Path) -> pathlib.Path:
    lines = [f"ATOM  {i + 1:5d}  {atom:<3s}{alt or ' ':1s}{name:>3s} A{r:4d}    {x:8.3f}{y:8.3f}{z:8.3f}"
             f"{occ:6.2f} 20.00           {el:>2s}" for i, (atom, el, alt, name, r, (x, y, z), occ) in enumerate(rows)]
    path.write_text("\n".join(lines) + "\nTER\nEND\n")
    return path


def _altloc_cif(rows, path: pathlib.Path, occupancy: bool = True) -> pathlib.Path:
    """The mmCIF atom_site loop of the same records, as the PDB writes it (label_alt_id '.' when none)."""
    cols = ["group_PDB", "id", "type_symbol", "label_atom_id", "label_alt_id", "label_comp_id", "label_asym_id",
            "label_entity_id", "label_seq_id", "pdbx_PDB_ins_code", "Cartn_x", "Cartn_y", "Cartn_z",
            *(["occupancy"] if occupancy else []), "B_iso_or_equiv", "auth_seq_id", "auth_comp_id",
            "auth_asym_id", "auth_atom_id", "pdbx_PDB_model_num"]
    lines = ["data_ALT", "#", "loop_", *[f"_atom_site.{c}" for c in cols]]
    for i, (atom, el, alt, name, r, (x, y, z), occ) in enumerate(rows):
        occ_col = [f"{occ:.2f}"] if occupancy else []
        lines.append(" ".join(["ATOM", str(i + 1), el, atom, alt or ".", name, "A", "1", str(r), "?",
                               f"{x:.3f}", f"{y:.3f}", f"{z:.3f}", *occ_col, "20.00", str(r), name, "A", atom, "1"]))
    path.write_text("\n".join(lines) + "\n#\n")
    return path


def _away_from_neighbours(ch: BackboneChain, res: int, size: float) -> np.ndarray:
    """A shift of residue ``res`` away from its two neighbours' CAs, so that its CA-CA to each
    grows beyond sqrt(3.8^2 + size^2) (> 4.2 Å for size 2)."""
    i = int(np.flatnonzero(ch.res_ids == res)[0])
    ca = ch.coords[:, 1].astype(np.float64)
    d = 2 * ca[i] - ca[i - 1] - ca[i + 1]
    return (size * d / np.linalg.norm(d)).astype(np.float32)


@pytest.mark.parametrize("fmt", ["pdb", "cif"])
def test_altloc_highest_occupancy_is_read(chain, tmp_path, fmt, capsys):
    """Seen: the first altloc (occupancy 0.30) was read over the 0.70 one, and evaluate reported a
    chain break the deposited model does not have."""
    ch = BackboneChain(chain.coords[:30], chain.sequence[:30], "A", np.arange(1, 31), np.full(30, "", "<U1"), "x")
    rows = _altloc_records(ch, 12, _away_from_neighbours(ch, 12, 2.0))
    d = tmp_path / "in"
    d.mkdir()
    path = (_altloc_pdb if fmt == "pdb" else _altloc_cif)(rows, d / f"alt.{fmt}")
    # independently: the lower-occupancy conformer A is the one listed first, and it is broken
    first = (pdb.PDBFile.read(str(path)).get_structure(model=1, altloc="first") if fmt == "pdb" else
             pdbx.get_structure(pdbx.CIFFile.read(str(path)), model=1, altloc="first"))
    ca_first = first.coord[first.atom_name == "CA"]
    assert np.sum(np.linalg.norm(np.diff(ca_first, axis=0), axis=-1) > 4.2) == 2
    (c,), report = read_report(path, on_break="keep")
    np.testing.assert_allclose(c.coords, ch.coords, atol=1e-3)  # conformer B, in place
    assert not any("break" in r.reason for r in report)
    code = main(["protein", "evaluate", str(d), "--out", str(tmp_path / "m.json"), "--quiet"])
    assert code == 0, capsys.readouterr().err
    import json

    (row,) = json.loads((tmp_path / "m.json").read_text())["per_sample"]
    assert row["chain_breaks"] == 0


def test_altloc_ties_and_cif_without_occupancy_read_the_first(chain, tmp_path):
    """Equal occupancies keep the first altloc letter (A); an mmCIF without an occupancy column
    (nothing to choose by) reads the first altloc instead of failing."""
    ch = BackboneChain(chain.coords[:20], chain.sequence[:20], "A", np.arange(1, 21), np.full(20, "", "<U1"), "x")
    shift = np.array([0.5, 0.0, 0.0], dtype=np.float32)
    rows = [(*r[:6], 0.5) if r[2] else r for r in _altloc_records(ch, 8, shift)]
    want = ch.coords.copy()
    want[7] += shift
    (c,) = read_structure_chains(_altloc_pdb(rows, tmp_path / "tie.pdb"))
    np.testing.assert_allclose(c.coords, want, atol=1e-3)
    (c,) = read_structure_chains(_altloc_cif(_altloc_records(ch, 8, shift), tmp_path / "noocc.cif", occupancy=False))
    np.testing.assert_allclose(c.coords, want, atol=1e-3)


# ----------------------------------------------------------------------- prepare: why nothing was usable (issue 27)


def _prepare_error(src, capsys, *extra):
    out = src.parent / "ds.npz"
    code = main(["protein", "prepare", str(src), "--out", str(out), *extra])
    captured = capsys.readouterr()
    err = [ln for ln in captured.err.splitlines() if ln.strip()]
    assert code == 2 and len(err) == 1 and err[0].startswith("error: no usable chains found"), captured.err
    assert "Traceback" not in captured.out + captured.err and not out.exists()
    return err[0]


def test_prepare_names_the_reason_nothing_was_usable(chain, tmp_path, capsys):
    """Seen: the last line was always the generic "no usable chains found", whatever the files had."""
    src = tmp_path / "short"
    src.mkdir()
    for k in range(3):
        write_backbone_pdb(src / f"s{k}.pdb", chain.coords[:30] + 50.0 * k, sequence=chain.sequence[:30])
    line = _prepare_error(src, capsys)
    assert line.endswith("no usable chains found: all 3 files had no protein chain of >= 40 residues"), line
    # one file: named
    one = tmp_path / "one"
    one.mkdir()
    write_backbone_pdb(one / "only.pdb", chain.coords, sequence=chain.sequence)
    line = _prepare_error(one, capsys, "--min-length", "10", "--max-length", "20")
    assert line.endswith(f"{one / 'only.pdb'} had no protein chain of <= 20 residues"), line
    # chains split at a break: the pieces are what is too short
    atoms = to_atoms(chain)
    write_pdb_atoms(atoms[atoms.res_id != 30], one / "only.pdb")
    line = _prepare_error(one, capsys, "--min-length", str(len(chain) - 5))
    assert line.endswith("had no protein chain of >= %d residues between chain breaks" % (len(chain) - 5)), line
    line = _prepare_error(one, capsys, "--on-break", "skip")
    assert line.endswith("only.pdb had only broken chains (skipped: on_break 'skip')"), line
    # unreadable files: the first error is quoted
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.pdb").write_text("")
    (bad / "b.cif").write_text("nonsense\n")
    line = _prepare_error(bad, capsys)
    assert "no usable chains found: all 2 files could not be read (first: " in line and "a.pdb" in line, line
    # different reasons: counted per reason
    for f in src.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    (bad / "a.pdb").unlink()
    line = _prepare_error(bad, capsys)
    assert line.endswith("no usable chains found in 4 files: 3 had no protein chain of >= 40 residues, "
                         "1 could not be read"), line

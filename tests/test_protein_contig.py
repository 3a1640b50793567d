"""RFdiffusion's contig language: brackets, chain breaks (binder beside a fixed target),
insertion codes, total-length ranges, redrawn lengths, and refusals before any sampling."""

import dataclasses

import numpy as np
import pytest
import torch

from diffsci.core.cli import main
from diffsci.core.errors import DiffsciError
from diffsci.protein.io.dataset import bundled_dataset_path, load_dataset
from diffsci.protein.io.pdb import _ONE_TO_THREE
from diffsci.protein.design.contig import (
    MAX_LENGTH,
    MIN_LENGTH,
    Motif,
    contig_length_limits,
    draw_layout,
    load_motif,
    parse_contig,
    parse_length_range,
    resolve_contig,
)


def _atom_lines(chain, cid, serial=1):
    """PDB ATOM records as the PDB writes them: insertion code in column 27, B-factors set."""
    out = []
    for r, ins, aa, xyz in zip(chain.res_ids, chain.ins_codes, chain.sequence, chain.coords):
        for k, (atom, el) in enumerate((("N", "N"), ("CA", "C"), ("C", "C"), ("O", "O"))):
            x, y, z = xyz[k]
            out.append(f"ATOM  {serial:5d}  {atom:<3s} {_ONE_TO_THREE[aa]:>3s} {cid}{int(r):4d}{ins or ' ':1s}   "
                       f"{x:8.3f}{y:8.3f}{z:8.3f}  1.00 25.00           {el:>2s}")
            serial += 1
    out.append(f"TER   {serial:5d}")
    return out, serial + 1


@pytest.fixture(scope="module")
def real_files(tmp_path_factory):
    """Real chains shipped in protein/data written as a deposited entry would be: an antibody
    heavy chain with Kabat insertion codes (7CTH chain H: 52A, 82A-C, 100A) beside a second
    chain B (4E43 chain A, residues 1-99) and waters (HETATM)."""
    ds = load_dataset(bundled_dataset_path())
    src = [ds.chain(i) for i in range(len(ds.split))]
    heavy = next(c for c in src if "7CTH" in c.source and c.chain_id == "H")
    other = next(c for c in src if "4E43" in c.source)
    d = tmp_path_factory.mktemp("contig")
    lines, s = _atom_lines(heavy, "H")
    more, s = _atom_lines(other, "B", s)
    lines += more
    lines += [f"HETATM{s + k:5d}  O   HOH W{k + 1:4d}      {k:6.3f}   1.000   2.000  1.00 30.00           O"
              for k in range(3)]
    path = d / "complex.pdb"
    path.write_text("HEADER    TEST ENTRY\n" + "\n".join(lines) + "\nEND\n")
    return {"path": path, "heavy": heavy, "other": other, "dir": d}


def test_brackets_and_hydra_form_parse_like_the_plain_contig():
    plain = parse_contig("10-40/A163-181/10-40").chains
    for text in ("[10-40/A163-181/10-40]", "'contigmap.contigs=[10-40/A163-181/10-40]'", '["10-40/A163-181/10-40"]',
                 "[ 10-40 / A163-181 / 10-40 ]"):
        assert parse_contig(text).chains == plain
    assert [(s.lo, s.hi, s.chain) for s in parse_contig("[10-40/A163-181/10-40]")] == [
        (10, 40, None), (163, 181, "A"), (10, 40, None)]


def test_chain_break_puts_the_designed_chain_first_and_the_target_after():
    c = parse_contig("[B1-100/0 60-80]")
    assert [[s.label for s in ch] for ch in c.chains] == [["60-80"], ["B1-100"]]
    # the same with a bare space, and a target with two pieces and a designed chain with a motif
    assert parse_contig("B1-100 60-80").chains == c.chains
    c2 = parse_contig("[A5-20/0 10-20/C3-9/10 B1-40/B50-60/0]")
    assert [[s.label for s in ch] for ch in c2.chains] == [["10-20", "C3-9", "10"], ["A5-20"], ["B1-40", "B50-60"]]


def test_insertion_codes_in_residue_references(real_files):
    m = load_motif(real_files["path"])
    h = real_files["heavy"]
    (blocks,) = resolve_contig(parse_contig("10/H52A/10"), m)
    assert blocks[1].keys == (("H", 52, "A"),)
    i = [k for k, (r, ins) in enumerate(zip(h.res_ids, h.ins_codes)) if r == 52 and ins == "A"][0]
    np.testing.assert_array_equal(blocks[1].atoms[0], h.coords[i])
    # a range takes the inserted residues between its ends, in file order
    (blocks,) = resolve_contig(parse_contig("H50-53"), m)
    assert [f"{c}{r}{ins}" for c, r, ins in blocks[0].keys] == ["H50", "H51", "H52", "H52A", "H53"]
    assert blocks[0].names == tuple(_ONE_TO_THREE[a] for a in h.sequence[i - 3:i + 2])
    (blocks,) = resolve_contig(parse_contig("H82-82C"), m)
    assert [f"{r}{ins}" for _, r, ins in blocks[0].keys] == ["82", "82A", "82B", "82C"]


def test_missing_residues_and_nan_are_refused(real_files):
    m = load_motif(real_files["path"])
    with pytest.raises(DiffsciError, match="not in the motif file"):
        resolve_contig(parse_contig("10/B90-120/10"), m)  # chain B ends at 99
    with pytest.raises(DiffsciError, match="not in the motif file"):
        resolve_contig(parse_contig("10/H52D/10"), m)
    chains = []
    for ch in m.chains:  # B20 with NaN coordinates
        coords = ch.coords.copy()
        coords[(np.asarray(ch.res_ids) == 20) & (ch.chain_id == "B")] = np.nan
        chains.append(dataclasses.replace(ch, coords=coords))
    with pytest.raises(DiffsciError, match="B20 have NaN"):
        resolve_contig(parse_contig("10/B17-29/30"), Motif(m.path, tuple(chains)))
    with pytest.raises(DiffsciError, match="give the motif file"):
        resolve_contig(parse_contig("10/B17-29/30"), None)


def test_length_limits_and_infeasible_contigs():
    assert contig_length_limits(resolve_contig(parse_contig("0-70/10/0-70"), None)) == (MIN_LENGTH, 150)
    assert contig_length_limits(resolve_contig(parse_contig("0-70/10/0-70"), None), (80, 120)) == (80, 120)
    with pytest.raises(DiffsciError, match="can never fit"):
        contig_length_limits(resolve_contig(parse_contig("5/13/5"), None))
    with pytest.raises(DiffsciError, match="can never fit"):
        contig_length_limits(resolve_contig(parse_contig("400-600/200"), None))
    with pytest.raises(DiffsciError, match="total-length 200-300"):
        contig_length_limits(resolve_contig(parse_contig("10-20/10/10-20"), None), (200, 300))
    assert parse_length_range("80-120") == (80, 120) and parse_length_range(100) == (100, 100)
    with pytest.raises(DiffsciError):
        parse_length_range("120-80")


def test_every_draw_fits_the_limits(real_files):
    m = load_motif(real_files["path"])
    plan = resolve_contig(parse_contig("0-70/B17-29/0-70"), m)
    lo, hi = contig_length_limits(plan)
    assert (lo, hi) == (40, 153)
    totals = []
    for i in range(200):
        lay = draw_layout(plan, torch.Generator().manual_seed(i), lo, hi)
        assert lo <= lay.length <= hi and len(lay.motif_index) == 13
        n0 = int(lay.drawn.split("/")[0]) if not lay.drawn.startswith("B") else 0
        np.testing.assert_array_equal(lay.motif_index, np.arange(n0, n0 + 13))
        totals.append(lay.length)
    assert min(totals) >= 40 and len(set(totals)) > 30  # redrawn, not clamped to one value
    # a range that rejection sampling almost never hits: the bounded draw still fits exactly
    plan = resolve_contig(parse_contig("0-100/0-100/B17-29/0-100/0-100"), m)
    lo, hi = contig_length_limits(plan, (45, 45))
    for i in range(20):
        lay = draw_layout(plan, torch.Generator().manual_seed(i), lo, hi)
        assert lay.length == 45
        assert all(0 <= int(p) <= 100 for p in lay.drawn.split("/") if not p.startswith("B"))
    a = draw_layout(plan, torch.Generator().manual_seed(3), lo, hi)
    b = draw_layout(plan, torch.Generator().manual_seed(3), lo, hi)
    assert a.drawn == b.drawn  # the design's own generator decides


def test_binder_layout_two_chains_target_fixed(real_files):
    m = load_motif(real_files["path"])
    plan = resolve_contig(parse_contig("[B1-99/0 40-45]"), m)
    lay = draw_layout(plan, torch.Generator().manual_seed(0), *contig_length_limits(plan))
    n = lay.chain_lengths[0]
    assert 40 <= n <= 45 and lay.chain_lengths[1] == 99
    np.testing.assert_array_equal(lay.motif_index, np.arange(n, n + 99))  # the target: all fixed
    assert lay.drawn == f"{n}/0 B1-99"
    (trans, rots), mask = lay.known
    assert mask[0, n:].all() and not mask[0, :n].any()
    assert lay.residue_names[n:] == tuple(_ONE_TO_THREE[a] for a in real_files["other"].sequence)


@pytest.mark.parametrize("args,needle", [
    (["--length", "60", "--contig", "10-20/B17-29/10-20", "--motif", "MOTIF"], "lengths cannot be combined with a contig"),
    (["--contig", "5/B17-29/5", "--motif", "MOTIF"], "can never fit"),
    (["--contig", "10-20/B17-29/10-20", "--motif", "MOTIF", "--total-length", "200-300"], "can never fit"),
    (["--contig", "10-40/B17-29/10-40", "--motif", "MOTIF", "--symmetry", "C3"], "symmetry cannot be combined"),
    (["--contig", "10-40/B90-120/10-40", "--motif", "MOTIF"], "not in the motif file"),
    (["--contig", "10-40/B17-29/10-40", "--motif", "NANFILE"], "NaN"),
    (["--length", "60", "--total-length", "80-90"], "--total-length applies to contig designs"),
])
def test_refused_before_sampling_one_line_nothing_written(real_files, tmp_path, capsys, args, needle):
    """Refused before the model is loaded: a checkpoint that does not exist is never opened."""
    nan = tmp_path / "nan.pdb"
    text = real_files["path"].read_text().splitlines()
    k = next(i for i, line in enumerate(text)
             if line.startswith("ATOM") and line[21] == "B" and line[22:26].strip() == "20" and line[12:16] == " CA ")
    text[k] = text[k][:30] + "     nan" + text[k][38:]
    nan.write_text("\n".join(text) + "\n")
    args = [str(real_files["path"]) if a == "MOTIF" else str(nan) if a == "NANFILE" else a for a in args]
    out = tmp_path / "out"
    code = main(["protein", "sample", "--checkpoint", str(tmp_path / "no_such.pt"), "--steps", "2", "--out", str(out),
                 "--quiet", *args])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "no_such.pt" not in err and not out.exists()


def test_contig_without_motif_designs_chains_of_drawn_lengths():
    plan = resolve_contig(parse_contig("[40-45/0 20]"), None)
    lay = draw_layout(plan, torch.Generator().manual_seed(1), *contig_length_limits(plan))
    assert lay.known is None and len(lay.motif_index) == 0
    assert 40 <= lay.chain_lengths[0] <= 45 and lay.chain_lengths[1] == 20
    assert lay.drawn == f"{lay.chain_lengths[0]}/0 20" and lay.residue_names == ("GLY",) * lay.length
    assert MIN_LENGTH <= lay.length <= MAX_LENGTH


def test_out_that_is_a_file_is_refused(tmp_path, capsys):
    f = tmp_path / "out"
    f.write_text("keep me")
    code = main(["protein", "sample", "--checkpoint", str(tmp_path / "no_such.pt"), "--length", "40", "--out", str(f)])
    err = capsys.readouterr().err
    assert code == 2 and "not a folder" in err and f.read_text() == "keep me"


def test_motif_ss_mismatches_on_a_deposited_entry_with_insertion_codes(real_files):
    """The SS request with a motif from a multi-chain entry (insertion codes, waters): the
    antibody strand H77-H82A (DSSP E in the entry, 82A an insertion code) agrees with E letters
    and is reported residue by residue, labels with their insertion codes, against H letters."""
    from diffsci.protein.design.sampling import motif_ss_mismatches

    motif = load_motif(real_files["path"])
    contig = "10/H77-82A/23"
    assert motif_ss_mismatches(motif, contig, "L10E7L23") == []
    bad = motif_ss_mismatches(motif, contig, "L10H7L23")
    assert [b[0] for b in bad] == ["H77", "H78", "H79", "H80", "H81", "H82", "H82A"]
    assert {b[1:] for b in bad} == {("H", "E")}
    with pytest.raises(DiffsciError, match="give every scaffold segment one length"):
        motif_ss_mismatches(motif, "8-12/H77-82A/23", "L10E7L23")  # letters would not fall on known residues


# ----------------------------------------------------------------------- ranges in file order (issue 27)


@pytest.fixture(scope="module")
def reverse_insertions(real_files, tmp_path_factory):
    """An antibody heavy chain numbered as Kabat-style entries with reverse insertion codes are:
    111, 111A, 111B, 112C, 112B, 112A, 112 (the insertions before 112 count down towards it).
    Built from the shipped 7CTH chain H: its residues 105-111 renumbered so, in file order."""
    h = real_files["heavy"]
    start = int(np.flatnonzero((h.res_ids == 105) & (h.ins_codes == ""))[0])
    numbers = [(111, ""), (111, "A"), (111, "B"), (112, "C"), (112, "B"), (112, "A"), (112, "")]
    res_ids, ins = np.array(h.res_ids[:start + 7]), np.array(h.ins_codes[:start + 7])
    res_ids[start:] = [n for n, _ in numbers]
    ins[start:] = [c for _, c in numbers]
    from diffsci.protein.io.structure import BackboneChain

    ch = BackboneChain(h.coords[:start + 7], h.sequence[:start + 7], "H", res_ids, ins, "7CTH H renumbered")
    lines, _ = _atom_lines(ch, "H")
    path = tmp_path_factory.mktemp("kabat") / "reverse.pdb"
    path.write_text("\n".join(lines) + "\nEND\n")
    return {"path": path, "chain": ch, "start": start}


def test_insertion_code_range_follows_file_order(reverse_insertions):
    """Seen: ``[20/H112C-112A/20]`` refused as "ends before it starts" (C > A alphabetically)
    although 112C comes before 112A in the file."""
    m = load_motif(reverse_insertions["path"])
    ch, start = reverse_insertions["chain"], reverse_insertions["start"]
    blocks = resolve_contig(parse_contig("[20/H112C-112A/20]"), m)[0]
    assert [f"{r}{i}" for _, r, i in blocks[1].keys] == ["112C", "112B", "112A"]
    np.testing.assert_array_equal(blocks[1].atoms, ch.coords[start + 3:start + 6])
    (blocks,) = resolve_contig(parse_contig("H111-112"), m)
    assert [f"{r}{i}" for _, r, i in blocks[0].keys] == ["111", "111A", "111B", "112C", "112B", "112A", "112"]
    (blocks,) = resolve_contig(parse_contig("H111B-112B"), m)
    assert [f"{r}{i}" for _, r, i in blocks[0].keys] == ["111B", "112C", "112B"]
    # the end truly before the start in the file: refused, naming both and the file
    for text, first, second in (("H112A-112C", "H112C", "H112A"), ("H112-111A", "H111A", "H112")):
        with pytest.raises(DiffsciError, match=rf"reverse\.pdb, {first} comes before {second}"):
            resolve_contig(parse_contig(text), m)


def test_insertion_code_range_through_the_cli(reverse_insertions, tmp_path, capsys):
    """``sample --contig [20/H112C-112A/20]`` on the renumbered chain gets past the contig (to the
    checkpoint, which does not exist); the reversed range is one error line naming the file."""
    path = str(reverse_insertions["path"])
    out = tmp_path / "out"
    args = ["protein", "sample", "--checkpoint", str(tmp_path / "no_such.pt"), "--steps", "2", "--quiet",
            "--motif", path, "--out", str(out)]
    code = main([*args, "--contig", "[20/H112C-112A/20]"])
    err = capsys.readouterr().err
    assert code == 2 and "no_such.pt" in err and "before" not in err, err
    code = main([*args, "--contig", "[20/H112A-112C/20]"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "H112C comes before H112A" in err, err
    assert "reverse.pdb" in err and "no_such.pt" not in err and not out.exists()

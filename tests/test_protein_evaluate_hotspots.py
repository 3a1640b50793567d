"""``diffsci protein evaluate`` reports whether the hotspots of a ``protein sample --hotspots``
design are in contact (RFdiffusion's ``ppi.hotspot_res``: a binder CA within 8 Å of the hotspot's CA).

The fixture is a hand-written two-chain PDB with known CA positions (a binder chain A, a target
chain B whose residues carry the motif file's labels T10, T11, T12, T13 through the record's
``mapping``); the expected distances are computed by hand (Pythagoras on those positions).
"""

from __future__ import annotations

import csv
import json
import math
import pathlib

import numpy as np
import pytest

from diffsci.core.cli import main
from diffsci.protein import metrics as M
from diffsci.protein.metrics.geometry import HOTSPOT_CONTACT, hotspot_contacts

pytest.importorskip("tmtools", reason="tmtools (dev extra) is not installed")

#: binder chain A: 4 CA on the line y = 4 Å, 3.8 Å apart
BINDER_CA = [(3.0, 4.0, 0.0), (6.8, 4.0, 0.0), (10.6, 4.0, 0.0), (14.4, 4.0, 0.0)]
#: target chain B (author number, insertion code, CA): on the x axis, the last one far away
TARGET = [(30, "", (0.0, 0.0, 0.0)), (31, "", (3.8, 0.0, 0.0)), (32, "A", (7.6, 0.0, 0.0)), (33, "", (40.0, 0.0, 0.0))]
MAPPING = {"T10": "B30", "T11": "B31", "T12": "B32A", "T13": "B33"}

# By hand: the nearest binder CA of each target CA.
D_T10 = 5.0  # (0,0,0) to (3,4,0): a 3-4-5 triangle
D_T11 = math.sqrt(0.8 ** 2 + 4.0 ** 2)  # (3.8,0,0) to (3,4,0): 4.0792 (to (6.8,4,0): 5.0)
D_T12 = math.sqrt(0.8 ** 2 + 4.0 ** 2)  # (7.6,0,0) to (6.8,4,0) (to (10.6,4,0): 5.0)
D_T13 = math.sqrt(25.6 ** 2 + 4.0 ** 2)  # (40,0,0) to (14.4,4,0): 25.911, not in contact


def _atom(serial, name, chain, resi, ins, xyz, element):
    return (f"ATOM  {serial:5d} {name:<4s} GLY {chain:1s}{resi:4d}{ins:1s}   "
            f"{xyz[0]:8.3f}{xyz[1]:8.3f}{xyz[2]:8.3f}{1.0:6.2f}{0.0:6.2f}          {element:>2s}")


def two_chain_pdb() -> str:
    """PDB text: chain A (binder, residues 1-4) and chain B (target, residues 30, 31, 32A, 33), each
    residue a full backbone (N, CA, C, O) around the CA positions above."""
    lines, serial = [], 1
    residues = [("A", k + 1, "", ca) for k, ca in enumerate(BINDER_CA)] + [("B", r, i, ca) for r, i, ca in TARGET]
    for chain, resi, ins, ca in residues:
        ca = np.asarray(ca)
        for name, off in (("N", (-1.2, 0.6, 0.3)), ("CA", (0.0, 0.0, 0.0)), ("C", (1.2, 0.6, -0.3)),
                          ("O", (1.4, 1.8, -0.4))):
            lines.append(_atom(serial, name, chain, resi, ins, ca + np.asarray(off), name[0]))
            serial += 1
    return "\n".join(lines + ["END", ""])


def _design(folder: pathlib.Path, name: str, hotspots, mapping=MAPPING) -> None:
    (folder / f"{name}.pdb").write_text(two_chain_pdb())
    record = {"file": f"{name}.pdb", "name": name, "mapping": mapping, "hotspots": hotspots,
              "generator": "diffsci protein sample"}
    (folder / f"{name}.json").write_text(json.dumps(record))


def _rows(result):
    return {r["file"]: r for r in result["per_sample"]}


def test_hotspot_contacts_hand_computed():
    ca = np.array([t[2] for t in TARGET])
    got = hotspot_contacts(ca, [1, 3, 0], [np.array(BINDER_CA)])
    np.testing.assert_allclose(got["hotspot_nearest_ca"], [D_T11, D_T13, D_T10], rtol=1e-12)
    assert got["hotspots_in_contact"] == 2
    assert HOTSPOT_CONTACT == 8.0
    # 8 Å exactly is in contact, 8.01 is not; no other chain: NaN and none in contact
    edge = hotspot_contacts(np.zeros((2, 3)), [0, 1], [np.array([[8.0, 0.0, 0.0]]), np.array([[0.0, -8.01, 0.0]])])
    assert edge["hotspots_in_contact"] == 2
    far = hotspot_contacts(np.zeros((1, 3)), [0], [np.array([[0.0, 0.0, 8.01]])])
    assert far["hotspots_in_contact"] == 0
    alone = hotspot_contacts(ca, [0], [])
    assert math.isnan(alone["hotspot_nearest_ca"][0]) and alone["hotspots_in_contact"] == 0


def test_evaluate_folder_reports_hotspots_of_the_target_chain(tmp_path):
    _design(tmp_path, "far", "T11,T13,T10")  # T13 is 25.9 Å from the binder
    _design(tmp_path, "near", "T10,T12")
    (tmp_path / "plain.pdb").write_text(two_chain_pdb())  # no record: no hotspots
    warnings = []
    result = M.evaluate_folder(tmp_path, progress=False, on_warning=warnings.append)
    assert warnings == []
    rows = _rows(result)
    far, near = rows["far.pdb:B"], rows["near.pdb:B"]
    np.testing.assert_allclose(far["hotspot_nearest_ca"], [D_T11, D_T13, D_T10], atol=1e-5)  # float32 coords
    assert far["hotspots_in_contact"] == 2
    np.testing.assert_allclose(near["hotspot_nearest_ca"], [D_T10, D_T12], atol=1e-5)
    assert near["hotspots_in_contact"] == 2
    for name in ("far.pdb:A", "near.pdb:A", "plain.pdb:A", "plain.pdb:B"):
        assert rows[name]["hotspot_nearest_ca"] is None and rows[name]["hotspots_in_contact"] is None
    assert result["summary"]["n_hotspot_designs"] == 2
    assert result["summary"]["n_hotspots_all_in_contact"] == 1  # near only


def test_folder_without_hotspot_records_is_unchanged(tmp_path):
    (tmp_path / "plain.pdb").write_text(two_chain_pdb())
    (tmp_path / "other.pdb").write_text(two_chain_pdb())
    (tmp_path / "other.json").write_text(json.dumps({"mapping": MAPPING, "hotspots": None, "seed": 0}))
    result = M.evaluate_folder(tmp_path, progress=False)
    for row in result["per_sample"]:
        assert "hotspot_nearest_ca" not in row and "hotspots_in_contact" not in row
    assert not any("hotspot" in k for k in result["summary"])
    assert result["warnings"] == []


@pytest.mark.parametrize("hotspots,mapping,why", [
    ("T10,T99", MAPPING, "T99 (not in the record's mapping)"),
    ("T10,T11", {**MAPPING, "T11": "B77"}, "T11 (its residue B77 is not among the chains read)"),
])
def test_a_hotspot_that_cannot_be_found_is_one_warning(tmp_path, hotspots, mapping, why):
    _design(tmp_path, "bad", hotspots, mapping)
    _design(tmp_path, "good", "T13")
    warnings = []
    result = M.evaluate_folder(tmp_path, progress=False, on_warning=warnings.append)
    assert len(warnings) == 1 and why in warnings[0] and "bad.json" in warnings[0], warnings
    assert result["warnings"] == warnings
    rows = _rows(result)
    assert rows["bad.pdb:B"]["hotspot_nearest_ca"] is None and rows["bad.pdb:B"]["hotspots_in_contact"] is None
    assert rows["good.pdb:B"]["hotspots_in_contact"] == 0
    assert result["summary"]["n_hotspot_designs"] == 1 and result["summary"]["n_hotspots_all_in_contact"] == 0


def test_cli_end_to_end(tmp_path, capsys):
    d = tmp_path / "designs"
    d.mkdir()
    _design(d, "far", "T11,T13,T10")
    _design(d, "near", "T10,T12")
    out = tmp_path / "m.json"
    code = main(["protein", "evaluate", str(d), "--out", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "hotspots all in contact (CA within 8 A) in 1 of 2 designs with hotspots" in captured.out
    rep = json.loads(out.read_text())
    rows = _rows(rep)
    np.testing.assert_allclose(rows["far.pdb:B"]["hotspot_nearest_ca"], [D_T11, D_T13, D_T10], atol=1e-5)
    assert rows["far.pdb:A"]["hotspot_nearest_ca"] is None
    assert rep["summary"]["n_hotspot_designs"] == 2 and rep["summary"]["n_hotspots_all_in_contact"] == 1
    table = {r["file"]: r for r in csv.DictReader(out.with_suffix(".csv").open())}
    assert table["far.pdb:B"]["hotspot_nearest_ca"] == f"{D_T11:.3f};{D_T13:.3f};{D_T10:.3f}"
    assert table["far.pdb:B"]["hotspots_in_contact"] == "2"
    assert table["near.pdb:A"]["hotspot_nearest_ca"] == "" and table["near.pdb:A"]["hotspots_in_contact"] == ""

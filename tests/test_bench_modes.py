"""``diffsci bench modes``: each row is what its ``protein sample`` command writes, scored as the
written files say (chains and breaks recounted here from the PDB files with biotite)."""

import json
import shlex

import biotite.structure.io.pdb as pdb
import numpy as np
import pytest

from diffsci.benchmarks.modes_bench import MODES, mode_command, run_benchmark
from diffsci.core.cli import main
from diffsci.core.errors import DiffsciError


def _ca_chains(path):
    atoms = pdb.PDBFile.read(str(path)).get_structure(model=1)
    ca = atoms[atoms.atom_name == "CA"]
    return {c: ca[ca.chain_id == c] for c in dict.fromkeys(ca.chain_id)}


def _broken(ca) -> bool:
    return bool((np.linalg.norm(np.diff(ca.coord, axis=0), axis=1) > 4.2).any())


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("modes")
    return out, run_benchmark(out, modes=["L60", "binder", "binder-hotspots", "C3"], num=1, steps=3, progress=False)


def test_each_row_is_its_protein_sample_command(bench, tmp_path):
    out, payload = bench
    for run in payload["runs"]:
        again = tmp_path / f"{run['mode']}-{run['potentials']}"
        words = shlex.split(run["command"])
        assert words[:3] == ["diffsci", "protein", "sample"]
        assert main(words[1:] + ["--out", str(again), "--quiet"]) == 0
        for pdb_file in sorted((out / "designs" / run["folder"]).glob("*.pdb")):
            ours, theirs = _ca_chains(pdb_file), _ca_chains(again / pdb_file.name)
            assert list(ours) == list(theirs)
            for c in ours:
                np.testing.assert_allclose(ours[c].coord, theirs[c].coord, atol=1e-3)


def test_counts_are_the_written_designed_chains(bench):
    out, payload = bench
    runs = {(r["mode"], r["potentials"]): r for r in payload["runs"]}
    # hotspots act only through their potential: no network-alone row for them
    assert set(runs) == {("L60", "default"), ("L60", "none"), ("binder", "default"), ("binder", "none"),
                         ("binder-hotspots", "default"), ("C3", "default"), ("C3", "none")}
    for (mode, pot), run in runs.items():
        chains = [ca for f in sorted((out / "designs" / run["folder"]).glob("*.pdb")) for ca in _ca_chains(f).values()]
        if mode.startswith("binder"):
            chains = chains[:1]  # chain A designed, chain B the MDM2 target (85 residues, not counted)
            assert run["chains"] == 1 and "interchain_min_ca" in run
        assert run["chains"] == len(chains) == {"C3": 3}.get(mode, 1)
        assert run["broken"] == sum(_broken(ca) for ca in chains)
        longest = max(np.linalg.norm(np.diff(ca.coord, axis=0), axis=1).max() for ca in chains)
        assert run["ca_ca_max"] == pytest.approx(longest, abs=2e-3)
        assert ("none" == run["terms"]) == (pot == "none")
    assert "interface_contacts:1" in runs["binder", "default"]["terms"]
    assert "olig_contacts:1" in runs["C3", "default"]["terms"]
    assert runs["binder-hotspots", "default"]["hotspot_designs"] == 1
    # the smallest inter-chain CA-CA of the C3 ring, recomputed from its file
    ring = list(_ca_chains(next((out / "designs" / runs["C3", "none"]["folder"]).glob("*.pdb"))).values())
    nearest = min(np.linalg.norm(a.coord[:, None] - b.coord[None], axis=-1).min()
                  for i, a in enumerate(ring) for b in ring[i + 1:])
    assert runs["C3", "none"]["interchain_min_ca"][0] == pytest.approx(nearest, abs=2e-3)
    report = (out / "report.md").read_text()
    assert report.count("\n| ") == 1 + len(runs) and (out / "modes.png").stat().st_size > 0
    assert json.loads((out / "results.json").read_text())["command"].startswith("diffsci bench modes --out")


def test_network_alone_turns_the_strand_restraints_off_too():
    ss = next(m for m in MODES if m.name == "ss")
    assert mode_command(ss, "none", steps=5, num=2).endswith(
        "--num 2 --seed 0 --steps 5 --potentials none --strand-restraints 0")
    assert "--strand-restraints" not in mode_command(next(m for m in MODES if m.name == "C6"), "none")


def test_a_rerun_scores_only_its_own_designs(tmp_path):
    first = run_benchmark(tmp_path, modes=["L60"], potentials="none", num=2, steps=2, progress=False)
    again = run_benchmark(tmp_path, modes=["L60"], potentials="none", num=1, steps=2, progress=False)
    assert first["runs"][0]["chains"] == 2 and again["runs"][0]["chains"] == 1
    assert sorted(p.name for p in (tmp_path / "designs" / "L60-none").glob("*.pdb")) == ["len60_000.pdb"]
    (tmp_path / "designs" / "L60-none" / "mine.pdb").write_text("END\n")  # not written by bench modes
    with pytest.raises(DiffsciError, match="1 structure file.*did not write.*mine.pdb"):
        run_benchmark(tmp_path, modes=["L60"], potentials="none", num=1, steps=2, progress=False)


def test_unknown_mode_is_refused(tmp_path):
    with pytest.raises(DiffsciError, match="unknown mode L7; choose from L60"):
        run_benchmark(tmp_path, modes=["L7"], progress=False)

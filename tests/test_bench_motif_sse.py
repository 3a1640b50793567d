"""The motif benchmark's secondary structure of each motif: P-SEA beside DSSP."""

import pathlib

import numpy as np

from diffsci.benchmarks.motif_bench import motif_problems, motif_secondary_structure
from diffsci.protein.io.dataset import bundled_dataset_path, load_dataset
from diffsci.protein.metrics import dssp_labels, psea_labels


def test_motif_secondary_structure_by_psea_and_dssp():
    probs = motif_problems(load_dataset(bundled_dataset_path()), "heldout", max_problems=3)
    for p, ch in probs:
        idx = [int(np.nonzero(ch.res_ids == r)[0][0]) for first, last in p.segments for r in range(first, last + 1)]
        got = motif_secondary_structure(p, ch)
        psea, dssp = psea_labels(ch.coords)[idx], dssp_labels(ch.coords)[idx]
        assert got == {"psea_helix": np.mean(psea == "a"), "psea_strand": np.mean(psea == "b"),
                       "dssp_helix": np.mean(dssp == "H"), "dssp_strand": np.mean(dssp == "E")}
        if p.kind == "helix":  # chosen by P-SEA; DSSP mostly agrees on a 14-residue helix core
            assert got["psea_helix"] == 1.0 and got["dssp_helix"] >= 0.7


def test_report_has_dssp_beside_psea():
    from diffsci.benchmarks.motif_bench import _report

    summary = {"designs": 1, "motif_rmsd_mean": 0.1, "motif_rmsd_max": 0.1, "junctions": 2, "junction_within_0.5": 1.0,
               "junction_within_0.3": 1.0, "ca_ca_ok_mean": 1.0, "clash_fraction_mean": 0.0, "designs_with_breaks": 0,
               "success_rate": 1.0, "mpnn_nll_proxy_mean": None}
    sse = {"psea_helix": 1.0, "psea_strand": 0.0, "dssp_helix": 0.75, "dssp_strand": 0.0}
    payload = {"command": "c", "checkpoint": "k", "split": "heldout", "num": 1, "steps": 3, "seed": 0, "wall_s": 1,
               "problems": [{"problem": {"name": "p", "contig": "[5/A1-14/5]"}, "summary": summary, "motif_sse": sse}],
               "overall": summary}
    text = _report(payload, pathlib.Path("x.png"))
    assert "| motif SS P-SEA a / b | motif SS DSSP H / E |" in text
    assert "| p | `[5/A1-14/5]` | 1.00 / 0.00 | 0.75 / 0.00 | 1 |" in text
    rows = [line for line in text.splitlines() if line.startswith("| p |") or line.startswith("| **all** |")]
    header = next(line for line in text.splitlines() if line.startswith("| problem |"))
    assert all(r.count("|") == header.count("|") for r in rows)

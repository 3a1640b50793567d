"""Design output: per design ``NAME.pdb`` and ``NAME.json`` (its provenance), ``samples.csv``, and
with trajectories ``trajectories/NAME.pdb`` (a multi-model PDB of the model's x0 prediction at
every step; in a subfolder so that ``diffsci protein evaluate OUT`` does not score it as a
design). Motif residues keep their residue names from the motif file and have B-factor 1.00;
designed residues are GLY with 0.00. Every file is written atomically (``diffsci.core.io``).
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from diffsci.core.io import write_json, write_text
from diffsci.protein.io.pdb import write_backbone_models, write_backbone_pdb

__all__ = ["write_designs", "design_record", "existing_outputs", "remove_outputs", "CSV_FIELDS", "TRAJECTORY_DIR"]

CSV_FIELDS = ["file", "length", "seed", "index", "seconds", "total_length", "chains", "contig", "drawn_contig",
              "motif_file", "mapping", "symmetry", "sampler", "steps", "time_power", "rotation_rate", "churn", "churn_tmax",
              "t_stop", "checkpoint", "record", "trajectory"]
B_FACTOR_NOTE = "B-factor 1.00 = motif residue (held from the motif file, its residue name kept); 0.00 = designed (GLY)"
TRAJECTORY_DIR = "trajectories"
# the files this tool writes (and --overwrite may remove)
_OWN = re.compile(r"^(len\d+|motif|contig)_\d{3,}\.(pdb|json)$")


def design_record(d, *, checkpoint: str, trajectory: str | None = None) -> dict:
    """The JSON-able provenance of one design (also the columns of samples.csv)."""
    ids = d.chain_ids()
    lengths = [n for _ in range(d.coords.shape[0]) for n in d.chain_lengths]
    return {
        "file": f"{d.name}.pdb", "name": d.name, "length": d.length, "total_length": d.total_length,
        "chains": dict(zip(ids, lengths)), "seed": d.seed, "index": d.index, "steps": d.steps, "sampler": d.sampler,
        "time_power": d.time_power, "rotation_rate": d.rotation_rate, "churn": d.churn, "churn_tmax": d.churn_tmax,
        "t_stop": d.t_stop, "symmetry": d.symmetry,
        "contig": d.contig, "drawn_contig": d.drawn_contig,
        "total_length_limits": list(d.total_length_limits) if d.total_length_limits else None,
        "motif_file": str(Path(d.motif_file).resolve()) if d.motif_file else None, "mapping": d.residue_mapping(),
        "motif_positions": [d.output_labels()[int(i)] for i in d.motif_index] if d.motif_index is not None else [],
        "b_factor": B_FACTOR_NOTE, "checkpoint": checkpoint, "seconds": round(float(d.seconds), 3),
        "trajectory": trajectory, "generator": "diffsci protein sample",
        "ss": d.ss, "ss_pairs": d.ss_pairs, "guidance_scale": d.guidance_scale,
        "strand_restraints": d.strand_restraints, "topology": d.topology, "potentials": d.potentials,
        "hotspots": d.hotspots,
    }


def existing_outputs(out) -> list[Path]:
    """Designs already in ``out``: any ``*.pdb`` or ``samples.csv`` (case-insensitive)."""
    out = Path(out)
    if not out.is_dir():
        return []
    return sorted(p for p in out.iterdir() if p.is_file() and (p.suffix.lower() == ".pdb" or p.name == "samples.csv"))


def remove_outputs(out) -> list[Path]:
    """Remove the files this tool wrote in ``out`` (designs, records, samples.csv, trajectories);
    returns the ``*.pdb`` files left (not written by this tool)."""
    out = Path(out)
    if not out.is_dir():
        return []
    for folder in (out, out / TRAJECTORY_DIR):
        if folder.is_dir():
            for p in folder.iterdir():
                if p.is_file() and (_OWN.match(p.name) or (folder == out and p.name == "samples.csv")):
                    p.unlink()
    traj = out / TRAJECTORY_DIR
    if traj.is_dir() and not any(traj.iterdir()):
        traj.rmdir()
    return [p for p in existing_outputs(out) if p.name != "samples.csv"]


def _remarks(rec: dict) -> dict:
    keys = ["generator", "seed", "index", "length", "total_length", "chains", "checkpoint", "sampler", "steps",
            "time_power", "rotation_rate", "churn", "churn_tmax", "t_stop", "symmetry", "contig", "drawn_contig", "motif_file", "motif_positions",
            "mapping", "b_factor", "ss", "ss_pairs", "guidance_scale", "strand_restraints", "topology",
            "potentials", "hotspots"]
    out = {}
    for k in keys:
        v = rec.get(k)
        if v is None or v == {} or v == []:
            continue
        if k == "index":
            k = "sample_index"
        if isinstance(v, dict):
            v = ",".join(f"{a}>{b}" if k == "mapping" else f"{a}:{b}" for a, b in v.items())
        elif isinstance(v, list):
            v = ",".join(map(str, v))
        out[k] = v
    out["record"] = rec["file"][:-4] + ".json"
    return out


def write_designs(designs, out_dir, *, checkpoint: str) -> Path:
    """Write per design ``NAME.pdb`` and ``NAME.json`` (and its trajectory when it has one),
    each atomically, then ``samples.csv``. Returns the path of samples.csv."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for d in designs:
        traj = None
        if d.trajectory:
            (out / TRAJECTORY_DIR).mkdir(exist_ok=True)
            traj = f"{TRAJECTORY_DIR}/{d.name}.pdb"
        rec = design_record(d, checkpoint=checkpoint, trajectory=traj)
        names, bfs, ids = d.chain_residue_names(), d.b_factors(), d.chain_ids()
        write_backbone_pdb(out / rec["file"], d.chains(), chain_ids=ids, residue_names=names, b_factors=bfs,
                           remarks=_remarks(rec))
        if traj:
            remarks = {"trajectory": f"x0 prediction of the model at each sampling step (MODEL k = step k, "
                                     f"before constraints) for {rec['file']}",
                       "times": ",".join(f"{t:.4f}" for t in d.trajectory_times)}
            write_backbone_models(out / traj, [d.chains(c) for c in d.trajectory], chain_ids=ids,
                                  residue_names=names, b_factors=bfs, remarks=remarks)
        write_json(out / f"{d.name}.json", rec)
        row = {k: rec.get(k) for k in CSV_FIELDS}
        row.update(seconds=f"{d.seconds:.3f}", record=f"{d.name}.json",
                   chains=" ".join(f"{a}:{n}" for a, n in rec["chains"].items()),
                   mapping=" ".join(f"{a}>{b}" for a, b in rec["mapping"].items()))
        rows.append({k: "" if v is None else v for k, v in row.items()})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    return write_text(out / "samples.csv", buf.getvalue())

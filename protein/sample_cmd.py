"""``diffsci protein sample``: design backbones and write them as PDB files plus samples.csv."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from diffsci.core.errors import DiffsciError
from diffsci.core.utils import atomic_output

__all__ = ["add_parser", "write_designs"]


def write_designs(designs, out_dir, *, checkpoint: str) -> Path:
    """Write one PDB per design (atomically) and then ``samples.csv`` (file, length, seed, seconds)."""
    from diffsci.protein.pdb_io import write_backbone_pdb

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for d in designs:
        path = out / f"{d.name}.pdb"
        n_chains = d.coords.shape[0]
        remarks = {"generator": "diffsci protein sample", "seed": d.seed, "sample_index": d.index,
                   "length": d.length, "chains": n_chains, "checkpoint": checkpoint, "sampler": d.sampler,
                   "steps": d.steps, "time_power": d.time_power}
        if d.rotation_rate is not None:
            remarks["rotation_rate"] = d.rotation_rate
        if d.motif_index is not None:
            remarks["motif_positions"] = ",".join(str(int(i) + 1) for i in d.motif_index)
        coords = d.coords[0] if n_chains == 1 else d.coords
        write_backbone_pdb(path, coords, remarks=remarks, chain_ids=None if n_chains == 1 else list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"[:n_chains]))
        rows.append({"file": path.name, "length": d.length, "seed": d.seed, "index": d.index,
                     "seconds": f"{d.seconds:.3f}"})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["file", "length", "seed", "index", "seconds"])
    writer.writeheader()
    writer.writerows(rows)
    with atomic_output(out / "samples.csv") as tmp:
        tmp.write_text(buf.getvalue())
    return out / "samples.csv"


def _run(args) -> int:
    import torch

    from diffsci.protein.sampling import TIME_POWER, load_model, load_motif, sample_backbones

    torch.set_num_threads(max(1, min(torch.get_num_threads(), os.cpu_count() or 1)))
    if args.motif and not args.contig:
        raise DiffsciError("--motif needs --contig (e.g. --contig 10-20/A5-20/30-40)")
    lengths = args.length or []
    for length in lengths:
        if length < 1:
            raise DiffsciError(f"--length {length}: must be a positive integer (40..512)")
    motif = load_motif(args.motif) if args.motif else None
    lm = load_model(args.checkpoint)
    designs = sample_backbones(lm, lengths, args.num, seed=args.seed, steps=args.steps, sampler=args.sampler,
                               motif=motif, contig=args.contig, symmetry=args.symmetry, progress=not args.quiet,
                               time_power=TIME_POWER if args.time_power is None else args.time_power,
                               rotation_rate=args.rotation_rate)
    csv_path = write_designs(designs, args.out, checkpoint=lm.source)
    print(f"wrote {len(designs)} backbone(s) and {csv_path}")
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("sample", help="design protein backbones (PDB files + samples.csv)",
                              description="Sample backbones with the shipped (or given) checkpoint. Lengths 40..512.")
    p.add_argument("--checkpoint", help="model checkpoint (default: the shipped one)")
    p.add_argument("--length", type=int, action="append", help="chain length (repeatable)")
    p.add_argument("--num", type=int, default=1, help="backbones per length (default 1)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--steps", type=int, default=100, help="sampling steps (default 100)")
    p.add_argument("--time-power", type=float, default=None,
                   help="sampling time grid 0.999 u^P, u uniform from 1 to 0 (default: diffsci.protein.sampling.TIME_POWER; "
                        "1 = uniform steps)")
    p.add_argument("--rotation-rate", type=float, default=None,
                   help="flow checkpoints: FrameFlow's exponential rotation rate at sampling (default: the checkpoint's "
                        "inference_rate; 1 = plain geodesic steps; higher settles rotations earlier and gives more helix)")
    p.add_argument("--sampler", help="sampler name (default: euler for flow models, euler_maruyama for score models)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--motif", help="PDB/mmCIF file with the motif residues")
    p.add_argument("--contig", help="RFdiffusion-style contig, e.g. 10-20/A5-20/30-40")
    p.add_argument("--symmetry", help="cyclic symmetry Cn (e.g. C3): n chains of --length residues")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_run)

"""``diffsci protein sample``: design backbones and write them as PDB files, one JSON record
per design and samples.csv.

Output folder (``--out``): ``NAME.pdb`` per design (``len60_000``, ``motif_000``, ``contig_000``),
``NAME.json`` beside it (the design's provenance: contig as given and as drawn, input -> output
residue mapping, motif file, seed, steps, sampler, symmetry, checkpoint, lengths), ``samples.csv``
(one row per design, the same fields), and with ``--trajectory`` ``trajectories/NAME.pdb`` (a
multi-model PDB of the model's x0 prediction at every step; in a subfolder so that
``diffsci protein evaluate OUT`` does not score it as a design). Motif residues keep their
residue names from the motif file and have B-factor 1.00; designed residues are GLY with 0.00.

Under ``torchrun --no-python diffsci protein sample ...`` the designs are spread over the ranks
and rank 0 writes every file, the same files as one process (up to the ``seconds`` timings).
``--device`` (default cpu): where the model samples; with several ranks, ``cuda`` is each rank's
``LOCAL_RANK``-th GPU. Designs are reproducible on one device type, not across CPU and CUDA.
"""

from __future__ import annotations

import csv
import io
import re
import sys
from pathlib import Path

from diffsci.core.errors import DiffsciError
from diffsci.core.io import write_json, write_text

__all__ = ["add_parser", "write_designs", "design_record", "existing_outputs", "remove_outputs", "CSV_FIELDS"]

CSV_FIELDS = ["file", "length", "seed", "index", "seconds", "total_length", "chains", "contig", "drawn_contig",
              "motif_file", "mapping", "symmetry", "sampler", "steps", "time_power", "rotation_rate", "checkpoint",
              "record", "trajectory"]
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
        "time_power": d.time_power, "rotation_rate": d.rotation_rate, "symmetry": d.symmetry,
        "contig": d.contig, "drawn_contig": d.drawn_contig,
        "total_length_limits": list(d.total_length_limits) if d.total_length_limits else None,
        "motif_file": str(Path(d.motif_file).resolve()) if d.motif_file else None, "mapping": d.residue_mapping(),
        "motif_positions": [d.output_labels()[int(i)] for i in d.motif_index] if d.motif_index is not None else [],
        "b_factor": B_FACTOR_NOTE, "checkpoint": checkpoint, "seconds": round(float(d.seconds), 3),
        "trajectory": trajectory, "generator": "diffsci protein sample",
        "ss": d.ss, "ss_pairs": d.ss_pairs, "guidance_scale": d.guidance_scale,
        "strand_restraints": d.strand_restraints, "topology": d.topology,
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
            "time_power", "rotation_rate", "symmetry", "contig", "drawn_contig", "motif_file", "motif_positions",
            "mapping", "b_factor", "ss", "ss_pairs", "guidance_scale", "strand_restraints", "topology"]
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
    from diffsci.protein.pdb_io import write_backbone_models, write_backbone_pdb

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


def _ss_lengths(args) -> list[int]:
    """The design lengths: ``--length``, or the length ``--ss`` describes when no ``--length`` is
    given; the SS options are checked here (errors name the option)."""
    from diffsci.protein.ss import SS_LETTERS, parse_ss, ss_condition

    lengths = list(args.length or [])
    if args.ss is None:
        for option, value in (("--ss-pairs", args.ss_pairs), ("--guidance-scale", args.guidance_scale),
                              ("--strand-restraints", args.strand_restraints)):
            if value is not None:
                raise DiffsciError(f"{option} needs --ss (a secondary-structure request)")
        return lengths
    if args.contig and args.ss == "prior":
        raise DiffsciError("--ss prior cannot be combined with --contig (the prior draws whole chains); give an SS "
                           "string of the design's total length")
    if args.guidance_scale is not None and not 0 <= args.guidance_scale <= 100:
        raise DiffsciError(f"--guidance-scale must lie in [0, 100], got {args.guidance_scale}")
    if args.strand_restraints is not None and not 0 <= args.strand_restraints <= 1:
        raise DiffsciError(f"--strand-restraints must lie in [0, 1], got {args.strand_restraints}")
    if args.strand_restraints and args.symmetry:
        raise DiffsciError("--strand-restraints cannot be combined with --symmetry")
    if args.ss == "prior":
        if args.ss_pairs is not None:
            raise DiffsciError("--ss-pairs: --ss prior draws each design's strand pairs (give an SS string to choose)")
        if args.symmetry:
            raise DiffsciError("--ss prior: single-chain designs only (not with --symmetry)")
        if not lengths:
            raise DiffsciError("--ss prior needs --length (the prior draws a topology of that length)")
        return lengths
    codes = parse_ss(args.ss, name="--ss")
    if args.symmetry and args.strand_restraints is None and (codes == SS_LETTERS.index("E")).any():
        print("note: --ss with --symmetry: the strand restraints (the default for a strand request) apply to "
              "single chains only, so these strands come from the network alone", file=sys.stderr)
    if args.contig:  # the request's length is the design's total (checked against the contig when it is read)
        ss_condition(args.ss, None, args.ss_pairs, name="--ss", pairs_name="--ss-pairs")
        return lengths
    lengths = lengths or [len(codes)]
    for length in lengths:
        ss_condition(args.ss, length, args.ss_pairs, name="--ss", pairs_name="--ss-pairs")
    return lengths


def _note_motif_ss(motif, contig: str, ss: str) -> None:
    """A note on stderr where --ss asks a motif residue for another class than the motif file's DSSP."""
    from diffsci.protein.sampling import motif_ss_mismatches

    try:
        bad = motif_ss_mismatches(motif, contig, ss)
    except DiffsciError:  # a contig the SS request cannot take: sample_backbones refuses it, naming why
        return
    if bad:
        shown = ", ".join(f"{label} {req} (DSSP {nat})" for label, req, nat in bad[:6]) + (" ..." if len(bad) > 6 else "")
        print(f"note: --ss asks {len(bad)} motif residue(s) for another class than the motif file's own DSSP: "
              f"{shown}; the motif is held as it is, so these letters cannot be met", file=sys.stderr)


def _run(args) -> int:
    from diffsci.core.distributed import rank_device
    from diffsci.core.utils import resolve_device
    from diffsci.protein.contig import contig_length_limits, load_motif, parse_contig, parse_length_range, resolve_contig
    from diffsci.protein.sampling import TIME_POWER, check_design_options, load_model, sample_backbones

    # everything a user gave is checked before the model is loaded or anything is written
    device = rank_device(resolve_device(args.device))
    lengths = _ss_lengths(args)
    check_design_options(lengths, contig=args.contig, motif=bool(args.motif), total_length=args.total_length,
                         symmetry=args.symmetry)
    motif = load_motif(args.motif) if args.motif else None
    if args.contig:
        total = parse_length_range(args.total_length)
        contig_length_limits(resolve_contig(parse_contig(args.contig), motif), total, text=args.contig)
    if args.contig and motif is not None and args.ss not in (None, "prior"):
        _note_motif_ss(motif, args.contig, args.ss)
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise DiffsciError(f"--out {args.out}: exists and is not a folder")
    old = existing_outputs(args.out)
    if old and not args.overwrite:
        shown = ", ".join(p.name for p in old[:3]) + (" ..." if len(old) > 3 else "")
        raise DiffsciError(f"--out {args.out} already holds designs ({len(old)} file(s): {shown}); "
                           "use --overwrite to replace them, or another folder")
    lm = load_model(args.checkpoint, device=device)
    if args.ss and not lm.config.net.ss_conditioning:
        raise DiffsciError(f"--ss: checkpoint {lm.source} was not trained with secondary-structure conditioning "
                           f"(net.ss_conditioning is false); use --checkpoint ss (see "
                           f"protein/data/CHECKPOINT.md, 'SS conditioning')")
    designs = sample_backbones(lm, lengths, args.num, seed=args.seed, steps=args.steps, sampler=args.sampler,
                               motif=motif, contig=args.contig, symmetry=args.symmetry, progress=not args.quiet,
                               time_power=TIME_POWER if args.time_power is None else args.time_power,
                               rotation_rate=args.rotation_rate, total_length=args.total_length,
                               trajectory=args.trajectory, ss=args.ss, ss_pairs=args.ss_pairs,
                               guidance_scale=1.0 if args.guidance_scale is None else args.guidance_scale,
                               strand_restraints=args.strand_restraints)
    if designs is None:  # a torchrun rank other than 0: its designs went to rank 0, which writes every file
        return 0
    if args.overwrite:
        left = remove_outputs(args.out)
        if left:
            print(f"warning: {args.out} still holds {len(left)} PDB file(s) this tool did not write "
                  f"({', '.join(p.name for p in left[:3])}{' ...' if len(left) > 3 else ''})", file=sys.stderr)
    csv_path = write_designs(designs, args.out, checkpoint=lm.source)
    print(f"wrote {len(designs)} backbone(s), their .json records and {csv_path}")
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "sample", help="design protein backbones (PDB files + JSON records + samples.csv)",
        description="Sample backbones with the shipped (or given) checkpoint. Lengths 40..512. Writes NAME.pdb, "
                    "NAME.json (provenance) and samples.csv; motif residues keep their names and have B-factor 1.00.")
    p.add_argument("--checkpoint", help="model checkpoint (default: the shipped one; 'ss': the shipped "
                                        "SS-conditioned one, for --ss)")
    p.add_argument("--length", type=int, action="append", help="chain length (repeatable; not with --contig)")
    p.add_argument("--num", type=int, default=1, help="backbones per length or contig (default 1)")
    p.add_argument("--out", required=True, help="output folder (refused if it already holds designs, see --overwrite)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the designs, records, trajectories and samples.csv this tool wrote in --out before "
                        "(removed once the new designs are sampled, just before they are written)")
    p.add_argument("--steps", type=int, default=100, help="sampling steps (default 100)")
    p.add_argument("--time-power", type=float, default=None,
                   help="sampling time grid 0.999 u^P, u uniform from 1 to 0 (default: diffsci.protein.sampling.TIME_POWER; "
                        "1 = uniform steps)")
    p.add_argument("--rotation-rate", type=float, default=None,
                   help="flow checkpoints: FrameFlow's exponential rotation rate at sampling (default: the checkpoint's "
                        "inference_rate; 1 = plain geodesic steps; higher settles rotations earlier and gives more helix)")
    p.add_argument("--sampler", help="sampler name (default: for flow models renoise below 20 steps, else euler; "
                   "euler_maruyama for score models)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--motif", help="PDB/mmCIF file with the motif residues")
    p.add_argument("--contig",
                   help="RFdiffusion contig, e.g. 10-40/A163-181/10-40 or '[10-40/A163-181/10-40]'; A52A = insertion "
                        "code; '[B1-100/0 60-80]' designs a 60-80 residue chain beside chain B held fixed")
    p.add_argument("--total-length", help="with --contig: range of the total length, e.g. 80-120 (contigmap.length); "
                                          "scaffold lengths are redrawn until the total fits")
    p.add_argument("--symmetry", help="cyclic symmetry Cn (e.g. C3): n chains of --length residues (not with --contig)")
    p.add_argument("--ss", help="secondary structure per chain, one letter per residue over H/E/L (HHHHLLEEEE) or "
                                "run-length (L2E8L3E8L3H16L2); its length must match --length (or sets it); with "
                                "a --contig (one chain, each scaffold segment one length, e.g. 24/A712-725/2) it "
                                "covers the whole design, motif residues included; needs "
                                "an SS-conditioned checkpoint. 'prior' (with --length): draw each design's SS and "
                                "strand pairs from a training chain the checkpoint learned from (unconditional "
                                "designs with sheets; the draw is recorded as 'topology')")
    p.add_argument("--ss-pairs", help="with --ss: strand pairs, E segments numbered from 1 in order, A antiparallel, "
                                      "P parallel (e.g. 1-2:A,2-3:A,3-4:P); other segment pairs are 'not paired'")
    p.add_argument("--guidance-scale", type=float, default=None,
                   help="with --ss: classifier-free guidance scale w, D_u + w (D_c - D_u) with D_u the prediction "
                        "without SS (default 1: the conditional model; 0: unconditional)")
    p.add_argument("--strand-restraints", type=float, default=None, metavar="STRENGTH",
                   help="with --ss: move each step's clean prediction towards beta-sheet geometry (straight, "
                        "right-twisted strands; paired strands in register, pleats aligned, backbone H-bonds; "
                        "strands pair as --ss-pairs says, else strands joined by a loop of <= 5 residues pair as "
                        "hairpins) by this fraction in [0, 1] (default: 1 when --ss has a strand and no "
                        "--symmetry, else 0; 0 turns it off). Slower: ~10 s per L=64 design")
    p.add_argument("--trajectory", action="store_true",
                   help="also write trajectories/NAME.pdb: the model's x0 prediction at every step, one MODEL per step")
    p.add_argument("--device", default="cpu",
                   help="where the model samples: cpu (default), cuda, cuda:N or auto (CUDA when present); designs "
                        "are reproducible on one device type, not across CPU and CUDA")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_run)

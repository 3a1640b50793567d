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

import re
import sys
import warnings

from diffsci.core.cli import THREADS_HELP, default_threads
from diffsci.core.errors import DiffsciError

__all__ = ["add_parser", "request_from_args"]

# request field -> option, so that a refusal names what the user typed (words such as "motif" or
# "steps" read the same either way and are left alone)
_OPTIONS = {"potentials": "--potentials", "total_length": "--total-length", "ss_pairs": "--ss-pairs", "ss": "--ss", "guidance_scale": "--guidance-scale",
            "strand_restraints": "--strand-restraints", "time_power": "--time-power", "rotation_rate": "--rotation-rate",
            "churn_tmax": "--churn-tmax", "churn": "--churn", "t_stop": "--t-stop"}
# a field name as a word: not inside a longer name or option, nor quoted (``load_model('ss')``, `--checkpoint ss`)
_FIELD = re.compile(r"(?<![\w\-'`])(?<!--checkpoint )(" + "|".join(sorted(_OPTIONS, key=len, reverse=True))
                    + r")(?![\w\-'`])")


def _as_options(message: str) -> str:
    """A request's refusal with its field names as the command's options (``ss_pairs`` -> ``--ss-pairs``)."""
    return _FIELD.sub(lambda m: _OPTIONS[m.group(1)], message)


def request_from_args(args):
    """The :class:`~diffsci.protein.design.request.DesignRequest` of the parsed options (the motif file
    is read here); its refusals name the options."""
    from diffsci.protein.design.contig import load_motif
    from diffsci.protein.design.request import TIME_POWER, DesignRequest

    try:
        return DesignRequest(
            lengths=tuple(args.length or ()), num=args.num, contig=args.contig,
            motif=load_motif(args.motif) if args.motif else None, total_length=args.total_length,
            symmetry=args.symmetry, ss=args.ss, ss_pairs=args.ss_pairs,
            guidance_scale=1.0 if args.guidance_scale is None else args.guidance_scale,
            strand_restraints=args.strand_restraints, sampler=args.sampler, steps=args.steps,
            time_power=TIME_POWER if args.time_power is None else args.time_power, rotation_rate=args.rotation_rate,
            churn=args.churn, churn_tmax=args.churn_tmax, t_stop=args.t_stop,
            seed=args.seed, device=args.device, trajectory=args.trajectory, potentials=args.potentials,
            hotspots=args.hotspots)
    except DiffsciError as exc:
        raise DiffsciError(_as_options(str(exc))) from None


def _notes(request) -> list[str]:
    """What the user should read before sampling: the request's notes and motif residues the SS
    request gives another class than the motif file's DSSP."""
    from diffsci.protein.design.request import SS_PRIOR
    from diffsci.protein.design.sampling import motif_ss_mismatches

    notes = [_as_options(n) for n in request.notes()]
    if request.motif is not None and request.ss not in (None, SS_PRIOR):
        bad = motif_ss_mismatches(request.motif, request.contig, request.ss)
        if bad:
            shown = ", ".join(f"{label} {req} (DSSP {nat})" for label, req, nat in bad[:6]) + (" ..." if len(bad) > 6
                                                                                              else "")
            notes.append(f"--ss asks {len(bad)} motif residue(s) for another class than the motif file's own DSSP: "
                         f"{shown}; the motif is held as it is, so these letters cannot be met")
    return notes


def _check_out(args) -> None:
    from diffsci.core.io import check_output_path
    from diffsci.protein.design.output import existing_outputs

    check_output_path(args.out, inputs=[args.motif, args.checkpoint], folder=True)
    old = existing_outputs(args.out)
    if old and not args.overwrite:
        shown = ", ".join(p.name for p in old[:3]) + (" ..." if len(old) > 3 else "")
        raise DiffsciError(f"--out {args.out} already holds designs ({len(old)} file(s): {shown}); "
                           "use --overwrite to replace them, or another folder")


def _run(args) -> int:
    from diffsci.protein.design.output import remove_outputs, write_designs
    from diffsci.protein.design.sampling import load_model, sample_backbones

    # everything a user gave is checked before the model is loaded or anything is written
    request = request_from_args(args)
    _check_out(args)
    for note in _notes(request):
        print(f"note: {note}", file=sys.stderr)
    import torch

    from diffsci.core.io import check_int

    torch.set_num_threads(default_threads() if args.threads is None else check_int(args.threads, "--threads"))
    lm = load_model(args.checkpoint)
    with warnings.catch_warnings():  # the library's warnings as one line each, when they happen
        warnings.simplefilter("always", UserWarning)
        warnings.showwarning = lambda message, *_, **__: print(f"warning: {message}", file=sys.stderr)
        try:
            designs = sample_backbones(lm, request, progress=not args.quiet)
        except DiffsciError as exc:
            raise DiffsciError(_as_options(str(exc))) from None
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
    p.add_argument("--checkpoint", help="model checkpoint (default: the shipped one, which also serves --ss; "
                                        "'ss': the same, kept for old scripts; 'v1', 'v1-ss': the v1 files)")
    p.add_argument("--length", type=int, action="append", help="chain length (repeatable; not with --contig)")
    p.add_argument("--num", type=int, default=1, help="backbones per length or contig (default 1)")
    p.add_argument("--out", required=True, help="output folder (refused if it already holds designs, see --overwrite)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the designs, records, trajectories and samples.csv this tool wrote in --out before "
                        "(removed once the new designs are sampled, just before they are written)")
    p.add_argument("--steps", type=int, default=100, help="sampling steps (default 100)")
    p.add_argument("--time-power", type=float, default=None,
                   help="sampling time grid 0.999 u^P, u uniform from 1 to 0 (default: diffsci.protein.design.request.TIME_POWER = 2; "
                        "1 = uniform steps)")
    p.add_argument("--rotation-rate", type=float, default=None,
                   help="flow checkpoints: FrameFlow's exponential rotation rate at sampling (default: the checkpoint's "
                        "inference_rate; 1 = plain geodesic steps; higher settles rotations earlier and gives more helix)")
    p.add_argument("--churn", type=float, default=None,
                   help="EDM stochastic churn S_churn (euler, heun): before each step the translations are renoised "
                        "to a noise ratio 1 + min(S_churn / steps, 0.414) times larger; a renoise-and-denoise at "
                        "small t mends gaps the plain ODE carries to t = 0 (fewer chain breaks) (default: the "
                        "checkpoint's 'churn', 0 for the shipped ones; the v2 recipe sets 30; 0 = none, the plain ODE)")
    p.add_argument("--churn-tmax", type=float, default=None,
                   help="churn only the steps with t <= this (default: the checkpoint's 'churn_tmax', 0.7; 1: all)")
    p.add_argument("--t-stop", type=float, default=None,
                   help="end the time grid at this t and take the network's clean prediction there as the design, "
                        "as FrameFlow stops at min_t 0.01 (default: the checkpoint's 't_stop': 0.01, the lowest time "
                        "training draws, for the v2 campaign; 0 for the shipped checkpoints, whose numbers were "
                        "measured to t = 0)")
    p.add_argument("--sampler", help="sampler name (default: for flow models renoise below 20 steps, else euler; "
                   "euler_maruyama for score models)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--motif", help="PDB/mmCIF file with the motif residues")
    p.add_argument("--contig",
                   help="RFdiffusion contig, e.g. 10-40/A163-181/10-40 or '[10-40/A163-181/10-40]'; A52A = insertion "
                        "code; '[B1-100/0 60-80]' designs a 60-80 residue chain beside chain B held fixed")
    p.add_argument("--total-length", help="with --contig: range of the designed chains' total length, e.g. 80-120 "
                                          "(RFdiffusion's contigmap.length: fixed chains such as a binder's target do "
                                          "not count); scaffold lengths are redrawn until it fits")
    p.add_argument("--symmetry", help="point-group symmetry: C2..C12 (n copies about the z axis) or D2 (4 copies; "
                                      "2-fold axes z, x and y), each copy a chain of --length residues (not with "
                                      "--contig); sampling starts from one copy's noise placed off the axes")
    p.add_argument("--ss", help="secondary structure per chain, one letter per residue over H/E/L (HHHHLLEEEE) or "
                                "run-length (L2E8L3E8L3H16L2); its length must match --length (or sets it); with "
                                "a --contig (one chain, each scaffold segment one length, e.g. 24/A712-725/2) it "
                                "covers the whole design, motif residues included; needs "
                                "an SS-conditioned checkpoint. 'prior' (with --length): draw each design's SS and "
                                "strand pairs from a training chain the checkpoint learned from (unconditional "
                                "designs with sheets; the draw is recorded as 'topology')")
    p.add_argument("--ss-pairs", help="with --ss: strand pairs, E segments numbered from 1 in order, A antiparallel, "
                                      "P parallel (e.g. 1-2:A,2-3:A,3-4:P); other segment pairs are 'not paired'. Default: the "
                                      "request's beta-hairpins (strands joined by a loop of <= 5 residues, "
                                      "antiparallel), as the strand restraints pair them; 'unknown': every pair "
                                      "left to the network")
    p.add_argument("--guidance-scale", type=float, default=None,
                   help="with --ss: classifier-free guidance scale w, D_u + w (D_c - D_u) with D_u the prediction "
                        "without SS (default 1: the conditional model; 0: unconditional)")
    p.add_argument("--strand-restraints", type=float, default=None, metavar="STRENGTH",
                   help="with --ss: move each step's clean prediction towards beta-sheet geometry (straight, "
                        "right-twisted strands; paired strands in register, pleats aligned, backbone H-bonds; "
                        "strands pair as --ss-pairs says, else strands joined by a loop of <= 5 residues pair as "
                        "hairpins) by this fraction in [0, 1] (default: 1 when --ss has a strand and no "
                        "--symmetry, else 0; 0 turns it off). Slower: ~10 s per L=64 design")
    p.add_argument("--potentials", default=None, metavar="NAME:WEIGHT,...",
                   help="sampling-time potentials on each step's clean prediction (RFdiffusion-like names): "
                        "connectivity (consecutive CA-CA held to 3.65-3.95 A), sterics (non-neighbour CA >= 3.8 A, "
                        ">= 4.0 A between chains), monomer_ROG, binder_ROG (Rg <= 2.2 L^0.38 A), monomer_contacts, "
                        "olig_contacts (neighbouring copies), interface_contacts (designed chain with a fixed "
                        "chain), hotspots (with --hotspots); e.g. connectivity:1,sterics:2. Default: "
                        "connectivity:1,sterics:1, plus interface_contacts:1 beside a fixed chain, olig_contacts:1 "
                        "with --symmetry and hotspots:1 with --hotspots. 'none': the network alone")
    p.add_argument("--hotspots", default=None, metavar="B17,B20",
                   help="residues of a fixed chain (a binder's target, as the motif file numbers them) that the "
                        "design must touch: a designed CA within 8 A of each (RFdiffusion's ppi.hotspot_res)")
    p.add_argument("--trajectory", action="store_true",
                   help="also write trajectories/NAME.pdb: the model's x0 prediction at every step, one MODEL per step")
    p.add_argument("--device", default="cpu",
                   help="where the model samples: cpu (default), cuda, cuda:N or auto (CUDA when present); designs "
                        "are reproducible on one device type, not across CPU and CUDA")
    p.add_argument("--threads", type=int, default=None, help=THREADS_HELP + "; designs do not depend on it")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_run)

"""``diffsci bench denoiser``: how much of the noise the protein network removes, per noise level.

For fixed batches of real chains (the held-out split by default, with the checkpoint's own
training filters and crop length, or ``--crop``; the batches of :func:`diffsci.core.train.fixed_batch_loss`, seeds
``(seed, "eval", i)``), the noised frames the network is given and its clean prediction are each
compared with the true chain:

- ``ca_rmsd``: root-mean-square distance of the CA atoms (the frames' origins), Å, without
  superposition (input, prediction and truth share one frame of reference);
- ``angle``: mean geodesic angle between each residue's frame and its true frame, degrees;
- ``breaks``: consecutive CA-CA distances over 4.2 Å per 100 residues (a sampler's states
  should look like the noised chains the network sees here: where a design's trajectory of clean
  predictions has many more breaks at a t than this, it has left the training distribution);
- ``hbonds_local``, ``hbonds_nonlocal``, ``strand`` (:func:`hbond_recovery`): of the true chain's
  DSSP hydrogen bonds, the fraction the backbone built from the frames keeps, within 5 residues
  (helix turns) and beyond (sheets, loop contacts), and of its DSSP strand residues the fraction
  still strand. The true backbone is built from the true frames the same way (ideal geometry), so
  only the frames' errors count.

The network is asked as the sampler asks it after its first step: unconditionally (no SS
labels) and, for a self-conditioned net, with its own first prediction as the self-conditioning
input. Rows are bins of t (0 clean, 1 noise). ``ratio`` = prediction / input: 1 is a net that
copies its input, 0 one that recovers the chain. Where the rotations' ratio stays near 1 at low
t, the frames' orientation (where N, C and O sit, hence backbone H-bonds and DSSP strands) is left
as noisy as it came in; the H-bond columns say whether the prediction is precise enough to keep a
sheet's hydrogen bonds at all.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from diffsci.core.errors import DiffsciError
from diffsci.core.io import check_int, write_json
from diffsci.core.so3 import geodesic_distance
from diffsci.core.utils import make_generator

__all__ = ["T_BINS", "frame_errors", "hbond_recovery", "denoising_errors", "trajectory_rows", "add_parser"]

#: edges of the t bins of the table
T_BINS: tuple[float, ...] = (0.0, 0.1, 0.25, 0.5, 1.0)
_NM = 10.0  # Å per nm


def frame_errors(trans: torch.Tensor, rots: torch.Tensor, true_trans: torch.Tensor, true_rots: torch.Tensor,
                 mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per structure, over the residues of ``mask`` (B, N): the CA RMSD (Å; translations in nm,
    (B, N, 3)) and the mean geodesic angle of the rotations (B, N, 3, 3) to the true ones (degrees).
    Both (B,)."""
    m = mask.to(torch.float64)
    n = m.sum(1).clamp_min(1)
    sq = ((trans - true_trans).to(torch.float64) ** 2).sum(-1)
    rmsd = ((sq * m).sum(1) / n).sqrt() * _NM
    angle = geodesic_distance(rots.to(torch.float64), true_rots.to(torch.float64))
    return rmsd, torch.rad2deg((angle * m).sum(1) / n)


def hbond_recovery(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Of the true backbone's DSSP hydrogen bonds C=O(i) ... H-N(j)
    (:func:`~diffsci.protein.metrics.secondary.chain_hbonds`), the fractions the predicted backbone
    (both Shape (L, 4, 3) N, CA, C, O in Å, the same residues) also has: ``local`` (|j - i| <= 5:
    helix turns) and ``nonlocal`` (|j - i| > 5: sheets and loop contacts); ``strand``: of the true
    chain's DSSP strand residues, the fraction that are strand in the prediction. NaN where the true
    chain has none."""
    from diffsci.protein.metrics.secondary import chain_hbonds, dssp_labels

    ti, tj = chain_hbonds(true)
    pi, pj = chain_hbonds(pred)
    kept = set(zip(pi.tolist(), pj.tolist()))
    sep = np.abs(tj - ti)
    out = {}
    for name, sel in (("local", sep <= 5), ("nonlocal", sep > 5)):
        pairs = list(zip(ti[sel].tolist(), tj[sel].tolist()))
        out[name] = sum(p in kept for p in pairs) / len(pairs) if pairs else math.nan
    te, pe = dssp_labels(true) == "E", dssp_labels(pred) == "E"
    out["strand"] = float((te & pe).sum() / te.sum()) if te.any() else math.nan
    return out


def _hbond_rows(trans, rots, true_trans, true_rots, mask) -> list[tuple[float, float, float, float]]:
    """:func:`hbond_recovery` (local, nonlocal, strand) of each structure of a batch of frames (nm),
    and its chain breaks (consecutive CA-CA > 4.2 Å) per 100 residues."""
    from diffsci.protein.frames import backbone_from_frames
    from diffsci.protein.metrics.geometry import chain_breaks

    out = []
    for b in range(mask.shape[0]):
        m = mask[b]
        pred = backbone_from_frames(rots[b, m].double(), trans[b, m].double() * _NM).numpy()
        true = backbone_from_frames(true_rots[b, m].double(), true_trans[b, m].double() * _NM).numpy()
        r = hbond_recovery(pred, true)
        out.append((r["local"], r["nonlocal"], r["strand"], 100.0 * chain_breaks(pred)[0] / max(len(pred) - 1, 1)))
    return out


def _predict(model, batch, task):
    """The network's input and clean frames for a batch, unconditionally, self-conditioned on its
    first prediction where the net is self-conditioned (as the sampler from its second step). A
    batch with ``rollout_from`` (the task's scheduled sampling) is first rolled out to its t by the
    network's own steps (:meth:`~diffsci.protein.model.diffusion.BackboneTask.roll_out`), which then
    also give the self-conditioning input."""
    from diffsci.protein.model.network import ProteinCond

    cond = ProteinCond(batch.mask, batch.res_idx, torch.zeros_like(batch.res_idx))
    xt, cond = task.network_input(model, batch, (batch.xt_trans, batch.xt_rots), cond, task.config.net.self_condition)
    return xt, model(xt, batch.t, cond)


def denoising_errors(model, task, *, batches: int = 24, batch_size: int = 4, seed: int = 0,
                     bins: Sequence[float] = T_BINS) -> list[dict]:
    """One row per bin of t ``[lo, hi)``: ``t_lo``, ``t_hi``, ``n`` (structures) and the means over
    them of ``input_ca_rmsd``, ``ca_rmsd``, ``input_angle``, ``angle`` (:func:`frame_errors`) with
    ``ca_ratio`` and ``angle_ratio`` (prediction / input), and of ``input_hbonds_local``,
    ``hbonds_local``, ``input_hbonds_nonlocal``, ``hbonds_nonlocal``, ``input_strand``, ``strand``
    (:func:`hbond_recovery`; over the structures where the true chain has any, with their count
    ``n_nonlocal``, ``n_strand``; None where none has), and ``input_breaks``, ``breaks``: chain
    breaks (consecutive CA-CA > 4.2 Å) per 100 residues of the backbone built from the frames.
    ``model`` maps ``((trans, rots), t, cond)`` to clean frames (a :class:`~diffsci.protein.model.diffusion.FrameDenoiser`); ``task`` a
    :class:`~diffsci.protein.model.diffusion.BackboneTask` whose batches are drawn from the
    generators of ``(seed, "eval", i)``. A task with ``rollout_prob`` 1 gives the network the
    states of its own sampler instead of noised real chains (``input_*`` are then those states)."""
    check_int(batches, "batches")
    rows = []  # (t, input rmsd, rmsd, input angle, angle, 6 x H-bond recovery) per structure
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        for i in range(batches):
            torch.manual_seed(i)
            b = task.sample_batch(make_generator(seed, "eval", i), batch_size)
            (x_trans, x_rots), (trans, rots) = _predict(model, b, task)
            r_in, a_in = frame_errors(x_trans, x_rots, b.trans, b.rots, b.mask)
            r_out, a_out = frame_errors(trans, rots, b.trans, b.rots, b.mask)
            h_in = _hbond_rows(x_trans, x_rots, b.trans, b.rots, b.mask)
            h_out = _hbond_rows(trans, rots, b.trans, b.rots, b.mask)
            hb = [(i[0], o[0], i[1], o[1], i[2], o[2], i[3], o[3]) for i, o in zip(h_in, h_out)]
            rows += [r + h for r, h in zip(zip(b.t.tolist(), r_in.tolist(), r_out.tolist(), a_in.tolist(), a_out.tolist()), hb)]
    table = []
    for lo, hi in zip(bins[:-1], bins[1:]):
        sel = [r for r in rows if lo <= r[0] < hi or (hi == bins[-1] and r[0] == hi)]
        if not sel:
            continue
        cols = list(zip(*sel))
        mean = [sum(col) / len(sel) for col in cols[:5]]
        hb = {}
        for k, name in enumerate(("input_hbonds_local", "hbonds_local", "input_hbonds_nonlocal", "hbonds_nonlocal",
                                  "input_strand", "strand", "input_breaks", "breaks")):
            vals = [v for v in cols[5 + k] if not math.isnan(v)]
            hb[name] = round(sum(vals) / len(vals), 3) if vals else None
        hb["n_nonlocal"] = sum(not math.isnan(v) for v in cols[7])
        hb["n_strand"] = sum(not math.isnan(v) for v in cols[9])
        table.append({"t_lo": lo, "t_hi": hi, "n": len(sel), "input_ca_rmsd": round(mean[1], 3), "ca_rmsd": round(mean[2], 3),
                      "ca_ratio": round(mean[2] / mean[1], 3) if mean[1] else math.nan,
                      "input_angle": round(mean[3], 2), "angle": round(mean[4], 2),
                      "angle_ratio": round(mean[4] / mean[3], 3) if mean[3] else math.nan, **hb})
    return table


def _read_trajectory(path: Path) -> tuple[list[float], np.ndarray, np.ndarray]:
    """The step times (``REMARK 250 times``), models (S, L, 4, 3) Å and residues' chain IDs (L,) of
    a ``protein sample --trajectory`` file."""
    import biotite.structure.io.pdb as pdbio

    from diffsci.protein.io.pdb import read_remarks

    remarks = read_remarks(path)
    if "times" not in remarks:
        raise DiffsciError(f"{path}: no 'REMARK 250 times' line (not a `diffsci protein sample --trajectory` file)")
    times = [float(v) for v in remarks["times"].split(",") if v.strip()]
    stack = pdbio.PDBFile.read(str(path)).get_structure()
    atoms = stack[:, np.isin(stack.atom_name, ("N", "CA", "C", "O"))]
    if atoms.array_length() % 4 or len(times) != atoms.stack_depth():
        raise DiffsciError(f"{path}: {atoms.stack_depth()} models and {len(times)} times, or residues without all of "
                           f"N, CA, C, O")
    chains = atoms.chain_id[::4]
    return times, atoms.coord.reshape(atoms.stack_depth(), -1, 4, 3), chains


def trajectory_rows(folder, *, bins: Sequence[float] = T_BINS) -> list[dict]:
    """The clean predictions a sampler made along its way (every ``*.pdb`` of ``folder``, or of its
    ``trajectories/`` subfolder: ``diffsci protein sample --trajectory``), one row per bin of t:
    ``t_lo``, ``t_hi``, ``n`` (predictions), ``designs``, and the means of ``breaks`` (consecutive
    CA-CA > 4.2 Å within a chain, per 100 residues), ``dssp_helix`` and ``dssp_strand`` (whole
    design), with ``ca_ca_mean`` and ``ca_ca_sd``, the mean and standard deviation of every
    consecutive CA-CA distance within a chain in the bin (Å; real chains: 3.80 and ~0.02). Compare
    ``breaks`` with :func:`denoising_errors`' at the same t: far more here means the sampler's
    states have left what the network was trained on."""
    from diffsci.protein.metrics.geometry import CA_CA_BREAK, ca_ca_distances
    from diffsci.protein.metrics.secondary import dssp_labels

    folder = Path(folder)
    sub = folder / "trajectories"
    files = sorted((sub if sub.is_dir() else folder).glob("*.pdb"))
    if not files:
        raise DiffsciError(f"--trajectories {folder}: no trajectory PDB files (write them with "
                           f"`diffsci protein sample --trajectory --out {folder}`)")
    per = []  # (t, breaks per 100, helix, strand, design, CA-CA distances within chains)
    for d, f in enumerate(files):
        times, models, chains = _read_trajectory(f)
        same = chains[1:] == chains[:-1]
        for t, x in zip(times, models):
            dist = ca_ca_distances(x)
            gaps = dist > CA_CA_BREAK
            labels = dssp_labels(x)
            per.append((t, 100.0 * float((gaps & same).sum()) / max(int(same.sum()), 1),
                        float((labels == "H").mean()), float((labels == "E").mean()), d, dist[same]))
    table = []
    for lo, hi in zip(bins[:-1], bins[1:]):
        sel = [r for r in per if lo <= r[0] < hi or (hi == bins[-1] and r[0] == hi)]
        if sel:
            dist = np.concatenate([r[5] for r in sel])
            table.append({"t_lo": lo, "t_hi": hi, "n": len(sel), "designs": len({r[4] for r in sel}),
                          **{k: round(sum(r[i] for r in sel) / len(sel), 3)
                             for i, k in ((1, "breaks"), (2, "dssp_helix"), (3, "dssp_strand"))},
                          "ca_ca_mean": round(float(dist.mean()), 3) if len(dist) else None,
                          "ca_ca_sd": round(float(dist.std()), 3) if len(dist) else None})
    return table


def _markdown(payload: dict) -> str:
    roll = payload.get("rollout")
    inputs = ("" if not roll else f" Inputs: each chain noised to t + {roll['span']:g} (at most 1), then moved to t by "
              f"{roll['steps']} Euler steps of the network itself (its own sampler's states, not noised real chains).")
    lines = [f"# Denoising by noise level\n\nCommand: `{payload['command']}`  \nCheckpoint: `{payload['checkpoint']}`; "
             f"split {payload['split']} ({payload['chains']} chains after the checkpoint's filters, cropped to "
             f"{payload['crop']} residues), {payload['batches']} batches of {payload['batch_size']}.{inputs}\n",
             "| t | structures | CA RMSD in, Å | CA RMSD predicted, Å | ratio | frame angle in, deg | predicted, deg | ratio |",
             "|---|---|---|---|---|---|---|---|"]
    for r in payload["rows"]:
        lines.append(f"| [{r['t_lo']:g}, {r['t_hi']:g}) | {r['n']} | {r['input_ca_rmsd']:.2f} | {r['ca_rmsd']:.2f} | "
                     f"{r['ca_ratio']:.2f} | {r['input_angle']:.1f} | {r['angle']:.1f} | {r['angle_ratio']:.2f} |")
    lines += ["", "Of the true chain's DSSP H-bonds (local: |j - i| <= 5; non-local: beyond) and strand residues, the "
              "fraction kept by the input and by the prediction (structures whose chain has any non-local H-bond / strand), "
              "and the chain breaks (CA-CA > 4.2 Å) per 100 residues:",
              "", "| t | H-bonds local, in | predicted | non-local, in | predicted | structures | strand, in | predicted | "
              "structures | breaks /100, in | predicted |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]

    def f(v, digits=2):
        return "-" if v is None else f"{v:.{digits}f}"

    for r in payload["rows"]:
        lines.append(f"| [{r['t_lo']:g}, {r['t_hi']:g}) | {f(r['input_hbonds_local'])} | {f(r['hbonds_local'])} | "
                     f"{f(r['input_hbonds_nonlocal'])} | {f(r['hbonds_nonlocal'])} | {r['n_nonlocal']} | "
                     f"{f(r['input_strand'])} | {f(r['strand'])} | {r['n_strand']} | {r['input_breaks']:.1f} | "
                     f"{r['breaks']:.1f} |")
    if payload.get("trajectory_rows"):
        lines += ["", f"The sampler's own clean predictions along its trajectories (`{payload['trajectories']}`), to compare "
                      "with the predictions on noised real chains above:", "",
                  "| t | predictions | designs | breaks /100 | CA-CA mean, Å | CA-CA sd, Å | DSSP H | DSSP E |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in payload["trajectory_rows"]:
            lines.append(f"| [{r['t_lo']:g}, {r['t_hi']:g}) | {r['n']} | {r['designs']} | {r['breaks']:.1f} | "
                         f"{f(r.get('ca_ca_mean'), 3)} | {f(r.get('ca_ca_sd'), 3)} | "
                         f"{r['dssp_helix']:.2f} | {r['dssp_strand']:.2f} |")
    return "\n".join(lines) + "\n"


def _run(args) -> int:
    from diffsci.protein.design.sampling import load_model
    from diffsci.protein.io.dataset import bundled_dataset_path, load_dataset
    from diffsci.protein.model.diffusion import BackboneTask

    if args.trajectory_bins and not args.trajectories:
        raise DiffsciError("--trajectory-bins needs --trajectories")
    bins = tuple(args.trajectory_bins or T_BINS)
    if len(bins) < 2 or any(b <= a for a, b in zip(bins, bins[1:])) or bins[0] < 0 or bins[-1] > 1:
        raise DiffsciError(f"--trajectory-bins: at least two increasing times in [0, 1], got {' '.join(map(str, bins))}")
    traj = trajectory_rows(args.trajectories, bins=bins) if args.trajectories else None
    lm = load_model(args.checkpoint)
    data = args.data or bundled_dataset_path()
    if not Path(data).is_file():
        raise DiffsciError(f"--data {data}: dataset file not found")
    config = lm.config if args.crop is None else dataclasses.replace(lm.config, max_length=check_int(args.crop, "--crop", minimum=8))
    if args.rollout:
        span, steps = args.rollout
        if not float(steps).is_integer():
            raise DiffsciError(f"--rollout SPAN STEPS: STEPS must be a whole number, got {steps:g}")
        try:
            config = dataclasses.replace(config, rollout_prob=1.0, rollout_span=span, rollout_steps=int(steps))
        except DiffsciError as e:
            raise DiffsciError(f"--rollout {span:g} {steps:g}: {e}") from None
    task = BackboneTask(config, load_dataset(data, ss_labels=config.net.ss_conditioning), args.split)
    rows = denoising_errors(lm.model, task, batches=args.batches, batch_size=args.batch_size, seed=args.seed)
    words = ["diffsci", "bench", "denoiser", "--out", str(args.out), "--split", args.split, "--batches", str(args.batches),
             "--batch-size", str(args.batch_size), "--seed", str(args.seed)]
    words += (["--checkpoint", args.checkpoint] if args.checkpoint else []) + (["--data", args.data] if args.data else [])
    words += ["--crop", str(args.crop)] if args.crop is not None else []
    words += ["--trajectories", str(args.trajectories)] if args.trajectories else []
    words += ["--trajectory-bins", *(f"{b:g}" for b in bins)] if args.trajectory_bins else []
    words += ["--rollout", f"{args.rollout[0]:g}", f"{args.rollout[1]:g}"] if args.rollout else []
    payload = {"command": " ".join(words), "checkpoint": str(lm.source), "split": args.split, "chains": len(task.chains),
               "crop": config.max_length,
               "batches": args.batches, "batch_size": args.batch_size, "rows": rows}
    if traj is not None:
        payload.update(trajectories=str(args.trajectories), trajectory_rows=traj)
    if args.rollout:
        payload["rollout"] = {"span": config.rollout_span, "steps": config.rollout_steps}
    out = Path(args.out)
    write_json(out / "denoiser.json", payload)
    (out / "denoiser.md").write_text(_markdown(payload))
    print(_markdown(payload), file=sys.stderr)
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("denoiser", help="how much noise the protein network removes, per noise level",
                              description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder for denoiser.json and denoiser.md")
    p.add_argument("--checkpoint", help="protein checkpoint (default: the shipped one)")
    p.add_argument("--data", help="dataset file (default: the bundled protein/data/chains.npz)")
    p.add_argument("--split", choices=("heldout", "train", "all"), default="heldout",
                   help="chains to noise (default heldout)")
    p.add_argument("--crop", type=int,
                   help="crop chains to at most this many residues (default: the checkpoint's max_length); give "
                        "checkpoints one crop to compare them")
    p.add_argument("--batches", type=int, default=24, help="batches (default 24)")
    p.add_argument("--batch-size", type=int, default=4, help="structures per batch (default 4)")
    p.add_argument("--seed", type=int, default=0, help="seed of the batches (default 0)")
    p.add_argument("--trajectories", metavar="DIR",
                   help="also tabulate the clean predictions of `diffsci protein sample --trajectory --out DIR` designs "
                        "by t (breaks, DSSP H/E), beside the network's on noised real chains")
    p.add_argument("--trajectory-bins", nargs="+", type=float, metavar="T",
                   help="bin edges in t of the --trajectories table (default: " + " ".join(f"{b:g}" for b in T_BINS)
                        + "); finer near 0 to see the last steps, e.g. 0 0.001 0.01 0.1 1")
    p.add_argument("--rollout", nargs=2, type=float, metavar=("SPAN", "STEPS"),
                   help="give the network its own sampler's states instead of noised real chains: each chain noised "
                        "to t + SPAN (at most 1), then moved to t by STEPS Euler steps of the network (the states "
                        "that training's scheduled sampling, rollout_prob, trains on)")
    p.set_defaults(func=_run)

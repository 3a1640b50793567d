"""Physical validity by design mode, with the default sampling-time potentials and without them.

Each mode is one ``diffsci protein sample`` request (:data:`MODES`: unconditional lengths 60-512,
an MDM2 binder with and without hotspots, C3 and C6 rings, a sheet-and-helix SS request), sampled
twice with the same seed: with the request's default potentials (what a user gets) and with every
sampling-time potential and the strand restraints off (the network alone, how a checkpoint is
judged; not for hotspots, which act only through their potential). Each run is written as ``protein sample`` writes it (``OUT/designs/MODE-POTENTIALS/``)
and scored by ``protein evaluate``'s own code
(:func:`diffsci.protein.metrics.evaluate.evaluate_folder`).

Per run, over the designed chains (a binder's fixed target is not counted): chains with a break
(consecutive CA-CA > 4.2 Å) and the longest consecutive CA-CA of any of them, the fraction of consecutive CA-CA within 3.8 +- 0.3 Å, CA clashes
within chains; between the chains of one design (binder and target, the copies of a ring) the
smallest CA-CA, the CA pairs under 3 Å and the designed residues at the interface; with hotspots,
the designs whose every hotspot is in contact; DSSP helix / strand and, for an SS request, the
agreement with it. ``report.md`` holds the table (the one in docs/benchmarks.md, "The default
potentials, by mode") and ``modes.png`` the broken fraction per mode.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from diffsci.benchmarks.common import add_benchmark_parser, command_line, run_from_args, write_results
from diffsci.core.errors import DiffsciError
from diffsci.core.figures import save_figure
from diffsci.core.io import jsonable

__all__ = ["Mode", "MODES", "QUICK_MODES", "mode_request", "summarise_run", "run_benchmark", "add_parser"]

DATA = Path(__file__).resolve().parent / "data"
BINDER_CONTIG = "[A25-109/0 60-80]"
SS_REQUEST = "L2E8L3E8L3E8L3E8L3H16L2"


@dataclass(frozen=True)
class Mode:
    """One design mode: ``name``, the ``protein sample`` options it stands for (``cli``) and the
    :class:`~diffsci.protein.design.request.DesignRequest` keywords (``request``; ``motif`` is a
    file under ``benchmarks/data``)."""

    name: str
    cli: str
    request: dict = field(default_factory=dict)


def _length(n: int) -> Mode:
    return Mode(f"L{n}", f"--length {n} --num 4 --seed 3", {"lengths": [n], "num": 4, "seed": 3})


#: the modes, in the order of the table
MODES: tuple[Mode, ...] = (
    *(_length(n) for n in (60, 100, 200, 300, 512)),
    Mode("binder", f"--motif benchmarks/data/1YCR.pdb --contig '{BINDER_CONTIG}' --num 4 --seed 0",
         {"motif": "1YCR.pdb", "contig": BINDER_CONTIG, "num": 4, "seed": 0}),
    Mode("binder-hotspots", f"--motif benchmarks/data/1YCR.pdb --contig '{BINDER_CONTIG}' --hotspots A54,A62,A99 "
         "--num 2 --seed 0", {"motif": "1YCR.pdb", "contig": BINDER_CONTIG, "hotspots": "A54,A62,A99", "num": 2, "seed": 0}),
    Mode("C3", "--symmetry C3 --length 60 --num 2 --seed 0", {"symmetry": "C3", "lengths": [60], "num": 2, "seed": 0}),
    Mode("C6", "--symmetry C6 --length 80 --num 2 --seed 0", {"symmetry": "C6", "lengths": [80], "num": 2, "seed": 0}),
    Mode("ss", f"--ss {SS_REQUEST} --num 4 --seed 0", {"ss": SS_REQUEST, "num": 4, "seed": 0}),
)
#: ``--quick``: one mode of each kind
QUICK_MODES: tuple[str, ...] = ("L100", "binder", "C3", "ss")
POTENTIALS = ("default", "none")


def mode_request(mode: Mode, potentials: str, *, steps: int = 100, num: int | None = None):
    """The :class:`DesignRequest` of ``mode`` with ``potentials`` ``"default"`` (the request's
    defaults) or ``"none"`` (every potential off and, for an SS request, no strand restraints:
    the network alone; not for a mode with hotspots, which act only through their potential);
    ``num`` replaces the mode's number of designs."""
    from diffsci.protein.design.contig import load_motif
    from diffsci.protein.design.request import DesignRequest

    if potentials not in POTENTIALS:
        raise DiffsciError(f"potentials must be one of {', '.join(POTENTIALS)}, got {potentials!r}")
    kw = dict(mode.request)
    if "motif" in kw:
        kw["motif"] = load_motif(DATA / kw["motif"])
    if num is not None:
        kw["num"] = num
    if potentials == "none":
        kw["potentials"] = "none"
        if "ss" in kw:
            kw["strand_restraints"] = 0.0
    return DesignRequest(steps=steps, **kw)


def mode_command(mode: Mode, potentials: str, *, steps: int = 100, num: int | None = None) -> str:
    """The ``diffsci protein sample`` command line of :func:`mode_request` (``--out`` left out)."""
    cli = mode.cli if num is None else mode.cli.replace(f"--num {mode.request['num']}", f"--num {num}")
    words = ["diffsci protein sample", cli]
    if steps != 100:
        words.append(f"--steps {steps}")
    if potentials == "none":
        words.append("--potentials none" + (" --strand-restraints 0" if "ss" in mode.request else ""))
    return " ".join(words)


def _fixed_chains(designs) -> set[tuple[str, str]]:
    """``(file, chain id)`` of every chain whose residues are all motif (a binder's target)."""
    return {(f"{d.name}.pdb", cid) for d in designs
            for cid, flags in zip(d.chain_ids(), d.b_factors()) if len(flags) and all(f == 1.0 for f in flags)}


def _value(v) -> float | None:
    """A metric as a float; None for a missing or undefined (NaN) one."""
    return None if v is None or not np.isfinite(v) else float(v)


def summarise_run(evaluation: dict, fixed: set[tuple[str, str]]) -> dict:
    """The table's figures of one run from :func:`evaluate_folder`'s result; ``fixed``: the
    ``(file, chain)`` pairs not designed (left out of every count)."""
    rows = [r for r in evaluation["per_sample"] if (r["file"].split(":")[0], r["chain"]) not in fixed]
    if not rows:
        raise DiffsciError("no designed chain to score")
    mean = lambda key: float(np.mean([r[key] for r in rows]))  # noqa: E731
    out = {"chains": len(rows), "designs": len({r["file"].split(":")[0] for r in rows}),
           "broken": sum(r["chain_breaks"] > 0 for r in rows), "breaks": [int(r["chain_breaks"]) for r in rows],
           "ca_ca_max": max(float(r["ca_ca_max"]) for r in rows),
           "ca_ca_ok": mean("ca_ca_ok"), "clashes": int(sum(r["clashes"] for r in rows)),
           "dssp_helix": mean("dssp_helix"), "dssp_strand": mean("dssp_strand")}
    inter = [v for v in (_value(r.get("interchain_min_ca")) for r in rows) if v is not None]
    if inter:  # a design of several chains (single chains have None / NaN here)
        out.update(interchain_min_ca=[min(inter), max(inter)],
                   interchain_clashes=int(sum(_value(r.get("interchain_clashes")) or 0 for r in rows)),
                   interface_residues=[int(v) for v in (_value(r.get("interface_residues")) for r in rows) if v is not None])
    s = evaluation["summary"]
    if s.get("n_hotspot_designs") is not None:
        out.update(hotspot_designs=int(s["n_hotspot_designs"]), hotspots_all_in_contact=int(s["n_hotspots_all_in_contact"]))
    if s.get("mean_ss_agreement") is not None:
        out["ss_agreement"] = float(s["mean_ss_agreement"])
    return out


def run_mode(lm, mode: Mode, potentials: str, folder: Path, *, steps: int = 100, num: int | None = None) -> dict:
    """Sample ``mode`` (:func:`mode_request`), write it to ``folder`` as ``protein sample`` does,
    score it with ``protein evaluate``'s code; returns the run's record."""
    from diffsci.protein.design.output import remove_outputs, write_designs
    from diffsci.protein.design.sampling import sample_backbones
    from diffsci.protein.metrics.evaluate import evaluate_folder

    t0 = time.time()
    designs = sample_backbones(lm, mode_request(mode, potentials, steps=steps, num=num), progress=False)
    seconds = time.time() - t0
    left = remove_outputs(folder)  # an earlier run's designs here would be scored with these
    if left:
        raise DiffsciError(f"{folder} holds {len(left)} structure file(s) bench modes did not write "
                           f"({left[0].name}); give another --out")
    write_designs(designs, folder, checkpoint=lm.source)
    evaluation = evaluate_folder(folder, progress=False)
    terms = designs[0].potentials or "none"
    if designs[0].strand_restraints:
        terms += f" + strand restraints {designs[0].strand_restraints:g}"
    return {"mode": mode.name, "potentials": potentials, "terms": terms,
            "command": mode_command(mode, potentials, steps=steps, num=num), "folder": folder.name,
            "sample_seconds": round(seconds, 1), **summarise_run(evaluation, _fixed_chains(designs))}


def _between(r: dict) -> str:
    if "interchain_min_ca" not in r:
        return "-"
    lo, hi = r["interchain_min_ca"]
    text = f"min CA {lo:.2f}-{hi:.2f} Å, {r['interchain_clashes']} pairs < 3 Å"
    if r.get("interface_residues"):
        text += f", interface {min(r['interface_residues'])}-{max(r['interface_residues'])} residues"
    if "hotspot_designs" in r:
        text += f"; every hotspot in contact in {r['hotspots_all_in_contact']}/{r['hotspot_designs']}"
    return text


def _report(payload: dict, png: Path) -> str:
    lines = ["# Physical validity by design mode", "", f"Command: `{payload['command']}`  ",
             f"Checkpoint: `{payload['checkpoint']}`; {payload['steps']} steps; wall time {payload['wall_s']} s "
             f"(load average {payload['load_average']['start'][0]:.1f} at the start).", "",
             "Potentials `default`: the request's defaults (their terms in the column); `none`: every sampling-time "
             "potential and the strand restraints off, the network alone. Broken: designed chains with a "
             "consecutive CA-CA > 4.2 Å (largest CA-CA: the longest such link of any designed chain; 3.8 Å ideal); CA-CA ok: consecutive CA-CA within 3.8 ± 0.3 Å; clashes: non-adjacent CA "
             "pairs < 3 Å within chains; between chains: the smallest inter-chain CA-CA per design (range), CA "
             "pairs < 3 Å between chains, designed residues within 10 Å of another chain.", "",
             "| mode | request (`protein sample ...`) | potentials | broken | largest CA-CA (Å) | CA-CA ok | clashes "
             "| between chains | DSSP H / E | SS agreement | seconds |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in payload["runs"]:
        agree = "-" if r.get("ss_agreement") is None else f"{r['ss_agreement']:.2f}"
        unit = " chains" if r["chains"] != r["designs"] else ""
        lines.append(f"| {r['mode']} | `{r['command'].removeprefix('diffsci protein sample ')}` | {r['terms']} | "
                     f"{r['broken']}/{r['chains']}{unit} | {r['ca_ca_max']:.2f} | {r['ca_ca_ok']:.3f} | {r['clashes']} | {_between(r)} | "
                     f"{r['dssp_helix']:.2f} / {r['dssp_strand']:.2f} | {agree} | {r['sample_seconds']} |")
    lines += ["", f"![broken chains by mode]({png.name})", ""]
    return "\n".join(lines)


def _plot(out: Path, runs: list[dict]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["mode"] for r in runs))
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(4.0, 0.7 * len(names) + 1.5), 3))
    for k, pot in enumerate(POTENTIALS):
        got = {r["mode"]: r for r in runs if r["potentials"] == pot}
        if got:
            pos = x + (k - 0.5) * 0.4
            frac = [got[n]["broken"] / got[n]["chains"] if n in got else np.nan for n in names]
            ax.bar(pos, frac, 0.4, color=f"C{k}", label="default potentials" if pot == "default" else "network alone")
            for px, n, f in zip(pos, names, frac):  # the counts, so that a zero shows too
                if n in got:
                    ax.text(px, f + 0.02, f"{got[n]['broken']}/{got[n]['chains']}", ha="center", va="bottom",
                            fontsize=6, color=f"C{k}")
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylabel("chains with a break")
    ax.set_ylim(0, 1.15)
    ax.legend(frameon=False, loc="upper left")
    return save_figure(fig, out / "modes.png")


def run_benchmark(out, *, quick: bool = False, modes=None, potentials: str = "both", num: int | None = None,
                  steps: int | None = None, checkpoint=None, progress: bool = True) -> dict:
    """Run the modes into ``out`` (``results.json``, ``report.md``, ``modes.png``, the designs
    under ``designs/``); returns the payload. ``modes``: names from :data:`MODES` (None: all, or
    :data:`QUICK_MODES` with ``quick``); ``potentials``: ``both``, ``default`` or ``none``; ``num``:
    designs per mode (None: each mode's own, 2 with ``quick``)."""
    import os

    import torch

    from diffsci.protein.design.sampling import load_model

    known = {m.name: m for m in MODES}
    names = list(modes) if modes else list(QUICK_MODES if quick else known)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise DiffsciError(f"unknown mode {', '.join(unknown)}; choose from {', '.join(known)}")
    pots = POTENTIALS if potentials == "both" else (potentials,)
    if potentials != "both" and potentials not in POTENTIALS:
        raise DiffsciError(f"potentials must be both, default or none, got {potentials!r}")
    if num is None and quick:
        num = 2
    steps = steps or 100
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_start, load_start = time.time(), os.getloadavg()
    log = (lambda s: print(f"[bench modes] {s}", file=sys.stderr, flush=True)) if progress else None
    lm = load_model(checkpoint)
    runs = []
    for name in names:
        for pot in pots:
            if pot == "none" and "hotspots" in known[name].request:
                continue  # hotspots act only through their potential: alone, the network is the binder mode's
            r = run_mode(lm, known[name], pot, out / "designs" / f"{name}-{pot}", steps=steps, num=num)
            runs.append(r)
            if log:
                log(f"{name} ({pot}): {r['broken']}/{r['chains']} broken, CA-CA ok {r['ca_ca_ok']:.3f}, "
                    f"{r['clashes']} clashes; {_between(r)} ({r['sample_seconds']} s)")
    command = command_line("modes", out, flags=[("--quick", quick)], options=[
        ("--modes", None if not modes else " ".join(names)), ("--potentials", None if potentials == "both" else potentials),
        ("--num", num if num is not None and not (quick and num == 2) else None),
        ("--steps", None if steps == 100 else steps), ("--checkpoint", checkpoint)])
    payload = jsonable({"command": command, "checkpoint": lm.source, "steps": steps, "runs": runs,
                        "wall_s": round(time.time() - t_start, 1),
                        "load_average": {"start": list(load_start), "end": list(os.getloadavg())}})
    png = _plot(out, runs)
    write_results(out, payload, _report(payload, png))
    if log:
        log(f"{out / 'report.md'} in {payload['wall_s']} s")
    return payload


def add_parser(subparsers) -> None:
    p = add_benchmark_parser(subparsers, "modes", run_benchmark,
                             help="physical validity by design mode, with the default potentials and without",
                             doc=__doc__, outputs="results.json, report.md, modes.png, designs/",
                             quick=f"modes {', '.join(QUICK_MODES)}, 2 designs each (~3 min on one CPU thread)")
    p.add_argument("--modes", nargs="+", metavar="MODE",
                   help=f"modes to run (default: all): {', '.join(m.name for m in MODES)}")
    p.add_argument("--potentials", choices=("both",) + POTENTIALS, default="both",
                   help="default: the request's default potentials; none: the network alone (no potential, no "
                        "strand restraints; not binder-hotspots, whose hotspots act only through their potential); "
                        "both (the default): each mode twice, same seed")
    p.add_argument("--num", type=int, help="designs per mode (default: each mode's own, 2 with --quick)")
    p.add_argument("--steps", type=int, help="sampling steps (default 100)")
    p.add_argument("--checkpoint", help="protein checkpoint (default: the shipped one)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=lambda args: run_from_args(run_benchmark, args, progress=not args.quiet))

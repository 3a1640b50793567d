"""Motif-scaffolding benchmark: motifs cut from real held-out chains, scaffolded, scored.

Problems (:func:`motif_problems`) are cut from the bundled dataset's chains of one split
(default ``heldout``, never used to tune the method; the method was tuned on ``train``
problems): a continuous helix, a continuous strand, and discontinuous two-segment motifs
(two secondary-structure elements with a loop between them), chosen by biotite's P-SEA
(``annotate_sse``) on the whole chain. Each chain is written as a PDB file (chain A, its own
residue numbers and sequence) and designed through the public API
(:func:`diffsci.protein.design.sampling.sample_backbones` with an RFdiffusion contig such as
``[13-33/A27-40/13-33]``).

With ``binder=True`` (``--binder``) the benchmark adds :data:`BINDER_PROBLEMS`: a designed chain
beside a fixed real target (RFdiffusion's ``[A25-109/0 60-80]`` on MDM2, PDB 1YCR, shipped as
``benchmarks/data/1YCR.pdb``), scored between the chains.

Per design: motif RMSD (N, CA, C after Kabsch superposition), the CA-CA distance at every
motif-scaffold junction, the fraction of consecutive CA-CA within 3.8 +- 0.3 Å over each chain
(:func:`diffsci.protein.metrics.ca_ca_stats`), CA clashes (:func:`~diffsci.protein.metrics.ca_clashes`),
chain breaks (consecutive CA-CA > 4.2 Å within a chain, :func:`~diffsci.protein.metrics.chain_breaks`),
between chains (a design of several chains) the CA pairs closer than 3 Å (``interchain_clashes``),
the minimum inter-chain CA-CA and the designed residues at the interface (CA within 10 Å of
another chain: :func:`~diffsci.protein.metrics.between_chains`), and success (motif RMSD < 1 Å,
no chain break, no inter-chain clash, CA-CA ok >= 0.9).

Designs are sampled with every sampling-time potential off (``potentials="none"``: the network
alone, how a checkpoint is chosen) unless ``potentials`` says otherwise (``"default"``: the
request's defaults, what a user gets; or ``NAME:WEIGHT,...``).
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from diffsci.benchmarks.common import (add_benchmark_parser, add_churn_option, add_potentials_option, command_line,
                                       request_potentials, run_from_args, write_results)
from diffsci.core.figures import save_figure
from diffsci.core.io import jsonable

__all__ = ["MotifProblem", "BINDER_PROBLEMS", "motif_problems", "motif_secondary_structure", "score_design", "run_benchmark", "add_parser"]

RMSD_OK = 1.0  # Å
CA_OK = 0.9
JUNCTION_TOL = (0.5, 0.3)  # Å around 3.8


@dataclass(frozen=True)
class MotifProblem:
    """One motif problem: ``segments`` are (first, last) author residue numbers in ``source``'s
    chain (written as chain A), ``contig`` the contig that scaffolds them. ``path``: a shipped
    structure file (relative to ``benchmarks/data``) used as the motif file as it is (None: the
    chain is written out by :func:`write_motif_file`)."""

    name: str
    kind: str
    source: str
    segments: tuple[tuple[int, int], ...]
    contig: str
    path: str | None = None


DATA = Path(__file__).resolve().parent / "data"

#: problems with a fixed chain (``--binder``): a binder designed beside a real target
BINDER_PROBLEMS = (
    MotifProblem("binder:1YCR", "binder", "PDB 1YCR chain A (MDM2), RFdiffusion's example copy (CC0)",
                 ((25, 109),), "[A25-109/0 60-80]", path="1YCR.pdb"),
)


def _runs(labels: np.ndarray, res_ids: np.ndarray, ins: np.ndarray, label: str, min_len: int):
    """(start, stop) index runs of ``label`` with consecutive residue numbers and no insertion codes."""
    runs, start = [], None
    for i in range(len(labels) + 1):
        ok = (i < len(labels) and labels[i] == label and not ins[i]
              and (start is None or res_ids[i] == res_ids[i - 1] + 1))
        if ok and start is None:
            start = i
        elif not ok and start is not None:
            if i - start >= min_len:
                runs.append((start, i))
            start = i if (i < len(labels) and labels[i] == label and not ins[i]) else None
    return runs


def motif_secondary_structure(problem: MotifProblem, chain) -> dict[str, float]:
    """Secondary structure of a problem's motif residues in its whole source chain: the fractions
    P-SEA labels helix (``psea_helix``) and strand (``psea_strand``) beside the fractions DSSP
    labels ``H`` (``dssp_helix``) and ``E`` (``dssp_strand``).

    ``chain``: the problem's BackboneChain (coords Shape (L, 4, 3), ``res_ids`` Shape (L,)).
    """
    from diffsci.protein.metrics import dssp_labels, psea_labels

    res = np.asarray(chain.res_ids)
    ins = np.asarray(chain.ins_codes)
    motif = np.zeros(len(res), dtype=bool)
    for first, last in problem.segments:
        motif |= (res >= first) & (res <= last) & ~ins.astype(bool)
    psea, dssp = psea_labels(chain.coords)[motif], dssp_labels(chain.coords)[motif]
    return {"psea_helix": float(np.mean(psea == "a")), "psea_strand": float(np.mean(psea == "b")),
            "dssp_helix": float(np.mean(dssp == "H")), "dssp_strand": float(np.mean(dssp == "E"))}


def _flank(core_min: int, core_max: int, total_max: int) -> tuple[int, int]:
    """Flank range (lo, hi) for two flanks around a core of ``core_min..core_max`` residues: lo
    makes the shortest design reach 40 residues (the sampler's minimum), hi keeps the longest
    within ``total_max``."""
    lo = max(5, -(-(40 - core_min) // 2))
    hi = max(lo, min(lo + 20, (total_max - core_max) // 2))
    return lo, hi


def _center(a: int, b: int, n: int) -> tuple[int, int]:
    """The central ``n`` of index range [a, b)."""
    n = min(n, b - a)
    s = a + (b - a - n) // 2
    return s, s + n


def motif_problems(ds, split: str = "heldout", *, max_problems: int | None = None, total_max: int = 100) -> list:
    """Motif problems, one per chain of ``split`` (in dataset order), kinds cycling through
    helix, strand, two-segment; a chain without the wanted kind gives the next kind it has.

    Returns a list of ``(MotifProblem, chain)`` pairs (``chain`` a BackboneChain)."""
    from diffsci.protein.metrics import psea_labels

    kinds = ("helix", "two-segment", "strand")
    out = []
    for k, i in enumerate(ds.indices(split)):
        ch = ds.chain(int(i))
        if not np.isfinite(ch.coords).all():
            continue
        sse = psea_labels(ch.coords)
        res, ins = np.asarray(ch.res_ids), np.asarray(ch.ins_codes)
        helices = _runs(sse, res, ins, "a", 8)
        strands = _runs(sse, res, ins, "b", 5)
        label = f"{ch.source.split('file=')[-1].split()[0].split('/')[-1]}:{ch.chain_id}"
        piece = [p for p in ch.source.split() if p.startswith("piece=")]
        label += f"#{len(out)}" if piece else ""
        problem = None
        for kind in kinds[k % 3:] + kinds[:k % 3]:
            if kind == "helix" and helices:
                a, b = _center(*max(helices, key=lambda r: r[1] - r[0]), 14)
                segs = ((a, b),)
            elif kind == "strand" and strands:
                a, b = _center(*max(strands, key=lambda r: r[1] - r[0]), 8)
                segs = ((a, b),)
            elif kind == "two-segment":
                elements = sorted([_center(*r, 8) for r in helices + [s for s in strands if s[1] - s[0] >= 4]])
                pairs = [(e1, e2) for e1, e2 in zip(elements, elements[1:]) if 3 <= e2[0] - e1[1] <= 20
                         and np.all(np.diff(res[e1[0]:e2[1]]) == 1)]
                if not pairs:
                    continue
                segs = pairs[0]
            else:
                continue
            problem = (kind, segs)
            break
        if problem is None:
            continue
        kind, segs = problem
        motif_len = sum(b - a for a, b in segs)
        if len(segs) == 1:
            lo, hi = _flank(motif_len, motif_len, total_max)
            a, b = segs[0]
            contig = f"[{lo}-{hi}/A{res[a]}-{res[b - 1]}/{lo}-{hi}]"
        else:
            (a1, b1), (a2, b2) = segs
            gap = a2 - b1
            d = float(np.linalg.norm(ch.coords[a2, 1] - ch.coords[b1 - 1, 1]))
            g_lo = max(int(np.ceil(d / 3.4)), gap - 3, 1)
            g_hi = max(g_lo, gap + 3)
            lo, hi = _flank(motif_len + g_lo, motif_len + g_hi, total_max)
            contig = f"[{lo}-{hi}/A{res[a1]}-{res[b1 - 1]}/{g_lo}-{g_hi}/A{res[a2]}-{res[b2 - 1]}/{lo}-{hi}]"
        seg_ids = tuple((int(res[a]), int(res[b - 1])) for a, b in segs)
        out.append((MotifProblem(f"{kind}:{label}", kind, ch.source, seg_ids, contig), ch))
        if max_problems and len(out) >= max_problems:
            break
    return out


def write_motif_file(chain, path: Path) -> Path:
    """The chain as a PDB file (chain A, its residue numbers and sequence)."""
    from diffsci.protein.io.pdb import write_backbone_pdb

    write_backbone_pdb(path, np.asarray(chain.coords), chain_ids=["A"], sequence=chain.sequence,
                       res_ids=np.asarray(chain.res_ids))
    return path


def _kabsch_rmsd(a: np.ndarray, b: np.ndarray) -> float:
    from diffsci.protein.metrics.designability import kabsch_superpose

    moved = kabsch_superpose(a, b)
    return float(np.sqrt(np.mean(np.sum((moved - b) ** 2, axis=-1))))


def junctions(motif_index: np.ndarray, length: int) -> list[tuple[int, int]]:
    """Consecutive position pairs (i, i + 1) with exactly one of the two in the motif."""
    inside = np.zeros(length, dtype=bool)
    inside[np.asarray(motif_index, dtype=int)] = True
    return [(i, i + 1) for i in range(length - 1) if inside[i] != inside[i + 1]]


def score_design(coords: np.ndarray, motif_index: np.ndarray, motif_coords: np.ndarray,
                 chain_lengths=None) -> dict:
    """Scores of one design. coords (L, 4, 3) Å; motif_index (M,); motif_coords (M, 4, 3) Å;
    ``chain_lengths``: the design's chains in order (None: one chain)."""
    from diffsci.protein.metrics import between_chains, ca_ca_distances, ca_clashes, chain_breaks
    from diffsci.protein.metrics.geometry import INTERFACE_DISTANCE

    coords = np.asarray(coords, dtype=np.float64)
    ca = coords[:, 1]
    ends = np.cumsum([0] + list(chain_lengths or [len(ca)]))
    chains = [ca[a:b] for a, b in zip(ends[:-1], ends[1:])]
    got = coords[motif_index][:, :3].reshape(-1, 3)
    want = np.asarray(motif_coords, dtype=np.float64)[:, :3].reshape(-1, 3)
    same_chain = lambda i, j: np.searchsorted(ends, i, "right") == np.searchsorted(ends, j, "right")  # noqa: E731
    junc = [float(np.linalg.norm(ca[j] - ca[i])) for i, j in junctions(motif_index, len(ca)) if same_chain(i, j)]
    steps = np.concatenate([ca_ca_distances(c) for c in chains])
    ok = float(np.mean(np.abs(steps - 3.8) <= 0.3)) if steps.size else float("nan")
    n_clash, clash_frac = ca_clashes(ca)
    rmsd = _kabsch_rmsd(got, want)
    per_chain = [chain_breaks(c) for c in chains]
    breaks = int(sum(b for b, _ in per_chain))
    row = {"length": int(len(ca)), "motif_rmsd": rmsd, "junction_ca_ca": junc, "ca_ca_ok": ok,
           "clashes": int(n_clash), "clash_fraction": clash_frac, "chain_breaks": breaks,
           "max_ca_ca": float(np.nanmax([m for _, m in per_chain])), "interchain_clashes": 0}
    if len(chains) > 1:  # each pair of chains counted once; the interface of the designed residues
        inter = [between_chains(chains[k], chains[k + 1:]) for k in range(len(chains) - 1)]
        chain_of = np.repeat(np.arange(len(chains)), np.diff(ends))
        designed = np.setdiff1d(np.arange(len(ca)), motif_index)
        d = np.linalg.norm(ca[designed, None] - ca[None], axis=-1)
        d[chain_of[designed][:, None] == chain_of[None]] = np.inf
        row.update(interchain_clashes=int(sum(x["interchain_clashes"] for x in inter)),
                   interchain_min_ca=float(min(x["interchain_min_ca"] for x in inter)),
                   interface_residues=int((d.min(1) <= INTERFACE_DISTANCE).sum()))
    row["success"] = bool(rmsd < RMSD_OK and breaks == 0 and row["interchain_clashes"] == 0 and ok >= CA_OK)
    return row


def _within(values, tol: float) -> float | None:
    v = np.asarray(values, dtype=float)
    return float(np.mean(np.abs(v - 3.8) <= tol)) if v.size else None


def summarise(rows: list[dict]) -> dict:
    """Aggregate per-design rows: means, junction fractions within 3.8 +- 0.5 / 0.3 Å, success rate."""
    junc = [d for r in rows for d in r["junction_ca_ca"]]
    nll = [r["mpnn_nll_proxy"] for r in rows if r.get("mpnn_nll_proxy") is not None]
    return {"designs": len(rows),
            "mpnn_nll_proxy_mean": float(np.mean(nll)) if nll else None,
            "motif_rmsd_mean": float(np.mean([r["motif_rmsd"] for r in rows])),
            "motif_rmsd_max": float(np.max([r["motif_rmsd"] for r in rows])),
            "junctions": len(junc),
            "junction_within_0.5": _within(junc, JUNCTION_TOL[0]),
            "junction_within_0.3": _within(junc, JUNCTION_TOL[1]),
            "ca_ca_ok_mean": float(np.mean([r["ca_ca_ok"] for r in rows])),
            "clash_fraction_mean": float(np.mean([r["clash_fraction"] for r in rows])),
            "designs_with_breaks": int(sum(r["chain_breaks"] > 0 for r in rows)),
            "designs_with_interchain_clashes": int(sum(r.get("interchain_clashes", 0) > 0 for r in rows)),
            "interchain_min_ca_min": min((r["interchain_min_ca"] for r in rows if "interchain_min_ca" in r), default=None),
            "interface_residues_min": min((r["interface_residues"] for r in rows if "interface_residues" in r), default=None),
            "success_rate": float(np.mean([r["success"] for r in rows]))}


def run_problems(lm, problems, folder: Path, *, num: int, steps: int, seed: int, log=None,
                 designability: bool = False, method: str = "align", taper: int | None = None,
                 potentials: str = "none", churn: float | None = None) -> list[dict]:
    """Design ``num`` backbones per problem; returns one result dict per problem (rows + summary).

    ``problems``: ``(MotifProblem, chain)`` pairs (``chain`` None for a problem with a shipped
    ``path``). ``method``, ``taper``: how the motif is held
    (:func:`diffsci.protein.design.motif.condition_on_motif`; ``"fixed"`` pins the motif at its
    input position, the baseline method; taper None: the default). ``potentials``: the
    sampling-time potentials (module docstring; default ``"none"``, the network alone). ``churn``:
    the sampler's EDM churn (None: what ``protein sample`` uses; 0: the plain ODE).

    ``designability``: add ProteinMPNN's ``mpnn_nll_proxy`` per design, all designs in one
    ProteinMPNN run (:func:`diffsci.protein.metrics.designability.designability` without a folding
    backend: a proxy, not a designability rate)."""
    from diffsci.protein.design.contig import load_motif
    from diffsci.protein.design.sampling import sample_backbones
    from diffsci.protein.design.request import DesignRequest

    folder.mkdir(parents=True, exist_ok=True)
    results, coords = [], []
    for k, (prob, chain) in enumerate(problems):
        t0 = time.time()
        path = DATA / prob.path if prob.path else write_motif_file(chain, folder / f"motif_{k:02d}.pdb")
        request = DesignRequest(lengths=[], num=num, seed=seed, steps=steps, motif=load_motif(path), contig=prob.contig,
                                motif_method=method, potentials=request_potentials(potentials), churn=churn,
                                **{} if taper is None else {"motif_taper": taper})
        designs = sample_backbones(lm, request, progress=False)
        rows = []
        for d in designs:
            row = score_design(d.coords[0], d.motif_index, d.motif_coords, d.chain_lengths)
            row["design"] = d.name
            rows.append(row)
        res = {"problem": asdict(prob), "motif_file": path.name, "potentials": designs[0].potentials, "rows": rows, "summary": summarise(rows),
               "seconds": round(time.time() - t0, 1)}
        results.append(res)
        coords.append([d.coords[0] for d in designs])
        if log:
            s = res["summary"]
            log(f"{prob.name} {prob.contig}: rmsd max {s['motif_rmsd_max']:.2f}, junctions "
                f"{s['junction_within_0.5']:.2f} within 0.5 Å, success {s['success_rate']:.2f} ({res['seconds']} s)")
    if designability:
        from diffsci.protein.metrics.designability import designability as mpnn

        items = [(f"p{k}_{j}", c) for k, cs in enumerate(coords) for j, c in enumerate(cs)]
        nll = iter(r["mpnn_nll_proxy"] for r in mpnn(items, None, progress=False))
        for res in results:
            for row in res["rows"]:
                row["mpnn_nll_proxy"] = next(nll)
            res["summary"] = summarise(res["rows"])
    return results


def _plot(out: Path, results: list[dict]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    junc = [d for r in results for row in r["rows"] for d in row["junction_ca_ca"]]
    rmsd = [row["motif_rmsd"] for r in results for row in r["rows"]]
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    axes[0].hist(junc, bins=np.arange(0, max(10.0, max(junc, default=0) + 0.25), 0.25), color="C0")
    axes[0].axvspan(3.3, 4.3, color="0.9", zorder=0)
    axes[0].set_xlabel("motif-scaffold junction CA-CA (Å)")
    axes[0].set_ylabel("junctions")
    axes[1].hist(rmsd, bins=20, color="C1")
    axes[1].set_xlabel("motif RMSD, N CA C (Å)")
    return save_figure(fig, out / "motif_junctions.png")


def _report(payload: dict, png: Path) -> str:
    fmt = lambda v, p=2: "n/a" if v is None else f"{v:.{p}f}"  # noqa: E731
    lines = ["# Motif-scaffolding benchmark", "", f"Command: `{payload['command']}`  ",
             f"Checkpoint: `{payload['checkpoint']}`; split `{payload['split']}`; "
             f"{payload['num']} designs per problem, potentials `{payload.get('potentials', 'none')}` (each problem's terms in results.json), "
             f"{payload['steps']} steps, churn {payload.get('churn', 'default')}, seed {payload['seed']}; wall time {payload['wall_s']} s.", "",
             "Motif RMSD over N, CA, C after superposition; junction: CA-CA across each motif-scaffold boundary; "
             "CA-CA ok: fraction of consecutive CA-CA within 3.8 ± 0.3 Å; break: CA-CA > 4.2 Å within a chain; "
             "inter-chain clash: a design with CA pairs of two chains < 3 Å (min CA / interface: the smallest "
             "inter-chain CA-CA and designed residues within 10 Å of another chain, worst design); "
             "success: RMSD < 1 Å, no break, no inter-chain clash, CA-CA ok >= 0.9. Designability (ProteinMPNN + refolding) is not "
             "computed: no folding backend offline; MPNN NLL (with `--designability`) is ProteinMPNN's mean "
             "negative log-likelihood of its designed sequences, a proxy only (lower: easier to design).", "",
             "Motif SS: the motif residues' helix / strand fractions in their source chain by P-SEA (which chose "
             "the motifs) and by DSSP.", "",
             "| problem | contig | motif SS P-SEA a / b | motif SS DSSP H / E | n | RMSD mean / max (Å) | junctions "
             "| within ±0.5 | within ±0.3 | CA-CA ok | clash | breaks | inter-chain clash | min CA / interface "
             "| success | MPNN NLL |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in payload["problems"] + [{"problem": {"name": "**all**", "contig": ""}, "summary": payload["overall"]}]:
        s = r["summary"]
        m = r.get("motif_sse")
        sse = (f"{fmt(m['psea_helix'])} / {fmt(m['psea_strand'])} | {fmt(m['dssp_helix'])} / {fmt(m['dssp_strand'])}"
               if m else " | ")
        lines.append(f"| {r['problem']['name']} | `{r['problem']['contig']}` | {sse} | {s['designs']} | "
                     f"{fmt(s['motif_rmsd_mean'])} / {fmt(s['motif_rmsd_max'])} | {s['junctions']} | "
                     f"{fmt(s['junction_within_0.5'])} | {fmt(s['junction_within_0.3'])} | {fmt(s['ca_ca_ok_mean'])} | "
                     f"{fmt(s['clash_fraction_mean'], 4)} | {s['designs_with_breaks']} | "
                     f"{s.get('designs_with_interchain_clashes', 0)} | {fmt(s.get('interchain_min_ca_min'))} / "
                     f"{'n/a' if s.get('interface_residues_min') is None else s['interface_residues_min']} | {fmt(s['success_rate'])} | "
                     f"{fmt(s['mpnn_nll_proxy_mean'])} |")
    lines += ["", f"![junctions]({png.name})", ""]
    return "\n".join(lines)


def run_benchmark(out, *, quick: bool = False, num: int | None = None, steps: int | None = None,
                  problems: int | None = None, checkpoint=None, seed: int = 0, split: str = "heldout",
                  progress: bool = True, designability: bool = False, method: str = "align",
                  taper: int | None = None, binder: bool = False, potentials: str = "none",
                  churn: float | None = None) -> dict:
    """Run the benchmark into ``out`` (``results.json``, ``report.md``, ``motif_junctions.png``,
    and the motif PDB files under ``motifs/``); returns the JSON payload. ``binder``: add
    :data:`BINDER_PROBLEMS`; ``potentials``: module docstring; ``churn``: :func:`run_problems`."""
    import torch

    from diffsci.protein.io.dataset import bundled_dataset_path, load_dataset
    from diffsci.protein.design.sampling import load_model

    torch.set_num_threads(min(torch.get_num_threads(), 2))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    log = (lambda s: print(f"[bench motif] {s}", file=sys.stderr, flush=True)) if progress else None
    num = num or 4
    steps = steps or 100
    n_problems = problems or (6 if quick else None)
    ds = load_dataset(bundled_dataset_path())
    probs = motif_problems(ds, split, max_problems=n_problems) + [(b, None) for b in (BINDER_PROBLEMS if binder else ())]
    lm = load_model(checkpoint)
    if designability:
        from diffsci.protein.metrics.designability import require_proteinmpnn

        require_proteinmpnn()  # before any sampling
    results = run_problems(lm, probs, out / "motifs", num=num, steps=steps, seed=seed, log=log,
                           designability=designability, method=method, taper=taper, potentials=potentials,
                           churn=churn)
    for res, (prob, chain) in zip(results, probs):
        res["motif_sse"] = None if chain is None else motif_secondary_structure(prob, chain)
    overall = summarise([row for r in results for row in r["rows"]])
    default = lambda value, usual: None if value == usual else value  # noqa: E731
    command = command_line("motif", out, flags=[("--quick", quick), ("--designability", designability),
                                                ("--binder", binder)], options=[
        ("--potentials", default(potentials, "none")), ("--churn", churn),
        ("--split", default(split, "heldout")), ("--method", default(method, "align")), ("--taper", taper),
        ("--num", default(num, 4)), ("--steps", default(steps, 100)),
        ("--problems", None if quick and n_problems == 6 else n_problems), ("--seed", default(seed, 0)),
        ("--checkpoint", checkpoint)])
    payload = jsonable({"command": command, "checkpoint": lm.source, "split": split, "num": num,
                           "steps": steps, "seed": seed, "method": method, "taper": taper,
                           "potentials": potentials, "churn": "default" if churn is None else churn,
                           "problems": results, "overall": overall,
                           "wall_s": round(time.time() - t_start, 1)})
    png = _plot(out, results)
    write_results(out, payload, _report(payload, png))
    if log:
        log(f"overall: success {overall['success_rate']:.2f}, "
            f"junctions within 0.5 Å {overall['junction_within_0.5']}; "
            f"{out / 'report.md'} in {payload['wall_s']} s")
    return payload


def add_parser(subparsers) -> None:
    p = add_benchmark_parser(subparsers, "motif", run_benchmark, help="motif scaffolding on motifs cut from held-out chains",
                             doc=__doc__, outputs="results.json, report.md, motif_junctions.png",
                             quick="6 problems x 4 designs at 100 steps (~5 min on 2 CPU cores)")
    p.add_argument("--num", type=int, help="designs per problem (default 4)")
    p.add_argument("--steps", type=int, help="sampling steps (default 100)")
    p.add_argument("--problems", type=int,
                   help="number of problems (default: 6 with --quick, else one per held-out chain)")
    p.add_argument("--checkpoint")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", choices=("heldout", "train"), default="heldout",
                   help="chains the motifs are cut from (default heldout; the method was tuned on train)")
    p.add_argument("--method", choices=("align", "fixed", "noised"), default="align",
                   help="how the motif is held (default align; fixed = the motif pinned at its input position, for comparison)")
    p.add_argument("--taper", type=int, default=None,
                   help="align: residues over which the motif's correction fades into a flank (default 6; 0: none)")
    p.add_argument("--binder", action="store_true",
                   help="add the binder problem: [A25-109/0 60-80] beside MDM2 (benchmarks/data/1YCR.pdb), scored between chains")
    add_potentials_option(p)
    add_churn_option(p)
    p.add_argument("--designability", action="store_true",
                   help="add ProteinMPNN's sequence-likelihood proxy per design (needs proteinmpnn; no refolding)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=lambda args: run_from_args(run_benchmark, args, progress=not args.quiet))

"""``diffsci bench protein``: designed backbones against real chains and baselines.

Rows, each measured by the same code (:func:`diffsci.protein.metrics.evaluate_structures`) in
the same run:

- ``real (held-out)``: the held-out real chains of the bundled dataset (what proteins score);
- ``real (held-out, training filters)``: those of them that pass the checkpoint's training
  filters (P-SEA coil, radius of gyration): the globular kind of chain the model learned from
  (context; the bracket below uses all held-out chains);
- ``diffsci, 100 steps`` and ``diffsci, 20 steps``: the shipped checkpoint;
- ``diffsci --ss (restraints)``: ``num`` designs of the β-rich request
  :data:`diffsci.protein.ss.BETA_REQUEST` (L = 64) with the shipped checkpoint and
  its strand restraints (the default of ``protein sample --ss``): what a strand request gives,
  beside the unconditional rows (left out with ``ss_row=False``);
- ``diffsci --ss prior (restraints)``: ``2 num`` designs at L = 100 whose secondary
  structure and strand pairs are drawn from the training chains (:mod:`diffsci.protein.design.topology`,
  ``protein sample --ss prior``): unconditional designs with real chains' strand content (left
  out with ``ss_row=False``);
- ``untrained``: the same architecture with its initial weights;
- ``random walk``: a self-avoiding random walk of 3.8 Å CA steps (no CA pair closer than
  3.8 Å), with N, C, O placed from ideal geometry on frames built from the trace.

The report has two tables over these rows: geometry, P-SEA and DSSP, novelty and diversity; and
secondary structure and sheets (P-SEA beside DSSP, sheets, strands, parallel and antiparallel
ladders, paired fractions, contact order: :data:`SHEET_COLUMNS`, also in ``results.json`` as
``sheet_table``). Novelty (``max_tm_reference``) is measured against the train split of the
bundled chains.
Published numbers of FrameDiff, FrameFlow, RFdiffusion, Genie2 and Proteina are listed in the
report for context only (:data:`PUBLISHED`, with sources): their protocols (ESMFold refolding,
8 ProteinMPNN sequences, other lengths) differ, and this run does not refold.

``--rates R ...`` and ``--acceptance`` run instead the acceptance figures that chose the shipped
checkpoint (:mod:`diffsci.protein.metrics.acceptance`: CA-CA spacing, CA clashes, P-SEA helix and
strand beside DSSP helix and strand, Rg against 2.2 L^0.38, CA contacts) at each rotation rate R, or at the checkpoint's own
rate, into ``OUT/rates.json`` + ``OUT/rates.md`` or ``OUT/acceptance.json`` + ``OUT/acceptance.md``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from diffsci.benchmarks.common import add_churn_option, add_potentials_option, add_t_stop_option, request_potentials
from diffsci.core.errors import DiffsciError
from diffsci.core.figures import save_figure
from diffsci.core.io import jsonable, write_json, write_text
from diffsci.core.utils import make_generator
from diffsci.protein.metrics import ACCEPTANCE_CA_CA_WINDOW, ACCEPTANCE_LENGTHS, expected_radius_of_gyration

__all__ = ["random_walk_backbone", "run_benchmark", "run_rate_sweep", "run_acceptance", "figures_table", "add_parser",
           "SYSTEM_ORDER"]

SS_ROW = "diffsci --ss (restraints)"
PRIOR_ROW = "diffsci --ss prior (restraints)"
#: length of the designs of the PRIOR_ROW (issue 16's acceptance length for unconditional designs)
PRIOR_LENGTH = 100
SYSTEM_ORDER = ["real (held-out)", "real (held-out, training filters)", "diffsci, 100 steps", "diffsci, 20 steps", SS_ROW,
                PRIOR_ROW, "untrained", "random walk"]
SHEET_COLUMNS = (("helix", "P-SEA helix", ".2f"), ("strand", "P-SEA strand", ".2f"), ("dssp_helix", "DSSP H", ".2f"),
                 ("dssp_strand", "DSSP E", ".2f"), ("sheets", "sheets", ".2f"), ("strands", "strands", ".2f"),
                 ("ladders_parallel", "parallel ladders", ".2f"), ("ladders_antiparallel", "antiparallel ladders", ".2f"),
                 ("paired_fraction", "DSSP E on a ladder", ".2f"), ("psea_strand_paired", "P-SEA strand paired", ".2f"),
                 ("contact_order", "contact order", ".3f"), ("absolute_contact_order", "abs. contact order", ".1f"))
"""Columns of the secondary-structure and sheet table: per-sample field, header, format (means over
the samples that define the field; definitions in :mod:`diffsci.protein.metrics.topology`)."""


def random_walk_backbone(length: int, generator: torch.Generator, step: float = 3.8, min_dist: float = 3.8,
                         max_tries: int = 200) -> np.ndarray:
    """A self-avoiding random walk of ``step`` Å (no non-adjacent CA pair closer than ``min_dist``),
    as a backbone (L, 4, 3) with N, C, O from ideal geometry on Gram-Schmidt frames of the trace."""
    from diffsci.protein.frames import backbone_from_frames
    from diffsci.protein.model.network import gram_schmidt

    ca = [np.zeros(3)]
    while len(ca) < length:
        for _ in range(max_tries):
            d = torch.randn(3, generator=generator, dtype=torch.float64).numpy()
            nxt = ca[-1] + step * d / np.linalg.norm(d)
            if len(ca) < 2 or np.min(np.linalg.norm(np.asarray(ca[:-1]) - nxt, axis=1)) >= min_dist:
                ca.append(nxt)
                break
        else:  # stuck: restart the walk
            ca = [np.zeros(3)]
    ca = torch.as_tensor(np.asarray(ca))
    fwd = torch.cat([ca[1:] - ca[:-1], (ca[-1] - ca[-2])[None]])
    bwd = torch.cat([(ca[0] - ca[1])[None], ca[:-1] - ca[1:]])
    rots = gram_schmidt(fwd, bwd)
    return backbone_from_frames(rots, ca).numpy().astype(np.float32)


def _designs(lm, lengths, num, steps, seed, potentials="none", **kw):
    from diffsci.protein.design.sampling import sample_backbones
    from diffsci.protein.design.request import DesignRequest

    # by default the network alone: every sampling-time potential off (they would hide what the
    # checkpoint makes); "default": the request's own defaults, what a user gets
    request = DesignRequest(lengths=lengths, num=num, seed=seed, steps=steps, potentials=request_potentials(potentials),
                            **kw)
    return [(f"{d.name}", d.coords[0]) for d in sample_backbones(lm, request, progress=False)]


def _ss_designs(num, seed):
    from diffsci.protein.design.sampling import load_model
    from diffsci.protein.ss import BETA_REQUEST, parse_ss

    return _designs(load_model(), [len(parse_ss(BETA_REQUEST))], num, 100, seed, ss=BETA_REQUEST)


def _prior_designs(num, seed):
    from diffsci.protein.design.sampling import load_model

    return _designs(load_model(), [PRIOR_LENGTH], 2 * num, 100, seed, ss="prior")


def _plots(out: Path, results: dict) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pngs = []
    names = [n for n in SYSTEM_ORDER if n in results]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    bottom = np.zeros(len(names))
    for key, color in (("helix", "tab:red"), ("strand", "tab:blue"), ("coil", "0.7")):
        vals = np.array([results[n]["summary"].get(f"mean_{key}", np.nan) for n in names])
        ax.bar(names, vals, bottom=bottom, color=color, label=key)
        bottom += np.nan_to_num(vals)
    ax.set_ylabel("fraction of residues (P-SEA)")
    ax.legend(fontsize=7)
    plt.setp(ax.get_xticklabels(), rotation=20, fontsize=7)
    pngs.append(save_figure(fig, out / "sse_composition.png"))
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for n in names:
        rows = results[n]["per_sample"]
        ax.scatter([r["length"] for r in rows], [r["radius_of_gyration"] for r in rows], s=12, label=n)
    ls = np.linspace(40, 320, 50)
    ax.plot(ls, expected_radius_of_gyration(ls), "k--", lw=1, label="2.2 L^0.38")
    ax.set_xlabel("length")
    ax.set_ylabel("radius of gyration (Å)")
    ax.legend(fontsize=6)
    pngs.append(save_figure(fig, out / "rg_vs_length.png"))
    key = "diffsci, 100 steps" if "diffsci, 100 steps" in results else names[0]
    tm = np.asarray(results[key]["pairwise_tm"], dtype=float)
    fig, ax = plt.subplots(figsize=(4, 3.5))
    im = ax.imshow(tm, vmin=0, vmax=1, cmap="viridis")
    fig.colorbar(im, ax=ax)
    ax.set_title(f"pairwise TM-score: {key}", fontsize=8)
    pngs.append(save_figure(fig, out / "pairwise_tm.png"))
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for n in names:
        d = np.concatenate([np.linalg.norm(np.diff(c[:, 1], axis=0), axis=1) for c in results[n]["_coords"]])
        d = d[(d >= 2) & (d <= 6)]
        if len(d):  # systems with no CA-CA distance in the window (untrained) are left out
            ax.hist(d, bins=np.linspace(2, 6, 60), histtype="step", density=True, label=n)
    ax.axvspan(*ACCEPTANCE_CA_CA_WINDOW, color="0.9")
    ax.set_xlabel("consecutive CA-CA distance (Å)")
    ax.legend(fontsize=6)
    pngs.append(save_figure(fig, out / "ca_ca_hist.png"))
    return pngs


def _systems(lm, untrained, lengths, num, seed, *, ss_row: bool, lean: bool, potentials: str,
             churn: float | None = None, t_stop: float | None = None) -> list:
    """(row name, function making its designs) for every sampled row (module docstring); ``lean``:
    only the shipped model at 100 steps and the random walk (with the real rows: what the bracket
    and the checkpoint choice need). ``churn``: the model rows' EDM churn, ``t_stop`` where their time
    grid ends (None: the request's defaults)."""
    walk = ("random walk", lambda: [(f"walk_L{L}_{i}", random_walk_backbone(L, make_generator(seed, "walk", L, i)))
                                    for L in lengths for i in range(num)])
    main = ("diffsci, 100 steps", lambda: _designs(lm, lengths, num, 100, seed, potentials, churn=churn, t_stop=t_stop))
    if lean:
        return [main, walk]
    return [main, ("diffsci, 20 steps", lambda: _designs(lm, lengths, num, 20, seed, potentials, churn=churn, t_stop=t_stop)),
            *([(SS_ROW, lambda: _ss_designs(num, seed)), (PRIOR_ROW, lambda: _prior_designs(num, seed))]
              if ss_row else []),
            ("untrained", lambda: _designs(untrained, lengths, num, 100, seed, potentials, churn=churn, t_stop=t_stop)), walk]


BENCH_LENGTHS, QUICK_LENGTHS = (60, 80, 100, 128, 200, 300), (60, 80, 100, 128)

#: rows of the by-length table (:func:`by_length`) and, with ``designability``, the rows given
#: ProteinMPNN's NLL proxy
LENGTH_ROWS = ("diffsci, 100 steps", "diffsci, 20 steps")
MPNN_ROWS = ("real (held-out)", "diffsci, 100 steps")


def _add_mpnn_nll(results: dict, log) -> None:
    """ProteinMPNN's mean NLL (``mpnn_nll_proxy``) on every sample of :data:`MPNN_ROWS`, one run."""
    from diffsci.protein.metrics.designability import designability

    items = [(f"{n}#{i}", c) for n in MPNN_ROWS if n in results for i, c in enumerate(results[n]["_coords"])]
    t0 = time.time()
    nll = iter(r["mpnn_nll_proxy"] for r in designability(items, None, progress=False))
    for n in MPNN_ROWS:
        if n in results:
            for row in results[n]["per_sample"]:
                row["mpnn_nll_proxy"] = next(nll)
    log(f"ProteinMPNN NLL of {len(items)} backbones in {time.time() - t0:.0f} s")


def by_length(systems: dict) -> list[dict]:
    """Per (row of :data:`LENGTH_ROWS`, length), and for ``real (held-out)`` over all its lengths:
    samples, broken samples (a chain break or an inter-chain clash, as ``protein evaluate``
    counts them), chain breaks per sample, CA-CA ok, DSSP H and E, Rg over 2.2 L^0.38, ProteinMPNN
    NLL (where computed), novelty (max TM to the train split) and the mean pairwise TM among the
    samples of that length."""
    out = []
    groups = [("real (held-out)", "all", list(range(len(systems["real (held-out)"]["per_sample"]))))] \
        if "real (held-out)" in systems else []
    for name in LENGTH_ROWS:
        if name in systems:
            rows = systems[name]["per_sample"]
            for L in sorted({r["length"] for r in rows}):
                groups.append((name, L, [i for i, r in enumerate(rows) if r["length"] == L]))
    for name, L, idx in groups:
        rows = [systems[name]["per_sample"][i] for i in idx]
        tm = np.asarray(systems[name]["pairwise_tm"], dtype=float)[np.ix_(idx, idx)]
        off = tm[~np.eye(len(idx), dtype=bool)]
        mean = lambda key: _nanmean([r.get(key) for r in rows])  # noqa: E731
        out.append({"system": name, "length": L, "n": len(rows),
                    "broken": sum(1 for r in rows if (r.get("chain_breaks") or 0) > 0
                                  or (r.get("interchain_clashes") or 0) > 0),
                    "breaks_per_sample": mean("chain_breaks"), "ca_ca_ok": mean("ca_ca_ok"),
                    "dssp_helix": mean("dssp_helix"), "dssp_strand": mean("dssp_strand"),
                    "rg_ratio": _nanmean([r["radius_of_gyration"] / expected_radius_of_gyration(r["length"])
                                          for r in rows]),
                    "mpnn_nll": mean("mpnn_nll_proxy"), "novelty": mean("max_tm_reference"),
                    "pairwise_tm": float(off.mean()) if off.size else None})
    return out


def _nanmean(values) -> float | None:
    vals = [float(v) for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(vals)) if vals else None


LENGTH_COLUMNS = (("system", "system", "s"), ("length", "length", ""), ("n", "n", "d"), ("broken", "broken", "d"),
                  ("breaks_per_sample", "breaks per sample", ".2f"), ("ca_ca_ok", "CA-CA ok", ".3f"),
                  ("dssp_helix", "DSSP H", ".2f"), ("dssp_strand", "DSSP E", ".2f"), ("rg_ratio", "Rg/2.2L^0.38", ".2f"),
                  ("mpnn_nll", "MPNN NLL", ".3f"), ("novelty", "novelty", ".2f"), ("pairwise_tm", "pairwise TM", ".2f"))


def by_length_table(rows: Sequence[dict]) -> list[str]:
    """:func:`by_length` rows as markdown lines (:data:`LENGTH_COLUMNS`; ``-`` where not computed)."""
    lines = ["| " + " | ".join(h for _, h, _ in LENGTH_COLUMNS) + " |", "|" + "---|" * len(LENGTH_COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(k), f) for k, _, f in LENGTH_COLUMNS) + " |")
    return lines


def run_benchmark(out, *, quick: bool = False, num: int | None = None, checkpoint=None, seed: int = 0,
                  n_reference: int | None = None, ss_row: bool = True, lengths: Sequence[int] | None = None,
                  lean: bool = False, potentials: str = "none", designability: bool = False,
                  churn: float | None = None, t_stop: float | None = None) -> dict:
    """Run the benchmark into ``out``; returns the ``results.json`` payload.

    Novelty is measured against ``n_reference`` evenly spaced train chains (default: all; 40
    with ``quick``). ``lengths``: design lengths (default 60 80 100 128 200 300; 60-128 with
    ``quick``). ``lean``: the shipped model at 100 steps and the references only (:func:`_systems`).
    ``potentials``: of the model's rows (``none``: the network alone, the default; ``default``:
    what ``protein sample`` uses; or ``NAME:WEIGHT,...``). ``designability``: ProteinMPNN's NLL
    proxy of :data:`MPNN_ROWS` (needs ProteinMPNN), reported by length (:func:`by_length`).
    ``churn``: the model rows' EDM churn (None: what ``protein sample`` uses,
    :func:`~diffsci.protein.design.request.default_churn`; 0: the plain ODE); ``t_stop``: where their
    time grid ends (None: the checkpoint's; ``protein sample --t-stop``)."""
    from diffsci.protein.io.dataset import bundled_dataset_path, load_dataset
    from diffsci.protein.model.diffusion import filter_reason
    from diffsci.protein.metrics import evaluate_structures, subset_evaluation
    from diffsci.protein.design.sampling import load_model

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    log = lambda s: print(f"[bench protein] {s}", file=sys.stderr, flush=True)  # noqa: E731
    default_lengths = QUICK_LENGTHS if quick else BENCH_LENGTHS
    lengths = list(lengths or default_lengths)
    num = num or 4
    if designability:
        from diffsci.protein.metrics.designability import require_proteinmpnn

        require_proteinmpnn()  # before any sampling
    ds = load_dataset(bundled_dataset_path())
    held = [(f"{ds.chain(int(i)).source.split('/')[-1]}:{ds.chain(int(i)).chain_id}", np.asarray(ds.chain(int(i)).coords))
            for i in ds.indices("heldout")]  # all 25 (the first 8 alone are less helical than the set)
    train_idx = ds.indices("train")
    ref = [np.asarray(ds.chain(int(i)).coords)[:, 1] for i in train_idx]
    n_reference = n_reference or (40 if quick else len(ref))
    ref = ref[:: max(1, len(ref) // n_reference)][:n_reference]
    lm = load_model(checkpoint)
    untrained = load_model(checkpoint, untrained=True)
    systems, timings = {}, {}
    systems["real (held-out)"] = held
    globular = [i for i, (_, c) in enumerate(held) if filter_reason(c[:, 1], lm.config) is None]
    for name, fn in _systems(lm, untrained, lengths, num, seed, ss_row=ss_row, lean=lean, potentials=potentials,
                             churn=churn, t_stop=t_stop):
        t0 = time.time()
        systems[name] = fn()
        timings[name] = round(time.time() - t0, 1)
        log(f"{name}: {len(systems[name])} backbones in {timings[name]} s")
    results = {}
    for name, items in systems.items():
        t0 = time.time()
        res = evaluate_structures(items, ref, progress=False)
        res["_coords"] = [c for _, c in items]
        results[name] = res
        log(f"evaluated {name} in {time.time() - t0:.0f} s")
        if name == "real (held-out)" and globular:  # the same chains' figures, no TM-score recomputed
            sub = subset_evaluation(res, globular)
            sub["_coords"] = [res["_coords"][i] for i in globular]
            results["real (held-out, training filters)"] = sub
    results = {n: results[n] for n in SYSTEM_ORDER if n in results}
    if designability:
        _add_mpnn_nll(results, log)
    pngs = _plots(out, results)
    payload = {"systems": {n: jsonable({k: v for k, v in r.items() if k != "_coords"}) for n, r in results.items()},
               "lengths": lengths, "num_per_length": num, "checkpoint": lm.source, "timings_s": timings,
               "potentials": potentials, "churn": "default" if churn is None else churn,
               "t_stop": "default" if t_stop is None else t_stop,
               "command": " ".join(["diffsci", "bench", "protein", "--out", str(out)] + (["--quick"] if quick else [])
                                   + ([f"--num {num}"] if num != 4 else []) + ([f"--seed {seed}"] if seed else [])
                                   + ([f"--checkpoint {checkpoint}"] if checkpoint is not None else [])
                                   + (["--lean"] if lean else []) + (["--designability"] if designability else [])
                                   + ([f"--potentials {potentials}"] if potentials != "none" else [])
                                   + ([f"--churn {churn:g}"] if churn is not None else [])
                                   + ([f"--t-stop {t_stop:g}"] if t_stop is not None else [])
                                   + (["--lengths", *map(str, lengths)] if lengths != list(default_lengths) else [])),
               "wall_s": round(time.time() - t_start, 1)}
    payload["bracket"] = _bracket(payload["systems"])
    payload["by_length"] = by_length(payload["systems"])
    payload["sheet_table"] = {n: {k: _mean(r, k) for k, _, _ in SHEET_COLUMNS} for n, r in payload["systems"].items()}
    write_json(out / "results.json", payload)
    _report(out, payload, pngs)
    log(f"done in {payload['wall_s']} s: {out / 'report.md'}")
    return payload


def _values(sysres, field) -> list[float]:
    rows = sysres["per_sample"]
    if field == "secondary_structure":  # P-SEA helix + strand per sample
        return [r["helix"] + r["strand"] for r in rows if r.get("helix") is not None]
    if field == "rg_ratio":  # radius of gyration over 2.2 L^0.38
        return [r["radius_of_gyration"] / expected_radius_of_gyration(r["length"]) for r in rows
                if r.get("radius_of_gyration") is not None]
    return [r.get(field) for r in rows if r.get(field) is not None]


def _mean(sysres, field) -> float:
    vals = _values(sysres, field)
    return float(np.mean(vals)) if vals else float("nan")


def _se(sysres, field) -> float:
    """Standard error of the per-sample mean (NaN with fewer than two samples)."""
    vals = _values(sysres, field)
    return float(np.std(vals, ddof=1) / np.sqrt(len(vals))) if len(vals) > 1 else float("nan")


# For context only: published figures of other models, as found offline in secondary sources
# (not checked against the original papers' tables; protocols differ from this benchmark:
# ProteinMPNN 8 sequences + ESMFold refolding, designable = scRMSD < 2 Å, lengths 50-300).
PUBLISHED = [
    # model, designability, diversity (pairwise TM, lower = more diverse), novelty (max TM), source
    ("FrameDiff", 0.564, 0.441, 0.799, "ReQFlow (arXiv 2502.14637) Table 2, 500 steps"),
    ("FrameFlow", 0.872, 0.346, 0.803, "ReQFlow (arXiv 2502.14637) Table 2, 500 steps"),
    ("RFdiffusion", 0.904, 0.382, 0.822, "ReQFlow (arXiv 2502.14637) Table 2, 50 steps"),
    ("Genie2", 0.908, 0.370, 0.759, "ReQFlow (arXiv 2502.14637) Table 2, 1000 steps"),
    ("Proteina (FS, gamma 0.35)", 0.982, None, None,
     "Ambient Dataloops (arXiv 2601.15417) Table 2, likely from Proteina (ICLR 2025) Table 1"),
]

BRACKET_FIELDS = ("ca_contacts", "secondary_structure", "helix", "strand")
# reported beside the bracket, not asked to lie in it: see _bracket
INFO_FIELDS = ("rg_ratio",)
IDEAL_FIELDS = ("ca_ca_ok", "clash_fraction")
# a model mean past the real row's by at most this many combined standard errors is "at the real
# end within sampling error" (16 designs and 25 real chains cannot tell closer means apart)
Z_TOLERANCE = 2.0


def _bracket(systems) -> dict:
    """Is the model between the random walk and real chains on each geometry/SSE figure?

    Bracketing is asked only where the two reference rows differ: tertiary packing
    (``ca_contacts``) and secondary structure (P-SEA helix + strand, and each alone). On CA-CA spacing and CA
    clashes both references are ideal (the walk by construction: 3.8 Å steps, self-avoiding),
    so there the model is compared with the real row alone (``within`` = no worse than
    real minus 0.1 for ``ca_ca_ok``, no more than 1% clashes).

    The radius of gyration over 2.2 L^0.38 is reported (``rg_ratio``, with ``bracketed``) but
    not asked to lie in the bracket: the model is trained on globular chains (its Rg filter) and
    held to a globular target (Rg within 30% of 2.2 L^0.38), while many held-out chains are
    extended ones cut from complexes (their mean ratio is above 1.3).

    Each asked field also gets ``z_beyond_real``: how far past the real row's mean (on the side
    away from the walk) the model's mean lies, in combined standard errors
    ``sqrt(se_model^2 + se_real^2)`` (0 when it is not past it), and ``within_error``: bracketed,
    or past the real end by at most :data:`Z_TOLERANCE` standard errors."""
    real, walk = systems["real (held-out)"], systems["random walk"]
    out = {}
    for name in ("diffsci, 100 steps", "diffsci, 20 steps"):
        if name not in systems:
            continue
        row = {}
        for field in BRACKET_FIELDS + INFO_FIELDS:
            v, r, w = _mean(systems[name], field), _mean(real, field), _mean(walk, field)
            lo, hi = sorted([r, w])
            se_m, se_r = _se(systems[name], field), _se(real, field)
            beyond_real = (v - r) * np.sign(r - w) > 0  # past the real end, away from the walk
            z = abs(v - r) / np.sqrt(se_m**2 + se_r**2) if beyond_real else 0.0
            row[field] = {"model": v, "real": r, "random_walk": w, "model_se": se_m, "real_se": se_r,
                          "bracketed": bool(lo <= v <= hi), "z_beyond_real": float(z),
                          "within_error": bool(lo <= v <= hi or (beyond_real and z <= Z_TOLERANCE)),
                          "asked": field in BRACKET_FIELDS}
        for field in IDEAL_FIELDS:
            v, r = _mean(systems[name], field), _mean(real, field)
            ok = v >= r - 0.1 if field == "ca_ca_ok" else v <= 0.01
            row[field] = {"model": v, "real": r, "random_walk": _mean(walk, field), "within": bool(ok)}
        out[name] = row
    return out


def _fmt(v, spec: str = ".2f") -> str:
    """``v`` formatted, or ``-`` when it is None (e.g. the pairwise TM of a one-design row)."""
    return "-" if v is None else format(v, spec)


def _report(out: Path, payload: dict, pngs) -> None:
    sys_ = payload["systems"]
    lines = ["# Protein benchmark", "", f"Command: `{payload['command']}`  ",
             f"Checkpoint: `{payload['checkpoint']}`; lengths {payload['lengths']}, {payload['num_per_length']} per length; "
             f"wall time {payload['wall_s']} s; sampling seconds {payload['timings_s']}.", "",
             "Every row is scored by `diffsci.protein.metrics.evaluate_structures` in this run. "
             "`ca_ca_ok`: fraction of consecutive CA-CA within 3.8 +- 0.3 Å; `clash`: fraction of non-adjacent CA pairs "
             "< 3 Å; helix/strand/coil: P-SEA; novelty: max TM-score to the train split (by the sample's length); "
             "diversity: mean pairwise TM and clusters at TM 0.5. Designability (ProteinMPNN + refolding) is not "
             "computed here: no folding backend is available offline (see `diffsci protein evaluate --designability`).", "",
             "| system | n | CA-CA ok | clash | contacts | Rg/2.2L^0.38 | helix | strand | coil | DSSP H | DSSP E | novelty | mean pairwise TM | clusters@0.5 |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in SYSTEM_ORDER:
        if name not in sys_:
            continue
        r = sys_[name]
        rows = r["per_sample"]
        rg = np.mean([x["radius_of_gyration"] / expected_radius_of_gyration(x["length"]) for x in rows])
        s = r["summary"]
        lines.append(f"| {name} | {len(rows)} | {_mean(r, 'ca_ca_ok'):.3f} | {_mean(r, 'clash_fraction'):.4f} | {_mean(r, 'ca_contacts'):.2f} | {rg:.2f} | "
                     f"{_mean(r, 'helix'):.2f} | {_mean(r, 'strand'):.2f} | {_mean(r, 'coil'):.2f} | "
                     f"{_mean(r, 'dssp_helix'):.2f} | {_mean(r, 'dssp_strand'):.2f} | {_mean(r, 'max_tm_reference'):.2f} | "
                     f"{_fmt(s.get('mean_pairwise_tm'))} | {s.get('clusters_tm0.5', '')} |")
    lines += ["", "## By length", "",
              "Per length, the model's designs (potentials: "
              f"`{payload.get('potentials', 'none')}`, churn: `{payload.get('churn', 'default')}`, t_stop: `{payload.get('t_stop', 'default')}`); the real row over all held-out chains. Broken: a chain break "
              "(CA-CA > 4.2 Å) or an inter-chain clash, as `protein evaluate` counts them. MPNN NLL: ProteinMPNN's "
              "mean negative log-likelihood of its designed sequences (with `--designability`; lower: easier to "
              "design; a proxy, not refolding). Pairwise TM: among the designs of that length.", ""]
    lines += by_length_table(payload.get("by_length", []))
    lines += ["", "## Secondary structure and sheets", "",
              "P-SEA (CA only) beside pydssp's DSSP; sheets, strands and ladders (of two or more bridges) by DSSP's "
              "rules on pydssp's H-bonds; `DSSP E on a ladder`: fraction of DSSP E residues on a strand rather than in "
              "an isolated bridge; `P-SEA strand paired`: fraction of P-SEA strand residues with a bridge partner; "
              "contact order (relative, and absolute in residues): mean sequence separation of CA pairs within 8 Å "
              "at separation >= 6. Means over samples (fractions over the samples that have such residues).", "",
              "| system | n | " + " | ".join(h for _, h, _ in SHEET_COLUMNS) + " |",
              "|---|---|" + "---|" * len(SHEET_COLUMNS)]
    for name, means in payload["sheet_table"].items():
        lines.append(f"| {name} | {len(sys_[name]['per_sample'])} | "
                     + " | ".join(format(means[k], f) for k, _, f in SHEET_COLUMNS) + " |")
    lines += ["", "## Does the model sit between random walks and real chains?", ""]
    lines += ["Asked where the two references differ (CA contacts per residue at sequence separation >= 6; P-SEA "
              "secondary structure = helix + strand, and helix and strand alone); on "
              "CA-CA spacing and clashes both references are ideal, so the model is held to the real row there.", ""]
    for name, row in payload["bracket"].items():
        for field, v in row.items():
            if "within_error" in v and not v["bracketed"]:
                verdict = (f"at the real end within sampling error (past it by {v['z_beyond_real']:.1f} standard errors)"
                           if v["within_error"] else
                           ("NOT bracketed" + (f" (past the real row by {v['z_beyond_real']:.1f} standard errors)"
                                               if v["z_beyond_real"] else " (past the random walk)")))
            else:
                verdict = (("bracketed" if v["bracketed"] else "NOT bracketed") if "bracketed" in v
                           else ("as real chains" if v["within"] else "worse than real chains"))
            if v.get("asked") is False:
                verdict += " (reported, not asked: the model is trained and held to globular chains)"
            pm = lambda key: f" ± {v[key]:.3f}" if np.isfinite(v.get(key, np.nan)) else ""  # noqa: E731
            lines.append(f"- {name}, {field}: model {v['model']:.3f}{pm('model_se')}, real {v['real']:.3f}{pm('real_se')}, "
                         f"random walk {v['random_walk']:.3f}: **{verdict}**")
    lines += ["", "## Published numbers (context only; not measured here)", "",
              "Protocols differ (refolding with ESMFold, 8 ProteinMPNN sequences, designable = scRMSD < 2 Å, other "
              "lengths and sample counts); these were read in secondary sources offline and not checked against the "
              "original tables. This run does not refold, so no row above is comparable.", "",
              "| model | designability | diversity (pairwise TM) | novelty (max TM) | source |", "|---|---|---|---|---|"]
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    lines += [f"| {m} | {fmt(d)} | {fmt(dv)} | {fmt(nv)} | {src} |" for m, d, dv, nv, src in PUBLISHED]
    lines += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in pngs]
    write_text(out / "report.md", "\n".join(lines) + "\n")


FIGURE_COLUMNS = (("rate", "rate", "g"), ("n", "n", "d"), ("ca_ca_ok", "CA-CA ok", ".3f"),
                  ("ca_clash_fraction", "CA clash", ".4f"), ("helix", "helix", ".3f"), ("strand", "strand", ".3f"),
                  ("helix_plus_strand", "helix + strand", ".3f"), ("dssp_helix", "DSSP H", ".3f"),
                  ("dssp_strand", "DSSP E", ".3f"), ("rg_ok", "Rg ok", ".2f"),
                  ("contacts6", "contacts6", ".2f"), ("seconds", "seconds", ".1f"))
"""Columns of the acceptance tables: key of :func:`~diffsci.protein.metrics.acceptance_figures` rows, header, format."""


def figures_table(rows: Sequence[dict]) -> str:
    """A markdown table of acceptance rows (:data:`FIGURE_COLUMNS`), one line per row; a missing or
    None value is written as ``-``."""
    lines = ["| " + " | ".join(h for _, h, _ in FIGURE_COLUMNS) + " |", "|" + "---|" * len(FIGURE_COLUMNS)]
    for row in rows:
        cells = ["-" if row.get(k) is None else format(row[k], f) for k, _, f in FIGURE_COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _write_figures(out, stem: str, payload: dict, title: str) -> str:
    """Write ``OUT/STEM.json`` (the payload) and ``OUT/STEM.md`` (its table); returns the table."""
    out = Path(out)
    table = figures_table(payload["rows"])
    write_json(out / f"{stem}.json", payload)
    head = (f"# {title}\n\nCommand: `{payload['command']}`  \nCheckpoint: `{payload['checkpoint']}`; lengths "
            f"{payload['lengths']}, {payload['num_per_length']} per length, {payload['steps']} steps, "
            f"seed {payload['seed']}.")
    write_text(out / f"{stem}.md", f"{head}\n\n{table}")
    return table


def run_rate_sweep(out, rates: Sequence[float], *, checkpoint=None, seed: int = 0, num: int = 4,
                   lengths: Sequence[int] = ACCEPTANCE_LENGTHS, steps: int = 100, command: str = "") -> dict:
    """The acceptance figures of one checkpoint at each rotation rate
    (:func:`diffsci.benchmarks.protein_acceptance.rate_sweep`), written to ``OUT/rates.json`` and ``OUT/rates.md``.

    Returns the ``rates.json`` payload: ``command``, ``checkpoint``, ``lengths``, ``num_per_length``,
    ``steps``, ``seed`` and ``rows`` (one per rate)."""
    from diffsci.benchmarks.protein_acceptance import rate_sweep
    from diffsci.protein.design.sampling import load_model

    lm = load_model(checkpoint)
    rows = rate_sweep(lm, rates, lengths=lengths, num=num, seed=seed, steps=steps)
    payload = {"command": command, "checkpoint": lm.source, "lengths": list(lengths), "num_per_length": num,
               "steps": steps, "seed": seed, "rows": rows}
    payload["table"] = _write_figures(out, "rates", payload, "Acceptance figures at several rotation rates")
    return payload


def run_acceptance(out, *, checkpoint=None, seed: int = 0, num: int = 8, lengths: Sequence[int] = ACCEPTANCE_LENGTHS,
                   steps: int = 100, command: str = "") -> dict:
    """The acceptance figures of one checkpoint at its own rotation rate
    (:func:`diffsci.benchmarks.protein_acceptance.sample_acceptance`), written to ``OUT/acceptance.json`` and
    ``OUT/acceptance.md``; returns the payload (as :func:`run_rate_sweep`'s, one row)."""
    from diffsci.benchmarks.protein_acceptance import sample_acceptance
    from diffsci.protein.design.sampling import load_model

    lm = load_model(checkpoint)
    row = sample_acceptance(lm, lengths=lengths, num=num, seed=seed, steps=steps)
    payload = {"command": command, "checkpoint": lm.source, "lengths": list(lengths), "num_per_length": num,
               "steps": steps, "seed": seed, "rows": [row]}
    payload["table"] = _write_figures(out, "acceptance", payload, "Acceptance figures")
    return payload


def _command(args, num: int, lengths, steps: int) -> str:
    """The full ``diffsci bench protein`` command of an acceptance run, defaults written out."""
    mode = ["--acceptance"] if args.acceptance else ["--rates", *[f"{r:g}" for r in args.rates]]
    parts = ["diffsci", "bench", "protein", "--out", str(args.out), *mode]
    if args.checkpoint:
        parts += ["--checkpoint", str(args.checkpoint)]
    parts += ["--seed", str(args.seed), "--num", str(num), "--lengths", *map(str, lengths), "--steps", str(steps)]
    return " ".join(parts)


def _run(args) -> int:
    if args.rates is None and not args.acceptance:
        if args.steps is not None:
            raise DiffsciError("--steps applies to --rates and --acceptance only (the benchmark samples 100 and 20 steps)")
        run_benchmark(args.out, quick=args.quick, num=args.num, checkpoint=args.checkpoint, seed=args.seed,
                      lengths=args.lengths, lean=args.lean, potentials=args.potentials,
                      designability=args.designability, churn=args.churn, t_stop=args.t_stop)
        return 0
    if (args.lean or args.designability or args.potentials != "none" or args.churn is not None
            or args.t_stop is not None):
        raise DiffsciError("--lean, --designability, --potentials, --churn and --t-stop apply to the benchmark, not to "
                           "--rates/--acceptance")
    num = args.num or (8 if args.acceptance else 4)
    lengths = args.lengths or list(ACCEPTANCE_LENGTHS)
    steps = 100 if args.steps is None else args.steps
    kw = dict(checkpoint=args.checkpoint, seed=args.seed, num=num, lengths=lengths, steps=steps,
              command=_command(args, num, lengths, steps))
    if args.acceptance:
        payload = run_acceptance(args.out, **kw)
    else:
        payload = run_rate_sweep(args.out, args.rates, **kw)
    print(payload["table"], end="")
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("protein", help="protein benchmark: designs vs real chains and baselines",
                              description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="lengths 60-128 only (<= 10 min on 2 CPU cores)")
    mode.add_argument("--rates", type=float, nargs="+", metavar="R",
                      help="instead of the benchmark: the acceptance figures (CA-CA ok, clashes, P-SEA helix/strand, "
                           "Rg ok, contacts6) at each rotation rate R, written to OUT/rates.json and OUT/rates.md")
    mode.add_argument("--acceptance", action="store_true",
                      help="instead of the benchmark: the acceptance figures at the checkpoint's own rotation rate, "
                           "written to OUT/acceptance.json and OUT/acceptance.md")
    p.add_argument("--num", type=int, help="backbones per length (default 4; 8 with --acceptance)")
    p.add_argument("--checkpoint", help="protein checkpoint (default: the shipped one)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lengths", type=int, nargs="+", metavar="L",
                   help="design lengths (default: 60 80 100 128 200 300; 60 80 100 128 with --quick, --rates and "
                        "--acceptance)")
    p.add_argument("--lean", action="store_true",
                   help="only the model at 100 steps beside the real chains and the random walk (to compare checkpoints)")
    add_potentials_option(p, " of the model's rows")
    p.add_argument("--designability", action="store_true",
                   help="ProteinMPNN's NLL proxy of the real chains and the 100-step designs, by length (needs proteinmpnn)")
    p.add_argument("--steps", type=int, help="with --rates/--acceptance: sampling steps (default 100)")
    add_churn_option(p, " of the model's rows")
    add_t_stop_option(p, " of the model's rows")
    p.set_defaults(func=_run)

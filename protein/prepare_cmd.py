"""``diffsci protein prepare SRC... --out DATASET.npz``: structure files -> backbone dataset.

Reads PDB / mmCIF / BinaryCIF files (and ``.gz`` versions) given directly or found
recursively in folders, prints what was kept and dropped per file, and writes the dataset
(:func:`diffsci.protein.io.dataset.save_dataset`) atomically, with each residue's pydssp DSSP class
and the DSSP strand bridges (for SS-conditioned training). Exits 2 with one error line when
nothing usable was found, naming why: the reason all files share (``no usable chains found: all 3
files had no protein chain of >= 40 residues``) or the number of files per reason.
"""

from __future__ import annotations

import argparse
import collections
import pathlib
import sys
from typing import TYPE_CHECKING

from diffsci.core.errors import DiffsciError

if TYPE_CHECKING:
    from diffsci.protein.io.structure import ReportRow

__all__ = ["add_parser", "run", "format_report"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "prepare",
        help="read structure files into a backbone dataset (.npz)",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("sources", nargs="+", metavar="SRC", help="structure files or folders (searched recursively)")
    p.add_argument("--out", required=True, type=pathlib.Path, help="output dataset (.npz)")
    p.add_argument("--min-length", type=int, default=40, help="drop chains/pieces shorter than this (default 40)")
    p.add_argument("--max-length", type=int, default=512, help="drop chains/pieces longer than this (default 512)")
    p.add_argument("--on-break", choices=("split", "skip"), default="split", help="broken chains: split or skip")
    p.add_argument("--chains", default=None, help="comma-separated chain ids to read, e.g. A,B (default: all)")
    p.add_argument("--identity", type=float, default=0.30, help="sequence identity for the cluster split")
    p.add_argument("--heldout-fraction", type=float, default=0.1, help="fraction of chains held out by cluster")
    p.add_argument("--seed", type=int, default=0, help="seed of the held-out cluster choice")
    p.set_defaults(func=run)
    return p


def format_report(report: list[ReportRow]) -> list[str]:
    """One line per file: kept chains with lengths, then dropped ones and why."""
    by_file: dict[str, list[ReportRow]] = collections.OrderedDict()
    for r in report:
        by_file.setdefault(r.file, []).append(r)
    lines = []
    for f, rows in by_file.items():
        kept = [f"{r.chain_id or '-'}{'[' + r.piece.split()[1] + ']' if r.piece else ''} ({r.length})" for r in rows if r.status == "kept"]
        lines.append(f"{f}: kept {len(kept)}" + (f": {', '.join(kept)}" if kept else ""))
        for r in rows:
            if r.status == "error":
                lines.append(f"  error: {r.reason}")
            elif r.status == "dropped":
                piece = f" {r.piece}" if r.piece else ""
                length = f" ({r.length} residues)" if r.length else ""
                lines.append(f"  dropped chain {r.chain_id or '-'}{piece}{length}: {r.reason}")
            elif r.status == "warning":
                lines.append(f"  note chain {r.chain_id or '-'}: {r.reason}")
    return lines


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from diffsci.core.io import check_output_path
    from diffsci.protein.io.dataset import DatasetOptions, build_dataset, save_dataset

    chains = [c.strip() for c in args.chains.split(",") if c.strip()] if args.chains else None
    # an input file, a folder, a missing parent: refused (a file inside a source folder is fine)
    out = check_output_path(args.out, inputs=[s for s in args.sources if pathlib.Path(s).is_file()])
    options = DatasetOptions(min_length=args.min_length, max_length=args.max_length, on_break=args.on_break,
                             chains=chains, identity=args.identity, heldout_fraction=args.heldout_fraction,
                             seed=args.seed)
    report: list[ReportRow] = []
    try:
        ds, _ = build_dataset(args.sources, options, progress=sys.stderr.isatty(), report=report)
    except DiffsciError:
        for line in format_report(report):
            print(line)
        raise
    for line in format_report(report):
        print(line)
    save_dataset(ds, out)
    n_held = sum(1 for s in ds.split if s == "heldout")
    n_err = len({r.file for r in report if r.status == "error"})
    print(
        f"wrote {out}: {len(ds)} chains, {int(ds.lengths.sum())} residues, "
        f"{int(ds.cluster_ids.max()) + 1} clusters, train {len(ds) - n_held}, held-out {n_held}"
        + (f"; {n_err} file(s) could not be read" if n_err else "")
    )
    ss = np.asarray(ds.ss)
    print(f"secondary structure (pydssp DSSP, stored for SS-conditioned training): H {np.mean(ss == 1):.2f}, "
          f"E {np.mean(ss == 2):.2f}, L {np.mean(ss == 0):.2f}; {len(ds.bridges)} strand bridges")
    return 0

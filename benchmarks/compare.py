"""``diffsci bench compare A/results.json B/results.json``: do two benchmark runs give the same
numbers? Used to show that a change of structure left the published figures alone.

Every numeric leaf of the two JSON payloads is matched by its path (``systems/diffsci/
variables/z/crps[3]``); wall-clock fields (names containing ``seconds``, ``timing``, ``time_s``,
``wall``, ``elapsed``, ``saved_at``) and text are left out. Two values agree when
``|a - b| <= atol + rtol |b|`` (both null or both NaN agree too).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from diffsci.core.errors import DiffsciError
from diffsci.core.io import write_json

__all__ = ["numeric_leaves", "compare_results", "add_parser"]

WALL_CLOCK = ("seconds", "timing", "time_s", "wall", "elapsed", "saved_at")


def numeric_leaves(obj, prefix: str = "") -> dict[str, float | None]:
    """The numbers (and nulls) of a JSON value by path; booleans and strings are skipped."""
    out: dict[str, float | None] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(numeric_leaves(v, f"{prefix}/{k}" if prefix else str(k)))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.update(numeric_leaves(v, f"{prefix}[{i}]"))
    elif obj is None or (isinstance(obj, (int, float)) and not isinstance(obj, bool)):
        out[prefix] = None if obj is None else float(obj)
    return out


def _same(a, b, rtol: float, atol: float) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= atol + rtol * abs(b)


def compare_results(a: dict, b: dict, *, rtol: float = 1e-6, atol: float = 1e-9) -> dict:
    """Compare the numeric leaves of two payloads (wall-clock fields left out). Returns
    ``{"compared", "differing": [[path, a, b], ...], "only_in_a": [...], "only_in_b": [...]}``."""
    la, lb = numeric_leaves(a), numeric_leaves(b)
    keep = [k for k in la if not any(w in k.lower() for w in WALL_CLOCK)]
    shared = [k for k in keep if k in lb]
    return {"compared": len(shared), "rtol": rtol, "atol": atol,
            "differing": [[k, la[k], lb[k]] for k in shared if not _same(la[k], lb[k], rtol, atol)],
            "only_in_a": [k for k in keep if k not in lb],
            "only_in_b": [k for k in lb if k not in la and not any(w in k.lower() for w in WALL_CLOCK)]}


def _load(path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise DiffsciError(f"{path}: no such file")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise DiffsciError(f"{path}: not JSON ({exc})") from None


def _run(args) -> int:
    res = compare_results(_load(args.a), _load(args.b), rtol=args.rtol, atol=args.atol)
    res.update(a=str(args.a), b=str(args.b))
    if args.out:
        write_json(args.out, res)
    same = not (res["differing"] or res["only_in_a"] or res["only_in_b"])
    print(f"{args.a} vs {args.b}: {res['compared']} numbers compared, {len(res['differing'])} differ "
          f"(rtol {args.rtol:g}, atol {args.atol:g}); {len(res['only_in_a'])} only in the first, "
          f"{len(res['only_in_b'])} only in the second")
    for path, x, y in res["differing"][:10]:
        print(f"  {path}: {x} vs {y}")
    return 0 if same else 1


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("compare", help="compare the numbers of two benchmark results.json files",
                              description="Do two benchmark runs give the same numbers? Every numeric leaf of the two "
                                          "results.json files is matched by its path (wall-clock fields left "
                                          "out). Exit status 1 when they differ.")
    p.add_argument("a", help="first results.json")
    p.add_argument("b", help="second results.json")
    p.add_argument("--rtol", type=float, default=1e-6, help="relative tolerance (default 1e-6)")
    p.add_argument("--atol", type=float, default=1e-9, help="absolute tolerance (default 1e-9)")
    p.add_argument("--out", help="write the comparison as JSON")
    p.set_defaults(func=_run)

"""``diffsci bench merge``: combine results of ``diffsci bench weather`` run on disjoint init times.

Every statistic in results.json is, per field and lead, an average over init times of a
per-init quantity (:mod:`diffsci.weather.metrics`), so the parts combine into the statistics
of the union by weighting each part with its number of init times ``n_k``:

- CRPS, MAE, ACC (means over inits of per-init values): ``sum_k n_k x_k / sum_k n_k``;
- RMSE and spread (square roots of means over inits): ``sqrt(sum_k n_k x_k^2 / sum_k n_k)``;
- SSR ``= sqrt(<(M+1)/M var>) / sqrt(<err^2>)``: the numerator of part k is
  ``(SSR_k RMSE_k)^2``, merged like a square, divided by the merged RMSE. With M valid
  members at every point this is ``sqrt((M+1)/M) spread / RMSE``, as in the benchmark; it is
  also exact with missing members, as long as no point has exactly one valid member (such
  points count in RMSE and not in SSR);
- rank histograms, ``truth_nan_points``, ``forecast_nan_points``: summed.

These are exact (to float rounding) given the stored numbers; rank histograms equal those of a
single run only where no member ties the truth (ties are broken at random per run). The
summary, the calibration (SSR and rank-histogram flatness from the merged SSR and the summed
histograms) and the scorecard (against the parts' reference, persistence for parts without
one) are recomputed by the benchmark's own :func:`~diffsci.benchmarks.weather_bench.summarize`,
:func:`~diffsci.benchmarks.weather_bench.calibration` and
:func:`~diffsci.benchmarks.scorecard.scorecard`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from diffsci.benchmarks.scorecard import scorecard, scorecard_tables
from diffsci.benchmarks.weather_bench import MIN_LEAD_HOURS, calibration, calibration_tables, report_tables, summarize
from diffsci.core.errors import DiffsciError
from diffsci.core.io import write_json

__all__ = ["merge_results", "read_results", "add_parser"]

MUST_AGREE = ("members", "lead_hours", "sampler", "noise_levels", "churn", "heldout_seed", "climatology_period_hours")
PER_PART = ("checkpoint", "deterministic_checkpoint", "deterministic_source", "heldout_data", "climatology_period")
MEANS = ("crps", "mae", "acc")
ROOT_MEAN_SQUARES = ("rmse", "spread")
COUNTS = ("truth_nan_points", "forecast_nan_points")


def _weighted_mean(values, weights):
    if any(v is None for v in values):
        return None
    return sum(w * v for w, v in zip(weights, values)) / sum(weights)


def _root_mean_square(values, weights):
    mean = _weighted_mean([None if v is None else v * v for v in values], weights)
    return None if mean is None else math.sqrt(mean)


def _merge_ssr(ssrs, rmses, weights, rmse):
    if rmse is None or rmse == 0 or any(s is None or r is None for s, r in zip(ssrs, rmses)):
        return None
    return _root_mean_square([s * r for s, r in zip(ssrs, rmses)], weights) / rmse


def _per_lead(metric: str, rows: list[dict], weights) -> list:
    """One metric of one field, per lead, merged across parts (``rows``: the parts' field dicts)."""
    columns = list(zip(*(row[metric] for row in rows)))
    if metric in MEANS:
        return [_weighted_mean(c, weights) for c in columns]
    if metric in ROOT_MEAN_SQUARES:
        return [_root_mean_square(c, weights) for c in columns]
    if metric in COUNTS:
        return [sum(c) for c in columns]
    if metric == "ssr":
        rmse = _per_lead("rmse", rows, weights)
        rmses = list(zip(*(row["rmse"] for row in rows)))
        return [_merge_ssr(s, r, weights, m) for s, r, m in zip(columns, rmses, rmse)]
    raise DiffsciError(f"metric {metric!r}: no rule to merge it")


def _merge_system(name: str, results: list[dict], weights, names) -> dict:
    first = results[0]
    for res, src in zip(results[1:], names[1:]):
        if res["lead_hours"] != first["lead_hours"] or res["members"] != first["members"]:
            raise DiffsciError(f"{src}: system {name} has leads/members {res['lead_hours']}/{res['members']}, "
                               f"{names[0]} {first['lead_hours']}/{first['members']}")
        for field, row in first["variables"].items():
            other = res["variables"].get(field)
            if other is None or set(other) != set(row):
                raise DiffsciError(f"{src}: system {name}, field {field}: metrics {sorted(other or [])} "
                                   f"differ from {names[0]}'s {sorted(row)}")
        if set(res["rank_histogram"]) != set(first["rank_histogram"]):
            raise DiffsciError(f"{src}: system {name}: rank histograms of other fields than {names[0]}'s")
    variables = {field: {metric: _per_lead(metric, [r["variables"][field] for r in results], weights)
                         for metric in row}
                 for field, row in first["variables"].items()}
    hists = {}
    for field, by_lead in first["rank_histogram"].items():
        hists[field] = {}
        for lead in by_lead:
            parts = [r["rank_histogram"][field].get(lead) for r in results]
            if any(p is None or len(p) != len(by_lead[lead]) for p in parts):
                raise DiffsciError(f"system {name}, field {field}, +{lead} h: a part lacks this rank histogram "
                                   "or has another number of bins")
            hists[field][lead] = [sum(c) for c in zip(*parts)]
    warnings = list(dict.fromkeys(w for r in results for w in r.get("warnings", [])))
    return {"lead_hours": first["lead_hours"], "variables": variables, "rank_histogram": hists,
            "members": first["members"], "warnings": warnings, "notes": first.get("notes", {})}


def merge_results(parts: list[dict], names: list[str] | None = None, *, min_lead: int = MIN_LEAD_HOURS) -> dict:
    """Combine results.json payloads of ``diffsci bench weather`` run on disjoint sets of init
    times into the payload of one run on their union (see the module docstring for the rules).

    ``parts``: two or more payloads with the same systems, fields, leads, members, sampler and
    held-out seed; ``names``: how errors name each part (its file; default ``part 1``, ...);
    ``min_lead``: hours from which the summary asks whether diffsci beats each baseline.
    ``timings_s`` and ``wall_s`` are summed over the parts; paths that differ between parts
    (checkpoint, data) become lists; ``merged_from`` lists each part's name, command and inits.
    """
    names = list(names) if names is not None else [f"part {i + 1}" for i in range(len(parts))]
    if len(parts) < 2 or len(names) != len(parts):
        raise DiffsciError(f"parts: give at least two results and one name per part, got {len(parts)} and {len(names)}")
    for part, src in zip(parts, names):
        missing = [k for k in ("systems", "init_times", *MUST_AGREE) if k not in part]
        if missing:
            raise DiffsciError(f"{src}: not a results.json of 'diffsci bench weather' (no {', '.join(missing)})")
    first = parts[0]
    for part, src in zip(parts[1:], names[1:]):
        for key in MUST_AGREE:
            if part[key] != first[key]:
                raise DiffsciError(f"{src}: {key} {part[key]!r} differs from {names[0]}'s {first[key]!r}")
        if list(part["systems"]) != list(first["systems"]):
            raise DiffsciError(f"{src}: systems {list(part['systems'])} differ from {names[0]}'s {list(first['systems'])}")
    seen: dict[str, str] = {}
    for part, src in zip(parts, names):
        if not part["init_times"]:
            raise DiffsciError(f"{src}: no init times")
        for t in part["init_times"]:
            if t in seen:
                raise DiffsciError(f"{src}: init time {t} is also in {seen[t]}; parts must have disjoint init times")
            seen[t] = src
    references = list(dict.fromkeys(p.get("scorecard", {}).get("reference", "persistence") for p in parts))
    if len(references) > 1:
        raise DiffsciError(f"parts: scorecards against different references ({', '.join(references)}) "
                           f"in {', '.join(names)}")
    weights = [len(p["init_times"]) for p in parts]
    systems = {name: _merge_system(name, [p["systems"][name] for p in parts], weights, names) for name in first["systems"]}
    variables = list(next(iter(systems.values()))["variables"]) if systems else []
    payload = {"systems": systems, "summary": summarize(systems, variables, min_lead=min_lead),
               "calibration": calibration(systems, variables),
               "scorecard": scorecard(systems, variables, references[0]),
               "timings_s": {name: round(sum(p.get("timings_s", {}).get(name, 0.0) for p in parts), 1)
                             for name in systems},
               **{key: first[key] for key in MUST_AGREE},
               "init_times": sorted(seen)}
    for key in PER_PART:
        values = [p.get(key) for p in parts]
        payload[key] = values[0] if all(v == values[0] for v in values) else values
    payload["command"] = "diffsci bench merge " + " ".join(names)
    payload["wall_s"] = round(sum(p.get("wall_s") or 0.0 for p in parts), 1)
    payload["merged_from"] = [{"file": src, "command": p.get("command"), "init_times": len(p["init_times"]),
                               "wall_s": p.get("wall_s")} for p, src in zip(parts, names)]
    return payload


def read_results(path) -> dict:
    """A results.json payload; DiffsciError naming the file if it is missing or not JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DiffsciError(f"{path}: no such file") from None
    except (OSError, ValueError) as exc:
        raise DiffsciError(f"{path}: cannot read as JSON ({exc})") from None


def _run(args) -> int:
    out = Path(args.out)
    if any(out.resolve() == Path(p).resolve() for p in args.results):
        raise DiffsciError(f"--out {out}: is one of the inputs")
    merged = merge_results([read_results(p) for p in args.results], [str(p) for p in args.results])
    write_json(out, merged)
    variables = list(merged["summary"])
    tables = report_tables(merged, variables) + calibration_tables(merged["calibration"])
    print("\n".join(tables + scorecard_tables(merged["scorecard"])))
    print(f"wrote {out}: {len(merged['init_times'])} init times from {len(args.results)} parts")
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("merge", help="merge weather benchmark results run on disjoint init times",
                              description=__doc__.splitlines()[0])
    p.add_argument("results", nargs="+", metavar="RESULTS_JSON",
                   help="results.json files of 'diffsci bench weather' (two or more, disjoint init times)")
    p.add_argument("--out", required=True, help="merged results JSON (strict JSON, written atomically)")
    p.set_defaults(func=_run)

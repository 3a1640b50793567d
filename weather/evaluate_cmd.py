"""``diffsci weather evaluate FC --truth TRUTH --out METRICS.json``: score a forecast with
WeatherBench 2's metrics (:func:`diffsci.weather.metrics.evaluate_forecast`), as strict JSON."""

from __future__ import annotations

import sys
import warnings

__all__ = ["add_parser"]


def _run(args) -> int:
    from diffsci.core.io import check_output_path
    from diffsci.weather.metrics import evaluate_forecast, write_metrics

    check_output_path(args.out, inputs=(args.forecast, args.truth, args.climatology))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = evaluate_forecast(args.forecast, args.truth, variables=args.variables, climatology=args.climatology)
    for msg in dict.fromkeys(str(w.message) for w in caught):  # the reader's (unit conversions) and ours
        print(f"warning: {msg}", file=sys.stderr)
    out = write_metrics(res, args.out)
    first = next(iter(res["variables"]))
    r = res["variables"][first]
    score, name = (r["crps"][-1], "CRPS") if r["crps"][-1] is not None else (r["mae"][-1], "MAE")
    shown = "null" if score is None else f"{score:.4g}"
    print(f"wrote {out}: {len(res['variables'])} fields x {len(res['lead_hours'])} leads; {first} {name} at "
          f"+{res['lead_hours'][-1]} h {shown}")
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate", help="score a forecast with WeatherBench 2 metrics",
        description="Fair CRPS, ensemble-mean RMSE, spread, spread/skill, rank histograms (and ACC with a "
                    "climatology) per field and lead, as strict JSON. Pressure-level fields are keyed "
                    "variable+level (z500, t850). Forecast and truth are read by the same reader (cfgrib, "
                    "CDS, WeatherBench 2 or NCEP layouts).")
    p.add_argument("forecast", help="forecast netCDF/zarr: init 'time', a lead dim ('prediction_timedelta', "
                                    "cfgrib 'step' or CDS 'forecast_period'), members ('realization' or 'number')")
    p.add_argument("--truth", required=True, help="truth netCDF/zarr (ERA5 or WB2 style)")
    p.add_argument("--out", required=True, help="metrics JSON")
    p.add_argument("--variables", nargs="+", metavar="NAME",
                   help="fields to score: a variable (z, geopotential: all its levels) or one level (z500); "
                        "default: every forecast variable, each of which the truth must have")
    p.add_argument("--climatology",
                   help="climatology netCDF/zarr for ACC, read like the truth (names, levels, units), with dims "
                        "[dayofyear,] [hour,] [level,] latitude, longitude (WeatherBench 2's); by hour of day and day "
                        "of year of the valid time where it has those dims")
    p.set_defaults(func=_run)

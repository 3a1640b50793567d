"""Combine two equal-size halves of `diffsci bench weather` (same members, 10 inits each):
CRPS and MAE are time means (average the halves); RMSE and spread are sqrt of time means of
squares (average the squares); SSR is recomputed; rank histograms are summed."""
import json, sys, math
from diffsci.benchmarks.weather_bench import crps_or_mae  # a deterministic system's CRPS is null: its MAE
a, b = (json.load(open(p)) for p in sys.argv[1:3])
m = a["members"]
out = {}
for s in a["systems"]:
    ra, rb = a["systems"][s], b["systems"][s]
    leads = ra["lead_hours"]
    out[s] = {}
    for v, va in ra["variables"].items():
        vb = rb["variables"][v]
        crps = [(x + y) / 2 for x, y in zip(crps_or_mae(va), crps_or_mae(vb))]
        rmse = [math.sqrt((x * x + y * y) / 2) for x, y in zip(va["rmse"], vb["rmse"])]
        ens = any(x for x in va["ssr"] if x is not None)
        spread = [math.sqrt((x * x + y * y) / 2) if ens else None for x, y in zip(va["spread"], vb["spread"])]
        ssr = [math.sqrt((m + 1) / m) * sp / r if ens else None for sp, r in zip(spread, rmse)]
        out[s][v] = {"lead_hours": leads, "crps": crps, "rmse": rmse, "spread": spread, "ssr": ssr}
pm = out["perfect_model"]
for v in pm:
    print(f"== {v}")
    L = pm[v]["lead_hours"]
    for s in out:
        r = out[s][v]
        print(f"  {s:17s} CRPS " + " ".join(f"{r['crps'][L.index(h)]:.3g}" for h in (1, 2, 3, 6, 12, 24)) +
              f" | SSR24 {'n/a' if r['ssr'][L.index(24)] is None else format(r['ssr'][L.index(24)], '.2f')} | /perfect 6h {r['crps'][L.index(6)] / pm[v]['crps'][L.index(6)]:.2f}"
              f" 24h {r['crps'][L.index(24)] / pm[v]['crps'][L.index(24)]:.2f}")
    d = out["diffsci"][v]["crps"]
    for base in ("persistence", "climatology", "deterministic"):
        bb = out[base][v]["crps"]
        print(f"  diffsci < {base} at every lead >= 2 h: {all(d[i] < bb[i] for i, h in enumerate(L) if h >= 2)}")
json.dump(out, open(sys.argv[3], "w"), indent=1)

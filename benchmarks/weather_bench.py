"""``diffsci bench weather``: the diffusion ensemble against baselines on held-out generated data.

Systems, all written in the same WeatherBench 2 forecast layout and scored by the same code
(:func:`diffsci.weather.metrics.evaluate_forecast`):

- ``persistence``: the init state repeated (deterministic; its CRPS is its MAE);
- ``climatology``: the training-period mean by hour of day (deterministic);
- ``prob_climatology``: members drawn from training states at the same hour of day;
- ``deterministic``: the same graph network trained with MSE on the residual (GraphCast
  style), rolled out the same way (if its checkpoint is given or shipped);
- ``perfect_model``: the generator's own dynamics restarted from the true state with
  independent forcing (the practical bound on this data);
- ``diffsci``: the graph diffusion ensemble (shipped checkpoint).

Every system's CRPS is also reported as a ratio to the perfect-model ensemble's.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from diffsci.core.utils import atomic_output
from diffsci.weather import metrics as M

__all__ = ["run_benchmark", "persistence", "climatology", "prob_climatology", "perfect_model", "add_parser"]

DEFAULT_DET_CHECKPOINT = Path(__file__).with_name("data") / "deterministic_weather.pt"


def _layout(values: np.ndarray, inits, lead_hours: int, truth: xr.Dataset, variables) -> xr.Dataset:
    """values: dict var -> (I, T, M, H, W) into the WB2 forecast layout."""
    coords = {"time": np.asarray(inits), "prediction_timedelta": (np.arange(1, lead_hours + 1) * np.timedelta64(1, "h")).astype("timedelta64[ns]"),
              "realization": np.arange(next(iter(values.values())).shape[2]),
              "latitude": truth.latitude.values, "longitude": truth.longitude.values}
    return xr.Dataset({v: (("time", "prediction_timedelta", "realization", "latitude", "longitude"), values[v])
                       for v in variables}, coords=coords)


def persistence(truth: xr.Dataset, inits, lead_hours: int, variables) -> xr.Dataset:
    vals = {v: np.repeat(truth[v].sel(time=inits).values[:, None, None], lead_hours, axis=1) for v in variables}
    return _layout(vals, inits, lead_hours, truth, variables)


def _by_hour(train: xr.Dataset, variables):
    return train[variables].groupby("time.hour").mean("time").load()


def climatology(train: xr.Dataset, truth: xr.Dataset, inits, lead_hours: int, variables, clim=None) -> xr.Dataset:
    clim = _by_hour(train, variables) if clim is None else clim
    valid = pd.DatetimeIndex(inits)
    vals = {}
    for v in variables:
        arr = np.stack([[clim[v].sel(hour=(t + pd.Timedelta(hours=k + 1)).hour).values for k in range(lead_hours)] for t in valid])
        vals[v] = arr[:, :, None]
    return _layout(vals, inits, lead_hours, truth, variables)


def prob_climatology(train: xr.Dataset, truth: xr.Dataset, inits, lead_hours: int, variables, members: int, seed: int = 0):
    """Members are training states at the valid time's hour of day, drawn at random (per member)."""
    hours = pd.DatetimeIndex(train.time.values).hour
    rng = np.random.default_rng(seed)
    vals = {v: np.zeros((len(inits), lead_hours, members, truth.sizes["latitude"], truth.sizes["longitude"]), np.float32)
            for v in variables}
    data = {v: train[v].values for v in variables}
    for i, t in enumerate(pd.DatetimeIndex(inits)):
        for k in range(lead_hours):
            pool = np.nonzero(hours == (t + pd.Timedelta(hours=k + 1)).hour)[0]
            pick = rng.choice(pool, size=members, replace=len(pool) < members)
            for v in variables:
                vals[v][i, k] = data[v][pick]
    return _layout(vals, inits, lead_hours, truth, variables)


def perfect_model(raw: xr.Dataset, truth: xr.Dataset, inits, lead_hours: int, variables, members: int, seed: int = 0):
    from diffsci.weather.generator import perfect_model_ensemble

    vals = {v: np.zeros((len(inits), lead_hours, members, truth.sizes["latitude"], truth.sizes["longitude"]), np.float32)
            for v in variables}
    for i, t in enumerate(inits):
        ens = perfect_model_ensemble(raw, t, lead_hours, members, seed=seed)
        if ens.latitude.values[0] > ens.latitude.values[-1]:
            ens = ens.isel(latitude=slice(None, None, -1))
        for v in variables:
            vals[v][i] = ens[v].transpose("time", "member", "latitude", "longitude").values
    return _layout(vals, inits, lead_hours, truth, variables)


def _init_times(truth: xr.Dataset, n: int, lead_hours: int, every: int = 7) -> list:
    """Init times with two states of history and the full lead inside one trajectory."""
    times = truth.time.values
    traj = truth.trajectory.values if "trajectory" in truth.coords else np.zeros(len(times), int)
    ok = [i for i in range(2, len(times) - lead_hours) if traj[i - 1] == traj[i] == traj[i + lead_hours]]
    picks = ok[::every]
    if len(picks) < n:
        picks = ok[:: max(1, len(ok) // n)]
    return [times[i] for i in picks[:n]]


def _plots(out: Path, results: dict, forecasts: dict, truth: xr.Dataset, variables) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pngs = []
    for metric in ("crps", "rmse"):
        fig, axes = plt.subplots(1, len(variables), figsize=(4 * len(variables), 3.2), squeeze=False)
        for ax, v in zip(axes[0], variables):
            for name, res in results.items():
                ax.plot(res["lead_hours"], res["variables"][v][metric], label=name, marker=".")
            ax.set_title(f"{v}: {metric.upper()}")
            ax.set_xlabel("lead (h)")
        axes[0, 0].legend(fontsize=7)
        fig.tight_layout()
        p = out / f"{metric}_vs_lead.png"
        fig.savefig(p, dpi=90)
        plt.close(fig)
        pngs.append(p)
    fig, axes = plt.subplots(1, len(variables), figsize=(4 * len(variables), 3.2), squeeze=False)
    for ax, v in zip(axes[0], variables):
        for name, res in results.items():
            if any(res["variables"][v]["ssr"]):
                ax.plot(res["lead_hours"], res["variables"][v]["ssr"], label=name, marker=".")
        ax.axhline(1.0, color="k", lw=0.5)
        ax.set_title(f"{v}: spread/skill")
        ax.set_xlabel("lead (h)")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    p = out / "ssr_vs_lead.png"
    fig.savefig(p, dpi=90)
    plt.close(fig)
    pngs.append(p)
    ens_systems = [n for n in ("diffsci", "perfect_model", "prob_climatology") if n in results]
    fig, axes = plt.subplots(len(ens_systems), 2, figsize=(8, 2.4 * len(ens_systems)), squeeze=False)
    for r, name in enumerate(ens_systems):
        for c, lead in enumerate(("6", "24")):
            h = results[name]["rank_histogram"][variables[0]].get(lead)
            ax = axes[r, c]
            if h:
                ax.bar(np.arange(len(h)), np.asarray(h) / np.sum(h))
                ax.axhline(1 / len(h), color="k", lw=0.5)
            ax.set_title(f"{name}, {variables[0]}, +{lead} h", fontsize=8)
    fig.tight_layout()
    p = out / "rank_histograms.png"
    fig.savefig(p, dpi=90)
    plt.close(fig)
    pngs.append(p)
    if "diffsci" in forecasts:
        from diffsci.weather.demo import plot_forecast

        fc = forecasts["diffsci"]
        leads = [h for h in (6, 24) if h <= fc.sizes["prediction_timedelta"]]
        pngs.append(plot_forecast(fc, truth, variables[0], leads, out / "maps.png", members_shown=4))
    return pngs


def run_benchmark(out, *, quick: bool = False, members: int | None = None, inits: int | None = None,
                  lead_hours: int = 24, checkpoint=None, det_checkpoint=None, data=None, train_data=None,
                  seed: int = 0, steps: int = 5, sampler: str = "heun", churn: float = 2.5) -> dict:
    """Run every system, score them, write report.md, results.json and PNGs into ``out``."""
    from diffsci.weather.data import open_weather
    from diffsci.weather.forecast import forecast, load_forecaster
    from diffsci.weather.generator import generate

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    members = members or (8 if quick else 16)
    n_inits = inits or (6 if quick else 20)
    t_start = time.time()
    log = lambda s: print(f"[bench weather] {s}", file=sys.stderr, flush=True)  # noqa: E731
    fc_model = load_forecaster(checkpoint)
    variables = list(fc_model.cfg.variables)
    if data is None:
        data = out / "heldout.nc"
        if not data.exists():
            log("generating held-out data (seed 12345, not a training seed)")
            generate(grid=fc_model.cfg.grid_shape, hours=120 if quick else 200, trajectories=1 if quick else 2,
                     seed=12345, spinup_hours=240, progress=False).to_netcdf(data, engine="netcdf4")
    raw = xr.open_dataset(data, engine="netcdf4")
    truth = open_weather(data, variables=variables).load()
    if train_data is None:
        log("generating a climatology period (seed 54321)")
        train = generate(grid=fc_model.cfg.grid_shape, hours=480, trajectories=1, seed=54321, spinup_hours=240,
                         progress=False)
        train = open_weather(train, variables=variables).load()
    else:
        train = open_weather(train_data, variables=variables).load()
    init_times = _init_times(truth, n_inits, lead_hours)
    log(f"{len(init_times)} init times, {members} members, leads 1..{lead_hours} h")
    forecasts, timings = {}, {}

    def timed(name, fn):
        t0 = time.time()
        forecasts[name] = fn()
        timings[name] = round(time.time() - t0, 1)
        log(f"{name}: {timings[name]} s")

    timed("persistence", lambda: persistence(truth, init_times, lead_hours, variables))
    clim = _by_hour(train, variables)
    timed("climatology", lambda: climatology(train, truth, init_times, lead_hours, variables, clim))
    timed("prob_climatology", lambda: prob_climatology(train, truth, init_times, lead_hours, variables, members, seed))
    det = det_checkpoint or (DEFAULT_DET_CHECKPOINT if DEFAULT_DET_CHECKPOINT.exists() else None)
    if det is not None:
        det_model = load_forecaster(det)
        timed("deterministic", lambda: forecast(det_model, truth, init_times=[str(t) for t in init_times],
                                                lead_hours=lead_hours, members=1, progress=False))
    else:
        log("no deterministic checkpoint: that row is skipped")
    timed("perfect_model", lambda: perfect_model(raw, truth, init_times, lead_hours, variables, members, seed))
    timed("diffsci", lambda: forecast(fc_model, truth, init_times=[str(t) for t in init_times], lead_hours=lead_hours,
                                      members=members, seed=seed, steps=steps, sampler=sampler, churn=churn,
                                      progress=True))
    results = {name: M.evaluate_forecast(fc, truth, variables=variables, climatology=clim)
               for name, fc in forecasts.items()}
    summary = _summary(results, variables)
    payload = {"systems": results, "summary": summary, "timings_s": timings, "members": members,
               "init_times": [str(t)[:16] for t in init_times], "lead_hours": lead_hours,
               "checkpoint": fc_model.source, "sampler": sampler, "noise_levels": steps, "churn": churn, "deterministic_checkpoint": str(det) if det else None,
               "command": " ".join(["diffsci", "bench", "weather", "--out", str(out)] + (["--quick"] if quick else [])),
               "wall_s": round(time.time() - t_start, 1)}
    with atomic_output(out / "results.json") as tmp:
        tmp.write_text(json.dumps(payload, indent=1))
    pngs = _plots(out, results, forecasts, truth, variables)
    _report(out, payload, pngs, variables)
    log(f"done in {payload['wall_s']} s: {out / 'report.md'}")
    return payload


def _summary(results: dict, variables) -> dict:
    s = {}
    pm = results.get("perfect_model")
    for v in variables:
        sv = {}
        leads = results["diffsci"]["lead_hours"]
        for name, res in results.items():
            row = {}
            if pm:
                row["crps_ratio_to_perfect"] = {str(h): res["variables"][v]["crps"][i] / pm["variables"][v]["crps"][i]
                                                for i, h in enumerate(leads) if h in (1, 6, 12, 24)}
            sv[name] = row
        d = results["diffsci"]["variables"][v]["crps"]
        for base in ("persistence", "climatology", "deterministic"):
            if base in results:
                b = results[base]["variables"][v]["crps"]
                sv[f"diffsci_beats_{base}_all_leads_ge_3h"] = all(d[i] < b[i] for i, h in enumerate(leads) if h >= 3)
        s[v] = sv
    return s


def _report(out: Path, payload: dict, pngs, variables) -> None:
    res, summ = payload["systems"], payload["summary"]
    leads = res["diffsci"]["lead_hours"]
    show = [h for h in (1, 3, 6, 12, 24) if h in leads]
    lines = ["# Weather benchmark", "",
             f"Command: `{payload['command']}`  ",
             f"Checkpoint: `{payload['checkpoint']}`; {len(payload['init_times'])} init times, {payload['members']} members, "
             f"sampler {payload['sampler']} with {payload['noise_levels']} noise levels; wall time {payload['wall_s']} s; "
             f"per-system seconds: {payload['timings_s']}.", "",
             "All systems are scored by `diffsci.weather.metrics` (WeatherBench 2 definitions: fair CRPS, "
             "ensemble-mean RMSE, SSR with the sqrt((M+1)/M) factor). Deterministic systems' CRPS is their MAE.", ""]
    for v in variables:
        lines += [f"## {v}", "", "| system | " + " | ".join(f"CRPS +{h} h" for h in show) + " | " +
                  " | ".join(f"RMSE +{h} h" for h in show) + " | SSR +24 h | CRPS / perfect +6 h | CRPS / perfect +24 h |",
                  "|---" * (2 * len(show) + 4) + "|"]
        for name, r in res.items():
            rv = r["variables"][v]
            ratio = summ[v][name].get("crps_ratio_to_perfect", {})
            ssr = rv["ssr"][leads.index(24)] if 24 in leads and rv["ssr"][leads.index(24)] else float("nan")
            lines.append(f"| {name} | " + " | ".join(f"{rv['crps'][leads.index(h)]:.4g}" for h in show) + " | " +
                         " | ".join(f"{rv['rmse'][leads.index(h)]:.4g}" for h in show) +
                         f" | {ssr:.2f} | {ratio.get('6', float('nan')):.2f} | {ratio.get('24', float('nan')):.2f} |")
        lines.append("")
        for key, val in summ[v].items():
            if key.startswith("diffsci_beats"):
                lines.append(f"- {key.replace('_', ' ')}: **{'yes' if val else 'no'}**")
        lines.append("")
    lines += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in pngs]
    (out / "report.md").write_text("\n".join(lines) + "\n")


def _run(args) -> int:
    run_benchmark(args.out, quick=args.quick, members=args.members, inits=args.inits, checkpoint=args.checkpoint,
                  det_checkpoint=args.deterministic_checkpoint, data=args.data, train_data=args.train_data,
                  steps=args.steps, sampler=args.sampler, churn=args.churn)
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("weather", help="weather benchmark: diffusion ensemble vs baselines",
                              description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--quick", action="store_true", help="6 init times, 8 members (<= 15 min on 2 CPU cores)")
    p.add_argument("--members", type=int)
    p.add_argument("--inits", type=int, help="number of init times (default 20, quick 6)")
    p.add_argument("--checkpoint", help="diffusion checkpoint (default: shipped)")
    p.add_argument("--deterministic-checkpoint", help="MSE baseline checkpoint (default: benchmarks/data/deterministic_weather.pt)")
    p.add_argument("--data", help="held-out data written by make-data (default: generated, seed 12345)")
    p.add_argument("--train-data", help="training-period data for the climatologies (default: generated)")
    p.add_argument("--steps", type=int, default=5, help="noise levels per forecast step (default 5)")
    p.add_argument("--sampler", default="heun")
    p.add_argument("--churn", type=float, default=2.5, help="EDM churn (heun/euler samplers; default 2.5)")
    p.set_defaults(func=_run)

"""``diffsci bench weather``: the diffusion ensemble against baselines on held-out generated data.

Systems (see :mod:`diffsci.benchmarks.baselines_weather`), all in the same WeatherBench 2
forecast layout and scored by the same code (:func:`diffsci.weather.metrics.evaluate_forecast`):

- ``persistence``: the init state repeated (deterministic: its CRPS is null in results.json and
  its MAE, the CRPS of a one-member ensemble, stands in for it in the summary and report);
- ``climatology``: the training-period mean by hour of day (deterministic);
- ``prob_climatology``: members are training-period stretches starting at the init's hour;
- ``deterministic``: the same graph network trained with MSE on the residual (GraphCast
  style), rolled out the same way (shipped checkpoint; trained here if missing, full run only);
- ``perfect_model``: the generator's own dynamics restarted from the true state with
  independent forcing (the practical bound on this data);
- ``diffsci``: the graph diffusion ensemble (shipped checkpoint).

Held-out data: the generator with seed 12345 (training used seed 0). Output folder: report.md,
results.json, PNGs (CRPS / RMSE / spread-skill vs lead, rank histograms at +6 h and +24 h,
maps of truth, 4 members, ensemble mean and spread at +6 h and +24 h, the scorecard), the
held-out data and the climatology period (netCDF, reused by a rerun into the same folder).

Besides each system's scores, results.json and the report hold the calibration of every
ensemble system per field and lead (:func:`calibration`: spread/skill and the flatness of the
rank histogram) and a WeatherBench 2 style scorecard (:mod:`diffsci.benchmarks.scorecard`:
CRPS and RMSE relative to ``--scorecard-reference``, default persistence).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from diffsci.benchmarks import baselines_weather as baselines
from diffsci.benchmarks.baselines_weather import (  # noqa: F401  (re-exported for users of this module)
    climatology, hourly_climatology, perfect_model, persistence, prob_climatology,
)
from diffsci.benchmarks.common import add_benchmark_parser, command_line, write_results
from diffsci.benchmarks.scorecard import SCORECARD_REFERENCES, crps_or_mae, plot_scorecard, scorecard, scorecard_tables
from diffsci.core.errors import DiffsciError
from diffsci.core.figures import save_figure
from diffsci.core.io import check_choice, write_netcdf
from diffsci.weather.data import check_grid, time_step
from diffsci.weather.forecast_cmd import STEPS_HELP, CheckpointHelpFormatter
from diffsci.weather.metrics import evaluate_forecast, rank_histogram_delta, reliability_index

__all__ = ["run_benchmark", "check_heldout", "check_data", "select_init_times", "summarize", "calibration", "render_report",
           "report_tables", "calibration_tables", "crps_or_mae", "add_parser", "HELDOUT_SEED", "DEFAULT_DET_CHECKPOINT",
           "MIN_LEAD_HOURS"]

DEFAULT_DET_CHECKPOINT = Path(__file__).with_name("data") / "deterministic_weather.pt"
HELDOUT_SEED = 12345
BASELINES_TO_BEAT = ("persistence", "climatology", "deterministic")
ENSEMBLES = ("diffsci", "perfect_model", "prob_climatology")
MIN_LEAD_HOURS = 3  # the summary asks whether diffsci beats each baseline at every lead from here on


def select_init_times(truth: xr.Dataset, n: int, lead_hours: int, every: int = 7) -> list[np.datetime64]:
    """Up to ``n`` init times, ``every`` hours apart (so hours of day vary), each with its
    previous hour and the whole lead inside one trajectory."""
    times = truth.time.values
    traj = truth.trajectory.values if "trajectory" in truth.coords else np.zeros(len(times), int)
    ok = [i for i in range(1, len(times) - lead_hours) if traj[i - 1] == traj[i] == traj[i + lead_hours]]
    if not ok:
        raise DiffsciError(f"held-out data: no init time with {lead_hours} h of truth after it in one trajectory")
    picks = ok[::every]
    if len(picks) < n:
        picks = ok[:: max(1, len(ok) // n)]
    return [times[i] for i in picks[:n]]


def summarize(results: dict, variables, min_lead: int = MIN_LEAD_HOURS) -> dict:
    """Per variable: each system's CRPS / perfect-model CRPS at every lead, and whether the
    diffusion ensemble's CRPS is below each baseline's at every lead >= ``min_lead`` h (with
    the leads where it is not)."""
    out = {}
    pm = results.get("perfect_model")
    for v in variables:
        sv = {"crps_ratio_to_perfect": {}, "diffsci_beats": {}}
        if pm:
            ref = dict(zip(pm["lead_hours"], crps_or_mae(pm["variables"][v])))
            for name, res in results.items():
                sv["crps_ratio_to_perfect"][name] = {str(h): c / ref[h] for h, c in
                                                     zip(res["lead_hours"], crps_or_mae(res["variables"][v]))
                                                     if c is not None and ref.get(h)}
        if "diffsci" in results:
            d = dict(zip(results["diffsci"]["lead_hours"], crps_or_mae(results["diffsci"]["variables"][v])))
            for base in BASELINES_TO_BEAT:
                if base not in results:
                    continue
                b = dict(zip(results[base]["lead_hours"], crps_or_mae(results[base]["variables"][v])))
                leads = [h for h in d if h >= min_lead and h in b]
                lost = [h for h in leads if d[h] is None or b[h] is None or not d[h] < b[h]]
                sv["diffsci_beats"][base] = {"all_leads_ge_%dh" % min_lead: bool(leads) and not lost,
                                             "leads_not_beaten": lost}
        out[v] = sv
    return out


def calibration(results: dict, variables) -> dict:
    """Per field, for every ensemble system (those with rank histograms; diffsci first, the
    perfect model next) and every lead: the spread/skill ratio (copied from the system's
    scores) and the flatness of its rank histogram, Candille & Talagrand's ``delta``
    (:func:`~diffsci.weather.metrics.rank_histogram_delta`) and the reliability index
    (:func:`~diffsci.weather.metrics.reliability_index`); None where a lead has no histogram."""
    ensembles = [n for n in ENSEMBLES if n in results] + [n for n in results if n not in ENSEMBLES]
    out = {}
    for v in variables:
        out[v] = {}
        for name in ensembles:
            res = results[name]
            hists = res["rank_histogram"].get(v) or {}
            if not hists:
                continue
            counts = [hists.get(str(h)) for h in res["lead_hours"]]
            out[v][name] = {"lead_hours": list(res["lead_hours"]), "ssr": list(res["variables"][v]["ssr"]),
                            "rank_histogram_delta": [None if c is None else rank_histogram_delta(c) for c in counts],
                            "reliability_index": [None if c is None else reliability_index(c) for c in counts]}
    return {"fields": out,
            "notes": {"ssr": "spread/skill ratio with the (M+1)/M factor; 1 when calibrated",
                      "rank_histogram_delta": "Candille & Talagrand 2005: sum (s_k - N/(M+1))^2 / (N M/(M+1)); "
                                              "0 flat, 1 expected for a calibrated ensemble on independent points",
                      "reliability_index": "Delle Monache et al. 2006: sum |s_k/N - 1/(M+1)|; 0 flat, 2M/(M+1) worst"}}


def _plots(out: Path, results: dict, forecasts: dict, truth: xr.Dataset, variables) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pngs = []

    def save(fig, name):
        pngs.append(save_figure(fig, out / name))

    for metric, title in (("crps", "CRPS"), ("rmse", "RMSE"), ("ssr", "spread/skill")):
        fig, axes = plt.subplots(1, len(variables), figsize=(4 * len(variables), 3.2), squeeze=False)
        for ax, v in zip(axes[0], variables):
            for name, res in results.items():
                if metric == "ssr" and name not in ENSEMBLES:
                    continue
                rv = res["variables"][v]
                y = crps_or_mae(rv) if metric == "crps" else rv[metric]
                ax.plot(res["lead_hours"], [np.nan if x is None else x for x in y], label=name, marker=".")
            if metric == "ssr":
                ax.axhline(1.0, color="k", lw=0.5)
            ax.set_title(f"{v}: {title}", fontsize=9)
            ax.set_xlabel("lead (h)")
        axes[0, 0].legend(fontsize=7)
        save(fig, f"{metric}_vs_lead.png")

    ens = [n for n in ENSEMBLES if n in results]
    leads = [h for h in (6, 24) if h in results[ens[0]]["lead_hours"]] if ens else []
    if ens and leads:
        cols = [(v, h) for v in variables for h in leads]
        fig, axes = plt.subplots(len(ens), len(cols), figsize=(2.2 * len(cols), 1.9 * len(ens)), squeeze=False)
        for r, name in enumerate(ens):
            for c, (v, h) in enumerate(cols):
                hist = np.asarray(results[name]["rank_histogram"][v].get(str(h), []), float)
                ax = axes[r, c]
                if hist.size:
                    ax.bar(np.arange(hist.size), hist / hist.sum(), width=1.0)
                    ax.axhline(1 / hist.size, color="k", lw=0.5)
                ax.set_title(f"{name}\n{v} +{h} h", fontsize=7)
                ax.set_xticks([])
                ax.tick_params(labelsize=6)
        save(fig, "rank_histograms.png")

    from diffsci.weather.demo import plot_forecast

    for name in ("diffsci", "perfect_model"):
        if name in forecasts and leads:
            fc = forecasts[name]
            shown = min(4, fc.sizes["realization"])
            pngs.append(plot_forecast(fc, truth, variables[0], leads, out / f"maps_{name}.png", members_shown=shown))
    return pngs


def check_heldout(data, train_data, provenance=None) -> None:
    """Refuse held-out data that is not held out: the same bytes (SHA-256) as the climatology
    data, or as a file the checkpoint was trained on (its recorded provenance; checkpoints
    without provenance are not checked)."""
    from diffsci.core.config import file_record

    held = file_record(data).sha256
    if file_record(train_data).sha256 == held:
        raise DiffsciError(f"--data {data}: the same data as the climatology period {train_data}; give held-out data")
    for f in (provenance.files if provenance is not None else ()):
        if f.sha256 == held:
            raise DiffsciError(f"--data {data}: the checkpoint was trained on this file ({f.path}, SHA-256 "
                               f"{held[:12]}...); give held-out data")


def _check_grid(ds: xr.Dataset, forecaster, flag: str) -> None:
    try:
        check_grid(ds, forecaster.config.latitude, forecaster.config.longitude)
    except DiffsciError as exc:
        raise DiffsciError(f"{flag} {exc}") from None


def check_data(raw: xr.Dataset, truth: xr.Dataset, forecaster, flag: str = "--data") -> None:
    """Refuse held-out data the benchmark cannot use, before any system runs: ``raw`` (the file as
    written) must hold the generator's simulator state (the perfect-model baseline restarts from
    it), and ``truth`` (the same file through the reader) one run on the checkpoint's grid with
    the checkpoint's time step."""
    name = truth.attrs.get("diffsci_source", flag)
    if "sim_state" not in raw or "generator_config" not in raw.attrs:
        raise DiffsciError(f"{flag} {name}: no simulator state ('sim_state' and the 'generator_config' attribute): "
                           "the perfect-model baseline restarts the generator from it; give a file written by "
                           "'diffsci weather make-data' without --no-state")
    if "realization" in truth.dims:
        raise DiffsciError(f"{flag} {name}: an ensemble ({truth.sizes['realization']} members); give one run")
    _check_grid(truth, forecaster, flag)
    step, want = time_step(truth), pd.Timedelta(hours=forecaster.config.time_step_hours)
    if step is not None and step != want:
        raise DiffsciError(f"{flag} {name}: states every {step}, but the checkpoint steps {want}")


def run_benchmark(out, *, quick: bool = False, members: int | None = None, inits: int | None = None,
                  lead_hours: int = 24, checkpoint=None, det_checkpoint=None, data=None, train_data=None,
                  seed: int = 0, steps: int | None = None, sampler: str | None = None, churn: float | None = None,
                  det_train_minutes: float = 15.0, scorecard_reference: str = "persistence") -> dict:
    """Run every system, score them, write report.md, results.json and PNGs into ``out``.

    ``quick``: 6 init times, 8 members, 120 h of held-out data and the first 480 h of the
    training period for the climatologies. Otherwise 20 init times, 16 members, 2 x 200 h of
    held-out data and the whole training period (4 x 1000 h). ``scorecard_reference``: the
    system the scorecard compares the others with (one of ``SCORECARD_REFERENCES``). ``sampler``,
    ``steps``, ``churn``: None takes the checkpoint's own settings
    (:func:`~diffsci.weather.forecast.sampling_settings`). Returns the results.json payload.
    """
    from diffsci.weather.data import open_weather
    from diffsci.weather.forecast import ForecastSettings, forecast, load_forecaster, sampling_settings
    from diffsci.weather.generator import generate

    members = members if members is not None else (8 if quick else 16)
    n_inits = inits if inits is not None else (6 if quick else 20)
    if members < 2:
        raise DiffsciError(f"--members must be >= 2 (ensemble scores need two members), got {members}")
    if n_inits < 1:
        raise DiffsciError(f"--inits must be >= 1, got {n_inits}")
    if lead_hours < 1:
        raise DiffsciError(f"--lead-hours must be >= 1, got {lead_hours}")
    check_choice(scorecard_reference, "--scorecard-reference", SCORECARD_REFERENCES)
    for name, p in (("--data", data), ("--train-data", train_data), ("--checkpoint", checkpoint),
                    ("--deterministic-checkpoint", det_checkpoint)):
        if p is not None and not Path(p).exists():
            raise DiffsciError(f"{name} {p}: no such file")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DiffsciError(f"--out {out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    data_arg, train_data_arg = data, train_data
    t_start = time.time()
    log = lambda s: print(f"[bench weather] {s}", file=sys.stderr, flush=True)  # noqa: E731
    forecaster = load_forecaster(checkpoint)
    used = sampling_settings(forecaster.config, sampler, steps, churn)  # (sampler, noise levels, churn)
    if forecaster.deterministic:
        raise DiffsciError(f"--checkpoint {forecaster.source}: a deterministic model; give a diffusion checkpoint")
    variables = list(forecaster.config.variables)
    grid = tuple(forecaster.config.grid_shape)

    if data is None:
        data = out / "heldout.nc"
        if not data.exists():
            log(f"generating held-out data (seed {HELDOUT_SEED}; training used seed {baselines.SHIPPED_TRAINING_PERIOD.seed})")
            write_netcdf(generate(grid=grid, hours=120 if quick else 200, trajectories=1 if quick else 2,
                                  seed=HELDOUT_SEED, spinup_hours=240, progress=False), data)
    raw = xr.open_dataset(data, engine="netcdf4")
    truth = open_weather(data, variables=variables).load()
    check_data(raw, truth, forecaster)  # before any work: a file the perfect model or the forecast cannot use
    if train_data is None:
        shipped = baselines.SHIPPED_TRAINING_PERIOD
        period = baselines.TrainingPeriod(grid=grid) if grid != shipped.grid else shipped
        hours, trajs = (480, 1) if quick else (period.hours, period.trajectories)
        train_data = out / f"training_period_{trajs}x{hours}h.nc"
        if not train_data.exists():
            log(f"regenerating the training period for the climatologies (seed {period.seed}, {trajs} x {hours} h)")
            write_netcdf(period.generate(hours, trajs, progress=True), train_data)
    check_heldout(data, train_data, forecaster.provenance)
    train = open_weather(train_data, variables=variables).load()
    _check_grid(train, forecaster, "--train-data")
    clim = hourly_climatology(train, variables)  # refuses a period without every hour of the day
    init_times = select_init_times(truth, n_inits, lead_hours)
    log(f"{len(init_times)} init times, {members} members, leads 1..{lead_hours} h")
    forecasts, timings = {}, {}

    def timed(name, fn):
        t0 = time.time()
        forecasts[name] = fn()
        timings[name] = round(time.time() - t0, 1)
        log(f"{name}: {timings[name]} s")

    timed("persistence", lambda: persistence(truth, init_times, lead_hours, variables))
    timed("climatology", lambda: climatology(clim, truth, init_times, lead_hours, variables))
    timed("prob_climatology", lambda: prob_climatology(train, truth, init_times, lead_hours, variables, members, seed))
    det = det_checkpoint or (DEFAULT_DET_CHECKPOINT if DEFAULT_DET_CHECKPOINT.exists() else None)
    det_note = "shipped" if det == DEFAULT_DET_CHECKPOINT else ("given" if det else None)
    if det is None and not quick:
        log(f"no deterministic checkpoint: training it for {det_train_minutes} min on the climatology period")
        det = baselines.train_deterministic(train_data, out / "deterministic_run", max_minutes=det_train_minutes,
                                            export_to=out / "deterministic_weather.pt")
        det_note = f"trained in this run ({det_train_minutes} min)"
    if det is None and scorecard_reference == "deterministic":
        raise DiffsciError("--scorecard-reference deterministic: no deterministic system in a quick run without "
                           "--deterministic-checkpoint")
    if det is not None:
        timed("deterministic", lambda: baselines.deterministic_forecast(det, truth, init_times, lead_hours))
    else:
        log("no deterministic checkpoint (quick run): that system is skipped")
    timed("perfect_model", lambda: perfect_model(raw, init_times, lead_hours, variables, members, seed, progress=True))
    settings = ForecastSettings(init_times=[str(t) for t in init_times], lead_hours=lead_hours, members=members,
                                seed=seed, sampler=used[0], steps=used[1], churn=used[2])
    timed("diffsci", lambda: forecast(forecaster, truth, settings, progress=True))
    results = {name: evaluate_forecast(fc, truth, variables=variables, climatology=clim)
               for name, fc in forecasts.items()}
    default = lambda value, usual: None if value == usual else value  # noqa: E731
    command = command_line("weather", out, flags=[("--quick", quick)], options=[
        ("--members", default(members, 8 if quick else 16)), ("--inits", default(n_inits, 6 if quick else 20)),
        ("--lead-hours", default(lead_hours, 24)), ("--checkpoint", checkpoint),
        ("--deterministic-checkpoint", det_checkpoint), ("--data", data_arg), ("--train-data", train_data_arg),
        ("--seed", default(seed, 0)), ("--steps", steps), ("--sampler", sampler), ("--churn", churn), ("--scorecard-reference", default(scorecard_reference, "persistence"))])
    payload = {"systems": results, "summary": summarize(results, variables),
               "calibration": calibration(results, variables),
               "scorecard": scorecard(results, variables, scorecard_reference), "timings_s": timings,
               "members": members, "init_times": [str(t)[:16] for t in init_times], "lead_hours": lead_hours,
               "checkpoint": forecaster.source, "sampler": used[0], "noise_levels": used[1], "churn": used[2],
               "deterministic_checkpoint": str(det) if det else None, "deterministic_source": det_note,
               "heldout_data": str(data), "climatology_period": str(train_data),
               "climatology_period_hours": int(train.sizes["time"]), "heldout_seed": HELDOUT_SEED,
               "command": command,
               "wall_s": None}
    pngs = _plots(out, results, forecasts, truth, variables)
    pngs.append(plot_scorecard(payload["scorecard"], out / "scorecard.png"))
    payload["wall_s"] = round(time.time() - t_start, 1)
    write_results(out, payload, render_report(payload, [p.name for p in pngs], variables))
    log(f"done in {payload['wall_s']} s: {out / 'report.md'}")
    return payload


def _fmt(x) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.3g}"


def render_report(payload: dict, png_names, variables) -> str:
    """The markdown report from a results.json payload."""
    lines = ["# Weather benchmark", "",
             f"Command: `{payload['command']}`; wall time {payload['wall_s']} s; per-system seconds {payload['timings_s']}.", "",
             f"Diffusion checkpoint `{payload['checkpoint']}`: {payload['members']} members, sampler "
             f"{payload['sampler']} with {payload['noise_levels']} noise levels and churn {payload['churn']}. "
             f"Deterministic baseline: `{payload['deterministic_checkpoint']}` ({payload['deterministic_source']}).", "",
             f"Held-out data `{payload['heldout_data']}` (generator seed {payload['heldout_seed']}, not a training seed), "
             f"{len(payload['init_times'])} init times ({', '.join(payload['init_times'])}), leads 1..{payload['lead_hours']} h. "
             f"Climatologies over {payload['climatology_period_hours']} h of the training period "
             f"(`{payload['climatology_period']}`).", "",
             "Every system is a WeatherBench 2 forecast file scored by `diffsci.weather.metrics.evaluate_forecast`: "
             "area-weighted fair CRPS (a deterministic system's CRPS is null in results.json; its MAE, the CRPS "
             "of a one-member ensemble, is shown and compared instead), ensemble-mean RMSE, spread/skill ratio "
             "with the sqrt((M+1)/M) factor. 'CRPS / perfect' divides by the perfect-model ensemble's CRPS "
             "(the generator itself restarted from the true state: the practical bound, ratio 1).", ""]
    lines += report_tables(payload, variables)
    lines += calibration_tables(payload["calibration"])
    lines += scorecard_tables(payload["scorecard"])
    lines += ["## Plots", ""] + [f"![{Path(n).stem}]({n})" for n in png_names]
    return "\n".join(lines) + "\n"


def report_tables(payload: dict, variables) -> list[str]:
    """Per variable, the markdown table of every system's CRPS and RMSE at +1/3/6/12/24 h, SSR
    and CRPS / perfect at +6/24 h, then whether diffsci beats each baseline (from the summary)."""
    res, summ = payload["systems"], payload["summary"]
    leads = res["diffsci"]["lead_hours"]
    show = [h for h in (1, 3, 6, 12, 24) if h in leads]
    lines = []
    for v in variables:
        ratios = summ[v]["crps_ratio_to_perfect"]
        lines += [f"## {v}", "",
                  "| system | " + " | ".join(f"CRPS +{h} h" for h in show) + " | "
                  + " | ".join(f"RMSE +{h} h" for h in show) + " | SSR +6 h | SSR +24 h | CRPS / perfect +6 h | CRPS / perfect +24 h |",
                  "|---" * (2 * len(show) + 5) + "|"]
        for name, r in res.items():
            rv = r["variables"][v]
            at = dict(zip(r["lead_hours"], range(len(r["lead_hours"]))))
            ssr = [rv["ssr"][at[h]] if h in at and name in ENSEMBLES else None for h in (6, 24)]
            rat = [ratios.get(name, {}).get(str(h)) for h in (6, 24)]
            score = crps_or_mae(rv)
            lines.append(f"| {name} | " + " | ".join(_fmt(score[at[h]]) for h in show) + " | "
                         + " | ".join(_fmt(rv["rmse"][at[h]]) for h in show) + " | "
                         + " | ".join(_fmt(x) for x in ssr + rat) + " |")
        lines.append("")
        for base, b in summ[v]["diffsci_beats"].items():
            (key, ok), = [(k, x) for k, x in b.items() if k.startswith("all_leads")]
            ge = key.split("_ge_")[1]
            extra = "" if ok else f" (not at leads {b['leads_not_beaten']} h)"
            lines.append(f"- diffsci CRPS below {base} at every lead >= {ge}: **{'yes' if ok else 'no'}**{extra}")
        lines.append("")
    return lines


def calibration_tables(calib: dict) -> list[str]:
    """Markdown: per field, a table with a column per lead and the rows spread/skill, then
    reliability index, of each ensemble system (the perfect model beside diffsci)."""
    lines = ["## Calibration", "",
             "Spread/skill (SSR, 1 when calibrated) and the reliability index of the rank histogram "
             "(RI = sum_k |s_k/N - 1/(M+1)|: 0 flat, 2M/(M+1) when every truth falls in one bin; Candille & "
             "Talagrand's delta is in results.json) at every lead.", ""]
    for v, systems in calib["fields"].items():
        if not systems:
            continue
        leads = next(iter(systems.values()))["lead_hours"]
        lines += [f"### {v}", "", "| system | statistic | " + " | ".join(f"+{h}" for h in leads) + " |",
                  "|---|---" + "|---" * len(leads) + "|"]
        for key, label in (("ssr", "SSR"), ("reliability_index", "RI")):
            for name, c in systems.items():
                at = dict(zip(c["lead_hours"], c[key]))
                lines.append(f"| {name} | {label} | " + " | ".join(_fmt(at.get(h)) for h in leads) + " |")
        lines.append("")
    return lines


def add_parser(subparsers) -> None:
    p = add_benchmark_parser(subparsers, "weather", run_benchmark, help="weather benchmark: diffusion ensemble vs baselines",
                             doc=__doc__, outputs="report.md, results.json, PNGs",
                             quick="6 init times, 8 members, short climatology (<= 15 min on 2 CPU cores)")
    p.formatter_class = CheckpointHelpFormatter  # the shipped checkpoint's sampling settings, read when printed
    p.add_argument("--members", type=int, help="ensemble size (default 16, quick 8)")
    p.add_argument("--inits", type=int, help="number of init times (default 20, quick 6)")
    p.add_argument("--lead-hours", type=int, default=24, help="forecast length in hours (default 24)")
    p.add_argument("--checkpoint", help="diffusion checkpoint (default: shipped)")
    p.add_argument("--deterministic-checkpoint", dest="det_checkpoint", metavar="DETERMINISTIC_CHECKPOINT",
                   help="MSE baseline checkpoint (default: benchmarks/data/deterministic_weather.pt)")
    p.add_argument("--data", help="held-out data written by make-data, with the simulator state (default: generated, seed 12345)")
    p.add_argument("--train-data", help="training-period data for the climatologies (default: regenerated from seed 0)")
    p.add_argument("--seed", type=int, default=0, help="seed of the ensembles")
    p.add_argument("--sampler", help="default: the checkpoint's own sampler, recorded with it (the shipped "
                                     "checkpoint's: {shipped_sampling})")
    p.add_argument("--steps", type=int, help=STEPS_HELP + " (default: the checkpoint's with its own sampler, else 5)")
    p.add_argument("--churn", type=float, help="EDM churn, heun/euler samplers (default: the checkpoint's with its "
                                               "own sampler, else 2.5)")
    p.add_argument("--scorecard-reference", default="persistence", choices=SCORECARD_REFERENCES,
                   help="the system the scorecard compares the others with (default persistence)")

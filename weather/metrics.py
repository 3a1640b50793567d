"""Probabilistic forecast metrics with WeatherBench 2's definitions (xarray in, xarray out).

Definitions (Rasp et al. 2024, WeatherBench 2; ``weatherbench2/metrics.py``), each computed per
init time and then averaged over init times:

- Latitude weights: cell-area weights ``w_i = sin(b_{i+1}) - sin(b_i)`` with cell bounds at
  the midpoints between latitudes and +-90 deg at the ends, normalised to mean 1; a spatial
  mean is the w-weighted mean over latitude and longitude.
- CRPS, fair estimator (default):
  ``(1/M) sum_m |x_m - y| - 1/(2 M (M - 1)) sum_{i,j} |x_i - x_j|``, computed in O(M log M)
  by sorting (``sum_{i,j} |x_i - x_j| = 2 sum_k (2k - M - 1) x_(k)``); the standard
  estimator divides by ``2 M^2`` instead. With missing (NaN) members, M is the number of
  valid members at that point (the fix for WeatherBench 2 issue #302). The fair estimator is
  undefined for M = 1 (NaN there); a deterministic forecast is scored with MAE, which equals
  the standard CRPS of a one-member ensemble.
- Ensemble-mean RMSE: ``sqrt(time mean of spatial mean of (mean_m x_m - y)^2)``.
- Spread: ``sqrt(time mean of spatial mean of var_m(x, ddof=1))``; spread/skill ratio
  ``SSR = sqrt((M + 1) / M) * spread / RMSE`` (1 for a calibrated ensemble).
- Rank histogram: the rank of the truth among the M members (M + 1 bins), ties broken at
  random (seeded), counts over all points and init times.
- Brier score at a threshold and its debiased (fair) version ``BS - p (1 - p) / (M - 1)``.
- ACC: the latitude-weighted anomaly correlation of the ensemble mean against a climatology.
- Energy score (fair) across variables, each divided by a given scale.

Dimension names: ``realization`` (members), ``time`` (init), ``prediction_timedelta``,
``latitude``, ``longitude``; any other dims (``level``) are kept.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import xarray as xr

from diffsci.core.errors import DiffsciError
from diffsci.core.utils import atomic_output

__all__ = [
    "latitude_weights", "spatial_mean", "crps_ensemble", "crps", "ensemble_mean_rmse", "spread",
    "spread_skill_ratio", "rank_histogram", "brier_score", "acc", "energy_score", "align",
    "evaluate_forecast", "add_parser",
]

MEMBER = "realization"
SPATIAL = ("latitude", "longitude")


def latitude_weights(latitude) -> xr.DataArray:
    """Cell-area weights normalised to mean 1 (see the module docstring). Shape (H,)."""
    lat = np.asarray(latitude, dtype=np.float64)
    order = np.argsort(lat)
    s = np.deg2rad(lat[order])
    bounds = np.concatenate([[-np.pi / 2], (s[1:] + s[:-1]) / 2, [np.pi / 2]])
    w_sorted = np.diff(np.sin(bounds))
    w = np.empty_like(w_sorted)
    w[order] = w_sorted
    return xr.DataArray(w / w.mean(), dims=["latitude"], coords={"latitude": np.asarray(latitude)})


def spatial_mean(x: xr.DataArray) -> xr.DataArray:
    """Latitude-weighted mean over latitude and longitude."""
    w = latitude_weights(x.latitude.values)
    return x.weighted(w).mean(SPATIAL)


def crps_ensemble(members: np.ndarray, obs: np.ndarray, *, fair: bool = True) -> np.ndarray:
    """Pointwise CRPS of an ensemble (members on the LAST axis), NaN members ignored.

    ``members`` (..., M), ``obs`` (...). O(M log M) by sorting.
    """
    x = np.asarray(members, dtype=np.float64)
    y = np.asarray(obs, dtype=np.float64)[..., None]
    xs = np.sort(x, axis=-1)  # NaNs sort last
    valid = ~np.isnan(xs)
    m = valid.sum(-1)
    k = np.arange(1, x.shape[-1] + 1)
    w = np.where(valid, 2 * k - m[..., None] - 1, 0.0)
    pair = 2 * (w * np.where(valid, xs, 0.0)).sum(-1)  # sum_{i,j} |x_i - x_j|
    with np.errstate(invalid="ignore", divide="ignore"):
        skill = np.nansum(np.abs(x - y), -1) / m
        denom = 2.0 * m * (m - 1) if fair else 2.0 * m * m
        out = skill - pair / denom
    out = np.where(m == 0, np.nan, out)
    if fair:
        out = np.where(m < 2, np.nan, out)
    return out


def _members_last(forecast: xr.DataArray):
    if MEMBER not in forecast.dims:
        raise DiffsciError(f"forecast has no {MEMBER!r} dim (an ensemble is needed)")
    return forecast


def crps(forecast: xr.DataArray, truth: xr.DataArray, *, fair: bool = True) -> xr.DataArray:
    """Time-mean of the spatial mean of the pointwise CRPS (per init time, then averaged)."""
    f = _members_last(forecast)
    point = xr.apply_ufunc(crps_ensemble, f, truth, input_core_dims=[[MEMBER], []], kwargs={"fair": fair},
                           dask="parallelized", output_dtypes=[np.float64])
    return _time_mean(spatial_mean(point))


def _time_mean(x: xr.DataArray) -> xr.DataArray:
    return x.mean("time") if "time" in x.dims else x


def ensemble_mean_rmse(forecast: xr.DataArray, truth: xr.DataArray) -> xr.DataArray:
    f = forecast.mean(MEMBER) if MEMBER in forecast.dims else forecast
    return np.sqrt(_time_mean(spatial_mean((f - truth) ** 2)))


def mae(forecast: xr.DataArray, truth: xr.DataArray) -> xr.DataArray:
    """Mean absolute error of the ensemble mean (of the forecast for deterministic ones)."""
    f = forecast.mean(MEMBER) if MEMBER in forecast.dims else forecast
    return _time_mean(spatial_mean(abs(f - truth)))


def spread(forecast: xr.DataArray) -> xr.DataArray:
    return np.sqrt(_time_mean(spatial_mean(_members_last(forecast).var(MEMBER, ddof=1))))


def spread_skill_ratio(forecast: xr.DataArray, truth: xr.DataArray) -> xr.DataArray:
    m = forecast.sizes[MEMBER]
    return np.sqrt((m + 1) / m) * spread(forecast) / ensemble_mean_rmse(forecast, truth)


def rank_histogram(forecast: xr.DataArray, truth: xr.DataArray, *, seed: int = 0) -> np.ndarray:
    """Counts of the truth's rank among the members (M + 1 bins), ties broken at random."""
    f = _members_last(forecast).transpose(..., MEMBER)
    y = truth.broadcast_like(f.isel({MEMBER: 0}, drop=True)).transpose(*f.dims[:-1])
    x, yv = f.values, y.values[..., None]
    rng = np.random.default_rng(seed)
    below = (x < yv).sum(-1)
    ties = (x == yv).sum(-1)
    rank = below + np.floor(rng.random(below.shape) * (ties + 1)).astype(int)
    return np.bincount(rank.ravel(), minlength=x.shape[-1] + 1)


def brier_score(forecast: xr.DataArray, truth: xr.DataArray, threshold, *, debiased: bool = False) -> xr.DataArray:
    """Brier score of P(x > threshold); ``debiased`` subtracts ``p (1 - p) / (M - 1)``."""
    f = _members_last(forecast)
    m = f.count(MEMBER)
    p = (f > threshold).sum(MEMBER) / m
    o = (truth > threshold).astype(float)
    bs = (p - o) ** 2
    if debiased:
        bs = bs - p * (1 - p) / (m - 1)
    return _time_mean(spatial_mean(bs))


def acc(forecast: xr.DataArray, truth: xr.DataArray, climatology: xr.DataArray) -> xr.DataArray:
    """Latitude-weighted anomaly correlation of the ensemble mean, per init time, averaged."""
    f = forecast.mean(MEMBER) if MEMBER in forecast.dims else forecast
    fa, oa = f - climatology, truth - climatology
    w = latitude_weights(f.latitude.values)
    num = (fa * oa).weighted(w).sum(SPATIAL)
    den = np.sqrt((fa**2).weighted(w).sum(SPATIAL) * (oa**2).weighted(w).sum(SPATIAL))
    return _time_mean(num / den)


def energy_score(forecasts: dict, truths: dict, scales: dict) -> xr.DataArray:
    """Fair energy score across variables (each divided by ``scales[var]``)."""
    names = list(forecasts)
    f = xr.concat([forecasts[v] / scales[v] for v in names], dim="variable")
    y = xr.concat([truths[v] / scales[v] for v in names], dim="variable")
    m = f.sizes[MEMBER]
    skill = np.sqrt(((f - y) ** 2).sum("variable")).mean(MEMBER)
    g = f.rename({MEMBER: "m2"})
    pair = np.sqrt(((f - g) ** 2).sum("variable")).sum([MEMBER, "m2"])
    return _time_mean(spatial_mean(skill - pair / (2 * m * (m - 1))))


# ------------------------------------------------------------------------------ evaluation
def align(forecast: xr.Dataset, truth: xr.Dataset, lead) -> tuple[xr.Dataset, xr.Dataset]:
    """Forecast at one lead and the truth at the matching valid times (inits without truth dropped)."""
    f = forecast.sel(prediction_timedelta=lead)
    valid = f.time.values + lead
    ok = np.isin(valid, truth.time.values)
    f = f.isel(time=np.nonzero(ok)[0])
    t = truth.sel(time=valid[ok]).assign_coords(time=f.time.values)
    return f, t


def _check(forecast: xr.Dataset, truth: xr.Dataset, variables):
    if "prediction_timedelta" not in forecast.dims:
        raise DiffsciError("forecast has no prediction_timedelta dim (WeatherBench 2 forecast layout expected)")
    for name, ds in (("forecast", forecast), ("truth", truth)):
        missing = [v for v in variables if v not in ds]
        if missing:
            raise DiffsciError(f"{name} lacks variable(s) {', '.join(missing)}")
    for c in SPATIAL:
        a, b = forecast[c].values, truth[c].values
        if a.shape != b.shape or not np.allclose(a, b, atol=1e-6):
            raise DiffsciError(f"forecast and truth grids differ in {c} ({a.size} vs {b.size} points)")


def evaluate_forecast(forecast: xr.Dataset, truth: xr.Dataset, *, variables=None, climatology=None, seed: int = 0) -> dict:
    """All metrics per variable and lead (see the module docstring) as a JSON-able dict."""
    from diffsci.weather.data import open_weather

    truth = open_weather(truth, check_nans=False)
    if "latitude" in forecast.dims and forecast.latitude.values[0] > forecast.latitude.values[-1]:
        forecast = forecast.isel(latitude=slice(None, None, -1))
    variables = list(variables or [v for v in forecast.data_vars if v in truth])
    if not variables:
        raise DiffsciError("forecast and truth share no variable")
    _check(forecast, truth, variables)
    leads = forecast.prediction_timedelta.values
    result = {"lead_hours": [], "variables": {v: {k: [] for k in ("crps", "rmse", "spread", "ssr", "mae")} for v in variables},
              "rank_histogram": {v: {} for v in variables}}
    if climatology is not None:
        for v in variables:
            result["variables"][v]["acc"] = []
    any_overlap = False
    for lead in leads:
        f, t = align(forecast, truth, lead)
        if f.sizes["time"] == 0:
            continue
        any_overlap = True
        hours = int(lead / np.timedelta64(1, "h"))
        result["lead_hours"].append(hours)
        for v in variables:
            fv, tv = f[v].load(), t[v].load()
            ens = MEMBER in fv.dims and fv.sizes[MEMBER] > 1
            r = result["variables"][v]
            r["rmse"].append(float(ensemble_mean_rmse(fv, tv)))
            r["mae"].append(float(mae(fv, tv)))
            if ens:
                r["crps"].append(float(crps(fv, tv)))
                r["spread"].append(float(spread(fv)))
                r["ssr"].append(float(spread_skill_ratio(fv, tv)))
                result["rank_histogram"][v][str(hours)] = rank_histogram(fv, tv, seed=seed).tolist()
            else:  # deterministic: CRPS of a one-member ensemble = MAE (labelled in the JSON)
                r["crps"].append(float(mae(fv, tv)))
                r["spread"].append(0.0)
                r["ssr"].append(0.0)
            if climatology is not None:
                clim = climatology[v]
                if "hour" in clim.dims:  # climatology by hour of day of the VALID time
                    hours = xr.DataArray(((t.time.values + lead).astype("datetime64[h]").astype(np.int64) % 24),
                                         dims="time", coords={"time": t.time.values})
                    clim = clim.sel(hour=hours).drop_vars("hour", errors="ignore")
                r["acc"].append(float(acc(fv, tv, clim)))
    if not any_overlap:
        raise DiffsciError("forecast valid times (init + lead) do not overlap the truth's times")
    result["notes"] = {"crps": "fair estimator (per-point valid member count); MAE for deterministic forecasts",
                       "rmse": "ensemble-mean RMSE, sqrt after time averaging", "ssr": "sqrt((M+1)/M) spread / RMSE"}
    return result


def _run(args) -> int:
    for p in (args.forecast, args.truth):
        if not Path(p).exists():
            raise DiffsciError(f"{p}: file not found")
    try:
        fc = xr.open_dataset(args.forecast, engine="netcdf4")
    except Exception as exc:
        raise DiffsciError(f"{args.forecast}: cannot open as netCDF ({exc})") from None
    clim = xr.open_dataset(args.climatology) if args.climatology else None
    res = evaluate_forecast(fc, args.truth, climatology=clim)
    out = Path(args.out)
    with atomic_output(out) as tmp:
        tmp.write_text(json.dumps(res, indent=1))
    first = next(iter(res["variables"]))
    print(f"wrote {out}: {len(res['lead_hours'])} leads; {first} CRPS at +{res['lead_hours'][-1]} h "
          f"{res['variables'][first]['crps'][-1]:.4g}")
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="score a forecast with WeatherBench 2 metrics",
                              description="Fair CRPS, ensemble-mean RMSE, spread, spread/skill, rank histograms.")
    p.add_argument("forecast", help="forecast netCDF (WB2 layout)")
    p.add_argument("--truth", required=True, help="truth netCDF/zarr (ERA5 or WB2 style)")
    p.add_argument("--out", required=True, help="metrics JSON")
    p.add_argument("--climatology", help="climatology netCDF for ACC (dims hour?, latitude, longitude)")
    p.set_defaults(func=_run)

"""Probabilistic forecast metrics with WeatherBench 2's definitions (xarray in, xarray out).

Definitions (Rasp et al. 2024, WeatherBench 2; ``weatherbench2/metrics.py``), each computed per
init time and then averaged over init times:

- Latitude weights: cell-area weights ``w_i = sin(b_{i+1}) - sin(b_i)`` with cell bounds at
  the midpoints between latitudes, normalised to mean 1; the end rows' bounds are +-90 deg on a
  global grid (WB2) and half a spacing beyond the row on a regional one
  (:mod:`diffsci.weather.grid`). A spatial mean is the w-weighted mean over latitude and
  longitude.
- CRPS, fair estimator (default):
  ``(1/M) sum_m |x_m - y| - 1/(2 M (M - 1)) sum_{i,j} |x_i - x_j|``, computed in O(M log M)
  by sorting (``sum_{i,j} |x_i - x_j| = 2 sum_k (2k - M - 1) x_(k)``); the standard
  estimator divides by ``2 M^2`` instead. With missing (NaN) members, M is the number of
  valid members at that point (the fix for WeatherBench 2 issue #302). The fair estimator is
  undefined for M < 2: NaN there, and ``evaluate`` reports CRPS, spread and SSR as null for a
  forecast with fewer than 2 valid members (its MAE is the standard CRPS of one member).
- Ensemble-mean RMSE: ``sqrt(time mean of spatial mean of (mean_m x_m - y)^2)``.
- Spread: ``sqrt(time mean of spatial mean of var_m(x, ddof=1))``; spread/skill ratio
  ``SSR = sqrt((M + 1) / M) * spread / RMSE`` (1 for a calibrated ensemble; the factor corrects
  for the finite ensemble, Fortin et al. 2014, as in WB2). With missing members the factor
  ``(M + 1) / M`` multiplies the variance at each point with that point's valid member count.
- Rank histogram: the rank of the truth among the M members (M + 1 bins), ties broken at
  random (seeded), counts over all points (truth and every member valid) and init times.
  Its flatness, from the counts ``s_k`` (N in all, expected ``e = N / (M + 1)`` per bin):
  Candille & Talagrand (2005)'s ``delta = sum_k (s_k - e)^2 / (N M / (M + 1))`` (0 when flat,
  1 on average for a calibrated ensemble scored on independent points, N when every count is
  in one bin; ``chi-square / M``) and the reliability index of Delle Monache et al. (2006)
  ``RI = sum_k |s_k / N - 1 / (M + 1)|`` (0 when flat, ``2 M / (M + 1)`` at worst; it does
  not grow with N, so it compares runs of different sizes).
- Brier score at a threshold and its debiased (fair) version ``BS - p (1 - p) / (M - 1)``.
- ACC: the latitude-weighted anomaly correlation of the ensemble mean against a climatology.
- Energy score (fair) across variables, each divided by a given scale.

NaN points (in the truth, or with no valid member) are left out of the spatial means, whose
weights are renormalised over the points kept; ``evaluate`` counts and reports them.

Dimension names: ``realization`` (members), ``time`` (init), ``prediction_timedelta``,
``latitude``, ``longitude``; any other dims (``level``) are kept by the functions on
DataArrays. :func:`evaluate_forecast` scores each pressure level as its own field, keyed
``{name}{level}`` (``z500``, ``t850``) beside single-level names (``t2m``), as WB2 does.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from diffsci.core.errors import DiffsciError
from diffsci.core.io import write_json
from diffsci.weather.data import open_climatology, open_weather
from diffsci.weather.grid import cell_area_weights
from diffsci.weather.layouts import short_name

__all__ = [
    "latitude_weights", "spatial_mean", "crps_ensemble", "crps", "valid_members", "ensemble_mean_rmse", "mae",
    "spread", "spread_skill_ratio", "rank_histogram", "rank_histogram_delta", "reliability_index", "brier_score",
    "acc", "energy_score", "align", "field_key",
    "evaluate_forecast", "write_metrics",
]

MEMBER = "realization"
SPATIAL = ("latitude", "longitude")


def latitude_weights(latitude) -> xr.DataArray:
    """Cell-area weights of the rows, normalised to mean 1, from the grid's own cell bounds
    (:func:`diffsci.weather.grid.cell_area_weights`: WB2's weights on a global grid, true cell
    areas on a regional one). Shape (H,), in the given row order."""
    return xr.DataArray(cell_area_weights(latitude), dims=["latitude"], coords={"latitude": np.asarray(latitude)})


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
    out = np.where((m == 0) | np.isnan(y[..., 0]), np.nan, out)  # a NaN truth is not a perfect score
    if fair:
        out = np.where(m < 2, np.nan, out)
    return out


def _members_last(forecast: xr.DataArray):
    if MEMBER not in forecast.dims:
        raise DiffsciError(f"forecast has no {MEMBER!r} dim (an ensemble is needed)")
    return forecast


def valid_members(forecast: xr.DataArray) -> xr.DataArray:
    """Number of valid (non-NaN) members at each point (0 or 1 for a forecast without members)."""
    if MEMBER not in forecast.dims:
        return forecast.notnull().astype(np.int64)
    return forecast.count(MEMBER)


def _member_moments(forecast: xr.DataArray):
    """Per point: valid member count M, mean and ``ddof=1`` variance over the valid members.

    The variance is NaN where M < 2."""
    f = _members_last(forecast)
    m = f.count(MEMBER)
    mean = f.mean(MEMBER, skipna=True)
    var = ((f - mean) ** 2).sum(MEMBER, skipna=True) / (m - 1).where(m >= 2)
    return m, mean, var


def crps(forecast: xr.DataArray, truth: xr.DataArray, *, fair: bool = True) -> xr.DataArray:
    """Time-mean of the spatial mean of the pointwise CRPS (per init time, then averaged).

    Points where the truth is NaN or the fair CRPS is undefined (fewer than 2 valid members)
    are left out of the spatial mean (weights renormalised over the points kept)."""
    f = _members_last(forecast)
    point = xr.apply_ufunc(crps_ensemble, f, truth, input_core_dims=[[MEMBER], []], kwargs={"fair": fair},
                           dask="parallelized", output_dtypes=[np.float64])
    return _time_mean(spatial_mean(point))


def _time_mean(x: xr.DataArray) -> xr.DataArray:
    return x.mean("time") if "time" in x.dims else x


def _ensemble_mean(forecast: xr.DataArray) -> xr.DataArray:
    return forecast.mean(MEMBER, skipna=True) if MEMBER in forecast.dims else forecast


def ensemble_mean_rmse(forecast: xr.DataArray, truth: xr.DataArray) -> xr.DataArray:
    """``sqrt(time mean of spatial mean of (ensemble mean - truth)^2)``; NaN points left out."""
    return np.sqrt(_time_mean(spatial_mean((_ensemble_mean(forecast) - truth) ** 2)))


def mae(forecast: xr.DataArray, truth: xr.DataArray) -> xr.DataArray:
    """Mean absolute error of the ensemble mean (of the forecast for deterministic ones)."""
    return _time_mean(spatial_mean(abs(_ensemble_mean(forecast) - truth)))


def spread(forecast: xr.DataArray) -> xr.DataArray:
    """``sqrt(time mean of spatial mean of var_m(x, ddof=1))`` over the valid members of each
    point (points with fewer than 2 valid members left out); no ensemble-size factor."""
    _, _, var = _member_moments(forecast)
    return np.sqrt(_time_mean(spatial_mean(var)))


def spread_skill_ratio(forecast: xr.DataArray, truth: xr.DataArray) -> xr.DataArray:
    """Spread/skill ratio with the ensemble-size factor ``(M + 1) / M`` applied to the variance
    at each point, M being that point's number of valid members (WB2; Fortin et al. 2014).

    ``SSR = sqrt(<(M+1)/M var_m(x)>) / sqrt(<(mean_m x - y)^2>)`` where ``<.>`` is the time mean
    of the latitude-weighted spatial mean, both over the same points: the truth valid and
    M >= 2. With the same M everywhere this is ``sqrt((M+1)/M) spread / RMSE``; counting
    member slots instead of valid members biases it when a member is missing."""
    m, mean, var = _member_moments(forecast)
    ok = (m >= 2) & truth.notnull()
    corrected = (var * (m + 1) / m).where(ok)
    err2 = ((mean - truth) ** 2).where(ok)
    return np.sqrt(_time_mean(spatial_mean(corrected))) / np.sqrt(_time_mean(spatial_mean(err2)))


def rank_histogram(forecast: xr.DataArray, truth: xr.DataArray, *, seed: int = 0) -> np.ndarray:
    """Counts of the truth's rank among the members (M + 1 bins), ties broken at random.

    Only points where the truth and every member are valid are counted (a rank among fewer
    members would fall in another histogram)."""
    f = _members_last(forecast).transpose(..., MEMBER)
    y = truth.broadcast_like(f.isel({MEMBER: 0}, drop=True)).transpose(*f.dims[:-1])
    x, yv = f.values, y.values
    ok = ~np.isnan(x).any(-1) & ~np.isnan(yv)
    x, yv = x[ok], yv[ok][..., None]
    rng = np.random.default_rng(seed)
    below = (x < yv).sum(-1)
    ties = (x == yv).sum(-1)
    rank = below + np.floor(rng.random(below.shape) * (ties + 1)).astype(int)
    return np.bincount(rank.ravel(), minlength=f.sizes[MEMBER] + 1)


def _rank_counts(counts) -> np.ndarray:
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim != 1 or c.size < 2 or (c < 0).any() or c.sum() <= 0:
        raise DiffsciError(f"counts: a rank histogram needs >= 2 non-negative bins with a positive total, got {c.tolist()}")
    return c


def rank_histogram_delta(counts) -> float:
    """Candille & Talagrand (2005)'s flatness of a rank histogram.

    ``delta = sum_k (s_k - N / (M + 1))^2 / (N M / (M + 1))`` for the counts ``s_k`` of the
    ``M + 1`` bins, ``N = sum_k s_k``: 0 for an exactly flat histogram, 1 in expectation for a
    calibrated ensemble scored on independent points (the denominator is the expected numerator
    under a multinomial draw), N when every count is in one bin. Equal to the chi-square
    statistic against a flat histogram divided by M. Spatially correlated points raise it above 1
    even for a calibrated ensemble, so compare it with a reference ensemble scored on the same
    points. ``counts``: shape (M + 1,)."""
    c = _rank_counts(counts)
    n, bins = c.sum(), c.size
    return float(((c - n / bins) ** 2).sum() / (n * (bins - 1) / bins))


def reliability_index(counts) -> float:
    """Reliability index of a rank histogram (Delle Monache et al. 2006, JGR 111 D05308).

    ``RI = sum_k |s_k / N - 1 / (M + 1)|`` for the counts ``s_k`` of the ``M + 1`` bins,
    ``N = sum_k s_k``: 0 for an exactly flat histogram, ``2 M / (M + 1)`` when every count is in
    one bin. A sum of deviations of frequencies, it does not grow with N. ``counts``: shape (M + 1,)."""
    c = _rank_counts(counts)
    return float(np.abs(c / c.sum() - 1.0 / c.size).sum())


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
LEAD = "prediction_timedelta"
_LEVEL_KEY = re.compile(r"(.+?)_?(\d+(?:\.\d+)?)")


def align(forecast: xr.Dataset, truth: xr.Dataset, lead) -> tuple[xr.Dataset, xr.Dataset]:
    """Forecast at one lead and the truth at the matching valid times (inits without truth dropped)."""
    f = forecast.sel({LEAD: lead})
    valid = f.time.values + lead
    ok = np.isin(valid, truth.time.values)
    f = f.isel(time=np.nonzero(ok)[0])
    t = truth.sel(time=valid[ok]).assign_coords(time=f.time.values)
    return f, t


def field_key(variable: str, level=None) -> str:
    """Metric key of a field: the variable name, with the level in hPa appended for a
    pressure-level field (``z`` at 500 hPa -> ``"z500"``; WB2's Z500/T850 naming)."""
    return variable if level is None else f"{variable}{float(level):g}"


def _fields(forecast: xr.Dataset, variables, fname: str) -> list[tuple[str, str, object]]:
    """``(key, variable, level or None)`` of each field to score, in order.

    ``variables``: names (short, WB2 long or NCEP) selecting all levels of a variable, or keys
    such as ``z500`` selecting one level; default: every forecast variable on the grid."""
    avail = [str(v) for v in forecast.data_vars if set(SPATIAL) <= set(forecast[v].dims)]
    levels = list(forecast["level"].values) if "level" in forecast.dims else []
    shown = ", ".join(f"{float(x):g}" for x in levels)

    def expand(v):
        return [(field_key(v, lev), v, lev) for lev in levels] if "level" in forecast[v].dims else [(v, v, None)]

    if variables is None:
        out = [f for v in avail for f in expand(v)]
    else:
        out = []
        for name in variables:
            m = _LEVEL_KEY.fullmatch(name)
            if short_name(name) in avail:
                out += expand(short_name(name))
            elif m and short_name(m[1]) in avail and "level" in forecast[short_name(m[1])].dims:
                v, lev = short_name(m[1]), float(m[2])
                hit = [x for x in levels if np.isclose(float(x), lev)]
                if not hit:
                    raise DiffsciError(f"{fname}: {v} has no level {lev:g} hPa (levels {shown})")
                out.append((field_key(v, hit[0]), v, hit[0]))
            else:
                keys = [f[0] for v in avail for f in expand(v)]
                raise DiffsciError(f"{fname}: no variable {name!r} to score (the forecast has {', '.join(keys)})")
        out = list({f[0]: f for f in out}.values())  # each field once, first order kept
    if not out:
        raise DiffsciError(f"{fname}: no variable with latitude and longitude dims")
    return out


def _lacking(truth: xr.Dataset, key: str, v: str, lev) -> str | None:
    """Why the truth cannot score the forecast field ``key`` (None: it can)."""
    if v not in truth.data_vars:
        return key
    has_levels = "level" in truth[v].dims
    if lev is None:
        return f"{key} (the truth's {v} has pressure levels, the forecast's has none)" if has_levels else None
    if not has_levels:
        return f"{key} (the truth's {v} has no pressure level)"
    levels = np.asarray(truth["level"].values, dtype=np.float64)
    if np.isclose(levels, float(lev)).any():
        return None
    return f"{key} (the truth's {v} is at {', '.join(f'{x:g}' for x in levels)} hPa)"


def _check_truth_has(truth: xr.Dataset, fields, tname: str) -> None:
    """Every forecast field must be in the truth, at its level: a mismatch is named."""
    missing = [m for m in (_lacking(truth, key, v, lev) for key, v, lev in fields) if m is not None]
    if not missing:
        return
    if not any(v in truth.data_vars for _, v, _ in fields):
        have = sorted(str(v) for v in truth.data_vars)
        raise DiffsciError(f"{tname}: forecast and truth share no variable "
                           f"(forecast: {', '.join(k for k, _, _ in fields)}; truth: {', '.join(have)})")
    others = "; score the others with --variables" if len(missing) < len(fields) else ""
    raise DiffsciError(f"{tname}: the truth lacks {', '.join(missing)}, which the forecast has{others}")


def _match_grid(forecast: xr.Dataset, truth: xr.Dataset, fname: str, tname: str, what: str = "truth") -> xr.Dataset:
    """The truth at the forecast's grid points, matched by coordinate value (both normalised:
    latitude ascending, longitude in [0, 360)); a forecast point the truth lacks is an error."""
    index = {}
    for c in SPATIAL:
        a = np.asarray(forecast[c].values, dtype=np.float64)
        b = np.asarray(truth[c].values, dtype=np.float64)
        if c == "longitude":
            a, b = np.mod(a, 360.0), np.mod(b, 360.0)
        dist = np.abs(a[:, None] - b[None, :])
        if c == "longitude":
            dist = np.minimum(dist, 360.0 - dist)
        idx = dist.argmin(1) if b.size else np.zeros(a.size, dtype=int)
        bad = np.nonzero(~(dist[np.arange(a.size), idx] <= 1e-6))[0] if b.size else np.arange(a.size)
        if bad.size:
            shown = ", ".join(f"{a[i]:g}" for i in bad[:4]) + (" ..." if bad.size > 4 else "")
            raise DiffsciError(f"{fname} vs {tname}: forecast and {what} grids differ in {c} ({a.size} vs {b.size} "
                               f"points; {bad.size} forecast {c}s not in the {what}: {shown})")
        index[c] = idx
    return truth.isel(index).assign_coords({c: forecast[c].values for c in SPATIAL})


def _refuse_duplicates(forecast: xr.Dataset, fname: str) -> None:
    for dim, what in (("time", "init times"), (LEAD, "leads")):
        vals = forecast[dim].values
        u, n = np.unique(vals, return_counts=True)
        if (n > 1).any():
            shown = ", ".join(f"{x} (x{k})" for x, k in zip(u[n > 1][:4], n[n > 1][:4]))
            raise DiffsciError(f"{fname}: duplicate {what}: {shown}")


def _num(x) -> float | None:
    """A metric as a JSON number; NaN/inf -> None (null)."""
    v = float(x)
    return v if np.isfinite(v) else None


def _lead_label(lead) -> int | float:
    h = lead / np.timedelta64(1, "h")
    return int(h) if float(h).is_integer() else float(h)


def _climatology_field(climatology: xr.Dataset, v: str, lev, lead, t: xr.Dataset) -> xr.DataArray:
    """The climatology (from :func:`~diffsci.weather.data.open_climatology`) of one field at the
    valid times of ``t`` (the truth at ``lead``): its level ``lev`` (hPa, or None), at ``t``'s
    grid points, by hour of day and day of year of the VALID time where it has those dims."""
    name = climatology.attrs.get("diffsci_source", "climatology")
    if v not in climatology:
        raise DiffsciError(f"{name}: the climatology lacks variable {v!r}")
    c = climatology[v]
    key = field_key(v, lev)
    if (lev is None) != ("level" not in c.dims):
        has = "has pressure levels" if lev is None else "has no pressure level"
        raise DiffsciError(f"{name}: the climatology's {v} {has}; the forecast's {key} needs "
                           + ("a single-level field" if lev is None else f"the level {float(lev):g} hPa"))
    if lev is not None:
        hit = np.nonzero(np.isclose(c["level"].values.astype(np.float64), float(lev)))[0]
        if not hit.size:
            raise DiffsciError(f"{name}: the climatology has no level {float(lev):g} hPa for {v}")
        c = c.isel(level=int(hit[0]), drop=True)
    c = _match_grid(t, c.to_dataset(name=v), "forecast", name, "climatology")[v]  # by coordinate value
    valid = pd.DatetimeIndex(t.time.values + lead)
    picks = {}
    for dim, want in (("hour", valid.hour), ("dayofyear", valid.dayofyear)):
        if dim in c.dims:
            absent = sorted(set(want.tolist()) - set(np.asarray(c[dim].values).tolist()))
            if absent:
                raise DiffsciError(f"{name}: the climatology has no {dim} {absent[:5]} (valid times at lead "
                                   f"+{_lead_label(lead)} h)")
            picks[dim] = xr.DataArray(np.asarray(want), dims="time", coords={"time": t.time.values})
    return c.sel(picks).drop_vars(list(picks), errors="ignore") if picks else c


class _Warnings:
    """The warnings of one evaluation: each message said once (``warnings.warn``) and kept, in
    order, for the result's ``warnings``."""

    def __init__(self):
        self.said: list[str] = []

    def __call__(self, msg: str) -> None:
        if msg not in self.said:
            self.said.append(msg)
            warnings.warn(msg, stacklevel=3)


def _read_inputs(forecast, truth, climatology, warn: _Warnings):
    """Forecast, truth (one member) and climatology (or None) through the one reader; what it
    warns about (unit conversions, impossible forecast values) goes to ``warn``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # a forecast is scored whatever its values (a diverged model scores badly, it is not refused)
        forecast = open_weather(forecast, forecast=True, check_nans=False, check_values="warn")
        truth = open_weather(truth, check_nans=False)
        climatology = None if climatology is None else open_climatology(climatology)
    for w in caught:
        if w.category is UserWarning:
            warn(str(w.message))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if MEMBER in truth.dims:
        if truth.sizes[MEMBER] != 1:
            raise DiffsciError(f"{truth.attrs['diffsci_source']}: the truth has {truth.sizes[MEMBER]} ensemble "
                               "members; select one")
        truth = truth.isel({MEMBER: 0}, drop=True)
    return forecast, truth, climatology


def _stamp(t) -> str:
    return str(np.datetime_as_string(np.datetime64(t, "ns"), unit="m"))


def _scored_inits(forecast: xr.Dataset, truth: xr.Dataset, warn: _Warnings) -> list[tuple[object, np.ndarray]]:
    """``(lead, init indices)`` of each lead to score. A lead without truth at any of its valid
    times is left out; then the inits without truth at every scored lead are left out of all
    leads, so each lead averages the same inits (when no init has truth at every lead, each lead
    keeps its own). Every such choice is said through ``warn``."""
    fname, tname = forecast.attrs["diffsci_source"], truth.attrs["diffsci_source"]
    inits, leads = forecast["time"].values, forecast[LEAD].values
    has = np.isin(inits[:, None] + leads[None, :], truth["time"].values)  # (I, L)
    if not has.any():
        raise DiffsciError(f"{fname}: forecast valid times (init + lead) do not overlap the truth's times ({tname})")
    scored = has.any(0)
    if not scored.all():
        shown = ", ".join(f"+{_lead_label(x)}" for x in leads[~scored])
        warn(f"{fname}: leads {shown} h have no truth at their valid times in {tname}: not scored")
    common = has[:, scored].all(1)
    if not common.any():
        warn(f"{fname}: no init time has truth at every scored lead in {tname}: each lead is scored over its own "
             "init times (counted in init_times)")
        return [(lead, np.nonzero(has[:, j])[0]) for j, lead in enumerate(leads) if scored[j]]
    if not common.all():
        out = inits[~common]
        shown = ", ".join(_stamp(t) for t in out[:5]) + (f" and {out.size - 5} more" if out.size > 5 else "")
        warn(f"{fname}: {out.size} init time(s) lack truth at some scored lead in {tname} ({shown}): left out, so "
             f"every lead is scored over the same {int(common.sum())} init times")
    return [(lead, np.nonzero(common)[0]) for lead in leads[scored]]


def _field_at(f: xr.Dataset, t: xr.Dataset, v: str, lev) -> tuple[xr.DataArray, xr.DataArray]:
    """Forecast and truth of one field (variable ``v`` at level ``lev`` or None) as float64, loaded."""
    fv, tv = f[v], t[v]
    if lev is not None:  # the truth's level matched by value (500 vs 500.0)
        fv = fv.sel(level=lev, drop=True)
        tv = tv.sel(level=float(lev), method="nearest", tolerance=1e-6, drop=True)
    return fv.load().astype(np.float64), tv.load().astype(np.float64)


def _score_field(fv: xr.DataArray, tv: xr.DataArray, clim, key: str, names: tuple[str, str], seed: int,
                 warn: _Warnings) -> tuple[dict, list | None]:
    """Every metric of one field at one lead (``clim``: its climatology for ACC, or None) and
    the rank-histogram counts (None with fewer than 2 valid members). ``names``: the forecast's
    and the truth's file names, for the warnings."""
    fname, tname = names
    n_nan = int(tv.isnull().sum())
    if n_nan:
        warn(f"{tname}: {key} has NaN truth values: masked and counted in truth_nan_points")
    n_members = int(valid_members(fv).max()) if fv.size else 0  # before the truth mask
    ens = MEMBER in fv.dims and n_members >= 2
    if ens:  # member slots with any value (an all-NaN member would empty every rank-histogram bin)
        slots = np.nonzero(fv.notnull().any([d for d in fv.dims if d != MEMBER]).values)[0]
    fv = fv.where(tv.notnull())  # every metric over the same points
    m = valid_members(fv)
    r = {"truth_nan_points": n_nan, "forecast_nan_points": int(((m == 0) & tv.notnull()).sum()),
         "rmse": _num(ensemble_mean_rmse(fv, tv)), "mae": _num(mae(fv, tv))}
    if r["forecast_nan_points"]:
        warn(f"{fname}: {key} has points where every member is NaN: masked and counted in forecast_nan_points")
    hist = None
    if ens:
        if int(((m == 1) & tv.notnull()).sum()):
            warn(f"{fname}: {key} has points with one valid member: left out of CRPS, spread and SSR")
        r.update(crps=_num(crps(fv, tv)), spread=_num(spread(fv)), ssr=_num(spread_skill_ratio(fv, tv)))
        hist = rank_histogram(fv.isel({MEMBER: slots}), tv, seed=seed).tolist()
    else:
        warn(f"{fname}: {key}: fewer than 2 valid members (M = {n_members}): CRPS, spread and "
             "spread/skill are null (the fair CRPS needs 2 members; see mae)")
        r.update(crps=None, spread=None, ssr=None)
    if clim is not None:
        r["acc"] = _num(acc(fv, tv, clim))
    return r, hist


def evaluate_forecast(forecast, truth, *, variables=None, climatology=None, seed: int = 0) -> dict:
    """All metrics per field and lead (see the module docstring) as a strict-JSON-able dict.

    ``forecast`` and ``truth``: paths or Datasets, each normalised by the same reader
    (:func:`diffsci.weather.data.open_weather`; the forecast keeps its init ``time`` and its
    lead dim ``prediction_timedelta``); ``climatology`` (for ACC; path or Dataset) by the same
    reader too (:func:`diffsci.weather.data.open_climatology`). Fields are keyed ``z500``
    (variable + level in hPa) for pressure-level variables and by name (``t2m``) otherwise.
    Leads without truth are left out, and so are inits without truth at every scored lead, so
    each lead is scored over the same inits (``init_times``: their count per lead); both said in
    ``warnings``. Truth NaNs are masked and counted (``truth_nan_points``); metrics that need 2
    valid members are ``None`` for a forecast with fewer, with a warning in ``warnings``.
    """
    warn = _Warnings()
    forecast, truth, climatology = _read_inputs(forecast, truth, climatology, warn)
    fname, tname = forecast.attrs["diffsci_source"], truth.attrs["diffsci_source"]
    _refuse_duplicates(forecast, fname)
    fields = _fields(forecast, variables, fname)
    _check_truth_has(truth, fields, tname)
    truth = _match_grid(forecast, truth, fname, tname)
    keys = [k for k, _, _ in fields]
    per_field = ("crps", "rmse", "spread", "ssr", "mae", "truth_nan_points", "forecast_nan_points")
    per_field += ("acc",) if climatology is not None else ()
    result = {"lead_hours": [], "init_times": [], "variables": {k: {m: [] for m in per_field} for k in keys},
              "rank_histogram": {k: {} for k in keys}, "members": int(forecast.sizes.get(MEMBER, 1))}
    for lead, inits in _scored_inits(forecast, truth, warn):
        f, t = align(forecast.isel(time=inits), truth, lead)
        lead_h = _lead_label(lead)
        result["lead_hours"].append(lead_h)
        result["init_times"].append(int(f.sizes["time"]))
        for key, v, lev in fields:
            fv, tv = _field_at(f, t, v, lev)
            clim = None if climatology is None else _climatology_field(climatology, v, lev, lead, t)
            scores, hist = _score_field(fv, tv, clim, key, (fname, tname), seed, warn)
            for m in per_field:
                result["variables"][key][m].append(scores[m])
            if hist is not None:
                result["rank_histogram"][key][str(lead_h)] = hist
    result["warnings"] = warn.said
    result["notes"] = {"crps": "fair estimator, per-point valid member count; null with fewer than 2 members",
                       "rmse": "ensemble-mean RMSE, sqrt after time averaging",
                       "ssr": "sqrt(<(M+1)/M var>) / RMSE, M the valid members per point",
                       "masking": "truth NaNs and all-NaN forecast points are left out of every metric",
                       "init_times": "the inits each lead is scored over (the same for every lead when the truth "
                                     "allows)"}
    return result


def write_metrics(result: dict, path) -> Path:
    """Write the metrics as strict JSON (NaN never written: it is null), atomically."""
    return write_json(path, result, indent=1)

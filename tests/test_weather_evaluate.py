"""``diffsci weather evaluate`` on the layouts users have (cfgrib, WB2, CDS), checked against
independent numpy computations: pressure levels keyed ``z500``, the forecast read like the
truth, refused and masked inputs, fewer than 2 members, strict JSON (issue 14)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import weather_fixtures as wf
from diffsci.core.cli import main
from diffsci.weather import metrics as M

FC_DIMS = ("time", "prediction_timedelta", "realization", "level", "latitude", "longitude")


# ------------------------------------------------------------------ independent references
def wb2_weights(lat) -> np.ndarray:
    """WB2 latitude weights in the given row order: bounds at the midpoints and at +-90 deg,
    ``sin(b_{i+1}) - sin(b_i)``, mean 1 (Rasp et al. 2024)."""
    lat = np.asarray(lat, dtype=np.float64)
    order = np.argsort(lat)
    s = np.deg2rad(lat[order])
    b = np.concatenate([[-np.pi / 2], (s[1:] + s[:-1]) / 2, [np.pi / 2]])
    w = np.empty_like(s)
    w[order] = np.diff(np.sin(b))
    return w / w.mean()


def fair_crps(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Fair CRPS by the double sum; members on the last axis of x, M = x.shape[-1]."""
    m = x.shape[-1]
    skill = np.abs(x - y[..., None]).mean(-1)
    pair = np.abs(x[..., :, None] - x[..., None, :]).sum((-1, -2))
    return skill - pair / (2 * m * (m - 1))


def area_mean_over_inits(point: np.ndarray, lat) -> float:
    """point (I, H, W), NaN = masked: per init the w-weighted mean over the valid points, then
    the mean over inits."""
    w = np.broadcast_to(wb2_weights(lat)[:, None], point.shape[1:])
    per = [np.nansum(p * w) / np.sum(w[~np.isnan(p)]) for p in point]
    return float(np.mean(per))


def strict_json(path) -> dict:
    def refuse(c):
        raise AssertionError(f"non-standard JSON constant {c}")

    return json.loads(path.read_text(), parse_constant=refuse)


# ------------------------------------------------------------------ file builders
def forecast_ds(inits, leads_h, members, *, levels=(500, 850), nlat=5, nlon=8, seed=1,
                variables=("z", "t", "t2m")) -> xr.Dataset:
    """The project's forecast layout (``forecast._to_dataset``): init ``time``,
    ``prediction_timedelta``, ``realization``, ``level``, latitude ascending, longitude 0..360."""
    inits = pd.DatetimeIndex(inits)
    lat, lon = wf.grid(nlat, nlon, descending=False)
    per = [wf.fields(inits + pd.Timedelta(hours=h), levels, lat, lon, members=members, seed=seed) for h in leads_h]
    data = {}
    for v in variables:
        a = np.stack([p[v] for p in per], axis=2)  # (M, T, S, [L,] H, W)
        a = np.moveaxis(a, 0, 2)  # (T, S, M, [L,] H, W)
        dims = FC_DIMS if v != "t2m" else FC_DIMS[:3] + FC_DIMS[4:]
        data[v] = (dims, a)
    coords = {"time": inits.values, "prediction_timedelta": pd.to_timedelta(leads_h, unit="h").values,
              "realization": np.arange(members), "level": np.asarray(levels), "latitude": lat, "longitude": lon}
    return xr.Dataset(data, coords=coords)


def truth_ds(times, *, levels=(500, 850), nlat=5, nlon=8, variables=("z", "t", "t2m")) -> xr.Dataset:
    """WeatherBench 2 ERA5 layout (long names, dims time, level, longitude, latitude)."""
    return wf.wb2_dataset(times=times, levels=levels, nlat=nlat, nlon=nlon, variables=variables)


TIMES = pd.date_range("2020-01-01", periods=8, freq="6h")
INITS = TIMES[[1, 3]]


def evaluate(tmp_path, fc, truth, *extra, name="m.json"):
    fpath, tpath = tmp_path / "fc.nc", tmp_path / "truth.nc"
    for ds, p in ((fc, fpath), (truth, tpath)):
        if p.exists():
            p.unlink()
        wf.write(ds, p)
    out = tmp_path / name
    rc = main(["weather", "evaluate", str(fpath), "--truth", str(tpath), "--out", str(out), *extra])
    return rc, out


# ------------------------------------------------------------------ acceptance 1
def test_acceptance_cfgrib_ensemble_members_scored_against_member_0(tmp_path):
    """An ERA5 ensemble as cfgrib writes it; members 1..N as a cfgrib ensemble forecast (init
    ``time``, ``step`` dim, ensemble dim ``number``, ``valid_time(time, step)``) scored against
    member 0 (scalar ``step`` and ``number``, ``valid_time`` over time, latitude 90 -> -90)."""
    n = 4
    times = pd.date_range("2020-01-01", periods=8, freq="6h")
    era5 = wf.cfgrib_era5(times=times, members=n + 1, nlat=7, nlon=12)
    assert era5.z.dims == ("number", "time", "isobaricInhPa", "latitude", "longitude")
    assert era5.latitude.values[0] == 90 and era5.step.ndim == 0 and era5.valid_time.dims == ("time",)
    truth = era5.sel(number=0)
    wf.write(truth, tmp_path / "era5_member0.nc")

    leads = [6, 12]
    inits = times[:6]
    ens = era5.isel(number=slice(1, None)).drop_vars(["step", "valid_time"])
    parts = [ens.sel(time=inits + pd.Timedelta(hours=h)).assign_coords(time=inits.values) for h in leads]
    fc = xr.concat(parts, dim=pd.Index(pd.to_timedelta(leads, unit="h"), name="step"))
    fc = fc.transpose("number", "time", "step", "isobaricInhPa", "latitude", "longitude")
    fc = fc.assign_coords(valid_time=(("time", "step"), inits.values[:, None] + fc.step.values[None, :]))
    ref_layout = wf.cfgrib_era5(times=inits, members=n + 1, steps_hours=leads, nlat=7, nlon=12)
    assert fc.z.dims == ref_layout.z.dims and fc.valid_time.dims == ref_layout.valid_time.dims
    wf.write(fc, tmp_path / "ens_forecast.nc")

    out = tmp_path / "metrics.json"
    rc = main(["weather", "evaluate", str(tmp_path / "ens_forecast.nc"), "--truth", str(tmp_path / "era5_member0.nc"),
               "--out", str(out)])
    assert rc == 0
    res = strict_json(out)
    assert set(res["variables"]) == {"z500", "z850", "t500", "t850"}
    assert res["lead_hours"] == leads and res["members"] == n

    lat = era5.latitude.values  # 90 -> -90: the weights follow the file's own row order
    levels = list(era5.isobaricInhPa.values)
    for key in ("z500", "z850", "t500", "t850"):
        v, lev = key[0], levels.index(float(key[1:]))
        raw = era5[v].values.astype(np.float64)  # (number, time, level, lat, lon)
        for k, h in enumerate(leads):
            valid = [int(np.nonzero(times == t + pd.Timedelta(hours=h))[0][0]) for t in inits]
            x = np.moveaxis(raw[1:, valid, lev], 0, -1)  # (I, H, W, N)
            y = raw[0, valid, lev]  # (I, H, W)
            ref = area_mean_over_inits(fair_crps(x, y), lat)
            assert ref > 0
            assert res["variables"][key]["crps"][k] == pytest.approx(ref, rel=1e-4), (key, h)


# ------------------------------------------------------------------ levels
def test_pressure_level_fields_keyed_name_level(tmp_path):
    """Variables with a level dim are scored per level (z500, t850 beside t2m); the old code
    crashed with a TypeError converting a per-level array to float."""
    fc = forecast_ds(INITS, [6, 12], 3)
    rc, out = evaluate(tmp_path, fc, truth_ds(TIMES))
    assert rc == 0
    res = strict_json(out)
    assert list(res["variables"]) == ["z500", "z850", "t500", "t850", "t2m"]
    assert set(res["rank_histogram"]) == set(res["variables"])
    truth = wf.fields(INITS + pd.Timedelta(hours=12), (500, 850), *wf.grid(5, 8, descending=False))
    lat = wf.grid(5, 8, descending=False)[0]
    for key, v, li in (("t850", "t", 1), ("z500", "z", 0), ("t2m", "t2m", None)):
        x = fc[v].isel(prediction_timedelta=1).values.astype(np.float64)  # (I, M, [L,] H, W)
        y = truth[v][0].astype(np.float64)  # (I, [L,] H, W)
        if li is not None:
            x, y = x[:, :, li], y[:, li]
        ref = area_mean_over_inits(fair_crps(np.moveaxis(x, 1, -1), y), lat)
        assert res["variables"][key]["crps"][1] == pytest.approx(ref, rel=1e-5)
        assert sum(res["rank_histogram"][key]["12"]) == 2 * 5 * 8


# ------------------------------------------------------------------ symmetry
def test_forecast_normalised_like_truth(tmp_path):
    """WB2 long names, longitudes -180..180 and latitude 90 -> -90 in the FORECAST give the
    same scores as the canonical file (old: 'share no variable', 'grids differ')."""
    fc = forecast_ds(INITS, [6], 3, variables=("t2m",))
    rc, out = evaluate(tmp_path, fc, truth_ds(TIMES), name="ref.json")
    assert rc == 0
    ref = strict_json(out)["variables"]
    odd = fc.rename({"t2m": "2m_temperature"})
    odd = odd.assign_coords(longitude=np.where(odd.longitude > 180, odd.longitude - 360, odd.longitude))
    odd = odd.sortby("longitude").isel(latitude=slice(None, None, -1))
    assert odd.longitude.values[0] < 0 and odd.latitude.values[0] == 90
    rc, out = evaluate(tmp_path, odd, truth_ds(TIMES), name="odd.json")
    assert rc == 0
    got = strict_json(out)["variables"]
    assert set(got) == {"t2m"}
    for k in got:
        for m in ("crps", "rmse", "spread", "ssr", "mae"):
            assert got[k][m] == pytest.approx(ref[k][m], rel=1e-6), (k, m)


def test_cds_forecast_layout(tmp_path):
    """The new CDS forecast layout (forecast_reference_time, forecast_period, number,
    pressure_level descending, valid_time over both) scores like the diffsci layout."""
    fc = forecast_ds(INITS, [6, 12], 3, variables=("z", "t"))
    rc, out = evaluate(tmp_path, fc, truth_ds(TIMES), name="ref.json")
    ref = strict_json(out)["variables"]
    cds = fc.rename({"time": "forecast_reference_time", "prediction_timedelta": "forecast_period",
                     "realization": "number", "level": "pressure_level"})
    cds = cds.isel(pressure_level=slice(None, None, -1)).transpose("number", "forecast_reference_time", "forecast_period", ...)
    cds = cds.assign_coords(valid_time=(("forecast_reference_time", "forecast_period"),
                                        cds.forecast_reference_time.values[:, None] + cds.forecast_period.values[None, :]))
    rc, out = evaluate(tmp_path, cds, truth_ds(TIMES), name="cds.json")
    assert rc == 0
    got = strict_json(out)["variables"]
    assert list(got) == list(ref) == ["z500", "z850", "t500", "t850"]
    for k in got:
        assert got[k]["crps"] == pytest.approx(ref[k]["crps"], rel=1e-9)


def test_truth_subset_grid_matched_by_value(tmp_path):
    """A truth on a larger grid (same points and more) is read at the forecast's points."""
    fc = forecast_ds(INITS, [6], 3, variables=("t2m",))
    rc, out = evaluate(tmp_path, fc, truth_ds(TIMES, variables=("t2m",)), name="ref.json")
    ref = strict_json(out)["variables"]["t2m"]["crps"]
    rc, out = evaluate(tmp_path, fc.isel(longitude=slice(0, 5)), truth_ds(TIMES, variables=("t2m",)))
    assert rc == 0
    part = strict_json(out)["variables"]["t2m"]["crps"]
    x = np.moveaxis(fc.t2m.isel(prediction_timedelta=0, longitude=slice(0, 5)).values.astype(np.float64), 1, -1)
    lat, lon = wf.grid(5, 8, descending=False)
    y = wf.fields(INITS + pd.Timedelta(hours=6), [500], lat, lon)["t2m"][0][..., :5].astype(np.float64)
    assert part[0] == pytest.approx(area_mean_over_inits(fair_crps(x, y), lat), rel=1e-5)
    assert part[0] != pytest.approx(ref[0], rel=1e-3)


# ------------------------------------------------------------------ refusals
def test_duplicate_init_times_refused(tmp_path, capsys):
    fc = forecast_ds(TIMES[[1, 1]], [6], 3, variables=("t2m",))
    rc, out = evaluate(tmp_path, fc, truth_ds(TIMES, variables=("t2m",)))
    err = capsys.readouterr().err
    assert rc == 2 and "duplicate init times" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_variable_missing_from_truth_is_named(tmp_path, capsys):
    """Old: t2m silently dropped. Now an error naming it, or --variables to score the others."""
    fc = forecast_ds(INITS, [6], 3)
    truth = truth_ds(TIMES, variables=("z", "t"))
    rc, out = evaluate(tmp_path, fc, truth)
    err = capsys.readouterr().err
    assert rc == 2 and "t2m" in err and "--variables" in err and not out.exists()
    rc, out = evaluate(tmp_path, fc, truth, "--variables", "z500", "temperature")
    assert rc == 0
    assert list(strict_json(out)["variables"]) == ["z500", "t500", "t850"]
    rc, _ = evaluate(tmp_path, fc, truth, "--variables", "z700")
    assert rc == 2 and "no level 700" in capsys.readouterr().err


# ------------------------------------------------------------------ masking and honesty
def test_truth_nans_masked_and_counted(tmp_path, capsys):
    fc = forecast_ds(INITS, [6, 12], 4, variables=("t2m",))
    truth = truth_ds(TIMES, variables=("t2m",))
    a = truth["2m_temperature"].values  # (time, lon, lat)
    valid6 = int(np.nonzero(TIMES == INITS[0] + pd.Timedelta(hours=6))[0][0])
    a[valid6, 2, 1] = np.nan
    a[valid6, 5, 3] = np.nan
    truth["2m_temperature"].values = a
    rc, out = evaluate(tmp_path, fc, truth)
    assert rc == 0
    assert "t2m has NaN truth values" in capsys.readouterr().err
    res = strict_json(out)["variables"]["t2m"]
    assert res["truth_nan_points"] == [2, 0]
    lat, lon = wf.grid(5, 8, descending=False)
    x = np.moveaxis(fc.t2m.isel(prediction_timedelta=0).values.astype(np.float64), 1, -1)
    y = np.swapaxes(a[[valid6, valid6 + 2]], -1, -2).astype(np.float64)  # (I, lat, lon)
    assert np.isnan(y).sum() == 2
    assert res["crps"][0] == pytest.approx(area_mean_over_inits(fair_crps(x, y), lat), rel=1e-5)
    err = (x.mean(-1) - y) ** 2
    assert res["rmse"][0] == pytest.approx(np.sqrt(area_mean_over_inits(err, lat)), rel=1e-5)
    assert sum(res["crps"]) > 0 and sum(strict_json(out)["rank_histogram"]["t2m"]["6"]) == 2 * 5 * 8 - 2


@pytest.mark.parametrize("case", ["one_member", "one_valid_member"])
def test_fewer_than_two_members_gives_null_not_mae(tmp_path, capsys, case):
    """Old: a 1-member forecast reported its MAE as 'crps' and SSR 0.0."""
    fc = forecast_ds(INITS, [6], 1 if case == "one_member" else 2, variables=("t2m",))
    if case == "one_valid_member":
        fc["t2m"][:, :, 1] = np.nan
    rc, out = evaluate(tmp_path, fc, truth_ds(TIMES, variables=("t2m",)))
    assert rc == 0
    assert "fewer than 2 valid members" in capsys.readouterr().err
    res = strict_json(out)
    r = res["variables"]["t2m"]
    assert r["crps"] == [None] and r["ssr"] == [None] and r["spread"] == [None]
    assert r["mae"][0] > 0 and res["warnings"]


def test_ssr_factor_uses_valid_member_count(tmp_path):
    """One all-NaN member of 5: SSR equals that of the 4 valid members (old: factor sqrt(6/5)
    instead of sqrt(5/4), 2% off here)."""
    fc = forecast_ds(INITS, [6, 12], 5, variables=("t2m",))
    rc, out = evaluate(tmp_path, fc.isel(realization=slice(0, 4)), truth_ds(TIMES, variables=("t2m",)), name="four.json")
    four = strict_json(out)["variables"]["t2m"]
    fc["t2m"][:, :, 4] = np.nan
    rc, out = evaluate(tmp_path, fc, truth_ds(TIMES, variables=("t2m",)), name="five.json")
    five = strict_json(out)["variables"]["t2m"]
    assert rc == 0
    for m in ("ssr", "crps", "spread", "rmse"):
        assert five[m] == pytest.approx(four[m], rel=1e-9), m
    hist = strict_json(out)["rank_histogram"]["t2m"]["6"]
    assert len(hist) == 5 and sum(hist) == 2 * 5 * 8  # ranks among the 4 valid members


def test_metrics_json_is_strict(tmp_path):
    """A lead whose valid times have no truth value at all gives null, never NaN, in the JSON."""
    fc = forecast_ds(INITS, [6, 12], 3, variables=("t2m",))
    truth = truth_ds(TIMES, variables=("t2m",))
    for t in INITS + pd.Timedelta(hours=12):
        truth["2m_temperature"].loc[{"time": t}] = np.nan
    rc, out = evaluate(tmp_path, fc, truth)
    assert rc == 0
    assert ": NaN" not in out.read_text()
    r = strict_json(out)["variables"]["t2m"]
    assert r["crps"][1] is None and r["rmse"][1] is None and r["ssr"][1] is None
    assert r["crps"][0] > 0 and r["truth_nan_points"] == [0, 2 * 5 * 8]


# ------------------------------------------------------------------ bug 9
def test_rank_histogram_keys_with_climatology_and_two_variables():
    """Old: with a climatology, ``hours`` was rebound to a DataArray, so from the second
    variable on the rank-histogram keys were '<xarray.DataArray ...>'."""
    fc = forecast_ds(INITS, [6, 12], 4)
    truth = truth_ds(TIMES)
    lat, lon = wf.grid(5, 8, descending=False)
    clim_vals = wf.fields(pd.date_range("2019-01-01", periods=24, freq="h"), (500, 850), lat, lon, seed=5)
    clim = xr.Dataset({"z": (("hour", "level", "latitude", "longitude"), clim_vals["z"][0]),
                       "t": (("hour", "level", "latitude", "longitude"), clim_vals["t"][0]),
                       "t2m": (("hour", "latitude", "longitude"), clim_vals["t2m"][0])},
                      coords={"hour": np.arange(24), "level": [500, 850], "latitude": lat, "longitude": lon})
    res = M.evaluate_forecast(fc, truth, climatology=clim)
    assert len(res["variables"]) == 5
    for key, hist in res["rank_histogram"].items():
        assert list(hist) == ["6", "12"], key
        assert all(sum(h) == 2 * 5 * 8 for h in hist.values())
    # ACC against an independent computation for one field at one lead
    valid = INITS + pd.Timedelta(hours=12)
    x = fc.t.isel(prediction_timedelta=1, level=1).values.astype(np.float64).mean(1)  # (I, H, W)
    y = wf.fields(valid, (500, 850), lat, lon)["t"][0][:, 1].astype(np.float64)
    c = clim_vals["t"][0][valid.hour.values, 1].astype(np.float64)
    w = wb2_weights(lat)[:, None]
    accs = [np.sum(w * fa * oa) / np.sqrt(np.sum(w * fa**2) * np.sum(w * oa**2)) for fa, oa in zip(x - c, y - c)]
    assert res["variables"]["t850"]["acc"][1] == pytest.approx(np.mean(accs), rel=1e-6)
    json.dumps(res, allow_nan=False)


def test_out_equal_to_an_input_refused_before_work(tmp_path, capsys):
    fc = forecast_ds(INITS, [6], 3, variables=("t2m",))
    fpath = wf.write(fc, tmp_path / "fc.nc")
    tpath = wf.write(truth_ds(TIMES, variables=("t2m",)), tmp_path / "truth.nc")
    before = fpath.read_bytes()
    for out in (fpath, tpath):
        assert main(["weather", "evaluate", str(fpath), "--truth", str(tpath), "--out", str(out)]) == 2
        assert "refusing to overwrite" in capsys.readouterr().err
    assert fpath.read_bytes() == before
    assert xr.open_dataset(tpath, engine="netcdf4").sizes["time"] == len(TIMES)


def test_climatology_matched_by_value(tmp_path):
    """A climatology stored 90 -> -90 with WB2 long names gives the same ACC as one stored
    south -> north; one that lacks a forecast row is refused (xarray's label alignment alone
    would drop that row from the ACC without a word)."""
    fc = forecast_ds(INITS, [6], 3, variables=("t2m",))
    lat, lon = wf.grid(5, 8, descending=False)
    vals = wf.fields(pd.date_range("2019-01-01", periods=24, freq="h"), (500,), lat, lon, seed=5)["t2m"][0]
    clim = xr.Dataset({"t2m": (("hour", "latitude", "longitude"), vals)},
                      coords={"hour": np.arange(24), "latitude": lat, "longitude": lon})
    a = M.evaluate_forecast(fc, truth_ds(TIMES, variables=("t2m",)), climatology=clim)
    flipped = clim.isel(latitude=slice(None, None, -1)).rename({"t2m": "2m_temperature"})
    b = M.evaluate_forecast(fc, truth_ds(TIMES, variables=("t2m",)), climatology=flipped)
    assert a["variables"]["t2m"]["acc"] == pytest.approx(b["variables"]["t2m"]["acc"], rel=1e-12)
    from diffsci.core.errors import DiffsciError

    with pytest.raises(DiffsciError, match="climatology grids differ in latitude"):
        M.evaluate_forecast(fc, truth_ds(TIMES, variables=("t2m",)), climatology=clim.isel(latitude=slice(1, None)))


def test_project_forecast_of_a_level_checkpoint_is_scored(tmp_path):
    """Seen: evaluate crashed (TypeError) on the project's own forecast of a checkpoint trained on
    pressure-level data. Train 2 steps on cfgrib ERA5 (z, t at 850/500 hPa, 6-hourly), forecast
    12 h, score it against the same cfgrib file."""
    times = pd.date_range("2020-01-01", periods=8, freq="6h")
    data = wf.write(wf.cfgrib_era5(times=times, nlat=9, nlon=16), tmp_path / "era5_cfgrib.nc")
    cfg = {"model": {"latent": 8, "layers": 1, "refinements": 1}, "train": {"batch_size": 2, "ckpt_every": 2}}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    assert main(["weather", "train", "--data", str(data), "--out", str(tmp_path / "run"), "--config",
                 str(tmp_path / "cfg.json"), "--steps", "2", "--device", "cpu"]) == 0
    fc = tmp_path / "fc.nc"
    assert main(["weather", "forecast", "--checkpoint", str(tmp_path / "run" / "latest.pt"), "--init", str(data),
                 "--init-time", "2020-01-01T12:00", "--lead-hours", "12", "--members", "3", "--steps", "2",
                 "--out", str(fc), "--quiet"]) == 0
    out = tmp_path / "m.json"
    assert main(["weather", "evaluate", str(fc), "--truth", str(data), "--out", str(out)]) == 0
    res = strict_json(out)
    assert list(res["variables"]) == ["z500", "z850", "t500", "t850"] and res["lead_hours"] == [6, 12]
    f = xr.open_dataset(fc)
    raw = xr.open_dataset(data)
    lat = f.latitude.values  # ascending in the forecast
    x = f.t.sel(level=850).isel(prediction_timedelta=1).values.astype(np.float64)  # (1, M, H, W)
    y = raw.t.sel(isobaricInhPa=850, time=pd.Timestamp("2020-01-02T00:00")).values[::-1].astype(np.float64)
    ref = area_mean_over_inits(fair_crps(np.moveaxis(x, 1, -1), y[None]), lat)
    assert res["variables"]["t850"]["crps"][1] == pytest.approx(ref, rel=1e-5)


def test_diverged_forecast_is_scored_not_refused(tmp_path):
    """The forecast's values are measured, not judged: a blown-up forecast (t2m of 1e4 K) gets a
    large CRPS; the truth still goes through the reader's checks."""
    fc = forecast_ds(INITS, [6], 3, variables=("t2m",))
    rc, out = evaluate(tmp_path, fc, truth_ds(TIMES, variables=("t2m",)), name="ok.json")
    ok = strict_json(out)["variables"]["t2m"]["crps"][0]
    fc["t2m"] = fc["t2m"] + 1e4
    rc, out = evaluate(tmp_path, fc, truth_ds(TIMES, variables=("t2m",)))
    assert rc == 0 and strict_json(out)["variables"]["t2m"]["crps"][0] > 100 * ok


def test_rank_histogram_keys_two_single_level_variables_and_climatology():
    """Bug 9 alone (no levels, which crashed the old code earlier): two single-level variables
    and an hourly climatology; every variable's rank histograms keyed by lead."""
    fc = forecast_ds(INITS, [6, 12], 4, variables=("t2m",))
    fc["u10"] = (fc["t2m"] - 288.0).assign_attrs(units="m s**-1")
    truth = truth_ds(TIMES, variables=("t2m",))
    truth["10m_u_component_of_wind"] = (truth["2m_temperature"] - 288.0).assign_attrs(units="m s**-1")
    lat, lon = wf.grid(5, 8, descending=False)
    vals = wf.fields(pd.date_range("2019-01-01", periods=24, freq="h"), (500,), lat, lon, seed=5)["t2m"][0]
    clim = xr.Dataset({"t2m": (("hour", "latitude", "longitude"), vals),
                       "u10": (("hour", "latitude", "longitude"), vals - 288.0)},
                      coords={"hour": np.arange(24), "latitude": lat, "longitude": lon})
    res = M.evaluate_forecast(fc, truth, climatology=clim)
    assert list(res["rank_histogram"]) == ["t2m", "u10"]
    for key, hist in res["rank_histogram"].items():
        assert list(hist) == ["6", "12"], (key, list(hist))


# ------------------------------------------------------------------ issue 27: real inputs
def _acc(x, y, c, lat) -> float:
    """WB2's ACC of the ensemble mean ``x`` (I, H, W) against ``y`` (I, H, W) with climatology
    ``c`` (I, H, W): per init sum(w fa oa) / sqrt(sum(w fa^2) sum(w oa^2)), then the mean."""
    w = wb2_weights(lat)[:, None]
    per = [np.sum(w * fa * oa) / np.sqrt(np.sum(w * fa**2) * np.sum(w * oa**2)) for fa, oa in zip(x - c, y - c)]
    return float(np.mean(per))


def test_climatology_made_from_an_ncep_truth_goes_through_the_truth_reader(tmp_path):
    """Issue 27.1: a climatology made the obvious way from an NCEP truth (its time mean: NCEP names,
    ``lat``/``lon``, the ``pressure`` dim, ``hgt`` in metres) crashed in ``_num`` (TypeError: a
    per-level array); it is now read like the truth (names, levels, units: hgt x g)."""
    ncep = wf.ncep_reanalysis(times=TIMES, levels=(1000, 850, 500), level_name="pressure")
    tpath = wf.write(ncep, tmp_path / "ncep.nc")
    with xr.open_dataset(tpath) as raw:
        raw.mean("time", keep_attrs=True).to_netcdf(tmp_path / "clim.nc")
    fpath = wf.write(forecast_ds(INITS, [6, 12], 3, variables=("z", "t")), tmp_path / "fc.nc")
    out = tmp_path / "m.json"
    assert main(["weather", "evaluate", str(fpath), "--truth", str(tpath), "--climatology", str(tmp_path / "clim.nc"),
                 "--out", str(out)]) == 0
    res = strict_json(out)
    assert list(res["variables"]) == ["z500", "z850", "t500", "t850"]
    # independent: the files read with plain xarray, latitude flipped to the forecast's ascending order
    fc = xr.open_dataset(fpath)
    with xr.open_dataset(tpath) as raw, xr.open_dataset(tmp_path / "clim.nc") as clim:
        for key, v, ncep_name, scale in (("z500", "z", "hgt", wf.G), ("t850", "t", "air", 1.0)):
            lev = float(key[1:])
            valid = INITS + pd.Timedelta(hours=12)
            y = raw[ncep_name].sel(pressure=lev, time=valid).values[:, ::-1].astype(np.float64) * scale
            c = clim[ncep_name].sel(pressure=lev).values[::-1].astype(np.float64) * scale
            x = fc[v].sel(level=lev).isel(prediction_timedelta=1).values.astype(np.float64).mean(1)
            ref = _acc(x, y, c[None], fc.latitude.values)
            assert res["variables"][key]["acc"][1] == pytest.approx(ref, rel=1e-5), key


def test_climatology_in_other_units_converted_like_the_truth(tmp_path, capsys):
    """Issue 27.2: a climatology of geopotential height in metres (units ``m``): the old code took it
    as geopotential (ACC ~1.0 against a truth in m**2 s**-2); it is converted (x g) as the truth
    would be, with the same warning, and the ACC is the one against the converted climatology."""
    lat, lon = wf.grid(5, 8, descending=False)
    z = wf.fields(pd.date_range("2019-01-01", periods=24, freq="h"), (500, 850), lat, lon, seed=5)["z"][0]
    clim = xr.Dataset({"geopotential": (("hour", "level", "latitude", "longitude"), z / wf.G, {"units": "m"})},
                      coords={"hour": np.arange(24), "level": [500, 850], "latitude": lat, "longitude": lon})
    clim.to_netcdf(tmp_path / "clim.nc")
    fc = forecast_ds(INITS, [6, 12], 3, variables=("z",))
    rc, out = evaluate(tmp_path, fc, truth_ds(TIMES, variables=("z",)), "--climatology", str(tmp_path / "clim.nc"))
    assert rc == 0
    assert "clim.nc: z: geopotential height in m multiplied by g" in capsys.readouterr().err
    got = strict_json(out)["variables"]["z500"]["acc"]
    for k, h in enumerate((6, 12)):
        valid = INITS + pd.Timedelta(hours=h)
        x = fc.z.isel(prediction_timedelta=k, level=0).values.astype(np.float64).mean(1)
        y = wf.fields(valid, (500,), lat, lon)["z"][0][:, 0].astype(np.float64)
        c = (z / wf.G)[valid.hour.values, 0].astype(np.float64) * wf.G
        assert got[k] == pytest.approx(_acc(x, y, c, lat), rel=1e-5)
        assert got[k] < 0.9  # the old value was 0.9999...


def test_level_given_as_a_cf_scalar_coordinate(tmp_path, capsys):
    """Issue 27.3: the level as a CF scalar coordinate named ``air_pressure`` (as iris writes it,
    units Pa or hPa) was dropped on both sides, so t at 850 hPa was scored against t at 200 hPa
    without a word. Both are read as levels: a mismatch is refused by name, a match is scored."""
    fc = forecast_ds(INITS, [6], 3, levels=(850,), variables=("t",)).isel(level=0)
    fc = fc.rename(level="air_pressure").assign_coords(
        air_pressure=((), 85000.0, {"units": "Pa", "standard_name": "air_pressure"}))
    assert "level" not in fc.t.dims
    rc, out = evaluate(tmp_path, fc, wf.iris_netcdf(times=TIMES, level_hpa=200))
    err = capsys.readouterr().err
    assert rc == 2 and not out.exists()
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert "t850" in err and "200 hPa" in err
    rc, out = evaluate(tmp_path, fc, wf.iris_netcdf(times=TIMES, level_hpa=850, level_units="hPa"))
    assert rc == 0
    res = strict_json(out)
    assert list(res["variables"]) == ["t850"]
    lat, lon = wf.grid(5, 8, descending=False)
    y = wf.fields(INITS + pd.Timedelta(hours=6), [850], lat, lon)["t"][0][:, 0].astype(np.float64)
    x = np.moveaxis(fc.t.isel(prediction_timedelta=0).values.astype(np.float64), 1, -1)
    assert res["variables"]["t850"]["crps"][0] == pytest.approx(area_mean_over_inits(fair_crps(x, y), lat), rel=1e-5)


def test_forecast_with_impossible_values_is_scored_with_a_warning(tmp_path, capsys):
    """Issue 27.4: t in degC labelled K scored CRPS ~273 K without a word. It is still scored (a
    forecast is measured, not refused) but a warning names the variable and its range, against
    the bounds the truth is refused by."""
    fc = forecast_ds(INITS, [6], 3, variables=("t",))
    fc["t"] = (fc["t"] - 273.15).assign_attrs(units="K")
    rc, out = evaluate(tmp_path, fc, truth_ds(TIMES, variables=("t",)))
    assert rc == 0 and strict_json(out)["variables"]["t500"]["crps"][0] > 200
    lines = [x for x in capsys.readouterr().err.splitlines() if "physically possible" in x]
    assert len(lines) == 1 and lines[0].startswith("warning: ") and "fc.nc: t ranges" in lines[0]
    lo, hi = float(fc.t.min()), float(fc.t.max())
    assert f"{lo:.6g}..{hi:.6g} K" in lines[0] and "100..400 K" in lines[0]
    assert "physically possible" in " ".join(strict_json(out)["warnings"])
    rc, out = evaluate(tmp_path, forecast_ds(INITS, [6], 3, variables=("t",)), truth_ds(TIMES, variables=("t",)))
    assert rc == 0 and "physically possible" not in capsys.readouterr().err


def test_leads_and_inits_without_truth_are_named_and_every_lead_has_the_same_inits(tmp_path, capsys):
    """Issue 27.5: a 6-hourly forecast against a 12-hourly truth lost leads +6/+18 without a word,
    and an init whose long leads fall after the truth's end was scored at the short leads only,
    so the leads averaged different init sets. Now the dropped leads and inits are named and
    each lead is scored over the same inits (counted per lead in ``init_times``)."""
    truth_times = pd.date_range("2020-01-01", periods=5, freq="12h")  # 00 h .. +48 h
    inits = pd.DatetimeIndex(["2020-01-01T00", "2020-01-01T03", "2020-01-01T12", "2020-01-02T00", "2020-01-02T12"])
    fc = forecast_ds(inits, [6, 12, 18, 24], 3, variables=("t2m",))
    rc, out = evaluate(tmp_path, fc, truth_ds(truth_times, variables=("t2m",)))
    assert rc == 0
    err = capsys.readouterr().err
    res = strict_json(out)
    assert res["lead_hours"] == [12, 24] and res["init_times"] == [3, 3]
    assert "+6, +18 h" in err and "2020-01-01T03:00" in err and "2020-01-02T12:00" in err
    lat, lon = wf.grid(5, 8, descending=False)
    common = inits[[0, 2, 3]]
    for k, h in enumerate((12, 24)):
        x = np.moveaxis(fc.t2m.sel(time=common).isel(prediction_timedelta=2 * k + 1).values.astype(np.float64), 1, -1)
        y = wf.fields(common + pd.Timedelta(hours=h), [500], lat, lon)["t2m"][0].astype(np.float64)
        ref = area_mean_over_inits(fair_crps(x, y), lat)
        assert res["variables"]["t2m"]["crps"][k] == pytest.approx(ref, rel=1e-5), h


def test_cfgrib_one_time_files_evaluated(tmp_path):
    """Issue 27.6: cfgrib squeezes a dim of length 1, so one analysis time, or one forecast run
    with one step, has scalar ``time``, ``step`` and ``valid_time``; both were refused ("no time
    dimension"). A one-step ensemble run scored against a one-time analysis."""
    t0 = pd.Timestamp("2020-01-01T06")
    fc = wf.cfgrib_era5(times=[t0], members=3, steps_hours=[6]).isel(time=0, step=0)
    truth = wf.cfgrib_era5(times=[t0 + pd.Timedelta(hours=6)]).isel(time=0)
    assert fc.time.ndim == fc.step.ndim == fc.valid_time.ndim == truth.time.ndim == truth.valid_time.ndim == 0
    rc, out = evaluate(tmp_path, fc, truth)
    assert rc == 0
    res = strict_json(out)
    assert res["lead_hours"] == [6] and res["members"] == 3
    z = fc.z.sel(isobaricInhPa=500).values[:, ::-1].astype(np.float64)  # (M, H, W), latitude ascending
    y = truth.z.sel(isobaricInhPa=500).values[::-1].astype(np.float64)
    lat = wf.grid(5, 8, descending=False)[0]
    ref = area_mean_over_inits(fair_crps(np.moveaxis(z, 0, -1)[None], y[None]), lat)
    assert res["variables"]["z500"]["crps"][0] == pytest.approx(ref, rel=1e-5)


@pytest.mark.parametrize("layout", ["cfgrib", "cds"])
def test_leads_stored_as_numbers_of_hours(tmp_path, layout):
    """Issue 27.7: leads as numbers with ``units: hours`` (cfgrib's own netCDF writes ``step`` so;
    the new CDS ``forecast_period`` is int64 hours) were refused; they score as timedeltas do."""
    fc = forecast_ds(INITS, [6, 12], 3, variables=("t2m",))
    rc, out = evaluate(tmp_path, fc, truth_ds(TIMES, variables=("t2m",)), name="ref.json")
    ref = strict_json(out)["variables"]["t2m"]
    name, dtype = ("step", np.float64) if layout == "cfgrib" else ("forecast_period", np.int64)
    num = fc.rename(prediction_timedelta=name, realization="number")
    num = num.assign_coords({name: (name, np.array([6, 12], dtype), {"units": "hours", "standard_name": "forecast_period"})})
    if layout == "cds":
        num = num.rename(time="forecast_reference_time")
    rc, out = evaluate(tmp_path, num, truth_ds(TIMES, variables=("t2m",)), name="num.json")
    assert rc == 0
    got = strict_json(out)
    assert got["lead_hours"] == [6, 12]
    assert got["variables"]["t2m"]["crps"] == pytest.approx(ref["crps"], rel=1e-12)

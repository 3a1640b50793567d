"""WeatherBench 2 metrics against independent computations."""

import json

import numpy as np
import pytest
import xarray as xr
from scipy import integrate, stats

from diffsci.core.cli import main
from diffsci.core.errors import DiffsciError
from diffsci.weather import metrics as M


def _brute_crps(x, y, fair=True):
    m = len(x)
    skill = np.mean(np.abs(x - y))
    pair = np.abs(x[:, None] - x[None, :]).sum()
    return skill - pair / (2 * m * (m - 1) if fair else 2 * m * m)


def test_fair_crps_equals_double_sum_and_scoringrules():
    import scoringrules as sr

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 11))
    y = rng.normal(size=200)
    ours = M.crps_ensemble(x, y)
    brute = np.array([_brute_crps(x[i], y[i]) for i in range(200)])
    assert np.abs(ours - brute).max() < 1e-10
    assert np.abs(ours - np.asarray(sr.crps_ensemble(y, x, estimator="fair"))).max() < 1e-10


def test_standard_crps_equals_cdf_integral():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=7), 0.3
    ours = M.crps_ensemble(x[None], np.array([y]), fair=False)[0]
    f = lambda z: (np.mean(x <= z) - float(z >= y)) ** 2  # noqa: E731
    pts = np.sort(np.append(x, y))
    val = sum(integrate.quad(f, a, b)[0] for a, b in zip(pts[:-1], pts[1:]))
    assert abs(ours - val) < 1e-8
    assert abs(ours - _brute_crps(x, y, fair=False)) < 1e-12


def test_missing_members_use_valid_count():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(50, 10))
    y = rng.normal(size=50)
    x_nan = x.copy()
    x_nan[::3, 7:] = np.nan  # 3 members missing at every third point
    ours = M.crps_ensemble(x_nan, y)
    ref = np.array([_brute_crps(row[~np.isnan(row)], yy) for row, yy in zip(x_nan, y)])
    assert np.abs(ours - ref).max() < 1e-10
    assert not np.allclose(ours[::3], M.crps_ensemble(x, y)[::3])


@pytest.mark.parametrize("nlat,poles", [(32, False), (721, True)])
def test_latitude_weights(nlat, poles):
    lat = np.linspace(-90, 90, nlat) if poles else np.linspace(-90 + 90 / nlat, 90 - 90 / nlat, nlat)
    w = M.latitude_weights(lat).values
    assert abs(w.mean() - 1) < 1e-12
    b = np.deg2rad(np.concatenate([[-90], (lat[1:] + lat[:-1]) / 2, [90]]))
    ref = np.diff(np.sin(b))
    assert np.allclose(w, ref / ref.mean())
    assert np.allclose(M.latitude_weights(lat[::-1]).values, w[::-1])


def _ens(rng, n_time=40, m=10, shape=(8, 16), calibrated=True):
    lat = np.linspace(-80, 80, shape[0])
    lon = np.linspace(0, 350, shape[1])
    centre = rng.normal(size=(n_time, 1) + shape)
    truth = centre[:, 0] + rng.normal(size=(n_time,) + shape)
    members = centre + rng.normal(size=(n_time, m) + shape) * (1.0 if calibrated else 0.3)
    coords = {"time": np.arange(n_time), "latitude": lat, "longitude": lon}
    f = xr.DataArray(members, dims=("time", "realization", "latitude", "longitude"), coords=coords)
    t = xr.DataArray(truth, dims=("time", "latitude", "longitude"), coords=coords)
    return f, t


def test_spread_skill_of_calibrated_ensemble_is_one():
    f, t = _ens(np.random.default_rng(3), n_time=200)
    assert abs(float(M.spread_skill_ratio(f, t)) - 1) < 0.03
    f2, t2 = _ens(np.random.default_rng(4), n_time=50, calibrated=False)
    assert float(M.spread_skill_ratio(f2, t2)) < 0.6


def test_rank_histograms():
    f, t = _ens(np.random.default_rng(5), n_time=30)
    h = M.rank_histogram(f, t)
    assert len(h) == 11 and stats.chisquare(h).pvalue > 0.01
    persistence = f * 0 + f.isel(realization=0) + 0.5  # all members equal and biased
    h2 = M.rank_histogram(persistence, t)
    assert stats.chisquare(h2).pvalue < 1e-6


def test_brier_and_energy_scores():
    f, t = _ens(np.random.default_rng(6), n_time=20)
    bs = float(M.brier_score(f, t, 0.0))
    bsd = float(M.brier_score(f, t, 0.0, debiased=True))
    assert 0 < bsd < bs < 0.5
    es = float(M.energy_score({"a": f, "b": 2 * f}, {"a": t, "b": 2 * t}, {"a": 1.0, "b": 2.0}))
    # for one variable the energy score is the CRPS
    es1 = float(M.energy_score({"a": f}, {"a": t}, {"a": 1.0}))
    assert abs(es1 - float(M.crps(f, t))) < 1e-10 and es > es1


def _files(tmp_path, shift_hours=0, drop=None):
    rng = np.random.default_rng(7)
    f, t = _ens(rng, n_time=6, m=5)
    times = np.datetime64("2000-01-01T00:00") + np.arange(30) * np.timedelta64(1, "h")
    truth = xr.Dataset({"z": (("time", "latitude", "longitude"), rng.normal(size=(30, 8, 16)))},
                       coords={"time": times, "latitude": f.latitude.values, "longitude": f.longitude.values})
    fc_vals = rng.normal(size=(2, 3, 5, 8, 16))
    fc = xr.Dataset({"z": (("time", "prediction_timedelta", "realization", "latitude", "longitude"), fc_vals)},
                    coords={"time": times[[2, 5]] + np.timedelta64(shift_hours, "h"),
                            "prediction_timedelta": (np.arange(1, 4) * np.timedelta64(1, "h")).astype("timedelta64[ns]"),
                            "realization": np.arange(5), "latitude": f.latitude.values, "longitude": f.longitude.values})
    if drop:
        fc = fc.rename({"z": "u"})
    fc.to_netcdf(tmp_path / "fc.nc", engine="netcdf4")
    truth.to_netcdf(tmp_path / "truth.nc", engine="netcdf4")
    return fc, truth


def test_evaluate_cli_matches_library(tmp_path):
    fc, truth = _files(tmp_path)
    assert main(["weather", "evaluate", str(tmp_path / "fc.nc"), "--truth", str(tmp_path / "truth.nc"),
                 "--out", str(tmp_path / "m.json")]) == 0
    res = json.loads((tmp_path / "m.json").read_text())
    assert res["lead_hours"] == [1, 2, 3]
    f, t = M.align(fc, truth, np.timedelta64(2, "h"))
    assert abs(res["variables"]["z"]["crps"][1] - float(M.crps(f.z, t.z))) < 1e-6  # truth read as float32
    assert sum(res["rank_histogram"]["z"]["2"]) == 2 * 8 * 16


def test_evaluate_bad_input(tmp_path, capsys):
    _files(tmp_path, shift_hours=1000)
    assert main(["weather", "evaluate", str(tmp_path / "fc.nc"), "--truth", str(tmp_path / "truth.nc"), "--out", str(tmp_path / "m.json")]) == 2
    assert "do not overlap" in capsys.readouterr().err
    _files(tmp_path, drop=True)
    assert main(["weather", "evaluate", str(tmp_path / "fc.nc"), "--truth", str(tmp_path / "truth.nc"), "--out", str(tmp_path / "m.json")]) == 2
    assert "share no variable" in capsys.readouterr().err
    fc, truth = _files(tmp_path)
    truth.isel(longitude=slice(0, 8)).to_netcdf(tmp_path / "t2.nc", engine="netcdf4")
    assert main(["weather", "evaluate", str(tmp_path / "fc.nc"), "--truth", str(tmp_path / "t2.nc"), "--out", str(tmp_path / "m.json")]) == 2
    assert "grids differ" in capsys.readouterr().err
    assert not (tmp_path / "m.json").exists()


def test_nan_truth_is_not_a_perfect_score():
    """Old: with a NaN truth the skill term summed to 0 (nansum), so the point scored
    -pair/denom (a negative CRPS) instead of being left out."""
    rng = np.random.default_rng(8)
    x = rng.normal(size=(6, 5))
    y = rng.normal(size=6)
    y[2] = np.nan
    c = M.crps_ensemble(x, y)
    assert np.isnan(c[2]) and np.isfinite(np.delete(c, 2)).all()
    f, t = _ens(np.random.default_rng(9), n_time=4, m=5)
    t_nan = t.copy()
    t_nan[0, 3, 4] = np.nan
    full = M.crps(f, t_nan)  # the NaN point left out of its init's spatial mean
    w = M.latitude_weights(f.latitude.values).values[:, None] * np.ones(f.shape[-1])
    pt = np.stack([np.array([[_brute_crps(f.values[i, :, a, b], t_nan.values[i, a, b]) for b in range(16)]
                             for a in range(8)]) for i in range(4)])
    ref = np.mean([np.nansum(p * w) / w[~np.isnan(p)].sum() for p in pt])
    assert abs(float(full) - ref) < 1e-10


def test_spread_skill_factor_counts_valid_members():
    """Old: the factor sqrt((M+1)/M) counted member slots, so one all-NaN member of 10 biased
    SSR by 0.5%. Now the per-point valid count: the same SSR as without that member."""
    f, t = _ens(np.random.default_rng(10), n_time=30)
    ref = float(M.spread_skill_ratio(f.isel(realization=slice(0, 9)), t))
    f_nan = f.copy()
    f_nan[:, 9] = np.nan
    assert abs(float(M.spread_skill_ratio(f_nan, t)) - ref) < 1e-12
    # members missing at some points only: factor and variance per point, against a loop
    f_part = f.copy()
    f_part[::2, 7:, :4] = np.nan
    x, y = f_part.values, t.values
    m = (~np.isnan(x)).sum(1)
    var = np.nanvar(x, axis=1, ddof=1) * (m + 1) / m
    err = (np.nanmean(x, axis=1) - y) ** 2
    w = M.latitude_weights(f.latitude.values).values[:, None]
    num = np.mean([(v * w).mean() / w.mean() for v in var])
    den = np.mean([(e * w).mean() / w.mean() for e in err])
    assert abs(float(M.spread_skill_ratio(f_part, t)) - np.sqrt(num / den)) < 1e-12


def test_rank_histogram_leaves_out_nan_points():
    """Old: a NaN truth compared below nothing and landed in bin 0."""
    f, t = _ens(np.random.default_rng(11), n_time=5, m=4)
    t_nan = t.copy()
    t_nan[:, :2] = np.nan
    f_nan = f.copy()
    f_nan[0, 1, 5, 5] = np.nan
    h = M.rank_histogram(f_nan, t_nan)
    assert h.sum() == 5 * 6 * 16 - 1
    assert np.array_equal(h, M.rank_histogram(f_nan.isel(latitude=slice(2, None)), t.isel(latitude=slice(2, None))))


def test_latitude_weights_on_a_regional_grid_are_cell_areas():
    """Old: global bounds (-90 deg below the southern row), so on 20..90N at 1 deg the 20N row
    got 68% of the weight. Now each row's own cell (half a spacing beyond the end rows)."""
    lat = np.arange(20.0, 90.5, 1.0)
    w = M.latitude_weights(lat).values
    b = np.deg2rad(np.concatenate([[19.5], (lat[1:] + lat[:-1]) / 2, [90.0]]))
    ref = np.diff(np.sin(b))
    assert np.allclose(w, ref / ref.mean(), rtol=1e-12)
    assert w[0] / w.sum() < 0.03


def test_rank_histogram_flatness_analytic_cases():
    """delta and RI: 0 when exactly flat; a U-shape is worse; a hand-computed example; every count
    in one bin gives delta = N and RI = 2M/(M+1); delta is the chi-square statistic / M."""
    flat = [5, 5, 5, 5, 5]
    assert M.rank_histogram_delta(flat) == 0 and M.reliability_index(flat) == 0
    u = [9, 3, 1, 3, 9]
    assert M.rank_histogram_delta(u) > 0.5 and M.reliability_index(u) > 0.3
    # by hand: N = 8, M = 3, expected 2 per bin; deviations (1, -1, -1, 1)
    assert M.rank_histogram_delta([3, 1, 1, 3]) == pytest.approx(4 / 6)  # sum dev^2 = 4 over N M/(M+1) = 6
    assert M.reliability_index([3, 1, 1, 3]) == pytest.approx(0.5)  # 4 x |3/8 - 1/4|
    assert M.rank_histogram_delta([0, 0, 12, 0]) == pytest.approx(12)
    assert M.reliability_index([0, 0, 12, 0]) == pytest.approx(2 * 3 / 4)
    rng = np.random.default_rng(0)
    h = rng.integers(0, 50, size=9)
    assert M.rank_histogram_delta(h) == pytest.approx(stats.chisquare(h).statistic / 8, rel=1e-12)
    with pytest.raises(DiffsciError, match="counts"):
        M.reliability_index([0, 0, 0])


def test_rank_histogram_delta_of_a_calibrated_ensemble_is_one_on_average():
    """Ranks of a truth drawn from the ensemble's own distribution, at independent points, are
    uniform: the multinomial expectation of delta is 1 (the denominator's definition)."""
    rng = np.random.default_rng(1)
    deltas = [M.rank_histogram_delta(np.bincount(rng.integers(0, 9, size=400), minlength=9)) for _ in range(2000)]
    assert np.mean(deltas) == pytest.approx(1.0, abs=0.05)

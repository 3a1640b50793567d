"""Weather baselines and ``diffsci bench weather``: layouts and values on tiny generated data,
perfect-model calibration (flat rank histogram) vs persistence (not flat), the CLI end to end."""

import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy import stats

from diffsci.benchmarks import baselines_weather as baselines
from diffsci.benchmarks import weather_bench
from diffsci.core.cli import main
from diffsci.weather import metrics
from diffsci.weather.data import open_weather
from diffsci.weather.generator import GeneratorOutput, generate

VARS = ["z", "u", "v", "vo"]
DIMS = ("time", "prediction_timedelta", "realization", "latitude", "longitude")


def _hour(t) -> int:
    return int(pd.Timestamp(t).hour)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("wb")
    generate(grid=(16, 32), hours=60, trajectories=1, seed=3, spinup_hours=24, progress=False).to_netcdf(
        d / "truth.nc", engine="netcdf4")
    train = generate(grid=(16, 32), hours=40, trajectories=2, seed=4, spinup_hours=24, progress=False)
    raw = xr.open_dataset(d / "truth.nc", engine="netcdf4")
    return raw, open_weather(d / "truth.nc").load(), open_weather(train).load()


def _layout_ok(f, truth, n_init, lead, members):
    for v in VARS:
        assert f[v].dims == DIMS
    assert f.sizes == {"time": n_init, "prediction_timedelta": lead, "realization": members,
                       "latitude": truth.sizes["latitude"], "longitude": truth.sizes["longitude"]}
    assert (f.prediction_timedelta.values == np.arange(1, lead + 1) * np.timedelta64(1, "h")).all()
    assert np.array_equal(f.latitude.values, truth.latitude.values)
    assert np.isfinite(f.z.values).all()


def test_persistence_repeats_the_init_state(data):
    _, truth, _ = data
    inits = truth.time.values[[3, 10]]
    f = weather_bench.persistence(truth, inits, 4, VARS)
    _layout_ok(f, truth, 2, 4, 1)
    for i in range(2):
        for k in range(4):
            for v in VARS:
                assert np.array_equal(f[v].isel(time=i, prediction_timedelta=k, realization=0).values,
                                      truth[v].sel(time=inits[i]).values)


def test_climatology_is_the_mean_by_valid_hour(data):
    _, truth, train = data
    inits = truth.time.values[[5, 22]]
    clim = baselines.hourly_climatology(train, VARS)
    f = baselines.climatology(clim, truth, inits, 3, VARS)
    _layout_ok(f, truth, 2, 3, 1)
    for i in range(2):
        for k in range(3):
            valid_hour = _hour(inits[i] + np.timedelta64(k + 1, "h"))
            # independent: a plain loop over the training states of that hour
            sel = [train.u.values[j] for j in range(train.sizes["time"]) if _hour(train.time.values[j]) == valid_hour]
            assert np.allclose(f.u.isel(time=i, prediction_timedelta=k, realization=0).values, np.mean(sel, 0),
                               rtol=1e-5, atol=1e-5)


def test_climatology_needs_every_hour(data):
    from diffsci.core.errors import DiffsciError

    _, _, train = data
    with pytest.raises(DiffsciError, match="no state at hours"):
        baselines.hourly_climatology(train.isel(time=slice(0, 10)), VARS)


def test_prob_climatology_members_are_training_stretches_at_the_same_hour(data):
    _, truth, train = data
    inits = truth.time.values[[5, 13]]
    f = baselines.prob_climatology(train, truth, inits, 4, VARS, members=6, seed=2)
    _layout_ok(f, truth, 2, 4, 6)
    z = train.z.values
    traj = train.trajectory.values
    for i in range(2):
        for m in range(6):
            first = f.z.isel(time=i, prediction_timedelta=0, realization=m).values
            hits = [j for j in range(len(z)) if np.array_equal(z[j], first)]
            assert len(hits) == 1
            j = hits[0]
            assert _hour(train.time.values[j]) == _hour(inits[i] + np.timedelta64(1, "h"))
            # the following leads continue the same training trajectory
            for k in range(1, 4):
                assert traj[j + k] == traj[j]
                assert np.array_equal(f.z.isel(time=i, prediction_timedelta=k, realization=m).values, z[j + k])
    # reproducible from the seed
    assert f.identical(baselines.prob_climatology(train, truth, inits, 4, VARS, members=6, seed=2))


def test_perfect_model_layout_and_start(data):
    raw, truth, _ = data
    inits = truth.time.values[[4, 9]]
    f = baselines.perfect_model(raw, inits, 3, VARS, members=2, seed=1)
    _layout_ok(f, truth, 2, 3, 2)
    # the first hour is close to the truth (the same state, one hour of different forcing), members differ
    t1 = truth.z.sel(time=inits + np.timedelta64(1, "h")).values  # (I, H, W)
    err1 = float(np.abs(f.z.isel(prediction_timedelta=0).transpose("realization", ...).values - t1).mean())
    pers = float(np.abs(truth.z.sel(time=inits).values - t1).mean())
    assert err1 < 0.5 * pers
    assert not np.array_equal(f.z.isel(realization=0).values, f.z.isel(realization=1).values)


def test_perfect_model_rank_histogram_is_flat_and_persistence_is_not(data):
    """The generator's own ensemble, restarted from the true state, against the truth (WB2 metrics issue)."""
    raw, truth, _ = data
    inits = truth.time.values[[4, 14, 24]]
    f = baselines.perfect_model(raw, inits, 12, VARS, members=8, seed=1)
    fc = f.sel(prediction_timedelta=np.timedelta64(12, "h"))
    t = truth.sel(time=fc.time.values + np.timedelta64(12, "h")).assign_coords(time=fc.time.values)
    # neighbouring grid points are correlated: test on a thinned sample of points
    thin = {"latitude": slice(None, None, 4), "longitude": slice(None, None, 4)}
    h = metrics.rank_histogram(fc.z.isel(thin), t.z.isel(thin))
    assert h.sum() == 3 * 4 * 8
    assert stats.chisquare(h).pvalue > 0.01, h
    p = weather_bench.persistence(truth, inits, 12, VARS).sel(prediction_timedelta=np.timedelta64(12, "h"))
    pe = xr.concat([p.z.isel(realization=0)] * 8, dim="realization")
    hp = metrics.rank_histogram(pe.isel(thin), t.z.isel(thin))
    assert stats.chisquare(hp).pvalue < 0.01, hp


def test_summary_ratios_and_beats():
    def res(crps):
        return {"lead_hours": [1, 3, 6], "variables": {"z": {"crps": crps}}}

    results = {"perfect_model": res([1.0, 2.0, 4.0]), "diffsci": res([2.0, 3.0, 5.0]),
               "persistence": res([1.5, 3.5, 6.0]), "climatology": res([9.0, 2.5, 9.0])}
    s = weather_bench.summarize(results, ["z"])["z"]
    assert s["crps_ratio_to_perfect"]["diffsci"] == {"1": 2.0, "3": 1.5, "6": 1.25}
    assert s["diffsci_beats"]["persistence"] == {"all_leads_ge_3h": True, "leads_not_beaten": []}  # lead 1 ignored
    assert s["diffsci_beats"]["climatology"] == {"all_leads_ge_3h": False, "leads_not_beaten": [3]}
    assert "deterministic" not in s["diffsci_beats"]
    assert weather_bench.MIN_LEAD_HOURS == 3  # the one cut-off, shared with diffsci bench merge
    s1 = weather_bench.summarize(results, ["z"], min_lead=1)["z"]
    assert s1["diffsci_beats"]["persistence"] == {"all_leads_ge_1h": False, "leads_not_beaten": [1]}


@pytest.fixture(scope="module")
def bench_files(tmp_path_factory):
    """Held-out and climatology files on the shipped checkpoint's grid (32x64), kept short."""
    d = tmp_path_factory.mktemp("wbcli")
    generate(grid=(32, 64), hours=12, trajectories=1, seed=12345, spinup_hours=24, progress=False).to_netcdf(
        d / "heldout.nc", engine="netcdf4")
    generate(grid=(32, 64), hours=30, trajectories=1, seed=0, spinup_hours=24,
             output=GeneratorOutput(store_state=False), progress=False).to_netcdf(d / "train.nc", engine="netcdf4")
    return d


def test_cli_end_to_end(bench_files, capsys):
    out = bench_files / "out"
    rc = main(["bench", "weather", "--out", str(out), "--data", str(bench_files / "heldout.nc"),
               "--train-data", str(bench_files / "train.nc"), "--inits", "1", "--members", "4",
               "--lead-hours", "6", "--steps", "2"])
    assert rc == 0
    payload = json.loads((out / "results.json").read_text())
    assert payload["command"] == (f"diffsci bench weather --out {out} --members 4 --inits 1 --lead-hours 6 "
                                  f"--data {bench_files / 'heldout.nc'} --train-data {bench_files / 'train.nc'} --steps 2")
    systems = payload["systems"]
    assert set(systems) == {"persistence", "climatology", "prob_climatology", "deterministic", "perfect_model", "diffsci"}
    for name, r in systems.items():
        assert r["lead_hours"] == [1, 2, 3, 4, 5, 6]
        assert all(np.isfinite(weather_bench.crps_or_mae(r["variables"]["z"])))
        # one rank histogram per lead for every variable (issue 14 bug 9: from the second variable on,
        # with a climatology, the keys were '<xarray.DataArray ...>')
        if name in weather_bench.ENSEMBLES:
            assert all(list(r["rank_histogram"][v]) == [str(h) for h in range(1, 7)] for v in VARS), r["rank_histogram"]
        else:  # deterministic: CRPS null (fewer than 2 members), never its MAE under that name
            assert r["variables"]["z"]["crps"] == [None] * 6 and r["variables"]["z"]["ssr"] == [None] * 6
    # the perfect model's ratio to itself is 1; the init state is in the held-out file, so persistence at
    # +1 h has MAE (its CRPS as one member) = the mean one-hour change, recomputed here independently
    assert payload["summary"]["z"]["crps_ratio_to_perfect"]["perfect_model"]["6"] == pytest.approx(1.0)
    truth = open_weather(bench_files / "heldout.nc").load()
    t0 = np.datetime64(payload["init_times"][0])
    diff = np.abs(truth.z.sel(time=t0 + np.timedelta64(1, "h")) - truth.z.sel(time=t0))
    assert systems["persistence"]["variables"]["z"]["mae"][0] == pytest.approx(float(metrics.spatial_mean(diff)), rel=1e-4)
    # calibration of every ensemble at every lead: SSR as scored, flatness from the stored histograms
    calib = payload["calibration"]["fields"]
    assert list(calib["z"]) == ["diffsci", "perfect_model", "prob_climatology"]
    for name, c in calib["u"].items():
        assert c["lead_hours"] == list(range(1, 7)) and c["ssr"] == systems[name]["variables"]["u"]["ssr"]
        hist = systems[name]["rank_histogram"]["u"]["4"]
        assert c["rank_histogram_delta"][3] == pytest.approx(metrics.rank_histogram_delta(hist))
        assert c["reliability_index"][3] == pytest.approx(metrics.reliability_index(hist))
    card = payload["scorecard"]
    assert card["reference"] == "persistence" and "persistence" not in card["crps"]
    pm, pers = systems["perfect_model"]["variables"]["v"], systems["persistence"]["variables"]["v"]
    assert card["crps"]["perfect_model"]["v"][5] == pytest.approx(100 * (pm["crps"][5] / pers["mae"][5] - 1))
    assert card["rmse"]["perfect_model"]["v"][5] == pytest.approx(100 * (pm["rmse"][5] / pers["rmse"][5] - 1))
    report = (out / "report.md").read_text()
    assert "CRPS / perfect +6 h" in report and "diffsci CRPS below persistence" in report
    assert "## Calibration" in report and "| perfect_model | RI |" in report
    assert "## Scorecard against persistence" in report and "![scorecard](scorecard.png)" in report
    for png in ("crps_vs_lead.png", "rmse_vs_lead.png", "ssr_vs_lead.png", "rank_histograms.png", "maps_diffsci.png",
                "scorecard.png"):
        assert (out / png).stat().st_size > 1000
    assert not list(out.glob("*.tmp*"))


def test_cli_bad_arguments(bench_files, tmp_path, capsys):
    assert main(["bench", "weather", "--out", str(tmp_path / "o"), "--members", "1"]) == 2
    assert "--members" in capsys.readouterr().err
    assert main(["bench", "weather", "--out", str(tmp_path / "o"), "--data", str(tmp_path / "nope.nc")]) == 2
    assert "nope.nc" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["bench", "weather", "--out", str(tmp_path / "o"), "--scorecard-reference", "nope"])
    assert exc.value.code == 2 and "--scorecard-reference" in capsys.readouterr().err


def test_train_deterministic_then_roll_out(data, tmp_path):
    """The MSE baseline's training task runs through the core loop and rolls out with the same code."""
    from diffsci.core.errors import DiffsciError
    from diffsci.core.checkpoint import load_checkpoint
    from diffsci.core.checkpoint import default_checkpoint_path
    from diffsci.weather.diffusion import KIND

    _, truth, train = data
    train.to_netcdf(tmp_path / "train.nc", engine="netcdf4")
    path = baselines.train_deterministic(tmp_path / "train.nc", tmp_path / "run", max_minutes=None, steps=3, export_to=tmp_path / "det.pt",
                                  progress=False)
    ck = load_checkpoint(path)
    assert ck["kind"] == "weather-graph-deterministic" and ck["step"] == 3 and "optimizer" not in ck
    assert ck["config_version"] == 1 and ck["provenance"]["files"][0]["path"] == str(tmp_path / "train.nc")
    f = baselines.deterministic_forecast(path, truth, truth.time.values[[2, 7]], 2)
    _layout_ok(f, truth, 2, 2, 1)
    with pytest.raises(DiffsciError, match="not a deterministic"):
        baselines.deterministic_forecast(default_checkpoint_path(KIND), truth, truth.time.values[[2]], 1)


def test_heldout_data_must_not_be_training_or_climatology_data(tmp_path):
    """bench weather refuses held-out data with the bytes of the climatology data or of a file the
    checkpoint's provenance records; other files pass."""
    from diffsci.benchmarks.weather_bench import check_heldout
    from diffsci.core.config import Provenance, file_record
    from diffsci.core.errors import DiffsciError

    a, b, c = (tmp_path / n for n in ("a.nc", "b.nc", "c.nc"))
    a.write_bytes(b"held out")
    b.write_bytes(b"training period")
    c.write_bytes(b"held out")  # another name, the same bytes as a
    check_heldout(a, b, None)
    with pytest.raises(DiffsciError, match="same data as the climatology"):
        check_heldout(a, c, None)
    trained_on = Provenance(files=(file_record(c),))
    with pytest.raises(DiffsciError, match="trained on this file"):
        check_heldout(a, b, trained_on)
    check_heldout(b, a, Provenance())  # no files recorded: nothing to compare

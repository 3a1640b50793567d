"""``merge_results`` / ``diffsci bench merge``: statistics of two disjoint sets of init times,
each scored by the benchmark's own code, merged, equal those of the union scored at once."""

import json
import warnings

import numpy as np
import pytest
import xarray as xr

from diffsci.benchmarks.merge import merge_results
from diffsci.benchmarks.scorecard import scorecard
from diffsci.benchmarks.weather_bench import calibration, summarize
from diffsci.core.cli import main
from diffsci.core.errors import DiffsciError
from diffsci.weather.metrics import evaluate_forecast, rank_histogram_delta, reliability_index

VARS = ["z", "u"]
LEADS = 3
INITS = np.datetime64("2000-01-01T00:00") + np.arange(0, 35, 7) * np.timedelta64(1, "h")  # 5 inits, 7 h apart
HALVES = ([0, 2, 4], [1, 3])  # unequal: the merge must weight by the number of inits


@pytest.fixture(scope="module")
def synthetic():
    """Truth on a 6x12 grid (one NaN point) and four systems on five init times: two ensembles
    (one with a member missing at some points), two deterministic (one member)."""
    rng = np.random.default_rng(0)
    times = INITS[0] + np.arange(40) * np.timedelta64(1, "h")
    lat, lon = np.linspace(-75, 75, 6), np.arange(12) * 30.0
    truth = xr.Dataset({v: (("time", "latitude", "longitude"), rng.normal(size=(40, 6, 12))) for v in VARS},
                       coords={"time": times, "latitude": lat, "longitude": lon})
    truth["z"][9, 2, 3] = np.nan
    valid = np.stack([truth["z"].sel(time=INITS + h * np.timedelta64(1, "h")).values for h in range(1, LEADS + 1)], 1)

    def system(members, noise, bias=0.0):
        vals = {v: valid[:, :, None] + bias + noise * rng.normal(size=(5, LEADS, members, 6, 12)) for v in VARS}
        return xr.Dataset({v: (("time", "prediction_timedelta", "realization", "latitude", "longitude"), a)
                           for v, a in vals.items()},
                          coords={"time": INITS, "prediction_timedelta": (np.arange(1, LEADS + 1) * np.timedelta64(1, "h"))
                                  .astype("timedelta64[ns]"), "realization": np.arange(members),
                                  "latitude": lat, "longitude": lon})

    systems = {"perfect_model": system(6, 1.0), "diffsci": system(6, 1.2, 0.3),
               "persistence": system(1, 2.0), "climatology": system(1, 1.5, 1.0)}
    systems["diffsci"]["u"][1:, :, 4:, :2, :5] = np.nan  # two of six members missing at some points
    clim = truth.mean("time")
    return truth, systems, clim


def _payload(truth, systems, clim, idx):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = {name: evaluate_forecast(fc.isel(time=idx), truth, variables=VARS, climatology=clim)
                   for name, fc in systems.items()}
    return {"systems": results, "summary": summarize(results, VARS), "calibration": calibration(results, VARS),
            "scorecard": scorecard(results, VARS, "persistence"), "members": 6,
            "init_times": [str(t)[:16] for t in INITS[idx]], "lead_hours": LEADS, "sampler": "heun",
            "noise_levels": 5, "churn": 2.5, "heldout_seed": 12345, "climatology_period_hours": 40,
            "checkpoint": "ck.pt", "timings_s": {name: 1.0 for name in systems}, "wall_s": 10.0,
            "command": "diffsci bench weather --out x"}


@pytest.fixture(scope="module")
def parts_and_whole(synthetic):
    truth, systems, clim = synthetic
    parts = [_payload(truth, systems, clim, list(h)) for h in HALVES]
    whole = _payload(truth, systems, clim, list(range(5)))
    return parts, whole


def test_merged_halves_equal_the_whole(parts_and_whole):
    """Exact (to float rounding) for every stored statistic: CRPS, MAE and ACC are means over inits
    of per-init values; RMSE and spread are square roots of such means; SSR's numerator
    <(M+1)/M var> is recovered as (SSR RMSE)^2 per part, also where members are missing; rank
    histograms and NaN counts are sums (no member ties the continuous truth, so the random
    tie-break plays no part)."""
    parts, whole = parts_and_whole
    merged = merge_results(parts, ["a.json", "b.json"])
    assert merged["init_times"] == whole["init_times"]
    for name, ref in whole["systems"].items():
        got = merged["systems"][name]
        assert got["lead_hours"] == ref["lead_hours"] and got["members"] == ref["members"]
        for v in VARS:
            for metric in ("crps", "mae", "acc", "rmse", "spread", "ssr"):
                want = ref["variables"][v][metric]
                if want[0] is None:  # deterministic systems: no CRPS, spread or SSR
                    assert got["variables"][v][metric] == want, (name, v, metric)
                else:
                    assert got["variables"][v][metric] == pytest.approx(want, rel=1e-12, abs=0), (name, v, metric)
            for metric in ("truth_nan_points", "forecast_nan_points"):
                assert got["variables"][v][metric] == ref["variables"][v][metric]
        assert got["rank_histogram"] == ref["rank_histogram"]
    assert whole["systems"]["persistence"]["variables"]["z"]["truth_nan_points"] == [0, 1, 0]
    for v in VARS:  # the summary recomputed by the benchmark's summarize
        assert merged["summary"][v]["diffsci_beats"] == whole["summary"][v]["diffsci_beats"]
        for name, ratios in whole["summary"][v]["crps_ratio_to_perfect"].items():
            assert merged["summary"][v]["crps_ratio_to_perfect"][name] == pytest.approx(ratios, rel=1e-12)
    assert merged["timings_s"] == {name: 2.0 for name in whole["systems"]} and merged["wall_s"] == 20.0
    assert [p["file"] for p in merged["merged_from"]] == ["a.json", "b.json"]


def test_merged_ssr_is_the_benchmarks_factor_formula_with_full_ensembles(parts_and_whole):
    """Without missing members SSR = sqrt((M+1)/M) spread / RMSE on the merged spread and RMSE."""
    merged = merge_results(parts_and_whole[0])
    r = merged["systems"]["perfect_model"]["variables"]["u"]
    m = merged["members"]
    want = [np.sqrt((m + 1) / m) * s / e for s, e in zip(r["spread"], r["rmse"])]
    assert r["ssr"] == pytest.approx(want, rel=1e-12)


def test_a_plain_average_would_be_wrong(parts_and_whole):
    """The test can fail: unweighted averaging of the unequal halves misses the whole's CRPS."""
    parts, whole = parts_and_whole
    crps = [p["systems"]["diffsci"]["variables"]["z"]["crps"][0] for p in parts]
    assert abs((crps[0] + crps[1]) / 2 - whole["systems"]["diffsci"]["variables"]["z"]["crps"][0]) > 1e-6


@pytest.mark.parametrize("change, message", [
    (lambda p: p.update(members=8), "members"),
    (lambda p: p.update(lead_hours=6), "lead_hours"),
    (lambda p: p["systems"].pop("climatology"), "systems"),
    (lambda p: p["systems"]["diffsci"]["variables"].pop("u"), "field u"),
    (lambda p: p["init_times"].append("2000-01-01T14:00"), "init time 2000-01-01T14:00 is also in a.json"),
    (lambda p: p.pop("init_times"), "not a results.json"),
])
def test_refuses_parts_that_do_not_combine(parts_and_whole, change, message):
    parts = json.loads(json.dumps(parts_and_whole[0]))
    change(parts[1])
    with pytest.raises(DiffsciError, match="b.json") as exc:
        merge_results(parts, ["a.json", "b.json"])
    assert message in str(exc.value)


def test_cli_writes_strict_json_and_prints_the_tables(parts_and_whole, tmp_path, capsys):
    parts, _ = parts_and_whole
    files = []
    for i, p in enumerate(parts):
        files.append(tmp_path / f"{i}" / "results.json")
        files[-1].parent.mkdir()
        files[-1].write_text(json.dumps(p))
    out = tmp_path / "merged.json"
    assert main(["bench", "merge", *map(str, files), "--out", str(out)]) == 0
    def refuse(constant):
        raise AssertionError(f"non-strict JSON constant {constant}")

    assert json.loads(out.read_text(), parse_constant=refuse) == json.loads(json.dumps(merge_results(parts, [str(f) for f in files])))
    shown = capsys.readouterr().out
    assert "## z" in shown and "| diffsci |" in shown and "diffsci CRPS below persistence" in shown
    assert main(["bench", "merge", str(files[0]), str(files[0]), "--out", str(tmp_path / "m2.json")]) == 2
    assert "also in" in capsys.readouterr().err
    assert main(["bench", "merge", str(files[0]), str(tmp_path / "nope.json"), "--out", str(tmp_path / "m3.json")]) == 2
    assert "nope.json" in capsys.readouterr().err and not (tmp_path / "m3.json").exists()


def _approx_lists(got, want):
    """Lists of numbers or None, equal to float rounding."""
    assert [x is None for x in got] == [x is None for x in want]
    assert [x for x in got if x is not None] == pytest.approx([x for x in want if x is not None], rel=1e-12)


def test_merged_calibration_and_scorecard_equal_the_whole(parts_and_whole):
    """Calibration recomputed from the merged SSR and the summed rank histograms, and the scorecard
    from the merged scores, equal those of the whole; the flatness numbers are those of the
    parts' histograms added bin by bin."""
    parts, whole = parts_and_whole
    merged = merge_results(parts)
    for v in VARS:
        assert list(merged["calibration"]["fields"][v]) == ["diffsci", "perfect_model"]  # ensembles only
        for name, want in whole["calibration"]["fields"][v].items():
            got = merged["calibration"]["fields"][v][name]
            assert got["lead_hours"] == want["lead_hours"]
            for key in ("ssr", "rank_histogram_delta", "reliability_index"):
                _approx_lists(got[key], want[key])
        summed = [a + b for a, b in zip(*(p["systems"]["diffsci"]["rank_histogram"][v]["2"] for p in parts))]
        got = merged["calibration"]["fields"][v]["diffsci"]
        assert got["rank_histogram_delta"][1] == pytest.approx(rank_histogram_delta(summed), rel=1e-12)
        assert got["reliability_index"][1] == pytest.approx(reliability_index(summed), rel=1e-12)
    assert merged["scorecard"]["reference"] == "persistence"
    for metric in ("crps", "rmse"):
        assert list(merged["scorecard"][metric]) == ["perfect_model", "diffsci", "climatology"]
        for name, fields in whole["scorecard"][metric].items():
            for v in VARS:
                _approx_lists(merged["scorecard"][metric][name][v], fields[v])


def test_merged_scorecard_keeps_the_parts_reference(parts_and_whole):
    parts = json.loads(json.dumps(parts_and_whole[0]))
    for p in parts:
        p["scorecard"] = scorecard(p["systems"], VARS, "perfect_model")
    merged = merge_results(parts, ["a.json", "b.json"])
    assert merged["scorecard"]["reference"] == "perfect_model" and "persistence" in merged["scorecard"]["crps"]
    parts[1]["scorecard"]["reference"] = "persistence"
    with pytest.raises(DiffsciError, match="different references"):
        merge_results(parts, ["a.json", "b.json"])

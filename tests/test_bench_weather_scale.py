"""``diffsci bench speed --weather --grid``: the weather model's cost at a WeatherBench 2 grid."""

import json

import pytest

from diffsci.benchmarks.weather_speed import scale_refinements, weather_scale_speed
from diffsci.core.cli import main


def test_scale_refinements_follow_the_grid_spacing():
    # mesh edge ~63.4 / 2**k degrees at most four grid spacings; GraphCast's level 6 at 0.25 degrees
    assert [scale_refinements(n) for n in (721, 181, 121, 33)] == [6, 4, 4, 2]


def test_weather_scale_speed_reports_every_row():
    res = weather_scale_speed((9, 16), refinements=1, members=1, threads=1)
    assert res["grid"] == [9, 16] and res["grid_points"] == 144 and res["refinements"] == 1
    assert res["mesh_nodes"] == 42 and res["edges"]["m2g"] == 3 * 144  # level 1: 10 * 4 + 2 nodes
    f = res["forecast"]
    assert f["members"] == 1 and f["seconds_per_step"] > 0 and f["peak_rss_mb"] > 0
    assert abs(f["seconds_per_model_hour_per_member"] - f["seconds_per_step"] / 6.0) < 1e-3
    on, off = res["train"]
    assert on["activation_checkpointing"] and not off["activation_checkpointing"]
    for row in (on, off):
        assert row["seconds_per_step"] > 0 and row["peak_rss_mb"] > 0 and row["grad_norm"] > 0
    # the same step with and without activation checkpointing
    assert res["train_loss_difference"] <= 1e-6 * abs(off["loss"])
    assert abs(on["grad_norm"] - off["grad_norm"]) <= 1e-5 * off["grad_norm"]


def test_bench_speed_grid_command(tmp_path, capsys):
    out = tmp_path / "s.json"
    assert main(["bench", "speed", "--weather", "--grid", "9x16", "--refinements", "1", "--checkpointing", "on",
                 "--grid-members", "0", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    scale = res["weather_scale"]
    assert "forecast" not in scale and [r["activation_checkpointing"] for r in scale["train"]] == [True]
    assert "--grid 9x16" in res["command"] and "weather" not in res  # the shipped-model rows are not run
    assert "training step, checkpointing on" in capsys.readouterr().out


@pytest.mark.parametrize("grid", ["121", "ax240"])
def test_bench_speed_bad_grid(grid, capsys):
    assert main(["bench", "speed", "--weather", "--grid", grid]) == 2
    assert "--grid must be NLATxNLON" in capsys.readouterr().err


def test_weather_scale_speed_forecast_only():
    res = weather_scale_speed((9, 16), refinements=1, members=2, checkpointing="none", threads=1)
    assert res["train"] == [] and res["forecast"]["members"] == 2 and "train_peak_ratio" not in res

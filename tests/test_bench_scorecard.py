"""The weather benchmark's scorecard (relative CRPS and RMSE against a reference system) on a tiny
hand-made results payload: numbers, markdown, PNG, and a missing reference."""

import pytest

from diffsci.benchmarks import scorecard as sc
from diffsci.benchmarks.weather_bench import run_benchmark
from diffsci.core.errors import DiffsciError


def _system(lead_hours, crps, rmse, mae):
    return {"lead_hours": lead_hours, "variables": {"z": {"crps": crps, "rmse": rmse, "mae": mae}}}


@pytest.fixture
def systems():
    """persistence is deterministic (CRPS null: its MAE stands in), diffsci lacks lead 3."""
    return {"persistence": _system([1, 2, 3], [None, None, None], [4.0, 8.0, 10.0], [2.0, 4.0, 5.0]),
            "diffsci": _system([1, 2], [1.0, 5.0], [2.0, 8.0], [1.5, 4.5]),
            "perfect_model": _system([1, 2, 3], [0.5, 2.0, 0.0], [1.0, 4.0, 6.0], [0.7, 3.0, 4.0])}


def test_relative_scores_by_hand(systems):
    card = sc.scorecard(systems, ["z"], "persistence")
    assert card["reference"] == "persistence" and card["lead_hours"] == [1, 2, 3]
    assert list(card["crps"]) == ["diffsci", "perfect_model"]  # the reference is not scored against itself
    # diffsci CRPS against persistence's MAE: (1 - 2)/2, (5 - 4)/4; lead 3 missing -> None
    assert card["crps"]["diffsci"]["z"] == pytest.approx([-50.0, 25.0, None])
    assert card["rmse"]["diffsci"]["z"] == pytest.approx([-50.0, 0.0, None])
    assert card["crps"]["perfect_model"]["z"] == pytest.approx([-75.0, -50.0, -100.0])
    # against the perfect model: a deterministic system's MAE is its CRPS; a zero reference gives None
    card = sc.scorecard(systems, ["z"], "perfect_model")
    assert card["crps"]["persistence"]["z"] == pytest.approx([300.0, 100.0, None])
    assert card["rmse"]["persistence"]["z"] == pytest.approx([300.0, 100.0, 100 * 4 / 6])


def test_tables_show_the_percentages(systems):
    lines = sc.scorecard_tables(sc.scorecard(systems, ["z"], "persistence"), leads=(1, 2, 3))
    text = "\n".join(lines)
    assert "## Scorecard against persistence" in text
    assert "| diffsci | z | -50% | +25% | n/a |" in text
    assert "| perfect_model | z | -75% | -50% | -100% |" in text
    assert sc.relative_difference(1.05, 1.0) == pytest.approx(5.0) and sc._percent(5.0) == "+5.0%"


def test_png_is_written(systems, tmp_path):
    import matplotlib.image

    path = sc.plot_scorecard(sc.scorecard(systems, ["z"], "persistence"), tmp_path / "card.png")
    assert path == tmp_path / "card.png" and path.stat().st_size > 1000
    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50
    # red-blue colours in the cells: some pixels clearly blue (better) and some clearly red (worse)
    r, b = img[..., 0], img[..., 2]
    assert (b - r > 0.3).any() and (r - b > 0.3).any()
    assert not list(tmp_path.glob("*.tmp*"))


def test_missing_reference_names_the_parameter(systems, tmp_path):
    del systems["persistence"]
    with pytest.raises(DiffsciError, match="--scorecard-reference 'persistence'"):
        sc.scorecard(systems, ["z"], "persistence")
    with pytest.raises(DiffsciError, match="--scorecard-reference"):
        run_benchmark(tmp_path / "out", scorecard_reference="nope")
    assert not (tmp_path / "out").exists()


def test_crps_or_mae_falls_back_to_the_mae():
    assert sc.crps_or_mae({"crps": [None, 2.0], "mae": [1.0, 3.0]}) == [1.0, 2.0]

"""diffsci bench compare: numeric leaves by path, tolerances, wall-clock fields ignored."""

from __future__ import annotations

import json

from diffsci.benchmarks.compare import compare_results, numeric_leaves
from diffsci.core.cli import main


def test_numeric_leaves_paths():
    leaves = numeric_leaves({"a": {"b": [1, None, 2.5]}, "flag": True, "name": "x", "n": 3})
    assert leaves == {"a/b[0]": 1.0, "a/b[1]": None, "a/b[2]": 2.5, "n": 3.0}


def test_compare_finds_changes_and_ignores_wall_clock():
    a = {"systems": {"s": {"crps": [1.0, 2.0, None], "seconds": 10.0}}, "wall_s": 5}
    same = {"systems": {"s": {"crps": [1.0, 2.0 + 1e-9, None], "seconds": 99.0}}, "wall_s": 7}
    res = compare_results(a, same)
    assert res["compared"] == 3 and not res["differing"] and not res["only_in_a"] and not res["only_in_b"]
    changed = {"systems": {"s": {"crps": [1.0, 2.1, 0.5]}}}
    res = compare_results(a, changed)
    assert [d[0] for d in res["differing"]] == ["systems/s/crps[1]", "systems/s/crps[2]"]
    res = compare_results(a, {"systems": {"s": {"crps": [1.0]}}, "extra": 1})
    assert res["only_in_a"] == ["systems/s/crps[1]", "systems/s/crps[2]"] and res["only_in_b"] == ["extra"]
    assert not compare_results({"x": float("nan")}, {"x": float("nan")})["differing"]


def test_compare_cli_exit_status(tmp_path, capsys):
    a, b, c = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    a.write_text(json.dumps({"v": [1.0, 2.0]}))
    b.write_text(json.dumps({"v": [1.0, 2.0]}))
    c.write_text(json.dumps({"v": [1.0, 3.0]}))
    assert main(["bench", "compare", str(a), str(b), "--out", str(tmp_path / "r.json")]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["compared"] == 2
    assert main(["bench", "compare", str(a), str(c)]) == 1
    assert "1 differ" in capsys.readouterr().out
    assert main(["bench", "compare", str(a), str(tmp_path / "none.json")]) == 2

"""The package layout, the console entry point and the core's dependency direction."""

import ast
import pathlib
import subprocess
import sys

import pytest

import diffsci.core
from diffsci.core.cli import main

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_namespace_maps_to_folders():
    assert pathlib.Path(diffsci.core.__file__).parent == ROOT / "core"
    assert not (ROOT / "diffsci" / "__init__.py").exists()


def test_no_bare_top_level_modules(tmp_path):
    # from a folder outside the repo only the diffsci namespace is importable
    for name in ("core", "protein", "weather", "benchmarks"):
        r = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=tmp_path, capture_output=True, text=True)
        assert r.returncode != 0, f"a bare top-level module {name!r} is installed"
    r = subprocess.run([sys.executable, "-c", "import diffsci.core, diffsci.protein, diffsci.weather, diffsci.benchmarks"],
                       cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert "diffsci" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for sub in ("protein", "weather", "bench"):
        assert sub in out


def test_unknown_command_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["no-such-command"])
    assert exc.value.code == 2


def _imported_modules(path: pathlib.Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name
        elif isinstance(node, ast.ImportFrom):
            yield ("." * node.level) + (node.module or "")
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module" and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                yield arg.value


def test_core_imports_no_domain():
    files = sorted((ROOT / "core").rglob("*.py"))
    assert files
    for f in files:
        for mod in _imported_modules(f):
            for dom in ("protein", "weather", "benchmarks"):
                assert not mod.startswith(f"diffsci.{dom}"), f"{f.name} imports {mod}"
                assert not mod.lstrip(".").startswith(dom), f"{f.name} imports {mod}"


@pytest.mark.parametrize("pkg", ["diffsci.protein", "diffsci.weather"])
def test_public_api_resolves(pkg):
    import importlib

    mod = importlib.import_module(pkg)
    for name in mod.__all__:
        assert getattr(mod, name) is not None, f"{pkg}.{name}"


def test_command_groups_dispatch_to_their_modules(capsys):
    """add_command_group registers each module's subcommand under its group; a group needs one."""
    import argparse

    from diffsci.core.cli import add_command_group, build_parser

    args = build_parser().parse_args(["bench", "merge", "a.json", "b.json", "--out", "m.json"])
    assert args.bench_command == "merge" and args.results == ["a.json", "b.json"] and callable(args.func)
    args = build_parser().parse_args(["weather", "evaluate", "f.nc", "--truth", "t.nc", "--out", "m.json"])
    assert args.weather_command == "evaluate" and callable(args.func)
    sub = argparse.ArgumentParser(prog="x").add_subparsers()
    group = add_command_group(sub, "tools", "help text", "diffsci.benchmarks", ["merge"])
    assert group.parse_args(["merge", "a.json", "--out", "o.json"]).tools_command == "merge"
    with pytest.raises(SystemExit) as exc:
        main(["protein"])
    assert exc.value.code == 2

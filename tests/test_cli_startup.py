"""``diffsci`` start-up (issue 31): a command imports only its own plug-in and group.

Each check runs in a fresh interpreter (``sys.modules`` of the test process holds everything the
suite imported). ``diffsci --help`` and the help of commands whose help reads no checkpoint
import no torch; weather commands, help or a real forecast, import neither e3nn nor any protein
or bench module; groups are filled only when used (:class:`CommandGroupParser`)."""

import json
import subprocess
import sys

import pytest

from diffsci.core.cli import CommandGroupParser, build_parser, main

HEAVY = ("torch", "e3nn", "biotite", "scipy", "xarray", "pandas", "matplotlib")
OTHER = ("diffsci.protein", "diffsci.benchmarks", "diffsci.weather")


def _imported(code: str) -> dict:
    """Run ``code`` (which may call ``main(ARGV)``) in a fresh interpreter: its exit status
    (``rc``), the heavy packages and diffsci packages it left in ``sys.modules`` (``modules``) and
    every ``diffsci.*`` module there (``diffsci``)."""
    script = ("import json, sys\nfrom diffsci.core.cli import main\nrc = 0\n" + code + "\n"
              f"names = {HEAVY + OTHER!r}\n"
              "print(json.dumps({'rc': rc, 'modules': [n for n in names if n in sys.modules],\n"
              "                  'diffsci': sorted(n for n in sys.modules if n.startswith('diffsci.'))}))\n")
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def _cli(*argv) -> str:
    return f"try:\n    rc = main({list(argv)!r})\nexcept SystemExit as exc:\n    rc = exc.code"


def test_top_level_help_imports_no_torch_and_no_group():
    got = _imported(_cli("--help"))
    assert got["rc"] == 0
    assert not set(got["modules"]) & set(HEAVY), got
    # the plug-ins' cli modules (and their packages' light __init__) only, no command module
    assert set(got["diffsci"]) <= {"diffsci.core", "diffsci.core.cli", "diffsci.core.errors", *OTHER,
                                   *(f"{p}.cli" for p in OTHER)}, got["diffsci"]


@pytest.mark.parametrize("argv", [("weather", "evaluate", "--help"), ("weather", "make-data", "--help"),
                                  ("weather", "train", "--help"), ("protein", "sample", "--help"),
                                  ("protein", "prepare", "--help"), ("protein", "evaluate", "--help")])
def test_command_help_imports_no_torch(argv):
    got = _imported(_cli(*argv))
    assert got["rc"] == 0
    assert not set(got["modules"]) & set(HEAVY), got
    other = "diffsci.protein" if argv[0] == "weather" else "diffsci.weather"
    assert other not in got["modules"] and "diffsci.benchmarks" not in got["modules"], got


def test_weather_forecast_help_and_module_import_no_e3nn_nor_protein():
    """The forecast's help reads the shipped checkpoint (torch), but nothing of the protein side."""
    for code in (_cli("weather", "forecast", "--help"), "import diffsci.weather.forecast_cmd"):
        got = _imported(code)
        assert got["rc"] == 0
        assert not {"e3nn", "biotite", "diffsci.protein", "diffsci.benchmarks"} & set(got["modules"]), (code, got)


def test_weather_forecast_run_imports_no_e3nn_nor_protein(tmp_path):
    from diffsci.weather.generator import generate

    init = tmp_path / "init.nc"
    generate(grid=(32, 64), hours=2, trajectories=1, seed=3, spinup_hours=2, progress=False).to_netcdf(
        init, engine="netcdf4")
    out = tmp_path / "fc.nc"
    got = _imported(_cli("weather", "forecast", "--init", str(init), "--lead-hours", "1", "--members", "1",
                         "--out", str(out), "--quiet", "--threads", "1"))
    assert got["rc"] == 0 and out.exists()
    assert "torch" in got["modules"]  # it did run the model
    assert not {"e3nn", "biotite", "diffsci.protein", "diffsci.benchmarks"} & set(got["modules"]), got


def test_build_parser_registers_the_named_plugin_only():
    assert set(_choices(build_parser("weather"))) == {"weather"}
    assert set(_choices(build_parser())) == {"bench", "protein", "weather"}
    assert set(_choices(build_parser("no-such-command"))) == {"bench", "protein", "weather"}


def test_groups_are_filled_when_used(capsys):
    parser = build_parser()
    group = _choices(parser)["bench"]
    assert isinstance(group, CommandGroupParser) and group._pending  # nothing imported yet
    args = parser.parse_args(["bench", "merge", "a.json", "b.json", "--out", "m.json"])
    assert args.bench_command == "merge" and callable(args.func) and not group._pending
    help_text = _choices(build_parser("weather"))["weather"].format_help()
    assert "forecast" in help_text and "make-data" in help_text
    with pytest.raises(SystemExit) as exc:  # a group without its command: a usage error naming COMMAND
        main(["weather"])
    assert exc.value.code == 2 and "COMMAND" in capsys.readouterr().err


def _choices(parser) -> dict:
    return next(a for a in parser._actions if a.dest == "command").choices

"""``diffsci bench weather --data FILE`` refuses a file it cannot use before any work (issue 27.7:
a held-out file without the simulator state was refused only when the perfect-model baseline
ran, ~46 s into the run, after persistence, climatologies and the deterministic forecast)."""

import pytest

from diffsci.benchmarks import weather_bench
from diffsci.core.cli import main
from diffsci.weather.generator import GeneratorOutput, generate


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("wbdata")
    generate(grid=(32, 64), hours=30, trajectories=1, seed=0, spinup_hours=24,
             output=GeneratorOutput(store_state=False), progress=False).to_netcdf(d / "train.nc", engine="netcdf4")
    generate(grid=(32, 64), hours=12, trajectories=1, seed=12345, spinup_hours=24,
             output=GeneratorOutput(store_state=False), progress=False).to_netcdf(d / "no_state.nc", engine="netcdf4")
    generate(grid=(16, 32), hours=12, trajectories=1, seed=12345, spinup_hours=24,
             progress=False).to_netcdf(d / "small_grid.nc", engine="netcdf4")
    return d


@pytest.mark.parametrize("data,needle", [("no_state.nc", "no simulator state ('sim_state'"),
                                         ("small_grid.nc", "latitude grid (16 points")])
def test_unusable_heldout_data_refused_before_any_work(files, tmp_path, capsys, monkeypatch, data, needle):
    def work_started(*args, **kwargs):
        raise AssertionError("a system ran before the held-out data were checked")

    for name in ("persistence", "climatology", "prob_climatology", "perfect_model"):
        monkeypatch.setattr(weather_bench, name, work_started)
    rc = main(["bench", "weather", "--out", str(tmp_path / "out"), "--data", str(files / data),
               "--train-data", str(files / "train.nc"), "--inits", "1", "--members", "2", "--lead-hours", "2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith("error: --data ") and needle in err[-1] and data in err[-1]
    assert not any(x.startswith("Traceback") for x in err)

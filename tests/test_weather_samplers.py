"""Every sampler forecasts with a denoising diffusion checkpoint (issue 14, bug 8 / acceptance 2):
the stage-0 denoiser ``benchmarks/data/weather_denoise_v0.pt``, trained at every noise level (the
shipped checkpoint is tuned for its own 2-level sampler).

``forecast`` runs under ``torch.inference_mode()``; the Euler-Maruyama drift came from autograd
there and was 0, so its 2-hour forecast moved z by ~8,400 m2/s2 on average where Heun moved it
by ~130. Every sampler's 2-hour change must now be within 2x of Heun's.
"""

import numpy as np
import pytest
import xarray as xr

from diffsci.core.cli import main
from diffsci.core.samplers import SAMPLERS
from diffsci.weather.diffusion import shipped_checkpoint
from diffsci.weather.generator import generate

DENOISER = shipped_checkpoint().parents[2] / "benchmarks" / "data" / "weather_denoise_v0.pt"
pytestmark = pytest.mark.skipif(not DENOISER.exists(), reason="stage-0 weather checkpoint missing")


@pytest.fixture(scope="module")
def init_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("wsamp")
    ds = generate(grid=(32, 64), hours=3, trajectories=1, seed=2024, spinup_hours=48, progress=False)
    path = d / "init.nc"
    ds.to_netcdf(path, engine="netcdf4")
    return path


def _mean_change(init_file, out, sampler):
    assert main(["weather", "forecast", "--init", str(init_file), "--out", str(out), "--lead-hours", "2",
                 "--members", "4", "--seed", "0", "--sampler", sampler, "--checkpoint", str(DENOISER), "--quiet"]) == 0
    f = xr.open_dataset(out)
    z0 = xr.open_dataset(init_file).z.isel(time=-1).values
    z2 = f.z.isel(time=0, prediction_timedelta=-1).values
    return float(np.abs(z2 - z0[None]).mean())


@pytest.fixture(scope="module")
def heun_change(init_file, tmp_path_factory):
    return _mean_change(init_file, tmp_path_factory.mktemp("heun") / "heun.nc", "heun")


@pytest.mark.parametrize("sampler", sorted(set(SAMPLERS) - {"heun"}))
def test_two_hour_change_agrees_with_heun(init_file, heun_change, sampler, tmp_path):
    change = _mean_change(init_file, tmp_path / "f.nc", sampler)
    print(f"{sampler}: mean |z(+2h) - z(0)| = {change:.1f} m2/s2 (heun {heun_change:.1f})")
    assert 30 < heun_change < 1000  # the model moves the state, by a weather-like amount
    assert heun_change / 2 <= change <= 2 * heun_change, (sampler, change, heun_change)


def test_euler_maruyama_on_too_coarse_a_grid_is_refused(init_file, tmp_path, capsys):
    out = tmp_path / "f.nc"
    assert main(["weather", "forecast", "--init", str(init_file), "--out", str(out), "--lead-hours", "2",
                 "--members", "2", "--sampler", "euler_maruyama", "--steps", "5", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "unstable" in err and "Traceback" not in err and not out.exists()

"""make-data on WeatherBench 2 grids with poles, the capped solver and the short spin-up at full resolution."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
import xarray as xr

import diffsci.weather.generator as gen
from diffsci.core.cli import main
from diffsci.core.errors import DiffsciError
from diffsci.weather.data import open_weather
from diffsci.weather.generator import Simulator, generate, perfect_model_ensemble, simulator_config


def test_make_data_on_a_wb2_grid_with_poles(tmp_path):
    out = tmp_path / "p.nc"
    assert main(["weather", "make-data", "--out", str(out), "--grid", "33x64", "--hours", "3", "--spinup-hours", "4",
                 "--seed", "3", "--quiet"]) == 0
    ds = xr.open_dataset(out, engine="netcdf4")
    np.testing.assert_allclose(ds["latitude"].values, np.linspace(-90, 90, 33))
    np.testing.assert_allclose(ds["longitude"].values, np.arange(64) * 5.625)
    assert ds.attrs["simulator_grid"].startswith("32x64") and ds.attrs["output_grid"] == "33x64 equiangular with poles"
    # the solver is the 32x64 one: the same states as the cell-centre file of that seed
    ref = generate((32, 64), hours=3, seed=3, spinup_hours=4, progress=False)
    np.testing.assert_array_equal(ds["sim_state"].values, ref["sim_state"].values)
    # the fields are the spectral state evaluated on the grid: the 32x64 simulator's doubled
    # equiangular synthesis (whose odd rows are the cell centres) has these points as its even rows
    sim = Simulator(gen.GeneratorConfig())
    state = sim.unpack(ref["sim_state"].values)
    full = sim.isht_out(state.spec[:, 0]).numpy()[:, ::-1][:, ::2, ::2]  # ascending latitude
    np.testing.assert_allclose(ds["z"].values, full, rtol=1e-6)
    assert np.ptp(ds["z"].values[:, 0], axis=-1).max() == 0 and np.ptp(ds["vo"].values[:, -1], axis=-1).max() == 0
    opened = open_weather(out)  # the reader takes the file as it is
    assert opened.sizes["latitude"] == 33
    ens = perfect_model_ensemble(ds, 1, 2, 2)  # restarts give the same grid
    assert ens.sizes["latitude"] == 33 and ens["latitude"].values[0] == -90.0


@pytest.mark.parametrize("grid", ["33x60", "34x64", "121x242", "9x8"])
def test_make_data_refuses_other_grids_naming_the_supported_ones(grid, tmp_path, capsys):
    target = tmp_path / "bad.nc"
    assert main(["weather", "make-data", "--out", str(target), "--grid", grid, "--hours", "2", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "2 * (nlat - 1)" in err[0] and "121x240" in err[0] and grid in err[0]
    assert not target.exists()


def test_large_grids_use_the_capped_solver():
    cfg = simulator_config((721, 1440))
    assert (cfg.nlat, cfg.nlon, cfg.output_shape, cfg.out_poles) == (64, 128, (721, 1440), True)
    cfg = simulator_config((128, 256))  # cell centres finer than the solver
    assert (cfg.nlat, cfg.output_shape, cfg.out_poles) == (64, (128, 256), False)
    cfg = simulator_config((32, 64))  # the solver's own cell centres: the config as before
    assert (cfg.nlat, cfg.out_nlat) == (32, 0)
    with pytest.raises(DiffsciError, match="nlon must be 2"):
        simulator_config((16, 16))


def test_refining_a_coarse_state_is_exact():
    coarse = Simulator(simulator_config((33, 64)))
    fine = Simulator(replace(simulator_config((129, 256)), out_nlat=33, out_nlon=64))  # T42 solver, 33x64 output
    state = coarse.balanced_state(gen._rng(0, 0, 0, 0))
    a, b = coarse.to_grid(state.spec), fine.to_grid(fine.refine(state).spec)
    for v in a:
        np.testing.assert_allclose(b[v], a[v], rtol=1e-5, atol=1e-5 * np.abs(a[v]).max())
    assert torch.equal(fine.refine(state).spec[..., :coarse.L, :coarse.L], state.spec)


def test_fine_solver_spins_up_mostly_at_low_resolution(monkeypatch):
    calls = []
    real = Simulator.run_hours
    monkeypatch.setattr(Simulator, "run_hours", lambda self, s, r, h, d: calls.append((self.config.nlat, h)) or
                        real(self, s, r, h, d))
    monkeypatch.setattr(gen, "FINE_SPINUP_HOURS", 2)
    ds = generate((121, 240), hours=2, spinup_hours=6, progress=False)
    assert calls[:3] == [(32, 2), (32, 2), (64, 2)]  # 4 h at 32x64 (strong, then normal damping), 2 h at 64x128
    assert ds["z"].shape == (2, 121, 240) and np.isfinite(ds["z"].values).all()
    assert json.loads(ds.attrs["generator_config"])["nlat"] == 64 and ds.attrs["output_grid"].startswith("121x240")
    # fields of the T42 state on the 1.5 degree grid: smooth, the poles single-valued
    assert np.ptp(ds["z"].values[:, 0], axis=-1).max() == 0


def test_make_data_six_hourly(tmp_path):
    """--step-hours 6 writes every sixth hour of the same run: a 6 h model step."""
    out = tmp_path / "six.nc"
    assert main(["weather", "make-data", "--out", str(out), "--grid", "16x32", "--hours", "3", "--step-hours", "6",
                 "--spinup-hours", "2", "--seed", "4", "--quiet"]) == 0
    six = xr.open_dataset(out, engine="netcdf4")
    hourly = generate((16, 32), hours=13, seed=4, spinup_hours=2, progress=False)
    np.testing.assert_array_equal(six["z"].values, hourly["z"].values[::6])
    assert (np.diff(six["time"].values) == np.timedelta64(6, "h")).all() and six.attrs["step_hours"] == 6
    assert "step_hours" not in hourly.attrs  # hourly files are as before


def test_spinup_check_reports_both_spinups(monkeypatch):
    from diffsci.benchmarks.spinup_check import spectral_ke_fraction, spinup_check

    monkeypatch.setattr(gen, "FINE_SPINUP_HOURS", 2)
    res = spinup_check((65, 128), spinup_hours=4, seeds=(0,), window=2, every=1)
    row = res["seeds"]["0"]
    assert res["solver"] == "64x128" and [h for h, _ in row["fine_trace"]] == [0, 1, 2]
    assert row["fine_trace"][0][1] == 0.0 < row["fine_trace"][-1][1]  # the refined state has no energy above T21
    assert set(row["two_stage"]) == set(row["full"]) == {"z_std", "u_rms", "v_rms", "vo_rms", "ke_above_T21"}
    assert row["full"]["ke_above_T21"] > 0 and row["two_stage_seconds"] >= 0
    # the fraction of one pure degree
    sim = Simulator(simulator_config((65, 128)))
    spec = torch.zeros(1, 3, sim.L, sim.L, dtype=torch.complex128)
    spec[0, 1, 30, 2] = 1.0
    assert spectral_ke_fraction(sim, spec, 21) == 1.0 and spectral_ke_fraction(sim, spec, 30) == 0.0

"""The fair CRPS loss and the weather model's ``crps`` training objective, and the forecast's
use of the sampling settings recorded in a checkpoint."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from diffsci.core.cli import main
from diffsci.core.checkpoint import load_bundle
from diffsci.core.errors import DiffsciError
from diffsci.core.losses import fair_crps
from diffsci.weather.generator import generate
from diffsci.weather.metrics import crps_ensemble


@pytest.mark.parametrize("m", [2, 3, 7])
def test_fair_crps_matches_the_sorting_estimator(m):
    """Against weather.metrics.crps_ensemble, an independent O(M log M) implementation."""
    g = torch.Generator().manual_seed(m)
    x, y = torch.randn(m, 5, 6, generator=g, dtype=torch.float64), torch.randn(5, 6, generator=g, dtype=torch.float64)
    ref = crps_ensemble(np.moveaxis(x.numpy(), 0, -1), y.numpy(), fair=True)
    np.testing.assert_allclose(fair_crps(x, y).numpy(), ref, rtol=1e-12, atol=1e-12)


def test_fair_crps_is_unbiased_for_the_gaussian_crps():
    """Mean over many 2-member ensembles from N(mu, s^2) = the closed-form CRPS of that normal
    (Gneiting & Raftery 2007): s [z (2 Phi(z) - 1) + 2 phi(z) - 1 / sqrt(pi)], z = (y - mu) / s."""
    mu, s, y = 0.3, 1.7, -0.8
    g = torch.Generator().manual_seed(0)
    x = mu + s * torch.randn(2, 400_000, generator=g, dtype=torch.float64)
    est = fair_crps(x, torch.full((400_000,), y, dtype=torch.float64)).mean().item()
    z = (y - mu) / s
    exact = s * (z * math.erf(z / math.sqrt(2)) + 2 * math.exp(-z * z / 2) / math.sqrt(2 * math.pi) - 1 / math.sqrt(math.pi))
    assert est == pytest.approx(exact, abs=4e-3)
    biased = (x - y).abs().mean(0) - (x[0] - x[1]).abs() / 4  # the plain ensemble CRPS (M^2 denominator)
    assert biased.mean().item() - exact > 0.1  # ... which is biased high for M = 2


def test_fair_crps_refuses_a_single_member():
    with pytest.raises(DiffsciError, match="2 members"):
        fair_crps(torch.zeros(1, 3), torch.zeros(3))
    with pytest.raises(DiffsciError, match="match"):
        fair_crps(torch.zeros(2, 3), torch.zeros(4))


@pytest.fixture(scope="module")
def crps_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("crps")
    generate(grid=(16, 32), hours=30, trajectories=1, seed=5, spinup_hours=12, progress=False).to_netcdf(d / "tiny.nc")
    cfg = {"model": {"latent": 16, "layers": 1, "refinements": 1, "objective": "crps", "crps_members": 3,
                     "sampler": "euler", "sampler_steps": 2, "churn": 0.0},
           "train": {"batch_size": 2, "ckpt_every": 2, "log_every": 1}}
    (d / "cfg.json").write_text(json.dumps(cfg))
    assert main(["weather", "train", "--data", str(d / "tiny.nc"), "--out", str(d / "run"), "--config",
                 str(d / "cfg.json"), "--steps", "2", "--device", "cpu"]) == 0
    return d


def test_crps_objective_trains_and_records_its_sampler(crps_run):
    import diffsci.weather.diffusion  # noqa: F401  (registers the kinds)

    b = load_bundle(crps_run / "run" / "latest.pt", "weather-graph-diffusion")
    cfg = b.config
    assert (cfg.objective, cfg.crps_members, cfg.sampler, cfg.sampler_steps, cfg.churn) == ("crps", 3, "euler", 2, 0.0)
    lines = [json.loads(x) for x in (crps_run / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(x["loss"]) for x in lines if "loss" in x)


def test_crps_members_are_the_models_own_sampler_with_gradients(crps_run):
    """sample_members = the euler sampler over the model's noise grid from sigma_max * eps,
    member by member; its loss is the weighted fair CRPS and has gradients in every weight
    that the sampled residual depends on."""
    from diffsci.core.samplers import sample_euler
    from diffsci.core.spaces import Euclidean
    from diffsci.weather.diffusion import make_task
    from diffsci.core.train import Recipe

    recipe = Recipe.from_tables("weather-graph-diffusion", json.loads((crps_run / "cfg.json").read_text()),
                                data={"path": str(crps_run / "tiny.nc")})
    task = make_task(recipe)
    b = load_bundle(crps_run / "run" / "latest.pt", "weather-graph-diffusion")
    model = b.model.train()
    batch = task.sample_batch(torch.Generator().manual_seed(1), 2)
    assert batch.eps.shape == (3, *batch.target.shape) and isinstance(batch.noise_seed, int)
    members = task.sample_members(model, batch)
    cfg = task.config
    times = cfg.schedule.time_grid(2)
    for m in range(3):
        ref = sample_euler(model, cfg.sigma_max * batch.eps[m], times, space=Euclidean(cfg.schedule), cond=batch.cond)
        torch.testing.assert_close(members[m], ref, rtol=1e-5, atol=1e-5)
    loss = task.loss(model, batch)
    expected = (task.weights * fair_crps(members, batch.target)).mean()
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert model.net.net.out.weight.grad.abs().sum() > 0


def test_config_refuses_bad_sampling_and_objective():
    from diffsci.weather.diffusion import WeatherModelConfig

    grid = dict(channels=("z",), variables=("z",), latitude=(-45.0, 45.0), longitude=(0.0, 180.0))
    with pytest.raises(DiffsciError, match="objective"):
        WeatherModelConfig(objective="mse", **grid)
    with pytest.raises(DiffsciError, match="crps_members"):
        WeatherModelConfig(crps_members=1, **grid)
    with pytest.raises(DiffsciError, match="sampler"):
        WeatherModelConfig(sampler="nope", **grid)
    with pytest.raises(DiffsciError, match="crps_lead_power"):
        WeatherModelConfig(crps_lead_power=-1.0, **grid)


def test_forecast_defaults_are_the_checkpoints_sampling_settings(crps_run):
    from diffsci.weather.forecast import load_forecaster, sampling_settings

    fc = load_forecaster(crps_run / "run" / "latest.pt")
    assert sampling_settings(fc.config) == ("euler", 2, 0.0)
    assert sampling_settings(fc.config, steps=4) == ("euler", 4, 0.0)
    assert sampling_settings(fc.config, "heun") == ("heun", 5, 2.5)  # another sampler: the generic defaults
    assert sampling_settings(fc.config, "dpmpp_2m", churn=1.0) == ("dpmpp_2m", 5, 0.0)
    from diffsci.weather.diffusion import shipped_checkpoint

    v0 = load_forecaster(shipped_checkpoint().parents[2] / "benchmarks" / "data" / "weather_denoise_v0.pt")
    assert sampling_settings(v0.config) == ("heun", 5, 2.5)  # written before sampling settings were recorded
    ds = generate(grid=(16, 32), hours=3, trajectories=1, seed=9, spinup_hours=6, progress=False)
    from diffsci.weather.forecast import ForecastSettings, forecast

    fds = forecast(fc, ds, ForecastSettings(lead_hours=1, members=2), progress=False)
    assert (fds.attrs.get("sampler"), int(fds.attrs.get("noise_levels")), float(fds.attrs.get("churn"))) == ("euler", 2, 0.0)


def test_crps_rollout_conditions_members_on_their_own_states(crps_run):
    """crps_rollout = 3: the loss is the mean of the first step's term (the same as without a
    rollout) and two later terms, each the fair CRPS of states rolled out member by member by
    the euler sampler, recomputed here by hand; gradients reach the weights."""
    from diffsci.core.samplers import sample_euler
    from diffsci.core.spaces import Euclidean
    from diffsci.core.train import Recipe
    from diffsci.weather.diffusion import make_task
    from diffsci.weather.predictor import WeatherCond

    tables = json.loads((crps_run / "cfg.json").read_text())
    tables["model"]["crps_rollout"] = 3
    task = make_task(Recipe.from_tables("weather-graph-diffusion", tables, data={"path": str(crps_run / "tiny.nc")}))
    assert int(task.starts.max()) + 4 < 30  # windows of 2 + 3 states inside the one trajectory
    model = load_bundle(crps_run / "run" / "latest.pt", "weather-graph-diffusion").model.train()
    batch = task.sample_batch(torch.Generator().manual_seed(2), 2)
    assert batch.later.shape == (4, *batch.target.shape) and batch.later_hour.shape == (2, 2, 2)
    torch.testing.assert_close(task.normalizer.residual(batch.later[0], batch.later[1]), batch.target)
    loss = task.crps_loss(model, batch)

    cfg, norm, w = task.config, task.normalizer, task.weights
    first = task.sample_members(model, batch)
    terms = [(w * fair_crps(first, batch.target)).mean()]
    gen = torch.Generator().manual_seed(batch.noise_seed + 1)
    times, space = cfg.schedule.time_grid(2), Euclidean(cfg.schedule)
    x_prev = batch.later[0].repeat(3, 1, 1, 1)
    x_cur = norm.state(x_prev, first.flatten(0, 1))
    for j in range(2):
        cond = WeatherCond(norm.condition(x_prev, x_cur), batch.later_hour[j].repeat(3, 1))
        eps = torch.randn(x_cur.shape, generator=gen)
        x_prev, x_cur = x_cur, norm.state(x_cur, sample_euler(model, cfg.sigma_max * eps, times, space=space, cond=cond))
        err = (x_cur - batch.later[j + 2].repeat(3, 1, 1, 1)) / norm.residual_std
        terms.append((w * fair_crps(err.reshape(3, 2, *err.shape[1:]), torch.zeros_like(err[:2]))).mean())
    torch.testing.assert_close(loss, sum(terms) / 3, rtol=1e-5, atol=1e-6)
    loss.backward()
    assert model.net.net.out.weight.grad.abs().sum() > 0
    # crps_lead_power p: step k's term weighs k^-p (leads 1, 2, 3 here), the loss their weighted mean
    task.config = dataclasses.replace(task.config, crps_lead_power=1.0)
    with torch.no_grad():
        weighted = task.crps_loss(model, batch)
    want = (terms[0] + terms[1] / 2 + terms[2] / 3) / (1 + 1 / 2 + 1 / 3)
    torch.testing.assert_close(weighted, want.detach(), rtol=1e-5, atol=1e-6)
    assert abs(float(weighted) - float(loss)) > 1e-6

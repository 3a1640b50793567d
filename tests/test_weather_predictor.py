"""The weather predictor stack: normalisation in one place, the rollout on the inputs' device,
and the explicit migration of the shipped checkpoints."""

import dataclasses

import numpy as np
import pytest
import torch

from diffsci.core.checkpoint import load_bundle, load_checkpoint, migrate
from diffsci.core.errors import CheckpointError
from diffsci.core.schedules import EDM
from diffsci.core.samplers import get_sampler
from diffsci.core.spaces import Euclidean
from diffsci.weather.data import NormStats
from diffsci.weather.diffusion import KIND, KIND_DETERMINISTIC, shipped_checkpoint, upgrade_v0
from diffsci.weather.predictor import (DiffusionStep, DirectStep, NormalizedResidual, Normalizer, WeatherCond,
                                       hour_features, rollout)

STATS = NormStats(("z", "u"), (100.0, -2.0), (10.0, 4.0), (0.5, 2.0))
DET = shipped_checkpoint().parents[2] / "benchmarks" / "data" / "deterministic_weather.pt"
DENOISE_V0 = DET.parent / "weather_denoise_v0.pt"  # the denoising checkpoint shipped until the CRPS fine-tune


def test_normalizer_round_trip_and_formulas():
    norm = Normalizer.from_stats(STATS)
    x_prev, x_cur, x_next = (torch.randn(3, 2, 4, 5, dtype=torch.float32) * 10 + 50 for _ in range(3))
    cond = norm.condition(x_prev, x_cur)
    assert cond.shape == (3, 4, 4, 5)
    np.testing.assert_allclose(cond[:, 1].numpy(), (x_prev[:, 1].numpy() + 2.0) / 4.0, rtol=1e-6)
    np.testing.assert_allclose(cond[:, 2].numpy(), (x_cur[:, 0].numpy() - 100.0) / 10.0, rtol=1e-6)
    r = norm.residual(x_cur, x_next)
    np.testing.assert_allclose(r[:, 0].numpy(), (x_next[:, 0] - x_cur[:, 0]).numpy() / 0.5, rtol=1e-5)
    torch.testing.assert_close(norm.state(x_cur, r), x_next)


def test_normalized_residual_wraps_the_inner_predictor():
    seen = {}

    def inner(cond, generators):
        seen["cond"] = cond
        return torch.ones_like(cond.prev[:, :2])  # a residual of one residual_std

    x_prev, x_cur = torch.zeros(1, 2, 3, 3), torch.full((1, 2, 3, 3), 100.0)
    x_next = NormalizedResidual(inner, STATS)(x_prev, x_cur, torch.zeros(1, 2), None)
    assert torch.equal(x_next[0, 0], torch.full((3, 3), 100.5)) and torch.equal(x_next[0, 1], torch.full((3, 3), 102.0))
    assert torch.allclose(seen["cond"].prev[0, 0], torch.full((3, 3), -10.0))


def test_rollout_feeds_states_hours_and_boundary():
    valid = np.array(["2000-01-01T06:00", "2000-01-01T18:00", "2000-01-02T00:00"], dtype="datetime64[ns]")
    hours = []

    def step(x_prev, x_cur, hour, generators):  # x_next = 2 x_cur - x_prev (linear extrapolation)
        hours.append(hour)
        return 2 * x_cur - x_prev

    x_prev, x_cur = torch.zeros(2, 1, 3, 4), torch.ones(2, 1, 3, 4)
    mask = torch.zeros(3, 4, dtype=torch.bool)
    mask[0] = True
    values = torch.full((3, 1, 3, 4), -7.0)
    out = rollout(step, x_prev, x_cur, valid, None, boundary=(mask, values))
    assert out.shape == (2, 3, 1, 3, 4)
    assert (out[:, :, 0, 0] == -7.0).all()  # the band takes the boundary values after every step
    assert torch.equal(out[:, :, 0, 1:], torch.tensor([2.0, 3.0, 4.0])[None, :, None, None].expand(2, 3, 2, 4))
    torch.testing.assert_close(hours[1], torch.tensor([[-1.0, 0.0]] * 2), atol=1e-6, rtol=0)  # 18:00
    torch.testing.assert_close(hours[2], hour_features(np.full(2, valid[2])))


def test_rollout_builds_every_tensor_on_the_inputs_device():
    """On the ``meta`` device a tensor made anywhere else cannot be mixed in (torch refuses), so
    a rollout through both step kinds that ends on ``meta`` made all its tensors there. (The
    core samplers check values, which meta tensors do not have: a one-call sampler stands in.)"""
    meta = torch.device("meta")
    x_prev, x_cur = torch.empty(2, 2, 4, 8, device=meta), torch.empty(2, 2, 4, 8, device=meta)
    mask = torch.zeros(4, 8, dtype=torch.bool)
    mask[0] = True
    boundary = (mask, torch.zeros(3, 2, 4, 8))  # on the CPU: the rollout moves them
    valid = np.array(["2000-01-01T00", "2000-01-01T01", "2000-01-01T02"], dtype="datetime64[ns]")
    w = torch.ones(2, 4, 1, 1, device=meta)
    seen = []

    def net(x, t, cond):  # a stand-in network: a fixed linear map of the conditioning
        seen.extend(a.device for a in (cond.prev, cond.hour) + (() if x is None else (x, t)))
        return (cond.prev * w).sum(1, keepdim=True).expand(-1, 2, -1, -1) if x is None else x * 0.5

    def one_call(denoise, x, times, *, space, cond, generator):
        return denoise(x, torch.full((x.shape[0],), float(times[0]), device=x.device), cond)

    schedule = EDM()
    for inner in (DirectStep(net), DiffusionStep(net, Euclidean(schedule), one_call, schedule.time_grid(2))):
        out = rollout(NormalizedResidual(inner, STATS), x_prev, x_cur, valid, None, boundary=boundary)
        assert out.device == meta and out.shape == (2, 3, 2, 4, 8)
    assert len(seen) == 3 * 2 + 3 * 4 and set(seen) == {meta}


def test_diffusion_step_draws_its_prior_from_the_member_generators():
    schedule = EDM()
    step = DiffusionStep(lambda x, t, c: torch.zeros_like(x), Euclidean(schedule), get_sampler("euler"),
                         schedule.time_grid(1))
    cond = WeatherCond(torch.zeros(2, 4, 3, 3), torch.zeros(2, 2))
    gens = [torch.Generator().manual_seed(s) for s in (5, 6)]
    a = step(cond, gens)
    b = step(WeatherCond(cond.prev[1:], cond.hour[1:]), [torch.Generator().manual_seed(6)])
    assert a.shape == (2, 2, 3, 3) and torch.equal(a[1:], b)  # member 1 does not depend on member 0


# ---------------------------------------------------------------------- checkpoint migration
@pytest.mark.parametrize("path,kind,net", [(DENOISE_V0, KIND, "EDMPrecond"),
                                           (DET, KIND_DETERMINISTIC, "ResidualNet")])
def test_version_0_checkpoints_load_through_the_migration(path, kind, net):
    raw = load_checkpoint(path)
    assert "config_version" not in raw and "deterministic" in raw["model_config"]  # version 0 on disk
    bundle = load_bundle(path, (KIND, KIND_DETERMINISTIC))
    assert bundle.kind == kind and bundle.migrated_from == 0 and type(bundle.model).__name__ == net
    assert bundle.config.time_step_hours == 1.0 and bundle.config.units is None and bundle.config.boundary_width == 0
    assert not hasattr(bundle.config, "deterministic")
    # the migrated weights are the stored ones, tensor for tensor
    state = bundle.model.state_dict()
    prefix = "net." if kind == KIND_DETERMINISTIC else ""
    assert len(state) == len(raw["ema"]) and all(torch.equal(state[k[len(prefix):]], v) for k, v in raw["ema"].items())


def test_shipped_checkpoint_is_current_and_records_its_sampler():
    """The shipped diffusion checkpoint is version 1, trained with the crps objective, and
    records the few-step sampler forecasts use by default."""
    raw = load_checkpoint(shipped_checkpoint())
    assert raw["config_version"] == 1 and raw["kind"] == KIND and "optimizer" not in raw
    bundle = load_bundle(None, KIND)
    cfg = bundle.config
    assert bundle.migrated_from is None and cfg.objective == "crps" and cfg.crps_rollout > 1
    assert (cfg.sampler, cfg.sampler_steps, cfg.churn) == ("euler", 2, 0.0)
    assert bundle.provenance is not None and bundle.provenance.files[0].sha256


def test_upgrade_v0_normalises_channels_and_refuses_a_contradiction():
    ck = load_checkpoint(DET)
    old = dict(ck, model_config={**ck["model_config"], "channels": ["z@500", "u", "v", "vo"]},
               extra={"norm_stats": {**ck["extra"]["norm_stats"], "channels": ["z@500", "u", "v", "vo"]}})
    new, version = migrate(old)
    assert version == 0 and new["config_version"] == 1
    assert new["model_config"]["channels"] == ["z500", "u", "v", "vo"]
    assert new["extra"]["norm_stats"]["channels"] == ["z500", "u", "v", "vo"]
    assert sorted(new["ema"]) == sorted(k[len("net."):] for k in ck["ema"])
    assert old["model_config"]["channels"][0] == "z@500" and "deterministic" in old["model_config"]  # input kept
    with pytest.raises(CheckpointError, match="contradicts"):
        upgrade_v0(dict(ck, kind=KIND))
    with pytest.raises(CheckpointError, match="version-0 wrapper"):
        upgrade_v0(dict(ck, ema={"out.weight": torch.zeros(1)}))
    assert dataclasses.is_dataclass(load_bundle(DET).config)

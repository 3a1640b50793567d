"""Activation checkpointing of the weather graph network (``train.activation_checkpointing``):
the same loss and gradients, fewer saved activations, switched on by the training config."""

import json

import numpy as np
import pytest
import torch

import diffsci.weather.model as model_module
from diffsci.core.cli import main
from diffsci.core.config import from_dict
from diffsci.core.errors import DiffsciError
from diffsci.core.train import TrainConfig, set_activation_checkpointing
from diffsci.weather.data import NormStats
from diffsci.weather.diffusion import ResidualTask, WeatherModelConfig, build_denoiser
from diffsci.weather.generator import generate
from diffsci.weather.model import GraphNet

H, W, C = 8, 16, 2


def _task(**options) -> ResidualTask:
    lat = tuple(np.linspace(-78.75, 78.75, H).tolist())
    lon = tuple((np.arange(W) * 22.5).tolist())
    cfg = WeatherModelConfig(latent=8, layers=2, refinements=1, channels=("a", "b"), variables=("a", "b"),
                             latitude=lat, longitude=lon, **options)
    stats = NormStats(("a", "b"), (1.0, -2.0), (2.0, 0.5), (0.3, 0.2))
    fields = np.random.default_rng(0).normal(size=(12, C, H, W)).astype(np.float32)
    times = np.datetime64("2000-01-01T00") + np.arange(12) * np.timedelta64(1, "h")
    return ResidualTask(cfg, stats, fields, np.arange(12 - 2 - cfg.crps_rollout), times)


def _model(task) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_denoiser(task.config)
    for p in model.parameters():  # zero-initialised read-out and FiLM would hide differences
        torch.nn.init.normal_(p, std=0.2)
    return model


def _loss_and_grads(task, model, on: bool, chunk: int = 40):
    assert set_activation_checkpointing(model, on) == 1
    for m in model.modules():
        if isinstance(m, GraphNet):
            m.chunk_edges = chunk  # several chunks of the encoder's and decoder's edges
    model.zero_grad(set_to_none=True)
    loss = task.loss(model, task.sample_batch(torch.Generator().manual_seed(3), 2))
    loss.backward()
    return loss.detach(), {k: p.grad.clone() for k, p in model.named_parameters()}


@pytest.mark.parametrize("options", [{}, {"objective": "crps", "crps_rollout": 2, "sampler": "euler",
                                          "sampler_steps": 2}],
                         ids=["denoise", "crps-rollout"])
def test_checkpointing_gives_the_same_loss_and_gradients(options, monkeypatch):
    task = _task(**options)
    model = _model(task)
    ref_loss, ref_grads = _loss_and_grads(task, model, False)
    calls = []
    real = model_module.checkpoint
    monkeypatch.setattr(model_module, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    loss, grads = _loss_and_grads(task, model, True)
    assert calls, "no block ran under torch.utils.checkpoint"
    assert abs(float(loss) - float(ref_loss)) <= 1e-6 * max(1.0, abs(float(ref_loss)))
    assert grads.keys() == ref_grads.keys()
    for k, g in ref_grads.items():
        assert torch.allclose(grads[k], g, atol=1e-6, rtol=1e-5), (k, (grads[k] - g).abs().max())
    assert any(float(g.abs().max()) > 0 for g in ref_grads.values())


def _saved_bytes(task, model, on: bool) -> int:
    """Bytes of the distinct tensor storages autograd saves for the backward pass (outside the
    checkpointed blocks, whose activations are not kept)."""
    set_activation_checkpointing(model, on)
    seen = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    batch = task.sample_batch(torch.Generator().manual_seed(3), 2)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = task.loss(model, batch)
    loss.backward()
    return sum(seen.values())


def test_checkpointing_saves_fewer_activations():
    task = _task()
    model = _model(task)
    off, on = _saved_bytes(task, model, False), _saved_bytes(task, model, True)
    assert on < off / 2, (on, off)


def test_train_config_option_defaults_off_and_is_checked():
    assert from_dict(TrainConfig, {}).activation_checkpointing is False  # old train tables and checkpoints
    assert from_dict(TrainConfig, {"activation_checkpointing": True}).activation_checkpointing is True
    with pytest.raises(DiffsciError, match="activation_checkpointing"):
        from_dict(TrainConfig, {"activation_checkpointing": "yes"})
    with pytest.raises(DiffsciError, match="does not support"):
        set_activation_checkpointing(torch.nn.Linear(2, 2), True)


def test_weather_train_with_checkpointing(tmp_path, monkeypatch):
    """``train.activation_checkpointing: true`` in the config runs the network's blocks under
    torch.utils.checkpoint and ends with the loss of the run without it."""
    ds = generate(grid=(16, 32), hours=12, trajectories=1, seed=5, spinup_hours=6, progress=False)
    ds.to_netcdf(tmp_path / "d.nc", engine="netcdf4")
    calls = []
    real = model_module.checkpoint
    monkeypatch.setattr(model_module, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    losses = []
    for on in (False, True):
        cfg = {"model": {"latent": 8, "layers": 1, "refinements": 1},
               "train": {"batch_size": 2, "activation_checkpointing": on}}
        (tmp_path / "cfg.json").write_text(json.dumps(cfg))
        out = tmp_path / f"run{on}"
        assert main(["weather", "train", "--data", str(tmp_path / "d.nc"), "--out", str(out), "--config",
                     str(tmp_path / "cfg.json"), "--steps", "2", "--device", "cpu"]) == 0
        assert bool(calls) == on
        losses.append(json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["loss"])
    assert abs(losses[0] - losses[1]) < 1e-5

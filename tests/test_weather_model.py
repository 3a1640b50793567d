"""The weather graph network and residual diffusion task."""

import json

import numpy as np
import pytest
import torch
import xarray as xr

from diffsci.core.cli import main
from diffsci.core.config import file_record, from_dict
from diffsci.core.checkpoint import load_checkpoint
from diffsci.weather.diffusion import ResidualTask, WeatherModelConfig, build_denoiser
from diffsci.weather.predictor import WeatherCond, hour_features
from diffsci.weather.generator import generate
from diffsci.weather.model import CondLayerNorm


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    ds = generate(grid=(16, 32), hours=30, trajectories=2, seed=5, spinup_hours=12, progress=False)
    path = tmp_path_factory.mktemp("wdata") / "tiny.nc"
    ds.to_netcdf(path, engine="netcdf4")
    return path


TINY_CFG = {"model": {"latent": 16, "layers": 1, "refinements": 1}, "train": {"batch_size": 2, "ckpt_every": 2, "log_every": 1}}


@pytest.fixture(scope="module")
def tiny_run(tiny_data, tmp_path_factory):
    d = tmp_path_factory.mktemp("wrun")
    (d / "cfg.json").write_text(json.dumps(TINY_CFG))
    assert main(["weather", "train", "--data", str(tiny_data), "--out", str(d / "run"), "--config", str(d / "cfg.json"),
                 "--steps", "2", "--device", "cpu"]) == 0
    return d


def test_area_weights_formula():
    from diffsci.weather.grid import cell_area_weights

    lat = np.linspace(-87.1875, 87.1875, 32)
    w = cell_area_weights(lat)
    assert abs(w.mean() - 1) < 1e-6
    assert np.allclose(w, w[::-1]) and w[16] > w[0]
    b = np.deg2rad(np.concatenate([[-90], (lat[1:] + lat[:-1]) / 2, [90]]))
    ref = np.diff(np.sin(b))
    assert np.allclose(w, ref / ref.mean(), atol=1e-6)


def test_hour_features():
    f = hour_features(np.array(["2000-01-01T06:00", "2000-01-01T18:00"], dtype="datetime64[m]"))
    assert torch.allclose(f, torch.tensor([[1.0, 0.0], [-1.0, 0.0]]), atol=1e-6)


def test_conditional_layer_norm_uses_noise():
    ln = CondLayerNorm(8, 4)
    torch.nn.init.normal_(ln.film.weight)
    x = torch.randn(2, 5, 8)
    a = ln(x, torch.zeros(2, 4))
    b = ln(x, torch.ones(2, 4))
    assert torch.allclose(a.mean(-1), torch.zeros(2, 5), atol=1e-5) and not torch.allclose(a, b)


def test_task_targets_are_normalised_residuals(tiny_data, tiny_run):
    ck = load_checkpoint(tiny_run / "run" / "latest.pt", expected_kind="weather-graph-diffusion")
    cfg = from_dict(WeatherModelConfig, ck["model_config"])
    from diffsci.weather.data import NormStats, open_weather, stack_channels, window_starts

    stats = NormStats.from_dict(ck["extra"]["norm_stats"])
    ds = open_weather(tiny_data)
    fields, _ = stack_channels(ds, cfg.variables)
    task = ResidualTask(cfg, stats, fields, window_starts(ds), ds.time.values)
    batch = task.sample_batch(torch.Generator().manual_seed(0), 64)
    # residual targets have ~unit std per channel (the std of one-step residuals normalises them)
    std = batch.target.std(dim=(0, 2, 3))
    assert ((std > 0.6) & (std < 1.6)).all(), std
    # windows never cross trajectories: prev[1] (normalised) + target*rstd/std continues prev
    assert torch.isfinite(task.loss(build_denoiser(cfg), batch))
    # the conditioning is the normalised pair of states before the target
    x1 = batch.cond.prev[:, len(cfg.channels):] * torch.tensor(stats.std)[:, None, None] + torch.tensor(stats.mean)[:, None, None]
    x2 = x1 + batch.target * torch.tensor(stats.residual_std)[:, None, None]
    i = [int(np.argmin(np.abs(fields - x1[b].numpy()).reshape(len(fields), -1).max(1))) for b in range(4)]
    np.testing.assert_allclose(x2[:4].numpy(), fields[[j + 1 for j in i]], rtol=1e-4, atol=1e-2)


def test_model_output_shape_and_batch_independence(tiny_run):
    ck = load_checkpoint(tiny_run / "run" / "latest.pt")
    cfg = from_dict(WeatherModelConfig, ck["model_config"])
    model = build_denoiser(cfg)
    model.load_state_dict(ck["model"])
    b, c = 3, len(cfg.channels)
    h, w = cfg.grid_shape
    cond = WeatherCond(torch.randn(b, 2 * c, h, w), torch.randn(b, 2))
    x, t = torch.randn(b, c, h, w), torch.rand(b)
    with torch.no_grad():
        out = model(x, t, cond)
        assert out.shape == (b, c, h, w) and torch.isfinite(out).all()
        # each example is processed independently of the others in the batch
        out1 = model(x[1:2], t[1:2], WeatherCond(cond.prev[1:2], cond.hour[1:2]))
    assert torch.allclose(out1, out[1:2], atol=1e-5)


def test_deterministic_baseline_trains(tiny_data, tmp_path):
    (tmp_path / "cfg.json").write_text(json.dumps(TINY_CFG))
    assert main(["weather", "train", "--data", str(tiny_data), "--out", str(tmp_path / "det"), "--config",
                 str(tmp_path / "cfg.json"), "--steps", "2", "--deterministic", "--device", "cpu"]) == 0
    ck = load_checkpoint(tmp_path / "det" / "latest.pt", expected_kind="weather-graph-deterministic")
    assert "deterministic" not in ck["model_config"] and ck["config_version"] == 1
    assert not any(k.startswith("net.net.") for k in ck["ema"])  # the direct network itself, no wrapper


def test_checkpoint_records_version_and_provenance(tiny_data, tiny_run):
    import pandas as pd

    ck = load_checkpoint(tiny_run / "run" / "latest.pt")
    assert ck["config_version"] == 1
    prov = ck["provenance"]
    rec = file_record(tiny_data)
    assert [f["sha256"] for f in prov["files"]] == [rec.sha256] and prov["files"][0]["size"] == rec.size
    times = xr.open_dataset(tiny_data).time.values
    assert pd.Timestamp(prov["time_start"]) == pd.Timestamp(times.min())
    assert pd.Timestamp(prov["time_end"]) == pd.Timestamp(times.max()) and prov["seed"] == 0


def test_train_warm_starts_from_init(tiny_data, tiny_run, tmp_path):
    """--init without a 'model' table: the init checkpoint's model options and weights."""
    import torch

    init = tiny_run / "run" / "latest.pt"
    (tmp_path / "cfg.json").write_text(json.dumps({"train": {"batch_size": 2, "lr": 1e-12, "warmup_steps": 0}}))
    assert main(["weather", "train", "--data", str(tiny_data), "--out", str(tmp_path / "warm"), "--config",
                 str(tmp_path / "cfg.json"), "--steps", "1", "--device", "cpu", "--init", str(init)]) == 0
    old, new = load_checkpoint(init), load_checkpoint(tmp_path / "warm" / "latest.pt")
    assert new["model_config"]["latent"] == 16 and new["step"] == 1
    for k, v in old["ema"].items():  # a tiny learning rate: the weights stay the init's
        assert torch.allclose(new["model"][k], v, atol=1e-6), k


def test_train_bad_input(tmp_path, capsys, tiny_data):
    assert main(["weather", "train", "--data", str(tmp_path / "missing.nc"), "--out", str(tmp_path / "r")]) == 2
    ds = xr.open_dataset(tiny_data).load()
    ds["z"][3, 2, 2] = np.nan
    bad = tmp_path / "nan.nc"
    ds.to_netcdf(bad, engine="netcdf4")
    assert main(["weather", "train", "--data", str(bad), "--out", str(tmp_path / "r"), "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "NaN" in err and "Traceback" not in err


def _reference_graphnet(net, x, c_noise):
    """Textbook interaction network with the same weights: concatenate, then MLP (independent of
    the split-weight, project-before-gather forward of GraphNet)."""
    import torch.nn.functional as F

    from diffsci.weather.model import fourier_features

    b = x.shape[0]
    emb = net.noise_mlp(fourier_features(c_noise, net.cfg.noise_features)) if net.noise_mlp is not None else None

    def mlp(m, inp):
        h = m.l2(F.silu(m.l1(inp)))
        if m.norm.film is None or emb is None:
            return m.norm.norm(h)  # plain LayerNorm with its own affine parameters
        y = F.layer_norm(h, (h.shape[-1],))
        scale, shift = m.norm.film(emb).chunk(2, -1)
        return y * (1 + scale[:, None]) + shift[:, None]

    def ex(a):
        return a.unsqueeze(0).expand(b, *a.shape)

    hg = mlp(net.grid_embed, torch.cat([x, ex(net.g_grid_node_attr)], -1))
    hm = mlp(net.mesh_embed, ex(net.g_mesh_node_attr))
    src, dst = net.g_g2m_edge_index
    e = mlp(net.g2m_embed, ex(net.g_g2m_edge_attr))
    msg = mlp(net.enc_msg, torch.cat([e, hg[:, src], hm[:, dst]], -1))
    agg = torch.zeros(b, net.n_mesh, msg.shape[-1]).index_add_(1, dst, msg)
    hm = hm + mlp(net.enc_mesh, torch.cat([hm, agg], -1))
    hg = hg + mlp(net.enc_grid, hg)
    src, dst = net.g_mesh_edge_index
    e = mlp(net.mesh_edge_embed, ex(net.g_mesh_edge_attr))
    for em, nm in zip(net.proc_edge, net.proc_node):
        e = e + mlp(em, torch.cat([e, hm[:, src], hm[:, dst]], -1))
        hm = hm + mlp(nm, torch.cat([hm, torch.zeros_like(hm).index_add_(1, dst, e)], -1))
    src, dst = net.g_m2g_edge_index
    e = mlp(net.m2g_embed, ex(net.g_m2g_edge_attr))
    msg = mlp(net.dec_msg, torch.cat([e, hm[:, src], hg[:, dst]], -1))
    hg = hg + mlp(net.dec_grid, torch.cat([hg, torch.zeros_like(hg).index_add_(1, dst, msg)], -1))
    return net.out(hg)


@pytest.mark.parametrize("conditional", [True, False])
def test_graphnet_matches_textbook_interaction_network(conditional):
    from diffsci.weather.graph import build_graph
    from diffsci.weather.model import GraphNet, GraphNetConfig

    lat, lon = np.linspace(-84.375, 84.375, 16), np.arange(32) * 11.25
    graph = build_graph(lat, lon, refinements=1)
    torch.manual_seed(0)
    net = GraphNet(GraphNetConfig(in_features=5, out_channels=3, latent=16, layers=2, conditional=conditional), graph)
    for prm in net.parameters():  # zero-initialised read-out and FiLM would hide errors
        torch.nn.init.normal_(prm, std=0.3)
    x, c = torch.randn(3, 16 * 32, 5), torch.randn(3)
    with torch.no_grad():
        out = net(x, c if conditional else None)
        ref = _reference_graphnet(net, x, c)
    assert out.shape == (3, 16 * 32, 3)
    assert torch.allclose(out, ref, atol=1e-4, rtol=1e-4), (out - ref).abs().max()


def test_warm_start_from_the_shipped_version_0_deterministic_checkpoint(tmp_path):
    """core.train migrates a warm-start checkpoint before loading its weights: the shipped
    deterministic baseline (version 0, weights under net.net.*) warm-starts a new run."""
    from pathlib import Path

    from diffsci.core.cli import main
    from diffsci.weather.generator import generate

    data = tmp_path / "d.nc"
    generate(grid=(32, 64), hours=6, seed=1, spinup_hours=6, progress=False).to_netcdf(data, engine="netcdf4")
    shipped = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "deterministic_weather.pt"
    assert main(["weather", "train", "--data", str(data), "--out", str(tmp_path / "run"), "--steps", "1",
                 "--deterministic", "--init", str(shipped), "--device", "cpu"]) == 0
    ck = load_checkpoint(tmp_path / "run")
    assert ck["config_version"] == 1 and ck["step"] == 1

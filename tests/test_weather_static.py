"""Static input fields (land-sea mask, orography) of the weather model: read and checked from the
training data, kept in the checkpoint, never modelled as variables, warm-started as no-ops."""

import json

import numpy as np
import pytest
import torch
import xarray as xr

from diffsci.core.checkpoint import load_checkpoint
from diffsci.core.cli import main
from diffsci.core.errors import DiffsciError
from diffsci.core.train import _load_warm_start
from diffsci.weather.data import open_weather
from diffsci.weather.diffusion import ResidualNet, WeatherModelConfig, shipped_checkpoint
from diffsci.weather.forecast import load_forecaster
from diffsci.weather.generator import generate
from diffsci.weather.predictor import WeatherCond
from diffsci.weather.static import normalize_static_fields, read_static_fields

TINY = {"latent": 16, "layers": 1, "refinements": 1}


def _mask(ds) -> np.ndarray:
    """A land-sea mask (H, W) in 0..1 with land, sea and a coast."""
    lat, lon = np.deg2rad(ds.latitude.values)[:, None], np.deg2rad(ds.longitude.values)[None, :]
    return np.clip(2 * np.sin(2 * lon) * np.cos(lat), 0.0, 1.0).astype(np.float32)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("wstatic")
    ds = generate(grid=(16, 32), hours=12, trajectories=1, seed=3, spinup_hours=6, progress=False)
    ds.to_netcdf(d / "plain.nc", engine="netcdf4")
    ds.assign(lsm=(("latitude", "longitude"), _mask(ds))).to_netcdf(d / "lsm.nc", engine="netcdf4")
    return d


def _train(d, out, model, *extra):
    cfg = d / f"{out}.json"
    cfg.write_text(json.dumps({"model": {**TINY, **model}, "train": {"batch_size": 2, "ckpt_every": 2}}))
    assert main(["weather", "train", "--data", str(d / "lsm.nc"), "--out", str(d / out), "--config", str(cfg),
                 "--steps", "2", "--device", "cpu", *extra]) == 0
    return d / out / "latest.pt"


@pytest.fixture(scope="module")
def runs(files):
    return {"plain": _train(files, "plain", {}), "lsm": _train(files, "lsm", {"static_fields": ["land_sea_mask"]})}


def _cond(cfg, seed=0):
    g = torch.Generator().manual_seed(seed)
    h, w = cfg.grid_shape
    return WeatherCond(torch.randn(2, 2 * len(cfg.channels), h, w, generator=g), torch.randn(2, 2, generator=g))


# ------------------------------------------------------------------------------- reading
def test_read_static_fields_returns_the_file_values_and_accepts_a_constant_time_dim(files):
    ds = xr.open_dataset(files / "lsm.nc")
    lat, lon = ds.latitude.values, ds.longitude.values
    got = read_static_fields(files / "lsm.nc", ["land_sea_mask"], lat, lon)
    assert list(got) == ["lsm"] and np.array_equal(got["lsm"], _mask(ds))
    cds = ds.assign(lsm=ds.lsm.expand_dims(time=ds.time))  # CDS files archive lsm at every time
    assert np.array_equal(read_static_fields(cds, ["lsm"], lat, lon)["lsm"], _mask(ds))
    assert read_static_fields(ds, ["lsm", "orog"], lat, lon, required=False).keys() == {"lsm"}
    wb2 = ds.rename(lsm="geopotential_at_surface")  # WeatherBench 2's orography keeps its name
    assert np.array_equal(read_static_fields(wb2, ["geopotential_at_surface"], lat, lon)["geopotential_at_surface"],
                          _mask(ds))


@pytest.mark.parametrize("change, message", [
    (lambda ds: ds.drop_vars("lsm"), "static field 'lsm' is missing"),
    (lambda ds: ds.assign(lsm=ds.lsm.expand_dims(time=ds.time) * xr.DataArray(np.arange(ds.sizes["time"]), dims="time")),
     "static field 'lsm' varies in time"),
    (lambda ds: ds.assign(lsm=ds.lsm.expand_dims(level=[500.0])), r"static field 'lsm' has dims \('level'"),
    (lambda ds: ds.assign(lsm=ds.lsm.where(ds.latitude > -80)), "static field 'lsm' has 32 NaN"),
    (lambda ds: ds.assign(lsm=ds.lsm * 0 + 1), r"static field 'lsm' is constant \(1 everywhere"),
    (lambda ds: ds.isel(longitude=slice(0, 16)), "longitude grid"),
])
def test_bad_static_fields_are_refused_by_name(files, change, message):
    ds = xr.open_dataset(files / "lsm.nc")
    with pytest.raises(DiffsciError, match=message):
        read_static_fields(change(ds), ["lsm"], ds.latitude.values, ds.longitude.values)


def test_normalize_static_fields_gives_zero_mean_unit_std():
    rng = np.random.default_rng(0)
    a = np.stack([rng.random((4, 6)), 1e4 * rng.standard_normal((4, 6)) + 3e3])
    n = normalize_static_fields(a, ("lsm", "z"))
    assert n.dtype == np.float32
    for f, raw in zip(n, a):
        assert np.allclose(f, (raw - raw.mean()) / raw.std(), atol=1e-6)
    with pytest.raises(DiffsciError, match="'z' has 1 NaN"):
        normalize_static_fields(np.where(np.arange(24).reshape(1, 4, 6) == 5, np.nan, a[1:]), ("z",))


def test_a_file_with_a_2d_lsm_opens_with_lsm_left_out_and_refuses_it_as_a_variable(files):
    assert "lsm" not in open_weather(files / "lsm.nc").data_vars
    with pytest.raises(DiffsciError, match=r"\['lsm'\] have no time dim.*static_fields"):
        open_weather(files / "lsm.nc", variables=["z", "lsm"])


# ------------------------------------------------------------------------------ training
def test_training_stores_the_field_in_the_checkpoint(files, runs):
    ck = load_checkpoint(runs["lsm"])
    mc = ck["model_config"]
    assert mc["static_fields"] == ["lsm"] and "lsm" not in mc["variables"]
    mask = _mask(xr.open_dataset(files / "lsm.nc"))
    assert np.array_equal(np.asarray(mc["static_values"], dtype=np.float32).reshape(mask.shape), mask)
    fc = load_forecaster(runs["lsm"])
    extra = fc.model.net.static_extra  # (G, 1) normalised, rebuilt from the checkpoint alone
    assert torch.allclose(extra[:, 0], torch.from_numpy((mask - mask.mean()) / mask.std()).flatten(), atol=1e-6)
    assert fc.model.net.static_embed.weight.abs().sum() > 0  # trained from zero: the field is used


def test_without_the_option_the_config_and_net_are_as_before(runs):
    mc = load_checkpoint(runs["plain"])["model_config"]
    assert "static_fields" not in mc and "static_values" not in mc and "lsm" not in mc["variables"]
    net = load_forecaster(runs["plain"]).model.net
    assert net.static_embed is None and not any("static" in k for k in net.state_dict())


def test_static_field_refused_as_a_variable_and_with_bad_values(files, runs, tmp_path, capsys):
    (tmp_path / "c.json").write_text(json.dumps({"model": {**TINY, "static_fields": ["lsm"]}}))
    args = ["weather", "train", "--data", str(files / "lsm.nc"), "--out", str(tmp_path / "r"), "--config",
            str(tmp_path / "c.json"), "--steps", "1", "--device", "cpu"]
    assert main([*args, "--variables", "z", "lsm"]) == 2
    assert "['lsm'] named both in data.variables and in model.static_fields" in capsys.readouterr().err
    assert main([*args[:3], str(files / "plain.nc"), *args[4:]]) == 2
    assert "plain.nc: static field 'lsm' is missing" in capsys.readouterr().err
    cfg = load_forecaster(runs["lsm"]).config
    with pytest.raises(DiffsciError, match="need one row of static_values each"):
        WeatherModelConfig(**{**cfg.__dict__, "static_values": ()})


def test_warm_start_from_a_net_without_static_fields_is_unchanged_at_step_0(runs, files):
    plain, static = load_forecaster(runs["plain"]), load_forecaster(runs["lsm"])
    net = ResidualNet(static.config)  # the static config, fresh: static_embed is zero
    weights = plain.model.net.state_dict()
    assert _load_warm_start(net, weights) == ["static_embed.weight"]
    cond = _cond(plain.config)
    x, c = torch.randn(2, len(plain.config.channels), 16, 32), torch.full((2,), 0.3)
    with torch.no_grad():
        assert torch.equal(net(x, c, cond), plain.model.net(x, c, cond))
    # the command line: --init from the run without static fields into a config with them
    (files / "w.json").write_text(json.dumps({"model": {**TINY, "static_fields": ["lsm"]}}))
    assert main(["weather", "train", "--data", str(files / "lsm.nc"), "--out", str(files / "warm"), "--config",
                 str(files / "w.json"), "--steps", "1", "--device", "cpu", "--init", str(runs["plain"])]) == 0


# ------------------------------------------------------------------------------ forecast
def test_forecast_from_init_files_with_and_without_the_field(files, runs, tmp_path, capsys):
    def fc(ck, init, out):
        return main(["weather", "forecast", "--checkpoint", str(ck), "--init", str(init), "--out", str(tmp_path / out),
                     "--quiet", "--steps", "2", "--members", "2", "--lead-hours", "1"])

    assert fc(runs["lsm"], files / "plain.nc", "a.nc") == 0  # the stored field is used
    assert fc(runs["lsm"], files / "lsm.nc", "b.nc") == 0  # the same field in the file: accepted
    a, b = xr.open_dataset(tmp_path / "a.nc"), xr.open_dataset(tmp_path / "b.nc")
    assert "lsm" not in a.data_vars and np.array_equal(a.z.values, b.z.values)
    assert fc(runs["plain"], files / "lsm.nc", "c.nc") == 0  # a model without static fields ignores it
    ds = xr.open_dataset(files / "lsm.nc").load()
    ds.assign(lsm=1.0 - ds.lsm).to_netcdf(tmp_path / "other.nc")
    assert fc(runs["lsm"], tmp_path / "other.nc", "d.nc") == 2
    assert "other.nc: static field 'lsm' differs from the one the checkpoint" in capsys.readouterr().err


def test_forecast_opens_the_init_file_once_and_resolves_the_device_once(files, runs, tmp_path, monkeypatch):
    """Issue 28: with static fields the init file was opened and checked twice (once for the
    states, once for the fields), and the device resolved three times (command, load, forecast)."""
    from diffsci.core import utils
    from diffsci.weather import forecast

    opened, resolved = [], []
    real_open, real_resolve = xr.open_dataset, utils.resolve_device

    def counting_open(path_or_dataset, *args, **kwargs):
        opened.append(str(path_or_dataset))
        return real_open(path_or_dataset, *args, **kwargs)

    def counting_resolve(*args, **kwargs):
        resolved.append(args)
        return real_resolve(*args, **kwargs)

    monkeypatch.setattr(xr, "open_dataset", counting_open)
    monkeypatch.setattr(utils, "resolve_device", counting_resolve)
    monkeypatch.setattr(forecast, "resolve_device", counting_resolve)
    assert main(["weather", "forecast", "--checkpoint", str(runs["lsm"]), "--init", str(files / "lsm.nc"),
                 "--out", str(tmp_path / "fc.nc"), "--quiet", "--steps", "2", "--members", "2", "--lead-hours", "1",
                 "--device", "cpu"]) == 0
    assert opened.count(str(files / "lsm.nc")) == 1
    assert len(resolved) == 1


def test_shipped_checkpoints_load_without_static_fields():
    for path in (shipped_checkpoint(), shipped_checkpoint().parents[2] / "benchmarks" / "data" / "weather_denoise_v0.pt"):
        fc = load_forecaster(path)
        assert fc.config.static_fields == () and fc.config.static_values == ()
        assert fc.model.net.static_embed is None


def test_a_time_invariant_field_given_as_a_variable_is_refused_by_name(files):
    """CDS writes lsm at every time: modelled as a variable it has nothing to forecast (one-step
    residual std 0); the statistics refuse it by name instead of dividing by zero."""
    from diffsci.weather.data import compute_norm_stats

    with xr.open_dataset(files / "plain.nc") as ds:
        ds = ds.load()
    mask = _mask(ds)
    cds = ds.assign(lsm=(("time", "latitude", "longitude"), np.repeat(mask[None], ds.sizes["time"], axis=0)))
    with pytest.raises(DiffsciError, match=r"\['lsm'\] do not change.*static_fields"):
        compute_norm_stats(cds, ["z", "lsm"])
    stats = compute_norm_stats(cds, ["z"])
    assert stats.residual_std[0] > 0

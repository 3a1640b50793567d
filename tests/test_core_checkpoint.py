"""core.config / core.checkpoint / core.train.fit: typed configs, the kind registry, explicit
migrations, bundles and recipes (on the core's 2-D toy kind)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from diffsci.core.checkpoint import (CHECKPOINT_FORMAT, export_checkpoint, load_bundle, load_checkpoint, migrate,
                                     register_kind, save_checkpoint, upgrade_checkpoint)
from diffsci.core.config import Provenance, file_record, from_dict, to_dict
from diffsci.core.errors import CheckpointError, DiffsciError
from diffsci.core.toy import ToyConfig, build_toy
from diffsci.core.train import Recipe, TrainConfig, fit


@dataclass(frozen=True)
class Inner:
    width: int = 4
    sizes: tuple[int, ...] = (1, 2)


@dataclass(frozen=True)
class Outer:
    name: str
    inner: Inner = Inner()
    weights: tuple[float, ...] | None = None


def test_from_dict_is_typed_recursive_and_strict():
    cfg = from_dict(Outer, {"name": "a", "inner": {"width": 8, "sizes": [3, 4]}, "weights": [0.5, 1.5]})
    assert cfg == Outer("a", Inner(8, (3, 4)), (0.5, 1.5))
    assert from_dict(Outer, to_dict(cfg)) == cfg  # round trip through JSON-able dicts
    assert to_dict(cfg)["inner"]["sizes"] == [3, 4]
    with pytest.raises(DiffsciError, match=r"unknown option\(s\) model.inner.widht"):
        from_dict(Outer, {"name": "a", "inner": {"widht": 8}}, where="model")
    with pytest.raises(DiffsciError, match=r"missing required option\(s\) model.name"):
        from_dict(Outer, {}, where="model")
    with pytest.raises(DiffsciError, match="model.inner: expected a table"):
        from_dict(Outer, {"name": "a", "inner": 3}, where="model")


def test_file_record_and_provenance(tmp_path):
    import hashlib

    f = tmp_path / "d.bin"
    f.write_bytes(b"abc" * 1000)
    rec = file_record(f)
    assert rec.sha256 == hashlib.sha256(b"abc" * 1000).hexdigest() and rec.size == 3000
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "x").write_bytes(b"1")
    before = file_record(tmp_path / "store").sha256
    (tmp_path / "store" / "x").write_bytes(b"2")
    assert file_record(tmp_path / "store").sha256 != before  # a folder's digest covers its files' bytes
    p = Provenance(files=(rec,), time_start="2000-01-01T00:00", time_end="2000-01-10T00:00", seed=3)
    assert p.overlaps("2000-01-09", "2000-02-01") and not p.overlaps("2000-01-11", "2000-02-01")
    assert not Provenance().overlaps("2000-01-01", "2001-01-01")
    assert from_dict(Provenance, to_dict(p)) == p


def _toy_checkpoint(path, **extra):
    model = build_toy(ToyConfig(hidden=16, depth=1))
    ck = {"format": CHECKPOINT_FORMAT, "kind": "toy2d", "model_config": to_dict(ToyConfig(hidden=16, depth=1)),
          "ema": model.state_dict(), "step": 5, **extra}
    return save_checkpoint(path, ck), model


def test_load_bundle_migrates_version_0_and_loads_weights(tmp_path):
    path, model = _toy_checkpoint(tmp_path / "old.pt")  # no config_version: written before versions
    b = load_bundle(path, "toy2d")
    assert b.migrated_from == 0 and b.config == ToyConfig(hidden=16, depth=1) and b.step == 5
    assert b.provenance is None
    for k, v in model.state_dict().items():
        assert torch.equal(b.model.state_dict()[k], v)
    assert not b.model.training
    init = load_bundle(path, "toy2d", weights="init")
    assert "untrained" in init.source
    up = upgrade_checkpoint(path, tmp_path / "new.pt")
    ck = load_checkpoint(up)
    assert ck["config_version"] == 1 and ck["migrated"] == {"from": 0, "to": 1}
    assert load_bundle(up, "toy2d").migrated_from is None


def test_load_bundle_refuses_foreign_newer_and_misfit(tmp_path):
    path, _ = _toy_checkpoint(tmp_path / "a.pt")
    with pytest.raises(CheckpointError, match="expected 'weather"):
        load_bundle(path, ("weather-graph-diffusion",))
    newer, _ = _toy_checkpoint(tmp_path / "b.pt", config_version=7)
    with pytest.raises(CheckpointError, match="newer than this diffsci"):
        load_bundle(newer)
    bad, _ = _toy_checkpoint(tmp_path / "c.pt")
    ck = load_checkpoint(bad)
    ck["model_config"]["hidden"] = 32  # the weights no longer fit the config
    save_checkpoint(bad, ck)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_bundle(bad)
    ck["model_config"]["hiddn"] = 32
    save_checkpoint(bad, ck)
    with pytest.raises(DiffsciError, match="unknown option"):
        load_bundle(bad)
    with pytest.raises(CheckpointError, match="no model kind 'nope'"):
        migrate({"kind": "nope"})


def test_register_kind_needs_every_migration():
    with pytest.raises(DiffsciError, match="no migration"):
        register_kind("toy-x", ToyConfig, build_toy, version=2, migrations={0: lambda ck: ck})


def test_fit_recipe_and_revalidated_export(tmp_path, capsys):
    recipe = Recipe.from_tables("toy2d", {"model": {"hidden": 16, "depth": 1}, "train": {"steps": 3}},
                                train={"ckpt_every": 3, "device": "cpu", "batch_size": 8})
    assert isinstance(recipe.train, TrainConfig) and recipe.model == ToyConfig(hidden=16, depth=1)
    assert recipe.train.lr == 2e-3  # the kind's default, under the table's and the arguments' values
    res = fit(recipe, tmp_path / "run", progress=False)
    assert res.step == 3
    ck = load_checkpoint(tmp_path / "run")
    assert ck["config_version"] == 1 and ck["model_config"]["hidden"] == 16
    # the same recipe gives the same initial weights (seeded by the recipe), whatever the global RNG
    torch.manual_seed(123)
    fit(recipe, tmp_path / "run2", progress=False)
    a, b = load_checkpoint(tmp_path / "run"), load_checkpoint(tmp_path / "run2")
    assert all(torch.equal(a["ema"][k], b["ema"][k]) for k in a["ema"])
    # warm start without a model table takes the init checkpoint's model options
    again = Recipe.from_tables("toy2d", {"train": {"steps": 1}}, init=tmp_path / "run")
    assert again.model == recipe.model
    with pytest.raises(DiffsciError, match="unknown table"):
        Recipe.from_tables("toy2d", {"modle": {}})
    # export overrides are re-validated by the kind's config class
    with pytest.raises(DiffsciError, match="no model configuration key"):
        export_checkpoint(tmp_path / "run", tmp_path / "x.pt", model_config={"hiden": 3})
    out = export_checkpoint(tmp_path / "run", tmp_path / "slim.pt", model_config={"rho": 5.0})
    assert load_bundle(out).config.rho == 5.0


def test_kind_module_imported_on_demand():
    """load_bundle(None, kind) finds the module that registers the kind through the
    diffsci.kinds entry points: no domain import first; 'init' weights do not touch the RNG."""
    import subprocess
    import sys

    code = ("import sys, torch\n"
            "from diffsci.core.checkpoint import load_bundle\n"
            "assert 'diffsci.protein.model.diffusion' not in sys.modules\n"
            "state = torch.random.get_rng_state()\n"
            "a = load_bundle(None, 'protein-frames', weights='init')\n"
            "b = load_bundle(None, 'protein-frames', weights='init')\n"
            "assert torch.equal(state, torch.random.get_rng_state())\n"
            "assert all(torch.equal(a.model.state_dict()[k], v) for k, v in b.model.state_dict().items())\n"
            "print(a.kind, a.migrated_from)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["protein-frames", "None"]  # the shipped v2 file is written at the current version

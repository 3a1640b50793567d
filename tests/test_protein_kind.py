"""The registered model kind ``protein-frames``: loading through the explicit migration,
upgrading checkpoints, training through a recipe (provenance, defaults), the sampling space."""

import dataclasses
import json

import pytest
import torch

from diffsci.core.checkpoint import (default_checkpoint_path, load_bundle, load_checkpoint, save_checkpoint,
                                     upgrade_checkpoint)
from diffsci.core.cli import main
from diffsci.core.config import file_record, to_dict
from diffsci.core.errors import DiffsciError
from diffsci.core.spaces import SO3Diffusion, SO3Flow
from diffsci.core.train import Recipe, fit
from diffsci.protein.io.dataset import bundled_dataset_path
from diffsci.protein.model.diffusion import (KIND, TRAIN_DEFAULTS, ProteinModelConfig, build_model, build_space,
                                       shipped_checkpoint, ss_checkpoint, upgrade_v0, upgrade_v1, v1_checkpoint)
from diffsci.protein.model.network import FrameNetConfig
from diffsci.protein.design.request import sampling_rotation_rate
from diffsci.protein.design.sampling import load_model

TINY = {"scalars": 8, "vectors": 4, "tensors": 0, "layers": 1, "k_neighbors": 6}


def test_the_v1_checkpoint_loads_through_the_migration():
    ck = load_checkpoint(v1_checkpoint("v1"))
    assert "config_version" not in ck  # written before config versions: version 0
    bundle = load_bundle(v1_checkpoint("v1"), KIND)
    assert bundle.migrated_from == 0 and bundle.kind == KIND
    # its net table has frame_edges (nothing for version 1 to fill); version 2 adds SS conditioning, off;
    # pair_edges (an SS-conditioned net's option) takes its default, off, and the v2 options theirs
    # (absolute-index position features, no long-range edges: the v1 network exactly)
    want = {**ck["model_config"], "net": {**ck["model_config"]["net"], "ss_conditioning": False, "pair_edges": False,
                                          "position": "index", "far_neighbors": 0},
            "ss_drop": 0.25, "ss_pair_drop": 0.5, "ss_segment_mask": 0.1, "churn": 0.0, "churn_tmax": 0.7,
            "rollout_prob": 0.0, "rollout_span": 0.25, "rollout_steps": 2, "bond_weight": 0.0, "t_stop": 0.0}
    assert to_dict(bundle.config) == want and not bundle.config.net.ss_conditioning
    sd = bundle.model.state_dict()
    assert sd.keys() == ck["ema"].keys() and all(torch.equal(sd[k], ck["ema"][k]) for k in sd)
    lm = load_model("v1")
    assert lm.config == bundle.config and lm.source == bundle.source
    assert load_model("v1-ss").config.net.ss_conditioning and load_model("v1-ss").source.endswith("v1/ss_checkpoint.pt")
    with pytest.raises(DiffsciError, match="unknown v1 checkpoint"):
        v1_checkpoint("v0")


def test_the_shipped_checkpoint_is_one_current_v2_file_that_serves_ss_requests_and_ss_is_its_alias():
    bundle = load_bundle(None, KIND)
    assert default_checkpoint_path(KIND) == shipped_checkpoint() and bundle.source == str(shipped_checkpoint())
    assert bundle.migrated_from is None  # written at the current config version
    cfg = bundle.config
    assert cfg.net.ss_conditioning and cfg.net.self_condition and cfg.net.position == "termini"
    assert cfg.net.far_neighbors > 0 and cfg.max_length >= 384 and cfg.t_stop > 0
    assert ss_checkpoint() == shipped_checkpoint()
    lm, alias = load_model(), load_model("ss")
    assert lm.source == alias.source == str(shipped_checkpoint()) and lm.config == alias.config


def test_upgrade_checkpoint_round_trips_the_v1_file(tmp_path):
    up = upgrade_checkpoint(v1_checkpoint("v1"), tmp_path / "up.pt")
    ck = load_checkpoint(up)
    assert ck["config_version"] == 5 and ck["migrated"] == {"from": 0, "to": 5}
    old, new = load_bundle(v1_checkpoint("v1"), KIND), load_bundle(up, KIND)
    assert new.migrated_from is None and new.config == old.config
    a, b = old.model.state_dict(), new.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    again = load_checkpoint(upgrade_checkpoint(up, tmp_path / "again.pt"))
    assert again["model_config"] == ck["model_config"] and again["migrated"] == ck["migrated"]  # already current


def test_upgrade_v0_fills_frame_edges_off_for_old_net_tables(tmp_path):
    old_net = dict(TINY)  # a net table written before frame-local edge features
    assert upgrade_v0({"model_config": {"net": old_net}})["model_config"]["net"]["frame_edges"] is False
    kept = {"model_config": {"net": {**TINY, "frame_edges": True}}}
    assert upgrade_v0(kept) == kept
    assert upgrade_v0({"model_config": {}}) == {"model_config": {}}
    # a version-0 checkpoint of a net without frame edges loads (with frame_edges on, its weights would not fit)
    torch.manual_seed(0)
    cfg = ProteinModelConfig(net=FrameNetConfig(**TINY, frame_edges=False), max_length=32)
    model = build_model(cfg)
    mc = to_dict(cfg)
    del mc["net"]["frame_edges"]
    path = save_checkpoint(tmp_path / "v0.pt", {"format": "diffsci-checkpoint-v1", "kind": KIND, "model_config": mc,
                                                "ema": model.state_dict()})
    bundle = load_bundle(path, KIND)
    assert bundle.migrated_from == 0 and bundle.config == cfg


def test_upgrade_v1_fills_ss_conditioning_off_and_the_shipped_weights_fit(tmp_path):
    old = {"model_config": {"net": {**TINY, "frame_edges": True}, "max_length": 32}, "ema": {}}
    new = upgrade_v1(old)["model_config"]
    assert new["net"] == {**TINY, "frame_edges": True, "ss_conditioning": False}
    assert (new["ss_drop"], new["ss_pair_drop"], new["ss_segment_mask"]) == (0.25, 0.5, 0.1)
    assert old["model_config"]["net"] == {**TINY, "frame_edges": True}  # the input is not changed
    kept = {"model_config": {"net": {**TINY, "ss_conditioning": True}, "ss_drop": 0.4}}
    assert upgrade_v1(kept)["model_config"]["net"]["ss_conditioning"] is True
    assert upgrade_v1(kept)["model_config"]["ss_drop"] == 0.4
    # a version-1 checkpoint (no SS options) loads with the same weights
    torch.manual_seed(0)
    cfg = ProteinModelConfig(net=FrameNetConfig(**TINY), max_length=32)
    mc = to_dict(cfg)
    for k in ("ss_drop", "ss_pair_drop", "ss_segment_mask", "churn", "churn_tmax"):
        del mc[k]
    del mc["net"]["ss_conditioning"]
    model = build_model(cfg)
    path = save_checkpoint(tmp_path / "v1.pt", {"format": "diffsci-checkpoint-v1", "kind": KIND, "config_version": 1,
                                                "model_config": mc, "ema": model.state_dict()})
    bundle = load_bundle(path, KIND)
    assert bundle.migrated_from == 1 and bundle.config == cfg
    # the v1 weights warm-start an SS-conditioned net: only the zero-initialised embeddings are new
    v1 = load_bundle(v1_checkpoint("v1"), KIND).config
    ss_cfg = dataclasses.replace(v1, net=dataclasses.replace(v1.net, ss_conditioning=True))
    net = build_model(ss_cfg)
    shipped = load_checkpoint(v1_checkpoint("v1"))["ema"]
    missing, unexpected = net.load_state_dict(shipped, strict=False)
    assert not unexpected and sorted(missing) == ["net.pair_embed.weight", "net.ss_embed.weight"]


def _train_resumed(tmp_path, run, model: dict, steps: int) -> int:
    """``protein train --resume`` into ``run`` with the model table ``model``, to ``steps`` (batch 2)."""
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"model": model, "train": {"batch_size": 2}}))
    return main(["protein", "train", "--data", str(bundled_dataset_path()), "--out", str(run), "--config", str(cfg),
                 "--steps", str(steps), "--device", "cpu", "--resume"])


def test_upgrade_v2_gives_old_checkpoints_no_churn_and_a_resumed_run_may_change_sampling_defaults(tmp_path, capsys):
    from diffsci.protein.model.diffusion import upgrade_v2

    assert upgrade_v2({"model_config": {"max_length": 32}})["model_config"] == {"max_length": 32, "churn": 0.0,
                                                                                "churn_tmax": 0.7}
    kept = {"model_config": {"churn": 30.0, "churn_tmax": 0.5}}
    assert upgrade_v2(kept) == kept and upgrade_v2({"model_config": {}}) == {"model_config": {}}
    # a run resumed with another churn (a sampling default) continues; with another loss weight it is refused
    base = {"net": TINY, "max_length": 32}
    run = tmp_path / "run"

    def train(model, steps):
        return _train_resumed(tmp_path, run, model, steps)

    assert train(base, 2) == 0
    capsys.readouterr()
    assert train({**base, "churn": 30.0}, 3) == 0
    assert "churn 0.0 -> 30.0" in capsys.readouterr().err
    ck = load_checkpoint(run / "latest.pt")
    assert ck["step"] == 3 and ck["model_config"]["churn"] == 30.0
    assert load_bundle(run / "latest.pt", KIND).config.churn == 30.0
    assert train({**base, "churn": 30.0, "net": {**TINY, "layers": TINY["layers"] + 1}}, 4) == 2
    assert "differs from this run's in net; refusing to resume" in capsys.readouterr().err


def test_upgrade_v3_gives_old_checkpoints_no_rollout_and_a_resumed_run_may_switch_it_on(tmp_path, capsys):
    from diffsci.protein.model.diffusion import upgrade_v3

    assert upgrade_v3({"model_config": {"max_length": 32}})["model_config"] == {
        "max_length": 32, "rollout_prob": 0.0, "rollout_span": 0.25, "rollout_steps": 2}
    assert upgrade_v3({"model_config": {}}) == {"model_config": {}}
    base = {"net": {**TINY, "self_condition": True}, "max_length": 32}
    run = tmp_path / "run"

    def train(model, steps):
        return _train_resumed(tmp_path, run, model, steps)

    assert train(base, 2) == 0
    capsys.readouterr()
    assert train({**base, "rollout_prob": 1.0, "rollout_steps": 1}, 4) == 0
    err = capsys.readouterr().err
    assert "training-task option(s) rollout_prob 0.0 -> 1.0, rollout_steps 2 -> 1" in err and "sampling default" not in err
    ck = load_checkpoint(run / "latest.pt")
    assert ck["step"] == 4 and ck["model_config"]["rollout_prob"] == 1.0


def test_upgrade_v4_gives_old_checkpoints_no_link_loss_and_a_resumed_run_may_switch_it_on(tmp_path, capsys):
    from diffsci.protein.model.diffusion import upgrade_v4

    assert upgrade_v4({"model_config": {"max_length": 32}})["model_config"] == {"max_length": 32, "bond_weight": 0.0,
                                                                                "t_stop": 0.0}
    assert upgrade_v4({"model_config": {}}) == {"model_config": {}}
    base = {"net": TINY, "max_length": 32}
    run = tmp_path / "run"
    assert _train_resumed(tmp_path, run, base, 2) == 0
    capsys.readouterr()
    assert _train_resumed(tmp_path, run, {**base, "bond_weight": 2.0, "t_stop": 0.05}, 4) == 0
    err = capsys.readouterr().err
    assert "training-task option(s) bond_weight 0.0 -> 2.0" in err and "sampling default(s) t_stop 0.01 -> 0.05" in err
    ck = load_checkpoint(run / "latest.pt")
    assert ck["step"] == 4 and ck["model_config"]["bond_weight"] == 2.0 and ck["model_config"]["t_stop"] == 0.05
    # the data draw and the other loss weights are training-task options too
    assert _train_resumed(tmp_path, run, {**base, "bond_weight": 2.0, "t_stop": 0.05, "strand_power": 2.0,
                                          "aux_weight": 0.5}, 5) == 0
    assert "training-task option(s) aux_weight 0.25 -> 0.5, strand_power 0.0 -> 2.0" in capsys.readouterr().err
    assert load_checkpoint(run / "latest.pt")["model_config"]["strand_power"] == 2.0
    with pytest.raises(DiffsciError, match="bond_weight"):
        ProteinModelConfig(bond_weight=-1.0)


def test_untrained_baseline_is_reproducible_and_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    a, b = load_model(untrained=True), load_model(untrained=True)
    assert torch.equal(torch.get_rng_state(), state)
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        want = build_model(a.config).state_dict()
    assert all(torch.equal(sa[k], want[k]) for k in sa)
    trained = load_model().model.state_dict()
    assert any(not torch.equal(sa[k], trained[k]) for k in sa)
    assert a.source.endswith("(untrained weights)")


def test_recipe_defaults_config_table_and_command_line_in_that_order():
    data = {"path": str(bundled_dataset_path())}
    r = Recipe.from_tables(KIND, {}, data=data)
    assert all(getattr(r.train, k) == v for k, v in TRAIN_DEFAULTS.items())
    assert r.model == ProteinModelConfig() and r.data.split == "train"
    r = Recipe.from_tables(KIND, {"train": {"steps": 7, "device": "cpu"}}, data=data, train={"steps": 3, "device": None})
    assert r.train.steps == 3 and r.train.device == "cpu" and r.train.batch_size == TRAIN_DEFAULTS["batch_size"]
    with pytest.raises(DiffsciError, match="data.split"):
        Recipe.from_tables(KIND, {"data": {"split": "test"}}, data=data)
    with pytest.raises(DiffsciError, match="model.net.scalarz"):
        Recipe.from_tables(KIND, {"model": {"net": {"scalarz": 3}}}, data=data)


def test_fit_records_provenance_and_config_version(tmp_path, capsys):
    path = bundled_dataset_path()
    recipe = Recipe.from_tables(KIND, {"model": {"net": TINY, "max_length": 32}, "data": {"split": "all"}},
                                data={"path": str(path)},
                                train={"steps": 1, "batch_size": 2, "device": "cpu", "seed": 5})
    res = fit(recipe, tmp_path / "run", progress=False)
    assert "training on" in capsys.readouterr().err  # the filter summary
    ck = load_checkpoint(res.checkpoint)
    assert ck["config_version"] == 5 and ck["train_config"]["seed"] == 5
    prov = ck["provenance"]
    assert prov["files"] == [to_dict(file_record(path))] and prov["seed"] == 5 and prov["note"] == "split all"
    assert load_bundle(res.checkpoint, KIND).provenance.files[0].sha256 == file_record(path).sha256
    with pytest.raises(DiffsciError, match="data.path"):
        fit(Recipe.from_tables(KIND, {}, data={"path": str(tmp_path / "none.npz")}), tmp_path / "r2")


def test_train_cli_checkpoint_carries_version_and_provenance(tmp_path):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"model": {"net": TINY, "max_length": 32}, "train": {"batch_size": 2}}))
    run = tmp_path / "run"
    assert main(["protein", "train", "--data", str(bundled_dataset_path()), "--out", str(run), "--config", str(cfg),
                 "--steps", "1", "--device", "cpu"]) == 0
    ck = load_checkpoint(run)
    assert ck["config_version"] == 5 and ck["provenance"]["note"] == "split train" and ck["provenance"]["seed"] == 0


def test_space_takes_the_rotation_rate_explicitly():
    flow, score = ProteinModelConfig(), ProteinModelConfig(formulation="score")
    assert build_space(flow).spaces[1] == SO3Flow(inference_rate=1.0)
    assert build_space(flow, rotation_rate=7.0).spaces[1].inference_rate == 7.0
    assert isinstance(build_space(score).spaces[1], SO3Diffusion)
    with pytest.raises(DiffsciError, match="rotation_rate"):
        build_space(score, rotation_rate=10.0)
    assert sampling_rotation_rate(flow) == flow.inference_rate and sampling_rotation_rate(flow, 2) == 2.0
    assert sampling_rotation_rate(score) is None and sampling_rotation_rate(score, 3.0) is None

"""The training loop: resume after SIGKILL, atomic checkpoints, DDP, bad checkpoints."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from diffsci.core.errors import CheckpointError, DiffsciError
from diffsci.core.toy import ToyConfig, ToyTask
from diffsci.core.checkpoint import load_checkpoint, save_checkpoint
from diffsci.core.train import TrainConfig, train

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _toy(out, steps, *extra):
    return [sys.executable, "-m", "diffsci.core.toy", "--out", str(out), "--steps", str(steps),
            "--batch-size", "64", "--ckpt-every", "20", "--no-progress", "--device", "cpu", *extra]


def _params(path):
    return load_checkpoint(path, expected_kind="toy2d")


def test_sigkill_and_resume_is_bitwise_identical(tmp_path):
    steps = 200
    ref = tmp_path / "ref"
    subprocess.run(_toy(ref, steps), check=True, env=ENV, capture_output=True)
    run = tmp_path / "run"
    proc = subprocess.Popen(_toy(run, steps), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:  # wait for a checkpoint past step 60, then kill mid-run
        lat = run / "latest.pt"
        if lat.exists() and any(int(p.stem.split("_")[1]) >= 60 for p in run.glob("ckpt_*.pt")):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = _params(run / "latest.pt")["step"]
    assert 0 < killed_at < steps, killed_at
    subprocess.run(_toy(run, steps, "--resume"), check=True, env=ENV, capture_output=True)
    a, b = _params(ref / "latest.pt"), _params(run / "latest.pt")
    assert a["step"] == b["step"] == steps
    for key in ("model", "ema"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f"{key}.{name} differs after resume"
    # the metrics log has exactly one line per logged step
    steps_logged = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps_logged == sorted(set(steps_logged))


def test_kill_during_save_keeps_latest_valid(tmp_path, monkeypatch):
    task = ToyTask()
    cfg = TrainConfig(steps=20, batch_size=32, ckpt_every=10, device="cpu")
    train(task.build_model(), task, cfg, tmp_path, progress=False)
    before = load_checkpoint(tmp_path / "latest.pt")
    assert before["step"] == 20

    real_save = torch.save

    def dying_save(obj, fh, *a, **k):  # write half a file, then "die"
        real_save(obj, fh, *a, **k)
        fh.truncate(100)
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        train(task.build_model(), task, TrainConfig(steps=30, batch_size=32, ckpt_every=10, device="cpu"),
              tmp_path, resume=True, progress=False)
    monkeypatch.setattr(torch, "save", real_save)
    after = load_checkpoint(tmp_path / "latest.pt")
    assert after["step"] == 20
    assert not list(tmp_path.glob(".*tmp*")), "temporary files left behind"


def test_resuming_a_finished_run_reports_its_checkpoint(tmp_path):
    """`--resume` on a run that already reached its steps trains nothing and reports the
    checkpoint's step, loss and path (`make demo` run twice relies on it)."""
    task = ToyTask()
    cfg = TrainConfig(steps=10, batch_size=16, ckpt_every=5, device="cpu")
    first = train(task.build_model(), task, cfg, tmp_path, progress=False)
    again = train(task.build_model(), task, cfg, tmp_path, progress=False, resume=True)
    assert again.step == first.step == 10 and again.last_loss == first.last_loss is not None
    assert again.checkpoint is not None and load_checkpoint(again.checkpoint)["step"] == 10


def test_warm_start_from_exported_checkpoint(tmp_path, capsys):
    """init_from loads the (EMA) weights of a slim exported checkpoint into model and EMA, starts
    at step 0 with a fresh optimizer, reports configuration changes that leave the weights' shapes
    alone, and refuses weights that do not fit."""
    from diffsci.core.checkpoint import export_checkpoint

    task = ToyTask()
    cfg = TrainConfig(steps=20, batch_size=32, ckpt_every=10, device="cpu")
    train(task.build_model(), task, cfg, tmp_path / "a", progress=False)
    slim = export_checkpoint(tmp_path / "a" / "latest.pt", tmp_path / "slim.pt")
    ema = load_checkpoint(slim)["ema"]
    model = task.build_model()
    train(model, task, TrainConfig(steps=1, batch_size=32, lr=1e-12, device="cpu"), tmp_path / "b",
          progress=False, init_from=slim)
    b = load_checkpoint(tmp_path / "b" / "latest.pt")
    assert b["step"] == 1 and len(b["optimizer"]["state"]) > 0
    for name, v in ema.items():  # one step at lr 1e-12 leaves the warm-started weights in place
        torch.testing.assert_close(b["model"][name], v, rtol=0, atol=1e-6)
    fresh = task.build_model().state_dict()
    assert any(not torch.allclose(fresh[k], ema[k]) for k in ema), "warm start had no effect to detect"
    # a configuration change that leaves the weights' shapes alone is allowed and reported
    other = save_checkpoint(tmp_path / "other.pt", {**load_checkpoint(slim), "model_config": {**task.model_config(),
                                                                                          "sigma_data": 9.0}})
    train(task.build_model(), task, TrainConfig(steps=1, batch_size=8, device="cpu"), tmp_path / "c", progress=False,
          init_from=other)
    assert "differs from the checkpoint's in sigma_data" in capsys.readouterr().err
    # weights that do not fit (another width) are one clear error
    small = ToyTask(ToyConfig(hidden=16))
    with pytest.raises(CheckpointError, match="do not fit"):
        train(small.build_model(), small, cfg, tmp_path / "d", progress=False, init_from=slim)


def test_export_overrides_model_config_keys(tmp_path):
    from diffsci.core.errors import DiffsciError
    from diffsci.core.checkpoint import export_checkpoint

    task = ToyTask()
    train(task.build_model(), task, TrainConfig(steps=2, batch_size=8, device="cpu"), tmp_path / "a", progress=False)
    src = load_checkpoint(tmp_path / "a" / "latest.pt")
    out = load_checkpoint(export_checkpoint(tmp_path / "a" / "latest.pt", tmp_path / "x.pt",
                                            model_config={"sigma_data": 2.5}))
    assert out["model_config"] == {**src["model_config"], "sigma_data": 2.5}
    assert out["export_overrides"] == {"sigma_data": 2.5} and "optimizer" not in out
    for k, v in src["ema"].items():
        torch.testing.assert_close(out["ema"][k], v.float())
    with pytest.raises(DiffsciError, match="no model configuration key"):
        export_checkpoint(tmp_path / "a" / "latest.pt", tmp_path / "y.pt", model_config={"not_a_key": 1})


def test_bad_checkpoints_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(junk)
    other = save_checkpoint(tmp_path / "other.pt", {"format": "diffsci-checkpoint-v1", "kind": "weather-graph"})
    with pytest.raises(CheckpointError, match="expected 'toy2d'"):
        load_checkpoint(other, expected_kind="toy2d")
    foreign = save_checkpoint(tmp_path / "foreign.pt", {"state_dict": {}})
    with pytest.raises(CheckpointError, match="not a diffsci checkpoint"):
        load_checkpoint(foreign)


def test_config_validation():
    with pytest.raises(DiffsciError, match="steps"):
        TrainConfig(steps=-1)
    with pytest.raises(DiffsciError, match="lr"):
        TrainConfig(lr=0)
    with pytest.raises(DiffsciError, match=r"unknown option\(s\) train.stepz"):
        TrainConfig.from_dict({"stepz": 3})


def test_torchrun_ddp_matches_single_process(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    steps = 30
    script = tmp_path / "ddp_toy.py"
    script.write_text(
        "import sys, torch\n"
        "from diffsci.core.toy import ToyConfig, ToyTask\n"
        "from diffsci.core.train import TrainConfig, train\n"
        "import torch.distributed as dist\n"
        "task = ToyTask()\n"
        f"cfg = TrainConfig(steps={steps}, batch_size=64, ckpt_every=100, ema_decay=0.9, device='cpu', log_every=1)\n"
        "train(task.build_model(), task, cfg, sys.argv[1], progress=False)\n"
        "if dist.is_initialized():\n"
        "    m = torch.cat([p.detach().flatten() for p in task.build_model().parameters()])\n"
        "    import os\n"
        "    from diffsci.core.checkpoint import load_checkpoint\n"
        "    dist.barrier()\n"
        "    ck = load_checkpoint(sys.argv[1] + '/latest.pt')\n"
        "    mine = torch.cat([v.flatten() for v in ck['model'].values()])\n"
        "    gathered = [torch.zeros_like(mine) for _ in range(dist.get_world_size())]\n"
        "    dist.all_gather(gathered, mine)\n"
        "    assert all(torch.equal(g, gathered[0]) for g in gathered)\n"
        "    dist.destroy_process_group()\n"
        "    sys.stdout.flush(); sys.stderr.flush()\n"
        "    os._exit(0)  # skip C++ static destructors: gloo threads can abort at interpreter exit\n"
    )
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    r = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node=2", str(script), str(ddp)],
                       env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    subprocess.run([sys.executable, str(script), str(single)], env=ENV, check=True, capture_output=True, timeout=300)
    l_ddp = [json.loads(x)["loss"] for x in (ddp / "metrics.jsonl").read_text().splitlines()]
    l_one = [json.loads(x)["loss"] for x in (single / "metrics.jsonl").read_text().splitlines()]
    assert len(l_ddp) == len(l_one) == steps
    assert max(abs(a - b) for a, b in zip(l_ddp, l_one)) < 1e-5


def test_average_checkpoints_is_the_weighted_mean(tmp_path):
    """A model soup's weights are the weighted mean of its sources', the sources are recorded,
    and checkpoints of another kind or shape, or bad weights, are refused."""
    from diffsci.core.checkpoint import average_checkpoints

    task = ToyTask()
    cfg = TrainConfig(steps=2, batch_size=8, device="cpu")
    train(task.build_model(), task, cfg, tmp_path / "a", progress=False)
    train(task.build_model(), task, dataclasses.replace(cfg, steps=5, lr=1e-2), tmp_path / "b", progress=False)
    a, b = (load_checkpoint(tmp_path / r / "latest.pt") for r in "ab")
    assert any(not torch.equal(a["ema"][k], b["ema"][k]) for k in a["ema"])
    out = load_checkpoint(average_checkpoints([tmp_path / "a" / "latest.pt", tmp_path / "b" / "latest.pt"], tmp_path / "s.pt",
                                              weights=[0.25, 0.75], model_config={"sigma_data": 2.0}))
    for k, v in a["ema"].items():
        torch.testing.assert_close(out["ema"][k], 0.25 * v.float() + 0.75 * b["ema"][k].float())
    assert [s["weight"] for s in out["averaged_from"]] == [0.25, 0.75] and out["model_config"]["sigma_data"] == 2.0
    assert "optimizer" not in out
    with pytest.raises(DiffsciError, match="summing to 1"):
        average_checkpoints([tmp_path / "a" / "latest.pt", tmp_path / "b" / "latest.pt"], tmp_path / "x.pt", weights=[0.5, 0.6])
    wide = ToyTask(ToyConfig(hidden=48))
    train(wide.build_model(), wide, cfg, tmp_path / "c", progress=False)
    with pytest.raises(CheckpointError, match="do not match"):
        average_checkpoints([tmp_path / "a" / "latest.pt", tmp_path / "c" / "latest.pt"], tmp_path / "y.pt")


class _HeldoutToy(ToyTask):
    """The toy task with 'held-out data': the ring mixture shifted by (3, 0)."""

    def heldout(self):
        return _ShiftedToy(self.cfg)


class _ShiftedToy(ToyTask):
    def sample_batch(self, generator, batch_size):
        batch = super().sample_batch(generator, batch_size)
        return dataclasses.replace(batch, x0=batch.x0 + torch.tensor([3.0, 0.0]))


def test_eval_every_logs_the_ema_weights_fixed_batch_losses(tmp_path):
    from diffsci.core.train import fixed_batch_loss

    task = _HeldoutToy()
    cfg = TrainConfig(steps=40, batch_size=32, lr=3e-3, ckpt_every=20, keep_checkpoints=5, log_every=7, eval_every=20,
                      eval_batches=3, device="cpu")
    train(task.build_model(), task, cfg, tmp_path / "run", progress=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval_heldout_loss" in r]
    assert [r["step"] for r in evals] == [20, 40]  # eval steps are logged even off the log_every grid
    assert [r["step"] for r in rows] == [7, 14, 20, 21, 28, 35, 40]
    for r in evals:  # recomputed independently from the checkpoint's EMA weights at that step
        model = task.build_model().eval()
        model.load_state_dict(load_checkpoint(tmp_path / "run" / f"ckpt_{r['step']:08d}.pt")["ema"])
        for name, t in (("eval_train_loss", task), ("eval_heldout_loss", task.heldout())):
            assert r[name] == pytest.approx(fixed_batch_loss(t, model, 3, 32), abs=2e-5)
    # the shifted data is what the net was not trained on: its loss is higher
    assert all(r["eval_heldout_loss"] > 1.2 * r["eval_train_loss"] for r in evals), evals
    # evaluating does not change the training (same weights as a run without it)
    train(task.build_model(), task, dataclasses.replace(cfg, eval_every=0), tmp_path / "plain", progress=False)
    a, b = load_checkpoint(tmp_path / "run" / "latest.pt"), load_checkpoint(tmp_path / "plain" / "latest.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


class _PerturbedToy(_HeldoutToy):
    """A toy whose training batches are perturbed (as scheduled sampling perturbs inputs) and whose
    ``evaluation()`` is the unperturbed task."""

    def sample_batch(self, generator, batch_size):
        batch = super().sample_batch(generator, batch_size)
        return dataclasses.replace(batch, x0=batch.x0 * 5.0)

    def evaluation(self):
        return _HeldoutToy(self.cfg)


def test_eval_every_measures_the_training_data_through_the_tasks_evaluation_view(tmp_path):
    from diffsci.core.train import fixed_batch_loss

    task = _PerturbedToy()
    cfg = TrainConfig(steps=4, batch_size=16, ckpt_every=4, log_every=4, eval_every=4, eval_batches=2, device="cpu")
    train(task.build_model(), task, cfg, tmp_path / "run", progress=False)
    row = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()][-1]
    model = task.build_model().eval()
    model.load_state_dict(load_checkpoint(tmp_path / "run" / "latest.pt")["ema"])
    assert row["eval_train_loss"] == pytest.approx(fixed_batch_loss(task.evaluation(), model, 2, 16), abs=2e-5)
    assert row["eval_train_loss"] != pytest.approx(fixed_batch_loss(task, model, 2, 16), abs=1e-3)


def test_eval_every_needs_a_task_with_heldout_data(tmp_path):
    task = ToyTask()
    with pytest.raises(DiffsciError, match="no held-out data"):
        train(task.build_model(), task, TrainConfig(steps=2, batch_size=8, eval_every=1, device="cpu"),
              tmp_path, progress=False)
    with pytest.raises(DiffsciError, match="eval_every"):
        TrainConfig(eval_every=-1)


def test_learning_rate_warms_up_holds_and_cools_down_linearly():
    from diffsci.core.train import learning_rate

    cfg = TrainConfig(steps=100, lr=1e-3, warmup_steps=10, decay_start=60, lr_final=1e-4)
    lrs = [learning_rate(cfg, k) for k in range(100)]
    assert lrs[:10] == pytest.approx([1e-3 * (k + 1) / 10 for k in range(10)])
    assert lrs[10:60] == pytest.approx([1e-3] * 50)
    assert lrs[60:] == pytest.approx([1e-3 - 9e-4 * (k - 59) / 40 for k in range(60, 100)])
    assert lrs[-1] == pytest.approx(1e-4) and all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert [learning_rate(TrainConfig(steps=100, lr=1e-3), k) for k in (0, 99)] == [1e-3, 1e-3]
    with pytest.raises(DiffsciError, match="decay_start"):
        TrainConfig(steps=100, decay_start=100)
    with pytest.raises(DiffsciError, match="lr_final"):
        TrainConfig(steps=100, lr=1e-3, decay_start=50, lr_final=2e-3)


def test_a_constant_rate_run_resumed_with_a_cooldown_logs_and_uses_the_falling_rate(tmp_path):
    task = ToyTask()
    cfg = TrainConfig(steps=20, batch_size=32, lr=3e-3, ckpt_every=10, log_every=1, device="cpu")
    train(task.build_model(), task, cfg, tmp_path / "run", progress=False)
    cool = dataclasses.replace(cfg, steps=40, decay_start=20, lr_final=3e-4)
    train(task.build_model(), task, cool, tmp_path / "run", resume=True, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    lr = {r["step"]: r["lr"] for r in rows}
    assert [lr[s] for s in range(1, 21)] == pytest.approx([3e-3] * 20)
    # the row of step s logs the rate of optimizer step s - 1
    assert [lr[s] for s in range(21, 41)] == pytest.approx([3e-3 - 2.7e-3 * (s - 20) / 20 for s in range(21, 41)])
    opt = load_checkpoint(tmp_path / "run" / "latest.pt")["optimizer"]
    assert opt["param_groups"][0]["lr"] == pytest.approx(3e-4)

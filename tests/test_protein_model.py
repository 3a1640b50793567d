"""The protein frame denoiser: equivariance, formulations, training, checkpoints."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from equivariance import assert_frames_equivariant

from diffsci.core import so3
from diffsci.core.cli import main
from diffsci.core.errors import DiffsciError
from diffsci.protein.io.dataset import bundled_dataset_path, load_dataset
from diffsci.protein.model.diffusion import BackboneBatch, BackboneTask, ProteinCond, ProteinModelConfig, build_model
from diffsci.protein.model.network import FrameNetConfig, gram_schmidt

TINY = FrameNetConfig(scalars=8, vectors=4, tensors=2, layers=2, k_neighbors=6)


def _inputs(b=2, n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    trans = torch.randn(b, n, 3, generator=g, dtype=torch.float64) * 1.5
    rots = so3.random_rotations((b, n), g, torch.float64)
    mask = torch.ones(b, n, dtype=torch.bool)
    if b > 1:
        mask[1, -5:] = False
    cond = ProteinCond(mask, torch.arange(n).expand(b, n), torch.zeros(b, n, dtype=torch.long))
    return trans, rots, cond


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("formulation", ["flow", "score"])
def test_denoiser_is_se3_equivariant(dtype, formulation):
    model = build_model(ProteinModelConfig(formulation=formulation, net=TINY)).to(dtype)
    # perturb the output layer away from its zero-ish init so the check is not trivial
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    trans, rots, cond = _inputs()
    t = torch.tensor([0.3, 0.8], dtype=dtype)

    def fn(x, r):
        return model((x, r), t, cond)

    t0, r0 = fn(trans.to(dtype), rots.to(dtype))
    assert (t0 - trans.to(dtype)).abs().max() > 1e-4  # the network does something
    assert_frames_equivariant(fn, trans, rots, dtype=dtype)
    # predicted rotations are rotations
    eye = torch.eye(3, dtype=dtype)
    assert (r0.transpose(-1, -2) @ r0 - eye).abs().max() < (1e-10 if dtype == torch.float64 else 1e-5)


def test_padding_does_not_change_valid_residues():
    model = build_model(ProteinModelConfig(net=TINY)).double()
    trans, rots, cond = _inputs(b=1, n=20)
    cond = ProteinCond(torch.ones(1, 20, dtype=torch.bool), cond.res_idx[:1], cond.chain[:1])
    t = torch.tensor([0.5], dtype=torch.float64)
    a, _ = model((trans, rots), t, cond)
    pad_t = torch.cat([trans, torch.randn(1, 6, 3, dtype=torch.float64) * 50], 1)
    pad_r = torch.cat([rots, so3.random_rotations((1, 6), dtype=torch.float64)], 1)
    mask = torch.zeros(1, 26, dtype=torch.bool)
    mask[:, :20] = True
    b, _ = model((pad_t, pad_r), t, ProteinCond(mask, torch.arange(26)[None], torch.zeros(1, 26, dtype=torch.long)))
    assert torch.allclose(a, b[:, :20], atol=1e-10)


def test_inference_in_chunks_equals_the_whole_batch_with_every_input():
    """Without gradients a batch larger than ``inference_chunk`` is evaluated in chunks; each
    structure's prediction is the one of the whole batch evaluated at once (with gradients),
    self-conditioning and SS inputs included."""
    model = build_model(ProteinModelConfig(net=dataclasses.replace(TINY, self_condition=True,
                                                                   ss_conditioning=True))).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    b, n = 7, 24
    trans, rots, cond = _inputs(b=b, n=n, seed=3)
    g = torch.Generator().manual_seed(4)
    cond = dataclasses.replace(cond, self_cond=torch.randn(b, n, 3, generator=g, dtype=torch.float64),
                               ss=torch.randint(4, (b, n), generator=g), ss_pair=torch.randint(4, (b, n, n), generator=g))
    t = torch.rand(b, generator=g, dtype=torch.float64)
    model.net.inference_chunk = 3
    whole = model((trans, rots), t, cond)  # gradients on: one pass
    with torch.no_grad():
        chunked = model((trans, rots), t, cond)  # chunks of 3, 3, 1
    for a, c in zip(whole, chunked):
        torch.testing.assert_close(a.detach(), c, rtol=0, atol=1e-12)
    assert (whole[0][0] - whole[0][1]).abs().max() > 1e-6  # distinct inputs, distinct outputs


def test_gram_schmidt_gives_rotations():
    a, b = torch.randn(100, 3, dtype=torch.float64), torch.randn(100, 3, dtype=torch.float64)
    r = gram_schmidt(a, b)
    assert torch.allclose(r.transpose(-1, -2) @ r, torch.eye(3, dtype=torch.float64).expand(100, 3, 3), atol=1e-12)
    assert torch.allclose(torch.linalg.det(r), torch.ones(100, dtype=torch.float64))


def _batches_equal(a: BackboneBatch, b: BackboneBatch) -> bool:
    pairs = [(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(BackboneBatch)]
    return all(torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y for x, y in pairs)


def test_task_batches_are_centred_and_deterministic():
    ds = load_dataset(bundled_dataset_path())
    task = BackboneTask(ProteinModelConfig(net=TINY, max_length=40), ds)
    a = task.sample_batch(torch.Generator().manual_seed(1), 3)
    b = task.sample_batch(torch.Generator().manual_seed(1), 3)
    assert isinstance(a, BackboneBatch) and _batches_equal(a, b)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.t = b.t
    com = (a.trans * a.mask[..., None]).sum(1) / a.mask.sum(1, keepdim=True)
    assert com.abs().max() < 1e-5
    # CA-CA of real chains in nm
    d = (a.trans[:, 1:] - a.trans[:, :-1]).norm(dim=-1)[a.mask[:, 1:] & a.mask[:, :-1]]
    assert 0.36 < float(d.median()) < 0.40
    # the atoms' CA are the frames' origins (same units, same centring)
    assert torch.allclose(a.atoms[..., 1, :][a.mask], a.trans[a.mask], atol=1e-5)
    loss = task.loss(build_model(task.config), a)
    assert torch.isfinite(loss) and loss > 0


def test_a_net_grown_by_layers_warm_starts_as_the_identity_and_learns():
    from diffsci.core.train import _load_warm_start

    torch.manual_seed(0)
    small_cfg = dataclasses.replace(TINY, self_condition=True)
    small = build_model(ProteinModelConfig(net=small_cfg)).double()
    with torch.no_grad():
        for p in small.parameters():  # off the zero-initialised branches, so the check is not trivial
            p.add_(0.05 * torch.randn_like(p))
    grown = build_model(ProteinModelConfig(net=dataclasses.replace(small_cfg, layers=4))).double()
    new = _load_warm_start(grown, small.state_dict())
    assert new and all(k.startswith(("net.layers.2.", "net.layers.3.")) for k in new)
    trans, rots, cond = _inputs()
    cond = dataclasses.replace(cond, self_cond=trans + 0.1)
    t = torch.tensor([0.3, 0.7], dtype=torch.float64)
    a, b = small((trans, rots), t, cond), grown((trans, rots), t, cond)
    assert torch.allclose(a[0], b[0], atol=1e-12) and torch.allclose(a[1], b[1], atol=1e-12)
    b[0].square().sum().backward()  # the new layers get gradients: they can learn
    assert grown.net.layers[3].self_int.weight.grad.abs().max() > 0
    assert grown.net.layers[3].fc[2].weight.grad.abs().max() > 0
    # a layer that is only partly missing is not explained away
    partial = {k: v for k, v in grown.state_dict().items() if k != "net.layers.3.fc.0.weight"}
    with pytest.raises(RuntimeError, match="missing keys"):
        _load_warm_start(build_model(ProteinModelConfig(net=dataclasses.replace(small_cfg, layers=4))), partial)


def test_heldout_task_draws_only_heldout_chains_with_the_same_filters():
    ds = load_dataset(bundled_dataset_path())
    cfg = ProteinModelConfig(net=TINY, max_length=40, max_rg_ratio=None)
    task = BackboneTask(cfg, ds)
    held = task.heldout()
    assert held.split == "heldout" and held.config == task.config
    # exactly the held-out chains the filters keep (the coil filter, as on the training split)
    kept = [i for i in ds.indices("heldout") if held_ok(ds, i, cfg)]
    assert len(held.chains) == len(kept) > 0
    heldout_coords = {np.asarray(ds.chain(int(i)).coords).tobytes() for i in kept}
    assert {np.asarray(c).tobytes() for c in held.chains} == heldout_coords
    assert not heldout_coords & {np.asarray(c).tobytes() for c in task.chains}
    with pytest.raises(DiffsciError, match="no held-out chains"):
        BackboneTask(cfg, ds, "all").heldout()


def held_ok(ds, i, cfg):
    from diffsci.protein.model.diffusion import filter_reason

    return filter_reason(np.asarray(ds.chain(int(i)).coords)[:, 1], cfg) is None


def _padded(batch: BackboneBatch, extra: int) -> BackboneBatch:
    """``batch`` with ``extra`` padding positions appended (identity frames, masked, SS unknown)."""
    from diffsci.protein.ss import PAIR_UNKNOWN, SS_UNKNOWN

    def pad(x, value=0.0, dims=1):
        for d in range(1, dims + 1):
            shape = list(x.shape)
            shape[d] = extra
            x = torch.cat([x, torch.full(shape, value, dtype=x.dtype)], d)
        return x

    eye = torch.eye(3).expand(batch.rots.shape[0], extra, 3, 3)
    return dataclasses.replace(
        batch, trans=pad(batch.trans), atoms=pad(batch.atoms), mask=pad(batch.mask, False), xt_trans=pad(batch.xt_trans),
        rots=torch.cat([batch.rots, eye], 1), xt_rots=torch.cat([batch.xt_rots, eye], 1),
        res_idx=torch.cat([batch.res_idx, batch.res_idx.shape[1] + torch.arange(extra).expand(len(batch.t), extra)], 1),
        ss=pad(batch.ss, SS_UNKNOWN), ss_pair=pad(batch.ss_pair, PAIR_UNKNOWN, dims=2))


def test_batches_are_cut_to_their_longest_chain_and_padding_does_not_change_the_loss():
    ds = load_dataset(bundled_dataset_path())
    net = dataclasses.replace(TINY, self_condition=True, ss_conditioning=True, far_neighbors=2, position="termini")
    task = BackboneTask(ProteinModelConfig(net=net, max_length=200, bond_weight=2.0), ds)
    torch.manual_seed(0)
    model = build_model(task.config)
    with torch.no_grad():
        for p in model.parameters():  # off the zero-initialised branches
            p.add_(0.05 * torch.randn_like(p))
    for seed in range(3):
        batch = task.sample_batch(torch.Generator().manual_seed(seed), 3)
        n = batch.mask.shape[1]
        assert n == int(batch.mask.sum(1).max()) <= 200 and batch.ss_pair.shape[1:] == (n, n)
        padded = _padded(batch, 200 - n if n < 200 else 13)
        assert padded.without_padding().mask.shape[1] == n
        torch.manual_seed(1)
        a = task.loss(model, batch)
        torch.manual_seed(1)
        b = task.loss(model, padded)
        assert float(a) == pytest.approx(float(b), rel=1e-4)


def _link_loss_by_hand(pred, true, mask):
    """backbone_link_loss written out residue by residue in numpy (N, CA, C, O = 0..3)."""
    out = []
    for p, q, m in zip(pred.numpy(), true.numpy(), mask.numpy()):
        errs = [(np.linalg.norm(p[i, a] - p[i + 1, b]) - np.linalg.norm(q[i, a] - q[i + 1, b])) ** 2
                for i in range(len(m) - 1) if m[i] and m[i + 1] for a, b in ((1, 1), (2, 0), (1, 0), (2, 1))]
        out.append(np.mean(errs) if errs else 0.0)
    return np.array(out)


def test_backbone_link_loss_sees_only_the_links_between_consecutive_residues():
    from diffsci.protein.model.diffusion import backbone_link_loss

    ds = load_dataset(bundled_dataset_path())
    true = torch.tensor(np.asarray(ds.coords[ds.offsets[0] : ds.offsets[0] + 30]) / 10.0, dtype=torch.float64)[None].repeat(3, 1, 1, 1)
    mask = torch.ones(3, 30, dtype=torch.bool)
    mask[1, 25:] = False
    mask[2, 1:] = False  # one residue: no link
    g = torch.Generator().manual_seed(0)
    pred = true + 0.02 * torch.randn(true.shape, generator=g, dtype=torch.float64)
    got = backbone_link_loss(pred, true, mask)
    np.testing.assert_allclose(got.numpy(), _link_loss_by_hand(pred, true, mask), rtol=1e-10)
    assert got[0] > 0 and got[2] == 0
    # a rigid motion of the whole chain, or moving a masked residue, changes nothing
    r = so3.random_rotations((), g, torch.float64)
    moved = pred.clone()
    moved[0] = pred[0] @ r.T + torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    moved[1, 27] += 5.0
    np.testing.assert_allclose(backbone_link_loss(moved, true, mask).numpy(), got.numpy(), rtol=1e-9)
    # moving one residue's atoms away touches only its two links, and the loss grows
    far = pred.clone()
    far[0, 10] += torch.tensor([0.1, 0.0, 0.0], dtype=torch.float64)
    assert backbone_link_loss(far, true, mask)[0] > got[0]
    assert float(backbone_link_loss(true, true, mask).abs().max()) == 0.0


def test_bond_weight_adds_the_link_loss_of_the_low_noise_predictions():
    from diffsci.protein.frames import ANGSTROM_PER_NM, backbone_from_frames
    from diffsci.protein.model.diffusion import backbone_link_loss

    ds = load_dataset(bundled_dataset_path())
    base = BackboneTask(ProteinModelConfig(net=TINY, max_length=40), ds)
    linked = BackboneTask(ProteinModelConfig(net=TINY, max_length=40, bond_weight=3.0), ds)
    torch.manual_seed(0)
    model = build_model(base.config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    seen_low = False
    for seed in range(6):
        batch = linked.sample_batch(torch.Generator().manual_seed(seed), 4)
        trans0, rots0 = model((batch.xt_trans, batch.xt_rots), batch.t,
                              ProteinCond(batch.mask, batch.res_idx, torch.zeros_like(batch.res_idx)))
        bb = backbone_from_frames(rots0, trans0 * ANGSTROM_PER_NM) / ANGSTROM_PER_NM
        low = (batch.t < base.config.aux_loss_t).to(bb.dtype)
        want = 3.0 * 100.0 * float((low * backbone_link_loss(bb, batch.atoms, batch.mask)).mean())
        diff = float(linked.loss(model, batch) - base.loss(model, batch))
        assert diff == pytest.approx(want, rel=1e-4, abs=1e-7)
        seen_low |= bool(low.any() and want > 0)
    assert seen_low


def test_strand_power_draws_chains_by_strand_content():
    from diffsci.protein.metrics import psea_fractions

    ds = load_dataset(bundled_dataset_path())
    uniform = BackboneTask(ProteinModelConfig(net=TINY, max_length=40), ds)
    task = BackboneTask(ProteinModelConfig(net=TINY, max_length=40, strand_power=2.0), ds)
    assert uniform.weights is None and len(task.chains) == len(uniform.chains)
    strand = np.array([psea_fractions(np.asarray(c)[:, 1])["strand"] for c in task.chains])
    want = (strand + 0.05) ** 2
    np.testing.assert_allclose(task.weights.numpy(), want / want.sum(), rtol=1e-6)
    # the draws follow the weights: mean strand content of drawn chains is the weighted mean
    gen = torch.Generator().manual_seed(0)
    picks = torch.multinomial(task.weights, 20000, replacement=True, generator=gen).numpy()
    assert strand[picks].mean() == pytest.approx(float((want * strand).sum() / want.sum()), abs=0.005)
    assert strand[picks].mean() > strand.mean() + 0.05
    a = task.sample_batch(torch.Generator().manual_seed(1), 3)
    b = task.sample_batch(torch.Generator().manual_seed(1), 3)
    assert _batches_equal(a, b)
    with pytest.raises(DiffsciError, match="strand_power"):
        ProteinModelConfig(strand_power=-1.0)


def test_train_cli_writes_checkpoint_and_resumes(tmp_path, capsys):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"model": {"net": {"scalars": 8, "vectors": 4, "tensors": 0, "layers": 1, "k_neighbors": 6},
                                         "max_length": 32},
                               "train": {"batch_size": 2, "ckpt_every": 2, "log_every": 1}}))
    run = tmp_path / "run"
    args = ["protein", "train", "--data", str(bundled_dataset_path()), "--out", str(run), "--config", str(cfg),
            "--device", "cpu"]
    assert main(args + ["--steps", "2"]) == 0
    assert main(args + ["--steps", "4", "--resume"]) == 0
    from diffsci.core.checkpoint import load_checkpoint

    ck = load_checkpoint(run / "latest.pt", expected_kind="protein-frames")
    assert ck["step"] == 4
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2, 3, 4]
    # --init warm-starts a new run from those weights; a mismatched model config is one clear error
    assert main(["protein", "train", "--data", str(bundled_dataset_path()), "--out", str(tmp_path / "ft"), "--config",
                 str(cfg), "--device", "cpu", "--steps", "1", "--init", str(run / "latest.pt")]) == 0
    assert "warm start from" in capsys.readouterr().err
    # without --config the checkpoint's own model configuration is used; another one is refused
    assert main(["protein", "train", "--data", str(bundled_dataset_path()), "--out", str(tmp_path / "ft2"),
                 "--device", "cpu", "--steps", "1", "--init", str(run / "latest.pt")]) == 0
    assert "model configuration from" in capsys.readouterr().err
    assert load_checkpoint(tmp_path / "ft2" / "latest.pt")["model_config"]["net"]["scalars"] == 8
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"model": {"net": {"scalars": 4, "vectors": 2, "layers": 1}}}))
    assert main(["protein", "train", "--data", str(bundled_dataset_path()), "--out", str(tmp_path / "ft3"),
                 "--config", str(other), "--device", "cpu", "--steps", "1", "--init", str(run / "latest.pt")]) == 2
    assert "do not fit this model" in capsys.readouterr().err


def test_bad_config_is_refused():
    with pytest.raises(DiffsciError, match="formulation"):
        ProteinModelConfig(formulation="diffuse-harder")
    with pytest.raises(DiffsciError):
        FrameNetConfig(layers=0)
    assert main(["protein", "train", "--data", "/nonexistent.npz", "--out", "/tmp/x", "--steps", "1"]) == 2


SC = FrameNetConfig(scalars=8, vectors=4, tensors=2, layers=2, k_neighbors=6, self_condition=True)


def test_self_conditioned_net_is_equivariant_and_uses_its_input():
    """With a self-conditioning input that moves with the frames, the net stays SE(3)-equivariant;
    the input changes the output once the zero-initialised branch has weights."""
    model = build_model(ProteinModelConfig(net=SC)).double()
    trans, rots, cond = _inputs()
    t = torch.tensor([0.3, 0.8], dtype=torch.float64)
    # at initialisation the branch is a no-op: any self-conditioning input gives the same output
    a = model((trans, rots), t, cond)[0]
    b = model((trans, rots), t, dataclasses.replace(cond, self_cond=torch.randn_like(trans)))[0]
    assert torch.equal(a, b)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))

    def fn(x, r):  # an affine combination of positions: moves rigidly with them
        return model((x, r), t, dataclasses.replace(cond, self_cond=0.5 * x + 0.5 * x.roll(1, dims=1)))

    assert_frames_equivariant(fn, trans, rots)
    a = model((trans, rots), t, cond)[0]
    b = fn(trans, rots)[0]
    assert (a - b).abs().max() > 1e-4


def test_self_conditioning_in_training_and_sampling():
    """Half the training batches carry a flag; on those the loss feeds the first pass's prediction
    back (gradients reach the branch); at sampling each call gets the previous call's prediction."""
    from diffsci.protein.model.diffusion import SelfConditioned

    ds = load_dataset(bundled_dataset_path())
    task = BackboneTask(ProteinModelConfig(net=SC, max_length=40), ds)
    flags = [task.sample_batch(torch.Generator().manual_seed(s), 2).self_condition for s in range(40)]
    assert 8 < sum(flags) < 32
    batch = task.sample_batch(torch.Generator().manual_seed(flags.index(True)), 2)
    model = build_model(task.config)
    task.loss(model, batch).backward()
    grads = [p.grad for n, p in model.named_parameters() if "sc_fc.2" in n]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)

    seen = []

    class Spy(torch.nn.Module):
        def forward(self, x, t, cond):
            seen.append(cond.self_cond)
            return x[0] + 1.0, x[1]

    wrapped = SelfConditioned(Spy())
    trans, rots, cond = _inputs(b=1, n=10)
    out1 = wrapped((trans, rots), torch.tensor([0.9]), cond)
    wrapped((trans * 2, rots), torch.tensor([0.5]), cond)
    assert seen[0] is None and torch.equal(seen[1], out1[0])


def test_scheduled_sampling_rolls_the_networks_own_sampler_out_to_t():
    """With rollout_prob a batch's input is noised to t' = t + span and moved to t by the model's
    own Euler steps. With an oracle that predicts the real chain the translations land exactly on
    the forward-noised state at t with the same noise (the linear interpolant's Euler step is exact
    for a perfect prediction); the sampler's rotation rate moves rotations further than that;
    the held-out task never rolls out; the rollout runs without gradients."""
    ds = load_dataset(bundled_dataset_path())
    cfg = ProteinModelConfig(net=SC, max_length=40, rollout_prob=0.5, rollout_span=0.3, rollout_steps=3)
    task = BackboneTask(cfg, ds)
    batches = [task.sample_batch(torch.Generator().manual_seed(s), 3) for s in range(40)]
    rolled = [b for b in batches if b.rollout_from is not None]
    assert 8 < len(rolled) < 32
    assert all(task.heldout().sample_batch(torch.Generator().manual_seed(s), 3).rollout_from is None for s in range(10))
    assert task.heldout().config.rollout_prob == 0 and task.config.rollout_prob == 0.5
    # the trainer's eval_every measures the training chains forward-noised too
    view = task.evaluation()
    assert view.config.rollout_prob == 0 and view.chains is task.chains and task.config.rollout_prob == 0.5
    assert all(view.sample_batch(torch.Generator().manual_seed(s), 3).rollout_from is None for s in range(10))
    assert BackboneTask(dataclasses.replace(cfg, rollout_prob=0.0), ds).evaluation().config.rollout_prob == 0
    # the crops and times are those a task without rollout draws from the same seed
    plain = BackboneTask(dataclasses.replace(cfg, rollout_prob=0.0), ds).sample_batch(torch.Generator().manual_seed(0), 3)
    assert torch.equal(batches[0].t, plain.t) and torch.equal(batches[0].trans, plain.trans)
    batch = rolled[0]
    assert torch.allclose(batch.rollout_from, (batch.t + 0.3).clamp(max=1.0))

    calls = []

    class Oracle(torch.nn.Module):
        def forward(self, x, t, cond):
            calls.append((t.clone(), cond.self_cond, torch.is_grad_enabled()))
            return batch.trans, batch.rots

    cond = ProteinCond(batch.mask, batch.res_idx, torch.zeros_like(batch.res_idx))
    (trans, rots), previous = task.roll_out(Oracle(), (batch.xt_trans, batch.xt_rots), batch.rollout_from, batch.t, cond)
    t0, t1 = batch.rollout_from[:, None, None], batch.t[:, None, None]
    eps = (batch.xt_trans - (1 - t0) * batch.trans) / t0
    want = ((1 - t1) * batch.trans + t1 * eps) * batch.mask[..., None]
    assert torch.allclose(trans * batch.mask[..., None], want, atol=1e-5)
    assert torch.equal(previous, batch.trans)
    assert len(calls) == 3 and not any(g for _, _, g in calls)
    assert calls[0][1] is None and torch.equal(calls[1][1], batch.trans)  # self-conditioned as the sampler is
    assert torch.allclose(calls[-1][0], batch.t + (batch.rollout_from - batch.t) / 3, atol=1e-6)
    # the rotations move towards the prediction faster than the forward path's (rate 10: all the way here)
    def angle(a, b):
        return so3.log_map(a.transpose(-1, -2) @ b).norm(dim=-1)[batch.mask]
    assert float(angle(rots, batch.rots).max()) < 0.01 < 0.1 < float(angle(batch.xt_rots, batch.rots).mean())

    # the loss trains on the rolled-out state; gradients reach the net
    model = build_model(cfg)
    loss = task.loss(model, batch)
    loss.backward()
    assert torch.isfinite(loss) and any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    with pytest.raises(DiffsciError, match="rollout_steps"):
        ProteinModelConfig(rollout_steps=0)
    with pytest.raises(DiffsciError, match="rollout_span"):
        ProteinModelConfig(rollout_span=0.0)


def test_warm_start_accepts_only_optional_new_parameters(tmp_path):
    """A plain checkpoint warm-starts a self-conditioned model (the new branch is optional and
    starts as a no-op), while other missing weights are refused."""
    from diffsci.core.train import _load_warm_start

    plain = build_model(ProteinModelConfig(net=dataclasses.replace(SC, self_condition=False)))
    sc = build_model(ProteinModelConfig(net=SC))
    missing = _load_warm_start(sc, plain.state_dict())
    assert missing and all("sc_fc" in k for k in missing)
    trans, rots, cond = _inputs()
    t = torch.tensor([0.3, 0.8])
    assert torch.allclose(sc((trans.float(), rots.float()), t, cond)[0], plain((trans.float(), rots.float()), t, cond)[0])
    weights = {k: v for k, v in plain.state_dict().items() if "readout" not in k}
    with pytest.raises(RuntimeError, match="missing keys"):
        _load_warm_start(build_model(ProteinModelConfig(net=SC)), weights)
    with pytest.raises(RuntimeError, match="unexpected keys"):
        _load_warm_start(plain, sc.state_dict())



V2 = dataclasses.replace(TINY, position="termini", far_neighbors=2, k_neighbors=4)


def _perturbed(cfg):
    model = build_model(ProteinModelConfig(net=cfg)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p, generator=None))
    return model


def test_v2_features_keep_equivariance_and_padding_invariance():
    torch.manual_seed(0)
    model = _perturbed(V2)
    trans, rots, cond = _inputs(b=2, n=40)
    t = torch.tensor([0.3, 0.8], dtype=torch.float64)
    assert_frames_equivariant(lambda x, r: model((x, r), t, cond), trans, rots, dtype=torch.float64)
    one = ProteinCond(torch.ones(1, 40, dtype=torch.bool), cond.res_idx[:1], cond.chain[:1])
    a, _ = model((trans[:1], rots[:1]), t[:1], one)
    pad_t = torch.cat([trans[:1], torch.randn(1, 30, 3, dtype=torch.float64) * 50], 1)
    pad_r = torch.cat([rots[:1], so3.random_rotations((1, 30), dtype=torch.float64)], 1)
    mask = torch.zeros(1, 70, dtype=torch.bool)
    mask[:, :40] = True
    b, _ = model((pad_t, pad_r), t[:1], ProteinCond(mask, torch.arange(70)[None], torch.zeros(1, 70, dtype=torch.long)))
    torch.testing.assert_close(a, b[:, :40], rtol=0, atol=1e-10)


def test_termini_position_features_ignore_the_numbering_and_index_features_do_not():
    """v2 ("termini") sees only relative positions: renumbering a chain from 1000 leaves the
    prediction unchanged; v1 ("index") embeds the absolute index and changes."""
    trans, rots, cond = _inputs(b=1, n=30)
    t = torch.tensor([0.5], dtype=torch.float64)
    shifted = dataclasses.replace(cond, res_idx=cond.res_idx + 1000)
    for cfg, same in ((V2, True), (TINY, False)):
        torch.manual_seed(1)
        model = _perturbed(cfg)
        a, _ = model((trans, rots), t, cond)
        b, _ = model((trans, rots), t, shifted)
        assert torch.allclose(a, b, atol=1e-10) == same, cfg.position


def test_far_neighbours_add_long_range_edges_at_doubling_ranks():
    from diffsci.protein.model.network import far_ranks, termini_distances

    assert far_ranks(12, 4, 100) == [24, 48, 96]  # 192 is beyond 99 others
    assert far_ranks(12, 0, 100) == []
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 100, 3, generator=g, dtype=torch.float64)
    mask = torch.ones(1, 100, dtype=torch.bool)
    idx, chain = torch.arange(100)[None], torch.zeros(1, 100, dtype=torch.long)
    near = build_model(ProteinModelConfig(net=dataclasses.replace(TINY, k_neighbors=12))).net
    far = build_model(ProteinModelConfig(net=dataclasses.replace(TINY, k_neighbors=12, far_neighbors=4))).net
    e0, e1 = (set(zip(*(t.tolist() for t in m.build_edges(x, mask, idx, chain)))) for m in (near, far))
    assert e0 < e1
    d = torch.cdist(x[0], x[0])
    extra = e1 - e0
    # every extra edge joins a receiver to its 24th, 48th or 96th nearest other residue
    order = d.argsort(-1)[:, 1:]  # the others, nearest first (0: the residue itself)
    expected = {(int(order[i, r]), i) for i in range(100) for r in (24, 48, 96)}
    assert extra == expected - e0 and len(extra) > 250
    before, after = termini_distances(idx, chain, mask)
    assert before[0, :3].tolist() == [0, 1, 2] and after[0, -1] == 0 and before[0, 50] == 32

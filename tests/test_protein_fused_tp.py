"""The fused tensor product and the frozen-weight inference path against e3nn's own evaluation."""

import dataclasses

import pytest
import torch
from e3nn import o3

from diffsci.core.errors import DiffsciError
from diffsci.protein.ss import PAIR_ANTIPARALLEL, PAIR_NONE
from diffsci.protein.model.fused_tp import FusedTensorProduct
from diffsci.protein.model.network import (FrameDenoiserNet, FrameNetConfig, ProteinCond, _ConvLayer, _receiver_slots,
                                          e3nn_reference)

SH = o3.Irreps.spherical_harmonics(2)


def _inputs(tp, e=37, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(e, tp.irreps_in1.dim, generator=g, dtype=dtype)
    sh = o3.spherical_harmonics(SH, torch.randn(e, 3, generator=g, dtype=dtype), True, normalization="component")
    if tp.irreps_in2 != SH:  # any second input
        sh = torch.randn(e, tp.irreps_in2.dim, generator=g, dtype=dtype)
    w = torch.randn(e, tp.weight_numel, generator=g, dtype=dtype)
    return x, sh, w


@pytest.mark.parametrize("irreps_in, irreps_out, irreps_in2", [
    ("32x0e + 3x1o", "16x0e + 8x0e + 8x1o", SH),  # the frame network's first layer
    ("16x0e + 8x1o", "16x0e + 8x0e + 8x1o", SH),  # its other layers
    ("16x0e + 8x1o + 4x2e", "16x0e + 12x0e + 8x1o + 4x2e", SH),  # with tensors
    ("4x1o + 3x0e + 2x2e + 1x1e", "5x2e + 3x1o + 2x0e + 4x1o + 2x1e", SH),  # interleaved, repeated outputs
    ("3x1o + 2x1e", "2x0e + 2x0o + 3x1o + 1x1e", "1x0e + 1x1o + 1x1e"),  # a second input with 1o and 1e
])
def test_fused_product_equals_e3nn_with_gradients(irreps_in, irreps_out, irreps_in2):
    tp = o3.FullyConnectedTensorProduct(irreps_in, irreps_in2, irreps_out, shared_weights=False).double()
    fused = FusedTensorProduct(tp).double()
    x, sh, w = _inputs(tp)
    for t in (x, sh, w):
        t.requires_grad_(True)
    ref = tp(x, sh, w)
    got = fused(x, sh, w[:, fused.perm] * fused.scale)
    assert got.shape == ref.shape
    # to e3nn's float32 constants (its Wigner 3j buffers are stored in float32)
    assert torch.allclose(got, ref, atol=1e-6, rtol=1e-6)
    probe = torch.randn_like(ref)
    g_ref = torch.autograd.grad((ref * probe).sum(), (x, sh, w))
    g_got = torch.autograd.grad((got * probe).sum(), (x, sh, w))
    for a, b in zip(g_ref, g_got):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-6)


def test_weight_layout_maps_a_linear_layer_exactly():
    tp = o3.FullyConnectedTensorProduct("16x0e + 8x1o", SH, "16x0e + 8x0e + 8x1o", shared_weights=False).double()
    fused = FusedTensorProduct(tp).double()
    lin = torch.nn.Linear(5, tp.weight_numel).double()
    x, sh, _ = _inputs(tp)
    hidden = torch.randn(x.shape[0], 5, dtype=torch.float64)
    weight, bias = fused.weight_layout(lin.weight, lin.bias)
    got = fused(x, sh, torch.nn.functional.linear(hidden, weight, bias))
    assert torch.allclose(got, tp(x, sh, lin(hidden)), atol=1e-6, rtol=1e-6)
    # every e3nn weight appears once (a permutation), scaled by its path's weight
    assert sorted(fused.perm.tolist()) == list(range(tp.weight_numel))


@pytest.mark.parametrize("irreps_in, irreps_out", [
    ("32x0e + 3x1o", "16x0e + 8x0e + 8x1o"),
    ("16x0e + 8x1o + 4x2e", "16x0e + 12x0e + 8x1o + 4x2e"),
    ("4x1o + 3x0e + 2x2e + 1x1e", "5x2e + 3x1o + 2x0e + 4x1o + 2x1e"),
])
def test_messages_summed_per_receiver_equal_e3nn_messages_summed(irreps_in, irreps_out):
    """FusedTensorProduct.aggregate against e3nn's per-edge messages summed with index_add_, on a
    graph with unequal in-degrees (unused slots) and a node without edges (no row: _receiver_slots)."""
    tp = o3.FullyConnectedTensorProduct(irreps_in, SH, irreps_out, shared_weights=False).double()
    fused = FusedTensorProduct(tp).double()
    lin = torch.nn.Linear(7, tp.weight_numel).double()
    g = torch.Generator().manual_seed(3)
    dst = torch.tensor([0, 0, 0, 2, 3, 3, 0, 2, 4, 4, 4, 4, 4])  # node 1 receives nothing; not sorted
    x, sh, _ = _inputs(tp, e=dst.numel())
    hidden = torch.randn(dst.numel(), 7, generator=g, dtype=torch.float64)
    ref = torch.zeros(5, tp.irreps_out.dim, dtype=torch.float64).index_add_(0, dst, tp(x, sh, lin(hidden)))
    slots, receivers = _receiver_slots(dst, 5)
    assert receivers.tolist() == [0, 2, 3, 4] and slots.shape == (4, 5)  # no row for node 1
    assert sorted(slots[slots < dst.numel()].tolist()) == list(range(dst.numel()))
    assert all((dst[slots[i][slots[i] < dst.numel()]] == r).all() for i, r in enumerate(receivers.tolist()))
    assert (slots[2, 2:] == dst.numel()).all()  # node 3 has two edges, its other slots are unused
    all_slots, everyone = _receiver_slots(torch.tensor([1, 0, 1, 2, 0]), 3)
    assert everyone is None and all_slots.tolist() == [[1, 4], [0, 2], [3, 5]]

    def per_slot(v, fill=0.0):  # unused slots: x and hidden anything (here 7), sh zero
        return torch.cat([v, torch.full((1, v.shape[1]), fill, dtype=v.dtype)])[slots]

    weights = fused.receiver_weights(*fused.weight_layout(lin.weight, lin.bias))
    got = fused.aggregate(per_slot(x, 7.0), per_slot(sh), per_slot(hidden, 7.0), weights)
    assert torch.allclose(got, ref[receivers], atol=1e-6, rtol=1e-6)  # e3nn's 3j constants are float32


def test_unsupported_products_are_refused():
    shared = o3.FullyConnectedTensorProduct("4x0e", SH, "4x0e", shared_weights=True)
    with pytest.raises(DiffsciError, match="per-edge"):
        FusedTensorProduct(shared)
    two = o3.FullyConnectedTensorProduct("4x0e", "2x1o", "4x1o", shared_weights=False)
    with pytest.raises(DiffsciError, match="multiplicity 1"):
        FusedTensorProduct(two)
    sparse = o3.TensorProduct("4x0e + 2x1o", "1x0e", "4x0e + 2x1o", [(0, 0, 0, "uvw", True)], shared_weights=False)
    with pytest.raises(DiffsciError, match="fully connected"):
        FusedTensorProduct(sparse)


@pytest.mark.parametrize("tensors", [0, 3])
def test_written_out_gate_equals_e3nn_gate(tensors):
    hidden = FrameNetConfig(scalars=6, vectors=5, tensors=tensors).hidden_irreps
    layer = _ConvLayer(o3.Irreps("6x0e + 5x1o"), hidden, SH, 10)
    assert layer._gate_split is not None  # the written-out gate is the one in use
    x = torch.randn(20, layer.gate.irreps_in.dim, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(layer._gate(x), layer.gate(x), atol=1e-6)


def _net_inputs(net, b=2, n=30, seed=1):
    g = torch.Generator().manual_seed(seed)
    trans = torch.randn(b, n, 3, generator=g) * 1.2
    rots = torch.linalg.qr(torch.randn(b, n, 3, 3, generator=g))[0]
    mask = torch.ones(b, n, dtype=torch.bool)
    mask[1, -4:] = False
    idx = torch.arange(n).expand(b, n)
    t = torch.rand(b, generator=g)
    cond = ProteinCond(mask, idx, torch.zeros(b, n, dtype=torch.long), trans + 0.1 * torch.randn(b, n, 3, generator=g))
    return trans, rots, t, cond


@pytest.mark.parametrize("tensors", [0, 2])
def test_net_fused_and_frozen_paths_equal_e3nn(tensors):
    torch.manual_seed(0)
    net = FrameDenoiserNet(FrameNetConfig(scalars=8, vectors=4, tensors=tensors, layers=3, self_condition=True)).eval()
    for p in net.parameters():  # the zero-initialised self-conditioning layers too
        torch.nn.init.normal_(p, std=0.3)
    args = _net_inputs(net)
    calls = {"tp": 0, "fused": 0, "gate": 0}
    for layer in net.layers:  # which evaluation ran: e3nn's modules or the fused ones
        for name in calls:
            getattr(layer, name).register_forward_hook(lambda *a, name=name: calls.__setitem__(name, calls[name] + 1))
    summed = []  # outside e3nn_reference each receiver's messages are summed (FusedTensorProduct.aggregate)
    for layer in net.layers:
        agg = layer.fused.aggregate
        layer.fused.aggregate = lambda *a, agg=agg, **k: summed.append(1) or agg(*a, **k)
    with torch.no_grad():
        fused = net(*args)
        assert calls == {"tp": 0, "fused": 0, "gate": 0} and len(summed) == 3
        with net.frozen_weights():
            frozen, again = net(*args), net(*args)
            assert net._frozen["hidden"] is not None  # the edge MLPs' first layers ran as one matmul
            assert len(summed) == 9 and all("recv" in m._frozen for m in net.layers)
        with e3nn_reference(), net.frozen_weights():  # e3nn's product, Gate and Linear; no caches
            plain = net(*args)
            assert all(m._frozen == {} for m in [net, *net.layers])  # nothing was cached
        assert calls == {"tp": 3, "fused": 0, "gate": 3} and len(summed) == 9
    for a, b, c, d in zip(fused, frozen, again, plain):
        assert torch.allclose(a, d, atol=1e-5)
        assert torch.allclose(b, d, atol=1e-5)
        assert torch.equal(b, c)
    assert all(m._frozen is None for m in [net, *net.layers])  # the context cleans up


def test_net_gradients_with_messages_summed_per_receiver_equal_e3nn():
    """Training takes the per-receiver sums too: the loss and every parameter's gradient equal those
    of e3nn's per-edge evaluation (a batch with padding, unequal in-degrees)."""
    torch.manual_seed(0)
    net = FrameDenoiserNet(FrameNetConfig(scalars=8, vectors=4, layers=3, self_condition=True, far_neighbors=2))
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.3)
    args = _net_inputs(net)
    summed = []
    agg = net.layers[1].fused.aggregate
    net.layers[1].fused.aggregate = lambda *a, **k: summed.append(1) or agg(*a, **k)
    grads = []
    for reference in (False, True):
        net.zero_grad()
        with e3nn_reference() if reference else torch.enable_grad():
            trans0, rots0 = net(*args)
        loss = (trans0 ** 2).sum() + (rots0[..., 0] * torch.arange(3.0)).sum()
        loss.backward()
        grads.append([loss.detach()] + [p.grad.clone() for p in net.parameters()])
    assert summed == [1]  # the first pass summed per receiver, the e3nn pass did not
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)
    assert any(g.abs().sum() > 0 for g in grads[0][1:])


def test_a_receiver_with_far_more_edges_takes_the_per_edge_messages():
    """One residue requested as paired with every other (``pair_edges``) receives from all of them:
    the per-receiver layout would be mostly padding, so the net sums per-edge messages instead, with
    the same result as e3nn's evaluation."""
    torch.manual_seed(0)
    net = FrameDenoiserNet(FrameNetConfig(scalars=8, vectors=4, layers=2, ss_conditioning=True, pair_edges=True)).eval()
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.3)
    trans, rots, t, cond = _net_inputs(net, b=2, n=60)
    pair = torch.full((2, 60, 60), PAIR_NONE, dtype=torch.long)
    pair[:, 0, :] = pair[:, :, 0] = PAIR_ANTIPARALLEL
    cond = dataclasses.replace(cond, ss_pair=pair)
    fused_calls, summed = [], []
    net.layers[0].fused.register_forward_hook(lambda *a: fused_calls.append(1))
    agg = net.layers[0].fused.aggregate
    net.layers[0].fused.aggregate = lambda *a, **k: summed.append(1) or agg(*a, **k)
    with torch.no_grad():
        got = net(trans, rots, t, cond)
        with e3nn_reference():
            ref = net(trans, rots, t, cond)
        assert fused_calls == [1] and not summed  # the per-edge fused product ran
        got_plain = net(trans, rots, t, dataclasses.replace(cond, ss_pair=None))
    assert summed == [1]  # without the pairs the receivers' degrees are alike: summed per receiver
    for a, b in zip(got, ref):
        assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(got[0], got_plain[0])


def test_frozen_weights_are_rebuilt_per_context_and_skipped_with_gradients():
    torch.manual_seed(0)
    net = FrameDenoiserNet(FrameNetConfig(scalars=8, vectors=4, layers=2)).eval()
    trans, rots, t, cond = _net_inputs(net)
    args = (trans, rots, t, dataclasses.replace(cond, self_cond=None))
    with torch.no_grad():
        with net.frozen_weights():
            before = net(*args)[0]
        for p in net.parameters():
            p.add_(0.05)
        with net.frozen_weights():
            after = net(*args)[0]
        plain = net(*args)[0]
    assert not torch.allclose(before, after)
    assert torch.allclose(after, plain, atol=1e-6)
    # with gradients the context does nothing: the weights train as usual
    with net.frozen_weights():
        out = net(*args)[0]
        out.sum().backward()
    assert net.layers[0].fc[2].weight.grad is not None and net.layers[0].fc[2].weight.grad.abs().sum() > 0


def test_net_trains_under_bfloat16_autocast():
    """The CUDA training path autocasts to bfloat16 (core.train); on the CPU the same autocast
    checks that the fused products hand e3nn's layers the residual stream's dtype (e3nn's
    linears refuse mixed dtypes) and stay close to float32."""
    torch.manual_seed(0)
    net = FrameDenoiserNet(FrameNetConfig(scalars=8, vectors=4, layers=2, self_condition=True))
    args = _net_inputs(net)
    ref = net(*args)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(*args)
        out[0].float().pow(2).sum().backward()
    assert out[0].dtype == torch.float32
    assert (out[0] - ref[0]).abs().max() < 0.05 * ref[0].abs().max()
    assert all(p.grad is not None for p in net.layers[1].fc.parameters())


def test_sequence_offset_table_equals_per_edge_features():
    from diffsci.protein.model.network import sinusoidal

    net = FrameDenoiserNet(FrameNetConfig(scalars=8, vectors=4, layers=1))
    off = torch.randint(-32, 33, (500,), generator=torch.Generator().manual_seed(0))
    assert torch.equal(net._offset_table(torch.float32, off.device)[off + 32], sinusoidal(off, 14, 100.0))
    assert net._offset_table(torch.float64, off.device).dtype == torch.float64

"""An SE(3)-equivariant denoiser over residue frames, built on e3nn.

Dimension legend: B batch, N residues, E edges, F features.

Inputs: noisy frames (translations ``x`` (B, N, 3) in nm, rotations ``R`` (B, N, 3, 3)), the
time ``t`` (B,), a residue mask (B, N), residue indices (B, N) and chain ids (B, N).

Equivariance by construction:

- node inputs are scalars (sinusoidal time and residue-index embeddings) and vectors (the
  three axes of each residue frame, as ``1o``); edge inputs are spherical harmonics (l <= 2)
  of the relative CA vector and scalar radial/sequence-offset embeddings, plus (by default)
  invariant frame-local scalars: the sender's CA in the receiver's frame and the relative
  rotation, as IPA-style models use; these are what makes local backbone geometry easy to learn;
- messages are e3nn tensor products with weights from the edge scalars, gated
  nonlinearities keep the irreps;
- outputs are one ``1o`` translation update and two ``1o`` vectors added to the first two
  frame axes, orthonormalised by Gram-Schmidt: the predicted clean frame rotates with the
  input, and translations only enter through relative vectors, so the prediction translates
  with the input.

Secondary-structure conditioning (``ss_conditioning``, :mod:`diffsci.protein.ss`): a learned
embedding of each residue's SS class (L, H, E, unknown) is added to its scalar node inputs, and a
learned embedding of each edge's strand-pairing class (not paired, parallel, antiparallel,
unknown) to the edge scalars. Both are invariant inputs and start at zero, so a net with them
and zero weights gives the same output as one without them (and warm-starts from its weights).
With ``pair_edges`` every residue pair requested as paired is also an edge of the graph: two
strands that must pair are usually far apart in the noisy state, beyond the k nearest
neighbours, where an edge embedding alone could never tell them so.

The graph joins each residue to its ``k`` nearest neighbours (CA distance, ``torch.cdist`` +
``topk``; pyg-lib is not used) and to its sequence neighbours within ``seq_window`` in the same
chain.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
from e3nn import o3
from e3nn.nn import Gate
from torch import nn

from diffsci.core.errors import DiffsciError
from diffsci.core.io import check_int
from diffsci.protein.model.fused_tp import FusedTensorProduct
from diffsci.protein.ss import PAIR_ANTIPARALLEL, PAIR_CLASSES, PAIR_PARALLEL, PAIR_UNKNOWN, SS_CLASSES, SS_UNKNOWN

__all__ = ["ProteinCond", "FrameNetConfig", "FrameDenoiserNet", "gram_schmidt", "sinusoidal", "e3nn_reference"]


@dataclass(frozen=True)
class FrameNetConfig:
    """Size of the frame network (frozen; saved in checkpoints)."""

    scalars: int = 16
    vectors: int = 8
    tensors: int = 0
    layers: int = 4
    k_neighbors: int = 12
    seq_window: int = 2
    radial: int = 16
    max_radius_nm: float = 2.0
    frame_edges: bool = True  # invariant frame-local edge features (relative position and rotation)
    # self-conditioning (FrameFlow, after Chen et al. 2022): the CA-CA distances of the previous
    # clean prediction enter every layer's tensor-product weights through their own small MLP whose
    # last layer starts at zero, so a net without it warm-starts one with it unchanged
    self_condition: bool = False
    # secondary-structure conditioning: per-residue SS class and per-edge strand-pairing class
    # embeddings (zero-initialised; module docstring)
    ss_conditioning: bool = False
    # with ss_conditioning: every pair of residues given as paired (parallel or antiparallel) is
    # also an edge, so the pairing request reaches residues that are not yet neighbours in space
    pair_edges: bool = False
    # what the residue-position node features say: "index", the sinusoidal embedding of the
    # absolute residue index (v1; it does not extrapolate past the lengths trained on), or
    # "termini", the embedding of each residue's distance (in residues, clipped at
    # TERMINUS_CLIP) to the N- and the C-terminus of its chain: the same numbers for every
    # interior residue at any length, and unchanged by shifting the residue numbering
    position: str = "index"
    # long-range edges beside the k nearest: each residue also receives from its 2k-th, 4k-th,
    # 8k-th... nearest residue (``far_neighbors`` of them), so a strand can hear a partner that is not yet near (the role of
    # Genie 2's and Proteina's pair features over all pairs, at the cost of a few edges)
    far_neighbors: int = 0

    def __post_init__(self):
        for name in ("scalars", "vectors", "layers", "k_neighbors", "radial"):
            check_int(getattr(self, name), f"FrameNetConfig.{name}")
        check_int(self.far_neighbors, "FrameNetConfig.far_neighbors", minimum=0, maximum=8)
        if self.position not in ("index", "termini"):
            raise DiffsciError(f"FrameNetConfig.position must be 'index' or 'termini', got {self.position!r}")
        if self.pair_edges and not self.ss_conditioning:
            raise DiffsciError("FrameNetConfig.pair_edges needs ss_conditioning (the pairs are SS inputs)")

    @property
    def hidden_irreps(self) -> o3.Irreps:
        parts = [(self.scalars, "0e"), (self.vectors, "1o")]
        if self.tensors:
            parts.append((self.tensors, "2e"))
        return o3.Irreps([(m, o3.Irrep(ir)) for m, ir in parts])


#: residues from a chain end beyond which the "termini" position features stop changing
TERMINUS_CLIP = 32


def termini_distances(res_idx: torch.Tensor, chain: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each residue's count of residues of its chain before and after it (by residue index;
    masked residues do not count), clipped at :data:`TERMINUS_CLIP`. Shapes (B, N) each."""
    same = (chain[:, :, None] == chain[:, None, :]) & mask[:, None, :]
    before = (same & (res_idx[:, None, :] < res_idx[:, :, None])).sum(-1)
    after = (same & (res_idx[:, None, :] > res_idx[:, :, None])).sum(-1)
    return before.clamp(max=TERMINUS_CLIP), after.clamp(max=TERMINUS_CLIP)


def far_ranks(k: int, n_far: int, n: int) -> list[int]:
    """The distance ranks (0 = nearest other residue) of the long-range edges: ``2k, 4k, 8k...``
    (``n_far`` of them), those below ``n - 1`` (a structure of ``n`` residues; a padded one drops
    the ranks beyond its own residues later, so padding does not change a structure's edges)."""
    return [r for r in (k * 2 ** (i + 1) for i in range(n_far)) if r < n - 1] if k > 0 else []


def sinusoidal(x: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Transformer-style sinusoidal embedding of ``x`` (...,). Shape (..., dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=x.device, dtype=torch.float32) / half)
    ang = x.float()[..., None] * freqs
    return torch.cat([torch.sin(ang), torch.cos(ang)], -1)


def gram_schmidt(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Rotation with columns ``e1 = a/|a|``, ``e2`` = normalised part of b orthogonal to e1,
    ``e3 = e1 x e2``. Shape (..., 3), (..., 3) -> (..., 3, 3)."""
    e1 = a / a.norm(dim=-1, keepdim=True).clamp_min(eps)
    b = b - (b * e1).sum(-1, keepdim=True) * e1
    e2 = b / b.norm(dim=-1, keepdim=True).clamp_min(eps)
    e3 = torch.cross(e1, e2, dim=-1)
    return torch.stack([e1, e2, e3], dim=-1)


def _radial_basis(d: torch.Tensor, n: int, cutoff: float) -> torch.Tensor:
    centers = torch.linspace(0.0, cutoff, n, device=d.device, dtype=d.dtype)
    width = cutoff / n
    return torch.exp(-(((d[..., None] - centers) / width) ** 2))


#: True inside :func:`e3nn_reference`
_REFERENCE = False


@contextlib.contextmanager
def e3nn_reference():
    """Within this context every frame network is evaluated with e3nn's own modules, as before the
    fused evaluation: a message per edge, the tensor product one path at a time, e3nn's ``Gate`` and
    ``Linear``, and no frozen-weight caches. The same numbers to float rounding (``tests/test_protein_fused_tp.py``);
    the baseline that ``diffsci bench speed --protein --reference`` times the fast path against."""
    global _REFERENCE
    prev, _REFERENCE = _REFERENCE, True
    try:
        yield
    finally:
        _REFERENCE = prev


def _linear(lin: o3.Linear, x: torch.Tensor, frozen: dict | None) -> torch.Tensor:
    """``lin(x)`` of an e3nn ``Linear``; while weights are frozen (``frozen`` a dict) and ``lin`` has
    no biases, as one matmul with the dense matrix ``lin(I)`` (built once: the map is linear)."""
    if frozen is None or _REFERENCE or torch.is_grad_enabled() or lin.bias.numel():  # with biases: affine
        return lin(x)
    key = ("linear", id(lin))
    if key not in frozen:
        frozen[key] = lin(torch.eye(lin.irreps_in.dim, dtype=x.dtype, device=x.device))
    return (x @ frozen[key]).to(x.dtype)


def _in_degree(dst: torch.Tensor, n_nodes: int, dtype) -> torch.Tensor:
    """(n_nodes, 1): the number of edges into each node, at least 1."""
    ones = torch.ones_like(dst, dtype=dtype)
    return torch.zeros(n_nodes, dtype=dtype, device=dst.device).index_add_(0, dst, ones).clamp_min(1)[:, None]


@dataclass(frozen=True)
class ProteinCond:
    """Per-residue conditioning of the network. Shapes (B, N): mask (bool), res_idx, chain;
    ``self_cond`` (B, N, 3) nm: the previous clean-translation prediction, for a self-conditioned
    net (None: none yet); ``ss`` (B, N) SS classes and ``ss_pair`` (B, N, N) pair classes
    (:mod:`diffsci.protein.ss`), for an SS-conditioned net (None: all unknown)."""

    mask: torch.Tensor
    res_idx: torch.Tensor
    chain: torch.Tensor
    self_cond: torch.Tensor | None = None
    ss: torch.Tensor | None = None
    ss_pair: torch.Tensor | None = None

    def rows(self, lo: int, hi: int) -> ProteinCond:
        """The conditioning of batch rows lo..hi-1."""
        return ProteinCond(*(None if v is None else v[lo:hi] for v in
                             (self.mask, self.res_idx, self.chain, self.self_cond, self.ss, self.ss_pair)))


@dataclass
class _Edges:
    """What every layer of one forward shares: the edges (src, dst) over the flattened batch of
    ``n_nodes`` residues, their spherical harmonics ``sh`` and scalars ``edge_s`` (and ``sc_s``,
    self-conditioning), the receivers' in-degrees ``deg`` and the tensor products' sh couplings.

    With ``slots`` = (R, D), the edges are laid out per receiver instead (the default outside
    :func:`e3nn_reference`, :func:`_receiver_slots`): row r D + j of ``src``, ``sh``, ``edge_s`` and
    ``sc_s`` is the j-th edge of receiver ``receivers[r]`` (the nodes with edges; None: all
    ``n_nodes``), ``sh`` is zero in a receiver's unused slots, ``dst`` is None and ``deg`` must be given."""

    src: torch.Tensor
    dst: torch.Tensor
    sh: torch.Tensor
    edge_s: torch.Tensor
    n_nodes: int
    sc_s: torch.Tensor | None = None
    deg: torch.Tensor | None = None
    coupling: dict | None = None
    slots: tuple[int, int] | None = None
    receivers: torch.Tensor | None = None


def _receiver_slots(dst: torch.Tensor, n_nodes: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The edges (``dst`` (E,) their receivers) laid out per receiver: ``slots`` (R, D) long, the
    indices of the incoming edges of each of the R nodes that have any (D the largest in-degree;
    a receiver's unused slots hold E, one past the last edge), and those nodes' indices (R,), or
    None when every node has edges (then R = n_nodes, in order)."""
    e = dst.shape[0]
    deg = torch.zeros(n_nodes, dtype=torch.long, device=dst.device).index_add_(0, dst, torch.ones_like(dst))
    order = torch.argsort(dst, stable=True)
    by_dst = dst[order]
    pos = torch.arange(e, device=dst.device) - (torch.cumsum(deg, 0) - deg)[by_dst]  # rank among its receiver's edges
    receivers = None
    row = torch.arange(n_nodes, device=dst.device)
    if bool((deg == 0).any()):  # padding or lone residues: no rows for them
        receivers = torch.nonzero(deg > 0).reshape(-1)
        row = torch.full_like(row, -1).index_copy_(0, receivers, torch.arange(receivers.numel(), device=dst.device))
    slots = torch.full((n_nodes if receivers is None else receivers.numel(), int(deg.max()) if e else 0), e,
                       dtype=torch.long, device=dst.device)
    slots[row[by_dst], pos] = order
    return slots, receivers


class _ConvLayer(nn.Module):
    """One equivariant message-passing layer: TP(node[src], SH(edge)) weighted by an MLP of edge
    scalars, mean-aggregated at the receiver, gated, residual."""

    def __init__(self, irreps_in: o3.Irreps, irreps_hidden: o3.Irreps, irreps_sh: o3.Irreps, edge_scalars: int,
                 sc_scalars: int = 0):
        super().__init__()
        scalars = o3.Irreps([(m, ir) for m, ir in irreps_hidden if ir.l == 0])
        gated = o3.Irreps([(m, ir) for m, ir in irreps_hidden if ir.l > 0])
        gates = o3.Irreps([(gated.num_irreps, "0e")])
        self.gate = Gate(scalars, [torch.nn.functional.silu], gates, [torch.sigmoid], gated)
        self.tp = o3.FullyConnectedTensorProduct(irreps_in, irreps_sh, self.gate.irreps_in, shared_weights=False)
        self.fused = FusedTensorProduct(self.tp)  # evaluates self.tp faster (its docstring); no parameters
        self.fc = nn.Sequential(nn.Linear(edge_scalars, 64), nn.SiLU(), nn.Linear(64, self.tp.weight_numel))
        self.sc_fc = None
        if sc_scalars:
            self.sc_fc = nn.Sequential(nn.Linear(sc_scalars, 32), nn.SiLU(), nn.Linear(32, self.tp.weight_numel))
            nn.init.zeros_(self.sc_fc[2].weight)
            nn.init.zeros_(self.sc_fc[2].bias)
        self.self_int = o3.Linear(irreps_in, self.gate.irreps_in)
        self.irreps_out = self.gate.irreps_out
        self.residual = irreps_in == self.irreps_out
        # the gate written out (_gate): exact when e3nn keeps the order scalars | gates | gated and
        # the scalars and the gates are one irrep block each (one activation function each)
        n_s, n_g = scalars.dim, gates.dim
        self._gate_split = None
        in_order = tuple((scalars + gates + gated).sort().p) == tuple(range(len(scalars + gates + gated)))
        one_act = len(self.gate.act_scalars.acts) == len(self.gate.act_gates.acts) == 1  # one block each
        if in_order and one_act and n_g:
            expand = torch.cat([torch.full((ir.dim,), i) for i, (_, ir) in
                                enumerate(o3.Irreps([(1, ir) for mul, ir in gated for _ in range(mul)]))])
            self._gate_split = (n_s, n_g)
            self.register_buffer("_gate_expand", expand, persistent=False)
        self._frozen = None  # a dict while the net's weights are frozen (FrameDenoiserNet.frozen_weights)

    def _gate(self, x):
        """``self.gate(x)`` written out (the same e3nn activations, normalised to unit second
        moment): the scalars through their activation, each gated irrep times its activated gate."""
        if self._gate_split is None or _REFERENCE:
            return self.gate(x)
        n_s, n_g = self._gate_split
        gates = self.gate.act_gates.acts[0](x[:, n_s : n_s + n_g])
        return torch.cat([self.gate.act_scalars.acts[0](x[:, :n_s]), x[:, n_s + n_g :] * gates[:, self._gate_expand]], 1)

    def _weights(self):
        """The edge MLP's hidden-to-weight layer (fc's last layer, with sc_fc's beside it) in the
        fused product's stacked layout; built once while the weights are frozen."""
        frozen = self._frozen if not (torch.is_grad_enabled() or _REFERENCE) else None
        if frozen is not None and "tp" in frozen:
            return frozen["tp"]
        weight, bias = self.fc[2].weight, self.fc[2].bias
        if self.sc_fc is not None:  # fc(edge_s) + sc_fc(sc_s) as one matmul over the joined hidden features
            weight, bias = torch.cat([weight, self.sc_fc[2].weight], 1), bias + self.sc_fc[2].bias
        if not _REFERENCE:
            weight, bias = self.fused.weight_layout(weight, bias)
        if frozen is not None:
            frozen["tp"] = (weight, bias)
        return weight, bias

    def _receiver_weights(self) -> list[torch.Tensor]:
        """:meth:`_weights` as :meth:`FusedTensorProduct.receiver_weights` (built once while the
        weights are frozen)."""
        frozen = self._frozen if not torch.is_grad_enabled() else None
        if frozen is not None and "recv" in frozen:
            return frozen["recv"]
        weights = self.fused.receiver_weights(*self._weights())
        if frozen is not None:
            frozen["recv"] = weights
        return weights

    def forward(self, h, e: _Edges, hidden=None):
        if hidden is None:  # the edge MLPs' hidden features (the net passes them when it computed them at once)
            hidden = self.fc[1](self.fc[0](e.edge_s))
            if self.sc_fc is not None:
                hidden = torch.cat([hidden, self.sc_fc[1](self.sc_fc[0](e.sc_s))], -1)
        if e.slots is not None:  # summed per receiver (FusedTensorProduct.aggregate): no per-edge weights
            n_r, d = e.slots
            agg = self.fused.aggregate(h[e.src].reshape(n_r, d, -1), e.sh.reshape(n_r, d, -1),
                                       hidden.reshape(n_r, d, -1), self._receiver_weights(), e.coupling)
            if e.receivers is not None:  # nodes without edges get nothing
                agg = agg.new_zeros(e.n_nodes, agg.shape[1]).index_copy(0, e.receivers, agg)
        else:
            w = nn.functional.linear(hidden, *self._weights())
            msg = self.tp(h[e.src], e.sh, w) if _REFERENCE else self.fused(h[e.src], e.sh, w, e.coupling)
            agg = torch.zeros(e.n_nodes, msg.shape[-1], dtype=msg.dtype, device=msg.device).index_add_(0, e.dst, msg)
        deg = e.deg
        if deg is None:  # messages per receiver, at least 1 (the same for every layer: the net passes it)
            deg = _in_degree(e.dst, e.n_nodes, agg.dtype)
        out = self._gate(_linear(self.self_int, h, self._frozen) + agg / deg)
        return h + out if self.residual else out


class FrameDenoiserNet(nn.Module):
    """``forward(trans, rots, t, cond) -> (trans0_hat, rots0_hat)``.

    Shapes: trans (B, N, 3) nm, rots (B, N, 3, 3), t (B,); ``cond`` a :class:`ProteinCond`:
    mask (B, N) bool, res_idx (B, N), chain (B, N) int; ``self_cond`` (B, N, 3) nm, the previous
    clean-translation prediction (self-conditioning; None: zero features, as in the first
    sampling step); ``ss`` (B, N) int SS classes and ``ss_pair`` (B, N, N) int pair classes
    (:mod:`diffsci.protein.ss`; an SS-conditioned net only; None: all unknown).
    """

    # parameters a warm start may lack: they start at zero, so the loaded net is unchanged
    warm_start_optional = ("sc_fc.", "ss_embed.", "pair_embed.")
    #: without gradients, a batch is evaluated this many structures at a time: the edge tensors of
    #: a larger batch outgrow the CPU caches, and each structure costs more than alone
    #: (``diffsci bench speed --protein``, batch 16 against batch 1)
    inference_chunk = 4

    def __init__(self, cfg: FrameNetConfig = FrameNetConfig()):
        super().__init__()
        self.cfg = cfg
        self.n_time, self.n_idx = 16, 16
        irreps_in = o3.Irreps(f"{self.n_time + self.n_idx}x0e + 3x1o")
        self.irreps_sh = o3.Irreps.spherical_harmonics(2)
        edge_scalars = cfg.radial + 16 + self.n_time + (12 if cfg.frame_edges else 0)
        hidden = cfg.hidden_irreps
        layers, irr = [], irreps_in
        for _ in range(cfg.layers):
            layer = _ConvLayer(irr, hidden, self.irreps_sh, edge_scalars, cfg.radial if cfg.self_condition else 0)
            layers.append(layer)
            irr = layer.irreps_out
        self.layers = nn.ModuleList(layers)
        self.readout = o3.Linear(irr, o3.Irreps("3x1o"))
        self._frozen = None  # a dict inside frozen_weights()
        # e3nn's spherical_harmonics() builds this module at every call (it has no state)
        object.__setattr__(self, "_sh", o3.SphericalHarmonics(self.irreps_sh, True, "component"))
        if cfg.ss_conditioning:
            self.ss_embed = nn.Embedding(SS_CLASSES, self.n_time + self.n_idx)
            self.pair_embed = nn.Embedding(PAIR_CLASSES, edge_scalars)
            nn.init.zeros_(self.ss_embed.weight)
            nn.init.zeros_(self.pair_embed.weight)

    def warm_start_missing(self, keys: list[str]) -> list[str]:
        """Warm start from a net with fewer layers (the trainer's hook; ``keys``: this net's
        parameters the loaded weights lack): a layer past the first whose every parameter is
        missing starts as the identity. Its self-interaction and its edge MLPs' last layers are
        zeroed, so its messages and its update are zero and the residual passes the features on;
        the grown net computes what the loaded one did, and the new layers learn from there
        (their gradients are not zero). Returns the keys so explained (others are refused)."""
        missing, accepted = set(keys), []
        for i, layer in enumerate(self.layers):
            names = [f"layers.{i}.{k}" for k in layer.state_dict()]
            if i == 0 or not layer.residual or not all(k in missing for k in names):
                continue
            with torch.no_grad():
                for mod in (layer.self_int, layer.fc[2]) + ((layer.sc_fc[2],) if layer.sc_fc is not None else ()):
                    for param in mod.parameters():
                        param.zero_()
            accepted += names
        return accepted

    @contextlib.contextmanager
    def frozen_weights(self):
        """Within this context, without gradients, the weights are taken as constant: what the
        layers derive from them (the tensor products' stacked weight layers, the e3nn linears as
        dense matrices) is built at the first call and reused (the sampler's many calls). The
        numbers are those of the plain forward to float rounding. Changing a parameter inside
        the context is an error the net cannot see: do not."""
        if torch.is_grad_enabled():
            yield self
            return
        mods = [self] + list(self.layers)
        prev = [m._frozen for m in mods]
        for m in mods:
            m._frozen = {}
        try:
            yield self
        finally:
            for m, p in zip(mods, prev):
                m._frozen = p

    # ------------------------------------------------------------------ graph
    def build_edges(self, x: torch.Tensor, mask: torch.Tensor, res_idx: torch.Tensor, chain: torch.Tensor,
                    ss_pair: torch.Tensor | None = None):
        """Edges (src, dst) over the flattened batch: kNN by CA distance plus sequence neighbours
        (plus, with ``pair_edges``, every residue pair whose class in ``ss_pair`` (B, N, N) is
        parallel or antiparallel)."""
        b, n, _ = x.shape
        d = torch.cdist(x, x)  # (B, N, N)
        valid = mask[:, :, None] & mask[:, None, :]
        eye = torch.eye(n, dtype=torch.bool, device=x.device)[None]
        big = torch.finfo(d.dtype).max
        d_knn = torch.where(valid & ~eye, d, torch.full_like(d, big))
        k = min(self.cfg.k_neighbors, n - 1) if n > 1 else 0
        adj = torch.zeros(b, n, n, dtype=torch.bool, device=x.device)
        if k > 0:
            ranks = far_ranks(k, self.cfg.far_neighbors, n)
            order = d_knn.topk(max([k - 1] + ranks) + 1, dim=-1, largest=False).indices
            adj.scatter_(2, order[..., :k], True)
            if ranks:
                # a rank beyond a structure's own residues points at padding, removed below
                adj.scatter_(2, order[..., ranks], True)
        same_chain = chain[:, :, None] == chain[:, None, :]
        seq = (res_idx[:, :, None] - res_idx[:, None, :]).abs() <= self.cfg.seq_window
        adj = adj | (seq & same_chain)
        if self.cfg.pair_edges and ss_pair is not None:
            adj = adj | (ss_pair == PAIR_PARALLEL) | (ss_pair == PAIR_ANTIPARALLEL)
        adj = adj & valid & ~eye
        bi, dst, src = adj.nonzero(as_tuple=True)  # receiver i gets messages from j
        off = bi * n
        return src + off, dst + off

    @staticmethod
    def frame_edge_features(trans, rots, src, dst) -> torch.Tensor:
        """Invariant edge scalars (E, 12): the sender's CA in the receiver's frame,
        ``R_dst^T (x_src - x_dst)`` (nm, squashed by ``tanh`` beyond ~1 nm), and the relative rotation
        ``R_dst^T R_src`` (9 entries). Both are unchanged by a global rotation and translation,
        so they may feed the tensor-product weights without breaking equivariance."""
        b, n, _ = trans.shape
        r = rots.reshape(b * n, 3, 3)
        xf = trans.reshape(b * n, 3)
        r_dst = r[dst]
        local = torch.einsum("eji,ej->ei", r_dst, xf[src] - xf[dst])
        rel_rot = torch.einsum("eji,ejk->eik", r_dst, r[src]).reshape(-1, 9)
        return torch.cat([torch.tanh(local), rel_rot], -1)

    def _offset_table(self, dtype, device) -> torch.Tensor:
        """(65, 14): the sinusoidal features of the sequence offsets -32..32 (the edges' clamped
        offsets index it; the same numbers as computing them per edge)."""
        key = (dtype, device)
        table = self.__dict__.setdefault("_offset_tables", {}).get(key)
        if table is None:
            table = sinusoidal(torch.arange(-32, 33, device=device), 14, 100.0).to(dtype)
            self._offset_tables[key] = table
        return table

    def _position_features(self, res_idx, chain, mask) -> torch.Tensor:
        """(B N, n_idx) node scalars of residue position (``FrameNetConfig.position``)."""
        if self.cfg.position == "index":
            return sinusoidal(res_idx.reshape(-1), self.n_idx, 1000.0)
        before, after = termini_distances(res_idx, chain, mask)
        half = self.n_idx // 2
        return torch.cat([sinusoidal(before.reshape(-1), half, 100.0), sinusoidal(after.reshape(-1), half, 100.0)], -1)

    def _add_ss(self, node_s, edge_s, ss, ss_pair, src, dst, b: int, n: int):
        """Node scalars (B N, F) plus the SS-class embedding and edge scalars (E, F_e) plus the
        pairing-class embedding of (receiver, sender); absent labels are unknown."""
        device = node_s.device
        if ss is None:
            ss = torch.full((b, n), SS_UNKNOWN, dtype=torch.long, device=device)
        node_s = node_s + self.ss_embed(ss.reshape(-1).long()).to(node_s.dtype)
        if ss_pair is None:
            pair = torch.full_like(src, PAIR_UNKNOWN)
        else:
            pair = ss_pair.long()[src // n, dst % n, src % n]
        return node_s, edge_s + self.pair_embed(pair).to(edge_s.dtype)

    def forward(self, trans, rots, t, cond: ProteinCond):
        b, k = trans.shape[0], self.inference_chunk
        if b > k and not torch.is_grad_enabled():
            parts = [self._forward(trans[i : i + k], rots[i : i + k], t[i : i + k], cond.rows(i, i + k))
                     for i in range(0, b, k)]
            return tuple(torch.cat(p) for p in zip(*parts))
        return self._forward(trans, rots, t, cond)

    def _edge_hidden(self, edge_s, sc_s):
        """While the weights are frozen: every layer's edge-MLP hidden features (the SiLU of
        ``fc[0](edge_s)`` beside that of ``sc_fc[0](sc_s)``) from one matmul with the first
        layers stacked block-wise, as a list of (E, F) column views; None otherwise."""
        frozen = self._frozen
        if frozen is None or _REFERENCE or torch.is_grad_enabled():
            return None
        if "hidden" not in frozen:
            n_e = edge_s.shape[1]
            blocks, sizes = [], []
            for layer in self.layers:
                if not isinstance(layer.fc[1], nn.SiLU) or (layer.sc_fc is not None and not isinstance(layer.sc_fc[1], nn.SiLU)):
                    frozen["hidden"] = None
                    return None
                w = [nn.functional.pad(layer.fc[0].weight, (0, 0 if sc_s is None else sc_s.shape[1]))]
                b = [layer.fc[0].bias]
                if layer.sc_fc is not None:
                    w.append(nn.functional.pad(layer.sc_fc[0].weight, (n_e, 0)))
                    b.append(layer.sc_fc[0].bias)
                blocks.append((torch.cat(w), torch.cat(b)))
                sizes.append(blocks[-1][1].shape[0])
            frozen["hidden"] = (torch.cat([w for w, _ in blocks]), torch.cat([b for _, b in blocks]), sizes)
        if frozen["hidden"] is None:
            return None
        weight, bias, sizes = frozen["hidden"]
        x = edge_s if sc_s is None else torch.cat([edge_s, sc_s], -1)
        return list(nn.functional.silu(nn.functional.linear(x, weight.to(x.dtype), bias.to(x.dtype))).split(sizes, -1))

    def _forward(self, trans, rots, t, cond: ProteinCond):
        b, n, _ = trans.shape
        dtype = trans.dtype
        mask, res_idx, chain, sc_trans = cond.mask, cond.res_idx, cond.chain, cond.self_cond
        src, dst = self.build_edges(trans, mask, res_idx, chain, cond.ss_pair)
        xf = trans.reshape(b * n, 3)
        rel = xf[src] - xf[dst]  # (E, 3) sender relative to receiver
        dist = rel.norm(dim=-1)
        sh = self._sh(rel)
        t_emb = sinusoidal(t * 1000.0, self.n_time).to(dtype)  # (B, n_time)
        bidx = torch.arange(b, device=trans.device).repeat_interleave(n)
        seq_off = (res_idx.reshape(-1)[src] - res_idx.reshape(-1)[dst]).clamp(-32, 32)
        same = (chain.reshape(-1)[src] == chain.reshape(-1)[dst]).to(dtype)
        edge_s = torch.cat(
            [_radial_basis(dist, self.cfg.radial, self.cfg.max_radius_nm).to(dtype),
             self._offset_table(dtype, trans.device)[seq_off + 32] * same[:, None], same[:, None], (1 - same)[:, None],
             t_emb[bidx[dst]]] + ([self.frame_edge_features(trans, rots, src, dst)] if self.cfg.frame_edges else []), -1)
        node_s = torch.cat([t_emb[bidx], self._position_features(res_idx, chain, mask).to(dtype)], -1)
        if self.cfg.ss_conditioning:
            node_s, edge_s = self._add_ss(node_s, edge_s, cond.ss, cond.ss_pair, src, dst, b, n)
        axes = rots.reshape(b * n, 3, 3).transpose(-1, -2).reshape(b * n, 9)  # rows = frame axes (3x1o)
        h = torch.cat([node_s, axes], -1)
        sc_s = None
        if self.cfg.self_condition:
            if sc_trans is None:
                sc_s = torch.zeros(src.shape[0], self.cfg.radial, dtype=dtype, device=trans.device)
            else:
                sf = sc_trans.reshape(b * n, 3).to(dtype)
                sc_s = _radial_basis((sf[src] - sf[dst]).norm(dim=-1), self.cfg.radial, self.cfg.max_radius_nm).to(dtype)
        # the in-degrees and the tensor products' sh couplings (FusedTensorProduct.coupling): shared by the layers
        edges = _Edges(src, dst, sh, edge_s, b * n, sc_s, _in_degree(dst, b * n, dtype), {})
        if not _REFERENCE and src.numel():
            slots, receivers = _receiver_slots(dst, b * n)
            if slots.numel() <= 2 * src.numel():  # not when one receiver has far more edges than the rest
                flat = slots.reshape(-1)

                def per_slot(v):  # the edges' rows in slot order, zero in the unused slots
                    return None if v is None else torch.cat([v, v.new_zeros((1,) + v.shape[1:])])[flat]

                edges = _Edges(per_slot(src), None, per_slot(sh), per_slot(edge_s), b * n, per_slot(sc_s), edges.deg,
                               {}, tuple(slots.shape), receivers)
        edge_s, sc_s = edges.edge_s, edges.sc_s
        hidden = self._edge_hidden(edge_s, sc_s) or [None] * len(self.layers)  # per edge, or per slot
        for layer, hid in zip(self.layers, hidden):
            h = layer(h, edges, hid)
        out = _linear(self.readout, h, self._frozen).reshape(b, n, 3, 3)  # three 1o vectors
        dx, da, db = out.unbind(-2)
        trans0 = trans + dx
        rots0 = gram_schmidt(rots[..., 0] + da, rots[..., 1] + db)
        m = mask[..., None].to(dtype)
        trans0 = trans0 * m + trans * (1 - m)
        rots0 = torch.where(mask[..., None, None], rots0, rots)
        return trans0, rots0

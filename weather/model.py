"""The graph network: grid -> icosahedral mesh -> grid, with noise-conditioned layer norms.

Dimension legend: B batch, G grid points (H*W, row-major latitude-major), M mesh nodes,
E edges, F input features per grid point, D latent width, C output channels.

Architecture (GenCast / GraphCast style, sized for a CPU):

- embed grid inputs, mesh node features and the three edge sets with MLPs;
- encoder: one interaction-network step on grid->mesh edges (messages from grid nodes and
  edge features, summed at mesh nodes); grid nodes get a residual MLP update;
- processor: ``layers`` interaction-network steps on the mesh (edge update, then node update
  from the summed edge messages), residual;
- decoder: one interaction-network step on mesh->grid edges, then a linear read-out.

Every MLP ends in a layer norm whose scale and shift are predicted from the noise level
embedding (Fourier features of ``c_noise = log(sigma) / 4``), GenCast's conditional layer norm.
A network without noise conditioning (the deterministic baseline) passes ``c_noise = None``.

Activation checkpointing (``GraphNet.activation_checkpointing = True``, set by training's
``train.activation_checkpointing``): while gradients are recorded, each processor layer, each
grid-node MLP and the encoder's and decoder's edge messages in chunks of ``chunk_edges`` edges
run under :func:`torch.utils.checkpoint.checkpoint` (non-reentrant): their activations are
recomputed in the backward pass instead of kept, so the saved activations are those at the
blocks' boundaries (node states and one chunk at a time), not every edge's MLP intermediates.
The values are the same (the chunked message sums differ by float rounding only); off by default
and never saved in a checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from diffsci.core.errors import DiffsciError
from diffsci.core.io import check_int
from diffsci.weather.graph import GridMeshGraph

__all__ = ["GraphNetConfig", "GraphNet", "CondLayerNorm", "fourier_features"]


@dataclass(frozen=True)
class GraphNetConfig:
    """Sizes of the graph network (frozen; saved in checkpoints)."""

    in_features: int
    out_channels: int
    latent: int = 48
    layers: int = 4
    noise_features: int = 16
    conditional: bool = True

    def __post_init__(self):
        for name in ("in_features", "out_channels", "latent", "layers", "noise_features"):
            check_int(getattr(self, name), f"GraphNetConfig.{name}")


def fourier_features(x: torch.Tensor, n: int) -> torch.Tensor:
    """Sin/cos features of ``x`` (B,) at ``n // 2`` log-spaced frequencies. Shape (B, n)."""
    freqs = torch.exp(torch.linspace(0.0, math.log(64.0), n // 2, device=x.device, dtype=torch.float32))
    ang = x.float()[:, None] * freqs[None] * math.pi
    return torch.cat([torch.sin(ang), torch.cos(ang)], -1)


class CondLayerNorm(nn.Module):
    """LayerNorm without affine parameters followed by ``(1 + scale(e)) * y + shift(e)``."""

    def __init__(self, dim: int, cond_dim: int | None):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=cond_dim is None)
        self.film = nn.Linear(cond_dim, 2 * dim) if cond_dim else None
        if self.film is not None:
            nn.init.zeros_(self.film.weight)
            nn.init.zeros_(self.film.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None) -> torch.Tensor:
        y = self.norm(x)
        if self.film is None or emb is None:
            return y
        scale, shift = self.film(emb).chunk(2, dim=-1)  # (B, D) each
        shape = (emb.shape[0],) + (1,) * (x.ndim - 2) + (x.shape[-1],)
        return torch.addcmul(shift.reshape(shape), y, 1 + scale.reshape(shape))


class MLP(nn.Module):
    """Linear -> SiLU -> Linear -> conditional LayerNorm."""

    def __init__(self, d_in: int, d_out: int, cond_dim: int | None):
        super().__init__()
        self.l1 = nn.Linear(d_in, d_out)
        self.l2 = nn.Linear(d_out, d_out)
        self.norm = CondLayerNorm(d_out, cond_dim)

    def forward(self, x, emb):
        return self.norm(self.l2(F.silu(self.l1(x))), emb)

    def split_first(self, x: torch.Tensor, part: int, n_parts: int, bias: bool) -> torch.Tensor:
        """``x @ W1[:, part]^T`` (+ the bias when ``bias``): the contribution of one block of an
        input that is the concatenation of ``n_parts`` equal-width blocks. Summing the blocks'
        contributions equals ``l1(cat(blocks))`` without materialising the concatenation."""
        d = self.l1.in_features // n_parts
        w = self.l1.weight[:, part * d:(part + 1) * d]
        return F.linear(x, w, self.l1.bias if bias else None)

    def finish(self, pre: torch.Tensor, emb):
        """The rest of the MLP after the first linear layer's pre-activation ``pre``."""
        return self.norm(self.l2(F.silu(pre)), emb)


def _gather(h: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    return h.index_select(1, idx)


def _scatter_sum(msg: torch.Tensor, idx: torch.Tensor, n: int) -> torch.Tensor:
    out = msg.new_zeros(msg.shape[0], n, msg.shape[-1])
    return out.index_add_(1, idx, msg)


class GraphNet(nn.Module):
    """``forward(x (B, G, F), graph, c_noise (B,) or None) -> (B, G, C)``.

    ``activation_checkpointing`` (default False): recompute activations in the backward pass
    (see the module docstring); ``chunk_edges``: edges per checkpointed chunk of the encoder's
    and decoder's messages."""

    activation_checkpointing: bool = False
    chunk_edges: int = 1 << 15

    def __init__(self, cfg: GraphNetConfig, graph: GridMeshGraph):
        super().__init__()
        self.cfg = cfg
        d = cfg.latent
        cd = d if cfg.conditional else None
        self.noise_mlp = (
            nn.Sequential(nn.Linear(cfg.noise_features, d), nn.SiLU(), nn.Linear(d, d)) if cfg.conditional else None
        )
        self.grid_embed = MLP(cfg.in_features + graph.grid_node_attr.shape[1], d, cd)
        self.mesh_embed = MLP(graph.mesh_node_attr.shape[1], d, cd)
        self.g2m_embed = MLP(graph.g2m_edge_attr.shape[1], d, cd)
        self.mesh_edge_embed = MLP(graph.mesh_edge_attr.shape[1], d, cd)
        self.m2g_embed = MLP(graph.m2g_edge_attr.shape[1], d, cd)
        self.enc_msg = MLP(3 * d, d, cd)
        self.enc_mesh = MLP(2 * d, d, cd)
        self.enc_grid = MLP(d, d, cd)
        self.proc_edge = nn.ModuleList(MLP(3 * d, d, cd) for _ in range(cfg.layers))
        self.proc_node = nn.ModuleList(MLP(2 * d, d, cd) for _ in range(cfg.layers))
        self.dec_msg = MLP(3 * d, d, cd)
        self.dec_grid = MLP(2 * d, d, cd)
        self.out = nn.Linear(d, cfg.out_channels)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.set_graph(graph)

    def set_graph(self, graph: GridMeshGraph) -> None:
        """Attach the (non-trainable) graph tensors as buffers (not saved in the state dict)."""
        for name, value in graph.tensors().items():
            self.register_buffer(f"g_{name}", value, persistent=False)
        self.n_grid, self.n_mesh = graph.num_grid, graph.num_mesh

    def _run(self, fn, *args):
        """``fn(*args)``, under non-reentrant activation checkpointing when it is on and gradients
        are recorded (the network draws no random numbers: no RNG state to restore)."""
        if self.activation_checkpointing and torch.is_grad_enabled():
            return checkpoint(fn, *args, use_reentrant=False, preserve_rng_state=False)
        return fn(*args)

    def _messages(self, mlp: MLP, embed: MLP, name: str, h_src, h_dst, emb, dtype: torch.dtype):
        """``sum over edges into each destination of mlp(cat(embed(attr), h_src[src], h_dst[dst]))``
        for the edge set ``name`` (``g2m`` or ``m2g``; edge features cast to ``dtype``), Shape
        (B, mesh or grid nodes, D). Node features are
        projected once; the edges go in one piece, or, with activation checkpointing, in
        checkpointed chunks of ``chunk_edges`` (only one chunk's activations live at a time)."""
        attr, (src, dst) = getattr(self, f"g_{name}_edge_attr"), getattr(self, f"g_{name}_edge_index")
        p_src, p_dst = mlp.split_first(h_src, 1, 3, False), mlp.split_first(h_dst, 2, 3, False)
        b, n_dst = h_src.shape[0], self.n_mesh if name == "g2m" else self.n_grid

        def part(lo: int, hi: int, p_src, p_dst, emb):
            y = embed(attr[lo:hi].to(dtype).unsqueeze(0), emb)  # (1 or B, E', D): static, per-example norm
            pre = mlp.split_first(y.expand(b, *y.shape[1:]), 0, 3, True)
            pre = pre + _gather(p_src, src[lo:hi]) + _gather(p_dst, dst[lo:hi])
            return _scatter_sum(mlp.finish(pre, emb), dst[lo:hi], n_dst)

        n = attr.shape[0]
        step = self.chunk_edges if self.activation_checkpointing and torch.is_grad_enabled() else n
        total = None
        for lo in range(0, n, step):
            piece = self._run(part, lo, min(lo + step, n), p_src, p_dst, emb)
            total = piece if total is None else total + piece
        return total

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor | None = None,
                grid_bias: torch.Tensor | None = None) -> torch.Tensor:
        """Shape x (B, G, F), c_noise (B,) -> (B, G, C).

        ``grid_bias`` (G, D), optional: added to the pre-activation of the grid embedding's first
        layer, the same for every example (inputs that are constant per grid point, such as static
        fields, through their own weights: equal to more input columns).

        Written for speed on a CPU, mathematically the same as the textbook interaction
        network (``tests/test_weather_model.py`` compares it with a concatenate-then-MLP
        reference): the first linear layer of an edge MLP over ``cat(e, h[src], h[dst])`` is
        split into blocks and node features are projected before they are gathered onto edges;
        the static embeddings (mesh nodes, edges) are computed once for the batch and only
        their noise-conditioned scale/shift is per example.
        """
        b = x.shape[0]
        emb = None
        if self.noise_mlp is not None:
            if c_noise is None:
                raise DiffsciError("this graph network is noise-conditioned: pass c_noise")
            emb = self.noise_mlp(fourier_features(c_noise.reshape(b), self.cfg.noise_features))

        def static(mlp, attr):  # (N, A) -> (B, N, D): shared MLP, per-example conditional norm
            y = mlp(attr.to(x.dtype).unsqueeze(0), emb)
            return y.expand(b, *y.shape[1:])

        def edge_update(mlp, e, h_src, src, h_dst, dst):  # MLP(cat(e, h_src[src], h_dst[dst]))
            pre = mlp.split_first(e, 0, 3, True)
            pre = pre + _gather(mlp.split_first(h_src, 1, 3, False), src)
            pre = pre + _gather(mlp.split_first(h_dst, 2, 3, False), dst)
            return mlp.finish(pre, emb)

        def node_update(mlp, h, agg, emb):  # h + MLP(cat(h, agg))
            return h + mlp.finish(mlp.split_first(h, 0, 2, True) + mlp.split_first(agg, 1, 2, False), emb)

        def grid_embed(x, grid_bias, emb):
            feats = torch.cat([x, self.g_grid_node_attr.to(x.dtype).unsqueeze(0).expand(b, -1, -1)], -1)
            if grid_bias is None:
                return self.grid_embed(feats, emb)
            return self.grid_embed.finish(self.grid_embed.l1(feats) + grid_bias, emb)

        def processor_layer(edge_mlp, node_mlp, e, hm, emb):
            src, dst = self.g_mesh_edge_index
            e = e + edge_update(edge_mlp, e, hm, src, hm, dst)
            return e, node_update(node_mlp, hm, _scatter_sum(e, dst, self.n_mesh), emb)

        hg = self._run(grid_embed, x, grid_bias, emb)
        hm = static(self.mesh_embed, self.g_mesh_node_attr)
        # encoder: grid -> mesh
        hm = node_update(self.enc_mesh, hm, self._messages(self.enc_msg, self.g2m_embed, "g2m", hg, hm, emb,
                                                           x.dtype), emb)
        hg = self._run(lambda h, emb: h + self.enc_grid(h, emb), hg, emb)
        # processor on the mesh
        e = static(self.mesh_edge_embed, self.g_mesh_edge_attr)
        for edge_mlp, node_mlp in zip(self.proc_edge, self.proc_node):
            e, hm = self._run(processor_layer, edge_mlp, node_mlp, e, hm, emb)
        # decoder: mesh -> grid
        agg = self._messages(self.dec_msg, self.m2g_embed, "m2g", hm, hg, emb, x.dtype)
        hg = self._run(node_update, self.dec_grid, hg, agg, emb)
        return self.out(hg)

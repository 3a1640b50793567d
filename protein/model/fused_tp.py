"""A faster evaluation of e3nn's per-edge weighted tensor product, for the frame network.

The frame network's messages are ``FullyConnectedTensorProduct(x, sh, w)`` with a different
weight vector ``w`` for every edge (``shared_weights=False``) and spherical harmonics ``sh`` of
multiplicity one. e3nn evaluates it one path at a time (one einsum per instruction, then a sum
over the paths that reach each output block): about 40 small operations per layer, which is
what a batch-1 sampling step spends most of its time on at L = 100 (a few thousand edges).

The same sum, regrouped: for an output irrep ``ir`` (dimension k), every path ``p`` that ends
in ``ir`` maps an input block of multiplicity ``u_p`` to coupled features

    z_p[e, u, c] = sum_ij C_p[i, j, c] x[e, u, i] sh[e, j]        (C_p: e3nn's Wigner 3j)

and the output is ``out[e, w, c] = sum_p sum_u W_p[e, u, w] z_p[e, u, c] * alpha_p``
(``alpha_p``: e3nn's path weight). Stacking the ``z_p`` of all paths into one (E, U, k) array
and their weights into one (E, U, W) array makes that one batched matrix product per output irrep
(two in the frame network: 0e and 1o). The weights come from a linear layer of the edge MLP, so
the reordering of the flat weight vector into that stacked layout, and the path weight, are
applied to the rows of that layer (:meth:`FusedTensorProduct.weight_layout`): exact, nothing
is copied per edge, and the parameters and checkpoints keep e3nn's layout.

The product is checked against e3nn's own evaluation in ``tests/test_protein_fused_tp.py``
(same result to float rounding, with and without gradients).
"""

from __future__ import annotations

import torch
from e3nn import o3
from torch import nn

from diffsci.core.errors import DiffsciError

__all__ = ["FusedTensorProduct"]


class FusedTensorProduct(nn.Module):
    """``forward(x, sh, w_stacked) -> (E, irreps_out.dim)``: ``tp(x, sh, w)`` of an e3nn
    ``TensorProduct`` ``tp`` whose instructions are all ``uvw`` with weights, whose second input
    has multiplicity one per irrep, and where every output irrep gets a weight for every input
    pair that can reach it (a fully connected product), with ``w_stacked`` the per-edge weights
    in this module's stacked layout: ``w_stacked = w[:, perm] * scale`` for e3nn's flat weights
    ``w`` (:attr:`perm`, :attr:`scale`; :meth:`weight_layout` applies that to a linear layer).
    """

    def __init__(self, tp: o3.TensorProduct):
        super().__init__()
        self.irreps_in1, self.irreps_in2, self.irreps_out = tp.irreps_in1, tp.irreps_in2, tp.irreps_out
        if tp.shared_weights:
            raise DiffsciError("FusedTensorProduct: the product must take per-edge weights (shared_weights=False)")
        for mul_ir in self.irreps_in2:
            if mul_ir.mul != 1:
                raise DiffsciError(f"FusedTensorProduct: second input {self.irreps_in2} must have multiplicity 1")
        offsets, off = [], 0
        for ins in tp.instructions:
            if ins.connection_mode != "uvw" or not ins.has_weight:
                raise DiffsciError(f"FusedTensorProduct: only weighted 'uvw' paths, got {ins.connection_mode}")
            offsets.append(off)
            off += self.irreps_in1[ins.i_in1].mul * self.irreps_out[ins.i_out].mul
        self.weight_numel = off
        # output irreps grouped by irrep, in order of first appearance; blocks of a group keep their order
        groups: dict = {}
        for i_out, mul_ir in enumerate(self.irreps_out):
            groups.setdefault(mul_ir.ir, []).append(i_out)
        perm, scale = [], []
        self._groups = []  # ([(i_in1, i_in2, l triple)], [i_out blocks], U, W) per output irrep
        self._couplings = set()  # (i_in2, l1, l2, l3) with l1, l2 > 0
        for ir, blocks in groups.items():
            pairs = sorted((i1, i2) for i1, (_, ir1) in enumerate(self.irreps_in1)
                           for i2, (_, ir2) in enumerate(self.irreps_in2) if ir in ir1 * ir2)
            if not pairs:
                raise DiffsciError(f"FusedTensorProduct: no input pair reaches the output irrep {ir}")
            by_key = {(ins.i_in1, ins.i_in2, ins.i_out): (ins, o) for ins, o in zip(tp.instructions, offsets)}
            w_out = sum(self.irreps_out[b].mul for b in blocks)
            rows = []
            for i1, i2 in pairs:
                mul_u = self.irreps_in1[i1].mul
                for u in range(mul_u):
                    for b in blocks:
                        if (i1, i2, b) not in by_key:
                            raise DiffsciError("FusedTensorProduct: the product is not fully connected "
                                               f"(no path {i1}, {i2} -> {b})")
                        ins, o = by_key[(i1, i2, b)]
                        mul_w = self.irreps_out[b].mul
                        perm.extend(o + u * mul_w + w for w in range(mul_w))
                        scale.extend([ins.path_weight] * mul_w)
                key = (self.irreps_in1[i1].ir.l, self.irreps_in2[i2].ir.l, ir.l)
                if key[0] and key[1]:
                    self._couplings.add((i2,) + key)
                rows.append((i1, i2, key))
            u_total = sum(self.irreps_in1[i1].mul for i1, _ in pairs)
            self._groups.append((rows, blocks, u_total, w_out))
        if sorted(perm) != list(range(self.weight_numel)):
            raise DiffsciError("FusedTensorProduct: the weight layout does not cover e3nn's weights once each")
        self.register_buffer("perm", torch.tensor(perm, dtype=torch.long), persistent=False)
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float64), persistent=False)
        for l1, l2, l3 in sorted({c[1:] for c in self._couplings}):  # one buffer per (l1, l2, l3)
            self.register_buffer(f"w3j_{l1}_{l2}_{l3}", o3.wigner_3j(l1, l2, l3, dtype=torch.float64),
                                 persistent=False)
        self._slices1 = self.irreps_in1.slices()
        self._slices2 = self.irreps_in2.slices()
        # output blocks in e3nn's order: (group, first column in the group's W, multiplicity)
        self._order = [(gi, sum(self.irreps_out[bb].mul for bb in self._groups[gi][1][:k]), self.irreps_out[b].mul)
                       for b, gi, k in sorted((b, gi, k) for gi, (_, blocks, _, _) in enumerate(self._groups)
                                              for k, b in enumerate(blocks))]

    def weight_layout(self, weight: torch.Tensor, bias: torch.Tensor | None):
        """A linear layer's ``weight`` (W, F) and ``bias`` (W,) that produce e3nn's flat weights,
        with rows reordered and scaled so that the layer produces the stacked weights instead."""
        s = self.scale.to(weight.dtype)
        w = weight[self.perm] * s[:, None]
        return w, None if bias is None else bias[self.perm] * s

    def coupling(self, sh: torch.Tensor, cache: dict | None = None) -> dict:
        """``sum_j sh[e, j] C[i, j, c]`` per path type with l1 and l2 both > 0 (the others are
        products with a scalar), as (E, 2 l1 + 1, 2 l3 + 1) arrays keyed by (i_in2, l1, l3). Depends
        only on ``sh``: layers that share ``sh`` share one ``cache`` dict (missing keys are added)."""
        out = {} if cache is None else cache
        for i2, l1, l2, l3 in self._couplings:
            if (i2, l1, l3) not in out:
                c = getattr(self, f"w3j_{l1}_{l2}_{l3}").to(sh.dtype)
                out[(i2, l1, l3)] = torch.einsum("ej,ijk->eik", sh[:, self._slices2[i2]], c)
        return out

    def _coupled(self, x: torch.Tensor, sh: torch.Tensor, coupling: dict | None) -> list[torch.Tensor]:
        """The coupled features ``z`` (rows, U, k) of every output irrep group (module docstring):
        each row's ``x`` and ``sh`` through the Wigner 3j symbols, before any weight."""
        e = x.shape[0]
        coupling = self.coupling(sh, coupling)
        xs = [x[:, s].reshape(e, mul_ir.mul, mul_ir.ir.dim) for s, mul_ir in zip(self._slices1, self.irreps_in1)]
        out = []
        for rows, _, _, _ in self._groups:
            zs = []
            for i1, i2, (l1, l2, l3) in rows:
                x1 = xs[i1]
                y = sh[:, self._slices2[i2]]
                if l1 == 0:  # C[0, j, c] = delta_jc / sqrt(2 l2 + 1)
                    zs.append(x1 * (y * (2 * l2 + 1) ** -0.5)[:, None, :])
                elif l2 == 0:  # C[i, 0, c] = delta_ic / sqrt(2 l1 + 1)
                    zs.append(x1 * (y * (2 * l1 + 1) ** -0.5)[:, :, None])
                else:
                    zs.append(torch.bmm(x1, coupling[(i2, l1, l3)]))
            out.append(zs[0] if len(zs) == 1 else torch.cat(zs, 1))  # (E, U, k)
        return out

    def _in_order(self, parts: list[torch.Tensor], rows: int) -> torch.Tensor:
        """The groups' outputs ``parts`` (rows, W, k) as e3nn's flat output (rows, irreps_out.dim)."""
        if len(parts) == 1 and len(self._groups[0][1]) == 1:
            return parts[0].reshape(rows, -1)
        return torch.cat([parts[gi][:, start : start + mul].reshape(rows, -1) for gi, start, mul in self._order], 1)

    def forward(self, x: torch.Tensor, sh: torch.Tensor, w: torch.Tensor, coupling: dict | None = None):
        e = x.shape[0]
        parts, off = [], 0
        for z, (_, _, u_total, w_out) in zip(self._coupled(x, sh, coupling), self._groups):
            wg = w[:, off : off + u_total * w_out].reshape(e, u_total, w_out)
            off += u_total * w_out
            parts.append(torch.bmm(z.transpose(1, 2), wg).transpose(1, 2))  # (E, W, k)
        # under autocast the products run in bfloat16; the output keeps x's dtype, as e3nn's does
        # (the e3nn layers after it refuse mixed dtypes)
        return self._in_order(parts, e).to(x.dtype)

    # ------------------------------------------------------------- summed at the receivers
    def receiver_weights(self, weight: torch.Tensor, bias: torch.Tensor) -> list[torch.Tensor]:
        """The stacked linear layer (``weight`` (W, F), ``bias`` (W,), :meth:`weight_layout`'s
        output) rearranged for :meth:`aggregate`: per output irrep group a (W_g, U (F + 1)) matrix
        whose column (u, f) holds the layer's weights of hidden feature f (f = F: the bias) for
        the group's input u."""
        full = torch.cat([weight, bias[:, None]], 1).t()  # (F + 1, W)
        out, off = [], 0
        for _, _, u_total, w_out in self._groups:
            block = full[:, off : off + u_total * w_out].reshape(-1, u_total, w_out)  # (F + 1, U, W_g)
            out.append(block.permute(2, 1, 0).reshape(w_out, -1).contiguous())
            off += u_total * w_out
        return out

    def aggregate(self, x: torch.Tensor, sh: torch.Tensor, hidden: torch.Tensor, weights: list[torch.Tensor],
                  coupling: dict | None = None) -> torch.Tensor:
        """The sum over each receiver's edges of ``forward(x, sh, linear(hidden))``, with the edges
        laid out per receiver: ``x`` (N, D, in1 dim), ``sh`` (N, D, in2 dim) and ``hidden`` (N, D, F)
        for N receivers of at most D edges each; an unused slot has ``sh`` zero (it then adds
        nothing, whatever its ``x`` and ``hidden``). ``weights``: :meth:`receiver_weights` of the
        linear layer. ``coupling`` (a cache, as in :meth:`coupling`) is of ``sh`` flattened to (N D, ...).
        Returns (N, irreps_out.dim).

        The same numbers as summing ``forward``'s messages, to float rounding, with fewer
        operations: ``sum_e z[e, u, c] (W h[e] + b)[u, w]`` is ``sum_{u, f} Q[c, u, f] W'[u, f, w]``
        with ``Q[c, u, f] = sum_e z[e, u, c] h'[e, f]`` (h' = [h, 1], W' = [W; b]): per group one
        batched matrix product over each receiver's slots, then one product with the layer,
        instead of a weight vector per edge. The layouts are chosen so that neither product
        copies its inputs (``diffsci bench speed --protein``)."""
        n, d = x.shape[:2]
        zs = self._coupled(x.reshape(n * d, -1), sh.reshape(n * d, -1), coupling)
        h = torch.cat([hidden, hidden.new_ones(n, d, 1)], 2).to(zs[0].dtype)  # (N, D, F + 1)
        parts = []
        for z, w in zip(zs, weights):
            u, k = z.shape[1:]
            zg = z.transpose(1, 2).reshape(n, d, k * u)  # columns (c, u)
            q = torch.bmm(zg.transpose(1, 2), h).reshape(n * k, -1)  # (N k, U (F + 1)): no copy
            out = w.to(q.dtype) @ q.t()  # (W_g, N k)
            parts.append(out.reshape(-1, n, k).transpose(0, 1))  # (N, W_g, k)
        return self._in_order(parts, n).to(x.dtype)

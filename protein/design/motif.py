"""Motif conditioning for backbone sampling: the motif follows the scaffold's frame.

Dimension legend: B batch, N residues in the designed state, M motif residues, K = 3 M motif
atoms (N, CA, C).

The state lives in ``Product((EuclideanCoM, SO3))`` (:func:`diffsci.protein.model.diffusion.build_space`):
CA positions with zero centre of mass and one rotation per residue. The model is
unconditional, so a motif is imposed at sampling time. Methods (``method=``):

- ``"align"`` (default): *aligned x0 replacement with the correction carried along the
  chain*. After every call of the denoiser the motif's clean frames are rigidly superimposed
  (Kabsch on the N, CA, C atoms implied by the frames) onto the denoiser's own prediction of
  the motif residues and put there in ``x0_hat``. The difference between the placed and the
  predicted motif CA positions is also added to the scaffold residues with piecewise-linear
  weights along the sequence (:func:`spread_weights`: linear across a gap between two motif
  segments, fading to 0 over ``taper`` residues into the flanks), so the residues next to the
  motif move with it instead of being left behind at the junction. The prediction is then
  re-centred (zero CoM). The sampler's step moves ``x_t`` towards a clean state that holds the
  exact motif wherever the scaffold currently wants it: the motif is never pinned against the
  CoM projection, the network always sees a state noised like its training data, and the last
  step (to t = 0) lands on ``x0_hat``, so the motif is exact up to a rigid motion.

  This is replacement on the clean prediction (the replacement method of SMCDiff, Trippe et
  al. 2023, and RePaint, Lugmayr et al. 2022, applied to x0_hat rather than x_t) with the
  motif's placement marginalised by alignment, as twisted diffusion sampling does over motif
  rotations and translations (Wu et al. 2023) and FrameFlow's motif guidance does by aligning
  the motif to the predicted structure (Yim et al. 2024). The carried correction is a
  reconstruction-guidance step (Ho et al. 2022; DPS, Chung et al. 2023) in which the
  network's Jacobian d x0_hat / d x_t is replaced by a fixed sequence-local kernel (a residue's
  prediction moves with its sequence neighbours), which costs no gradient through the network.
- ``"fixed"``: the motif's clean frames held fixed (centred at the
  origin) in ``x_t`` at every step (:func:`diffsci.core.samplers.fix_known`, mode ``"clean"``).
  Exact motif, but the scaffold does not join it (measured in docs/benchmarks.md).
- ``"noised"``: replacement of the motif in ``x_t`` by a forward-noised copy at the current
  time (mode ``"noised"``; RePaint / SMCDiff's baseline), still in the fixed frame.

Measured before/after figures are in docs/benchmarks.md, "Motif scaffolding".
"""

from __future__ import annotations

from typing import Callable

import torch

from diffsci.core.errors import DiffsciError
from diffsci.core.samplers import fix_known
from diffsci.core.spaces import remove_com
from diffsci.protein.frames import ANGSTROM_PER_NM, IDEAL_LOCAL, to_global

__all__ = ["METHODS", "kabsch", "motif_atoms", "AlignedMotif", "condition_on_motif"]

METHODS: tuple[str, ...] = ("align", "fixed", "noised")
TAPER = 6  # residues over which a motif correction fades into the flanks (see spread_weights)


def kabsch(mobile: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The proper rotation and translation that best superimpose ``mobile`` onto ``target``.

    Minimises ``sum_k |R p_k + c - q_k|^2`` (Kabsch 1976): with centroids ``mu_p, mu_q`` and the
    SVD ``H = (P - mu_p)^T (Q - mu_q) = U S V^T``, ``R = V diag(1, 1, d) U^T`` with
    ``d = sign det(V U^T)`` (no reflections) and ``c = mu_q - R mu_p``.

    Parameters
    ----------
    mobile, target : Tensor
        Shape (B, K, 3) each.

    Returns
    -------
    (R, c): Shapes (B, 3, 3) and (B, 3).
    """
    if mobile.shape != target.shape or mobile.ndim != 3 or mobile.shape[-1] != 3:
        raise DiffsciError(f"kabsch: need two (B, K, 3) point sets of one shape, got {tuple(mobile.shape)} "
                           f"and {tuple(target.shape)}")
    p = mobile.to(torch.float64)
    q = target.to(torch.float64)
    mp, mq = p.mean(1, keepdim=True), q.mean(1, keepdim=True)
    h = (p - mp).transpose(1, 2) @ (q - mq)
    u, _, vh = torch.linalg.svd(h)
    v = vh.transpose(1, 2)
    d = torch.sign(torch.linalg.det(v @ u.transpose(1, 2)))
    d = torch.where(d == 0, torch.ones_like(d), d)
    fix = torch.ones_like(h[..., 0])
    fix[:, -1] = d
    r = v @ torch.diag_embed(fix) @ u.transpose(1, 2)
    c = mq[:, 0] - (r @ mp[:, 0, :, None])[..., 0]
    return r.to(mobile.dtype), c.to(mobile.dtype)


def motif_atoms(trans: torch.Tensor, rots: torch.Tensor) -> torch.Tensor:
    """N, CA, C positions of frames (ideal geometry), in the units of ``trans`` (nm).

    Shapes: trans (..., M, 3) nm, rots (..., M, 3, 3) -> (..., 3 M, 3)."""
    local = torch.tensor([IDEAL_LOCAL["N"], IDEAL_LOCAL["CA"], IDEAL_LOCAL["C"]], dtype=trans.dtype,
                         device=trans.device) / ANGSTROM_PER_NM  # (3, 3) nm
    atoms = to_global(rots.unsqueeze(-3), trans.unsqueeze(-2), local)  # (..., M, 3, 3)
    return atoms.flatten(-3, -2)


class AlignedMotif(torch.nn.Module):
    """Denoiser wrapper: the motif superimposed onto each clean prediction ("align" method).

    ``denoise(x, t, cond) -> (trans0, rots0)``; the output has the motif's frames at
    ``index``, rigidly moved (Kabsch on N, CA, C) onto where ``trans0, rots0`` put those
    residues, and is re-centred over ``mask`` (the space's CoM convention).

    Parameters
    ----------
    denoise
        The (unconditional) denoiser.
    trans, rots
        The motif's clean frames: Shapes (M, 3) nm and (M, 3, 3).
    index
        Shape (M,) long: the motif residues' positions in the designed state.
    mask
        Shape (B, N) bool residue mask of the state (None: all residues).
    """

    def __init__(self, denoise: Callable, trans: torch.Tensor, rots: torch.Tensor, index: torch.Tensor,
                 mask: torch.Tensor | None = None, *, n_res: int | None = None, taper: int = 0, chain_index=None):
        super().__init__()
        self.denoise = denoise
        self.trans, self.rots, self.index, self.mask = trans, rots, index.long(), mask
        self.atoms = motif_atoms(trans, rots)  # (K, 3)
        self.spread = None
        if taper > 0:
            if n_res is None:
                raise DiffsciError("AlignedMotif: taper needs n_res")
            self.spread = spread_weights(self.index, n_res, taper, chain_index).to(trans.device)  # (N, M)

    def forward(self, x, t, cond):
        trans0, rots0 = self.denoise(x, t, cond)
        b = trans0.shape[0]
        pred = motif_atoms(trans0[:, self.index], rots0[:, self.index])  # (B, K, 3)
        r, c = kabsch(self.atoms.to(pred.dtype).expand(b, -1, -1), pred)
        placed = torch.einsum("bij,mj->bmi", r, self.trans.to(trans0.dtype)) + c[:, None]  # (B, M, 3)
        trans0, rots0 = trans0.clone(), rots0.clone()
        if self.spread is not None:  # the motif's correction carried along the chain
            trans0 = trans0 + torch.einsum("nm,bmi->bni", self.spread.to(trans0.dtype), placed - trans0[:, self.index])
        trans0[:, self.index] = placed
        rots0[:, self.index] = torch.einsum("bij,mjk->bmik", r, self.rots.to(rots0.dtype))
        mask = self.mask.expand(b, -1) if self.mask is not None else None
        return remove_com(trans0, mask), rots0


def spread_weights(index: torch.Tensor, n_res: int, taper: int, chain_index=None) -> torch.Tensor:
    """Weights (N, M) carrying the motif residues' corrections along the chain.

    A piecewise-linear field over sequence position within each chain (``chain_index`` (N,),
    default one chain): 1 at each motif residue (its own column), linear between the two
    motif residues that bound a gap, and falling linearly to 0 over ``taper`` residues beyond
    the first and last motif residues of a chain (``1 - k / (taper + 1)`` at sequence distance
    k). Rows of motif residues are one-hot; a chain without motif residues gets zeros. Float64,
    on the CPU."""
    chains = [0] * n_res if chain_index is None else [int(c) for c in torch.as_tensor(chain_index).tolist()]
    col = {p: k for k, p in enumerate(int(i) for i in torch.as_tensor(index).tolist())}
    w = torch.zeros(n_res, len(col), dtype=torch.float64)
    for p in range(n_res):
        if p in col:
            w[p, col[p]] = 1.0
            continue
        left = max((i for i in col if i < p and chains[i] == chains[p]), default=None)
        right = min((i for i in col if i > p and chains[i] == chains[p]), default=None)
        if left is not None and right is not None:
            f = (p - left) / (right - left)
            w[p, col[left]], w[p, col[right]] = 1 - f, f
        elif left is not None:
            w[p, col[left]] = max(0.0, 1 - (p - left) / (taper + 1))
        elif right is not None:
            w[p, col[right]] = max(0.0, 1 - (right - p) / (taper + 1))
    return w


def condition_on_motif(space, denoise: Callable, known, *, method: str = "align",
                       constraint: Callable | None = None, generator=None,
                       taper: int = TAPER, chain_index=None) -> tuple[Callable, Callable | None]:
    """Condition sampling on a motif: returns the ``(denoise, constraint)`` to give a sampler.

    Parameters
    ----------
    space
        The state's space (``build_space(cfg, mask, rotation_rate=...)``).
    denoise
        The denoiser to wrap (for a self-conditioned net, the
        :class:`~diffsci.protein.model.diffusion.SelfConditioned` wrapper, which keeps feeding the
        net's own prediction back).
    known
        ``((trans (1, N, 3) nm, rots (1, N, 3, 3)), mask (1, N) bool)``: the motif's frames at
        the motif positions (centred motif; other entries ignored), as
        :func:`diffsci.protein.design.contig.draw_layout` builds it (``Layout.known``), on the state's
        device.
    method
        ``"align"`` (default), ``"fixed"`` or ``"noised"`` (see the module docstring).
    taper
        ``"align"``: residues over which the motif's correction fades into a flank (0: the
        motif alone is moved).
    chain_index
        Shape (N,): chain of each residue (the correction is never carried across chains).
    constraint
        A constraint already in use (e.g. a symmetry), applied before the motif's.
    generator
        The noise source of ``"noised"`` (on the state's device).
    """
    if method not in METHODS:
        raise DiffsciError(f"motif method must be one of {', '.join(METHODS)}, got {method!r}")
    (trans_k, rots_k), mask = known
    if method in ("fixed", "noised"):
        fix = fix_known(space, (trans_k, rots_k), mask, mode="clean" if method == "fixed" else "noised",
                        generator=generator)
        if constraint is None:
            return denoise, fix
        return denoise, lambda x, t: fix(constraint(x, t), t)
    index = torch.nonzero(mask[0], as_tuple=False)[:, 0]
    if index.numel() == 0:
        raise DiffsciError("motif scaffolding: the motif mask marks no residue")
    res_mask = getattr(space.spaces[0], "mask", None)
    return AlignedMotif(denoise, trans_k[0, index], rots_k[0, index], index, res_mask, n_res=mask.shape[1],
                        taper=taper, chain_index=chain_index), constraint

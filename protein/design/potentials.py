"""Sampling-time potentials: physics a designer asks for, applied to each step's clean prediction.

Dimension legend: B batch, N residues in the designed state, P residue pairs.

A potential is an energy of the predicted CA trace (Å) with a closed-form gradient (no autograd,
so it works under any grad mode, ``torch.inference_mode`` included). :func:`relax_ca` moves the
clean prediction's CA positions down the weighted sum of the requested energies by plain
gradient steps; the builder applies it after the network (``design.builder.CONDITIONERS``,
entry ``potentials``), so the sampler steps towards a prediction that obeys them, and the last
step lands on it. Only CA positions move (the frames keep their rotations).

Potentials (``--potentials NAME:WEIGHT,...``; ``none``: every potential off, the network alone):

- ``connectivity``: consecutive residues of a chain (same chain, residue numbers one apart)
  held to a CA-CA distance in [3.65, 3.95] Å (real chains: 3.80 +- 0.05 Å; a chain break is
  > 4.2 Å): ``sum relu(d - 3.95)^2 + relu(3.65 - d)^2``. It follows the chain-connectivity
  auxiliary terms of FrameDiff (backbone atom and pairwise-distance losses, Yim et al. 2023)
  and Genie, here as a sampling-time restraint.
- ``sterics``: CA pairs that are not sequence neighbours (|i - j| >= 3 in a chain, any pair of
  two chains) kept at least 3.8 Å apart within a chain and 4.0 Å between chains (real
  complexes: >= ~4 Å; a clash in ``protein evaluate`` is < 3.0 Å): ``sum relu(d0 - d)^2``, as
  Chroma's and RFdiffusion's steric terms repel overlapping atoms.

Defaults are off: a potential becomes a default only after ``diffsci bench protein`` measures it
(docs/benchmarks.md). The network alone stays measurable with ``--potentials none``.
"""

from __future__ import annotations

import re

import torch

from diffsci.core.errors import DiffsciError

__all__ = ["POTENTIALS", "Potentials", "parse_potentials", "relax_ca", "energy", "connectivity_pairs", "steric_pairs"]

CA_CA_WINDOW = (3.65, 3.95)
STERIC_INTRA, STERIC_INTER = 3.8, 4.0
#: the potentials a request may name
POTENTIALS = ("connectivity", "sterics")


def parse_potentials(spec) -> tuple[tuple[str, float], ...]:
    """``"connectivity:1,sterics:0.5"`` (a name alone has weight 1), ``"none"`` or None (no
    potential), or ``((name, weight), ...)`` -> ``((name, weight), ...)``; refuses unknown names
    and weights outside (0, 100]."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "none")):
        return ()
    items = spec if not isinstance(spec, str) else [p for p in re.split(r"\s*,\s*", spec.strip()) if p]
    out = []
    for item in items:
        name, weight = (item.split(":", 1) + ["1"])[:2] if isinstance(item, str) else item
        name = str(name).strip()
        if name not in POTENTIALS:
            raise DiffsciError(f"potentials: unknown potential {name!r}; choose from {', '.join(POTENTIALS)} or none")
        try:
            w = float(weight)
        except (TypeError, ValueError):
            raise DiffsciError(f"potentials: {name}: weight {weight!r} is not a number") from None
        if not 0 < w <= 100:
            raise DiffsciError(f"potentials: {name}: weight must lie in (0, 100], got {w:g}")
        if name in dict(out):
            raise DiffsciError(f"potentials: {name} given twice")
        out.append((name, w))
    return tuple(out)


def connectivity_pairs(chain: torch.Tensor, res_idx: torch.Tensor) -> torch.Tensor:
    """(P, 2) consecutive residues (same chain, residue numbers one apart) of one state (N,)."""
    i = torch.arange(len(chain) - 1, device=chain.device)
    keep = (chain[1:] == chain[:-1]) & (res_idx[1:] - res_idx[:-1] == 1)
    return torch.stack([i[keep], i[keep] + 1], -1)


def steric_pairs(chain: torch.Tensor, res_idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(P, 2) residue pairs i < j that must not overlap (|i - j| >= 3 in a chain, any pair across
    chains) and their minimum distances (P,) Å."""
    n = len(chain)
    i, j = torch.triu_indices(n, n, offset=1, device=chain.device)
    same = chain[i] == chain[j]
    keep = ~same | ((res_idx[i] - res_idx[j]).abs() >= 3)
    i, j, same = i[keep], j[keep], same[keep]
    d0 = torch.full(i.shape, STERIC_INTER, dtype=torch.float64, device=chain.device)
    d0[same] = STERIC_INTRA
    return torch.stack([i, j], -1), d0


def _pair_gradient(x: torch.Tensor, pairs: torch.Tensor, lo: torch.Tensor | float, hi: torch.Tensor | float):
    """Energy (B,) and gradient (B, N, 3) of ``sum relu(lo - d)^2 + relu(d - hi)^2`` over pairs."""
    if len(pairs) == 0:
        return x.new_zeros(x.shape[0]), torch.zeros_like(x)
    a, b = pairs[:, 0], pairs[:, 1]
    v = x[:, a] - x[:, b]  # (B, P, 3)
    d = v.norm(dim=-1).clamp_min(1e-6)
    lo = torch.as_tensor(lo, dtype=x.dtype, device=x.device)
    hi = torch.as_tensor(hi, dtype=x.dtype, device=x.device)
    over, under = (d - hi).clamp_min(0), (lo - d).clamp_min(0)
    energy = (over**2 + under**2).sum(-1)
    coef = (2 * (over - under) / d)[..., None] * v  # dE/dx_a; dE/dx_b is its negative
    grad = torch.zeros_like(x).index_add_(1, a, coef).index_add_(1, b, -coef)
    return energy, grad


def _near(x: torch.Tensor, pairs: torch.Tensor, d0: torch.Tensor, reach: float):
    """The steric pairs closer than ``d0 + reach`` Å in some state of the batch: those that can
    come within their minimum distance in the next few steps (the list is refreshed every 10)."""
    d = (x[:, pairs[:, 0]] - x[:, pairs[:, 1]]).norm(dim=-1)  # (B, P)
    keep = (d < d0.to(x.device) + reach).any(0)
    return pairs[keep], d0[keep]


class Potentials:
    """The requested potentials of one design: ``terms`` ``((name, weight), ...)`` over residues
    whose chain and residue numbers are ``chain``, ``res_idx`` (N,). The residue pairs each
    potential restrains are found once here, not at every sampling step."""

    def __init__(self, terms, chain: torch.Tensor, res_idx: torch.Tensor):
        self.weights = dict(terms)
        self.bonds = connectivity_pairs(chain, res_idx) if "connectivity" in self.weights else None
        self.steric = steric_pairs(chain, res_idx) if "sterics" in self.weights else None

    def _terms(self, x: torch.Tensor, steric=None):
        """(weight, pairs, lo, hi) of each potential; ``steric``: the steric pairs to use (default all)."""
        out = []
        if self.bonds is not None:
            out.append((self.weights["connectivity"], self.bonds, *CA_CA_WINDOW))
        if self.steric is not None:
            pairs, d0 = self.steric if steric is None else steric
            out.append((self.weights["sterics"], pairs, d0.to(x.device), float("inf")))
        return out

    def energy(self, ca: torch.Tensor) -> torch.Tensor:
        """The weighted energy (B,) for ``ca`` (B, N, 3) Å (what :meth:`relax` lowers)."""
        x = ca.to(torch.float64)
        total = x.new_zeros(x.shape[0])
        for w, pairs, lo, hi in self._terms(x):
            total += w * _pair_gradient(x, pairs, lo, hi)[0]
        return total

    def relax(self, ca: torch.Tensor, *, iters: int = 30, step: float = 0.1) -> torch.Tensor:
        """``ca`` (B, N, 3) Å moved down :meth:`energy` by ``iters`` gradient steps of size ``step``
        (Å² per unit energy; stable below ~0.25 / weight for these quadratic penalties). A trace
        that violates nothing is returned unchanged (every gradient is zero)."""
        if not self.weights:
            return ca
        x, near = ca.to(torch.float64), None
        for it in range(iters):
            if self.steric is not None and it % 10 == 0:  # the pairs near enough to matter, refreshed
                near = _near(x, *self.steric, reach=3.0)
            grad = torch.zeros_like(x)
            for w, pairs, lo, hi in self._terms(x, near):
                grad += w * _pair_gradient(x, pairs, lo, hi)[1]
            if not grad.any():
                break
            x = x - step * grad
        return x.to(ca.dtype)


def relax_ca(ca: torch.Tensor, terms, chain: torch.Tensor, res_idx: torch.Tensor, *, iters: int = 30,
             step: float = 0.1) -> torch.Tensor:
    """:meth:`Potentials.relax` of ``ca`` (B, N, 3) Å for ``terms`` over ``chain``, ``res_idx`` (N,)."""
    return Potentials(terms, chain, res_idx).relax(ca, iters=iters, step=step)


def energy(ca: torch.Tensor, terms, chain: torch.Tensor, res_idx: torch.Tensor) -> torch.Tensor:
    """:meth:`Potentials.energy` of ``ca`` (B, N, 3) Å for ``terms`` over ``chain``, ``res_idx`` (N,)."""
    return Potentials(terms, chain, res_idx).energy(ca)

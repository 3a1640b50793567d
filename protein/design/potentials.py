"""Sampling-time potentials: physics a designer asks for, applied to each step's clean prediction.

Dimension legend: B batch, N residues in the designed state, P residue pairs, H hotspots.

A potential is an energy of the predicted CA trace (Å) with a closed-form gradient (no autograd,
so it works under any grad mode, ``torch.inference_mode`` included). :meth:`Potentials.relax`
moves the clean prediction's CA positions down the weighted sum of the requested energies by
plain gradient steps; the builder applies it after the network (``design.builder.CONDITIONERS``,
entry ``potentials``), so the sampler steps towards a prediction that obeys them, and the last
step lands on it. Only CA positions move (the frames keep their rotations), and fixed residues
(a motif, a binder's target) never move: the motif conditioner places them.

Potentials (``--potentials NAME:WEIGHT,...``; ``none``: every potential off, the network alone):

- ``connectivity``: consecutive residues of a chain (same chain, residue numbers one apart)
  held to a CA-CA distance in [3.65, 3.95] Å (real chains: 3.80 +- 0.05 Å; a chain break is
  > 4.2 Å): ``sum relu(d - 3.95)^2 + relu(3.65 - d)^2``. It follows the chain-connectivity
  auxiliary terms of FrameDiff (backbone atom and pairwise-distance losses, Yim et al. 2023)
  and Genie, here as a sampling-time restraint.
- ``sterics``: CA pairs that are not sequence neighbours (|i - j| >= 3 in a chain, any pair of
  two chains) kept at least 3.8 Å apart within a chain and 4.0 Å between chains (real
  complexes: >= ~4 Å; a clash in ``protein evaluate`` is < 3.0 Å), and CA(i)-CA(i+2) at least
  4.4 Å (the chain does not fold back on itself at one residue: in the 247 bundled real chains
  it is >= 4.26 Å, 99.99% >= 4.53 Å; designs of 512 residues had it at 0.06-2.9 Å without
  this): ``sum relu(d0 - d)^2``, as Chroma's and RFdiffusion's steric terms repel overlapping atoms.
  Early in sampling (t > 0.3) designed residues are kept 6 Å from a fixed chain's CAs
  (:data:`TARGET_GAP_EARLY`), so a binder is pushed out of its target while its shape is still
  blurry rather than threaded through it (1 of 4 MDM2 binders threaded without it, none with it).
- ``monomer_ROG`` / ``binder_ROG``: RFdiffusion's radius-of-gyration potentials: the Rg of each
  chain (``binder_ROG``: of the designed residues only) held below that of real chains of its
  length, ``2.2 L^0.38`` Å (the bound the training filter uses): ``L relu(Rg - Rg0)^2``.
- ``monomer_contacts``, ``olig_contacts``, ``interface_contacts``: RFdiffusion's contact
  potentials (``monomer_contacts``, ``olig_contacts``, ``interface_ncontacts``): the smooth
  number C of CA pairs within 8 Å, ``sum s(d)``, ``s(d) = 1 / (1 + (d / 8)^6)``, over the pairs
  of one chain (|i - j| >= 3), of neighbouring copies of a symmetric design (chain k with k + 1,
  cyclically), and of designed residues with a fixed chain (a binder with its target), raised
  to a target: ``relu(target - C)^2 / target`` (RFdiffusion's raise C without bound; a target
  leaves a structure with enough contacts alone). Targets: 3 pairs per designed residue (real
  chains have 4.2, median), 25 pairs per interface (1YCR's 13-residue p53 peptide has 66; a C6
  ring has 6 interfaces, so 150).
  ``olig_contacts`` also pulls the nearest CA pair of each pair of neighbouring copies within
  7 Å (``relu(min d - 7)^2``; 25 smooth contacts alone left copies of a C6 ring 8.4 Å apart).
- ``hotspots``: each hotspot residue of the target (``--hotspots B17,B20``; RFdiffusion's
  ``ppi.hotspot_res``, there a model input) pulled into contact (a designed CA within 8 Å): the
  nearest designed CA held within 7.5 Å, ``sum relu(min d - 7.5)^2``.

:data:`DEFAULTS` says which are on when a request names none: connectivity and sterics always,
``interface_contacts`` beside a fixed chain, ``olig_contacts`` for a symmetric design, ``hotspots``
with hotspots (each measured in docs/benchmarks.md). The network alone stays measurable with
``--potentials none``.
"""

from __future__ import annotations

import re

import torch

from diffsci.core.errors import DiffsciError

__all__ = ["POTENTIALS", "DEFAULTS", "Potentials", "parse_potentials", "default_potentials", "relax_ca", "energy",
           "connectivity_pairs", "steric_pairs", "contact_count"]

CA_CA_WINDOW = (3.65, 3.95)
STERIC_INTRA, STERIC_INTER, STERIC_BEND = 3.8, 4.0, 4.4  # Å; BEND: CA(i)-CA(i+2)
#: Å: early in sampling (the builder's EARLY_T) designed residues are kept this far from the CAs of
#: a fixed chain (real interfaces: the nearest CA 4-6 Å), so a binder's blurry early prediction is
#: pushed out of its target instead of threading through it (Potentials.relax ``target_gap``)
TARGET_GAP_EARLY = 6.0
CONTACT_RADIUS = 8.0  # Å, the contact potentials' s(d) midpoint and a hotspot's contact distance
HOTSPOT_PULL = 7.5  # Å, where the hotspots potential pulls the nearest designed CA: inside the 8 Å contact
# the contact potentials' targets: real chains have 8.4 smooth contacts per residue (median; 5th
# percentile 5.3; the bundled chains, |i - j| >= 3), so monomer_contacts asks for 3 pairs (6
# contacts) per designed residue; the p53 peptide of 1YCR (13 residues) makes 66 contact pairs with
# MDM2, and an interface or a pair of neighbouring copies is asked for 25
CONTACTS_PER_RESIDUE, CONTACT_TARGET = 3.0, 25.0
OLIG_PULL = 7.0  # Å: olig_contacts also holds the nearest CA pair of neighbouring copies within this
#: the potentials a request may name
POTENTIALS = ("connectivity", "sterics", "monomer_ROG", "binder_ROG", "monomer_contacts", "olig_contacts",
              "interface_contacts", "hotspots")
#: the potentials on when a request names none: always, beside a fixed chain, symmetric, with hotspots
DEFAULTS = {"always": (("connectivity", 1.0), ("sterics", 1.0)), "fixed_chain": (("interface_contacts", 1.0),),
            "symmetric": (("olig_contacts", 1.0),), "hotspots": (("hotspots", 1.0),)}


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


def default_potentials(*, fixed_chain: bool = False, symmetric: bool = False, hotspots: bool = False):
    """The potentials of a request that names none (:data:`DEFAULTS`), ``((name, weight), ...)``."""
    out = list(DEFAULTS["always"])
    for on, key in ((fixed_chain, "fixed_chain"), (symmetric, "symmetric"), (hotspots, "hotspots")):
        if on:
            out += DEFAULTS[key]
    return tuple(out)


def connectivity_pairs(chain: torch.Tensor, res_idx: torch.Tensor) -> torch.Tensor:
    """(P, 2) consecutive residues (same chain, residue numbers one apart) of one state (N,)."""
    i = torch.arange(len(chain) - 1, device=chain.device)
    keep = (chain[1:] == chain[:-1]) & (res_idx[1:] - res_idx[:-1] == 1)
    return torch.stack([i[keep], i[keep] + 1], -1)


def steric_pairs(chain: torch.Tensor, res_idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(P, 2) residue pairs i < j that must not overlap (|i - j| >= 2 in a chain, any pair across
    chains) and their minimum distances (P,) Å (module docstring)."""
    n = len(chain)
    i, j = torch.triu_indices(n, n, offset=1, device=chain.device)
    same = chain[i] == chain[j]
    gap = (res_idx[i] - res_idx[j]).abs()
    keep = ~same | (gap >= 2)
    i, j, same, gap = i[keep], j[keep], same[keep], gap[keep]
    d0 = torch.full(i.shape, STERIC_INTER, dtype=torch.float64, device=chain.device)
    d0[same] = STERIC_INTRA
    d0[same & (gap == 2)] = STERIC_BEND
    return torch.stack([i, j], -1), d0


def _contact_pairs(name: str, chain: torch.Tensor, res_idx: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
    """(P, 2) the pairs a contact potential counts (module docstring)."""
    n = len(chain)
    i, j = torch.triu_indices(n, n, offset=1, device=chain.device)
    free = ~fixed[i] | ~fixed[j]
    if name == "monomer_contacts":
        keep = (chain[i] == chain[j]) & ((res_idx[i] - res_idx[j]).abs() >= 3) & free
    elif name == "olig_contacts":
        n_chains = int(chain.max()) + 1 if n else 1
        gap = (chain[j] - chain[i]) % max(n_chains, 1)
        keep = (chain[i] != chain[j]) & ((gap == 1) | (gap == n_chains - 1)) & free
    else:  # interface_contacts: designed residues with residues of a fixed chain
        fixed_chain = torch.zeros(n, dtype=torch.bool, device=chain.device)
        for c in chain.unique():
            on = chain == c
            fixed_chain[on] = bool(fixed[on].all())
        keep = (chain[i] != chain[j]) & (fixed_chain[i] ^ fixed_chain[j])
    return torch.stack([i[keep], j[keep]], -1)


def contact_count(x: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """The smooth number of contacts (B,) ``sum 1 / (1 + (d / 8)^6)`` over ``pairs`` of ``x`` (B, N, 3) Å."""
    d = (x[:, pairs[:, 0]] - x[:, pairs[:, 1]]).norm(dim=-1)
    return (1 / (1 + (d / CONTACT_RADIUS) ** 6)).sum(-1)


def _scatter_pairs(x: torch.Tensor, pairs: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
    """The gradient (B, N, 3) of a pair energy whose gradient at the first residue of each pair is
    ``coef`` (B, P, 3) (and its negative at the second)."""
    a, b = pairs[:, 0], pairs[:, 1]
    return torch.zeros_like(x).index_add_(1, a, coef).index_add_(1, b, -coef)


def _pair_gradient(x: torch.Tensor, pairs: torch.Tensor, lo: torch.Tensor | float, hi: torch.Tensor | float):
    """Energy (B,) and gradient (B, N, 3) of ``sum relu(lo - d)^2 + relu(d - hi)^2`` over pairs."""
    if len(pairs) == 0:
        return x.new_zeros(x.shape[0]), torch.zeros_like(x)
    v = x[:, pairs[:, 0]] - x[:, pairs[:, 1]]  # (B, P, 3)
    d = v.norm(dim=-1).clamp_min(1e-6)
    lo = torch.as_tensor(lo, dtype=x.dtype, device=x.device)
    hi = torch.as_tensor(hi, dtype=x.dtype, device=x.device)
    over, under = (d - hi).clamp_min(0), (lo - d).clamp_min(0)
    energy = (over**2 + under**2).sum(-1)
    return energy, _scatter_pairs(x, pairs, (2 * (over - under) / d)[..., None] * v)


def _interfaces(chain: torch.Tensor, pairs: torch.Tensor) -> list[torch.Tensor]:
    """``pairs`` (P, 2) split by the pair of chains they join: one (P_k, 2) group per interface."""
    if len(pairs) == 0:
        return [pairs]
    a, b = chain[pairs[:, 0]], chain[pairs[:, 1]]
    keys, which = torch.unique(torch.stack([torch.minimum(a, b), torch.maximum(a, b)], -1), dim=0, return_inverse=True)
    return [pairs[which == k] for k in range(len(keys))]


def _contact_gradient(x: torch.Tensor, pairs: torch.Tensor, target: float):
    """Energy (B,) and gradient (B, N, 3) of ``relu(target - C)^2 / target``, C the smooth contact
    number :func:`contact_count` of ``pairs``: zero once there are ``target`` contacts."""
    if len(pairs) == 0:
        return x.new_zeros(x.shape[0]), torch.zeros_like(x)
    v = x[:, pairs[:, 0]] - x[:, pairs[:, 1]]
    d = v.norm(dim=-1).clamp_min(1e-6)
    u = (d / CONTACT_RADIUS) ** 6
    short = (target - (1 / (1 + u)).sum(-1)).clamp_min(0)  # (B,)
    ds_dd = -6 * u / (d * (1 + u) ** 2)
    coef = (-2 * short[:, None] / target * ds_dd / d)[..., None] * v
    return short**2 / target, _scatter_pairs(x, pairs, coef)


def _nearest_gradient(x: torch.Tensor, pairs: torch.Tensor, reach: float):
    """Energy (B,) and gradient (B, N, 3) of ``relu(min_p d_p - reach)^2`` over ``pairs`` (P, 2):
    the nearest pair (of an interface) pulled within ``reach`` Å (the gradient moves that pair only)."""
    if len(pairs) == 0:
        return x.new_zeros(x.shape[0]), torch.zeros_like(x)
    v = x[:, pairs[:, 0]] - x[:, pairs[:, 1]]  # (B, P, 3)
    d = v.norm(dim=-1)
    dmin, arg = d.min(-1)  # (B,)
    over = (dmin - reach).clamp_min(0)
    vmin = torch.gather(v, 1, arg[:, None, None].expand(-1, 1, 3))[:, 0]  # (B, 3)
    coef = torch.zeros_like(v)
    coef.scatter_(1, arg[:, None, None].expand(-1, 1, 3), ((2 * over / dmin.clamp_min(1e-6))[:, None] * vmin)[:, None])
    return over**2, _scatter_pairs(x, pairs, coef)


def _rog_gradient(x: torch.Tensor, groups: list[torch.Tensor]):
    """Energy (B,) and gradient (B, N, 3) of ``sum n relu(Rg - 2.2 n^0.38)^2`` over residue groups
    of n residues (the factor n: each residue is pulled inwards at the same rate at any length)."""
    energy, grad = x.new_zeros(x.shape[0]), torch.zeros_like(x)
    for g in groups:
        y = x[:, g]
        c = y.mean(1, keepdim=True)
        rg = ((y - c) ** 2).sum(-1).mean(1).sqrt().clamp_min(1e-6)  # (B,)
        over = (rg - 2.2 * len(g) ** 0.38).clamp_min(0)
        energy = energy + len(g) * over**2
        grad[:, g] += (2 * over / rg)[:, None, None] * (y - c)
    return energy, grad


def _hotspot_gradient(x: torch.Tensor, hotspots: torch.Tensor, designed: torch.Tensor):
    """Energy (B,) and gradient (B, N, 3) of ``sum_h relu(min_i d(h, i) - 7.5)^2`` over hotspot
    residues h and designed residues i (the gradient moves the nearest designed residue only)."""
    if len(hotspots) == 0 or len(designed) == 0:
        return x.new_zeros(x.shape[0]), torch.zeros_like(x)
    v = x[:, designed][:, None] - x[:, hotspots][:, :, None]  # (B, H, M, 3)
    d = v.norm(dim=-1)
    dmin, arg = d.min(-1)  # (B, H)
    over = (dmin - HOTSPOT_PULL).clamp_min(0)
    vmin = torch.gather(v, 2, arg[..., None, None].expand(-1, -1, 1, 3))[:, :, 0]  # (B, H, 3)
    coef = (2 * over / dmin.clamp_min(1e-6))[..., None] * vmin
    grad = torch.zeros_like(x)
    grad.scatter_add_(1, designed[arg][..., None].expand(-1, -1, 3), coef)
    return (over**2).sum(-1), grad


def _near(x: torch.Tensor, pairs: torch.Tensor, d0: torch.Tensor, reach: float):
    """The steric pairs closer than ``d0 + reach`` Å in some state of the batch: those that can
    come within their minimum distance in the next few steps (the list is refreshed every 10)."""
    d = (x[:, pairs[:, 0]] - x[:, pairs[:, 1]]).norm(dim=-1)  # (B, P)
    keep = (d < d0.to(x.device) + reach).any(0)
    return pairs[keep], d0[keep]


class Potentials:
    """The requested potentials of one design: ``terms`` ``((name, weight), ...)`` over residues
    whose chain and residue numbers are ``chain``, ``res_idx`` (N,); ``fixed`` (N,) bool the
    residues that never move (motif, target; None: none); ``hotspots`` (H,) the state positions
    of the hotspot residues. The residue pairs each potential restrains are found once here,
    not at every sampling step."""

    def __init__(self, terms, chain: torch.Tensor, res_idx: torch.Tensor, *, fixed: torch.Tensor | None = None,
                 hotspots: torch.Tensor | None = None):
        self.weights = w = dict(terms)
        self.fixed = torch.zeros(len(chain), dtype=torch.bool, device=chain.device) if fixed is None else fixed.bool()
        if "hotspots" in w and (hotspots is None or len(hotspots) == 0):
            raise DiffsciError("potentials: hotspots needs hotspot residues (--hotspots B17,B20)")
        self.hotspots = None if hotspots is None else torch.as_tensor(hotspots, dtype=torch.long, device=chain.device)
        self.designed = (~self.fixed).nonzero()[:, 0]
        self.bonds = connectivity_pairs(chain, res_idx) if "connectivity" in w else None
        self.steric = steric_pairs(chain, res_idx) if "sterics" in w else None
        # the steric pairs of a designed residue with a fixed chain's (where target_gap applies), found once
        self.to_target = None if self.steric is None else (
            (chain[self.steric[0][:, 0]] != chain[self.steric[0][:, 1]])
            & (self.fixed[self.steric[0][:, 0]] != self.fixed[self.steric[0][:, 1]]))
        self.contacts = {}
        for name in ("monomer_contacts", "olig_contacts", "interface_contacts"):
            if name in w:
                pairs = _contact_pairs(name, chain, res_idx, self.fixed)
                if name == "monomer_contacts":
                    self.contacts[name] = [(pairs, CONTACTS_PER_RESIDUE * len(self.designed))]
                else:  # each interface (pair of chains: the 6 of a C6 ring, a binder's 1) its own target
                    self.contacts[name] = [(group, CONTACT_TARGET) for group in _interfaces(chain, pairs)]
        self.rog_groups = []
        if "monomer_ROG" in w or "binder_ROG" in w:
            for c in chain.unique():
                on = chain == c
                g = (on if "monomer_ROG" in w else on & ~self.fixed).nonzero()[:, 0]
                if len(g) > 2 and ("monomer_ROG" in w or not self.fixed[on].all()):
                    self.rog_groups.append(g)
        self.rog_weight = w.get("monomer_ROG", w.get("binder_ROG", 0.0))

    def _energy_gradient(self, x: torch.Tensor, steric=None):
        """The weighted energy (B,) and its gradient (B, N, 3); ``steric``: the steric pairs to use
        (default all)."""
        w = self.weights
        parts = []
        if self.bonds is not None:
            parts.append((w["connectivity"], _pair_gradient(x, self.bonds, *CA_CA_WINDOW)))
        if self.steric is not None:
            pairs, d0 = self.steric if steric is None else steric
            parts.append((w["sterics"], _pair_gradient(x, pairs, d0.to(x.device), float("inf"))))
        for name, groups in self.contacts.items():
            for pairs, target in groups:
                parts.append((w[name], _contact_gradient(x, pairs, float(target))))
                if name == "olig_contacts":  # and neighbouring copies touch: their nearest CA pair within 7 Å
                    parts.append((w[name], _nearest_gradient(x, pairs, OLIG_PULL)))
        if self.rog_groups:
            parts.append((self.rog_weight, _rog_gradient(x, self.rog_groups)))
        if "hotspots" in w:
            parts.append((w["hotspots"], _hotspot_gradient(x, self.hotspots, self.designed)))
        energy, grad = x.new_zeros(x.shape[0]), torch.zeros_like(x)
        for weight, (e, g) in parts:
            energy, grad = energy + weight * e, grad + weight * g
        return energy, grad.masked_fill(self.fixed[None, :, None], 0.0)

    def energy(self, ca: torch.Tensor) -> torch.Tensor:
        """The weighted energy (B,) for ``ca`` (B, N, 3) Å (what :meth:`relax` lowers)."""
        return self._energy_gradient(ca.to(torch.float64))[0]

    def relax(self, ca: torch.Tensor, *, iters: int = 30, step: float = 0.1, tol: float = 0.0,
              target_gap: float | None = None) -> torch.Tensor:
        """``ca`` (B, N, 3) Å moved down :meth:`energy` by up to ``iters`` gradient steps of size
        ``step`` (Å² per unit energy; stable below ~0.25 / weight for these quadratic penalties),
        stopping early once no residue would move more than ``tol`` Å. A trace that violates
        nothing is returned unchanged (every gradient is zero). ``target_gap``: the sterics keep
        designed residues at least this far (Å) from the residues of a fixed chain (None: the
        usual 4.0 Å; :data:`TARGET_GAP_EARLY`)."""
        if not self.weights:
            return ca
        x, near, steric = ca.to(torch.float64), None, self.steric
        if steric is not None and target_gap is not None and self.to_target.any():
            pairs, d0 = steric
            steric = (pairs, torch.where(self.to_target, torch.clamp(d0, min=target_gap), d0))
        for it in range(iters):
            if steric is not None and it % 10 == 0:  # the pairs near enough to matter, refreshed
                near = _near(x, *steric, reach=3.0)
            grad = self._energy_gradient(x, near)[1]
            if not grad.any() or step * float(grad.abs().max()) <= tol:
                break
            x = x - step * grad
        return x.to(ca.dtype)


def relax_ca(ca: torch.Tensor, terms, chain: torch.Tensor, res_idx: torch.Tensor, *, iters: int = 30,
             step: float = 0.1, **where) -> torch.Tensor:
    """:meth:`Potentials.relax` of ``ca`` (B, N, 3) Å for ``terms`` over ``chain``, ``res_idx`` (N,)
    (``where``: ``fixed``, ``hotspots``)."""
    return Potentials(terms, chain, res_idx, **where).relax(ca, iters=iters, step=step)


def energy(ca: torch.Tensor, terms, chain: torch.Tensor, res_idx: torch.Tensor, **where) -> torch.Tensor:
    """:meth:`Potentials.energy` of ``ca`` (B, N, 3) Å for ``terms`` over ``chain``, ``res_idx`` (N,)."""
    return Potentials(terms, chain, res_idx, **where).energy(ca)

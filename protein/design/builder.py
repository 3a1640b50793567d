"""One builder: a design's inputs -> the denoiser stack and the constraints the sampler applies.

Dimension legend: B batch, N residues in the designed state, n symmetric copies.

:func:`sample_states` samples states for one design's :class:`DesignInputs` (what the design is:
residues, chains, motif, SS classes, strand pairs) with :class:`SamplerSettings` (how it is
sampled). It builds the space, the conditioning and the starting noise, then lets every entry of
:data:`CONDITIONERS`, in order, wrap the denoiser (each step's clean prediction) and/or add a
state constraint (applied after every step), much as GenCast composes its predictor from thin
wrappers. Today's entries:

1. ``ss_guidance``: an SS-conditioned prediction, with classifier-free guidance
   (:func:`ss_denoiser`); it replaces the base denoiser, so it comes first;
2. ``strand_restraints``: the clean prediction relaxed towards a β-sheet
   (:class:`~diffsci.protein.design.strands.StrandRestraints`);
3. ``symmetry`` (a symmetric design: ``BuildContext.symmetry``, a
   :class:`~diffsci.protein.design.symmetry.SymmetryGroup`): the clean prediction symmetrised,
   its copies kept off the axes, and the state symmetrised after every step
   (:mod:`diffsci.protein.design.symmetry`); before the potentials, so they relax a symmetric
   structure whose copies do not sit on one another;
4. ``potentials``: the clean prediction relaxed by the sampling-time potentials
   (:class:`~diffsci.protein.design.potentials.Potentials`);
5. ``motif``: the motif aligned onto the clean prediction, or held in a fixed frame
   (:func:`~diffsci.protein.design.motif.condition_on_motif`).

A symmetric design also starts from symmetric noise
(:func:`~diffsci.protein.design.symmetry.symmetric_prior`: one subunit's noise, placed off the
axes and copied by the group's operators).

A new way of steering sampling (a potential on the clean prediction, a constraint on the
state) is one more function ``(stage, ctx) -> stage`` in that list: nothing else changes.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Callable

import torch

from diffsci.core.checkpoint import Bundle
from diffsci.core.errors import DiffsciError
from diffsci.core.samplers import classifier_free_guidance, get_sampler
from diffsci.core.spaces import Product, remove_com
from diffsci.core.utils import tree_map
from diffsci.protein.frames import ANGSTROM_PER_NM
from diffsci.protein.model.diffusion import ProteinCond, SelfConditioned, build_space
from diffsci.protein.model.network import FrameDenoiserNet
from diffsci.protein.design.motif import TAPER, condition_on_motif, kabsch
from diffsci.protein.design.potentials import TARGET_GAP_EARLY, Potentials
from diffsci.protein.design.request import TIME_POWER, sampling_rotation_rate
from diffsci.protein.design.strands import StrandRestraints, request_restraints, strand_restraints
from diffsci.protein.design.symmetry import (SymmetryGroup, min_copy_spacing, symmetric_denoiser, symmetric_prior,
                                             symmetry_constraint)

__all__ = ["DesignInputs", "SamplerSettings", "Stage", "BuildContext", "CONDITIONERS", "build_stage", "sample_states",
           "ss_denoiser", "cyclic_constraint"]


@dataclass(frozen=True)
class DesignInputs:
    """What one design is, as the sampler needs it.

    ``n_res`` residues in the state (all copies); ``n_chains`` symmetric copies (Cn: n; the
    state is n equal chains); ``chain_index``, ``res_index`` (N,) the chain and residue number of
    each residue (None: ``n_chains`` equal chains numbered from 0); ``known`` the motif
    (:class:`~diffsci.protein.design.contig.Layout` ``.known``), held with ``motif_method`` and
    ``motif_taper``; ``ss`` (N,) SS classes and ``ss_pair`` (N, N) pair classes (an SS-conditioned
    checkpoint; None: unknown) with ``guidance_scale``; ``strand_restraints`` their strength (0:
    none; needs ``ss``, one chain) with the strand segments paired as ``strand_pairs`` says
    (``(a, b, parallel[, register])``; None: as ``ss_pair`` says); ``potentials`` the sampling-time
    potentials ``((name, weight), ...)`` (:mod:`diffsci.protein.design.potentials`; empty: none)
    with ``hotspots`` the state positions of the hotspot residues (fixed residues of ``known``)."""

    n_res: int
    n_chains: int = 1
    chain_index: torch.Tensor | None = None
    res_index: torch.Tensor | None = None
    known: tuple | None = None
    motif_method: str = "align"
    motif_taper: int = TAPER
    ss: torch.Tensor | None = None
    ss_pair: torch.Tensor | None = None
    guidance_scale: float = 1.0
    strand_restraints: float = 0.0
    strand_pairs: tuple | None = None
    potentials: tuple = ()
    hotspots: tuple | None = None

    def __post_init__(self):
        if self.strand_restraints and (self.ss is None or self.n_chains > 1):
            raise DiffsciError("strand_restraints: needs an ss request and one chain")


@dataclass(frozen=True)
class SamplerSettings:
    """How states are sampled: ``sampler`` (a name of :data:`~diffsci.core.samplers.SAMPLERS`),
    ``steps``, ``time_power`` (time grid ``0.999 u^time_power``, u uniform from 1 to 0) and
    ``rotation_rate`` (flow checkpoints; None: the checkpoint's ``inference_rate``), ``churn``
    (EDM's S_churn for euler and heun: before each step with ``t <= churn_tmax`` the state's
    translations are renoised to a noise ratio ``1 + min(churn / steps, sqrt 2 - 1)`` times larger;
    0: none), ``t_stop`` (the grid's last step goes from ``t_stop`` to 0:
    :func:`~diffsci.core.schedules.time_grid`)."""

    sampler: str
    steps: int
    time_power: float = TIME_POWER
    rotation_rate: float | None = None
    churn: float = 0.0
    churn_tmax: float = 1.0
    t_stop: float = 0.0


@dataclass(frozen=True)
class Stage:
    """What the sampler is given: the denoiser (clean prediction) and the state constraint."""

    denoise: Callable
    constraint: Callable | None = None


@dataclass(frozen=True)
class BuildContext:
    """What a conditioner may read: the ``bundle``, the ``space``, the conditioning ``cond``
    (:class:`~diffsci.protein.model.diffusion.ProteinCond`, on the model's device), the design's
    ``inputs``, the noise ``generator`` and the design's ``symmetry`` (None with
    ``inputs.n_chains`` > 1: ``C<n_chains>``; its order must be ``inputs.n_chains``)."""

    bundle: Bundle
    space: Product
    cond: ProteinCond
    inputs: DesignInputs
    generator: object
    symmetry: SymmetryGroup | None = None

    def __post_init__(self):
        n = self.inputs.n_chains
        if self.symmetry is None and n > 1:
            object.__setattr__(self, "symmetry", SymmetryGroup(f"C{n}"))
        if self.symmetry is not None and self.symmetry.order != n:
            raise DiffsciError(f"symmetry {self.symmetry.name}: {self.symmetry.order} copies, but the design has "
                               f"{n} chains (DesignInputs.n_chains)")


# ------------------------------------------------------------------------------ conditioners
def ss_denoiser(model, space, cond: ProteinCond, guidance_scale: float = 1.0, *, self_condition: bool = False):
    """The denoiser an SS-conditioned ``model`` samples with: the conditional model for
    ``guidance_scale`` 1, else :func:`~diffsci.core.samplers.classifier_free_guidance` between
    ``cond`` and the unconditional prediction (``cond`` with all SS and pair classes unknown).
    ``self_condition``: each branch keeps its own previous prediction (:class:`SelfConditioned`)."""
    conditional = SelfConditioned(model) if self_condition else model
    if guidance_scale == 1:
        return conditional
    unconditional = SelfConditioned(model) if self_condition else model
    uncond = dataclasses.replace(cond, ss=None, ss_pair=None)

    def branch(x, t, c):
        return (unconditional if c is uncond else conditional)(x, t, c)

    return classifier_free_guidance(branch, space, guidance_scale, uncond=uncond)


def _ss_guidance(stage: Stage, ctx: BuildContext) -> Stage:
    if ctx.cond.ss is None and ctx.cond.ss_pair is None:
        return stage
    cfg = ctx.bundle.config
    return Stage(ss_denoiser(ctx.bundle.model, ctx.space, ctx.cond, ctx.inputs.guidance_scale,
                             self_condition=cfg.net.self_condition), stage.constraint)


def _strand_restraints(stage: Stage, ctx: BuildContext) -> Stage:
    inputs, cond = ctx.inputs, ctx.cond
    if not inputs.strand_restraints:
        return stage
    if inputs.strand_pairs is None:
        restraints = request_restraints(cond.ss[0], None if cond.ss_pair is None else cond.ss_pair[0])
    else:
        restraints = strand_restraints(cond.ss[0].cpu().numpy(), list(inputs.strand_pairs))
    return Stage(StrandRestraints(stage.denoise, restraints, strength=inputs.strand_restraints, mask=cond.mask[:1]),
                 stage.constraint)


#: below this time the potentials relax each clean prediction up to FINAL_ITERS steps, until no
#: residue moves more than 1e-3 Å (the last ~10 of 100 steps of the default time grid)
FINAL_T, FINAL_ITERS = 0.01, 300
#: above this time designed residues are kept TARGET_GAP_EARLY (6 Å) from a fixed chain's CAs
EARLY_T = 0.3


def _potentials(stage: Stage, ctx: BuildContext) -> Stage:
    terms = ctx.inputs.potentials
    if not terms:
        return stage
    known, mask = ctx.inputs.known, ctx.cond.mask
    fixed = None if known is None else known[1][0].to(mask.device)  # the motif: placed by the motif conditioner
    potentials = Potentials(terms, ctx.cond.chain[0], ctx.cond.res_idx[0], fixed=fixed,
                            hotspots=ctx.inputs.hotspots)  # pairs found once
    motif_ca = None if known is None else known[0][0][0, fixed].to(mask.device)  # (M, 3) nm, the input motif
    inner = stage.denoise

    def denoise(x, t, cond):
        trans0, rots0 = inner(x, t, cond)
        if motif_ca is not None:  # relax against the motif as it will be placed, not as predicted
            trans0 = _place_motif(trans0, motif_ca, fixed)
        # near the clean end the prediction is (nearly) the design: relax it to convergence there
        last = float(t.max()) < FINAL_T
        gap = TARGET_GAP_EARLY if float(t.max()) > EARLY_T else None  # binders: out of the target early
        moved = potentials.relax(trans0 * ANGSTROM_PER_NM, iters=FINAL_ITERS if last else 30,
                                 tol=1e-3 if last else 0.0, target_gap=gap) / ANGSTROM_PER_NM
        return remove_com(moved, mask.expand(trans0.shape[0], -1)), rots0

    return Stage(denoise, stage.constraint)


def _place_motif(trans0: torch.Tensor, motif_ca: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
    """``trans0`` (B, N, 3) with its ``fixed`` residues replaced by the input motif's CAs
    ``motif_ca`` (M, 3) superimposed on them (Kabsch), as the motif conditioner places them."""
    mobile = motif_ca[None].expand(trans0.shape[0], -1, -1)
    r, c = kabsch(mobile, trans0[:, fixed])
    out = trans0.clone()
    out[:, fixed] = torch.einsum("bij,bmj->bmi", r, mobile) + c[:, None]
    return out


def cyclic_constraint(n: int):
    """A sampler ``constraint`` making a state of n equal-length chains Cn-symmetric about z
    (:func:`~diffsci.protein.design.symmetry.symmetry_constraint` of ``C<n>``; kept for old callers)."""
    return symmetry_constraint(SymmetryGroup(f"C{n}"))


def _symmetry(stage: Stage, ctx: BuildContext) -> Stage:
    group = ctx.symmetry
    if group is None:
        return stage
    spacing = min_copy_spacing(ctx.inputs.n_res // group.order) / ANGSTROM_PER_NM
    return Stage(symmetric_denoiser(group, stage.denoise, min_spacing=spacing), symmetry_constraint(group))


def _motif(stage: Stage, ctx: BuildContext) -> Stage:
    inputs = ctx.inputs
    if inputs.known is None:
        return stage
    device = ctx.cond.mask.device
    known = tree_map(lambda v: v.to(device), inputs.known)
    denoise, constraint = condition_on_motif(ctx.space, stage.denoise, known, method=inputs.motif_method,
                                             taper=inputs.motif_taper, constraint=stage.constraint,
                                             generator=ctx.generator, chain_index=ctx.cond.chain[0])
    return Stage(denoise, constraint)


#: the conditioners, applied in this order to the base denoiser (module docstring)
CONDITIONERS: list[tuple[str, Callable[[Stage, BuildContext], Stage]]] = [
    ("ss_guidance", _ss_guidance), ("strand_restraints", _strand_restraints), ("symmetry", _symmetry),
    ("potentials", _potentials), ("motif", _motif),
]


def build_stage(ctx: BuildContext) -> Stage:
    """The denoiser stack and constraint for ``ctx``: the (self-conditioned) model, then every
    entry of :data:`CONDITIONERS` in order."""
    model = ctx.bundle.model
    stage = Stage(SelfConditioned(model) if ctx.bundle.config.net.self_condition else model)
    for _, conditioner in CONDITIONERS:
        stage = conditioner(stage, ctx)
    return stage


# -------------------------------------------------------------------------------- sampling
def _cond(inputs: DesignInputs, batch: int, device) -> ProteinCond:
    n_res, n_chains = inputs.n_res, inputs.n_chains
    mask = torch.ones(batch, n_res, dtype=torch.bool, device=device)
    L = n_res // n_chains
    res_idx = torch.arange(L, device=device).repeat(n_chains).expand(batch, n_res).clone()
    chain = torch.arange(n_chains, device=device).repeat_interleave(L).expand(batch, n_res).clone()
    if inputs.res_index is not None:
        res_idx = torch.as_tensor(inputs.res_index, dtype=torch.long, device=device).expand(batch, n_res).clone()
    if inputs.chain_index is not None:
        chain = torch.as_tensor(inputs.chain_index, dtype=torch.long, device=device).expand(batch, n_res).clone()
    ss = None if inputs.ss is None else torch.as_tensor(inputs.ss, dtype=torch.long, device=device).expand(batch, n_res)
    ss_pair = (None if inputs.ss_pair is None else
               torch.as_tensor(inputs.ss_pair, dtype=torch.long, device=device).expand(batch, n_res, n_res))
    return ProteinCond(mask, res_idx, chain, ss=ss, ss_pair=ss_pair)


def _check_generators(generator, device) -> None:
    for g in generator if isinstance(generator, (list, tuple)) else [generator]:
        if torch.device(g.device).type != device.type:
            raise DiffsciError(f"generator: on {g.device}, but the model is on {device}; make it with "
                               f"make_generator(..., device=...) on the model's device")


@torch.no_grad()
def sample_states(bundle: Bundle, inputs: DesignInputs, settings: SamplerSettings, generator, *, batch: int = 1,
                  callback=None, symmetry: SymmetryGroup | None = None):
    """Sample ``batch`` states of one design (``inputs``) with the bundle's model and
    ``settings``. Returns (trans (batch, N, 3) nm, rots (batch, N, 3, 3)), on the model's device.

    ``generator`` (one, or a list of ``batch``) must be on a device of the model's type
    (:func:`~diffsci.core.utils.make_generator` ``device=``); the tensors of ``inputs`` may be
    anywhere (they are moved). ``callback(i, t, x, x0_hat)`` goes to the sampler. ``symmetry``:
    the group of a design of ``inputs.n_chains`` > 1 copies (None: ``C<n_chains>``; the
    :class:`BuildContext`); such a design starts from symmetric noise."""
    cfg = bundle.config
    device = next(bundle.model.parameters()).device
    _check_generators(generator, device)
    cond = _cond(inputs, batch, device)
    rate = sampling_rotation_rate(cfg, settings.rotation_rate)
    space = build_space(cfg, cond.mask, rotation_rate=1.0 if rate is None else rate)
    n_res = inputs.n_res
    like = (torch.zeros(batch, n_res, 3, device=device), torch.eye(3, device=device).expand(batch, n_res, 3, 3).clone())
    ctx = BuildContext(bundle, space, cond, inputs, generator, symmetry)
    x = space.prior(like, generator) if ctx.symmetry is None else symmetric_prior(ctx.symmetry, space, like, generator)
    times = space.spaces[0].schedule.time_grid(settings.steps, power=settings.time_power, t_stop=settings.t_stop)
    stage = build_stage(ctx)
    with contextlib.ExitStack() as stack:  # the weights are constant while sampling (FrameDenoiserNet.frozen_weights)
        for net in bundle.model.modules():
            if isinstance(net, FrameDenoiserNet):
                stack.enter_context(net.frozen_weights())
        options = {"churn": settings.churn, "s_tmax": settings.churn_tmax} if settings.churn else {}
        return get_sampler(settings.sampler)(stage.denoise, x, times, space=space, cond=cond, generator=generator,
                                             constraint=stage.constraint, callback=callback, **options)

"""Designing backbones: unconditional sampling, motif scaffolding (contigs), cyclic symmetry.

Dimension legend: B batch, N residues in the designed state, L residues per chain, n chains.

Every sample has its own generator derived from ``(seed, length, index)`` (and the contig or
symmetry), so the same seed gives the same files whatever else is sampled in the run, and
whichever ``torchrun`` rank samples it.

Devices: sampling runs where the model is (``load_model(..., device=)``, or ``device=`` of
:func:`sample_backbones`): every tensor and each design's noise generator is made there, and
designs come back as numpy arrays on the CPU. A contig's layout is drawn on the CPU, so a design
has the same layout on every device; its noise, and so its coordinates, are reproducible on one
device type, not across them (CUDA draws other numbers than the CPU from the same seed).

Motif scaffolding: a contig (:mod:`diffsci.protein.contig`) is parsed and checked against the
motif file before sampling; each design draws its own layout (scaffold lengths, motif
positions), and the motif residues are kept exact up to a rigid motion during sampling by
:func:`diffsci.protein.motif.condition_on_motif`.

Secondary-structure conditioning (an SS-conditioned checkpoint, :mod:`diffsci.protein.ss`): ``ss``
requests each residue's class (``--ss L2E8L3H16``; every chain of a symmetric design gets it),
``ss_pairs`` which strand segments pair; ``guidance_scale`` w mixes the conditional prediction
with the unconditional one (all classes unknown) by the core's classifier-free guidance,
``D_u + w (D_c - D_u)`` (1: the conditional model alone, 0: the unconditional one). A request
with a strand is sampled with the strand restraints by default (``strand_restraints``;
:mod:`diffsci.protein.strands`): each step's clean prediction is relaxed towards a β-sheet.
With a contig of one chain whose scaffold segments each have one length, the request covers
the whole design, letter by residue, motif residues included.
``ss="prior"`` draws each design's request and strand pairs from the training chains instead
(:mod:`diffsci.protein.topology`): unconditional designs with the sheets the network alone
does not draw.

Cyclic symmetry ``Cn``: the state holds n chains of L residues; after every step it is
symmetrised (each chain mapped back by its n-fold rotation about z, averaged, rotations
projected back onto SO(3), and the n copies rebuilt), so the chains are exact copies.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
import time
from dataclasses import dataclass

import numpy as np
import torch

from diffsci.core.checkpoint import Bundle, load_bundle
from diffsci.core.distributed import gather_shares, is_root, rank_device
from diffsci.core.errors import DiffsciError
from diffsci.core.io import check_choice, check_int, check_range
from diffsci.core.io import progress as progress_bar
from diffsci.core.samplers import classifier_free_guidance, get_sampler
from diffsci.core.utils import make_generator, resolve_device, tree_map
from diffsci.protein.contig import (MAX_LENGTH, MIN_LENGTH, Motif, contig_length_limits, draw_layout, parse_contig,
                                    parse_length_range, resolve_contig)
from diffsci.protein.diffusion import (ANGSTROM_PER_NM, KIND, ProteinCond, ProteinModelConfig, SelfConditioned, build_space,
                                      ss_checkpoint)
from diffsci.protein.frames import backbone_from_frames
from diffsci.protein.model import FrameDenoiserNet
from diffsci.protein.motif import METHODS as MOTIF_METHODS
from diffsci.protein.motif import TAPER, condition_on_motif
from diffsci.protein.ss import PAIR_UNKNOWN, SS_LETTERS, pair_classes, ss_condition
from diffsci.protein.strands import StrandRestraints, request_restraints
from diffsci.protein.strands import strand_restraints as strand_restraints_of

__all__ = [
    "load_model", "cyclic_constraint", "Design", "check_design_options", "default_sampler", "sampling_rotation_rate",
    "sample_states", "sample_backbones", "TIME_POWER", "FEW_STEPS", "ss_denoiser", "motif_ss_mismatches",
]

# sampling time grid t_i = 0.999 u_i^TIME_POWER (u uniform 1 -> 0): more of the steps near the clean
# end, where local geometry (CA spacing, helices) is settled; measured in protein/data/CHECKPOINT.md
TIME_POWER = 2.0

# below this many steps a flow checkpoint samples with the re-noising sampler by default (at L = 100,
# 10 steps: CA-CA ok 0.87 -> 0.94..0.96 against euler; protein/data/CHECKPOINT.md, "Few-step sampling");
# from it on with euler
FEW_STEPS = 20


def load_model(checkpoint=None, *, untrained: bool = False, device="cpu") -> Bundle:
    """Load a protein checkpoint (file or run folder; None: the shipped one; ``"ss"``: the
    shipped SS-conditioned one, :func:`~diffsci.protein.diffusion.ss_checkpoint`) as a
    :class:`~diffsci.core.checkpoint.Bundle` (``.model`` with its EMA weights, ``.config``,
    ``.source``), migrated to the current config version.

    ``untrained=True`` builds the same architecture with initial weights drawn from seed 0 (a
    baseline, the same in every run; torch's global RNG is left as it was)."""
    if checkpoint == "ss":
        checkpoint = ss_checkpoint()
    return load_bundle(checkpoint, KIND, device=device, weights="init" if untrained else "ema")


# --------------------------------------------------------------------------------- symmetry
def _rz(angle: float, dtype, device) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=dtype, device=device)


def _project_so3(m: torch.Tensor) -> torch.Tensor:
    u, _, vh = torch.linalg.svd(m)
    d = torch.sign(torch.linalg.det(u @ vh))
    fix = torch.ones_like(u[..., 0])
    fix[..., -1] = d
    return u @ torch.diag_embed(fix) @ vh


def cyclic_constraint(n: int):
    """A sampler ``constraint`` making a state of n equal-length chains Cn-symmetric about z."""

    def constraint(x, t):
        trans, rots = x
        b, N = trans.shape[:2]
        L = N // n
        rz = torch.stack([_rz(2 * math.pi * k / n, trans.dtype, trans.device) for k in range(n)])  # (n, 3, 3)
        tr = trans.reshape(b, n, L, 3)
        ro = rots.reshape(b, n, L, 3, 3)
        back_t = torch.einsum("kji,bklj->bkli", rz, tr).mean(1)  # R_k^T t_k, averaged
        back_r = _project_so3(torch.einsum("kji,bkljm->bklim", rz, ro).mean(1))
        new_t = torch.einsum("kij,blj->bkli", rz, back_t).reshape(b, N, 3)
        new_r = torch.einsum("kij,bljm->bklim", rz, back_r).reshape(b, N, 3, 3)
        return new_t, new_r

    return constraint


# ----------------------------------------------------------------------------------- design
_CHAIN_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass
class Design:
    """One designed backbone.

    ``coords`` (S, N, 4, 3) Å: S symmetric copies (``--symmetry Cn``: S = n; else 1) of N
    residues each; one copy holds the chains of ``chain_lengths`` (default one chain of N),
    written as chains A, B, ... copy by copy. ``motif_index`` (M,): positions of the motif
    residues in a copy, ``motif_coords`` (M, 4, 3) their input backbone, ``motif_labels`` their
    input residue names (``A163``, ``A52A``). ``residue_names`` (N,): three-letter names (the
    motif's from its file, GLY elsewhere; None: all GLY). ``drawn_contig``: the contig with the
    drawn scaffold lengths (``12/A163-181/25``). ``trajectory``: the model's clean prediction
    x0_hat at every step as the sampler receives it (a motif design's holds the aligned motif; the
    symmetry constraint comes after), each (S, N, 4, 3) Å, with ``trajectory_times``.
    ``length`` is the chain length for ``--length`` designs and the total for contig designs.
    ``ss``: the requested secondary structure of a chain, one letter per residue (H/E/L), with
    ``ss_pairs``, ``guidance_scale`` and ``strand_restraints`` as given (None: unconditional);
    with ``--ss prior`` the drawn ones, and ``topology`` the training chain and window they were
    drawn from (:mod:`diffsci.protein.topology`)."""

    name: str
    coords: np.ndarray
    length: int
    index: int
    seed: int
    seconds: float
    sampler: str
    steps: int
    motif_index: np.ndarray | None = None
    motif_coords: np.ndarray | None = None
    time_power: float = TIME_POWER
    rotation_rate: float | None = None
    chain_lengths: tuple = ()
    residue_names: tuple | None = None
    motif_labels: tuple | None = None
    contig: str | None = None
    drawn_contig: str | None = None
    motif_file: str | None = None
    symmetry: str | None = None
    total_length_limits: tuple | None = None
    trajectory: list | None = None
    trajectory_times: list | None = None
    ss: str | None = None
    ss_pairs: str | None = None
    guidance_scale: float | None = None
    strand_restraints: float | None = None
    topology: str | None = None

    def __post_init__(self) -> None:
        if not self.chain_lengths:
            self.chain_lengths = (int(self.coords.shape[1]),)

    @property
    def total_length(self) -> int:
        return int(self.coords.shape[0] * self.coords.shape[1])

    def chain_ids(self) -> list[str]:
        n = self.coords.shape[0] * len(self.chain_lengths)
        if n > len(_CHAIN_LETTERS):
            raise DiffsciError(f"{self.name}: {n} chains exceed the 26 chain letters")
        return list(_CHAIN_LETTERS[:n])

    def chains(self, coords: np.ndarray | None = None) -> list[np.ndarray]:
        """The chains of ``coords`` (default the design's), each (L_c, 4, 3), in output order."""
        coords = self.coords if coords is None else coords
        cuts = np.cumsum(self.chain_lengths)[:-1]
        return [c for copy in coords for c in np.split(copy, cuts)]

    def _per_chain(self, values) -> list[list]:
        cuts = np.cumsum(self.chain_lengths)[:-1]
        per_copy = [list(v) for v in np.split(np.asarray(values, dtype=object), cuts)]
        return [v for _ in range(self.coords.shape[0]) for v in per_copy]

    def chain_residue_names(self) -> list[list[str]]:
        names = self.residue_names or ("GLY",) * self.coords.shape[1]
        return self._per_chain(names)

    def motif_flags(self) -> np.ndarray:
        """(N,) bool: True at the motif residues of a copy."""
        flags = np.zeros(self.coords.shape[1], dtype=bool)
        if self.motif_index is not None:
            flags[np.asarray(self.motif_index, dtype=int)] = True
        return flags

    def b_factors(self) -> list[list[float]]:
        """The B-factor column written: 1.0 for motif residues, 0.0 for designed ones."""
        return self._per_chain(self.motif_flags().astype(float))

    def output_labels(self) -> list[str]:
        """(N,) output residue names of the first copy: chain letter + number (``A13``)."""
        ids = self.chain_ids()
        return [f"{ids[c]}{r + 1}" for c, n in enumerate(self.chain_lengths) for r in range(n)]

    def residue_mapping(self) -> dict[str, str]:
        """Input motif residue -> output residue, e.g. ``{"A163": "A13", ...}``."""
        if self.motif_index is None or self.motif_labels is None:
            return {}
        out = self.output_labels()
        return {lab: out[int(i)] for lab, i in zip(self.motif_labels, self.motif_index)}


def default_sampler(cfg: ProteinModelConfig, steps: int | None = None) -> str:
    """The sampler a checkpoint is sampled with by default: ``euler_maruyama`` for a score model;
    for a flow model ``renoise`` (:func:`~diffsci.core.samplers.sample_renoise`: translations
    drawn afresh around each clean prediction, rotations by the rate step) below
    :data:`FEW_STEPS` steps, else ``euler`` (also when ``steps`` is None)."""
    if cfg.formulation != "flow":
        return "euler_maruyama"
    return "renoise" if steps is not None and steps < FEW_STEPS else "euler"


def sampling_rotation_rate(cfg: ProteinModelConfig, rotation_rate: float | None = None) -> float | None:
    """The rotation rate a flow model samples with: ``rotation_rate``, else the checkpoint's
    ``inference_rate``; None for a score model (it has no such rate)."""
    if cfg.formulation != "flow":
        return None
    return cfg.inference_rate if rotation_rate is None else float(rotation_rate)


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


@torch.no_grad()
def sample_states(bundle: Bundle, n_res: int, generator, *, steps: int, sampler: str, n_chains: int = 1,
                  known=None, batch: int = 1, time_power: float = TIME_POWER, rotation_rate: float | None = None,
                  chain_index=None, res_index=None, callback=None, motif_method: str = "align",
                  motif_taper: int = TAPER, ss=None, ss_pair=None, guidance_scale: float = 1.0,
                  strand_restraints: float = 0.0, strand_pairs=None):
    """Sample ``batch`` states of ``n_res`` residues (per chain: n_res // n_chains) with the
    bundle's model. Returns (trans (batch, n_res, 3) nm, rots (batch, n_res, 3, 3)).

    ``known``: the motif (:class:`~diffsci.protein.contig.Layout` ``.known``), held by
    :func:`diffsci.protein.motif.condition_on_motif` with ``motif_method`` and ``motif_taper``
    (its docstring). ``rotation_rate``: see :func:`sampling_rotation_rate`.
    ``chain_index``, ``res_index``: shape (n_res,) chain id and residue index per residue (default:
    n_chains equal chains numbered from 0). ``callback(i, t, x, x0_hat)`` goes to the sampler.
    ``ss`` (n_res,) SS classes and ``ss_pair`` (n_res, n_res) pair classes (:mod:`diffsci.protein.ss`;
    an SS-conditioned checkpoint only; None: unknown), sampled with ``guidance_scale``
    (:func:`ss_denoiser`). ``strand_restraints``: the strength in [0, 1] of the strand restraints on
    the clean prediction (:mod:`diffsci.protein.strands`; needs ``ss``, one chain; 0: none), with the
    strand segments paired as ``strand_pairs`` says (``(a, b, parallel[, register])``,
    :func:`diffsci.protein.strands.strand_restraints`; None: as ``ss_pair`` says,
    :func:`diffsci.protein.strands.request_restraints`).

    Runs on the model's device: ``generator`` (one, or a list of ``batch``) must be on a device of
    that type (:func:`~diffsci.core.utils.make_generator` ``device=``); ``known``, ``chain_index``
    and ``res_index`` may be anywhere (they are moved). The returned tensors are on that device."""
    cfg = bundle.config
    device = next(bundle.model.parameters()).device
    for g in generator if isinstance(generator, (list, tuple)) else [generator]:
        if torch.device(g.device).type != device.type:
            raise DiffsciError(f"generator: on {g.device}, but the model is on {device}; make it with "
                               f"make_generator(..., device=...) on the model's device")
    mask = torch.ones(batch, n_res, dtype=torch.bool, device=device)
    L = n_res // n_chains
    res_idx = torch.arange(L, device=device).repeat(n_chains).expand(batch, n_res).clone()
    chain = torch.arange(n_chains, device=device).repeat_interleave(L).expand(batch, n_res).clone()
    if res_index is not None:
        res_idx = torch.as_tensor(res_index, dtype=torch.long, device=device).expand(batch, n_res).clone()
    if chain_index is not None:
        chain = torch.as_tensor(chain_index, dtype=torch.long, device=device).expand(batch, n_res).clone()
    rate = sampling_rotation_rate(cfg, rotation_rate)
    space = build_space(cfg, mask, rotation_rate=1.0 if rate is None else rate)
    like = (torch.zeros(batch, n_res, 3, device=device), torch.eye(3, device=device).expand(batch, n_res, 3, 3).clone())
    x = space.prior(like, generator)
    times = space.spaces[0].schedule.time_grid(steps, power=time_power)
    constraint = None
    if n_chains > 1:
        constraint = cyclic_constraint(n_chains)
    cond = ProteinCond(mask, res_idx, chain)
    denoise = SelfConditioned(bundle.model) if cfg.net.self_condition else bundle.model
    if ss is not None or ss_pair is not None:
        if not cfg.net.ss_conditioning:
            raise DiffsciError(f"ss: checkpoint {bundle.source} has no secondary-structure conditioning "
                               f"(net.ss_conditioning is false)")
        ss = None if ss is None else torch.as_tensor(ss, dtype=torch.long, device=device).expand(batch, n_res)
        ss_pair = None if ss_pair is None else torch.as_tensor(ss_pair, dtype=torch.long,
                                                               device=device).expand(batch, n_res, n_res)
        cond = ProteinCond(mask, res_idx, chain, ss=ss, ss_pair=ss_pair)
        denoise = ss_denoiser(bundle.model, space, cond, guidance_scale, self_condition=cfg.net.self_condition)
    if strand_restraints:
        if ss is None or n_chains > 1:
            raise DiffsciError("strand_restraints: needs an ss request and one chain")
        restraints = (request_restraints(ss[0], None if ss_pair is None else ss_pair[0]) if strand_pairs is None
                      else strand_restraints_of(ss[0].cpu().numpy(), strand_pairs))
        denoise = StrandRestraints(denoise, restraints, strength=strand_restraints, mask=mask[:1])
    if known is not None:  # the motif follows the scaffold's frame (protein/motif.py)
        known = tree_map(lambda v: v.to(device), known)
        denoise, constraint = condition_on_motif(space, denoise, known, method=motif_method, taper=motif_taper,
                                                 constraint=constraint, generator=generator, chain_index=chain[0])
    with contextlib.ExitStack() as stack:  # the weights are constant while sampling (FrameDenoiserNet.frozen_weights)
        for net in bundle.model.modules():
            if isinstance(net, FrameDenoiserNet):
                stack.enter_context(net.frozen_weights())
        return get_sampler(sampler)(denoise, x, times, space=space, cond=cond, generator=generator,
                                    constraint=constraint, callback=callback)


def _to_atoms(trans, rots, n_copies: int, chain_lengths=None) -> np.ndarray:
    """Shape (n_copies, N, 4, 3) Å (numpy, on the CPU) from the first state of a batch; O of each
    chain's last residue from its own frame (never from the next chain's N)."""
    n_all = trans.shape[1]
    per_copy = n_all // n_copies
    lengths = list(chain_lengths) if chain_lengths else [per_copy]
    chain_end = torch.zeros(n_all, dtype=torch.bool, device=trans.device)
    ends = np.cumsum(lengths) - 1
    for c in range(n_copies):
        chain_end[c * per_copy + ends] = True
    bb = backbone_from_frames(rots[0], trans[0] * ANGSTROM_PER_NM, chain_end=chain_end)  # (N_all, 4, 3) Å
    return bb.reshape(n_copies, per_copy, 4, 3).cpu().numpy()


def _symmetry_order(symmetry) -> int:
    if not symmetry:
        return 1
    m = re.fullmatch(r"[Cc](\d+)", str(symmetry))
    if not m or int(m.group(1)) < 2:
        raise DiffsciError(f"symmetry {symmetry!r}: use Cn with n >= 2 (e.g. C3)")
    return int(m.group(1))


def check_design_options(lengths, *, contig: str | None = None, motif: bool = False, total_length=None,
                         symmetry: str | None = None) -> None:
    """Refuse combinations of design options that do not go together (before any file is read):
    ``lengths`` for plain designs, or a ``contig`` (with an optional ``motif`` file and
    ``total_length`` range), and ``symmetry`` for plain designs only."""
    if contig is not None:
        if lengths:
            raise DiffsciError("lengths cannot be combined with a contig: the contig sets the length "
                               "(use a scaffold range, or a total length such as 80-120)")
        if symmetry:
            raise DiffsciError("symmetry cannot be combined with a contig or motif: placing a motif in every "
                               "subunit is not supported; design the symmetric assembly without a motif")
        return
    if motif:
        raise DiffsciError("a motif needs a contig (e.g. 10-20/A5-20/30-40)")
    if total_length is not None:
        raise DiffsciError("total_length applies to contig designs (give lengths for plain designs)")
    if not lengths:
        raise DiffsciError("give at least one length (or a contig)")


#: ``ss`` value that draws each design's topology from the training chains (:mod:`diffsci.protein.topology`)
SS_PRIOR = "prior"


def _ss_inputs(cfg: ProteinModelConfig, source: str, ss: str | None, ss_pairs: str | None, guidance_scale: float,
               lengths, n_copies: int, contig: str | None):
    """The SS classes (n_copies L,) and pair classes (n_copies L, n_copies L) of a request for
    chains of length L (every chain the same request; pairs between chains unknown), or None
    without one. Refuses a request the checkpoint or the design options cannot take."""
    check_range(guidance_scale, "guidance_scale", 0, 100)
    if ss is None:
        if ss_pairs is not None:
            raise DiffsciError("ss_pairs needs an ss request (the E segments it numbers)")
        if guidance_scale != 1:
            raise DiffsciError("guidance_scale applies to secondary-structure requests (give ss)")
        return None
    if not cfg.net.ss_conditioning:
        raise DiffsciError(f"ss: checkpoint {source} has no secondary-structure conditioning (net.ss_conditioning "
                           f"is false); train one with protein/data/ss_train.json")
    if contig is not None and ss == SS_PRIOR:
        raise DiffsciError("ss prior: not with a contig (the prior draws whole chains; give an ss request of the "
                           "design's length)")
    if contig is not None:  # the request's length is the design's: the contig's total is fixed to it
        lengths = [len(ss_condition(ss, None, ss_pairs)[0])]
    if ss == SS_PRIOR:
        if ss_pairs is not None:
            raise DiffsciError("ss_pairs: the prior draws each design's strand pairs (give an ss request to choose them)")
        if n_copies > 1:
            raise DiffsciError("ss prior: single-chain designs only (not with symmetry)")
        return SS_PRIOR
    for length in lengths:
        codes, pair = ss_condition(ss, length, ss_pairs)
    n = len(codes)
    tiled = np.full((n * n_copies, n * n_copies), PAIR_UNKNOWN, dtype=np.int64)
    for k in range(n_copies):
        tiled[k * n : (k + 1) * n, k * n : (k + 1) * n] = pair
    return torch.from_numpy(np.tile(codes, n_copies)), torch.from_numpy(tiled)


def _check_contig_request(plan, contig: str, n: int, limits) -> None:
    """Refuse an SS request of ``n`` residues with a resolved contig unless letter i can be residue
    i of the design: one chain, every scaffold segment of one length, that length ``n`` (within
    ``limits``, the totals :func:`contig_length_limits` allows)."""
    if len(plan) > 1:
        raise DiffsciError(f"ss with contig {contig!r}: one designed chain only (this contig has {len(plan)} chains)")
    fixed = contig_length_limits(plan, None, text=contig)
    if fixed[0] != fixed[1]:
        raise DiffsciError(f"ss with contig {contig!r}: give every scaffold segment one length (e.g. 20, not "
                           f"10-30), so the request's letters fall on known residues; this contig gives "
                           f"{fixed[0]}..{fixed[1]} residues")
    if not limits[0] <= n <= limits[1]:
        raise DiffsciError(f"ss: the request has {n} residues, but contig {contig!r} gives {fixed[0]} "
                           f"(with --total-length, if given: {limits[0]}..{limits[1]}); the request "
                           f"describes the whole design, motif residues included")


def motif_ss_mismatches(motif: Motif, contig: str, ss: str) -> list[tuple[str, str, str]]:
    """Where an SS request with a contig (one chain, fixed segment lengths; as
    :func:`sample_backbones` takes it) asks another class for a motif residue than the motif
    has in its own file: ``(label, requested, motif's DSSP)`` per such residue, e.g. ``("A712",
    "E", "H")``, with DSSP (:func:`diffsci.protein.metrics.dssp_labels`, loop as ``L``) of all
    the motif file's residues in file order (chain breaks are seen from the CA spacing). The
    motif is held as it is, so those letters cannot be met. Empty when all agree; refuses a contig
    the request cannot take, as :func:`sample_backbones` does."""
    from diffsci.protein.metrics import dssp_labels

    plan = resolve_contig(parse_contig(contig), motif)
    codes = "".join(SS_LETTERS[c] for c in ss_condition(ss, None, None)[0])
    _check_contig_request(plan, contig, len(codes), contig_length_limits(plan, None, text=contig))
    keys = list(motif.residues)
    labels = dssp_labels(np.stack([motif.residues[k] for k in keys]))
    native = {k: "L" if c == "-" else c for k, c in zip(keys, labels)}
    out, pos = [], 0
    for block in plan[0]:
        if block.seg.chain is None:
            pos += block.seg.lo
            continue
        for key in block.keys:
            if codes[pos] != native[key]:
                out.append((f"{key[0]}{key[1]}{key[2]}", codes[pos], native[key]))
            pos += 1
    return out


def sample_backbones(bundle: Bundle, lengths, num: int, *, seed: int = 0, steps: int = 100, sampler: str | None = None,
                     motif: Motif | None = None, contig: str | None = None, symmetry: str | None = None,
                     progress: bool = True, time_power: float = TIME_POWER,
                     rotation_rate: float | None = None, total_length=None,
                     trajectory: bool = False, motif_method: str = "align", motif_taper: int = TAPER,
                     device=None, ss: str | None = None, ss_pairs: str | None = None,
                     guidance_scale: float = 1.0, strand_restraints: float | None = None) -> list[Design] | None:
    """Design ``num`` backbones per length (or per contig) with a loaded model (:func:`load_model`).
    See the module docstring.

    ``sampler``: a name of :data:`~diffsci.core.samplers.SAMPLERS` (None: :func:`default_sampler`
    for ``steps``). ``time_power``: the sampling time grid is ``0.999 u^time_power`` for u uniform from 1 to 0
    (1: uniform steps). ``rotation_rate``: FrameFlow's exponential rotation rate at sampling
    (None: the checkpoint's ``inference_rate``; 1: plain geodesic steps; higher settles
    rotations earlier, which gives more helix). ``total_length``: with a contig, the range
    ``(lo, hi)`` (or ``"80-120"``) the total length must lie in (RFdiffusion's
    ``contigmap.length``). ``trajectory``: keep the model's x0 prediction at every step.
    ``motif_method``, ``motif_taper``: how the motif is held (:func:`diffsci.protein.motif.condition_on_motif`;
    ``"fixed"`` holds the motif in a fixed frame, for comparison).
    ``device``: where to sample (``"cpu"``, ``"cuda:1"``, ``"auto"``; the model is moved there,
    in place; None: where the model is); see the module docstring.
    ``ss``, ``ss_pairs``, ``guidance_scale``: secondary-structure conditioning of every chain
    (:func:`diffsci.protein.ss.ss_condition`; ``ss`` must describe each of ``lengths``; an
    SS-conditioned checkpoint only; with a contig: one chain, every scaffold segment of one length,
    the request letter by residue over the whole design, motif included); see the module docstring. ``ss="prior"``:
    each design draws its own SS and strand pairs (with their registers) from the training chains
    the checkpoint learned from (:mod:`diffsci.protein.topology`; single chains; recorded in
    ``Design.ss``, ``ss_pairs`` and ``topology``).
    ``strand_restraints``: strength in [0, 1] of the strand restraints (:mod:`diffsci.protein.strands`;
    with ``ss``, not with symmetry; 0: none; None: 1 for a single-chain ``ss`` request with a
    strand segment, else 0).
    Everything is checked before the first design is sampled.

    Under ``torchrun`` every rank calls this with the same arguments: the designs are split over
    the ranks (:func:`diffsci.core.distributed.gather_shares`); rank 0 returns all of them in
    order, the other ranks None. A design is the same whichever rank samples it (its own
    generator). With several ranks, a CUDA device is the ``LOCAL_RANK``-th GPU.
    """
    cfg = bundle.config
    check_int(steps, "steps")
    sampler = sampler or default_sampler(cfg, steps)
    get_sampler(sampler)  # fail early on an unknown name
    check_int(num, "num")
    check_range(time_power, "time_power", 0, 10, lo_open=True)
    if rotation_rate is not None:
        if cfg.formulation != "flow":
            raise DiffsciError("rotation_rate applies to flow checkpoints only (this one is a score model)")
        check_range(rotation_rate, "rotation_rate", 0, 100, lo_open=True)
    check_choice(motif_method, "motif_method", MOTIF_METHODS)
    check_int(motif_taper, "motif_taper", minimum=0)
    rate = sampling_rotation_rate(cfg, rotation_rate)
    if sampler == "heun" and rate is not None:
        build_space(cfg, rotation_rate=rate).check_second_order()  # refused before the first design
    n_copies = _symmetry_order(symmetry)
    total = parse_length_range(total_length)
    check_design_options(lengths, contig=contig, motif=motif is not None, total_length=total, symmetry=symmetry)
    plan, limits, parsed = None, None, None
    if contig is not None:
        parsed = parse_contig(contig)
        plan = resolve_contig(parsed, motif)
        limits = contig_length_limits(plan, total, text=contig)
    else:
        for length in lengths:
            check_int(length, "length", minimum=MIN_LENGTH, maximum=MAX_LENGTH)
    ss_inputs = _ss_inputs(cfg, bundle.source, ss, ss_pairs, guidance_scale, lengths, n_copies, contig)
    if contig is not None:
        if ss_inputs is not None:
            _check_contig_request(plan, contig, len(ss_inputs[0]), limits)
    library = None
    if ss_inputs == SS_PRIOR:
        from diffsci.protein.topology import TopologyLibrary

        library = TopologyLibrary(config=cfg)  # the chains this checkpoint was trained on
        for length in lengths:
            library.candidates(length)  # refuses a length no training chain can give
    if strand_restraints is None:
        has_strand = library is not None or (ss_inputs is not None
                                             and bool((ss_inputs[0] == SS_LETTERS.index("E")).any()))
        strand_restraints = 1.0 if has_strand and n_copies == 1 else 0.0
    check_range(strand_restraints, "strand_restraints", 0, 1)
    if strand_restraints and (ss_inputs is None or n_copies > 1):
        raise DiffsciError("strand_restraints apply to an ss request of a single chain (not without ss, not with "
                           "symmetry)")
    jobs = [(length, i) for length in (lengths if plan is None else [0]) for i in range(num)]
    device = rank_device(next(bundle.model.parameters()).device if device is None else resolve_device(device))
    bundle.model.to(device)

    def design(length: int, i: int) -> Design:
        t0 = time.time()
        key = contig if plan is not None else f"L{length}" + (f"-{symmetry}" if symmetry else "")
        gen = make_generator(seed, "protein-sample", key, i)  # the layout's draws: on the CPU
        noise = gen if device.type == "cpu" else make_generator(seed, "protein-sample", key, i, device=device)
        kw, lay = {}, None
        if plan is not None:
            lay = draw_layout(plan, gen, *limits)
            length = lay.length
            n = len(lay.chain_lengths)
            kw = dict(known=lay.known,
                      chain_index=torch.arange(n).repeat_interleave(torch.as_tensor(lay.chain_lengths)),
                      res_index=torch.cat([torch.arange(c) for c in lay.chain_lengths]))
        topo, strength, inputs = None, strand_restraints, ss_inputs
        if library is not None:  # this design's topology, drawn before its noise
            topo = library.draw(length, gen)
            inputs = (torch.from_numpy(topo.codes),
                      torch.from_numpy(pair_classes(topo.codes, [q[:3] for q in topo.pairs])))
            strength = strand_restraints if (topo.codes == SS_LETTERS.index("E")).any() else 0.0
            kw["strand_pairs"] = list(topo.pairs)
        if inputs is not None:
            kw.update(ss=inputs[0], ss_pair=inputs[1], guidance_scale=guidance_scale, strand_restraints=strength)
        ss_record = {} if inputs is None else dict(
            ss="".join(SS_LETTERS[c] for c in inputs[0][:length]), guidance_scale=float(guidance_scale),
            strand_restraints=float(strength), ss_pairs=ss_pairs if topo is None else topo.pairs_text)
        traj, times = ([], []) if trajectory else (None, None)
        chain_lengths = lay.chain_lengths if lay is not None else (length,)
        if trajectory:
            def keep(step, t, x, x0_hat, _cl=chain_lengths):
                traj.append(_to_atoms(x0_hat[0].float(), x0_hat[1].float(), n_copies, _cl))
                times.append(float(t))
            kw["callback"] = keep
        trans, rots = sample_states(bundle, length * n_copies, noise, steps=steps, sampler=sampler, n_chains=n_copies,
                                    time_power=time_power, rotation_rate=rotation_rate, motif_method=motif_method,
                                    motif_taper=motif_taper, **kw)
        coords = _to_atoms(trans, rots, n_copies, chain_lengths)
        if lay is None:
            return Design(f"len{length}_{i:03d}", coords, length, i, seed, time.time() - t0, sampler, steps,
                          time_power=time_power, rotation_rate=rate, symmetry=symmetry,
                          trajectory=traj, trajectory_times=times,
                          topology=None if topo is None else topo.source, **ss_record)
        name = f"{'motif' if parsed.has_motif else 'contig'}_{i:03d}"
        return Design(
            name, coords, length, i, seed, time.time() - t0, sampler, steps,
            lay.motif_index if parsed.has_motif else None, lay.motif_atoms if parsed.has_motif else None,
            time_power, rate, chain_lengths=lay.chain_lengths, residue_names=lay.residue_names,
            motif_labels=lay.motif_labels, contig=contig, drawn_contig=lay.drawn,
            motif_file=motif.path if motif is not None and parsed.has_motif else None,
            total_length_limits=limits, trajectory=traj, trajectory_times=times, **ss_record)

    def work(share: range) -> list[Design]:
        return [design(*jobs[j]) for j in progress_bar(share, desc="sample", enabled=progress and is_root())]

    return gather_shares(len(jobs), work, device=device)

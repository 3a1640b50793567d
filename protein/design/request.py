"""The design request: everything a user asks of ``protein sample``, validated once.

:class:`DesignRequest` is built the same way from the command line (``protein/sample_cmd.py``
only parses) and from Python, and checked in its constructor: option ranges, which options go
together, the contig against the motif file, the secondary-structure (SS) request against the
design lengths. What needs the checkpoint (its SS conditioning, its formulation, the default
sampler) is checked once more against the model by :func:`diffsci.protein.design.sampling.sample_backbones`
before the first design is drawn (:meth:`DesignRequest.against`).

Example
-------
>>> r = DesignRequest(lengths=[60], num=2, ss="L5H50L5")
>>> r.lengths, r.ss_lengths_match
((60,), True)
>>> DesignRequest(lengths=[60], ss_pairs="1-2:A")
Traceback (most recent call last):
...
diffsci.core.errors.DiffsciError: ss_pairs needs ss (the E segments it numbers)
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

import numpy as np
import torch

from diffsci.core.errors import DiffsciError
from diffsci.core.io import check_choice, check_int, check_range
from diffsci.core.samplers import CHURN_SAMPLERS, get_sampler
from diffsci.protein.design.contig import (MAX_LENGTH, MIN_LENGTH, Motif, contig_length_limits,
                                           parse_contig, parse_length_range, resolve_contig, residue_label)
from diffsci.protein.model.diffusion import ProteinModelConfig, build_space
from diffsci.protein.design.motif import METHODS as MOTIF_METHODS
from diffsci.protein.design.motif import TAPER
from diffsci.protein.design.potentials import default_potentials, parse_potentials
from diffsci.protein.design.symmetry import SymmetryGroup, parse_symmetry
from diffsci.protein.ss import PAIR_UNKNOWN, SS_LETTERS, format_ss_pairs, hairpin_pairs, parse_ss, ss_condition

__all__ = ["DesignRequest", "CheckedRequest", "SS_PRIOR", "SS_PAIRS_UNKNOWN", "TIME_POWER", "FEW_STEPS", "symmetry_order",
           "default_sampler", "sampling_rotation_rate", "default_churn"]

#: ``ss`` value that draws each design's topology from the training chains (:mod:`diffsci.protein.design.topology`)
SS_PRIOR = "prior"
#: ``ss_pairs`` value that leaves every strand pair to the network (pair classes unknown)
SS_PAIRS_UNKNOWN = "unknown"

# sampling time grid t_i = 0.999 u_i^TIME_POWER (u uniform 1 -> 0): more of the steps near the clean
# end, where local geometry (CA spacing, helices) is settled; measured in protein/data/CHECKPOINT.md
TIME_POWER = 2.0

# below this many steps a flow checkpoint samples with the re-noising sampler by default (at L = 100,
# 10 steps: CA-CA ok 0.87 -> 0.94..0.96 against euler; protein/data/CHECKPOINT.md, "Few-step sampling");
# from it on with euler
FEW_STEPS = 20


def symmetry_order(symmetry) -> int:
    """The number of copies of a symmetry (``"C3"``: 3, ``"D2"``: 4;
    :func:`~diffsci.protein.design.symmetry.parse_symmetry`); 1 for none."""
    group = parse_symmetry(symmetry)
    return 1 if group is None else group.order


def default_sampler(cfg: ProteinModelConfig, steps: int | None = None) -> str:
    """The sampler a checkpoint is sampled with by default: ``euler_maruyama`` for a score model;
    for a flow model ``renoise`` (:func:`~diffsci.core.samplers.sample_renoise`: translations
    drawn afresh around each clean prediction, rotations by the rate step) below
    :data:`FEW_STEPS` steps, else ``euler`` (also when ``steps`` is None)."""
    if cfg.formulation != "flow":
        return "euler_maruyama"
    return "renoise" if steps is not None and steps < FEW_STEPS else "euler"


def default_churn(cfg: ProteinModelConfig, sampler: str, rotation_rate: float | None = None) -> float:
    """The EDM churn a checkpoint samples with by default: its own ``churn`` (EDM stochastic churn
    of the translations, Karras et al. 2022, Alg. 2: renoising each state a little before its step
    lets each renoise-and-denoise at small t mend a local gap that the plain ODE, whose states drift
    off the noised chains the network was trained on, would carry to t = 0; protein/data/CHECKPOINT.md,
    "Churn at sampling") for a flow model sampled with a sampler that takes churn (euler, heun) at a rotation
    rate != 1 (the rate the sampler uses: :func:`sampling_rotation_rate`), else 0."""
    rate = sampling_rotation_rate(cfg, rotation_rate)
    return float(cfg.churn) if cfg.formulation == "flow" and sampler in CHURN_SAMPLERS and rate != 1.0 else 0.0


def sampling_rotation_rate(cfg: ProteinModelConfig, rotation_rate: float | None = None) -> float | None:
    """The rotation rate a flow model samples with: ``rotation_rate``, else the checkpoint's
    ``inference_rate``; None for a score model (it has no such rate)."""
    if cfg.formulation != "flow":
        return None
    return cfg.inference_rate if rotation_rate is None else float(rotation_rate)


@dataclass(frozen=True)
class DesignRequest:
    """What to design; every field is checked when the request is made.

    Lengths or a contig: ``lengths`` (chain lengths, ``num`` designs each; with ``symmetry``
    ``"C2"`` .. ``"C12"`` or ``"D2"`` (:mod:`diffsci.protein.design.symmetry`; kept as ``group``)
    each design is the group's order of copies of a chain of that length), or an RFdiffusion ``contig``
    (:mod:`diffsci.protein.design.contig`; ``num`` designs) with the ``motif`` it names
    (:func:`~diffsci.protein.design.contig.load_motif`) and an optional ``total_length`` range (``(lo, hi)``
    or ``"80-120"``) for the residues of the designed chains (RFdiffusion's ``contigmap.length``:
    fixed chains such as a binder's target do not count).

    Secondary structure: ``ss`` per chain (``"L2E8L3H16"``; :func:`diffsci.protein.ss.ss_condition`;
    with a contig: one chain, every scaffold segment of one length, the letters covering the
    whole design, motif included; without lengths and contig it sets the length) or ``"prior"``
    (each design draws its SS and strand pairs from the checkpoint's training chains,
    :mod:`diffsci.protein.design.topology`); ``ss_pairs`` the strand pairs (None: the request's
    β-hairpins, :attr:`effective_ss_pairs`; ``"unknown"``: every pair left to the network); ``guidance_scale`` the
    classifier-free guidance scale; ``strand_restraints`` the strength in [0, 1] of the strand
    restraints (:mod:`diffsci.protein.design.strands`; None: 1 for a single-chain request with a strand).

    Motif: ``motif_method`` and ``motif_taper`` (:func:`diffsci.protein.design.motif.condition_on_motif`).
    Sampler: ``sampler`` (None: :func:`default_sampler`), ``steps``, ``time_power`` (time grid
    ``0.999 u^time_power``), ``rotation_rate`` (flow checkpoints; None: the checkpoint's), ``churn``
    (EDM's S_churn, euler and heun: each step with ``t <= churn_tmax`` first renoises the
    translations to a noise ratio ``1 + min(churn / steps, sqrt 2 - 1)`` times larger; None:
    :func:`default_churn`, the checkpoint's; ``churn_tmax`` None: the checkpoint's), ``t_stop``
    (the time grid ends at ``t_stop`` and the last step jumps to the clean prediction made there;
    None: the checkpoint's, ``ProteinModelConfig.t_stop``). ``seed``
    (design i of a length draws from ``(seed, "protein-sample", "L100", i)``), ``device`` (None:
    where the model is; ``"auto"``, ``"cpu"``, ``"cuda:1"``), ``trajectory`` (keep every step's clean
    prediction). ``potentials``: sampling-time potentials on each step's clean prediction
    (``"connectivity:1,sterics:1"`` or ``((name, weight), ...)``; ``"none"`` or ``()``: off, the
    network alone; None: the defaults for the request,
    :func:`~diffsci.protein.design.potentials.default_potentials`); ``hotspots``: residues of a
    fixed chain (a binder's target) the design must touch (``"B17,B20"``, RFdiffusion's
    ``ppi.hotspot_res``; the ``hotspots`` potential).
    """

    lengths: tuple[int, ...] = ()
    num: int = 1
    contig: str | None = None
    motif: Motif | None = None
    total_length: tuple[int, int] | str | None = None
    symmetry: str | None = None
    ss: str | None = None
    ss_pairs: str | None = None
    guidance_scale: float = 1.0
    strand_restraints: float | None = None
    motif_method: str = "align"
    motif_taper: int = TAPER
    sampler: str | None = None
    steps: int = 100
    time_power: float = TIME_POWER
    rotation_rate: float | None = None
    churn: float | None = None
    churn_tmax: float | None = None
    t_stop: float | None = None
    seed: int = 0
    device: str | None = None
    trajectory: bool = False
    potentials: tuple | str | None = None
    hotspots: tuple | str | None = None
    # derived in __post_init__
    n_copies: int = field(init=False, default=1)
    group: SymmetryGroup | None = field(init=False, default=None)
    potentials_defaulted: bool = field(init=False, default=False, repr=False, compare=False)
    plan: list | None = field(init=False, default=None, repr=False, compare=False)
    limits: tuple[int, int] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        lengths = tuple(int(n) for n in self.lengths) if self.lengths is not None else ()
        object.__setattr__(self, "lengths", lengths)
        object.__setattr__(self, "total_length", parse_length_range(self.total_length, "total_length"))
        group = parse_symmetry(self.symmetry)
        object.__setattr__(self, "symmetry", None if group is None else group.name)
        object.__setattr__(self, "group", group)
        object.__setattr__(self, "n_copies", 1 if group is None else group.order)
        self._check_sampler_options()
        self._check_combinations()
        if self.contig is not None:
            plan = resolve_contig(parse_contig(self.contig), self.motif)
            object.__setattr__(self, "plan", plan)
            object.__setattr__(self, "limits", contig_length_limits(plan, self.total_length, text=self.contig))
        self._check_ss()
        for length in self.lengths:
            check_int(length, "length", minimum=MIN_LENGTH, maximum=MAX_LENGTH)
        self._resolve_potentials()

    def _resolve_potentials(self) -> None:
        """Parse ``potentials`` (None: the request's defaults) and check ``hotspots`` against the
        contig's fixed chains."""
        hot = self.hotspots
        if isinstance(hot, str):
            hot = tuple(h for h in re.split(r"\s*,\s*", hot.strip()) if h)
        hot = tuple(str(h) for h in hot) if hot else ()
        fixed = {} if self.plan is None else {residue_label(k): k for ch in self.plan if all(b.seg.chain for b in ch)
                                              for b in ch for k in b.keys}
        if hot and not fixed:
            raise DiffsciError("hotspots: they are residues of a fixed chain (a binder's target), so they need a "
                               "contig with one, such as [B1-100/0 60-80]")
        unknown = [h for h in hot if h not in fixed]
        if unknown:
            raise DiffsciError(f"hotspots: {', '.join(unknown)} not among the fixed chains' residues of contig "
                               f"{self.contig!r} (e.g. {next(iter(fixed))})")
        object.__setattr__(self, "hotspots", hot or None)
        object.__setattr__(self, "potentials_defaulted", self.potentials is None)
        if self.potentials is None:
            terms = default_potentials(fixed_chain=bool(fixed), symmetric=self.n_copies > 1, hotspots=bool(hot))
        else:
            terms = parse_potentials(self.potentials)
        names = dict(terms)
        if hot and "hotspots" not in names:
            raise DiffsciError("hotspots: the hotspots potential is off in this request; add hotspots:1 to the "
                               "potentials (or leave them at their defaults)")
        if "hotspots" in names and not hot:
            raise DiffsciError("potentials: hotspots needs hotspot residues (--hotspots B17,B20)")
        object.__setattr__(self, "potentials", terms)

    # ------------------------------------------------------------------ checks without a model
    def _check_sampler_options(self) -> None:
        check_int(self.steps, "steps")
        check_int(self.num, "num")
        check_int(self.seed, "seed", minimum=-(2**63))
        if self.sampler is not None:
            get_sampler(self.sampler)  # fail early on an unknown name
        check_range(self.time_power, "time_power", 0, 10, lo_open=True)
        if self.rotation_rate is not None:
            check_range(self.rotation_rate, "rotation_rate", 0, 100, lo_open=True)
        if self.churn is not None:
            check_range(self.churn, "churn", 0, 1000)
        if self.churn_tmax is not None:
            check_range(self.churn_tmax, "churn_tmax", 0, 1, lo_open=True)
        if self.t_stop is not None:
            check_range(self.t_stop, "t_stop", 0, 0.5)
            if self.t_stop > 0 and self.steps < 2:
                raise DiffsciError(f"t_stop {self.t_stop:g} needs at least 2 steps (one down to t_stop, the last to "
                                   f"its clean prediction); give steps >= 2 or t_stop 0")
        check_choice(self.motif_method, "motif_method", MOTIF_METHODS)
        check_int(self.motif_taper, "motif_taper", minimum=0)
        check_range(self.guidance_scale, "guidance_scale", 0, 100)
        if self.strand_restraints is not None:
            check_range(self.strand_restraints, "strand_restraints", 0, 1)

    def _check_combinations(self) -> None:
        if self.contig is not None:
            if self.lengths:
                raise DiffsciError("lengths cannot be combined with a contig: the contig sets the length "
                                   "(use a scaffold range, or a total length such as 80-120)")
            if self.symmetry:
                raise DiffsciError("symmetry cannot be combined with a contig or motif: placing a motif in every "
                                   "subunit is not supported; design the symmetric assembly without a motif")
            if self.motif is not None and not parse_contig(self.contig).has_motif:
                raise DiffsciError(f"motif {self.motif.path}: contig {self.contig!r} names none of its residues "
                                   f"(a motif segment looks like A163-181); drop the motif or name its residues")
            return
        if self.motif is not None:
            raise DiffsciError("a motif needs a contig (e.g. 10-20/A5-20/30-40)")
        if self.total_length is not None:
            raise DiffsciError("total_length applies to contig designs (give lengths for plain designs)")
        if not self.lengths and self.ss in (None, SS_PRIOR):
            raise DiffsciError("give at least one length (or a contig)" if self.ss is None
                               else "ss prior needs a length (the prior draws a topology of that length)")

    def _check_ss(self) -> None:
        if self.ss is None:
            for name, given in (("ss_pairs", self.ss_pairs is not None), ("guidance_scale", self.guidance_scale != 1),
                                ("strand_restraints", self.strand_restraints is not None)):
                if given:
                    raise DiffsciError(f"{name} needs ss" + (" (the E segments it numbers)" if name == "ss_pairs" else
                                                             " (a secondary-structure request)"))
            return
        if self.strand_restraints and self.n_copies > 1:
            raise DiffsciError("strand_restraints cannot be combined with symmetry (they apply to single chains)")
        if self.ss == SS_PRIOR:
            if self.contig is not None:
                raise DiffsciError("ss prior: not with a contig (the prior draws whole chains; give an ss request of "
                                   "the design's length)")
            if self.ss_pairs is not None:
                raise DiffsciError("ss_pairs: the prior draws each design's strand pairs (give an ss request to "
                                   "choose them)")
            if self.n_copies > 1:
                raise DiffsciError("ss prior: single-chain designs only (not with symmetry)")
            return
        codes = parse_ss(self.ss, name="ss")
        if self.contig is not None:
            ss_condition(self.ss, None, self.effective_ss_pairs)
            self._check_contig_request(len(codes))
            return
        if not self.lengths:  # the request sets the length
            object.__setattr__(self, "lengths", (len(codes),))
        for length in self.lengths:
            ss_condition(self.ss, length, self.effective_ss_pairs)

    def _check_contig_request(self, n: int) -> None:
        """Refuse an SS request of ``n`` residues with the contig unless letter i can be residue i
        of the design: one chain, every scaffold segment of one length, that length ``n``."""
        contig, plan, limits = self.contig, self.plan, self.limits
        if len(plan) > 1:
            raise DiffsciError(f"ss with contig {contig!r}: one designed chain only (this contig has {len(plan)} "
                               f"chains)")
        fixed = contig_length_limits(plan, None, text=contig)
        if fixed[0] != fixed[1]:
            raise DiffsciError(f"ss with contig {contig!r}: give every scaffold segment one length (e.g. 20, not "
                               f"10-30), so the request's letters fall on known residues; this contig gives "
                               f"{fixed[0]}..{fixed[1]} residues")
        if not limits[0] <= n <= limits[1]:
            raise DiffsciError(f"ss: the request has {n} residues, but contig {contig!r} gives {fixed[0]} "
                               f"(with total_length, if given: {limits[0]}..{limits[1]}); the request "
                               f"describes the whole design, motif residues included")

    # ------------------------------------------------------------------------------ derived
    @property
    def ss_lengths_match(self) -> bool:
        """True when an SS request (not the prior) describes every requested length."""
        return self.ss not in (None, SS_PRIOR) and all(len(parse_ss(self.ss)) == n for n in self.lengths)

    @property
    def has_strand_request(self) -> bool:
        """A fixed SS request with at least one strand residue."""
        return self.ss not in (None, SS_PRIOR) and bool((parse_ss(self.ss) == SS_LETTERS.index("E")).any())

    def notes(self) -> list[str]:
        """Lines a user should read before sampling (the request is valid but not all of it can hold)."""
        out = []
        if self.n_copies > 1 and self.strand_restraints is None and self.has_strand_request:
            out.append("ss with symmetry: the strand restraints (the default for a strand request) apply to single "
                       "chains only, so these strands come from the network alone")
        return out

    @property
    def effective_ss_pairs(self) -> str | None:
        """The strand pairs the network is told (``--ss-pairs`` text; None: every pair unknown):
        ``ss_pairs`` as given; without it, the request's β-hairpins, consecutive strands joined by
        a loop of at most :data:`~diffsci.protein.ss.HAIRPIN_LOOP` residues, antiparallel (with so
        short a loop two strands pair that way or not at all; the strand restraints pair the same
        ones), every other pair "not paired"; None for a request without a hairpin, for
        ``"unknown"`` and without a fixed SS request."""
        if self.ss in (None, SS_PRIOR) or self.ss_pairs == SS_PAIRS_UNKNOWN:
            return None
        if self.ss_pairs is not None:
            return self.ss_pairs
        return format_ss_pairs(hairpin_pairs(parse_ss(self.ss, name="ss")))

    def ss_inputs(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The SS classes (n_copies L,) and pair classes (n_copies L, n_copies L) of a fixed SS
        request (every chain the same; pairs between copies unknown); None without one or for
        the prior (drawn per design); the pairs are :attr:`effective_ss_pairs`."""
        if self.ss in (None, SS_PRIOR):
            return None
        codes, pair = ss_condition(self.ss, None, self.effective_ss_pairs)
        n, k = len(codes), self.n_copies
        tiled = np.full((n * k, n * k), PAIR_UNKNOWN, dtype=np.int64)
        for c in range(k):
            tiled[c * n : (c + 1) * n, c * n : (c + 1) * n] = pair
        return torch.from_numpy(np.tile(codes, k)), torch.from_numpy(tiled)

    def with_(self, **changes) -> DesignRequest:
        """A copy with ``changes`` (checked again); potentials left at their defaults are the new
        request's defaults (a binder's differ from a monomer's)."""
        if self.potentials_defaulted and "potentials" not in changes:
            changes["potentials"] = None
        return dataclasses.replace(self, **changes)

    def against(self, cfg: ProteinModelConfig, source: str) -> CheckedRequest:
        """Check the request against a checkpoint's config (``source`` names it in errors) and fill
        in what the checkpoint decides: the sampler, the rotation rate, the strand restraints'
        strength."""
        if self.ss is not None and not cfg.net.ss_conditioning:
            raise DiffsciError(f"ss: checkpoint {source} was not trained with secondary-structure conditioning "
                               f"(net.ss_conditioning is false); use the shipped checkpoint (load_model(), no --checkpoint; "
                               f"protein/data/CHECKPOINT.md, at its top)")
        if self.rotation_rate is not None and cfg.formulation != "flow":
            raise DiffsciError("rotation_rate applies to flow checkpoints only (this one is a score model)")
        sampler = self.sampler or default_sampler(cfg, self.steps)
        rate = sampling_rotation_rate(cfg, self.rotation_rate)
        if sampler == "heun" and rate is not None:
            build_space(cfg, rotation_rate=rate).check_second_order()  # refused before the first design
        churn = default_churn(cfg, sampler, self.rotation_rate) if self.churn is None else float(self.churn)
        if churn and sampler not in CHURN_SAMPLERS:
            raise DiffsciError(f"churn {churn:g}: sampler {sampler} takes no churn (only {', '.join(CHURN_SAMPLERS)} do); "
                               f"give churn 0 or one of those samplers")
        if churn and rate == 1.0:
            raise DiffsciError("churn: the exact rotation flow (rotation_rate 1) has no renoising; give a rotation_rate "
                               "!= 1 or churn 0")
        strength = self.strand_restraints
        if strength is None:
            strength = 1.0 if (self.ss == SS_PRIOR or self.has_strand_request) and self.n_copies == 1 else 0.0
        tmax = cfg.churn_tmax if self.churn_tmax is None else float(self.churn_tmax)
        t_stop = float(cfg.t_stop if self.t_stop is None else self.t_stop)
        if self.steps < 2:
            t_stop = 0.0  # one step: from t_max straight to the clean prediction
        return CheckedRequest(self, sampler, rate, float(strength), self._length_warnings(cfg, source), churn,
                              tmax if churn else None, t_stop)

    def longest_state(self) -> int:
        """The most residues a design of this request has (every chain and copy together)."""
        if self.limits is not None:
            return int(self.limits[1])
        return max(self.lengths) * self.n_copies

    def _length_warnings(self, cfg: ProteinModelConfig, source: str) -> tuple[str, ...]:
        """A line when designs are longer than the chains the checkpoint was trained on."""
        n = self.longest_state()
        if n <= cfg.max_length:
            return ()
        what = f"{max(self.lengths)} x {self.n_copies} copies = {n}" if self.n_copies > 1 else str(n)
        return (f"designs of up to {what} residues, but checkpoint {source} was trained on chains cropped to at "
                f"most {cfg.max_length} residues (max_length): longer designs are extrapolation and break more "
                f"often (docs/benchmarks.md)",)


@dataclass(frozen=True)
class CheckedRequest:
    """A :class:`DesignRequest` checked against one checkpoint, with what it decides filled in:
    ``sampler`` (a name of :data:`~diffsci.core.samplers.SAMPLERS`), ``rotation_rate`` (None for a
    score model), ``strand_restraints`` (the strength used where a design has strands) and
    ``warnings``, lines the user should read (designs longer than the checkpoint's training crops),
    ``churn`` and ``churn_tmax`` (None without churn), and ``t_stop``, where the time grid ends."""

    request: DesignRequest
    sampler: str
    rotation_rate: float | None
    strand_restraints: float
    warnings: tuple[str, ...] = ()
    churn: float = 0.0
    churn_tmax: float | None = None
    t_stop: float = 0.0

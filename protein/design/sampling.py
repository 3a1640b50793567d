"""Designing backbones: unconditional sampling, motif scaffolding (contigs), symmetric oligomers.

Dimension legend: B batch, N residues in the designed state, L residues per chain, n chains.

Every sample has its own generator derived from ``(seed, length, index)`` (and the contig or
symmetry), so the same seed gives the same files whatever else is sampled in the run, and
whichever ``torchrun`` rank samples it.

Devices: sampling runs where the model is (``load_model(..., device=)``, or ``device=`` of
:func:`sample_backbones`): every tensor and each design's noise generator is made there, and
designs come back as numpy arrays on the CPU. A contig's layout is drawn on the CPU, so a design
has the same layout on every device; its noise, and so its coordinates, are reproducible on one
device type, not across them (CUDA draws other numbers than the CPU from the same seed).

Motif scaffolding: a contig (:mod:`diffsci.protein.design.contig`) is parsed and checked against the
motif file before sampling; each design draws its own layout (scaffold lengths, motif
positions), and the motif residues are kept exact up to a rigid motion during sampling by
:func:`diffsci.protein.design.motif.condition_on_motif`.

Secondary-structure conditioning (an SS-conditioned checkpoint, :mod:`diffsci.protein.ss`): ``ss``
requests each residue's class (``--ss L2E8L3H16``; every chain of a symmetric design gets it),
``ss_pairs`` which strand segments pair (default: the request's β-hairpins); ``guidance_scale`` w mixes the conditional prediction
with the unconditional one (all classes unknown) by the core's classifier-free guidance,
``D_u + w (D_c - D_u)`` (1: the conditional model alone, 0: the unconditional one). A request
with a strand is sampled with the strand restraints by default (``strand_restraints``;
:mod:`diffsci.protein.design.strands`): each step's clean prediction is relaxed towards a β-sheet.
With a contig of one chain whose scaffold segments each have one length, the request covers
the whole design, letter by residue, motif residues included.
``ss="prior"`` draws each design's request and strand pairs from the training chains instead
(:mod:`diffsci.protein.design.topology`): unconditional designs with the sheets the network alone
does not draw.

Symmetry (``Cn``, n = 2..12, or ``D2``; :mod:`diffsci.protein.design.symmetry`): the state holds
one chain of L residues per copy; sampling starts from one copy's noise placed off the axes and
copied by the group's rotations, and after every step the state and every clean prediction are
symmetrised (each chain mapped back by its operator, averaged, rotations projected back onto
SO(3), the copies rebuilt; the prediction's copies also kept off the axes), so the chains are
exact copies.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from diffsci.core.checkpoint import Bundle, load_bundle
from diffsci.core.distributed import gather_shares, is_root, rank_device
from diffsci.core.errors import DiffsciError
from diffsci.core.io import progress as progress_bar
from diffsci.core.utils import make_generator, resolve_device
from diffsci.protein.design.builder import DesignInputs, SamplerSettings, sample_states
from diffsci.protein.design.contig import Motif, draw_layout
from diffsci.protein.model.diffusion import KIND, V1_CHECKPOINTS, ss_checkpoint, v1_checkpoint
from diffsci.protein.frames import ANGSTROM_PER_NM, backbone_from_frames
from diffsci.protein.metrics.secondary import dssp_labels
from diffsci.protein.design.request import SS_PAIRS_UNKNOWN, SS_PRIOR, TIME_POWER, CheckedRequest, DesignRequest
from diffsci.protein.ss import SS_LETTERS, pair_classes, parse_ss
from diffsci.protein.design.topology import TopologyLibrary

__all__ = ["load_model", "Design", "sample_backbones", "motif_ss_mismatches"]


def load_model(checkpoint=None, *, untrained: bool = False, device="cpu") -> Bundle:
    """Load a protein checkpoint (file or run folder; None or ``"ss"``: the shipped one, which is
    SS-conditioned, ``"ss"`` kept for old scripts; ``"v1"`` / ``"v1-ss"``: the v1 files,
    :func:`~diffsci.protein.model.diffusion.v1_checkpoint`) as a
    :class:`~diffsci.core.checkpoint.Bundle` (``.model`` with its EMA weights, ``.config``,
    ``.source``), migrated to the current config version.

    ``untrained=True`` builds the same architecture with initial weights drawn from seed 0 (a
    baseline, the same in every run; torch's global RNG is left as it was)."""
    if checkpoint == "ss":
        checkpoint = ss_checkpoint()
    elif checkpoint in V1_CHECKPOINTS:
        checkpoint = v1_checkpoint(checkpoint)
    return load_bundle(checkpoint, KIND, device=device, weights="init" if untrained else "ema")


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
    ``churn``: the EDM churn the sampler used (0: the plain ODE), on the steps with
    ``t <= churn_tmax`` (None without churn); ``t_stop``: where the time grid ended (0: at t = 0).
    ``ss``: the requested secondary structure of a chain, one letter per residue (H/E/L), with
    ``ss_pairs``, ``guidance_scale`` and ``strand_restraints`` as given (None: unconditional);
    with ``--ss prior`` the drawn ones, and ``topology`` the training chain and window they were
    drawn from (:mod:`diffsci.protein.design.topology`). ``potentials``: the sampling-time potentials
    used (``connectivity:1,sterics:1``; None: the network alone), with ``hotspots`` (``B17,B20``).
    """

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
    churn: float = 0.0
    churn_tmax: float | None = None
    t_stop: float = 0.0
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
    potentials: str | None = None
    hotspots: str | None = None

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




def motif_ss_mismatches(motif: Motif, contig: str, ss: str) -> list[tuple[str, str, str]]:
    """Where an SS request with a contig (one chain, fixed segment lengths; as
    :func:`sample_backbones` takes it) asks another class for a motif residue than the motif
    has in its own file: ``(label, requested, motif's DSSP)`` per such residue, e.g. ``("A712",
    "E", "H")``, with DSSP (:func:`diffsci.protein.metrics.dssp_labels`, loop as ``L``) of all
    the motif file's residues in file order (chain breaks are seen from the CA spacing). The
    motif is held as it is, so those letters cannot be met. Empty when all agree; refuses a contig
    the request cannot take, as :class:`~diffsci.protein.design.request.DesignRequest` does."""
    request = DesignRequest(contig=contig, motif=motif, ss=ss)
    codes = "".join(SS_LETTERS[c] for c in parse_ss(ss))
    keys = list(motif.residues)
    labels = dssp_labels(np.stack([motif.residues[k] for k in keys]))
    native = {k: "L" if c == "-" else c for k, c in zip(keys, labels)}
    out, pos = [], 0
    for block in request.plan[0]:
        if block.seg.chain is None:
            pos += block.seg.lo
            continue
        for key in block.keys:
            if codes[pos] != native[key]:
                out.append((f"{key[0]}{key[1]}{key[2]}", codes[pos], native[key]))
            pos += 1
    return out


@dataclass(frozen=True)
class _Plan:
    """One design's sampler inputs and what its record says of them."""

    inputs: DesignInputs
    length: int
    chain_lengths: tuple
    layout: object | None = None
    topology: object | None = None
    ss_record: dict | None = None


class _Designer:
    """Draws and samples the designs of one checked request with one model on one device."""

    def __init__(self, bundle: Bundle, checked: CheckedRequest, device: torch.device):
        self.bundle, self.checked, self.request, self.device = bundle, checked, checked.request, device
        self.settings = SamplerSettings(checked.sampler, self.request.steps, self.request.time_power,
                                        self.request.rotation_rate, checked.churn,
                                        1.0 if checked.churn_tmax is None else checked.churn_tmax, checked.t_stop)
        self.library = None
        if self.request.ss == SS_PRIOR:
            self.library = TopologyLibrary(config=bundle.config)  # the chains this checkpoint was trained on
            for length in self.request.lengths:
                self.library.candidates(length)  # refuses a length no training chain can give
        self.fixed_ss = self.request.ss_inputs()

    def jobs(self) -> list[tuple[int, int]]:
        r = self.request
        return [(length, i) for length in (r.lengths if r.contig is None else [0]) for i in range(r.num)]

    def _ss(self, length: int, gen) -> tuple[dict, dict, object]:
        """(DesignInputs fields, record fields, topology) of this design's SS request."""
        r, topo, inputs = self.request, None, self.fixed_ss
        strength, strand_pairs = self.checked.strand_restraints, None
        pairs_text = SS_PAIRS_UNKNOWN if r.ss_pairs == SS_PAIRS_UNKNOWN else r.effective_ss_pairs  # as --ss-pairs reruns it
        if self.library is not None:  # this design's topology, drawn before its noise
            topo = self.library.draw(length, gen)
            inputs = (torch.from_numpy(topo.codes),
                      torch.from_numpy(pair_classes(topo.codes, [q[:3] for q in topo.pairs])))
            strength = strength if (topo.codes == SS_LETTERS.index("E")).any() else 0.0
            pairs_text, strand_pairs = topo.pairs_text, tuple(topo.pairs)
        if inputs is None:
            return {}, {}, None
        fields = dict(ss=inputs[0], ss_pair=inputs[1], guidance_scale=r.guidance_scale, strand_restraints=strength,
                      strand_pairs=strand_pairs)
        record = dict(ss="".join(SS_LETTERS[c] for c in inputs[0][:length]), guidance_scale=float(r.guidance_scale),
                      strand_restraints=float(strength), ss_pairs=pairs_text)
        return fields, record, topo

    def plan(self, length: int, gen) -> _Plan:
        """Draw one design's layout (contig) or topology (SS prior) from ``gen``."""
        r, lay, layout_fields = self.request, None, {}
        if r.plan is not None:
            lay = draw_layout(r.plan, gen, *r.limits)
            length = lay.length
            layout_fields = dict(
                known=lay.known, chain_index=torch.arange(len(lay.chain_lengths)).repeat_interleave(
                    torch.as_tensor(lay.chain_lengths)),
                res_index=torch.cat([torch.arange(c) for c in lay.chain_lengths]))
        ss_fields, record, topo = self._ss(length, gen)
        if r.hotspots:  # their positions in this layout's state
            layout_fields["hotspots"] = tuple(int(lay.motif_index[lay.motif_labels.index(h)]) for h in r.hotspots)
        inputs = DesignInputs(length * r.n_copies, r.n_copies, motif_method=r.motif_method, motif_taper=r.motif_taper,
                              potentials=r.potentials, **layout_fields, **ss_fields)
        return _Plan(inputs, length, lay.chain_lengths if lay is not None else (length,), lay, topo, record)

    def design(self, length: int, i: int) -> Design:
        t0, r = time.time(), self.request
        key = r.contig if r.contig is not None else f"L{length}" + (f"-{r.symmetry}" if r.symmetry else "")
        gen = make_generator(r.seed, "protein-sample", key, i)  # the layout's draws: on the CPU
        noise = gen if self.device.type == "cpu" else make_generator(r.seed, "protein-sample", key, i,
                                                                     device=self.device)
        plan = self.plan(length, gen)
        traj, times, callback = ([], [], None) if r.trajectory else (None, None, None)
        if r.trajectory:
            def callback(step, t, x, x0_hat):
                traj.append(_to_atoms(x0_hat[0].float(), x0_hat[1].float(), r.n_copies, plan.chain_lengths))
                times.append(float(t))
        trans, rots = sample_states(self.bundle, plan.inputs, self.settings, noise, callback=callback,
                                    symmetry=r.group)
        coords = _to_atoms(trans, rots, r.n_copies, plan.chain_lengths)
        return self._design_record(plan, coords, i, time.time() - t0, traj, times)

    def _design_record(self, plan: _Plan, coords, i: int, seconds: float, traj, times) -> Design:
        r, c, lay = self.request, self.checked, plan.layout
        common = dict(length=plan.length, index=i, seed=r.seed, seconds=seconds, sampler=c.sampler, steps=r.steps,
                      potentials=",".join(f"{k}:{w:g}" for k, w in r.potentials) or None,
                      hotspots=",".join(r.hotspots) if r.hotspots else None,
                      time_power=r.time_power, rotation_rate=c.rotation_rate, churn=c.churn,
                      churn_tmax=c.churn_tmax, t_stop=c.t_stop, trajectory=traj, trajectory_times=times,
                      **(plan.ss_record or {}))
        if lay is None:
            return Design(f"len{plan.length}_{i:03d}", coords, symmetry=r.symmetry,
                          topology=None if plan.topology is None else plan.topology.source, **common)
        has_motif = len(lay.motif_index) > 0
        return Design(
            f"{'motif' if has_motif else 'contig'}_{i:03d}", coords,
            motif_index=lay.motif_index if has_motif else None, motif_coords=lay.motif_atoms if has_motif else None,
            chain_lengths=lay.chain_lengths, residue_names=lay.residue_names, motif_labels=lay.motif_labels,
            contig=r.contig, drawn_contig=lay.drawn, motif_file=r.motif.path if has_motif else None,
            total_length_limits=r.limits, **common)


def sample_backbones(bundle: Bundle, request: DesignRequest, *, progress: bool = True) -> list[Design] | None:
    """Design the backbones of ``request`` (:class:`~diffsci.protein.design.request.DesignRequest`) with a
    loaded model (:func:`load_model`): ``num`` per length, or per contig. See the module docstring.

    The request is checked against the checkpoint (:meth:`DesignRequest.against`) before the first
    design is sampled (a design longer than the checkpoint's training crops gets a ``UserWarning``); ``request.device`` (None: where the model is) is where it samples (the model
    is moved there, in place). ``progress``: a progress bar on rank 0.

    Under ``torchrun`` every rank calls this with the same arguments: the designs are split over
    the ranks (:func:`diffsci.core.distributed.gather_shares`); rank 0 returns all of them in
    order, the other ranks None. A design is the same whichever rank samples it (its own
    generator). With several ranks, a CUDA device is the ``LOCAL_RANK``-th GPU.
    """
    if not isinstance(request, DesignRequest):
        raise DiffsciError(f"sample_backbones: request must be a DesignRequest, got {type(request).__name__}")
    checked = request.against(bundle.config, bundle.source)
    for line in checked.warnings:
        warnings.warn(line, UserWarning, stacklevel=2)
    where = next(bundle.model.parameters()).device if request.device is None else resolve_device(request.device)
    device = rank_device(where)
    bundle.model.to(device)
    designer = _Designer(bundle, checked, device)
    jobs = designer.jobs()

    def work(share: range) -> list[Design]:
        return [designer.design(*jobs[j]) for j in progress_bar(share, desc="sample", enabled=progress and is_root())]

    return gather_shares(len(jobs), work, device=device)

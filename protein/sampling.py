"""Designing backbones: unconditional sampling, motif scaffolding (contigs), cyclic symmetry.

Dimension legend: N residues in the designed state, L residues per chain, n chains.

Every sample has its own generator derived from ``(seed, length, index)`` (and the contig or
symmetry), so the same seed gives the same files whatever else is sampled in the run.

Contigs (RFdiffusion's notation): segments separated by ``/``; ``10-20`` is a scaffold
segment whose length is drawn uniformly in [10, 20] from the sample's generator, ``15`` a
fixed-length one, and ``A5-20`` the motif residues 5..20 of chain A of the motif file (held
fixed during sampling with the core's :func:`~diffsci.core.samplers.fix_known`).

Cyclic symmetry ``Cn``: the state holds n chains of L residues; after every step it is
symmetrised (each chain mapped back by its n-fold rotation about z, averaged, rotations
projected back onto SO(3), and the n copies rebuilt), so the chains are exact copies.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from diffsci.core.errors import DiffsciError
from diffsci.core.samplers import fix_known, get_sampler
from diffsci.core.train import load_checkpoint
from diffsci.core.utils import make_generator
from diffsci.protein.diffusion import KIND, NM, ProteinCond, ProteinModelConfig, SelfConditioned, build_model, build_space
from diffsci.protein.frames import backbone_from_frames, frames_from_backbone

__all__ = [
    "LoadedModel", "load_model", "default_checkpoint_path", "parse_contig", "Segment", "Motif",
    "load_motif", "cyclic_constraint", "Design", "sample_backbones", "MIN_LENGTH", "MAX_LENGTH",
]

MIN_LENGTH, MAX_LENGTH = 40, 512
# sampling time grid t_i = 0.999 u_i^TIME_POWER (u uniform 1 -> 0): more of the steps near the clean
# end, where local geometry (CA spacing, helices) is settled; measured in protein/data/CHECKPOINT.md
TIME_POWER = 2.0


def default_checkpoint_path() -> Path:
    return Path(str(resources.files("diffsci.protein") / "data" / "default_checkpoint.pt"))


@dataclass
class LoadedModel:
    model: torch.nn.Module
    cfg: ProteinModelConfig
    source: str


def load_model(checkpoint=None, *, untrained: bool = False) -> LoadedModel:
    """Load a protein checkpoint (default: the shipped one) with its EMA weights.

    ``untrained=True`` builds the same architecture with its initial weights (a baseline).
    """
    path = Path(checkpoint) if checkpoint else default_checkpoint_path()
    if checkpoint is None and not path.exists():
        raise DiffsciError(f"no --checkpoint given and the default checkpoint {path} is missing")
    ck = load_checkpoint(path, expected_kind=KIND)
    cfg = ProteinModelConfig.from_dict(ck["model_config"])
    model = build_model(cfg)
    if not untrained:
        model.load_state_dict(ck["ema"] if "ema" in ck else ck["model"])
    return LoadedModel(model.eval(), cfg, str(path) + (" (untrained weights)" if untrained else ""))


# ---------------------------------------------------------------------------------- contigs
@dataclass(frozen=True)
class Segment:
    """A contig segment: scaffold (``chain`` None, length in [lo, hi]) or motif residues."""

    lo: int
    hi: int
    chain: str | None = None


_SEG = re.compile(r"^(?:(?P<chain>[A-Za-z])(?P<a>-?\d+)(?:-(?P<b>-?\d+))?|(?P<lo>\d+)(?:-(?P<hi>\d+))?)$")


def parse_contig(contig: str) -> list[Segment]:
    """Parse ``"10-20/A5-20/30-40"`` into segments; a malformed contig raises DiffsciError."""
    segs = []
    for part in [p.strip() for p in str(contig).split("/") if p.strip()]:
        m = _SEG.match(part)
        if not m:
            raise DiffsciError(f"--contig {contig!r}: cannot parse segment {part!r} (use e.g. 10-20/A5-20/30-40)")
        if m.group("chain"):
            a = int(m.group("a"))
            b = int(m.group("b")) if m.group("b") else a
            if b < a:
                raise DiffsciError(f"--contig: motif segment {part!r} ends before it starts")
            segs.append(Segment(a, b, m.group("chain")))
        else:
            lo = int(m.group("lo"))
            hi = int(m.group("hi")) if m.group("hi") else lo
            if hi < lo:
                raise DiffsciError(f"--contig: scaffold segment {part!r} has max < min")
            segs.append(Segment(lo, hi))
    if not segs:
        raise DiffsciError(f"--contig {contig!r}: empty")
    if not any(s.chain for s in segs):
        raise DiffsciError(f"--contig {contig!r}: names no motif segment (e.g. A5-20)")
    return segs


@dataclass
class Motif:
    """Motif residues from a structure file, keyed by (chain, residue number). coords Å (4, 3)."""

    path: str
    residues: dict

    def segment(self, seg: Segment) -> np.ndarray:
        missing = [f"{seg.chain}{r}" for r in range(seg.lo, seg.hi + 1) if (seg.chain, r) not in self.residues]
        if missing:
            shown = ", ".join(missing[:6]) + (" ..." if len(missing) > 6 else "")
            raise DiffsciError(f"--contig: residues {shown} are not in the motif file {self.path}")
        return np.stack([self.residues[(seg.chain, r)] for r in range(seg.lo, seg.hi + 1)])


def load_motif(path) -> Motif:
    from diffsci.protein.structure import read_structure_chains

    if not Path(path).exists():
        raise DiffsciError(f"--motif {path}: file not found")
    chains = read_structure_chains(path, on_break="split")
    residues = {}
    for ch in chains:
        for r, ins, xyz in zip(ch.res_ids, ch.ins_codes, ch.coords):
            if not ins:
                residues[(ch.chain_id, int(r))] = np.asarray(xyz, dtype=np.float32)
    if not residues:
        raise DiffsciError(f"--motif {path}: no residue with a complete backbone")
    return Motif(str(path), residues)


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
@dataclass
class Design:
    """One designed backbone: coords (n_chains, L, 4, 3) Å; motif_index: designed positions of
    the motif residues (chain 0), with ``motif_coords`` (M, 4, 3) the input motif."""

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


def _check_length(length: int) -> None:
    if not isinstance(length, int) or not MIN_LENGTH <= length <= MAX_LENGTH:
        raise DiffsciError(f"--length {length}: must be an integer between {MIN_LENGTH} and {MAX_LENGTH}")


def default_sampler(cfg: ProteinModelConfig) -> str:
    return "euler" if cfg.formulation == "flow" else "euler_maruyama"


@torch.no_grad()
def sample_one(lm: LoadedModel, n_res: int, generator, *, steps: int, sampler: str, n_chains: int = 1,
               known=None, batch: int = 1, time_power: float = TIME_POWER, rotation_rate: float | None = None):
    """Sample ``batch`` states of ``n_res`` residues (per chain: n_res // n_chains). Returns (trans nm, rots).

    ``rotation_rate`` overrides the checkpoint's ``inference_rate`` (flow formulation only)."""
    cfg = lm.cfg
    if rotation_rate is not None and cfg.formulation == "flow":
        cfg = dataclasses.replace(cfg, inference_rate=float(rotation_rate))
    mask = torch.ones(batch, n_res, dtype=torch.bool)
    L = n_res // n_chains
    res_idx = torch.arange(L).repeat(n_chains).expand(batch, n_res).clone()
    chain = torch.arange(n_chains).repeat_interleave(L).expand(batch, n_res).clone()
    space = build_space(cfg, mask, sampling=True)
    like = (torch.zeros(batch, n_res, 3), torch.eye(3).expand(batch, n_res, 3, 3).clone())
    x = space.prior(like, generator)
    times = space.spaces[0].schedule.time_grid(steps, power=time_power)
    constraint = None
    if n_chains > 1:
        constraint = cyclic_constraint(n_chains)
    if known is not None:
        constraint = fix_known(space, known[0], known[1], mode="clean")
    cond = ProteinCond(mask, res_idx, chain)
    denoise = SelfConditioned(lm.model) if cfg.net.self_condition else lm.model
    return get_sampler(sampler)(denoise, x, times, space=space, cond=cond, generator=generator, constraint=constraint)


def _to_atoms(trans, rots, n_chains: int) -> np.ndarray:
    bb = backbone_from_frames(rots[0], trans[0] * NM)  # (N, 4, 3) Å
    L = bb.shape[0] // n_chains
    return bb.reshape(n_chains, L, 4, 3).numpy()


def sample_backbones(lm: LoadedModel, lengths, num: int, *, seed: int = 0, steps: int = 100, sampler: str | None = None,
                     motif: Motif | None = None, contig: str | None = None, symmetry: str | None = None,
                     progress: bool = True, time_power: float = TIME_POWER,
                     rotation_rate: float | None = None) -> list[Design]:
    """Design ``num`` backbones per length (or per contig). See the module docstring.

    ``time_power``: the sampling time grid is ``0.999 u^time_power`` for u uniform from 1 to 0
    (1: uniform steps). ``rotation_rate``: FrameFlow's exponential rotation rate at sampling
    (None: the checkpoint's ``inference_rate``; 1: plain geodesic steps; higher settles
    rotations earlier, which gives more helix).
    """
    sampler = sampler or default_sampler(lm.cfg)
    get_sampler(sampler)  # fail early on an unknown name
    if num < 1:
        raise DiffsciError(f"--num must be >= 1, got {num}")
    if steps < 1:
        raise DiffsciError(f"--steps must be >= 1, got {steps}")
    if not 0 < time_power <= 10:
        raise DiffsciError(f"--time-power must lie in (0, 10], got {time_power}")
    if rotation_rate is not None:
        if lm.cfg.formulation != "flow":
            raise DiffsciError("--rotation-rate applies to flow checkpoints only (this one is a score model)")
        if not 0 < rotation_rate <= 100:
            raise DiffsciError(f"--rotation-rate must lie in (0, 100], got {rotation_rate}")
    rate = lm.cfg.inference_rate if rotation_rate is None and lm.cfg.formulation == "flow" else rotation_rate
    n_chains = 1
    if symmetry:
        m = re.fullmatch(r"[Cc](\d+)", symmetry)
        if not m or int(m.group(1)) < 2:
            raise DiffsciError(f"--symmetry {symmetry!r}: use Cn with n >= 2 (e.g. C3)")
        n_chains = int(m.group(1))
    segs = parse_contig(contig) if contig else None
    if segs is not None and motif is None:
        raise DiffsciError("--contig needs --motif FILE.pdb")
    if segs is None:
        if not lengths:
            raise DiffsciError("give at least one --length (or --motif with --contig)")
        for length in lengths:
            _check_length(length)
    jobs = [(length, i) for length in (lengths if segs is None else [0]) for i in range(num)]
    designs = []
    bar = None
    if progress:
        import sys

        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), desc="sample", file=sys.stderr)
    for length, i in jobs:
        t0 = time.time()
        key = contig if segs is not None else f"L{length}" + (f"-{symmetry}" if symmetry else "")
        gen = make_generator(seed, "protein-sample", key, i)
        known, motif_index, motif_coords = None, None, None
        if segs is not None:
            known, motif_index, motif_coords, length = _layout(segs, motif, gen)
            _check_length(length)
        trans, rots = sample_one(lm, length * n_chains, gen, steps=steps, sampler=sampler, n_chains=n_chains, known=known,
                                 time_power=time_power, rotation_rate=rotation_rate)
        coords = _to_atoms(trans, rots, n_chains)
        name = f"{'motif' if segs is not None else 'len' + str(length)}_{i:03d}"
        designs.append(Design(name, coords, length, i, seed, time.time() - t0, sampler, steps, motif_index, motif_coords,
                              time_power, rate))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return designs


def _layout(segs, motif: Motif, gen):
    """Draw scaffold lengths and place the motif: returns ((trans, rots), mask) known state."""
    motif_pos, motif_atoms = [], []
    pos = 0
    for s in segs:
        if s.chain:
            atoms = motif.segment(s)
            motif_pos.extend(range(pos, pos + len(atoms)))
            motif_atoms.append(atoms)
            pos += len(atoms)
        else:
            n = s.lo if s.hi == s.lo else int(torch.randint(s.lo, s.hi + 1, (1,), generator=gen))
            pos += n
    length = pos
    atoms = torch.as_tensor(np.concatenate(motif_atoms), dtype=torch.float32)  # (M, 4, 3) Å
    rots, ca = frames_from_backbone(atoms[:, 0], atoms[:, 1], atoms[:, 2])
    ca = (ca - ca.mean(0, keepdim=True)) / NM
    trans_known = torch.zeros(1, length, 3)
    rots_known = torch.eye(3).expand(1, length, 3, 3).clone()
    idx = torch.as_tensor(motif_pos)
    trans_known[0, idx], rots_known[0, idx] = ca, rots
    mask = torch.zeros(1, length, dtype=torch.bool)
    mask[0, idx] = True
    return ((trans_known, rots_known), mask), np.asarray(motif_pos), atoms.numpy(), length

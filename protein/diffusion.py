"""Backbone diffusion: the two formulations, the training task and the denoiser wrapper.

Dimension legend: B batch, N residues (padded), L a chain's length.

A backbone is a state of the core's ``Product((EuclideanCoM, SO3...))`` space:
``(trans (B, N, 3) in nm, rots (B, N, 3, 3))`` (coordinates are divided by 10, as FrameDiff).

Formulations (``ProteinModelConfig.formulation``):

- ``"flow"`` (FrameFlow, Yim et al. 2023): linear interpolant on translations
  (:class:`~diffsci.core.schedules.FlowMatching`) and the geodesic flow on rotations
  (:class:`~diffsci.core.spaces.SO3Flow`); sampled with the geodesic Euler sampler.
- ``"score"`` (FrameDiff, Yim et al. 2023): VP noise on translations
  (:class:`~diffsci.core.schedules.VPLinear`) and IGSO3 noise on rotations
  (:class:`~diffsci.core.spaces.SO3Diffusion`, log-linear sigma).

Losses (both formulations predict clean frames): translation MSE and rotation Frobenius
error, each scaled by ``1 / max(t, 0.1)^2`` as FrameFlow's vector-field losses are, plus an
auxiliary backbone-atom (N, CA, C, O) MSE and a local pairwise-distance loss (atom pairs
closer than 6 Å) for ``t < 0.25`` (FrameDiff's auxiliary losses).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from diffsci.core.errors import DiffsciError
from diffsci.core.schedules import FlowMatching, LogLinear, VPLinear
from diffsci.core.spaces import EuclideanCoM, Product, SO3Diffusion, SO3Flow, remove_com
from diffsci.core.utils import make_generator
from diffsci.protein.frames import backbone_from_frames, frames_from_backbone
from diffsci.protein.model import FrameDenoiserNet, FrameNetConfig

__all__ = ["ProteinModelConfig", "ProteinCond", "FrameDenoiser", "SelfConditioned", "build_space", "build_model", "BackboneTask",
           "KIND", "NM", "filter_reason"]

KIND = "protein-frames"
NM = 10.0  # Å per nm


@dataclass(frozen=True)
class ProteinModelConfig:
    """Model and diffusion settings (frozen; saved in checkpoints)."""

    formulation: str = "flow"
    net: FrameNetConfig = FrameNetConfig()
    max_length: int = 64
    aux_loss_t: float = 0.25
    aux_weight: float = 0.25
    dist_weight: float = 0.25  # local pairwise-distance loss (FrameDiff's L_2D), same t window as aux
    dist_cutoff_nm: float = 0.6
    rot_weight: float = 0.5
    inference_rate: float = 10.0  # FrameFlow's exponential rotation schedule at sampling
    # training-set filters, as FrameDiff's data config (max loop percent, radius-of-gyration
    # outliers): chains with more P-SEA coil than max_coil, or Rg above max_rg_ratio * 2.2 L^0.38,
    # are not trained on (None: keep all)
    max_coil: float | None = 0.6
    max_rg_ratio: float | None = 1.3
    # chains are drawn with probability proportional to (P-SEA strand fraction + 0.05)^strand_power
    # (0: uniform); > 0 shows the net more beta sheet, which a small model otherwise rarely makes
    strand_power: float = 0.0

    def __post_init__(self):
        if self.formulation not in ("flow", "score"):
            raise DiffsciError(f"formulation must be 'flow' or 'score', got {self.formulation!r}")
        if self.max_length < 8:
            raise DiffsciError("max_length must be >= 8")
        if not 0 <= self.strand_power <= 4:
            raise DiffsciError(f"strand_power must lie in [0, 4], got {self.strand_power}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ProteinModelConfig":
        d = dict(d)
        net = dict(d.get("net", {}))
        if net and "frame_edges" not in net:  # checkpoints written before frame-local edge features
            net["frame_edges"] = False
        d["net"] = FrameNetConfig(**net)
        return cls(**d)


def build_space(cfg: ProteinModelConfig, mask: torch.Tensor | None = None, *, sampling: bool = False) -> Product:
    """``Product((EuclideanCoM, SO3Flow|SO3Diffusion))`` for the formulation (with a residue mask)."""
    if cfg.formulation == "flow":
        rot = SO3Flow(inference_rate=cfg.inference_rate if sampling else 1.0)
        space = Product((EuclideanCoM(FlowMatching()), rot))
    else:
        space = Product((EuclideanCoM(VPLinear()), SO3Diffusion(LogLinear())))
    return space.with_mask(mask) if mask is not None else space


@dataclass(frozen=True)
class ProteinCond:
    """Per-residue conditioning. Shapes (B, N): mask (bool), res_idx, chain; ``self_cond``
    (B, N, 3) nm: the previous clean-translation prediction, for a self-conditioned net (None:
    none yet)."""

    mask: torch.Tensor
    res_idx: torch.Tensor
    chain: torch.Tensor
    self_cond: torch.Tensor | None = None


class FrameDenoiser(nn.Module):
    """The core's denoiser interface: ``(x_t=(trans, rots), t (B,), cond) -> (trans0, rots0)``."""

    def __init__(self, cfg: ProteinModelConfig):
        super().__init__()
        self.cfg = cfg
        self.net = FrameDenoiserNet(cfg.net)

    def forward(self, x, t, cond: ProteinCond):
        trans, rots = x
        return self.net(trans, rots, t.to(trans.dtype), cond.mask, cond.res_idx, cond.chain, cond.self_cond)


class SelfConditioned(nn.Module):
    """Sampling wrapper for a self-conditioned net: each call passes the previous call's clean
    translation prediction as ``cond.self_cond`` (the first call has none). One instance per
    sampling run."""

    def __init__(self, model: FrameDenoiser):
        super().__init__()
        self.model = model
        self.previous = None

    def forward(self, x, t, cond: ProteinCond):
        out = self.model(x, t, dataclasses.replace(cond, self_cond=self.previous))
        self.previous = out[0].detach()
        return out


def build_model(cfg: ProteinModelConfig) -> FrameDenoiser:
    torch.manual_seed(0)
    return FrameDenoiser(cfg)


class BackboneTask:
    """Training task: random crops of real chains, noised by the configured formulation."""

    kind = KIND

    def __init__(self, cfg: ProteinModelConfig, dataset, split: str = "train"):
        self.cfg = cfg
        idx = dataset.indices(split) if split else np.arange(len(dataset))
        if len(idx) == 0:
            raise DiffsciError(f"dataset has no chains in split {split!r}")
        self.chains, strand = [], []
        self.skipped = {"coil": 0, "rg": 0}
        for i in idx:
            ch = dataset.chain(int(i))
            why = filter_reason(np.asarray(ch.coords)[:, 1], cfg)
            if why:
                self.skipped[why] += 1
                continue
            c = torch.tensor(np.asarray(ch.coords), dtype=torch.float32)  # (L, 4, 3) Å
            self.chains.append(c)
            if cfg.strand_power:
                from diffsci.protein.metrics import psea_fractions

                strand.append(psea_fractions(np.asarray(ch.coords)[:, 1])["strand"])
        if not self.chains:
            raise DiffsciError(f"all {len(idx)} chains were filtered out (max_coil={cfg.max_coil}, "
                               f"max_rg_ratio={cfg.max_rg_ratio}); loosen them in the 'model' config")
        # per-chain draw probabilities (None: uniform, drawn with randint as before this option)
        self.weights = None
        if cfg.strand_power:
            w = (torch.tensor(strand, dtype=torch.float64) + 0.05) ** cfg.strand_power
            self.weights = w / w.sum()
        self.space = build_space(cfg)

    def model_config(self) -> dict:
        return self.cfg.to_dict()

    def sample_batch(self, generator, batch_size):
        n = self.cfg.max_length
        trans = torch.zeros(batch_size, n, 3)
        rots = torch.eye(3).expand(batch_size, n, 3, 3).clone()
        atoms = torch.zeros(batch_size, n, 4, 3)
        mask = torch.zeros(batch_size, n, dtype=torch.bool)
        if self.weights is None:
            picks = torch.randint(len(self.chains), (batch_size,), generator=generator)
        else:
            picks = torch.multinomial(self.weights, batch_size, replacement=True, generator=generator)
        for b, p in enumerate(picks.tolist()):
            c = self.chains[p]
            length = c.shape[0]
            if length > n:
                s = int(torch.randint(length - n + 1, (1,), generator=generator))
                c = c[s : s + n]
            m = c.shape[0]
            r, tr = frames_from_backbone(c[:, 0], c[:, 1], c[:, 2])
            trans[b, :m], rots[b, :m], mask[b, :m] = tr / NM, r, True
            atoms[b, :m] = c / NM
        com = (trans * mask[..., None]).sum(1, keepdim=True) / mask.sum(1)[:, None, None]
        trans = remove_com(trans, mask)
        atoms = (atoms - com[:, :, None]) * mask[..., None, None]
        # t in [0.01, 1): avoid the degenerate t = 0 (clean) end
        t = 0.01 + 0.99 * torch.rand(batch_size, generator=generator)
        space = self.space.with_mask(mask)
        xt = space.noise((trans, rots), t, generator)
        res_idx = torch.arange(n).expand(batch_size, n).clone()
        batch = {"trans": trans, "rots": rots, "atoms": atoms, "mask": mask, "t": t,
                 "xt_trans": xt[0], "xt_rots": xt[1], "res_idx": res_idx}
        if self.cfg.net.self_condition:  # half of the batches train with a self-conditioning input
            batch["self_cond"] = torch.rand((), generator=generator) < 0.5
        return batch

    def loss(self, model, batch):
        mask = batch["mask"]
        cond = ProteinCond(mask, batch["res_idx"], torch.zeros_like(batch["res_idx"]))
        t = batch["t"]
        if "self_cond" in batch and bool(batch["self_cond"]):
            with torch.no_grad():  # the first pass's prediction is an input, not trained through
                cond = dataclasses.replace(cond, self_cond=model((batch["xt_trans"], batch["xt_rots"]), t, cond)[0].detach())
        trans0, rots0 = model((batch["xt_trans"], batch["xt_rots"]), t, cond)
        m = mask.to(trans0.dtype)
        denom = m.sum(1).clamp_min(1)
        scale = 1.0 / t.clamp_min(0.1) ** 2
        tl = (((trans0 - batch["trans"]) ** 2).sum(-1) * m).sum(1) / denom
        rl = (((rots0 - batch["rots"]) ** 2).sum((-1, -2)) * m).sum(1) / denom
        loss = scale * (tl + self.cfg.rot_weight * rl)
        if self.cfg.aux_weight > 0:
            bb = backbone_from_frames(rots0, trans0 * NM) / NM  # (B, N, 4, 3)
            al = (((bb - batch["atoms"]) ** 2).sum(-1).mean(-1) * m).sum(1) / denom
            loss = loss + self.cfg.aux_weight * (t < self.cfg.aux_loss_t).to(al.dtype) * al * 100.0
        if self.cfg.dist_weight > 0:
            bb = backbone_from_frames(rots0, trans0 * NM) / NM
            dl = local_distance_loss(bb, batch["atoms"], mask, self.cfg.dist_cutoff_nm)
            loss = loss + self.cfg.dist_weight * (t < self.cfg.aux_loss_t).to(dl.dtype) * dl * 100.0
        return loss.mean()


def local_distance_loss(pred: torch.Tensor, true: torch.Tensor, mask: torch.Tensor, cutoff: float) -> torch.Tensor:
    """Squared error of backbone-atom pair distances, over pairs closer than ``cutoff`` in the
    true structure (FrameDiff's pairwise-distance loss). pred/true (B, N, 4, 3), mask (B, N). Shape (B,)."""
    b, n = mask.shape
    p = pred.reshape(b, n * 4, 3)
    q = true.reshape(b, n * 4, 3)
    am = mask[:, :, None].expand(b, n, 4).reshape(b, n * 4)
    dp = torch.cdist(p, p)
    dq = torch.cdist(q, q)
    pair = am[:, :, None] & am[:, None, :] & (dq < cutoff)
    pair = pair & ~torch.eye(n * 4, dtype=torch.bool, device=mask.device)[None]
    pm = pair.to(pred.dtype)
    return (((dp - dq) ** 2) * pm).sum((1, 2)) / pm.sum((1, 2)).clamp_min(1)


def filter_reason(ca: np.ndarray, cfg: ProteinModelConfig) -> str | None:
    """Why a chain (CA (L, 3) Å) is not trained on under ``cfg``'s filters (``"rg"``: radius of
    gyration above ``max_rg_ratio`` x 2.2 L^0.38; ``"coil"``: P-SEA coil above ``max_coil``), or None."""
    if cfg.max_rg_ratio is not None:
        from diffsci.protein.metrics.geometry import expected_radius_of_gyration

        rg = float(np.sqrt(((ca - ca.mean(0)) ** 2).sum(1).mean()))
        if rg > cfg.max_rg_ratio * expected_radius_of_gyration(len(ca)):
            return "rg"
    if cfg.max_coil is not None:
        from diffsci.protein.metrics import psea_fractions

        if psea_fractions(ca)["coil"] > cfg.max_coil:
            return "coil"
    return None


def frames_to_backbone_angstrom(trans_nm: torch.Tensor, rots: torch.Tensor) -> torch.Tensor:
    """Backbone atoms (..., N, 4, 3) in Å from frames in nm."""
    return backbone_from_frames(rots, trans_nm * NM)


def sample_generators(seed: int, indices, key: str = "protein") -> list[torch.Generator]:
    """One generator per sample index, derived from (seed, key, index)."""
    return [make_generator(seed, key, int(i)) for i in indices]

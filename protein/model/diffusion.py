"""Backbone diffusion: the two formulations, the training task and the denoiser wrapper.

Dimension legend: B batch, N residues (padded), L a chain's length.

A backbone is a state of the core's ``Product((EuclideanCoM, SO3...))`` space:
``(trans (B, N, 3) in nm, rots (B, N, 3, 3))`` (coordinates in Å divided by
:data:`ANGSTROM_PER_NM`, as FrameDiff).

Formulations (``ProteinModelConfig.formulation``):

- ``"flow"`` (FrameFlow, Yim et al. 2023): linear interpolant on translations
  (:class:`~diffsci.core.schedules.FlowMatching`) and the geodesic flow on rotations
  (:class:`~diffsci.core.spaces.SO3Flow`); sampled with the geodesic Euler sampler.
- ``"score"`` (FrameDiff, Yim et al. 2023): VP noise on translations
  (:class:`~diffsci.core.schedules.VPLinear`) and IGSO3 noise on rotations
  (:class:`~diffsci.core.spaces.SO3Diffusion`, log-linear sigma).

Secondary-structure conditioning (``net.ss_conditioning``, :mod:`diffsci.protein.ss`): batches
carry each residue's DSSP class and the strand-pairing class of each residue pair, from the
dataset's labels (:func:`diffsci.protein.io.dataset.load_dataset` ``ss_labels``). For
classifier-free guidance (Ho & Salimans 2022) the same network must also predict without them:
with probability ``ss_drop`` an example's classes are all "unknown" (the unconditional model, as
Proteina drops its fold-class labels, Geffner et al. 2025); otherwise with probability
``ss_pair_drop`` only its pairs are unknown (so ``--ss --ss-pairs unknown`` is in
distribution), and each SS segment is independently unknown with probability
``ss_segment_mask`` (partial requests, as RFdiffusion's fold-conditioning training masks part of
the SS and block-adjacency input, Watson et al. 2023).

Losses (both formulations predict clean frames): translation MSE and rotation Frobenius
error, each scaled by ``1 / max(t, 0.1)^2`` as FrameFlow's vector-field losses are, plus an
auxiliary backbone-atom (N, CA, C, O) MSE and a local pairwise-distance loss (atom pairs
closer than 6 Å) for ``t < 0.25`` (FrameDiff's auxiliary losses).

The model kind ``protein-frames`` is registered with :mod:`diffsci.core.checkpoint` when this
module is imported (config, builder, migrations, shipped checkpoint, training task), so
:func:`diffsci.core.checkpoint.load_bundle` and :func:`diffsci.core.train.fit` handle it.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import nn

from diffsci.core.checkpoint import register_kind
from diffsci.core.config import Provenance, file_record, to_dict
from diffsci.core.errors import DiffsciError
from diffsci.core.io import check_choice, check_range
from diffsci.core.schedules import FlowMatching, LogLinear, VPLinear
from diffsci.core.spaces import EuclideanCoM, Product, SO3Diffusion, SO3Flow, remove_com
from diffsci.protein.io.dataset import load_dataset, with_ss_labels
from diffsci.protein.frames import ANGSTROM_PER_NM, backbone_from_frames, frames_from_backbone
from diffsci.protein.metrics.geometry import expected_radius_of_gyration
from diffsci.protein.metrics.secondary import psea_fractions
from diffsci.protein.model.network import FrameDenoiserNet, FrameNetConfig, ProteinCond
from diffsci.protein.ss import PAIR_UNKNOWN, SS_UNKNOWN, pair_classes, segment_pairs_from_bridges, ss_segments

__all__ = ["ProteinModelConfig", "ProteinCond", "FrameDenoiser", "SelfConditioned", "build_space", "build_model",
           "BackboneBatch", "BackboneTask", "ProteinData", "make_task", "upgrade_v0", "shipped_checkpoint", "KIND",
           "TRAIN_DEFAULTS", "filter_reason", "upgrade_v1", "upgrade_v2", "ss_checkpoint", "v1_checkpoint", "SAMPLING_FIELDS",
           "upgrade_v3", "TASK_FIELDS", "upgrade_v4", "backbone_link_loss", "LINK_PAIRS",
           "T_TRAIN_MIN"]

KIND = "protein-frames"
#: the lowest time a training batch draws (t ~ U[T_TRAIN_MIN, 1)); the default ``t_stop`` of sampling
T_TRAIN_MIN = 0.01


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
    # chain-geometry loss (same t window as aux): squared error of the four distances that fix a
    # peptide link between consecutive residues (CA-CA, C-N', CA-N', C-CA'; backbone_link_loss).
    # Among the local distances of dist_weight they are ~1 pair in 30, yet they alone decide whether
    # a design's chain is connected (consecutive CA-CA <= 4.2 Å). A training-task option (TASK_FIELDS).
    bond_weight: float = 0.0
    inference_rate: float = 10.0  # FrameFlow's exponential rotation schedule at sampling
    # EDM churn of the translations when the checkpoint is sampled with euler/heun (0: the plain ODE),
    # on the steps with t <= churn_tmax (diffsci.protein.design.request.default_churn); like
    # inference_rate a sampling default only (SAMPLING_FIELDS: a resumed run may change it)
    churn: float = 0.0
    churn_tmax: float = 0.7
    # where sampling stops (a sampling default, SAMPLING_FIELDS): the time grid runs down to t_stop
    # and the last step jumps to the network's clean prediction there, as FrameFlow samples down to
    # min_t = 0.01. Training never draws t below T_TRAIN_MIN, so below it the network extrapolates
    # (docs/benchmarks.md, "Sampling stops where training stops"). 0: the grid runs to t = 0.
    t_stop: float = T_TRAIN_MIN
    # training-set filters, as FrameDiff's data config (max loop percent, radius-of-gyration
    # outliers): chains with more P-SEA coil than max_coil, or Rg above max_rg_ratio * 2.2 L^0.38,
    # are not trained on (None: keep all)
    max_coil: float | None = 0.6
    max_rg_ratio: float | None = 1.3
    # chains are drawn with probability proportional to (P-SEA strand fraction + 0.05)^strand_power
    # (0: uniform); > 0 shows the net more beta sheet, which a small model otherwise rarely makes
    strand_power: float = 0.0
    # secondary-structure conditioning dropout (net.ss_conditioning only; module docstring)
    ss_drop: float = 0.25
    ss_pair_drop: float = 0.5
    ss_segment_mask: float = 0.1
    # scheduled sampling against exposure bias (Bengio et al. 2015; exposure bias in diffusion:
    # Ning et al. 2023): with probability rollout_prob a batch's input at t is not the forward-noised
    # chain but a state of this network's own sampler: the chain noised to
    # t' = min(1, t + rollout_span), then moved to t by rollout_steps no-grad Euler steps of the
    # network being trained (self-conditioned, and with the rotation rate inference_rate, as
    # sampling moves them); the target stays the real chain.
    # Training-task options (TASK_FIELDS): a resumed run may switch them on or off.
    rollout_prob: float = 0.0
    rollout_span: float = 0.25
    rollout_steps: int = 2

    def __post_init__(self):
        if self.formulation not in ("flow", "score"):
            raise DiffsciError(f"formulation must be 'flow' or 'score', got {self.formulation!r}")
        if self.max_length < 8:
            raise DiffsciError("max_length must be >= 8")
        check_range(self.bond_weight, "bond_weight", 0.0, 100.0)
        if not 0 <= self.strand_power <= 4:
            raise DiffsciError(f"strand_power must lie in [0, 4], got {self.strand_power}")
        for name in ("ss_drop", "ss_pair_drop", "ss_segment_mask"):
            check_range(getattr(self, name), name, 0.0, 1.0)
        check_range(self.churn, "churn", 0.0, 1000.0)
        check_range(self.churn_tmax, "churn_tmax", 0.0, 1.0, lo_open=True)
        check_range(self.t_stop, "t_stop", 0.0, 0.5)
        check_range(self.rollout_prob, "rollout_prob", 0.0, 1.0)
        check_range(self.rollout_span, "rollout_span", 0.0, 1.0, lo_open=True)
        if not 1 <= self.rollout_steps <= 20:
            raise DiffsciError(f"rollout_steps must lie in [1, 20], got {self.rollout_steps}")


def build_space(cfg: ProteinModelConfig, mask: torch.Tensor | None = None, *, rotation_rate: float = 1.0) -> Product:
    """``Product((EuclideanCoM, SO3Flow|SO3Diffusion))`` for the formulation (with a residue mask (B, N)).

    ``rotation_rate``: the flow formulation's exponential rotation rate (FrameFlow): 1 is the
    geodesic interpolant the model is trained on; sampling passes the checkpoint's
    ``inference_rate`` (or a user's). The score formulation has no such rate (it must be 1)."""
    if cfg.formulation == "flow":
        space = Product((EuclideanCoM(FlowMatching()), SO3Flow(inference_rate=rotation_rate)))
    else:
        if rotation_rate != 1.0:
            raise DiffsciError(f"rotation_rate applies to the flow formulation only, got {rotation_rate} for a score model")
        space = Product((EuclideanCoM(VPLinear()), SO3Diffusion(LogLinear())))
    return space.with_mask(mask) if mask is not None else space


class FrameDenoiser(nn.Module):
    """The core's denoiser interface: ``(x_t=(trans, rots), t (B,), cond) -> (trans0, rots0)``."""

    def __init__(self, cfg: ProteinModelConfig):
        super().__init__()
        self.cfg = cfg
        self.net = FrameDenoiserNet(cfg.net)

    def forward(self, x, t, cond: ProteinCond):
        trans, rots = x
        return self.net(trans, rots, t.to(trans.dtype), cond)


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
    """The network of ``cfg``; its initial weights come from torch's global RNG (seed it first)."""
    return FrameDenoiser(cfg)


@dataclass(frozen=True)
class BackboneBatch:
    """A training batch. Shapes: trans (B, N, 3) nm (zero CoM over the mask), rots (B, N, 3, 3),
    atoms (B, N, 4, 3) nm (N, CA, C, O, centred as trans), mask (B, N) bool, t (B,), xt_trans and
    xt_rots the state noised to t, res_idx (B, N); ``self_condition``: the batch trains with a
    self-conditioning input (a self-conditioned net only); ``ss`` (B, N) and ``ss_pair`` (B, N, N):
    SS and pair classes after the conditioning dropout (an SS-conditioned net only);
    ``rollout_from`` (B,): for a scheduled-sampling batch, the (higher) times xt_trans and xt_rots
    were noised to, which the loss rolls out to t with the network's own sampler (None: they are at t)."""

    trans: torch.Tensor
    rots: torch.Tensor
    atoms: torch.Tensor
    mask: torch.Tensor
    t: torch.Tensor
    xt_trans: torch.Tensor
    xt_rots: torch.Tensor
    res_idx: torch.Tensor
    self_condition: bool = False
    ss: torch.Tensor | None = None
    ss_pair: torch.Tensor | None = None
    rollout_from: torch.Tensor | None = None

    def without_padding(self) -> BackboneBatch:
        """The batch cut to its longest chain (N = the most residues any structure has): padding
        has no edges and no loss, so the loss is the same, and a batch of short crops no longer
        pays for ``max_length`` positions (the v2 recipe's max_length is 384; the bundled chains'
        median length is 137)."""
        n = int(self.mask.sum(1).max())
        if n == self.mask.shape[1]:
            return self
        cut = {f.name: getattr(self, f.name)[:, :n] for f in dataclasses.fields(self)
               if f.name not in ("t", "self_condition", "ss", "ss_pair", "rollout_from")}
        if self.ss is not None:
            cut["ss"] = self.ss[:, :n]
        if self.ss_pair is not None:
            cut["ss_pair"] = self.ss_pair[:, :n, :n]
        return dataclasses.replace(self, **cut)


class BackboneTask:
    """Training task: random crops of real chains, noised by the configured formulation.

    ``split``: ``"train"``, ``"heldout"`` or ``"all"`` chains of the dataset; ``provenance``:
    where the dataset came from (saved in the checkpoints). ``chains`` holds views into the
    dataset's arrays (memory maps of the file for a dataset written by
    :func:`~diffsci.protein.io.dataset.save_dataset`); a batch copies only its own crops."""

    kind = KIND

    def __init__(self, config: ProteinModelConfig, dataset, split: str = "train", *,
                 provenance: Provenance | None = None):
        self.config = cfg = config
        self.split = check_choice(split, "split", SPLITS)
        self._provenance = provenance
        idx = np.arange(len(dataset)) if split == "all" else dataset.indices(split)
        if len(idx) == 0:
            raise DiffsciError(f"dataset has no chains in split {split!r}")
        if cfg.net.ss_conditioning:
            dataset = with_ss_labels(dataset, note="dataset has no secondary-structure labels; computing pydssp DSSP")
        self._dataset = dataset  # heldout() draws from the same (labelled) dataset
        self.chains, strand, self.ss_labels = [], [], []
        self.skipped = {"coil": 0, "rg": 0}
        for i in idx:
            ch = dataset.chain(int(i))
            why = filter_reason(np.asarray(ch.coords)[:, 1], cfg)
            if why:
                self.skipped[why] += 1
                continue
            self.chains.append(ch.coords)  # (L, 4, 3) Å
            if cfg.net.ss_conditioning:
                self.ss_labels.append(dataset.chain_ss(int(i)))  # classes (L,), bridges (P, 3)
            if cfg.strand_power:
                strand.append(psea_fractions(np.asarray(ch.coords)[:, 1])["strand"])
        if not self.chains:
            raise DiffsciError(f"all {len(idx)} chains were filtered out (max_coil={cfg.max_coil}, "
                               f"max_rg_ratio={cfg.max_rg_ratio}); loosen them in the 'model' config")
        # per-chain draw probabilities (None: uniform, drawn with randint)
        self.weights = None
        if cfg.strand_power:
            w = (torch.tensor(strand, dtype=torch.float64) + 0.05) ** cfg.strand_power
            self.weights = w / w.sum()
        self.space = build_space(cfg)

    def model_config(self) -> dict:
        return to_dict(self.config)

    def heldout(self) -> BackboneTask:
        """The same task (configuration, filters, draw weights) over the dataset's held-out
        split: the trainer's ``eval_every`` loss. Refused for a task not trained on ``train``. Its
        inputs are always forward-noised (no scheduled sampling: ``rollout_prob`` 0), so held-out
        losses of runs with and without it compare."""
        if self.split != "train":
            raise DiffsciError(f"a task over split {self.split!r} has no held-out chains apart from its own; "
                               "train on split 'train' to evaluate on 'heldout'")
        config = dataclasses.replace(self.config, rollout_prob=0.0)
        return BackboneTask(config, self._dataset, "heldout", provenance=self._provenance)

    def evaluation(self) -> BackboneTask:
        """The task the trainer's ``eval_every`` measures on the training chains: this one with
        forward-noised inputs only (``rollout_prob`` 0), as :meth:`heldout`, so that runs with
        and without scheduled sampling compare."""
        if self.config.rollout_prob == 0:
            return self
        view = copy.copy(self)
        view.config = dataclasses.replace(self.config, rollout_prob=0.0)
        return view

    def provenance(self) -> Provenance | None:
        return self._provenance

    def summary(self) -> str:
        """What the filters kept, and how chains are drawn."""
        cfg = self.config
        text = (f"training on {len(self.chains)} chains; filtered out {self.skipped['coil']} (P-SEA coil > "
                f"{cfg.max_coil}) and {self.skipped['rg']} (Rg > {cfg.max_rg_ratio} x 2.2 L^0.38)")
        if self.weights is not None:
            text += (f"\nstrand_power {cfg.strand_power}: the most-drawn chain has p = {float(self.weights.max()):.3f} "
                     f"(uniform would be {1 / len(self.chains):.3f})")
        return text

    def sample_batch(self, generator, batch_size) -> BackboneBatch:
        n = self.config.max_length
        trans = torch.zeros(batch_size, n, 3)
        rots = torch.eye(3).expand(batch_size, n, 3, 3).clone()
        atoms = torch.zeros(batch_size, n, 4, 3)
        mask = torch.zeros(batch_size, n, dtype=torch.bool)
        if self.weights is None:
            picks = torch.randint(len(self.chains), (batch_size,), generator=generator)
        else:
            picks = torch.multinomial(self.weights, batch_size, replacement=True, generator=generator)
        crops = []
        for b, p in enumerate(picks.tolist()):
            c = self.chains[p]
            length, s = c.shape[0], 0
            if length > n:
                s = int(torch.randint(length - n + 1, (1,), generator=generator))
                c = c[s : s + n]
            crops.append((p, s, min(length, n)))
            c = torch.tensor(np.asarray(c), dtype=torch.float32)  # (m, 4, 3) Å
            m = c.shape[0]
            r, tr = frames_from_backbone(c[:, 0], c[:, 1], c[:, 2])
            trans[b, :m], rots[b, :m], mask[b, :m] = tr / ANGSTROM_PER_NM, r, True
            atoms[b, :m] = c / ANGSTROM_PER_NM
        com = (trans * mask[..., None]).sum(1, keepdim=True) / mask.sum(1)[:, None, None]
        trans = remove_com(trans, mask)
        atoms = (atoms - com[:, :, None]) * mask[..., None, None]
        # t in [T_TRAIN_MIN, 1): avoid the degenerate t = 0 (clean) end
        t = T_TRAIN_MIN + (1.0 - T_TRAIN_MIN) * torch.rand(batch_size, generator=generator)
        space = self.space.with_mask(mask)
        rollout = None  # scheduled sampling: noise to a higher time, which the loss rolls out to t
        if self.config.rollout_prob > 0 and bool(torch.rand((), generator=generator) < self.config.rollout_prob):
            rollout = (t + self.config.rollout_span).clamp(max=1.0)
        xt = space.noise((trans, rots), t if rollout is None else rollout, generator)
        res_idx = torch.arange(n).expand(batch_size, n).clone()
        # half of the batches of a self-conditioned net train with a self-conditioning input
        self_condition = bool(torch.rand((), generator=generator) < 0.5) if self.config.net.self_condition else False
        ss = ss_pair = None
        if self.config.net.ss_conditioning:
            ss, ss_pair = self._ss_inputs(crops, generator)
        # every draw above is made at max_length (the same random numbers whatever the crops), then the padding is cut
        return BackboneBatch(trans, rots, atoms, mask, t, xt[0], xt[1], res_idx, self_condition, ss, ss_pair,
                             rollout).without_padding()

    def _ss_inputs(self, crops, generator) -> tuple[torch.Tensor, torch.Tensor]:
        """SS classes (B, N) and pair classes (B, N, N) of the crops ``(chain, start, length)``,
        after the conditioning dropout (module docstring); padding is unknown."""
        cfg, n = self.config, self.config.max_length
        ss = torch.full((len(crops), n), SS_UNKNOWN, dtype=torch.long)
        pair = torch.full((len(crops), n, n), PAIR_UNKNOWN, dtype=torch.long)
        for b, (p, s, m) in enumerate(crops):
            u = torch.rand(2, generator=generator)
            drop, pair_drop = bool(u[0] < cfg.ss_drop), bool(u[1] < cfg.ss_pair_drop)
            labels, bridges = self.ss_labels[p]
            codes = np.asarray(labels[s : s + m], dtype=np.int64)
            inside = (bridges[:, 0] >= s) & (bridges[:, 1] < s + m)
            classes = pair_classes(codes, segment_pairs_from_bridges(codes, bridges[inside] - [s, s, 0]))
            segments = ss_segments(codes)
            hidden = (torch.rand(len(segments), generator=generator) < cfg.ss_segment_mask).tolist()
            for (lo, hi), h in zip(segments, hidden):
                if h:
                    codes[lo : hi + 1] = SS_UNKNOWN
                    classes[lo : hi + 1] = classes[:, lo : hi + 1] = PAIR_UNKNOWN
            if drop:
                continue
            ss[b, :m] = torch.from_numpy(codes)
            if not pair_drop:
                pair[b, :m, :m] = torch.from_numpy(classes)
        return ss, pair

    def loss(self, model, batch: BackboneBatch):
        cfg, mask, t = self.config, batch.mask, batch.t
        xt = (batch.xt_trans, batch.xt_rots)
        cond = ProteinCond(mask, batch.res_idx, torch.zeros_like(batch.res_idx), ss=batch.ss, ss_pair=batch.ss_pair)
        xt, cond = self.network_input(model, batch, xt, cond, batch.self_condition)
        trans0, rots0 = model(xt, t, cond)
        m = mask.to(trans0.dtype)
        denom = m.sum(1).clamp_min(1)
        scale = 1.0 / t.clamp_min(0.1) ** 2
        tl = (((trans0 - batch.trans) ** 2).sum(-1) * m).sum(1) / denom
        rl = (((rots0 - batch.rots) ** 2).sum((-1, -2)) * m).sum(1) / denom
        loss = scale * (tl + cfg.rot_weight * rl)
        if cfg.aux_weight > 0 or cfg.dist_weight > 0 or cfg.bond_weight > 0:  # the backbone losses, on t < aux_loss_t
            bb = backbone_from_frames(rots0, trans0 * ANGSTROM_PER_NM) / ANGSTROM_PER_NM  # (B, N, 4, 3)
            low = (t < cfg.aux_loss_t).to(bb.dtype) * 100.0
            if cfg.aux_weight > 0:
                al = (((bb - batch.atoms) ** 2).sum(-1).mean(-1) * m).sum(1) / denom
                loss = loss + cfg.aux_weight * low * al
            if cfg.dist_weight > 0:
                loss = loss + cfg.dist_weight * low * local_distance_loss(bb, batch.atoms, mask, cfg.dist_cutoff_nm)
            if cfg.bond_weight > 0:
                loss = loss + cfg.bond_weight * low * backbone_link_loss(bb, batch.atoms, mask)
        return loss.mean()

    def network_input(self, model, batch: BackboneBatch, xt, cond: ProteinCond, self_condition: bool):
        """The state and conditioning the trained pass sees: ``xt`` rolled out to t first where the
        batch has ``rollout_from`` (:meth:`roll_out`), and with ``self_condition`` the
        self-conditioning input: the rollout's last prediction, else a gradient-free first pass's."""
        previous = None
        if batch.rollout_from is not None:
            xt, previous = self.roll_out(model, xt, batch.rollout_from, batch.t, cond)
        if not self_condition:
            return xt, cond
        if previous is None:
            with torch.no_grad():  # the first pass's prediction is an input, not trained through
                previous = model(xt, batch.t, cond)[0]
        return xt, dataclasses.replace(cond, self_cond=previous.detach())

    def roll_out(self, model, x, t_from: torch.Tensor, t_to: torch.Tensor, cond: ProteinCond):
        """The sampler's state at ``t_to`` (B,) from the state ``x`` at ``t_from`` (B,):
        ``rollout_steps`` equal Euler steps of ``model`` without gradients, each self-conditioned on
        the previous prediction (a self-conditioned net), with the rotation rate ``inference_rate``
        (flow formulation) as sampling uses. Returns (state, the last clean translation prediction,
        which is what a sampler's next step is self-conditioned on)."""
        cfg = self.config
        rate = cfg.inference_rate if cfg.formulation == "flow" else 1.0
        space = build_space(cfg, cond.mask, rotation_rate=rate)
        previous, k = None, cfg.rollout_steps
        with torch.no_grad():
            for i in range(k):
                a = t_from + (t_to - t_from) * (i / k)
                b = t_from + (t_to - t_from) * ((i + 1) / k)
                c = dataclasses.replace(cond, self_cond=previous) if cfg.net.self_condition else cond
                x0 = model(x, a, c)
                previous = x0[0]
                x = space.step(x, x0, a, b)
        return x, previous


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


#: (atom of residue i, atom of residue i + 1) pairs whose distances fix the peptide link, with N, CA,
#: C, O = 0..3: CA-CA', C-N' (the peptide bond), CA-N' (with C-N' and the frame: the CA-C-N'
#: angle) and C-CA' (the C-N'-CA' angle)
LINK_PAIRS = ((1, 1), (2, 0), (1, 0), (2, 1))


def backbone_link_loss(pred: torch.Tensor, true: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error of the :data:`LINK_PAIRS` distances between consecutive residues (both
    in ``mask``). pred/true (B, N, 4, 3), mask (B, N). Shape (B,); 0 for a structure without a
    consecutive pair. The targets are the true structure's distances (a gap in it is kept, not
    closed)."""
    pm = (mask[:, :-1] & mask[:, 1:]).to(pred.dtype)  # (B, N - 1)
    err = pred.new_zeros(pm.shape)
    for a, b in LINK_PAIRS:
        dp = (pred[:, :-1, a] - pred[:, 1:, b]).norm(dim=-1)
        dq = (true[:, :-1, a] - true[:, 1:, b]).norm(dim=-1)
        err = err + (dp - dq) ** 2
    return (err * pm).sum(1) / (len(LINK_PAIRS) * pm.sum(1).clamp_min(1))


def filter_reason(ca: np.ndarray, cfg: ProteinModelConfig) -> str | None:
    """Why a chain (CA (L, 3) Å) is not trained on under ``cfg``'s filters (``"rg"``: radius of
    gyration above ``max_rg_ratio`` x 2.2 L^0.38; ``"coil"``: P-SEA coil above ``max_coil``), or None."""
    if cfg.max_rg_ratio is not None:
        rg = float(np.sqrt(((ca - ca.mean(0)) ** 2).sum(1).mean()))
        if rg > cfg.max_rg_ratio * expected_radius_of_gyration(len(ca)):
            return "rg"
    if cfg.max_coil is not None:
        if psea_fractions(ca)["coil"] > cfg.max_coil:
            return "coil"
    return None


def frames_to_backbone_angstrom(trans_nm: torch.Tensor, rots: torch.Tensor) -> torch.Tensor:
    """Backbone atoms (..., N, 4, 3) in Å from frames in nm."""
    return backbone_from_frames(rots, trans_nm * ANGSTROM_PER_NM)



# ------------------------------------------------------------------------- the registered kind
SPLITS: tuple[str, ...] = ("train", "heldout", "all")

# training options of `diffsci protein train` (core.train.TrainConfig fields); config files and
# command-line values go on top
TRAIN_DEFAULTS = {"steps": 10000, "batch_size": 6, "lr": 1e-3, "ema_decay": 0.999, "ckpt_every": 100,
                  "log_every": 10, "warmup_steps": 200, "grad_clip": 1.0}


@dataclass(frozen=True)
class ProteinData:
    """The ``data`` table of a training recipe: the dataset file (``diffsci protein prepare``, or
    the bundled ``protein/data/chains.npz``) and the split trained on (``train``, ``heldout``,
    ``all``)."""

    path: str
    split: str = "train"

    def __post_init__(self):
        check_choice(self.split, "data.split", SPLITS)


def make_task(recipe) -> BackboneTask:
    """The training task of a :class:`diffsci.core.train.Recipe` of this kind: reads
    ``recipe.data`` (:class:`ProteinData`), records its provenance (file digest, seed, split)
    and prints what the training-set filters kept to stderr."""
    data = recipe.data
    if not Path(data.path).is_file():
        raise DiffsciError(f"data.path {data.path}: dataset file not found")
    provenance = Provenance(files=(file_record(data.path),), seed=recipe.train.seed, note=f"split {data.split}")
    dataset = load_dataset(data.path, ss_labels=recipe.model.net.ss_conditioning)
    task = BackboneTask(recipe.model, dataset, data.split, provenance=provenance)
    print(task.summary(), file=sys.stderr)
    return task


def upgrade_v0(ck: dict) -> dict:
    """Checkpoints from before config versions (version 0) to version 1: a ``net`` table without
    ``frame_edges`` was written before frame-local edge features existed, so it gets
    ``frame_edges: False`` (the weights are unchanged)."""
    config = dict(ck["model_config"])
    net = dict(config.get("net") or {})
    if net and "frame_edges" not in net:
        config["net"] = {**net, "frame_edges": False}
    return {**ck, "model_config": config}


def upgrade_v1(ck: dict) -> dict:
    """Version 1 to version 2: secondary-structure conditioning. A model table without its
    options gets ``net.ss_conditioning: False`` and the dropout defaults (they only apply to an
    SS-conditioned net; the weights are unchanged)."""
    config = dict(ck["model_config"])
    if not config:
        return dict(ck)
    defaults = ProteinModelConfig()
    for name in ("ss_drop", "ss_pair_drop", "ss_segment_mask"):
        config.setdefault(name, getattr(defaults, name))
    if config.get("net") is not None:
        config["net"] = {"ss_conditioning": False, **config["net"]}
    return {**ck, "model_config": config}


def upgrade_v2(ck: dict) -> dict:
    """Version 2 to version 3: sampling churn in the checkpoint. A model table without it gets
    ``churn: 0`` (the plain ODE every earlier checkpoint was measured with) and ``churn_tmax: 0.7``."""
    config = dict(ck["model_config"])
    if not config:
        return dict(ck)
    config.setdefault("churn", 0.0)
    config.setdefault("churn_tmax", ProteinModelConfig().churn_tmax)
    return {**ck, "model_config": config}


#: model-config fields that only set how a checkpoint samples by default (core Kind.sampling_fields)
SAMPLING_FIELDS = ("inference_rate", "churn", "churn_tmax", "t_stop")
#: model-config fields that only shape the training task (which chains, how they are drawn, the loss
#: weights, the conditioning dropout), not the network (core Kind.task_fields): a resumed run may change them
TASK_FIELDS = ("rollout_prob", "rollout_span", "rollout_steps", "bond_weight", "aux_weight", "dist_weight",
               "max_coil", "max_rg_ratio", "strand_power", "ss_drop", "ss_pair_drop", "ss_segment_mask")


def upgrade_v3(ck: dict) -> dict:
    """Version 3 to version 4: scheduled sampling. A model table without it gets ``rollout_prob: 0``
    (every earlier checkpoint trained on forward-noised inputs only) and the span/steps defaults."""
    config = dict(ck["model_config"])
    if not config:
        return dict(ck)
    defaults = ProteinModelConfig()
    for name in ("rollout_prob", "rollout_span", "rollout_steps"):  # the task fields of version 4
        config.setdefault(name, getattr(defaults, name))
    return {**ck, "model_config": config}


def upgrade_v4(ck: dict) -> dict:
    """Version 4 to version 5: the chain-geometry loss and the sampler's stopping time. A model
    table without them gets ``bond_weight: 0`` (every earlier checkpoint trained without it) and
    ``t_stop: 0`` (every earlier checkpoint was sampled, and measured, down to t = 0)."""
    config = dict(ck["model_config"])
    if not config:
        return dict(ck)
    config.setdefault("bond_weight", 0.0)
    config.setdefault("t_stop", 0.0)
    return {**ck, "model_config": config}


def shipped_checkpoint() -> Path:
    """The checkpoint shipped with the package (``protein/data/default_checkpoint.pt``): the v2
    network, which serves unconditional, SS-conditioned (``--ss``) and motif designs
    (``protein/data/CHECKPOINT.md``)."""
    return Path(str(resources.files("diffsci.protein") / "data" / "default_checkpoint.pt"))


def ss_checkpoint() -> Path:
    """``--checkpoint ss``: once a second, SS-conditioned file; since the v2 checkpoint conditions on
    SS itself, an alias of :func:`shipped_checkpoint` kept for old scripts (the old file is
    ``v1_checkpoint("v1-ss")``)."""
    return shipped_checkpoint()


#: the v1 files, kept to reproduce the figures measured with them and to test the migrations
V1_CHECKPOINTS = {"v1": "default_checkpoint.pt", "v1-ss": "ss_checkpoint.pt"}


def v1_checkpoint(name: str = "v1") -> Path:
    """A v1 checkpoint: ``"v1"`` (the default before v2) or ``"v1-ss"`` (the SS-conditioned one),
    ``protein/data/v1/``; ``--checkpoint v1`` / ``v1-ss``."""
    if name not in V1_CHECKPOINTS:
        raise DiffsciError(f"unknown v1 checkpoint {name!r}; choose from {', '.join(V1_CHECKPOINTS)}")
    return Path(str(resources.files("diffsci.protein") / "data" / "v1" / V1_CHECKPOINTS[name]))


register_kind(KIND, ProteinModelConfig, build_model, version=5,
              migrations={0: upgrade_v0, 1: upgrade_v1, 2: upgrade_v2, 3: upgrade_v3, 4: upgrade_v4},
              default_path=shipped_checkpoint, make_task=make_task, data_cls=ProteinData,
              train_defaults=TRAIN_DEFAULTS, sampling_fields=SAMPLING_FIELDS, task_fields=TASK_FIELDS)

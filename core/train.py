"""The training loop shared by every model: devices, bf16, EMA, clipping, DDP, checkpoints.

A model family plugs in through a small :class:`Task` (composition, not inheritance):

- ``kind``: a string naming the model family; checkpoints carry it, and loading a checkpoint
  of another kind is refused with a clear error.
- ``sample_batch(generator, batch_size) -> batch``: draws a *global* batch, including all
  its randomness (data indices, noise levels, noise), from the generator it is given.
- ``loss(model, batch) -> scalar``: deterministic given the batch (mean over its examples).
- ``model_config() -> dict`` and optionally ``extra_state() -> dict``: JSON-able
  configuration and extra tensors (e.g. normalisation statistics) saved in every checkpoint;
  optionally ``provenance() -> Provenance`` (the training data's files, period and seed);
  optionally ``heldout() -> Task``: the same task over held-out data, for ``eval_every``;
  optionally ``evaluation() -> Task``: the task ``eval_every`` measures on the training data,
  where its training draws inputs that evaluations should not (default: the task itself).

:func:`fit` runs a typed :class:`Recipe` (kind, model options, data, training options) through
the kind registered in :mod:`diffsci.core.checkpoint`: the domain CLIs only parse into a recipe.

Reproducibility: the batch of step ``k`` is drawn from a generator seeded by
``(seed, "batch", k)``, so a run killed at any point and resumed from its last checkpoint
(model, EMA, optimizer, step, RNG states) ends bitwise equal to an uninterrupted run, and
under ``torchrun`` rank ``r`` trains on slice ``r`` of the same global batch (DDP averages the
gradients, so the loss equals the single-process loss on that batch).

Checkpoints are written atomically (temp file, fsync, ``os.replace``) as
``RUN/ckpt_XXXXXXXX.pt``; ``RUN/latest.pt`` is then replaced by a hard link to it, so a kill at
any moment leaves ``latest.pt`` either the previous or the new complete checkpoint. A metrics
log ``RUN/metrics.jsonl`` gets one JSON line every ``log_every`` steps.

Generalisation: with ``eval_every`` the line of every ``eval_every``-th step also holds
``eval_train_loss`` and ``eval_heldout_loss``, the EMA weights' mean loss on ``eval_batches``
fixed batches of the training data and of the task's held-out data (:func:`fixed_batch_loss`:
the same batches at every evaluation, so the numbers are comparable along a run and between
runs of one task). Held-out loss far above the training one is overfitting; the two equal and
flat is a net that cannot fit more (capacity), not one that needs more data.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from diffsci.core.checkpoint import (
    CHECKPOINT_FORMAT,
    get_kind,
    latest_checkpoint,
    link_latest,
    load_checkpoint,
    migrate,
    registered_kinds,
    save_checkpoint,
)
from diffsci.core.config import from_dict, to_dict
from diffsci.core.distributed import dist_info
from diffsci.core.errors import CheckpointError, DiffsciError
from diffsci.core.io import check_int, check_range
from diffsci.core.io import progress as progress_bar
from diffsci.core.utils import make_generator, resolve_device, tree_map

__all__ = [
    "Recipe",
    "fit",
    "TrainConfig",
    "learning_rate",
    "Task",
    "TrainResult",
    "train",
    "EMA",
    "set_activation_checkpointing",
    "fixed_batch_loss",
]


@dataclass(frozen=True)
class TrainConfig:
    """Training hyper-parameters (frozen; saved in every checkpoint)."""

    steps: int = 1000
    """optimizer steps in all (a resumed run continues to this step)"""
    batch_size: int = 64
    """global batch (split over ``torchrun`` processes)"""
    lr: float = 1e-3
    """AdamW learning rate after warm-up"""
    weight_decay: float = 0.0
    warmup_steps: int = 0
    """linear learning-rate warm-up from lr / warmup_steps"""
    decay_start: int = 0
    """0: the learning rate stays at lr after warm-up. Otherwise it stays at lr up to this step and
    then falls linearly to lr_final at ``steps`` (a warm-up-stable-decay schedule: a long run at a
    constant rate can be cooled down from any of its checkpoints, Hägele et al. 2024,
    arXiv:2405.18392)"""
    lr_final: float = 0.0
    """the learning rate at ``steps`` when decay_start is set"""
    ema_decay: float = 0.999
    """EMA decay (with warm-up min(decay, (1 + k) / (10 + k)))"""
    grad_clip: float = 1.0
    """gradient-norm clip (0: none)"""
    log_every: int = 10
    """steps between lines of RUN/metrics.jsonl"""
    ckpt_every: int = 100
    """steps between checkpoints"""
    keep_checkpoints: int = 2
    """ckpt_*.pt files kept (latest.pt links the newest)"""
    seed: int = 0
    """seeds the batches ((seed, "batch", step)) and, in fit, the initial weights"""
    device: str = "auto"
    """auto (CUDA when present), cpu, cuda[:N]"""
    bf16: bool = True
    """autocast to bfloat16 on CUDA; ignored on CPU"""
    max_minutes: float | None = None
    """stop (with a checkpoint) after this wall time"""
    eval_every: int = 0
    """steps between evaluations of the EMA weights on fixed training and held-out batches
    (``eval_train_loss``, ``eval_heldout_loss`` in RUN/metrics.jsonl); 0: none. The task must
    offer ``heldout()``"""
    eval_batches: int = 16
    """batches (of ``batch_size``) in each of the two evaluations"""
    activation_checkpointing: bool = False
    """recompute activations in the backward pass instead of keeping them (less memory, about one
    more forward pass of time): sets ``activation_checkpointing`` on every submodule of the model
    that has that attribute; a model without one refuses it"""

    def __post_init__(self):
        for name in ("steps", "batch_size", "log_every", "ckpt_every", "keep_checkpoints"):
            check_int(getattr(self, name), f"train.{name}")
        check_int(self.warmup_steps, "train.warmup_steps", minimum=0)
        check_int(self.eval_every, "train.eval_every", minimum=0)
        check_int(self.decay_start, "train.decay_start", minimum=0)
        check_range(self.lr_final, "train.lr_final", 0)
        if self.decay_start and self.decay_start >= self.steps:
            raise DiffsciError(f"train.decay_start ({self.decay_start}) must come before train.steps ({self.steps})")
        if self.decay_start and self.lr_final > self.lr:
            raise DiffsciError(f"train.lr_final ({self.lr_final}) must not exceed train.lr ({self.lr})")
        check_int(self.eval_batches, "train.eval_batches")
        check_range(self.lr, "train.lr", 0, lo_open=True)
        check_range(self.ema_decay, "train.ema_decay", 0, 1, hi_open=True)
        check_range(self.grad_clip, "train.grad_clip", 0)
        check_range(self.weight_decay, "train.weight_decay", 0)
        if self.max_minutes is not None:
            check_range(self.max_minutes, "train.max_minutes", 0, lo_open=True)
        if not isinstance(self.activation_checkpointing, bool):
            raise DiffsciError(f"train.activation_checkpointing must be true or false, got {self.activation_checkpointing!r}")

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        return from_dict(cls, d, where="train")


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """The learning rate of optimizer step ``step`` (0-based): linear warm-up over ``warmup_steps``,
    constant ``lr``, and from ``decay_start`` (when set) a linear fall to ``lr_final`` at ``steps``."""
    lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else cfg.lr
    if cfg.decay_start and step >= cfg.decay_start:
        frac = min(1.0, (step + 1 - cfg.decay_start) / (cfg.steps - cfg.decay_start))
        lr = min(lr, cfg.lr + (cfg.lr_final - cfg.lr) * frac)
    return lr


class Task(Protocol):
    kind: str

    def sample_batch(self, generator: torch.Generator, batch_size: int) -> Any: ...

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor: ...

    def model_config(self) -> dict: ...


@dataclass
class TrainResult:
    step: int
    last_loss: float | None
    checkpoint: Path | None
    stopped_early: bool = False


class EMA:
    """Exponential moving average of parameters (and a copy of buffers), with warm-up
    ``decay_k = min(decay, (1 + k) / (10 + k))``."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for k, v in model.state_dict().items():
            s = self.shadow[k]
            if v.dtype.is_floating_point:
                s.mul_(d).add_(v.detach(), alpha=1 - d)
            else:
                s.copy_(v)

    def state_dict(self) -> dict:
        return self.shadow

    def load_state_dict(self, sd: dict) -> None:
        for k, v in sd.items():
            self.shadow[k].copy_(v)


# ------------------------------------------------------------------------------ RNG state
def _rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": list(random.getstate()[1]),
        "python_version": random.getstate()[0],
        "python_gauss": random.getstate()[2],
    }


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), *n[2:]))
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))


# ------------------------------------------------------------------------------ distributed
def _slice_for_rank(batch, rank: int, world: int, batch_size: int):
    per = batch_size // world
    return tree_map(lambda x: x[rank * per : (rank + 1) * per] if x.ndim and x.shape[0] == batch_size else x, batch)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def _load_warm_start(model: nn.Module, weights: dict) -> list[str]:
    """Load ``weights`` into ``model``; keys the model has but ``weights`` lacks are allowed only
    where a submodule lists their name in ``warm_start_optional`` (parameters that start as
    no-ops, such as a zero-initialised self-conditioning branch) or where a submodule's
    ``warm_start_missing(keys) -> accepted keys`` (keys relative to it) makes them no-ops (a net
    grown by extra layers that start as the identity). Returns those keys."""
    own = model.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    if unexpected:
        raise RuntimeError(f"state dict mismatch:\nunexpected keys {unexpected[:3]}")
    optional = tuple(p for m in model.modules() for p in getattr(m, "warm_start_optional", ()))
    left = [k for k in missing if not any(p in k for p in optional)]
    model.load_state_dict(weights, strict=False)
    for name, module in model.named_modules():
        hook = getattr(module, "warm_start_missing", None)
        prefix = f"{name}." if name else ""
        mine = [k[len(prefix):] for k in missing if k.startswith(prefix)]
        if hook is not None and mine:
            accepted = {prefix + k for k in hook(mine)}
            left = [k for k in left if k not in accepted]
    if left:
        raise RuntimeError(f"state dict mismatch:\nmissing keys {left[:3]}")
    return missing


# ------------------------------------------------------------------------------ the loop
def set_activation_checkpointing(model: nn.Module, on: bool) -> int:
    """Set ``activation_checkpointing = on`` on every submodule of ``model`` that has the attribute
    (a flag of the module, not of its weights: never saved). Returns how many modules have it;
    turning it on in a model without any is refused."""
    found = [m for m in model.modules() if hasattr(m, "activation_checkpointing")]
    if on and not found:
        raise DiffsciError(f"train.activation_checkpointing: {type(model).__name__} does not support activation "
                           "checkpointing; leave it off")
    for m in found:
        m.activation_checkpointing = on
    return len(found)


def _setup_device(cfg: TrainConfig):
    """(device, world, rank, torch.distributed or None) for this process (``torchrun`` aware)."""
    world, rank, local = dist_info()
    device = resolve_device(cfg.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if cfg.batch_size % world:
        raise DiffsciError(f"batch_size {cfg.batch_size} is not divisible by the {world} processes")
    dist = None
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device, world, rank, dist


def _say(rank: int, text: str) -> None:
    if rank == 0:
        print(f"[train] {text}", file=sys.stderr)


def _load_migrated(path, kind: str, device) -> dict:
    """The checkpoint at ``path`` (of ``kind``), brought to the current config version when the
    kind is registered (tasks of unregistered kinds, e.g. in tests, use their files as written)."""
    ck = load_checkpoint(path, expected_kind=kind, map_location=device)
    if kind in registered_kinds():
        ck, _ = migrate(ck, source=str(path))
    return ck


def _resume(out_dir: Path, task, model, ema, opt, model_config: dict, device, rank: int):
    """Restore model, EMA, optimizer and RNG states from ``out_dir``'s latest checkpoint.
    Returns (step, last loss, checkpoint path); (0, None, None) when there is none."""
    ck_path = latest_checkpoint(out_dir)
    if ck_path is None:
        _say(rank, f"--resume: no checkpoint in {out_dir}, starting from scratch")
        return 0, None, None
    ck = _load_migrated(ck_path, task.kind, device)
    old, new = ck["model_config"] or {}, model_config or {}
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    kind = get_kind(task.kind) if task.kind in registered_kinds() else None
    sampling = [k for k in changed if kind and k in kind.sampling_fields]
    recipe = [k for k in changed if kind and k in kind.task_fields]
    trained = [k for k in changed if k not in sampling and k not in recipe]
    if trained:
        raise CheckpointError(f"{ck_path}: model configuration differs from this run's in {', '.join(trained)}; "
                              "refusing to resume")

    def diff(keys):
        return ", ".join(f"{k} {old.get(k)} -> {new.get(k)}" for k in keys)

    if sampling:
        _say(rank, f"resume: sampling default(s) {diff(sampling)} (nothing trained changes)")
    if recipe:
        _say(rank, f"resume: training-task option(s) {diff(recipe)} (the network is the same; "
                   "training goes on with this run's options)")
    model.load_state_dict(ck["model"])
    ema.load_state_dict(ck["ema"])
    opt.load_state_dict(ck["optimizer"])
    _set_rng_state(ck["rng"])
    _say(rank, f"resumed from {ck_path} at step {int(ck['step'])}")
    return int(ck["step"]), ck.get("last_loss"), Path(ck_path)


def _warm_start(init_from, task, model, ema, model_config: dict, device, rank: int) -> None:
    """Model and EMA from ``init_from``'s EMA weights (its raw weights if it has no EMA)."""
    ck = _load_migrated(init_from, task.kind, device)
    weights = ck["ema"] if "ema" in ck else ck["model"]
    try:
        optional = _load_warm_start(model, weights)
        ema.load_state_dict(weights)
        own = model.state_dict()  # the keys the checkpoint lacks: the EMA starts from the model's no-op values
        ema.load_state_dict({k: own[k] for k in optional})
    except RuntimeError as e:
        first = str(e).strip().splitlines()[1:2] or [str(e)]
        raise CheckpointError(f"{init_from}: its weights do not fit this model (the model configuration "
                              f"differs: {first[0].strip()}); cannot warm-start from it") from None
    if optional:
        _say(rank, f"warm start: {len(optional)} new parameter tensor(s) not in {init_from} start as no-ops "
                   "(zero-initialised branches, or layers that start as the identity)")
    _say(rank, f"warm start from {init_from} (its step {ck.get('step')})")
    old = ck.get("model_config") or {}
    changed = sorted(k for k in set(old) | set(model_config) if old.get(k) != model_config.get(k))
    if changed:
        _say(rank, f"warm start: model configuration differs from the checkpoint's in {', '.join(changed)} "
                   "(the weights fit; training continues with this run's settings)")


def _payload(task, cfg: TrainConfig, model_config: dict, step: int, model, ema, opt, last_loss) -> dict:
    """The checkpoint dict of the current training state."""
    provenance = task.provenance() if hasattr(task, "provenance") else None
    payload = {
        "format": CHECKPOINT_FORMAT,
        "kind": task.kind,
        "model_config": model_config,
        "train_config": dataclasses.asdict(cfg),
        "extra": task.extra_state() if hasattr(task, "extra_state") else {},
        "step": step,
        "model": _unwrap(model).state_dict(),
        "ema": ema.state_dict(),
        "optimizer": opt.state_dict(),
        "rng": _rng_state(),
        "last_loss": last_loss,
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if task.kind in registered_kinds():
        payload["config_version"] = get_kind(task.kind).version
    if provenance is not None:
        payload["provenance"] = to_dict(provenance)
    return payload


def fixed_batch_loss(task, model: nn.Module, batches: int, batch_size: int, *, seed: int = 0,
                     device="cpu") -> float:
    """Mean of ``task.loss`` over ``batches`` batches drawn from generators seeded by ``(seed,
    "eval", i)``: the same batches for every model and every call (torch's global RNG is left
    as it was), without gradients. ``model`` is evaluated as given (put it in eval mode)."""
    total = 0.0
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        for i in range(batches):
            torch.manual_seed(i)
            batch = tree_map(lambda x: x.to(device), task.sample_batch(make_generator(seed, "eval", i), batch_size))
            total += float(task.loss(model, batch))
    return total / batches


class _Evaluator:
    """``eval_every``: the EMA weights' fixed-batch loss on the task's training and held-out data."""

    def __init__(self, task, model: nn.Module, cfg: TrainConfig, device):
        heldout = getattr(task, "heldout", None)
        if heldout is None:
            raise DiffsciError(f"train.eval_every: the {task.kind} task has no held-out data to evaluate on; "
                               "set eval_every to 0")
        evaluation = getattr(task, "evaluation", None)
        self.tasks = {"eval_train_loss": evaluation() if evaluation else task, "eval_heldout_loss": heldout()}
        self.cfg, self.device = cfg, device
        self.model = copy.deepcopy(_unwrap(model)).eval()

    def __call__(self, ema: EMA) -> dict:
        self.model.load_state_dict(ema.state_dict())
        cfg = self.cfg
        return {name: round(fixed_batch_loss(t, self.model, cfg.eval_batches, cfg.batch_size, seed=cfg.seed,
                                             device=self.device), 5) for name, t in self.tasks.items()}


def train(
    model: nn.Module,
    task: Task,
    cfg: TrainConfig,
    out_dir: str | os.PathLike,
    *,
    resume: bool = False,
    progress: bool = True,
    init_from: str | os.PathLike | None = None,
) -> TrainResult:
    """Train ``model`` on ``task`` for ``cfg.steps`` optimizer steps, writing checkpoints to ``out_dir``.

    With ``resume=True`` the run continues from ``out_dir/latest.pt`` (model, EMA, optimizer,
    step, RNG states); the stored configuration must match. Handles ``torchrun`` (reads
    ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``; gloo on CPU, nccl on CUDA). SIGTERM triggers a
    checkpoint and a clean stop.

    ``init_from`` (a checkpoint file or run folder, e.g. a shipped slim checkpoint) warm-starts a
    new run: model and EMA start from its EMA weights (its ``model`` weights if it has no EMA),
    with a fresh optimizer and step 0; its weights must fit the model (configuration differences
    that leave the weights' shapes alone, such as loss weights, are printed and allowed). ``resume``
    wins when the run folder already has a checkpoint.
    """
    out_dir = Path(out_dir)
    device, world, rank, dist = _setup_device(cfg)
    model = model.to(device)
    if cfg.activation_checkpointing:
        set_activation_checkpointing(model, True)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ema = EMA(model, cfg.ema_decay)
    model_config = task.model_config()
    step, last_loss, ckpt_path = 0, None, None
    if resume:
        step, last_loss, ckpt_path = _resume(out_dir, task, model, ema, opt, model_config, device, rank)
    if init_from is not None and ckpt_path is None:  # a run being resumed keeps its own weights
        _warm_start(init_from, task, model, ema, model_config, device, rank)
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        _trim_metrics(out_dir / "metrics.jsonl", step)

    net = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)

    autocast = device.type == "cuda" and cfg.bf16
    stop = {"flag": False}

    def _on_term(signum, frame):  # finish the step, checkpoint, exit
        stop["flag"] = True

    old_handler = signal.signal(signal.SIGTERM, _on_term) if _is_main_thread() else None
    t_start = time.time()

    def _save():
        nonlocal ckpt_path
        if rank != 0:
            return
        ckpt_path = save_checkpoint(out_dir / f"ckpt_{step:08d}.pt",
                                    _payload(task, cfg, model_config, step, model, ema, opt, last_loss))
        link_latest(ckpt_path)
        for old in sorted(out_dir.glob("ckpt_*.pt"))[: -cfg.keep_checkpoints]:
            old.unlink(missing_ok=True)

    evaluate = _Evaluator(task, model, cfg, device) if cfg.eval_every and rank == 0 else None
    bar = progress_bar(total=cfg.steps, initial=step, desc=f"train {task.kind}", enabled=progress and rank == 0)
    log = open(out_dir / "metrics.jsonl", "a") if rank == 0 else None
    stopped_early = False
    try:
        net.train()
        while step < cfg.steps:
            gen = make_generator(cfg.seed, "batch", step)
            batch = task.sample_batch(gen, cfg.batch_size)
            batch = tree_map(lambda x: x.to(device), _slice_for_rank(batch, rank, world, cfg.batch_size))
            lr = learning_rate(cfg, step)
            for group in opt.param_groups:
                group["lr"] = lr
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast):
                loss = task.loss(net, batch)
            if not torch.isfinite(loss):
                raise DiffsciError(f"training loss became {loss.item()} at step {step}; lower the learning rate")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
            opt.step()
            ema.update(_unwrap(model), step)
            step += 1
            loss_val = loss.detach()
            if dist is not None:
                dist.all_reduce(loss_val)
                loss_val = loss_val / world
            last_loss = float(loss_val)
            bar.update(1)
            bar.set_postfix(loss=f"{last_loss:.4f}", refresh=False)
            evals = evaluate(ema) if evaluate is not None and step % cfg.eval_every == 0 else {}
            if log is not None and (step % cfg.log_every == 0 or step == cfg.steps or evals):
                log.write(json.dumps({"step": step, "loss": last_loss, "lr": lr, "grad_norm": float(gnorm),
                                      "elapsed_s": round(time.time() - t_start, 3), **evals}) + "\n")
                log.flush()
            timed_out = cfg.max_minutes is not None and (time.time() - t_start) > 60 * cfg.max_minutes
            if step % cfg.ckpt_every == 0 or step == cfg.steps or stop["flag"] or timed_out:
                _save()
            if stop["flag"] or timed_out:
                stopped_early = step < cfg.steps
                break
    finally:
        bar.close()
        if log is not None:
            log.close()
        if old_handler is not None:
            signal.signal(signal.SIGTERM, old_handler)
    if dist is not None:
        dist.barrier()
    return TrainResult(step=step, last_loss=last_loss, checkpoint=ckpt_path, stopped_early=stopped_early)


# ------------------------------------------------------------------------------ recipes
@dataclass(frozen=True)
class Recipe:
    """Everything a training run needs, typed: the model ``kind``, the kind's model options
    (its ``options_cls``/``config_cls`` dataclass; None: take them from ``init``), the kind's
    ``data`` dataclass (paths and selections), the :class:`TrainConfig`, and ``init``: a
    checkpoint to warm-start from (None: fresh weights)."""

    kind: str
    model: Any
    data: Any
    train: TrainConfig
    init: str | None = None

    @classmethod
    def from_tables(cls, kind: str, tables: dict | None = None, *, data: dict | None = None,
                    train: dict | None = None, init=None) -> "Recipe":
        """A recipe from a config file's tables (``model``, ``data``, ``train``; unknown tables
        and keys refused) with command-line values on top (``data``, ``train`` dicts; None
        values ignored). Training options start from the kind's ``train_defaults``. Without a
        ``model`` table and with ``init``, the model options are the init checkpoint's (migrated
        to the current version)."""
        tables = dict(tables or {})
        unknown = sorted(set(tables) - {"model", "data", "train"})
        if unknown:
            raise DiffsciError(f"config: unknown table(s) {', '.join(unknown)} (known: model, data, train)")
        entry = get_kind(kind)
        options_cls = entry.options_cls or entry.config_cls
        if "model" in tables or init is None:
            model = from_dict(options_cls, tables.get("model"), where="model")
        else:
            ck, _ = migrate(load_checkpoint(init, expected_kind=kind), source=str(init))
            names = {f.name for f in dataclasses.fields(options_cls)}
            model = from_dict(options_cls, {k: v for k, v in (ck.get("model_config") or {}).items() if k in names},
                              where=f"{init}: model_config")
            print(f"model configuration from {init} (no 'model' table in the config)", file=sys.stderr)
        data_table = {**(tables.get("data") or {}), **{k: v for k, v in (data or {}).items() if v is not None}}
        data_obj = from_dict(entry.data_cls, data_table, where="data") if entry.data_cls else data_table
        train_table = {**entry.train_defaults, **(tables.get("train") or {}),
                       **{k: v for k, v in (train or {}).items() if v is not None}}
        return cls(kind, model, data_obj, from_dict(TrainConfig, train_table, where="train"),
                   None if init is None else str(init))


def fit(recipe: Recipe, out_dir, *, resume: bool = False, progress: bool = True) -> TrainResult:
    """Run a :class:`Recipe`: the kind's ``make_task(recipe)`` reads the data and completes the
    model configuration (``task.config``); the network is built from it with its initial
    weights drawn from ``torch.manual_seed(recipe.train.seed)`` (the global RNG is restored
    afterwards), and :func:`train` runs. The task's ``provenance()`` goes into every checkpoint."""
    entry = get_kind(recipe.kind)
    if entry.make_task is None:
        raise DiffsciError(f"model kind {recipe.kind!r} has no training task registered")
    task = entry.make_task(recipe)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.train.seed)
        model = entry.build(task.config)
    return train(model, task, recipe.train, out_dir, resume=resume, progress=progress, init_from=recipe.init)


def _is_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _trim_metrics(path: Path, step: int) -> None:
    """Drop log lines past ``step`` (written after the last checkpoint of a killed run)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(k + "\n" for k in keep))
    os.replace(tmp, path)

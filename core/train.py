"""The training loop shared by every model: devices, bf16, EMA, clipping, DDP, checkpoints.

A model family plugs in through a small :class:`Task` (composition, not inheritance):

- ``kind``: a string naming the model family; checkpoints carry it, and loading a checkpoint
  of another kind is refused with a clear error.
- ``sample_batch(generator, batch_size) -> batch``: draws a *global* batch, including all
  its randomness (data indices, noise levels, noise), from the generator it is given.
- ``loss(model, batch) -> scalar``: deterministic given the batch (mean over its examples).
- ``model_config() -> dict`` and optionally ``extra_state() -> dict``: JSON-able
  configuration and extra tensors (e.g. normalisation statistics) saved in every checkpoint.

Reproducibility: the batch of step ``k`` is drawn from a generator seeded by
``(seed, "batch", k)``, so a run killed at any point and resumed from its last checkpoint
(model, EMA, optimizer, step, RNG states) ends bitwise equal to an uninterrupted run, and
under ``torchrun`` rank ``r`` trains on slice ``r`` of the same global batch (DDP averages the
gradients, so the loss equals the single-process loss on that batch).

Checkpoints are written atomically (temp file, fsync, ``os.replace``) as
``RUN/ckpt_XXXXXXXX.pt``; ``RUN/latest.pt`` is then replaced by a hard link to it, so a kill at
any moment leaves ``latest.pt`` either the previous or the new complete checkpoint. A metrics
log ``RUN/metrics.jsonl`` gets one JSON line every ``log_every`` steps.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np
import torch
from torch import nn

from diffsci.core.errors import CheckpointError, DiffsciError
from diffsci.core.utils import atomic_output, make_generator, resolve_device, tree_map

__all__ = [
    "TrainConfig",
    "Task",
    "TrainResult",
    "train",
    "save_checkpoint",
    "load_checkpoint",
    "latest_checkpoint",
    "export_checkpoint",
    "average_checkpoints",
    "EMA",
    "CHECKPOINT_FORMAT",
]

CHECKPOINT_FORMAT = "diffsci-checkpoint-v1"


@dataclass(frozen=True)
class TrainConfig:
    """Training hyper-parameters (frozen; saved in every checkpoint)."""

    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 0
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    log_every: int = 10
    ckpt_every: int = 100
    keep_checkpoints: int = 2
    seed: int = 0
    device: str = "auto"
    bf16: bool = True  # autocast to bfloat16 on CUDA; ignored on CPU
    max_minutes: float | None = None  # stop (with a checkpoint) after this wall time

    def __post_init__(self):
        for name in ("steps", "batch_size", "log_every", "ckpt_every", "keep_checkpoints"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise DiffsciError(f"TrainConfig.{name} must be a positive integer, got {v!r}")
        if self.lr <= 0 or not math.isfinite(self.lr):
            raise DiffsciError(f"TrainConfig.lr must be a positive number, got {self.lr!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise DiffsciError(f"TrainConfig.ema_decay must lie in [0, 1), got {self.ema_decay!r}")
        if self.grad_clip < 0 or self.warmup_steps < 0 or self.weight_decay < 0:
            raise DiffsciError("TrainConfig: grad_clip, warmup_steps and weight_decay must be >= 0")

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise DiffsciError(f"unknown training option(s): {', '.join(sorted(unknown))}")
        return cls(**d)


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


# ------------------------------------------------------------------------------ checkpoints
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


def save_checkpoint(path: str | os.PathLike, payload: dict) -> Path:
    """Write ``payload`` to ``path`` atomically (temp file in the same folder, fsync, rename)."""
    path = Path(path)
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
    return path


def _link_latest(ckpt: Path) -> Path:
    latest = ckpt.with_name("latest.pt")
    tmp = ckpt.with_name(f".latest.pt.tmp{os.getpid()}")
    if tmp.exists():
        tmp.unlink()
    try:
        os.link(ckpt, tmp)
    except OSError:  # file systems without hard links: copy
        import shutil

        shutil.copyfile(ckpt, tmp)
    os.replace(tmp, latest)
    return latest


def load_checkpoint(path: str | os.PathLike, *, expected_kind: str | None = None, map_location="cpu") -> dict:
    """Load a diffsci checkpoint; a missing, corrupt or foreign file raises CheckpointError.

    ``path`` may be a file or a run folder (its ``latest.pt`` is used).
    """
    path = Path(path)
    if path.is_dir():
        path = path / "latest.pt"
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # unpickling errors, truncated files
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a diffsci checkpoint (format {payload.get('format') if isinstance(payload, dict) else type(payload).__name__!r})")
    if expected_kind is not None and payload.get("kind") != expected_kind:
        raise CheckpointError(
            f"{path}: checkpoint is for model kind {payload.get('kind')!r}, expected {expected_kind!r}"
        )
    return payload


def export_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, *, expected_kind: str | None = None,
                      model_config: dict | None = None) -> Path:
    """Write a slim copy of a training checkpoint for shipping: format, kind, configs, extra
    state, step, last loss and the EMA weights (no optimizer or RNG state). ``load_checkpoint``
    accepts it; model loaders use ``ema``.

    ``model_config``: top-level model-configuration keys to change in the copy (sampling
    settings such as a default rate; the keys must exist), recorded as ``export_overrides``."""
    ck = load_checkpoint(src, expected_kind=expected_kind)
    slim = _slim(ck, src, model_config)
    slim["ema"] = {k: v.float() if v.is_floating_point() else v for k, v in ck["ema"].items()}
    slim["exported_from"] = str(src)
    return save_checkpoint(dst, slim)


def average_checkpoints(srcs: Sequence[str | os.PathLike], dst: str | os.PathLike, *,
                        weights: Sequence[float] | None = None, model_config: dict | None = None) -> Path:
    """Write a slim checkpoint whose EMA weights are the weighted mean of several checkpoints'
    (a "model soup", Wortsman et al. 2022: fine-tunes of one parent average well). They must be
    of one kind with the same weight names and shapes; configs, step and loss are the first's,
    the sources and weights are recorded as ``averaged_from``. ``model_config`` as in
    :func:`export_checkpoint`."""
    if len(srcs) < 2:
        raise DiffsciError("average_checkpoints needs at least two checkpoints")
    weights = [1.0 / len(srcs)] * len(srcs) if weights is None else [float(w) for w in weights]
    if len(weights) != len(srcs) or min(weights) < 0 or not math.isclose(sum(weights), 1.0, rel_tol=1e-6):
        raise DiffsciError(f"average_checkpoints: need one non-negative weight per checkpoint, summing to 1; got {weights}")
    cks = [load_checkpoint(s) for s in srcs]
    first = cks[0]
    for src, ck in zip(srcs[1:], cks[1:]):
        if ck.get("kind") != first.get("kind"):
            raise CheckpointError(f"{src}: kind {ck.get('kind')!r}, but {srcs[0]} is {first.get('kind')!r}")
        a, b = first["ema"], ck["ema"]
        if a.keys() != b.keys() or any(a[k].shape != b[k].shape for k in a):
            raise CheckpointError(f"{src}: its weights do not match {srcs[0]}'s (another model configuration)")
    slim = _slim(first, srcs[0], model_config)
    slim["ema"] = {k: (sum(w * ck["ema"][k].float() for w, ck in zip(weights, cks)) if v.is_floating_point() else v)
                   for k, v in first["ema"].items()}
    slim["averaged_from"] = [{"checkpoint": str(s), "step": ck.get("step"), "weight": w}
                             for s, ck, w in zip(srcs, cks, weights)]
    slim["exported_from"] = "average of " + ", ".join(str(s) for s in srcs)
    return save_checkpoint(dst, slim)


def _slim(ck: dict, src, model_config: dict | None) -> dict:
    slim = {k: ck[k] for k in ("format", "kind", "model_config", "train_config", "extra", "step", "last_loss", "saved_at")
            if k in ck}
    if model_config:
        current = dict(slim.get("model_config") or {})
        unknown = sorted(set(model_config) - set(current))
        if unknown:
            raise DiffsciError(f"export_checkpoint: {src} has no model configuration key(s) {', '.join(unknown)}")
        current.update(model_config)
        slim["model_config"] = current
        slim["export_overrides"] = dict(model_config)
    return slim


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """``RUN/latest.pt`` if present (else the newest ``ckpt_*.pt``), or None."""
    run_dir = Path(run_dir)
    latest = run_dir / "latest.pt"
    if latest.exists():
        return latest
    ckpts = sorted(run_dir.glob("ckpt_*.pt"))
    return ckpts[-1] if ckpts else None


# ------------------------------------------------------------------------------ distributed
def _dist_info() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return world, rank, local


def _slice_for_rank(batch, rank: int, world: int, batch_size: int):
    per = batch_size // world
    return tree_map(lambda x: x[rank * per : (rank + 1) * per] if x.ndim and x.shape[0] == batch_size else x, batch)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def _load_warm_start(model: nn.Module, weights: dict) -> list[str]:
    """Load ``weights`` into ``model``; keys the model has but ``weights`` lacks are allowed only
    where a submodule lists their name in ``warm_start_optional`` (parameters that start as
    no-ops, such as a zero-initialised self-conditioning branch). Returns those keys."""
    own = model.state_dict()
    missing = sorted(set(own) - set(weights))
    optional = tuple(p for m in model.modules() for p in getattr(m, "warm_start_optional", ()))
    bad = [k for k in missing if not any(p in k for p in optional)]
    unexpected = sorted(set(weights) - set(own))
    if bad or unexpected:
        raise RuntimeError("state dict mismatch:\n" + (f"missing keys {bad[:3]}" if bad else f"unexpected keys {unexpected[:3]}"))
    model.load_state_dict(weights, strict=False)
    return missing


# ------------------------------------------------------------------------------ the loop
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
    world, rank, local = _dist_info()
    device = resolve_device(cfg.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if cfg.batch_size % world:
        raise DiffsciError(f"batch size {cfg.batch_size} is not divisible by the {world} processes")
    dist = None
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")

    model = model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ema = EMA(model, cfg.ema_decay)
    step = 0
    model_config = task.model_config()
    resumed_loss, resumed_path = None, None
    if resume:
        ck_path = latest_checkpoint(out_dir)
        if ck_path is None:
            if rank == 0:
                print(f"[train] --resume: no checkpoint in {out_dir}, starting from scratch", file=sys.stderr)
        else:
            ck = load_checkpoint(ck_path, expected_kind=task.kind, map_location=device)
            if ck["model_config"] != model_config:
                raise CheckpointError(f"{ck_path}: model configuration differs from this run's; refusing to resume")
            model.load_state_dict(ck["model"])
            ema.load_state_dict(ck["ema"])
            opt.load_state_dict(ck["optimizer"])
            step = int(ck["step"])
            resumed_loss, resumed_path = ck.get("last_loss"), Path(ck_path)
            _set_rng_state(ck["rng"])
            if rank == 0:
                print(f"[train] resumed from {ck_path} at step {step}", file=sys.stderr)
    if init_from is not None and resumed_path is None:  # a run being resumed keeps its own weights
        ck = load_checkpoint(init_from, expected_kind=task.kind, map_location=device)
        weights = ck["ema"] if "ema" in ck else ck["model"]
        try:
            optional = _load_warm_start(model, weights)
            ema.load_state_dict(weights)  # the EMA's copies of the optional keys keep the model's initial values
            if optional and rank == 0:
                print(f"[train] warm start: {len(optional)} new parameter tensor(s) not in {init_from} keep their "
                      "initial values (the model marks them optional: they start as no-ops)", file=sys.stderr)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[1:2] or [str(e)]
            raise CheckpointError(f"{init_from}: its weights do not fit this model (the model configuration "
                                  f"differs: {first[0].strip()}); cannot warm-start from it") from None
        if rank == 0:
            print(f"[train] warm start from {init_from} (its step {ck.get('step')})", file=sys.stderr)
            old = ck.get("model_config") or {}
            changed = sorted(k for k in set(old) | set(model_config) if old.get(k) != model_config.get(k))
            if changed:
                print(f"[train] warm start: model configuration differs from the checkpoint's in {', '.join(changed)} "
                      "(the weights fit; training continues with this run's settings)", file=sys.stderr)
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
    last_loss = resumed_loss  # a resumed run that is already done reports its checkpoint's loss
    ckpt_path = resumed_path

    def _save():
        nonlocal ckpt_path
        if rank != 0:
            return
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
        ckpt_path = save_checkpoint(out_dir / f"ckpt_{step:08d}.pt", payload)
        _link_latest(ckpt_path)
        for old in sorted(out_dir.glob("ckpt_*.pt"))[: -cfg.keep_checkpoints]:
            old.unlink(missing_ok=True)

    bar = None
    if progress and rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, initial=step, desc=f"train {task.kind}", mininterval=1.0, file=sys.stderr)
    log = open(out_dir / "metrics.jsonl", "a") if rank == 0 else None
    stopped_early = False
    try:
        net.train()
        while step < cfg.steps:
            gen = make_generator(cfg.seed, "batch", step)
            batch = task.sample_batch(gen, cfg.batch_size)
            batch = tree_map(lambda x: x.to(device), _slice_for_rank(batch, rank, world, cfg.batch_size))
            lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else cfg.lr
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
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{last_loss:.4f}", refresh=False)
            if log is not None and (step % cfg.log_every == 0 or step == cfg.steps):
                log.write(json.dumps({"step": step, "loss": last_loss, "lr": lr, "grad_norm": float(gnorm),
                                      "elapsed_s": round(time.time() - t_start, 3)}) + "\n")
                log.flush()
            timed_out = cfg.max_minutes is not None and (time.time() - t_start) > 60 * cfg.max_minutes
            if step % cfg.ckpt_every == 0 or step == cfg.steps or stop["flag"] or timed_out:
                _save()
            if stop["flag"] or timed_out:
                stopped_early = step < cfg.steps
                break
    finally:
        if bar is not None:
            bar.close()
        if log is not None:
            log.close()
        if old_handler is not None:
            signal.signal(signal.SIGTERM, old_handler)
    if dist is not None:
        dist.barrier()
    return TrainResult(step=step, last_loss=last_loss, checkpoint=ckpt_path, stopped_early=stopped_early)


def _is_main_thread() -> bool:
    import threading

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

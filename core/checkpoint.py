"""Checkpoints: one file format, one registry of model kinds, one loader.

A checkpoint is a ``torch.save`` dict (tensors and plain data only: loaded with
``weights_only=True``) with ``format`` = :data:`CHECKPOINT_FORMAT`, the model ``kind``, its
``model_config`` (a dict), ``config_version``, ``extra`` state (e.g. normalisation statistics),
``provenance`` of the training data, the step, and weights (``model``, ``ema``; training
checkpoints also ``optimizer`` and ``rng``).

A domain makes its model loadable by registering its kind::

    register_kind("protein-frames", ProteinModelConfig, build_model, version=1,
                  migrations={0: upgrade_v0}, default_path=shipped_checkpoint)

and every caller then loads through :func:`load_bundle`, which reads the file, checks the kind,
applies the kind's **explicit migrations** (``migrations[v]`` turns a version-``v`` checkpoint
dict into version ``v + 1``; checkpoints written before versions existed are version 0), reads
the config with :func:`diffsci.core.config.from_dict` (unknown keys refused), builds the model
and loads its weights. A checkpoint newer than the code is refused.

Writes are atomic (:func:`diffsci.core.io.write_torch`): a kill never leaves a half-written
checkpoint under its final name.
"""

from __future__ import annotations

import importlib
import math
import os
import shutil
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from diffsci.core.config import Provenance, from_dict, to_dict
from diffsci.core.errors import CheckpointError, DiffsciError
from diffsci.core.io import write_torch

__all__ = [
    "CHECKPOINT_FORMAT",
    "Kind",
    "Bundle",
    "register_kind",
    "get_kind",
    "registered_kinds",
    "default_checkpoint_path",
    "load_bundle",
    "migrate",
    "upgrade_checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "latest_checkpoint",
    "link_latest",
    "export_checkpoint",
    "average_checkpoints",
]

CHECKPOINT_FORMAT = "diffsci-checkpoint-v1"


# ----------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class Kind:
    """How to rebuild one model kind from its checkpoint.

    ``config_cls``: the frozen dataclass of its ``model_config``; ``build(config) -> nn.Module``;
    ``version``: the current ``config_version``; ``migrations[v](ck) -> ck``: version v -> v+1
    (whole checkpoint dict); ``default_path() -> Path``: the shipped checkpoint, if any;
    ``make_task(recipe) -> Task``: the training task for :func:`diffsci.core.train.fit`;
    ``data_cls``: the dataclass of the recipe's ``data`` table; ``options_cls``: the dataclass
    of the recipe's ``model`` table when it is not the whole config (the task completes it from
    the data, e.g. a weather model's grid and channels; None: ``config_cls``);
    ``train_defaults``: the kind's default training options (``TrainConfig`` fields);
    ``sampling_fields``: top-level ``model_config`` fields that only set how the model samples by
    default (a rotation rate, a churn): a run may be resumed with other values of them (its own
    win), since they change nothing that is trained; ``task_fields``: top-level fields that only
    shape the training task (how inputs are drawn), not the network: a resumed run may change
    them too (a curriculum, or one arm of an A/B from a shared checkpoint)."""

    name: str
    config_cls: type
    build: Callable[[Any], torch.nn.Module]
    version: int = 1
    migrations: Mapping[int, Callable[[dict], dict]] = field(default_factory=dict)
    default_path: Callable[[], Path] | None = None
    make_task: Callable[[Any], Any] | None = None
    data_cls: type | None = None
    options_cls: type | None = None
    train_defaults: Mapping[str, Any] = field(default_factory=dict)
    sampling_fields: tuple[str, ...] = ()
    task_fields: tuple[str, ...] = ()


_KINDS: dict[str, Kind] = {}


def register_kind(name: str, config_cls: type, build: Callable, **options) -> Kind:
    """Register (or replace) the kind ``name``; ``options`` are the other :class:`Kind` fields."""
    kind = Kind(name, config_cls, build, **options)
    missing = [v for v in range(kind.version) if v not in kind.migrations]
    if missing:
        raise DiffsciError(f"register_kind {name!r}: no migration from config version(s) {missing}")
    _KINDS[name] = kind
    return kind


def _import_kind(name: str) -> None:
    """Import the module that registers ``name``, as listed in the ``diffsci.kinds`` entry-point
    group (pyproject.toml), so loading a checkpoint needs no domain import first."""
    for ep in entry_points(group="diffsci.kinds"):
        if ep.name == name:
            importlib.import_module(ep.value)
            return


def get_kind(name: str) -> Kind:
    """The registered :class:`Kind` ``name`` (its module is imported on first use)."""
    if name not in _KINDS and isinstance(name, str):
        _import_kind(name)
    try:
        return _KINDS[name]
    except KeyError:
        known = ", ".join(sorted(_KINDS)) or "none"
        raise CheckpointError(f"no model kind {name!r} is registered (registered: {known}); a domain registers "
                              "its kinds with register_kind and lists them under diffsci.kinds in pyproject.toml") from None


def registered_kinds() -> list[str]:
    return sorted(_KINDS)


def default_checkpoint_path(kind: str) -> Path:
    """The shipped checkpoint of ``kind`` (the kind must define one)."""
    entry = get_kind(kind)
    if entry.default_path is None:
        raise CheckpointError(f"model kind {kind!r} ships no default checkpoint; give one")
    return Path(entry.default_path())


# ------------------------------------------------------------------------------------ bundles
@dataclass
class Bundle:
    """A loaded model: its kind, typed config, network (eval mode, on ``device``), extra state,
    data provenance (None for checkpoints written before it was recorded), where it came from,
    its training step and the config version it was migrated from (None: current)."""

    kind: str
    config: Any
    model: torch.nn.Module
    extra: dict
    provenance: Provenance | None
    source: str
    step: int | None = None
    migrated_from: int | None = None


def migrate(ck: dict, *, source: str = "<checkpoint>") -> tuple[dict, int | None]:
    """Bring a checkpoint dict to its kind's current config version with the kind's explicit
    migrations. Returns the new dict (the input is not changed) and the version it had (None if
    already current). A version newer than the code is refused."""
    entry = get_kind(ck.get("kind"))
    version = int(ck.get("config_version", 0))
    if version > entry.version:
        raise CheckpointError(f"{source}: config version {version} of kind {entry.name!r} is newer than this "
                              f"diffsci understands ({entry.version}); upgrade diffsci")
    if version == entry.version:
        return ck, None
    out = dict(ck)
    for v in range(version, entry.version):
        step = entry.migrations.get(v)
        if step is None:
            raise CheckpointError(f"{source}: no migration of kind {entry.name!r} from config version {v}")
        out = step(dict(out))
        out["config_version"] = v + 1
    return out, version


def load_bundle(path=None, kind: str | Sequence[str] | None = None, *, device="cpu",
                weights: str = "ema") -> Bundle:
    """Load a checkpoint as a :class:`Bundle`.

    ``path``: a checkpoint file or run folder (its ``latest.pt``); None: the shipped checkpoint
    of ``kind`` (the first, if several). ``kind``: the accepted kind(s) (None: any registered).
    ``weights``: ``"ema"`` (the EMA weights, or the raw ones if there are none), ``"model"``
    (the raw training weights) or ``"init"`` (the architecture with initial weights drawn from
    seed 0, a baseline; the global RNG is left as it was). The model is put in eval mode on ``device``."""
    kinds = [kind] if isinstance(kind, str) else list(kind or [])
    if path is None:
        if not kinds:
            raise DiffsciError("load_bundle: give a checkpoint path or a kind")
        path = default_checkpoint_path(kinds[0])
        if not Path(path).exists():
            raise DiffsciError(f"no checkpoint given and the default checkpoint {path} is missing")
    ck = load_checkpoint(path)
    if kinds and ck.get("kind") not in kinds:
        raise CheckpointError(f"{path}: checkpoint is for model kind {ck.get('kind')!r}, expected "
                              f"{' or '.join(map(repr, kinds))}")
    ck, old_version = migrate(ck, source=str(path))
    entry = get_kind(ck["kind"])
    config = from_dict(entry.config_cls, ck["model_config"], where=f"{path}: model_config")
    with torch.random.fork_rng(devices=[]):  # "init" weights: the same every time; the caller's RNG untouched
        torch.manual_seed(0)
        model = entry.build(config)
    if weights not in ("ema", "model", "init"):
        raise DiffsciError(f"load_bundle: weights must be ema, model or init, got {weights!r}")
    if weights != "init":
        state = ck["ema"] if weights == "ema" and "ema" in ck else ck.get("model")
        if state is None:
            raise CheckpointError(f"{path}: holds no {weights} weights")
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[1:2] or [str(exc)]
            raise CheckpointError(f"{path}: weights do not fit the model its config describes ({first[0].strip()})") from None
    prov = ck.get("provenance")
    source = str(path) + (" (untrained weights)" if weights == "init" else "")
    return Bundle(ck["kind"], config, model.eval().to(device), dict(ck.get("extra") or {}),
                  from_dict(Provenance, prov, where=f"{path}: provenance") if prov else None,
                  source, ck.get("step"), old_version)


def upgrade_checkpoint(src, dst) -> Path:
    """Write ``src`` migrated to the current config version to ``dst`` (atomically); the
    versions are recorded in ``migrated`` (``{"from": v, "to": current}``)."""
    ck = load_checkpoint(src)
    new, old = migrate(ck, source=str(src))
    if old is not None:
        new["migrated"] = {"from": old, "to": int(new["config_version"])}
    return save_checkpoint(dst, new)


# ---------------------------------------------------------------------------------- the files
def save_checkpoint(path: str | os.PathLike, payload: dict) -> Path:
    """Write ``payload`` to ``path`` atomically (temp file in the same folder, fsync, rename)."""
    return write_torch(path, payload)


def link_latest(ckpt: Path) -> Path:
    """Point ``RUN/latest.pt`` at ``ckpt`` (a hard link, or a copy where links are not
    supported), replacing it atomically."""
    latest = ckpt.with_name("latest.pt")
    tmp = ckpt.with_name(f".latest.pt.tmp{os.getpid()}")
    if tmp.exists():
        tmp.unlink()
    try:
        os.link(ckpt, tmp)
    except OSError:
        shutil.copyfile(ckpt, tmp)
    os.replace(tmp, latest)
    return latest


def load_checkpoint(path: str | os.PathLike, *, expected_kind: str | None = None, map_location="cpu") -> dict:
    """The raw checkpoint dict (no migration; see :func:`load_bundle` for a model). A missing,
    corrupt or foreign file, or one of another kind than ``expected_kind``, raises
    CheckpointError. ``path`` may be a file or a run folder (its ``latest.pt``)."""
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
        got = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{path}: not a diffsci checkpoint (format {got!r})")
    if expected_kind is not None and payload.get("kind") != expected_kind:
        raise CheckpointError(f"{path}: checkpoint is for model kind {payload.get('kind')!r}, expected {expected_kind!r}")
    return payload


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """``RUN/latest.pt`` if present (else the newest ``ckpt_*.pt``), or None."""
    run_dir = Path(run_dir)
    latest = run_dir / "latest.pt"
    if latest.exists():
        return latest
    ckpts = sorted(run_dir.glob("ckpt_*.pt"))
    return ckpts[-1] if ckpts else None


def _slim(ck: dict, src, model_config: dict | None) -> dict:
    """The shippable part of a checkpoint (no optimizer, no RNG), migrated to the current config
    version when its kind is registered, with ``model_config`` overrides applied and the result
    re-validated by the kind's config class."""
    keys = ("format", "kind", "config_version", "model_config", "train_config", "extra", "provenance", "step",
            "last_loss", "saved_at")
    slim = {k: ck[k] for k in keys if k in ck}
    registered = ck.get("kind") in _KINDS
    if registered:
        slim, _ = migrate(slim, source=str(src))
    if model_config:
        current = dict(slim.get("model_config") or {})
        unknown = sorted(set(model_config) - set(current))
        if unknown:
            raise DiffsciError(f"export_checkpoint: {src} has no model configuration key(s) {', '.join(unknown)}")
        current.update(model_config)
        if registered:
            entry = get_kind(slim["kind"])
            current = to_dict(from_dict(entry.config_cls, current, where="export overrides"))
        slim["model_config"] = current
        slim["export_overrides"] = dict(model_config)
    return slim


def export_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, *, expected_kind: str | None = None,
                      model_config: dict | None = None) -> Path:
    """Write a slim copy of a training checkpoint for shipping: format, kind, configs, extra
    state, provenance, step, last loss and the EMA weights in float32 (no optimizer or RNG
    state). ``model_config``: top-level model-configuration keys to change in the copy (sampling
    settings such as a default rate; the keys must exist, and the result must be a valid config),
    recorded as ``export_overrides``."""
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

"""Small shared helpers: broadcasting, seeded generators, pytrees of tensors, devices."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
from pathlib import Path
from typing import Any, Callable

import torch

from diffsci.core.errors import DiffsciError

__all__ = [
    "append_dims",
    "derive_seed",
    "make_generator",
    "randn",
    "rand",
    "tree_map",
    "resolve_device",
    "load_config_file",
]


def append_dims(x: torch.Tensor, ndim: int) -> torch.Tensor:
    """Append trailing singleton dims to ``x`` until it has ``ndim`` dims.

    Used to broadcast a per-example noise level ``(B,)`` against a state of any rank,
    instead of hard-coding ``reshape(-1, 1, 1, 1)``.

    >>> append_dims(torch.ones(4), 3).shape
    torch.Size([4, 1, 1])
    """
    extra = ndim - x.ndim
    if extra < 0:
        raise ValueError(f"append_dims: input has {x.ndim} dims, more than the target {ndim}")
    return x[(...,) + (None,) * extra]


def derive_seed(seed: int, *keys: int | str) -> int:
    """A 63-bit seed derived from ``seed`` and a path of keys (a stateless 'fold_in').

    ``derive_seed(seed, i)`` gives member/sample ``i`` its own stream, the same whatever the
    batch or ensemble size (GenCast folds the member index into the key the same way).
    """
    text = ":".join(str(k) for k in (int(seed),) + keys)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1


def make_generator(seed: int, *keys: int | str, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``derive_seed(seed, *keys)``."""
    gen = torch.Generator(device=device)
    gen.manual_seed(derive_seed(seed, *keys))
    return gen


def _draw(fn, shape, generator, dtype, device) -> torch.Tensor:
    if isinstance(generator, (list, tuple)):
        if len(generator) != shape[0]:
            raise ValueError(f"got {len(generator)} generators for a batch of {shape[0]}")
        draws = [fn(tuple(shape[1:]), generator=g, dtype=dtype, device=g.device) for g in generator]
        return torch.stack(draws).to(device) if draws else torch.empty(tuple(shape), dtype=dtype, device=device)
    gdev = generator.device if generator is not None else device
    return fn(tuple(shape), generator=generator, dtype=dtype, device=gdev).to(device)


def randn(shape, generator=None, dtype=torch.float32, device=None) -> torch.Tensor:
    """Standard normal draws of ``shape``.

    ``generator`` may be one ``torch.Generator`` or a list of them, one per leading index (one
    per sample / ensemble member), so example ``i`` gets the same numbers whatever the batch.
    """
    return _draw(torch.randn, shape, generator, dtype, device)


def rand(shape, generator=None, dtype=torch.float32, device=None) -> torch.Tensor:
    """Uniform [0, 1) draws; ``generator`` as in :func:`randn`."""
    return _draw(torch.rand, shape, generator, dtype, device)


def tree_map(fn: Callable[[torch.Tensor], Any], tree: Any) -> Any:
    """Apply ``fn`` to every tensor leaf of nested tuples/lists/dicts/dataclasses."""
    if isinstance(tree, torch.Tensor):
        return fn(tree)
    if dataclasses.is_dataclass(tree) and not isinstance(tree, type):
        return dataclasses.replace(
            tree, **{f.name: tree_map(fn, getattr(tree, f.name)) for f in dataclasses.fields(tree) if f.init}
        )
    if isinstance(tree, dict):
        return {k: tree_map(fn, v) for k, v in tree.items()}
    if isinstance(tree, tuple):
        return tuple(tree_map(fn, v) for v in tree)
    if isinstance(tree, list):
        return [tree_map(fn, v) for v in tree]
    return tree


def load_config_file(path) -> dict:
    """Read a JSON or TOML configuration file (``None`` -> ``{}``); errors name the file."""
    if not path:
        return {}

    p = Path(path)
    if not p.exists():
        raise DiffsciError(f"config file {path}: not found")
    try:
        if p.suffix == ".toml":
            return tomllib.loads(p.read_text())
        return json.loads(p.read_text())
    except Exception as exc:
        raise DiffsciError(f"config file {path}: cannot parse ({exc})") from None


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; otherwise the named device (checked)."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise DiffsciError(f"device {device!r}: unknown (use auto, cpu or cuda[:N])") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DiffsciError(f"device {device!r}: CUDA is not available on this machine")
    return dev

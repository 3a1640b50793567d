"""Several processes through ``torchrun``: ranks, their share of the work, a gather to rank 0.

``torchrun`` starts one process per rank and tells each its place through the environment
(``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``); without it a process is rank 0 of a world of 1 and
nothing here starts a process group.

Work that is a list of independent items (forecast member chunks, protein designs), each with
its own generator, is split by :func:`gather_shares`: rank ``r`` computes a contiguous share
of the items, rank 0 receives every result in item order, so the outcome is that of one
process. Collectives run over ``torch.distributed`` (gloo for CPU work, nccl for CUDA),
initialised from the ``torchrun`` environment.

Failure: a rank whose work raises still takes part in a status exchange (through the
rendezvous store, which outlives any rank), so the other ranks raise too (naming the failed
rank) instead of waiting for results that never come. A rank
that dies outright is noticed by ``torchrun``, which stops the others; :data:`TIMEOUT`, the
process group's collective timeout, is the last resort (it must outlast the slowest share).
"""

from __future__ import annotations

import atexit
import os
from datetime import timedelta
from typing import Callable, Sequence

import torch

from diffsci.core.errors import DiffsciError

__all__ = ["dist_info", "is_root", "rank_device", "share", "gather_shares", "TIMEOUT"]

#: collective timeout of a process group created here (ranks wait at the gather for the slowest share)
TIMEOUT = timedelta(hours=24)


def dist_info() -> tuple[int, int, int]:
    """``(world, rank, local_rank)`` of this process from the ``torchrun`` environment
    (``(1, 0, 0)`` when it is not set)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return world, rank, local


def is_root() -> bool:
    """True on rank 0 (and in a process started without ``torchrun``)."""
    return dist_info()[1] == 0


def rank_device(device: torch.device) -> torch.device:
    """The device this rank computes on: with several ranks, CUDA means the ``LOCAL_RANK``-th
    GPU of the host; any other device is returned as given."""
    world, _, local = dist_info()
    if world > 1 and device.type == "cuda":
        return torch.device("cuda", local)
    return device


def share(n: int, world: int, rank: int) -> range:
    """Items of ``range(n)`` computed by ``rank`` of ``world``: contiguous, sizes differing by
    at most one, larger shares first (rank 0, which shows progress, always has work when
    ``n > 0``), in rank order (their concatenation over ranks is ``range(n)``).

    >>> [list(share(5, 2, r)) for r in range(2)]
    [[0, 1, 2], [3, 4]]
    """
    return range(-(-rank * n // world), -(-(rank + 1) * n // world))


_CALLS = 0


def _next_key() -> str:
    """A store key prefix unique to this call of :func:`gather_shares` (every rank makes the same
    calls in the same order, so the ranks agree on it) and to this ``torchrun`` restart."""
    global _CALLS
    _CALLS += 1
    return f"diffsci/gather/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/{_CALLS}"


def _destroy() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def _default_store():
    """The key-value store of the default process group (``torchrun``'s rendezvous store)."""
    from torch.distributed.distributed_c10d import _get_default_store

    return _get_default_store()


def gather_shares(n: int, work: Callable[[range], Sequence], *, device: torch.device | str = "cpu") -> list | None:
    """Run ``work`` over this rank's :func:`share` of ``n`` items and gather to rank 0.

    ``work(indices)`` returns one picklable result per index, in order. Returns the results of
    all ``n`` items in item order on rank 0 and None on the other ranks; without ``torchrun``,
    ``list(work(range(n)))``. ``device``: where the work runs (its type picks the backend: nccl
    for CUDA, gloo otherwise). A process group is created when none is, and kept until the
    process exits.
    If ``work`` raises on any rank, that rank re-raises its exception and every other rank raises
    :class:`DiffsciError` naming it; no rank is left waiting.
    """
    world, rank, _ = dist_info()
    if world == 1:
        return list(work(range(n)))
    import torch.distributed as dist

    device = torch.device(device)
    if not dist.is_initialized():
        # created once and kept until the process exits: a second process group made in the same
        # process can read its peers' addresses from the first group's keys in the store and hang
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT)
        atexit.register(_destroy)
    store = _default_store()
    key = _next_key()
    failure, results = None, None
    try:
        results = list(work(share(n, world, rank)))
    except Exception as exc:  # reported to the other ranks below, then re-raised
        failure = exc
    # the status exchange goes through the rendezvous store, not a collective: a rank that
    # raises and exits must not break a collective its peers are still reading
    store.set(f"{key}/status/{rank}", "" if failure is None else f"{type(failure).__name__}: {failure}")
    failures = [store.get(f"{key}/status/{r}").decode() for r in range(world)]
    if failure is not None:
        raise failure
    bad = [(r, text) for r, text in enumerate(failures) if text]
    if bad:
        raise DiffsciError("; ".join(f"rank {r} of {world} failed: {text}" for r, text in bad))
    parts = [None] * world if rank == 0 else None
    dist.gather_object(results, parts, dst=0)
    # no rank tears its connections down before rank 0 has read every share
    if store.add(f"{key}/gathered", 1) == world:
        store.set(f"{key}/done", "1")
    store.wait([f"{key}/done"])
    return [r for part in parts for r in part] if rank == 0 else None

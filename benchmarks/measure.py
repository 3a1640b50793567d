"""What the speed benchmarks measure with: peak memory (host and CUDA) and a clock barrier."""

from __future__ import annotations

import resource
from pathlib import Path

import torch

__all__ = ["reset_peak_memory", "peak_memory", "synchronize"]


def reset_peak_memory(device=None) -> None:
    """Start a new peak: the resident-set high-water mark (Linux) and CUDA's peak counter."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device=None) -> dict:
    """``peak_rss_mb`` (the high-water mark since :func:`reset_peak_memory` where Linux keeps
    one, else the process's peak), ``process_peak_rss_mb`` (``getrusage``) and, on CUDA,
    ``cuda_peak_mb`` (``max_memory_allocated``). Values in MiB."""
    process = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    hwm = None
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) / 1024.0
    except OSError:
        pass
    out = {"peak_rss_mb": round(process if hwm is None else hwm, 1), "process_peak_rss_mb": round(process, 1)}
    if device is not None and torch.device(device).type == "cuda":
        out["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return out


def synchronize(device) -> None:
    """Wait for the work queued on a CUDA ``device`` (nothing elsewhere): call before reading a clock."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)

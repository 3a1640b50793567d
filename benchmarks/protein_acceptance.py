"""The acceptance figures of a checkpoint's designs (:func:`sample_acceptance`) and the sweep of
the rotation rate at sampling (:func:`rate_sweep`): what ``diffsci bench protein --acceptance``
and ``--rates`` run. The figures themselves are a metric
(:func:`diffsci.protein.metrics.acceptance_figures`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from diffsci.core.errors import DiffsciError
from diffsci.core.io import check_range
from diffsci.protein.metrics.acceptance import ACCEPTANCE_LENGTHS, acceptance_figures
from diffsci.protein.metrics.secondary import dssp_fractions
from diffsci.protein.design.request import DesignRequest
from diffsci.protein.design.sampling import sample_backbones

__all__ = ["sample_acceptance", "rate_sweep"]


def sample_acceptance(model, *, rotation_rate: float | None = None, lengths: Sequence[int] = ACCEPTANCE_LENGTHS,
                      num: int = 8, seed: int = 0, steps: int = 100) -> dict[str, Any]:
    """Sample ``num`` designs per length and measure their :func:`acceptance_figures`.

    Parameters
    ----------
    model
        A loaded model (:func:`diffsci.protein.design.sampling.load_model`, a :class:`~diffsci.core.checkpoint.Bundle`).
    rotation_rate
        FrameFlow's rotation rate at sampling (None: the checkpoint's ``inference_rate``).
    lengths, num, seed, steps
        Design lengths, designs per length, sampling seed and sampler steps
        (:func:`~diffsci.protein.design.sampling.sample_backbones`, default time grid and sampler).

    Returns
    -------
    dict with ``rate`` (the rate used; None for a score checkpoint), ``seed``, the figures,
    ``dssp_helix`` and ``dssp_strand`` (mean over designs of pydssp's DSSP helix and strand
    fractions, beside the P-SEA ones) and ``seconds`` (sampling and measuring, wall clock).
    """
    t0 = time.perf_counter()
    request = DesignRequest(lengths=list(lengths), num=num, seed=seed, steps=steps, rotation_rate=rotation_rate,
                            potentials="none")
    designs = sample_backbones(model, request, progress=False)
    figures = acceptance_figures(designs)
    dssp = [dssp_fractions(np.asarray(d.coords)[0]) for d in designs]
    for key in ("dssp_helix", "dssp_strand"):
        figures[key] = float(np.mean([f[key] for f in dssp]))
    rate = designs[0].rotation_rate if rotation_rate is None else rotation_rate
    return {"rate": rate, "seed": seed, **figures, "seconds": round(time.perf_counter() - t0, 1)}


def rate_sweep(model, rates: Sequence[float], *, lengths: Sequence[int] = ACCEPTANCE_LENGTHS, num: int = 4,
               seed: int = 0, steps: int = 100) -> list[dict[str, Any]]:
    """:func:`sample_acceptance` of one checkpoint at each rotation rate in ``rates``.

    Every rate samples with the same ``seed``, so the rows differ by the rate alone. The rates
    are checked before the first design is sampled (the other arguments by
    :func:`~diffsci.protein.design.sampling.sample_backbones`, before its first design).

    Returns
    -------
    One dict per rate, in the order given: ``rate``, ``seed``, the :func:`acceptance_figures`
    and ``seconds``.
    """
    if len(rates) == 0:
        raise DiffsciError("rates: give at least one rotation rate")
    rates = [check_range(r, "rates", 0, 100, lo_open=True) for r in rates]
    return [sample_acceptance(model, rotation_rate=r, lengths=lengths, num=num, seed=seed, steps=steps) for r in rates]

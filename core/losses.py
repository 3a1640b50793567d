"""Training losses shared by the domains.

:func:`fair_crps` is the ensemble estimator of the continuous ranked probability score that is
unbiased for the CRPS of the distribution the members are drawn from (Ferro 2014; the "fair"
CRPS WeatherBench 2 reports), written for gradients: FGN and FuXi-ENS train ensembles on it.
"""

from __future__ import annotations

import torch

from diffsci.core.errors import DiffsciError

__all__ = ["fair_crps"]


def fair_crps(samples: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Pointwise fair CRPS of an ensemble.

    ``samples`` (M, ...) with M >= 2 members drawn independently, ``target`` (...) the truth.
    Returns (...): ``mean_m |x_m - y| - sum_{m != m'} |x_m - x_m'| / (2 M (M - 1))``. Its
    expectation over the members is the CRPS of their distribution, so minimising it fits the
    whole distribution, not only its mean (a single member, M = 1, has no fair estimate).
    """
    if samples.ndim < 1 or samples.shape[0] < 2:
        raise DiffsciError(f"fair_crps: samples needs at least 2 members on dim 0, got shape {tuple(samples.shape)}")
    if samples.shape[1:] != target.shape:
        raise DiffsciError(f"fair_crps: samples {tuple(samples.shape)} do not match target {tuple(target.shape)}")
    m = samples.shape[0]
    skill = (samples - target).abs().mean(0)
    pair = (samples[:, None] - samples[None]).abs().sum((0, 1))  # sum over ordered pairs; the diagonal is 0
    return skill - pair / (2 * m * (m - 1))

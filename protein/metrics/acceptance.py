"""Acceptance figures of a checkpoint's designs (sampling them is the benchmark's job:
:mod:`diffsci.benchmarks.protein_acceptance`).

The figures that chose the shipped checkpoint (``protein/data/CHECKPOINT.md``): pooled CA-CA
spacing, CA clashes, P-SEA secondary structure, radius of gyration against 2.2 L^0.38 and
tertiary CA contacts of designs sampled at lengths 60, 80, 100 and 128.
``diffsci bench protein --rates`` and ``--acceptance`` run them.

Dimension letters: L residues, 4 backbone atoms (N, CA, C, O), 3 Cartesian coordinates (Å).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from diffsci.core.errors import DiffsciError
from diffsci.protein.metrics.geometry import (
    _ca,
    ca_ca_distances,
    ca_clashes,
    ca_contacts,
    expected_radius_of_gyration,
    radius_of_gyration,
)
from diffsci.protein.metrics.secondary import psea_fractions

__all__ = [
    "ACCEPTANCE_CA_CA_WINDOW",
    "ACCEPTANCE_RG_TOLERANCE",
    "ACCEPTANCE_LENGTHS",
    "acceptance_figures",
]

ACCEPTANCE_CA_CA_WINDOW: tuple[float, float] = (3.5, 4.1)
"""Open interval (Å) a consecutive CA-CA distance must lie in for ``ca_ca_ok`` (3.8 ± 0.3 Å,
both ends excluded; the per-sample ``ca_ca_ok`` of :func:`~diffsci.protein.metrics.sample_metrics`
includes them)."""
ACCEPTANCE_RG_TOLERANCE = 0.3
"""``rg_ok``: |Rg / (2.2 L^0.38) - 1| at most this."""
ACCEPTANCE_LENGTHS: tuple[int, ...] = (60, 80, 100, 128)
"""Design lengths of the acceptance figures and the rate sweep."""


def _design_ca(item, k: int) -> np.ndarray:
    """CA coordinates, Shape (L, 3) float64, of a design (its first copy) or a coordinate array."""
    coords = getattr(item, "coords", None)
    if coords is not None:  # a sampling.Design: coords (S, N, 4, 3)
        return _ca(np.asarray(coords)[0], f"design {k}")
    return _ca(item, f"design {k}")


def acceptance_figures(designs: Sequence[Any]) -> dict[str, float | int]:
    """The acceptance figures of a set of designs.

    Parameters
    ----------
    designs
        :class:`~diffsci.protein.design.sampling.Design` objects (their first copy is measured) or
        coordinate arrays, each Shape (L, 3) CA or (L, 4, 3) backbone in Å.

    Returns
    -------
    dict with

    ``n``
        number of designs;
    ``ca_ca_ok``
        fraction of consecutive CA-CA distances inside :data:`ACCEPTANCE_CA_CA_WINDOW` (3.5 < d
        < 4.1 Å), pooled over the consecutive pairs of all designs;
    ``ca_clash_fraction``
        fraction of non-adjacent CA pairs (``|i - j| >= 2``) closer than 3.0 Å, pooled over all
        designs' pairs;
    ``helix``, ``strand``, ``helix_plus_strand``
        mean over designs of the P-SEA helix, strand and helix + strand fractions;
    ``rg_ok``
        fraction of designs whose CA radius of gyration is within ±30% of 2.2 L^0.38
        (:func:`~diffsci.protein.metrics.geometry.expected_radius_of_gyration`);
    ``contacts6``
        mean over designs of the CA atoms within 8 Å at sequence separation >= 6, per residue
        (:func:`~diffsci.protein.metrics.geometry.ca_contacts`).
    """
    if len(designs) == 0:
        raise DiffsciError("designs: no designs to measure")
    lo, hi = ACCEPTANCE_CA_CA_WINDOW
    n_ok = n_consecutive = n_clash = n_nonadjacent = 0
    helix, strand, rg_ok, contacts = [], [], [], []
    for k, item in enumerate(designs):
        ca = _design_ca(item, k)
        n = ca.shape[0]
        d = ca_ca_distances(ca)
        n_ok += int(np.sum((d > lo) & (d < hi)))
        n_consecutive += d.size
        n_clash += ca_clashes(ca)[0]
        n_nonadjacent += (n - 1) * (n - 2) // 2
        sse = psea_fractions(ca)
        helix.append(sse["helix"])
        strand.append(sse["strand"])
        ratio = radius_of_gyration(ca) / expected_radius_of_gyration(n)
        rg_ok.append(abs(ratio - 1) <= ACCEPTANCE_RG_TOLERANCE)
        contacts.append(ca_contacts(ca))
    return {
        "n": len(designs),
        "ca_ca_ok": n_ok / n_consecutive if n_consecutive else float("nan"),
        "ca_clash_fraction": n_clash / n_nonadjacent if n_nonadjacent else float("nan"),
        "helix": float(np.mean(helix)),
        "strand": float(np.mean(strand)),
        "helix_plus_strand": float(np.mean(np.add(helix, strand))),
        "rg_ok": float(np.mean(rg_ok)),
        "contacts6": float(np.mean(contacts)),
    }

"""Evaluation of a set of backbones: per-sample metrics, pairwise TM, clusters, novelty and
their summary (definitions: :mod:`diffsci.protein.metrics`).

Dimension letters: N samples, L residues, 4 backbone atoms (N, CA, C, O), 3 Cartesian
coordinates (Å).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from diffsci.core.errors import DiffsciError
from diffsci.core.io import progress as progress_bar
from diffsci.protein.metrics.geometry import (
    _backbone,
    backbone_geometry_deviation,
    between_chains,
    ca_ca_stats,
    ca_clashes,
    ca_contacts,
    chain_breaks,
    hotspot_contacts,
    radius_of_gyration,
    ramachandran_fractions,
)
from diffsci.protein.metrics.reading import EvalSample, read_samples, reference_ca_list
from diffsci.protein.metrics.secondary import (dssp_label_fractions, dssp_labels, psea_label_fractions, psea_labels,
                                               ss_agreement)
from diffsci.protein.metrics.similarity import MAX_TM_RESIDUE_PRODUCT, cluster_by_tm, novelty, pairwise_tm
from diffsci.protein.metrics.topology import TOPOLOGY_FIELDS, contact_order, pairing_metrics

__all__ = ["NUMERIC_FIELDS", "sample_metrics", "evaluate_structures", "subset_evaluation", "evaluate_folder"]

NUMERIC_FIELDS: tuple[str, ...] = (
    "length",
    "chain_breaks",
    "ca_ca_max",
    "ca_ca_mean",
    "ca_ca_ok",
    "clashes",
    "clash_fraction",
    "radius_of_gyration",
    "helix",
    "strand",
    "coil",
    "dssp_helix",
    "dssp_strand",
    "dssp_coil",
    "bond_N_CA_mad",
    "bond_CA_C_mad",
    "bond_C_N_mad",
    "angle_N_CA_C_mad",
    "angle_CA_C_N_mad",
    "angle_C_N_CA_mad",
    "rama_alpha",
    "rama_beta",
    "rama_left",
    "rama_other",
    "max_tm_reference",
    *TOPOLOGY_FIELDS,
    "interchain_clashes",
    "interchain_min_ca",
    "interface_residues",
)
"""Numeric per-sample fields, in the order of the CSV columns (after ``file``, ``source_file``, ``chain``)."""


def sample_metrics(coords: np.ndarray, *, res_ids=None, ins_codes=None) -> dict[str, float]:
    """All per-sample metrics of one backbone, measured on the whole chain (no novelty; see
    :func:`evaluate_structures`).

    Parameters
    ----------
    coords : np.ndarray
        Shape (L, 4, 3) backbone N, CA, C, O in Å.
    res_ids, ins_codes
        Optional Shape (L,) author numbering, used by P-SEA (see :func:`psea_labels`).

    Returns
    -------
    dict with ``length`` and the fields listed in the module docstring (NaN where a metric
    is undefined for a chain that short).
    """
    x = _backbone(coords)
    ca = x[:, 1]
    mean, ok = ca_ca_stats(ca)
    count, frac = ca_clashes(ca)
    breaks, largest = chain_breaks(ca)
    out: dict[str, float] = {
        "length": int(x.shape[0]),
        "chain_breaks": breaks,
        "ca_ca_max": largest,
        "ca_ca_mean": mean,
        "ca_ca_ok": ok,
        "clashes": count,
        "clash_fraction": frac,
        "radius_of_gyration": radius_of_gyration(ca),
        "ca_contacts": ca_contacts(ca),
    }
    psea, dssp = psea_labels(ca, res_ids, ins_codes), dssp_labels(x)
    out.update(psea_label_fractions(psea))
    out.update(dssp_label_fractions(dssp))
    out.update(backbone_geometry_deviation(x))
    out.update(ramachandran_fractions(x))
    out.update(pairing_metrics(x, psea, dssp))
    out.update(contact_order(ca))
    return out


def _finite_mean(values: Sequence[Any]) -> float | None:
    v = [float(x) for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return float(np.mean(v)) if v else None


def _as_sample(item) -> EvalSample:
    if isinstance(item, EvalSample):
        return item
    name, coords = item
    return EvalSample(str(name), None, None, coords)


def evaluate_structures(
    items: Sequence[tuple[str, np.ndarray] | EvalSample],
    reference=None,
    *,
    reference_split: str | None = None,
    thresholds: Sequence[float] = (0.5, 0.6),
    link: str = "mean",
    progress: bool = True,
) -> dict[str, Any]:
    """Score a set of backbones: per-sample metrics, pairwise TM, clusters, novelty.

    Parameters
    ----------
    items
        ``(name, coords)`` pairs (coords Shape (L, 4, 3) N, CA, C, O in Å), or
        :class:`EvalSample` records (from :func:`read_samples`). Each item is scored whole.
    reference
        Anything :func:`reference_ca_list` accepts, or None (no novelty:
        ``max_tm_reference`` is None).
    thresholds
        TM-score thresholds for the cluster counts (summary keys ``clusters_tm0.5`` etc.).
    link
        Symmetrisation for :func:`cluster_by_tm`.
    progress
        Show tqdm progress bars.

    Returns
    -------
    dict with ``per_sample`` (list of dicts: ``file`` (the sample's name), ``source_file``,
    ``chain`` and the metric fields), ``pairwise_tm`` (N x N list of lists), ``cluster_labels``
    (per threshold), ``summary`` and ``notes``.

    Chains of one file (``source_file``) are one design: copies of a symmetric design, or the
    partners of a complex, are not compared with each other (their ``pairwise_tm`` entry is NaN
    and they do not enter ``mean_pairwise_tm``) and always share a cluster, so the cluster
    counts count groups of files and ``cluster_fraction`` is clusters / files. TM-align is not
    run on a pair whose length product exceeds :data:`MAX_TM_RESIDUE_PRODUCT` (its memory grows
    with it): that entry (pairwise or novelty) is NaN, with a note.
    NaN values (metrics undefined for very short chains) are kept as float NaN here;
    :func:`diffsci.core.io.jsonable` turns them into None.
    """
    if not items:
        raise DiffsciError("no structures to evaluate")
    samples = [_as_sample(it) for it in items]
    rows, ca_list = _per_sample_rows(samples, progress)
    n_ref, notes = _add_novelty(rows, ca_list, reference, reference_split, progress)
    for row in rows:  # the sheet and contact-order columns after the others
        row.update({k: row.pop(k) for k in TOPOLOGY_FIELDS})
    groups = _groups(smp.file for smp in samples)
    _add_between_chains(rows, ca_list, groups)
    tm, tm_notes = _pairwise(ca_list, groups, progress)
    out = _assemble_evaluation(rows, tm, n_ref, thresholds, link)
    out["notes"] = notes + tm_notes
    return out


def _per_sample_rows(samples: Sequence[EvalSample], progress: bool) -> tuple[list[dict[str, Any]], list[np.ndarray]]:
    """One row per sample (``file``, ``source_file``, ``chain`` and :func:`sample_metrics`) and
    each sample's CA coordinates, Shape (L, 3)."""
    rows: list[dict[str, Any]] = []
    ca_list = []
    for smp in progress_bar(samples, total=len(samples), desc="per-sample metrics", enabled=progress, leave=False):
        x = _backbone(smp.coords, smp.name)
        row: dict[str, Any] = {"file": smp.name, "source_file": smp.file, "chain": smp.chain}
        row.update(sample_metrics(x, res_ids=smp.res_ids, ins_codes=smp.ins_codes))
        rows.append(row)
        ca_list.append(x[:, 1])
    return rows, ca_list


def _add_between_chains(rows, ca_list, groups) -> None:
    """Each row's :func:`~diffsci.protein.metrics.geometry.between_chains` against the other
    chains of its design (its group), as its last columns."""
    for k, row in enumerate(rows):
        others = [ca for j, ca in enumerate(ca_list) if j != k and groups[j] == groups[k]]
        row.update(between_chains(ca_list[k], others))


def _add_novelty(rows, ca_list, reference, reference_split, progress: bool) -> tuple[int, list[str]]:
    """Sets each row's ``max_tm_reference`` (None without a reference); returns the number of
    reference chains and notes on reference chains left out for TM-align's memory."""
    if reference is None:
        for row in rows:
            row["max_tm_reference"] = None
        return 0, []
    ref_ca, ref_seqs = reference_ca_list(reference, split=reference_split)
    nov = novelty(ca_list, ref_ca, reference_seqs=ref_seqs, progress=progress)
    for row, v in zip(rows, nov):
        row["max_tm_reference"] = float(v)
    longest = max(len(r) for r in ref_ca)
    notes = [f"{row['file']}: novelty leaves out reference chains with length x {len(ca)} > "
             f"{MAX_TM_RESIDUE_PRODUCT} (TM-align memory)"
             for row, ca in zip(rows, ca_list) if len(ca) * longest > MAX_TM_RESIDUE_PRODUCT]
    return len(ref_ca), notes


def _pairwise(ca_list, groups, progress: bool) -> tuple[np.ndarray, list[str]]:
    """The pairwise TM matrix (chains of one design not aligned) and a note on pairs too long to align."""
    tm = pairwise_tm(ca_list, groups=groups, progress=progress)
    n = len(ca_list)
    skipped = sum(
        1 for i in range(n) for j in range(n)
        if i != j and groups[i] != groups[j] and len(ca_list[i]) * len(ca_list[j]) > MAX_TM_RESIDUE_PRODUCT
    )
    notes = [f"pairwise TM: {skipped} ordered pair(s) not aligned (length product > {MAX_TM_RESIDUE_PRODUCT})"]
    return tm, notes if skipped else []


def subset_evaluation(result: dict[str, Any], indices: Sequence[int], *, thresholds: Sequence[float] = (0.5, 0.6),
                      link: str = "mean") -> dict[str, Any]:
    """The :func:`evaluate_structures` result of a subset of its structures, without recomputing
    any TM-score: the chosen per-sample rows, the sub-matrix of ``pairwise_tm``, a new summary."""
    idx = [int(i) for i in indices]
    if not idx:
        raise DiffsciError("subset_evaluation: empty subset")
    tm = np.asarray(result["pairwise_tm"], dtype=float)[np.ix_(idx, idx)]
    rows = [dict(result["per_sample"][i]) for i in idx]
    return _assemble_evaluation(rows, tm, result["summary"]["n_reference"], thresholds, link)


def _groups(files) -> list[Any]:
    """Design labels: the file name, or a label of its own for an in-memory sample (file None)."""
    return [("file", f) if f is not None else ("item", k) for k, f in enumerate(files)]


def _positive(v) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v)) and v > 0


def _assemble_evaluation(rows, tm, n_ref, thresholds, link) -> dict[str, Any]:
    n = len(rows)
    groups = _groups(r.get("source_file") for r in rows)
    n_files = len(set(groups))
    tm = np.asarray(tm, dtype=np.float64)
    off = tm[~np.eye(n, dtype=bool)]
    off = off[np.isfinite(off)]
    clashing = sum(1 for r in rows if _positive(r.get("interchain_clashes")))
    broken = sum(1 for r in rows if _positive(r.get("chain_breaks")) or _positive(r.get("interchain_clashes")))
    summary: dict[str, Any] = {
        "n_samples": n,
        "n_files": n_files,
        "n_reference": n_ref,
        "n_broken": broken,
        "broken_fraction": broken / n,
        "n_interchain_clashing": clashing,
        "mean_pairwise_tm": float(off.mean()) if off.size else None,
        "cluster_link": link,
    }
    labels_out: dict[str, list[int]] = {}
    for t in thresholds:
        labels = cluster_by_tm(tm, t, link=link, groups=groups)
        k = int(labels.max()) + 1
        summary[f"clusters_tm{t:g}"] = k
        summary[f"cluster_fraction_tm{t:g}"] = k / n_files
        labels_out[f"tm{t:g}"] = labels.tolist()
    summary["mean_novelty"] = _finite_mean([r["max_tm_reference"] for r in rows])
    for key in NUMERIC_FIELDS:
        summary[f"mean_{key}"] = _finite_mean([r.get(key) for r in rows])
    return {"per_sample": rows, "pairwise_tm": tm.tolist(), "cluster_labels": labels_out, "summary": summary}


SS_AGREEMENT_FIELDS = ("ss_agreement", "ss_agreement_H", "ss_agreement_E", "ss_agreement_L")


def _design_record(folder, file: str | None) -> dict[str, Any] | None:
    """The record ``NAME.json`` beside the structure file ``NAME.pdb`` (as ``diffsci protein
    sample`` writes it), or None: no such file, or not a JSON object (e.g. an evaluation report)."""
    record = Path(folder) / Path(file).with_suffix(".json").name if file else None
    if record is None or not record.is_file():
        return None
    try:
        data = json.loads(record.read_text())
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _score_ss_requests(folder, samples: Sequence[EvalSample], result: dict[str, Any]) -> list[str]:
    """Adds the SS-agreement fields to the rows of designs with a request (see
    :func:`evaluate_folder`) and their means to the summary; returns notes on requests that do
    not fit their chains."""
    notes, scored = [], []
    for smp, row in zip(samples, result["per_sample"]):
        data = _design_record(folder, smp.file)
        request = None if data is None else data.get("ss")
        if not isinstance(request, str):
            continue
        record = Path(smp.file).with_suffix(".json")
        if len(request) != len(smp.coords):
            notes.append(f"{row['file']}: its ss request ({record.name}) has {len(request)} letters for "
                         f"{len(smp.coords)} residues; not scored")
            continue
        row["ss_request"] = request
        row.update(ss_agreement(dssp_labels(smp.coords), request))
        scored.append(row)
    if scored:
        summary = result["summary"]
        summary["n_ss_requests"] = len(scored)
        for key in SS_AGREEMENT_FIELDS:
            summary[f"mean_{key}"] = _finite_mean([r[key] for r in scored])
    return notes


HOTSPOT_FIELDS = ("hotspot_nearest_ca", "hotspots_in_contact")


def _residue_labels(smp: EvalSample) -> list[str]:
    """``B30`` or ``B30A`` (chain, author number, insertion code) of each residue of a sample, as a
    design record's ``mapping`` names the residues of the written file."""
    if smp.res_ids is None:
        return []
    ins = smp.ins_codes if smp.ins_codes is not None else [""] * len(smp.res_ids)
    return [f"{smp.chain or ''}{int(r)}{str(i).strip().upper()}" for r, i in zip(smp.res_ids, ins)]


def _hotspot_positions(data: dict[str, Any], members: list[int], labels: list[list[str]]) -> tuple[
        dict[int, list[int]] | None, list[str]]:
    """Where a design record's hotspots are: {sample index: residue indices, in the record's order}
    (None: the record names no hotspots), and the hotspot labels that cannot be found (not in
    ``mapping``, or the mapped residue not among the chains read)."""
    hot = data.get("hotspots")
    if isinstance(hot, str):
        hot = [h.strip() for h in hot.split(",") if h.strip()]
    if not isinstance(hot, (list, tuple)) or not hot:
        return None, []
    mapping = data.get("mapping") if isinstance(data.get("mapping"), dict) else {}
    where = {lab: (k, i) for k in members for i, lab in enumerate(labels[k])}
    found: dict[int, list[int]] = {}
    bad = []
    for h in map(str, hot):
        k_i = where.get(str(mapping.get(h)))
        if k_i is None:
            bad.append(f"{h} (its residue {mapping[h]} is not among the chains read)" if h in mapping
                       else f"{h} (not in the record's mapping)")
            continue
        found.setdefault(k_i[0], []).append(k_i[1])
    return found, bad


def _score_hotspots(folder, samples: Sequence[EvalSample], result: dict[str, Any],
                    warn: Callable[[str], None]) -> None:
    """Adds :data:`HOTSPOT_FIELDS` (see :func:`evaluate_folder`) to the rows and ``n_hotspot_designs``,
    ``n_hotspots_all_in_contact`` to the summary, when some design's record names hotspots; warns
    once per record with a hotspot that cannot be found (that design is not scored)."""
    rows = result["per_sample"]
    labels = [_residue_labels(smp) for smp in samples]
    ca_list = [np.asarray(smp.coords, dtype=np.float64)[:, 1] for smp in samples]
    by_file: dict[str, list[int]] = {}
    for k, smp in enumerate(samples):
        if smp.file is not None:
            by_file.setdefault(smp.file, []).append(k)
    scored: list[list[dict[str, Any]]] = []
    for file, members in by_file.items():
        data = _design_record(folder, file)
        found, bad = _hotspot_positions(data, members, labels) if data is not None else (None, [])
        if found is None:
            continue
        if bad or not found:
            warn(f"{Path(folder) / Path(file).with_suffix('.json').name}: hotspot(s) {', '.join(bad)} not "
                 f"found in {file}; its hotspots not scored")
            continue
        for k, idx in found.items():
            others = [ca_list[j] for j in members if j != k]
            rows[k].update(hotspot_contacts(ca_list[k], idx, others))
        scored.append([rows[k] for k in found])
    if not scored:
        return
    for row in rows:
        for key in HOTSPOT_FIELDS:
            row.setdefault(key, None)
    result["summary"]["n_hotspot_designs"] = len(scored)
    result["summary"]["n_hotspots_all_in_contact"] = sum(
        all(r["hotspots_in_contact"] == len(r["hotspot_nearest_ca"]) for r in design) for design in scored)


def evaluate_folder(
    folder: str | os.PathLike,
    reference=None,
    *,
    chains: Sequence[str] | None = None,
    on_warning: Callable[[str], None] | None = None,
    on_note: Callable[[str], None] | None = None,
    **kwargs,
) -> dict[str, Any]:
    """:func:`read_samples` then :func:`evaluate_structures`; the result has ``warnings``
    (files skipped) and ``notes`` (what was measured or ignored inside the files read) too.

    A design whose record ``NAME.json`` beside ``NAME.pdb`` holds a secondary-structure request
    ``ss`` (``diffsci protein sample --ss``; one letter per residue of each chain) is scored
    against it: its row gets ``ss_request`` and the DSSP agreement fields of
    :func:`~diffsci.protein.metrics.secondary.ss_agreement`, the summary ``n_ss_requests`` and
    ``mean_ss_agreement``, ``mean_ss_agreement_H`` / ``_E`` / ``_L`` over those rows.

    A design whose record names ``hotspots`` (``diffsci protein sample --hotspots``: labels of the
    motif file, turned into the written file's labels by the record's ``mapping``) is scored for
    contact: the row of the chain holding them gets ``hotspot_nearest_ca`` (for each hotspot, in
    order, the distance in Å from its CA to the nearest CA of the design's other chains) and
    ``hotspots_in_contact`` (how many are within
    :data:`~diffsci.protein.metrics.geometry.HOTSPOT_CONTACT` = 8 Å, RFdiffusion's hotspot
    contact); the other rows get None for both, the summary ``n_hotspot_designs`` and
    ``n_hotspots_all_in_contact``. A hotspot that cannot be found is one warning and that design
    is not scored. Without any hotspot record the result has none of these keys."""
    samples, warns, notes = read_samples(folder, chains=chains, on_warning=on_warning, on_note=on_note)
    result = evaluate_structures(samples, reference, **kwargs)
    result["notes"] += _score_ss_requests(folder, samples, result)

    def warn(msg: str) -> None:
        warns.append(msg)
        if on_warning is not None:
            on_warning(msg)

    _score_hotspots(folder, samples, result, warn)
    for msg in result["notes"]:
        if on_note is not None:
            on_note(msg)
    result["notes"] = notes + result["notes"]
    result["warnings"] = warns
    return result

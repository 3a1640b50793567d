"""A WeatherBench 2 style scorecard of ``diffsci bench weather``: every system's scores relative
to a reference system, per variable and lead.

The relative score of system ``s`` against reference ``r`` is ``100 (S_s - S_r) / S_r`` percent
(negative: better than the reference). Two scores:

- ``crps``: the fair CRPS; for a deterministic system (one member) its MAE, which is the CRPS
  of a one-member ensemble (:func:`crps_or_mae`; how WB2 puts deterministic forecasts on the
  CRPS axis);
- ``rmse``: the RMSE of the ensemble mean (of the forecast itself for a deterministic system).

:func:`scorecard` computes them from the ``systems`` of a results.json payload,
:func:`scorecard_tables` writes them as markdown and :func:`plot_scorecard` as a coloured table
PNG (diverging colours centred at 0 %, blue better, red worse, the number in each cell).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from diffsci.core.errors import DiffsciError
from diffsci.core.figures import panel_grid, save_figure

__all__ = ["crps_or_mae", "relative_difference", "scorecard", "scorecard_tables", "plot_scorecard",
           "SCORECARD_REFERENCES", "SCORECARD_METRICS", "COLOUR_LIMIT_PERCENT"]

#: systems a user may pick as the reference (``--scorecard-reference``); the first is the default
SCORECARD_REFERENCES = ("persistence", "deterministic", "perfect_model", "climatology", "prob_climatology", "diffsci")
SCORECARD_METRICS = {"crps": "CRPS (MAE for a deterministic system)", "rmse": "RMSE of the ensemble mean"}
COLOUR_LIMIT_PERCENT = 50.0  # colours saturate at +-50 %; the cells show the number


def crps_or_mae(rv: dict) -> list:
    """One field's CRPS per lead; where it is null (a deterministic system: the fair CRPS needs 2
    members) the MAE, which is the CRPS of a one-member ensemble (how WeatherBench 2 puts
    deterministic systems on the CRPS axis)."""
    mae = rv.get("mae") or [None] * len(rv["crps"])
    return [c if c is not None else a for c, a in zip(rv["crps"], mae)]


def relative_difference(score, reference) -> float | None:
    """``100 (score - reference) / reference`` in percent; None where either is missing or the
    reference is 0."""
    if score is None or reference is None or reference == 0:
        return None
    return 100.0 * (score - reference) / reference


def _scores(rv: dict, metric: str) -> list:
    return crps_or_mae(rv) if metric == "crps" else rv[metric]


def scorecard(systems: dict, variables, reference: str = "persistence") -> dict:
    """Relative CRPS and RMSE (percent) of every system but ``reference`` against it.

    ``systems``: the ``systems`` of a results.json payload (name -> ``lead_hours``, ``variables``
    -> field -> metric lists). Returns ``{"reference", "unit", "definition", "lead_hours",
    "crps": {system: {field: [per lead]}}, "rmse": {...}}`` over the reference's leads (a lead
    a system lacks is None). DiffsciError naming ``--scorecard-reference`` if the reference
    is not among the systems."""
    if reference not in systems:
        raise DiffsciError(f"--scorecard-reference {reference!r}: no such system in this run "
                           f"(systems: {', '.join(systems)})")
    ref = systems[reference]
    leads = list(ref["lead_hours"])
    out = {"reference": reference, "unit": "percent", "definition": "100 (score - reference) / reference",
           "lead_hours": leads}
    for metric in SCORECARD_METRICS:
        out[metric] = {}
        for name, res in systems.items():
            if name == reference:
                continue
            out[metric][name] = {}
            for v in variables:
                mine = dict(zip(res["lead_hours"], _scores(res["variables"][v], metric)))
                theirs = _scores(ref["variables"][v], metric)
                out[metric][name][v] = [relative_difference(mine.get(h), r) for h, r in zip(leads, theirs)]
    return out


def _percent(x) -> str:
    if x is None or not np.isfinite(x):
        return "n/a"
    return f"{x:+.0f}%" if abs(x) >= 10 else f"{x:+.1f}%"


def scorecard_tables(card: dict, leads=(1, 3, 6, 12, 24)) -> list[str]:
    """Markdown: one table per metric, a row per (system, field), a column per lead of ``leads``
    that the scorecard has (all its leads if none of them)."""
    at = {h: i for i, h in enumerate(card["lead_hours"])}
    show = [h for h in leads if h in at] or list(at)
    lines = [f"## Scorecard against {card['reference']}", "",
             f"{card['definition']}, in percent (negative: better than {card['reference']}). "
             "A deterministic system's CRPS is its MAE.", ""]
    for metric, title in SCORECARD_METRICS.items():
        lines += [f"{title}:", "", "| system | field | " + " | ".join(f"+{h} h" for h in show) + " |",
                  "|---|---" + "|---" * len(show) + "|"]
        for name, fields in card[metric].items():
            for v, row in fields.items():
                lines.append(f"| {name} | {v} | " + " | ".join(_percent(row[at[h]]) for h in show) + " |")
        lines.append("")
    return lines


def plot_scorecard(card: dict, path, *, limit: float = COLOUR_LIMIT_PERCENT) -> Path:
    """The scorecard as a coloured table PNG at ``path``: one panel per metric, a row per
    (system, field), a column per lead; colour RdBu_r centred at 0 % and saturating at
    ``+-limit`` percent (blue: lower score than the reference), the rounded percentage in
    each cell (none where it is missing)."""
    import matplotlib.pyplot as plt

    rows = [(name, v) for name, fields in card["crps"].items() for v in fields]
    leads = card["lead_hours"]
    if not rows or not leads:
        raise DiffsciError(f"scorecard against {card['reference']}: no other system or no lead to show")
    width, height = 0.42 * len(leads) + 1.6, 0.24 * len(rows) + 0.9
    fig, axes = panel_grid(len(SCORECARD_METRICS), 1, (width, height), extra_height=0.4)
    cmap = plt.get_cmap("RdBu_r")
    for ax, (metric, title) in zip(axes[:, 0], SCORECARD_METRICS.items()):
        grid = np.array([[np.nan if x is None else x for x in card[metric][name][v]] for name, v in rows], float)
        image = ax.imshow(np.clip(grid, -limit, limit), cmap=cmap, vmin=-limit, vmax=limit, aspect="auto")
        for (i, j), x in np.ndenumerate(grid):
            if np.isfinite(x):
                dark = abs(x) > 0.6 * limit
                ax.text(j, i, f"{x:.0f}", ha="center", va="center", fontsize=6, color="white" if dark else "black")
        ax.set_xticks(range(len(leads)), [str(h) for h in leads], fontsize=6)
        ax.set_yticks(range(len(rows)), [f"{name} {v}" for name, v in rows], fontsize=6)
        ax.set_xlabel("lead (h)", fontsize=7)
        ax.set_title(f"{title}: % difference from {card['reference']}", fontsize=8)
        for k in range(1, len(rows)):
            if rows[k][0] != rows[k - 1][0]:
                ax.axhline(k - 0.5, color="k", lw=0.8)
        bar = fig.colorbar(image, ax=ax, fraction=0.03, pad=0.01, extend="both")
        bar.ax.tick_params(labelsize=6)
        bar.set_label("%", fontsize=7)
    return save_figure(fig, path, title=f"Scorecard (blue: better than {card['reference']})", title_size=9, dpi=110)

"""Figure helpers shared by the demos and benchmarks (matplotlib, Agg backend): a grid of
bare panels and an atomic PNG writer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from diffsci.core.errors import DiffsciError
from diffsci.core.io import atomic_output

__all__ = ["panel_grid", "save_figure", "training_curve"]


def panel_grid(rows: int, cols: int, panel_size: tuple[float, float], *, extra_height: float = 0.0):
    """A figure of ``rows x cols`` panels without ticks; returns ``(fig, axes)`` with ``axes`` a
    2-D array of shape (rows, cols). ``panel_size``: (width, height) of a panel in inches;
    ``extra_height``: inches added to the figure's height (room for a title)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width, height = panel_size
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows + extra_height), squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig, axes


def save_figure(fig, path, *, title: str | None = None, title_size: float | str = 10, dpi: int = 90) -> Path:
    """Set the figure's title (if given), lay it out tightly, write it as PNG atomically and
    close it; returns the path."""
    import matplotlib.pyplot as plt

    if title is not None:
        fig.suptitle(title, fontsize=title_size)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    return Path(path)


def training_curve(metrics_path, out_png, *, window: int = 50, title: str | None = None) -> dict:
    """Plot a run's ``metrics.jsonl`` (:mod:`diffsci.core.train`): the logged loss against the
    step, with its running mean over ``window`` lines, and the fixed-batch evaluations of the EMA
    weights where the run logged them (``eval_every``: ``eval_train_loss``, ``eval_heldout_loss``),
    to ``out_png``. Returns the numbers plotted: ``steps``, ``loss``, ``smoothed`` (lists),
    ``last_smoothed`` and, per logged evaluation, its ``{name: [[step, value], ...]}`` in ``evals``."""
    rows = [json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line.strip()]
    if not rows:
        raise DiffsciError(f"{metrics_path}: no logged steps")
    steps = np.array([r["step"] for r in rows], dtype=float)
    loss = np.array([r["loss"] for r in rows], dtype=float)
    k = max(1, min(window, len(loss)))
    smoothed = np.convolve(loss, np.ones(k) / k, mode="valid")
    fig, axes = panel_grid(1, 1, (6.0, 3.5))
    ax = axes[0, 0]
    ax.tick_params(labelsize=8)
    ax.set_xticks(np.linspace(steps[0], steps[-1], 5).round())
    ax.set_yticks(np.linspace(loss.min(), loss.max(), 5).round(2))
    ax.plot(steps, loss, lw=0.5, alpha=0.4, label="logged loss")
    ax.plot(steps[k - 1:], smoothed, lw=1.5, label=f"running mean ({k} lines)")
    evals = {}
    for name, label in (("eval_train_loss", "EMA, fixed training batches"),
                        ("eval_heldout_loss", "EMA, fixed held-out batches")):
        pts = [[r["step"], r[name]] for r in rows if name in r]
        if pts:
            evals[name] = pts
            ax.plot(*np.array(pts, dtype=float).T, "o-", ms=3, lw=1.0, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend(fontsize=8)
    save_figure(fig, out_png, title=title)
    return {"steps": steps.tolist(), "loss": loss.tolist(), "smoothed": smoothed.tolist(),
            "last_smoothed": float(smoothed[-1]), "evals": evals}

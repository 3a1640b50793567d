"""Figure helpers shared by the demos and benchmarks (matplotlib, Agg backend): a grid of
bare panels and an atomic PNG writer."""

from __future__ import annotations

from pathlib import Path

from diffsci.core.io import atomic_output

__all__ = ["panel_grid", "save_figure"]


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

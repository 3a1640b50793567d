"""The protein part of ``make demo``: design 8 backbones with the shipped checkpoint, write PDB
files and a PNG of their CA traces coloured by secondary structure (P-SEA)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["demo", "plot_traces"]

SSE_COLORS = {"a": "tab:red", "b": "tab:blue", "c": "0.6"}


def plot_traces(designs, path: Path, title: str) -> Path:
    """CA traces (x-y projection after aligning principal axes) coloured by P-SEA labels."""
    from diffsci.core.figures import panel_grid, save_figure
    from diffsci.protein.metrics import psea_fractions, psea_labels

    cols = 4
    rows = -(-len(designs) // cols)
    fig, axes = panel_grid(rows, cols, (3.2, 3.2))
    for ax, d in zip(axes.flat, designs):
        ca = d.coords[0][:, 1]
        x = ca - ca.mean(0)
        _, _, vt = np.linalg.svd(x, full_matrices=False)
        p = x @ vt.T
        labels = psea_labels(ca)
        for i in range(len(p) - 1):
            ax.plot(p[i : i + 2, 0], p[i : i + 2, 1], color=SSE_COLORS.get(labels[i], "0.6"), lw=2)
        f = psea_fractions(ca)
        ax.set_title(f"{d.name}: L={d.length}\nhelix {f['helix']:.0%} strand {f['strand']:.0%}", fontsize=8)
        ax.set_aspect("equal")
    for ax in list(axes.flat)[len(designs):]:
        ax.axis("off")
    return save_figure(fig, path, title=title + "  (red: helix, blue: strand, grey: coil; P-SEA)")


def demo(out: Path) -> Path:
    from diffsci.protein.metrics import sample_metrics
    from diffsci.protein.sample_cmd import write_designs
    from diffsci.protein.sampling import load_model, sample_backbones

    out = Path(out) / "protein"
    lm = load_model()
    designs = sample_backbones(lm, [60, 80, 100, 128], 2, seed=0, steps=100)
    write_designs(designs, out, checkpoint=lm.source)
    png = plot_traces(designs, out / "backbones.png", "diffsci: 8 designed backbones (shipped checkpoint)")
    m = [sample_metrics(d.coords[0]) for d in designs]
    print(f"[demo] protein: {len(designs)} PDB files in {out}/, {png}; mean CA-CA within 3.8+-0.3 A: "
          f"{np.mean([x['ca_ca_ok'] for x in m]):.2f}, helix+strand (P-SEA): "
          f"{np.mean([x['helix'] + x['strand'] for x in m]):.2f}")
    return png

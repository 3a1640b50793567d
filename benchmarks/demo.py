"""``make demo``: the end-to-end demonstration, on bundled or generated data.

Parts (each writes into ``--out``):

1. core: train a small EDM denoiser on a 2-D Gaussian mixture with the core training loop,
   sample it with Heun and DPM-Solver++, and plot samples against data
   (``core_toy.png``).
2. protein: sample backbones with the shipped protein checkpoint, write PDB files and a PNG of
   CA traces coloured by secondary structure (``protein/``); with the same checkpoint, four designs
   of a beta-rich request (``protein/ss/``) and three unconditional ``--ss prior`` designs
   (``protein/prior/``), each a PNG of asked against DSSP secondary structure.
3. weather: generate a small ERA5-style data set, run an 8-member forecast with the shipped
   weather checkpoint, plot truth vs members vs ensemble mean at two leads (``weather/``).

Run ``python -m diffsci.benchmarks.demo --out DIR [--only core,protein,weather]``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

import torch

__all__ = ["main", "core_demo"]


def core_demo(out: Path, steps: int = 4000) -> Path:
    """Train the 2-D toy with the core loop and write ``core_toy.png``; returns the PNG path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from diffsci.core.figures import save_figure
    from diffsci.core.samplers import get_sampler
    from diffsci.core.spaces import Euclidean
    from diffsci.core.toy import ToyTask
    from diffsci.core.checkpoint import load_checkpoint
    from diffsci.core.train import TrainConfig, train
    from diffsci.core.utils import make_generator

    task = ToyTask()
    run = out / "core_toy_run"
    cfg = TrainConfig(steps=steps, batch_size=256, lr=2e-3, ema_decay=0.995, ckpt_every=500, device="cpu", seed=0)
    res = train(task.build_model(), task, cfg, run, resume=True)
    model = task.build_model()
    model.load_state_dict(load_checkpoint(run / "latest.pt", expected_kind=task.kind)["ema"])
    model.eval()
    space = Euclidean(task.schedule)
    n = 4000
    x_init = space.prior(torch.zeros(n, 2), make_generator(1, "demo"))
    data = task.mixture.sample(n, make_generator(2, "demo")).float()
    exact = lambda x, t, c: task.mixture.denoise(x, t, task.schedule)  # noqa: E731
    panels = {"training data": data}
    with torch.no_grad():
        for name, den in (("learned, heun 32 steps", lambda x, t, c: model(x, t)), ("exact denoiser, heun 32 steps", exact)):
            panels[name] = get_sampler("heun")(den, x_init, task.schedule.time_grid(32), space=space)
        panels["learned, dpmpp_2m 16 steps"] = get_sampler("dpmpp_2m")(
            lambda x, t, c: model(x, t), x_init, task.schedule.time_grid(16), space=space)
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4), sharex=True, sharey=True)
    for ax, (name, pts) in zip(axes, panels.items()):
        ax.scatter(pts[:, 0], pts[:, 1], s=1, alpha=0.3)
        ax.set_title(name, fontsize=9)
        ax.set_aspect("equal")
    png = save_figure(fig, out / "core_toy.png", dpi=100, title_size=plt.rcParams["figure.titlesize"],
                      title=f"diffsci core: EDM on a 2-D mixture ({res.step} training steps, final loss {res.last_loss:.3f})")
    mean_err = float((panels["learned, heun 32 steps"].mean(0) - data.mean(0)).norm())
    print(f"[demo] core: {png} (learned-sample mean vs data mean distance {mean_err:.3f})")
    return png


# each optional part lives in its domain package and is found by name (benchmarks may import all)
PARTS = {
    "core": ("diffsci.benchmarks.demo", "core_demo"),
    "protein": ("diffsci.protein.demo", "demo"),
    "weather": ("diffsci.weather.demo", "demo"),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m diffsci.benchmarks.demo", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    p.add_argument("--only", default="core,protein,weather", help="comma-separated parts to run")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import torch

    from diffsci.core.cli import default_threads

    threads = default_threads()  # OpenMP threads waiting for a busy core make every part far slower
    torch.set_num_threads(threads)
    print(f"[demo] {threads} torch thread(s): OMP_NUM_THREADS when set, else the idle cores")
    t0 = time.time()
    for name in [s.strip() for s in args.only.split(",") if s.strip()]:
        if name not in PARTS:
            print(f"error: unknown demo part {name!r}; choose from {', '.join(PARTS)}", file=sys.stderr)
            return 2
        module, func = PARTS[name]
        t = time.time()
        getattr(importlib.import_module(module), func)(out)
        print(f"[demo] {name} done in {time.time() - t:.0f} s")
    print(f"[demo] all done in {time.time() - t0:.0f} s; outputs in {out}/")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

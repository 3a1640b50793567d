"""Is the generator's short spin-up at full resolution enough? (``python -m diffsci.benchmarks.spinup_check``)

A solver finer than 32x64 spins up at 32x64 (T21) but for its last ``FINE_SPINUP_HOURS`` hours
(:func:`diffsci.weather.generator.spun_up_state`). This check runs, for each seed, both that
two-stage spin-up and a spin-up of the same length entirely at full resolution, and reports

- ``fine_trace``: the kinetic-energy fraction above T21 (zero when the refined state starts)
  every ``every`` hours of the full-resolution stage: it must level off before the stage ends;
- the statistics of the ``window`` hours after each spin-up (means of states ``every`` hours
  apart): ``z_std`` (spatial std of z), ``u_rms``, ``v_rms``, ``vo_rms`` and ``ke_above_T21``;
  the two spin-ups should differ by no more than two seeds of the same spin-up do;
- the seconds of each spin-up.

Example (docs/weather.md quotes its result)::

    python -m diffsci.benchmarks.spinup_check --grid 121x240 --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace

import numpy as np
import torch

from diffsci.core.errors import DiffsciError
from diffsci.weather import generator as gen

__all__ = ["spinup_check", "spectral_ke_fraction", "main"]


def spectral_ke_fraction(sim: gen.Simulator, spec: torch.Tensor, above: int) -> float:
    """Fraction of the rotational kinetic energy at degrees ``l > above``: with orthonormal
    coefficients ``zeta_lm``, the energy of degree l is ``sum_m w_m |zeta_lm|^2 / (l (l + 1))``
    (``w_m`` = 2 for m > 0, the real field's negative orders). ``spec`` Shape (1, 3, L, L)."""
    ell = torch.arange(sim.L, dtype=torch.float64).reshape(-1, 1)
    w = torch.full((sim.L, sim.L), 2.0, dtype=torch.float64)
    w[:, 0] = 1.0
    energy = (w * spec[0, 1].abs() ** 2 / torch.clamp(ell * (ell + 1), min=1.0)) * (ell > 0)
    return float(energy[above + 1:].sum() / energy.sum())


def _stats(sim: gen.Simulator, state: gen.SimState) -> dict:
    g = sim.to_grid(state.spec)
    rms = {f"{v}_rms": float(np.sqrt((g[v].astype(np.float64) ** 2).mean())) for v in ("u", "v", "vo")}
    return {"z_std": float(g["z"].std()), **rms, "ke_above_T21": spectral_ke_fraction(sim, state.spec, 21)}


def _window(sim: gen.Simulator, state: gen.SimState, rng, hours: int, every: int) -> dict:
    rows = []
    for h in range(0, hours + 1, every):
        rows.append(_stats(sim, state))
        if h < hours:
            state = sim.run_hours(state, [rng], every, sim.div_rate)
    return {k: round(float(np.mean([r[k] for r in rows])), 6) for k in rows[0]}


def spinup_check(grid=(121, 240), *, spinup_hours: int = 480, seeds=(0, 1), window: int = 48,
                 every: int = 6) -> dict:
    """The two spin-ups of the module docstring for each seed; a JSON-able dict."""
    cfg = gen.simulator_config(grid)
    sim = gen.Simulator(cfg)
    fine = gen.FINE_SPINUP_HOURS
    if cfg.nlat <= gen.SPINUP_NLAT or spinup_hours <= fine:
        raise DiffsciError(f"spinup_check: grid {grid} with {spinup_hours} h spins up at full resolution only")
    coarse = gen.Simulator(replace(cfg, nlat=gen.SPINUP_NLAT, nlon=2 * gen.SPINUP_NLAT, out_nlat=0, out_nlon=0,
                                   out_poles=False))
    out = {"grid": list(grid), "solver": f"{cfg.nlat}x{cfg.nlon}", "spinup_hours": spinup_hours,
           "fine_hours": fine, "seeds": {}}
    with torch.no_grad(), gen._one_thread():
        for seed in seeds:
            rng = gen._rng(seed, 0, 0, 0)
            t0 = time.perf_counter()
            state = sim.refine(coarse.spinup(coarse.balanced_state(rng), rng, spinup_hours - fine))
            trace = []
            for h in range(0, fine + 1, every):
                trace.append([h, round(spectral_ke_fraction(sim, state.spec, 21), 5)])
                if h < fine:
                    state = sim.run_hours(state, [rng], min(every, fine - h), sim.div_rate)
            two_stage_s = time.perf_counter() - t0
            two_stage = _window(sim, state, gen._rng(seed, 0, 1, 0), window, every)
            rng = gen._rng(seed, 0, 0, 0)
            t0 = time.perf_counter()
            state = sim.spinup(sim.balanced_state(rng), rng, spinup_hours)
            full_s = time.perf_counter() - t0
            out["seeds"][str(seed)] = {"fine_trace": trace, "two_stage": two_stage, "full": _window(
                sim, state, gen._rng(seed, 0, 1, 0), window, every), "two_stage_seconds": round(two_stage_s, 1),
                "full_seconds": round(full_s, 1)}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m diffsci.benchmarks.spinup_check", description=__doc__.splitlines()[0])
    p.add_argument("--grid", default="121x240", help="output grid whose solver is checked (default 121x240: T42)")
    p.add_argument("--spinup-hours", type=int, default=480)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--window", type=int, default=48, help="hours of statistics after each spin-up")
    args = p.parse_args(argv)
    print(json.dumps(spinup_check(gen._parse_grid(args.grid), spinup_hours=args.spinup_hours, seeds=args.seeds,
                                  window=args.window), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

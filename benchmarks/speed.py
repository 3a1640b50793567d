"""``diffsci bench speed [--protein] [--weather]``: wall time and peak memory of the main jobs.

- protein: L = 100 backbones with the shipped checkpoint and its default sampler, at batch 1
  and batch 16 and at 10, 20 and 100 steps (seconds per backbone); target (issue 16) <= 2 s per
  backbone at 100 steps, batch 1, on 2 CPU cores. ``--reference PAIRS`` also times each row's
  fast path and e3nn's own evaluation of the network back to back, ``--potentials PAIRS`` the
  network alone and with the default sampling-time potentials (``connectivity:1,sterics:1``,
  what ``protein sample`` uses) back to back (:func:`protein_speed`). ``--checkpoint CKPT`` times
  another checkpoint (a candidate) instead, and ``--against-shipped PAIRS`` times it and the
  shipped checkpoint back to back (the candidate's cost relative to the shipped one's).
- weather: the emulator's 50-member, 24-step (hourly, 24 h) ensemble at 32x64 with the shipped
  checkpoint and its default sampler, and the simulator's perfect-model ensemble of the same
  size and length from the same initial state, with the same torch threads (the simulator runs
  on one; :func:`diffsci.benchmarks.weather_speed.weather_forecast_speed`); target: emulator /
  simulator time <= 1.
- weather at a WeatherBench 2 grid (``--grid 121x240``, poles included), instead of the above:
  an untrained model of the default size built for that grid, one forecast step of
  ``--grid-members`` members and one training step with and without activation checkpointing
  (``--checkpointing``), each with seconds per model hour per member and peak memory
  (:func:`diffsci.benchmarks.weather_speed.weather_scale_speed`; CPU only).
``--device`` (default cpu) is where the protein sampler and the weather emulator run (the
simulator always runs on the CPU); on CUDA the protein timings are bracketed by
``torch.cuda.synchronize`` (a forecast ends with its copy to the host).
Peak memory beside each row: the row's peak resident set (Linux ``VmHWM``, reset before the
row through ``/proc/self/clear_refs``; elsewhere the process's peak so far,
``resource.getrusage``) and ``torch.cuda.max_memory_allocated`` on CUDA. The load average
(``os.getloadavg``) at start and end tells how busy the machine was.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

import torch

from diffsci.benchmarks.measure import peak_memory, reset_peak_memory, synchronize
from diffsci.core.errors import DiffsciError
from diffsci.core.io import check_int, write_json

__all__ = ["protein_speed", "add_parser"]


def _paired(first, second, pairs: int, batch: int) -> dict:
    """``pairs`` runs of ``first`` then ``second`` back to back (a busy host slows both alike):
    seconds per backbone of each and the median ratio first / second."""
    a, b = [], []
    for _ in range(check_int(pairs, "pairs")):
        a.append(round(first() / batch, 4))
        b.append(round(second() / batch, 4))
    return {"pairs": pairs, "first": a, "second": b,
            "median_ratio": round(float(statistics.median(x / y for x, y in zip(a, b))), 3)}


def protein_speed(length: int = 100, steps=(10, 20, 100), batches=(1, 16), device="cpu", reference: int = 0,
                  potentials: int = 0, checkpoint=None, against_shipped: int = 0) -> dict:
    """Time ``sample_states`` of ``checkpoint`` (None: the shipped one) on ``device`` for every (steps, batch) pair.

    Each row uses the sampler ``protein sample`` uses at its step count (``default_sampler``).
    Returns ``length``, ``threads``, ``device`` and ``rows``: one dict per pair with ``steps``,
    ``batch``, ``sampler``, ``seconds_total``, ``seconds_per_backbone`` and :func:`peak_memory`'s
    keys (``cuda_peak_mb`` on CUDA). ``reference`` > 0: after that, ``reference`` pairs of runs,
    the fast path then e3nn's own evaluation (:func:`diffsci.protein.model.network.e3nn_reference`) back
    to back, so that a busy host slows both alike; the row gets ``reference``: ``pairs``, the
    ``seconds_per_backbone`` and ``reference_seconds_per_backbone`` of each pair and
    ``median_ratio`` (median of fast / reference over the pairs). ``potentials`` > 0: that many
    pairs, the default potentials then the network alone; the row gets ``potentials``: ``pairs``,
    ``terms``, ``seconds_per_backbone`` (with them), ``network_seconds_per_backbone`` and
    ``median_ratio`` (with / without). ``against_shipped`` > 0: that many pairs, ``checkpoint``
    then the shipped checkpoint (each at its own default sampler); the row gets
    ``against_shipped``: ``pairs``, ``seconds_per_backbone``, ``shipped_seconds_per_backbone`` and
    ``median_ratio`` (checkpoint / shipped). The result names the ``checkpoint`` timed."""
    from diffsci.core.utils import make_generator, resolve_device
    from diffsci.protein.model.network import e3nn_reference
    from diffsci.protein.design.builder import DesignInputs, SamplerSettings, sample_states
    from diffsci.protein.design.potentials import default_potentials
    from diffsci.protein.design.request import default_sampler
    from diffsci.protein.design.sampling import load_model

    check_int(length, "length")
    dev = resolve_device(device)
    lm = load_model(checkpoint, device=dev)
    shipped = load_model(device=dev) if check_int(against_shipped, "against_shipped", minimum=0) else None
    inputs = DesignInputs(length)
    terms = default_potentials(fixed_chain=False, symmetric=False, hotspots=False)
    guided = DesignInputs(length, potentials=terms)
    for model in (lm, shipped) if shipped is not None else (lm,):
        sample_states(model, inputs, SamplerSettings(default_sampler(model.config), 2), make_generator(0, "warmup", device=dev))
    rows = []
    for n in steps:
        sampler = default_sampler(lm.config, check_int(n, "steps"))
        for b in batches:
            gens = [make_generator(0, "speed", i, device=dev) for i in range(check_int(b, "batches"))]

            def timed(design=inputs, model=lm):  # seconds of one sampling run of this row
                synchronize(dev)
                t0 = time.perf_counter()
                settings = SamplerSettings(sampler if model is lm else default_sampler(model.config, n), n)
                sample_states(model, design, settings, gens, batch=b)
                synchronize(dev)
                return time.perf_counter() - t0

            reset_peak_memory(dev)
            dt = timed()
            rows.append({"steps": n, "batch": b, "sampler": sampler, "seconds_total": round(dt, 3),
                         "seconds_per_backbone": round(dt / b, 4), **peak_memory(dev)})
            if reference:
                def with_e3nn():
                    with e3nn_reference():
                        return timed()

                r = _paired(timed, with_e3nn, reference, b)
                rows[-1]["reference"] = {"pairs": reference, "seconds_per_backbone": r["first"],
                                         "reference_seconds_per_backbone": r["second"], "median_ratio": r["median_ratio"]}
            if potentials:
                r = _paired(lambda: timed(guided), timed, potentials, b)
                rows[-1]["potentials"] = {"pairs": potentials, "terms": ",".join(f"{k}:{w:g}" for k, w in terms),
                                          "seconds_per_backbone": r["first"], "network_seconds_per_backbone": r["second"],
                                          "median_ratio": r["median_ratio"]}
            if shipped is not None:
                r = _paired(timed, lambda: timed(model=shipped), against_shipped, b)
                rows[-1]["against_shipped"] = {"pairs": against_shipped, "seconds_per_backbone": r["first"],
                                               "shipped_seconds_per_backbone": r["second"],
                                               "median_ratio": r["median_ratio"]}
    return {"length": length, "threads": torch.get_num_threads(), "device": str(dev),
            "checkpoint": str(lm.source), "rows": rows}


def _parse_grid(text: str) -> tuple[int, int]:
    """``"121x240"`` -> (121, 240); anything else: a one-line DiffsciError."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise DiffsciError(f"--grid must be NLATxNLON, e.g. 121x240, got {text!r}") from None
    return h, w


def _scale_lines(res: dict) -> list[str]:
    """The printed lines of a :func:`weather_scale_speed` result."""
    h, w = res["grid"]
    lines = [f"weather {h}x{w} (mesh level {res['refinements']}, {res['mesh_nodes']} mesh nodes, edges {res['edges']}): "
             f"built in {res['build_seconds']} s, base RSS {res['base_rss_mb']} MB"]
    if "forecast" in res:
        f = res["forecast"]
        lines.append(f"  forecast step, {f['members']} members ({f['sampler']}, {f['sampler_steps']} levels): "
                     f"{f['seconds_per_step']} s, {f['seconds_per_model_hour_per_member']} s per model hour per member, "
                     f"peak RSS {f['peak_rss_mb']} MB")
    for r in res["train"]:
        lines.append(f"  training step, checkpointing {'on' if r['activation_checkpointing'] else 'off'}: "
                     f"{r['seconds_per_step']} s, peak RSS {r['peak_rss_mb']} MB, loss {r['loss']:.8f}")
    return lines


def _run(args) -> int:
    from diffsci.benchmarks.weather_speed import weather_forecast_speed, weather_scale_speed

    do_p = args.protein or not args.weather
    do_w = args.weather or not args.protein
    res = {"load_average": {"start": list(os.getloadavg())}}
    if do_p:
        res["protein"] = protein_speed(args.length, args.steps, args.batches, device=args.device,
                                       reference=args.reference, potentials=args.potentials,
                                       checkpoint=args.checkpoint, against_shipped=args.against_shipped)
        for r in res["protein"]["rows"]:
            cuda = f", CUDA peak {r['cuda_peak_mb']} MB" if "cuda_peak_mb" in r else ""
            print(f"protein: L={args.length}, {r['steps']} steps ({r['sampler']}), batch {r['batch']}: {r['seconds_per_backbone']} s/backbone, "
                  f"peak RSS {r['peak_rss_mb']} MB{cuda}")
            if "reference" in r:
                ref = r["reference"]
                print(f"  against e3nn's evaluation, {ref['pairs']} pairs back to back: {ref['seconds_per_backbone']} vs "
                      f"{ref['reference_seconds_per_backbone']} s/backbone, median ratio {ref['median_ratio']}")
            if "potentials" in r:
                pot = r["potentials"]
                print(f"  with the default potentials ({pot['terms']}), {pot['pairs']} pairs back to back: "
                      f"{pot['seconds_per_backbone']} vs {pot['network_seconds_per_backbone']} s/backbone without, "
                      f"median ratio {pot['median_ratio']}")
            if "against_shipped" in r:
                vs = r["against_shipped"]
                print(f"  against the shipped checkpoint, {vs['pairs']} pairs back to back: {vs['seconds_per_backbone']} vs "
                      f"{vs['shipped_seconds_per_backbone']} s/backbone, median ratio {vs['median_ratio']}")
    if do_w and args.grid:
        res["weather_scale"] = weather_scale_speed(_parse_grid(args.grid), refinements=args.refinements,
                                                   checkpointing=args.checkpointing, members=args.grid_members,
                                                   forecast=args.grid_members > 0, threads=args.threads)
        print("\n".join(_scale_lines(res["weather_scale"])))
    elif do_w:
        w = weather_forecast_speed(members=args.members, lead_hours=args.lead_hours, threads=args.threads,
                                   device=args.device, simulator=True)
        res["weather"] = w
        print(f"weather: {w['members']} members x {w['lead_hours']} h at {w['grid']}: emulator {w['seconds']} s, "
              f"simulator {w['simulator_seconds']} s, ratio {w['emulator_to_simulator']} (target <= 1)")
    res["load_average"]["end"] = list(os.getloadavg())
    words = ["diffsci", "bench", "speed"] + (["--protein"] if args.protein else []) + (["--weather"] if args.weather else [])
    if do_p:
        words += ["--length", str(args.length), "--steps", *map(str, args.steps), "--batches", *map(str, args.batches)]
        words += ["--reference", str(args.reference)] if args.reference else []
        words += ["--potentials", str(args.potentials)] if args.potentials else []
        words += ["--checkpoint", args.checkpoint] if args.checkpoint else []
        words += ["--against-shipped", str(args.against_shipped)] if args.against_shipped else []
    if do_w and args.grid:
        words += ["--grid", args.grid, "--checkpointing", args.checkpointing, "--grid-members", str(args.grid_members),
                  "--threads", str(args.threads)] + (["--refinements", str(args.refinements)] if args.refinements else [])
    elif do_w:
        words += ["--members", str(args.members), "--lead-hours", str(args.lead_hours), "--threads", str(args.threads)]
    words += ["--device", args.device]
    res["command"] = " ".join(words)
    if args.out:
        write_json(args.out, res)
    print(json.dumps(res), file=sys.stderr)
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("speed", help="speed and memory of sampling and forecasting", description=__doc__.splitlines()[0])
    p.add_argument("--protein", action="store_true", help="only the protein rows")
    p.add_argument("--weather", action="store_true", help="only the weather emulator against the simulator")
    p.add_argument("--length", type=int, default=100, help="protein length (default 100)")
    p.add_argument("--steps", type=int, nargs="+", default=[10, 20, 100], help="protein sampling steps (default 10 20 100)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 16], help="protein batch sizes (default 1 16)")
    p.add_argument("--reference", type=int, default=0, metavar="PAIRS",
                   help="protein: also time PAIRS pairs of runs per row, the fast path and e3nn's own evaluation "
                        "back to back (the speed-up on a busy host; default 0: off)")
    p.add_argument("--potentials", type=int, default=0, metavar="PAIRS",
                   help="protein: also time PAIRS pairs of runs per row, with the default sampling-time potentials "
                        "and without (the network alone), back to back (default 0: off)")
    p.add_argument("--checkpoint", help="protein: time this checkpoint instead of the shipped one")
    p.add_argument("--against-shipped", type=int, default=0, metavar="PAIRS",
                   help="protein: also time PAIRS pairs of runs per row, --checkpoint then the shipped checkpoint, "
                        "back to back (default 0: off)")
    p.add_argument("--members", type=int, default=50, help="weather ensemble size (default 50)")
    p.add_argument("--lead-hours", type=int, default=24, help="weather forecast length (default 24)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads for both weather jobs (default 1: the simulator runs on one)")
    p.add_argument("--device", default="cpu",
                   help="where the protein sampler and the weather emulator run: cpu (default), cuda[:N], auto")
    p.add_argument("--grid", metavar="NLATxNLON",
                   help="weather: the cost at this WeatherBench 2 grid (poles included, e.g. 121x240) with an untrained "
                        "model, instead of the shipped model against the simulator")
    p.add_argument("--refinements", type=int, help="--grid: mesh level (default: from the grid spacing, 6 at 0.25 deg)")
    p.add_argument("--checkpointing", choices=("both", "on", "off", "none"), default="both",
                   help="--grid: training steps with activation checkpointing, without, both (default) or none")
    p.add_argument("--grid-members", type=int, default=2,
                   help="--grid: members of the timed forecast step (default 2; 0: no forecast row)")
    p.add_argument("--out", help="write the measurements as JSON")
    p.set_defaults(func=_run)

"""One-command GPU check: ``python -m diffsci.benchmarks.gpu_check --out gpu_check.json``.

On a machine with CUDA it runs these checks, each on its own (a failing one is recorded with
its error and the next one runs):

- ``protein_sampling``: ``sample_states`` of the shipped checkpoint, L = 100, 100 steps, at
  batch 1 and 16, on CUDA and on the CPU (:func:`diffsci.benchmarks.speed.protein_speed`:
  seconds, peak memory), the CPU / CUDA time ratio per batch, and 4 designs of L = 60 at 20
  steps sampled on CUDA (finite, mean CA-CA ok >= :data:`MIN_CA_CA_OK`);
- ``weather_forecast``: the shipped emulator's 16-member x 24 h forecast on CUDA and on the CPU
  (:func:`diffsci.benchmarks.weather_speed.weather_forecast_speed`), and their time ratio;
- ``train_bf16``: a few training steps with bf16 autocast on CUDA (``core.train.Recipe`` /
  ``fit``) of the 2-D toy (``diffsci.core.toy``) and of the protein model on the bundled chains;
  the last loss must be finite;
- ``torchrun``: ``torchrun --standalone --nproc_per_node <GPUs> --no-python diffsci weather
  forecast ... --device cuda`` (nccl: :mod:`diffsci.core.distributed`) against the same forecast
  in one process: exit status, finite data and whether they are bitwise equal (recorded, not
  required: CUDA kernels need not be deterministic); skipped, with a note, on one GPU.

The JSON: ``cuda``, ``torch``, ``devices`` (GPU names), ``checks`` (name -> dict with ``ok``,
``seconds`` and the check's figures, or ``ok: false`` and ``error``; a skipped check has
``skipped``), ``ok`` (every check that ran passed) and ``command``. Without CUDA it writes
``{"cuda": false, "checks": {}, "ok": null, ...}``, says that nothing was checked and exits 0;
otherwise the exit status is 0 when every check passed, 1 when one failed.
"""

from __future__ import annotations

import argparse
import math
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from diffsci.core.io import write_json

__all__ = ["MIN_CA_CA_OK", "check_protein_sampling", "check_weather_forecast", "check_train_bf16", "check_torchrun",
           "run_checks", "gpu_check", "main"]

MIN_CA_CA_OK = 0.8  # mean fraction of CA-CA distances within 3.8 +- 0.3 Å (the shipped model: ~0.96 at 20 steps)


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b > 0 else None


def check_protein_sampling(device, *, length: int = 100, steps: int = 100, batches=(1, 16),
                           design_length: int = 60, design_steps: int = 20, designs: int = 4) -> dict:
    """Protein sampling on ``device`` against the CPU: the timing rows of each, ``cpu_to_device``
    (CPU seconds / device seconds per batch size), and ``designs`` backbones sampled on
    ``device`` (``finite``, ``ca_ca_ok``: mean fraction of CA-CA distances within 3.8 ± 0.3 Å)."""
    from diffsci.benchmarks.speed import protein_speed
    from diffsci.protein.metrics import ca_ca_stats
    from diffsci.protein.design.sampling import load_model, sample_backbones
    from diffsci.protein.design.request import DesignRequest

    dev = protein_speed(length, (steps,), batches, device=device)
    cpu = protein_speed(length, (steps,), batches, device="cpu")
    ratio = {str(a["batch"]): _ratio(b["seconds_total"], a["seconds_total"]) for a, b in zip(dev["rows"], cpu["rows"])}
    out = sample_backbones(load_model(device=device), DesignRequest(lengths=[design_length], num=designs, steps=design_steps, potentials="none"), progress=False)
    finite = all(np.isfinite(d.coords).all() for d in out)
    ok_frac = float(np.mean([ca_ca_stats(d.coords[0])[1] for d in out]))
    return {"ok": bool(finite and ok_frac >= MIN_CA_CA_OK), "device": dev, "cpu": cpu, "cpu_to_device": ratio,
            "designs": {"length": design_length, "steps": design_steps, "num": designs, "finite": bool(finite),
                        "ca_ca_ok": round(ok_frac, 3), "min_ca_ca_ok": MIN_CA_CA_OK}}


def check_weather_forecast(device, *, members: int = 16, lead_hours: int = 24) -> dict:
    """The shipped emulator's ``members`` x ``lead_hours`` forecast on ``device`` and on the CPU,
    and ``cpu_to_device`` (CPU seconds / device seconds)."""
    from diffsci.benchmarks.weather_speed import weather_forecast_speed

    dev = weather_forecast_speed(members=members, lead_hours=lead_hours, device=device)
    cpu = weather_forecast_speed(members=members, lead_hours=lead_hours, device="cpu")
    return {"ok": True, "device": dev, "cpu": cpu, "cpu_to_device": _ratio(cpu["seconds"], dev["seconds"])}


def check_train_bf16(device, workdir, *, steps: int = 3, protein_model: dict | None = None) -> dict:
    """``steps`` training steps with bf16 autocast on ``device`` of the toy and the protein kind
    (``protein_model``: the recipe's model table, None: the default model), each in its own
    folder under ``workdir``; ``ok`` when both last losses are finite."""
    from diffsci.core.train import Recipe, fit
    from diffsci.protein.io.dataset import bundled_dataset_path

    train = {"steps": steps, "device": str(device), "bf16": True, "ckpt_every": steps, "log_every": 1,
             "warmup_steps": 0}
    recipes = {"toy2d": Recipe.from_tables("toy2d", train={**train, "batch_size": 64}),
               "protein-frames": Recipe.from_tables("protein-frames",
                                                    {"model": protein_model} if protein_model is not None else None,
                                                    data={"path": str(bundled_dataset_path())},
                                                    train={**train, "batch_size": 4})}
    out = {}
    for kind, recipe in recipes.items():
        res = fit(recipe, Path(workdir) / kind, progress=False)
        out[kind] = {"steps": res.step, "last_loss": res.last_loss}
    ok = all(v["last_loss"] is not None and math.isfinite(v["last_loss"]) for v in out.values())
    return {"ok": ok, "bf16": True, "device": str(device), **out}


def _executable(name: str) -> str:
    """``name`` beside this Python (its virtual environment), else on the PATH."""
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else (shutil.which(name) or name)


def check_torchrun(device, nproc: int, workdir, *, members: int = 4, lead_hours: int = 2, timeout: float = 600) -> dict:
    """A tiny ``diffsci weather forecast`` over ``nproc`` torchrun ranks on ``device`` (CUDA:
    nccl, one GPU per rank; CPU: gloo) against the same forecast in one process (``--steps 2``,
    a generated 32x64 initial state). ``ok``: every rank exited 0 and the data are finite;
    ``bitwise_equal`` is recorded beside."""
    import xarray as xr

    from diffsci.weather.generator import generate

    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    init = work / "init.nc"
    generate(grid=(32, 64), hours=2, trajectories=1, seed=7, spinup_hours=6, progress=False).to_netcdf(init)
    args = [_executable("diffsci"), "weather", "forecast", "--init", str(init), "--lead-hours", str(lead_hours),
            "--members", str(members), "--steps", "2", "--seed", "4", "--quiet", "--device", str(device)]
    for name, prefix in (("one", []), ("ranks", [_executable("torchrun"), "--standalone", "--nproc_per_node",
                                                   str(nproc), "--no-python"])):
        r = subprocess.run(prefix + args + ["--out", str(work / f"{name}.nc")], capture_output=True, text=True,
                           timeout=timeout)
        if r.returncode != 0:
            return {"ok": False, "nproc": nproc, "error": f"{name}: exit {r.returncode}: {r.stderr[-2000:]}"}
    with xr.open_dataset(work / "one.nc") as a, xr.open_dataset(work / "ranks.nc") as b:
        finite = all(np.isfinite(b[v].values).all() for v in b.data_vars)
        equal = set(a.data_vars) == set(b.data_vars) and all(np.array_equal(a[v].values, b[v].values)
                                                              for v in a.data_vars)
    return {"ok": bool(finite), "nproc": nproc, "members": members, "lead_hours": lead_hours,
            "backend": "nccl" if torch.device(device).type == "cuda" else "gloo", "finite": bool(finite),
            "bitwise_equal": bool(equal)}


def _timed(fn, *args, **kwargs) -> dict:
    """``fn(*args, **kwargs)`` with ``seconds``; an exception becomes ``ok: false`` and ``error``."""
    t0 = time.perf_counter()
    try:
        res = fn(*args, **kwargs)
    except Exception as exc:  # a check's failure is its result; the next check still runs
        res = {"ok": False, "error": f"{type(exc).__name__}: {exc}",
               "traceback": traceback.format_exc(limit=6)[-3000:]}
    return {**res, "seconds": round(time.perf_counter() - t0, 3)}


def run_checks(device, *, nproc: int, workdir, protein: dict | None = None, weather: dict | None = None,
               train: dict | None = None, torchrun: dict | None = None) -> dict:
    """Every check on ``device`` (name -> result); the dicts are the checks' keyword arguments
    (None: the defaults). ``nproc`` < 2 skips the torchrun check with a note."""
    checks = {"protein_sampling": _timed(check_protein_sampling, device, **(protein or {})),
              "weather_forecast": _timed(check_weather_forecast, device, **(weather or {})),
              "train_bf16": _timed(check_train_bf16, device, Path(workdir) / "train", **(train or {}))}
    if nproc < 2:
        checks["torchrun"] = {"skipped": f"{nproc} device(s): torchrun over ranks needs at least 2 GPUs"}
    else:
        checks["torchrun"] = _timed(check_torchrun, device, nproc, Path(workdir) / "torchrun", **(torchrun or {}))
    return checks


def gpu_check(out) -> dict:
    """Run every check on CUDA (when present) and write the JSON to ``out``; returns it."""
    res = {"cuda": torch.cuda.is_available(), "torch": torch.__version__,
           "command": f"python -m diffsci.benchmarks.gpu_check --out {out}"}
    if not res["cuda"]:
        res.update(devices=[], checks={}, ok=None, note="no CUDA device: nothing was checked")
        write_json(out, res)
        return res
    n = torch.cuda.device_count()
    res["devices"] = [torch.cuda.get_device_name(i) for i in range(n)]
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as work:
        res["checks"] = run_checks(torch.device("cuda"), nproc=n, workdir=work)
    res["ok"] = all(c.get("ok", True) for c in res["checks"].values())
    write_json(out, res)
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m diffsci.benchmarks.gpu_check", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="gpu_check.json", help="the JSON written (default gpu_check.json)")
    args = p.parse_args(argv)
    res = gpu_check(args.out)
    if not res["cuda"]:
        print(f"no CUDA device: nothing was checked (wrote {args.out})")
        return 0
    for name, c in res["checks"].items():
        state = "skipped" if "skipped" in c else ("ok" if c["ok"] else "FAILED")
        print(f"{name}: {state} {c.get('skipped') or c.get('error') or ''}".rstrip())
    print(f"wrote {args.out}")
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

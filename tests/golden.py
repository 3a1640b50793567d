"""Golden outputs: what the shipped checkpoints and the main commands produce, recorded once
and compared on every test run, so a change of structure cannot change a number unnoticed.

Each case runs a user-facing command in-process (``diffsci ...`` through
:func:`diffsci.core.cli.main`) and returns named arrays read back from the files it wrote:

- ``protein_sample``: ``diffsci protein sample`` with the shipped checkpoint (2 designs, 60
  residues, 20 steps, seed 0, ``--potentials none``: the network alone, as before the
  sampling-time potentials became a default): the backbone coordinates (Å) read back from the
  PDB files;
- ``protein_motif``: a motif-scaffolding design (a motif cut from a bundled chain, contig
  ``20/A..-../20``, 20 steps, ``--potentials none``);
- ``protein_evaluate``: ``diffsci protein evaluate`` on the two designs of ``protein_sample``
  with their recorded coordinates (numeric per-sample fields and summary means), so that the
  evaluation is compared on the same input on every processor;
- ``weather_generate``: the ERA5-style generator (32x64 grid, seed 7), which makes the
  benchmark data;
- ``weather_forecast`` / ``weather_direct``: ``diffsci weather forecast`` with the denoising
  diffusion checkpoint shipped until the CRPS fine-tune (``benchmarks/data/weather_denoise_v0.pt``;
  2 members, 2 steps, 3 noise levels, its recorded sampler heun) and with the benchmarks'
  deterministic checkpoint;
- ``weather_shipped``: ``diffsci weather forecast`` with the shipped checkpoint and its own
  sampling settings (2 members, 2 steps);
- ``weather_evaluate``: ``diffsci weather evaluate`` of the diffusion forecast against the
  generated truth.

The recorded values (``tests/data/golden.npz``) were written by ``python tests/golden.py
--write`` at commit b4d540d, before the architecture redesign (issue 15); a case added later is
recorded by ``python tests/golden.py --add``, which writes only the arrays not yet recorded
(``weather_shipped`` and the sheet and contact-order fields of ``protein_evaluate``, when the
CRPS-tuned weather checkpoint was shipped); ``python tests/golden.py --update CASE`` re-records
one case and nothing else (``weather_shipped`` when a new weather checkpoint is shipped;
``protein_evaluate`` when the frame network's tensor product was fused (session 5): the designs
of ``protein_sample`` and ``protein_motif`` still match their record to the PDB's last digit,
1e-3 Å, but the metrics of designs that moved by 1e-3 Å differ by up to 2% (a near-zero mean),
so the evaluation of the current designs was re-recorded; again in session 6, when the edge
MLPs' first layers became one matmul while sampling: the same designs to 1e-3 Å, their metrics
re-recorded; on 2026-12-05, when the evaluation began to read the recorded designs instead of
the freshly sampled ones, whose last digit differs between processors: the code of e468e53 and
the restructured code give the same 104 numbers bit for bit on them).
``protein_sample``, ``protein_motif`` and ``protein_evaluate`` were re-recorded (``--update``, one
case each) when the v2 network became the shipped protein checkpoint (2026-12-07, session 9):
other weights, so other designs; the v1 file's designs are no longer a case. The same three again
when the v2 campaign's state 63,840 replaced that file (session 11).
``tests/test_golden.py`` recomputes every case and compares within float rounding.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

GOLDEN = Path(__file__).parent / "data" / "golden.npz"


def _cli(*argv) -> None:
    from diffsci.core.cli import main

    code = main([str(a) for a in argv])
    if code != 0:
        raise RuntimeError(f"diffsci {' '.join(map(str, argv))} exited with {code}")


def _pdb_coords(path: Path) -> np.ndarray:
    """All backbone atoms (N, CA, C, O) of a PDB file in file order, shape (atoms, 3)."""
    rows = [line for line in path.read_text().splitlines() if line.startswith("ATOM")]
    return np.array([[float(r[30:38]), float(r[38:46]), float(r[46:54])] for r in rows])


def _numeric(d: dict, prefix: str, out: dict) -> None:
    for k, v in sorted(d.items()):
        if isinstance(v, bool) or v is None:
            continue
        if isinstance(v, (int, float)):
            out[f"{prefix}{k}"] = np.asarray(float(v))


def _use_recorded_designs(folder: Path) -> None:
    """Put the recorded ``protein_sample`` coordinates into the designs' PDB files (when recorded
    and of the same shape), so that ``protein_evaluate`` scores the same input on every CPU: the
    sampler's last-digit rounding differs between processors (1e-3 Å, within its own tolerance)
    and moves the angle and bond deviations by up to 1e-4 relative."""
    if not GOLDEN.is_file():
        return
    with np.load(GOLDEN) as z:
        for i, pdb in enumerate(sorted(folder.glob("*.pdb"))):
            key = f"protein_sample/{i}"
            if key not in z.files:
                continue
            lines = pdb.read_text().splitlines(keepends=True)
            atoms = [j for j, line in enumerate(lines) if line.startswith("ATOM")]
            if len(atoms) != len(z[key]):
                continue
            for j, xyz in zip(atoms, z[key]):
                line = lines[j]
                lines[j] = line[:30] + "".join(f"{v:8.3f}" for v in xyz) + line[54:]
            pdb.write_text("".join(lines))


def protein_cases(tmp: Path) -> dict[str, np.ndarray]:
    from diffsci.benchmarks.motif_bench import write_motif_file
    from diffsci.protein.io.dataset import bundled_dataset_path, load_dataset

    out: dict[str, np.ndarray] = {}
    sample_dir = tmp / "designs"
    _cli("protein", "sample", "--length", 60, "--num", 2, "--steps", 20, "--seed", 0, "--potentials", "none",
         "--out", sample_dir)
    for i, pdb in enumerate(sorted(sample_dir.glob("*.pdb"))):
        out[f"protein_sample/{i}"] = _pdb_coords(pdb)

    chain = load_dataset(bundled_dataset_path()).chain(0)
    motif = write_motif_file(chain, tmp / "motif.pdb")
    r = chain.res_ids
    motif_dir = tmp / "motif"
    _cli("protein", "sample", "--contig", f"20/A{r[5]}-{r[16]}/20", "--motif", motif, "--num", 1, "--steps", 20,
         "--seed", 3, "--potentials", "none", "--out", motif_dir)
    (pdb,) = sorted(motif_dir.glob("*.pdb"))
    out["protein_motif/0"] = _pdb_coords(pdb)

    _use_recorded_designs(sample_dir)
    report_path = tmp / "eval.json"
    _cli("protein", "evaluate", sample_dir, "--out", report_path, "--quiet")
    report = json.loads(report_path.read_text())
    for i, row in enumerate(report["per_sample"]):
        _numeric(row, f"protein_evaluate/sample{i}/", out)
    _numeric(report["summary"], "protein_evaluate/summary/", out)
    return out


def weather_cases(tmp: Path) -> dict[str, np.ndarray]:
    import xarray as xr

    from diffsci.weather.generator import generate

    out: dict[str, np.ndarray] = {}
    ds = generate(grid=(32, 64), hours=8, trajectories=1, seed=7, spinup_hours=24, progress=False)
    tmp.mkdir(parents=True, exist_ok=True)
    data = tmp / "truth.nc"
    ds.to_netcdf(data, engine="netcdf4")
    for v in ds.data_vars:
        if {"latitude", "longitude", "time"} <= set(ds[v].dims):
            out[f"weather_generate/{v}"] = ds[v].isel(time=-1).values.astype(np.float64)
    init = str(ds.time.values[3])
    bench_data = Path(__file__).resolve().parents[1] / "benchmarks" / "data"
    for name, extra in (("weather_forecast", ["--members", 2, "--steps", 3, "--checkpoint",
                                              bench_data / "weather_denoise_v0.pt"]),
                        ("weather_direct", ["--members", 1, "--checkpoint", bench_data / "deterministic_weather.pt"]),
                        ("weather_shipped", ["--members", 2])):
        path = tmp / f"{name}.nc"
        _cli("weather", "forecast", "--init", data, "--init-time", init, "--lead-hours", 2, "--seed", 0,
             "--out", path, "--quiet", *extra)
        with xr.open_dataset(path) as fds:
            for v in fds.data_vars:
                out[f"{name}/{v}"] = fds[v].values.astype(np.float64)
    metrics = tmp / "wmetrics.json"
    _cli("weather", "evaluate", tmp / "weather_forecast.nc", "--truth", data, "--out", metrics)
    flat: dict[str, float] = {}

    def walk(obj, prefix):
        if isinstance(obj, dict):
            for k, v in obj.items():
                walk(v, f"{prefix}{k}/")
        elif isinstance(obj, list) and obj and all(isinstance(x, (int, float)) or x is None for x in obj):
            flat[prefix.rstrip("/")] = np.array([np.nan if x is None else float(x) for x in obj])
        elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
            flat[prefix.rstrip("/")] = np.asarray(float(obj))

    walk(json.loads(metrics.read_text()), "weather_evaluate/")
    out.update(flat)
    return out


def all_cases(tmp: Path) -> dict[str, np.ndarray]:
    tmp.mkdir(parents=True, exist_ok=True)
    return {**protein_cases(tmp / "protein"), **weather_cases(tmp / "weather")}


if __name__ == "__main__":  # python tests/golden.py --write | --add | --update CASE
    import tempfile

    args = sys.argv[1:]
    if args not in (["--write"], ["--add"]) and not (len(args) == 2 and args[0] == "--update"):
        sys.exit("usage: python tests/golden.py --write | --add | --update CASE   (records tests/data/golden.npz; "
                 "--add: only the arrays not yet recorded; --update CASE: re-records one case, e.g. weather_shipped "
                 "after a new shipped checkpoint, and keeps every other array)")
    with tempfile.TemporaryDirectory() as d:
        values = all_cases(Path(d))
    if args[0] != "--write":
        with np.load(GOLDEN) as z:
            old = {k: z[k] for k in z.files}
        if args[0] == "--add":
            print(f"adding {len(set(values) - set(old))} arrays: {sorted(set(values) - set(old))[:8]} ...")
            values = {**values, **old}
        else:
            case = args[1].rstrip("/") + "/"
            new = {k: v for k, v in values.items() if k.startswith(case)}
            if not new:
                sys.exit(f"no case {args[1]!r}: cases are {sorted({k.split('/')[0] for k in values})}")
            print(f"re-recording {len(new)} arrays of {case[:-1]}")
            values = {**{k: v for k, v in old.items() if not k.startswith(case)}, **new}
    np.savez_compressed(GOLDEN, **values)
    print(f"wrote {GOLDEN}: {len(values)} arrays")

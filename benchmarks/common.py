"""What the benchmarks share: their parser's common arguments, calling the benchmark from the
parsed arguments, the command line recorded in results.json, and writing results.json + report.md."""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path

from diffsci.core.io import write_json, write_text

__all__ = ["add_benchmark_parser", "run_from_args", "command_line", "write_results"]


def add_benchmark_parser(subparsers, name: str, run, *, help: str, doc: str, outputs: str,
                         quick: str) -> argparse.ArgumentParser:
    """The parser of ``diffsci bench NAME`` with ``--out`` (a folder holding ``outputs``) and
    ``--quick`` (help ``quick``); its description is the first line of ``doc``. Parsing sets
    ``func`` to :func:`run_from_args` of ``run`` (set ``func`` again to pass overrides)."""
    p = subparsers.add_parser(name, help=help, description=doc.splitlines()[0])
    p.add_argument("--out", required=True, help=f"output folder ({outputs})")
    p.add_argument("--quick", action="store_true", help=quick)
    p.set_defaults(func=lambda args: run_from_args(run, args))
    return p


def add_potentials_option(p: argparse.ArgumentParser, whose: str = "") -> None:
    """``--potentials none|default|NAME:WEIGHT,...`` (default none: the network alone) on ``p``;
    ``whose``: what the potentials apply to, for the help (e.g. " of the model's rows")."""
    p.add_argument("--potentials", default="none", metavar="none|default|NAME:WEIGHT,...",
                   help=f"sampling-time potentials{whose} (default none: the network alone; default: what "
                        "'protein sample' uses; see 'protein sample --help')")


def add_churn_option(p: argparse.ArgumentParser, whose: str = "") -> None:
    """``--churn C`` (default None: what ``protein sample`` uses) on ``p``; ``whose`` as for
    :func:`add_potentials_option`."""
    p.add_argument("--churn", type=float,
                   help=f"EDM churn{whose} (default: what 'protein sample' uses; 0: the plain ODE; see "
                        "'protein sample --help')")


def add_t_stop_option(p: argparse.ArgumentParser, whose: str = "") -> None:
    """``--t-stop T`` (default None: the checkpoint's ``t_stop``, what ``protein sample`` uses) on
    ``p``; ``whose`` as for :func:`add_potentials_option`."""
    p.add_argument("--t-stop", type=float,
                   help=f"where the time grid{whose} ends, its clean prediction there the design (default: the "
                        "checkpoint's, what 'protein sample' uses; 0: down to t = 0; see 'protein sample --help')")


def request_potentials(option: str) -> str | None:
    """The request's ``potentials`` for a benchmark's ``--potentials`` option (``default``: None,
    the request's own defaults)."""
    return None if option == "default" else option


def run_from_args(run, args: argparse.Namespace, **overrides) -> int:
    """Call ``run(args.out, **kwargs)`` with each keyword parameter of ``run`` that ``args`` holds
    under the same name, ``overrides`` added or replacing; returns the exit status 0."""
    kwargs = {name: getattr(args, name) for name in inspect.signature(run).parameters
              if name != "out" and hasattr(args, name)}
    run(args.out, **{**kwargs, **overrides})
    return 0


def command_line(name: str, out, *, flags=(), options=()) -> str:
    """``diffsci bench NAME --out OUT`` followed by each set flag and each option whose value is
    not None, in the order given: ``flags`` are ``(flag, bool)`` pairs, ``options`` are
    ``(flag, value)`` pairs (pass None for a default so the command stays short)."""
    words = ["diffsci", "bench", name, "--out", str(out)]
    words += [flag for flag, on in flags if on]
    for flag, value in options:
        if value is not None:
            words += [flag, str(value)]
    return " ".join(words)


def write_results(out, payload: dict, report: str) -> tuple[Path, Path]:
    """Write ``out/results.json`` (strict JSON) and ``out/report.md``, each atomically."""
    out = Path(out)
    return write_json(out / "results.json", payload), write_text(out / "report.md", report)

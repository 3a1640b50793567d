"""The ``diffsci`` command line.

The core knows no domain: the ``protein``, ``weather`` and ``bench`` subcommands are plug-ins
found through the ``diffsci.commands`` entry-point group (see pyproject.toml). Each plug-in is
a function ``register(subparsers)`` that adds its parser and sets ``func`` on it; ``func``
receives the parsed namespace and returns an exit code (or None for 0). A plug-in that groups
subcommands registers them with :func:`add_command_group`.

Errors raised as :class:`diffsci.core.errors.DiffsciError` are printed as a single
``error: ...`` line on stderr and give exit status 2, with no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from importlib.metadata import PackageNotFoundError, entry_points, version

from diffsci.core.errors import DiffsciError

__all__ = ["main", "build_parser", "add_train_arguments", "run_train_command", "add_command_group",
           "CommandGroupParser", "default_threads", "THREADS_HELP"]


def _version() -> str:
    try:
        return version("diffsci")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0+unknown"


class CommandGroupParser(argparse.ArgumentParser):
    """The parser of a command group (``diffsci weather``, ...) in :func:`build_parser`: its
    subcommand modules are imported the first time it parses arguments or formats its help or
    usage, so ``diffsci weather forecast`` imports no protein or bench module, and
    ``diffsci --help`` none of the groups' (start-up: the bench modules alone import torch,
    scipy, biotite and xarray)."""

    _pending: tuple = ()

    def defer(self, load) -> None:
        """Run ``load()`` (adds the subcommands) before this parser is first used."""
        self._pending = (*self._pending, load)

    def load(self) -> CommandGroupParser:
        """Add the deferred subcommands now (once); returns the parser."""
        pending, self._pending = self._pending, ()
        for load in pending:
            load()
        return self

    def parse_known_args(self, args=None, namespace=None):
        self.load()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self.load()
        return super().format_help()

    def format_usage(self) -> str:
        self.load()
        return super().format_usage()


def _add_subcommands(parser: argparse.ArgumentParser, name: str, package: str, modules) -> None:
    sub = parser.add_subparsers(dest=f"{name}_command", metavar="COMMAND", required=True,
                                parser_class=argparse.ArgumentParser)
    for module in modules:
        importlib.import_module(f"{package}.{module}").add_parser(sub)


def add_command_group(subparsers, name: str, help: str, package: str, modules) -> argparse.ArgumentParser:
    """Add ``diffsci NAME COMMAND ...``: a parser ``name`` whose required subcommands are added by
    ``add_parser(subparsers)`` of each module ``{package}.{module}`` in ``modules``, in order.

    The chosen subcommand is stored as ``{name}_command`` in the parsed namespace; each
    module's ``add_parser`` sets ``func``. Returns the group's parser. Under :func:`build_parser`
    (whose groups are :class:`CommandGroupParser`) the modules are imported only when the group
    is used; under any other parser, now."""
    parser = subparsers.add_parser(name, help=help)
    modules = tuple(modules)
    if isinstance(parser, CommandGroupParser):
        parser.defer(lambda: _add_subcommands(parser, name, package, modules))
    else:
        _add_subcommands(parser, name, package, modules)
    return parser


#: the help of a command's ``--threads`` option (:func:`default_threads`)
THREADS_HELP = ("torch CPU threads (default: OMP_NUM_THREADS when set, else the cores this process may use less "
                "the 1-minute load average, at least 1)")


def default_threads(load: float | None = None) -> int:
    """Torch CPU threads of a command when ``--threads`` is not given: ``OMP_NUM_THREADS`` when
    set, else the idle cores this process may run on: the cores (``os.sched_getaffinity``;
    ``os.cpu_count`` where that is missing) less the 1-minute load average (``load``; None:
    ``os.getloadavg``), at least 1. OpenMP threads that wait for a busy core make the networks'
    many small ops far slower (docs/weather.md: 15x for a forecast on a loaded 2-core machine;
    docs/protein.md: up to 40x for a design); the results do not depend on the thread count."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if load is None:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(1, cores - int(round(load)))


def add_train_arguments(parser: argparse.ArgumentParser, *, default_steps: int) -> None:
    """The options every ``diffsci DOMAIN train`` shares (``--out``, ``--config``, ``--steps``,
    ``--device``, ``--resume``, ``--init``, ``--max-minutes``, ``--seed``); values not given fall
    back to the config file's ``train`` table, then to the kind's defaults."""
    parser.add_argument("--out", required=True, help="run folder (checkpoints, metrics.jsonl)")
    parser.add_argument("--config", help="JSON/TOML with optional tables 'model', 'data' and 'train'")
    parser.add_argument("--steps", type=int, help=f"optimizer steps (default: the config's, else {default_steps})")
    parser.add_argument("--device", help="auto (CUDA when present), cpu, cuda[:N] (default: the config's, else auto)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/latest.pt")
    parser.add_argument("--init", metavar="CKPT",
                        help="warm-start from this checkpoint's (EMA) weights with a fresh optimizer ('default': the "
                             "shipped checkpoint); without a 'model' table in --config the checkpoint's own model "
                             "options are used")
    parser.add_argument("--max-minutes", type=float, help="stop with a checkpoint after this wall time")
    parser.add_argument("--seed", type=int, help="seed of the initial weights and the batches (default: the config's, else 0)")


def run_train_command(kind: str, args, data: dict) -> int:
    """Parse ``args`` (from :func:`add_train_arguments`) and ``data`` (the recipe's data table
    from the command line) into a :class:`~diffsci.core.train.Recipe` of ``kind`` and run it with
    :func:`~diffsci.core.train.fit`; prints the final step, loss and checkpoint."""
    from diffsci.core.checkpoint import default_checkpoint_path
    from diffsci.core.train import Recipe, fit
    from diffsci.core.utils import load_config_file

    init = default_checkpoint_path(kind) if args.init == "default" else args.init
    recipe = Recipe.from_tables(kind, load_config_file(args.config), data=data,
                                train={"steps": args.steps, "device": args.device, "seed": args.seed,
                                       "max_minutes": args.max_minutes},
                                init=init)
    res = fit(recipe, args.out, resume=args.resume)
    loss = "none" if res.last_loss is None else f"{res.last_loss:.4f}"
    print(f"trained to step {res.step}, last loss {loss}; checkpoint {res.checkpoint}")
    return 0


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``diffsci`` parser with every plug-in registered (usage errors: one line, exit 2), or
    only the plug-in named ``command`` where there is one (``main`` passes its first argument: a
    ``diffsci weather ...`` call imports nothing of the protein or bench plug-ins). A group's
    subcommands are added when it is used (:class:`CommandGroupParser`)."""
    parser = argparse.ArgumentParser(
        prog="diffsci",
        description="diffsci: scientific diffusion models for protein backbones and weather.",
    )
    parser.add_argument("--version", action="version", version=f"diffsci {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CommandGroupParser)
    plugins = sorted(entry_points(group="diffsci.commands"), key=lambda e: e.name)
    if any(ep.name == command for ep in plugins):
        plugins = [ep for ep in plugins if ep.name == command]
    for ep in plugins:
        ep.load()(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``diffsci`` console command; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 0
    try:
        code = func(args)
    except DiffsciError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

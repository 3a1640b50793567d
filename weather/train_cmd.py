"""``diffsci weather train``: train the graph diffusion model (or, ``--deterministic``, the MSE baseline).

The command only parses: a config file's ``model``/``data``/``train`` tables and the command
line become a :class:`diffsci.core.train.Recipe` of kind ``weather-graph-diffusion`` (or
``weather-graph-deterministic``), which :func:`diffsci.core.train.fit` runs through the kind's
training task (:func:`diffsci.weather.diffusion.make_task`).
"""

from __future__ import annotations

__all__ = ["add_parser"]


def _run(args) -> int:
    from diffsci.core.train import Recipe, fit
    from diffsci.core.utils import load_config_file
    from diffsci.weather.data import check_output_path
    from diffsci.weather.diffusion import KIND, KIND_DETERMINISTIC

    check_output_path(args.out, inputs=[args.data], folder=True)  # before any work
    recipe = Recipe.from_tables(
        KIND_DETERMINISTIC if args.deterministic else KIND, load_config_file(args.config),
        data={"path": args.data, "variables": args.variables},
        train={"steps": args.steps, "device": args.device, "max_minutes": args.max_minutes, "seed": args.seed},
        init=args.init,
    )
    res = fit(recipe, args.out, resume=args.resume)
    print(f"trained to step {res.step}, last loss {res.last_loss:.4f}; checkpoint {res.checkpoint}")
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("train", help="train the weather graph diffusion model",
                              description="Train the graph diffusion model on ERA5-style data (netCDF or zarr: cfgrib, CDS, "
                                          "WeatherBench 2 or NCEP layouts). One model step is the data's time step "
                                          "(recorded in the checkpoint). Checkpoints go to OUT (latest.pt); "
                                          "--resume continues.")
    p.add_argument("--data", required=True, help="training data: netCDF file or zarr store, regular time steps")
    p.add_argument("--out", required=True, help="run folder for checkpoints and metrics.jsonl")
    p.add_argument("--config", help="JSON/TOML with optional tables 'model', 'data' and 'train'")
    p.add_argument("--variables", nargs="+", help="variables to model (default: all in the file)")
    p.add_argument("--steps", type=int, help="optimizer steps (default 2000)")
    p.add_argument("--device", help="auto (default: CUDA when present), cpu, cuda[:N]")
    p.add_argument("--resume", action="store_true", help="continue from OUT/latest.pt")
    p.add_argument("--init", help="warm-start from this checkpoint's weights (its model options unless the config "
                                  "file has a 'model' table)")
    p.add_argument("--deterministic", action="store_true", help="train the MSE (GraphCast-style) baseline instead")
    p.add_argument("--max-minutes", type=float, help="stop with a checkpoint after this wall time")
    p.add_argument("--seed", type=int, help="training seed (default 0): initial weights and batches")
    p.set_defaults(func=_run)

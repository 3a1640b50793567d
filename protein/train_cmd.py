"""``diffsci protein train``: train the backbone model on a prepared dataset.

The command only parses: its options and config file become a :class:`diffsci.core.train.Recipe`
of the kind ``protein-frames`` (defaults: :data:`diffsci.protein.diffusion.TRAIN_DEFAULTS`),
which :func:`diffsci.core.train.fit` runs.
"""

from __future__ import annotations

from diffsci.core.utils import load_config_file

__all__ = ["add_parser"]


def _run_cli(args) -> int:
    from diffsci.core.checkpoint import default_checkpoint_path
    from diffsci.core.train import Recipe, fit
    from diffsci.protein.diffusion import KIND

    init = default_checkpoint_path(KIND) if args.init == "default" else args.init
    recipe = Recipe.from_tables(KIND, load_config_file(args.config), data={"path": args.data},
                                train={"steps": args.steps, "device": args.device, "seed": args.seed,
                                       "max_minutes": args.max_minutes},
                                init=init)
    res = fit(recipe, args.out, resume=args.resume)
    print(f"trained to step {res.step}, last loss {res.last_loss:.4f}; checkpoint {res.checkpoint}")
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("train", help="train the backbone diffusion model",
                              description="Train the SE(3) backbone model on a dataset from 'diffsci protein prepare' "
                                          "(or the bundled protein/data/chains.npz). --resume continues from OUT/latest.pt.")
    p.add_argument("--data", required=True, help="dataset .npz")
    p.add_argument("--out", required=True, help="run folder (checkpoints, metrics.jsonl)")
    p.add_argument("--config", help="JSON/TOML with optional tables 'model' (formulation, net, max_length...), "
                                    "'data' (split) and 'train'")
    p.add_argument("--steps", type=int, help="optimizer steps (default: the config's, else 10000)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: the config's, else auto)")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--init", metavar="CKPT",
                   help="warm-start from this checkpoint's (EMA) weights with a fresh optimizer ('default': the "
                        "shipped checkpoint); without a 'model' table in --config the checkpoint's own model "
                        "configuration is used")
    p.add_argument("--max-minutes", type=float, help="stop with a checkpoint after this wall time")
    p.add_argument("--seed", type=int, help="seed of the initial weights and the batches (default: the config's, else 0)")
    p.set_defaults(func=_run_cli)

"""``diffsci protein train``: train the backbone model on a prepared dataset.

The command only parses: its options and config file become a :class:`diffsci.core.train.Recipe`
of the kind ``protein-frames`` (defaults: :data:`diffsci.protein.model.diffusion.TRAIN_DEFAULTS`),
which :func:`diffsci.core.train.fit` runs.
"""

from __future__ import annotations

from diffsci.core.cli import add_train_arguments, run_train_command

__all__ = ["add_parser"]


def _run_cli(args) -> int:
    from diffsci.core.io import check_output_path
    from diffsci.protein.model.diffusion import KIND

    check_output_path(args.out, inputs=[args.data], folder=True)  # before any work
    return run_train_command(KIND, args, data={"path": args.data})


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("train", help="train the backbone diffusion model",
                              description="Train the SE(3) backbone model on a dataset from 'diffsci protein prepare' "
                                          "(or the bundled protein/data/chains.npz). --resume continues from OUT/latest.pt. "
                                          "--config tables: 'model' (formulation, net, max_length...), 'data' (split), "
                                          "'train'.")
    p.add_argument("--data", required=True, help="dataset .npz")
    add_train_arguments(p, default_steps=10000)
    p.set_defaults(func=_run_cli)

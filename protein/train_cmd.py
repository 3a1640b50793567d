"""``diffsci protein train``: train the backbone model on a prepared dataset."""

from __future__ import annotations

from diffsci.core.errors import DiffsciError
from diffsci.core.train import TrainConfig, train
from diffsci.core.utils import load_config_file

__all__ = ["add_parser", "run_training"]


def run_training(data, out, *, steps=None, device="auto", resume=False, config=None, max_minutes=None,
                 progress=True, seed=0, init=None):
    """Load the dataset, build the model from ``config['model']`` and train with the core loop
    (``init``: a checkpoint to warm-start from, e.g. the shipped one)."""
    from diffsci.protein.dataset import load_dataset
    from diffsci.protein.diffusion import BackboneTask, ProteinModelConfig, build_model

    config = dict(config or {})
    try:
        ds = load_dataset(data)
    except FileNotFoundError:
        raise DiffsciError(f"--data {data}: file not found") from None
    if init == "default":
        from diffsci.protein.sampling import default_checkpoint_path

        init = default_checkpoint_path()
    if init is not None and "model" not in config:  # a warm start without a 'model' table keeps the checkpoint's model
        from diffsci.core.train import load_checkpoint
        from diffsci.protein.diffusion import KIND

        config["model"] = dict(load_checkpoint(init, expected_kind=KIND).get("model_config") or {})
        if progress:
            import sys

            print(f"model configuration from {init} (no 'model' table in --config)", file=sys.stderr)
    cfg = ProteinModelConfig.from_dict(config.get("model", {}))
    task = BackboneTask(cfg, ds, split="train" if "train" in set(map(str, ds.split)) else None)
    if progress:
        import sys

        print(f"training on {len(task.chains)} chains; filtered out {task.skipped['coil']} (P-SEA coil > "
              f"{cfg.max_coil}) and {task.skipped['rg']} (Rg > {cfg.max_rg_ratio} x 2.2 L^0.38)", file=sys.stderr)
        if task.weights is not None:
            print(f"strand_power {cfg.strand_power}: the most-drawn chain has p = {float(task.weights.max()):.3f} "
                  f"(uniform would be {1 / len(task.chains):.3f})", file=sys.stderr)
    opts = {"steps": 10000, "batch_size": 6, "lr": 1e-3, "ema_decay": 0.999, "ckpt_every": 100,
            "log_every": 10, "warmup_steps": 200, "grad_clip": 1.0, "device": device, "seed": seed,
            "max_minutes": max_minutes}
    opts.update(config.get("train", {}))
    if steps is not None:
        opts["steps"] = steps
    return train(build_model(cfg), task, TrainConfig.from_dict(opts), out, resume=resume, progress=progress,
                 init_from=init)


def _run_cli(args) -> int:
    config = load_config_file(args.config)
    res = run_training(args.data, args.out, steps=args.steps, device=args.device, resume=args.resume,
                       config=config, max_minutes=args.max_minutes, seed=args.seed, init=args.init)
    print(f"trained to step {res.step}, last loss {res.last_loss:.4f}; checkpoint {res.checkpoint}")
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("train", help="train the backbone diffusion model",
                              description="Train the SE(3) backbone model on a dataset from 'diffsci protein prepare' "
                                          "(or the bundled protein/data/chains.npz). --resume continues from OUT/latest.pt.")
    p.add_argument("--data", required=True, help="dataset .npz")
    p.add_argument("--out", required=True, help="run folder (checkpoints, metrics.jsonl)")
    p.add_argument("--config", help="JSON/TOML with optional tables 'model' (formulation, net, max_length...) and 'train'")
    p.add_argument("--steps", type=int)
    p.add_argument("--device", default="auto")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--init", metavar="CKPT",
                   help="warm-start from this checkpoint's (EMA) weights with a fresh optimizer ('default': the "
                        "shipped checkpoint); without a 'model' table in --config the checkpoint's own model "
                        "configuration is used")
    p.add_argument("--max-minutes", type=float, help="stop with a checkpoint after this wall time")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_run_cli)

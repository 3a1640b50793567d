"""A toy problem for the core: 2-D Gaussian mixtures, their exact denoiser, a small MLP.

The exact clean-data denoiser of a Gaussian mixture under ``x_t = alpha x0 + sigma eps`` is

    E[x0 | x_t] = sum_k w_k(x_t) (mu_k + alpha S_k (alpha^2 S_k + sigma^2 I)^-1 (x_t - alpha mu_k)),
    w_k propto pi_k N(x_t; alpha mu_k, alpha^2 S_k + sigma^2 I),

which is what the sampler tests compare against (STYLE.md: analytic references).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

from diffsci.core.checkpoint import register_kind
from diffsci.core.precond import EDMPrecond, edm_loss_weight
from diffsci.core.schedules import EDM, Schedule
from diffsci.core.train import Recipe, fit
from diffsci.core.utils import append_dims

__all__ = ["GaussianMixture", "ring_mixture", "MLPDenoiserNet", "ToyConfig", "ToyTask", "build_toy"]


@dataclass(frozen=True)
class GaussianMixture:
    """A mixture of Gaussians in R^d. Shapes: weights (K,), means (K, d), covs (K, d, d)."""

    weights: torch.Tensor
    means: torch.Tensor
    covs: torch.Tensor

    @property
    def mean(self) -> torch.Tensor:
        return (self.weights[:, None] * self.means).sum(0)

    @property
    def covariance(self) -> torch.Tensor:
        m = self.mean
        d = self.means - m
        return (self.weights[:, None, None] * (self.covs + d[:, :, None] * d[:, None, :])).sum(0)

    def sample(self, n: int, generator=None) -> torch.Tensor:
        """n draws, float64. Shape (n, d)."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        chol = torch.linalg.cholesky(self.covs)
        z = torch.randn(n, self.means.shape[1], generator=generator, dtype=self.means.dtype)
        return self.means[k] + (chol[k] @ z[..., None])[..., 0]

    def denoise(self, x: torch.Tensor, t: torch.Tensor, schedule: Schedule) -> torch.Tensor:
        """Exact E[x0 | x_t]. Shape x (B, d), t (B,) -> (B, d)."""
        xd = x.to(torch.float64)
        t = t.to(torch.float64)
        if (t == t[0]).all():  # one noise level for the batch: factorise once
            t = t[:1]
        a = schedule.alpha(t)[:, None, None, None]  # (B or 1, 1, 1, 1)
        s = schedule.sigma(t)[:, None, None, None]
        eye = torch.eye(x.shape[1], dtype=torch.float64)
        cov_t = a**2 * self.covs[None] + s**2 * eye  # (B or 1, K, d, d)
        prec = torch.linalg.inv(cov_t)
        logdet = torch.logdet(cov_t)  # (B or 1, K)
        diff = xd[:, None, :] - a[..., 0] * self.means[None]  # (B, K, d)
        sol = (prec @ diff[..., None])[..., 0]
        logw = torch.log(self.weights)[None] - 0.5 * (diff * sol).sum(-1) - 0.5 * logdet
        w = torch.softmax(logw, dim=1)
        post = self.means[None] + a[..., 0] * (self.covs[None] @ sol[..., None])[..., 0]
        return (w[..., None] * post).sum(1).to(x.dtype)


def ring_mixture(k: int = 3, radius: float = 2.0, std: float = 0.35, center=(1.0, 0.5)) -> GaussianMixture:
    """k equal-weight isotropic components on a circle (shifted so the mean is not 0)."""
    ang = torch.arange(k, dtype=torch.float64) * 2 * math.pi / k
    means = torch.stack([radius * torch.cos(ang), radius * torch.sin(ang)], -1) + torch.tensor(center, dtype=torch.float64)
    w = torch.linspace(1.0, 2.0, k, dtype=torch.float64)
    covs = torch.eye(2, dtype=torch.float64).expand(k, 2, 2) * std**2
    covs = covs.clone()
    covs[0] = torch.tensor([[std**2 * 2.0, 0.3 * std**2], [0.3 * std**2, std**2 * 0.6]], dtype=torch.float64)
    return GaussianMixture(w / w.sum(), means, covs)


class MLPDenoiserNet(nn.Module):
    """A small MLP ``F(x_in, c_noise) -> output`` for the 2-D toy (wrapped by EDM preconditioning)."""

    def __init__(self, dim: int = 2, hidden: int = 128, depth: int = 3, n_freq: int = 16):
        super().__init__()
        self.register_buffer("freqs", torch.randn(n_freq) * 4.0, persistent=True)
        layers: list[nn.Module] = [nn.Linear(dim + 2 * n_freq, hidden), nn.SiLU()]
        for _ in range(depth - 1):
            layers += [nn.Linear(hidden, hidden), nn.SiLU()]
        layers.append(nn.Linear(hidden, dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, cond=None) -> torch.Tensor:
        ang = append_dims(c_noise, 2) * self.freqs[None]
        emb = torch.cat([torch.sin(ang), torch.cos(ang)], -1).to(x.dtype)
        return self.net(torch.cat([x, emb], -1))


# ----------------------------------------------------------------------------- toy training
@dataclass(frozen=True)
class ToyBatch:
    """A training batch for the 2-D toy. Shapes: x0 (B, 2), t (B,), eps (B, 2)."""

    x0: torch.Tensor
    t: torch.Tensor
    eps: torch.Tensor


@dataclass(frozen=True)
class ToyConfig:
    """Frozen configuration of the 2-D toy model (saved in its checkpoints)."""

    hidden: int = 128
    """width of the MLP"""
    depth: int = 3
    """hidden layers"""
    sigma_min: float = 0.002
    sigma_max: float = 20.0
    rho: float = 7.0
    """EDM (Karras) noise levels: sigma range and rho"""
    sigma_data: float = 1.5
    """data standard deviation used by the EDM preconditioning"""
    mixture_k: int = 3
    """components of the ring mixture"""


class ToyTask:
    """EDM denoising on a ring mixture: sigma from the rho distribution, EDM loss weighting."""

    kind = "toy2d"

    def __init__(self, cfg: ToyConfig = ToyConfig()):
        self.cfg = self.config = cfg
        self.mixture = ring_mixture(k=cfg.mixture_k)
        self.schedule = EDM(sigma_min=cfg.sigma_min, sigma_max=cfg.sigma_max, rho=cfg.rho, sigma_data=cfg.sigma_data)

    def build_model(self) -> nn.Module:
        torch.manual_seed(0)  # architecture init is part of the model config, not the run seed
        return build_toy(self.cfg)

    def model_config(self) -> dict:
        return dataclasses.asdict(self.cfg)

    def sample_batch(self, generator, batch_size):
        x0 = self.mixture.sample(batch_size, generator).to(torch.float32)
        t = self.schedule.sample_t(batch_size, generator).to(torch.float32)
        eps = torch.randn(batch_size, 2, generator=generator)
        return ToyBatch(x0, t, eps)

    def loss(self, model, batch: ToyBatch):
        sigma = self.schedule.sigma(batch.t)
        x_t = batch.x0 + append_dims(sigma, 2) * batch.eps
        x0_hat = model(x_t, batch.t)
        w = edm_loss_weight(sigma, self.cfg.sigma_data)
        return (w * ((x0_hat - batch.x0) ** 2).sum(-1)).mean()


def build_toy(cfg: ToyConfig) -> nn.Module:
    """The EDM-preconditioned MLP denoiser ``(x_t (B, 2), t (B,)) -> x0_hat (B, 2)``."""
    schedule = EDM(sigma_min=cfg.sigma_min, sigma_max=cfg.sigma_max, rho=cfg.rho, sigma_data=cfg.sigma_data)
    return EDMPrecond(MLPDenoiserNet(2, cfg.hidden, cfg.depth), schedule, cfg.sigma_data)


def _upgrade_v0(ck: dict) -> dict:
    """Toy checkpoints written before config versions: the config is unchanged."""
    return ck


register_kind("toy2d", ToyConfig, build_toy, version=1, migrations={0: _upgrade_v0},
              make_task=lambda recipe: ToyTask(recipe.model),
              train_defaults={"batch_size": 256, "lr": 2e-3, "log_every": 10, "ema_decay": 0.99})


def main(argv=None) -> int:
    """``python -m diffsci.core.toy --out RUN [--steps N] [--resume]``: train the 2-D toy."""
    p = argparse.ArgumentParser(prog="python -m diffsci.core.toy", description=main.__doc__)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ckpt-every", type=int, default=200)
    p.add_argument("--device", default="auto")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    recipe = Recipe.from_tables("toy2d", train={"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
                                                "seed": args.seed, "ckpt_every": args.ckpt_every,
                                                "device": args.device})
    res = fit(recipe, args.out, resume=args.resume, progress=not args.no_progress)
    print(f"done step={res.step} loss={res.last_loss:.5f}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    import sys

    sys.exit(main())

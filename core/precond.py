"""Network preconditioning and prediction-type adapters.

EDM (Karras et al. 2022, Table 1) writes the denoiser as
``D(x; sigma) = c_skip x + c_out F(c_in x; c_noise)`` with

    c_skip = sigma_data^2 / (sigma^2 + sigma_data^2)
    c_out  = sigma sigma_data / sqrt(sigma^2 + sigma_data^2)
    c_in   = 1 / sqrt(sigma^2 + sigma_data^2)
    c_noise = log(sigma) / 4

and trains with the weight ``lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2``,
which makes the effective target of F unit-variance at every noise level. For a schedule with
``alpha != 1`` the state is first rescaled to the variance-exploding form ``x / alpha`` with
``sigma = sigma(t) / alpha(t)``. Coefficients broadcast to any tensor rank (``append_dims``).

Adapters wrap an eps-, v- or velocity-predicting network into the clean-data denoiser
interface once, so samplers never branch on a prediction type (STYLE.md, item 4).
"""

from __future__ import annotations

import torch
from torch import nn

from diffsci.core.schedules import Schedule
from diffsci.core.utils import append_dims

__all__ = ["edm_coefficients", "edm_loss_weight", "EDMPrecond"]


def edm_coefficients(sigma: torch.Tensor, sigma_data: float = 1.0):
    """``(c_skip, c_out, c_in, c_noise)`` for noise levels ``sigma`` (any shape)."""
    s2 = sigma**2 + sigma_data**2
    c_skip = sigma_data**2 / s2
    c_out = sigma * sigma_data / torch.sqrt(s2)
    c_in = 1 / torch.sqrt(s2)
    c_noise = torch.log(sigma.clamp_min(1e-20)) / 4
    return c_skip, c_out, c_in, c_noise


def edm_loss_weight(sigma: torch.Tensor, sigma_data: float = 1.0) -> torch.Tensor:
    """EDM's loss weight ``(sigma^2 + sigma_data^2) / (sigma sigma_data)^2``."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


class EDMPrecond(nn.Module):
    """Wrap ``net(x_in, c_noise, cond) -> F`` into a denoiser ``forward(x_t, t, cond) -> x0_hat``.

    Shapes: ``x_t`` (B, ...), ``t`` (B,). ``net`` sees ``c_in * x_t / alpha`` and ``c_noise`` (B,).
    """

    def __init__(self, net: nn.Module, schedule: Schedule, sigma_data: float = 1.0):
        super().__init__()
        self.net = net
        self.schedule = schedule
        self.sigma_data = float(sigma_data)

    def sigma_of(self, t: torch.Tensor) -> torch.Tensor:
        """The variance-exploding noise level sigma(t) / alpha(t), shape (B,)."""
        return self.schedule.sigma(t) / self.schedule.alpha(t)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond=None) -> torch.Tensor:
        t = torch.as_tensor(t, device=x.device).expand(x.shape[0])
        alpha = append_dims(self.schedule.alpha(t).to(x.dtype), x.ndim)
        sigma = self.sigma_of(t).to(x.dtype)
        c_skip, c_out, c_in, c_noise = (append_dims(c, x.ndim) for c in edm_coefficients(sigma, self.sigma_data))
        y = x / alpha
        f = self.net(c_in * y, c_noise.reshape(x.shape[0]), cond)
        return c_skip * y + c_out * f.to(x.dtype)

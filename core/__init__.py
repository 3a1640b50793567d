"""diffsci.core: the domain-free diffusion core.

Denoisers predict clean data; a :mod:`~diffsci.core.spaces` Space carries the forward process
and reverse steps; a :mod:`~diffsci.core.schedules` Schedule gives noise levels and time grids;
:mod:`~diffsci.core.samplers` are plain functions over those; :mod:`~diffsci.core.train` is the
shared training loop. Nothing here knows about proteins or weather.
"""

from diffsci.core.errors import CheckpointError, DiffsciError
from diffsci.core.precond import EDMPrecond, edm_coefficients, edm_loss_weight, from_eps, from_v, from_velocity
from diffsci.core.samplers import (
    SAMPLERS,
    classifier_free_guidance,
    ddim_invert,
    fix_known,
    get_sampler,
    sample_ddim,
    sample_ddpm,
    sample_dpmpp_2m,
    sample_dpmpp_2s,
    sample_euler,
    sample_euler_maruyama,
    sample_heun,
)
from diffsci.core.schedules import EDM, SCHEDULES, FlowMatching, LogLinear, VPCosine, VPLinear, get_schedule, karras_sigmas
from diffsci.core.spaces import Euclidean, EuclideanCoM, Product, SO3Diffusion, SO3Flow, Space
from diffsci.core.train import EMA, TrainConfig, load_checkpoint, save_checkpoint, train
from diffsci.core.utils import append_dims, derive_seed, make_generator, member_generators

__all__ = [
    "CheckpointError", "DiffsciError",
    "EDMPrecond", "edm_coefficients", "edm_loss_weight", "from_eps", "from_v", "from_velocity",
    "SAMPLERS", "classifier_free_guidance", "ddim_invert", "fix_known", "get_sampler",
    "sample_ddim", "sample_ddpm", "sample_dpmpp_2m", "sample_dpmpp_2s", "sample_euler",
    "sample_euler_maruyama", "sample_heun",
    "EDM", "SCHEDULES", "FlowMatching", "LogLinear", "VPCosine", "VPLinear", "get_schedule", "karras_sigmas",
    "Euclidean", "EuclideanCoM", "Product", "SO3Diffusion", "SO3Flow", "Space",
    "EMA", "TrainConfig", "load_checkpoint", "save_checkpoint", "train",
    "append_dims", "derive_seed", "make_generator", "member_generators",
]

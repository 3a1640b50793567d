"""diffsci.core: the domain-free diffusion core.

Denoisers predict clean data; a :mod:`~diffsci.core.spaces` Space carries the forward process
and reverse steps; a :mod:`~diffsci.core.schedules` Schedule gives noise levels and time grids;
:mod:`~diffsci.core.samplers` are plain functions over those; :mod:`~diffsci.core.train` is the
shared training loop, run from a typed :class:`~diffsci.core.train.Recipe` by
:func:`~diffsci.core.train.fit`; :mod:`~diffsci.core.checkpoint` holds the checkpoint format,
the registry of model kinds and :func:`~diffsci.core.checkpoint.load_bundle`;
:mod:`~diffsci.core.config` the typed config reader; :mod:`~diffsci.core.io` the atomic
writers, progress bar and argument validators. Nothing here knows about proteins or weather.
"""

from diffsci.core.checkpoint import (Bundle, default_checkpoint_path, load_bundle, load_checkpoint, register_kind,
                                     save_checkpoint)
from diffsci.core.config import Provenance, from_dict, to_dict
from diffsci.core.errors import CheckpointError, DiffsciError
from diffsci.core.precond import EDMPrecond, edm_coefficients, edm_loss_weight
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
from diffsci.core.train import EMA, Recipe, TrainConfig, fit, train
from diffsci.core.utils import append_dims, derive_seed, make_generator

__all__ = [
    "CheckpointError", "DiffsciError",
    "EDMPrecond", "edm_coefficients", "edm_loss_weight",
    "SAMPLERS", "classifier_free_guidance", "ddim_invert", "fix_known", "get_sampler",
    "sample_ddim", "sample_ddpm", "sample_dpmpp_2m", "sample_dpmpp_2s", "sample_euler",
    "sample_euler_maruyama", "sample_heun",
    "EDM", "SCHEDULES", "FlowMatching", "LogLinear", "VPCosine", "VPLinear", "get_schedule", "karras_sigmas",
    "Euclidean", "EuclideanCoM", "Product", "SO3Diffusion", "SO3Flow", "Space",
    "Bundle", "default_checkpoint_path", "load_bundle", "load_checkpoint", "register_kind", "save_checkpoint",
    "Provenance", "from_dict", "to_dict",
    "EMA", "Recipe", "TrainConfig", "fit", "train",
    "append_dims", "derive_seed", "make_generator",
]

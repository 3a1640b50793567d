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

from importlib import import_module

# name -> module of diffsci.core; imported on first use (PEP 562), so that importing one core
# module does not import them all (and ``diffsci --help`` does not import torch's training stack)
_EXPORTS = {
    "Bundle": "checkpoint",
    "default_checkpoint_path": "checkpoint",
    "load_bundle": "checkpoint",
    "load_checkpoint": "checkpoint",
    "register_kind": "checkpoint",
    "save_checkpoint": "checkpoint",
    "Provenance": "config",
    "from_dict": "config",
    "to_dict": "config",
    "CheckpointError": "errors",
    "DiffsciError": "errors",
    "EDMPrecond": "precond",
    "edm_coefficients": "precond",
    "edm_loss_weight": "precond",
    "SAMPLERS": "samplers",
    "classifier_free_guidance": "samplers",
    "ddim_invert": "samplers",
    "fix_known": "samplers",
    "get_sampler": "samplers",
    "sample_ddim": "samplers",
    "sample_ddpm": "samplers",
    "sample_dpmpp_2m": "samplers",
    "sample_dpmpp_2s": "samplers",
    "sample_euler": "samplers",
    "sample_euler_maruyama": "samplers",
    "sample_heun": "samplers",
    "EDM": "schedules",
    "SCHEDULES": "schedules",
    "FlowMatching": "schedules",
    "LogLinear": "schedules",
    "VPCosine": "schedules",
    "VPLinear": "schedules",
    "get_schedule": "schedules",
    "karras_sigmas": "schedules",
    "Euclidean": "spaces",
    "EuclideanCoM": "spaces",
    "Product": "spaces",
    "SO3Diffusion": "spaces",
    "SO3Flow": "spaces",
    "Space": "spaces",
    "EMA": "train",
    "Recipe": "train",
    "TrainConfig": "train",
    "fit": "train",
    "train": "train",
    "append_dims": "utils",
    "derive_seed": "utils",
    "make_generator": "utils",
}
__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(f"diffsci.core.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'diffsci.core' has no attribute {name!r}")

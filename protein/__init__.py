"""diffsci.protein: SE(3)-equivariant diffusion over protein backbones.

Public API (imported lazily, so ``diffsci --help`` stays fast)::

    from diffsci.protein import read_structure_chains, load_dataset, bundled_dataset_path
    from diffsci.protein import DesignRequest, load_model, sample_backbones, write_designs, write_backbone_pdb
    from diffsci.protein import evaluate_structures, sample_metrics
    from diffsci.protein import parse_contig, load_motif, condition_on_motif, read_remarks

``load_model`` returns a :class:`diffsci.core.checkpoint.Bundle` (``.model``, ``.config``,
``.source``). The model kind ``protein-frames`` is registered with the core's checkpoint
registry by :mod:`diffsci.protein.model.diffusion` (imported by every protein loader and trainer).
"""

from importlib import import_module

_EXPORTS = {
    # io: reading, writing, datasets
    "BackboneChain": "io.structure", "read_structure_chains": "io.structure",
    "write_backbone_pdb": "io.pdb", "read_remarks": "io.pdb",
    "BackboneDataset": "io.dataset", "build_dataset": "io.dataset", "DatasetOptions": "io.dataset",
    "load_dataset": "io.dataset", "save_dataset": "io.dataset", "bundled_dataset_path": "io.dataset",
    # frames
    "frames_from_backbone": "frames", "backbone_from_frames": "frames",
    # model: the network and its training task
    "FrameDenoiserNet": "model.network", "FrameNetConfig": "model.network", "ProteinCond": "model.network",
    "ProteinModelConfig": "model.diffusion", "BackboneTask": "model.diffusion", "build_model": "model.diffusion",
    "build_space": "model.diffusion",
    # design: request -> builder -> sampler -> output
    "DesignRequest": "design.request", "load_model": "design.sampling", "sample_backbones": "design.sampling",
    "Design": "design.sampling", "sample_states": "design.builder", "DesignInputs": "design.builder",
    "SamplerSettings": "design.builder", "CONDITIONERS": "design.builder", "write_designs": "design.output",
    "parse_contig": "design.contig", "load_motif": "design.contig", "draw_layout": "design.contig",
    "resolve_contig": "design.contig", "contig_length_limits": "design.contig",
    "condition_on_motif": "design.motif", "AlignedMotif": "design.motif", "kabsch": "design.motif",
    # metrics
    "evaluate_structures": "metrics", "evaluate_folder": "metrics", "sample_metrics": "metrics", "pairwise_tm": "metrics",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(f"diffsci.protein.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'diffsci.protein' has no attribute {name!r}")

"""diffsci.protein: SE(3)-equivariant diffusion over protein backbones.

Public API (imported lazily, so ``diffsci --help`` stays fast)::

    from diffsci.protein import read_structure_chains, load_dataset, bundled_dataset_path
    from diffsci.protein import DesignRequest, load_model, sample_backbones, write_designs, write_backbone_pdb
    from diffsci.protein import evaluate_structures, sample_metrics
    from diffsci.protein import parse_contig, load_motif, condition_on_motif, read_remarks

``load_model`` returns a :class:`diffsci.core.checkpoint.Bundle` (``.model``, ``.config``,
``.source``). The model kind ``protein-frames`` is registered with the core's checkpoint
registry by :mod:`diffsci.protein.diffusion` (imported by every protein loader and trainer).
"""

from importlib import import_module

_EXPORTS = {
    "BackboneChain": "structure", "read_structure_chains": "structure",
    "frames_from_backbone": "frames", "backbone_from_frames": "frames",
    "write_backbone_pdb": "pdb_io",
    "BackboneDataset": "dataset", "build_dataset": "dataset", "DatasetOptions": "dataset", "load_dataset": "dataset",
    "save_dataset": "dataset",
    "bundled_dataset_path": "dataset",
    "FrameDenoiserNet": "model", "FrameNetConfig": "model",
    "ProteinModelConfig": "diffusion", "BackboneTask": "diffusion", "build_model": "diffusion", "build_space": "diffusion",
    "load_model": "sampling", "sample_backbones": "sampling", "sample_states": "sampling",
    "DesignRequest": "request", "write_designs": "output",
    "parse_contig": "contig", "load_motif": "contig", "draw_layout": "contig", "resolve_contig": "contig",
    "contig_length_limits": "contig",
    "condition_on_motif": "motif", "AlignedMotif": "motif", "kabsch": "motif",
    "read_remarks": "pdb_io",
    "evaluate_structures": "metrics", "evaluate_folder": "metrics", "sample_metrics": "metrics", "pairwise_tm": "metrics",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(f"diffsci.protein.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'diffsci.protein' has no attribute {name!r}")

"""The backbone model: :mod:`.network` (the SE(3)-equivariant frame network and its
:class:`~diffsci.protein.model.network.ProteinCond`), :mod:`.fused_tp` (its tensor product as
one matmul per output irrep) and :mod:`.diffusion` (the model kind ``protein-frames``: config,
space, training task, checkpoint migrations).
"""

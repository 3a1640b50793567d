"""Protein structures in and out: :mod:`.structure` reads PDB/mmCIF/BinaryCIF chains (the
backbone type :class:`~diffsci.protein.io.structure.BackboneChain`), :mod:`.pdb` writes backbone
PDB files and their REMARK records, :mod:`.dataset` builds, saves and memory-maps datasets of
chains, :mod:`.bundle` rebuilds the bundled chains from package archives.

Nothing here imports the model or the design layer.
"""

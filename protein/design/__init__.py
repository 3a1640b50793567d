"""Designing backbones: :mod:`.request` (one validated :class:`~diffsci.protein.design.request.DesignRequest`),
:mod:`.sampling` (``sample_backbones(model, request)``: per design a layout or topology, then the
builder), :mod:`.builder` (the denoiser stack and constraints: ``CONDITIONERS``), the pieces it
composes (:mod:`.contig`, :mod:`.motif`, :mod:`.strands`, :mod:`.topology`) and :mod:`.output`
(PDB + JSON records + samples.csv).
"""

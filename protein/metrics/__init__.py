"""Metrics for designed protein backbones: geometry, secondary structure, diversity, novelty.

Dimension letters: L residues, 4 backbone atoms (N, CA, C, O), 3 Cartesian coordinates (Å),
N samples, M reference chains.

Every function takes coordinate arrays, so in-memory samples can be scored without files;
:func:`evaluate_folder` reads a folder of structure files (:func:`read_samples`: one sample
per protein chain, each chain whole, never split at a gap) and calls
:func:`evaluate_structures`. Evaluators measure what they are given: a gap is reported, not cut.
Memory is O(L) per chain (neighbour searches, no L x L array), so a 10,000-residue chain
evaluates in well under 2 GB.

Per-sample metrics (:func:`sample_metrics`)
-------------------------------------------
``chain_breaks``, ``ca_ca_max``
    Number of consecutive CA-CA distances above 4.2 Å (a chain break: a missing residue, a
    design whose chain does not connect) and the largest consecutive CA-CA distance (Å).
    The summary counts the samples with a break or an inter-chain clash (``n_broken``, ``broken_fraction``).
``ca_ca_mean``, ``ca_ca_ok``
    Mean consecutive CA-CA distance (Å) and the fraction of consecutive CA-CA distances
    within 3.8 ± 0.3 Å (trans peptide ~3.80 Å).
``interchain_clashes``, ``interchain_min_ca``, ``interface_residues``
    Between the chains of one design (one file: a binder and its target, oligomer copies):
    CA pairs of this chain and another closer than 3.0 Å (chains passing through each other;
    real complexes keep CA >= ~4 Å apart), the smallest such CA-CA distance (Å), and this
    chain's residues with a CA within 10 Å of another chain's (the interface). Null for a
    single-chain design. A design with an inter-chain clash counts as broken in the summary
    (``n_broken``), beside chain breaks; ``n_interchain_clashing`` counts those samples.
``clashes``, ``clash_fraction``
    Number of non-adjacent CA pairs (``|i - j| >= 2``) closer than 3.0 Å, and that count
    divided by the number of non-adjacent pairs ``(L - 1)(L - 2) / 2`` (NaN when L < 3: no
    such pair).
``radius_of_gyration``
    CA radius of gyration, ``sqrt(mean_i |x_i - mean(x)|^2)`` (Å).
``ca_contacts``
    Mean number, per residue, of CA atoms within 8 Å that are at least 6 residues away in
    sequence (tertiary packing: folded chains have several, an extended chain or a random
    walk fewer). Separation 6 is where CASP starts counting contacts (there between CB atoms);
    closer pairs are fixed by secondary structure alone (in an alpha helix CA(i)-CA(i+3) and
    CA(i+4) are 5.0 and 6.2 Å apart, CA(i+5) 8.6 Å), so a smaller separation would count helix
    content rather than packing.
``helix``, ``strand``, ``coil``
    Fractions of residues that biotite's P-SEA (:func:`biotite.structure.annotate_sse`, CA
    only) labels ``'a'``, ``'b'`` and anything else.
``dssp_helix``, ``dssp_strand``, ``dssp_coil``
    Fractions of residues labelled ``H``, ``E``, ``-`` by pydssp's simplified DSSP
    (``pydssp.assign(coords, out_type="c3")``, backbone N, CA, C, O; hydrogens placed as
    pydssp places them), computed by :func:`dssp_labels` from a neighbour search in O(L)
    memory and tested equal to pydssp. Chains shorter than 6 residues (which pydssp cannot
    process and which cannot hold a DSSP helix or ladder) count as all coil.
``bond_N_CA_mad``, ``bond_CA_C_mad``, ``bond_C_N_mad``
    Mean absolute deviation (Å) of backbone bond lengths from Engh & Huber ideal values
    (N-CA 1.458, CA-C 1.525, peptide C-N 1.329 Å). R. A. Engh and R. Huber, "Accurate bond and
    angle parameters for X-ray protein structure refinement", Acta Cryst. A47, 392-400 (1991).
``angle_N_CA_C_mad``, ``angle_CA_C_N_mad``, ``angle_C_N_CA_mad``
    Mean absolute deviation (degrees) of backbone bond angles from Engh & Huber (1991):
    N-CA-C 111.2°, CA-C-N 116.2°, C-N-CA 121.7°.
``rama_alpha``, ``rama_beta``, ``rama_left``, ``rama_other``
    Fractions of the L - 2 interior residues (those with both phi and psi) in these
    Ramachandran regions (degrees, half-open intervals, checked in this order):

    * alpha (right-handed helix): phi in [-160, -20) and psi in [-120, 50);
    * beta (extended / strand, incl. PPII): phi in [-180, -40) and (psi in [90, 180] or
      psi in [-180, -150));
    * left (left-handed helix): phi in [20, 120) and psi in [-60, 90);
    * other: everything else.

    The three regions do not overlap, so the four fractions sum to 1.
``sheets``, ``strands``, ``ladders_parallel``, ``ladders_antiparallel``
    Beta-sheet topology by DSSP's rules (Kabsch & Sander 1983) on pydssp's hydrogen bonds
    (:func:`sheet_topology`; the rules in :mod:`~diffsci.protein.metrics.topology`): sheets are
    connected components of strands linked by ladders of two or more bridges.
``paired_fraction``, ``psea_strand_paired``
    Fraction of DSSP ``E`` residues that lie on a strand (a ladder, not an isolated bridge), and
    fraction of P-SEA strand residues that have a bridge partner (NaN when there are none).
``contact_order``, ``absolute_contact_order``
    Relative and absolute contact order (Plaxco, Simons & Baker 1998) of the CA contacts of
    ``ca_contacts`` (within 8 Å, separation >= 6): mean separation / L, and mean separation.
``max_tm_reference`` (novelty, :func:`novelty`)
    Highest TM-score of the sample to any reference chain, normalised by the sample's
    length (TM-align via ``tmtools``). Lower = more novel.

Set metrics (:func:`evaluate_structures`)
-----------------------------------------
``pairwise_tm``: N x N matrix, entry (i, j) = TM-score of sample i aligned to sample j
normalised by the length of i (``tmtools.tm_align(ca_i, ca_j, ...).tm_norm_chain1``);
the diagonal is 1. Two chains of the same file (the copies of a symmetric design, the partners
of a complex) are one design: their entry is NaN (not aligned; a copy's TM-score of 1 is not a
diversity signal) and they always share a cluster. ``summary``: the numbers of samples, files
and broken samples, mean off-diagonal pairwise TM (over pairs from different files), the number
and fraction (clusters / files) of single-linkage clusters at TM 0.5 (FrameDiff's MaxCluster
setting) and at TM 0.6 (Genie2's), the mean novelty and the mean of every numeric per-sample
field.

TM-align (``tmtools``) aligns on structure only; where no sequence is known poly-glycine
(``'G' * L``) is passed.

Modules: :mod:`~diffsci.protein.metrics.geometry` (bonds, angles, CA-CA, clashes, contacts,
Rg, dihedrals, Ramachandran), :mod:`~diffsci.protein.metrics.secondary` (P-SEA, DSSP, SS
agreement), :mod:`~diffsci.protein.metrics.topology` (bridges, ladders, sheets, contact order),
:mod:`~diffsci.protein.metrics.similarity` (TM-score, pairwise TM, clusters, novelty),
:mod:`~diffsci.protein.metrics.reading` (structure folders and reference sets),
:mod:`~diffsci.protein.metrics.evaluate` (per-sample metrics and set summaries) and
:mod:`~diffsci.protein.metrics.acceptance` (the acceptance figures of a checkpoint's designs
and the rotation-rate sweep).
"""

from importlib import import_module

# name -> submodule; imported on first use, so that importing one metric module (the dataset
# reader needs DSSP) does not import the folder evaluation, which reads datasets
_EXPORTS = {
    # geometry
    "IDEAL_BONDS": "geometry",
    "IDEAL_ANGLES": "geometry",
    "RAMA_REGIONS": "geometry",
    "CA_CA_IDEAL": "geometry",
    "CA_CA_TOL": "geometry",
    "CA_CA_BREAK": "geometry",
    "CLASH_DISTANCE": "geometry",
    "RG_PREFACTOR": "geometry",
    "RG_EXPONENT": "geometry",
    "expected_radius_of_gyration": "geometry",
    "ca_ca_distances": "geometry",
    "ca_ca_stats": "geometry",
    "ca_clashes": "geometry",
    "between_chains": "geometry",
    "INTERCHAIN_CLASH": "geometry",
    "INTERFACE_DISTANCE": "geometry",
    "ca_contacts": "geometry",
    "chain_breaks": "geometry",
    "radius_of_gyration": "geometry",
    "backbone_geometry_deviation": "geometry",
    "backbone_dihedrals": "geometry",
    "ramachandran_fractions": "geometry",
    # secondary
    "DSSP_CUTOFF": "secondary",
    "DSSP_MIN_LENGTH": "secondary",
    "psea_labels": "secondary",
    "psea_fractions": "secondary",
    "psea_label_fractions": "secondary",
    "dssp_hbonds": "secondary",
    "dssp_labels": "secondary",
    "dssp_fractions": "secondary",
    "dssp_label_fractions": "secondary",
    "ss_agreement": "secondary",
    # topology
    "MIN_BRIDGE_SEPARATION": "topology",
    "TOPOLOGY_FIELDS": "topology",
    "Ladder": "topology",
    "SheetTopology": "topology",
    "dssp_bridges": "topology",
    "sheet_topology": "topology",
    "pairing_metrics": "topology",
    "contact_order": "topology",
    # similarity
    "MAX_TM_RESIDUE_PRODUCT": "similarity",
    "tm_score": "similarity",
    "pairwise_tm": "similarity",
    "cluster_by_tm": "similarity",
    "novelty": "similarity",
    # reading
    "INDEX_FILE_NAMES": "reading",
    "EvalSample": "reading",
    "read_samples": "reading",
    "read_folder": "reading",
    "reference_ca_list": "reading",
    # evaluate
    "NUMERIC_FIELDS": "evaluate",
    "sample_metrics": "evaluate",
    "evaluate_structures": "evaluate",
    "subset_evaluation": "evaluate",
    "evaluate_folder": "evaluate",
    # acceptance
    "ACCEPTANCE_CA_CA_WINDOW": "acceptance",
    "ACCEPTANCE_RG_TOLERANCE": "acceptance",
    "ACCEPTANCE_LENGTHS": "acceptance",
    "acceptance_figures": "acceptance",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(f"diffsci.protein.metrics.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'diffsci.protein.metrics' has no attribute {name!r}")

"""Shared test settings.

Fixtures shared by the protein tests: ``tiny_checkpoint`` (a real two-step training run of a
tiny frame model through the CLI, once per test session) and ``motif_file`` (the first 40
residues of the first bundled chain as a PDB file).

Tests use tiny tensors, for which torch's intra-op thread pool costs more than it gives (and
on a busy 2-core machine, thread oversubscription makes small ops ~50x slower): one thread.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)


import json  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A real (two-step) training run of a tiny model through the CLI."""
    from diffsci.core.cli import main
    from diffsci.protein.io.dataset import bundled_dataset_path

    d = tmp_path_factory.mktemp("ck")
    cfg = d / "cfg.json"
    cfg.write_text(json.dumps({"model": {"net": {"scalars": 8, "vectors": 4, "tensors": 0, "layers": 2, "k_neighbors": 6},
                                         "max_length": 32},
                               "train": {"batch_size": 2, "ckpt_every": 2}}))
    assert main(["protein", "train", "--data", str(bundled_dataset_path()), "--out", str(d / "run"),
                 "--config", str(cfg), "--steps", "2", "--device", "cpu"]) == 0
    return d / "run" / "latest.pt"


@pytest.fixture(scope="session")
def motif_file(tmp_path_factory):
    """The first 40 residues of the first bundled chain, as a PDB file (residue numbers and names kept)."""
    from diffsci.protein.io.dataset import bundled_dataset_path, load_dataset
    from diffsci.protein.io.pdb import write_backbone_pdb

    ch = load_dataset(bundled_dataset_path()).chain(0)
    path = tmp_path_factory.mktemp("motif") / "motif.pdb"
    write_backbone_pdb(path, ch.coords[:40], res_ids=ch.res_ids[:40], sequence=ch.sequence[:40])
    return path

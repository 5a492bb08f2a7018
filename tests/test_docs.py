"""The documentation inside the repository: README.md is the front door, docs/ holds the reference,
every relative link resolves to a file of the repository, and nothing points outside it.

Fast: it reads text files and runs nothing.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 200  # the front door; the reference material is in docs/
DOCS = (
    "architecture.md",
    "cli.md",
    "data.md",
    "extending.md",
    "flow.md",
    "methods.md",
    "real-models.md",
    "recipe.md",
    "regime.md",
    "reproduction.md",
    "store.md",
    "toy-world.md",
)
# Markdown links and images, [text](target) and ![alt](target); the target ends at a space or ")".
LINK = re.compile(r'!?\[[^\]]*\]\(([^)\s]+)(?:\s+"[^"]*")?\)')
# Built from pieces so that this file does not name them itself.
OUTSIDE = ("DESIGN" + ".md", "ENVIRONMENT" + ".md", ".." + "/shared")
SCANNED = ("README.md", "pyproject.toml", "Makefile", "docs", "tests", "refbench", "analysis", "notebooks")
TEXT_SUFFIXES = {".py", ".md", ".toml", ".ipynb", ".txt", ".json", ".cfg", ".ini", ".yaml", ".yml", ".sh", ""}


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def relative_links(text: str) -> list[str]:
    """Link targets that name a file: no URLs, no mail, no links to an anchor of the same page."""
    return [
        target
        for target in LINK.findall(text)
        if not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) and not target.startswith("#")
    ]


def test_readme_is_a_front_door():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move reference material into docs/"
    text = "\n".join(lines)
    for command in ("make demo", "make test"):
        assert command in text
    for doc in DOCS:
        assert f"(docs/{doc})" in text, f"README.md does not link docs/{doc}"


def test_docs_exist():
    missing = [doc for doc in DOCS if not (ROOT / "docs" / doc).is_file()]
    assert not missing, f"missing from docs/: {missing}"


def test_the_link_finder():
    text = (
        "[a](docs/x.md) ![b](results/f.png) [c](https://example.org/y.md) [d](#anchor) "
        '[e](../benchmarks/RESULTS.md#data-at-scale) [f](docs/y.md "a title") [g](mailto:a@b.c)'
    )
    assert relative_links(text) == ["docs/x.md", "results/f.png", "../benchmarks/RESULTS.md#data-at-scale", "docs/y.md"]


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves_inside_the_repository(path):
    broken = []
    for target in relative_links(path.read_text()):
        file = (path.parent / target.split("#", 1)[0]).resolve()
        if not file.is_relative_to(ROOT):
            broken.append(f"{target} (outside the repository)")
        elif not file.exists():
            broken.append(f"{target} (no such file)")
    assert not broken, f"{path.relative_to(ROOT)}: {broken}"


def scanned_files() -> list[Path]:
    files = []
    for name in SCANNED:
        path = ROOT / name
        candidates = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        files += [p for p in candidates if p.suffix in TEXT_SUFFIXES and "__pycache__" not in p.parts]
    return files


def test_nothing_points_outside_the_repository():
    files = scanned_files()
    assert ROOT / "README.md" in files and ROOT / "Makefile" in files and len(files) > 100
    found = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        found += [f"{path.relative_to(ROOT)}: {name}" for name in OUTSIDE if name in text]
    assert not found, f"files that point outside the repository: {found}"

"""The documentation: a short README whose links resolve, and a repository that speaks of the
software only (nothing about how or where the project itself is developed)."""

from __future__ import annotations

import re
from pathlib import Path

from helpers import PROJECT

DOCUMENTS = [
    PROJECT / "README.md",
    PROJECT / "CONTRIBUTING.md",
    *sorted((PROJECT / "docs").glob("*.md")),
]
SCANNED = ["README.md", "CONTRIBUTING.md", "Makefile", "pyproject.toml", "train.py", "predict.py"]
SCANNED_DIRS = ["docs", "brainseg", "conf", "scripts", "tests", "bench", "hydra_plugins", ".ci"]
TEXT_SUFFIXES = {".md", ".py", ".yaml", ".yml", ".sh", ".toml", ".txt", ""}

# Phrases about the development process, not the software: the machines it was developed on,
# their transfer limits, who worked on it, tracker numbers.
DEVELOPMENT_PHRASES = [
    r"\blent\b",
    r"\bborrowed\b",
    r"\bagents?\b",
    r"\b64 ?MiB\b",
    r"\bissue ?#?\d+",
    r"\bthis project's\b",
]


def _scanned_files() -> list[Path]:
    files = [PROJECT / name for name in SCANNED]
    for folder in SCANNED_DIRS:
        files += [
            p
            for p in (PROJECT / folder).rglob("*")
            if p.is_file() and p.suffix in TEXT_SUFFIXES and "__pycache__" not in p.parts
        ]
    return [p for p in files if p.exists() and p != Path(__file__).resolve()]


def test_repository_speaks_of_the_software_only() -> None:
    pattern = re.compile("|".join(DEVELOPMENT_PHRASES), re.IGNORECASE)
    hits = [
        f"{path.relative_to(PROJECT)}:{number}: {line.strip()}"
        for path in _scanned_files()
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if pattern.search(line)
    ]
    assert hits == []


def test_readme_is_a_short_front_door() -> None:
    assert len((PROJECT / "README.md").read_text().splitlines()) <= 200


def _anchors(markdown: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+ (.+)$", markdown.read_text(), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}


def test_relative_links_in_the_documentation_resolve() -> None:
    link = re.compile(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)")
    broken = []
    for doc in DOCUMENTS:
        for target, anchor in link.findall(doc.read_text()):
            if "://" in target:
                continue
            path = (doc.parent / target) if target else doc
            if not path.exists() or (
                anchor and path.suffix == ".md" and anchor not in _anchors(path)
            ):
                broken.append(f"{doc.relative_to(PROJECT)}: {target}#{anchor}")
    assert broken == []

"""The repository stands alone: it reads nothing beside it, and its architecture doc is current.

A clone with nothing next to it must build, test and explain itself: no tracked file may point at
a folder beside the repository, the README leads to docs/architecture.md, that document names
every event type and every table the code defines, and the provider samples the tests load are
all here and valid JSON.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from notetaker.common.db import migration_files
from notetaker.common.events import CATALOG
from tests.fixtures import PROVIDER_SAMPLES

ROOT = Path(__file__).resolve().parents[1]
ARCHITECTURE = ROOT / "docs" / "architecture.md"

# Built from pieces so that this file does not match its own patterns.
_SIBLING = "sha" + "red"
_DESIGN = "DES" + "IGN.md"
_QUOTED_SIBLING = "[\"']" + _SIBLING + "[\"']"
OUTSIDE_REFERENCES = {
    "a relative path out of the repository": re.compile(r"\.\.[/\\]" + _SIBLING + r"\b"),
    "a path joined onto the sibling folder": re.compile(
        r"/\s*" + _QUOTED_SIBLING + "|" + _QUOTED_SIBLING + r"\s*/"
    ),
    "a parent of the repository leading to the sibling folder": re.compile(
        r"parents\[\d+\][^\n]*\b" + _SIBLING + r"\b"
    ),
    "a path that starts at the sibling folder": re.compile(r"(?<![\w./-])" + _SIBLING + "/"),
    "the absolute sibling folder": re.compile(r"/work/" + _SIBLING + r"\b"),
    "the sibling folder by name": re.compile(r"\b" + _SIBLING + r" folder\b"),
}


def tracked_files() -> list[Path]:
    listing = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    return [ROOT / name for name in listing.decode().split("\0") if name]


def text_of(path: Path) -> str | None:
    """The file's text, or None for a binary (or vanished) file."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    if b"\0" in data:
        return None
    try:
        return data.decode()
    except UnicodeDecodeError:
        return None


def test_no_tracked_file_reaches_outside_the_repository() -> None:
    files = tracked_files()
    assert files, "git ls-files listed nothing: is the test running inside the repository?"
    design_in_repo = any(path.name == _DESIGN for path in files)
    found = []
    for path in files:
        text = text_of(path)
        if text is None:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            for what, pattern in OUTSIDE_REFERENCES.items():
                if pattern.search(line):
                    found.append(f"{path.relative_to(ROOT)}:{number}: {what}: {line.strip()}")
            if not design_in_repo and _DESIGN in line:
                found.append(
                    f"{path.relative_to(ROOT)}:{number}: a document not in the repository:"
                    f" {line.strip()}"
                )
    assert found == [], "\n".join(found)


def test_the_patterns_catch_what_they_are_for() -> None:
    """A guard on the guard: each way of reaching the sibling folder is caught."""
    samples = [
        "../" + _SIBLING + "/fixtures",
        'Path(__file__).resolve().parents[2].parent / "' + _SIBLING + '" / "fixtures"',
        "root / '" + _SIBLING + "'",
        "open('/work/" + _SIBLING + "/fixtures/README.md')",
        "see the " + _SIBLING + " folder",
        "formats (see " + _SIBLING + "/fixtures/README.md)",
    ]
    for sample in samples:
        assert any(p.search(sample) for p in OUTSIDE_REFERENCES.values()), sample
    innocent = [
        "Keys minting Gladia callback tokens (" + _SIBLING + " with ingest).",
        "libs/" + _SIBLING + "/settings.py",
    ]
    for sample in innocent:
        assert not any(p.search(sample) for p in OUTSIDE_REFERENCES.values()), sample


def test_readme_links_the_architecture_document() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "](docs/architecture.md)" in readme
    assert ARCHITECTURE.is_file()


def test_architecture_names_every_event_type() -> None:
    document = ARCHITECTURE.read_text()
    assert len(CATALOG) >= 10
    missing = [event_type for event_type in CATALOG if f"`{event_type}`" not in document]
    assert missing == [], f"docs/architecture.md does not name these event types: {missing}"


def test_architecture_names_every_table() -> None:
    document = ARCHITECTURE.read_text()
    create_table = re.compile(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+)", re.IGNORECASE)
    tables = [name for _, sql in migration_files() for name in create_table.findall(sql)]
    assert "recordings" in tables
    missing = [table for table in tables if f"`{table}`" not in document]
    assert missing == [], f"docs/architecture.md does not name these tables: {missing}"


def test_every_provider_sample_the_tests_use_exists_and_is_json() -> None:
    folders = sorted(p.name for p in PROVIDER_SAMPLES.iterdir() if p.is_dir())
    assert folders, f"no provider folders in {PROVIDER_SAMPLES}"
    named = re.compile(r"[\"']((?:" + "|".join(folders) + r")/[\w.-]+\.json)[\"']")
    used = {
        name for path in (ROOT / "tests").rglob("*.py") for name in named.findall(path.read_text())
    }
    assert used, "no test names a provider sample: has the naming changed?"
    missing = sorted(name for name in used if not (PROVIDER_SAMPLES / name).is_file())
    assert missing == [], f"samples the tests load but the repository lacks: {missing}"
    broken = []
    for sample in sorted(PROVIDER_SAMPLES.rglob("*.json")):
        try:
            json.loads(sample.read_text())
        except json.JSONDecodeError as exc:
            broken.append(f"{sample.relative_to(PROVIDER_SAMPLES)}: {exc}")
    assert broken == [], "\n".join(broken)


def test_every_provider_sample_is_described() -> None:
    readme = (PROVIDER_SAMPLES / "README.md").read_text()
    samples = sorted(PROVIDER_SAMPLES.rglob("*.json"))
    assert samples
    undescribed = [
        s.name
        for s in samples
        if f"`{s.name}`" not in readme and f"`{s.relative_to(PROVIDER_SAMPLES)}`" not in readme
    ]
    assert undescribed == [], f"tests/fixtures/providers/README.md lacks: {undescribed}"

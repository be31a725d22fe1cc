"""The documentation users have: no references to files outside the repository, and every
"docs/method.md §N" names a section that docs/method.md has."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
METHOD = ROOT / "docs" / "method.md"
# Files users of the repository do not have (the names are split so that this file does not match itself).
FORBIDDEN = ("METHOD" + ".md", "DESIGN" + ".md", "../" + "shared")
# "docs/method.md §2", "... §2-§4", "... §2 and §6", "... §2, §6", "... §2 / §6" (also across a line break)
REFERENCE = re.compile(r"docs/method\.md((?:\s*(?:,|-|–|/|and|or)?\s*§\d+)+)")


def _repository_files() -> list[Path]:
    """Tracked files plus untracked ones git does not ignore (what a commit of the tree would hold)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=ROOT, capture_output=True, check=True, timeout=60,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        pytest.skip("not a git checkout")
    paths = [ROOT / name for name in listed.decode().split("\0") if name]
    return [path for path in paths if path.is_file()]


def _texts() -> list[tuple[str, str]]:
    texts = []
    for path in _repository_files():
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue  # binary (fixtures, pictures)
        texts.append((path.relative_to(ROOT).as_posix(), data.decode("utf-8", errors="replace")))
    return texts


def _sections() -> set[int]:
    return {int(n) for n in re.findall(r"^## §(\d+)\.", METHOD.read_text(), flags=re.MULTILINE)}


def test_method_page_has_the_numbered_sections() -> None:
    assert _sections() == set(range(1, 11))
    text = METHOD.read_text()
    assert "## §10. Where fsae differs" in text
    assert "Fidelity: the authors' quirks and our switches" in text  # the README table it points at
    assert "| PPC + FSAE | 77.0 | 74.4 | 75.0 |" in text  # the published numbers


def test_no_reference_to_files_outside_the_repository() -> None:
    offenders = [
        f"{name}:{number}: {line.strip()}"
        for name, text in _texts()
        for number, line in enumerate(text.splitlines(), 1)
        if any(word in line for word in FORBIDDEN)
    ]
    assert not offenders, "references to files users do not have:\n" + "\n".join(offenders)


def test_every_method_reference_names_an_existing_section() -> None:
    sections = _sections()
    seen, broken = 0, []
    for name, text in _texts():
        for match in REFERENCE.finditer(text):
            numbers = [int(n) for n in re.findall(r"§(\d+)", match.group(1))]
            seen += 1
            broken += [f"{name}: {match.group(0)!r}" for n in numbers if n not in sections]
    assert seen > 40  # the code cites the page throughout; a broken pattern would find nothing
    assert not broken, "references to sections docs/method.md does not have:\n" + "\n".join(broken)


def test_the_reference_pattern() -> None:
    text = "see docs/method.md §2-§4 and docs/method.md §2,\n §6; docs/method.md §1 / §9"
    found = [m.group(1) for m in REFERENCE.finditer(text)]
    assert [re.findall(r"§(\d+)", f) for f in found] == [["2", "4"], ["2", "6"], ["1", "9"]]

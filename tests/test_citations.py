"""Code and docs cite only what is in the repository.

The design of the harness is written down in ``docs/internals/``; a comment, a docstring or a
page points there (``docs/internals/definitions.md#budget-accounting``) or at a file of the
repository. This test fails on a citation a reader cannot follow:

* a design document or notes kept outside the repository: the word DESIGN, a path under
  ``shared/`` or ``notes/``;
* a numbered decision, section or pitfall of such a document (``D9``, ``§3``, ``pitfall 2``);
* a backticked relative path ending in ``.md``, ``.py`` or ``.toml`` that does not exist (relative
  to the repository root, to the citing file's folder, or to ``docs/`` for a page; a bare file name
  may be anywhere in the repository), unless it is a file a tutorial asks the reader to create or
  a file of another project named as such;
* a pointer ``docs/PAGE.md#anchor`` whose page or heading does not exist.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: What is scanned: these folders (recursively) and files.
SCANNED = ("harness", "plugins", "leaderboard", "tests", "scripts", "benchmarks", "docs", "README.md",
           "pyproject.toml", "constraints.txt", "mkdocs.yml", ".ci/run", ".ci/run-minimal")
SUFFIXES = {".py", ".md", ".toml", ".sh", ".txt", ".yml", ".yaml", ".cfg", ""}

#: Files a tutorial asks the reader to create: cited by name, not in this repository.
USER_FILES = {
    "my_study.toml": "the plan of the example study (docs/experiments/plans.md)",
    "my_study_plugin.py": "the module that ships the example study",
    "pairsel_lengthgap/__init__.py": "the tutorial's plugin (tests/example_plugin holds the real one)",
    "test_lengthgap.py": "the tutorial plugin's contract test",
    "pairsel_mystudy/__init__.py": "the package that ships the example study",
    "pairsel_mystudy/my_study.toml": "the example study as package data",
}

#: Files of other projects, cited by name in a comparison with their code.
OTHER_PROJECTS = {
    "metric_selection.py": "the M_AP authors' code (github.com/Hesse73/Alignment-Potential-Metric)",
    "merge_gen_annotate.py": "the M_AP authors' code (github.com/Hesse73/Alignment-Potential-Metric)",
}

FORBIDDEN = (
    (re.compile(r"\bDESIGN\b"), "cites a design document that is not in the repository"),
    (re.compile(r"(?<![\w/.-])(?:\.\./)*shared/"), "cites a path under shared/, outside the repository"),
    (re.compile(r"(?<![\w/.-])notes/"), "cites notes that are not in the repository"),
    (re.compile(r"(?<![\w$#.-])D\d{1,2}\b(?![.\d]*\s*(?:GiB|MB|GB))"), "cites a numbered design decision"),
    (re.compile(r"§\s*\d"), "cites a numbered section"),
    (re.compile(r"(?i)\bpitfalls?\s*#?\d"), "cites a numbered pitfall"),
)
_PATH = re.compile(r"`+([A-Za-z0-9_./-]+\.(?:md|py|toml))(?:#[\w-]+)?`+")
_POINTER = re.compile(r"(?<![\w/])(docs/[\w./-]+\.md)#([\w-]+)")


def scanned_files() -> list[Path]:
    files = []
    for name in SCANNED:
        path = ROOT / name
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files += [p for p in path.rglob("*") if p.is_file() and p.suffix in SUFFIXES
                      and "__pycache__" not in p.parts and not p.name.startswith(".")]
    return sorted(set(files) - {Path(__file__).resolve()})


def _text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return None


def slugify(heading: str) -> str:
    """The anchor Python-Markdown's toc extension gives a heading (its default slugify)."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(page: Path) -> set[str]:
    """The anchors of a Markdown page: its headings' slugs, with the toc's -1, -2 for repeats."""
    seen: dict[str, int] = {}
    found = set()
    fenced = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        match = None if fenced else re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            slug = slugify(match.group(1))
            found.add(slug if slug not in seen else f"{slug}_{seen[slug]}")
            seen[slug] = seen.get(slug, 0) + 1
        found.update(re.findall(r"\{#([\w-]+)\}", line))
    return found


_NAMES: set[str] = set()


def _file_names() -> set[str]:
    """The names of every file of the repository (for a citation by bare file name)."""
    if not _NAMES:
        _NAMES.update(path.name for path in scanned_files())
        _NAMES.update(path.name for path in ROOT.glob("*") if path.is_file())
    return _NAMES


def _exists(cited: str, path: Path) -> bool:
    """A file of the repository: relative to the root, to the citing file's folder or (for a page)
    to ``docs/``; a bare file name anywhere in the repository; or a file the reader is told to make."""
    if cited in USER_FILES or cited in OTHER_PROJECTS:
        return True
    bases = [ROOT, path.parent] + ([ROOT / "docs"] if path.is_relative_to(ROOT / "docs") else [])
    if any((base / cited).exists() for base in bases):
        return True
    return "/" not in cited and cited in _file_names()


def problems(path: Path) -> list[str]:
    """Every citation of ``path`` a reader cannot follow, as ``file:line: why``."""
    text = _text(path)
    if text is None:
        return []
    where = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for pattern, why in FORBIDDEN:
            if pattern.search(line):
                found.append(f"{where}:{number}: {why}: {line.strip()[:160]}")
        for cited in _PATH.findall(line):
            if not cited.startswith(("/", "~")) and not _exists(cited, path):  # absolute paths are not citations
                found.append(f"{where}:{number}: `{cited}` is not a file of the repository")
        for page, anchor in _POINTER.findall(line):
            target = ROOT / page
            if not target.is_file():
                found.append(f"{where}:{number}: {page} does not exist")
            elif anchor not in anchors(target):
                found.append(f"{where}:{number}: {page} has no heading with the anchor #{anchor}")
    return found


def test_code_and_docs_cite_only_what_is_in_the_repository():
    found = [problem for path in scanned_files() for problem in problems(path)]
    assert not found, "citations a reader cannot follow:\n" + "\n".join(found)


@pytest.mark.parametrize("line, caught", [
    ("# see DESIGN D6", True),
    ("(DESIGN.md section 3, notes/testbed-schedules.md)", True),
    ("see `shared/notes/testbed-schedules.md`", True),
    ("the paper's §2.2", True),
    ("(DESIGN §4 pitfall 2)", True),
    ("a known pitfall 3 of the toy", True),
    ("decision D9 of the design", True),
    ("see docs/internals/pitfalls.md#masking-log-probs", False),
    ("a 6-layer model with 1.5 D of depth", False),
    ("hash a2a38571D9 is not a decision", False),
])
def test_the_patterns_catch_citations_and_nothing_else(line, caught):
    assert any(pattern.search(line) for pattern, _ in FORBIDDEN) is caught


def test_a_missing_path_or_anchor_is_caught(tmp_path):
    assert "masking-log-probs" in anchors(ROOT / "docs" / "internals" / "pitfalls.md")
    cite = tmp_path / "cite.py"
    cite.write_text("# docs/internals/pitfalls.md#no-such-heading and `harness/no_such_module.py`\n"
                    "# docs/internals/pitfalls.md#masking-log-probs and `harness/loop.py`\n"
                    "# docs/no-such-page.md#anything\n")
    found = problems(cite)
    assert len(found) == 3, found
    text = "\n".join(found)
    assert "no heading with the anchor #no-such-heading" in text and "`harness/no_such_module.py`" in text
    assert "docs/no-such-page.md does not exist" in text

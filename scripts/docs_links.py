"""List the external links of the docs and the README, without fetching any of them.

    python scripts/docs_links.py          # one line per link: URL, then the files and lines that use it

The docs build (``mkdocs build --strict``) checks every internal link and anchor offline; links to
other sites are only listed here, so a person (or a link checker run where the network is allowed)
can look at them. Links inside code blocks and code spans are commands and examples, not links, and
are left out.
"""

from __future__ import annotations

import re
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_FENCE = re.compile(r"^(```|~~~)")
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
_LINK = re.compile(r"\]\((https?://[^)\s]+)\)|<(https?://[^>\s]+)>|(?<![(<\w])(https?://[^\s)>\]`\"']+)")


def markdown_files(root: Path = ROOT) -> list[Path]:
    """The README and every Markdown page of the docs."""
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def external_links(path: Path) -> list[tuple[int, str]]:
    """(line number, URL) for every external link of ``path`` outside code."""
    found = []
    fenced = False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if _FENCE.match(line.lstrip()):
            fenced = not fenced
            continue
        if fenced:
            continue
        text = _CODE_SPAN.sub("", line)
        for match in _LINK.finditer(text):
            found.append((number, next(group for group in match.groups() if group).rstrip(".,;:")))
    return found


def collect(root: Path = ROOT) -> dict[str, list[str]]:
    """URL -> the places (``file:line``) that link to it, for the README, the docs and mkdocs.yml."""
    places: dict[str, list[str]] = defaultdict(list)
    for path in markdown_files(root):
        for number, url in external_links(path):
            places[url].append(f"{path.relative_to(root).as_posix()}:{number}")
    config = root / "mkdocs.yml"
    if config.exists():
        for number, line in enumerate(config.read_text(encoding="utf-8").splitlines(), 1):
            for url in re.findall(r"https?://[^\s\"']+", line.split(" #", 1)[0]):
                places[url].append(f"mkdocs.yml:{number}")
    return dict(sorted(places.items()))


def main() -> int:
    links = collect()
    for url, where in links.items():
        print(f"{url}  {', '.join(where)}")
    print(f"{len(links)} external links, not fetched", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

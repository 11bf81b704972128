"""HTML of the published leaderboard site (:mod:`leaderboard.site`): pages, tables, the stamp.

Plain strings, every value escaped with :func:`html.escape`; one inline style sheet, no script,
nothing fetched from elsewhere, and only relative links, so a page works from a static host
and opened from disk (``file://``). Standard library only.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Stamp", "cell_text", "page", "rows_table"]

STYLE = """\
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:80rem;padding:0 1rem 2rem;
color:#1d2126;line-height:1.45}
nav{padding:.7rem 0;border-bottom:1px solid #d7dbe0;margin-bottom:1rem}nav a{margin-right:1rem}
table{border-collapse:collapse;font-size:.85rem;display:block;overflow-x:auto;max-width:100%}
th,td{border:1px solid #d7dbe0;padding:.25rem .45rem;text-align:left;vertical-align:top}
th{background:#f1f3f5;position:sticky;top:0}td.num{text-align:right;font-variant-numeric:tabular-nums}
td{max-width:40rem;white-space:pre-wrap;overflow-wrap:break-word}td.num{white-space:nowrap}
.note{color:#5c6670}footer{margin-top:2rem;border-top:1px solid #d7dbe0;padding-top:.5rem;color:#5c6670;
font-size:.8rem}code{background:#f1f3f5;padding:0 .2rem}img{max-width:100%;height:auto}
dl{font-size:.85rem}dt{font-weight:600;font-family:monospace}dd{margin:0 0 .3rem 1rem}"""

NAV = (("index.html", "Home"), ("strategies.html", "Strategies"), ("compare.html", "Compare"),
       ("charts.html", "Charts"), ("tables/index.html", "Tables"))


@dataclass(frozen=True)
class Stamp:
    """What every page says it was made from: the harness version, the database's content hash, the time."""

    version: str
    content_hash: str
    written_at: str

    def html(self) -> str:
        return (f"<footer>Written by pairsel-harness {esc(self.version)} at {esc(self.written_at)} from the "
                f"leaderboard database with content hash <code>{esc(self.content_hash)}</code>.</footer>")


def esc(value: Any) -> str:
    """``value`` as escaped HTML text."""
    return html.escape(str(value), quote=True)


def cell_text(value: Any) -> str:
    """How a value reads in a table cell (floats to 4 significant digits; the JSON and CSV keep them whole).

    ``harness leaderboard serve`` shows its cells the same way (:mod:`leaderboard.datasette_plugin`).
    """
    if value is None:
        return ""
    if isinstance(value, float):
        return format(value, ".4g")
    if isinstance(value, (bytes, memoryview)):
        return bytes(value).hex()
    return str(value)


def link(href: str, text: str) -> str:
    return f"<a href='{esc(href)}'>{esc(text)}</a>"


def rows_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], *,
               described: Mapping[str, str] | None = None,
               links: Mapping[str, Any] | None = None) -> str:
    """An HTML table; ``described`` gives a column's tooltip, ``links[column](value, row)`` a cell's href
    or None (``row``: the row as a dict)."""
    described, links = described or {}, links or {}
    head = "".join(
        f"<th title='{esc(described[c])}'>{esc(c)}</th>" if described.get(c) else f"<th>{esc(c)}</th>"
        for c in columns
    )
    body = []
    for row in rows:
        record = dict(zip(columns, row))
        cells = []
        for column, value in zip(columns, row):
            kind = " class='num'" if isinstance(value, (int, float)) and not isinstance(value, bool) else ""
            text = esc(cell_text(value))
            href = links[column](value, record) if column in links and value is not None else None
            content = f"<a href='{esc(href)}'>{text}</a>" if href else text
            cells.append(f"<td{kind}>{content}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def page(title: str, body: str, stamp: Stamp, *, depth: int = 0) -> str:
    """A whole page; ``depth``: how many folders below the site's root it lies (for its relative links)."""
    root = "../" * depth
    nav = "".join(link(root + href, text) for href, text in NAV)
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{esc(title)} · pairsel-harness leaderboard</title><style>{STYLE}</style></head>"
        f"<body><nav>{nav}</nav><main><h1>{esc(title)}</h1>{body}</main>{stamp.html()}</body></html>\n"
    )

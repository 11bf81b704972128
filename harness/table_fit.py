"""Tables that fit the terminal: which columns to show, how wide, and what was left out.

Every table the CLI prints for people (the leaderboard, ``compare``, ``harness list``, the study verdicts)
declares its columns once, as :class:`Column` objects with a kind and a priority, and hands them to
:func:`fit_table` with the console's width. The rules, in the order they are tried while the table is too
wide:

1. Columns whose value every row shares and that may be *hoisted* move into the title (``testbed synthetic``).
2. Columns with a *narrow* form switch to it (``finished (UTC)`` shows the date only).
3. The lowest-priority columns are dropped (ties: the rightmost first) until the rest fit with text columns at
   their floor and every name whole. Required columns are never dropped.
4. Text columns are cut, at a word boundary with ``…``, down to their floor: the lowest priority first (required
   ones last), the widest first among equals; wrap columns wrap instead.
5. Only then do name columns (kind ``key``) get narrower, and they *fold* onto more lines: a name is never
   cut, so two rows can never read the same.

Numbers (kind ``num``) are never cut nor wrapped. A dim footnote names the columns left out and that
``--wide`` shows them; ``--wide`` shows every column, uncut, at the table's natural width (the terminal
wraps what is longer than its lines).

Importing this module costs nothing; rich is imported when a table is built.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

#: Column kinds. ``key``: a name (a run id, a selector, a claim id): never cut, folds only when nothing else
#: is left to give room. ``num``: never cut, never wrapped. ``text``: cut at a word boundary with ``…``, one line
#: per row. ``wrap``: wrapped at word boundaries onto more lines, never cut.
KINDS = ("key", "num", "text", "wrap")

#: The gap between columns when there is room (one space of padding beside the box's one-space divider).
SPACIOUS_GAP = 2
#: The narrowest a text, wrap or folded key column gets (or its header's width, when longer).
FLOOR = 8

WIDE_HINT = "--wide shows every column"


@dataclass
class Column:
    """One column: its header, its cells (str, plain text, or rich Text) and how it may give way.

    ``priority``: higher stays longer as the terminal narrows; ``required`` columns are never dropped.
    ``hoist``: the column may move into the title when every row shares its value. ``narrow``: a narrower
    (header, cells) form tried before any column is dropped. ``floor``: the narrowest a text column is cut to.
    """

    header: str
    cells: Sequence[Any]
    kind: str = "num"
    priority: int = 0
    required: bool = False
    justify: str | None = None
    style: str | None = None
    hoist: bool = False
    narrow: tuple[str, Sequence[Any]] | None = None
    floor: int = FLOOR

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"column kind {self.kind!r} is not one of {', '.join(KINDS)}")


@dataclass
class Fitted:
    """What :func:`fit_table` decided: the table, and what it left out or moved."""

    table: Any
    columns: list[Column]
    widths: list[int]
    dropped: list[str] = field(default_factory=list)
    hoisted: list[str] = field(default_factory=list)
    width: int | None = None
    wide: bool = False

    @property
    def natural_width(self) -> int:
        """The width of the table with every shown column uncut and the spacious gap."""
        return _total([natural_width(c) for c in self.columns], SPACIOUS_GAP)

    @property
    def footnote(self) -> str | None:
        """``not shown at 80 columns: gold, KL (--wide shows every column)``, or None when nothing was left out."""
        if not self.dropped:
            return None
        where = f" at {self.width} columns" if self.width else ""
        return f"not shown{where}: {', '.join(self.dropped)} ({WIDE_HINT})"


# -- measuring and cutting ---------------------------------------------------------------------------------


def plain(cell: Any) -> str:
    """A cell's text without styles."""
    return cell.plain if hasattr(cell, "plain") else str(cell)


def cell_width(cell: Any) -> int:
    """Terminal cells taken by the widest line of ``cell``."""
    from rich.cells import cell_len

    return max((cell_len(line) for line in plain(cell).split("\n")), default=0)


def natural_width(column: Column) -> int:
    """The column's width with nothing cut: its widest cell or its header."""
    return max([cell_width(column.header), *(cell_width(c) for c in column.cells)])


def _floor(column: Column) -> int:
    """The narrowest the column may be made without dropping it."""
    if column.kind == "num":
        return natural_width(column)
    return min(natural_width(column), max(column.floor, cell_width(column.header) if column.kind == "text" else 0))


def _key_floor(column: Column) -> int:
    """The narrowest a name column folds to: the floor, or its longest header word."""
    longest_word = max((cell_width(w) for w in column.header.split()), default=0)
    return min(natural_width(column), max(column.floor, longest_word))


def cut_words(cell: Any, size: int) -> Any:
    """``cell`` on one line in at most ``size`` cells: cut at the last word boundary that keeps at least half,
    else mid-word, with ``…``. Styles are kept (a rich Text stays a Text)."""
    from rich.text import Text

    text = cell if isinstance(cell, Text) else Text(str(cell))
    if "\n" in text.plain:
        text = Text(" ").join(text.split("\n"))
    if cell_width(text) <= size:
        return text
    if size <= 1:
        return Text("…"[:size])
    room = size - 1
    head = text.plain[:room]
    while head and cell_width(head) > room:  # wide characters
        head = head[:-1]
    space = head.rfind(" ")
    end = space if space >= max(1, room // 2) else len(head)
    kept = text[:end]
    kept.rstrip()
    while kept.plain and kept.plain[-1] in ",;:·-–(":
        kept = kept[:-1]
        kept.rstrip()
    kept.append("…")
    return kept


# -- deciding --------------------------------------------------------------------------------------------


def _total(widths: Sequence[int], gap: int) -> int:
    return sum(widths) + gap * max(0, len(widths) - 1)


def _shared(column: Column) -> str | None:
    values = {plain(c) for c in column.cells}
    return values.pop() if len(values) == 1 and column.cells else None


def decide(columns: Sequence[Column], width: int | None, *, wide: bool = False
           ) -> tuple[list[Column], list[int], list[str], list[str], int]:
    """The columns to show (narrow forms applied), their widths, the dropped headers (in table order), the
    hoisted ``header value`` facts and the gap. Pure: no rich needed but for measuring."""
    shown = list(columns)
    hoisted: list[str] = []
    dropped: set[int] = set()

    def fits(gap: int) -> bool:
        return width is None or _total([natural_width(c) for c in shown], gap) <= width

    if wide or width is None or fits(SPACIOUS_GAP):
        return shown, [natural_width(c) for c in shown], [], [], SPACIOUS_GAP
    gap = 1
    # 1. hoist shared values, lowest priority first
    for column in sorted((c for c in shown if c.hoist), key=lambda c: c.priority):
        if fits(gap):
            break
        value = _shared(column)
        if value is not None:
            hoisted.append(f"{column.header} {value}")
            shown.remove(column)
    # 2. narrow forms, lowest priority first
    for column in sorted((c for c in shown if c.narrow), key=lambda c: c.priority):
        if fits(gap):
            break
        index = shown.index(column)
        header, cells = column.narrow
        shown[index] = replace(column, header=header, cells=list(cells), narrow=None)
    # 3. drop the lowest priority until names whole and text at its floor fit
    order = sorted((i for i, c in enumerate(shown) if not c.required), key=lambda i: (shown[i].priority, -i))

    def floors() -> list[int]:
        return [natural_width(c) if c.kind == "key" else _floor(c) for i, c in enumerate(shown) if i not in dropped]

    gone: list[int] = []
    for index in order:
        if _total(floors(), gap) <= width:
            break
        dropped.add(index)
        gone.append(index)
    for index in reversed(gone[:-1]):  # a narrower column dropped on the way may fit beside the rest after all
        dropped.discard(index)
        if _total(floors(), gap) > width:
            dropped.add(index)
    dropped_headers = [c.header for i, c in enumerate(shown) if i in dropped]
    shown = [c for i, c in enumerate(shown) if i not in dropped]
    # 4. cut text columns, lowest priority then widest first; 5. then fold names the same way
    widths = [natural_width(c) for c in shown]
    excess = _total(widths, gap) - width
    for kinds, floor in ((("text", "wrap"), _floor), (("key",), _key_floor)):
        rank = [(float("inf") if c.required else c.priority) for c in shown]
        for index in sorted((i for i, c in enumerate(shown) if c.kind in kinds), key=lambda i: (rank[i], -widths[i])):
            if excess <= 0:
                break
            narrower = max(floor(shown[index]), widths[index] - excess)
            excess -= widths[index] - narrower
            widths[index] = narrower
    if excess <= 0 and _total(widths, SPACIOUS_GAP) <= width:
        gap = SPACIOUS_GAP
    return shown, widths, dropped_headers, hoisted, gap


def fit_table(columns: Sequence[Column], width: int | None, *, wide: bool = False, title: str | None = None,
              caption: str | None = None, sections: Sequence[int] = (), **options: Any) -> Fitted:
    """A rich Table of ``columns`` that fits ``width`` (the console's) by the module's rules; ``wide``: every
    column uncut. ``sections``: row indexes before which a separator is drawn; ``options`` go to rich's Table
    (its box, title_style, ...)."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    shown, widths, dropped, hoisted, gap = decide(columns, width, wide=wide)
    settings: dict[str, Any] = dict(
        title_justify="left", caption_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False,
        header_style="bold",
    )
    settings.update(options)
    table = Table(
        title=" · ".join([t for t in (title, *hoisted) if t]) or None, caption=caption,
        padding=(0, gap - 1, 0, 0), collapse_padding=False, **settings,
    )
    cells_by_column = []
    for column, size in zip(shown, widths):
        justify = column.justify or ("right" if column.kind == "num" else "left")
        natural = natural_width(column)
        if column.kind == "num":
            table.add_column(column.header, justify=justify, style=column.style, no_wrap=True, min_width=natural)
        elif column.kind == "text" and size < natural:
            table.add_column(column.header, justify=justify, style=column.style, no_wrap=True, width=size,
                             overflow="ellipsis")
        else:  # key, wrap, or text with room: folds (whole words first) rather than cut
            table.add_column(column.header, justify=justify, style=column.style, overflow="fold",
                             width=size if size < natural else None, min_width=None if size < natural else size)
        cells = []
        for cell in column.cells:
            text = cell if isinstance(cell, Text) else Text(str(cell))
            if column.kind == "text" and cell_width(text) > size:
                text = cut_words(text, size)
            cells.append(text)
        cells_by_column.append(cells)
    breaks = set(sections)
    for index, row in enumerate(zip(*cells_by_column)):
        if index in breaks and index > 0:
            table.add_section()
        table.add_row(*row)
    return Fitted(table, shown, widths, dropped, hoisted, width, wide)


@contextlib.contextmanager
def widened(console: Any, width: int) -> Iterator[None]:
    """While inside, ``console`` is at least ``width`` columns wide (for ``--wide``: rich then draws the whole
    table and the terminal wraps the lines longer than its own)."""
    before = console.width
    if width > before:
        console.width = width
    try:
        yield
    finally:
        console.width = before


def print_fitted(console: Any, columns: Sequence[Column], *, wide: bool = False, **options: Any) -> Fitted:
    """Fit ``columns`` to ``console`` (see :func:`fit_table`), print the table, then the footnote (dim) when
    columns were left out. Returns what was decided."""
    fitted = fit_table(columns, console.width, wide=wide, **options)
    if wide:
        with widened(console, fitted.natural_width):
            console.print(fitted.table)
    else:
        console.print(fitted.table)
    if fitted.footnote:
        console.print(fitted.footnote, style="dim", highlight=False)
    return fitted

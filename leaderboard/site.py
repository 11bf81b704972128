"""``harness leaderboard publish``: the leaderboard as a static site, written atomically.

The site holds the views of :mod:`leaderboard.views` as HTML pages (the same SQL that
``harness leaderboard serve`` runs as canned queries), every table as an HTML page and as
JSON and CSV downloads, and the figures of :mod:`leaderboard.charts`::

    index.html                  the views, the runs (links to their pages), the tables
    strategies.html .json .csv  the strategies ranked by gain per 1,000 labels
    compare.html .json .csv     the paired comparison against --baseline
    charts.html, plots/*.png    win rate against labels, gold reward against KL, per-iteration curves
    runs/RUN-iterations.html .json .csv, runs/RUN-labels.html .json .csv   each run's pages
    tables/index.html, tables/TABLE.html .json .csv                        every table and SQL view
    publish.json                what was published: version, content hash, time, baseline

Every page shows the harness version, the database's content hash
(:mod:`leaderboard.content_hash`) and when it was written. Everything is read in one read
transaction, so the pages agree with each other and with the hash. The site is built in a
hidden sibling folder and renamed onto ``out`` only when complete: an error or Ctrl-C leaves
``out`` as it was. ``out`` must be absent, empty, or an earlier publish (it has
``publish.json``) unless ``force``.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import os
import re
import shutil
import sqlite3
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import UsageError
from leaderboard.site_html import Stamp, esc, page, rows_table

__all__ = ["MARKER", "Published", "check_out", "publish"]

MARKER = "publish.json"
GENERATOR = "pairsel-harness leaderboard publish"
#: An HTML page shows at most this many rows of a table; its JSON and CSV hold them all.
HTML_ROW_LIMIT = 1000
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,80}")


@dataclass
class Published:
    """What a publish wrote."""

    out: Path
    content_hash: str
    written_at: str
    files: list[str] = field(default_factory=list)  # relative paths
    notes: list[str] = field(default_factory=list)


def is_previous_publish(folder: Path) -> bool:
    """Whether ``folder`` holds a site this command wrote (its ``publish.json`` says so)."""
    try:
        return json.loads((folder / MARKER).read_text(encoding="utf-8")).get("generator") == GENERATOR
    except (OSError, ValueError, AttributeError):
        return False


def check_out(out: Path, *, force: bool, db_path: Path | None = None) -> None:
    """Refuse (UsageError naming the fix) an ``out`` that publishing would wrongly replace."""
    target = out.resolve()
    if target.exists() and not target.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder: pass a folder for the site")
    protected = [Path.cwd().resolve()] + ([db_path.resolve()] if db_path is not None else [])
    for inside in protected:
        if inside == target or target in inside.parents:
            raise UsageError(f"--out {out} holds {inside}, which publishing would replace: pass a new folder "
                             "for the site, e.g. --out leaderboard-site")
    if target.is_dir() and any(target.iterdir()) and not is_previous_publish(target) and not force:
        raise UsageError(f"--out {out} is not empty and holds no earlier publish ({MARKER}): pass an empty or "
                         "new folder, or --force to replace everything in it")


def publish(db_path: Path, out: Path, *, baseline: str = "random", force: bool = False,
            now: datetime.datetime | None = None) -> Published:
    """Write the site of the leaderboard at ``db_path`` to ``out`` (module docstring)."""
    from harness import __version__
    from leaderboard.content_hash import content_hash
    from leaderboard.sql_functions import register

    check_out(out, force=force, db_path=db_path)
    target = out.resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    written_at = (now or datetime.datetime.now(datetime.timezone.utc)).strftime("%Y-%m-%dT%H:%M:%SZ")
    building = Path(tempfile.mkdtemp(prefix=f".{target.name}.publishing-", dir=target.parent))
    conn = sqlite3.connect(f"{Path(db_path).resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
    try:
        register(conn)
        conn.execute("BEGIN")  # one snapshot for every page and the hash
        stamp = Stamp(__version__, content_hash(conn), written_at)
        result = Published(target, stamp.content_hash, written_at)
        _Site(conn, building, stamp, baseline, result).build()
        conn.execute("COMMIT")
        umask = os.umask(0)
        os.umask(umask)
        building.chmod(0o777 & ~umask)  # mkdtemp makes it private; a site is for others to read
        _swap_into_place(building, target)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    finally:
        conn.close()
    return result


def _swap_into_place(building: Path, target: Path) -> None:
    """Rename the finished site onto ``target``, replacing an earlier one."""
    if not target.exists():
        os.rename(building, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.replaced-", dir=target.parent))
    os.rmdir(old)
    os.rename(target, old)
    try:
        os.rename(building, target)
    except BaseException:
        os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _query(conn: sqlite3.Connection, sql: str, params: Mapping[str, Any] | Sequence[Any] = ()) -> tuple[list[str], list[tuple]]:
    cursor = conn.execute(sql, params)
    return [d[0] for d in cursor.description], cursor.fetchall()


def _json_value(value: Any) -> Any:
    return bytes(value).hex() if isinstance(value, (bytes, memoryview)) else value


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class _Site:
    """The pages of one publish, written under ``folder``."""

    def __init__(self, conn: sqlite3.Connection, folder: Path, stamp: Stamp, baseline: str, result: Published):
        from leaderboard.views import column_descriptions, table_descriptions

        self.conn, self.folder, self.stamp, self.baseline, self.result = conn, folder, stamp, baseline, result
        self.columns_described = column_descriptions()
        self.tables_described = table_descriptions()
        self.run_slugs: dict[str, str] = {}

    # -- writing -------------------------------------------------------------------------

    def write(self, relative: str, content: str | bytes) -> None:
        path = self.folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        self.result.files.append(relative)

    def write_page(self, relative: str, title: str, body: str) -> None:
        self.write(relative, page(title, body, self.stamp, depth=relative.count("/")))

    def write_data(self, stem: str, columns: list[str], rows: list[tuple]) -> None:
        """``stem.json`` (a list of objects) and ``stem.csv`` (a header, then the rows)."""
        records = [{c: _json_value(v) for c, v in zip(columns, row)} for row in rows]
        self.write(f"{stem}.json", json.dumps(records, ensure_ascii=False, indent=1) + "\n")
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([[_json_value(v) for v in row] for row in rows])
        self.write(f"{stem}.csv", buffer.getvalue())

    def data_page(self, stem: str, title: str, intro: str, columns: list[str], rows: list[tuple], *,
                  described: Mapping[str, str] | None = None, links: Mapping[str, Any] | None = None) -> None:
        """``stem.html`` showing the rows (at most :data:`HTML_ROW_LIMIT`), with ``stem.json`` and ``stem.csv``."""
        name = stem.rsplit("/", 1)[-1]
        downloads = (f"<p>Download: <a href='{esc(name)}.json'>JSON</a> · <a href='{esc(name)}.csv'>CSV</a> "
                     f"({len(rows)} row{'s' if len(rows) != 1 else ''})</p>")
        shown = rows[:HTML_ROW_LIMIT]
        cut = (f"<p class='note'>The first {HTML_ROW_LIMIT} of {len(rows)} rows; the JSON and CSV hold them all.</p>"
               if len(rows) > HTML_ROW_LIMIT else "")
        table = rows_table(columns, shown, described=described, links=links) if rows else "<p class='note'>No rows.</p>"
        self.write_page(f"{stem}.html", title, intro + downloads + cut + table)
        self.write_data(stem, columns, rows)

    # -- the pages -----------------------------------------------------------------------

    def build(self) -> None:
        from leaderboard.views import COMPARE, RUN_ITERATIONS, RUN_LABELS, STRATEGIES

        runs = self.runs()
        self.view_page(STRATEGIES, "strategies", {})
        self.view_page(COMPARE, "compare", {"baseline": self.baseline, "metric": "", "confidence": ""},
                       extra=f"<p>Baseline: <code>{esc(self.baseline)}</code>; metric <code>final_win_rate</code>; "
                             "95% interval (as <code>harness leaderboard compare --baseline "
                             f"{esc(self.baseline)}</code>).</p>")
        for run_id in runs:
            slug = self.run_slugs[run_id]
            self.view_page(RUN_ITERATIONS, f"runs/{slug}-iterations", {"run_id": run_id},
                           title=f"Run {run_id}: iterations",
                           extra=f"<p><a href='{esc(slug)}-labels.html'>The labels this run bought</a></p>")
            self.view_page(RUN_LABELS, f"runs/{slug}-labels", {"run_id": run_id},
                           title=f"Run {run_id}: labels",
                           extra=f"<p><a href='{esc(slug)}-iterations.html'>This run's iterations</a></p>")
        tables = self.tables_pages()
        self.charts_page()
        self.index_page(runs, tables)
        self.write(MARKER, json.dumps({
            "generator": GENERATOR, "harness_version": self.stamp.version,
            "content_hash": self.stamp.content_hash, "written_at": self.stamp.written_at,
            "baseline": self.baseline,
        }, indent=1) + "\n")

    def runs(self) -> list[str]:
        """Every run id, oldest first, each with a file-name-safe slug."""
        ids = [run_id for (run_id,) in self.conn.execute("select id from runs order by started_at, id")]
        used: set[str] = set()
        for run_id in ids:
            slug = run_id if _SAFE_ID.fullmatch(str(run_id)) else "run-" + re.sub(r"[^A-Za-z0-9]+", "-", str(run_id))[:40]
            while slug.lower() in used:  # file names may be case-insensitive
                slug += "-"
            used.add(slug.lower())
            self.run_slugs[run_id] = slug
        return ids

    def view_page(self, view: Any, stem: str, params: Mapping[str, Any], *, title: str | None = None,
                  extra: str = "") -> None:
        columns, rows = _query(self.conn, view.sql, dict(params))
        intro = f"<p>{esc(view.description)}</p>{extra}"
        described = self.columns_described.get("iterations", {}) if view.name == "run_iterations" else {}
        self.data_page(stem, title or view.title, intro, columns, rows, described=described)

    def tables_pages(self) -> list[tuple[str, str, int]]:
        """A page, JSON and CSV per table and SQL view; returns (name, type, rows) for the index."""
        listed = []
        entries = self.conn.execute(
            "select name, type from sqlite_master where type in ('table', 'view') and name not like 'sqlite_%' "
            "order by type, name").fetchall()
        for name, kind in entries:
            columns, rows = _query(self.conn, f"select * from {_quote(name)}")
            described = self.columns_described.get(name, {})
            intro = f"<p>{esc(self.tables_described.get(name, 'A SQL view.' if kind == 'view' else ''))}</p>"
            if described:
                intro += "<details><summary>Columns</summary><dl>" + "".join(
                    f"<dt>{esc(c)}</dt><dd>{esc(described[c])}</dd>" for c in columns if described.get(c)
                ) + "</dl></details>"
            self.data_page(f"tables/{name}", f"{'View' if kind == 'view' else 'Table'} {name}", intro, columns,
                           rows, described=described)
            listed.append((name, kind, len(rows)))
        items = "".join(
            f"<tr><td><a href='{esc(name)}.html'>{esc(name)}</a></td><td>{esc(kind)}</td><td class='num'>{count}</td>"
            f"<td><a href='{esc(name)}.json'>JSON</a> · <a href='{esc(name)}.csv'>CSV</a></td>"
            f"<td>{esc(self.tables_described.get(name, ''))}</td></tr>"
            for name, kind, count in listed
        )
        self.write_page("tables/index.html", "Tables",
                        "<p>Every table of the leaderboard database, with its JSON and CSV.</p><table><thead><tr>"
                        "<th>name</th><th>type</th><th>rows</th><th>download</th><th>holds</th></tr></thead>"
                        f"<tbody>{items}</tbody></table>")
        return listed

    def charts_page(self) -> None:
        from leaderboard.charts import CHARTS, draw

        drawn = draw(self.conn)
        self.result.notes += drawn.notes
        body = ["<p>The finished runs, grouped by strategy (what <code>harness leaderboard plot</code> draws).</p>"]
        body += [f"<p class='note'>{esc(note)}</p>" for note in drawn.notes]
        for name, (title, description) in CHARTS.items():
            if name in drawn.images:
                self.write(f"plots/{name}", drawn.images[name])
                body.append(f"<h2>{esc(title)}</h2><p>{esc(description)}</p>"
                            f"<img src='plots/{esc(name)}' alt='{esc(title)}'>")
        self.write_page("charts.html", "Charts", "".join(body))

    def index_page(self, runs: list[str], tables: list[tuple[str, str, int]]) -> None:
        from leaderboard.views import VIEWS

        views = "".join(
            f"<li><a href='{esc(v.name)}.html'>{esc(v.title)}</a>: {esc(v.description)}</li>"
            for v in VIEWS if not v.per_run
        )
        wanted = ["id", "status", "testbed", "instance_selector", "corpus_selector", "allocator", "seed",
                  "world_seed", "final_win_rate", "labels_used"]
        present = [c for c in wanted if c in {row[1] for row in self.conn.execute("pragma table_info(runs)")}]
        columns, rows = _query(
            self.conn,
            f"select {', '.join(_quote(c) for c in present)}, "
            "(select count(*) from labels where labels.run_id = runs.id) as labels "
            "from runs order by started_at, id")
        slugs = self.run_slugs
        table = rows_table(columns, rows, described=self.columns_described.get("runs", {}), links={
            "id": lambda value, row: f"runs/{slugs[value]}-iterations.html",
            "labels": lambda value, row: f"runs/{slugs[row['id']]}-labels.html",
        }) if rows else "<p class='note'>No runs yet.</p>"
        listed = "".join(f"<li><a href='tables/{esc(name)}.html'>{esc(name)}</a> ({count} rows; "
                         f"<a href='tables/{esc(name)}.json'>JSON</a>, <a href='tables/{esc(name)}.csv'>CSV</a>)</li>"
                         for name, _, count in tables)
        body = (
            f"<p>The runs of a pairsel-harness leaderboard database: {len(runs)} run(s).</p>"
            f"<h2>Views</h2><ul>{views}<li><a href='charts.html'>Charts</a>: win rate against labels spent, "
            "gold reward against KL, per-iteration curves.</li></ul>"
            "<h2>Runs</h2><p>A run's id links to its iterations, its label count to the labels it bought.</p>"
            f"{table}<h2>Tables</h2><ul>{listed}</ul>"
        )
        self.write_page("index.html", "pairsel-harness leaderboard", body)

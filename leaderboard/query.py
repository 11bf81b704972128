"""Reading the leaderboard for the CLI: filters, sorting and grouping of runs.

Plain ``sqlite3`` on :attr:`leaderboard.store.Leaderboard.conn`, no
sqlite-utils, numpy or rich. Every column name that reaches SQL comes from
the database's own schema (``pragma_table_info``) after a user's name has
been checked against it, and is quoted; every value is a SQL parameter.
A name that is not a column raises :class:`harness.errors.UnknownNameError`
(exit code 2 in the CLI) listing the columns and close matches.

Runs are grouped *by strategy* by default: the instance and corpus
selectors, allocator, testbed, trainer and ``config_hash`` (a hash of the
whole config without its seeds, so it covers every option). Runs of one group
differ only by their seeds.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.errors import UnknownNameError, UsageError
from harness.reference_point import marked, recorded_deployable
from leaderboard.stats import mean_std

__all__ = [
    "Filters",
    "GROUP_METRICS",
    "STATUS_CHOICES",
    "STRATEGY_FIELDS",
    "config_settings",
    "count_runs",
    "group_labels",
    "group_runs",
    "mark_deployability",
    "parse_by",
    "select_runs",
    "sort_groups",
    "table_columns",
]

#: Values of ``--status``; ``all`` means every status.
STATUS_CHOICES = ("finished", "running", "failed", "interrupted", "all")

#: The default grouping: one strategy = these columns (config_hash covers every option).
STRATEGY_FIELDS = (
    "instance_selector", "corpus_selector", "allocator", "testbed", "trainer", "config_hash",
)
#: ``--by`` shorthands.
BY_ALIASES: dict[str, tuple[str, ...]] = {
    "strategy": STRATEGY_FIELDS,
    "selector": ("instance_selector", "corpus_selector"),
}
#: Final metrics summarised per group (mean, std, n).
GROUP_METRICS = (
    "final_win_rate", "final_gold_reward", "final_kl", "labels_used", "proxy_calls", "win_gain_per_1k_labels",
)
#: Per-group counts that ``--sort`` accepts besides the metrics and the group's own columns.
GROUP_COUNTS = ("runs", "seeds")

_NUMERIC_TYPES = ("INT", "REAL", "FLOA", "DOUB", "NUMERIC", "DECIMAL")
_ROLE_PREFIX = {
    "testbed": "testbed",
    "instance_selector": "instance",
    "corpus_selector": "corpus",
    "allocator": "allocator",
    "trainer": "trainer",
}


@dataclass(frozen=True)
class Filters:
    """Which runs to read. None means no filter; ``status=None`` is every status."""

    status: str | None = "finished"
    testbed: str | None = None
    sweep: str | None = None
    selector: str | None = None  # instance or corpus level
    allocator: str | None = None

    def describe(self) -> str:
        """``testbed synthetic · selector random`` for messages; '' without filters."""
        parts = [
            f"{name} {value}"
            for name, value in (
                ("testbed", self.testbed), ("sweep", self.sweep),
                ("selector", self.selector), ("allocator", self.allocator),
            )
            if value is not None
        ]
        return " · ".join(parts)


# -- schema ----------------------------------------------------------------------


def table_columns(conn: sqlite3.Connection, table: str) -> dict[str, str]:
    """Column name -> declared type (upper case) of ``table``, in schema order."""
    rows = conn.execute("select name, type from pragma_table_info(?)", [table]).fetchall()
    return {name: (kind or "").upper() for name, kind in rows}


def is_numeric(declared: str) -> bool:
    return any(part in declared for part in _NUMERIC_TYPES)


def quote(name: str) -> str:
    """A SQL identifier, quoted. Only ever called with names read from the schema."""
    return '"' + name.replace('"', '""') + '"'


def check_name(name: str, known: Iterable[str], kind: str) -> str:
    """``name`` if it is in ``known``, else UnknownNameError listing them and close matches."""
    known = list(known)
    if name not in known:
        raise UnknownNameError(kind, name, known)
    return name


# -- filters and reading ------------------------------------------------------------


def where_sql(filters: Filters, columns: Mapping[str, str]) -> tuple[str, list[Any], list[str]]:
    """(``where ...`` or '', parameters, notes) for ``filters`` on the runs table."""
    clauses: list[str] = []
    params: list[Any] = []
    notes: list[str] = []
    if filters.status is not None:
        if filters.status not in STATUS_CHOICES or filters.status == "all":
            raise UsageError(
                f"unknown status {filters.status!r}; use one of {', '.join(STATUS_CHOICES)}"
            )
        clauses.append("status = ?")
        params.append(filters.status)
    if filters.testbed is not None:
        clauses.append("testbed = ?")
        params.append(filters.testbed)
    if filters.allocator is not None:
        clauses.append("allocator = ?")
        params.append(filters.allocator)
    if filters.selector is not None:
        clauses.append("(instance_selector = ? or corpus_selector = ?)")
        params += [filters.selector, filters.selector]
    if filters.sweep is not None:
        if "sweep_id" in columns:
            clauses.append("sweep_id = ?")
            params.append(filters.sweep)
        else:
            clauses.append("0")
            notes.append(
                "this database has no sweep_id column: no run in it was recorded by a sweep"
            )
    return (" where " + " and ".join(clauses) if clauses else ""), params, notes


def select_runs(
    conn: sqlite3.Connection,
    filters: Filters,
    columns: Sequence[str] | None = None,
    *,
    sort: str | None = None,
    descending: bool = True,
    limit: int | None = None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """(rows, notes): the runs matching ``filters`` as raw dicts (JSON columns as text).

    ``columns`` (default: all) and ``sort`` must be columns of ``runs``
    (UnknownNameError otherwise). Order: ``sort`` (NULLs last), default the
    final win rate, best first; ties oldest first.
    """
    known = table_columns(conn, "runs")
    wanted = list(known) if columns is None else [check_name(c, known, "runs column") for c in columns]
    sort = check_name(sort, known, "sort column") if sort is not None else "final_win_rate"
    where, params, notes = where_sql(filters, known)
    direction = "desc" if descending else "asc"
    sql = (
        f"select {', '.join(quote(c) for c in wanted)} from runs{where}"
        f" order by {quote(sort)} is null, {quote(sort)} {direction}, started_at, rowid"
    )
    if limit is not None:
        sql += " limit ?"
        params.append(int(limit))
    cursor = conn.execute(sql, params)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()], notes


def count_runs(conn: sqlite3.Connection, filters: Filters) -> dict[str, int]:
    """Runs matching ``filters`` (ignoring its status) per status."""
    known = table_columns(conn, "runs")
    where, params, _ = where_sql(
        Filters(None, filters.testbed, filters.sweep, filters.selector, filters.allocator), known
    )
    rows = conn.execute(f"select status, count(*) from runs{where} group by status", params)
    return {status: count for status, count in rows}


def distinct_values(conn: sqlite3.Connection, *columns: str) -> list[str]:
    """The distinct non-null values of some runs columns (each checked against the schema)."""
    known = table_columns(conn, "runs")
    values: set[str] = set()
    for column in columns:
        if column in known:
            rows = conn.execute(f"select distinct {quote(column)} from runs")
            values |= {str(v) for (v,) in rows if v is not None}
    return sorted(values)


# -- grouping -----------------------------------------------------------------------


def parse_by(text: str | None, columns: Iterable[str]) -> tuple[str, ...] | None:
    """The ``--by`` fields: None for ``run`` (one row per run), else runs columns.

    ``strategy`` (the default) and ``selector`` (both levels) are shorthands.
    """
    if text is None:
        return STRATEGY_FIELDS
    columns = list(columns)
    parts = [part.strip() for part in text.split(",")]
    if not parts or any(not part for part in parts):
        raise UsageError(f"--by needs a comma-separated list of columns, got {text!r}")
    if "run" in parts:
        if parts != ["run"]:
            raise UsageError("--by run gives one row per run and combines with no other field")
        return None
    fields: list[str] = []
    for part in parts:
        expanded = BY_ALIASES.get(part)
        if expanded is None:
            check_name(part, [*columns, "run", *BY_ALIASES], "--by field")
            expanded = (part,)
        fields += [field for field in expanded if field not in fields]
    return tuple(fields)


def group_runs(
    rows: Iterable[Mapping[str, Any]], by: Sequence[str], metrics: Sequence[str] = GROUP_METRICS
) -> list[dict[str, Any]]:
    """One flat dict per distinct value of ``by``, in first-seen order.

    Each holds the ``by`` fields, ``runs`` (how many), ``seeds`` (distinct
    (seed, world_seed) pairs), ``run_ids``, and per metric ``<m>_mean``,
    ``<m>_std`` (sample std over runs, None below two) and ``<m>_n``.
    """
    buckets: dict[tuple, list[Mapping[str, Any]]] = {}
    for row in rows:
        buckets.setdefault(tuple(row.get(field) for field in by), []).append(row)
    groups = []
    for key, members in buckets.items():
        group: dict[str, Any] = dict(zip(by, key))
        group["runs"] = len(members)
        group["seeds"] = len({(r.get("seed"), r.get("world_seed")) for r in members})
        for metric in metrics:
            n, mean, std = mean_std(r.get(metric) for r in members)
            group[f"{metric}_mean"], group[f"{metric}_std"], group[f"{metric}_n"] = mean, std, n
        group["run_ids"] = [r.get("id") for r in members]
        groups.append(group)
    return groups


def group_sort_keys(by: Sequence[str], metrics: Sequence[str] = GROUP_METRICS) -> dict[str, str]:
    """``--sort`` names in grouped mode -> the group dict key they sort by."""
    keys = {field: field for field in by}
    keys.update({count: count for count in GROUP_COUNTS})
    for metric in metrics:
        keys[metric] = f"{metric}_mean"
        keys[f"{metric}_mean"] = f"{metric}_mean"
        keys[f"{metric}_std"] = f"{metric}_std"
    return keys


def sort_groups(
    groups: list[dict[str, Any]], key: str, *, descending: bool | None = None
) -> list[dict[str, Any]]:
    """Groups sorted by ``key`` (missing values last); numbers high first, text A-Z by default."""
    present = [g for g in groups if g.get(key) is not None]
    missing = [g for g in groups if g.get(key) is None]
    numeric = all(isinstance(g[key], (int, float)) for g in present)
    if descending is None:
        descending = numeric
    if numeric:
        present.sort(key=lambda g: g[key], reverse=descending)
    else:
        present.sort(key=lambda g: str(g[key]), reverse=descending)
    return present + missing


# -- configs --------------------------------------------------------------------------


def flat_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A run config as ``-o``-style keys, seeds left out.

    ``{"trainer": {"name": "native", "settings": {"beta": 1.0}}, "budget": 3000}``
    -> ``{"trainer": "native", "trainer.beta": 1.0, "budget": 3000}``; the
    selectors' settings come as ``instance.<option>`` and ``corpus.<option>``.
    """
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), item)
        else:
            out[prefix] = value

    for key, value in config.items():
        if key in ("seed", "world_seed"):
            continue
        if isinstance(value, Mapping) and "name" in value and isinstance(value.get("settings"), Mapping):
            out[key] = value["name"]
            walk(_ROLE_PREFIX.get(key, key), value["settings"])
            for extra, item in value.items():
                if extra not in ("name", "settings"):
                    walk(f"{_ROLE_PREFIX.get(key, key)}.{extra}", item)
        else:
            walk(key, value)
    return out


def configs_for(conn: sqlite3.Connection, run_ids: Sequence[str]) -> dict[str, dict[str, Any] | None]:
    """run id -> parsed config (None when the run has none) for a few run ids."""
    out: dict[str, dict[str, Any] | None] = {}
    ids = list(run_ids)
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ", ".join("?" for _ in chunk)
        for run_id, text in conn.execute(
            f"select id, config_json from runs where id in ({marks})", chunk
        ):
            try:
                out[run_id] = json.loads(text) if text else None
            except ValueError:
                out[run_id] = None
    return out


def format_setting(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def config_settings(
    configs: Sequence[Mapping[str, Any] | None], shown: Iterable[str] = (*_ROLE_PREFIX, "deployable")
) -> list[str]:
    """Per config, the ``key=value`` settings that differ between these configs.

    A key is named by its last part (``beta=0.5`` for ``trainer.beta``) unless
    two differing keys share it (``instance.normalize``, ``corpus.normalize``).

    A component's own options (``trainer.beta``) are compared only between
    configs that use the same component there (``smallest``'s ``normalize`` is
    not a difference from ``random``, which has no such option); other keys
    (``budget``) between all. Keys in ``shown`` (the component names the table
    already shows, and ``deployable``, which the selector's † mark shows) are left
    out. One string per config, '' where nothing differs.
    """
    flats = [flat_config(c) if c else {} for c in configs]
    shown = set(shown)
    role_of = {prefix: role for role, prefix in _ROLE_PREFIX.items()}
    keys: list[str] = []
    for flat in flats:
        for key in flat:
            if key not in keys and key not in shown:
                keys.append(key)

    encoded = [{k: json.dumps(v, sort_keys=True) for k, v in flat.items()} for flat in flats]
    shows: list[set[str]] = [set() for _ in flats]  # per config, the keys that vary among its peers
    for key in keys:
        role = role_of.get(key.split(".", 1)[0]) if "." in key else None
        buckets: dict[Any, list[int]] = {}
        for index, flat in enumerate(flats):
            buckets.setdefault(json.dumps(flat.get(role)) if role else None, []).append(index)
        for members in buckets.values():
            if len({encoded[i].get(key, "\0missing") for i in members}) > 1:
                for i in members:
                    shows[i].add(key)
    # Name a setting by its last part (beta, not trainer.beta) where that is unambiguous.
    varying = [key for key in keys if any(key in show for show in shows)]
    last = [key.rsplit(".", 1)[-1] for key in varying]
    names = {key: short if last.count(short) == 1 else key for key, short in zip(varying, last)}
    return [
        " ".join(f"{names[key]}={format_setting(flat[key])}" for key in varying if key in flat and key in show)
        for flat, show in zip(flats, shows)
    ]


def selector_label(row: Mapping[str, Any]) -> str:
    """``smallest`` when both levels use one selector, else ``instance/corpus``; marked † when not deployable.

    The mark (:mod:`harness.reference_point`) follows what the run recorded:
    ``deployable: false`` in a run's config, or ``deployable`` on a group
    (:func:`mark_deployability`).
    """
    instance = row.get("instance_selector") or "?"
    corpus = row.get("corpus_selector") or "?"
    return marked(instance if instance == corpus else f"{instance}/{corpus}", recorded_deployable(row))


def mark_deployability(conn: sqlite3.Connection, groups: Sequence[dict[str, Any]]) -> None:
    """Set ``deployable`` on each group: False when any of its runs recorded ``deployable: false``."""
    configs = configs_for(conn, [run_id for group in groups for run_id in group.get("run_ids", ())])
    for group in groups:
        group["deployable"] = all(recorded_deployable({"config": configs.get(run_id)})
                                  for run_id in group.get("run_ids", ()))


def group_labels(groups: Sequence[Mapping[str, Any]], by: Sequence[str]) -> list[str]:
    """Short legend labels: the parts of each group's key that vary between the groups.

    The selector label always leads when the key has selectors; a config hash
    is added only where two labels would otherwise be equal.
    """
    parts_per_group: list[list[tuple[str, str]]] = []
    for group in groups:
        parts: list[tuple[str, str]] = []
        if "instance_selector" in by or "corpus_selector" in by:
            parts.append(("selector", selector_label(group)))
        for field in by:
            if field in ("instance_selector", "corpus_selector", "config_hash"):
                continue
            parts.append((field, "—" if group.get(field) is None else str(group.get(field))))
        if group.get("settings"):
            parts.append(("settings", str(group["settings"])))
        parts_per_group.append(parts)
    names = [name for name, _ in parts_per_group[0]] if parts_per_group else []
    varying = {
        name
        for index, name in enumerate(names)
        if len({parts[index][1] for parts in parts_per_group if index < len(parts)}) > 1
    }
    labels = []
    for parts in parts_per_group:
        chosen = [value for name, value in parts if name in varying or name == "selector"]
        if not chosen and parts:
            chosen = [parts[0][1]]
        labels.append(" · ".join(chosen))
    counts: dict[str, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    out = []
    for label, group in zip(labels, groups):
        if counts[label] > 1 and group.get("config_hash"):
            label = f"{label} [{str(group['config_hash'])[:8]}]"
        out.append(label or "all runs")
    return out

"""The leaderboard schema as Markdown, generated from a freshly migrated in-memory database.

The README's "Leaderboard schema" section is this module's output, between the
markers ``<!-- schema:start -->`` and ``<!-- schema:end -->``; a test fails when
they differ. Refresh it after adding a migration::

    python -m leaderboard.schema_doc --write README.md     # rewrite the README section
    python -m leaderboard.schema_doc --check README.md     # exit 1 if it is stale
    python -m leaderboard.schema_doc                       # print the Markdown
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from pathlib import Path

START = "<!-- schema:start -->"
END = "<!-- schema:end -->"
REFRESH_COMMAND = "python -m leaderboard.schema_doc --write README.md"

#: What the declared columns hold; a column without an entry gets an empty cell.
DESCRIPTIONS: dict[str, dict[str, str]] = {
    "runs": {
        "id": "run id: `r` + 10 hex digits",
        "status": "`running`, `finished`, `failed`, `interrupted` or `awaiting_labels`",
        "started_at": "UTC, ISO 8601",
        "finished_at": "UTC, ISO 8601; set with the final status",
        "testbed": "testbed name",
        "instance_selector": "selector at the instance level (one pair per prompt)",
        "corpus_selector": "selector at the corpus level (which pairs to keep)",
        "allocator": "budget allocator",
        "trainer": "trainer name",
        "scorer_columns": "score columns computed, comma-separated",
        "seed": "run seed (prompts, samples, training)",
        "world_seed": "world seed (world, pi_ref, pi_0, evaluation set)",
        "iterations": "iterations planned",
        "budget": "gold-label budget",
        "keep": "corpus-level share of pairs kept",
        "n_responses": "responses sampled per prompt (N)",
        "config_hash": "hash of the config without its seeds: one strategy",
        "config_json": "the full config, every option (JSON)",
        "plugins_json": "plugin and version behind every component (JSON)",
        "versions_json": "library versions (JSON)",
        "git_commit": "commit of the harness checkout (`-dirty` with changes)",
        "command": "the command line",
        "harness_version": "pairsel-harness version",
        "error": "traceback of a failed or interrupted run",
        "initial_win_rate": "win rate of pi_0",
        "final_win_rate": "win rate of the final policy vs the reference outputs (ties 1/2)",
        "final_win_rate_se": "its standard error (one run's evaluation error)",
        "final_gold_reward": "mean gold reward of the final policy",
        "final_kl": "KL(pi ‖ pi_ref) of the final policy",
        "labels_used": "gold labels charged to the ledger",
        "wall_seconds": "wall time of the run",
    },
    "iterations": {
        "run_id": "the run (`runs.id`)",
        "iteration": "0 = pi_0, then 1..K",
        "recorded_at": "UTC, ISO 8601",
    },
    "texts": {
        "hash": "sha256 of the text, 16 hex digits",
        "text": "a prompt or a response, as the annotator saw it",
    },
    "labels": {
        "id": "`RUN/ITERATION/pNNNNN` (a pair: the `pair_id` people see) or `.../sNNNNN` (a score)",
        "run_id": "the run (`runs.id`)",
        "iteration": "1..K",
        "kind": "`pair` (a pairwise preference) or `score` (a pointwise gold score)",
        "position": "the pair's index among the kept pairs (or the response's, flattened)",
        "prompt_hash": "the prompt (`texts.hash`)",
        "a_hash": "response a (or the scored response)",
        "b_hash": "response b; null for a score",
        "shown_swapped": "external annotation only: 1 if people saw b as \"a\"",
        "label": "`a`, `b` or `tie`, in the harness's order; null while awaited",
        "score": "the gold score (kind `score`)",
        "source": "who labelled: `testbed:NAME`, `judge:NAME[/MODEL]`, `gold_judge:NAME`, `external`",
        "annotator": "who, when the label file says",
        "requested_at": "UTC, ISO 8601",
        "labelled_at": "UTC, ISO 8601",
    },
    "judgements": {
        "judge": "judge plugin name",
        "model": "the model asked",
        "prompt_hash": "sha256 of the judge's prompt template and the instruction",
        "pair_hash": "sha256 of the two responses (order-free)",
        "swapped": "1: asked with the responses in the other order",
        "verdict": "`A`, `B` (the position preferred) or `invalid`",
        "answer": "the raw answer text",
        "prompt_tokens": "tokens billed for the question",
        "completion_tokens": "tokens billed for the answer",
        "created_at": "UTC, ISO 8601",
    },
    "_sqlite_migrations": {
        "migration_set": "`pairsel_harness.leaderboard`",
        "name": "migration applied",
        "applied_at": "when",
    },
}

_NOTES: dict[str, str] = {
    "runs": (
        "One row per run. Metric columns a run reports beyond these (timings such as "
        "`time_train`, extra final metrics, tags such as `sweep_id`) are added on demand, "
        "typed by their first value (a metric first seen as null gets REAL)."
    ),
    "iterations": (
        "One row per (run, iteration). The metric columns (`win_rate`, `gold_reward`, `kl`, "
        "`labels`, the selected-pair diagnostics `sel_*`, `train_*`, `time_*`, ...) are added "
        "on demand when a run first reports them."
    ),
    "texts": "Every prompt and response a label was given for, stored once.",
    "labels": (
        "Every gold label a run paid for: the ledger of a run is the count of its rows. Pairs handed "
        "to people (`--annotator external`) are recorded when exported and labelled by `harness label import`."
    ),
    "judgements": (
        "Every answer a paying judge (e.g. `openai`) got, so that a re-run or a resumed run never pays twice."
    ),
    "_sqlite_migrations": "Written by `sqlite_utils.Migrations`: which migrations this file has.",
}


def _fresh() -> sqlite3.Connection:
    from leaderboard.store import Leaderboard

    return Leaderboard(":memory:").conn


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def generate(conn: sqlite3.Connection | None = None) -> str:
    """The Markdown description of the schema (tables, columns, types, keys, indexes, views)."""
    from leaderboard.store import MIGRATION_NAMES, MIGRATION_SET

    conn = conn or _fresh()
    lines = [
        f"<!-- generated by `{REFRESH_COMMAND}` from leaderboard/migrations.py; do not edit -->",
        "",
        f"Migration set `{MIGRATION_SET}`, after "
        + ", ".join(f"`{name}`" for name in MIGRATION_NAMES)
        + ". JSON is stored as text in `*_json` columns.",
    ]
    tables = [
        name
        for (name,) in conn.execute(
            "select name from sqlite_master where type = 'table' and name not like 'sqlite_%' "
            "order by name = '_sqlite_migrations', rowid"
        )
    ]
    for table in tables:
        lines += ["", f"#### Table `{table}`", ""]
        if table in _NOTES:
            lines += [_NOTES[table], ""]
        pk = {
            name: position
            for name, position in conn.execute(
                "select name, pk from pragma_table_info(?) where pk > 0", [table]
            )
        }
        fks = {
            src: f"{other}.{dst}"
            for other, src, dst in conn.execute(
                'select "table", "from", "to" from pragma_foreign_key_list(?)', [table]
            )
        }
        lines += ["| column | type | constraints | holds |", "| --- | --- | --- | --- |"]
        described = DESCRIPTIONS.get(table, {})
        for name, kind, notnull, default in conn.execute(
            "select name, type, \"notnull\", dflt_value from pragma_table_info(?) order by cid", [table]
        ):
            constraints = []
            if name in pk:
                constraints.append("primary key" if len(pk) == 1 else f"primary key ({pk[name]})")
            if notnull:
                constraints.append("not null")
            if name in fks:
                constraints.append(f"→ `{fks[name]}`")
            if default is not None:
                constraints.append(f"default {default}")
            lines.append(
                f"| `{name}` | {kind or 'any'} | {', '.join(constraints)} | {_cell(described.get(name, ''))} |"
            )
        indexes = []
        for index, unique, origin in conn.execute(
            "select name, \"unique\", origin from pragma_index_list(?) order by name", [table]
        ):
            if origin == "pk":
                continue
            columns = [c for (c,) in conn.execute(
                "select name from pragma_index_info(?) order by seqno", [index]
            )]
            indexes.append(f"`{index}` ({', '.join(columns)}{', unique' if unique else ''})")
        if indexes:
            lines += ["", "Indexes: " + "; ".join(indexes) + "."]
    views = conn.execute(
        "select name, sql from sqlite_master where type = 'view' order by name"
    ).fetchall()
    for name, sql in views:
        lines += ["", f"#### View `{name}`", "", "```sql", sql.strip(), "```"]
    return "\n".join(lines) + "\n"


def replace_section(text: str, generated: str) -> str:
    """``text`` with what lies between the schema markers replaced by ``generated``."""
    if START not in text or END not in text or text.index(START) > text.index(END):
        raise ValueError(f"no {START} ... {END} section found")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{generated}{END}{tail}"


def section(text: str) -> str:
    """What lies between the schema markers of ``text`` (without the markers' own lines)."""
    if START not in text or END not in text:
        raise ValueError(f"no {START} ... {END} section found")
    inner = text.split(START, 1)[1].split(END, 1)[0]
    return inner[1:] if inner.startswith("\n") else inner


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m leaderboard.schema_doc", description=__doc__.splitlines()[0]
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", metavar="FILE", type=Path, help="replace the schema section of FILE")
    group.add_argument("--check", metavar="FILE", type=Path, help="exit 1 if FILE's schema section is stale")
    args = parser.parse_args(argv)
    generated = generate()
    if args.write is None and args.check is None:
        sys.stdout.write(generated)
        return 0
    target = args.write or args.check
    text = target.read_text(encoding="utf-8")
    try:
        current = section(text)
    except ValueError as exc:
        print(f"{target}: {exc}", file=sys.stderr)
        return 2
    if args.check is not None:
        if current != generated:
            print(f"{target}: the schema section is stale; refresh it with `{REFRESH_COMMAND}`", file=sys.stderr)
            return 1
        print(f"{target}: the schema section is up to date", file=sys.stderr)
        return 0
    if current != generated:
        target.write_text(replace_section(text, generated), encoding="utf-8")
        print(f"{target}: schema section rewritten", file=sys.stderr)
    else:
        print(f"{target}: schema section already up to date", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

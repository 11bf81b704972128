"""Generated bad input for every command that opens a database or plans a run: each is a clean exit 2.

The cases are generated from classes, not listed one by one: unusable database locations (a parent that
is a file, not a database, a directory, a name the filesystem refuses, a pseudo-filesystem, a directory
that cannot be written) for every command that opens a database; numbers the store or the machine cannot
hold (64-bit overflow for every int option of every registered component, run options past their range,
plans whose memory estimate exceeds the machine); bad values of the environment variables the harness
reads; run ids the OS would refuse as names. For each one the test requires exit code 2, an ``Error``
line, no traceback, and nothing written where the command was pointed. ``scripts/reliability.py``
counts the outcomes (clean errors, tracebacks, partial writes) for the docs.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from pathlib import Path

import pytest

import reliability
from conftest import TINY_RUN
from harness.options import INT64_MAX
from harness.plugins import load_registry

pytestmark = pytest.mark.bad_input

REGISTRY = load_registry([])
LONG = "x" * 300

#: Commands that open a database, each with the arguments it needs besides ``--db``; ``writes`` is whether
#: it writes to it (an unwritable directory only matters then).
COMMANDS = {
    "run": (["run", *TINY_RUN], True),
    "sweep": (["sweep", "--selector", "random,smallest", *TINY_RUN], True),
    "study run": (["study", "run", "yang2024", "--quick", "--dry-run"], False),
    "leaderboard": (["leaderboard"], False),
    "leaderboard compare": (["leaderboard", "compare"], False),
    "leaderboard show": (["leaderboard", "show", "r0"], False),
    "label status": (["label", "status", "r0"], False),
    "export preferences": (["export", "preferences", "r0", "--out", "out.jsonl"], False),
}

#: Database locations that cannot be used, made under a scratch directory: (name, path, what the message says).
LOCATIONS = [
    ("parent is a file", "afile/board.db", "afile"),
    ("not a database", "text.txt", "not a SQLite database"),
    ("a directory", "folder", "directory"),
    ("name too long", LONG + ".db", "limit"),
    ("parent name too long", LONG + "/board.db", "limit"),
    ("a pipe", "pipe", "not a regular file"),
    ("another program's database", "foreign.db", "did not create"),
    ("a newer schema", "newer.db", "newer pairsel-harness"),
]


def _scratch(root: Path) -> None:
    (root / "afile").write_text("")
    (root / "text.txt").write_text("not a database\n")
    (root / "folder").mkdir()
    os.mkfifo(root / "pipe")
    with sqlite3.connect(root / "foreign.db") as conn:
        conn.execute("create table runs (name text)")
    with sqlite3.connect(root / "newer.db") as conn:
        conn.execute("create table _sqlite_migrations (migration_set text, name text, applied_at text)")
        conn.execute("insert into _sqlite_migrations values ('pairsel_harness.leaderboard', 'm999_future', '')")


def _tree(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime for p in root.rglob("*")}


def _invoke(args, env=None):
    from typer.testing import CliRunner

    from harness.cli import build_app

    return CliRunner().invoke(build_app(), [str(a) for a in args], env=env, catch_exceptions=True)


def _check_clean(kind: str, result, root: Path, before: dict[str, float], said: str) -> None:
    """Exit 2 with the message, no traceback, nothing made or changed under ``root``; counted for the docs."""
    traceback = result.exception is not None and not isinstance(result.exception, SystemExit)
    partial = _tree(root) != before
    clean = result.exit_code == 2 and not traceback and not partial
    reliability.outcome(kind, clean=clean, traceback=traceback, partial=partial)
    output = " ".join(result.output.replace("│", " ").split())
    assert not traceback, f"traceback: {result.exception!r}\n{output}"
    assert result.exit_code == 2, output
    assert said.lower() in output.lower(), output
    assert not partial, f"left behind: {sorted(set(_tree(root)) ^ set(before))}"


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("case, where, said", LOCATIONS, ids=[c[0] for c in LOCATIONS])
def test_an_unusable_database_location(tmp_path, monkeypatch, command, case, where, said):
    monkeypatch.chdir(tmp_path)
    _scratch(tmp_path)
    before = _tree(tmp_path)
    args, _ = COMMANDS[command]
    result = _invoke([*args, "--db", tmp_path / where])
    _check_clean("database locations", result, tmp_path, before, said)


@pytest.mark.parametrize("command", sorted(name for name, (_, writes) in COMMANDS.items() if writes))
def test_a_directory_that_cannot_be_written(tmp_path, monkeypatch, command):
    """As root every directory is writable, so the refusal is simulated where the probe writes."""
    monkeypatch.chdir(tmp_path)

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    before = _tree(tmp_path)
    args, _ = COMMANDS[command]
    result = _invoke([*args, "--db", tmp_path / "ro" / "board.db"])
    _check_clean("database locations", result, tmp_path, before, "Permission denied")


@pytest.mark.parametrize("command", sorted(name for name, (_, writes) in COMMANDS.items() if writes))
def test_a_pseudo_filesystem(tmp_path, monkeypatch, command):
    if not os.path.isdir("/proc"):
        pytest.skip("no /proc on this machine")
    monkeypatch.chdir(tmp_path)
    before = _tree(tmp_path)
    args, _ = COMMANDS[command]
    result = _invoke([*args, "--db", "/proc/board.db"])
    _check_clean("database locations", result, tmp_path, before, "/proc")


def _int_options():
    for kind in ("selector", "allocator", "trainer", "testbed", "judge"):
        for name in sorted(REGISTRY.names(kind)):
            for option in REGISTRY.get(kind, name).cls.options:
                if option.type is int:
                    yield kind, name, option.name


@pytest.mark.parametrize("kind, name, option", list(_int_options()), ids=lambda v: str(v))
def test_every_int_option_past_64_bits_is_refused(kind, name, option):
    from harness.errors import UsageError

    for value in (INT64_MAX + 1, -(INT64_MAX + 1) - 1, 10**30):
        # refused by its declared range when it has one, else for not fitting the store's 64 bits
        with pytest.raises(UsageError, match="64-bit integer|must be in") as caught:
            REGISTRY.create(kind, name, {option: str(value)})
        assert option in str(caught.value)
        reliability.outcome("numbers the store cannot hold", clean=True, traceback=False, partial=False)


#: Plans whose numbers each fit their option but whose pool or world could not fit in memory.
HUGE_PLANS = [
    ("budget", ["--budget", "9000000000000", "--iterations", "1"], "memory"),
    ("responses", ["--responses", "1000000000", "--iterations", "1"], "memory"),
    ("keep", ["--keep", "1e-300", "--iterations", "1"], "memory"),
    ("evaluation prompts", ["-o", "testbed.eval_prompts=1000000000000", "--iterations", "1"], "memory"),
    ("SFT corpus", ["-o", "testbed.sft_samples=1000000000000", "--iterations", "1"], "memory"),
    ("run option past 64 bits", ["--budget", str(2**64)], "at most 2^63 - 1"),
    ("seed past 64 bits", ["--seed", str(10**30)], "64-bit"),
    ("iterations", ["--iterations", "100000"], "10000"),
]


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "run"])
@pytest.mark.parametrize("case, args, said", HUGE_PLANS, ids=[c[0] for c in HUGE_PLANS])
def test_a_plan_the_machine_cannot_hold(tmp_path, monkeypatch, case, args, said, dry_run):
    monkeypatch.chdir(tmp_path)
    before = _tree(tmp_path)
    result = _invoke(["run", *args, *(["--dry-run"] if dry_run else []), "--db", tmp_path / "board.db"])
    _check_clean("plans past the machine", result, tmp_path, before, said)


ENVIRONMENT = [
    ("HARNESS_DB_TIMEOUT", value, "HARNESS_DB_TIMEOUT") for value in ("abc", "-1", "nan", "inf", "1e999")
] + [
    ("HARNESS_MEMORY_LIMIT", value, "HARNESS_MEMORY_LIMIT") for value in ("lots", "0", "-5GiB", "12 parsecs")
]


@pytest.mark.parametrize("command, variable, value, said", [
    pytest.param(command, *case, id=f"{command}-{case[0]}={case[1]}")
    for command in ("run", "sweep", "leaderboard") for case in ENVIRONMENT
    if not (command == "leaderboard" and case[0] == "HARNESS_MEMORY_LIMIT")  # browsing plans nothing
])
def test_a_bad_environment_variable(tmp_path, monkeypatch, command, variable, value, said):
    monkeypatch.chdir(tmp_path)
    before = _tree(tmp_path)
    args, _ = COMMANDS[command]
    result = _invoke([*args, "--db", tmp_path / "board.db"], env={variable: value})
    _check_clean("environment variables", result, tmp_path, before, said)


@pytest.mark.parametrize("run_id", [LONG, "../../etc", "a/b", "", "r" * 65], ids=["long", "dotdot", "slash", "empty",
                                                                                 "65 characters"])
@pytest.mark.parametrize("command", ["resume", "leaderboard show", "label status", "export preferences"])
def test_a_run_id_the_os_would_refuse(tmp_path, monkeypatch, db_with_a_run, command, run_id):
    monkeypatch.chdir(tmp_path)
    args = {"resume": ["run", "--resume", run_id], "leaderboard show": ["leaderboard", "show", run_id],
            "label status": ["label", "status", run_id],
            "export preferences": ["export", "preferences", run_id, "--out", "out.jsonl"]}[command]
    before = _tree(tmp_path)
    result = _invoke([*args, "--db", db_with_a_run])
    _check_clean("run ids", result, tmp_path, before, run_id[:20] if run_id else "run")


@pytest.fixture(scope="module")
def db_with_a_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("board") / "board.db"
    result = _invoke(["run", *TINY_RUN, "--db", path])
    assert result.exit_code == 0, result.output
    return path

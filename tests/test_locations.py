"""A database or runs directory that cannot be used is a clean exit 2 naming the path, with nothing made."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from conftest import TINY_RUN
from harness.errors import UsageError
from harness.experiments.locations import check_locations


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("command", ["run", "sweep"])
@pytest.mark.parametrize("where, problem", [
    ("afile/board.db", "afile is a file, not a directory"),
    ("text.txt", "is not a SQLite database"),
    ("x" * 300 + ".db", "over the filesystem's limit"),
    ("board.db/", "is a directory"),
])
def test_an_unusable_database_location_exits_2_and_makes_nothing(cli, tmp_path, command, where, problem):
    (tmp_path / "afile").write_text("")
    (tmp_path / "text.txt").write_text("not a database\n")
    (tmp_path / "board.db").mkdir()
    before = _tree(tmp_path)
    result = cli(command, *TINY_RUN, "--db", tmp_path / where.rstrip("/"))
    assert result.exit_code == 2, result.output
    assert problem in " ".join(result.output.replace("│", " ").split())
    assert "Traceback" not in result.output
    assert _tree(tmp_path) == before  # nothing partial: no database, no runs directory, no probe left


def test_a_directory_that_cannot_be_written_is_named(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    with pytest.raises(UsageError, match=f"cannot be written: {tmp_path}: Permission denied"):
        check_locations(tmp_path / "board.db", tmp_path / "runs")


def test_a_pseudo_filesystem_is_refused():
    if not os.path.isdir("/proc"):
        pytest.skip("no /proc on this machine")
    with pytest.raises(UsageError, match="cannot be written: /proc"):
        check_locations(Path("/proc/board.db"), Path("/proc/runs"))


def test_a_good_location_passes_and_leaves_nothing(tmp_path):
    check_locations(tmp_path / "new" / "board.db", tmp_path / "new" / "runs")
    assert _tree(tmp_path) == set()

"""Shared fixtures: an isolated leaderboard and world cache per test session, one torch thread."""

import os

import pytest

# A world small enough to build in about a second: the real code paths, tiny sizes.
TINY_TESTBED = [
    "testbed.sft_samples=2000",
    "testbed.sft_epochs=1",
    "testbed.seed_prompts=40",
    "testbed.pi0_epochs=2",
    "testbed.eval_prompts=100",
]
TINY_RUN = ["--iterations", "2", "--budget", "80", "-o", "trainer.epochs=2", *sum((["-o", o] for o in TINY_TESTBED), [])]


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    os.environ["HARNESS_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    yield


@pytest.fixture
def db_path(tmp_path, monkeypatch):
    path = tmp_path / "board.db"
    monkeypatch.setenv("HARNESS_DB", str(path))
    return path


@pytest.fixture(scope="session")
def cli():
    """Invoke the harness CLI in-process; returns the click Result."""
    from typer.testing import CliRunner

    from harness.cli import build_app

    app = build_app()
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)

    return invoke


def pytest_sessionfinish(session, exitstatus):
    """Write the reliability tally (tests/reliability.py) when $HARNESS_RELIABILITY_OUT asks for it."""
    import reliability

    reliability.write()

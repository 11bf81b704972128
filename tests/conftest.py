"""Shared fixtures: an isolated leaderboard and world cache per test session, one torch thread.

Entry-point plugins are off for the whole session (:func:`pytest_configure`). Hugging Face is offline for
every test (``HF_HUB_OFFLINE``, ``TRANSFORMERS_OFFLINE``, ``HF_DATASETS_OFFLINE``) with an empty cache of
the session's own (``HF_HOME``, ``HF_HUB_CACHE``).
"""

import atexit
import os
import shutil
import tempfile

import pytest

# Offline for every test, before anything imports huggingface_hub (which reads these once): nothing may reach the
# Hub. The Hugging Face cache is an empty folder of the session's own, so a model the user has cached changes no
# test; a test that needs a cached model lays one out in a cache of its own (tests/test_hf_hub_ids.py).
for _name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ[_name] = "1"
_HF_HOME = tempfile.mkdtemp(prefix="pairsel-hf-home-")
atexit.register(shutil.rmtree, _HF_HOME, ignore_errors=True)
os.environ["HF_HOME"] = _HF_HOME
os.environ["HF_HUB_CACHE"] = os.path.join(_HF_HOME, "hub")
os.environ.pop("HUGGINGFACE_HUB_CACHE", None)

#: The variable that selects entry-point plugins (harness.plugins); "" loads none.
LOAD_PLUGINS = "HARNESS_LOAD_PLUGINS"
_before_session: list[str | None] = []  # its value before the session, restored after it


def pytest_configure(config):
    """Switch entry-point plugins off for the session, so that installed third-party plugins change nothing.

    With ``HARNESS_LOAD_PLUGINS`` set to the empty string the host loads no
    entry point; the built-ins are registered on their own
    (``harness.plugins.DEFAULT_PLUGINS``) and load as always, and so do the
    ``--plugin`` files tests pass. It is set in the environment, so the
    processes tests start (``harness`` subprocesses, sweep and multi-process
    workers) see the same registry as the test itself. A test of entry-point
    loading switches it back on for itself: ``monkeypatch.delenv(LOAD_PLUGINS)``
    in-process, or an environment without it for a subprocess.
    """
    _before_session.append(os.environ.get(LOAD_PLUGINS))
    os.environ[LOAD_PLUGINS] = ""


def pytest_unconfigure(config):
    if not _before_session:
        return
    before = _before_session.pop()
    if before is None:
        os.environ.pop(LOAD_PLUGINS, None)
    else:
        os.environ[LOAD_PLUGINS] = before


def pytest_report_header(config):
    return f"harness: entry-point plugins are off for this session ({LOAD_PLUGINS}='')"


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

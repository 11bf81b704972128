"""Headless Chromium for the browser tests: render a page after its scripts ran, or take a screenshot.

Chromium is Debian's package (``apt-get install chromium``; ``.ci/run`` installs it). Where it is absent the
browser tests skip and say so (:func:`require_chromium`). Chromium runs with a fresh profile and with its
background networking off: this machine's network is closed, and the pages under test are on localhost or
on disk.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

#: Where Debian puts it; $HARNESS_CHROMIUM overrides.
CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
FLAGS = (
    "--headless",
    "--no-sandbox",  # the tests may run as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def chromium_path() -> str | None:
    override = os.environ.get("HARNESS_CHROMIUM")
    if override:
        return override
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def require_chromium() -> str:
    """The Chromium executable, or skip the calling test naming what to install."""
    path = chromium_path()
    if path is None:
        pytest.skip("headless Chromium not found: apt-get install chromium (Debian), or set $HARNESS_CHROMIUM")
    return path


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="pairsel-chromium-") as profile:
        command = [require_chromium(), *FLAGS, f"--user-data-dir={profile}", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


def dump_dom(url: str, *, timeout: float = 60.0, budget_ms: int = 5000) -> str:
    """The page's DOM as Chromium serialises it once the page has loaded and its scripts have run."""
    result = _run([f"--virtual-time-budget={budget_ms}", "--dump-dom", url], timeout)
    if result.returncode != 0 or "<html" not in result.stdout:
        raise AssertionError(f"chromium could not render {url} (exit {result.returncode}): {result.stderr[-2000:]}")
    return result.stdout


def screenshot(url: str, out: Path, *, width: int = 1280, height: int = 900, timeout: float = 60.0) -> Path:
    """A PNG of the page at the given window size."""
    out = Path(out)
    result = _run([f"--window-size={width},{height}", f"--screenshot={out}", "--virtual-time-budget=5000", url], timeout)
    if result.returncode != 0 or not out.is_file() or out.stat().st_size == 0:
        raise AssertionError(f"chromium took no screenshot of {url} (exit {result.returncode}): {result.stderr[-2000:]}")
    return out

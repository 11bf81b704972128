"""The wheel holds exactly the three top-level packages, plus the console script and metadata."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_contains_exactly_harness_plugins_leaderboard(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(tmp_path), str(ROOT)],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("pairsel_harness-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == {"harness", "plugins", "leaderboard"}
    assert not any(name.startswith("tests/") for name in names)
    assert "plugins/testbeds/synthetic/world.py" in names  # subpackages are included
    assert "plugins/studies/yang2024.toml" in names  # and the built-in study plans
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "harness = harness.cli:main" in text

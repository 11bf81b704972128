"""`harness --help` and the leaderboard commands start without importing heavy libraries."""

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "trl", "datasets", "numpy", "scipy", "pandas")  # scipy: study code only

PROBE = """
import json, sys
from harness.cli import main
args, heavy_names = json.loads(sys.argv[1]), json.loads(sys.argv[2])
sys.argv = ["harness", *args]
try:
    main()
except SystemExit:
    pass
loaded = sorted({m.split(".")[0] for m in sys.modules} & set(heavy_names))
print("HEAVY=" + json.dumps(loaded), file=sys.stderr)
"""

@pytest.mark.parametrize(
    "args, allowed",
    [
        (["--help"], {"numpy"}),
        (["leaderboard", "--help"], {"numpy"}),
        (["leaderboard"], {"numpy"}),
        (["run", "--help"], {"numpy"}),
        (["plugins", "--all"], {"numpy"}),
        (["list", "selectors"], {"numpy"}),
        (["leaderboard", "compare", "--baseline", "random"], {"numpy"}),
        (["study", "--help"], {"numpy"}),
    ],
)
def test_no_heavy_imports(args, allowed, tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args), json.dumps(HEAVY)],
        capture_output=True, text=True, cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HARNESS_DB": str(tmp_path / "none.db"), "HARNESS_LOAD_PLUGINS": ""},
    )
    line = [l for l in result.stderr.splitlines() if l.startswith("HEAVY=")]
    assert line, result.stderr
    heavy = set(json.loads(line[-1][len("HEAVY="):]))
    assert not heavy - allowed, f"`harness {' '.join(args)}` imported {sorted(heavy - allowed)}"
    assert not (tmp_path / "none.db").exists(), "browsing must not create a database"

"""The reliability figures of the docs, measured: run the fault and bad-input tests and count.

    python scripts/reliability.py                                     # prints the Markdown
    python scripts/reliability.py --write docs/results/reliability.md # and puts it between the page's markers

It runs ``pytest -m "fault or bad_input"`` (the tests that inject a fault into
a run or feed malformed input), which report what they tried through
``tests/reliability.py``, and prints: every fault injected with the leaderboard
rows the run should have kept and did keep, the bad inputs tried by kind, and
the rows lost (expected minus kept, summed), and for the generated bad input
(``tests/test_bad_input_generator.py``) how many ended in a clean exit 2, in a
traceback, or with files left behind. Exit code: pytest's, or 1 if any row was
lost or any generated input did not end cleanly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from a checkout: the harness's own modules

from harness import markers  # noqa: E402

PAGE = "docs/results/reliability.md"
START, END = markers.markers("reliability")


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path, metavar="FILE", help=f"replace the section between the markers in FILE ({PAGE})")
    args = parser.parse_args(argv)
    lines: list[str] = []
    code = _measure(lines)
    text = "\n".join(lines)
    print(text)
    if args.write is not None and code == 0:
        return markers.refresh(args.write, START, END, text, check=False,
                               command=f"python scripts/reliability.py --write {PAGE}")
    return code


def _measure(lines: list[str]) -> int:
    print = lines.append  # noqa: A001 - collect the Markdown instead of printing it line by line
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "reliability.json"
        env = dict(os.environ, HARNESS_RELIABILITY_OUT=str(out))
        start = time.monotonic()
        tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m",
                                "fault or bad_input"], cwd=ROOT, env=env, capture_output=True, text=True)
        seconds = time.monotonic() - start
        summary = tests.stdout.strip().splitlines()[-1:] or ["(no output)"]
        if not out.exists():
            print(tests.stdout[-3000:] + "\n" + tests.stderr[-3000:])
            return tests.returncode or 1
        counts = json.loads(out.read_text())
    faults, bad = counts["faults"], counts["bad_inputs"]
    lost = sum(f["expected_rows"] - f["recorded_rows"] for f in faults)
    print(f"`python scripts/reliability.py`: {summary[0]} ({seconds:.0f} s)\n")
    print("| fault injected | leaderboard rows expected | kept |")
    print("| --- | --- | --- |")
    for item in faults:
        print(f"| {item['fault']} | {item['expected_rows']} | {item['recorded_rows']} |")
    print(f"\n**{len(faults)} faults injected; rows lost: {lost}.**\n")
    print("| bad input | tried |")
    print("| --- | --- |")
    for kind, n in sorted(bad.items()):
        print(f"| {kind} | {n:,} |")
    print(f"\n**{sum(bad.values()):,} bad inputs tried, each answered with a valid result or a typed error.**\n")
    outcomes = counts.get("outcomes", {})
    print("Generated bad input (`tests/test_bad_input_generator.py`), each expected to end in a clean exit 2 "
          "with nothing written:\n")
    print("| class | tried | clean exit 2 | tracebacks | partial writes |")
    print("| --- | --- | --- | --- | --- |")
    for kind, row in sorted(outcomes.items()):
        print(f"| {kind} | {row['tried']:,} | {row['clean']:,} | {row['traceback']} | {row['partial']} |")
    total = {key: sum(row[key] for row in outcomes.values()) for key in ("tried", "clean", "traceback", "partial")}
    print(f"\n**{total['tried']:,} generated bad inputs: {total['clean']:,} clean errors, {total['traceback']} "
          f"tracebacks, {total['partial']} partial writes.**")
    if tests.returncode != 0:
        print(tests.stdout[-3000:])
    failed = lost or total["traceback"] or total["partial"] or total["clean"] != total["tried"]
    return tests.returncode or (1 if failed else 0)


if __name__ == "__main__":
    raise SystemExit(main())

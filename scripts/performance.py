"""The performance table of the docs, measured: run the four benchmarks and tabulate what they print.

    python scripts/performance.py                                      # prints the Markdown
    python scripts/performance.py --write docs/results/performance.md  # and puts it between the page's markers

It runs, one after the other and on one torch thread, ``benchmarks/bench_cli_startup.py``
(10 repeats; beside the core alone, ``--python .venv-minimal/bin/python``, when .ci/run-minimal has
made that venv: ``--core-python`` names another), ``benchmarks/bench_overhead.py``,
``benchmarks/bench_selection.py`` and ``benchmarks/bench_synthetic_stages.py``, reads the figures from their output, and prints
one table row per benchmark with its target. The machine's load average before and after
is printed with the table: a busy machine makes every figure worse. It takes a few
minutes. Exit code: 1 if a benchmark failed or printed something this script cannot read.
"""

from __future__ import annotations

import datetime
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from a checkout: the harness's own modules

from harness import markers  # noqa: E402

PAGE = "docs/results/performance.md"
START, END = markers.markers("performance")
COMMAND = f"python scripts/performance.py --write {PAGE}"

#: The core-only interpreter .ci/run-minimal makes; bench_cli_startup.py times it beside this one when it exists.
CORE_PYTHON = ROOT / ".venv-minimal" / "bin" / "python"

#: (script, its arguments) in the order of the table.
BENCHMARKS = (
    ("bench_cli_startup.py", ["--repeats", "10"]),
    ("bench_overhead.py", []),
    ("bench_selection.py", []),
    ("bench_synthetic_stages.py", []),
)


class UnreadableOutput(ValueError):
    """A benchmark printed something this script cannot read (its output format changed)."""


def _find(pattern: str, text: str, what: str) -> re.Match[str]:
    match = re.search(pattern, text, re.M)
    if match is None:
        raise UnreadableOutput(f"cannot find {what} in the output:\n{text}")
    return match


def cli_row(output: str) -> str:
    """The row of ``benchmarks/bench_cli_startup.py``: ``harness --help`` and ``harness leaderboard`` on 10 and on
    10,000 runs, every extra installed, and beside them the core alone when the benchmark timed it (``--python``)."""
    repeats = int(_find(r"^median of (\d+) runs each", output, "the number of runs").group(1))
    names = ("harness --help", "harness leaderboard --db <10 runs>", "harness leaderboard --db <10,000 runs>")
    cells = []
    for name in names:
        match = _find(rf"^\s+{re.escape(name)}\s+([\d.]+) ms\s.*ratio\s+([\d.]+)\s*$", output, name)
        cells.append((float(match.group(1)) / 1000, float(match.group(2))))
    seconds = " / ".join(f"{s:.3f} s" for s, _ in cells)
    ratios = " / ".join(f"{x:.1f}×" for _, x in cells)
    core = ""
    if re.search(r"^side by side:", output, re.M):
        alone = [float(_find(rf"^\s+{re.escape(name)}\s+[\d.]+ ms /\s+([\d.]+) ms\s+core/every", output,
                             f"{name}, core alone").group(1)) / 1000 for name in names]
        core = f"; the core alone: {' / '.join(f'{s:.3f} s' for s in alone)}"
    return (f"| `benchmarks/bench_cli_startup.py`: `harness --help` / `harness leaderboard` on 10 / on 10,000 runs, "
            f"every extra installed (median of {repeats}) | {seconds} ({ratios} a bare `python -c pass`){core} | "
            "`--help` < 0.4 s, 10,000 runs < 1 s; importing neither torch, transformers, scipy nor pandas |")


def overhead_row(output: str) -> str:
    """The row of ``benchmarks/bench_overhead.py``: a default run's wall time and the share outside model compute."""
    wall = float(_find(r"^\s+run wall time\s+([\d.]+) s", output, "the run wall time").group(1))
    overhead = _find(r"^\s+overhead \(outside model\)\s+([\d.]+) s = ([\d.]+)%", output, "the overhead")
    startup = float(_find(r"^\s+start-up and imports\s+([\d.]+) s", output, "the start-up time").group(1))
    labels = re.search(r"\blabels ([\d.]+)s\b", output)
    kept = f", {float(labels.group(1)):.2f} s of it keeping the labels with their texts" if labels else ""
    return (f"| `benchmarks/bench_overhead.py`: default `harness run`, world cached | {wall:.2f} s wall, of which "
            f"{float(overhead.group(1)):.2f} s ({float(overhead.group(2)):.2f}%) is outside model compute{kept}; "
            f"start-up and imports take another {startup:.1f} s | overhead < 5% |")


def selection_row(output: str) -> str:
    """The row of ``benchmarks/bench_selection.py``: smallest-margin selection over 100,000 prompts."""
    head = _find(r"^smallest selection, ([\d,]+) prompts x (\d+) responses \((\d+) pairs each\)", output, "its size")
    total = float(_find(r"^\s+instance\+corpus\s+([\d.]+) s", output, "the total time").group(1))
    return (f"| `benchmarks/bench_selection.py`: smallest, {head.group(1)} prompts × {head.group(2)} responses, "
            f"all {head.group(3)} pairs | {total:.3f} s for instance + corpus level | < 1 s |")


def stages_row(output: str) -> str:
    """The row of ``benchmarks/bench_synthetic_stages.py``: the stages of one synthetic iteration."""
    def seconds(name: str) -> float:
        return float(_find(rf"^\s+{re.escape(name)}\s+([\d.]+) s", output, name).group(1))

    return ("| `benchmarks/bench_synthetic_stages.py`: one synthetic iteration | "
            f"sample {seconds('sample'):.2f} s, log-probs {seconds('log-probs (policy + reference)'):.2f} s, "
            f"DPO {seconds('DPO (native trainer)'):.2f} s, evaluate {seconds('evaluate'):.2f} s; world build "
            f"{seconds('build world (fresh)'):.1f} s (then cached, loads in "
            f"{seconds('load world (cache)') * 1000:.0f} ms) | — |")


ROWS = {"bench_cli_startup.py": cli_row, "bench_overhead.py": overhead_row,
        "bench_selection.py": selection_row, "bench_synthetic_stages.py": stages_row}


def table(outputs: dict[str, str], *, when: str, machine: str) -> str:
    """The Markdown section from the benchmarks' outputs (script name -> stdout)."""
    lines = [f"<!-- generated by `{COMMAND}`; do not edit -->", "",
             f"Measured by `python scripts/performance.py` on {when}; {machine}.", "",
             "| benchmark | measured | target |", "| --- | --- | --- |"]
    lines += [ROWS[script](outputs[script]) for script, _ in BENCHMARKS]
    return "\n".join(lines) + "\n"


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path, metavar="FILE", help=f"replace the section between the markers in FILE ({PAGE})")
    parser.add_argument("--core-python", type=Path, metavar="PYTHON", default=CORE_PYTHON,
                        help="an interpreter with the core alone, timed beside this one by bench_cli_startup.py "
                             f"(default {CORE_PYTHON.relative_to(ROOT)}, which .ci/run-minimal makes, if it exists)")
    args = parser.parse_args(argv)
    env = {**os.environ, "HARNESS_THREADS": "1", "PYTHONPATH": str(ROOT)}
    before = _load()
    outputs = {}
    for script, extra in BENCHMARKS:
        print(f"running benchmarks/{script} ...", file=sys.stderr)
        if script == "bench_cli_startup.py" and args.core_python is not None and args.core_python.exists():
            extra = [*extra, "--python", str(args.core_python)]
        done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *extra], cwd=ROOT, env=env,
                              capture_output=True, text=True)
        if done.returncode != 0:
            print(f"benchmarks/{script} exited {done.returncode}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}",
                  file=sys.stderr)
            return 1
        outputs[script] = done.stdout
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    machine = (f"{os.cpu_count()} CPUs ({platform.machine()}), Python {platform.python_version()}, one torch thread, "
               f"load average {before} before and {_load()} after (1/5/15 min)")
    try:
        text = table(outputs, when=when, machine=machine)
    except UnreadableOutput as exc:
        print(f"a benchmark's output changed: {exc}", file=sys.stderr)
        return 1
    print(text)
    if args.write is not None:
        return markers.refresh(args.write, START, END, text, check=False, command=COMMAND)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A response-surface design over the budget schedule: pilot, power calculation, confirmation, fit.

Spreads the runs of one world, budget and selector over a {K, 2} simplex-lattice
of schedules plus the centroid (harness/experiments/schedule_design.py), each
point a ``custom`` allocator's weights, every point on every seed:

1. a pilot on exploration seeds (``--pilot-seeds``) measures the spread of a
   paired difference between two points and the seconds per run;
2. the power calculation is printed: the seeds needed to detect ``--effect``
   in ``--metric`` between two points with 80% power, and their CPU cost. A
   confirmation that would need more than 2 hours of CPU stops here with
   exit 2, unless ``--underpowered-ok`` (it then runs the seeds that fit, and
   the result says "underpowered");
3. the confirmation runs on fresh seeds from ``--seeds-from``;
4. the Scheffé quadratic is fitted per seed and summarised over seeds (JSON to ``--out``).

Runs go through ``harness sweep`` into the leaderboard ``--db``, so an
interrupted design resumes where it stopped and every run keeps its provenance.

    python scripts/schedule_design.py --world staircase --budget 3000 --effect 0.1 \\
        --pilot-seeds 0-4 --seeds-from 5000 --jobs 2 --db design.db --out design.json --report design.md
    python scripts/schedule_design.py render design.json design.md   # the report again, from the JSON
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.errors import UsageError  # noqa: E402
from harness.experiments import schedule_design as sd  # noqa: E402
from harness.experiments.sweep import format_seeds, parse_seeds  # noqa: E402


def sweep_command(args, points, seeds: list[int]) -> list[str]:
    command = [sys.executable, "-m", "harness", "sweep", "--selector", args.selector, "--allocator", "custom",
               "-o", "allocator.weights=" + "|".join(p.weights for p in points),
               "-o", f"testbed.world={args.world}", "--iterations", str(args.iterations),
               "--budget", str(args.budget), "--seeds", format_seeds(seeds), "--jobs", str(args.jobs),
               "--db", str(args.db)]
    for option in args.option:
        command += ["-o", option]
    return command


def sweep(args, points, seeds: list[int]) -> dict[str, str]:
    """Every point on every seed, through ``harness sweep`` (runs already in the database are reused).

    Returns the config hash of each point's cell (from the sweep's own plan), so that only this design's
    runs are read back, whatever else the database holds.
    """
    command = sweep_command(args, points, seeds)
    planned = subprocess.run([*command, "--dry-run", "--json"], capture_output=True, text=True)
    if planned.returncode != 0:
        raise SystemExit(f"harness sweep refused the design (exit {planned.returncode}):\n{planned.stderr[-2000:]}")
    by_labels = {p.labels: p.name for p in points}
    hashes = {}
    for item in json.loads(planned.stdout)["plan"]:
        labels = tuple(int(float(x)) for x in item["cell"].split("=", 1)[1].split(":"))
        hashes[item["config_hash"]] = by_labels[labels]
    print("$ " + " ".join(command), flush=True)
    done = subprocess.run(command)
    if done.returncode != 0:
        raise SystemExit(f"harness sweep stopped with exit {done.returncode}")
    return hashes


def responses(args, hashes: dict[str, str], seeds: list[int]) -> tuple[dict[int, dict[str, float]], list[float]]:
    """``values[seed][point]`` of ``--metric`` from this design's finished runs, and their wall seconds."""
    values: dict[int, dict[str, float]] = {}
    seconds = []
    with sqlite3.connect(args.db) as conn:
        rows = conn.execute(f"select seed, config_hash, {args.metric}, wall_seconds from runs "
                            "where status = 'finished'").fetchall()
    for seed, config_hash, value, wall in rows:
        if seed in seeds and config_hash in hashes and value is not None:
            values.setdefault(seed, {})[hashes[config_hash]] = float(value)
            seconds.append(float(wall))
    return values, seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", default="staircase", choices=("bigram", "staircase"))
    parser.add_argument("--budget", type=int, default=3000)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--selector", default="smallest")
    parser.add_argument("--floor", type=float, default=0.1, help="the smallest share of the total an iteration gets")
    parser.add_argument("--metric", default="final_gold_reward", choices=("final_gold_reward", "final_win_rate"))
    parser.add_argument("--effect", type=float, required=True,
                        help="the smallest difference in --metric between two points worth detecting")
    parser.add_argument("--pilot-seeds", default="0-4", help="exploration seeds that measure the spread")
    parser.add_argument("--seeds-from", type=int, required=True, help="the first confirmation seed (fresh seeds)")
    parser.add_argument("--max-seeds", type=int, default=None, help="never run more confirmation seeds than this")
    parser.add_argument("--underpowered-ok", action="store_true",
                        help="run a confirmation that needs more than 2 h of CPU on the seeds that fit")
    parser.add_argument("--pilot-only", action="store_true", help="stop after the power calculation")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("-o", "--option", action="append", default=[], help="another run option (tiny worlds)")
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--report", type=Path, default=None, help="also write a markdown report here")
    args = parser.parse_args(argv)

    from harness.provenance import command_line, git_commit, library_versions

    try:
        points = sd.mixture_design(args.budget, args.iterations, floor=args.floor)
        pilot_seeds = parse_seeds(args.pilot_seeds)
        started = time.perf_counter()
        print("design points: " + "; ".join(f"{p.name} {p.weights}" for p in points), flush=True)
        hashes = sweep(args, points, pilot_seeds)
        pilot, seconds = responses(args, hashes, pilot_seeds)
        spread = sd.pilot_spread(points, pilot)
        per_run = sum(seconds) / len(seconds)
        for line in sd.power_lines(effect=args.effect, sd=spread, metric=args.metric, points=len(points),
                                   seconds_per_run=per_run):
            print(line, flush=True)
        # a pilot alone never refuses: it is what a user looks at before deciding on the confirmation
        check = sd.cost_check(effect=args.effect, sd=spread, points=len(points), seconds_per_run=per_run,
                              underpowered_ok=args.underpowered_ok or args.pilot_only, cap_seeds=args.max_seeds)
    except UsageError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    if check.underpowered and not args.pilot_only:
        print(check.lines(args.effect, spread, args.metric)[-1], flush=True)
    result = {
        "command": command_line(), "git_commit": git_commit(), "versions": library_versions(),
        "world": args.world, "budget": args.budget, "iterations": args.iterations, "selector": args.selector,
        "floor": args.floor, "metric": args.metric, "effect": args.effect, "options": args.option,
        "points": [{"name": p.name, "z": p.z, "labels": p.labels} for p in points],
        "pilot": {"seeds": pilot_seeds, "spread": spread, "seconds_per_run": per_run, "fit": None},
        "power": {"seeds_needed": check.seeds_needed, "seeds_run": check.seeds_run,
                  "cpu_seconds_needed": check.cpu_seconds_needed, "underpowered": check.underpowered,
                  "power_run": check.power_run, "target": sd.POWER, "alpha": sd.ALPHA,
                  "cpu_limit_seconds": sd.CPU_LIMIT_SECONDS},
        "confirmation": None,
    }
    result["pilot"]["fit"] = sd.fit_design(points, pilot)
    if not args.pilot_only:
        seeds = list(range(args.seeds_from, args.seeds_from + check.seeds_run))
        if set(seeds) & set(pilot_seeds):
            print("Error: the confirmation seeds overlap the pilot's; start them elsewhere with --seeds-from",
                  file=sys.stderr)
            return 2
        hashes = sweep(args, points, seeds)
        values, _ = responses(args, hashes, seeds)
        result["confirmation"] = {"seeds": seeds, "fit": sd.fit_design(points, values),
                                  "underpowered": check.underpowered}
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    partial = args.out.with_suffix(args.out.suffix + ".partial")
    partial.write_text(json.dumps(result, indent=1, allow_nan=True))
    partial.replace(args.out)
    fit = (result["confirmation"] or result["pilot"])["fit"]
    label = "confirmation" if result["confirmation"] else "pilot (exploration seeds: not a verdict)"
    underpowered = check.underpowered and result["confirmation"] is not None
    print(f"{label}: {len(fit['seeds'])} seeds" + (" · UNDERPOWERED" if underpowered else ""))
    for name, term in fit["terms"].items():
        extra = f" · Holm p {term['p_holm']:.4f}" if "p_holm" in term and term["p_holm"] is not None else ""
        low, high = term["ci_low"], term["ci_high"]
        interval = "–" if low is None else f"[{low:+.3f}, {high:+.3f}]"
        print(f"  {name}: {term['mean']:+.3f} {interval}{extra}")
    print(f"  optimum shares {fit['optimum']['shares']}, gain over the centroid "
          f"{fit['optimum']['gain_over_centroid']['mean']:+.3f} (chosen on these seeds: optimistic)")
    print(f"written {args.out}")
    if args.report is not None:
        write_report(result, args.report)
    return 0


def write_report(result: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(sd.report_lines(result)))
    print(f"written {path}")


def render(argv: list[str]) -> int:
    """``render RESULT.json REPORT.md``: the markdown report of a finished design, without running anything."""
    if len(argv) != 2:
        print("usage: schedule_design.py render RESULT.json REPORT.md", file=sys.stderr)
        return 2
    write_report(json.loads(Path(argv[0]).read_text()), Path(argv[1]))
    return 0


if __name__ == "__main__":
    raise SystemExit(render(sys.argv[2:]) if sys.argv[1:2] == ["render"] else main())

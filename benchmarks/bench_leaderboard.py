"""The leaderboard commands on a large database: 10,000 finished runs, 3 iterations each.

Builds a database with realistic rows (every column a real run writes: the
config JSON, plugins, versions, timings, 4 iteration rows of 36 metrics) for
96 strategies (4 x 4 selector pairs, 3 allocators, 2 trainer betas) on about
105 seeds each, inserting in bulk in one transaction. Then times, as fresh
subprocesses interleaved, the median of --repeats runs of:

* ``harness leaderboard``                     (grouped by strategy)
* ``harness leaderboard --by run --limit 50`` (one row per run)
* ``harness leaderboard compare --baseline random``

and prints seconds, the ratio to the 1 s target, and the load average before
and after (the machine is shared: compare only ratios from one run).
``python -c pass`` and ``harness --help`` are timed alongside as the floor.

    .venv/bin/python benchmarks/bench_leaderboard.py [--runs 10000] [--repeats 5] [--keep DB]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import load_average, time_once

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TARGET_SECONDS = 1.0
SELECTORS = ("smallest", "random", "largest", "normalized")
ALLOCATORS = ("constant", "increase", "decrease")
BETAS = (1.0, 0.5)
TESTBED_SETTINGS = {
    "vocab_size": 32, "prompt_length": 6, "max_response_length": 12, "eos_logit_base": 1.0,
    "eos_logit_slope": 0.5, "transition_scale": 2.0, "prompt_bias_scale": 0.6, "gold_alignment": 0.3,
    "gold_prompt_scale": 1.0, "gold_token_scale": 0.5, "tau": 0.3, "embedding_dim": 32, "hidden_dim": 64,
    "sft_samples": 60000, "sft_epochs": 2, "sft_lr": 0.003, "sft_batch": 256, "seed_prompts": 500,
    "pi0_beta": 1.0, "pi0_lr": 0.003, "pi0_batch": 64, "pi0_epochs": 8, "eval_prompts": 1000,
    "eval_samples": 2, "reference_best_of": 4,
}
ITERATION_METRICS = (
    "win_rate", "win_rate_se", "gold_reward", "kl", "kl_se", "mean_length", "greedy_win_rate",
    "reference_gold_reward", "labels", "labels_planned", "prompts", "instance_pairs",
    "duplicate_share", "sel_pairs", "sel_mean_abs_margin", "sel_beta_margin_q10",
    "sel_beta_margin_q50", "sel_beta_margin_q90", "sel_mean_dpo_weight", "sel_ranking_accuracy",
    "sel_label_noise", "sel_selected_kl", "train_steps", "train_epochs", "loss_first", "loss_last",
    "time_annotate", "time_evaluate", "time_logprobs", "time_prompts", "time_sample", "time_select",
    "time_setup", "time_train",
)
TIMES = ("time_annotate", "time_evaluate", "time_logprobs", "time_prompts", "time_sample",
         "time_select", "time_setup", "time_train")
EFFECT = {"smallest": 0.12, "normalized": 0.1, "random": 0.0, "largest": -0.06}



def strategies() -> list[dict]:
    out = []
    for instance in SELECTORS:
        for corpus in SELECTORS:
            for allocator in ALLOCATORS:
                for beta in BETAS:
                    settings = {} if instance == "random" else {"normalize": instance == "normalized"}
                    corpus_settings = {} if corpus == "random" else {"normalize": corpus == "normalized"}
                    config = {
                        "testbed": {"name": "synthetic", "settings": TESTBED_SETTINGS},
                        "instance_selector": {"name": instance, "settings": settings},
                        "corpus_selector": {"name": corpus, "settings": corpus_settings},
                        "allocator": {"name": allocator, "settings": {}},
                        "trainer": {"name": "native", "settings": {
                            "beta": beta, "lr": 0.003, "epochs": 8, "steps": 0, "batch_size": 64}},
                        "iterations": 3, "budget": 3000, "keep": 0.5, "n_responses": 8,
                    }
                    blob = json.dumps(config, sort_keys=True)
                    out.append({
                        "config": config,
                        "hash": hashlib.sha256(blob.encode()).hexdigest()[:16],
                        "instance": instance, "corpus": corpus, "allocator": allocator,
                        "effect": (EFFECT[instance] + EFFECT[corpus]) / 2 - (0.03 if beta == 0.5 else 0.0),
                    })
    return out


def record(strategy: dict, seed: int) -> dict:
    """The start_run record of one run (what harness/experiments/runner.py writes)."""
    return {
        "config": {**strategy["config"], "seed": seed, "world_seed": seed},
        "config_hash": strategy["hash"], "seed": seed, "world_seed": seed, "testbed": "synthetic",
        "instance_selector": strategy["instance"], "corpus_selector": strategy["corpus"],
        "allocator": strategy["allocator"], "trainer": "native", "scorer_columns": "implicit_reward",
        "plugins": {role: {"name": strategy["config"][role]["name"], "plugin": f"plugins.{role}",
                           "version": "0.1.0"}
                    for role in ("testbed", "instance_selector", "corpus_selector", "allocator", "trainer")},
        "versions": {"python": "3.11.7", "pairsel-harness": "0.1.0", "numpy": "2.4.6",
                     "torch": "2.13.0+cpu", "sqlite-utils": "4.2.1"},
        "git_commit": "3e02cef413896b8d64cd12502529e0b3134e1be2",
        "command": f"harness run --selector {strategy['instance']} --seed {seed}",
        "iterations": 3, "budget": 3000, "keep": 0.5, "n_responses": 8, "harness_version": "0.1.0",
    }


def iteration_row(iteration: int, win: float, rng: random.Random) -> dict:
    row = {"iteration": iteration}
    for name in ITERATION_METRICS:
        row[name] = None if iteration == 0 and not name.startswith(("win", "gold", "kl", "mean", "greedy", "reference")) \
            else round(rng.random(), 6)
    row.update(win_rate=win, gold_reward=0.8 + win, kl=1.8 + 2 * iteration * rng.random())
    if iteration:
        row.update(labels=1000, labels_planned=1000, prompts=2000, instance_pairs=2000, sel_pairs=1000,
                   train_steps=128, train_epochs=8.0)
    return row


def build(path: Path, n_runs: int) -> float:
    """Create the database with ``n_runs`` finished runs; return the seconds it took."""
    from leaderboard.store import Leaderboard

    start = time.perf_counter()
    rng = random.Random(0)
    plans = strategies()
    seeds = -(-n_runs // len(plans))
    seed_effect = [rng.gauss(0, 0.05) for _ in range(seeds)]
    with Leaderboard(path) as lb:
        # One run through the real API creates every column a real run has.
        first = lb.start_run(record(plans[0], 0))
        for iteration in range(4):
            lb.record_iteration(first, iteration_row(iteration, 0.5, rng))
        lb.finish_run(first, {"final_win_rate": 0.5, "final_win_rate_se": 0.01, "initial_win_rate": 0.4,
                              "final_gold_reward": 1.3, "final_kl": 3.0, "labels_used": 3000,
                              "wall_seconds": 6.0, "model_seconds": 5.9, "overhead_share": 0.01,
                              **{name: 0.1 for name in TIMES}})
        run_columns = [c for (c,) in lb.conn.execute("select name from pragma_table_info('runs')")]
        iteration_columns = [c for (c,) in lb.conn.execute("select name from pragma_table_info('iterations')")]
        template = dict(zip(run_columns, lb.conn.execute("select * from runs where id = ?", [first]).fetchone()))
        run_rows, iteration_rows = [], []
        count = 1
        for seed in range(seeds):
            for plan in plans:
                if count >= n_runs:
                    break
                if seed == 0 and plan is plans[0]:
                    continue
                count += 1
                run_id = f"r{count:010x}"
                base = 0.42 + seed_effect[seed]
                final = min(0.99, max(0.01, base + 0.12 + plan["effect"] + rng.gauss(0, 0.02)))
                item = record(plan, seed)
                row = dict(template)
                row.update({k: v for k, v in item.items() if k in row})
                row.update(
                    id=run_id, config_json=json.dumps(item["config"], sort_keys=True),
                    plugins_json=json.dumps(item["plugins"]), versions_json=json.dumps(item["versions"]),
                    initial_win_rate=base, final_win_rate=final, final_win_rate_se=0.01,
                    final_gold_reward=0.8 + final + rng.gauss(0, 0.05),
                    final_kl=2.0 + 4 * (final - base) + rng.gauss(0, 0.2),
                    started_at=f"2026-01-01T00:00:{count % 60:02d}.000+00:00",
                    finished_at=f"2026-01-01T00:01:{count % 60:02d}.000+00:00",
                )
                run_rows.append([row[c] for c in run_columns])
                for iteration in range(4):
                    win = base + (final - base) * iteration / 3
                    it = iteration_row(iteration, win, rng)
                    it.update(run_id=run_id, recorded_at=row["finished_at"])
                    iteration_rows.append([it.get(c) for c in iteration_columns])
        marks = lambda n: ", ".join("?" for _ in range(n))  # noqa: E731
        with lb.conn:
            lb.conn.executemany(f"insert into runs values ({marks(len(run_columns))})", run_rows)
            lb.conn.executemany(
                f"insert into iterations values ({marks(len(iteration_columns))})", iteration_rows
            )
        assert lb.conn.execute("select count(*) from runs").fetchone()[0] == n_runs
    return time.perf_counter() - start



def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--keep", type=Path, metavar="DB", help="also copy the database here")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench_leaderboard_"))
    db = tmp / "big.db"
    seconds = build(db, args.runs)
    size = db.stat().st_size / 1e6
    print(f"built {args.runs:,} finished runs x 4 iteration rows in {seconds:.1f} s ({size:.1f} MB)")
    if args.keep:
        shutil.copy(db, args.keep)

    python = sys.executable
    harness = shutil.which("harness", path=str(Path(python).parent)) or shutil.which("harness")
    if harness is None:
        print("no `harness` console script found: pip install -e . first")
        return 1
    env = {**os.environ, "COLUMNS": "120"}
    env.pop("HARNESS_DB", None)
    commands = {
        "python -c pass": [python, "-c", "pass"],
        "harness --help": [harness, "--help"],
        "harness leaderboard": [harness, "leaderboard", "--db", str(db)],
        "harness leaderboard --by run --limit 50": [harness, "leaderboard", "--db", str(db), "--by", "run", "--limit", "50"],
        "harness leaderboard compare --baseline random": [harness, "leaderboard", "--db", str(db), "compare", "--baseline", "random"],
    }
    targets = [name for name in commands if name.startswith("harness leaderboard")]
    print(f"load average before: {load_average()}")
    failures = {}
    for name, argv in commands.items():  # warm-up: file cache, .pyc
        _, code, err = time_once(argv, env)
        if code != 0:
            failures[name] = f"exit {code}: {err.strip().splitlines()[-1] if err.strip() else ''}"
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.repeats):
        for name, argv in commands.items():
            if name not in failures:
                times[name].append(time_once(argv, env)[0])
    print(f"load average after:  {load_average()}")
    print(f"\nmedian of {args.repeats} fresh processes each; ratio = median / {TARGET_SECONDS:g} s target")
    width = max(len(name) for name in commands)
    worst = 0.0
    for name in commands:
        if name in failures:
            print(f"  {name:<{width}}  FAILED ({failures[name]})")
            continue
        median = statistics.median(times[name])
        spread = f"{min(times[name]):.3f}-{max(times[name]):.3f}"
        verdict = ""
        if name in targets:
            worst = max(worst, median)
            verdict = "  ok" if median < TARGET_SECONDS else "  OVER TARGET"
        print(f"  {name:<{width}}  {median:6.3f} s  (range {spread} s)  ratio {median / TARGET_SECONDS:5.2f}{verdict}")
    shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failures or worst >= TARGET_SECONDS else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``harness sweep``: a grid of strategies × seeds, each cell × seed one leaderboard run, in parallel."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from harness.cli.common import (
    CpusPerRunOption,
    DbOption,
    DryRunOption,
    ExecutorOption,
    GpusPerRunOption,
    JobsOption,
    JsonOption,
    LoggingDirOption,
    PluginOption,
    RayAddressOption,
    ReportToOption,
    cli_errors,
    executor_choice,
    rerun_advice,
    plugins_for_workers,
    stderr_console,
    tracking_options,
    writable_db,
)
from harness.cli.run_options import run_request_values, with_run_options
from harness.run_request import sweep_options

_GRID_FLAGS = ", ".join(option.flag for option in sweep_options() if option.grid)

SWEEP_HELP = """\
Run a grid of strategies over several seeds; every cell × seed is one leaderboard run.

Comma lists make the grid: GRID_FLAGS and every -o KEY=V1,V2 are axes, and
the grid is every combination of their values, each run on every seed of
--seeds (0-4, 0,2,5 or 0-2,7). The world seed is
the run seed unless --world-seed fixes one world for all. For a list-valued
option the commas belong to the value, so separate its grid values with |
(or ;):  -o "weights=1,1,2|2,1,1".

[bold]Examples[/]

  harness sweep --selector smallest,random,largest --seeds 0-9
  harness sweep --instance-selector smallest,random --corpus-selector random --seeds 0-4
  harness sweep --selector smallest -o trainer.beta=0.5,1,2 --seeds 0-4 --jobs 2
  harness sweep --allocator custom -o "weights=1,1,2|2,1,1" --seeds 0-29
  harness sweep --selector smallest,random --seeds 0-9 --dry-run   # the plan only

Every cell is validated (names, options, budget plan) before anything starts:
a bad cell exits 2, naming it, and nothing is written. Runs are tagged with
the sweep's id, a hash of the normalised grid (the cells' full configs, not
the seed list), so the same command always gets the same id, and widening
--seeds adds runs to the same sweep.

[bold]Re-running a sweep[/] runs only what is missing. Per cell × seed it looks at
the runs of this sweep id with the same config hash, seed and world seed
(runs made by harness run or by another sweep do not count):

  finished                                 skipped
  running, its recording process alive     left alone (each run stores its pid, hostname)
  interrupted, or running with its process gone
                                           resumed from its last checkpoint, same run id
  failed                                   redone as a new run (the failed row stays)

--force redoes everything as new runs. The plan is printed before anything
starts; --dry-run prints all of it and exits.

--jobs J runs J worker processes (default: the number of cores), one torch
thread each. Ctrl-C stops cleanly: finished runs stay, running ones are
marked interrupted, exit code 130; run the same command again to resume.
A run that fails does not stop the sweep; the exit code is 1 if any did.
--cpus-per-run N gives each run N torch threads. --executor ray runs on Ray
instead (pip install 'pairsel-harness\\[ray]'; --ray-address, else
$RAY_ADDRESS, else a local Ray), asking Ray for --cpus-per-run CPUs and
--gpus-per-run GPUs per run. --executor submitit submits each run as a SLURM
job (a local subprocess where there is no SLURM; pip install
'pairsel-harness\\[submitit]'). Their workers never open the database: each
returns its run's record and this process alone writes it, so the nodes need
no shared database file; unfinished runs are redone there, not resumed.
Executors are plugins (the register_executors hook).

Schedule and strategy differences can be small: size a grid by the detectable
difference you need (harness study reports it per claim). Findings are in
docs/reproduction.md, not in this help.
"""



def register(app: typer.Typer) -> None:
    app.command(name="sweep", help=SWEEP_HELP.replace("GRID_FLAGS", _GRID_FLAGS))(sweep_command)


@with_run_options(sweep=True)
def sweep_command(
    seeds: Annotated[str, typer.Option("--seeds", help="Run seeds: 0-4, 0,2,5 or 0-2,7.")] = "0",
    jobs: JobsOption = None,
    executor: ExecutorOption = "local",
    cpus_per_run: CpusPerRunOption = 1,
    gpus_per_run: GpusPerRunOption = 0.0,
    ray_address: RayAddressOption = None,
    force: Annotated[bool, typer.Option("--force", help="Redo every cell × seed as a new run.")] = False,
    dry_run: DryRunOption = False,
    report_to: ReportToOption = None,
    logging_dir: LoggingDirOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
    plugin: PluginOption = None,
    **request: Any,
) -> None:
    from harness.cli.grid_display import run_with_progress
    from harness.experiments import sweep as sw
    from harness.experiments.grid_run import GridOutcome, count_actions
    from harness.plugins import load_registry

    console = stderr_console()
    backends, logging_dir = tracking_options(report_to, logging_dir)
    db_path = writable_db(db)
    jobs = jobs or max(1, (os.cpu_count() or 1) // max(1, cpus_per_run))
    # Workers load the same plugins; a plugin file is passed to them by its absolute path.
    plugin = plugins_for_workers(plugin)
    with cli_errors():
        registry = load_registry(plugin)
        seed_list = sw.parse_seeds(seeds)
        spec = sw.GridSpec.from_cli(registry, **run_request_values(request))
        world_seed = spec.world_seed
        cells = sw.expand_grid(registry, spec, first_seed=seed_list[0])
        choice = executor_choice(registry, executor, cpus_per_run, gpus_per_run, ray_address)
        sweep = sw.sweep_id(cells, world_seed)
        plan = sw.make_plan(cells, seed_list, sweep=sweep, db_path=db_path, world_seed=world_seed, force=force,
                            resumable=choice.workers_record)
        if choice.workers_record:  # runs on this machine (others run where their executor puts them)
            sw.check_parallel_memory(cells, jobs, seeds=len(seed_list))

    _print_plan(console, sweep, cells, seed_list, plan, db_path, executor, jobs, full=dry_run)
    if dry_run:
        if as_json:
            typer.echo(json.dumps({"sweep_id": sweep, "plan": [_plan_json(item) for item in plan]}))
        return

    tasks = sw.tasks_from_plan(plan, sweep=sweep, db_path=db_path.resolve(),
                               report_to=backends if report_to is not None else None, logging_dir=logging_dir)
    outcome = GridOutcome()
    if tasks:
        outcome = run_with_progress(console, choice, min(jobs, len(tasks)), plugin, tasks, plan)
    results = [(plan[result.index], result) for result in outcome.results]

    runs = sw.sweep_runs(db_path, sweep)
    summary = sw.summarise(cells, seed_list, world_seed, runs)
    _print_summary(console, sweep, summary, results, db_path)
    code = outcome.exit_code
    if code:
        console.print(rerun_advice(choice))
    if as_json:
        typer.echo(json.dumps({
            "sweep_id": sweep,
            "db": str(db_path),
            "seeds": seed_list,
            "cells": summary,
            "plan": count_actions(plan),
            "results": [_result_json(item, result) for item, result in results],
            "exit_code": code,
        }))
    if code:
        raise typer.Exit(code)


def _fmt(value: Any, spec: str = ".3f") -> str:
    return "–" if value is None else format(value, spec)


def _print_plan(console, sweep, cells, seeds, plan, db_path: Path, executor: str, jobs: int, full: bool) -> None:
    from harness.cli.grid_display import escape, plan_counts_line, plan_line
    from harness.reference_point import MARK, NOTE
    from harness.experiments.grid_run import count_actions
    from harness.experiments.sweep import format_seeds

    console.print(
        f"[bold]sweep {sweep}[/] · {len(cells)} cell{'s' if len(cells) != 1 else ''} × {len(seeds)} "
        f"seed{'s' if len(seeds) != 1 else ''} ({format_seeds(seeds)}) = {len(plan)} runs · "
        f"executor {executor}, {jobs} job{'s' if jobs != 1 else ''} · {db_path}"
    )
    for number, cell in enumerate(cells, 1):
        console.print(f"  cell {number}: {escape(cell.key)}  [dim](config {cell.config_hash})[/]")
    if any(MARK in cell.key for cell in cells):
        console.print(f"  {NOTE}")
    console.print(plan_counts_line(count_actions(plan)))
    shown = plan if full else [item for item in plan if item.action != "new"]
    limit = len(shown) if full else 20
    for item in shown[:limit]:
        console.print("  " + escape(plan_line(item)))
    if len(shown) > limit:
        console.print(f"  … and {len(shown) - limit} more (--dry-run lists them all)")


def _print_summary(console, sweep, summary, results, db_path: Path) -> None:
    from rich import box
    from rich.table import Table

    table = Table(
        title=f"sweep {sweep}",
        caption="finished runs of this grid's seeds; win: final win rate, mean ± std over seeds "
        "(compare strategies paired by seed: harness leaderboard compare)",
        title_justify="left", caption_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
    )
    for header, justify in (("cell", "left"), ("n", "right"), ("win ± std", "right"), ("KL", "right"),
                            ("labels", "right"), ("not finished", "left")):
        table.add_column(header, justify=justify)
    for row in summary:
        others = ", ".join(f"{n} {status}" for status, n in sorted(row["not_finished"].items()))
        win = "–" if row["win_mean"] is None else f"{row['win_mean']:.3f} ± {_fmt(row['win_std'])}"
        table.add_row(row["cell"], f"{row['n']}/{row['seeds']}", win, _fmt(row["kl_mean"], ".2f"),
                      _fmt(row["labels_mean"], ".0f"), others)
    console.print(table)
    if results:
        tally: dict[str, int] = {}
        for _, result in results:
            tally[result.status] = tally.get(result.status, 0) + 1
        console.print("this time: " + ", ".join(f"{n} {status}" for status, n in sorted(tally.items())))
    db_flag = "" if _default_db(db_path) else f" --db {db_path}"
    console.print(
        f"sweep id [bold]{sweep}[/]; browse it with [bold]harness leaderboard --sweep {sweep}{db_flag}[/] "
        f"or [bold]harness leaderboard compare --baseline random --sweep {sweep}{db_flag}[/]"
    )


def _default_db(db_path: Path) -> bool:
    from leaderboard.store import default_db_path

    try:
        return Path(db_path).resolve() == default_db_path().resolve()
    except OSError:
        return False


def _plan_json(item) -> dict[str, Any]:
    return {"cell": item.cell.key, "config_hash": item.cell.config_hash, "seed": item.seed,
            "world_seed": item.world_seed, "action": item.action, "run_id": item.run_id, "reason": item.reason}


def _result_json(item, result) -> dict[str, Any]:
    return {
        "cell": item.cell.key, "seed": item.seed, "world_seed": item.world_seed, "action": item.action,
        "status": result.status, "run_id": result.run_id, "seconds": result.seconds,
        "final_win_rate": (result.final or {}).get("final_win_rate"),
        "final_kl": (result.final or {}).get("final_kl"),
        "error": (result.error.strip().splitlines()[-1] if result.error else None),
    }

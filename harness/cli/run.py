"""``harness run``: one iterative-DPO selection experiment, recorded in the leaderboard."""

from __future__ import annotations

import json
import os
from typing import Annotated, Any, Optional

import typer

from harness.cli.common import (
    DbOption,
    JsonOption,
    LoggingDirOption,
    PluginOption,
    ReportToOption,
    cli_errors,
    sigterm_interrupts,
    stderr_console,
    tracking_options,
    writable_db,
)
from harness.cli.run_options import run_request_values, with_run_options

RUN_HELP = """\
Run one selection experiment and record it in the leaderboard.

Every iteration samples --responses per prompt from the current policy, picks
one pair per prompt with the instance selector, keeps a --keep share of those
pairs with the corpus selector, buys one gold label per kept pair, and trains
the policy with DPO against the fixed reference. The allocator splits --budget
labels over the iterations; each iteration draws labels / keep fresh prompts.

[bold]Examples[/]

  harness run --selector smallest --allocator decrease
  harness run --instance-selector smallest --corpus-selector random --seed 3
  harness run --selector largest -o normalize=true -o trainer.beta=0.5
  harness run --selector smallest --dry-run        # validate and show the plan

Options of a component are set with -o KEY=VALUE; `harness list selectors`
(allocators, trainers, testbeds) shows them. Prefix a key with its role to be
explicit: testbed., trainer., allocator., selector. (both levels), instance.,
corpus., gold., proxy., annotator., evaluator.

People as annotators: --annotator external stops at each iteration's
annotation step, writes RUN_DIR/iteration-<i>/to-label.jsonl and prints the
commands to import the labels (harness label import) and to go on
(harness run --resume RUN_ID).

Experiment tracking: --report-to tensorboard (or wandb) sends the loop's
per-iteration metrics and the trainer's per-step log to one tracker run
named by the run id; it changes no number (docs/usage/tracking.md).

Several GPUs: start the same command under a launcher, e.g.
accelerate launch --multi_gpu --num_processes 4 -m harness run --testbed hf
--trainer trl -o testbed.device=cuda ... (or torchrun --nproc_per_node 4).
The main process samples, buys the labels and records one run; every process
scores and trains (docs/real-models/processes.md).

Findings (which strategy and which schedule won, in which regime) are not in
this help: they are in docs/reproduction.md, with what the synthetic testbed
cannot tell you in docs/toy-limits.md.
"""


def register(app: typer.Typer) -> None:
    app.command(name="run", help=RUN_HELP)(run_command)


@with_run_options(sweep=False)
def run_command(
    threads: Annotated[
        int,
        typer.Option(
            envvar="HARNESS_THREADS",
            help="Torch intra-op threads. 1 is fastest on a busy 2-core machine.",
            min=1,
        ),
    ] = 1,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate and print the plan; run nothing.")] = False,
    resume: Annotated[
        Optional[str],
        typer.Option(
            "--resume",
            metavar="RUN_ID",
            help="Continue an interrupted, failed or killed run from its last checkpoint, with its stored "
            "config (the other run options are ignored). It ends with the numbers of an uninterrupted run.",
        ),
    ] = None,
    report_to: ReportToOption = None,
    logging_dir: LoggingDirOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
    plugin: PluginOption = None,
    **request: Any,
) -> None:
    from harness.config import plan_run
    from harness.plugins import load_registry
    from harness.run_request import RunRequest

    console = stderr_console()
    backends, logging_dir = tracking_options(report_to, logging_dir)
    db_path = writable_db(db)
    if resume is not None:
        with cli_errors():
            registry = load_registry(plugin or ())
        _set_threads(threads)
        ranks = _launch_ranks()
        # no --report-to: the tracking the run was started with goes on
        tracked = {"report_to": backends if report_to is not None else None, "logging_dir": logging_dir}
        if not ranks.is_main:
            _follow_main(lambda: _resume(resume, registry, db_path, None, None, ranks, tracked))
        outcome = _with_progress(console, None, lambda reporter, on_row: _resume(resume, registry, db_path, reporter,
                                                                                 on_row, ranks, tracked))
        _report(console, outcome, db_path, as_json)
        return

    with cli_errors():
        registry = load_registry(plugin or ())
        planned = plan_run(registry, RunRequest.from_values(**run_request_values(request)))
        config, components, plan = planned.config, planned.components, planned.labels

    ranks = _launch_ranks() if not dry_run else None
    if ranks is not None and not ranks.is_main:
        from harness.experiments import runner

        _set_threads(threads)
        _follow_main(lambda: runner.execute(config, registry, db_path=db_path, ranks=ranks, components=components,
                                            report_to=backends, logging_dir=logging_dir))
    _print_plan(console, config, components, plan)
    if dry_run:
        console.print(planned.memory.describe())
        if as_json:
            typer.echo(json.dumps({"config": config.to_dict(), "plan": plan,
                                   "memory_bytes": planned.memory.total_bytes}, default=list))
        return

    _set_threads(threads)
    outcome = _with_progress(
        console,
        config.iterations + 1,
        lambda reporter, on_row: _execute(config, registry, db_path=db_path, reporter=reporter, on_row=on_row,
                                          ranks=ranks, components=components, report_to=backends,
                                          logging_dir=logging_dir),
    )
    _report(console, outcome, db_path, as_json)


def _resume(run_id, registry, db_path, reporter, on_row, ranks, tracked):
    from harness.experiments import runner

    with cli_errors():
        return runner.resume(run_id, registry, db_path=db_path, reporter=reporter, on_row=on_row, ranks=ranks,
                             **tracked)


def _execute(config, registry, **given):
    """:func:`harness.experiments.runner.execute`; a tracker that cannot start its run exits 2 (no run is recorded)."""
    from harness.experiments import runner

    with cli_errors():
        return runner.execute(config, registry, **given)


def _launch_ranks():
    """This process's place under ``torchrun``/``accelerate launch`` (:mod:`harness.ranks`); one process otherwise."""
    from harness.ranks import Ranks

    with cli_errors():
        return Ranks.from_environment()


def _follow_main(start) -> None:
    """A process other than the main one: follow the run silently, exit 1 only if it failed.

    The main process prints the plan, the progress and the result, and sets
    the exit code a script should read.
    """
    outcome = start()
    raise typer.Exit(1 if outcome.status == "failed" else 0)


def _with_progress(console, steps, start):
    """Run ``start(reporter, on_row)`` under a live progress display; Ctrl-C exits 130."""
    from harness.progress import RichReporter

    try:
        with sigterm_interrupts(), RichReporter(console, total_steps=steps, title="run") as reporter:
            return start(reporter, lambda run_id, row: reporter.step(_iteration_line(row)))
    except KeyboardInterrupt:
        console.print("[yellow]Interrupted.[/] The run is marked interrupted; continue it with "
                      "[bold]harness run --resume RUN_ID[/] (ids: harness leaderboard --all).")
        raise typer.Exit(130) from None


def _report(console, outcome, db_path, as_json: bool) -> None:
    """Summary table on stderr, JSON on stdout if asked; exit 1 if the run failed."""
    from harness.config import RunConfig
    from leaderboard.store import Leaderboard

    if outcome.status == "awaiting_labels":
        _report_awaiting(console, outcome, db_path, as_json and not outcome.unrecorded)
    if outcome.unrecorded:
        _report_unrecorded(console, outcome, db_path, as_json)
    if outcome.status == "awaiting_labels":
        return
    if outcome.status != "finished":
        last_line = (outcome.error or "").strip().splitlines()[-1:] or ["unknown error"]
        console.print(f"[bold red]Run {outcome.run_id} failed:[/] {last_line[0]}")
        console.print(f"The traceback is stored with the run: harness leaderboard show {outcome.run_id} --db {db_path}")
        raise typer.Exit(1)
    from harness.cli.summary import print_summary

    run = Leaderboard(db_path, create=False).get_run(outcome.run_id)
    config = RunConfig.from_dict(run["config"])
    rows = Leaderboard(db_path, create=False).iterations(outcome.run_id)
    print_summary(console, outcome.run_id, config, rows, outcome.final, db_path)
    if as_json:
        typer.echo(json.dumps({"run_id": outcome.run_id, "config": config.to_dict(), **outcome.final,
                               "iterations": rows}, default=list))


def _report_unrecorded(console, outcome, db_path, as_json: bool) -> None:
    """The leaderboard refused the run's writes: say where its record is kept and how to import it (exit 1)."""
    import shlex
    from pathlib import Path

    folder = Path(outcome.unrecorded).parent
    command = f"harness leaderboard import {shlex.quote(str(folder))} --db {shlex.quote(str(db_path))}"
    if outcome.final:
        console.print(f"run {outcome.run_id} finished: final win rate {outcome.final['final_win_rate']:.3f} "
                      f"(pi_0 {outcome.final['initial_win_rate']:.3f}), {outcome.final['labels_used']} labels")
    console.print(
        f"[bold red]The leaderboard {db_path} could not be written[/] ({outcome.unrecorded_reason}).\n"
        f"Nothing is lost: run {outcome.run_id}'s record ({outcome.status}) is kept in {outcome.unrecorded}.\n"
        f"Record it once the database is writable again:\n  {command}"
    )
    if as_json:
        typer.echo(json.dumps({"run_id": outcome.run_id, "status": outcome.status, "unrecorded": outcome.unrecorded,
                               "import_command": command, **(outcome.final or {})}))
    raise typer.Exit(1)


def _report_awaiting(console, outcome, db_path, as_json: bool) -> None:
    """The run stopped for people to label its pairs: say where they are and what to run next (exit 0)."""
    import shlex

    wait = outcome.awaiting
    db_flag = f" --db {shlex.quote(str(db_path))}"
    import_command = f"harness label import {outcome.run_id} LABELS.jsonl{db_flag}"
    resume_command = f"harness run --resume {outcome.run_id}{db_flag}"
    console.print(
        f"[bold yellow]Run {outcome.run_id} awaits labels[/]: iteration {wait['iteration']}, "
        f"{wait['pairs']} pairs in\n  {wait['file']}\n"
        "Label each line (pair_id, label = a | b | tie, optional annotator; JSONL or CSV), then:\n"
        f"  {import_command}\n  harness label status {outcome.run_id}{db_flag}\n  {resume_command}"
    )
    if as_json:
        typer.echo(json.dumps({"run_id": outcome.run_id, "status": outcome.status, **wait,
                               "import_command": import_command, "resume_command": resume_command}))


def _set_threads(threads: int) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    import torch

    torch.set_num_threads(threads)


def _iteration_line(row: dict[str, Any]) -> str:
    head = "pi_0" if row["iteration"] == 0 else f"iteration {row['iteration']}"
    text = f"[bold]{head}[/]: win {row['win_rate']:.3f} ± {row.get('win_rate_se', 0):.3f}  "
    if row.get("gold_reward") is not None:
        text += f"gold {row['gold_reward']:.3f}  "
    text += f"KL {row.get('kl', float('nan')):.2f}"
    if row["iteration"] == 0 and row.get("seed_labels") is not None:
        text += f"  | seed round: {row['seed_labels']} seed labels (seed ledger), cache {row.get('seed_cache')}"
    if row["iteration"] > 0:
        text += (
            f"  | {row['labels']} labels from {row['prompts']} prompts, "
            f"beta·Δ median {row.get('sel_beta_margin_q50', float('nan')):.2f}, "
            f"DPO weight {row.get('sel_mean_dpo_weight', float('nan')):.2f}"
        )
        if row.get("train_steps") is not None:
            text += f", {row['train_steps']} DPO steps"
            if row.get("train_lr_first") is not None:
                text += f" from lr {row['train_lr_first']:.2g}"
        if row.get("kl_prev") is not None:
            text += f", KL to the previous policy {row['kl_prev']:.3g}"
        if row.get("warning"):
            text += " [yellow](policy unchanged: see the warning)[/]"
    return text


def _print_plan(console, config, components, plan) -> None:
    from harness.budget import plan_pool
    from harness.reference_point import NOTE, is_deployable, marked

    costs = components.pool_costs(config.n_responses)
    pools = [plan_pool(labels, config.keep, *costs) for labels in plan]
    levels = marked(config.instance_selector.name, is_deployable(components.instance_selector))
    if config.corpus_selector.name != config.instance_selector.name:
        levels += f" / {marked(config.corpus_selector.name, is_deployable(components.corpus_selector))}"
    console.print(
        f"[bold]{levels}[/] · allocator [bold]{config.allocator.name}[/] · testbed {config.testbed.name} · "
        f"trainer {config.trainer.name} · seed {config.seed} (world {config.world_seed})"
        + ("" if config.reference == "fixed" else f" · DPO reference {config.reference}")
        + ("" if config.regime is None else f" · regime {config.regime}")
    )
    console.print(
        "plan: " + ", ".join(f"it{i + 1} {p.labels} labels / {p.prompts} prompts" for i, p in enumerate(pools))
        + f" · budget {config.budget}"
    )
    if components.explicit_source == "gold":
        console.print(f"explicit scores: gold judge {config.gold_judge.name!r}, {costs[0]} labels per prompt; "
                      "kept pairs are labelled by those scores")
    elif components.explicit_source == "proxy":
        console.print(f"explicit scores: proxy judge {config.proxy_judge.name!r} (counted, not charged)")
    if not config.deployable:
        console.print(NOTE)

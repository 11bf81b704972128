"""``harness run``: one iterative-DPO selection experiment, recorded in the leaderboard."""

from __future__ import annotations

import json
import os
import traceback
from typing import Annotated, Any, Optional

import typer

from harness.cli.common import DbOption, JsonOption, PluginOption, cli_errors, resolve_db, stderr_console

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
corpus.

Note: on the synthetic testbed the budget schedules (constant / increase /
decrease) are not distinguishable; see the README before reading anything
into an allocator difference.
"""


def register(app: typer.Typer) -> None:
    app.command(name="run", help=RUN_HELP)(run_command)


def run_command(
    selector: Annotated[str, typer.Option("--selector", "-s", help="Selector for both levels.")] = "random",
    instance_selector: Annotated[
        Optional[str], typer.Option(help="Override the instance-level selector (one pair per prompt).")
    ] = None,
    corpus_selector: Annotated[
        Optional[str], typer.Option(help="Override the corpus-level selector (which pairs to keep).")
    ] = None,
    allocator: Annotated[
        str, typer.Option("--allocator", "-a", help="Budget schedule over iterations.")
    ] = "constant",
    trainer: Annotated[str, typer.Option(help="Preference optimiser.")] = "native",
    testbed: Annotated[str, typer.Option(help="World to run in.")] = "synthetic",
    iterations: Annotated[int, typer.Option("--iterations", "-k", help="DPO iterations (>= 1).")] = 3,
    budget: Annotated[int, typer.Option(help="Total gold labels over all iterations (> 0).")] = 3000,
    keep: Annotated[float, typer.Option(help="Share of instance pairs kept at corpus level, in (0, 1].")] = 0.5,
    responses: Annotated[int, typer.Option("--responses", "-n", help="Responses sampled per prompt (>= 2).")] = 8,
    seed: Annotated[int, typer.Option(help="Run seed: fixes every random stream of the run.")] = 0,
    world_seed: Annotated[
        Optional[int], typer.Option(help="World seed (world, pi_ref, pi_0, eval set). Default: --seed.")
    ] = None,
    option: Annotated[
        Optional[list[str]],
        typer.Option("--option", "-o", metavar="KEY=VALUE", help="Set a component option (repeatable)."),
    ] = None,
    threads: Annotated[
        int,
        typer.Option(
            envvar="HARNESS_THREADS",
            help="Torch intra-op threads. 1 is fastest on a busy 2-core machine.",
            min=1,
        ),
    ] = 1,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate and print the plan; run nothing.")] = False,
    db: DbOption = None,
    as_json: JsonOption = False,
    plugin: PluginOption = None,
) -> None:
    from harness.config import build_config, check_budget_plan, instantiate
    from harness.plugins import load_registry

    console = stderr_console()
    with cli_errors():
        registry = load_registry(plugin or ())
        config = build_config(
            registry,
            testbed=testbed,
            selector=selector,
            instance_selector=instance_selector,
            corpus_selector=corpus_selector,
            allocator=allocator,
            trainer=trainer,
            options=option or (),
            iterations=iterations,
            budget=budget,
            keep=keep,
            n_responses=responses,
            seed=seed,
            world_seed=world_seed,
        )
        components = instantiate(registry, config)
        plan = check_budget_plan(config, components)

    _print_plan(console, config, components, plan)
    if dry_run:
        if as_json:
            typer.echo(json.dumps({"config": config.to_dict(), "plan": plan}, default=list))
        return

    _set_threads(threads)
    record = _run_record(config, components, registry)
    from leaderboard.store import Leaderboard

    db_path = resolve_db(db)
    board = Leaderboard(db_path)
    run_id = board.start_run(record)
    try:
        result = _execute(config, components, board, run_id, console)
    except KeyboardInterrupt:
        board.fail_run(run_id, "interrupted", "interrupted by the user (KeyboardInterrupt)")
        console.print(f"[yellow]Interrupted.[/] Run {run_id} is marked interrupted in {db_path}.")
        raise typer.Exit(130) from None
    except Exception as exc:
        board.fail_run(run_id, "failed", traceback.format_exc())
        console.print(f"[bold red]Run {run_id} failed:[/] {type(exc).__name__}: {exc}")
        console.print(f"The traceback is stored with the run in {db_path}.")
        raise typer.Exit(1) from None

    board.finish_run(run_id, result.final)
    from harness.cli.summary import print_summary

    print_summary(console, run_id, config, result, db_path)
    if as_json:
        typer.echo(json.dumps({"run_id": run_id, "config": config.to_dict(), **result.final,
                               "iterations": result.iterations}, default=list))


def _set_threads(threads: int) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    import torch

    torch.set_num_threads(threads)


def _execute(config, components, board, run_id, console):
    from harness.loop import run_experiment
    from harness.progress import RichReporter

    with RichReporter(console, total_steps=config.iterations + 1, title=f"run {run_id}") as reporter:

        def on_iteration(row: dict[str, Any]) -> None:
            board.record_iteration(run_id, row)
            reporter.step(_iteration_line(row))

        return run_experiment(config, components, reporter=reporter, on_iteration=on_iteration)


def _iteration_line(row: dict[str, Any]) -> str:
    head = "pi_0" if row["iteration"] == 0 else f"iteration {row['iteration']}"
    text = (
        f"[bold]{head}[/]: win {row['win_rate']:.3f} ± {row.get('win_rate_se', 0):.3f}  "
        f"gold {row['gold_reward']:.3f}  KL {row['kl']:.2f}"
    )
    if row["iteration"] > 0:
        text += (
            f"  | {row['labels']} labels from {row['prompts']} prompts, "
            f"beta·Δ median {row.get('sel_beta_margin_q50', float('nan')):.2f}, "
            f"DPO weight {row.get('sel_mean_dpo_weight', float('nan')):.2f}"
        )
    return text


def _print_plan(console, config, components, plan) -> None:
    from harness.budget import plan_pool

    per_prompt = components.instance_selector.labels_per_prompt
    pools = [plan_pool(labels, config.keep, per_prompt) for labels in plan]
    levels = config.instance_selector.name
    if config.corpus_selector.name != levels:
        levels += f" / {config.corpus_selector.name}"
    console.print(
        f"[bold]{levels}[/] · allocator [bold]{config.allocator.name}[/] · testbed {config.testbed.name} · "
        f"trainer {config.trainer.name} · seed {config.seed} (world {config.world_seed})"
    )
    console.print(
        "plan: " + ", ".join(f"it{i + 1} {p.pairs} labels / {p.prompts} prompts" for i, p in enumerate(pools))
        + f" · budget {config.budget}"
    )


def _run_record(config, components, registry) -> dict[str, Any]:
    from harness import __version__
    from harness.config import ROLES
    from harness.provenance import command_line, git_commit, library_versions

    plugins = {}
    for role, kind in ROLES.items():
        registered = registry.get(kind, getattr(config, role).name)
        plugins[role] = {"name": registered.name, "plugin": registered.plugin.name,
                         "version": registered.plugin.version}
    for column in components.score_columns:
        registered = registry.get("scorer", column)
        plugins[f"scorer:{column}"] = {"name": column, "plugin": registered.plugin.name,
                                       "version": registered.plugin.version}
    return {
        "config": config.to_dict(),
        "config_hash": config.strategy_hash(),
        "seed": config.seed,
        "world_seed": config.world_seed,
        "testbed": config.testbed.name,
        "instance_selector": config.instance_selector.name,
        "corpus_selector": config.corpus_selector.name,
        "allocator": config.allocator.name,
        "trainer": config.trainer.name,
        "scorer_columns": ",".join(components.score_columns),
        "plugins": plugins,
        "versions": library_versions(),
        "git_commit": git_commit(),
        "command": command_line(),
        "iterations": config.iterations,
        "budget": config.budget,
        "keep": config.keep,
        "n_responses": config.n_responses,
        "harness_version": __version__,
    }

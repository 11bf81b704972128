"""``harness study``: run a study plan as leaderboard runs and report a verdict per claim."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from harness.cli.common import (
    CpusPerRunOption,
    DbOption,
    DryRunOption,
    ExecutorOption,
    GpusPerRunOption,
    JobsOption,
    JsonOption,
    PluginOption,
    RayAddressOption,
    cli_errors,
    executor_choice,
    rerun_advice,
    plugins_for_workers,
    resolve_db,
    stderr_console,
    writable_db,
)

STUDY_HELP = """\
Studies: "does A beat B, by how much, and is that real?" as a plan file.

A plan (TOML) names grids (each exactly the arguments of harness sweep, plus
seeds) and claims (a metric, a contrast A − B paired by seed, the direction the
source reports). harness study run runs the grids as ordinary leaderboard runs
and writes a report with a verdict per claim: reproduced, reversed or not
separable, from the 95% interval of the paired difference.

[bold]Examples[/]

  harness study list
  harness study run yang2024 --quick            # 3 seeds, small pools: the mechanics
  harness study run yang2024 --jobs 2           # the real thing
  harness study run yang2024 --seeds 0-29       # more seeds: only the new runs run
  harness study report yang2024                 # rebuild the report, run nothing
  harness study run ./my_study.toml --dry-run   # validate a plan, print its plan
  harness study run yang2024 --jobs 2 --publish docs/reproduction.md
                                                # also write its section of a combined file
"""

RUN_HELP = """\
Run a study (a name from harness study list, or a plan file) and write its report.

Every grid is a sweep (same grid expansion, same skip / resume / redo rule, same
executors as harness sweep): a re-run after a crash, or with more --seeds, runs
only what is missing. Every run is tagged study, study_grid and study_variant
(besides sweep_id and sweep_cell). The report (REPORT_DIR/report.md and PNG
figures) is written from the database at the end, and the verdict table is
printed on stderr. With --publish FILE the study's section of FILE (a combined
Markdown file such as docs/reproduction.md) is written or updated in place too.
"""

QuickOption = Annotated[
    bool, typer.Option("--quick", help="The plan's quick variant (its \\[quick] table: few seeds, small pools). "
                                       "Checks mechanics.")
]
SeedsOption = Annotated[
    Optional[str], typer.Option("--seeds", help="Run seeds for every grid, as in harness sweep: 0-9, 0,2,5. "
                                                 "Default: the plan's.")
]
ReportDirOption = Annotated[
    Optional[Path], typer.Option("--report-dir", metavar="DIR", file_okay=False,
                                 help="Where report.md and the figures go. Default: study-reports/NAME[-quick].")
]
PublishOption = Annotated[
    Optional[Path], typer.Option("--publish", metavar="FILE", dir_okay=False,
                                 help="Also write this study's section of FILE (e.g. docs/reproduction.md), "
                                      "between <!-- study:NAME start/end --> markers; other sections are kept. "
                                      "The report then defaults to FILE's folder/studies/NAME.")
]
RegimeOption = Annotated[
    Optional[str], typer.Option("--regime", metavar="NAME",
                                help="Run every grid in this named regime of its testbed (harness list testbeds "
                                     "TESTBED lists them): its options go in front of each grid's own, so a grid's "
                                     "-o still wins. The report and the published section are named NAME@REGIME. "
                                     "Default: the testbed's defaults.")
]
TestbedOption = Annotated[
    Optional[str], typer.Option("--testbed", metavar="NAME",
                                help="Run every grid as the plan's [testbed.NAME] section says: on that testbed, "
                                     "with its budget, iterations, responses, keep and options (the grids' own "
                                     "testbed.* options are dropped). Exit 2 when the plan has no such section. "
                                     "The report and the published section are named NAME+TESTBED, and "
                                     "transfer.md beside the report compares each claim the section carries "
                                     "with the plan's own testbed (from the same database).")
]
RegimeMapOption = Annotated[
    bool, typer.Option("--regime-map",
                       help="Run (or, with study report, rebuild) the plan's \\[regime_map] instead of its claims: "
                            "each knob moved one at a time around the regime, the claims re-tested in every cell. "
                            "Exploratory; writes regime-map.md and regime_map.png, publishes nothing.")
]
WideOption = Annotated[
    bool, typer.Option("--wide", help="Show every column of the verdict table, uncut, however wide the terminal "
                                      "(by default it fits: the least needed columns are left out, and a note "
                                      "names them).")
]
PlanArgument = Annotated[str, typer.Argument(metavar="PLAN", help="A study name (harness study list) or a .toml plan file.")]

study_app = typer.Typer(help=STUDY_HELP, no_args_is_help=True, rich_markup_mode="rich")


def _load(plan: str, plugin: list[str], quick: bool, seeds: str | None, regime: str | None = None,
          testbed: str | None = None):
    from harness.experiments import study as st
    from harness.experiments import study_plan as sp
    from harness.plugins import load_registry
    from harness.experiments.sweep import parse_seeds

    registry = load_registry(plugin)
    if seeds is not None:
        parse_seeds(seeds)  # a bad --seeds is the command line's error, not a grid's
    plan_obj = sp.find_plan(plan, registry)
    return registry, st.expand(plan_obj, registry, quick=quick, seeds=seeds, regime=regime, testbed=testbed)


def _report_dir(report_dir: Path | None, study: Any, publish: Path | None = None) -> Path:
    """--report-dir; else, when publishing, ``studies/LABEL`` beside the published file (docs/studies/yang2024
    for docs/reproduction.md); else ``study-reports/LABEL``, LABEL being ``NAME[-quick][@REGIME]``."""
    if report_dir is not None:
        return report_dir
    name = study.label
    if publish is not None:
        return publish.parent / "studies" / name
    return Path("study-reports") / name


def _command(verb: str, plan: str, *, quick: bool, seeds: str | None, jobs: int | None = None,
             report_dir: Path | None = None, db: Path | None = None, plugin: list[str] | None = None,
             publish: Path | None = None, regime: str | None = None, regime_map: bool = False,
             testbed: str | None = None) -> str:
    parts = ["harness", "study", verb, plan]
    if quick:
        parts.append("--quick")
    if testbed is not None:
        parts += ["--testbed", testbed]
    if regime is not None:
        parts += ["--regime", regime]
    if regime_map:
        parts.append("--regime-map")
    if seeds is not None:
        parts += ["--seeds", seeds]
    if jobs is not None:
        parts += ["--jobs", str(jobs)]
    if report_dir is not None:
        parts += ["--report-dir", str(report_dir)]
    if publish is not None:
        parts += ["--publish", str(publish)]
    if db is not None:
        parts += ["--db", str(db)]
    for spec in plugin or ():
        parts += ["--plugin", spec]
    return " ".join(shlex.quote(p) for p in parts)


@study_app.command("run", help=RUN_HELP)
def run_command(
    plan: PlanArgument,
    quick: QuickOption = False,
    seeds: SeedsOption = None,
    regime: RegimeOption = None,
    testbed: TestbedOption = None,
    regime_map: RegimeMapOption = False,
    jobs: JobsOption = None,
    executor: ExecutorOption = "local",
    cpus_per_run: CpusPerRunOption = 1,
    gpus_per_run: GpusPerRunOption = 0.0,
    ray_address: RayAddressOption = None,
    force: Annotated[bool, typer.Option("--force", help="Redo every run of the study as a new run.")] = False,
    dry_run: DryRunOption = False,
    report_dir: ReportDirOption = None,
    publish: PublishOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
    plugin: PluginOption = None,
    wide: WideOption = False,
) -> None:
    import time

    from harness.experiments import study as st
    from harness.experiments import sweep as sw
    from harness.cli.grid_display import escape, plan_counts_line, plan_line, run_with_progress
    from harness.experiments.grid_run import GridOutcome, count_actions

    console = stderr_console()
    db_path = writable_db(db)
    plugin = plugins_for_workers(plugin)
    started = time.monotonic()
    with cli_errors():
        registry, study = _load(plan, plugin, quick, seeds, regime, testbed)
        mapped = _load_map(study, registry, publish) if regime_map else None
        if mapped is None:
            st.bind_tuned(study, registry, db_path)
        choice = executor_choice(registry, executor, cpus_per_run, gpus_per_run, ray_address)
        target = study if mapped is None else _map_planning_study(study, mapped)
        planned = st.make_plan(target, db_path, force=force, resumable=choice.workers_record)
        jobs = jobs or max(1, (os.cpu_count() or 1) // max(1, cpus_per_run))
        if choice.workers_record:  # runs on this machine: only those that will run need memory at once
            sw.check_parallel_memory([p.item.cell for p in planned if p.item.runs_something], jobs)
    display = [dataclasses.replace(p.item, cell=dataclasses.replace(p.item.cell, key=f"{p.grid}: {p.item.cell.key}"))
               for p in planned]
    console.print(
        f"[bold]study {study.label}[/] ({study.variant}) · "
        + (f"{len(study.grids)} grids, {len(study.claims)} claims, " if mapped is None else
           f"regime map: {len(mapped.cells)} map cells, {len(mapped.plan.claims)} claims, {len(mapped.grids)} "
           "distinct grids (exploratory), ")
        + f"{len(display)} runs · {db_path}\n" + plan_counts_line(count_actions(display))
    )
    for grid in target.grids:
        console.print(f"  grid {grid.plan.name}: {len(grid.cells)} cells × {len(grid.seeds)} seeds · "
                      f"sweep {grid.sweep_id}")
    console.print(escape(study.standing() if mapped is None else "Regime map: exploratory, not verdicts."))
    pending = [arm for arm in study.arms.values() if arm.chosen is None] if mapped is None else []
    if pending:
        console.print(f"{len(pending)} tuned arm{'s' if len(pending) != 1 else ''} not chosen yet: "
                      f"{sum(len(study.grid(arm.grid).seeds) for arm in pending)} confirmation runs follow the tuning runs "
                      "(each arm's best point by final gold reward)")
    for warning in study.plan.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}")
    if dry_run:
        for item in display:
            console.print("  " + escape(plan_line(item)))
        if as_json:
            typer.echo(json.dumps({"study": study.plan.name, "variant": study.variant, "plan": [
                {"grid": p.grid, "cell": p.item.cell.key, "seed": p.item.seed, "action": p.item.action,
                 "run_id": p.item.run_id} for p in planned]}))
        return

    tasks = st.tasks(target, planned, db_path.resolve())
    grid_outcome = GridOutcome()
    if tasks:
        grid_outcome = run_with_progress(console, choice, min(jobs, len(tasks)), plugin, tasks, display,
                                         title="study")
    ran, wanted = len(tasks), len(display)
    if pending and not grid_outcome.exit_code:
        with cli_errors():
            chosen = st.bind_tuned(study, registry, db_path)
        if chosen:
            tasks, planned, display, grid_outcome = _run_tuned(console, study, db_path, choice, jobs, plugin)
            ran, wanted = ran + len(tasks), wanted + sum(1 for p in planned if study.grid(p.grid).tuning == "tuned")
    command = _command("run", plan, quick=quick, seeds=seeds, jobs=jobs, report_dir=report_dir, db=db, plugin=plugin,
                       publish=publish, regime=regime, regime_map=regime_map,
                       testbed=testbed)
    if mapped is None:
        outcome = _report(console, study, db_path, _report_dir(report_dir, study, publish), command, publish, wide=wide,
                          registry=registry)
    else:
        outcome = _map_report(console, study, mapped, db_path, _report_dir(report_dir, study), command)
    code = grid_outcome.exit_code
    if code:
        console.print(rerun_advice(choice))
    seconds = time.monotonic() - started
    console.print(f"ran {ran} of {wanted} runs in {seconds:.1f} s")
    if as_json:
        typer.echo(json.dumps({**outcome, "ran": ran, "seconds": round(seconds, 2), "exit_code": code,
                               "results": [{"grid": planned[r.index].grid, "cell": planned[r.index].item.cell.key,
                                            "seed": planned[r.index].item.seed, "status": r.status,
                                            "run_id": r.run_id} for r in grid_outcome.results]}))
    if code:
        raise typer.Exit(code)


def _run_tuned(console, study, db_path: Path, executor, jobs: int, plugin):
    """The second phase of a study with tuned claims: the points tuning chose, on the confirmation seeds."""
    from harness.experiments import study as st
    from harness.cli.grid_display import plan_counts_line, run_with_progress
    from harness.experiments.grid_run import GridOutcome, count_actions
    from harness.experiments.tuned import describe_point

    for arm in study.arms.values():
        if arm.chosen is not None:
            console.print(f"  tuned {arm.grid}: {arm.base.key or 'its cell'} -> {describe_point(arm.chosen_point())}")
    planned = st.make_plan(study, db_path, resumable=executor.workers_record)
    display = [dataclasses.replace(p.item, cell=dataclasses.replace(p.item.cell, key=f"{p.grid}: {p.item.cell.key}"))
               for p in planned]
    console.print("tuned points on the confirmation seeds: " + plan_counts_line(count_actions(display)))
    tasks = st.tasks(study, planned, db_path.resolve())
    outcome = GridOutcome()
    if tasks:
        outcome = run_with_progress(console, executor, min(jobs, len(tasks)), plugin, tasks, display, title="tuned")
    return tasks, planned, display, outcome


@study_app.command("report")
def report_command(
    plan: PlanArgument,
    quick: QuickOption = False,
    seeds: SeedsOption = None,
    regime: RegimeOption = None,
    testbed: TestbedOption = None,
    regime_map: RegimeMapOption = False,
    report_dir: ReportDirOption = None,
    publish: PublishOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
    plugin: PluginOption = None,
    wide: WideOption = False,
) -> None:
    """Rebuild a study's report (and, with --publish, its section of a combined file) from the leaderboard,
    running nothing."""
    console = stderr_console()
    db_path = resolve_db(db)
    plugin = plugins_for_workers(plugin)
    with cli_errors():
        registry, study = _load(plan, plugin, quick, seeds, regime, testbed)
        mapped = _load_map(study, registry, publish) if regime_map else None
        if mapped is None:
            from harness.experiments import study as st

            st.bind_tuned(study, registry, db_path)
    command = _command("report", plan, quick=quick, seeds=seeds, report_dir=report_dir, db=db, plugin=plugin,
                       publish=publish, regime=regime, regime_map=regime_map,
                       testbed=testbed)
    if mapped is None:
        outcome = _report(console, study, db_path, _report_dir(report_dir, study, publish), command, publish, wide=wide,
                          registry=registry)
    else:
        outcome = _map_report(console, study, mapped, db_path, _report_dir(report_dir, study), command)
    if as_json:
        typer.echo(json.dumps(outcome))


@study_app.command("list")
def list_command(plugin: PluginOption = None, as_json: JsonOption = False) -> None:
    """The studies every plugin registered (built-ins included), with their claims."""
    from harness.experiments import study_plan as sp
    from harness.plugins import load_registry

    console = stderr_console()
    with cli_errors():
        registry = load_registry(plugins_for_workers(plugin))
    rows = []
    for name, (path, info) in sorted(registry.studies.items()):
        row: dict[str, Any] = {"name": name, "plugin": info.name, "source": info.source, "path": str(path)}
        try:
            loaded = sp.load_plan(path, name=name)
            row.update(title=loaded.title, grids=len(loaded.grids), claims=len(loaded.claims),
                       families=list(dict.fromkeys(c.family for c in loaded.claims)), error=None)
        except sp.PlanError as exc:
            row.update(title="", grids=0, claims=0, families=[], error=str(exc))
        rows.append(row)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    table = Table(title="studies", title_justify="left",
                  caption="run one: harness study run NAME --quick (mechanics) or harness study run NAME",
                  caption_justify="left")
    for header in ("study", "plugin", "claims", "families", "title"):
        table.add_column(header)
    for row in rows:
        title = row["title"] if not row["error"] else f"[red]invalid plan:[/] {row['error'].splitlines()[-1]}"
        table.add_row(row["name"], row["plugin"], str(row["claims"]), ", ".join(row["families"]), title)
    console.print(table)


_STAT_KEYS = ("n", "mean", "std", "ci_low", "ci_high", "half_width", "mde80", "direction", "p", "p_t", "p_sign_flip",
              "family", "family_size", "correction", "p_adjusted", "margin", "smallest_margin", "verdict")


def _load_map(study: Any, registry: Any, publish: Path | None) -> Any:
    """The plan's regime map around the study's regime; UsageError (exit 2) when it has none or --publish is given."""
    from harness.errors import UsageError
    from harness.experiments.regime_map import expand_map

    if study.plan.regime_map is None:
        raise UsageError(f"plan {study.plan.name!r} has no [regime_map] table; add one (docs/experiments/plans.md "
                         "lists its keys) or drop --regime-map")
    if publish is not None:
        raise UsageError("a regime map is exploratory and is never published beside verdicts; drop --publish "
                         "(its report is regime-map.md in the report directory)")
    return expand_map(study, registry)


def _map_planning_study(study: Any, mapped: Any) -> Any:
    from harness.experiments.regime_map import planning_study

    return planning_study(study, mapped)


def _map_report(console, study, mapped, db_path: Path, out_dir: Path, command: str) -> dict[str, Any]:
    from harness.experiments.regime_map import map_results
    from harness.experiments.regime_map_report import write_map_report

    with cli_errors():
        outcome = map_results(mapped, db_path, study.plan.correction)
    rows = outcome.rows
    paths = write_map_report(study, mapped, outcome, out_dir, command=command, db_path=db_path)
    counts = {word: sum(1 for r in rows if r.word == word) for word in ("holds", "null", "reverses", "too few pairs")}
    console.print(f"regime map (exploratory): {counts['holds']} hold, {counts['null']} null, "
                  f"{counts['reverses']} reverse, {counts['too few pairs']} with too few pairs, "
                  f"of {len(rows)} (cell, claim) tests")
    console.print(f"report: [bold]{paths[0]}[/] (figure {paths[1].name})")
    return {"study": study.plan.name, "regime": study.regime, "regime_map": True, "report": str(paths[0]),
            "figures": [str(paths[1])],
            "cells": [{"cell": r.cell.label, "claim": r.claim, "word": r.word,
                       **{k: r.stats.get(k) for k in _STAT_KEYS}} for r in rows]}


def _report(console, study, db_path: Path, out_dir: Path, command: str, publish: Path | None = None, *,
            wide: bool = False, registry: Any = None) -> dict[str, Any]:
    from harness.experiments import study as st
    from harness.experiments.study_report import publish as publish_file, verdict_rows, write_report

    with cli_errors():
        outcome = st.results(study, db_path)
    paths = write_report(outcome, out_dir, command=command, db_path=db_path)
    rows = verdict_rows(outcome)
    time = st.study_time(outcome.finished_runs())
    _print_verdicts(console, study, rows, outcome.counts, wide=wide)
    for warning in study.plan.warnings:
        console.print(f"[yellow]warning:[/] {warning}")
    console.print(study.standing())
    console.print(f"report: [bold]{paths[0]}[/] ({len(paths) - 1} figures)")
    if time["busy_seconds"] is not None:
        console.print(f"measured time of the study's {time['runs']} runs (from the database): "
                      f"{time['busy_seconds']:.0f} s computing, span {time['span_seconds']:.0f} s, "
                      f"{time['run_seconds']:.0f} s summed over runs")
    transfer = _transfer(console, study, registry, db_path, paths[0].parent, command) if study.testbed else None
    if publish is not None:
        with cli_errors():
            try:
                publish_file(outcome, publish, command=command, db_path=db_path, paths=paths)
            except (ValueError, OSError) as exc:
                from harness.errors import UsageError

                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                raise UsageError(f"cannot publish to {publish}: {reason}") from None
        console.print(f"published: [bold]{publish}[/] (section study:{study.label})")
    return {"study": study.plan.name, "variant": study.variant, "regime": study.regime, "report": str(paths[0]),
            "figures": [str(p) for p in paths[1:]], "runs": outcome.counts, "time": time,
            "published": None if publish is None else str(publish),
            "confirmatory": study.confirmatory,
            "claims": [{**row, **{k: item.stats.get(k) for k in _STAT_KEYS}} for row, item in zip(rows, outcome.claims)],
            **({"transfer": transfer} if transfer is not None else {})}


def _transfer(console, study, registry: Any, db_path: Path, out_dir: Path, command: str) -> dict[str, Any]:
    """A study under a testbed section also writes its transfer report: the same claims on the plan's own
    testbed (from the same database) beside these (:mod:`harness.experiments.transfer`)."""
    from harness.experiments.transfer import transfer
    from harness.experiments.transfer_report import transfer_table, write_transfer

    with cli_errors():
        results = transfer(study.plan, registry, db_path, study.testbed, quick=study.quick,
                           seeds=study.seeds_override, regime=study.regime)
    paths = write_transfer(results, out_dir, command=command)
    tally = ", ".join(f"{name} {count}" for name, count in results.tally().items() if count)
    console.print(f"transfer: [bold]{paths[0]}[/] ({tally})"
                  + (" · quick: too few seeds, no transfer verdicts" if results.quick else ""))
    return {"report": str(paths[0]), "figure": str(paths[1]), "outcomes": results.tally(),
            "claims": transfer_table(results)}




#: The verdict table's columns, each (header, row key, kind, priority; None: never left out), in table order. As the
#: terminal narrows the lowest priority goes first; the claim and its verdict are names, never cut (harness.table_fit).
VERDICT_COLUMNS = (
    ("claim", "claim", "key", None),
    ("metric", "metric", "key", 3),
    ("contrast A − B", "contrast", "key", 4),
    ("regime", "regime", "text", 1),
    ("source", "source", "text", 1),
    ("mean Δ ± sd", "measured", "num", None),
    ("95% CI", "ci", "num", 8),
    ("n", "n", "num", 6),
    ("test", "test", "key", 2),
    ("p", "p", "num", 4),
    ("sign-flip p", "p_sign_flip", "num", 1),
    ("family", "family", "key", 2),
    ("adjusted p", "p_adjusted", "num", 7),
    ("verdict", "verdict", "key", None),
)


def _print_verdicts(console, study, rows, counts, *, wide: bool = False) -> None:
    """The verdict table, one row per claim, fitted to the terminal (``wide``: every column)."""
    from rich.text import Text

    from harness.experiments.study_report import verdict_color
    from harness.table_fit import Column, print_fitted

    def cell(row, key):
        if key == "source":
            return row["source"].split(" (", 1)[0]
        if key == "verdict":
            style = verdict_color(row["verdict"]).removeprefix("tab:").replace("gray", "dim").replace("purple", "magenta")
            return Text(row["verdict"], style=style)
        return row[key]

    columns = [Column(header, [cell(row, key) for row in rows], kind=kind, priority=priority or 0,
                      required=priority is None, justify="right" if kind == "num" else "left")
               for header, key, kind, priority in VERDICT_COLUMNS]
    print_fitted(
        console, columns, wide=wide,
        title=f"study {study.label} ({study.variant}) · {counts['finished']}/{counts['wanted']} runs finished",
        caption="Δ = A − B paired by (seed, world_seed); p: the claim's test (t, TOST or one-sided with the plan's "
                "margin), adjusted over its family; † the sign-flip test disagrees; the rule is in the report",
        title_style="",
    )

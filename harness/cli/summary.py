"""The table printed at the end of ``harness run``."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _fmt(value: Any, spec: str = ".3f") -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def print_summary(console, run_id: str, config, rows: list[dict[str, Any]], final: dict[str, Any], db_path: Path) -> None:
    """The per-iteration table of a finished run and where it was recorded."""
    from rich import box
    from rich.table import Table

    table = Table(
        title=f"run {run_id}",
        caption="win: vs the testbed's reference outputs (ties ½), ± standard error within this run; "
        "acc, β·Δ (median), w (mean DPO weight), noise: the selected pairs before training",
        title_justify="left",
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    for header in ("it", "labels", "win ± se", "gold", "KL", "acc", "β·Δ", "w", "noise", "s"):
        table.add_column(header, justify="right", no_wrap=True)
    for row in rows:
        seconds = sum(v or 0.0 for k, v in row.items() if k.startswith("time_"))
        table.add_row(
            str(row["iteration"]),
            _fmt(row.get("labels")),
            f"{row['win_rate']:.3f}±{row.get('win_rate_se') or 0.0:.3f}",
            _fmt(row.get("gold_reward")),
            _fmt(row.get("kl"), ".2f"),
            _fmt(row.get("sel_ranking_accuracy")),
            _fmt(row.get("sel_beta_margin_q50"), ".2f"),
            _fmt(row.get("sel_mean_dpo_weight"), ".2f"),
            _fmt(row.get("sel_label_noise"), ".2f"),
            _fmt(seconds if row["iteration"] else None, ".1f"),
        )
    console.print(table)
    console.print(
        f"final win rate [bold]{final['final_win_rate']:.3f}[/] (pi_0 {final['initial_win_rate']:.3f}), "
        f"{final['labels_used']} of {config.budget} labels, {final['wall_seconds']:.1f} s "
        f"({final['overhead_share']:.1%} outside model compute)"
    )
    seed = seed_ledger_line(rows[0]) if rows else None
    if seed:
        console.print(seed)
    for line in judge_spending_lines(config, rows):
        console.print(line)
    for row in rows:
        if row.get("warning"):
            console.print(f"[yellow]warning[/] (iteration {row['iteration']}): {row['warning']}")
    console.print(f"recorded as run [bold]{run_id}[/] in {db_path}; compare with "
                  f"[bold]{leaderboard_command(db_path)}[/]")


def leaderboard_command(db_path, command: str = "harness leaderboard") -> str:
    """``command``, with ``--db PATH`` unless ``db_path`` is the database it opens by default."""
    from pathlib import Path

    from leaderboard.store import default_db_path

    import shlex

    if Path(db_path).resolve() == Path(default_db_path()).resolve():
        return command
    return f"{command} --db {shlex.quote(str(db_path))}"


def judge_spending_lines(config, rows: list[dict[str, Any]]) -> list[str]:
    """One line per paying judge: requests and tokens it spent, beside the labels they bought."""
    lines = []
    labels = sum(row.get("labels") or 0 for row in rows)
    for role in ("annotator", "evaluator", "gold_judge", "proxy_judge"):
        choice = getattr(config, role, None)
        total = {key[len(role) + 1:]: sum(row.get(key) or 0 for row in rows)
                 for key in {k for row in rows for k in row if k.startswith(f"{role}_")}}
        if choice is None or not any(k in total for k in ("prompt_tokens", "requests")):
            continue
        model = choice.settings.get("model")
        lines.append(
            f"{role.replace('_', ' ')} {choice.name}{'/' + model if model else ''}: "
            f"{total.get('requests', 0)} requests, {total.get('prompt_tokens', 0):,} prompt + "
            f"{total.get('completion_tokens', 0):,} completion tokens, {total.get('cached', 0)} answers from the cache"
            + (f"; {labels} labels" if role == "annotator" else "")
        )
    return lines


def seed_ledger_line(row: dict[str, Any]) -> str | None:
    """What pi_0's seed round cost, from pi_0's row (its seed ledger, kept apart from the budget); None without one."""
    if row.get("seed_round") != "on_policy":
        return None
    cache = row.get("seed_cache")
    how = {"hit": "cached: bought by the run that trained it", "miss": "bought by this run, now cached",
           "rebuilt": "bought by this run (the cached copy was damaged)", "off": "bought by this run"}.get(cache, "")
    return (f"pi_0: on-policy seed round on {row.get('seed_prompts')} held-out prompts, "
            f"{row.get('seed_labels')} seed labels from {row.get('seed_annotator')} on the seed ledger, not the "
            f"budget ({how}); {row.get('seed_train_steps')} DPO steps")

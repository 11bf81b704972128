"""The report of a regime map: :data:`MAP_REPORT` and :data:`MAP_FIGURE` (one row per map cell, one column per
claim, each cell holds / null / reverses with its Δ and interval). See :mod:`harness.experiments.regime_map`."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

MAP_REPORT = "regime-map.md"
MAP_FIGURE = "regime_map.png"
_WORD_CODES = {"holds": 1, "null": 0, "reverses": -1, "too few pairs": 0}


def _cell_text(result: Any) -> str:
    from harness.experiments.study_report import fmt_signed
    from harness.experiments.verdicts import fmt_p

    stats = result.stats
    if result.word == "too few pairs":
        return f"too few pairs (n={stats.get('n', 0)})"
    ci = "" if stats.get("ci_low") is None else f" [{fmt_signed(stats['ci_low'])}, {fmt_signed(stats['ci_high'])}]"
    return f"{fmt_signed(stats['mean'])}{ci}, p {fmt_p(stats.get('p_adjusted'))} **{result.word}** (n={stats['n']})"


def write_map_report(study: Any, regime_map: Any, outcome: Any, out_dir: Path, *, command: str,
                     db_path: Path, dpi: int = 110) -> list[Path]:
    """Write the map report (:data:`MAP_REPORT`) and its figure (:data:`MAP_FIGURE`) into ``out_dir``; return their paths (report first)."""
    from harness import __version__
    from harness.experiments.study import study_time
    from harness.experiments.study_report import md_escape, rebuild_command, time_text
    from harness.experiments.sweep import format_seeds
    from harness.provenance import git_commit

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = study.plan
    rows, runs = outcome.rows, outcome.runs
    wanted = regime_map.n_runs
    centre = f"`--regime {study.regime}`" if study.regime else "the testbed's defaults (no `--regime`)"
    claims = list(regime_map.plan.claims)
    figure = _figure(regime_map, rows, out_dir / MAP_FIGURE, dpi=dpi)
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    seeds = format_seeds(regime_map.studies[0].grids[0].seeds) if regime_map.studies[0].grids else "–"
    lines = [
        f"# Regime map of study `{plan.name}`{' (quick)' if study.quick else ''}: exploratory",
        "",
        "> **Exploratory.** Each cell moves one knob (or two, along a slice) away from the study's regime and "
        "re-tests the claims on the map's seeds. It shows which knobs a verdict depends on. It confirms nothing: "
        "a cell that holds here is a hypothesis for confirmation seeds, not a verdict.",
        "",
        f"- **Command:** `{command}`",
        f"- **Rebuild without running:** `{rebuild_command(command)}`",
        f"- **Harness:** pairsel-harness {__version__}, git commit `{git_commit() or 'unknown'}`; written {now}",
        f"- **Around:** {centre}; every value below replaces that regime's value of its knob in every grid the "
        "claims use (a grid's own options included)",
        f"- **Seeds:** {seeds}; **runs:** {len(runs)} of {wanted} finished, in {len(regime_map.cells)} map cells "
        f"(cells whose configs coincide share their runs); database `{db_path}`",
        f"- **Measured time:** {time_text(study_time(runs))}",
        "- **Rule:** each claim's test as in the study's report; its p-values adjusted over its map cells "
        f"({plan.correction.upper()}); **holds** = significant in the source's direction, **reverses** = "
        "significant against it, **null** = neither",
        "",
        "## Axes",
        "",
        "| axis | values (sweep arguments) |",
        "| --- | --- |",
    ]
    for axis, values in regime_map.plan.axes.items():
        lines.append(f"| {md_escape(axis)} | " + "; ".join(f"{md_escape(label)}: `{md_escape(_args_text(args))}`"
                                                   for label, args in values.items()) + " |")
    if regime_map.plan.slices:
        lines += ["", "Slices: " + ", ".join(f"{a} × {b}" for a, b in regime_map.plan.slices) + "."]
    lines += ["", "## The map", "", "| map cell | " + " | ".join(md_escape(c) for c in claims) + " |",
              "| --- | " + " | ".join("---" for _ in claims) + " |"]
    by_key = {(r.cell.label, r.claim): r for r in rows}
    for cell in regime_map.cells:
        lines.append(f"| {md_escape(cell.label)} | " + " | ".join(
            md_escape(_cell_text(by_key[(cell.label, c)])) if (cell.label, c) in by_key else "–" for c in claims) + " |")
    counts = {word: sum(1 for r in rows if r.word == word) for word in _WORD_CODES}
    lines += ["", f"Of {len(rows)} (cell, claim) tests: {counts['holds']} hold, {counts['null']} null, "
              f"{counts['reverses']} reverse" + (f", {counts['too few pairs']} have too few pairs"
                                                  if counts["too few pairs"] else "") + ".",
              "", f"![regime map]({figure.name})", ""]
    report = out_dir / MAP_REPORT
    report.write_text("\n".join(lines), encoding="utf-8")
    return [report, figure]


def _args_text(args: dict[str, Any]) -> str:
    parts = [f"-o {o}" for o in args.get("options", [])]
    parts += [f"--{k.replace('_', '-')} {v}" for k, v in args.items() if k != "options"]
    return " ".join(parts)


def _figure(regime_map: Any, rows: list[Any], path: Path, *, dpi: int) -> Path:
    """One row per map cell, one column per claim; green holds, grey null, red reverses; Δ written in."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    claims = list(regime_map.plan.claims)
    cells = [c.label for c in regime_map.cells]
    by_key = {(r.cell.label, r.claim): r for r in rows}
    grid = [[_WORD_CODES[by_key[(cell, c)].word] if (cell, c) in by_key else 0 for c in claims] for cell in cells]
    fig, ax = plt.subplots(figsize=(2.2 + 1.9 * len(claims), 1.2 + 0.42 * len(cells)))
    ax.imshow(grid, cmap=ListedColormap(["#d9534f", "#d0d0d0", "#5cb85c"]), vmin=-1, vmax=1, aspect="auto")
    for i, cell in enumerate(cells):
        for j, claim in enumerate(claims):
            result = by_key.get((cell, claim))
            mean = None if result is None else result.stats.get("mean")
            ax.text(j, i, "–" if mean is None else f"{mean:+.3f}", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(claims)), [c.replace("-", "-\n", 2) for c in claims], fontsize=7)
    ax.set_yticks(range(len(cells)), cells, fontsize=8)
    ax.set_title("Regime map (exploratory): green holds, grey null, red reverses; mean Δ written in", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path

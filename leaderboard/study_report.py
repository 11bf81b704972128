"""A study's report: ``report.md`` and its PNG figures (matplotlib's Agg backend).

:func:`write_report` takes :class:`harness.study.StudyResults` (computed from the
leaderboard by :func:`harness.study.results`; nothing runs here) and writes:

* ``report.md`` -- the plan, the exact command, harness version / git commit /
  date, the verdict rule, the verdict table (claim, finding, metric, contrast,
  the source's direction and value, measured mean Δ ± sd, 95% CI, n, detectable
  difference, verdict), the cells each claim compared, then the figures;
* ``forest.png`` -- every claim's mean paired difference with its 95% interval,
  one panel per metric (their scales differ), coloured by verdict;
* ``curves_<grid>.png`` -- per-iteration curves of a grid's cells, mean ± std
  band over seeds, one panel per metric (the helpers of :mod:`leaderboard.plots`).
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from leaderboard.plots import _colors, _legend, _per_iteration

__all__ = ["REPORT_NAME", "VERDICT_COLORS", "fmt_signed", "verdict_rows", "write_report"]

REPORT_NAME = "report.md"
VERDICT_COLORS = {
    "reproduced": "tab:green", "reversed": "tab:red", "not separable": "tab:gray",
    "separated (a > b)": "tab:orange", "separated (a < b)": "tab:orange", "too few pairs": "tab:purple",
}


def fmt_signed(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:+.{digits}f}"


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def verdict_rows(results: Any) -> list[dict[str, str]]:
    """One row per claim with the report's columns, as text (shared by report.md and the terminal)."""
    from harness.study import contrast_label

    rows = []
    for item in results.claims:
        claim, stats = item.claim.plan, item.stats
        ci = "–" if stats["ci_low"] is None else f"[{fmt_signed(stats['ci_low'])}, {fmt_signed(stats['ci_high'])}]"
        measured = "–" if stats["mean"] is None else (
            f"{fmt_signed(stats['mean'])} ± {_fmt(stats['std'])}" if stats["std"] is not None else fmt_signed(stats["mean"]))
        source = claim.direction + (f" ({claim.source_value})" if claim.source_value else "")
        rows.append({
            "claim": claim.id, "finding": claim.finding, "metric": claim.metric_label,
            "contrast": contrast_label(item.claim), "source": source,
            "measured": measured, "ci": ci, "n": str(stats["n"]),
            "detectable": _fmt(stats["half_width"]), "mde80": _fmt(stats["mde80"]),
            "verdict": stats["verdict"],
        })
    return rows


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def write_report(results: Any, out_dir: Path, *, command: str, db_path: Path, dpi: int = 110) -> list[Path]:
    """Write ``report.md`` and the figures of ``results`` into ``out_dir`` (created); return the paths
    (report first)."""
    from harness import __version__
    from harness.provenance import git_commit

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    study = results.study
    plan = study.plan
    figures = write_figures(results, out_dir, dpi=dpi)
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"# Study `{plan.name}`{' (quick)' if study.quick else ''}: {plan.title}",
        "",
        plan.description,
        "",
        f"- **Plan:** `{plan.path}` ({len(plan.grids)} grids, {len(plan.claims)} claims)"
        + (f"; source: {plan.source}" if plan.source else ""),
        f"- **Variant:** {study.variant}" + (f" — {plan.quick.get('description', '')}" if study.quick else ""),
        f"- **Command:** `{command}`",
        f"- **Rebuild this report without running:** `{_report_command(command)}`",
        f"- **Harness:** pairsel-harness {__version__}, git commit `{git_commit() or 'unknown'}`",
        f"- **Date:** {now}",
        f"- **Database:** `{db_path}` — runs tagged `study = {plan.name}`, "
        f"`study_variant = {study.variant}`; finished {results.counts['finished']} of "
        f"{results.counts['wanted']} planned runs",
        "",
    ]
    if study.quick:
        lines += ["> **Quick variant:** few seeds and small pools. It checks the mechanics (runs, reuse, "
                  "report); its verdicts are not scientific evidence.", ""]
    lines += ["## Verdict rule", "", f"Alpha = 0.05. {_rule()}", "", "## Verdicts", ""]
    headers = ["claim", "finding", "metric", "contrast A − B", "source direction (value)", "measured mean Δ ± sd",
               "95% CI", "n", "detectable Δ (CI half-width)", "MDE (80% power)", "verdict"]
    keys = ["claim", "finding", "metric", "contrast", "source", "measured", "ci", "n", "detectable", "mde80", "verdict"]
    lines.append("| " + " | ".join(headers) + " |")
    lines.append("| " + " | ".join("---" for _ in headers) + " |")
    for row in verdict_rows(results):
        cells = [_md(row[k]) for k in keys]
        cells[-1] = f"**{cells[-1]}**"
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## What each claim compared", "",
              "| claim | source | A: grid / cell (config) | B: grid / cell (config) | mean A | mean B | pairs (seed, world) |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for item in results.claims:
        (ga, ca), (gb, cb) = item.claim.a, item.claim.b
        pairs = ", ".join(f"({p[0]},{p[1]})" for p in item.stats["pairs"][:12])
        if len(item.stats["pairs"]) > 12:
            pairs += f", … ({len(item.stats['pairs'])})"
        lines.append("| " + " | ".join(_md(x) for x in (
            item.claim.plan.id, item.claim.plan.source or "–",
            f"{ga} / {ca.key or 'the only cell'} ({ca.config_hash[:8]})",
            f"{gb} / {cb.key or 'the only cell'} ({cb.config_hash[:8]})",
            _fmt(item.a_mean), _fmt(item.b_mean), pairs or "–")) + " |")
    notes = [f"{item.claim.plan.id}: {note}" for item in results.claims for note in item.notes]
    notes += [f"{item.claim.plan.id}: {item.claim.plan.note}" for item in results.claims if item.claim.plan.note]
    if notes:
        lines += ["", "Notes:", ""] + [f"- {_md(n)}" for n in notes]
    lines += ["", "## Grids", "", "| grid | sweep id | cells | seeds | iterations | budget | finished runs |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    from harness.sweep import format_seeds

    for grid in study.grids:
        done = sum(len(v) for v in results.runs[grid.plan.name].values())
        lines.append(f"| {grid.plan.name} | `{grid.sweep_id}` | {len(grid.cells)} | {format_seeds(grid.seeds)} | "
                     f"{grid.spec.iterations} | {grid.spec.budget} | {done} / {len(grid.cells) * len(grid.seeds)} |")
    lines += ["", "Browse a grid's runs with `harness leaderboard --sweep SWEEP_ID`.", "", "## Figures", ""]
    for path in figures:
        lines += [f"![{path.stem}]({path.name})", ""]
    report = out_dir / REPORT_NAME
    report.write_text("\n".join(lines))
    return [report, *figures]


def _rule() -> str:
    from harness.study import VERDICT_RULE

    return VERDICT_RULE


def _report_command(command: str) -> str:
    parts = command.split()
    if len(parts) >= 3 and parts[1] == "study" and parts[2] == "run":
        parts[2] = "report"
        skip = {"--jobs", "-j", "--executor"}
        out, i = [], 0
        while i < len(parts):
            if parts[i] in skip:
                i += 2
                continue
            if parts[i] in ("--force",):
                i += 1
                continue
            out.append(parts[i])
            i += 1
        return " ".join(out)
    return command


# -- figures ----------------------------------------------------------------------------------------


def write_figures(results: Any, out_dir: Path, *, dpi: int = 110) -> list[Path]:
    """The plan's ``[[figure]]`` list (default: a forest plot and curves of every multi-iteration grid)."""
    import matplotlib

    matplotlib.use("Agg")
    from harness.study import FigurePlan

    study = results.study
    figures = list(study.plan.figures) or [
        FigurePlan("forest"),
        *(FigurePlan("curves", g.plan.name, ("win_rate", "gold_reward", "kl"))
          for g in study.grids if g.spec.iterations > 1),
    ]
    paths = []
    for figure in figures:
        if figure.kind == "forest":
            paths.append(_forest(results, out_dir / "forest.png", figure.title, dpi))
        else:
            paths.append(_curves(results, figure, out_dir / f"curves_{figure.grid}.png", dpi))
    return paths


def _forest(results: Any, path: Path, title: str, dpi: int) -> Path:
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    panels: dict[str, list[Any]] = {}
    for item in results.claims:
        panels.setdefault(item.claim.plan.metric_label, []).append(item)
    heights = [max(1.2, 0.42 * len(items) + 0.8) for items in panels.values()] or [1.5]
    fig, axes = plt.subplots(len(heights), 1, figsize=(10, sum(heights) + 1.2), layout="constrained",
                             height_ratios=heights, squeeze=False)
    for ax, (metric, items) in zip(axes[:, 0], panels.items()):
        for row, item in enumerate(reversed(items)):
            stats = item.stats
            color = VERDICT_COLORS.get(stats["verdict"], "black")
            if stats["mean"] is None:
                ax.text(0, row, "no pairs", ha="center", va="center", fontsize=8, color=color)
                continue
            if stats["ci_low"] is not None:
                ax.plot([stats["ci_low"], stats["ci_high"]], [row, row], color=color, linewidth=2.2)
            ax.plot(stats["mean"], row, marker="o", color=color, markersize=7)
            wanted = {"a > b": "A > B", "a < b": "A < B", "none": "A = B"}[item.claim.plan.direction]
            ax.annotate(f"source: {wanted} · n={stats['n']}", (1.0, row), xycoords=("axes fraction", "data"),
                        xytext=(4, 0), textcoords="offset points", va="center", fontsize=8, color="dimgray")
        ax.axvline(0.0, color="black", linewidth=0.8)
        ax.set_yticks(range(len(items)), [item.claim.plan.id for item in reversed(items)], fontsize=8)
        ax.set_ylim(-0.6, len(items) - 0.4)
        ax.set_title(f"Δ {metric} (A − B)", fontsize=10, loc="left")
        ax.grid(axis="x", alpha=0.3)
    handles = [Line2D([], [], color=c, marker="o", linewidth=2) for c in
               ("tab:green", "tab:red", "tab:gray", "tab:orange")]
    _legend(fig, handles, ["reproduced", "reversed", "not separable", "separated (source: none)"])
    fig.suptitle(title or "Paired differences A − B: mean and 95% interval over seeds", fontsize=11)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def _curves(results: Any, figure: Any, path: Path, dpi: int) -> Path:
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    grid = results.study.grid(figure.grid)
    cells = grid.cells
    runs = results.runs[grid.plan.name]
    colors = _colors(len(cells))
    metrics: Sequence[str] = figure.metrics or ("win_rate",)
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.4 * len(metrics) + 0.6, 4.6), layout="constrained",
                             squeeze=False)
    labels = []
    for cell in cells:
        n = len(runs.get(cell.config_hash, []))
        labels.append(f"{cell.key or grid.plan.name} (n={n})")
    for ax, metric in zip(axes[0], metrics):
        drawn = False
        for cell, color in zip(cells, colors):
            steps, mean, std, _ = _per_iteration(runs.get(cell.config_hash, []), results.iterations, metric)
            if not steps:
                continue
            drawn = True
            ax.plot(steps, mean, marker="o", color=color, linewidth=2)
            ax.fill_between(steps, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                            color=color, alpha=0.18, linewidth=0)
        if not drawn:
            ax.text(0.5, 0.5, f"no per-iteration {metric}", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(metric)
        ax.set_xlabel("iteration (0 = π₀)")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    fig.suptitle(figure.title or f"{grid.plan.name}: per-iteration metrics (mean ± std over seeds)", fontsize=11)
    _legend(fig, [Line2D([], [], color=c, marker="o", linewidth=2) for c in colors], labels)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path

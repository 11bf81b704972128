"""A study's report: ``report.md`` and its PNG figures (matplotlib's Agg backend).

:func:`write_report` takes :class:`harness.experiments.study.StudyResults` (computed from the
leaderboard by :func:`harness.experiments.study.results`; nothing runs here) and writes:

* ``report.md`` -- the plan, the exact command, harness version / git commit /
  date, the measured time of the study's runs, the verdict rule, the verdict
  design (families and their correction, margins, exploration and confirmation
  seeds, the plan's commit), the verdict table (claim, finding, metric, contrast,
  the source's direction and value, measured mean Δ ± sd, 95% CI, n, the claim's
  test, its p, the sign-flip p, the family and the adjusted p, detectable
  difference, verdict), the cells each claim compared, then the figures;
* ``forest.png`` -- every claim's mean paired difference with its 95% interval,
  one panel per metric (their scales differ), coloured by verdict;
* ``curves_<grid>.png`` -- per-iteration curves of a grid's cells, mean ± std
  band over seeds, one panel per metric (the helpers of :mod:`leaderboard.plots`).

:func:`publish` writes (or updates in place) the study's section of a combined
Markdown file such as ``docs/reproduction.md``, between ``<!-- study:NAME start -->``
and ``<!-- study:NAME end -->``, leaving the other studies' sections alone.
:func:`readme_table` turns that file into the verdict table of the docs' results page
``docs/results/index.md`` (between ``<!-- reproduction:start -->`` and ``<!-- reproduction:end -->``)::

    python -m harness.experiments.study_report --write docs/results/index.md   # rewrite the page's table
    python -m harness.experiments.study_report --check docs/results/index.md   # exit 1 if it disagrees with the file
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness import markers
from harness.reference_point import MARK, NOTE
from leaderboard.plots import figure_legend, palette, per_iteration

__all__ = ["REPORT_NAME", "fmt_signed", "publish", "readme_table", "time_text", "verdict_color",
           "verdict_rows", "write_report"]

REPORT_NAME = "report.md"
RUNS_CSV = "runs.csv"
#: The columns of runs.csv besides the run-level metrics the plan's claims read.
RUNS_CSV_COLUMNS = ("id", "study_grid", "sweep_cell", "config_hash", "seed", "world_seed", "started_at", "git_commit")
#: Colours of verdicts in figures, by the verdict's first word(s).
_VERDICT_COLORS = (
    ("reproduced", "tab:green"), ("holds", "tab:green"), ("equivalent", "tab:green"), ("no better", "tab:green"),
    ("no worse", "tab:green"),
    ("reversed", "tab:red"), ("different", "tab:red"), ("better", "tab:red"), ("worse", "tab:red"),
    ("too few pairs", "tab:purple"),
)


def verdict_color(verdict: str) -> str:
    """Green where the source's claim held, red where the data say otherwise, grey when inconclusive."""
    return next((color for prefix, color in _VERDICT_COLORS if verdict.startswith(prefix)), "tab:gray")


def fmt_signed(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:+.{digits}f}"


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _stats_cells(stats: dict[str, Any]) -> dict[str, str]:
    """The columns one :func:`harness.experiments.verdicts.claim_statistics` result fills, as text."""
    from harness.experiments.verdicts import fmt_p

    ci = "–" if stats["ci_low"] is None else f"[{fmt_signed(stats['ci_low'])}, {fmt_signed(stats['ci_high'])}]"
    measured = "–" if stats["mean"] is None else (
        f"{fmt_signed(stats['mean'])} ± {_fmt(stats['std'])}" if stats["std"] is not None else fmt_signed(stats["mean"]))
    test = {"none": "TOST", "a <= b": "no better", "a >= b": "no worse"}.get(stats["direction"], "t")
    margin = "" if stats.get("margin") is None else f" ±{stats['margin']:g}" if stats["direction"] == "none" \
        else f" {stats['margin']:g}"
    verdict = stats["verdict"] + (" †" if stats.get("sign_flip_disagrees") else "")
    return {"measured": measured, "ci": ci, "n": str(stats["n"]), "detectable": _fmt(stats["half_width"]),
            "mde80": _fmt(stats["mde80"]), "verdict": verdict, "test": test + margin, "p": fmt_p(stats["p"]),
            "p_sign_flip": fmt_p(stats["p_sign_flip"]), "p_adjusted": fmt_p(stats.get("p_adjusted")),
            "family": f"{stats.get('family', '–')} ({stats.get('family_size', '–')})",
            "smallest_margin": _fmt(stats.get("smallest_margin"))}


def verdict_rows(results: Any) -> list[dict[str, str]]:
    """One row per claim with the report's columns, as text (shared by report.md and the terminal)."""
    from harness.experiments.study import contrast_label

    section = results.study.section
    rows = []
    for item in results.claims:
        claim = item.claim.plan
        read = claim.metric if section is None else section.metric(claim.metric)
        metric = claim.metric_label if read == claim.metric else f"{claim.metric_label} (read as {read})"
        source = claim.direction + (f" ({claim.source_value})" if claim.source_value else "")
        finding = claim.finding + {"question": " (the harness's question)",
                                   "unequal": " (unequal information)"}.get(claim.kind, "")
        rows.append({
            "claim": claim.id, "finding": finding, "metric": metric,
            "contrast": contrast_label(item.claim), "source": source, **_stats_cells(item.stats),
            "was": claim.was or "–", "compare": claim.compare_label, "regime": claim_regime(results.study, item.claim),
        })
    return rows


def claim_regime(study: Any, bound: Any) -> str:
    """The regime a claim was measured in (:attr:`~harness.experiments.verdict_regime.VerdictRegime.label`); the
    two arms' labels, ``A: ... / B: ...``, when they differ."""
    a, b = study.regime_of(bound.a).label, study.regime_of(bound.b).label
    return a if a == b else f"A: {a} / B: {b}"


def regime_legend(results: Any) -> list[tuple[str, Any, list[str]]]:
    """Every distinct regime the claims were measured in: (label, its VerdictRegime, the claims), in claim order."""
    seen: dict[str, tuple[Any, list[str]]] = {}
    for item in results.claims:
        for side in (item.claim.a, item.claim.b):
            regime = results.study.regime_of(side)
            claims = seen.setdefault(regime.label, (regime, []))[1]
            if item.claim.plan.id not in claims:
                claims.append(item.claim.plan.id)
    return [(label, regime, claims) for label, (regime, claims) in seen.items()]


def _regime_lines(results: Any) -> list[str]:
    """The report's *Regimes* section: the knobs of every regime a verdict names."""
    from harness.experiments.verdict_regime import KNOB_NAMES

    study = results.study
    named = (f"ran with `--regime {study.regime}`" if study.regime else
             "ran without `--regime`, so in each testbed's defaults; a regime name below is the testbed's declared "
             "regime those defaults match")
    lines = ["## Regimes", "",
             f"Every verdict holds in the regime it was measured in, not in the testbed. This study {named}. The "
             "`regime` column of the verdict table names one of these rows: the declared regime, and after a `;` "
             "what a grid sets differently (its own options, or a fixed number of optimiser steps). How each declared "
             "regime was chosen (by outcome, or by calibration) is in `harness list testbeds TESTBED`.", "",
             "| regime | " + " | ".join(KNOB_NAMES) + " | claims |",
             "| --- | " + " | ".join("---" for _ in KNOB_NAMES) + " | --- |"]
    for label, regime, claims in regime_legend(results):
        lines.append("| " + " | ".join(md_escape(x) for x in (label, *regime.knobs.values(), ", ".join(claims))) + " |")
    return lines


def _seconds(value: float) -> str:
    value = float(value)
    if value < 120:
        return f"{value:.0f} s"
    minutes, seconds = divmod(int(round(value)), 60)
    hours, minutes = divmod(minutes, 60)
    return (f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {seconds:02d} s") + f" ({value:,.0f} s)"


def time_text(time: dict[str, Any]) -> str:
    """:func:`harness.experiments.study.study_time` in words, for report.md and the published section."""
    if time.get("busy_seconds") is None:
        return "no finished run has timestamps yet"
    first = time["first_start"].replace("T", " ").replace("+00:00", "")
    last = time["last_finish"].replace("T", " ").replace("+00:00", "")
    if first[:10] == last[:10]:
        last = last[11:]
    return (f"{_seconds(time['busy_seconds'])} while at least one run was computing, from {first} to {last} UTC; "
            f"span {_seconds(time['span_seconds'])} with pauses between commands included; "
            f"{_seconds(time['run_seconds'])} of run wall time summed over the {time['runs']} runs "
            "(from the runs' rows in the database, so an interrupted study and its re-run add up)")


def md_escape(text: Any) -> str:
    """``text`` as one Markdown table cell: pipes escaped, newlines flattened."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def write_report(results: Any, out_dir: Path, *, command: str, db_path: Path, dpi: int = 110) -> list[Path]:
    """Write ``report.md`` and the figures of ``results`` into ``out_dir`` (created); return the paths
    (report first)."""
    from harness import __version__
    from harness.provenance import git_commit
    from harness.experiments.study import study_time

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    study = results.study
    plan = study.plan
    figures = write_figures(results, out_dir, dpi=dpi)
    runs_file = write_runs_csv(results, out_dir / RUNS_CSV)
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"# Study `{plan.name}`{' (quick)' if study.quick else ''}: {plan.title}",
        "",
        plan.description,
        "",
        f"- **Plan:** `{plan.path}` ({len(plan.grids)} grids, {len(plan.claims)} claims)"
        + (f"; source: {plan.source}" if plan.source else ""),
        f"- **Variant:** {study.variant}" + (f" — {study.quick_table.get('description', '')}" if study.quick else ""),
        *([f"- **Testbed:** `[testbed.{study.testbed}]` of the plan, testbed `{study.section.testbed}`"
           + (f": {study.section.description}" if study.section.description else "")] if study.testbed else []),
        *([f"- **Claims carried:** {len(study.section.claims)} of the plan's {len(study.plan.claims)} "
           f"(the section's `claims`; the others did not run on this testbed)"]
          if study.testbed and study.section.claims is not None else []),
        f"- **Command:** `{command}`",
        f"- **Rebuild this report without running:** `{rebuild_command(command)}`",
        f"- **Harness:** pairsel-harness {__version__}, git commit `{git_commit() or 'unknown'}`",
        f"- **Date:** {now}",
        f"- **Database:** `{db_path}` — runs tagged `study = {plan.name}`, "
        f"`study_variant = {study.variant}`; finished {results.counts['finished']} of "
        f"{results.counts['wanted']} planned runs",
        f"- **Measured time:** {time_text(study_time(results.finished_runs()))}",
        "",
    ]
    if study.quick:
        lines += ["> **Quick variant:** few seeds and small pools. It checks the mechanics (runs, reuse, "
                  "report); its verdicts are not scientific evidence.", ""]
    lines += [f"> {study.standing()}", ""]
    lines += [f"> **Warning:** {md_escape(w)}" for w in plan.warnings] + ([""] if plan.warnings else [])
    lines += ["## Verdict rule", "", f"Alpha = 0.05. {_rule()}", "", *_design_lines(results), "",
              *_regime_lines(results), "", "## Verdicts", ""]
    headers = ["claim", "finding", "metric", "contrast A − B", "regime", "source direction (value)", "measured mean Δ ± sd",
               "95% CI", "n", "test", "p", "sign-flip p", "family (size)", f"{plan.correction.upper()} p",
               "detectable Δ (CI half-width)", "MDE (80% power)", "smallest equivalence margin", "verdict"]
    keys = ["claim", "finding", "metric", "contrast", "regime", "source", "measured", "ci", "n", "test", "p", "p_sign_flip",
            "family", "p_adjusted", "detectable", "mde80", "smallest_margin", "verdict"]
    lines.append("| " + " | ".join(headers) + " |")
    lines.append("| " + " | ".join("---" for _ in headers) + " |")
    marked = False
    for row in verdict_rows(results):
        cells = [md_escape(row[k]) for k in keys]
        cells[-1] = f"**{cells[-1]}**"
        lines.append("| " + " | ".join(cells) + " |")
        marked = marked or MARK in str(row["contrast"])
    if marked:  # a reference point among the arms (harness.reference_point)
        lines += ["", f"{NOTE}. Each gain as a share of the reference point's: `harness leaderboard compare` "
                  "(column 'share of †') and the browser's compare view (`share_of_reference`)."]
    lines += fair_comparison_lines(results)
    lines += ["", "## What each claim compared", "",
              "| claim | source | A: grid / cell (config) | B: grid / cell (config) | mean A | mean B | pairs (seed, world) |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for item in results.claims:
        (ga, ca), (gb, cb) = item.claim.a, item.claim.b
        pairs = ", ".join(f"({p[0]},{p[1]})" for p in item.stats["pairs"][:12])
        if len(item.stats["pairs"]) > 12:
            pairs += f", … ({len(item.stats['pairs'])})"
        lines.append("| " + " | ".join(md_escape(x) for x in (
            item.claim.plan.id, item.claim.plan.source or "–",
            f"{ga} / {ca.key or 'the only cell'} ({ca.config_hash[:8]})",
            f"{gb} / {cb.key or 'the only cell'} ({cb.config_hash[:8]})",
            _fmt(item.a_mean), _fmt(item.b_mean), pairs or "–")) + " |")
    lines += _heterogeneity_lines(results)
    earlier = [item.claim.plan for item in results.claims if item.claim.plan.was]
    if earlier:
        lines += ["", "## Re-encoded claims", "",
                  "Claims whose encoding changed, with the earlier encoding and the verdict published for it "
                  "(under the earlier rule, on the seeds then used):", "",
                  "| claim | earlier encoding and its published verdict | verdict now |", "| --- | --- | --- |"]
        now = {row["claim"]: row["verdict"] for row in verdict_rows(results)}
        lines += [f"| {md_escape(c.id)} | {md_escape(c.was)} | **{md_escape(now[c.id])}** |" for c in earlier]
    notes = [f"{item.claim.plan.id}: {note}" for item in results.claims for note in item.notes]
    notes += [f"{item.claim.plan.id}: {item.claim.plan.note}" for item in results.claims if item.claim.plan.note]
    if notes:
        lines += ["", "Notes:", ""] + [f"- {md_escape(n)}" for n in notes]
    lines += ["", "## Grids", "", "| grid | sweep id | cells | seeds | iterations | budget | finished runs |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    from harness.experiments.sweep import format_seeds

    for grid in study.grids:
        done = sum(len(v) for v in results.runs[grid.plan.name].values())
        lines.append(f"| {grid.plan.name} | `{grid.sweep_id}` | {len(grid.cells)} | {format_seeds(grid.seeds)} | "
                     f"{grid.spec.iterations} | {grid.spec.budget} | {done} / {len(grid.cells) * len(grid.seeds)} |")
    derived = [g for g in study.grids if g.derived_from is not None]
    if derived:
        lines += ["", "Grids named `GRID@stepsS` are derived by matched-steps claims: the plan's grid GRID with "
                  "`trainer.steps=S` added to its options, keeping only the cells those claims compare. "
                  "`GRID@tune` holds tuned claims' arms at every point of their tuning grid, on the tuning seeds; "
                  "`GRID@tuned` the point each arm's tuning chose, on the grid's confirmation seeds."]
    lines += ["", "Browse a grid's runs with `harness leaderboard --sweep SWEEP_ID`. Every run the verdicts used, "
              f"with the run-level metrics of the claims, is in [{runs_file.name}]({runs_file.name}): each "
              "verdict can be recomputed from it.", "", "## Figures", ""]
    for path in figures:
        lines += [f"![{path.stem}]({path.name})", ""]
    report = out_dir / REPORT_NAME
    report.write_text("\n".join(lines))
    return [report, *figures]


# -- fair comparisons: each modifier's verdict beside the plain one ----------------------------------------


def _verdict_cell(stats: dict[str, Any]) -> str:
    ci = "" if stats["ci_low"] is None else f" [{fmt_signed(stats['ci_low'])}, {fmt_signed(stats['ci_high'])}]"
    verdict = stats["verdict"] + (" †" if stats.get("sign_flip_disagrees") else "")
    return f"{fmt_signed(stats['mean'])}{ci} **{verdict}** (n={stats['n']})"


def fair_comparison_rows(results: Any) -> list[dict[str, Any]]:
    """One row per plain claim that has fair comparisons (claims with ``of``), plus one per modified claim without
    ``of``: the plain claim's result and each modifier's (:data:`harness.experiments.study_plan.COMPARISONS`)."""
    items = {item.claim.plan.id: item for item in results.claims}
    rows: dict[str, dict[str, Any]] = {}
    for item in results.claims:
        claim = item.claim.plan
        if claim.compare == "final":
            continue
        base = items.get(claim.of) if claim.of else None
        key = base.claim.plan.id if base is not None else claim.id
        row = rows.setdefault(key, {"id": key, "final": base, "metric": claim.plain_metric_label,
                                    "regime": claim_regime(results.study, (base or item).claim)})
        row.setdefault(claim.compare, []).append(item)
    order = {item.claim.plan.id: i for i, item in enumerate(results.claims)}
    return sorted(rows.values(), key=lambda r: order[r["id"]])


def fair_comparison_lines(results: Any) -> list[str]:
    """The report's *Fair comparisons* section; nothing when no claim of the plan has ``compare``."""
    from harness.experiments.matched import PATH_METRICS
    from harness.experiments.verdicts import COMPARISON_RULE

    rows = fair_comparison_rows(results)
    if not rows:
        return []
    lines = ["", "## Fair comparisons", "", COMPARISON_RULE, "",
             "| contrast (plain claim) | metric | regime | plain | matched KL | matched steps | tuned |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        plain = row["final"]
        cells = [md_escape(row["id"]), md_escape(row["metric"]), md_escape(row["regime"]),
                 _verdict_cell(plain.stats) if plain is not None else "–"]
        for compare in ("matched_kl", "matched_steps", "tuned"):
            items = row.get(compare, [])
            if items:
                cells.append("<br>".join(md_escape(_verdict_cell(i.stats) + _compare_detail(i)) for i in items))
            elif compare == "matched_kl" and plain is not None and _one_path(plain.claim):
                cells.append("not defined (one run's iterations: one path)")
            else:
                cells.append("–")
        lines.append("| " + " | ".join(cells) + " |")
    matched = [item for item in results.claims if item.matched is not None]
    if matched:
        lines += ["", "Matched KL, per claim: the common KL k* over the seeds (mean, min–max), the arms' mean final "
                  "KL, the mean Δ at k* of the win rate and the gold reward, the seeds where an arm did not reach k* "
                  "(not in the test), the seeds whose KL path is not monotone (read at the first crossing), and the "
                  "design-level k̄ with the mean Δ there (described, not tested).", "",
                  "| claim | k* mean (min–max) | final KL A / B | Δ win rate at k* | Δ gold reward at k* | "
                  "seeds not reaching k* | non-monotone paths | design-level k̄: Δ win rate, Δ gold reward "
                  "(seeds not reaching) |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for item in matched:
            m = item.matched
            mean, low, high = m.k_stats()
            final_a, final_b = m.final_kl_means()
            k = "–" if mean is None else f"{mean:.3f} ({low:.3f}–{high:.3f})"
            missing = m.missing
            shown = str(len(missing)) + (": " + ", ".join(f"({s.key[0]},{s.key[1]})" for s in missing)
                                         if missing else "")
            bumpy = m.non_monotone
            design = "–" if m.design_k is None else (
                f"k̄ {m.design_k:.3f}: " + ", ".join(fmt_signed(m.design_delta.get(c)) for c in PATH_METRICS)
                + f" ({len(m.design_missing)})")
            lines.append("| " + " | ".join(md_escape(x) for x in (
                item.claim.plan.id, k, f"{_fmt(final_a)} / {_fmt(final_b)}", fmt_signed(m.delta("win_rate")),
                fmt_signed(m.delta("gold_reward")), shown, str(len(bumpy)), design)) + " |")
    stepped = [item for item in results.claims if item.steps_seen is not None]
    if stepped:
        lines += ["", "Matched steps, per claim: the steps both arms were set to per iteration, each arm's derived "
                  "cell, and the optimiser steps its runs recorded per iteration (`train_steps`).", "",
                  "| claim | steps per iteration | A: cell | A: train_steps | B: cell | B: train_steps |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for item in stepped:
            (ga, ca), (gb, cb) = item.claim.a, item.claim.b
            seen = item.steps_seen
            steps = str(item.claim.steps)
            if item.claim.steps != item.claim.plan.steps:
                steps += f" (quick: the plan's {item.claim.plan.steps} × budget_scale)"
            lines.append("| " + " | ".join(md_escape(x) for x in (
                item.claim.plan.id, steps, f"{ga} / {ca.key or 'the only cell'}",
                ", ".join(map(str, seen["a"])) or "–", f"{gb} / {cb.key or 'the only cell'}",
                ", ".join(map(str, seen["b"])) or "–")) + " |")
    lines += tuning_lines(results)
    return lines


def _compare_detail(item: Any) -> str:
    """What a modifier fixed, after its verdict: the steps of a matched-steps claim, each arm's tuned point."""
    from harness.experiments.tuned import describe_point

    if item.claim.plan.compare == "matched_steps":
        return f" ({item.claim.steps} steps)"
    if item.tuning:
        arms = item.tuning
        if "a" in arms and "b" in arms and arms["a"] is arms["b"]:
            return f" (both: {describe_point(arms['a'].chosen_point())})"
        return " (" + "; ".join(f"{side.upper()}: {describe_point(arm.chosen_point())}"
                                for side, arm in arms.items()) + ")"
    return ""


def tuning_lines(results: Any) -> list[str]:
    """Every tuned arm's tuning grid: the mean tuning metric at each point on the tuning seeds, the chosen one
    in bold; nothing when no claim is tuned."""
    from harness.experiments.sweep import format_seeds
    from harness.experiments.tuned import TUNE_METRIC, describe_point

    arms = list(results.study.arms.values())
    if not arms:
        return []
    lines = ["", f"Tuned, per arm: the mean {TUNE_METRIC} of the final policy at each point of the tuning grid, "
             "on the tuning seeds (exploration seeds, never a verdict's); the point in bold is the one tuning chose "
             "and the arm's confirmation runs used. A point with fewer runs than seeds shows how many finished.", "",
             "| arm | tuning seeds | point: mean | chosen |", "| --- | --- | --- | --- |"]
    for arm in arms:
        points = []
        for cell, point in zip(arm.cells, arm.points):
            mean = arm.means.get(cell.config_hash)
            count = arm.counts.get(cell.config_hash, 0)
            text = f"{describe_point(point)}: {_fmt(mean)}" + (f" ({count}/{len(arm.seeds)})"
                                                                if count != len(arm.seeds) else "")
            points.append(f"**{md_escape(text)}**" if arm.chosen is cell else md_escape(text))
        lines.append("| " + " | ".join([md_escape(f"{arm.grid} / {arm.base.key or 'its cell'}"),
                                          format_seeds(arm.seeds), "<br>".join(points),
                                          md_escape(describe_point(arm.chosen_point()))]) + " |")
    return lines


def _one_path(bound: Any) -> bool:
    """Whether a claim's two sides are one cell (one run's iterations): no matched-KL version exists."""
    return bound.a[0] == bound.b[0] and bound.a[1].config_hash == bound.b[1].config_hash


def heterogeneity_rows(results: Any) -> list[dict[str, Any]]:
    """Cochran's Q and I² of every ``[[heterogeneity]]`` group of the plan (one contrast across regimes)."""
    from harness.experiments.statistics import cochran_q

    stats = {item.claim.plan.id: item.stats for item in results.claims}
    rows = []
    for group in results.study.plan.heterogeneity:
        if not all(claim in stats for claim in group.claims):  # a testbed section that does not carry them all
            continue
        members = [stats[claim] for claim in group.claims]
        if any(s["std"] is None or s["n"] < 2 or s["std"] == 0 for s in members):
            rows.append({"group": group, "result": None})
            continue
        ses = [s["std"] / math.sqrt(s["n"]) for s in members]
        rows.append({"group": group, "result": cochran_q([s["mean"] for s in members], ses)})
    return rows


def _heterogeneity_lines(results: Any) -> list[str]:
    rows = heterogeneity_rows(results)
    if not rows:
        return []
    lines = ["", "## Heterogeneity across regimes", "",
             "One contrast measured in different regimes or recipes (the plan's `[[heterogeneity]]` groups): "
             "Cochran's Q with inverse-variance weights, its p (χ², k − 1 degrees of freedom), I², and the pooled "
             "mean difference. A large I² says the regime changes the effect; never computed across blocks of "
             "seeds of one design.", "",
             "| group | claims | Q | df | p | I² | pooled Δ ± se |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        group, out = row["group"], row["result"]
        claims = ", ".join(group.claims)
        if out is None:
            lines.append(f"| {md_escape(group.title or '–')} | {md_escape(claims)} | – | – | – | – | too few pairs |")
            continue
        lines.append(f"| {md_escape(group.title or '–')} | {md_escape(claims)} | {out['q']:.2f} | {out['df']} | "
                     f"{out['p']:.4f} | {100 * out['i2']:.0f}% | {fmt_signed(out['pooled'])} ± {out['pooled_se']:.3f} |")
    return lines


def write_runs_csv(results: Any, path: Path) -> Path:
    """Every run the verdicts used, with the run-level metrics of the plan's claims (one row per run), and the
    tuning metric when a claim is tuned (so each tuned arm's choice can be recomputed too)."""
    import csv

    from harness.experiments.tuned import TUNE_METRIC

    section = results.study.section
    read = (lambda m: m) if section is None else section.metric  # noqa: E731  (the testbed's reading of a metric)
    metrics = list(dict.fromkeys(read(c.metric) for c in (item.claim.plan for item in results.claims)
                                 if c.iteration is None and "iteration" not in c.a and "iteration" not in c.b))
    if results.study.arms and TUNE_METRIC not in metrics:
        metrics.append(TUNE_METRIC)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([*RUNS_CSV_COLUMNS, *metrics])
        for run in results.finished_runs():
            writer.writerow([run.get(c) for c in RUNS_CSV_COLUMNS] + [_run_metric(run, m) for m in metrics])
    return path


def _run_metric(run: dict[str, Any], metric: str) -> Any:
    from harness.experiments.study import metric_value

    return metric_value(run, [], metric, None)


def _design_lines(results: Any) -> list[str]:
    """The study's design as the report states it: families, correction, margins and seeds."""
    from harness.experiments.study_plan import ALL_CLAIMS, seed_list
    from harness.experiments.sweep import format_seeds

    study, plan = results.study, results.study.plan
    lines = ["## Design", ""]
    sizes: dict[str, int] = {}
    for claim in plan.claims:
        sizes[claim.family] = sizes.get(claim.family, 0) + 1
    correction = {"holm": "Holm (family-wise error rate)", "bh": "Benjamini-Hochberg (false discovery rate)"}
    lines.append(f"- **Multiplicity:** {correction[plan.correction]}, within each family:")
    for family, size in sizes.items():
        note = plan.families.get(family, "")
        shown = "all claims" if family == ALL_CLAIMS else f"`{family}`"
        lines.append(f"  - {shown}: {size} claim{'s' if size != 1 else ''}" + (f": {md_escape(note)}" if note else ""))
    if plan.margins:
        shown = ", ".join(f"`{metric}` ±{value:g}" for metric, value in plan.margins.items())
        lines.append(f"- **Equivalence / non-inferiority margins:** {shown}. Why: {md_escape(plan.margin_reason)}")
    explored = "not declared" if plan.exploration_seeds is None else format_seeds(seed_list(plan.exploration_seeds))
    lines.append(f"- **Seeds:** exploration {explored}; this report's grids ran on "
                 + "; ".join(f"{g.plan.name} {format_seeds(g.seeds)}" for g in study.grids))
    commit = _plan_commit(plan.path)
    lines.append(f"- **Plan file:** `{plan.path}`, last committed in `{commit}`" if commit
                 else f"- **Plan file:** `{plan.path}` (not in a git checkout: its commit is unknown)")
    return lines


def _plan_commit(path: Path) -> str | None:
    """The last git commit that touched the plan file, when it lives in a git checkout."""
    import subprocess

    try:
        out = subprocess.run(["git", "log", "-1", "--format=%h %cI", "--", Path(path).name], cwd=Path(path).parent,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _rule() -> str:
    from harness.experiments.verdicts import VERDICT_RULE

    return VERDICT_RULE


def rebuild_command(command: str) -> str:
    """The ``harness study report ...`` command that rebuilds what ``command`` (a ``study run``) wrote, running nothing."""
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
    from harness.experiments.study_plan import FigurePlan

    study = results.study
    figures = list(study.plan.figures) or [
        FigurePlan("forest"),
        *(FigurePlan("curves", g.plan.name, ("win_rate", "gold_reward", "kl"))
          for g in study.grids if g.spec.iterations > 1),
    ]
    ran = {g.plan.name for g in study.grids}
    paths = []
    for figure in figures:
        if figure.kind != "forest" and figure.grid not in ran:  # a grid a testbed section does not run
            continue
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
            color = verdict_color(stats["verdict"])
            if stats["mean"] is None:
                ax.text(0, row, "no pairs", ha="center", va="center", fontsize=8, color=color)
                continue
            if stats["ci_low"] is not None:
                ax.plot([stats["ci_low"], stats["ci_high"]], [row, row], color=color, linewidth=2.2)
            ax.plot(stats["mean"], row, marker="o", color=color, markersize=7)
            wanted = {"a > b": "A > B", "a < b": "A < B", "none": "A = B", "a <= b": "A ≤ B",
                      "a >= b": "A ≥ B"}[item.claim.plan.direction]
            ax.annotate(f"source: {wanted} · n={stats['n']}", (1.0, row), xycoords=("axes fraction", "data"),
                        xytext=(4, 0), textcoords="offset points", va="center", fontsize=8, color="dimgray")
        ax.axvline(0.0, color="black", linewidth=0.8)
        ax.set_yticks(range(len(items)), [item.claim.plan.id for item in reversed(items)], fontsize=8)
        ax.set_ylim(-0.6, len(items) - 0.4)
        ax.set_title(f"Δ {metric} (A − B)", fontsize=10, loc="left")
        ax.grid(axis="x", alpha=0.3)
    handles = [Line2D([], [], color=c, marker="o", linewidth=2) for c in
               ("tab:green", "tab:red", "tab:gray", "tab:purple")]
    figure_legend(fig, handles, ["reproduced / holds / equivalent / no better / no worse", "reversed / different / "
                                 "better / worse", "not significant / inconclusive", "too few pairs"])
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
    colors = palette(len(cells))
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
            steps, mean, std, _ = per_iteration(runs.get(cell.config_hash, []), results.iterations, metric)
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
    figure_legend(fig, [Line2D([], [], color=c, marker="o", linewidth=2) for c in colors], labels)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


# -- the combined reproduction file and the results page's table ----------------------------------------------

PUBLISH_HEADER = """\
# Reproducing the papers

This file is generated; do not edit it by hand. Each section is one study of the harness, written by
`harness study run NAME --publish FILE` (or `harness study report NAME --publish FILE`, which runs
nothing and rebuilds the section from the database). A study rewrites only its own section, between its
`<!-- study:NAME start -->` and `<!-- study:NAME end -->` markers. To regenerate a section, run the
command at its top again: finished runs in its database are reused, so only missing runs run. The
verdict table of the docs' results page is made from this file with
`python -m harness.experiments.study_report --write docs/results/index.md`.

Every claim is tested on the paired differences Δ = A − B over its confirmation seeds, and its p-value is
adjusted over the claim's family (Holm). A direction claim is **reproduced** (or, for the harness's own
questions, **holds**) when the adjusted p < 0.05 with the source's sign, **reversed** with the other sign,
**not significant** otherwise; "no difference" is tested for equivalence within the plan's margin (TOST),
"no better" / "no worse" one-sided against it. The full rule, the margins and their reasons, and the
exact sign-flip p beside every t-based p are in each study's report. What the synthetic testbed cannot
tell you: [toy-limits.md](toy-limits.md); verdicts that changed with this rule: [verdict-changes.md](verdict-changes.md).
"""
#: The marker lines of the verdict table on the results page, and the command that rewrites it.
TABLE_START, TABLE_END = markers.markers("reproduction")
TABLE_PAGE = "docs/results/index.md"
TABLE_COMMAND = f"python -m harness.experiments.study_report --write {TABLE_PAGE}"
BLOCK_PREFIX = "↳ seeds "  # rows of blocks of seeds in sections published before blocks were retired


def section_key(results: Any) -> str:
    """The name of a study's section: the study's name, with ``-quick`` for the quick variant and ``@REGIME`` for
    a study run with ``--regime``."""
    return results.study.label


def _markers(key: str) -> tuple[str, str]:
    return f"<!-- study:{key} start -->", f"<!-- study:{key} end -->"


def _link(target: Path, base: Path) -> str:
    return Path(os.path.relpath(Path(target).resolve(), Path(base).resolve())).as_posix()


def publish_section(results: Any, path: Path, *, command: str, db_path: Path, paths: Sequence[Path]) -> str:
    """The Markdown of one study's section (markers included): command, provenance, measured time,
    links to the report and figures (``paths``, report first), and the verdict table."""
    from harness import __version__
    from harness.provenance import git_commit
    from harness.experiments.study import run_provenance, study_time

    study, plan = results.study, results.study.plan
    runs = results.finished_runs()
    made = run_provenance(runs)
    shown = lambda values: " / ".join(values) or "unknown"  # noqa: E731
    commits = " / ".join(f"`{c}`" for c in made["git_commit"]) or "unknown"
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    base = Path(path).parent
    report, figures = paths[0], paths[1:]
    start, end = _markers(section_key(results))
    lines = [
        start,
        f"## `{section_key(results)}`: {plan.title}",
        "",
        f"- **Command:** `{command}`",
        f"- **Runs made with:** pairsel-harness {shown(made['harness'])}, git commit {commits}; "
        f"Python {shown(made['python'])}, numpy {shown(made['numpy'])}, torch {shown(made['torch'])}",
        f"- **Section written:** {now}, by pairsel-harness {__version__} at git commit `{git_commit() or 'unknown'}`",
        f"- **Database:** `{db_path}`: {results.counts['finished']} of {results.counts['wanted']} planned runs "
        f"finished (tagged `study = {plan.name}`, `study_variant = {study.variant}`)",
        "- **Regime:** " + (f"`--regime {study.regime}`" if study.regime else "the testbeds' defaults (no `--regime`)")
        + "; each verdict's regime is in its row, and the knobs of each are listed below the table",
        f"- **Measured time:** {time_text(study_time(runs))}",
        f"- **Report:** [{_link(report, base)}]({_link(report, base)}); figures: "
        + (", ".join(f"[{p.name}]({_link(p, base)})" for p in figures) or "none"),
        "",
    ]
    lines += [f"> {study.standing()}", ""]
    lines += ["| claim | finding | metric | contrast A − B | regime | source direction | measured Δ ± sd | 95% CI | n | "
              f"p | sign-flip p | family (size) | {plan.correction.upper()} p | verdict |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in verdict_rows(results):
        lines.append("| " + " | ".join(md_escape(x) for x in (
            row["claim"], row["finding"], row["metric"], row["contrast"], row["regime"], row["source"].split(" (", 1)[0],
            row["measured"], row["ci"], row["n"], row["p"], row["p_sign_flip"], row["family"], row["p_adjusted"],
            f"**{row['verdict']}**")) + " |")
    lines += ["", "Regimes (testbed · declared regime · β · training · τ · DPO reference · evaluator):", ""]
    lines += [f"- **{md_escape(label)}**: {md_escape(regime.full)}" for label, regime, _ in regime_legend(results)]
    lines += ["", "The verdict rule and each claim's test are in the study's report.", "", end]
    return "\n".join(lines)


def replace_study_section(text: str, key: str, section: str) -> str:
    """``text`` with study ``key``'s section (its marker lines included) replaced by ``section``, or
    ``section`` appended when the study has none yet; every other byte is kept. Markers count only as
    whole lines, so the header's mention of them is not a section."""
    start, end = _markers(key)
    try:
        found = markers.span(text, start, end)
    except markers.MarkerError:
        raise ValueError(f"the section of {key!r} lacks one of its marker lines {start} / {end}, or has them "
                         "in the wrong order; restore the section or delete both, then publish again") from None
    if found is not None:
        return text[:found[0]] + section + text[found[1]:]
    return text.rstrip("\n") + "\n\n" + section + "\n"


def publish(results: Any, path: Path, *, command: str, db_path: Path, paths: Sequence[Path]) -> Path:
    """Write (or update in place) this study's section of the combined Markdown file ``path``; a new
    file starts with :data:`PUBLISH_HEADER`. Other studies' sections are left untouched."""
    path = Path(path)
    section = publish_section(results, path, command=command, db_path=db_path, paths=paths)
    text = path.read_text(encoding="utf-8") if path.exists() else PUBLISH_HEADER
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(replace_study_section(text, section_key(results), section), encoding="utf-8")
    return path


_CELL = re.compile(r"(?<!\\)\|")
_SECTION = re.compile(r"^<!-- study:(\S+) start -->$(.*?)^<!-- study:\1 end -->$", re.S | re.M)


def _cells(line: str) -> list[str]:
    return [c.strip().replace("\\|", "|") for c in _CELL.split(line.strip())[1:-1]]


def published_verdicts(text: str) -> dict[str, list[dict[str, Any]]]:
    """The verdict tables of a file written by :func:`publish`: per study section, one dict per claim
    (``claim``, ``measured``, ``ci``, ``verdict`` and ``blocks``: a list of (seeds, verdict))."""
    out: dict[str, list[dict[str, Any]]] = {}
    for match in _SECTION.finditer(text):
        rows: list[dict[str, Any]] = []
        header: list[str] | None = None
        for line in match.group(2).splitlines():
            if not line.startswith("|"):
                header = None  # a table ends at its first non-table line
                continue
            cells = _cells(line)
            if cells and cells[0] == "claim" and "verdict" in cells:
                header = cells
                continue
            if header is None or set(cells) <= {"---"}:
                continue
            row = dict(zip(header, (c.strip("*") for c in cells)))
            if row["claim"].startswith(BLOCK_PREFIX) and rows:
                rows[-1]["blocks"].append((row["claim"][len(BLOCK_PREFIX):], row["verdict"]))
                continue
            adjusted = row.get("HOLM p") or row.get("BH p")  # the family-adjusted p, when the section has it
            rows.append({"claim": row["claim"], "measured": row["measured Δ ± sd"].split(" ±", 1)[0],
                         "ci": row["95% CI"], "verdict": row["verdict"], "blocks": [], "p_adjusted": adjusted,
                         "regime": row.get("regime")})  # sections published before regimes were named lack it
        out[match.group(1)] = rows
    return out


def readme_table(text: str, source: str = "docs/reproduction.md") -> str:
    """The results page's verdict table, made from the published file's text (see :func:`published_verdicts`)."""
    published = published_verdicts(text)
    every = [row for rows in published.values() for row in rows]
    with_blocks = any(row["blocks"] for row in every)  # sections published before blocks were retired
    with_adjusted = any(row.get("p_adjusted") for row in every)
    with_regime = any(row.get("regime") for row in every)
    headers = ["study", "claim"] + (["regime"] if with_regime else []) + ["measured Δ (A − B)", "95% CI"] \
        + (["adjusted p"] if with_adjusted else []) + ["verdict"] + (["verdict per block of seeds"] if with_blocks else [])
    lines = [f"<!-- generated by `{TABLE_COMMAND}` from {source}; do not edit -->", "",
             "| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    for study, rows in published.items():
        for row in rows:
            cells = [study, row["claim"], *([row.get("regime") or "not named"] if with_regime else []),
                     row["measured"], row["ci"]]
            cells += [row.get("p_adjusted") or "–"] if with_adjusted else []
            cells.append(f"**{row['verdict']}**")
            if with_blocks:
                cells.append(" · ".join(f"{seeds}: {verdict}" for seeds, verdict in row["blocks"]))
            lines.append("| " + " | ".join(md_escape(x) for x in cells) + " |")
    return "\n".join(lines) + "\n"


def readme_section(text: str) -> str:
    """What lies between the reproduction markers of a page (without the markers' own lines)."""
    return markers.section(text, TABLE_START, TABLE_END)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.experiments.study_report",
        description="The verdict table of the docs' results page, made from the published reproduction file.")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", metavar="FILE", type=Path, help=f"replace the reproduction table of FILE ({TABLE_PAGE})")
    group.add_argument("--check", metavar="FILE", type=Path, help="exit 1 if FILE's reproduction table is stale")
    parser.add_argument("--from", dest="source", metavar="FILE", type=Path, default=Path("docs/reproduction.md"),
                        help="the file written by `harness study run NAME --publish FILE` (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        generated = readme_table(args.source.read_text(encoding="utf-8"), args.source.as_posix())
    except OSError as exc:
        print(f"cannot read {args.source}: {exc.strerror or exc}; publish a study first "
              f"(harness study run NAME --publish {args.source})", file=sys.stderr)
        return 2
    if args.write is None and args.check is None:
        sys.stdout.write(generated)
        return 0
    return markers.refresh(args.write or args.check, TABLE_START, TABLE_END, generated,
                           check=args.check is not None, command=TABLE_COMMAND)


if __name__ == "__main__":
    raise SystemExit(main())

"""The transfer report: transfer.md and transfer.png (both testbeds' effects on one axis).

The numbers are :func:`harness.experiments.transfer.transfer`'s; this module only writes them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.experiments.transfer import DIAGNOSTICS, MIN_SEEDS, OUTCOMES, SATURATION, Side, TransferResults

REPORT = "transfer.md"
FIGURE = "transfer.png"

OUTCOME_COLORS = {"confirmed": "tab:green", "contradicted": "tab:red", "not separable": "tab:gray",
                  "too few seeds": "tab:purple", "no toy direction": "tab:olive", "not run": "lightgray",
                  "not compared": "tab:brown"}


def _num(value: float | None, digits: int = 3, signed: bool = True) -> str:
    if value is None:
        return "–"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _delta(side: Side) -> str:
    s = side.stats
    if s is None:
        return "not run"
    if s.get("mean") is None:
        return f"too few pairs (n={side.n})"
    ci = f" [{_num(s['ci_low'])}, {_num(s['ci_high'])}]" if s.get("ci_low") is not None else ""
    return f"{_num(s['mean'])}{ci}, n={side.n}"


def _relative(side: Side) -> str:
    s = side.stats
    if s is None or s.get("mean") is None:
        return "–"
    value = side.relative(s["mean"])
    if value is None:
        return "– (B did not gain)" if side.baseline_gain is not None else "–"
    return f"{value:+.2f}×"


def _verdict(side: Side) -> str:
    s = side.stats
    if s is None:
        return "–"
    p = s.get("p_adjusted")
    return f"{s.get('verdict', '–')} (adj. p {'–' if p is None else f'{p:.3g}'})"


def transfer_lines(results: TransferResults, *, command: str) -> list[str]:
    """The Markdown of the transfer report."""
    plan = results.plan
    tally = results.tally()
    lines = [
        f"# Transfer: `{plan.name}` on its own testbed and under `[testbed.{results.testbed}]`"
        + (" (quick)" if results.quick else ""),
        "",
        f"- **Command:** `{command}`",
        f"- **Toy:** study `{results.toy_label}`, {results.counts['toy'].get('finished', 0)} of "
        f"{results.counts['toy'].get('wanted', 0)} runs finished",
        f"- **Real:** study `{results.real_label}`, {results.counts['real'].get('finished', 0)} of "
        f"{results.counts['real'].get('wanted', 0)} runs finished",
        f"- **Claims carried:** {len(results.rows)}; outcomes: "
        + ", ".join(f"{name} {count}" for name, count in tally.items() if count),
        "",
    ]
    if results.quick:
        lines += ["**Quick mode: too few seeds.** This run checks the mechanics only; no claim is confirmed or "
                  "contradicted from it, and nothing here is a transfer conclusion.", ""]
    lines += [
        "## How to read it",
        "",
        "Each claim's paired Δ = A − B is computed on each testbed by the study engine (paired t interval, exact "
        "sign-flip p, p adjusted within the claim's family). *Relative* is Δ divided by the baseline arm's (B's) "
        "mean gain over π_0 on that testbed (over all of B's runs, treated as a constant: its own uncertainty is "
        "not in the interval, and a gain near 0 makes the ratio large), so the two testbeds share a scale. "
        "Outcomes on the real testbed:",
        "",
        *[f"- **{name}**: {text}." for name, text in OUTCOMES.items()],
        "",
        f"Confirmed and contradicted need at least {MIN_SEEDS} paired seeds on the real testbed and a decided "
        "verdict on both (adjusted p < 0.05, the interval excluding 0); *not separable* is no information and is "
        "counted neither as confirmation nor as contradiction.",
        "",
        "## Claims",
        "",
        "| claim | metric (toy → real) | toy Δ [95% CI] | toy relative | toy verdict | real Δ [95% CI] "
        "| real relative | real verdict | outcome |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in results.rows:
        metric = row.toy.metric if row.toy.metric == row.real.metric else f"{row.toy.metric} → {row.real.metric}"
        lines.append(f"| {row.claim.id} | {metric} | {_delta(row.toy)} | {_relative(row.toy)} | {_verdict(row.toy)} "
                     f"| {_delta(row.real)} | {_relative(row.real)} | {_verdict(row.real)} | **{row.outcome}** |")
    lines += ["", "## Mechanism diagnostics", "",
              "Mean over each arm's runs of the per-iteration means (iterations 1 on); KL moved is the last "
              f"iteration's KL(π‖π_ref) minus π_0's. |median β·Δ| > {SATURATION:g} marks pairs already ordered "
              "(DPO weight below 0.12).", "",
              "| claim | arm | testbed | " + " | ".join(label for _, label in DIAGNOSTICS) + " |",
              "| --- | --- | --- | " + " | ".join("---" for _ in DIAGNOSTICS) + " |"]
    for row in results.rows:
        for arm in ("a", "b"):
            for name, side in (("toy", row.toy), ("real", row.real)):
                values = side.diagnostics.get(arm, {})
                lines.append(f"| {row.claim.id} | {arm.upper()} | {name} | "
                             + " | ".join(_num(values.get(label), signed=False) for _, label in DIAGNOSTICS) + " |")
    flagged = [row for row in results.rows if row.flags]
    lines += ["", "## Where the regimes differ", ""]
    lines += ([f"- **{row.claim.id}**: " + "; ".join(row.flags) for row in flagged]
              or ["No claim's diagnostics differ past the flags' thresholds."])
    lines += ["", "## A second evaluator", ""]
    for row in results.rows:
        if row.independent is None:
            lines.append(f"- **{row.claim.id}**: {row.independence}.")
        else:
            lines.append(f"- **{row.claim.id}**: {row.independence}: Δ {_delta(row.independent)} (described, "
                         "not tested). Gold improving while this falls would be reward hacking.")
    lines += ["", "## Seeds the real testbed needs", "",
              "The real side's runs are the pilot: from their spread of paired Δ, the seeds a design needs to detect "
              "the effect the toy predicts (the toy's relative Δ times the real baseline's gain) 80 % of the time at "
              "α = 0.05, two-sided, before any family adjustment."
              + (" In quick mode the toy side is the quick variant too: its effects, the predictions here, are "
                 "the quick toy's, not the full study's." if results.quick else ""), ""]
    for row in results.rows:
        if row.predicted is None:
            lines.append(f"- **{row.claim.id}**: no estimate ({no_prediction(row)}).")
            continue
        needed = ("no estimate (fewer than 2 paired seeds in the pilot)" if row.real.n < 2 else
                  f"{row.seeds_needed} seeds" if row.seeds_needed is not None else "more than 1,000 seeds")
        lines.append(f"- **{row.claim.id}**: predicted Δ {_num(row.predicted)} on {row.real.metric}; pilot "
                     f"n = {row.real.n}; {needed}.")
    lines += ["", f"![Both testbeds' effects]({FIGURE})", ""]
    return lines


def no_prediction(row) -> str:
    """Why the toy predicts no effect on the real testbed's scale for ``row`` (its ``predicted`` is None)."""
    if row.toy.stats is None or row.real.stats is None or row.toy.stats.get("mean") is None:
        return "a side has no runs"
    return (f"the real baseline arm did not gain over pi_0, and the toy reads another metric ({row.toy.metric}), "
            "so the toy's effect has no scale on the real testbed")


def write_transfer(results: TransferResults, out_dir: Path, *, command: str, dpi: int = 110) -> list[Path]:
    """Write transfer.md and transfer.png under ``out_dir``; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    figure = _figure(results, out_dir / FIGURE, dpi)
    report = out_dir / REPORT
    report.write_text("\n".join(transfer_lines(results, command=command)), encoding="utf-8")
    return [report, figure]


def _figure(results: TransferResults, path: Path, dpi: int) -> Path:
    """Both testbeds' Δ per claim on one axis: relative to each baseline's gain where both have one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    rows = list(reversed(results.rows))
    fig, ax = plt.subplots(figsize=(10, max(2.0, 0.55 * len(rows) + 1.2)), layout="constrained")
    relative_everywhere = all(r.toy.relative(1.0) is not None and r.real.relative(1.0) is not None for r in rows)
    for y, row in enumerate(rows):
        for offset, side, marker in ((0.15, row.toy, "o"), (-0.15, row.real, "s")):
            s = side.stats
            if s is None or s.get("mean") is None:
                continue
            scale = (lambda v: side.relative(v)) if relative_everywhere else (lambda v: v)
            mean = scale(s["mean"])
            if s.get("ci_low") is not None:
                ax.plot([scale(s["ci_low"]), scale(s["ci_high"])], [y + offset] * 2,
                        color=OUTCOME_COLORS[row.outcome] if side is row.real else "tab:blue", linewidth=2)
            ax.plot(mean, y + offset, marker=marker, markersize=7,
                    color=OUTCOME_COLORS[row.outcome] if side is row.real else "tab:blue")
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(rows)), [r.claim.id for r in rows], fontsize=8)
    ax.set_xlabel("Δ (A − B) in units of the baseline arm's gain over π_0" if relative_everywhere
                  else "Δ (A − B), each testbed's own metric")
    ax.grid(axis="x", alpha=0.3)
    present = [name for name in OUTCOME_COLORS if any(r.outcome == name for r in rows)]
    handles = [Line2D([], [], color="tab:blue", marker="o", linewidth=2),
               *[Line2D([], [], color=OUTCOME_COLORS[name], marker="s", linewidth=2) for name in present]]
    ax.legend(handles, ["toy", *[f"real: {name}" for name in present]], fontsize=7, loc="upper left",
              bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    ax.set_title(f"{results.plan.name}: toy ({results.toy_label}) and real ({results.real_label})", fontsize=10)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def transfer_table(results: TransferResults) -> list[dict[str, Any]]:
    """One dict per claim, for ``--json`` and the terminal table."""
    out = []
    for row in results.rows:
        out.append({
            "claim": row.claim.id, "toy_metric": row.toy.metric, "real_metric": row.real.metric,
            "toy_mean": (row.toy.stats or {}).get("mean"), "toy_verdict": (row.toy.stats or {}).get("verdict"),
            "toy_relative": row.toy.relative((row.toy.stats or {}).get("mean")),
            "real_mean": (row.real.stats or {}).get("mean"), "real_verdict": (row.real.stats or {}).get("verdict"),
            "real_relative": row.real.relative((row.real.stats or {}).get("mean")),
            "real_n": row.real.n, "outcome": row.outcome, "flags": row.flags,
            "seeds_needed": row.seeds_needed, "independence": row.independence,
        })
    return out

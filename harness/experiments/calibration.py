"""Calibrate a regime to the papers' selection diagnostics, outcome-blind by construction.

A regime's knobs are set here from what the papers report about the pairs
they selected at iteration 1, never from how well any strategy then did:

* **β·Δ of the most extreme subset** (Yang et al. 2024, Figure 4c: the
  corpus-largest/instance-largest subset has a reward margin of 21.51). Eq. 4
  defines the margin with β inside, but the figure does not say which it
  shows, so there are two readings (:data:`READINGS`): β·Δ = 21.51, or an
  unscaled margin Δ = 21.51 at the paper's β = 0.1, i.e. β·Δ = 2.151. Each
  reading gives its own regime. At iteration 1 the selected pairs do not
  depend on β (the margin selectors rank by |Δ|), so β* = target / mean |Δ|
  of that subset, averaged over the calibration seeds.
* **Ranking accuracy of small- and large-margin subsets** (Figure 4b: 55.04 %
  and 54.06 % for corpus-random/instance-smallest and
  corpus-smallest/instance-random, 63.10 % and 60.72 % for
  corpus-random/instance-largest and corpus-largest/instance-random). They do
  not depend on β either; the annotator's temperature τ moves them (and π_0,
  whose offline round is labelled by the same annotator). τ* is the grid value
  with the smallest sum of squared differences over the four subsets.
* **The label-noise share** of every subset (the share of its labels that
  disagree with the exact gold) is reported beside them. The sources give no
  number for it (Yang's labeller is itself the gold reward model; Huang's
  Figure 3 compares strategies, not a level), so it is read, never fitted.

Only iteration 1 runs, and only up to the diagnostics of its labelled pairs
(:func:`harness.iteration.training_data`): nothing is trained after the world
is built (π_0's offline round belongs to the world) and nothing is evaluated.
A test holds the calibration to both.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from harness.budget import Ledger
from harness.config import plan_run
from harness.iteration import RunContext, StageTimer, begin, draw, label, sample, score, select, training_data
from harness.labelling import MemoryLabelDesk
from harness.loop import build_world
from harness.progress import NullReporter
from harness.ranks import SINGLE
from harness.run_request import RunRequest

#: (instance selector, corpus selector) of each subset, with the paper's figure for it.
SUBSETS: tuple[tuple[str, str], ...] = (
    ("smallest", "random"),
    ("random", "smallest"),
    ("largest", "random"),
    ("random", "largest"),
    ("largest", "largest"),
)
#: Figure 4b: ranking accuracy of four subsets (source facts of the statistics issue).
RANKING_ACCURACY = {
    ("smallest", "random"): 0.5504,
    ("random", "smallest"): 0.5406,
    ("largest", "random"): 0.6310,
    ("random", "largest"): 0.6072,
}
#: Figure 4c: the corpus-largest/instance-largest subset's reward margin and KL.
EXTREME_SUBSET = ("largest", "largest")
FIGURE_MARGIN = 21.51
FIGURE_KL = 16.18
PAPER_BETA = 0.1
#: The two readings of Figure 4c's margin, as the β·Δ a regime's extreme subset should have.
READINGS = {
    "beta-inside": FIGURE_MARGIN,  # Eq. 4's margin includes beta: beta * delta = 21.51
    "unscaled": FIGURE_MARGIN * PAPER_BETA,  # delta = 21.51 at the paper's beta 0.1: beta * delta = 2.151
}
#: τ values tried (the annotator's Bradley-Terry temperature; 0 = noiseless).
TAUS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)
DIAGNOSTICS = ("pairs", "mean_abs_margin", "beta_margin_q50", "mean_dpo_weight", "ranking_accuracy", "label_noise",
               "selected_kl")


def subset_name(subset: tuple[str, str]) -> str:
    instance, corpus = subset
    return f"corpus-{corpus}/instance-{instance}"


def iteration_one_diagnostics(registry, *, instance: str, corpus: str, options: Sequence[str], seed: int,
                              reporter=None) -> dict[str, Any]:
    """The diagnostics of iteration 1's labelled pairs, exactly as a run records them (``sel_*``), and nothing after.

    The run is the default one (``harness run`` with the two selectors and
    ``options``); it stops once the pairs are labelled and their diagnostics
    computed, before any training.
    """
    reporter = reporter or NullReporter()
    plan = plan_run(registry, RunRequest.from_values(instance_selector=instance, corpus_selector=corpus,
                                                     options=tuple(options), seed=int(seed)))
    config, components = plan.config, plan.components
    world = build_world(components, config.world_seed, reporter)
    run = RunContext(config, components, world, reporter, StageTimer(), SINGLE, MemoryLabelDesk(), None,
                     lambda row: None, policy=world.initial_policy, reference=world.reference_policy,
                     ledger=Ledger(config.budget), rows=[], history=[])
    it = begin(run, 1)
    for step in (draw, sample, score, select, label):
        step(run, it)
    training_data(run, it)
    return dict(it.diagnostics)


@dataclass
class Calibration:
    """The measured diagnostics per τ and subset, and the regimes chosen from them."""

    seeds: list[int]
    options: list[str]
    taus: list[float]
    table: dict[float, dict[tuple[str, str], dict[str, float | None]]]  # tau -> subset -> mean diagnostics
    tau: float
    losses: dict[float, float]
    betas: dict[str, float]  # reading -> beta*
    commit: str | None = None  # the harness's commit when the calibration began (the code that measured)

    def regimes(self) -> dict[str, list[str]]:
        """reading -> the options of its regime."""
        return {reading: [f"trainer.beta={_round(beta)}", f"testbed.tau={self.tau:g}"]
                for reading, beta in self.betas.items()}


def _round(value: float) -> str:
    """Three significant digits: the calibration's seeds do not support more."""
    return f"{float(f'{value:.3g}'):g}"


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None and math.isfinite(v)]
    return sum(known) / len(known) if known else None


def calibrate(registry, *, seeds: Sequence[int], options: Sequence[str] = (), taus: Sequence[float] = TAUS,
              progress: Callable[[str], None] | None = None) -> Calibration:
    """Measure every subset at every τ on ``seeds``; choose τ* by Figure 4b and β* per reading by Figure 4c."""
    from harness.provenance import git_commit

    say = progress or (lambda text: None)
    commit = git_commit()  # before anything runs: the code that measures, not whatever is checked out at the end
    table: dict[float, dict[tuple[str, str], dict[str, float | None]]] = {}
    for tau in taus:
        table[tau] = {}
        for subset in SUBSETS:
            rows = []
            for seed in seeds:
                rows.append(iteration_one_diagnostics(registry, instance=subset[0], corpus=subset[1],
                                                      options=[*options, f"testbed.tau={tau:g}"], seed=seed))
            table[tau][subset] = {key: _mean([row.get(key) for row in rows]) for key in DIAGNOSTICS}
            say(f"tau {tau:g}, {subset_name(subset)}: ranking accuracy "
                f"{table[tau][subset]['ranking_accuracy']:.3f}, mean |delta| {table[tau][subset]['mean_abs_margin']:.3f}")
    losses = {tau: sum((table[tau][subset]["ranking_accuracy"] - target) ** 2
                       for subset, target in RANKING_ACCURACY.items()) for tau in taus}
    tau_star = min(taus, key=lambda tau: (losses[tau], tau))  # a tie goes to the less noisy annotator
    margin = table[tau_star][EXTREME_SUBSET]["mean_abs_margin"]
    betas = {reading: target / margin for reading, target in READINGS.items()}
    return Calibration(seeds=list(seeds), options=list(options), taus=list(taus), table=table, tau=tau_star,
                       losses=losses, betas=betas, commit=commit)


# ---------------------------------------------------------------------- output

READING_TEXT = {
    "beta-inside": "Figure 4c's margin read as beta * delta (Eq. 4 puts beta inside): beta * mean |delta| = 21.51",
    "unscaled": "Figure 4c's margin read as an unscaled delta at the paper's beta 0.1: beta * mean |delta| = 2.151",
}


def regime_name(reading: str) -> str:
    """The regime a reading of Figure 4c gives: ``calibrated-unscaled``, ``calibrated-beta-inside``."""
    return f"calibrated-{reading}"


def as_json(result: Calibration) -> dict[str, Any]:
    """The whole calibration as plain data (the table keyed by τ, then subset name)."""
    return {
        "seeds": result.seeds,
        "options": result.options,
        "taus": result.taus,
        "tau": result.tau,
        "losses": {f"{tau:g}": loss for tau, loss in result.losses.items()},
        "betas": result.betas,
        "regimes": {regime_name(reading): options for reading, options in result.regimes().items()},
        "targets": {"ranking_accuracy": {subset_name(s): v for s, v in RANKING_ACCURACY.items()},
                    "extreme_subset": subset_name(EXTREME_SUBSET), "beta_margin": READINGS,
                    "figure_kl": FIGURE_KL},
        "table": {f"{tau:g}": {subset_name(subset): values for subset, values in rows.items()}
                  for tau, rows in result.table.items()},
    }


def print_report(result: Calibration, console) -> None:
    """The chosen τ's diagnostics against the figures, every τ's loss, and the regimes."""
    from rich.table import Table

    rows = result.table[result.tau]
    table = Table(title=f"iteration-1 diagnostics at tau = {result.tau:g} (mean over seeds "
                        f"{', '.join(map(str, result.seeds))}; beta 1)", title_justify="left")
    for header in ("subset", "pairs", "mean |Δ|", "ranking acc.", "paper", "label noise", "selected KL"):
        table.add_column(header, justify="left" if header == "subset" else "right")
    for subset in SUBSETS:
        values = rows[subset]
        paper = RANKING_ACCURACY.get(subset)
        table.add_row(subset_name(subset), f"{values['pairs']:.0f}", f"{values['mean_abs_margin']:.3f}",
                      f"{values['ranking_accuracy']:.3f}", "–" if paper is None else f"{paper:.3f}",
                      "–" if values["label_noise"] is None else f"{values['label_noise']:.3f}",
                      f"{values['selected_kl']:.3f}")
    console.print(table)
    console.print("sum of squared ranking-accuracy differences by tau: "
                  + ", ".join(f"{tau:g}: {loss:.4f}" for tau, loss in result.losses.items()), highlight=False)
    for reading, options in result.regimes().items():
        console.print(f"{regime_name(reading)}: {' '.join('-o ' + o for o in options)}  "
                      f"({READING_TEXT[reading]}; beta* = {result.betas[reading]:.4g})", highlight=False)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(float(value)) if isinstance(value, float) else str(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def regime_tables(result: Calibration, commit: str | None) -> str:
    """The TOML tables of the calibrated regimes, with their provenance."""
    from harness.experiments.sweep import format_seeds

    out = []
    rows = result.table[result.tau]
    for reading, options in result.regimes().items():
        provenance = {
            "calibrated_on_commit": commit or "unknown",
            "command": "harness calibrate --seeds " + format_seeds(result.seeds)
                       + "".join(f" -o {o}" for o in result.options),
            "seeds": result.seeds,
            "taus": result.taus,
            "tau_loss": {f"{tau:g}": round(loss, 6) for tau, loss in result.losses.items()},
            "reading": READING_TEXT[reading],
            "mean_abs_margin_extreme": round(float(rows[EXTREME_SUBSET]["mean_abs_margin"]), 6),
            "ranking_accuracy": {subset_name(s): round(float(rows[s]["ranking_accuracy"]), 4) for s in SUBSETS},
            "label_noise": {subset_name(s): round(float(rows[s]["label_noise"] or 0.0), 4) for s in SUBSETS},
        }
        description = (f"Calibrated by harness calibrate, outcome-blind: tau from Yang et al.'s Figure 4b ranking "
                       f"accuracies, beta from {READING_TEXT[reading]}. Training strength and the reference are the "
                       f"testbed's defaults: no pre-training diagnostic informs them.")
        out.append(f"[{regime_name(reading)}]\nchosen_by = \"calibration\"\ndescription = {_toml_value(description)}\n"
                   f"options = {_toml_value(list(options))}\nprovenance = {_toml_value(provenance)}\n")
    return "\n".join(out)


def write_regimes(result: Calibration, path) -> None:
    """Replace the calibrated regimes' tables in the regimes file at ``path`` (the others are kept verbatim)."""
    import os
    from pathlib import Path

    from harness.regimes import load_regimes

    path = Path(path)
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    names = {regime_name(reading) for reading in READINGS}
    kept, skipping = [], False
    for line in text.splitlines(keepends=True):
        header = line.strip()
        if header.startswith("[") and not header.startswith("[["):
            skipping = header.strip("[]").split(".")[0].strip() in names
        if not skipping:
            kept.append(line)
    body = "".join(kept).rstrip("\n")
    body = (body + "\n\n" if body else "") + regime_tables(result, result.commit)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(body, encoding="utf-8")
    try:
        load_regimes(partial)  # never leave a file the testbed cannot read
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)

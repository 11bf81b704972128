"""The regime a verdict was measured in: the knobs a reviewer asks about, read off a cell's resolved config.

A verdict from a testbed holds in a regime, not in the testbed. For each study
cell this module reads the settings a result depends on most: the testbed (and
its world), β, the training strength, the testbed's label noise τ, the DPO
reference (fixed π_ref or π_{i−1}) and the evaluator with the outputs it
compares against. It names the declared regime (:mod:`harness.regimes`) the
cell stands in:

- the regime the study ran in (``harness study run NAME --regime R`` records it in
  every run's config);
- else the first regime the testbed declares whose options all hold for the
  cell's testbed defaults (the synthetic testbed's defaults are ``outcome-chosen``);
- else ``testbed defaults``.

A cell whose knobs differ from its regime's (a grid's own ``-o`` options, a
matched-steps grid's fixed steps) is labelled with the regime's name and what
differs, so ``outcome-chosen; training 1 epoch at lr 0.001, batch 64`` is
read as it is: the outcome-chosen regime with a weaker recipe.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

KNOB_NAMES = ("testbed", "β", "training", "τ", "reference", "evaluator")


@dataclass(frozen=True)
class Knobs:
    """The settings a verdict names, as text, in :data:`KNOB_NAMES` order."""

    testbed: str
    beta: str
    training: str
    tau: str
    reference: str
    evaluator: str

    def values(self) -> tuple[str, ...]:
        return (self.testbed, self.beta, self.training, self.tau, self.reference, self.evaluator)

    def differences(self, base: Knobs) -> list[str]:
        """``["training 1 epoch at lr 0.001, batch 64", ...]``: the knobs that differ from ``base``'s."""
        return [f"{name} {mine}" for name, mine, theirs in zip(KNOB_NAMES, self.values(), base.values())
                if mine != theirs]


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def knobs(flat: Mapping[str, Any]) -> Knobs:
    """The knobs of a flat config (:func:`leaderboard.query.flat_config`); "–" for what the config lacks. A
    testbed with a ``world`` option (the synthetic testbed's bigram and staircase worlds) names its world."""
    beta = flat.get("trainer.beta")
    steps = flat.get("trainer.steps") or 0
    lr = flat.get("trainer.lr")
    batch = flat.get("trainer.batch_size")
    if steps:
        training = f"{steps} steps"
    elif flat.get("trainer.epochs") is not None:
        epochs = flat["trainer.epochs"]
        training = f"{epochs} epoch{'s' if epochs != 1 else ''}"
    else:
        training = flat.get("trainer") or "–"
    if lr is not None:
        training += f" at lr {_number(lr)}"
    if batch is not None:
        training += f", batch {batch}"
    reference = str(flat.get("reference") or "fixed")  # the DPO reference: pi_ref, or pi_{i-1}
    evaluator = str(flat.get("evaluator") or "the testbed's gold")
    if flat.get("testbed.reference_best_of") is not None:  # the outputs the win rate is measured against
        evaluator += f" against best-of-{flat['testbed.reference_best_of']} outputs"
    testbed = str(flat.get("testbed", "–"))
    if flat.get("testbed.world") is not None:  # a testbed with several worlds: which one is part of the regime
        testbed += f" (world {flat['testbed.world']})"
    return Knobs(testbed=testbed, beta="–" if beta is None else _number(beta),
                 training=training, tau=_number(flat["testbed.tau"]) if "testbed.tau" in flat else "–",
                 reference=reference, evaluator=evaluator)


@dataclass(frozen=True)
class VerdictRegime:
    """The regime one cell was measured in: its knobs, the declared regime it stands in and what differs."""

    name: str  # a declared regime's name, or "testbed defaults"
    knobs: Knobs
    differs: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """Short: ``outcome-chosen`` or ``outcome-chosen; training 128 steps at lr 0.003, batch 64``."""
        return self.name + ("; " + "; ".join(self.differs) if self.differs else "")

    @property
    def full(self) -> str:
        """Every knob: ``synthetic · outcome-chosen · β 1 · training 8 epochs at lr 0.003, batch 64 · ...``."""
        k = self.knobs
        return (f"{k.testbed} · {self.name} · β {k.beta} · training {k.training} · τ {k.tau} · "
                f"reference {k.reference} · evaluator {k.evaluator}")


class RegimeReader:
    """Describes cells' regimes, resolving each testbed's regimes (and their knobs) once."""

    def __init__(self, registry: Any):
        self.registry = registry
        self._base: dict[tuple[str, str | None], tuple[str, Knobs | None]] = {}

    def _baseline(self, testbed: str, regime: str | None) -> tuple[str, Knobs | None]:
        """The regime a cell of ``testbed`` stands in and that regime's own knobs (a default cell's)."""
        key = (testbed, regime)
        if key not in self._base:
            self._base[key] = self._resolve(testbed, regime)
        return self._base[key]

    def _resolve(self, testbed: str, regime: str | None) -> tuple[str, Knobs | None]:
        from harness.errors import HarnessError
        from harness.experiments.sweep import GridSpec, expand_grid
        from leaderboard.query import flat_config

        def default_flat(name: str | None) -> dict[str, Any]:
            spec = GridSpec.from_cli(self.registry, testbed=testbed, regime=name)
            return flat_config(expand_grid(self.registry, spec, first_seed=0)[0].config.to_dict())

        try:
            flat = default_flat(regime)
        except HarnessError:  # a testbed or regime this registry lacks: name it, list no baseline
            return regime or "testbed defaults", None
        if regime is not None:
            return regime, knobs(flat)
        declared = self.registry.get("testbed", testbed).cls.regimes()  # the default cell just built it
        for name, candidate in declared.items():
            if all(_holds(option, flat) for option in candidate.options):
                return name, knobs(flat)
        return "testbed defaults", knobs(flat)

    def describe(self, config: Any) -> VerdictRegime:
        """The regime of a cell's config (a :class:`harness.config.RunConfig`)."""
        from leaderboard.query import flat_config

        flat = flat_config(config.to_dict())
        mine = knobs(flat)
        name, base = self._baseline(str(flat.get("testbed")), getattr(config, "regime", None))
        return VerdictRegime(name, mine, tuple(mine.differences(base)) if base is not None else ())


def _holds(option: str, flat: Mapping[str, Any]) -> bool:
    """Whether one ``role.key=value`` option of a regime holds in a flat config (numbers compared as numbers)."""
    key, _, want = option.partition("=")
    key, want = key.strip(), want.strip()
    if key not in flat:
        return False
    have = flat[key]
    try:
        return float(want) == float(have)
    except (TypeError, ValueError):
        return str(have).lower() == want.lower()

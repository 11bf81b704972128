"""The options of one run, each declared once.

A run is asked for with a handful of options: which component fills each role
(``--selector``, ``--trainer``, ...), the shape of the run (``--iterations``,
``--budget``, ...), its seeds and a few switches. Every one of them is a
:class:`RunOption` in :data:`RUN_OPTIONS`, with its type, default, range and
help text, and everything else is derived from that one line:

- the parameters of ``harness run`` and ``harness sweep`` (:mod:`harness.cli.run_options`);
- :func:`harness.config.build_config`, which validates a :class:`RunRequest`;
- the defaults of :class:`harness.config.RunConfig`;
- the sweep's grid (:class:`harness.experiments.sweep.GridSpec`): an option with
  ``grid=True`` takes a comma list of values on ``harness sweep``, one grid axis;
- the keys a study plan's ``[[grid]]`` accepts.

A new run option is one new :class:`RunOption` here, plus the code that uses it.

This module imports nothing heavy: ``harness --help`` reads it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from harness.errors import UsageError
from harness.options import INT64_MAX as STORE_INT_MAX  # SQLite's INTEGER is 64-bit, signed
#: The most iterations a run may plan (each is a round of sampling, labelling and training).
MAX_ITERATIONS = 10_000

#: What an option sets: a component's name, the shape of the run, a seed, a switch, or what the run keeps on
#: disk (``storage``: it changes no number of the run, so it is left out of the strategy hash).
KINDS = ("component", "shape", "seed", "switch", "assignments", "storage")


@dataclass(frozen=True)
class RunOption:
    """One option of a run.

    ``name`` is its keyword in :func:`harness.config.build_config` and its key in
    a run's config; ``flag`` (and ``short``) its spelling on the command line.
    ``component`` names the registry kind of a component option (``selector``).
    ``min``/``max`` bound a number; ``choices`` restrict a string; ``why``
    follows the range in the error message, and ``rule`` replaces the range's
    wording there. ``grid`` says that ``harness sweep``
    (and a study grid) takes a comma list of values, one grid axis; ``sweep``
    that the option exists on ``harness sweep`` at all (the run seed does not:
    a sweep has ``--seeds``).
    """

    name: str
    type: type
    default: Any
    help: str
    kind: str
    flag: str
    short: str | None = None
    component: str | None = None
    min: float | None = None
    min_inclusive: bool = True
    max: float | None = None
    choices: tuple[str, ...] | None = None
    why: str = ""
    rule: str | None = None
    grid: bool = False
    sweep: bool = True
    metavar: str | None = None

    def requirement(self) -> str:
        """What a value must be, as the error message says it: ``must be >= 1``."""
        if self.rule is not None:
            return self.rule
        if self.choices is not None:
            return "must be one of " + ", ".join(self.choices)
        if self.min is not None and self.max is not None:
            left = "[" if self.min_inclusive else "("
            return f"must be in {left}{_fmt(self.min)}, {_fmt(self.max)}]"
        if self.min is not None:
            return f"must be {'>=' if self.min_inclusive else '>'} {_fmt(self.min)}"
        return ""

    def check(self, value: Any) -> Any:
        """``value`` if it is allowed, else UsageError naming the flag, the rule and the value."""
        if value is None:
            if self.default is None:
                return None
            raise UsageError(f"{self.flag} needs a value; its default is {self.default!r}")
        if self.kind == "assignments":
            return tuple(str(item) for item in value)
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, self.type) or (self.type is int and isinstance(value, bool)):
            raise UsageError(f"{self.flag} expects {self.type.__name__}; got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise UsageError(f"{self.flag} {self.requirement()}; got {value!r}")
        if self.type in (int, float) and not self._in_range(value):
            rule = self.requirement() + (f" ({self.why})" if self.why else "")
            raise UsageError(f"{self.flag} {rule}; got {_fmt(value)}")
        return value

    def _in_range(self, number: float) -> bool:
        if isinstance(number, float) and not math.isfinite(number):
            return False
        if self.min is not None and (number < self.min or (number == self.min and not self.min_inclusive)):
            return False
        return self.max is None or number <= self.max


def _fmt(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else f"{number:g}"


def _component(name: str, kind: str, default: str | None, help: str, *, flag: str | None = None,
               short: str | None = None) -> RunOption:
    return RunOption(name, str, default, help, "component", flag or "--" + name.replace("_", "-"), short,
                     component=kind, grid=True, metavar="NAME")


#: Every option of a run, in the order ``--help`` lists them.
RUN_OPTIONS: tuple[RunOption, ...] = (
    _component("selector", "selector", "random", "Selector for both levels (harness list selectors).", short="-s"),
    _component("instance_selector", "selector", None,
               "Override the instance-level selector (one pair per prompt)."),
    _component("corpus_selector", "selector", None, "Override the corpus-level selector (which pairs to keep)."),
    _component("allocator", "allocator", "constant", "Budget schedule over iterations.", short="-a"),
    _component("trainer", "trainer", "native", "Preference optimiser."),
    _component("gold_judge", "judge", None,
               "Judge giving gold explicit scores (1 label per response). Default: the testbed's."),
    _component("proxy_judge", "judge", None,
               "Cheap proxy reward model (calls counted, not charged). Default: the testbed's."),
    _component("annotator", "judge", None,
               "Who labels the kept pairs: a judge (harness list judges), or 'external' to hand them to people "
               "(the run stops; harness label import, then --resume). Default: the testbed's."),
    _component("evaluator", "judge", None,
               "Judge whose verdict on policy vs reference outputs is the win rate. Default: the testbed's."),
    _component("testbed", "testbed", "synthetic", "World to run in."),
    RunOption("regime", str, None,
              "A named regime of the testbed: a set of -o options declared with it and a record of how they were "
              "chosen (harness list testbeds NAME lists them; docs/usage/regimes.md). -o options still win.",
              "shape", "--regime", grid=True, metavar="NAME"),
    RunOption("iterations", int, 3, "DPO iterations.", "shape", "--iterations", "-k", min=1, max=MAX_ITERATIONS,
              why="each iteration is a whole round of sampling, labelling and training"),
    RunOption("budget", int, 3000, "Total gold labels of a run, over all its iterations.", "shape", "--budget",
              min=0, min_inclusive=False, max=STORE_INT_MAX,
              rule="must be a positive number of gold labels, at most 2^63 - 1"),
    RunOption("keep", float, 0.5, "Share of instance pairs kept at corpus level.", "shape", "--keep",
              min=0, min_inclusive=False, max=1, why="the share of instance pairs kept"),
    RunOption("n_responses", int, 8, "Responses sampled per prompt.", "shape", "--responses", "-n", min=2,
              why="a pair needs two responses"),
    RunOption("seed", int, 0, "Run seed: fixes every random stream of the run.", "seed", "--seed", min=0,
              max=STORE_INT_MAX, why="the leaderboard stores it as a 64-bit integer", sweep=False),
    RunOption("world_seed", int, None, "World seed (world, pi_ref, pi_0, eval set). Default: the run seed.",
              "seed", "--world-seed", min=0, max=STORE_INT_MAX, why="the leaderboard stores it as a 64-bit integer"),
    RunOption("reference", str, "fixed",
              "DPO reference each iteration trains against: fixed (pi_ref, the SFT model; the paper's default) "
              "or previous (pi_{i-1}). Selection scores use the reference the policy was trained with.",
              "shape", "--reference", choices=("fixed", "previous"), grid=True),
    RunOption("allow_static_policy", bool, False,
              "When an iteration's training changes no trainable parameter (too few steps, a learning rate too "
              "small, frozen weights), record a warning on its row and go on instead of failing the run.",
              "switch", "--allow-static-policy"),
    RunOption("keep_checkpoints", str, "last",
              "Checkpoints the run directory keeps: last (the latest only, older ones removed) or all (one per "
              "iteration, so harness export model RUN_ID --iteration K can write any of them).",
              "storage", "--keep-checkpoints", choices=("last", "all"), metavar="last|all"),
    RunOption("options", tuple, (), "Set a component option (repeatable): -o trainer.beta=0.5.", "assignments",
              "--option", "-o", metavar="KEY=VALUE"),
)

#: The options by name.
RUN_OPTION_BY_NAME: dict[str, RunOption] = {option.name: option for option in RUN_OPTIONS}


def run_option(name: str) -> RunOption:
    """The declaration of the run option ``name`` (KeyError for a name no option has)."""
    return RUN_OPTION_BY_NAME[name]


def defaults() -> dict[str, Any]:
    """Every run option's default, by name."""
    return {option.name: option.default for option in RUN_OPTIONS}


def sweep_options() -> tuple[RunOption, ...]:
    """The options ``harness sweep`` and a study grid take (grid axes and fixed values)."""
    return tuple(option for option in RUN_OPTIONS if option.sweep)


@dataclass(frozen=True)
class RunRequest:
    """What a user asked for: every run option with a checked value (defaults filled in).

    Component names and ``-o`` assignments are checked against the registry by
    :func:`harness.config.build_config`, which turns a request into a
    :class:`~harness.config.RunConfig`; this type checks types and ranges.
    """

    values: Mapping[str, Any]

    @classmethod
    def from_values(cls, **given: Any) -> RunRequest:
        """Defaults overridden by ``given``; TypeError for a name no run option has, UsageError for a bad value."""
        unknown = sorted(set(given) - set(RUN_OPTION_BY_NAME))
        if unknown:
            raise TypeError(f"not run options: {', '.join(unknown)} (see harness.run_request.RUN_OPTIONS)")
        values = defaults()
        values.update(given)
        return cls({name: RUN_OPTION_BY_NAME[name].check(value) for name, value in values.items()})

    def __getattr__(self, name: str) -> Any:
        values = self.__dict__.get("values", {})
        if name in values:
            return values[name]
        raise AttributeError(name)

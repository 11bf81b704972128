"""The validated configuration of one run.

:func:`build_config` turns what a user typed (component names, ``-o`` options,
numbers) into a :class:`RunConfig` with every option resolved to its value, or
raises :class:`~harness.errors.UsageError` naming the problem and the fix. A
config is validated completely before anything is built or written.

The config serialises to JSON with every setting, defaults included, and hashes
without its seeds, so runs of one strategy on different seeds share a hash.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from harness.budget import plan_pool
from harness.errors import UnknownNameError, UsageError
from harness.memory import MemoryEstimate, check_memory, estimate
from harness.interfaces import (
    EXPLICIT_REWARD,
    EXPLICIT_SOURCES,
    Allocator,
    Component,
    Judge,
    Selector,
    Testbed,
    Trainer,
    TrainerFactory,
)
from harness.plugins import Registry
from harness.reference_point import is_deployable
from harness.regimes import regime_options
from harness.run_request import RunRequest, run_option
from harness.options import recorded_settings

# The roles a run fills, the kind of component each takes, and the prefix a
# user writes in ``-o PREFIX.option=value``.
ROLES: dict[str, str] = {
    "testbed": "testbed",
    "instance_selector": "selector",
    "corpus_selector": "selector",
    "allocator": "allocator",
    "trainer": "trainer",
    "gold_judge": "judge",
    "proxy_judge": "judge",
    "annotator": "judge",
    "evaluator": "judge",
}
OPTIONAL_ROLES = ("gold_judge", "proxy_judge", "annotator", "evaluator")
# Roles added after configs were first hashed: left out of a config's JSON while
# unset, so every earlier run keeps its strategy hash (sweeps and studies reuse by it).
_OMITTED_WHEN_UNSET = ("annotator", "evaluator")
# Flags added later that change no number of a run that finishes: left out of the JSON while False.
_OMITTED_WHEN_FALSE = ("allow_static_policy",)
# Labels added later: left out of the JSON while unset (so configs from before them read the same).
_OMITTED_WHEN_NONE = ("regime",)
# Labels added later: left out of the JSON while True (every run before them was deployable).
_OMITTED_WHEN_TRUE = ("deployable",)
# Options that change what the run keeps on disk, never its numbers: out of the strategy hash, and out of the JSON
# while they hold their default (so configs from before them read the same).
_STORAGE_DEFAULTS = {"keep_checkpoints": run_option("keep_checkpoints").default}
EXTERNAL_ANNOTATOR = "external"
"""The annotator that hands the pairs to people (``--annotator external``)."""
REFERENCES = run_option("reference").choices
"""DPO reference per iteration: pi_ref (the SFT model) throughout, or the previous policy pi_{i-1}."""
PREFIX_ALIASES: dict[str, tuple[str, ...]] = {
    "selector": ("instance_selector", "corpus_selector"),
    "instance": ("instance_selector",),
    "corpus": ("corpus_selector",),
    "gold": ("gold_judge",),
    "proxy": ("proxy_judge",),
}

@dataclass(frozen=True)
class ComponentChoice:
    """A component's name and all of its settings (defaults included)."""

    name: str
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run's numbers."""

    testbed: ComponentChoice
    instance_selector: ComponentChoice
    corpus_selector: ComponentChoice
    allocator: ComponentChoice
    trainer: ComponentChoice
    gold_judge: ComponentChoice | None = None
    proxy_judge: ComponentChoice | None = None
    annotator: ComponentChoice | None = None  # None: the testbed's own annotator (world.annotate)
    evaluator: ComponentChoice | None = None  # None: the testbed's own evaluation (world.evaluate)
    # The run's shape, seeds and switches: defaults from their one declaration (harness.run_request).
    iterations: int = run_option("iterations").default
    budget: int = run_option("budget").default
    keep: float = run_option("keep").default
    n_responses: int = run_option("n_responses").default
    seed: int = run_option("seed").default
    world_seed: int = run_option("seed").default  # a config always holds the resolved world seed
    reference: str = run_option("reference").default
    allow_static_policy: bool = run_option("allow_static_policy").default  # a warning, not a failure
    keep_checkpoints: str = run_option("keep_checkpoints").default  # "last" or "all" (harness.experiments.checkpoints)
    regime: str | None = run_option("regime").default  # its options are already in the settings above: a label
    # False when a selector reads the world's exact gold (needs_exact_gold): a reference point, not a strategy
    # (harness.reference_point). A label derived from the selectors, set by plan_run, out of the strategy hash.
    deployable: bool = True

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for role in _OMITTED_WHEN_UNSET:
            if data[role] is None:
                del data[role]
        for flag in _OMITTED_WHEN_FALSE:
            if not data[flag]:
                del data[flag]
        for name in _OMITTED_WHEN_NONE:
            if data[name] is None:
                del data[name]
        for name in _OMITTED_WHEN_TRUE:
            if data[name] is True:
                del data[name]
        for name, default in _STORAGE_DEFAULTS.items():
            if data[name] == default:
                del data[name]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, default=_jsonable)

    def strategy_hash(self) -> str:
        """sha256 (16 hex) of the config without its seeds (nor ``keep_checkpoints``): same strategy, any seed."""
        data = self.to_dict()
        data.pop("seed")
        data.pop("world_seed")
        for name in _STORAGE_DEFAULTS:  # what is kept on disk changes no number
            data.pop(name, None)
        data.pop("regime", None)  # a name for settings already in the config: the same settings, the same hash
        data.pop("deployable", None)  # derived from the selectors' names, which the hash already covers
        blob = json.dumps(data, sort_keys=True, default=_jsonable)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunConfig:
        values = dict(data)
        for role in ROLES:
            choice = values.get(role)
            if choice is None and role in _OMITTED_WHEN_UNSET and role not in values:
                continue
            values[role] = None if choice is None else ComponentChoice(choice["name"], dict(choice.get("settings", {})))
        return cls(**values)

    def choices(self) -> dict[str, ComponentChoice]:
        """The component of every role this run fills (unused optional roles left out)."""
        return {role: getattr(self, role) for role in ROLES if getattr(self, role) is not None}


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"not JSON serialisable: {value!r}")


@dataclass
class Components:
    """The component instances a run uses, built from a :class:`RunConfig`."""

    testbed: Testbed
    instance_selector: Selector
    corpus_selector: Selector
    allocator: Allocator
    trainer: Trainer
    scorers: dict[str, Component]
    gold_judge: Judge | None = None
    proxy_judge: Judge | None = None
    annotator: Judge | None = None
    evaluator: Judge | None = None
    trainers: TrainerFactory | None = None  # the registry's trainers, for a testbed's world building

    @property
    def external_annotation(self) -> bool:
        """True when people label the pairs (``--annotator external``): the run stops for them."""
        return self.annotator is not None and bool(getattr(self.annotator, "external", False))

    def steering_selector(self) -> Selector | None:
        """The selector that decides where responses are sampled from (selector contract 3), or None.

        The instance level's when it steers, else the corpus level's; UsageError
        when both steer with different plans (a pool has one sampling plan).
        """
        steering = [s for s in (self.instance_selector, self.corpus_selector) if getattr(s, "steers_sampling", False)]
        if len(steering) == 2 and (steering[0].name != steering[1].name
                                   or dict(steering[0].settings) != dict(steering[1].settings)):
            raise UsageError(
                f"selectors {steering[0].name!r} and {steering[1].name!r} both decide where responses are sampled "
                "from (steers_sampling); a pool has one sampling plan: use a selector that does not steer at one "
                "level"
            )
        return steering[0] if steering else None

    def judges(self) -> dict[str, Judge]:
        """Every judge this run uses, by role."""
        roles = ("gold_judge", "proxy_judge", "annotator", "evaluator")
        return {role: getattr(self, role) for role in roles if getattr(self, role) is not None}

    @property
    def score_columns(self) -> tuple[str, ...]:
        """Score columns the two selectors need, in a stable order."""
        columns: list[str] = []
        for selector in (self.instance_selector, self.corpus_selector):
            for column in selector.requires:
                if column not in columns:
                    columns.append(column)
        return tuple(columns)

    @property
    def explicit_source(self) -> str | None:
        """``"gold"`` or ``"proxy"`` when a selector reads explicit scores, else None."""
        sources = sorted({
            str(s.explicit_source) for s in (self.instance_selector, self.corpus_selector)
            if EXPLICIT_REWARD in s.requires
        })
        return sources[0] if sources else None

    def explicit_judge(self) -> Judge | None:
        """The judge that fills ``explicit_reward`` in this run, if any."""
        return {"gold": self.gold_judge, "proxy": self.proxy_judge, None: None}[self.explicit_source]

    def pool_costs(self, n_responses: int) -> tuple[int, int]:
        """Gold labels per prompt of the pool and per kept pair (see harness.budget.plan_pool)."""
        if self.explicit_source == "gold":
            return n_responses, 0  # N pointwise gold scores; pairs labelled by them
        return 0, 1


def parse_option_assignments(assignments: Sequence[str]) -> list[tuple[str, str]]:
    """``["trainer.beta=0.5", "tau=0"]`` -> ``[("trainer.beta", "0.5"), ("tau", "0")]``."""
    parsed = []
    for text in assignments:
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise UsageError(
                f"option {text!r} is not KEY=VALUE; write e.g. -o trainer.beta=0.5 or -o tau=0"
            )
        parsed.append((key.strip(), value.strip()))
    return parsed


def route_options(
    assignments: Sequence[tuple[str, str]],
    classes: Mapping[str, type[Component]],
    unused: Mapping[str, str] | None = None,
) -> dict[str, dict[str, str]]:
    """Send each ``KEY=VALUE`` to the roles it belongs to.

    ``role.key`` (``trainer.beta``; ``selector.x`` means both selector levels)
    targets one role; a bare ``key`` goes to every role whose component
    declares it. A key no component declares is an error listing close matches.
    ``unused`` maps roles this run leaves out (a judge no selector reads) to
    the reason, so an option aimed only at one of them is an error that says why.
    """
    unused = dict(unused or {})
    routed: dict[str, dict[str, str]] = {role: {} for role in classes}
    declared = {role: {o.name for o in cls.options} for role, cls in classes.items()}
    qualified = sorted(f"{role}.{name}" for role, names in declared.items() for name in names)
    for key, value in assignments:
        prefix, dot, name = key.rpartition(".")
        if dot:
            roles = PREFIX_ALIASES.get(prefix, (prefix,))
            skipped = [r for r in roles if r in unused]
            if skipped and len(skipped) == len(roles):
                raise UsageError(f"option {key!r} is for the {skipped[0].replace('_', ' ')}, {unused[skipped[0]]}")
            unknown_roles = [r for r in roles if r not in classes and r not in unused]
            if unknown_roles:
                raise UnknownNameError(
                    "option prefix", prefix, sorted(set(classes) | set(PREFIX_ALIASES))
                )
            roles = [r for r in roles if r in classes]
            targets = [r for r in roles if name in declared[r]]
            if not targets:
                raise UnknownNameError("option", key, qualified)
        else:
            targets = [r for r in classes if key in declared[r]]
            if not targets:
                if key in unused:  # pragma: no cover - role names are not option names
                    raise UsageError(f"option {key!r}: {unused[key]}")
                bare = {n for names in declared.values() for n in names}
                raise UnknownNameError("option", key, qualified, suggest_from=bare | set(qualified))
            name = key
        for role in targets:
            routed[role][name] = value
    return routed


def build_config(registry: Registry, request: RunRequest | None = None, /, **given: Any) -> RunConfig:
    """Validate a run request into a RunConfig; UsageError (exit 2) on anything wrong.

    Pass a :class:`~harness.run_request.RunRequest`, or its options as keywords
    (``build_config(registry, selector="smallest", budget=400)``); every option
    and its default is declared once, in :data:`harness.run_request.RUN_OPTIONS`.
    """
    return plan_run(registry, request, **given).config


@dataclass
class RunPlan:
    """A validated run: its config, its components (built once) and the initial label plan."""

    config: RunConfig
    components: Components
    labels: list[int]
    memory: MemoryEstimate


def plan_run(registry: Registry, request: RunRequest | None = None, /, **given: Any) -> RunPlan:
    """:func:`build_config`, and the components and label plan it checked, for a command that runs it."""
    if request is None:
        request = RunRequest.from_values(**given)
    elif given:
        raise TypeError("pass a RunRequest or keyword options, not both")
    names = {
        "testbed": request.testbed,
        "instance_selector": request.instance_selector or request.selector,
        "corpus_selector": request.corpus_selector or request.selector,
        "allocator": request.allocator,
        "trainer": request.trainer,
    }
    defaults = registry.get("testbed", request.testbed).cls.default_judges
    for role, key in (("gold_judge", "gold"), ("proxy_judge", "proxy")):
        given = getattr(request, role)
        if given or defaults.get(key):
            names[role] = given or defaults[key]
    defaulted = set()
    for role in ("annotator", "evaluator"):
        given = getattr(request, role)
        if given or defaults.get(role):
            names[role] = given or defaults[role]
            if not given:
                defaulted.add(role)
    classes = {role: registry.get(ROLES[role], name).cls for role, name in names.items()}
    regime = regime_options(classes["testbed"], request.regime) if request.regime else ()
    assignments = parse_option_assignments((*regime, *request.options))  # the command line's -o come last: they win
    routed = route_options(assignments, classes)
    selectors = {role: registry.create("selector", names[role], routed[role])
                 for role in ("instance_selector", "corpus_selector")}
    unused = _unused_judges(names, selectors, defaulted, gold_measures=_gold_measures(classes))
    if unused:  # a run records only the judges its selectors read; route again without the others
        for role in unused:
            names.pop(role)
            classes.pop(role)
        routed = route_options(assignments, classes, unused)
    # every component is built once: the selectors above (their options route the same way without the
    # unused judges), the other roles here
    made = {role: selectors[role] if role in selectors else registry.create(ROLES[role], name, routed[role])
            for role, name in names.items()}
    choices = {role: ComponentChoice(names[role], recorded_settings(type(component).options, component.settings))
               for role, component in made.items()}
    config = RunConfig(
        **choices,
        iterations=request.iterations,
        budget=request.budget,
        keep=request.keep,
        n_responses=request.n_responses,
        seed=request.seed,
        world_seed=request.seed if request.world_seed is None else request.world_seed,
        reference=request.reference,
        allow_static_policy=request.allow_static_policy,
        keep_checkpoints=request.keep_checkpoints,
        regime=request.regime,
        deployable=all(is_deployable(selector) for selector in selectors.values()),
    )
    components = _assemble(registry, config, made)
    labels = check_budget_plan(config, components)
    memory = estimate_memory(config, components, labels)
    check_memory(memory)
    return RunPlan(config, components, labels, memory)


def estimate_memory(config: RunConfig, components: Components, labels: Sequence[int]) -> MemoryEstimate:
    """The memory the plan's largest pool and the testbed's world need (:mod:`harness.memory`)."""
    per_prompt, per_pair = components.pool_costs(config.n_responses)
    prompts = [plan_pool(n, config.keep, per_prompt, per_pair).prompts for n in labels]
    return estimate(components.testbed.memory_needs(), prompts, config.n_responses)


def _gold_measures(classes: Mapping[str, type]) -> bool:
    """True when the gold judge is exact and the testbed takes it as its world's gold reward (testbed contract
    4, ``build_world(gold=...)``): the judge is then used even when no selector reads its scores."""
    import inspect

    judge = classes.get("gold_judge")
    return (judge is not None and bool(getattr(judge, "exact", False))
            and "gold" in inspect.signature(classes["testbed"].build_world).parameters)


def _unused_judges(names: Mapping[str, str], selectors: Mapping[str, Selector],
                   defaulted: set[str] = frozenset(), *, gold_measures: bool = False) -> dict[str, str]:
    """Judge roles this run does not use, each with the reason, for error messages.

    The gold and proxy judges when no selector reads their scores (the gold
    judge stays when it is the world's gold reward, ``gold_measures``); the
    testbed's default annotator when the pairs are labelled by gold scores.
    """
    sources = set()
    for selector in selectors.values():
        if EXPLICIT_REWARD in selector.requires:
            sources.add(selector.explicit_source)
    unused = {}
    if "annotator" in defaulted and "gold" in sources:
        unused["annotator"] = "which this run does not use: its pairs are labelled by the gold judge's scores"
    for role, source in (("gold_judge", "gold"), ("proxy_judge", "proxy")):
        if role in names and source not in sources and not (role == "gold_judge" and gold_measures):
            unused[role] = (
                f"which this run does not use: selectors {names['instance_selector']!r}/"
                f"{names['corpus_selector']!r} read no {source} explicit scores"
            )
    return unused


def instantiate(registry: Registry, config: RunConfig) -> Components:
    """Component instances for ``config`` (settings were validated when it was built)."""
    made = {
        role: registry.create(ROLES[role], choice.name, choice.settings) for role, choice in config.choices().items()
    }
    return _assemble(registry, config, made)


def _assemble(registry: Registry, config: RunConfig, made: Mapping[str, Component]) -> Components:
    """The run's components from its role instances, with the scorers its selectors need; checked."""
    components = Components(scorers={}, trainers=registry.trainers(), **made)
    for column in components.score_columns:
        if column != EXPLICIT_REWARD:
            components.scorers[column] = registry.create("scorer", column)
    check_explicit_scores(components, config)
    check_exact_gold(components, config)
    check_judge_roles(components)
    check_features_and_sources(components, config)
    check_sampling_sources(components, config)
    return components


def check_features_and_sources(components: Components, config: RunConfig) -> None:
    """UsageError when a selector reads features, or samples from a source, the testbed's worlds cannot give."""
    testbed = components.testbed
    readers = [s.name for s in (components.instance_selector, components.corpus_selector)
               if getattr(s, "feature_source", None) is not None]
    if readers and not getattr(testbed, "gives_features", False):
        raise UsageError(
            f"selector {readers[0]!r} reads each response's features (a model's hidden state), but testbed "
            f"{config.testbed.name!r} does not declare that its worlds give them (gives_features, World.features); "
            "run it on the synthetic or hf testbed, or pick another selector"
        )
    steering = components.steering_selector()
    if steering is None:
        return
    offered = tuple(getattr(testbed, "sampling_sources", ("policy",)))
    missing = [source for source in steering.samples_from if source not in offered]
    if missing:
        hint = (" (its vLLM backend draws each response from one model: use -o testbed.backend=transformers)"
                if str(getattr(testbed, "settings", {}).get("backend", "")).startswith("vllm") else "")
        raise UsageError(
            f"selector {steering.name!r} samples responses from {', '.join(missing)}, but testbed "
            f"{config.testbed.name!r} with these settings samples only from {', '.join(offered)}{hint}; pick "
            "another selector or testbed"
        )


def check_sampling_sources(components: Components, config: RunConfig) -> None:
    """UsageError when two selectors steer sampling differently, or the trainer reads where responses were
    sampled from and no selector steers sampling."""
    steering = components.steering_selector()
    needed = tuple(getattr(components.trainer, "needs_sampling_sources", ()) or ())
    offered = tuple(getattr(steering, "samples_from", ())) if steering is not None else ("policy",)
    missing = [source for source in needed if source not in offered]
    if missing:
        who = (f"selector {steering.name!r} samples only from {', '.join(offered)}" if steering is not None else
               f"selectors {components.instance_selector.name!r}/{components.corpus_selector.name!r} sample every "
               "response from pi_{i-1}")
        raise UsageError(
            f"trainer {config.trainer.name!r} reads the pairs' responses sampled from {', '.join(missing)} (its "
            f"settings {dict(components.trainer.settings)} ask for it, e.g. xpo_alpha > 0), but {who}: run a "
            "selector that samples from there (--selector xpo), or drop that option"
        )


def check_exact_gold(components: Components, config: RunConfig) -> None:
    """UsageError when a selector reads the world's exact gold (``needs_exact_gold``) on a testbed without it."""
    readers = [s for s in (components.instance_selector, components.corpus_selector) if not is_deployable(s)]
    if readers and not getattr(components.testbed, "exact_gold", False):
        raise UsageError(
            f"selector {readers[0].name!r} is a reference point that reads the world's exact gold reward, but "
            f"testbed {config.testbed.name!r} has none to give (it does not declare exact_gold): its gold is a "
            "judge's labels, paid per call, so no label-free exact gold exists. Run it on a testbed with a known "
            "gold reward (--testbed synthetic), or pick a deployable selector (harness list selectors)"
        )


def check_judge_roles(components: Components) -> None:
    """UsageError for an annotator or evaluator this run cannot use."""
    if components.annotator is not None and components.explicit_source == "gold":
        raise UsageError(
            f"--annotator {components.annotator.name!r} would label pairs that the gold judge already "
            "scored (and charged): with a selector reading gold explicit scores, the pairs are labelled "
            "by those scores. Drop --annotator, or pass --gold-judge instead"
        )
    if components.evaluator is not None and getattr(components.evaluator, "external", False):
        raise UsageError(
            "--evaluator external is not supported: evaluation runs after every iteration, unattended. "
            "Pass a judge (harness list judges), e.g. --evaluator openai"
        )


def check_explicit_scores(components: Components, config: RunConfig) -> None:
    """UsageError unless every selector that reads explicit scores has a judge for its source."""
    readers = [s for s in (components.instance_selector, components.corpus_selector) if EXPLICIT_REWARD in s.requires]
    sources = {s.explicit_source for s in readers}
    if not readers:
        return
    if not sources <= set(EXPLICIT_SOURCES):
        raise UsageError(f"selector explicit_source must be one of {', '.join(EXPLICIT_SOURCES)}; got {sorted(map(str, sources))}")
    if len(sources) > 1:
        raise UsageError(
            "the instance and corpus selectors read explicit scores from different sources "
            f"({' and '.join(sorted(sources))}); set one explicit_source for both levels"
        )
    (source,) = sources
    if components.explicit_judge() is None:
        raise UsageError(
            f"selector {readers[0].name!r} reads explicit scores from the {source} judge, but testbed "
            f"{config.testbed.name!r} names no default {source} judge; pass --{source}-judge NAME "
            "(harness list judges)"
        )


def _feasible(config: RunConfig, components: Components, budget: int) -> list[int] | None:
    """The plan for ``budget`` if every iteration can buy at least one pair, else None."""
    plan = components.allocator.allocate(
        total_labels=budget, iterations=config.iterations, history=()
    )
    per_prompt, per_pair = components.pool_costs(config.n_responses)
    if all(plan_pool(labels, config.keep, per_prompt, per_pair).pairs >= 1 for labels in plan):
        return plan
    return None


def check_budget_plan(config: RunConfig, components: Components) -> list[int]:
    """The initial label plan; UsageError if any iteration could not buy one pair."""
    plan = components.allocator.allocate(
        total_labels=config.budget, iterations=config.iterations, history=()
    )
    if len(plan) != config.iterations or sum(plan) > config.budget or min(plan) < 0:
        raise UsageError(
            f"allocator {config.allocator.name!r} returned an invalid plan {plan} for "
            f"{config.iterations} iterations and {config.budget} labels"
        )
    if _feasible(config, components, config.budget) is None:
        raise UsageError(
            f"budget too small: {config.budget} labels split by {config.allocator.name!r} over "
            f"{config.iterations} iterations ({plan}) leaves an iteration without one pair at "
            f"--keep {config.keep}. Raise --budget to at least {_min_budget(config, components)}, "
            "or lower --iterations."
        )
    return plan


def _min_budget(config: RunConfig, components: Components) -> int:
    """The smallest budget that buys one pair in every iteration (doubling, then bisection)."""
    high = max(1, config.budget)
    while _feasible(config, components, high) is None:
        if high > 10**12:
            raise UsageError(f"allocator {config.allocator.name!r} never gives every iteration a pair")
        high *= 2
    low = high // 2 + 1 if high > 1 else 1
    while low < high:
        mid = (low + high) // 2
        if _feasible(config, components, mid) is None:
            low = mid + 1
        else:
            high = mid
    return high

"""Every run option is declared once (harness.run_request) and everything else derives from it."""

from __future__ import annotations

import dataclasses
import inspect
import re

import pytest

from harness.config import RunConfig, build_config
from harness.errors import UsageError
from harness.plugins import load_registry
from harness.run_request import RUN_OPTIONS, RunOption, RunRequest, run_option, sweep_options


@pytest.fixture(scope="module")
def registry():
    return load_registry()


def _flags(command: str, cli) -> str:
    result = cli(command, "--help")
    assert result.exit_code == 0, result.output
    return result.output


def test_every_run_option_is_a_parameter_of_run_and_of_sweep(cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    run_help, sweep_help = _flags("run", cli), _flags("sweep", cli)
    def shows(flag: str, text: str) -> bool:
        return re.search(re.escape(flag) + r"(?![\w-])", text) is not None

    for option in RUN_OPTIONS:
        assert shows(option.flag, run_help), option.name
        assert shows(option.flag, sweep_help) == option.sweep, option.name
    assert "--seeds" in sweep_help


def test_command_parameters_come_from_the_declaration():
    from harness.cli.run import run_command
    from harness.cli.sweep import sweep_command

    run_params = inspect.signature(run_command).parameters
    sweep_params = inspect.signature(sweep_command).parameters
    assert [name for name in run_params if name in {o.name for o in RUN_OPTIONS}] == [o.name for o in RUN_OPTIONS]
    assert [name for name in sweep_params if name in {o.name for o in RUN_OPTIONS}] == [o.name for o in
                                                                                      sweep_options()]
    assert run_params["iterations"].default == run_option("iterations").default
    # a grid option takes a comma list on the sweep: a string, whatever the option's own type
    assert "str" in repr(sweep_params["reference"].annotation) and "str" in repr(sweep_params["trainer"].annotation)


def test_config_defaults_are_the_declared_defaults(registry):
    fields = {f.name: f.default for f in dataclasses.fields(RunConfig)}
    for option in RUN_OPTIONS:
        if option.kind in ("shape", "seed", "switch") and option.name != "world_seed":
            assert fields[option.name] == option.default, option.name
    config = build_config(registry)
    for option in RUN_OPTIONS:
        if option.kind in ("shape", "switch"):
            assert getattr(config, option.name) == option.default, option.name
    assert config.world_seed == config.seed == run_option("seed").default


def test_build_config_takes_exactly_the_run_options(registry):
    with pytest.raises(TypeError, match="not run options: n_response"):
        build_config(registry, n_response=4)
    config = build_config(registry, RunRequest.from_values(selector="smallest", budget=400, n_responses=4))
    assert (config.instance_selector.name, config.budget, config.n_responses) == ("smallest", 400, 4)


@pytest.mark.parametrize("option", [o for o in RUN_OPTIONS if o.type in (int, float) and o.min is not None],
                         ids=lambda o: o.name)
def test_ranges_are_enforced_at_their_boundary(option: RunOption):
    low = option.min
    if option.type is int:
        allowed, refused = (low, low - 1) if option.min_inclusive else (low + 1, low)
    else:
        allowed, refused = (low, low - 0.5) if option.min_inclusive else (low + 1e-9, low)
    assert option.check(option.type(allowed)) == allowed
    with pytest.raises(UsageError, match=re.escape(f"{option.flag} {option.requirement()}")):
        option.check(option.type(refused))
    if option.max is not None:
        with pytest.raises(UsageError):
            option.check(option.type(option.max + 1))


def test_choices_and_types_are_checked():
    with pytest.raises(UsageError, match="--reference must be one of fixed, previous; got 'moving'"):
        RunRequest.from_values(reference="moving")
    with pytest.raises(UsageError, match="--iterations expects int"):
        RunRequest.from_values(iterations="3")
    assert RunRequest.from_values(keep=1).keep == 1.0


def test_the_study_plan_takes_every_sweep_option_as_a_grid_key():
    from harness.experiments.study_plan import PLAN_SCHEMA_DOC, grid_keys

    keys = grid_keys()
    for option in sweep_options():
        assert option.name in keys
        shown = "responses" if option.name == "n_responses" else option.name
        assert shown in PLAN_SCHEMA_DOC.replace("\n", " "), option.name
    assert "seed" not in keys  # a grid's seeds are its `seeds`


def test_a_new_run_option_is_one_declaration(monkeypatch, registry):
    """Adding a RunOption reaches the run and sweep parameters, the grid spec and the study plan's keys."""
    import harness.run_request as rr
    from harness.cli.run_options import run_parameters
    from harness.experiments.study_plan import grid_keys
    from harness.experiments.sweep import GridSpec

    extra = RunOption("warmup_labels", int, 0, "Labels bought before iteration 1.", "shape", "--warmup-labels", min=0)
    monkeypatch.setattr(rr, "RUN_OPTIONS", (*rr.RUN_OPTIONS, extra))
    monkeypatch.setattr(rr, "RUN_OPTION_BY_NAME", {**rr.RUN_OPTION_BY_NAME, extra.name: extra})
    assert "warmup_labels" in [p.name for p in run_parameters(sweep=False)]
    assert "warmup_labels" in [p.name for p in run_parameters(sweep=True)]
    assert "warmup_labels" in grid_keys()
    assert GridSpec.from_cli(registry, warmup_labels=5).warmup_labels == 5
    assert RunRequest.from_values(warmup_labels=2).warmup_labels == 2
    with pytest.raises(UsageError, match="--warmup-labels must be >= 0; got -1"):
        RunRequest.from_values(warmup_labels=-1)


def test_sweep_and_study_take_allow_static_policy(registry):
    from harness.experiments.sweep import GridSpec, expand_grid

    (cell,) = expand_grid(registry, GridSpec.from_cli(registry, selector="smallest", allow_static_policy=True))
    assert cell.config.allow_static_policy is True
    (plain,) = expand_grid(registry, GridSpec.from_cli(registry, selector="smallest"))
    assert plain.config.allow_static_policy is False
    assert "allow_static_policy" not in plain.config.to_dict()  # earlier strategy hashes are kept


def test_harness_run_builds_each_component_once(cli, db_path, monkeypatch):
    """build_config's instances are the run's: no role is built twice (a component may hold a client or a cache)."""
    from conftest import TINY_RUN

    from harness.plugins import Registry

    built: list[tuple[str, str]] = []
    create = Registry.create

    def counting(self, kind, name, *args, **kwargs):
        built.append((kind, name))
        return create(self, kind, name, *args, **kwargs)

    monkeypatch.setattr(Registry, "create", counting)
    result = cli("run", "--instance-selector", "smallest", "--corpus-selector", "random", *TINY_RUN)
    assert result.exit_code == 0, result.output
    assert sorted(built) == sorted([("selector", "smallest"), ("selector", "random"), ("testbed", "synthetic"),
                                    ("allocator", "constant"), ("trainer", "native"), ("scorer", "implicit_reward")])

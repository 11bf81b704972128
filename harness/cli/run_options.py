"""The run options as command-line parameters, derived from :data:`harness.run_request.RUN_OPTIONS`.

``harness run`` takes every run option with its own value; ``harness sweep``
takes a comma list for every grid option (one grid axis) and one value for the
others. :func:`with_run_options` puts those parameters in front of a command's
own, so a new run option appears on both commands without touching them; the
command receives them as keyword arguments (``**request``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Annotated, Any, Optional

import typer

from harness import run_request
from harness.run_request import RunOption

GRID_HELP = " A comma list (a,b) makes a grid axis: one cell per value."
SWEEP_ASSIGNMENTS_HELP = (
    "A component option and its grid values (repeatable): -o trainer.beta=0.5,1. For a list-valued option "
    "the commas belong to the value; separate its grid values with | (-o \"weights=1,1,2|2,1,1\")."
)


def _parameter(option: RunOption, *, sweep: bool) -> inspect.Parameter:
    names = [option.flag] + ([option.short] if option.short else [])
    help_text = option.help
    rule = option.requirement()
    if rule and option.type in (int, float) and option.kind != "assignments":
        help_text = help_text.rstrip(".") + f" ({rule.replace('must be ', '')})."
    if option.kind == "assignments":
        annotation: Any = Optional[list[str]]
        help_text = SWEEP_ASSIGNMENTS_HELP if sweep else option.help
        default: Any = None
        metavar = "KEY=V1,V2" if sweep else option.metavar
    elif option.kind == "switch":
        annotation, default, metavar = bool, option.default, None
    else:
        value_type = str if (sweep and option.grid) else option.type
        annotation = value_type if option.default is not None else Optional[value_type]
        default, metavar = option.default, option.metavar
        if sweep and option.grid:
            help_text += GRID_HELP
            metavar = "NAMES" if option.kind == "component" else "VALUES"
    info = typer.Option(*names, help=help_text, metavar=metavar, show_default=option.default not in (None, ()))
    return inspect.Parameter(option.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=Annotated[annotation, info])


def run_parameters(*, sweep: bool) -> list[inspect.Parameter]:
    """The Typer parameters of every run option, for ``harness sweep`` if ``sweep`` else ``harness run``."""
    return [_parameter(option, sweep=sweep) for option in run_request.RUN_OPTIONS if option.sweep or not sweep]


def with_run_options(*, sweep: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a command every run option as a parameter, ahead of its own; it receives them as ``**request``."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        own = [p for p in inspect.signature(command, eval_str=True).parameters.values()
               if p.kind is not p.VAR_KEYWORD]
        own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]
        command.__signature__ = inspect.Signature(run_parameters(sweep=sweep) + own)  # type: ignore[attr-defined]
        return command

    return decorate


def run_request_values(request: dict[str, Any]) -> dict[str, Any]:
    """The command's run-option arguments as :class:`harness.run_request.RunRequest` values (``-o`` as a tuple)."""
    values = dict(request)
    values["options"] = tuple(values.get("options") or ())
    return values

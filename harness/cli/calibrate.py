"""``harness calibrate``: set a regime's β and τ from the papers' iteration-1 selection diagnostics.

The work is :mod:`harness.experiments.calibration`; this module checks the
options, prints the table and writes the regimes. Importing it costs typer only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from harness.cli.common import cli_errors, stderr_console

CALIBRATE_HELP = """\
Choose a regime's DPO beta and annotator tau from the papers' selection diagnostics, outcome-blind.

For each tau in --taus and each calibration seed, runs iteration 1 of a default
run up to the labelled pairs of five subsets (instance x corpus: smallest /
random, random / smallest, largest / random, random / largest, largest /
largest) and reads their diagnostics. Nothing is trained after the world is
built and nothing is evaluated.

tau is the value whose ranking accuracies are closest to Yang et al.'s Figure
4b (55.04 %, 54.06 % small-margin; 63.10 %, 60.72 % large-margin). beta makes
the largest/largest subset's mean beta * margin equal Figure 4c's 21.51, read
two ways: beta inside the margin (21.51) or an unscaled margin at the paper's
beta 0.1 (2.151); each reading is a regime. The label-noise share of every
subset is printed beside them; the sources give no number for it.

Calibration seeds must be below 1000: the built-in studies confirm on seeds
from 1000 up. With --write the regimes go into the testbed's regimes file
(commit them on their own; see docs/usage/regimes.md).

[bold]Example[/]

  harness calibrate --seeds 0-4
  harness calibrate --seeds 0-4 --write plugins/testbeds/synthetic/regimes.toml
"""

CONFIRMATION_SEEDS_FROM = 1000


def _seeds(text: str) -> list[int]:
    """The calibration seeds, as every ``--seeds`` reads them; never a confirmation seed."""
    from harness.errors import UsageError
    from harness.experiments.sweep import parse_seeds

    seeds = parse_seeds(text)
    confirmation = [s for s in seeds if s >= CONFIRMATION_SEEDS_FROM]
    if confirmation:
        raise UsageError(f"--seeds {text!r} includes {confirmation[0]}: seeds from {CONFIRMATION_SEEDS_FROM} up are "
                         "the studies' confirmation seeds, which no calibration may touch; use seeds below 1000")
    return seeds


def _taus(text: str) -> list[float]:
    from harness.errors import UsageError

    try:
        taus = [float(part) for part in text.split(",")]
    except ValueError:
        raise UsageError(f"--taus {text!r} is not a comma list of numbers; write e.g. 0,0.3,1") from None
    if not taus or any(not (0.0 <= tau <= 1000.0) for tau in taus):
        raise UsageError(f"--taus {text!r}: each tau must be in [0, 1000]; write e.g. 0,0.3,1")
    return taus


def register(app: typer.Typer) -> None:
    @app.command("calibrate", help=CALIBRATE_HELP, short_help="Set beta and tau from the papers' diagnostics.")
    def calibrate(
        seeds: Annotated[str, typer.Option("--seeds", metavar="SEEDS", help="Calibration seeds (below 1000).")]
        = "0-4",
        taus: Annotated[Optional[str], typer.Option("--taus", metavar="T1,T2,...",
                                                    help="Annotator temperatures to try.")] = None,
        option: Annotated[Optional[list[str]], typer.Option(
            "--option", "-o", metavar="KEY=VALUE", help="Option of the world calibrated (repeatable).")] = None,
        write: Annotated[Optional[Path], typer.Option(
            "--write", metavar="FILE", dir_okay=False,
            help="Add or replace the calibrated regimes in this regimes file.")] = None,
        json_output: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    ) -> None:
        from harness.errors import UsageError
        from harness.experiments import calibration

        console = stderr_console()
        with cli_errors():
            seed_list = _seeds(seeds)
            tau_list = _taus(taus) if taus else list(calibration.TAUS)
            if write is not None and write.exists() and not write.is_file():
                raise UsageError(f"--write {write} is not a file")
            from harness.plugins import load_registry

            registry = load_registry()
            total = len(tau_list) * len(calibration.SUBSETS) * len(seed_list)
            console.print(f"calibrating on seeds {seeds}: {total} iteration-1 selections "
                          f"({len(tau_list)} tau x {len(calibration.SUBSETS)} subsets x {len(seed_list)} seeds)",
                          highlight=False)
            result = calibration.calibrate(registry, seeds=seed_list, options=option or (), taus=tau_list,
                                           progress=lambda text: console.print(text, style="dim", highlight=False))
            if write is not None:
                calibration.write_regimes(result, write)
        if json_output:
            typer.echo(json.dumps(calibration.as_json(result), indent=1))
        else:
            calibration.print_report(result, console)
        if write is not None:
            console.print(f"wrote the regimes {', '.join(calibration.regime_name(r) for r in result.betas)} "
                          f"to {write}; commit them on their own", highlight=False)

"""``harness calibrate`` and named regimes (``--regime``).

Pins: the calibration never trains a policy after the world is built and never evaluates one; it reads the
same diagnostics a run records for iteration 1; it refuses confirmation seeds; β* is the figure's margin over
the measured mean |Δ|; ``--write`` replaces only the calibrated tables. A regime expands to its options with
the command line's ``-o`` winning, is recorded in the config without changing its hash, and bad names and
files are clear errors.
"""

from __future__ import annotations

import json
import sqlite3

import pytest

from conftest import TINY_TESTBED
from harness.config import build_config
from harness.errors import PluginError, UsageError
from harness.experiments import calibration
from harness.interfaces import Testbed
from harness.plugins import load_registry
from harness.regimes import load_regimes, regime_options
from plugins.testbeds.synthetic import SyntheticTestbed
from plugins.testbeds.synthetic.world import SyntheticWorld
from plugins.trainers.native import NativeDPOTrainer

TINY_CAL = ["--seeds", "0", "--taus", "0,0.3", *sum((["-o", o] for o in TINY_TESTBED), [])]


@pytest.fixture
def watched(monkeypatch):
    """Count every DPO call after the world is built, and every evaluation."""
    calls = {"train": 0, "evaluate": 0, "built": False}
    train, evaluate = NativeDPOTrainer.train, SyntheticWorld.evaluate
    build = SyntheticTestbed.build_world

    def counting_build(self, **kwargs):
        world = build(self, **kwargs)
        calls["built"] = True
        return world

    def counting_train(self, **kwargs):
        if calls["built"]:  # pi_0's offline round belongs to the world's build
            calls["train"] += 1
        return train(self, **kwargs)

    def counting_evaluate(self, *args, **kwargs):
        calls["evaluate"] += 1
        return evaluate(self, *args, **kwargs)

    monkeypatch.setattr(SyntheticTestbed, "build_world", counting_build)
    monkeypatch.setattr(NativeDPOTrainer, "train", counting_train)
    monkeypatch.setattr(SyntheticWorld, "evaluate", counting_evaluate)
    return calls


def test_calibration_never_trains_past_the_world_nor_evaluates(watched):
    result = calibration.calibrate(load_registry(), seeds=[0], options=TINY_TESTBED, taus=(0.3,))
    assert watched["built"], "the calibration builds worlds"
    assert watched["train"] == 0, "nothing is trained after the world is built"
    assert watched["evaluate"] == 0, "nothing is evaluated"
    assert set(result.table[0.3]) == set(calibration.SUBSETS)


def test_the_watcher_sees_a_run_train_and_evaluate(watched, cli, db_path):
    """The calibration's zero counts mean something: the same watcher counts a run's training and evaluation."""
    from conftest import TINY_RUN

    assert cli("run", *TINY_RUN).exit_code == 0
    assert watched["train"] >= 2 and watched["evaluate"] >= 3


def test_the_diagnostics_are_those_a_run_records(cli, db_path):
    diagnostics = calibration.iteration_one_diagnostics(
        load_registry(), instance="smallest", corpus="largest", options=TINY_TESTBED, seed=4)
    # the same default-shaped run (3 iterations, 3,000 labels); training strength cannot move iteration 1's pairs
    args = ["--instance-selector", "smallest", "--corpus-selector", "largest", "--seed", "4", "-o", "trainer.epochs=1"]
    assert cli("run", *args, *sum((["-o", o] for o in TINY_TESTBED), [])).exit_code == 0
    columns = ("pairs", "mean_abs_margin", "ranking_accuracy", "label_noise", "selected_kl")
    row = sqlite3.connect(db_path).execute(
        f"select {', '.join('sel_' + c for c in columns)} from iterations where iteration = 1").fetchone()
    assert row[0] == 1000
    for column, recorded in zip(columns, row):
        assert diagnostics[column] == pytest.approx(recorded, rel=1e-12), column


def test_beta_is_the_figure_margin_over_the_measured_margin():
    result = calibration.calibrate(load_registry(), seeds=[0], options=TINY_TESTBED, taus=(0.0, 0.3))
    margin = result.table[result.tau][calibration.EXTREME_SUBSET]["mean_abs_margin"]
    assert result.betas["beta-inside"] == pytest.approx(21.51 / margin)
    assert result.betas["unscaled"] == pytest.approx(2.151 / margin)
    assert result.tau == min(result.losses, key=result.losses.get)
    regimes = result.regimes()
    assert regimes["unscaled"][1] == f"testbed.tau={result.tau:g}"


def test_confirmation_seeds_and_bad_values_exit_2(cli):
    for args, needle in ((["--seeds", "998-1000"], "confirmation seeds"), (["--seeds", "a-b"], "cannot read"),
                         (["--taus", "x"], "comma list"), (["--taus", "-1"], "in [0, 1000]")):
        result = cli("calibrate", *args)
        assert result.exit_code == 2, args
        assert needle in result.output, (args, result.output)


def test_write_replaces_only_the_calibrated_tables(cli, tmp_path):
    path = tmp_path / "regimes.toml"
    path.write_text('# kept\n[mine]\nchosen_by = "declaration"\noptions = ["testbed.tau=0"]\n\n'
                    '[calibrated-unscaled]\nchosen_by = "calibration"\noptions = ["trainer.beta=99"]\n')
    result = cli("calibrate", *TINY_CAL, "--write", path, "--json")
    assert result.exit_code == 0, result.output
    regimes = load_regimes(path)
    assert set(regimes) == {"mine", "calibrated-unscaled", "calibrated-beta-inside"}
    assert regimes["mine"].options == ("testbed.tau=0",)
    assert regimes["calibrated-unscaled"].options != ("trainer.beta=99",)
    assert regimes["calibrated-unscaled"].chosen_by == "calibration"
    assert regimes["calibrated-unscaled"].provenance["seeds"] == [0]
    from harness.provenance import git_commit

    assert regimes["calibrated-unscaled"].provenance["calibrated_on_commit"] == git_commit(), "the measuring code"
    assert path.read_text().startswith("# kept\n")
    printed = json.loads(result.stdout[result.stdout.index("{"):])
    assert printed["regimes"]["calibrated-unscaled"] == list(regimes["calibrated-unscaled"].options)


def test_the_synthetic_testbed_keeps_its_outcome_chosen_default():
    regimes = SyntheticTestbed.regimes()
    assert regimes["outcome-chosen"].chosen_by == "outcome"
    assert "chosen during design" in regimes["outcome-chosen"].description
    defaults = SyntheticTestbed({}).settings
    assert "testbed.tau=" + f"{defaults['tau']:g}" in regimes["outcome-chosen"].options


def test_a_regime_expands_and_the_command_line_wins():
    registry = load_registry()
    plain = build_config(registry)
    named = build_config(registry, regime="outcome-chosen")
    assert named.regime == "outcome-chosen" and plain.regime is None
    assert named.strategy_hash() == plain.strategy_hash(), "the outcome-chosen regime is the defaults"
    assert "regime" not in plain.to_dict(), "configs without a regime read as before"
    overridden = build_config(registry, regime="outcome-chosen", options=("trainer.beta=0.5",))
    assert overridden.trainer.settings["beta"] == 0.5


def test_unknown_regimes_and_bad_files_are_clear_errors(tmp_path, cli):
    with pytest.raises(UsageError, match="did you mean 'outcome-chosen'"):
        regime_options(SyntheticTestbed, "outcome-chosn")
    result = cli("run", "--regime", "nope", "--dry-run")
    assert result.exit_code == 2 and "has no regime 'nope'" in result.output

    class Bare(Testbed):
        name = "bare"

    with pytest.raises(UsageError, match="its regimes: none"):
        regime_options(Bare, "x")
    bad = tmp_path / "r.toml"
    bad.write_text('[x]\nchosen_by = "luck"\n')
    with pytest.raises(PluginError, match="chosen_by must be one of"):
        load_regimes(bad)
    bad.write_text('[x]\nchosen_by = "outcome"\noptions = ["no equals sign"]\n')
    with pytest.raises(PluginError, match="role.key=value"):
        load_regimes(bad)

"""The guard against an iteration that trained nothing: failed run, or a warning with --allow-static-policy."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest

from conftest import TINY_RUN
from harness.static_policy import ParameterChange, compare_parameters, static_policy_message

torch = pytest.importorskip("torch")

PLUGIN = textwrap.dedent('''
    import numpy as np
    import torch

    from harness import hookimpl
    from harness.interfaces import Judge, Labels, TrainResult
    from plugins.trainers.native import NativeDPOTrainer


    class ZeroRateTrainer(NativeDPOTrainer):
        """One real optimiser step at learning rate 0: what a warm-up that starts at 0 does to a one-step call."""

        name = "zero-rate"
        description = "one Adam step at learning rate 0"

        def train(self, *, policy, data, rng):
            model = policy.clone()
            optimizer = torch.optim.Adam(list(model.parameters()), lr=0.0)
            loss = sum(p.sum() for p in model.parameters())
            loss.backward()
            optimizer.step()
            return TrainResult(policy=model, steps=1, epochs=1.0, loss_first=0.69, loss_last=0.69,
                               log={"lr_first": 0.0, "lr_max": 0.0})


    class IdentityTrainer(NativeDPOTrainer):
        """A third-party trainer that hands back the policy it was given."""

        name = "identity"
        description = "returns its input"

        def train(self, *, policy, data, rng):
            return TrainResult(policy=policy, steps=3, epochs=1.0, loss_first=0.69, loss_last=0.69)


    class AllTies(Judge):
        """An annotator that calls every pair a tie: labels paid, nothing to train on."""

        name = "all-ties"
        description = "every pair a tie"

        def compare(self, *, world, prompts, responses, pairs, rng):
            n = len(pairs)
            return Labels(prefer_a=np.zeros(n, dtype=bool), tie=np.ones(n, dtype=bool))


    @hookimpl
    def register_trainers(register):
        register(ZeroRateTrainer)
        register(IdentityTrainer)


    @hookimpl
    def register_judges(register):
        register(AllTies)
''')


@pytest.fixture
def plugin(tmp_path):
    path = tmp_path / "static_plugin.py"
    path.write_text(PLUGIN)
    return str(path)


def _run(cli, plugin, db, *args):
    return cli("run", *TINY_RUN, "--plugin", plugin, "--db", db, *args)


def _board(db):
    from leaderboard.store import Leaderboard

    return Leaderboard(db, create=False)


@pytest.mark.parametrize("trainer, said", [
    ("zero-rate", "first-step learning rate 0"),
    ("identity", "returned the policy it was given"),
])
def test_an_unchanged_policy_fails_the_run_and_names_the_fix(cli, plugin, tmp_path, trainer, said):
    db = tmp_path / "board.db"
    result = _run(cli, plugin, db, "--trainer", trainer)
    assert result.exit_code == 1, result.output
    board = _board(db)
    (run,) = board.runs(status=None)
    assert run["status"] == "failed"
    error = board.get_run(run["id"])["error"]
    assert "StaticPolicyError" in error and said in error
    assert "iteration 1" in error and "--allow-static-policy" in error and "trainer.lr" in error
    assert [row["iteration"] for row in board.iterations(run["id"])] == [0]  # pi_0 kept, nothing after


def test_allow_static_policy_records_a_warning_and_goes_on(cli, plugin, tmp_path):
    db = tmp_path / "board.db"
    with pytest.warns(RuntimeWarning, match="trained nothing"):
        result = _run(cli, plugin, db, "--trainer", "zero-rate", "--allow-static-policy", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    rows = out["iterations"]
    assert [r["policy_changed"] for r in rows[1:]] == [0, 0]
    assert [r["kl_prev"] for r in rows[1:]] == [0.0, 0.0]  # the same weights: exactly no step
    assert all("trained nothing" in r["warning"] for r in rows[1:])
    assert out["config"]["allow_static_policy"] is True


def test_an_iteration_without_trainable_pairs_is_recorded_not_failed(cli, plugin, tmp_path):
    db = tmp_path / "board.db"
    result = _run(cli, plugin, db, "--annotator", "all-ties", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout.strip().splitlines()[-1])["iterations"]
    for row in rows[1:]:
        assert row["labels"] > 0 and row["ties"] == row["labels"]  # paid for, nothing to learn from
        assert row["train_steps"] == 0 and row["policy_changed"] == 0 and row.get("warning") is None


def test_a_default_run_records_that_every_iteration_moved(cli, tmp_path):
    db = tmp_path / "board.db"
    result = cli("run", *TINY_RUN, "--db", db, "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert "allow_static_policy" not in out["config"]  # absent while off: earlier runs keep their config hash
    for row in out["iterations"][1:]:
        assert row["policy_changed"] == 1 and row["params_changed"] > 0
        assert row["kl_prev"] > 2 * row["kl_prev_se"] > 0  # KL(pi_{i-1} || pi_i) on pi_{i-1}'s own samples
        assert row["train_lr_first"] > 0 and row["train_lr_max"] >= row["train_lr_first"]


def _module():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 1))


def test_compare_parameters_bit_for_bit():
    import copy

    net = _module()
    clone = copy.deepcopy(net)
    assert compare_parameters(net, clone) == ParameterChange(0, 4)
    assert compare_parameters(net, net).static
    with torch.no_grad():
        clone[1].bias.add_(torch.finfo(torch.float32).eps)  # the smallest change still counts
    assert compare_parameters(net, clone) == ParameterChange(1, 4)


def test_frozen_parameters_are_not_counted():
    import copy

    net = _module()
    for p in net[0].parameters():
        p.requires_grad_(False)
    clone = copy.deepcopy(net)
    with torch.no_grad():
        clone[0].weight.add_(1.0)  # a frozen tensor changed: not training's doing, still static
    assert compare_parameters(net, clone) == ParameterChange(0, 2)


def test_policies_without_torch_parameters_are_not_checked():
    class Opaque:
        pass

    class Arrays:
        def parameters(self):
            return [np.zeros(3)]

    assert compare_parameters(Opaque(), Opaque()) is None
    assert compare_parameters(Arrays(), Arrays()) is None


def test_the_message_names_causes_and_options():
    text = static_policy_message(iteration=2, trainer="trl", pairs=4, steps=1, log={"lr_first": 0.0},
                                 change=ParameterChange(0, 10), same_object=False)
    assert text.startswith("iteration 2: trainer 'trl'") and "pi_1" in text and "4 pairs" in text
    assert "warm-up" in text and "-o trainer.steps" in text and "frozen" in text
    none = static_policy_message(iteration=1, trainer="x", pairs=4, steps=0, log={}, change=ParameterChange(0, 0),
                                 same_object=False)
    assert "no trainable parameters" in none and "no optimiser step ran" in none

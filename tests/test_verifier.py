"""The verifiable regime: its templates and checks, the shipped files, and the ``verifier`` judge."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from harness.errors import UsageError
from harness.interfaces import Pairs, Responses
from plugins._verifiable import CHECKS, parse_check, verify
from plugins.testbeds.hf import verifiable

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "plugins" / "testbeds" / "hf" / "data" / "verifiable"


@pytest.mark.parametrize(("check", "passes", "fails"), [
    ({"kind": "number", "answer": 12}, ["12", "12.", "7 plus 5 equals 12.", "The answer is 1,2... no: 12", "12.0"],
     ["", "13", "12 is wrong, it is 13", "twelve", "12.5"]),
    ({"kind": "number", "answer": -3}, ["-3"], ["3"]),
    ({"kind": "number", "answer": 78, "exclude": [34]}, ["78", "The larger number is 78."],
     ["Which number is larger, 34 or 78?", "Of 34 and 78, 78", "34"]),
    ({"kind": "contains_word", "word": "APPLE", "case": "exact"}, ["APPLE", "It is APPLE."],
     ["apple", "Apple", "APPLES", "PINEAPPLE"]),
    ({"kind": "contains_word", "word": "river"}, ["The River was wide.", "a river"], ["rivers flow", ""]),
    ({"kind": "yes_no", "answer": "yes"}, ["Yes.", "yes, it is", "Well, yes", "Yes, it is not smaller"],
     ["No.", "no, yes", "Indeed.", "Answer yes or no: no", "I cannot say yes or no."]),
    ({"kind": "starts_with", "word": "Today"}, ["Today it rains.", "today, rain", "  Today"],
     ["It rains today.", "Todays", ""]),
    ({"kind": "lowercase", "min_words": 3}, ["i like the sea."], ["I like the sea.", "the sea", ""]),
    ({"kind": "list", "count": 2, "options": ["apple", "pear", "plum"]},
     ["apple, pear", "Apple and Pear.", "1. apple\n2. plum"],
     ["apple", "apple, apple", "apple, pear, plum", "apple, banana"]),
])
def test_each_rule_accepts_what_it_should_and_nothing_else(check, passes, fails):
    for response in passes:
        assert verify(check, response) == 1.0, response
    for response in fails:
        assert verify(check, response) == 0.0, response
    assert verify(json.dumps(check), passes[0]) == 1.0  # the JSON text form, as the files store it


@pytest.mark.parametrize(("check", "message"), [
    ("{not json", "not JSON"),
    ('{"answer": 3}', "with a `kind`"),
    ('{"kind": "spelling"}', "unknown kind 'spelling'"),
    ('{"kind": "number"}', "answer is missing"),
    ('{"kind": "number", "answer": 3, "base": 8}', "unknown base"),
    ('{"kind": "number", "answer": "3"}', "answer must be an integer"),
    ('{"kind": "number", "answer": 3, "exclude": 4}', "exclude must be a list of integers"),
    ('{"kind": "yes_no", "answer": "Yes"}', 'answer must be "yes" or "no"'),
    ('{"kind": "contains_word", "word": "a", "case": "exakt"}', 'case must be "any" or "exact"'),
    ('{"kind": "contains_word", "word": null}', "word must be a word"),
    ('{"kind": "list", "count": 2, "options": "apple, pear"}', "options must be a non-empty list of words"),
    ('{"kind": "lowercase", "min_words": 0}', "min_words must be a positive integer"),
])
def test_a_malformed_check_is_refused_with_what_is_wrong(check, message):
    with pytest.raises(ValueError, match=message):
        parse_check(check, "row 1")


def _rows(split: str) -> list[dict]:
    return [json.loads(line) for line in (SHIPPED / f"{split}.jsonl").read_text().splitlines()]


def test_the_shipped_files_are_what_the_generator_writes(tmp_path):
    written = verifiable.write(tmp_path)
    assert sorted(p.name for p in written) == ["test.jsonl", "train.jsonl"]
    for path in written:
        assert path.read_bytes() == (SHIPPED / path.name).read_bytes(), path.name


def test_the_sets_are_large_disjoint_and_every_family_is_in_both():
    train, test = _rows("train"), _rows("test")
    assert (len(train), len(test)) == (verifiable.TRAIN_SIZE, verifiable.TEST_SIZE) == (2000, 240)
    prompts = [r["prompt"] for r in train + test]
    assert len(set(prompts)) == len(prompts)
    families = {f for f, _, _ in verifiable.FAMILIES}
    assert {r["family"] for r in train} == {r["family"] for r in test} == families
    for row in train + test:
        assert set(row) == {"prompt", "family", "check", "output", "target"}
        assert parse_check(row["check"])["kind"] in CHECKS


def test_every_reference_output_passes_its_check_and_differs_from_the_target():
    """The terse ``output`` is a correct answer (the evaluator's opponent); the fuller ``target`` is what the
    embedding judge measures closeness to, so it must differ. Targets pass too, except a list's, which is
    written as a sentence ("a, b and c are fruits")."""
    for row in _rows("train") + _rows("test"):
        assert verify(row["check"], row["output"]) == 1.0, row
        assert row["output"] != row["target"]
        if row["family"] != "list":
            assert verify(row["check"], row["target"]) == 1.0, row


def test_the_probe_samples_every_candidate_in_a_fixed_order():
    assert sorted(verifiable.PROBE_ORDER) == sorted(f for f, _, _ in (*verifiable.FAMILIES, *verifiable.REJECTED))
    assert not {f for f, _, _ in verifiable.FAMILIES} & {f for f, _, _ in verifiable.REJECTED}


def test_generation_depends_on_the_seed_only():
    first = [t.row() for t in verifiable.generate(50, 3)]
    assert first == [t.row() for t in verifiable.generate(50, 3)]
    assert first != [t.row() for t in verifiable.generate(50, 4)]
    excluded = {t["prompt"] for t in first[:10]}
    assert not excluded & {t.prompt for t in verifiable.generate(50, 3, exclude=excluded)}


def test_the_module_writes_the_files_from_the_command_line(tmp_path, capsys):
    assert verifiable.main(["write", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "train.jsonl").read_bytes() == (SHIPPED / "train.jsonl").read_bytes()
    assert verifiable.main([]) == 2 and "usage" in capsys.readouterr().err


# ---------------------------------------------------------------------------- the judge


class TextWorld:
    """A world that renders fixed texts: prompt row i is ``prompts[i]``, response [i, j] is ``responses[i][j]``."""

    def __init__(self, prompts, responses):
        self.prompts, self.responses = prompts, responses

    def texts(self, prompts, responses):
        rows = [int(r) for r in np.asarray(prompts).reshape(-1)]
        return [self.prompts[r] for r in rows], [list(self.responses[r]) for r in rows]


def _responses(m: int, n: int) -> Responses:
    return Responses(tokens=np.ones((m, n, 1), dtype=np.int64), lengths=np.ones((m, n), dtype=np.int64))


def _tasks(tmp_path: Path) -> Path:
    path = tmp_path / "tasks.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [
        {"prompt": "What is 2 plus 3?", "check": json.dumps({"kind": "number", "answer": 5})},
        {"prompt": "Say yes.", "check": json.dumps({"kind": "yes_no", "answer": "yes"})},
    ]) + "\n")
    return path


def _judge(**settings):
    from harness.plugins import load_registry

    return load_registry().create("judge", "verifier", settings)


def test_the_judge_scores_and_compares_by_the_checks(tmp_path):
    judge = _judge(tasks=str(_tasks(tmp_path)))
    world = TextWorld(["What is 2 plus 3?", "Say yes."], [["5", "6", "It is 5."], ["No", "Yes!", "yes"]])
    prompts = np.array([[0], [1]])
    scores = judge.score(world=world, prompts=prompts, responses=_responses(2, 3), rng=None)
    np.testing.assert_array_equal(scores, [[1, 0, 1], [0, 1, 1]])
    pairs = Pairs(prompt=np.array([0, 0, 1]), a=np.array([0, 1, 1]), b=np.array([1, 0, 2]))
    labels = judge.compare(world=world, prompts=prompts, responses=_responses(2, 3), pairs=pairs, rng=None)
    assert labels.prefer_a.tolist() == [True, False, False] and labels.tie.tolist() == [False, False, True]
    assert judge.usage() == {"verifier_items": 6 + 6}
    assert judge.exact


def test_the_judge_reads_every_data_file_of_a_directory(tmp_path):
    _tasks(tmp_path)
    (tmp_path / "more.jsonl").write_text(json.dumps(
        {"prompt": "Say no.", "check": json.dumps({"kind": "yes_no", "answer": "no"})}) + "\n")
    judge = _judge(tasks=str(tmp_path))
    assert set(judge.checks()) == {"What is 2 plus 3?", "Say yes.", "Say no."}
    assert len(_judge(tasks=str(SHIPPED)).checks()) == 2240


def test_the_judge_says_what_is_missing_or_malformed(tmp_path):
    with pytest.raises(UsageError, match="needs its `tasks` option"):
        _judge().checks()
    with pytest.raises(UsageError, match="no such file|does not exist|not found"):
        _judge(tasks=str(tmp_path / "absent.jsonl"))
    with pytest.raises(UsageError, match="has no data files"):
        (tmp_path / "empty").mkdir()
        _judge(tasks=str(tmp_path / "empty"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "p", "check": '{"kind": "spelling"}'}) + "\n")
    with pytest.raises(UsageError, match=r"bad.jsonl\), row 1: unknown kind 'spelling'"):
        _judge(tasks=str(bad)).checks()
    twice = tmp_path / "twice.jsonl"
    twice.write_text("".join(json.dumps({"prompt": "p", "check": json.dumps({"kind": "number", "answer": a})}) + "\n"
                             for a in (1, 2)))
    with pytest.raises(UsageError, match="two different checks"):
        _judge(tasks=str(twice)).checks()
    judge = _judge(tasks=str(_tasks(tmp_path)))
    with pytest.raises(UsageError, match="no check for the prompt 'Unknown'"):
        judge.score(world=TextWorld(["Unknown"], [["1"]]), prompts=np.array([[0]]), responses=_responses(1, 1),
                    rng=None)


# ---------------------------------------------------------------------------- an hf run with verified gold


def test_an_hf_run_with_the_verifier_as_gold_reports_gold_and_label_noise(cli, db_path, tmp_path, monkeypatch):
    """The tiny hf world's toy tasks (say/reverse/upper WORD) checked by rule: the verifier labels the pairs
    and is the world's gold, so rows carry ``gold_reward``, the pool's gold signal and the label noise (0 for
    an exact annotator); the evaluator is an independent judge (the tiny reward model)."""
    from tests.extras import skip_unless_extra

    skip_unless_extra("hf")
    from plugins.testbeds.hf.tiny import answer
    from tests.hf_tiny import tiny_paths

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    paths = tiny_paths()
    tasks = tmp_path / "tasks.jsonl"
    prompts = [json.loads(line)["prompt"] for f in (paths.prompts, paths.eval) for line in open(f)]
    tasks.write_text("".join(json.dumps({"prompt": p, "check": json.dumps(
        {"kind": "contains_word", "word": answer(p), "case": "exact"})}) + "\n" for p in prompts))
    options = {"testbed.model": paths.policy, "testbed.initial_model": paths.initial,
               "testbed.prompts": paths.prompts, "testbed.eval_prompts": paths.eval,
               "testbed.max_new_tokens": 16, "testbed.threads": 1, "annotator.tasks": tasks, "gold.tasks": tasks,
               "evaluator.model": paths.reward, "trainer.lr": 1e-3, "trainer.batch_size": 4}
    args = [arg for key, value in options.items() for arg in ("-o", f"{key}={value}")]
    result = cli("run", "--testbed", "hf", "--selector", "smallest", "--annotator", "verifier",
                 "--gold-judge", "verifier", "--evaluator", "reward_model", "--iterations", "2", "--budget", "16",
                 "--responses", "4", *args, "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    rows = out["iterations"]
    assert out["config"]["gold_judge"]["name"] == "verifier"  # kept though no selector reads its scores
    for row in rows:
        assert 0.0 <= row["gold_reward"] <= 1.0 and row["gold_reward_se"] >= 0.0
        assert 0.0 <= row["greedy_gold_reward"] <= 1.0  # the evaluator's greedy outputs, checked by gold
    for row in rows[1:]:
        assert 0.0 <= row["pool_gold_mean"] <= 1.0 and 0.0 <= row["pool_gold_split_share"] <= 1.0
        assert row["sel_label_noise"] == 0.0  # the annotator is the gold itself
    assert out["final_gold_reward"] == rows[-1]["gold_reward"]


def test_a_gold_judge_that_is_not_exact_is_still_dropped_when_nothing_reads_it(tmp_path):
    """Only an exact judge is the world's gold: an unread embedding gold judge is left out of the run, as before."""
    from harness.config import build_config
    from harness.plugins import load_registry

    registry = load_registry()
    kept = build_config(registry, testbed="hf", gold_judge="verifier", annotator="verifier")
    assert kept.gold_judge is not None and kept.gold_judge.name == "verifier"
    dropped = build_config(registry, testbed="hf", gold_judge="embedding", annotator="verifier")
    assert dropped.gold_judge is None
    synthetic = build_config(registry, gold_judge="verifier")  # its worlds have their own gold
    assert synthetic.gold_judge is None

"""`shipped:NAME` names data the package ships, so plans and commands work from any directory."""

import pytest

from harness.errors import UsageError
from plugins import _shipped as shipped


def test_a_shipped_name_is_the_packaged_file_and_anything_else_is_left_alone(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the repository: relative paths to the data would fail here
    folder = shipped.resolve("shipped:verifiable")
    assert folder == str(shipped.DATA_DIR / "verifiable") and (shipped.DATA_DIR / "verifiable" / "train.jsonl").is_file()
    assert shipped.resolve("shipped:verifiable/test.jsonl").endswith("verifiable/test.jsonl")
    for value in ("prompts.jsonl", "ORG/NAME", None, 3):
        assert shipped.resolve(value) == value
    for bad in ("shipped:nothing", "shipped:", "shipped:../studies"):
        with pytest.raises(UsageError, match="no such shipped data; shipped: .*shipped:verifiable"):
            shipped.resolve(bad)


def test_the_verifier_reads_its_checks_from_shipped_data_anywhere(tmp_path, monkeypatch):
    from plugins.judges.verifier import VerifierJudge

    monkeypatch.chdir(tmp_path)
    judge = VerifierJudge({"tasks": "shipped:verifiable"})
    assert len(judge._files()) == 2


def test_built_in_plans_name_their_data_as_shipped_data():
    """A plan's paths would be read from the working directory: the built-in plans must not depend on it."""
    from pathlib import Path

    plans = Path(shipped.__file__).resolve().parent / "studies"
    for plan in plans.glob("*.toml"):
        text = plan.read_text()
        assert "=plugins/" not in text and "=./" not in text, plan.name  # an option value read from the cwd

"""docs/reproduction.md (written by `harness study run NAME --publish docs/reproduction.md`) covers every claim
of the built-in studies."""

from pathlib import Path

import pytest

from harness.experiments import study_report as sr

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "reproduction.md"


@pytest.fixture(scope="module")
def doc_text():
    if not DOC.exists():
        pytest.fail(f"{DOC} is missing; write it with `harness study run yang2024 --jobs 2 --publish docs/reproduction.md` "
                    "and the same for huang2025")
    return DOC.read_text(encoding="utf-8")


# (the check that the results page's verdict table agrees with this file lives in tests/test_docs_generated.py)


def test_docs_reproduction_covers_every_claim_of_the_builtin_studies(doc_text):
    from harness.experiments import study_plan as sp
    from harness.plugins import load_registry

    registry = load_registry()
    published = sr.published_verdicts(doc_text)
    for name in ("yang2024", "huang2025"):
        plan = sp.find_plan(name, registry)
        rows = {row["claim"]: row for row in published.get(name, [])}
        assert list(rows) == [c.id for c in plan.claims], f"republish {name}: its section lists other claims"
        for claim in plan.claims:
            assert rows[claim.id]["verdict"] != "too few pairs", f"{name}: {claim.id} has no measured pairs"
            if claim.blocks:
                assert len(rows[claim.id]["blocks"]) == 3, f"{name}: {claim.id} should show 3 blocks of 10 seeds"
    for phrase in ("**Command:** `harness study run yang2024", "**Command:** `harness study run huang2025",
                   "**Measured time:**", "numpy ", "torch ", "git commit"):
        assert phrase in doc_text, phrase

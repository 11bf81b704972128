"""`harness study ... --publish FILE`: the study's section of a combined file, its measured time, the README table."""

import json
import textwrap

import pytest

from conftest import TINY_TESTBED
from harness.experiments import study as st
from harness.experiments import study_report as sr


# -- the measured time, from the runs' rows ------------------------------------------------------------


def row(run_id, started, finished, wall):
    day = "2026-11-25T"
    return {"id": run_id, "started_at": day + started + ".000+00:00", "finished_at": day + finished + ".000+00:00",
            "wall_seconds": wall}


def test_study_time_of_an_interrupted_study_and_its_rerun():
    runs = [
        row("r1", "10:00:00", "10:00:10", 10.0),
        row("r2", "10:00:00", "10:00:12", 12.0),  # in parallel with r1
        row("r3", "10:00:12", "10:05:08", 8.0),   # interrupted at ~10:00:15, resumed at 10:05:00 by the re-run
        row("r4", "10:05:00", "10:05:06", 6.0),
    ]
    time = st.study_time(runs)
    assert time["runs"] == 4 and time["run_seconds"] == 36.0
    assert time["span_seconds"] == 308.0  # 10:00:00 to 10:05:08, the pause included
    assert time["busy_seconds"] == 20.0   # [10:00:00, 10:00:12] and [10:05:00, 10:05:08]: the pause excluded
    assert (time["first_start"], time["last_finish"]) == ("2026-11-25T10:00:00+00:00", "2026-11-25T10:05:08+00:00")
    text = sr.time_text(time)
    assert "20 s while at least one run was computing" in text and "span 5 min 08 s (308 s)" in text
    assert st.study_time([])["busy_seconds"] is None


# -- sections of the combined file ----------------------------------------------------------------------


def section(key, body):
    return f"<!-- study:{key} start -->\n{body}\n<!-- study:{key} end -->"


def test_a_section_is_replaced_in_place_and_the_others_are_kept():
    text = sr.PUBLISH_HEADER + "\n" + section("a", "old a") + "\n\nhand-written note\n\n" + section("b", "b\n| x |") + "\n"
    updated = sr.replace_study_section(text, "a", section("a", "new a"))
    assert updated == text.replace("old a", "new a")
    appended = sr.replace_study_section(updated, "c", section("c", "c"))
    assert appended.startswith(updated.rstrip("\n")) and appended.endswith(section("c", "c") + "\n")
    assert sr.replace_study_section(sr.PUBLISH_HEADER, "NAME", section("NAME", "x")).endswith(section("NAME", "x") + "\n")
    with pytest.raises(ValueError, match="lacks one of its marker lines"):
        sr.replace_study_section("<!-- study:a start -->\nno end", "a", section("a", "x"))


def tiny_plan(title):
    options = ", ".join(f'"{o}"' for o in TINY_TESTBED)
    return textwrap.dedent(f"""\
        [study]
        title = "{title}"
        seeds = 4

        [[grid]]
        name = "one"
        selector = ["smallest", "random"]
        iterations = 1
        budget = 80
        options = [{options}]

        [[claim]]
        id = "smallest-vs-random"
        metric = "final_win_rate"
        a = {{grid = "one", selector = "smallest"}}
        b = {{grid = "one", selector = "random"}}
        direction = "a > b"
        blocks = 2

        [[claim]]
        id = "ranking-accuracy"
        metric = {{metric = "sel_ranking_accuracy", iteration = 1}}
        a = {{grid = "one", selector = "smallest"}}
        b = {{grid = "one", selector = "random"}}
        direction = "a < b"
        """)


def test_publish_writes_the_section_report_design_and_time(cli, db_path, tmp_path):
    plan = tmp_path / "tiny.toml"
    plan.write_text(tiny_plan("tiny"))
    published = tmp_path / "docs" / "reproduction.md"
    result = cli("study", "run", plan, "--jobs", "2", "--publish", published, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["runs"] == {"finished": 8, "wanted": 8} and summary["published"] == str(published)
    assert summary["time"]["runs"] == 8 and summary["time"]["busy_seconds"] > 0
    blocked = next(c for c in summary["claims"] if c["claim"] == "smallest-vs-random")
    assert blocked["family"] == "all claims" and blocked["family_size"] == 2 and blocked["correction"] == "holm"
    assert blocked["p_adjusted"] >= blocked["p"] and 0 < blocked["p_sign_flip"] <= 1
    assert "blocks" not in blocked  # retired: no per-block verdicts
    terminal = " ".join(result.stderr.split())
    assert "blocks = 2 is deprecated and ignored" in terminal
    assert "does not declare exploration seeds" in terminal
    assert "measured time of the study's 8 runs (from the database)" in terminal

    report = tmp_path / "docs" / "studies" / "tiny" / "report.md"  # publishing puts the report beside the file
    text = report.read_text()
    assert "- **Measured time:** " in text and "summed over the 8 runs" in text
    assert "## Blocks of" not in text and "## Design" in text and "**Multiplicity:** Holm" in text
    assert "sign-flip p" in text and "HOLM p" in text and "blocks = 2 is deprecated" in text

    doc = published.read_text()
    assert doc.startswith(sr.PUBLISH_HEADER)
    for phrase in ("<!-- study:tiny start -->", "<!-- study:tiny end -->", f"--publish {published}",
                   "git commit", "numpy ", "torch ", "Python ", "8 of 8 planned runs", "**Measured time:**",
                   "[studies/tiny/report.md](studies/tiny/report.md)", "(studies/tiny/forest.png)",
                   "sign-flip p", "HOLM p"):
        assert phrase in doc, phrase
    verdicts = sr.published_verdicts(doc)["tiny"]
    assert [r["claim"] for r in verdicts] == ["smallest-vs-random", "ranking-accuracy"]
    assert verdicts[0]["blocks"] == [] and "↳ seeds" not in doc
    assert verdicts[0]["ci"] == blocked["ci"] and verdicts[0]["verdict"] == blocked["verdict"]

    other = tmp_path / "other.toml"  # a second study: its own section, the first one untouched
    other.write_text(tiny_plan("other"))
    assert cli("study", "report", other, "--publish", published).exit_code == 0
    both = published.read_text()
    tiny_section = doc[doc.index("<!-- study:tiny start -->"):doc.index("<!-- study:tiny end -->")]
    assert tiny_section in both and both.index("study:tiny start") < both.index("study:other start")
    assert list(sr.published_verdicts(both)) == ["tiny", "other"]

    again = cli("study", "report", plan, "--publish", published)  # rewritten in place, still once, still first
    assert again.exit_code == 0
    final = published.read_text()
    assert final.count("<!-- study:tiny start -->") == 1 and final.index("study:tiny") < final.index("study:other")
    assert "harness study report" in final.split("study:other start")[0]
    table = sr.readme_table(final)
    assert "| tiny | smallest-vs-random |" in table and "| other | ranking-accuracy |" in table


def test_the_readme_table_is_written_and_checked_from_the_published_file(tmp_path):
    doc = tmp_path / "reproduction.md"
    doc.write_text(sr.PUBLISH_HEADER + "\n" + section("s1", textwrap.dedent("""\
        | claim | finding | metric | contrast A − B | source direction | measured Δ ± sd | 95% CI | n | detectable Δ | verdict |
        | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
        | c1 | F3 | final_win_rate | [g] x − y | a < b | -0.017 ± 0.033 | [-0.029, -0.005] | 30 | 0.012 | **reproduced** |
        | ↳ seeds 0-9 |  |  |  |  | -0.030 ± 0.030 | [-0.051, -0.009] | 10 | 0.021 | **reproduced** |
        | ↳ seeds 10-19 |  |  |  |  | -0.001 ± 0.030 | [-0.022, +0.020] | 10 | 0.021 | **not separable** |
        | c2 | F1 | win\\|rate | [g] x − y | a > b | +0.104 ± 0.049 | [+0.069, +0.140] | 10 | 0.035 | **reproduced** |""")))
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n\n{sr.TABLE_START}\nstale\n{sr.TABLE_END}\n\nrest\n")
    assert sr.main(["--check", str(readme), "--from", str(doc)]) == 1
    assert sr.main(["--write", str(readme), "--from", str(doc)]) == 0
    assert sr.main(["--check", str(readme), "--from", str(doc)]) == 0
    text = readme.read_text()
    assert text.startswith("intro\n\n") and text.endswith("\n\nrest\n")
    assert "| s1 | c1 | -0.017 | [-0.029, -0.005] | **reproduced** | 0-9: reproduced · 10-19: not separable |" in text
    assert "| s1 | c2 | +0.104 | [+0.069, +0.140] | **reproduced** |  |" in text

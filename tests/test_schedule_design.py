"""The response-surface design over budget schedules: points, the Scheffé fit, the power calculation and the refusal."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_TESTBED
from harness.errors import UsageError
from harness.experiments import schedule_design as sd

ROOT = Path(__file__).resolve().parents[1]


def test_the_design_is_a_simplex_lattice_plus_centroid_above_the_floor():
    points = sd.mixture_design(3000, 3, floor=0.1)
    assert [p.name for p in points] == ["vertex-1", "vertex-2", "vertex-3", "edge-1-2", "edge-1-3", "edge-2-3",
                                        "centroid"]
    assert {p.name: p.labels for p in points}["vertex-1"] == (2400, 300, 300)
    assert {p.name: p.labels for p in points}["edge-2-3"] == (300, 1350, 1350)
    assert {p.name: p.labels for p in points}["centroid"] == (1000, 1000, 1000)
    assert all(sum(p.labels) == 3000 and min(p.labels) >= 300 for p in points)
    assert points[0].weights == "2400,300,300"
    for floor in (0.34, 0.0):
        with pytest.raises(UsageError, match="floor"):
            sd.mixture_design(3000, 3, floor=floor)


def test_the_fit_recovers_a_known_surface_and_its_interaction():
    points = sd.mixture_design(3000, 3, floor=0.1)
    truth = np.array([1.0, 1.2, 0.8, 1.5, 0.0, -0.4])  # b1 b2 b3 b12 b13 b23
    rng = np.random.default_rng(0)
    values = {}
    for seed in range(40):
        shift = rng.normal(0, 0.3)  # a seed effect: cancels in every paired comparison
        values[seed] = {p.name: float(sd.scheffe_terms(p.z) @ truth + shift + rng.normal(0, 0.02)) for p in points}
    fit = sd.fit_design(points, values)
    means = [fit["terms"][name]["mean"] for name in sd.term_names(3)]
    assert np.allclose(means, truth + np.array([1, 1, 1, 0, 0, 0]) * np.mean(
        [v["centroid"] - sd.scheffe_terms(points[-1].z) @ truth for v in values.values()]), atol=0.05)
    assert fit["terms"]["b12"]["p_holm"] < 0.001 and fit["terms"]["b12"]["ci_low"] > 1.3
    assert fit["terms"]["b13"]["ci_low"] < 0 < fit["terms"]["b13"]["ci_high"]
    assert abs(fit["lack_of_fit"]["mean"]) < 0.02
    # the true surface peaks on the edge between iterations 1 and 2, nearer 2
    z = fit["optimum"]["z"]
    assert z[2] == pytest.approx(0.0, abs=0.03) and 0.3 < z[0] < 0.6
    assert fit["optimum"]["gain_over_centroid"]["mean"] > 0
    expected = np.mean([v["vertex-2"] - v["centroid"] for v in values.values()])
    assert fit["against_centroid"]["vertex-2"]["mean"] == pytest.approx(expected)
    assert set(fit["against_centroid"]) == {p.name for p in points} - {"centroid"}
    assert all("p_holm" in diff for diff in fit["against_centroid"].values())


def test_a_curved_surface_shows_as_lack_of_fit():
    points = sd.mixture_design(3000, 3, floor=0.1)
    values = {s: {p.name: float(np.prod(p.z) * 27 + 0.01 * s) for p in points}
              for s in range(6)}  # a bump of exactly 1 at the centroid (0 at every other point)
    fit = sd.fit_design(points, values)
    assert fit["lack_of_fit"]["mean"] == pytest.approx(1.0)  # the whole bump, not the residual's shrunk share


def test_seeds_needed_matches_the_paired_t_tables():
    assert sd.seeds_needed(0.5, 1.0) == 34  # Cohen's d = 0.5, two-sided 0.05, 80%: 34 pairs
    assert sd.seeds_needed(1.0, 1.0) == 10
    assert sd.power(34, 0.5, 1.0) >= 0.8 > sd.power(33, 0.5, 1.0)


def test_a_confirmation_beyond_two_hours_refuses_unless_underpowered_is_accepted():
    with pytest.raises(UsageError, match="--underpowered-ok"):
        sd.cost_check(effect=0.01, sd=0.2, points=7, seconds_per_run=10.0, underpowered_ok=False)
    check = sd.cost_check(effect=0.01, sd=0.2, points=7, seconds_per_run=10.0, underpowered_ok=True)
    assert check.underpowered and check.seeds_run == 7200 // 70 and check.seeds_needed > check.seeds_run
    assert check.power_run < 0.8 and any("UNDERPOWERED" in line for line in check.lines(0.01, 0.2, "gold"))
    with pytest.raises(UsageError, match="even 2 seeds"):  # never past the limit, underpowered or not
        sd.cost_check(effect=0.01, sd=0.2, points=7, seconds_per_run=600.0, underpowered_ok=True)
    affordable = sd.cost_check(effect=0.5, sd=0.2, points=7, seconds_per_run=10.0, underpowered_ok=False)
    assert not affordable.underpowered and affordable.seeds_run == affordable.seeds_needed


def test_the_script_prints_the_power_calculation_and_refuses_before_any_confirmation_run(tmp_path):
    options = sum((["-o", option] for option in (*TINY_TESTBED, "trainer.epochs=1")), [])
    out = tmp_path / "design.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "schedule_design.py"), "--budget", "150", "--effect", "0.0001",
         "--pilot-seeds", "0-1", "--seeds-from", "100", "--db", str(tmp_path / "lb.db"), "--out", str(out),
         *options], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert "more than 2 h" in done.stderr and "--underpowered-ok" in done.stderr
    assert "power calculation:" in done.stdout  # printed before the refusal
    assert not out.exists()
    with sqlite3.connect(tmp_path / "lb.db") as conn:
        seeds = {row[0] for row in conn.execute("select seed from runs")}
    assert seeds == {0, 1}  # the pilot ran; no confirmation seed did
    # another world's runs in the same database are not this design's
    other = subprocess.run([sys.executable, "-m", "harness", "run", "--selector", "smallest", "--allocator", "custom",
                            "-o", "allocator.weights=15,15,120", "--budget", "150", "--iterations", "3",
                            "--seed", "0", "--db", str(tmp_path / "lb.db"), *options],
                           capture_output=True, text=True, cwd=ROOT)
    assert other.returncode == 0, other.stderr[-2000:]
    pilot = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "schedule_design.py"), "--budget", "150", "--effect", "0.0001",
         "--pilot-seeds", "0-1", "--seeds-from", "100", "--pilot-only", "--db", str(tmp_path / "lb.db"),
         "--out", str(out), *options], capture_output=True, text=True, cwd=tmp_path)
    assert pilot.returncode == 0, pilot.stderr[-2000:]
    assert "power calculation:" in pilot.stdout and "seeds are needed" in pilot.stdout
    result = json.loads(out.read_text())
    assert result["confirmation"] is None and result["pilot"]["seeds"] == [0, 1]
    assert result["power"]["seeds_needed"] > 1000  # unaffordable, yet a pilot alone is written, not refused
    with sqlite3.connect(tmp_path / "lb.db") as conn:
        runs = [(json.loads(config), value) for config, value in conn.execute(
            "select config_json, final_gold_reward from runs where status = 'finished'")]
    vertex3 = [(config["testbed"]["settings"].get("world", "bigram"), value) for config, value in runs
               if list(config["allocator"]["settings"]["weights"]) == [15, 15, 120]]
    assert sorted(world for world, _ in vertex3) == ["bigram", "staircase", "staircase"]
    assert result["pilot"]["fit"]["point_means"]["vertex-3"] == pytest.approx(
        np.mean([value for world, value in vertex3 if world == "staircase"]))
    assert set(result["pilot"]["fit"]["terms"]) == set(sd.term_names(3))
    report = tmp_path / "design.md"
    rendered = subprocess.run([sys.executable, str(ROOT / "scripts" / "schedule_design.py"), "render", str(out),
                               str(report)], capture_output=True, text=True)
    assert rendered.returncode == 0, rendered.stderr
    text = report.read_text()
    assert "Pilot only" in text and "Power calculation (printed before the confirmation)" in text
    assert "| b12 |" in text and "Underpowered" not in text
    assert "**Underpowered:**" not in text  # a pilot alone runs no confirmation, so none is underpowered
    result["power"].update(underpowered=True, seeds_run=2, power_run=0.3)
    result["confirmation"] = {"seeds": [100, 101], "fit": result["pilot"]["fit"], "underpowered": True}
    assert "**Underpowered:** 2 seeds were run where" in "\n".join(sd.report_lines(result))

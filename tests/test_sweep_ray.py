"""`harness sweep --executor ray` against a local Ray instance (skipped when Ray is not installed)."""

import json

import pytest

from leaderboard.store import Leaderboard
from tests.conftest import TINY_RUN
from tests.extras import skip_unless_extra

skip_unless_extra("ray")

import ray  # noqa: E402


@pytest.fixture
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def test_ray_executor_runs_the_grid_and_a_rerun_skips_it(cli, db_path, local_ray):
    args = ["sweep", *TINY_RUN, "--selector", "smallest,random", "--seeds", "0-1", "--jobs", "2",
            "--executor", "ray", "--json"]
    first = cli(*args)
    assert first.exit_code == 0, first.output
    summary = json.loads(first.stdout.strip().splitlines()[-1])
    runs = Leaderboard(db_path).runs(status=None)
    assert len(runs) == 4 and {r["status"] for r in runs} == {"finished"}
    assert {r["sweep_id"] for r in runs} == {summary["sweep_id"]}
    assert ray.is_initialized()  # the executor used the running Ray and left it to its owner

    again = cli(*args)
    assert again.exit_code == 0
    assert json.loads(again.stdout.strip().splitlines()[-1])["plan"]["skip"] == 4


def test_ray_and_local_runs_record_the_same_numbers(cli, db_path, local_ray):
    base = ["sweep", *TINY_RUN, "--selector", "smallest", "--seeds", "3", "--json"]
    on_ray = json.loads(cli(*base, "--executor", "ray").stdout.strip().splitlines()[-1])
    local = json.loads(cli(*base, "--executor", "local", "--force").stdout.strip().splitlines()[-1])
    assert on_ray["results"][0]["final_win_rate"] == local["results"][0]["final_win_rate"]

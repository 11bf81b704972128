"""Per-prompt sampling streams (testbed option sampling_streams=per_prompt) and the sampling split between processes.

With per-prompt streams every prompt's responses depend on the prompt and on
the iteration's ``sample`` stream only, not on which other prompts share the
call, so the loop may split the prompts between the processes of a launch
(``World.shards_sampling``). The two-process run itself is in
``tests/test_multiprocess.py``; here the sample step is driven with a stand-in
for two ranks, so each share's call can be seen.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from harness.interfaces import Responses
from harness.ranks import Ranks
from tests.extras import skip_unless_extra

skip_unless_extra("hf")

from tests.hf_tiny import tiny_world  # noqa: E402


@pytest.fixture(scope="module")
def world():
    return tiny_world(sampling_streams="per_prompt", temperature=2.0)


def test_a_prompt_draws_the_same_responses_whatever_shares_the_call(world):
    rows = world.draw_prompts(7, np.random.default_rng(0))
    full = world.sample(world.initial_policy, rows, 3, np.random.default_rng(5))
    parts = [world.sample(world.initial_policy, rows[part], 3, np.random.default_rng(5))
             for part in (slice(0, 3), slice(3, 4), slice(4, 7))]
    joined = Responses.concatenate(parts, pad_id=world.pad_id)
    np.testing.assert_array_equal(joined.tokens, full.tokens)
    np.testing.assert_array_equal(joined.lengths, full.lengths)
    backwards = world.sample(world.initial_policy, rows[::-1], 3, np.random.default_rng(5))
    np.testing.assert_array_equal(backwards.lengths[::-1], full.lengths)  # order does not matter either
    np.testing.assert_array_equal(backwards.tokens[::-1], full.tokens)
    other = world.sample(world.initial_policy, rows, 3, np.random.default_rng(6))
    assert not np.array_equal(other.tokens, full.tokens)  # the stream still decides


def test_batch_streams_stay_the_default_and_vllm_never_shards(monkeypatch):
    from plugins.testbeds.hf import vllm_backend
    from tests.test_hf_vllm import StandInLLM, StandInSamplingParams

    assert not tiny_world().shards_sampling
    monkeypatch.setattr(vllm_backend, "load_engine_api",
                        lambda: vllm_backend.EngineAPI(LLM=StandInLLM, SamplingParams=StandInSamplingParams))
    engine = tiny_world(backend="vllm", sampling_streams="per_prompt")  # one engine, on the main process
    assert not engine.shards_sampling
    engine.close()


def test_concatenate_pads_to_the_widest_part_with_the_worlds_pad():
    narrow = Responses(tokens=np.array([[[5, 6]]]), lengths=np.array([[2]]))
    wide = Responses(tokens=np.array([[[7, 8, 9, 1]]]), lengths=np.array([[4]]))
    joined = Responses.concatenate([narrow, wide], pad_id=-3)
    np.testing.assert_array_equal(joined.tokens, [[[5, 6, -3, -3]], [[7, 8, 9, 1]]])
    np.testing.assert_array_equal(joined.lengths, [[2], [4]])
    assert joined.sources is None


class TwoRanks(Ranks):
    """Two processes played in one: ``gather`` runs each rank's share in turn (what all_gather returns)."""

    def __init__(self):
        super().__init__(rank=0, size=2)

    def gather(self, n, work):
        return [work(Ranks(rank=k, size=2).rows(n)) for k in range(2)]


class Recording:
    """The world, recording the prompts of each sample call."""

    def __init__(self, world):
        self.world, self.calls = world, []
        self.shards_sampling, self.pad_id = world.shards_sampling, world.pad_id

    def sample(self, policy, prompts, n, rng):
        self.calls.append(prompts[:, 0].tolist())
        return self.world.sample(policy, prompts, n, rng)


class Reporter:
    def stage(self, description, total=None):
        from contextlib import nullcontext

        self.last = description
        return nullcontext(lambda n=1: None)


def test_the_sample_step_splits_the_prompts_between_the_processes(world):
    from harness import iteration
    from harness.loop import StageTimer
    from harness.rng import stream

    rows = world.draw_prompts(6, np.random.default_rng(1))
    recording, reporter = Recording(world), Reporter()
    run = SimpleNamespace(config=SimpleNamespace(seed=3, n_responses=2), ranks=TwoRanks(), world=recording,
                          policy=world.initial_policy, reporter=reporter, timer=StageTimer(),
                          components=SimpleNamespace(steering_selector=lambda: None))
    it = SimpleNamespace(number=1, prompts=rows, pool=SimpleNamespace(prompts=6), title="iteration 1/1",
                         pending=None, responses=None)
    iteration.sample(run, it)
    assert recording.calls == [rows[:3, 0].tolist(), rows[3:, 0].tolist()]  # each process its half
    assert "(2 processes)" in reporter.last
    alone = world.sample(world.initial_policy, rows, 2, stream(3, 1, "sample"))  # what one process draws
    np.testing.assert_array_equal(it.responses.tokens, alone.tokens)
    np.testing.assert_array_equal(it.responses.lengths, alone.lengths)

"""The hf testbed's vLLM server backend (backend=vllm_server), against a loopback STAND-IN server.

:class:`tests.vllm_standin.StandinVLLMServer` is not vLLM: it answers the part
of ``vllm serve``'s OpenAI-compatible API the backend uses, generating with
transformers on the CPU and loading PEFT adapters at run time. So these tests
check what the backend sends and reads, that each policy reaches the server as
its own adapter (the adapter the server loaded holds the policy's weights),
and the errors of a server that is missing or set up wrongly; whether a real
``vllm serve`` answers exactly so was not verified here (no GPU).
"""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest

from tests.extras import skip_unless_extra

skip_unless_extra("hf")
skip_unless_extra("peft")

import torch  # noqa: E402

from harness.errors import UsageError  # noqa: E402
from tests.hf_tiny import tiny_paths, tiny_world  # noqa: E402
from tests.vllm_standin import StandinVLLMServer  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")

LORA = {"initial_model": None, "lora_rank": 4, "lora_alpha": 8.0}


@pytest.fixture
def server():
    with StandinVLLMServer(tiny_paths().policy) as running:
        yield running


def server_world(server, **overrides):
    return tiny_world(**{**LORA, "backend": "vllm_server", "vllm_server_url": server.base_url, **overrides})


def nudged(policy, scale=0.3):
    """What a trainer returns with LoRA: a new adapter with new weights."""
    trained = policy.clone()
    generator = torch.Generator().manual_seed(len(trained.adapter))
    with torch.no_grad():
        for parameter in trained.parameters():
            parameter.add_(scale * torch.randn(parameter.shape, generator=generator))
    return trained


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# ------------------------------------------------------------------ requests and adapters


def test_requests_carry_the_prompt_ids_and_sampling_parameters(server):
    world = server_world(server)
    try:
        rng = np.random.default_rng(0)
        prompts = world.draw_prompts(3, rng)
        responses = world.sample(world.initial_policy, prompts, 4, rng)
        requests = server.requests  # sent concurrently: in any order
        assert len(requests) == 3 and responses.tokens.shape[:2] == (3, 4)
        # the exact ids the world scores
        assert sorted(body["prompt"] for body in requests) == sorted(list(world.table.ids[int(r)]) for r in prompts[:, 0])
        for body in requests:
            assert body["model"] == "base"  # pi_0 = pi_ref here: the served base model
            assert body["n"] == 4 and body["max_tokens"] == 16 and body["min_tokens"] == 0
            assert (body["temperature"], body["top_k"], body["top_p"]) == (1.0, 50, 1.0)
            assert body["stop_token_ids"] == world.eos_ids and body["ignore_eos"] is False
            assert body["logprobs"] == 0 and body["return_token_ids"] is True
        assert len({body["seed"] for body in requests}) == 3  # one seed per request
    finally:
        world.close()


def test_each_policy_reaches_the_server_as_its_own_adapter(server):
    world = server_world(server)
    plain = tiny_world(**LORA)
    try:
        (probe_name, _), = server.loads  # the check at build: one adapter loaded and unloaded
        assert server.unloads == [probe_name] and not server.adapters
        rng = np.random.default_rng(1)
        trained = nudged(world.reference_policy)
        got = world.sample(trained, world.eval_rows, 1, rng, mode="greedy")
        name, path = server.loads[-1]
        assert {body["model"] for body in server.requests} == {name}
        # the server loaded exactly the policy's adapter weights (PEFT's names, without the adapter's own name)
        loaded = server.adapter_weights[name]
        ours = {key.replace(f".{trained.adapter}.", "."): value for key, value in
                ((k, v) for k, v in trained.model.state_dict().items() if f".{trained.adapter}." in k)}
        mine = {k.replace(".default.", "."): v for k, v in loaded.items()}
        assert mine.keys() == ours.keys() and len(mine) > 0
        for key in mine:
            torch.testing.assert_close(mine[key], ours[key])
        expected = plain.sample(trained, plain.eval_rows, 1, rng, mode="greedy")
        np.testing.assert_array_equal(got.tokens, expected.tokens)  # the server sampled pi_i
        base = plain.sample(plain.reference_policy, plain.eval_rows, 1, rng, mode="greedy")
        assert not np.array_equal(got.tokens, base.tokens)  # and pi_i is not pi_ref

        world.sample(trained, world.eval_rows, 1, rng, mode="greedy")
        assert len(server.loads) == 2  # same policy: nothing loaded again
        later = nudged(trained)
        world.sample(later, world.eval_rows, 1, rng, mode="greedy")
        assert len(server.loads) == 3 and server.unloads[-1] == name  # the previous policy's adapter is freed
        assert not (world.sampler.adapter_root / name).exists()
        root = world.sampler.adapter_root
    finally:
        world.close()
        plain.close()
    assert not server.adapters and not root.exists()  # closing unloads the last adapter and deletes the folder


def test_sampled_responses_have_the_transformers_layout_and_vllms_logprobs(server):
    world = server_world(server)
    try:
        rng = np.random.default_rng(2)
        prompts = world.draw_prompts(6, rng)
        responses = world.sample(world.initial_policy, prompts, 3, rng, mode="pure")
        ended = world.ends_with_eos(responses)
        for i in range(6):
            for j in range(3):
                k = int(responses.lengths[i, j])
                assert (responses.tokens[i, j, k:] == world.pad_id).all()
                assert ended[i, j] or k == 16
        logps = world.logprobs(world.initial_policy, prompts, responses)
        np.testing.assert_allclose(world.last_sampling_logprobs, logps, atol=1e-4)
        assert world.sampler.stops_without_eos == 0
    finally:
        world.close()


def test_the_adapter_folder_can_be_one_the_server_shares(server, tmp_path):
    world = server_world(server, vllm_server_adapter_dir=str(tmp_path / "shared"))
    try:
        world.sample(nudged(world.reference_policy), world.eval_rows, 1, np.random.default_rng(0), mode="greedy")
        name, path = server.loads[-1]
        assert path == str((tmp_path / "shared" / name).resolve())
        assert json.loads((tmp_path / "shared" / name / "adapter_config.json").read_text())["r"] == 4
    finally:
        world.close()
    assert (tmp_path / "shared").is_dir() and not any((tmp_path / "shared").iterdir())  # its folder is kept


def test_a_server_on_this_machine_is_reached_without_the_environments_proxy(server, monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{free_port()}")  # a proxy nobody answers at
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    world = server_world(server)
    try:
        world.sample(world.initial_policy, world.eval_rows, 1, np.random.default_rng(0), mode="greedy")
        assert server.requests
    finally:
        world.close()


def test_an_api_key_is_sent_from_the_environment(monkeypatch):
    with StandinVLLMServer(tiny_paths().policy, api_key="secret-1") as server:
        with pytest.raises(UsageError, match="HTTP 401.*VLLM_API_KEY"):
            server_world(server)
        monkeypatch.setenv("VLLM_API_KEY", "secret-1")
        world = server_world(server)
        world.sample(world.initial_policy, world.eval_rows, 1, np.random.default_rng(0), mode="greedy")
        world.close()


# ------------------------------------------------------------------ servers that cannot serve the run: exit 2


def test_no_server_is_a_usage_error_that_says_how_to_start_one():
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(UsageError) as caught:
        tiny_world(**LORA, backend="vllm_server", vllm_server_url=url, vllm_server_timeout=5.0)
    message = str(caught.value)
    assert f"no vLLM server answers at {url}/models" in message
    assert "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True vllm serve" in message and "--max-lora-rank 4" in message


@pytest.mark.parametrize("server_options, world_options, message", [
    ({"runtime_lora": False}, {}, r"cannot load LoRA adapters at run time \(HTTP 404"),
    ({"max_lora_rank": 2}, {}, "LoRA rank 4 is greater than max_lora_rank 2"),
    ({}, {"vllm_server_model": "llama"}, "vllm_server_model='llama': the server at .* serves base"),
    ({"max_model_len": 8}, {}, "takes 8 tokens, but the longest prompt plus max_new_tokens is"),
])
def test_a_server_set_up_wrongly_stops_the_run_before_training(server_options, world_options, message):
    with StandinVLLMServer(tiny_paths().policy, **server_options) as server:
        with pytest.raises(UsageError, match=message):
            server_world(server, **world_options)


def test_a_server_that_sends_no_token_ids_is_refused_with_an_upgrade_hint():
    with StandinVLLMServer(tiny_paths().policy, send_token_ids=False) as server:
        world = server_world(server)
        try:
            with pytest.raises(UsageError, match="sends no token_ids back.*upgrade vLLM"):
                world.sample(world.initial_policy, world.eval_rows, 1, np.random.default_rng(0), mode="greedy")
        finally:
            world.close()


def test_a_server_that_goes_away_mid_run_fails_the_run_naming_it():
    from plugins.testbeds.hf.vllm_server import ServerUnreachable

    server = StandinVLLMServer(tiny_paths().policy).start()
    world = server_world(server)
    url = server.base_url
    server.stop()
    try:
        with pytest.raises(ServerUnreachable, match=f"did not answer at {url}/completions after 3 tries"):
            world.sample(world.initial_policy, world.eval_rows, 1, np.random.default_rng(0), mode="greedy")
    finally:
        world.close()  # nothing to unload: closing a world whose server is gone still works


def test_without_lora_the_server_backend_is_refused():
    from plugins.testbeds.hf import HFTestbed

    with pytest.raises(UsageError, match="backend=vllm_server needs LoRA"):
        HFTestbed({"backend": "vllm_server"})


def test_steered_sampling_is_refused_as_with_the_in_process_engine(server):
    from plugins.testbeds.hf import HFTestbed

    assert HFTestbed({**LORA, "backend": "vllm_server"}).sampling_sources == ("policy",)


# ------------------------------------------------------------------ a whole run


def run_args(server) -> list[str]:
    paths = tiny_paths()
    options = {
        "testbed.model": paths.policy, "testbed.prompts": paths.prompts, "testbed.eval_prompts": paths.eval,
        "testbed.max_new_tokens": 16, "testbed.threads": 1, "testbed.lora_rank": 4, "testbed.lora_alpha": 8.0,
        "testbed.backend": "vllm_server", "testbed.vllm_server_url": server.base_url,
        "annotator.model": paths.reward, "evaluator.model": paths.reward,
        "trainer.lr": 1e-2, "trainer.batch_size": 4, "trainer.grad_accum": 1,
    }
    return [arg for key, value in options.items() for arg in ("-o", f"{key}={value}")]


def test_a_run_with_the_server_backend_trains_and_repeats_its_numbers(cli, db_path, server, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    command = ["run", "--testbed", "hf", "--trainer", "trl", "--selector", "smallest", "--iterations", "2",
               "--budget", "8", "--responses", "4", *run_args(server), "--json"]
    first = cli(*command)
    assert first.exit_code == 0, first.output
    rows = json.loads(first.stdout.strip().splitlines()[-1])["iterations"]
    assert [r["iteration"] for r in rows] == [0, 1, 2]
    # pi_0 = pi_ref is the base model; pi_1 and pi_2 are adapters loaded in turn, after the probe at build
    models = [body["model"] for body in server.requests]
    names = [name for name, _ in server.loads]
    assert len(names) == 3 and models[0] == "base" and set(models) == {"base", names[1], names[2]}
    assert not server.adapters  # all unloaded at the end
    second = cli(*command)
    assert second.exit_code == 0, second.output
    again = json.loads(second.stdout.strip().splitlines()[-1])["iterations"]
    keys = ("win_rate", "kl", "reward_mean")
    assert [[r.get(k) for k in keys] for r in again] == [[r.get(k) for k in keys] for r in rows]

"""The hf testbed's vLLM backend, driven by a STAND-IN for vLLM (no GPU, no vllm package needed).

:class:`StandInLLM` and :class:`StandInSamplingParams` are NOT vLLM: they copy
the call signatures the adapter uses (``LLM(model=..., **engine_kwargs)``,
``llm.generate(list of {"prompt_token_ids": ids}, sampling_params=list,
use_tqdm=False)`` returning objects with ``.outputs[i].token_ids``,
``.cumulative_logprob``, ``.finish_reason``, ``.index``) and generate with
transformers on the CPU from the directory they are given, so the tests can
check what the adapter sends, that it loads the *current* policy's weights,
and that its responses have the transformers backend's layout. Whether a real
vLLM behaves as the stand-in does was not verified here (no GPU).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from harness.errors import UsageError
from tests.extras import skip_unless_extra
from tests.hf_tiny import tiny_paths, tiny_world
from tests.vllm_standin import complete

skip_unless_extra("hf")

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")


class StandInSamplingParams:
    """Stand-in for ``vllm.SamplingParams``: the keyword arguments the adapter sends, checked as vLLM checks them."""

    def __init__(self, *, n, temperature, top_k, top_p, max_tokens, min_tokens, repetition_penalty, stop_token_ids,
                 ignore_eos, seed, logprobs, detokenize):
        if not (top_k == -1 or top_k >= 1):
            raise ValueError(f"top_k must be -1 (disable) or at least 1, got {top_k}")
        self.n, self.temperature, self.top_k, self.top_p = n, temperature, top_k, top_p
        self.max_tokens, self.min_tokens, self.repetition_penalty = max_tokens, min_tokens, repetition_penalty
        self.stop_token_ids, self.ignore_eos, self.seed = stop_token_ids, ignore_eos, seed
        self.logprobs, self.detokenize = logprobs, detokenize


@dataclass(frozen=True)
class StandInLoRARequest:
    """Stand-in for ``vllm.lora.request.LoRARequest(lora_name, lora_int_id, lora_path)``."""

    lora_name: str
    lora_int_id: int
    lora_path: str


class StandInLLM:
    """Stand-in for ``vllm.LLM`` (see the module docstring); every instance is kept in ``built``. With
    ``enable_lora`` a request's ``lora_request`` samples the base with that PEFT adapter loaded (once per id)."""

    built: list[StandInLLM] = []

    def __init__(self, model, **kwargs):
        from transformers import AutoModelForCausalLM

        self.model_path = str(model)
        self.kwargs = kwargs
        self.files = sorted(p.name for p in Path(model).iterdir())
        self.hf = AutoModelForCausalLM.from_pretrained(model, local_files_only=True).eval()
        self.requests: list[tuple[list[int], StandInSamplingParams]] = []
        self.generate_calls = 0
        self.rpc_calls = self.prefix_resets = self.loaded_tensors = 0
        self.adapters: dict[int, object] = {}
        self.lora_requests: list = []
        StandInLLM.built.append(self)

    def generate(self, prompts, sampling_params=None, use_tqdm=True, lora_request=None):
        self.generate_calls += 1
        assert len(prompts) == len(sampling_params)
        model = self.hf
        if lora_request is not None:
            assert self.kwargs.get("enable_lora"), "a LoRA request to an engine built without enable_lora"
            if lora_request.lora_int_id not in self.adapters:
                import peft

                self.adapters[lora_request.lora_int_id] = peft.PeftModel.from_pretrained(
                    copy.deepcopy(self.hf), lora_request.lora_path).eval()
            model = self.adapters[lora_request.lora_int_id]
        self.lora_requests.append(lora_request)
        results = []
        for prompt, params in zip(prompts, sampling_params):
            ids = list(prompt["prompt_token_ids"])
            self.requests.append((ids, params))
            results.append(SimpleNamespace(prompt_token_ids=ids, outputs=self._complete(ids, params, model)))
        return results

    def _complete(self, ids, params, model=None):
        return complete(model if model is not None else self.hf, ids, n=params.n, temperature=params.temperature, top_k=params.top_k,
                        top_p=params.top_p, max_tokens=params.max_tokens, stop_token_ids=list(params.stop_token_ids),
                        seed=params.seed, logprobs=params.logprobs is not None)

    # what the weight push reaches: vLLM V1's LLM.collective_rpc("name", args) calls the method `name` on every
    # worker, which has the methods of the engine's worker_extension_cls mixed in and a model_runner.model whose
    # load_weights takes (name, tensor) pairs; here one worker over the HF model. Like vLLM without its insecure
    # serialization, it refuses a function in place of a name.
    def collective_rpc(self, method, args=(), kwargs=None):
        if not isinstance(method, str):
            raise TypeError("Object of type function is not serializable")
        import importlib

        module, _, name = self.kwargs["worker_extension_cls"].rpartition(".")
        extension = getattr(importlib.import_module(module), name)
        worker = type("StandInWorker", (extension,), {})()
        worker.model_runner = SimpleNamespace(model=SimpleNamespace(load_weights=self._load_weights))
        self.rpc_calls += 1
        return [getattr(worker, method)(*args, **(kwargs or {}))]

    def _load_weights(self, weights):
        state = dict(weights)
        missing, unexpected = self.hf.load_state_dict(state, strict=False)
        assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
        self.loaded_tensors += len(state)

    def reset_prefix_cache(self):
        self.prefix_resets += 1
        return True


@pytest.fixture
def standin(monkeypatch):
    """Route backend=vllm to the stand-in classes (the adapter's factory seam)."""
    from plugins.testbeds.hf import vllm_backend

    StandInLLM.built = []
    monkeypatch.setattr(vllm_backend, "load_engine_api",
                        lambda: vllm_backend.EngineAPI(LLM=StandInLLM, SamplingParams=StandInSamplingParams,
                                                       LoRARequest=StandInLoRARequest))
    return StandInLLM


@pytest.fixture
def vllm_world(standin):
    world = tiny_world(backend="vllm")
    yield world
    world.close()


# ------------------------------------------------------------------ without vLLM


def test_without_vllm_the_world_build_says_what_to_do():
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    with pytest.raises(UsageError) as caught:
        tiny_world(backend="vllm")
    message = str(caught.value)
    assert "vllm is not installed" in message
    assert "pip install 'pairsel-harness[vllm]'" in message and "backend=transformers" in message


def test_without_a_gpu_the_world_build_says_what_to_do(monkeypatch):
    from plugins.testbeds.hf import vllm_backend

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    real = vllm_backend.importlib.util.find_spec
    monkeypatch.setattr(vllm_backend.importlib.util, "find_spec",
                        lambda name, *a: object() if name == "vllm" else real(name, *a))
    with pytest.raises(UsageError, match="needs a CUDA GPU.*backend=transformers"):
        tiny_world(backend="vllm")


def test_backend_option_is_checked():
    from plugins.testbeds.hf import HFTestbed

    with pytest.raises(UsageError, match="backend"):
        HFTestbed({"backend": "tgi"})


# ------------------------------------------------------------------ requests


def test_one_request_per_prompt_with_n_samples(vllm_world, standin):
    world = vllm_world
    rng = np.random.default_rng(0)
    prompts = world.draw_prompts(5, rng)
    responses = world.sample(world.initial_policy, prompts, 4, rng)
    (llm,) = standin.built
    assert llm.generate_calls == 1 and len(llm.requests) == 5
    for row, (ids, params) in zip(prompts[:, 0], llm.requests):
        assert ids == list(world.table.ids[int(row)])  # the exact ids the world scores
        assert params.n == 4 and params.max_tokens == 16 and params.min_tokens == 0
        assert params.temperature == 1.0 and params.top_k == 50 and params.top_p == 1.0
        assert params.repetition_penalty == 1.0 and not params.ignore_eos
        assert list(params.stop_token_ids) == world.eos_ids and params.logprobs == 0 and params.detokenize is False
    assert len({params.seed for _, params in llm.requests}) == 5  # one seed per request
    assert responses.tokens.shape[:2] == (5, 4)
    # the engine: prefix caching on, pi_0's own directory (no copy), pi_ref's tokenizer, lengths bounded
    assert llm.kwargs["enable_prefix_caching"] is True
    assert llm.model_path == str(tiny_paths().initial) and llm.kwargs["tokenizer"] == str(tiny_paths().policy)
    longest = max(len(ids) for ids in world.table.ids)
    assert llm.kwargs["max_model_len"] == longest + 16 and llm.kwargs["trust_remote_code"] is False
    assert llm.kwargs["dtype"] == "float32" and "logprobs_mode" not in llm.kwargs


def test_modes_send_their_sampling_parameters(standin):
    world = tiny_world(backend="vllm", top_k=0, temperature=0.7, vllm_logprobs_mode="processed_logprobs")
    try:
        rng = np.random.default_rng(1)
        rows = world.draw_prompts(2, rng)
        world.sample(world.initial_policy, rows, 2, rng)
        world.sample(world.initial_policy, rows, 2, rng, mode="pure")
        world.sample(world.initial_policy, rows, 1, rng, mode="greedy")
        (llm,) = standin.built
        shapes = [(p.temperature, p.top_k, p.top_p, p.n) for _, p in llm.requests[::2]]
        assert shapes == [(0.7, -1, 1.0, 2), (1.0, -1, 1.0, 2), (0.0, -1, 1.0, 1)]
        assert llm.kwargs["logprobs_mode"] == "processed_logprobs"
    finally:
        world.close()


# ------------------------------------------------------------------ responses


def test_greedy_responses_equal_the_transformers_backend(vllm_world):
    plain = tiny_world(generation_batch_size=1)
    rng = np.random.default_rng(0)
    expected = plain.sample(plain.initial_policy, plain.eval_rows, 1, rng, mode="greedy")
    got = vllm_world.sample(vllm_world.initial_policy, vllm_world.eval_rows, 1, rng, mode="greedy")
    assert got.tokens.dtype == np.int64 and got.lengths.dtype == np.int64
    assert got.tokens.shape == expected.tokens.shape
    np.testing.assert_array_equal(got.lengths, expected.lengths)
    np.testing.assert_array_equal(got.tokens, expected.tokens)
    # and the evaluation pairs built on them
    _, pairs_v = vllm_world.evaluation_pairs(vllm_world.initial_policy, np.random.default_rng(3))
    _, pairs_t = plain.evaluation_pairs(plain.initial_policy, np.random.default_rng(3))
    np.testing.assert_array_equal(pairs_v.tokens, pairs_t.tokens)


def test_sampled_responses_have_the_transformers_layout(vllm_world):
    world = vllm_world
    rng = np.random.default_rng(2)
    prompts = world.draw_prompts(8, rng)
    responses = world.sample(world.initial_policy, prompts, 4, rng, mode="pure")
    assert responses.tokens.shape[2] == responses.lengths.max()  # as wide as the longest response
    ended = world.ends_with_eos(responses)
    for i in range(8):
        for j in range(4):
            k = int(responses.lengths[i, j])
            row = responses.tokens[i, j]
            assert (row[k:] == world.pad_id).all()
            assert not np.isin(row[: k - 1], world.eos_ids).any()  # no EOS before the last scored token
            assert ended[i, j] or k == 16  # ends with EOS, or was cut by max_new_tokens
    # the harness scores those tokens itself; vLLM's numbers are kept beside them
    logps = world.logprobs(world.initial_policy, prompts, responses)
    assert world.last_sampling_logprobs.shape == (8, 4)
    np.testing.assert_allclose(world.last_sampling_logprobs, logps, atol=1e-4)  # the stand-in reports raw log-probs


def test_eos_ids_and_truncation_from_scripted_outputs(monkeypatch):
    from plugins.testbeds.hf import vllm_backend

    class Scripted:
        """Stand-in engine that returns fixed token_ids for every request."""

        def __init__(self, model, **kwargs):
            pass

        def generate(self, prompts, sampling_params=None, use_tqdm=True):
            eos, other_eos = sampling_params[0].stop_token_ids[0], sampling_params[0].stop_token_ids[-1]
            outs = [
                SimpleNamespace(index=1, token_ids=[40, 41, 42, 43], cumulative_logprob=-4.0, finish_reason="length"),
                SimpleNamespace(index=0, token_ids=[40, eos], cumulative_logprob=-1.0, finish_reason="stop"),
                SimpleNamespace(index=2, token_ids=[41, other_eos, 42], cumulative_logprob=-2.0, finish_reason="stop"),
            ]
            return [SimpleNamespace(outputs=list(outs)) for _ in prompts]

    monkeypatch.setattr(vllm_backend, "load_engine_api",
                        lambda: vllm_backend.EngineAPI(LLM=Scripted, SamplingParams=StandInSamplingParams))
    world = tiny_world(backend="vllm", max_new_tokens=4)
    world.sampler.eos_ids.append(7)  # a second EOS id, as a generation config may list
    world.eos_ids.append(7)
    responses = world.sample(world.initial_policy, world.draw_prompts(2, np.random.default_rng(0)), 3,
                             np.random.default_rng(0))
    eos = world.eos_ids[0]
    # completions sorted by their index; cut after the first EOS (of any id); padded after
    np.testing.assert_array_equal(responses.lengths, [[2, 4, 2], [2, 4, 2]])
    np.testing.assert_array_equal(responses.tokens[0], [[40, eos, world.pad_id, world.pad_id], [40, 41, 42, 43],
                                                       [41, 7, world.pad_id, world.pad_id]])
    np.testing.assert_array_equal(world.ends_with_eos(responses)[0], [True, False, True])
    np.testing.assert_array_equal(world.last_sampling_logprobs, [[-1.0, -4.0, -2.0]] * 2)
    assert world.sampler.stops_without_eos == 0


def test_wrong_number_of_completions_is_an_error(monkeypatch):
    from plugins.testbeds.hf import vllm_backend

    class Short:
        def __init__(self, model, **kwargs):
            pass

        def generate(self, prompts, sampling_params=None, use_tqdm=True):
            return [SimpleNamespace(outputs=[SimpleNamespace(index=0, token_ids=[5], cumulative_logprob=None,
                                                             finish_reason="length")]) for _ in prompts]

    monkeypatch.setattr(vllm_backend, "load_engine_api",
                        lambda: vllm_backend.EngineAPI(LLM=Short, SamplingParams=StandInSamplingParams))
    world = tiny_world(backend="vllm")
    with pytest.raises(RuntimeError, match="1 completions for a request with n=3"):
        world.sample(world.initial_policy, world.draw_prompts(2, np.random.default_rng(0)), 3, np.random.default_rng(0))


# ------------------------------------------------------------------ policy updates


def _nudged(policy):
    """What a trainer returns: a new policy with new weights."""
    trained = policy.clone()
    with torch.no_grad():
        for parameter in trained.model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return trained


def test_with_rebuild_the_engine_is_rebuilt_on_the_current_policy_only_when_it_changes(standin):
    world = tiny_world(backend="vllm", vllm_weight_sync="rebuild")
    rng = np.random.default_rng(0)
    rows = world.draw_prompts(3, rng)
    world.sample(world.initial_policy, rows, 2, rng)
    world.sample(world.initial_policy, rows, 1, rng, mode="greedy")
    assert world.sampler.engines_built == 1  # same policy, same engine

    trained = _nudged(world.initial_policy)
    got = world.sample(trained, world.eval_rows, 1, rng, mode="greedy")
    assert world.sampler.engines_built == 2
    llm = standin.built[-1]
    weights_dir = Path(llm.model_path)
    assert weights_dir != tiny_paths().initial and "config.json" in llm.files and "model.safetensors" in llm.files

    plain = tiny_world(generation_batch_size=1)
    expected = plain.sample(trained, plain.eval_rows, 1, rng, mode="greedy")
    np.testing.assert_array_equal(got.tokens, expected.tokens)  # vLLM sampled the trained weights

    world.sample(world.reference_policy, rows, 2, rng)  # pi_ref: its own directory again
    assert world.sampler.engines_built == 3 and standin.built[-1].model_path == str(tiny_paths().policy)
    assert not weights_dir.exists()  # the copy of the trained weights is gone with its engine
    world.close()
    assert world.sampler._llm is None
    assert world.sampler.weight_pushes == 0 and standin.built[0].rpc_calls == 0
    assert "worker_extension_cls" not in standin.built[0].kwargs


def test_a_new_policy_is_pushed_into_the_running_engine(vllm_world, standin):
    world = vllm_world
    rng = np.random.default_rng(0)
    world.sample(world.initial_policy, world.draw_prompts(3, rng), 2, rng)
    trained = _nudged(world.initial_policy)
    got = world.sample(trained, world.eval_rows, 1, rng, mode="greedy")
    (llm,) = standin.built  # one engine for the whole run
    assert world.sampler.engines_built == 1 and world.sampler.weight_pushes == 1
    assert llm.rpc_calls == 1 and llm.prefix_resets == 1  # the old weights' KV cache is dropped with them
    # the push reaches the workers by a method name, through the extension the engine was built with
    assert llm.kwargs["worker_extension_cls"] == "plugins.testbeds.hf.vllm_backend.WeightLoader"
    assert llm.loaded_tensors == len([k for k in trained.model.state_dict() if k != "lm_head.weight"])
    plain = tiny_world(generation_batch_size=1)
    expected = plain.sample(trained, plain.eval_rows, 1, rng, mode="greedy")
    np.testing.assert_array_equal(got.tokens, expected.tokens)  # the engine sampled the pushed weights

    world.sample(world.reference_policy, world.eval_rows, 1, rng, mode="greedy")  # pi_ref: from its own files
    assert world.sampler.weight_pushes == 2 and world.sampler.engines_built == 1
    reference = plain.sample(plain.reference_policy, plain.eval_rows, 1, rng, mode="greedy")
    again = world.sample(world.reference_policy, world.eval_rows, 1, rng, mode="greedy")
    np.testing.assert_array_equal(again.tokens, reference.tokens)
    assert world.sampler.weight_pushes == 2  # same policy: nothing pushed


@pytest.mark.parametrize("version, llm_change, reason", [
    ("0.9.2", {}, "older than 0.10"),
    ("0.31.0", {"collective_rpc": None}, "no collective_rpc"),
    ("0.31.0", {"collective_rpc": "raise"}, "the push failed (RuntimeError: worker moved"),
])
def test_where_a_push_cannot_work_the_engine_is_rebuilt_with_a_warning(monkeypatch, version, llm_change, reason):
    from plugins.testbeds.hf import vllm_backend

    def broken(self, method, args=(), kwargs=None):
        raise RuntimeError("worker moved")


    attributes = {name: (broken if value == "raise" else value) for name, value in llm_change.items()}
    engine = type("OtherLLM", (StandInLLM,), attributes)
    StandInLLM.built = []
    monkeypatch.setattr(vllm_backend, "load_engine_api", lambda: vllm_backend.EngineAPI(
        LLM=engine, SamplingParams=StandInSamplingParams, version=version))
    world = tiny_world(backend="vllm")
    try:
        rng = np.random.default_rng(0)
        world.sample(world.initial_policy, world.eval_rows, 1, rng, mode="greedy")
        trained = _nudged(world.initial_policy)
        with pytest.warns(RuntimeWarning, match="rebuilding the engine instead") as caught:
            got = world.sample(trained, world.eval_rows, 1, rng, mode="greedy")
        assert reason in str(caught[0].message)
        assert world.sampler.engines_built == 2 and world.sampler.weight_pushes == 0
        plain = tiny_world(generation_batch_size=1)
        np.testing.assert_array_equal(got.tokens, plain.sample(trained, plain.eval_rows, 1, rng,
                                                               mode="greedy").tokens)
    finally:
        world.close()


def test_the_pushed_files_are_the_models_own_shards(tmp_path):
    from plugins.testbeds.hf.vllm_backend import weight_files

    (tmp_path / "model.safetensors").write_bytes(b"")
    (tmp_path / "consolidated.safetensors").write_bytes(b"")  # another layout of the same weights: never pushed
    assert weight_files(tmp_path) == [tmp_path / "model.safetensors"]
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors",
        "c": "model-00001-of-00002.safetensors"}}))
    assert weight_files(tmp_path) == [tmp_path / "model-00001-of-00002.safetensors",
                                      tmp_path / "model-00002-of-00002.safetensors"]
    assert weight_files(tmp_path / "missing") == []


def test_version_numbers_are_read_as_vllm_writes_them():
    from plugins.testbeds.hf.vllm_backend import version_tuple

    assert version_tuple("0.31.0rc1+cu128") == (0, 31) and version_tuple("0.9.2") == (0, 9)
    assert version_tuple("1.0") == (1, 0) and version_tuple("dev") == ()


def test_tensor_parallelism_is_passed_to_the_engine_and_asks_for_gpus_that_exist(standin):
    from plugins.testbeds.hf import vllm_backend

    world = tiny_world(backend="vllm")
    try:
        world.sample(world.initial_policy, world.eval_rows, 1, np.random.default_rng(0), mode="greedy")
        assert standin.built[-1].kwargs["tensor_parallel_size"] == 1
    finally:
        world.close()
    if torch.cuda.device_count() < 2:
        with pytest.raises(UsageError, match="vllm_tensor_parallel_size=2: this machine has"):
            vllm_backend.check_tensor_parallel(2)
        with pytest.raises(UsageError, match="vllm_tensor_parallel_size=2"):
            tiny_world(backend="vllm", vllm_tensor_parallel_size=2)


def test_with_lora_one_engine_on_the_base_samples_each_policy_through_its_adapter(standin):
    skip_unless_extra("peft")
    world = tiny_world(backend="vllm", initial_model=None, lora_rank=4, lora_alpha=8.0)
    plain = tiny_world(initial_model=None, lora_rank=4, lora_alpha=8.0)
    try:
        rng = np.random.default_rng(0)
        world.sample(world.reference_policy, world.eval_rows, 1, rng, mode="greedy")  # pi_ref: no adapter
        trained = world.reference_policy.clone()
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for parameter in trained.parameters():
                parameter.add_(0.3 * torch.randn(parameter.shape, generator=generator))
        got = world.sample(trained, world.eval_rows, 1, rng, mode="greedy")
        world.sample(trained, world.eval_rows, 1, rng, mode="greedy")  # same policy: same request, same folder
        (llm,) = standin.built  # one engine for every policy
        assert llm.model_path == str(tiny_paths().policy) and llm.kwargs["enable_lora"] is True
        assert llm.kwargs["max_lora_rank"] == 8 and llm.kwargs["max_loras"] == 1  # vLLM's smallest rank >= 4
        assert "worker_extension_cls" not in llm.kwargs  # nothing is pushed with LoRA
        first, second, third = llm.lora_requests
        assert first is None and second is third and second.lora_int_id == 1
        adapter = json.loads((Path(second.lora_path) / "adapter_config.json").read_text())
        assert adapter["r"] == 4 and adapter["base_model_name_or_path"] == str(tiny_paths().policy)
        expected = plain.sample(trained, plain.eval_rows, 1, rng, mode="greedy")
        np.testing.assert_array_equal(got.tokens, expected.tokens)  # the engine sampled pi_i, through its adapter
        later = trained.clone()
        world.sample(later, world.eval_rows, 1, rng, mode="greedy")
        assert llm.lora_requests[-1].lora_int_id == 2 and not Path(second.lora_path).exists()
        assert world.sampler.engines_built == 1 and world.sampler.weight_pushes == 0
        folder = Path(llm.lora_requests[-1].lora_path)
    finally:
        world.close()
        plain.close()
    assert not folder.exists()


def test_a_run_with_the_vllm_backend(cli, db_path, standin, monkeypatch):
    skip_unless_extra("hf")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    paths = tiny_paths()
    options = {
        "testbed.model": paths.policy, "testbed.initial_model": paths.initial, "testbed.prompts": paths.prompts,
        "testbed.eval_prompts": paths.eval, "testbed.max_new_tokens": 16, "testbed.threads": 1,
        "testbed.backend": "vllm", "annotator.model": paths.reward, "evaluator.model": paths.reward,
        "trainer.lr": 1e-3, "trainer.batch_size": 4, "trainer.grad_accum": 1,
    }
    args = [arg for key, value in options.items() for arg in ("-o", f"{key}={value}")]
    result = cli("run", "--testbed", "hf", "--trainer", "trl", "--selector", "smallest", "--iterations", "2",
                 "--budget", "8", "--responses", "4", *args, "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout.strip().splitlines()[-1])["iterations"]
    assert [r["iteration"] for r in rows] == [0, 1, 2]
    # one engine, built on pi_0's directory; pi_1 and pi_2 pushed into it
    (llm,) = standin.built
    assert llm.model_path == str(paths.initial) and llm.rpc_calls == 2 and llm.prefix_resets == 2
    for llm in standin.built:  # every request asked for the run's N responses, or 1 greedy / eval_samples pure
        assert {p.n for _, p in llm.requests} <= {4, 1, 2}

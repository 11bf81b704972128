"""The ``hf`` testbed: real causal language models from local directories or the Hugging Face cache.

pi_ref is the model in ``model`` (a ``save_pretrained`` directory with its
tokenizer); pi_0 is the model in ``initial_model`` (same architecture and
tokenizer, e.g. pi_ref after an offline DPO round), or pi_ref after a seed
round (below), or pi_ref itself, in which case every implicit margin of the
first iteration is 0 and the margin selectors all buy the same pairs there.

Data sources are read with ``datasets``; each is a local JSONL, JSON, CSV or
parquet file, a local directory (a ``save_to_disk`` output, or a folder of data
files such as ``train.jsonl``/``test.jsonl``), or a Hugging Face Hub dataset id
``ORG/NAME[@revision]`` in the local Hugging Face cache (``hf download ORG/NAME
--repo-type dataset``; :func:`plugins._hf.loading.load_data`). A source with
several splits is read at ``prompts_split`` (``prompts``, ``seed_prompts``;
default ``train``) or ``eval_split`` (``eval_prompts``, ``reference_outputs``;
default ``test``); a source with one split uses it unless a split was asked
for. Each source's path or Hub id, commit, split and ``datasets`` fingerprint
are kept in ``world.info`` (``prompts_source``, ``prompts_revision``,
``prompts_split``, ``prompts_fingerprint``, the same for ``eval_prompts`` and
``reference_outputs``) and recorded with the run (:meth:`HFTestbed.sources`).

* ``prompts``: the training prompt pool, column ``prompt`` (``prompt_column``).
  Prompts longer than ``max_prompt_length`` tokens are dropped (counted in
  ``world.info``). Each iteration draws distinct prompts from it uniformly.
* ``eval_prompts``: the evaluation prompts, column ``prompt``, and optionally
  the reference output of each in column ``output`` (``output_column``).
* ``reference_outputs``: reference outputs (columns ``prompt`` and
  ``output``), matched to the evaluation prompts by prompt text; on its own
  it also gives the evaluation prompts. An AlpacaEval-style file with
  ``instruction``/``output`` columns works with ``prompt_column=instruction``.

A prompt is text, or a conversation: a list of ``{"role", "content"}``
messages (system turns included), rendered with the tokenizer's chat template
and the generation prompt. That rendering is the conversational prompt's one
canonical text, used as its key everywhere (judges, label files, the ``texts``
table, exports) and never wrapped again; ``HFWorld.prompt_messages(text)``
gives its messages back. Plain-text prompts are wrapped as one user message in
the chat template when the tokenizer has one (``use_chat_template``). Sampling uses ``generate`` with the paper's
temperature 1.0 and top-k 50 by default; evaluation decodes greedily
(``evaluation_pairs``, compared with the reference outputs by the run's
evaluator judge) and estimates KL(pi || pi_ref) from samples of pi itself.
The gold annotator and the evaluator are judges (default ``reward_model``);
the world has no annotator of its own. With an exact gold judge
(``--gold-judge verifier``, testbed contract 4) the world takes it as its gold
reward: rows then carry ``gold_reward``, the pool's gold signal and label noise.
The verifiable regime (``plugins/testbeds/hf/data/verifiable``, made by
:mod:`plugins.testbeds.hf.verifiable`) ships prompts whose answers the
``verifier`` judge checks.

Optional parts, each described in ``docs/real-models-extras.md``:

* ``backend=vllm`` samples with vLLM on a GPU (:mod:`plugins.testbeds.hf.vllm_backend`),
  ``backend=vllm_server`` with a running ``vllm serve`` over HTTP, LoRA policies as
  adapters (:mod:`plugins.testbeds.hf.vllm_server`); log-probs are still computed
  with transformers.
* ``alpaca_dir`` writes AlpacaEval's ``model_outputs.json`` and
  ``reference_outputs.json`` at every evaluation (:mod:`plugins.testbeds.hf.alpaca`).
* ``lora_rank`` > 0 trains LoRA adapters (the ``peft`` extra): pi_ref is the base
  model with its adapters off, every other policy an adapter on the same model
  (:mod:`plugins._hf.lora`; ``docs/real-models/lora.md``).
* ``seed_pairs`` makes pi_0 = pi_ref after one offline DPO round on a file of
  (prompt, chosen, rejected) texts; ``seed_prompt_share`` (or
  ``seed_prompts``) makes it on-policy: pi_ref's own samples on held-out seed
  prompts, labelled by the run's annotator on a seed ledger of their own, the
  trained pi_0 cached (:mod:`plugins.testbeds.hf.seed`).

``model`` and ``initial_model`` are local directories or Hugging Face Hub
ids ``ORG/NAME[@revision]`` looked up in the local Hugging Face cache
(:mod:`plugins._hf.hub`); the snapshot's commit is kept in ``world.info``
(``model_source``, ``model_revision``). Nothing is downloaded unless
``allow_download`` is on, data files are never downloaded, and
``trust_remote_code`` is off unless set. This module is cheap to import:
torch and transformers are imported when a world is built.
"""

from __future__ import annotations

from harness import hookimpl
from harness.errors import UsageError
from harness.interfaces import Testbed
from harness.memory import MemoryNeeds
from harness.options import Option
from plugins._hf.loading import ModelSources

_POSITIVE = {"min": 0.0, "min_inclusive": False}
#: The backends that sample with vLLM (each request from one model: no steered sampling).
VLLM_BACKENDS = ("vllm", "vllm_server")
#: Each data option and the option choosing its split.
DATA_SPLITS = {"prompts": "prompts_split", "eval_prompts": "eval_split", "reference_outputs": "eval_split",
               "seed_prompts": "prompts_split"}


class HFTestbed(ModelSources, Testbed):
    model_options = ("model", "initial_model")
    name = "hf"
    description = ("Real causal LMs from local directories or the Hugging Face cache: transformers sampling, "
                   "prompts from files, folders or cached Hub datasets")
    default_judges = {"annotator": "reward_model", "evaluator": "reward_model"}
    gives_features = True  # World.features: the last layer's hidden state at each response's last token

    @property
    def sampling_sources(self) -> tuple[str, ...]:
        """Every source with the transformers backend; only pi_{i-1} with vLLM, which draws each request from one
        model and cannot mix two models' logits (World.steered_sample refuses there too)."""
        if self.settings.get("backend") in VLLM_BACKENDS:
            return ("policy",)
        return ("policy", "reference", "plus", "minus")
    options = (
        # models
        Option("model", str, None, "pi_ref: a local model directory (save_pretrained layout, with its tokenizer) "
               "or a Hugging Face Hub id ORG/NAME[@revision] in the local Hugging Face cache"),
        Option("initial_model", str, None, "pi_0: a fine-tune of `model` (local directory or cached Hub id); "
               "unset = pi_ref itself"),
        Option("allow_download", bool, False, "download a Hub-id `model`/`initial_model`, or a Hub dataset named by "
               "a data option, missing from the Hugging Face cache (off: only cached snapshots are used, nothing is "
               "downloaded)"),
        Option("dtype", str, "float32", "dtype the models are loaded in (auto = the checkpoint's own)",
               choices=("float32", "bfloat16", "float16", "auto")),
        Option("device", str, "cpu", "torch device of the models: cpu, cuda, cuda:1, mps or auto"),
        Option("trust_remote_code", bool, False, "run Python code shipped inside the checkpoint (off: only for "
               "checkpoints you trust)"),
        Option("threads", int, 0, "torch CPU threads (torch.set_num_threads); 0 = leave torch's setting", min=0),
        # data
        Option("prompts", str, None, "training prompts, with a prompt column (text, or lists of role/content "
               "messages): a local JSONL/JSON/CSV/parquet file, a local directory (save_to_disk output or data "
               "files), or a Hub dataset id ORG/NAME[@revision] in the local Hugging Face cache"),
        Option("eval_prompts", str, None, "evaluation prompts (and optionally outputs), from a file, directory or "
               "cached Hub dataset like `prompts`"),
        Option("reference_outputs", str, None, "reference outputs: a file, directory or cached Hub dataset with "
               "prompt and output columns"),
        Option("prompts_split", str, "train", "split read from `prompts` and `seed_prompts` when they have "
               "several (a directory or Hub dataset)"),
        Option("eval_split", str, "test", "split read from `eval_prompts` and `reference_outputs` when they have "
               "several"),
        Option("prompt_column", str, "prompt", "name of the prompt column in every data file"),
        Option("output_column", str, "output", "name of the reference-output column"),
        Option("eval_limit", int, 0, "use only the first this many evaluation prompts; 0 = all", min=0),
        Option("use_chat_template", bool, True, "wrap each plain-text prompt as a user message in the tokenizer's "
               "chat template (when it has one); message-list prompts are always rendered with it"),
        Option("max_prompt_length", int, 512, "prompts with more tokens than this are dropped", min=1),
        # sampling
        Option("max_new_tokens", int, 256, "most tokens of a response; a response cut here has no EOS", min=1),
        Option("temperature", float, 1.0, "sampling temperature of the training responses", **_POSITIVE),
        Option("top_k", int, 50, "top-k of the training responses; 0 = off", min=0),
        Option("top_p", float, 1.0, "nucleus top-p of the training responses; 1 = off", min=0.0, max=1.0,
               min_inclusive=False),
        Option("eval_samples", int, 2, "responses per evaluation prompt for the KL estimate", min=1),
        Option("generation_batch_size", int, 64, "sequences per generate call (prompts x responses; "
               "transformers backend)", min=1),
        Option("sampling_streams", str, "batch", "transformers backend: batch (prompts generated together, one "
               "seed per generate call) or per_prompt (each prompt's responses from a seed of its own: slower, "
               "but a multi-process launch then splits the sampling between the processes and draws what one "
               "process draws)", choices=("batch", "per_prompt"), omit_at_default=True),
        Option("logprob_batch_size", int, 16, "sequences per log-prob forward", min=1),
        # sampling backend (docs/real-models-extras.md)
        Option("backend", str, "transformers", "what samples responses: transformers (generate), vllm (an "
               "in-process engine: the vllm extra, CUDA GPU only) or vllm_server (a running `vllm serve`, over HTTP; "
               "needs lora_rank > 0); log-probs are always computed with transformers",
               choices=("transformers", "vllm", "vllm_server")),
        Option("vllm_gpu_memory_utilization", float, 0.4, "share of the GPU's memory vLLM may take (the "
               "transformers models and the trainer share the GPU)", min=0.0, max=1.0, min_inclusive=False),
        Option("vllm_enforce_eager", bool, False, "skip CUDA-graph capture (faster engine start, slower decoding; "
               "the engine is rebuilt every iteration)"),
        Option("vllm_weight_sync", str, "push", "how pi_i reaches the in-process vLLM engine: push (load its "
               "weights into the running engine; falls back to rebuild, with a warning, where this vLLM cannot) "
               "or rebuild (a new engine per policy)", choices=("push", "rebuild"), omit_at_default=True),
        Option("vllm_tensor_parallel_size", int, 1, "GPUs the in-process vLLM engine is spread over (tensor "
               "parallelism)", min=1, omit_at_default=True),
        Option("vllm_server_url", str, "http://127.0.0.1:8000/v1", "backend=vllm_server: the server's "
               "OpenAI-compatible base URL (API key, if any, from $VLLM_API_KEY)", omit_at_default=True),
        Option("vllm_server_model", str, "", "backend=vllm_server: the served id of the base model (pi_ref); "
               "empty = the server's only base model", omit_at_default=True),
        Option("vllm_server_adapter_dir", str, "", "backend=vllm_server: where each policy's LoRA adapter is "
               "written for the server to load (it must read the same path); empty = a temporary folder",
               omit_at_default=True),
        Option("vllm_server_concurrency", int, 16, "backend=vllm_server: requests in flight at once", min=1,
               omit_at_default=True),
        Option("vllm_server_timeout", float, 600.0, "backend=vllm_server: seconds to wait for one answer",
               min=0.0, min_inclusive=False, omit_at_default=True),
        Option("vllm_logprobs_mode", str, "", "vLLM's logprobs_mode for the log-probs it reports "
               "(raw_logprobs or processed_logprobs); empty = vLLM's default",
               choices=("", "raw_logprobs", "processed_logprobs")),
        # AlpacaEval export (docs/real-models-extras.md)
        Option("alpaca_dir", str, None, "write AlpacaEval model_outputs.json and reference_outputs.json of every "
               "evaluation here: {iteration} and {seed} are filled in, else files go to DIR/iteration-<i>; "
               "unset = no export"),
        Option("alpaca_generator", str, "pairsel-policy", "the `generator` name of the policy's outputs "
               "(-iteration-<i> is appended)"),
        # pi_0 from one offline DPO round from pi_ref (plugins.testbeds.hf.seed)
        Option("seed_pairs", str, None, "pi_0 = pi_ref after one offline DPO round on these pairs: a local "
               "JSONL/JSON/CSV/parquet file with prompt, chosen and rejected columns (not with initial_model)"),
        Option("chosen_column", str, "chosen", "name of the chosen-response column of seed_pairs"),
        Option("rejected_column", str, "rejected", "name of the rejected-response column of seed_pairs"),
        Option("seed_prompt_share", float, 0.0, "on-policy pi_0: hold this share of the prompts file out of the "
               "pool, sample pi_ref on it, have the annotator label one pair per prompt (seed ledger, not the "
               "budget) and train pi_0 on them; 0 = off", min=0.0, max=1.0, max_inclusive=False),
        Option("seed_prompts", str, None, "on-policy pi_0 from the prompts of this file, directory or cached Hub "
               "dataset (split `prompts_split`) instead of a share of `prompts` (never evaluation prompts)"),
        Option("seed_responses", int, 2, "responses pi_ref samples per seed prompt (one pair of distinct ones "
               "is labelled)", min=2),
        Option("seed_cache", bool, True, "keep the on-policy pi_0 in the harness cache, keyed by the model, "
               "prompt files, judge, options, seed, trainer and library versions"),
        Option("seed_trainer", str, "trl", "the trainer of the seed round", choices=("trl", "native")),
        Option("seed_beta", float, None, "DPO beta of the seed round; unset = the seed trainer's default",
               **_POSITIVE),
        Option("seed_lr", float, 3e-5, "peak learning rate of the seed round (its own default: the trainer's "
               "5e-7 barely moves pi_0 on a small seed set)", **_POSITIVE),
        Option("seed_epochs", float, 2.0, "passes over the seed pairs", min=0.0, min_inclusive=False),
        Option("seed_batch_size", int, 8, "pairs per forward of the seed round", min=1),
        Option("seed_grad_accum", int, 1, "gradient accumulation of the seed round (trl only)", min=1),
        Option("seed_save_dir", str, None, "also save the seed-trained pi_0 here (save_pretrained; with LoRA the "
               "adapter), so later runs can pass it as initial_model instead of training it again"),
        # LoRA (plugins._hf.lora; the peft extra)
        Option("lora_rank", int, 0, "train LoRA adapters of this rank instead of every weight; pi_ref is the "
               "base with its adapters off, so no reference copy is held; 0 = full fine-tuning", min=0,
               omit_at_default=True),
        Option("lora_alpha", float, 16.0, "LoRA alpha (the update is scaled by alpha / rank)", **_POSITIVE,
               omit_at_default=True),
        Option("lora_dropout", float, 0.05, "dropout on the LoRA branch while training", min=0.0, max=1.0,
               max_inclusive=False, omit_at_default=True),
        Option("lora_target_modules", str, "all-linear", "the modules that get adapters: all-linear (every linear "
               "layer but the output head) or comma-separated names, e.g. q_proj,v_proj", omit_at_default=True),
    )

    def __init__(self, settings=None):
        super().__init__(settings)
        if not self.settings["allow_download"]:
            # a wrong path or an uncached Hub id is an error before the run starts (exit 2), not a failed run
            from plugins._hf.loading import resolve_model

            for name in ("model", "initial_model"):
                if self.settings[name]:
                    resolve_model(self.settings[name], f"testbed option `{name}`",
                                  download_hint="-o testbed.allow_download=true",
                                  allow_adapter=name == "initial_model")
            self.check_data()
        if self.settings["lora_rank"] > 0:
            self.check_lora()
        elif self.settings["backend"] == "vllm_server":
            raise UsageError("testbed option backend=vllm_server needs LoRA (-o testbed.lora_rank=16, say): a running "
                             "vLLM server takes each new policy as a LoRA adapter, and a fully fine-tuned policy has "
                             "no way into it; use backend=vllm for full fine-tuning")

    def check_lora(self) -> None:
        """UsageError (exit 2) when LoRA is asked for where it cannot run: peft missing, or options peft refuses."""
        from plugins._hf import lora

        lora.require()
        lora.lora_config(rank=self.settings["lora_rank"], alpha=self.settings["lora_alpha"],
                         dropout=self.settings["lora_dropout"], target_modules=self.settings["lora_target_modules"])

    def check_data(self) -> None:
        """UsageError (exit 2, before the run starts) for a data option that is missing, unreadable, lacks its
        columns or split, or holds a malformed conversation; the tables read are kept for the world's build."""
        from plugins._hf import loading

        column, output = self.settings["prompt_column"], self.settings["output_column"]
        for name, split_option in DATA_SPLITS.items():
            if self.settings[name]:
                found = loading.data_option(self.settings, name, split_option,
                                            [column, output] if name == "reference_outputs" else [column],
                                            download_hint="-o testbed.allow_download=true")
                loading.check_prompts(found.columns[column], column, found.source, f"testbed option `{name}`")

    def sources(self) -> dict[str, str | None]:
        """The models' Hub commits (or directories), and for each data option set its source, commit, split and
        fingerprint (:func:`plugins._hf.loading.data_sources`; nothing is downloaded)."""
        from plugins._hf.loading import data_sources

        return {**super().sources(), **data_sources(self.settings, DATA_SPLITS, f"{self.kind} {self.name!r}",
                                                     column=self.settings["prompt_column"])}

    def build_world(self, *, seed: int, reporter, annotator=None, trainers=None, gold=None):
        from plugins.testbeds.hf.world import build_world

        return build_world(self.settings, seed=seed, reporter=reporter, annotator=annotator, trainers=trainers,
                           gold=gold)

    def memory_needs(self) -> MemoryNeeds:
        """Bytes of one pool prompt and response: token ids and attention masks at their longest.

        The models' weights and generation's working memory (batched by ``generation_batch_size``) depend on
        the model, which is not loaded while a plan is checked: they are left out of the estimate, and said so.
        """
        prompt_tokens, new_tokens = self.settings["max_prompt_length"], self.settings["max_new_tokens"]
        return MemoryNeeds(bytes_per_prompt=16 * prompt_tokens, bytes_per_response=24 * (prompt_tokens + new_tokens),
                           unknown="the models' weights and generation's working memory")


@hookimpl
def register_testbeds(register):
    register(HFTestbed)

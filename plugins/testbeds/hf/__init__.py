"""The ``hf`` testbed: real causal language models from local directories or the Hugging Face cache.

pi_ref is the model in ``model`` (a ``save_pretrained`` directory with its
tokenizer); pi_0 is the model in ``initial_model`` (same architecture and
tokenizer, e.g. pi_ref after an offline DPO round), or pi_ref after a seed
round (below), or pi_ref itself, in which case every implicit margin of the
first iteration is 0 and the margin selectors all buy the same pairs there.

Data files are local JSONL, JSON, CSV or parquet files read with ``datasets``:

* ``prompts``: the training prompt pool, column ``prompt`` (``prompt_column``).
  Prompts longer than ``max_prompt_length`` tokens are dropped (counted in
  ``world.info``). Each iteration draws distinct prompts from it uniformly.
* ``eval_prompts``: the evaluation prompts, column ``prompt``, and optionally
  the reference output of each in column ``output`` (``output_column``).
* ``reference_outputs``: reference outputs (columns ``prompt`` and
  ``output``), matched to the evaluation prompts by prompt text; on its own
  it also gives the evaluation prompts. An AlpacaEval-style file with
  ``instruction``/``output`` columns works with ``prompt_column=instruction``.

Prompts are wrapped as one user message in the tokenizer's chat template when
it has one (``use_chat_template``). Sampling uses ``generate`` with the paper's
temperature 1.0 and top-k 50 by default; evaluation decodes greedily
(``evaluation_pairs``, compared with the reference outputs by the run's
evaluator judge) and estimates KL(pi || pi_ref) from samples of pi itself.
The gold annotator and the evaluator are judges (default ``reward_model``);
the world has no annotator of its own.

Optional parts, each described in ``docs/real-models-extras.md``:

* ``backend=vllm`` samples with vLLM on a GPU (:mod:`plugins.testbeds.hf.vllm_backend`);
  log-probs are still computed with transformers.
* ``alpaca_dir`` writes AlpacaEval's ``model_outputs.json`` and
  ``reference_outputs.json`` at every evaluation (:mod:`plugins.testbeds.hf.alpaca`).
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
from harness.interfaces import Testbed
from harness.memory import MemoryNeeds
from harness.options import Option
from plugins._hf.loading import ModelSources

_POSITIVE = {"min": 0.0, "min_inclusive": False}


class HFTestbed(ModelSources, Testbed):
    model_options = ("model", "initial_model")
    name = "hf"
    description = ("Real causal LMs from local directories or the Hugging Face cache: transformers sampling, "
                   "prompts from local files")
    default_judges = {"annotator": "reward_model", "evaluator": "reward_model"}
    options = (
        # models
        Option("model", str, None, "pi_ref: a local model directory (save_pretrained layout, with its tokenizer) "
               "or a Hugging Face Hub id ORG/NAME[@revision] in the local Hugging Face cache"),
        Option("initial_model", str, None, "pi_0: a fine-tune of `model` (local directory or cached Hub id); "
               "unset = pi_ref itself"),
        Option("allow_download", bool, False, "download a Hub-id `model`/`initial_model` missing from the Hugging "
               "Face cache (off: only cached snapshots are used, nothing is downloaded)"),
        Option("dtype", str, "float32", "dtype the models are loaded in (auto = the checkpoint's own)",
               choices=("float32", "bfloat16", "float16", "auto")),
        Option("device", str, "cpu", "torch device of the models: cpu, cuda, cuda:1, mps or auto"),
        Option("trust_remote_code", bool, False, "run Python code shipped inside the checkpoint (off: only for "
               "checkpoints you trust)"),
        Option("threads", int, 0, "torch CPU threads (torch.set_num_threads); 0 = leave torch's setting", min=0),
        # data
        Option("prompts", str, None, "training prompts: a local JSONL/JSON/CSV/parquet file with a prompt column"),
        Option("eval_prompts", str, None, "evaluation prompts: a local file with a prompt column (and optionally output)"),
        Option("reference_outputs", str, None, "reference outputs: a local file with prompt and output columns"),
        Option("prompt_column", str, "prompt", "name of the prompt column in every data file"),
        Option("output_column", str, "output", "name of the reference-output column"),
        Option("eval_limit", int, 0, "use only the first this many evaluation prompts; 0 = all", min=0),
        Option("use_chat_template", bool, True, "wrap each prompt as a user message in the tokenizer's chat template "
               "(when it has one)"),
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
        Option("logprob_batch_size", int, 16, "sequences per log-prob forward", min=1),
        # sampling backend (docs/real-models-extras.md)
        Option("backend", str, "transformers", "what samples responses: transformers (generate) or vllm "
               "(the vllm extra, CUDA GPU only); log-probs are always computed with transformers",
               choices=("transformers", "vllm")),
        Option("vllm_gpu_memory_utilization", float, 0.4, "share of the GPU's memory vLLM may take (the "
               "transformers models and the trainer share the GPU)", min=0.0, max=1.0, min_inclusive=False),
        Option("vllm_enforce_eager", bool, False, "skip CUDA-graph capture (faster engine start, slower decoding; "
               "the engine is rebuilt every iteration)"),
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
        Option("seed_prompts", str, None, "on-policy pi_0 from the prompts of this local file instead of a share "
               "of `prompts` (never evaluation prompts)"),
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
        Option("seed_save_dir", str, None, "also save the seed-trained pi_0 here (save_pretrained), so later "
               "runs can pass it as initial_model instead of training it again"),
    )

    def __init__(self, settings=None):
        super().__init__(settings)
        if not self.settings["allow_download"]:
            # a wrong path or an uncached Hub id is an error before the run starts (exit 2), not a failed run
            from plugins._hf.loading import resolve_model

            for name in ("model", "initial_model"):
                if self.settings[name]:
                    resolve_model(self.settings[name], f"testbed option `{name}`",
                                  download_hint="-o testbed.allow_download=true")

    def build_world(self, *, seed: int, reporter, annotator=None, trainers=None):
        from plugins.testbeds.hf.world import build_world

        return build_world(self.settings, seed=seed, reporter=reporter, annotator=annotator, trainers=trainers)

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

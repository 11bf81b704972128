"""The hf world: transformers models, prompts from files, folders or cached Hub datasets, sampling with ``generate``.

Implements :class:`harness.interfaces.World` (see the testbed's docstring in
:mod:`plugins.testbeds.hf` for the options). Conventions:

* **Prompts** are row indices into the world's :class:`PromptTable`, as
  ``(n, 1)`` int64 arrays: training prompts are rows ``0 .. n_train - 1`` (the
  order of the prompts file, after dropping prompts longer than
  ``max_prompt_length`` tokens), evaluation prompts rows ``n_train ..``.
  :meth:`HFWorld.draw_prompts` draws training rows without replacement.
* **Responses** hold the generated token ids ``(M, N, L)``, padded with the
  tokenizer's pad id after each response. ``lengths`` counts the scored tokens:
  the generated tokens up to and including the first EOS (any of the
  generation config's EOS ids). A response cut by ``max_new_tokens`` has no
  EOS, and its length is its ``max_new_tokens`` tokens: truncation is a
  stopping rule, not a token the model chose, so it is not scored.
* **Log-probs** are sums over those response tokens under the model itself
  (no temperature or top-k), masking prompt and padding, in batches sorted by
  length; they equal TRL's reference log-probs for the same pair.
* **Randomness**: every ``generate`` call is seeded from the Generator it was
  given, inside ``torch.random.fork_rng``, so the global torch RNG is left as
  it was. The world itself is a pure function of its options; the world seed
  changes nothing (models and prompts come from files).
* **Evaluation**: :meth:`HFWorld.evaluate` reports KL(pi || pi_ref) and
  response length; the win rate against the reference outputs comes from the
  run's evaluator judge comparing :meth:`HFWorld.evaluation_pairs`.
* **Annotation** is always a judge's job (``--annotator``): :meth:`HFWorld.annotate` raises.
* **Backends**: ``backend=transformers`` samples with ``generate`` in chunks of
  ``generation_batch_size`` sequences; ``backend=vllm`` sends one request per
  prompt to a vLLM engine (:mod:`plugins.testbeds.hf.vllm_backend`). Both give
  the same ``Responses`` layout (tokens cut after the first EOS, padded with
  the pad id, lengths counting the EOS), and log-probs are computed with
  transformers either way. The two backends draw different random numbers,
  so the same seed gives different samples on each.
* **AlpacaEval**: with ``alpaca_dir`` set, :meth:`HFWorld.evaluation_pairs`
  writes ``model_outputs.json``/``reference_outputs.json``
  (:mod:`plugins.testbeds.hf.alpaca`); :meth:`HFWorld.evaluation_report`
  turns an evaluator's verdicts into AlpacaEval's win-rate metrics.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.errors import CheckpointError, UsageError
from harness.interfaces import Labels, Pairs, Responses
from harness.progress import NullReporter
from harness.rng import keyed_seed, torch_seed
from plugins import _shipped as shipped
from plugins._hf import loading, lora
from plugins.testbeds.hf import alpaca
from plugins._hf.policy import HFPolicy, PromptTable

CHECKPOINT_FORMAT = "hf-policy-1"


def _check_rows(prompts: np.ndarray, responses: Responses) -> None:
    if np.shape(prompts)[0] != responses.tokens.shape[0]:
        raise ValueError(f"{np.shape(prompts)[0]} prompts but responses for {responses.tokens.shape[0]} prompts")


class HFWorld:
    """One hf world; implements :class:`harness.interfaces.World`.

    Public attributes: ``reference_policy`` (pi_ref), ``initial_policy``
    (pi_0; pi_ref itself when no ``initial_model`` is given), ``tokenizer``,
    ``table`` (the :class:`PromptTable`), ``n_train``, ``eval_rows``
    ``(E, 1)``, ``reference_outputs`` (list of E strings or None),
    ``pad_id``, ``eos_ids``, ``settings`` and ``info`` (build diagnostics).

    A conversational prompt (a list of messages in the data) is known by its
    canonical text, its chat-template rendering with the generation prompt:
    that is what :meth:`texts` returns and what judges, label files and the
    ``texts`` table see. :meth:`prompt_messages` gives its message list back
    (None for a plain prompt); :attr:`conversations` maps every canonical
    text to its messages.
    """

    def __init__(
        self,
        *,
        settings: Mapping[str, Any],
        seed: int,
        tokenizer,
        table: PromptTable,
        reference_policy: HFPolicy,
        initial_policy: HFPolicy,
        reference_outputs: list[str] | None,
        info: dict[str, Any],
        sampler=None,
        conversations: Mapping[str, Any] | None = None,
        gold=None,
    ):
        self.settings = dict(settings)
        self.gold_judge = gold
        if gold is not None:  # an exact judge (a verifier) is this world's gold reward: see gold_rewards
            self.gold_rewards = self._judged_gold
        self.sampler = sampler  # a VLLMSampler with backend=vllm, else None (transformers generate)
        self.last_sampling_logprobs: np.ndarray | None = None
        self.alpaca_exports: list[Path] = []
        self._evaluations = 0
        self.seed = int(seed)
        self.tokenizer = tokenizer
        self.table = table
        self.n_train = table.n_train
        self.eval_rows = np.arange(table.n_train, len(table), dtype=np.int64)[:, None]
        self.reference_policy = reference_policy
        self.initial_policy = initial_policy
        self.pad_id = reference_policy.pad_id
        self.eos_ids = loading.eos_token_ids(reference_policy.model, tokenizer)
        self.reference_outputs = reference_outputs
        self.info = info
        self._conversations = {str(text): tuple(dict(m) for m in messages)
                               for text, messages in dict(conversations or {}).items()}
        self._reference: Responses | None = None
        self._reference_text: dict[int, tuple[tuple[int, ...], str]] = {}
        if reference_outputs is not None:
            self._encode_references(reference_outputs)

    def __repr__(self) -> str:
        return f"<HFWorld {self.settings.get('model')!r} train={self.n_train} eval={len(self.eval_rows)}>"

    @property
    def seed_round(self) -> dict[str, Any]:
        """How pi_0 was made by a seed round (``seed_*`` build diagnostics; the seed ledger), or {} without one."""
        return {key: value for key, value in self.info.items() if key.startswith("seed_")}

    # ------------------------------------------------------------------ prompts

    @property
    def conversations(self) -> dict[str, list[dict[str, Any]]]:
        """Every conversational prompt of the world: canonical text -> its messages (copies; {} when none)."""
        return {text: [dict(m) for m in messages] for text, messages in self._conversations.items()}

    def prompt_messages(self, text: str) -> list[dict[str, Any]] | None:
        """The messages of the conversational prompt whose canonical text (as :meth:`texts` gives it) is ``text``.

        A list of ``{"role": ..., "content": ...}`` dicts as the data file had
        them (system turns included), a fresh copy each call; None when
        ``text`` is a plain prompt or not a prompt of this world.
        """
        messages = self._conversations.get(str(text))
        return None if messages is None else [dict(m) for m in messages]

    def draw_prompts(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` distinct training prompts drawn uniformly: ``(n, 1)`` int64 row indices into ``table``."""
        n = int(n)
        if n > self.n_train:
            raise UsageError(f"an iteration needs {n} prompts but the prompts file has {self.n_train} usable ones; "
                             "use a larger prompts file or a smaller budget")
        return rng.choice(self.n_train, size=n, replace=False).astype(np.int64)[:, None]

    # ------------------------------------------------------------------ models

    @property
    def shards_sampling(self) -> bool:
        """Whether :meth:`sample` draws each prompt's responses from a stream of its own (testbed option
        ``sampling_streams=per_prompt``, transformers backend), so the loop may split the prompts between the
        processes of a multi-process launch and get what one process would (World.shards_sampling)."""
        return self.sampler is None and self.settings.get("sampling_streams", "batch") == "per_prompt"

    def _check_policy(self, policy) -> HFPolicy:
        if not isinstance(policy, HFPolicy):
            raise TypeError(f"the hf world runs only HFPolicy objects, got {type(policy).__name__}")
        return policy

    def _generate(self, policy: HFPolicy, rows: list[int], n: int, seed: int, mode: str) -> list[torch.Tensor]:
        """Token rows of ``n`` responses for each prompt row: ``mode`` is sample, pure (ancestral) or greedy."""
        from transformers import GenerationConfig

        s = self.settings
        model = policy.model
        device = policy.device
        options: dict[str, Any] = {
            "max_new_tokens": int(s["max_new_tokens"]),
            "eos_token_id": self.eos_ids,
            "pad_token_id": self.pad_id,
            "num_return_sequences": n,
            # neutral values, so nothing from the checkpoint's generation_config.json shapes the distribution
            "repetition_penalty": 1.0,
            "no_repeat_ngram_size": 0,
            "min_new_tokens": 0,
        }
        if mode == "greedy":
            options.update(do_sample=False, num_beams=1)
        elif mode == "pure":
            options.update(do_sample=True, temperature=1.0, top_k=0, top_p=1.0)
        else:
            options.update(do_sample=True, temperature=float(s["temperature"]), top_k=int(s["top_k"]),
                           top_p=float(s["top_p"]))
        config = GenerationConfig(**options)
        ids = [list(self.table.ids[r]) for r in rows]
        width = max(len(x) for x in ids)
        input_ids = torch.full((len(ids), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(ids), width), dtype=torch.long)
        for i, x in enumerate(ids):  # left padding for generation
            input_ids[i, width - len(x):] = torch.tensor(x, dtype=torch.long)
            attention[i, width - len(x):] = 1
        saved = model.generation_config
        model.generation_config = GenerationConfig(eos_token_id=self.eos_ids, pad_token_id=self.pad_id)
        try:
            devices = [device] if device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices), torch.no_grad():
                torch.manual_seed(seed)
                out = model.generate(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                                     generation_config=config)
        finally:
            model.generation_config = saved
        new = out[:, width:].cpu()
        return [new[i * n : (i + 1) * n] for i in range(len(rows))]

    def sample(self, policy, prompts: np.ndarray, n_responses: int, rng: np.random.Generator, *,
               mode: str = "sample") -> Responses:
        """``n_responses`` responses per prompt row (temperature, top-k, top-p from the options).

        ``mode="greedy"`` decodes greedily, ``mode="pure"`` samples the model's
        own distribution (temperature 1, no top-k/top-p; what a Monte-Carlo KL
        needs). With the transformers backend prompts are generated in chunks
        of ``generation_batch_size`` sequences, each seeded from ``rng``, or,
        with ``sampling_streams=per_prompt``, one prompt per call, seeded by
        one draw from ``rng`` keyed by the prompt's row (:attr:`shards_sampling`); with
        vLLM every prompt is one request with ``n = n_responses`` and its own
        seed from ``rng``, and vLLM's cumulative log-probs of the sampled
        responses are kept in ``last_sampling_logprobs`` (``(M, N)``; see
        :mod:`plugins.testbeds.hf.vllm_backend` for what they are and why the
        harness does not score with them). Either way each response is cut
        after its first EOS.
        """
        policy = self._check_policy(policy)
        rows = [int(r) for r in np.asarray(prompts, dtype=np.int64).reshape(len(prompts), -1)[:, 0]]
        m, n = len(rows), int(n_responses)
        if self.sampler is not None:
            seeds = [torch_seed(rng) for _ in rows]
            completions = self.sampler.generate(policy, [self.table.ids[r] for r in rows], n, seeds, mode)
            self.last_sampling_logprobs = self.sampler.last_cumulative_logprobs
            return self._responses([[c.tokens for c in row] for row in completions], n)
        eos = torch.tensor(self.eos_ids, dtype=torch.long)
        if self.shards_sampling:  # one stream per prompt: the same responses however the prompts are split
            base = torch_seed(rng)
            self.last_sampling_logprobs = None
            return self._responses([_until_eos(self._generate(policy, [row], n, keyed_seed(base, row), mode)[0], eos)
                                    for row in rows], n)
        per_call = max(1, int(self.settings["generation_batch_size"]) // max(n, 1))
        chunks = [rows[i : i + per_call] for i in range(0, m, per_call)]
        seeds = [torch_seed(rng) for _ in chunks]
        generated: list[list[list[int]]] = []
        for chunk, seed in zip(chunks, seeds):
            for block in self._generate(policy, chunk, n, seed, mode):  # (n, width)
                generated.append(_until_eos(block, eos))
        self.last_sampling_logprobs = None
        return self._responses(generated, n)

    def steered_sample(self, policy, reference, prompts: np.ndarray, sources: np.ndarray, beta: float,
                       rng: np.random.Generator) -> Responses:
        """Each response ``[m, n]`` drawn from ``sources[m, n]`` (selector contract 3), with the sampling options.

        pi_{i-1} and pi_ref rows are generated as :meth:`sample` generates
        (``generate``, in chunks, one seed per chunk); pi+ and pi- rows by a
        token loop over both models with their KV caches, on the logits
        (1 + w) h_pi - w h_ref (w = beta for pi+, -beta for pi-), then the
        temperature, top-k and top-p of the options, one prompt's rows at a
        time (so no padding enters the caches). Each source gets its own seed
        from ``rng``, in the order of ``SAMPLING_SOURCES``. The vLLM backend
        samples one model per request and cannot interpolate two models'
        logits, so it refuses (UsageError); use ``-o testbed.backend=transformers``.
        """
        from harness.interfaces import SAMPLING_SOURCES

        if self.sampler is not None:
            raise UsageError(
                "the hf testbed's vLLM backend cannot sample from chosen sources: it draws every response of a "
                "request from one model and cannot mix two models' next-token logits (PILAF's pi+ and pi-). Run "
                "a selector that steers sampling with -o testbed.backend=transformers"
            )
        policy, reference = self._check_policy(policy), self._check_policy(reference)
        rows = [int(r) for r in np.asarray(prompts, dtype=np.int64).reshape(len(prompts), -1)[:, 0]]
        sources = np.asarray(sources, dtype=np.int8)
        m, n = sources.shape
        grid: list[list[list[int]]] = [[[] for _ in range(n)] for _ in range(m)]
        weights = {"plus": float(beta), "minus": -float(beta)}
        eos = torch.tensor(self.eos_ids, dtype=torch.long)
        for code, name in enumerate(SAMPLING_SOURCES):
            seed = torch_seed(rng)
            where = np.argwhere(sources == code)
            if where.size == 0:
                continue
            if name in weights:
                cells = self._interpolated(policy, reference, weights[name], rows, where, seed)
            else:
                model = policy if name == "policy" else reference
                chunk = max(1, int(self.settings["generation_batch_size"]))
                cells = []
                for start in range(0, len(where), chunk):
                    part = where[start : start + chunk]
                    blocks = self._generate(model, [rows[i] for i, _ in part], 1, seed + start, "sample")
                    cells.extend(block[0] for block in blocks)
            for (i, j), cell in zip(where, cells):  # the cells' widths differ: one row at a time
                grid[i][j] = _until_eos(cell[None], eos)[0]
        self.last_sampling_logprobs = None
        responses = self._responses(grid, n)
        return Responses(tokens=responses.tokens, lengths=responses.lengths, sources=sources)

    def _interpolated(self, policy: HFPolicy, reference: HFPolicy, weight: float, rows: list[int],
                      where: np.ndarray, seed: int) -> list[torch.Tensor]:
        """Token rows sampled from softmax(((1 + w) h_pi - w h_ref) / temperature) with top-k/top-p, for each
        ``(prompt, response)`` cell of ``where``, prompt by prompt (cells in the order of ``where``)."""
        s = self.settings
        temperature, top_k, top_p = float(s["temperature"]), int(s["top_k"]), float(s["top_p"])
        steps = int(s["max_new_tokens"])
        device = policy.device
        eos = torch.tensor(self.eos_ids, dtype=torch.long, device=device)
        generator = torch.Generator(device=device).manual_seed(int(seed))
        out: dict[int, torch.Tensor] = {}
        by_prompt: dict[int, list[int]] = {}  # each prompt's cells (positions in `where`), prompts in first-seen order
        for k, (i, _) in enumerate(where):
            by_prompt.setdefault(int(i), []).append(k)
        with torch.no_grad():
            for prompt, cells in by_prompt.items():
                ids = torch.tensor([list(self.table.ids[rows[prompt]])] * len(cells), dtype=torch.long, device=device)
                mine = policy.model(input_ids=ids, use_cache=True)
                theirs = reference.model(input_ids=ids, use_cache=True)
                done = torch.zeros(len(cells), dtype=torch.bool, device=device)
                tokens = []
                for _ in range(steps):
                    logits = (1.0 + weight) * mine.logits[:, -1].float() - weight * theirs.logits[:, -1].float()
                    token = _draw(logits, temperature, top_k, top_p, generator)
                    token = torch.where(done, torch.full_like(token, self.pad_id), token)
                    tokens.append(token)
                    done |= torch.isin(token, eos)
                    if bool(done.all()):
                        break
                    mine = policy.model(input_ids=token[:, None], past_key_values=mine.past_key_values,
                                        use_cache=True)
                    theirs = reference.model(input_ids=token[:, None], past_key_values=theirs.past_key_values,
                                             use_cache=True)
                block = torch.stack(tokens, dim=1).cpu() if tokens else torch.zeros((len(cells), 0), dtype=torch.long)
                for row, k in enumerate(cells):
                    out[k] = block[row]
        return [out[k] for k in range(len(where))]

    def _responses(self, generated: list[list[list[int]]], n: int) -> Responses:
        """``Responses`` from the token lists of every prompt's ``n`` responses (each already cut after its EOS).

        ``tokens`` is ``(M, n, L)`` with L the longest response (at least 1),
        padded with the pad id; ``lengths`` counts every kept token, EOS included.
        """
        m = len(generated)
        width = max([len(r) for block in generated for r in block], default=0)
        tokens = np.full((m, n, max(width, 1)), self.pad_id, dtype=np.int64)
        lengths = np.zeros((m, n), dtype=np.int64)
        for i, block in enumerate(generated):
            if len(block) != n:
                raise RuntimeError(f"{len(block)} responses for prompt {i}, expected {n}")
            for j, response in enumerate(block):
                tokens[i, j, : len(response)] = response
                lengths[i, j] = len(response)
        return Responses(tokens=tokens, lengths=lengths)

    def logprobs(self, policy, prompts: np.ndarray, responses: Responses, *, dropout: bool = False) -> np.ndarray:
        """``(M, N)`` float64 summed response log-probs (EOS included when present) under ``policy``, no grad.

        Sequences are scored in batches of ``logprob_batch_size``, longest first
        (so little padding is run and an out-of-memory shows up at once).
        ``dropout=True`` (for :meth:`stochastic_logprobs` only) scores in train
        mode, the model's own dropout modules active.
        """
        policy = self._check_policy(policy)
        return self._each_response(policy, prompts, responses, 1, policy.sequence_logprobs, train=dropout)[..., 0]

    def features(self, policy, prompts: np.ndarray, responses: Responses) -> np.ndarray:
        """``(M, N, d)`` float64: the last layer's hidden state at each response's last token (selector contract 2).

        d is the model's hidden size. Scored in eval mode, in batches of
        ``logprob_batch_size``, longest first, as :meth:`logprobs`; no grad.
        """
        policy = self._check_policy(policy)
        dim = int(policy.model.config.get_text_config().hidden_size)
        return self._each_response(policy, prompts, responses, dim, policy.response_features, train=False)

    def _each_response(self, policy: HFPolicy, prompts: np.ndarray, responses: Responses, width: int, compute,
                       *, train: bool) -> np.ndarray:
        """``(M, N, width)`` float64 of ``compute(prompt_rows, tokens, lengths)``, ``(B[, width])`` per batch, with
        the model in train mode when ``train`` (its mode restored after); batches of ``logprob_batch_size``
        sequences, longest first (so little padding is run and an out-of-memory shows up at once); no grad."""
        _check_rows(prompts, responses)
        m, n, length = responses.tokens.shape
        total = m * n
        out = np.zeros((total, width), dtype=np.float64)
        if total == 0:
            return out.reshape(m, n, width)
        rows = np.repeat(np.asarray(prompts, dtype=np.int64).reshape(m, -1)[:, 0], n)
        tokens = responses.tokens.reshape(total, length)
        lengths = responses.lengths.reshape(total)
        prompt_lengths = np.array([len(policy.table.ids[r]) for r in rows])
        order = np.argsort(-(prompt_lengths + lengths), kind="stable")
        batch = int(self.settings["logprob_batch_size"])
        was_training = policy.model.training
        policy.model.train(bool(train))
        try:
            with torch.no_grad():
                for start in range(0, total, batch):
                    index = order[start : start + batch]
                    longest = max(int(lengths[index].max()), 1)
                    values = compute(rows[index, None], tokens[index, :longest], lengths[index])
                    out[index] = values.double().cpu().numpy().reshape(len(index), width)
        finally:
            policy.model.train(was_training)
        return out.reshape(m, n, width)

    def stochastic_logprobs(
        self, policy, prompts: np.ndarray, responses: Responses, passes: int, rng: np.random.Generator
    ) -> np.ndarray:
        """``(passes, M, N)`` float64 summed response log-probs from MC-dropout passes (scorer contract 2).

        Each pass is :meth:`logprobs` under :func:`plugins._hf.policy.mc_dropout`:
        the model's own dropout modules in train mode and dropout at
        ``HEAD_DROPOUT`` (0.05) on the last hidden state before the LM head,
        as in Mehta et al.'s code. A model whose config sets every dropout rate
        to 0.0 gets its spread from the head dropout alone; that is the
        authors' setting too (their wrapper adds it to every model), so there is
        no separate fallback. The noise is a function of ``rng``; the model's
        mode and the global RNGs are restored afterwards.
        """
        from plugins._hf.policy import mc_dropout

        policy = self._check_policy(policy)
        _check_rows(prompts, responses)
        m, n, _ = responses.tokens.shape
        out = np.empty((int(passes), m, n), dtype=np.float64)
        if m * n == 0:
            return out
        with mc_dropout(policy, rng):
            for k in range(int(passes)):
                out[k] = self.logprobs(policy, prompts, responses, dropout=True)
        return out

    # ------------------------------------------------------------------ annotation

    def annotate(self, prompts: np.ndarray, responses: Responses, pairs: Pairs, rng: np.random.Generator) -> Labels:
        """Not available: the hf testbed has no built-in annotator (UsageError)."""
        raise UsageError(
            "the hf testbed has no built-in annotator: pass --annotator JUDGE, e.g. --annotator reward_model "
            "with the judge's `model` option set to a local reward-model directory, or --annotator function "
            "with `callable=module:function`"
        )

    # ------------------------------------------------------------------ text

    def texts(self, prompts: np.ndarray, responses: Responses) -> tuple[list[str], list[list[str]]]:
        """Prompts' canonical texts; responses decoded without special tokens.

        A plain prompt's text is as written in its data; a conversational
        prompt's is its chat-template rendering (:meth:`prompt_messages` gives
        its messages).

        A response whose tokens are exactly an evaluation prompt's reference
        output comes back as the reference text itself (not a re-decoding).
        """
        _check_rows(prompts, responses)
        rows = [int(r) for r in np.asarray(prompts, dtype=np.int64).reshape(len(prompts), -1)[:, 0]]
        prompt_texts = [self.table.texts[r] for r in rows]
        response_texts = []
        for i, r in enumerate(rows):
            texts = []
            for j in range(responses.tokens.shape[1]):
                ids = tuple(int(t) for t in responses.tokens[i, j, : int(responses.lengths[i, j])])
                known = self._reference_text.get(r)
                if known is not None and known[0] == ids:
                    texts.append(known[1])
                else:
                    texts.append(self.tokenizer.decode(list(ids), skip_special_tokens=True))
            response_texts.append(texts)
        return prompt_texts, response_texts

    # ------------------------------------------------------------------ evaluation

    def _encode_references(self, outputs: list[str]) -> None:
        """The reference outputs as responses: their tokens (no special tokens added) plus the tokenizer's EOS."""
        eos = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else self.eos_ids[0]
        encoded = [list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) + [int(eos)] for text in outputs]
        width = max((len(e) for e in encoded), default=1)
        tokens = np.full((len(encoded), width), self.pad_id, dtype=np.int64)
        lengths = np.zeros(len(encoded), dtype=np.int64)
        for i, ids in enumerate(encoded):
            tokens[i, : len(ids)] = ids
            lengths[i] = len(ids)
            self._reference_text[int(self.eval_rows[i, 0])] = (tuple(ids), outputs[i])
        self._reference = Responses(tokens=tokens[:, None, :], lengths=lengths[:, None])

    def evaluation_pairs(self, policy, rng: np.random.Generator) -> tuple[np.ndarray, Responses]:
        """The evaluation prompt rows ``(E, 1)`` and ``(E, 2)`` responses: the policy's greedy output, then the reference output."""
        policy = self._check_policy(policy)
        if self._reference is None:
            raise UsageError("the hf testbed has no reference outputs to compare with: set the testbed option "
                             "`reference_outputs` (or an `output` column in `eval_prompts`)")
        greedy = self.sample(policy, self.eval_rows, 1, rng, mode="greedy")
        width = max(greedy.tokens.shape[2], self._reference.tokens.shape[2])

        def padded(tokens: np.ndarray) -> np.ndarray:
            out = np.full((tokens.shape[0], width), self.pad_id, dtype=np.int64)
            out[:, : tokens.shape[1]] = tokens
            return out

        tokens = np.stack([padded(greedy.tokens[:, 0]), padded(self._reference.tokens[:, 0])], axis=1)
        lengths = np.stack([greedy.lengths[:, 0], self._reference.lengths[:, 0]], axis=1).astype(np.int64)
        pairs = Responses(tokens=tokens, lengths=lengths)
        seed, iteration = self._evaluation_coordinates(rng)
        self._evaluations += 1
        if self.settings.get("alpaca_dir"):
            self.export_alpaca(pairs, iteration=iteration, seed=seed)
        return self.eval_rows.copy(), pairs

    def _evaluation_coordinates(self, rng: np.random.Generator) -> tuple[int, int]:
        """(run seed, iteration) of an evaluation, for naming its AlpacaEval files.

        The loop hands ``evaluation_pairs`` the Generator
        ``harness.rng.stream(seed, iteration, "evaluation-pairs")``, whose seed
        sequence holds exactly those numbers; a Generator from anywhere else
        gives (world seed, number of evaluations so far).
        """
        from harness.rng import stage_key

        entropy = getattr(getattr(rng.bit_generator, "seed_seq", None), "entropy", None)
        if (isinstance(entropy, (list, tuple)) and len(entropy) == 3
                and all(isinstance(v, (int, np.integer)) for v in entropy)
                and int(entropy[2]) == stage_key("evaluation-pairs")):
            return int(entropy[0]), int(entropy[1])
        return self.seed, self._evaluations

    def _evaluation_texts(self, prompts: np.ndarray, responses: Responses) -> tuple[list[str], list[str], list[str]]:
        """Instructions, policy outputs and reference outputs of evaluation pairs (policy first, as evaluation_pairs gives them)."""
        prompt_texts, response_texts = self.texts(prompts, responses)
        return prompt_texts, [r[0] for r in response_texts], [r[1] for r in response_texts]

    def alpaca_generator(self, iteration: int) -> str:
        """The AlpacaEval ``generator`` name of the policy evaluated at ``iteration``."""
        return f"{self.settings.get('alpaca_generator') or 'pairsel-policy'}-iteration-{int(iteration)}"

    def export_alpaca(self, responses: Responses, *, iteration: int, seed: int) -> Path:
        """Write ``model_outputs.json`` and ``reference_outputs.json`` of these evaluation pairs; return the directory."""
        directory = alpaca.export_dir(str(self.settings["alpaca_dir"]), iteration=iteration, seed=seed)
        instructions, outputs, references = self._evaluation_texts(self.eval_rows, responses)
        alpaca.write_outputs(directory, instructions=instructions, model_outputs=outputs,
                             reference_outputs=references, generator=self.alpaca_generator(iteration))
        self.alpaca_exports.append(directory)
        return directory

    def evaluation_report(self, *, iteration: int, seed: int, prompts: np.ndarray, responses: Responses,
                          labels: Labels, annotator: str = "evaluator") -> dict[str, float]:
        """Extra metrics from the evaluator's verdicts on :meth:`evaluation_pairs`: AlpacaEval's win rate.

        ``labels.prefer_a`` says where the policy (response 0) won; ties
        count 1/2. Returns ``alpaca_win_rate``, ``alpaca_win_rate_se`` (percent)
        and ``alpaca_n_draws`` computed by ``alpaca_eval.metrics`` when the
        ``[alpaca]`` extra is importable, else ``{}``. With ``alpaca_dir`` set
        the verdicts are also written there as ``annotations.json``.
        Called by the loop after the evaluator judged the pairs, when the loop
        supports it (see docs/real-models-extras.md).
        """
        prefs = alpaca.preferences(labels.prefer_a, labels.tie)
        if self.settings.get("alpaca_dir"):
            directory = alpaca.export_dir(str(self.settings["alpaca_dir"]), iteration=iteration, seed=seed)
            instructions, outputs, references = self._evaluation_texts(prompts, responses)
            alpaca.write_json(directory / alpaca.ANNOTATIONS, alpaca.annotations(
                instructions, outputs, references, prefs, generator=self.alpaca_generator(iteration),
                annotator=annotator))
        return alpaca.winrate_metrics(prefs)

    def ends_with_eos(self, responses: Responses) -> np.ndarray:
        """``(M, N)`` bool: True where a response's last scored token is an EOS (False when cut by max_new_tokens)."""
        m, n, _ = responses.tokens.shape
        last = np.take_along_axis(responses.tokens, np.maximum(responses.lengths - 1, 0)[..., None], axis=2)[..., 0]
        return np.isin(last, self.eos_ids) & (responses.lengths > 0)

    def evaluate(self, policy, rng: np.random.Generator) -> dict[str, float]:
        """KL and length metrics of ``policy`` on the evaluation prompts (no win rate: that is the evaluator judge's).

        * ``kl``: Monte-Carlo KL(pi || pi_ref), the mean of log pi - log pi_ref
          over ``eval_samples`` responses per evaluation prompt, sampled from pi
          itself (temperature 1, no top-k/top-p, as the estimator requires);
          ``kl_se`` its standard error over prompts.
        * ``mean_length``: mean number of tokens of those responses, EOS not counted.
        * ``truncated_share``: share of them cut by ``max_new_tokens`` (no EOS).
        * ``gold_reward``, only in a world built with an exact gold judge: the
          judge's mean score of those responses (a verifier: the share that
          pass their prompt's check); ``gold_reward_se`` its standard error
          over prompts.
        """
        policy = self._check_policy(policy)
        k = int(self.settings["eval_samples"])
        responses = self.sample(policy, self.eval_rows, k, rng, mode="pure")
        if policy is self.reference_policy:
            log_ratio = np.zeros(responses.lengths.shape)
        else:
            log_ratio = (self.logprobs(policy, self.eval_rows, responses)
                         - self.logprobs(self.reference_policy, self.eval_rows, responses))
        per_prompt = log_ratio.mean(axis=1)
        ended = self.ends_with_eos(responses)
        se = float(per_prompt.std(ddof=1) / math.sqrt(len(per_prompt))) if len(per_prompt) > 1 else 0.0
        metrics = {
            "kl": float(log_ratio.mean()),
            "kl_se": se,
            "mean_length": float((responses.lengths - ended).mean()),
            "truncated_share": float(1.0 - ended.mean()),
        }
        if self.gold_judge is not None:
            gold = self._judged_gold(self.eval_rows, responses).mean(axis=1)
            metrics["gold_reward"] = float(gold.mean())
            metrics["gold_reward_se"] = (float(gold.std(ddof=1) / math.sqrt(len(gold))) if len(gold) > 1 else 0.0)
        return metrics

    def _judged_gold(self, prompts: np.ndarray, responses: Responses) -> np.ndarray:
        """``(M, N)`` gold reward from the exact gold judge (:attr:`harness.interfaces.Judge.exact`).

        Present as :meth:`World.gold_rewards` only when the world was built with one (``gold``): an exact
        judge is deterministic, so no random state is passed on (a fixed Generator satisfies the signature).
        """
        scores = self.gold_judge.score(world=self, prompts=prompts, responses=responses,
                                       rng=np.random.default_rng(0))
        return np.asarray(scores, dtype=np.float64)

    def close(self) -> None:
        """Release the vLLM engine, if any (the transformers models need nothing)."""
        if self.sampler is not None:
            self.sampler.close()

    # ------------------------------------------------------------------ checkpoints

    def save_policy(self, policy, path: Path) -> None:
        """Write ``policy``'s weights to the single file ``path`` (safetensors; tied weights stored once).

        With LoRA the file holds the policy's adapter only (metadata ``lora``: its config, ``dtype``: the base's);
        pi_ref, the base with its adapters off, is written as a fresh adapter marked ``lora_reference``, and loads
        back as pi_ref itself.
        """
        import json

        from safetensors.torch import save_file, save_model

        policy = self._check_policy(policy)
        metadata = {"format": CHECKPOINT_FORMAT, "architecture": type(lora.unwrap(policy.model)).__name__}
        if not policy.is_lora:
            save_model(policy.model, str(path), metadata=metadata)
            return
        metadata["lora"] = json.dumps(lora.config_dict(policy.model), sort_keys=True, default=str)
        metadata["dtype"] = str(next(lora.unwrap(policy.model).parameters()).dtype).replace("torch.", "")
        if policy.adapter is None:
            metadata["lora_reference"] = "true"
            state = dict(lora.spec(policy.model).fresh)
        else:
            state = lora.adapter_state(policy.model, policy.adapter)
        save_file(state, str(path), metadata=metadata)

    def load_policy(self, path: Path) -> HFPolicy:
        """The policy saved at ``path``: a copy of pi_ref with the file's weights (safetensors only, never unpickled).

        A LoRA world reads LoRA checkpoints only, into a new adapter; a full-weights world full checkpoints only.
        """
        from safetensors import safe_open
        from safetensors.torch import load_file, load_model

        reference = self.reference_policy
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
            if metadata.get("format") != CHECKPOINT_FORMAT:
                raise ValueError(f"format {metadata.get('format')!r}, expected {CHECKPOINT_FORMAT!r}")
            expected = type(lora.unwrap(reference.model)).__name__
            if metadata.get("architecture") != expected:
                raise ValueError(f"architecture {metadata.get('architecture')!r}, this world's is {expected!r}")
            if ("lora" in metadata) != reference.is_lora:
                raise ValueError("it holds a LoRA adapter, but this run fine-tunes every weight" if "lora" in metadata
                                 else "it holds full weights, but this run trains LoRA adapters (lora_rank > 0)")
            if metadata.get("lora_reference") == "true":  # pi_ref (checkpoint 0 of a run whose pi_0 is pi_ref)
                load_file(str(path))  # read through: a truncated file is refused like any other
                return reference.with_table(reference.table)
            policy = reference.clone()
            if policy.is_lora:
                lora.load_adapter_state(policy.model, policy.adapter, load_file(str(path), device=str(policy.device)))
            else:
                load_model(policy.model, str(path), strict=True, device=str(policy.device))
        except Exception as exc:  # truncated, corrupt, or from another model
            raise CheckpointError(f"policy checkpoint {path} is unusable: {type(exc).__name__}: {exc}") from None
        if not all(bool(torch.isfinite(p).all()) for p in policy.parameters()):
            raise CheckpointError(f"policy checkpoint {path} holds non-finite weights")
        policy.model.eval()
        return policy


# ---------------------------------------------------------------------- building


def describe_source(data: loading.DataSource) -> str:
    """One line naming a data source: ``file PATH``, or the directory or Hub dataset with its split and fingerprint."""
    if Path(data.source).is_file():
        return f"file {data.source}"
    kind = f"dataset {data.source}@{data.revision}" if data.revision else f"directory {data.source}"
    return kind + "".join(f", {name} {value}" for name, value in (("split", data.split),
                                                                  ("fingerprint", data.fingerprint)) if value)


class PromptTexts:
    """The canonical text of every prompt, and how each is encoded.

    A plain prompt's text is itself; it is wrapped as one user message in the
    chat template when ``use_template``. A conversational prompt (a tuple of
    messages, :func:`plugins._hf.loading.check_prompts`) has one canonical
    text: ``tokenizer.apply_chat_template(messages, tokenize=False,
    add_generation_prompt=True)``. That text is the prompt's key everywhere
    (``World.texts``, judges, label files, the ``texts`` table, exports) and
    is tokenized as it is, never wrapped again; ``messages`` maps it back to
    the message list.
    """

    def __init__(self, tokenizer, use_template: bool):
        self.tokenizer = tokenizer
        self.use_template = use_template
        self.messages: dict[str, tuple[dict[str, Any], ...]] = {}

    def canonical(self, prompts, source: str, label: str) -> list[str]:
        """The canonical text of each prompt (strings as they are, conversations rendered); UsageError naming the row."""
        out = []
        for row, prompt in enumerate(prompts, start=1):
            if isinstance(prompt, str):
                out.append(prompt)
                continue
            if not getattr(self.tokenizer, "chat_template", None):
                raise UsageError(f"{label}: row {row} of {source!r} is a list of messages, but the tokenizer of "
                                 "testbed option `model` has no chat template to render it with; use a chat model "
                                 "(or set `chat_template` in its tokenizer_config.json), or give plain-text prompts")
            try:
                text = self.tokenizer.apply_chat_template([dict(m) for m in prompt], tokenize=False,
                                                          add_generation_prompt=True)
            except Exception as exc:  # the template's own checks, e.g. roles that must alternate
                raise UsageError(f"{label}: row {row} of {source!r}: the chat template of testbed option `model` "
                                 f"cannot render its messages ({type(exc).__name__}: {exc}); fix the messages to "
                                 "suit the template (e.g. alternate user and assistant, one leading system turn)"
                                 ) from None
            if not isinstance(text, str) or not text.strip():
                raise UsageError(f"{label}: row {row} of {source!r}: the chat template renders its messages as "
                                 "empty text")
            self.messages.setdefault(text, tuple(dict(m) for m in prompt))
            out.append(text)
        return out

    def encode(self, text: str) -> list[int]:
        """Token ids of the prompt whose canonical text is ``text`` (a rendered conversation is not wrapped again)."""
        if text in self.messages:
            return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return _encode_prompt(self.tokenizer, text, self.use_template)


def _encode_prompt(tokenizer, text: str, use_template: bool) -> list[int]:
    if use_template:
        rendered = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                                 tokenize=False)
        return list(tokenizer(rendered, add_special_tokens=False)["input_ids"])
    return list(tokenizer(text)["input_ids"])


def _position_limit(config) -> int | None:
    for name in ("n_positions", "max_position_embeddings"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def build_world(settings: Mapping[str, Any], *, seed: int, reporter=None, annotator=None,
                trainers=None, gold=None) -> HFWorld:
    """Load the models and prompt files of ``settings`` (all local); UsageError for anything missing.

    ``model`` and ``initial_model`` may be Hub ids in the Hugging Face cache
    (:func:`plugins._hf.loading.resolve_model`); ``info`` records where each
    came from (``model_source``, ``model_revision``: the snapshot's commit).

    ``annotator`` is the run's annotator judge; only the on-policy seed round
    (:func:`plugins.testbeds.hf.seed.bootstrap_initial_policy`) uses it.
    ``trainers`` (a :data:`harness.interfaces.TrainerFactory`) gives the seed
    round's trainer; without it, the default registry's. ``gold`` is the run's
    gold judge when it is exact (a verifier): the world's gold reward.
    """
    reporter = reporter or NullReporter()
    s = settings
    if int(s["threads"]) > 0:
        torch.set_num_threads(int(s["threads"]))
    engine_api = None
    if s.get("backend", "transformers") == "vllm":  # fail before loading anything
        from plugins.testbeds.hf import vllm_backend

        engine_api = vllm_backend.load_engine_api()
        vllm_backend.check_tensor_parallel(int(s.get("vllm_tensor_parallel_size", 1)))
    allow_download = bool(s.get("allow_download", False))
    hint = "-o testbed.allow_download=true"
    model_source = loading.resolve_model(s["model"], "testbed option `model`", allow_download=allow_download,
                                         download_hint=hint)
    initial_source = (loading.resolve_model(s["initial_model"], "testbed option `initial_model`",
                                            allow_download=allow_download, download_hint=hint, allow_adapter=True)
                      if s["initial_model"] else None)
    model_dir = model_source.path
    initial_dir = initial_source.path if initial_source is not None else None
    seed_file = None
    if s.get("seed_pairs"):
        if initial_dir is not None:
            raise UsageError("testbed options `seed_pairs` and `initial_model` both give pi_0: set one of them "
                             "(seed_pairs trains pi_0 from pi_ref; initial_model loads a trained one)")
        seed_file = loading.local_data_file(s["seed_pairs"], "testbed option `seed_pairs`")
    on_policy = bool(s.get("seed_prompts")) or float(s.get("seed_prompt_share") or 0.0) > 0
    if on_policy:
        if s.get("seed_prompts") and float(s.get("seed_prompt_share") or 0.0) > 0:
            raise UsageError("testbed options `seed_prompts` and `seed_prompt_share` both choose the seed prompts: "
                             "set one of them")
        for other in ("seed_pairs", "initial_model"):
            if s.get(other):
                raise UsageError(f"testbed options `{other}` and the on-policy seed round (`seed_prompt_share` / "
                                 "`seed_prompts`) both give pi_0: set one of them")
    if not s["prompts"]:
        raise UsageError(f"testbed option `prompts` is required: {loading.DATA_VALUES}, with a prompt column")
    if not s["eval_prompts"] and not s["reference_outputs"]:
        raise UsageError("the hf testbed needs evaluation prompts: set the testbed option `eval_prompts` "
                         "(a file, directory or dataset with a `prompt` column, and optionally `output`) or "
                         "`reference_outputs` (one with `prompt` and `output` columns)")
    for name in ("seed_prompts", "prompts", "eval_prompts", "reference_outputs"):  # a wrong path stops us early
        value = s.get(name)
        found = shipped.resolve(str(value)) if value else value
        if value and not Path(found).expanduser().exists() and loading.hub.parse(str(value)) is None:
            raise UsageError(f"testbed option `{name}`: no such file or directory: {str(value)!r}; it must be "
                             f"{loading.DATA_VALUES}")
    device = loading.torch_device(str(s["device"]), "testbed option `device`")
    column, output_column = str(s["prompt_column"]), str(s["output_column"])

    def data(name: str, columns: list[str], optional: tuple[str, ...] = ()) -> loading.DataSource:
        option = "prompts_split" if name in ("prompts", "seed_prompts") else "eval_split"
        return loading.data_option(s, name, option, columns, optional=optional, allow_download=allow_download,
                                   download_hint=hint)

    # The tokenizer comes first: a conversational prompt's text is its chat-template rendering.
    tokenizer = loading.load_tokenizer(model_dir, "testbed option `model`", trust_remote_code=s["trust_remote_code"])
    use_template = bool(s["use_chat_template"]) and bool(getattr(tokenizer, "chat_template", None))
    prompts = PromptTexts(tokenizer, use_template)
    sources: dict[str, Any] = {}

    with reporter.stage("loading prompts", total=None):
        label = "testbed option `prompts`"
        found_data = data("prompts", [column])
        sources.update(found_data.provenance("prompts"))
        train_texts = prompts.canonical(loading.check_prompts(found_data.columns[column], column, found_data.source,
                                                              label), found_data.source, label)
        train_texts, duplicates = loading.unique_prompts(train_texts)
        reference_outputs: list[str] | None = None
        eval_duplicates = 0
        if s["eval_prompts"]:
            label = "testbed option `eval_prompts`"
            found_data = data("eval_prompts", [column], (output_column,))
            sources.update(found_data.provenance("eval_prompts"))
            found = found_data.columns
            eval_texts = prompts.canonical(loading.check_prompts(found[column], column, found_data.source, label),
                                           found_data.source, label)
            if output_column in found:
                outputs = loading.check_texts(found[output_column], output_column, found_data.source, label)
                first = dict(zip(reversed(eval_texts), reversed(outputs)))  # the first row of each prompt
                eval_texts, eval_duplicates = loading.unique_prompts(eval_texts)
                reference_outputs = [first[t] for t in eval_texts]
            else:
                eval_texts, eval_duplicates = loading.unique_prompts(eval_texts)
        if s["reference_outputs"]:
            label = "testbed option `reference_outputs`"
            found_data = data("reference_outputs", [column, output_column])
            sources.update(found_data.provenance("reference_outputs"))
            found = found_data.columns
            prompts_column = prompts.canonical(loading.check_prompts(found[column], column, found_data.source, label),
                                               found_data.source, label)
            outputs_column = loading.check_texts(found[output_column], output_column, found_data.source, label)
            by_prompt: dict[str, str] = {}
            for prompt_text, output_text in zip(prompts_column, outputs_column):
                if by_prompt.setdefault(prompt_text, output_text) != output_text:
                    raise UsageError(f"{label}: prompt {prompt_text[:80]!r} has two different reference outputs; "
                                     "keep one row per prompt")
            if not s["eval_prompts"]:
                eval_texts = list(by_prompt)
            missing = [t for t in eval_texts if t not in by_prompt]
            if missing:
                raise UsageError(f"testbed option `reference_outputs`: {len(missing)} evaluation prompts have no "
                                 f"reference output, e.g. {missing[0][:80]!r}")
            reference_outputs = [by_prompt[t] for t in eval_texts]
        limit = int(s["eval_limit"])
        if limit > 0:
            eval_texts = eval_texts[:limit]
            reference_outputs = None if reference_outputs is None else reference_outputs[:limit]

    use_lora = int(s.get("lora_rank") or 0) > 0
    initial_adapter = initial_dir is not None and (initial_dir / "adapter_config.json").is_file() and not (
        initial_dir / "config.json").is_file()
    if initial_adapter and not use_lora:
        raise UsageError(f"testbed option `initial_model`: {str(initial_dir)!r} is a PEFT adapter; set lora_rank "
                         "(and the adapter's alpha and target modules) to load it on `model` as pi_0")
    if use_lora and initial_dir is not None and not initial_adapter:
        raise UsageError(f"testbed option `initial_model`: with LoRA (lora_rank > 0) pi_0 is an adapter on `model`, "
                         f"but {str(initial_dir)!r} is a full model; give a PEFT adapter directory, or unset "
                         "lora_rank to fine-tune every weight")
    with reporter.stage(f"loading {model_dir}", total=None):
        reference_model = loading.load_model(model_dir, "testbed option `model`", auto_class="AutoModelForCausalLM",
                                             dtype=str(s["dtype"]), device=device,
                                             trust_remote_code=s["trust_remote_code"])
        initial_model = None
        if initial_dir is not None and not initial_adapter:
            initial_model = loading.load_model(initial_dir, "testbed option `initial_model`",
                                               auto_class="AutoModelForCausalLM", dtype=str(s["dtype"]), device=device,
                                               trust_remote_code=s["trust_remote_code"])
            if type(initial_model) is not type(reference_model) or (
                initial_model.config.vocab_size != reference_model.config.vocab_size
            ):
                raise UsageError(f"testbed option `initial_model`: {str(initial_dir)!r} is a "
                                 f"{type(initial_model).__name__} with vocabulary {initial_model.config.vocab_size}, "
                                 f"but `model` is a {type(reference_model).__name__} with vocabulary "
                                 f"{reference_model.config.vocab_size}; pi_0 must be a fine-tune of pi_ref")
            if (initial_dir / "tokenizer_config.json").exists() or (initial_dir / "tokenizer.json").exists():
                other = loading.load_tokenizer(initial_dir, "testbed option `initial_model`",
                                               trust_remote_code=s["trust_remote_code"])
                if other.get_vocab() != tokenizer.get_vocab():
                    raise UsageError(f"testbed option `initial_model`: the tokenizer in {str(initial_dir)!r} differs "
                                     "from the one of `model`; pi_0 and pi_ref must share a tokenizer")

    max_prompt = int(s["max_prompt_length"])
    kept_texts, kept_ids = [], []
    dropped = 0
    for text in train_texts:
        ids = prompts.encode(text)
        if 0 < len(ids) <= max_prompt:
            kept_texts.append(text)
            kept_ids.append(tuple(ids))
        else:
            dropped += 1
    if not kept_ids:
        raise UsageError(f"testbed option `prompts`: none of the {len(train_texts)} prompts fits in "
                         f"max_prompt_length={max_prompt} tokens")
    seed_texts: list[str] = []
    seed_ids: list[tuple[int, ...]] = []
    seed_source = ""
    if on_policy and not s.get("seed_prompts"):  # a share of the prompts file, held out of the pool
        from plugins.testbeds.hf.seed import seed_prompt_rows

        held = set(seed_prompt_rows(len(kept_ids), float(s["seed_prompt_share"]), seed).tolist())
        seed_texts = [t for i, t in enumerate(kept_texts) if i in held]
        seed_ids = [x for i, x in enumerate(kept_ids) if i in held]
        kept_texts = [t for i, t in enumerate(kept_texts) if i not in held]
        kept_ids = [x for i, x in enumerate(kept_ids) if i not in held]
        seed_source = f"share {float(s['seed_prompt_share']):g} of the prompts file, drawn with world seed {seed}"
    elif s.get("seed_prompts"):
        label = "testbed option `seed_prompts`"
        found_data = data("seed_prompts", [column])  # recorded on pi_0's row as seed_prompts_source (below)
        texts = prompts.canonical(loading.check_prompts(found_data.columns[column], column, found_data.source, label),
                                  found_data.source, label)
        texts, _ = loading.unique_prompts(texts)
        evaluation = set(eval_texts)
        for text in texts:
            if text in evaluation:
                raise UsageError(f"{label}: {text[:80]!r} is also an evaluation prompt; seed prompts must never "
                                 "be evaluation prompts")
            ids = prompts.encode(text)
            if 0 < len(ids) <= max_prompt:
                seed_texts.append(text)
                seed_ids.append(tuple(ids))
        if not seed_ids:
            raise UsageError(f"{label}: none of the {len(texts)} prompts in {found_data.source!r} fits in "
                             f"max_prompt_length={max_prompt} tokens")
        seed_source = describe_source(found_data)
    eval_ids = []
    for text in eval_texts:
        ids = prompts.encode(text)
        if not 0 < len(ids) <= max_prompt:
            raise UsageError(f"an evaluation prompt has {len(ids)} tokens, outside 1..max_prompt_length="
                             f"{max_prompt}: {text[:80]!r}")
        eval_ids.append(tuple(ids))
    if not eval_ids:
        raise UsageError("the evaluation prompt file is empty")
    limit_positions = _position_limit(reference_model.config)
    longest = max(len(x) for x in kept_ids + eval_ids + seed_ids)
    if limit_positions is not None and longest + int(s["max_new_tokens"]) > limit_positions:
        raise UsageError(f"the longest prompt ({longest} tokens) plus max_new_tokens={s['max_new_tokens']} exceeds "
                         f"the model's {limit_positions} positions; lower max_prompt_length or max_new_tokens")

    table = PromptTable(texts=tuple(kept_texts + eval_texts), ids=tuple(kept_ids + eval_ids), n_train=len(kept_ids))
    pad_id = int(tokenizer.pad_token_id)
    lora_info: dict[str, Any] = {}
    if use_lora:
        config = lora.lora_config(rank=s["lora_rank"], alpha=s["lora_alpha"], dropout=s["lora_dropout"],
                                  target_modules=s["lora_target_modules"])
        reference_model = lora.wrap(reference_model, config, seed=seed)
        lora_info = {"lora_adapter_parameters": int(sum(
            p.numel() for p in lora.trainable_parameters(reference_model, lora.PLACEHOLDER)))}
    reference = HFPolicy(reference_model, tokenizer, table, pad_id, source_dir=model_dir)
    seed_info: dict[str, Any] = {}
    sampler = None
    if engine_api is not None:
        from plugins.testbeds.hf.vllm_backend import VLLMSampler

        sampler = VLLMSampler(api=engine_api, settings=s, tokenizer_dir=model_dir,
                              eos_ids=loading.eos_token_ids(reference_model, tokenizer),
                              max_model_len=longest + int(s["max_new_tokens"]), seed=seed)
    elif s.get("backend") == "vllm_server":
        from plugins.testbeds.hf.vllm_server import VLLMServerSampler

        sampler = VLLMServerSampler(settings=s, eos_ids=loading.eos_token_ids(reference_model, tokenizer),
                                    max_model_len=longest + int(s["max_new_tokens"]))
        sampler.check_adapters(reference.clone())  # a server that cannot take adapters stops the run here
        lora.prune(reference_model)
    if on_policy:
        from plugins.testbeds.hf.seed import bootstrap_initial_policy

        seed_table = PromptTable(texts=tuple(seed_texts), ids=tuple(seed_ids), n_train=len(seed_ids))
        seeded, seed_info = bootstrap_initial_policy(
            settings=s, reference=reference, seed_table=seed_table, annotator=annotator, world_seed=seed,
            source=seed_source, reporter=reporter, sampler=sampler, trainers=trainers)
        initial = seeded.with_table(table)
    elif seed_file is not None:
        from plugins.testbeds.hf.seed import train_initial_policy

        with reporter.stage("pi_0: offline DPO on the seed pairs", total=None):
            seeded, seed_info = train_initial_policy(
                settings=s, path=seed_file, reference=reference,
                encode_prompt=prompts.encode,
                position_limit=limit_positions, world_seed=seed, trainers=trainers)
        initial = seeded.with_table(table)
    elif initial_adapter:
        initial = reference.clone()
        try:
            lora.read_adapter(reference_model, initial.adapter, initial_dir)
        except ValueError as exc:
            raise UsageError(f"testbed option `initial_model`: the adapter in {str(initial_dir)!r} does not fit "
                             f"`model` with this run's LoRA options ({exc}); set lora_rank, lora_alpha and "
                             "lora_target_modules as the adapter was trained") from None
    else:
        initial = (reference if initial_model is None
                   else HFPolicy(initial_model, tokenizer, table, pad_id, source_dir=initial_dir))
    info = {
        "train_prompts": len(kept_ids),
        "prompts_dropped": dropped,
        "duplicate_prompts_dropped": duplicates,
        "duplicate_eval_prompts_dropped": eval_duplicates,
        "eval_prompts": len(eval_ids),
        "chat_template": use_template,
        "conversational_prompts": sum(1 for t in kept_texts + eval_texts + seed_texts if t in prompts.messages),
        **sources,
        "parameters": int(sum(p.numel() for name, p in lora.unwrap(reference_model).named_parameters()
                              if ".lora_" not in name)),
        **lora_info,
        "initial_is_reference": initial is reference,
        "backend": str(s.get("backend", "transformers")),
        **model_source.provenance("model"),
        **(initial_source.provenance("initial_model") if initial_source is not None else {}),
        **seed_info,
    }
    used = set(kept_texts) | set(eval_texts) | set(seed_texts)
    return HFWorld(settings=settings, seed=seed, tokenizer=tokenizer, table=table, reference_policy=reference,
                   initial_policy=initial, reference_outputs=reference_outputs, info=info, sampler=sampler,
                   conversations={t: m for t, m in prompts.messages.items() if t in used}, gold=gold)


def _draw(logits: torch.Tensor, temperature: float, top_k: int, top_p: float,
          generator: torch.Generator) -> torch.Tensor:
    """One token per row from ``logits`` ``(B, V)`` after temperature, top-k (0: off) and top-p (1: off)."""
    logits = logits / max(temperature, 1e-6)
    if 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        ordered, order = torch.sort(logits, descending=True, dim=-1)
        probs = torch.softmax(ordered, dim=-1)
        beyond = probs.cumsum(dim=-1) - probs > top_p  # drop tokens once the mass before them exceeds top_p
        ordered = ordered.masked_fill(beyond, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, ordered)
    return torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator)[:, 0]


def _until_eos(block: torch.Tensor, eos: torch.Tensor) -> list[list[int]]:
    """Each row of ``block`` ``(k, width)`` as a token list cut after its first EOS (whole when it has none)."""
    is_eos = torch.isin(block, eos)
    ends = torch.where(is_eos.any(dim=1), is_eos.int().argmax(dim=1) + 1, block.shape[1])
    return [block[j, : int(ends[j])].tolist() for j in range(block.shape[0])]

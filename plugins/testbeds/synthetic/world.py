"""The synthetic world: tables, SFT model, pi_0, annotator and evaluation.

A world is a pure function of (testbed options, world seed). Every part draws
from its own ``numpy.random.SeedSequence`` stream keyed by the world seed and
the part's name (``tables``, ``sft-data``, ``policy-init``, ``sft-train``,
``seed-set``, ``seed-annotate``, ``pi0-train``, ``eval-prompts``,
``reference``), so changing, say, ``sft_samples`` leaves the tables alone.
The per-call Generators passed to :meth:`SyntheticWorld.sample` and friends
drive everything after the build; torch randomness always comes from a
``torch.Generator`` seeded from them, never from a global RNG.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.errors import CheckpointError
from harness.interfaces import Labels, Pairs, PreferenceData, Responses
from harness.progress import NullReporter
from harness.rng import stage_key, torch_seed
from plugins.testbeds.synthetic import cache as world_cache
from plugins.testbeds.synthetic.policy import GRUNet, GRUPolicy, PolicyConfig, sample_interpolated
from plugins.testbeds.synthetic.process import Tables, Vocab, gold_rewards, make_tables, sample_process
from plugins.testbeds.synthetic.sft import train_sft

LOGPROB_BATCH = 4096

STOCHASTIC_DROPOUT = 0.05
"""Rate of the dropout surrogate of :meth:`SyntheticWorld.stochastic_logprobs` (Mehta et al.'s ``llm_dropout``)."""


def world_stream(seed: int, part: str) -> np.random.Generator:
    """The Generator of one part of the world built from ``seed``."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), stage_key("synthetic/" + part)]))


def _torch_generator(rng: np.random.Generator) -> torch.Generator:
    return torch.Generator().manual_seed(torch_seed(rng))


def _as_long(array: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(array, dtype=np.int64))


def _check_rows(prompts: np.ndarray, responses: Responses) -> None:
    if np.shape(prompts)[0] != responses.tokens.shape[0]:
        raise ValueError(
            f"{np.shape(prompts)[0]} prompts but responses for {responses.tokens.shape[0]} prompts"
        )


class SyntheticWorld:
    """One synthetic world; implements :class:`harness.interfaces.World`.

    Public attributes: ``reference_policy`` (pi_ref, the SFT model),
    ``initial_policy`` (pi_0), ``vocab`` (token ids: content ``0..V-1``, then
    ``eos_id = V``, ``bos_id = V + 1``, ``sep_id = V + 2``, ``pad_id = V + 3``),
    ``prompt_length``, ``max_response_length``, ``eval_prompts`` ``(E, P)``,
    ``reference_tokens`` ``(E, L)`` / ``reference_lengths`` / ``reference_gold``
    (the fixed best-of-k SFT outputs), ``tables``, ``settings``, ``seed`` and
    ``info`` (build diagnostics; ``from_cache`` says whether it was loaded).
    """

    def __init__(
        self,
        *,
        settings: Mapping[str, Any],
        seed: int,
        tables: Tables,
        reference_policy: GRUPolicy,
        initial_policy: GRUPolicy,
        eval_prompts: np.ndarray,
        reference_tokens: np.ndarray,
        reference_lengths: np.ndarray,
        info: dict[str, Any],
    ):
        self.settings = dict(settings)
        self.seed = int(seed)
        self.vocab = Vocab(int(settings["vocab_size"]))
        self.eos_id, self.bos_id, self.sep_id, self.pad_id = (
            self.vocab.eos,
            self.vocab.bos,
            self.vocab.sep,
            self.vocab.pad,
        )
        self.prompt_length = int(settings["prompt_length"])
        self.max_response_length = int(settings["max_response_length"])
        self.tau = float(settings["tau"])
        self.tables = tables
        self.reference_policy = reference_policy
        self.initial_policy = initial_policy
        self.eval_prompts = eval_prompts
        self.reference_tokens = reference_tokens
        self.reference_lengths = reference_lengths
        self.reference_gold = self._gold(tables, eval_prompts, reference_tokens, reference_lengths)
        self.info = info

    def __repr__(self) -> str:
        return f"<SyntheticWorld seed={self.seed} from_cache={self.info.get('from_cache')}>"

    # ------------------------------------------------------------------ prompts

    def draw_prompts(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` prompts of ``prompt_length`` content tokens drawn uniformly, ``(n, P)`` int64."""
        return rng.integers(0, self.vocab.size, size=(int(n), self.prompt_length), dtype=np.int64)

    # ------------------------------------------------------------------ models

    def _check_policy(self, policy) -> GRUPolicy:
        if not isinstance(policy, GRUPolicy):
            raise TypeError(f"the synthetic world can only run its own GRUPolicy, got {type(policy).__name__}")
        return policy

    def sample(
        self, policy, prompts: np.ndarray, n_responses: int, rng: np.random.Generator, *, greedy: bool = False
    ) -> Responses:
        """``n_responses`` temperature-1 samples per prompt (all sequences stepped together)."""
        policy = self._check_policy(policy)
        prompts = np.asarray(prompts, dtype=np.int64)
        m, n = prompts.shape[0], int(n_responses)
        generator = _torch_generator(rng)
        tokens, lengths = policy.sample(_as_long(prompts), generator, n=n, greedy=greedy)
        width = self.max_response_length + 1
        return Responses(
            tokens=tokens.numpy().reshape(m, n, width).astype(np.int64, copy=False),
            lengths=lengths.numpy().reshape(m, n).astype(np.int64, copy=False),
        )

    def steered_sample(self, policy, reference, prompts: np.ndarray, sources: np.ndarray, beta: float,
                       rng: np.random.Generator) -> Responses:
        """Each response ``[m, n]`` drawn from ``sources[m, n]`` (selector contract 3), temperature 1.

        pi_{i-1} and pi_ref sample as :meth:`sample` does; pi+ and pi- run the
        two GRUs in lockstep on interpolated logits
        (:func:`~plugins.testbeds.synthetic.policy.sample_interpolated`). The
        sources are drawn in the order of ``SAMPLING_SOURCES``, each from its
        own torch Generator seeded from ``rng`` (one seed per source, drawn
        whether or not it is used, so one source's rows never shift another's).
        """
        from harness.interfaces import SAMPLING_SOURCES

        policy, reference = self._check_policy(policy), self._check_policy(reference)
        prompts = np.asarray(prompts, dtype=np.int64)
        sources = np.asarray(sources, dtype=np.int8)
        m, n = sources.shape
        width = self.max_response_length + 1
        tokens = np.full((m, n, width), policy.config.vocab.pad, dtype=np.int64)
        lengths = np.zeros((m, n), dtype=np.int64)
        weights = {"plus": float(beta), "minus": -float(beta)}
        for code, name in enumerate(SAMPLING_SOURCES):
            generator = _torch_generator(rng)
            rows, columns = np.nonzero(sources == code)
            if rows.size == 0:
                continue
            chosen = _as_long(prompts[rows])
            if name in weights:
                drawn, drawn_lengths = sample_interpolated(policy, reference, weights[name], chosen, generator)
            else:
                drawn, drawn_lengths = (policy if name == "policy" else reference).sample(chosen, generator, n=1)
            tokens[rows, columns] = drawn.numpy()
            lengths[rows, columns] = drawn_lengths.numpy()
        return Responses(tokens=tokens, lengths=lengths, sources=sources)

    def save_policy(self, policy, path: Path) -> None:
        """Write ``policy``'s weights to ``path`` as safetensors (for checkpoints)."""
        from safetensors.torch import save_file

        save_file(self._check_policy(policy).state_dict(), str(path), metadata={"format": "gru-policy-1"})

    def load_policy(self, path: Path) -> GRUPolicy:
        """The policy saved at ``path``; CheckpointError naming the file if it is unusable."""
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
            policy = GRUPolicy.from_state_dict(self.reference_policy.config, state)
        except Exception as exc:  # truncated, corrupt or from another world shape
            raise CheckpointError(f"policy checkpoint {path} is unusable: {type(exc).__name__}: {exc}") from None
        if not all(bool(torch.isfinite(p).all()) for p in policy.parameters()):
            raise CheckpointError(f"policy checkpoint {path} holds non-finite weights")
        return policy

    def logprobs(self, policy, prompts: np.ndarray, responses: Responses) -> np.ndarray:
        """``(M, N)`` float64 summed response log-probs (EOS included) under ``policy``, no grad.

        The prompt prefix runs once per prompt; the responses are then scored in
        batches of similar length (sorted by length, so little padding is run).
        """
        policy = self._check_policy(policy)
        return self._each_response(policy, prompts, responses, 1, policy.response_logprobs)[..., 0]

    def _each_response(self, policy: GRUPolicy, prompts: np.ndarray, responses: Responses, width: int,
                       compute) -> np.ndarray:
        """``(M, N, width)`` float64 of ``compute(state, hidden, tokens, lengths)``, ``(B[, width])`` per batch.

        The prompt prefix runs once per prompt (:meth:`GRUPolicy.prefix_states`, whose output and hidden state
        ``compute`` continues from); the responses run in batches of similar length (sorted by length, so
        little padding is run); no grad.
        """
        m, n, length = responses.tokens.shape
        _check_rows(prompts, responses)
        total = m * n
        out = np.empty((total, width), dtype=np.float64)
        if total == 0:
            return out.reshape(m, n, width)
        prompts = np.asarray(prompts, dtype=np.int64)
        lengths = responses.lengths.reshape(total)
        order = np.argsort(lengths, kind="stable")
        tokens_t = _as_long(responses.tokens.reshape(total, length))
        lengths_t = _as_long(lengths)
        order_t = _as_long(order)
        with torch.no_grad():
            states, hidden = [], []
            for start in range(0, m, LOGPROB_BATCH):
                s, h = policy.prefix_states(_as_long(prompts[start : start + LOGPROB_BATCH]))
                states.append(s)
                hidden.append(h)
            state_all, hidden_all = torch.cat(states), torch.cat(hidden, dim=1)
            for start in range(0, total, LOGPROB_BATCH):
                rows = order_t[start : start + LOGPROB_BATCH]
                prompt_rows = torch.div(rows, n, rounding_mode="floor")
                values = compute(state_all[prompt_rows], hidden_all[:, prompt_rows], tokens_t[rows], lengths_t[rows])
                out[order[start : start + LOGPROB_BATCH]] = values.double().reshape(len(rows), width).numpy()
        return out.reshape(m, n, width)

    def stochastic_logprobs(
        self, policy, prompts: np.ndarray, responses: Responses, passes: int, rng: np.random.Generator
    ) -> np.ndarray:
        """``(passes, M, N)`` float64 summed response log-probs from stochastic passes (scorer contract 2).

        The GRU has no dropout, so MC dropout proper is not available. The
        declared surrogate is Mehta et al.'s own MC-dropout placement: inverted
        dropout at rate :data:`STOCHASTIC_DROPOUT` on the GRU output (the
        final hidden state) right before the output head, a fresh mask for
        every pass and position, drawn from ``rng``; the recurrence itself is
        untouched. Each pass is otherwise :meth:`logprobs`. The GRU was trained
        without dropout, so this is a perturbation of a fixed network, not a
        posterior sample. Nothing else changes: no global RNG is read and the
        head is restored, so :meth:`logprobs` gives the same numbers after.
        """
        policy = self._check_policy(policy)
        passes = int(passes)
        m, n, _ = responses.tokens.shape
        out = np.empty((passes, m, n), dtype=np.float64)
        generator = _torch_generator(rng)
        keep = 1.0 - STOCHASTIC_DROPOUT

        def dropout(module, inputs):
            (hidden,) = inputs
            mask = torch.rand(hidden.shape, generator=generator, dtype=hidden.dtype) < keep
            return (hidden * mask / keep,)

        handle = policy.net.head.register_forward_pre_hook(dropout)
        try:
            for k in range(passes):
                out[k] = self.logprobs(policy, prompts, responses)
        finally:
            handle.remove()
        return out

    def features(self, policy, prompts: np.ndarray, responses: Responses) -> np.ndarray:
        """``(M, N, H)`` float64: the GRU's output after each response's last token (selector contract 2).

        The state ``policy`` reads ``BOS x SEP y_1 .. y_L`` into, EOS
        included, H the GRU's width (``hidden_dim``). Responses are run in
        batches of similar length, as in :meth:`logprobs`; no grad, no RNG.
        """
        policy = self._check_policy(policy)
        return self._each_response(policy, prompts, responses, policy.config.hidden_dim,
                                   lambda state, hidden, tokens, lengths: policy.response_features(hidden, tokens,
                                                                                                   lengths))

    # ------------------------------------------------------------------ gold

    def _gold(self, tables: Tables, prompts: np.ndarray, tokens: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """The gold reward form of this world, ``(B,)`` (a subclass adds terms: :mod:`.staircase`)."""
        return gold_rewards(tables, prompts, tokens, lengths)

    def gold_rewards(self, prompts: np.ndarray, responses: Responses, tables: Tables | None = None) -> np.ndarray:
        """``(M, N)`` float64 exact gold reward of every response.

        ``tables`` computes the same reward form with other tables (the proxy
        judge's misspecified reward model); default: this world's gold tables.
        """
        m, n, width = responses.tokens.shape
        _check_rows(prompts, responses)
        prompts = np.asarray(prompts, dtype=np.int64)
        flat = self._gold(
            self.tables if tables is None else tables,
            np.repeat(prompts, n, axis=0),
            responses.tokens.reshape(m * n, width),
            responses.lengths.reshape(m * n),
        )
        return flat.reshape(m, n)

    def annotate(
        self, prompts: np.ndarray, responses: Responses, pairs: Pairs, rng: np.random.Generator
    ) -> Labels:
        """Bradley-Terry on gold: P(a > b) = sigmoid((r_a - r_b) / tau).

        ``tau`` = 0 is the noiseless annotator (exact gold, ties broken by a fair
        coin from ``rng``). ``gold_agrees`` is True where the label matches the
        exact gold ordering (always True for an exact gold tie). Draws exactly
        one uniform per pair from ``rng``.
        """
        k = len(pairs)
        prompts = np.asarray(prompts, dtype=np.int64)
        uniform = rng.random(k)
        if k == 0:
            return Labels(prefer_a=np.zeros(0, dtype=bool), gold_agrees=np.zeros(0, dtype=bool))
        pair_prompts = prompts[pairs.prompt]
        gold_a = self._gold(
            self.tables, pair_prompts, responses.tokens[pairs.prompt, pairs.a], responses.lengths[pairs.prompt, pairs.a]
        )
        gold_b = self._gold(
            self.tables, pair_prompts, responses.tokens[pairs.prompt, pairs.b], responses.lengths[pairs.prompt, pairs.b]
        )
        diff = gold_a - gold_b
        if self.tau > 0:
            # sigmoid(x) = (1 + tanh(x / 2)) / 2, stable for any x
            p_a = 0.5 * (1.0 + np.tanh(diff / (2.0 * self.tau)))
            prefer_a = uniform < p_a
        else:
            prefer_a = np.where(diff == 0, uniform < 0.5, diff > 0)
        gold_agrees = np.where(diff == 0, True, prefer_a == (diff > 0))
        return Labels(prefer_a=np.asarray(prefer_a, dtype=bool), gold_agrees=np.asarray(gold_agrees, dtype=bool))

    # ------------------------------------------------------------------ text

    def texts(self, prompts: np.ndarray, responses: Responses) -> tuple[list[str], list[list[str]]]:
        """Prompts and responses as words ``w<id>``; a response's text stops before its EOS.

        The synthetic language has no meaning, but an external annotator (or a
        script reading the gold reward) needs stable text to label, and the
        labels table and exported preference datasets need strings.
        """
        prompts = np.asarray(prompts, dtype=np.int64)
        _check_rows(prompts, responses)
        words = [f"w{token}" for token in range(self.vocab.size)] + ["<eos>", "<bos>", "<sep>", "<pad>"]
        prompt_texts = [" ".join(words[t] for t in row) for row in prompts.tolist()]
        tokens, lengths = responses.tokens.tolist(), responses.lengths.tolist()
        response_texts = [
            [" ".join(words[t] for t in row[: max(length - 1, 0)]) for row, length in zip(rows, row_lengths)]
            for rows, row_lengths in zip(tokens, lengths)
        ]
        return prompt_texts, response_texts

    def evaluation_pairs(self, policy, rng: np.random.Generator) -> tuple[np.ndarray, Responses]:
        """The held-out prompts with the policy's greedy response and the fixed reference response."""
        policy = self._check_policy(policy)
        greedy = self.sample(policy, self.eval_prompts, 1, rng, greedy=True)
        width = max(greedy.tokens.shape[2], self.reference_tokens.shape[1])

        def padded(tokens: np.ndarray) -> np.ndarray:
            out = np.full((tokens.shape[0], width), self.pad_id, dtype=np.int64)
            out[:, : tokens.shape[1]] = tokens
            return out

        tokens = np.stack([padded(greedy.tokens[:, 0]), padded(self.reference_tokens)], axis=1)
        lengths = np.stack([greedy.lengths[:, 0], self.reference_lengths], axis=1).astype(np.int64)
        return self.eval_prompts, Responses(tokens=tokens, lengths=lengths)

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, policy, rng: np.random.Generator) -> dict[str, float]:
        """Metrics of ``policy`` on the held-out prompts.

        * ``win_rate``: share of the policy's ``eval_samples`` samples per prompt
          whose gold reward beats the fixed best-of-k SFT reference output
          (ties 1/2); ``win_rate_se``: its standard error over prompts (the
          samples of one prompt are averaged first, since they share a reference).
        * ``gold_reward``: mean gold reward of those samples; ``reference_gold_reward``
          the reference outputs' mean.
        * ``kl``: Monte-Carlo KL(pi || pi_ref), the mean of log pi - log pi_ref over
          the samples; ``kl_se`` its standard error over prompts.
        * ``mean_length``: mean number of content tokens of the samples.
        * ``greedy_win_rate``: win rate of one greedy response per prompt.
        """
        policy = self._check_policy(policy)
        prompts = self.eval_prompts
        k = int(self.settings["eval_samples"])
        responses = self.sample(policy, prompts, k, rng)
        gold = self.gold_rewards(prompts, responses)
        reference = self.reference_gold[:, None]
        wins = (gold > reference) + 0.5 * (gold == reference)
        per_prompt = wins.mean(axis=1)
        log_ratio = self.logprobs(policy, prompts, responses) - self.logprobs(self.reference_policy, prompts, responses)
        per_prompt_kl = log_ratio.mean(axis=1)
        greedy = self.sample(policy, prompts, 1, rng, greedy=True)  # consumes no randomness but a seed
        greedy_gold = self.gold_rewards(prompts, greedy)[:, 0]
        greedy_wins = (greedy_gold > self.reference_gold) + 0.5 * (greedy_gold == self.reference_gold)

        def se(values: np.ndarray) -> float:
            return float(values.std(ddof=1) / math.sqrt(values.shape[0])) if values.shape[0] > 1 else 0.0

        return {
            "win_rate": float(wins.mean()),
            "win_rate_se": se(per_prompt),
            "gold_reward": float(gold.mean()),
            "kl": float(log_ratio.mean()),
            "kl_se": se(per_prompt_kl),
            "mean_length": float((responses.lengths - 1).mean()),
            "greedy_win_rate": float(greedy_wins.mean()),
            "reference_gold_reward": float(self.reference_gold.mean()),
        }


# ---------------------------------------------------------------------- building


def policy_config(settings: Mapping[str, Any]) -> PolicyConfig:
    return PolicyConfig(
        vocab_size=int(settings["vocab_size"]),
        prompt_length=int(settings["prompt_length"]),
        max_len=int(settings["max_response_length"]),
        eos_base=float(settings["eos_logit_base"]),
        eos_slope=float(settings["eos_logit_slope"]),
        embedding_dim=int(settings["embedding_dim"]),
        hidden_dim=int(settings["hidden_dim"]),
    )


def world_class(settings: Mapping[str, Any]) -> type[SyntheticWorld]:
    """The class of the ``world`` option's world: today's bigram world, or :mod:`.staircase`'s."""
    if settings.get("world", "bigram") == "bigram":
        return SyntheticWorld
    from plugins.testbeds.synthetic.staircase import StaircaseWorld

    return StaircaseWorld


def _tables(settings: Mapping[str, Any], seed: int) -> Tables:
    return make_tables(
        world_stream(seed, "tables"),
        vocab_size=int(settings["vocab_size"]),
        transition_scale=float(settings["transition_scale"]),
        prompt_bias_scale=float(settings["prompt_bias_scale"]),
        gold_alignment=float(settings["gold_alignment"]),
        gold_prompt_scale=float(settings["gold_prompt_scale"]),
        gold_token_scale=float(settings["gold_token_scale"]),
    )


def _expected_tensors(settings: Mapping[str, Any]) -> dict[str, tuple[tuple[int, ...], Any]]:
    """Name -> (shape, dtype) of everything the cache file must hold."""
    config = policy_config(settings)
    expected = {}
    for prefix in ("pi_ref.", "pi_0."):
        for key, value in GRUNet(config, device="meta").state_dict().items():
            expected[prefix + key] = (tuple(value.shape), value.dtype)
    e = int(settings["eval_prompts"])
    expected["eval_prompts"] = ((e, config.prompt_length), torch.int64)
    expected["reference_tokens"] = ((e, config.max_len + 1), torch.int64)
    expected["reference_lengths"] = ((e,), torch.int64)
    return expected


def _split_state(tensors: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def build_world(
    settings: Mapping[str, Any], *, seed: int, reporter=None, name: str = "synthetic", trainers=None
) -> SyntheticWorld:
    """Build (or load from the cache) the world of ``settings`` and ``seed``.

    ``trainers`` (a :data:`harness.interfaces.TrainerFactory`) gives the
    ``native`` trainer that trains pi_0; without it, the default registry's.
    """
    reporter = reporter or NullReporter()
    seed = int(seed)
    tables = _tables(settings, seed)
    config = policy_config(settings)
    path = world_cache.cache_path(name, settings, seed) if world_cache.cache_enabled() else None
    if path is not None:
        loaded = world_cache.load(path, _expected_tensors(settings))
        if loaded is not None:
            tensors, metadata = loaded
            with reporter.stage(f"loading cached world (world seed {seed})", total=1) as advance:
                try:
                    info: dict[str, Any] = dict(json.loads(metadata.get("info", "{}")))
                except (ValueError, TypeError):  # diagnostics only; the tensors were checked
                    info = {}
                info.update(from_cache=True, cache_path=str(path))
                world = world_class(settings)(
                    settings=settings,
                    seed=seed,
                    tables=tables,
                    reference_policy=GRUPolicy.from_state_dict(config, _split_state(tensors, "pi_ref.")),
                    initial_policy=GRUPolicy.from_state_dict(config, _split_state(tensors, "pi_0.")),
                    eval_prompts=tensors["eval_prompts"].numpy().copy(),
                    reference_tokens=tensors["reference_tokens"].numpy().copy(),
                    reference_lengths=tensors["reference_lengths"].numpy().copy(),
                    info=info,
                )
                advance(1)
            return world

    world = _build_fresh(settings, seed, tables, config, reporter, trainers)
    world.info["from_cache"] = False
    if path is not None:
        tensors = {"pi_ref." + k: v for k, v in world.reference_policy.state_dict().items()}
        tensors.update({"pi_0." + k: v for k, v in world.initial_policy.state_dict().items()})
        tensors["eval_prompts"] = _as_long(world.eval_prompts)
        tensors["reference_tokens"] = _as_long(world.reference_tokens)
        tensors["reference_lengths"] = _as_long(world.reference_lengths)
        metadata = {"format": world_cache.FORMAT_VERSION, "testbed": name, "seed": str(seed)}
        numeric = {k: v for k, v in world.info.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        metadata["info"] = json.dumps(numeric, sort_keys=True)
        world_cache.save(path, tensors, metadata)
        world.info["cache_path"] = str(path)
    return world


def _build_fresh(
    settings: Mapping[str, Any], seed: int, tables: Tables, config: PolicyConfig, reporter, trainers=None
) -> SyntheticWorld:
    if trainers is None:
        from harness.plugins import default_trainers

        trainers = default_trainers()

    v, p, max_len = config.vocab_size, config.prompt_length, config.max_len
    info: dict[str, Any] = {}

    # SFT data from the bigram process, then maximum likelihood.
    rng = world_stream(seed, "sft-data")
    n_sft = int(settings["sft_samples"])
    sft_prompts = rng.integers(0, v, size=(n_sft, p), dtype=np.int64)
    sft_tokens, sft_lengths = sample_process(
        tables,
        sft_prompts,
        rng,
        max_len=max_len,
        eos_base=config.eos_base,
        eos_slope=config.eos_slope,
    )
    reference = GRUPolicy.initialise(config, _torch_generator(world_stream(seed, "policy-init")))
    batch = int(settings["sft_batch"])
    epochs = int(settings["sft_epochs"])
    total = epochs * math.ceil(n_sft / batch) if n_sft else 0
    with reporter.stage(f"SFT (world seed {seed})", total=total) as advance:
        first, last = train_sft(
            reference,
            sft_prompts,
            sft_tokens,
            sft_lengths,
            epochs=epochs,
            lr=float(settings["sft_lr"]),
            batch_size=batch,
            generator=_torch_generator(world_stream(seed, "sft-train")),
            advance=advance,
        )
    info.update(sft_loss_first_epoch=first, sft_loss_last_epoch=last)

    # Eval prompts and the fixed best-of-k reference outputs (samples of pi_ref, judged by gold).
    n_eval = int(settings["eval_prompts"])
    best_of = int(settings["reference_best_of"])
    eval_prompts = world_stream(seed, "eval-prompts").integers(0, v, size=(n_eval, p), dtype=np.int64)
    partial = world_class(settings)(
        settings=settings,
        seed=seed,
        tables=tables,
        reference_policy=reference,
        initial_policy=reference,
        eval_prompts=eval_prompts,
        reference_tokens=np.zeros((n_eval, max_len + 1), dtype=np.int64),
        reference_lengths=np.full(n_eval, 2, dtype=np.int64),
        info=info,
    )
    with reporter.stage(f"reference outputs (world seed {seed})", total=1) as advance:
        candidates = partial.sample(reference, eval_prompts, best_of, world_stream(seed, "reference"))
        best = np.argmax(partial.gold_rewards(eval_prompts, candidates), axis=1)  # first of any tie
        rows = np.arange(n_eval)
        reference_tokens = candidates.tokens[rows, best].copy()
        reference_lengths = candidates.lengths[rows, best].copy()
        advance(1)

    # pi_0: one offline DPO round on seed prompts, two pi_ref samples each, labelled by the annotator.
    n_seed = int(settings["seed_prompts"])
    with reporter.stage(f"pi_0 offline DPO (world seed {seed})", total=1) as advance:
        rng = world_stream(seed, "seed-set")
        seed_prompts = partial.draw_prompts(n_seed, rng)
        seed_responses = partial.sample(reference, seed_prompts, 2, rng)
        distinct = seed_responses.distinct_mask()[:, 1]  # identical pairs carry no gradient
        keep = np.flatnonzero(distinct)
        pairs = Pairs(keep, np.zeros_like(keep), np.ones_like(keep))
        labels = partial.annotate(seed_prompts, seed_responses, pairs, world_stream(seed, "seed-annotate"))
        ref_logps = partial.logprobs(reference, seed_prompts, seed_responses)
        data = PreferenceData.from_labels(
            prompts=seed_prompts,
            responses=seed_responses,
            pairs=pairs,
            prefer_a=labels.prefer_a,
            ref_logps=ref_logps,
        )
        trainer = trainers(
            "native",
            {
                "beta": settings["pi0_beta"],
                "lr": settings["pi0_lr"],
                "epochs": settings["pi0_epochs"],
                "batch_size": settings["pi0_batch"],
                "steps": 0,
            }
        )
        result = trainer.train(policy=reference, data=data, rng=world_stream(seed, "pi0-train"))
        advance(1)
    info.update(
        pi0_pairs=len(data),
        pi0_steps=result.steps,
        pi0_loss_first=result.loss_first,
        pi0_loss_last=result.loss_last,
        pi0_label_noise=float(1.0 - labels.gold_agrees.mean()) if len(data) else 0.0,
    )

    return world_class(settings)(
        settings=settings,
        seed=seed,
        tables=tables,
        reference_policy=reference,
        initial_policy=result.policy,
        eval_prompts=eval_prompts,
        reference_tokens=reference_tokens,
        reference_lengths=reference_lengths,
        info=info,
    )

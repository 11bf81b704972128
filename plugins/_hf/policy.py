"""The hf testbed's policy: a transformers causal LM, its tokenizer and the world's prompt table.

:class:`HFPolicy` follows :class:`harness.interfaces.Policy`, so any trainer
written against that protocol (the ``native`` trainer) trains it, and the
``trl`` trainer reads ``model``, ``tokenizer`` and :meth:`HFPolicy.prompt_ids`.

Prompts are row indices into the world's :class:`PromptTable` (training
prompts first, then the evaluation prompts), passed as ``(B, 1)`` int64 arrays
or tensors; the table holds their text and the token ids the policy sees
(chat template applied when the tokenizer has one). All policies of a world
share one tokenizer and one table.

With LoRA (:mod:`plugins._hf.lora`) all policies of a world share one PEFT
model: :attr:`HFPolicy.adapter` names a policy's adapter (None: pi_ref, every
adapter off), reading :attr:`HFPolicy.model` switches the model to it, and
:meth:`HFPolicy.clone` copies the adapter, not the model.

Log-probs (:meth:`HFPolicy.sequence_logprobs`) are computed exactly as TRL's
DPOTrainer does: the sequence ``prompt ids + response ids`` (no padding
between them, right padding after), one forward, the sum of the log-softmax
of every response token (EOS included when the response has one); prompt and
padding positions contribute nothing. Log-softmax runs in float32 whatever
the model's dtype.

The LM head runs only where a token is scored (:func:`split_head`): the
backbone gives the hidden states, the response positions are picked out, and
the head plus log-softmax run over them in chunks of at most
:data:`LOGIT_CHUNK_BYTES` of float32 logits (each chunk recomputed in the
backward pass rather than kept, when grad is on). So the ``B x L x vocab``
logits of a full forward are never held: at SmolLM2's 49,152-token
vocabulary they are what fills memory. A model whose logits are not its head
applied to its backbone's last hidden state (with the known final scalings:
Gemma's ``final_logit_softcapping``, Cohere's ``logit_scale``, Granite's
``logits_scaling``) is detected on first use by comparing both on a few
tokens, and is scored with the full forward instead. ``full_logits=True``
forces the full forward (the comparison the tests and
``benchmarks/bench_hf_logprob_memory.py`` make).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from plugins._hf import lora


@dataclass(frozen=True)
class PromptTable:
    """The world's prompts: ``texts[i]`` as written in the file, ``ids[i]`` as the policy reads it.

    Rows ``0 .. n_train - 1`` are training prompts, rows ``n_train ..`` the evaluation prompts.
    """

    texts: tuple[str, ...]
    ids: tuple[tuple[int, ...], ...]
    n_train: int

    def __len__(self) -> int:
        return len(self.texts)


def _rows(prompts) -> list[int]:
    """Row indices from a ``(B, 1)`` or ``(B,)`` array or tensor."""
    if isinstance(prompts, torch.Tensor):
        prompts = prompts.detach().cpu().numpy()
    array = np.asarray(prompts, dtype=np.int64)
    if array.ndim == 2:
        if array.shape[1] != 1:
            raise ValueError(f"hf prompts are (B, 1) row indices, got shape {array.shape}")
        array = array[:, 0]
    return [int(r) for r in array.reshape(-1)]


def strip_patched_forward(model) -> None:
    """Drop an instance-level ``forward`` (TRL patches one in for its fused LM head) so the class's own runs."""
    if "forward" in vars(model):
        del model.forward


#: Most bytes of float32 logits one chunk of scored positions holds (positions per chunk = this / (4 x vocab)).
LOGIT_CHUNK_BYTES = 64 * 2**20


@dataclass(frozen=True)
class SplitHead:
    """A causal LM cut in two: ``backbone`` (input ids -> last hidden state) and ``logits`` (hidden -> logits)."""

    backbone: torch.nn.Module
    head: torch.nn.Module
    post: Callable[[torch.Tensor], torch.Tensor] | None
    vocab: int

    def logits(self, states: torch.Tensor) -> torch.Tensor:
        logits = self.head(states)
        return logits if self.post is None else self.post(logits)


def _final_scaling(model) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """What the model's forward does to ``lm_head``'s output (None: nothing): Cohere, Granite, Gemma softcapping."""
    config = model.config
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    scale = getattr(model, "logit_scale", None)  # Cohere: logits * logit_scale
    divide = getattr(text, "logits_scaling", None)  # Granite: logits / logits_scaling
    cap = getattr(text, "final_logit_softcapping", None)  # Gemma 2/3: tanh(logits / cap) * cap
    if isinstance(scale, torch.nn.Module) or (scale is not None and not isinstance(scale, (int, float))):
        return None  # a learnt or unusual scale: leave it to the full forward
    steps = []
    if scale is not None and float(scale) != 1.0:
        steps.append(lambda x, c=float(scale): x * c)
    if divide is not None and float(divide) != 1.0:
        steps.append(lambda x, c=float(divide): x / c)
    if cap is not None and float(cap) > 0:
        steps.append(lambda x, c=float(cap): torch.tanh(x / c) * c)
    if not steps:
        return None

    def post(logits: torch.Tensor) -> torch.Tensor:
        for step in steps:
            logits = step(logits)
        return logits

    return post


def split_head(model, probe_ids: torch.Tensor) -> SplitHead | None:
    """The model as backbone + LM head when that reproduces its own logits on ``probe_ids``, else None.

    ``probe_ids`` ``(1, T)`` are a few real tokens; both ways are run on them
    (eval mode, no grad) and must agree to 1e-5 (float32) or 1e-2 (half
    precision), so a model with some other final transform falls back to the
    full forward rather than scoring wrongly.
    """
    backbone = getattr(model, "base_model", None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if backbone is None or backbone is model or not isinstance(head, torch.nn.Module):
        return None
    weight = getattr(head, "weight", None)
    vocab = int(weight.shape[0]) if isinstance(weight, torch.Tensor) and weight.ndim == 2 else None
    vocab = vocab or int(getattr(model.config, "vocab_size", 0) or 0)
    if vocab <= 0:
        return None
    split = SplitHead(backbone, head, _final_scaling(model), vocab)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            mask = torch.ones_like(probe_ids)
            full = model(input_ids=probe_ids, attention_mask=mask, use_cache=False).logits
            hidden = backbone(input_ids=probe_ids, attention_mask=mask, use_cache=False).last_hidden_state
            mine = split.logits(hidden)
    except Exception:  # a backbone with another signature or output: the full forward it is
        return None
    finally:
        model.train(was_training)
    if not isinstance(full, torch.Tensor) or mine.shape != full.shape:  # e.g. a patched forward without logits
        return None
    tolerance = 1e-5 if full.dtype == torch.float32 else 1e-2
    return split if torch.allclose(mine.float(), full.float(), rtol=tolerance, atol=tolerance) else None


def _chunk_logps(split: SplitHead, states: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log pi(token) at each of ``states`` ``(n, H)``: the head, float32 log-softmax and a gather."""
    logits = split.logits(states).float()
    return torch.log_softmax(logits, dim=-1).gather(-1, tokens[:, None])[:, 0]


def scored_logps(split: SplitHead, states: torch.Tensor, tokens: torch.Tensor,
                 chunk_bytes: int | None = None) -> torch.Tensor:
    """``(n,)`` log-probs of ``tokens`` given hidden ``states`` ``(n, H)``, in chunks of positions.

    With grad on, each chunk runs under activation checkpointing: its logits
    are recomputed in the backward pass instead of kept.
    """
    per_chunk = max(1, int(LOGIT_CHUNK_BYTES if chunk_bytes is None else chunk_bytes) // (4 * split.vocab))
    grad = torch.is_grad_enabled() and states.requires_grad
    pieces = []
    for start in range(0, states.shape[0], per_chunk):
        part, wanted = states[start : start + per_chunk], tokens[start : start + per_chunk]
        if grad:
            from torch.utils.checkpoint import checkpoint

            pieces.append(checkpoint(_chunk_logps, split, part, wanted, use_reentrant=False))
        else:
            pieces.append(_chunk_logps(split, part, wanted))
    return torch.cat(pieces) if pieces else states.sum(-1).float()


class HFPolicy:
    """A causal LM the hf world samples from, scores and trains (see the module docstring)."""

    def __init__(self, model, tokenizer, table: PromptTable, pad_id: int, *, source_dir=None,
                 adapter: str | None = None):
        self._model = model
        self.tokenizer = tokenizer
        self.table = table
        self.pad_id = int(pad_id)
        # The local directory whose weights this policy holds unchanged (pi_ref, a given pi_0), or None once
        # trained: a sampling engine that loads models from disk (vLLM) reads it instead of saving a copy.
        self.source_dir = source_dir
        # With LoRA (plugins._hf.lora): this policy's adapter on the shared model; None = adapters off (pi_ref)
        self.adapter = adapter
        lora.share(model, adapter, self)
        # (model, its SplitHead or None for the full forward), probed on the first log-prob call of that model
        self._split: tuple[object, SplitHead | None] | None = None

    def __repr__(self) -> str:
        where = f" adapter {self.adapter!r}" if self.adapter else (" adapters off" if self.is_lora else "")
        return f"<HFPolicy {type(self._model).__name__} {self._model.config._name_or_path!r}{where}>"

    @property
    def model(self):
        """The model, switched to this policy's weights: with LoRA the shared model with this policy's adapter
        active (or every adapter off, for pi_ref); read it again before each use, as the code here does."""
        lora.activate(self._model, self.adapter)
        return self._model

    @model.setter
    def model(self, model) -> None:
        """Hold another model object (its head is probed again on the next log-prob call)."""
        self._model = model

    @property
    def is_lora(self) -> bool:
        """True when this policy is an adapter (or the adapters-off base) on a shared LoRA model."""
        return lora.spec(self._model) is not None

    @property
    def device(self) -> torch.device:
        return next(self._model.parameters()).device

    def clone(self) -> HFPolicy:
        """An independent copy: tokenizer and prompt table shared (both are read-only), weights copied.

        Full fine-tuning copies the model. With LoRA only the adapter is copied, into a new adapter on the same
        model (a fresh one, equal to the base, when this is pi_ref), so the base weights are never duplicated.
        The copy has no ``source_dir``: a trainer changes its weights, so they are no longer those on disk.
        """
        strip_patched_forward(lora.unwrap(self._model))
        if self.is_lora:
            clone = HFPolicy(self._model, self.tokenizer, self.table, self.pad_id)
            clone.adapter = lora.new_adapter(self._model, self.adapter, clone)
            return clone
        model = copy.deepcopy(self._model)
        model.eval()
        return HFPolicy(model, self.tokenizer, self.table, self.pad_id)

    def with_table(self, table: PromptTable) -> HFPolicy:
        """The same weights (the same model object, the same adapter) over another prompt table."""
        return HFPolicy(self._model, self.tokenizer, table, self.pad_id, source_dir=self.source_dir,
                        adapter=self.adapter)

    def save_pretrained(self, folder, *, base_model: str) -> None:
        """Write the weights where transformers or PEFT read them: the model's ``save_pretrained``, or with LoRA the
        adapter in PEFT's layout with ``base_model`` recorded (:func:`plugins._hf.lora.write_adapter`)."""
        if self.is_lora:
            if self.adapter is None:
                raise ValueError("pi_ref of a LoRA run is the base model with its adapters off: save the base")
            lora.write_adapter(self._model, self.adapter, folder, base_model=base_model)
        else:
            lora.unwrap(self._model).save_pretrained(folder, safe_serialization=True)

    def load_pretrained(self, folder, *, dtype: str) -> HFPolicy:
        """The weights in ``folder`` (as :meth:`save_pretrained` writes them) as a policy like this one (pi_ref):
        with LoRA a new adapter on the shared model, else a model loaded from ``folder``."""
        if self.is_lora:
            policy = self.clone()
            lora.read_adapter(self._model, policy.adapter, folder)
            return policy
        from plugins._hf import loading

        model = loading.load_model(folder, "the saved policy", auto_class="AutoModelForCausalLM", dtype=dtype,
                                   device=self.device, trust_remote_code=False)
        model.eval()
        return HFPolicy(model, self.tokenizer, self.table, self.pad_id)

    def trainable_weights(self) -> list[torch.Tensor]:
        """What a trainer may change, in a fixed order, whatever adapter is active: the parameters that require
        grad, or with LoRA the adapter's weights (pi_ref: a fresh adapter's, which equal the base). The
        "did training change anything" check compares these (:mod:`harness.static_policy`)."""
        if self.is_lora:
            return lora.weights(self._model, self.adapter)
        return [p for p in self._model.parameters() if p.requires_grad]

    def parameters(self):
        """The trainable parameters: every parameter of the model, or with LoRA this policy's adapter only."""
        if self.is_lora:
            if self.adapter is None:
                return iter(())  # pi_ref: the frozen base, nothing a trainer may change
            return iter(lora.trainable_parameters(self._model, self.adapter))
        return self._model.parameters()

    def prompt_ids(self, prompts) -> list[list[int]]:
        """Token ids of the prompts at the given rows (a ``(B, 1)`` array/tensor or a flat sequence)."""
        return [list(self.table.ids[r]) for r in _rows(prompts)]

    def sequence_logprobs(self, prompts, responses, lengths, *, full_logits: bool = False) -> torch.Tensor:
        """``(B,)`` float32 sum of log pi(y_t | x, y_<t) over each response's first ``lengths`` tokens.

        ``prompts`` ``(B, 1)`` rows of the prompt table, ``responses`` ``(B, L)``
        token ids, ``lengths`` ``(B,)``. Differentiable when grad is enabled.
        The LM head runs on the scored positions only (module docstring);
        ``full_logits=True`` computes the logits of every position instead.
        """
        batch, device = len(_rows(prompts)), self.device
        if batch == 0:
            return torch.zeros(0, device=device)
        input_ids, attention, target, _ = self._inputs(prompts, responses, lengths)
        # the token at position t is predicted by the logits at t - 1
        predicted = target[:, 1:]
        rows_idx, cols = predicted.nonzero(as_tuple=True)
        tokens = input_ids[:, 1:][rows_idx, cols]
        split = None if full_logits else self._head()
        if split is None:
            logits = self.model(input_ids=input_ids, attention_mask=attention, use_cache=False).logits
            chosen_logits = logits[:, :-1][rows_idx, cols].float()
            token_logps = torch.log_softmax(chosen_logits, dim=-1).gather(-1, tokens[:, None])[:, 0]
        else:
            hidden = split.backbone(input_ids=input_ids, attention_mask=attention, use_cache=False).last_hidden_state
            token_logps = scored_logps(split, hidden[:, :-1][rows_idx, cols], tokens)
        out = torch.zeros(batch, dtype=torch.float32, device=device)
        return out.index_add(0, rows_idx, token_logps)

    def response_features(self, prompts, responses, lengths) -> torch.Tensor:
        """``(B, d)`` float32: the last layer's hidden state at each response's last token (EOS included).

        The same inputs as :meth:`sequence_logprobs`; the backbone alone runs when the model splits
        (:func:`split_head`), else the full forward with its hidden states. No grad is taken here: call it
        under ``torch.no_grad()``.
        """
        batch = len(_rows(prompts))
        if batch == 0:
            return torch.zeros((0, int(self.model.config.get_text_config().hidden_size)), device=self.device)
        input_ids, attention, _, totals = self._inputs(prompts, responses, lengths)
        split = self._head()
        if split is None:
            hidden = self.model(input_ids=input_ids, attention_mask=attention, use_cache=False,
                                output_hidden_states=True).hidden_states[-1]
        else:
            hidden = split.backbone(input_ids=input_ids, attention_mask=attention, use_cache=False).last_hidden_state
        last = torch.as_tensor(totals, dtype=torch.long, device=hidden.device) - 1
        return hidden[torch.arange(batch, device=hidden.device), last].float()

    def _inputs(self, prompts, responses, lengths) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
        """Right-padded ``prompt + response`` ids, their attention mask and the response positions, on the
        model's device, and each row's total length."""
        rows = _rows(prompts)
        responses = torch.as_tensor(responses, dtype=torch.long).cpu()
        lengths = torch.as_tensor(lengths, dtype=torch.long).cpu()
        batch = len(rows)
        prompt_lengths = [len(self.table.ids[r]) for r in rows]
        totals = [p + int(n) for p, n in zip(prompt_lengths, lengths.tolist())]
        width = max(totals)
        input_ids = torch.full((batch, width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((batch, width), dtype=torch.long)
        target = torch.zeros((batch, width), dtype=torch.bool)  # positions whose token is scored
        for i, (r, p, total) in enumerate(zip(rows, prompt_lengths, totals)):
            input_ids[i, :p] = torch.tensor(self.table.ids[r], dtype=torch.long)
            input_ids[i, p:total] = responses[i, : total - p]
            attention[i, :total] = 1
            target[i, p:total] = True
        device = self.device
        return input_ids.to(device), attention.to(device), target.to(device), totals

    def _head(self) -> SplitHead | None:
        """The model's :class:`SplitHead`, probed once on the first prompt's tokens; None: use the full forward."""
        if self._split is None or self._split[0] is not self.model:
            ids = next((x for x in self.table.ids if x), None)
            probe = torch.tensor([list(ids[:8]) if ids else [self.pad_id]], dtype=torch.long, device=self.device)
            self._split = (self.model, split_head(lora.unwrap(self.model), probe))
        return self._split[1]


#: Rate of the dropout :func:`mc_dropout` puts on the last hidden state before the LM head (Mehta et al.'s
#: ``llm_dropout``, which their DropoutModel wrapper adds to every model).
HEAD_DROPOUT = 0.05


@contextmanager
def mc_dropout(policy: HFPolicy, rng: np.random.Generator, rate: float = HEAD_DROPOUT):
    """MC dropout for the forwards run inside it, as Mehta et al.'s code does it (scorer contract 2).

    Two sources of noise, both switched on here and off again on exit:

    * the model's own dropout modules (attention, residual, embedding
      dropout where its config sets a rate above 0), put in train mode, as
      the authors' ``model.train()`` does; many models have rate 0.0 there;
    * inverted dropout at ``rate`` on the input of the output embeddings
      (the last hidden state), as the authors' DropoutModel adds; this one
      is there for every model, so every model gives a spread.

    The head's masks come from a ``torch.Generator`` seeded from ``rng``; the
    model's own dropout draws from torch's global RNG, which runs forked and
    seeded from ``rng``, so the passes are a function of ``rng`` and the global
    RNG states are as they were afterwards. The head's probe
    (:func:`split_head`) runs first, without noise.
    """
    from harness.errors import UsageError
    from harness.rng import torch_seed

    model = policy.model
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if not isinstance(head, torch.nn.Module):
        raise UsageError(f"{type(model).__name__} has no output embeddings (LM head) to apply MC dropout before")
    policy._head()  # probe the split head now, in eval mode and without the hook below
    head_seed, global_seed = torch_seed(rng), torch_seed(rng)
    generators: dict[torch.device, torch.Generator] = {}  # one per device the head's input is on
    keep = 1.0 - float(rate)

    def drop(module, inputs):
        hidden = inputs[0]
        if hidden.device not in generators:
            generators[hidden.device] = torch.Generator(device=hidden.device).manual_seed(head_seed)
        mask = torch.rand(hidden.shape, generator=generators[hidden.device], device=hidden.device) < keep
        return (hidden * mask.to(hidden.dtype) / keep, *inputs[1:])

    cuda = sorted({p.device.index if p.device.index is not None else torch.cuda.current_device()
                   for p in model.parameters() if p.device.type == "cuda"})
    was_training = model.training
    handle = head.register_forward_pre_hook(drop)
    try:
        with torch.random.fork_rng(devices=cuda):
            torch.random.default_generator.manual_seed(global_seed)
            for index in cuda:  # the model's own dropout draws from each device's global generator
                with torch.cuda.device(index):
                    torch.cuda.manual_seed(global_seed)
            model.train()
            yield
    finally:
        handle.remove()
        model.train(was_training)

"""The hf testbed's policy: a transformers causal LM, its tokenizer and the world's prompt table.

:class:`HFPolicy` follows :class:`harness.interfaces.Policy`, so any trainer
written against that protocol (the ``native`` trainer) trains it, and the
``trl`` trainer reads ``model``, ``tokenizer`` and :meth:`HFPolicy.prompt_ids`.

Prompts are row indices into the world's :class:`PromptTable` (training
prompts first, then the evaluation prompts), passed as ``(B, 1)`` int64 arrays
or tensors; the table holds their text and the token ids the policy sees
(chat template applied when the tokenizer has one). All policies of a world
share one tokenizer and one table.

Log-probs (:meth:`HFPolicy.sequence_logprobs`) are computed exactly as TRL's
DPOTrainer does: the sequence ``prompt ids + response ids`` (no padding
between them, right padding after), one forward, the sum of the log-softmax
of every response token (EOS included when the response has one); prompt and
padding positions contribute nothing. Log-softmax runs in float32 whatever
the model's dtype.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch


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


class HFPolicy:
    """A causal LM the hf world samples from, scores and trains (see the module docstring)."""

    def __init__(self, model, tokenizer, table: PromptTable, pad_id: int, *, source_dir=None):
        self.model = model
        self.tokenizer = tokenizer
        self.table = table
        self.pad_id = int(pad_id)
        # The local directory whose weights this policy holds unchanged (pi_ref, a given pi_0), or None once
        # trained: a sampling engine that loads models from disk (vLLM) reads it instead of saving a copy.
        self.source_dir = source_dir

    def __repr__(self) -> str:
        return f"<HFPolicy {type(self.model).__name__} {self.model.config._name_or_path!r}>"

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def clone(self) -> HFPolicy:
        """An independent copy: parameters copied, tokenizer and prompt table shared (both are read-only).

        The copy has no ``source_dir``: a trainer changes its weights, so they are no longer those on disk.
        """
        strip_patched_forward(self.model)
        model = copy.deepcopy(self.model)
        model.eval()
        return HFPolicy(model, self.tokenizer, self.table, self.pad_id)

    def parameters(self):
        return self.model.parameters()

    def prompt_ids(self, prompts) -> list[list[int]]:
        """Token ids of the prompts at the given rows (a ``(B, 1)`` array/tensor or a flat sequence)."""
        return [list(self.table.ids[r]) for r in _rows(prompts)]

    def sequence_logprobs(self, prompts, responses, lengths) -> torch.Tensor:
        """``(B,)`` float32 sum of log pi(y_t | x, y_<t) over each response's first ``lengths`` tokens.

        ``prompts`` ``(B, 1)`` rows of the prompt table, ``responses`` ``(B, L)``
        token ids, ``lengths`` ``(B,)``. Differentiable when grad is enabled.
        """
        rows = _rows(prompts)
        responses = torch.as_tensor(responses, dtype=torch.long).cpu()
        lengths = torch.as_tensor(lengths, dtype=torch.long).cpu()
        batch = len(rows)
        device = self.device
        if batch == 0:
            return torch.zeros(0, device=device)
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
        input_ids, attention, target = input_ids.to(device), attention.to(device), target.to(device)
        logits = self.model(input_ids=input_ids, attention_mask=attention, use_cache=False).logits
        # the token at position t is predicted by the logits at t - 1
        predicted = target[:, 1:]
        rows_idx, cols = predicted.nonzero(as_tuple=True)
        chosen_logits = logits[:, :-1][rows_idx, cols].float()
        tokens = input_ids[:, 1:][rows_idx, cols]
        token_logps = torch.log_softmax(chosen_logits, dim=-1).gather(-1, tokens[:, None])[:, 0]
        out = torch.zeros(batch, dtype=torch.float32, device=device)
        return out.index_add(0, rows_idx, token_logps)

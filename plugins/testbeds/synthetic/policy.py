"""The synthetic testbed's policy: a 1-layer GRU over ``BOS x_1..x_P SEP y_1 ...``.

Implements :class:`harness.interfaces.Policy`. The next-token distribution at
response position t (number of content tokens already emitted) is

    softmax(head(h_t) + s_t),   s_t = 0 for content tokens,
                                s_t[EOS] = eos_base + eos_slope * t,

with EOS banned at t = 0 (its logit is -inf, so the content tokens are
renormalised) and forced at t = max_len (probability 1, log-probability 0).
The additive EOS shaping is the same fixed, non-learned term the SFT data
process uses, so the GRU learns only the residual EOS preference; the ban and
the forcing are applied identically in :meth:`GRUPolicy.sample` and
:meth:`GRUPolicy.sequence_logprobs`, so log-probs are exactly those of the
distribution sampling draws from (docs/internals/pitfalls.md#masking-log-probs).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from plugins.testbeds.synthetic.process import Vocab, eos_shaping


@dataclass(frozen=True)
class PolicyConfig:
    vocab_size: int
    prompt_length: int
    max_len: int
    eos_base: float
    eos_slope: float
    embedding_dim: int
    hidden_dim: int

    @property
    def vocab(self) -> Vocab:
        return Vocab(self.vocab_size)


class GRUNet(nn.Module):
    """Embedding -> 1-layer GRU -> linear head over content tokens + EOS."""

    def __init__(self, config: PolicyConfig, device=None):
        super().__init__()
        vocab = config.vocab
        self.embed = nn.Embedding(vocab.n_inputs, config.embedding_dim, device=device)
        self.gru = nn.GRU(config.embedding_dim, config.hidden_dim, batch_first=True, device=device)
        self.head = nn.Linear(config.hidden_dim, vocab.n_outputs, device=device)


class GRUPolicy:
    """A GRU language model following the :class:`harness.interfaces.Policy` protocol."""

    def __init__(self, config: PolicyConfig, net: GRUNet):
        self.config = config
        self.net = net
        vocab = config.vocab
        shaping = np.zeros((config.max_len + 1, vocab.n_outputs))
        shaping[:, vocab.eos] = eos_shaping(config.max_len, config.eos_base, config.eos_slope)
        # (max_len + 1, V + 1) additive logits per response position; row max_len is
        # never used for scoring (the forced EOS contributes 0).
        self._shaping = torch.tensor(shaping, dtype=torch.float32)

    # ------------------------------------------------------------ construction

    @classmethod
    def initialise(cls, config: PolicyConfig, generator: torch.Generator) -> GRUPolicy:
        """A fresh policy with PyTorch's default init, drawn from ``generator`` only.

        The modules are built on the meta device, so the global torch RNG is never touched.
        """
        net = GRUNet(config, device="meta").to_empty(device="cpu")
        bound = 1.0 / math.sqrt(config.hidden_dim)
        with torch.no_grad():
            net.embed.weight.normal_(0.0, 1.0, generator=generator)
            for param in list(net.gru.parameters()) + list(net.head.parameters()):
                param.uniform_(-bound, bound, generator=generator)
        return cls(config, net)

    @classmethod
    def from_state_dict(cls, config: PolicyConfig, state: dict[str, torch.Tensor]) -> GRUPolicy:
        net = GRUNet(config, device="meta").to_empty(device="cpu")
        net.load_state_dict(state, strict=True)
        return cls(config, net)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone().contiguous() for k, v in self.net.state_dict().items()}

    # ---------------------------------------------------------------- protocol

    def clone(self) -> GRUPolicy:
        return GRUPolicy(self.config, copy.deepcopy(self.net))

    def parameters(self):
        return self.net.parameters()

    def _prefix(self, prompts: torch.Tensor) -> torch.Tensor:
        vocab = self.config.vocab
        b = prompts.shape[0]
        bos = torch.full((b, 1), vocab.bos, dtype=torch.long)
        sep = torch.full((b, 1), vocab.sep, dtype=torch.long)
        return torch.cat([bos, prompts.long(), sep], dim=1)

    def prefix_states(self, prompts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run ``BOS x SEP``: the output that predicts the first response token ``(B, H)``
        and the GRU hidden state ``(1, B, H)`` to continue from."""
        out, hidden = self.net.gru(self.net.embed(self._prefix(prompts)))
        return out[:, -1], hidden

    def response_logprobs(
        self, state: torch.Tensor, hidden: torch.Tensor, responses: torch.Tensor, lengths: torch.Tensor
    ) -> torch.Tensor:
        """Summed response log-probs continuing from :meth:`prefix_states` (rows aligned).

        Only the first ``max(lengths)`` response columns are read. EOS is
        renormalised away at position 0 and the forced EOS at position
        ``max_len`` contributes exactly 0.
        """
        vocab = self.config.vocab
        lengths = lengths.long()
        width = int(lengths.max())
        responses = responses[:, :width].long()
        if width > 1:
            out, _ = self.net.gru(self.net.embed(responses[:, : width - 1]), hidden)
            outputs = torch.cat([state.unsqueeze(1), out], dim=1)  # (B, width, H)
        else:
            outputs = state.unsqueeze(1)
        logits = self.net.head(outputs) + self._shaping[:width]  # (B, width, V + 1)
        logp = torch.log_softmax(logits, dim=-1)
        positions = torch.arange(width)
        mask = positions[None, :] < lengths[:, None]
        mask &= positions[None, :] < self.config.max_len  # the forced EOS scores 0
        targets = torch.where(mask, responses, torch.zeros_like(responses)).clamp_(0, vocab.eos)
        token_logp = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        return torch.where(mask, token_logp, torch.zeros_like(token_logp)).sum(dim=1)

    def response_features(self, hidden: torch.Tensor, responses: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``(B, H)`` the GRU's output after each response's last token (EOS included), continuing from the
        hidden state of :meth:`prefix_states`: the state the policy reads the whole response into."""
        lengths = lengths.long()
        width = int(lengths.max())
        out, _ = self.net.gru(self.net.embed(responses[:, :width].long()), hidden)  # (B, width, H)
        return out[torch.arange(out.shape[0]), lengths - 1]

    def sequence_logprobs(
        self, prompts: torch.Tensor, responses: torch.Tensor, lengths: torch.Tensor
    ) -> torch.Tensor:
        """Sum of log pi(y_t | x, y_<t) over each response's tokens, EOS included.

        Only the first ``max(lengths)`` response columns are read. EOS is
        renormalised away at position 0 and the forced EOS at position
        ``max_len`` contributes exactly 0.
        """
        if responses.shape[0] == 0:
            return torch.zeros(0)
        state, hidden = self.prefix_states(prompts)
        return self.response_logprobs(state, hidden, responses, lengths)

    # ---------------------------------------------------------------- sampling

    @torch.no_grad()
    def sample(
        self,
        prompts: torch.Tensor,
        generator: torch.Generator | None,
        n: int = 1,
        greedy: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` responses per prompt row, rows ordered prompt by prompt.

        Returns ``tokens`` ``(B * n, max_len + 1)`` and ``lengths`` ``(B * n,)``.
        Batched and incremental: the prompt prefix is run once per prompt, then
        one GRU step over all unfinished sequences at a time. Temperature 1
        (Gumbel-max with uniforms from ``generator``), or the most likely token
        when ``greedy``.
        """
        config = self.config
        vocab = config.vocab
        b = prompts.shape[0] * int(n)
        tokens = torch.full((b, config.max_len + 1), vocab.pad, dtype=torch.long)
        lengths = torch.full((b,), config.max_len + 1, dtype=torch.long)
        if b == 0:
            return tokens, torch.zeros(0, dtype=torch.long)
        state, hidden = self.prefix_states(prompts)  # per prompt, shared by its n samples
        if n > 1:
            state = state.repeat_interleave(n, dim=0)
            hidden = hidden.repeat_interleave(n, dim=1)
        rows = torch.arange(b)  # rows of `tokens` still being generated
        for t in range(config.max_len):
            logits = self.net.head(state) + self._shaping[t]
            if greedy:
                y = logits.argmax(dim=-1)
            else:
                uniform = torch.rand(logits.shape, generator=generator)
                y = (logits - torch.log(-torch.log(uniform))).argmax(dim=-1)
            tokens[rows, t] = y
            ended = y == vocab.eos
            if bool(ended.any()):
                lengths[rows[ended]] = t + 1
                keep = ~ended
                rows, y, hidden = rows[keep], y[keep], hidden[:, keep]
                if rows.numel() == 0:
                    return tokens, lengths
            if t + 1 < config.max_len:
                step_out, hidden = self.net.gru(self.net.embed(y).unsqueeze(1), hidden)
                state = step_out[:, 0]
        tokens[rows, config.max_len] = vocab.eos  # forced EOS; lengths already max_len + 1
        return tokens, lengths


@torch.no_grad()
def sample_interpolated(policy: GRUPolicy, reference: GRUPolicy, weight: float, prompts: torch.Tensor,
                        generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """One response per prompt row from softmax((1 + w) head_pi - w head_ref + s_t), the two GRUs in lockstep.

    ``weight`` w = beta gives PILAF's pi+, w = -beta its pi- (logits
    (1 - beta) h_pi + beta h_ref). The EOS shaping s_t (the ban at t = 0, the
    forcing at ``max_len``) is added once, after the interpolation, so it
    shapes the mixture exactly as it shapes each policy. Temperature 1
    (Gumbel-max with uniforms from ``generator``), as :meth:`GRUPolicy.sample`;
    returns ``tokens`` ``(B, max_len + 1)`` and ``lengths`` ``(B,)``.
    """
    config = policy.config
    vocab = config.vocab
    b = prompts.shape[0]
    tokens = torch.full((b, config.max_len + 1), vocab.pad, dtype=torch.long)
    lengths = torch.full((b,), config.max_len + 1, dtype=torch.long)
    if b == 0:
        return tokens, torch.zeros(0, dtype=torch.long)
    mine, mine_hidden = policy.prefix_states(prompts)
    theirs, theirs_hidden = reference.prefix_states(prompts)
    w = float(weight)
    rows = torch.arange(b)
    for t in range(config.max_len):
        logits = (1.0 + w) * policy.net.head(mine) - w * reference.net.head(theirs) + policy._shaping[t]
        uniform = torch.rand(logits.shape, generator=generator)
        y = (logits - torch.log(-torch.log(uniform))).argmax(dim=-1)
        tokens[rows, t] = y
        ended = y == vocab.eos
        if bool(ended.any()):
            lengths[rows[ended]] = t + 1
            keep = ~ended
            rows, y = rows[keep], y[keep]
            mine_hidden, theirs_hidden = mine_hidden[:, keep], theirs_hidden[:, keep]
            if rows.numel() == 0:
                return tokens, lengths
        if t + 1 < config.max_len:
            step, mine_hidden = policy.net.gru(policy.net.embed(y).unsqueeze(1), mine_hidden)
            mine = step[:, 0]
            step, theirs_hidden = reference.net.gru(reference.net.embed(y).unsqueeze(1), theirs_hidden)
            theirs = step[:, 0]
    tokens[rows, config.max_len] = vocab.eos  # forced EOS; lengths already max_len + 1
    return tokens, lengths

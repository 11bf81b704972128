"""Supervised fine-tuning of the GRU policy on samples of the SFT data process."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from plugins.testbeds.synthetic.policy import GRUPolicy


def train_sft(
    policy: GRUPolicy,
    prompts: np.ndarray,
    tokens: np.ndarray,
    lengths: np.ndarray,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    generator: torch.Generator,
    advance: Callable[[int], None] = lambda n=1: None,
) -> tuple[float, float]:
    """Train ``policy`` in place by maximum likelihood (mean NLL per scored token).

    Adam with a one-cycle schedule peaking at ``lr``; batches shuffled with
    ``generator``. Calls ``advance(1)`` after every step. Returns the mean loss
    of the first and of the last epoch (0.0, 0.0 when nothing is trained).
    """
    n = int(prompts.shape[0])
    steps_per_epoch = math.ceil(n / batch_size) if n else 0
    total = epochs * steps_per_epoch
    if total == 0:
        return 0.0, 0.0
    prompts_t = torch.as_tensor(np.ascontiguousarray(prompts), dtype=torch.long)
    tokens_t = torch.as_tensor(np.ascontiguousarray(tokens), dtype=torch.long)
    lengths_t = torch.as_tensor(np.ascontiguousarray(lengths), dtype=torch.long)
    optimizer = torch.optim.Adam(list(policy.parameters()), lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total)
    epoch_losses = []
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        total_loss = 0.0
        for start in range(0, n, batch_size):
            index = order[start : start + batch_size]
            lens = lengths_t[index]
            logp = policy.sequence_logprobs(prompts_t[index], tokens_t[index], lens)
            loss = -logp.sum() / lens.sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total_loss += float(loss.detach()) * int(index.shape[0])
            advance(1)
        epoch_losses.append(total_loss / n)
    return epoch_losses[0], epoch_losses[-1]

"""Tiny offline models and data for tests and the docs' demo: built in code, saved, reloaded by path.

:func:`build_tiny_models` writes, under one directory:

* ``policy/``: a character-level tokenizer and a tiny GPT-2 (``GPT2LMHeadModel``,
  about 20k parameters) trained for a few hundred steps of maximum likelihood
  on a toy task (``say WORD`` -> ``WORD``, ``reverse WORD`` -> ``DROW``,
  ``upper WORD`` -> ``WORD`` in capitals), so it answers briefly and emits EOS;
  this is pi_ref.
* ``initial/``: pi_0, the policy after a few more steps on the ``upper`` task
  only, so pi_0 differs from pi_ref and implicit margins are not all zero.
* ``reward/``: a tiny ``GPT2ForSequenceClassification`` (``num_labels=1``)
  with the same tokenizer, randomly initialised from the seed: a stand-in for
  a real reward model (its scores mean nothing, but they are deterministic).
* ``prompts.jsonl`` (column ``prompt``), ``eval.jsonl`` (columns ``prompt``
  and ``output``, the correct answer used as the reference output).

Everything is a pure function of ``seed``; nothing is downloaded. Building
takes about a second on one CPU thread. The tokenizer has ``<pad>``, ``<eos>``,
``<bos>``, ``<unk>`` and a one-line chat template (``user: ...`` then
``assistant: ``), so the chat-template code paths run too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

SPECIAL_TOKENS = ("<pad>", "<eos>", "<bos>", "<unk>")
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}"
    "{% if m['role'] == 'assistant' %}<eos>{% endif %}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)
WORDS = (
    "apple", "berry", "cat", "dog", "egg", "fig", "goat", "hat", "ink", "jam", "kite", "lamp",
    "moon", "nest", "owl", "pear", "quay", "rose", "sun", "tree", "urn", "vase", "wolf", "yak", "zoo",
)
TASKS = ("say", "reverse", "upper")


@dataclass(frozen=True)
class TinyPaths:
    """Where :func:`build_tiny_models` put everything."""

    root: Path
    policy: Path
    initial: Path
    reward: Path
    prompts: Path
    eval: Path


def answer(prompt: str) -> str:
    """The toy task's correct answer to ``prompt`` (``say``/``reverse``/``upper`` WORD)."""
    task, word = prompt.split(" ", 1)
    return {"say": word, "reverse": word[::-1], "upper": word.upper()}[task]


def build_tokenizer():
    """The character-level tokenizer: the 4 special tokens, printable ASCII and newline (100 ids)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = [chr(c) for c in range(32, 127)] + ["\n"]
    vocab = {token: i for i, token in enumerate(list(SPECIAL_TOKENS) + chars)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("[\\s\\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens(list(SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        unk_token="<unk>",
        padding_side="left",
        chat_template=CHAT_TEMPLATE,
    )


def _config(tokenizer, **extra):
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=96,
        n_embd=32,
        n_layer=1,
        n_head=2,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **extra,
    )


def _examples(tokenizer, prompts: list[str]) -> list[tuple[list[int], int]]:
    """(token ids of templated prompt + answer + EOS, prompt length) for each prompt."""
    out = []
    for prompt in prompts:
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False)
        prompt_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(answer(prompt), add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        out.append((prompt_ids + answer_ids, len(prompt_ids)))
    return out


def _fit(model, examples, *, steps: int, lr: float, seed: int, pad_id: int) -> None:
    """Maximum likelihood on the answer tokens (Adam, batch 32), randomness from ``seed`` only."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        rows = torch.randint(len(examples), (32,), generator=generator).tolist()
        width = max(len(examples[r][0]) for r in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            seq, p = examples[r]
            ids[i, : len(seq)] = torch.tensor(seq)
            labels[i, p : len(seq)] = torch.tensor(seq[p:])
            mask[i, : len(seq)] = 1
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                                 ignore_index=-100)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


def build_tiny_models(directory: str | Path, *, seed: int = 0, sft_steps: int = 300, pi0_steps: int = 40) -> TinyPaths:
    """Build the tiny policy, pi_0, reward model and data files under ``directory``; return their paths."""
    import torch
    from transformers import GPT2ForSequenceClassification, GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    root = Path(directory)
    paths = TinyPaths(
        root=root,
        policy=root / "policy",
        initial=root / "initial",
        reward=root / "reward",
        prompts=root / "prompts.jsonl",
        eval=root / "eval.jsonl",
    )
    root.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()

    all_prompts = [f"{task} {word}" for word in WORDS for task in TASKS]  # 75
    eval_prompts = all_prompts[::5]  # 15 held out
    train_prompts = [p for p in all_prompts if p not in eval_prompts]  # 60
    with open(paths.prompts, "w") as handle:
        for prompt in train_prompts:
            handle.write(json.dumps({"prompt": prompt}) + "\n")
    with open(paths.eval, "w") as handle:
        for prompt in eval_prompts:
            handle.write(json.dumps({"prompt": prompt, "output": answer(prompt)}) + "\n")

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        policy = GPT2LMHeadModel(_config(tokenizer))
        _fit(policy, _examples(tokenizer, train_prompts), steps=sft_steps, lr=1e-2, seed=seed, pad_id=tokenizer.pad_token_id)
        policy.save_pretrained(paths.policy)
        tokenizer.save_pretrained(paths.policy)

        upper = [p for p in train_prompts if p.startswith("upper ")]
        _fit(policy, _examples(tokenizer, upper), steps=pi0_steps, lr=3e-3, seed=seed + 1, pad_id=tokenizer.pad_token_id)
        policy.save_pretrained(paths.initial)
        tokenizer.save_pretrained(paths.initial)

        torch.manual_seed(seed + 2)
        reward = GPT2ForSequenceClassification(_config(tokenizer, num_labels=1))
        reward.eval()
        reward.save_pretrained(paths.reward)
        tokenizer.save_pretrained(paths.reward)
    return paths


if __name__ == "__main__":  # python -m plugins.testbeds.hf.tiny DIR: build the tiny models for a demo run
    import sys

    if len(sys.argv) != 2:
        sys.exit("usage: python -m plugins.testbeds.hf.tiny DIR")
    built = build_tiny_models(sys.argv[1])
    for field_name in ("policy", "initial", "reward", "prompts", "eval"):
        print(f"{field_name}: {getattr(built, field_name)}")

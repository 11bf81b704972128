"""The ``reward_model`` judge: any local sequence-classification reward model scores each response.

The model is a local directory or a Hugging Face Hub id ``ORG/NAME[@revision]``
in the local Hugging Face cache (downloaded only with ``allow_download``),
loaded with ``AutoModelForSequenceClassification`` (never with
``trust_remote_code`` unless that option is set); its tokenizer must be in the
same directory. The
reward of a response is the model's output logit ``label_index`` (0 for the
usual ``num_labels=1`` reward model) on the text of the prompt and the
response, as the world renders them (:meth:`World.texts`):

* when the reward model's tokenizer has a chat template (and
  ``use_chat_template`` is on): the conversation ``[user: prompt,
  assistant: response]`` rendered with it, tokenized without adding special
  tokens again;
* otherwise: the tokenizer's text-pair encoding ``tokenizer(prompt,
  response)`` (what encoder reward models such as OpenAssistant's DeBERTa
  expect; a decoder tokenizer simply concatenates the two).

Texts longer than ``max_length`` tokens keep their last ``max_length`` tokens
(a reward model reads the end of the response). Scoring is batched
(``batch_size`` texts, sorted by length) under ``torch.no_grad``; the model is
loaded on first use and kept.

``compare`` gives the base class's verdict (the higher score wins, equal
scores tie) but scores only the responses that appear in a pair, not every
response of the pool. Usable as annotator, evaluator, or gold/proxy
explicit-score judge. torch and transformers are imported on first use only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from harness import hookimpl
from plugins.judges._text import compare_by_text_scores, score_by_text_scores
from harness.errors import UsageError
from harness.interfaces import Judge, Labels, Pairs, Responses
from harness.options import Option
from plugins._hf.loading import ModelSources


DOWNLOAD_HINT = "the judge option allow_download=true (e.g. -o annotator.allow_download=true)"


class RewardModelJudge(ModelSources, Judge):
    name = "reward_model"
    description = "Any local sequence-classification reward model: a pointwise score of prompt + response"
    options = (
        Option("model", str, None, "a reward model (AutoModelForSequenceClassification + tokenizer): a local "
               "directory or a Hub id ORG/NAME[@revision] in the Hugging Face cache"),
        Option("allow_download", bool, False, "download a Hub-id `model` missing from the Hugging Face cache "
               "(off: nothing is downloaded)"),
        Option("batch_size", int, 16, "texts per forward", min=1),
        Option("max_length", int, 1024, "tokens per text; longer texts keep their end", min=2),
        Option("use_chat_template", bool, True, "render prompt and response with the tokenizer's chat template "
               "when it has one"),
        Option("label_index", int, 0, "which output logit is the reward", min=0),
        Option("dtype", str, "float32", "dtype the model is loaded in (auto = the checkpoint's own)",
               choices=("float32", "bfloat16", "float16", "auto")),
        Option("device", str, "cpu", "torch device: cpu, cuda, cuda:1, mps or auto"),
        Option("trust_remote_code", bool, False, "run Python code shipped inside the checkpoint (off: only for "
               "checkpoints you trust)"),
    )

    def __init__(self, settings=None):
        super().__init__(settings)
        if self.settings["model"] and not self.settings["allow_download"]:
            # a wrong path or an uncached Hub id is an error before the run starts; loading waits for first use
            from plugins._hf.loading import local_model_dir

            local_model_dir(self.settings["model"], "option 'model' of judge 'reward_model'",
                            download_hint=DOWNLOAD_HINT)
        self._loaded: tuple[Any, Any] | None = None
        self._calls = 0

    # ------------------------------------------------------------------ model

    def _require_model(self) -> None:
        if not self.settings["model"]:
            raise UsageError("judge 'reward_model' needs its `model` option, a local reward-model directory or a "
                             "cached Hub id ORG/NAME: e.g. -o annotator.model=DIR and -o evaluator.model=DIR (or "
                             "-o gold.model=DIR, -o proxy.model=DIR for the role it plays)")

    def _load(self):
        if self._loaded is None:
            from plugins._hf import loading

            label = "option 'model' of judge 'reward_model'"
            path = loading.local_model_dir(self.settings["model"], label,
                                           allow_download=bool(self.settings["allow_download"]),
                                           download_hint=DOWNLOAD_HINT)
            device = loading.torch_device(str(self.settings["device"]), "option 'device' of judge 'reward_model'")
            trust = self.settings["trust_remote_code"]
            tokenizer = loading.load_tokenizer(path, label, trust_remote_code=trust)
            tokenizer.truncation_side = "left"
            tokenizer.padding_side = "right"
            model = loading.load_model(path, label, auto_class="AutoModelForSequenceClassification",
                                       dtype=str(self.settings["dtype"]), device=device, trust_remote_code=trust)
            if getattr(model.config, "pad_token_id", None) is None:
                model.config.pad_token_id = tokenizer.pad_token_id
            if int(self.settings["label_index"]) >= int(model.config.num_labels):
                raise UsageError(f"judge 'reward_model': label_index {self.settings['label_index']} but the model "
                                 f"has {model.config.num_labels} output(s)")
            self._loaded = (model, tokenizer)
        return self._loaded

    def _encode(self, tokenizer, prompt: str, response: str) -> list[int]:
        limit = int(self.settings["max_length"])
        if self.settings["use_chat_template"] and getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}], tokenize=False
            )
            ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
            return ids[-limit:]
        return list(tokenizer(prompt, response, truncation=True, max_length=limit)["input_ids"])

    def score_texts(self, prompts: list[str], responses: list[str]) -> np.ndarray:
        """``(K,)`` float64 reward of each (prompt, response) text pair."""
        import torch

        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        out = np.zeros(len(prompts), dtype=np.float64)
        if not prompts:
            return out
        model, tokenizer = self._load()
        encoded = [self._encode(tokenizer, p, r) for p, r in zip(prompts, responses)]
        order = np.argsort([-len(e) for e in encoded], kind="stable")
        device = next(model.parameters()).device
        pad = int(model.config.pad_token_id)
        batch = int(self.settings["batch_size"])
        label = int(self.settings["label_index"])
        with torch.no_grad():
            for start in range(0, len(order), batch):
                index = order[start : start + batch]
                width = max(len(encoded[i]) for i in index)
                ids = torch.full((len(index), width), pad, dtype=torch.long)
                mask = torch.zeros((len(index), width), dtype=torch.long)
                for row, i in enumerate(index):
                    ids[row, : len(encoded[i])] = torch.tensor(encoded[i], dtype=torch.long)
                    mask[row, : len(encoded[i])] = 1
                logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
                out[index] = logits[:, label].float().cpu().numpy()
        self._calls += len(prompts)
        return out

    # ------------------------------------------------------------------ judge

    def score(self, *, world, prompts, responses: Responses, rng) -> np.ndarray:
        """``(M, N)`` float64 reward of every response (``rng`` is unused: the model is deterministic)."""
        if hasattr(world, "texts"):  # a world without text is refused below, before the model is asked for
            self._require_model()
        return score_by_text_scores(self.score_texts, world, prompts, responses, "judge 'reward_model'")

    def compare(self, *, world, prompts, responses: Responses, pairs: Pairs, rng) -> Labels:
        """The base verdict (higher score wins, equal scores tie), scoring only the paired responses."""
        self._require_model()
        return compare_by_text_scores(self.score_texts, world, prompts, responses, pairs)

    def usage(self) -> dict[str, int]:
        """``{"texts_scored": ...}`` since construction."""
        return {"texts_scored": self._calls}


@hookimpl
def register_judges(register):
    register(RewardModelJudge)

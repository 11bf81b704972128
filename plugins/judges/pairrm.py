"""The ``pairrm`` judge: PairRM (Jiang et al. 2023, "LLM-Blender") says which response of a pair is better.

Optional extra ``[pairrm]`` (``llm-blender==0.0.2``). PairRM is a pairwise
reward model: it reads an instruction and two responses together and gives a
logit, > 0 when the first is better. It is the gold annotator that Yang et al.
2024 used for their pairs, so this judge fits ``--annotator`` and
``--evaluator``.

**Weights are read from local files only** (option ``model``: a local
directory, or a Hub id such as ``llm-blender/PairRM-hf`` in the local Hugging
Face cache); nothing is downloaded unless ``allow_download`` is on. Two
layouts are accepted, recognised by the directory's ``config.json``:

* ``llm-blender/PairRM`` (a ranker config with ``ranker_type``): loaded with
  ``llm_blender.Blender().loadranker(model, ...)`` and compared with
  ``Blender.compare``. Its config names the DeBERTa-v3-large backbone by hub
  id; that id is looked up in the Hugging Face cache like ``model``, or the
  option ``backbone`` names a local copy of ``microsoft/deberta-v3-large``
  (tokenizer, config and weights; the PairRM checkpoint then overwrites the
  weights).
* ``llm-blender/PairRM-hf`` (a transformers ``DebertaV2PairRM`` checkpoint
  with its tokenizer): loaded with ``DebertaV2PairRM.from_pretrained(model,
  local_files_only=True)`` and fed as that model card shows
  (``<|source|>`` + instruction, ``<|candidate1|>`` + A, ``<|candidate2|>`` + B;
  at most 1224 instruction tokens, the rest of 2048 split between the two
  responses). Needs no backbone.

**Position bias.** With ``mode="[A,B]+[B,A]"`` (the default, what llm-blender
recommends) every pair is read in both orders and the two logits are combined
so the verdict does not depend on which response came first;
``mode="[A,B]"`` reads each pair once, at half the cost.

**Verdict.** ``a`` wins when the combined logit is > 0, ``b`` when < 0; a
logit of exactly 0, or two identical responses (not sent to the model), is a
tie. ``score`` is not supported: PairRM gives no absolute score of one
response (``Blender.rank`` can rank the N responses of one prompt against each
other, but those scores are relative to the set, are not comparable across
prompts and cost N(N-1) comparisons each), so this judge cannot fill
``explicit_reward``.

**The transformers 5 shim.** llm-blender 0.0.2 imports
``transformers.utils.hub.TRANSFORMERS_CACHE``, which transformers 5 removed,
so ``import llm_blender`` fails. :func:`import_llm_blender` sets that
attribute to ``huggingface_hub.constants.HF_HUB_CACHE`` (what it used to
alias) before importing, only when it is missing. The attribute is only used
as llm-blender's default download cache, which this judge never uses. A
second incompatibility shows only when comparing with the
``llm-blender/PairRM`` layout: its collator calls the tokenizer's
``batch_encode_plus``, which transformers 5 also removed;
:func:`restore_batch_encode_plus` sets it back, as ``tokenizer(texts, ...)``,
on the loaded ranker's tokenizer.

torch, transformers and llm_blender are imported on first use only. What was
and was not verified is in ``docs/real-models-extras.md``.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np

from harness import hookimpl
from harness.errors import UsageError
from harness.interfaces import Judge, Labels, Pairs, Responses, pair_texts
from harness.options import Option
from plugins._hf.loading import ModelSources

INSTALL = "pip install 'pairsel-harness[pairrm]'"
DOWNLOAD_HINT = "the judge option allow_download=true (e.g. -o annotator.allow_download=true)"
MODES = ("[A,B]+[B,A]", "[A,B]")
SOURCE_PREFIX, CAND1_PREFIX, CAND2_PREFIX = "<|source|>", "<|candidate1|>", "<|candidate2|>"
HF_SOURCE_MAX, HF_CANDIDATE_MAX, HF_TOTAL_MAX = 1224, 412, 2048


def import_llm_blender():
    """``import llm_blender`` under transformers 5 (see the module docstring); UsageError when it is not installed."""
    if importlib.util.find_spec("llm_blender") is None:
        raise UsageError(f"judge 'pairrm' needs llm-blender, which is not installed: {INSTALL}")
    import transformers.utils.hub as hub

    if not hasattr(hub, "TRANSFORMERS_CACHE"):  # removed in transformers 5; llm-blender 0.0.2 imports it
        from huggingface_hub.constants import HF_HUB_CACHE

        hub.TRANSFORMERS_CACHE = HF_HUB_CACHE
    try:
        import llm_blender
    except Exception as exc:
        raise UsageError(f"judge 'pairrm': importing llm-blender failed ({type(exc).__name__}: {exc}); "
                         f"reinstall it with {INSTALL}") from None
    return llm_blender


def detect_layout(model_dir: Path) -> str:
    """``"blender"`` (llm-blender/PairRM) or ``"hf"`` (llm-blender/PairRM-hf), from the directory's config.json."""
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"option 'model' of judge 'pairrm': cannot read {str(model_dir / 'config.json')!r} "
                         f"({type(exc).__name__}: {exc})") from None
    if "ranker_type" in config:
        return "blender"
    if "DebertaV2PairRM" in (config.get("architectures") or []) or "cand1_prefix_id" in config:
        return "hf"
    raise UsageError(f"option 'model' of judge 'pairrm': {str(model_dir)!r} is neither llm-blender/PairRM "
                     "(config.json with ranker_type) nor llm-blender/PairRM-hf (a DebertaV2PairRM checkpoint)")


class HFPairRM:
    """llm-blender/PairRM-hf behind ``Blender.compare``'s signature (the tokenization of its model card)."""

    def __init__(self, model, tokenizer, device):
        self.model, self.tokenizer, self.device = model, tokenizer, device

    def _encode(self, source: str, first: str, second: str) -> list[int]:
        tok = self.tokenizer
        source_ids = tok.encode(SOURCE_PREFIX + source, max_length=HF_SOURCE_MAX, truncation=True)
        room = max(1, min(HF_CANDIDATE_MAX, (HF_TOTAL_MAX - len(source_ids)) // 2))
        return (source_ids + tok.encode(CAND1_PREFIX + first, max_length=room, truncation=True)
                + tok.encode(CAND2_PREFIX + second, max_length=room, truncation=True))

    def _logits(self, inputs, firsts, seconds, batch_size: int) -> np.ndarray:
        import torch

        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        out = np.zeros(len(inputs), dtype=np.float64)
        with torch.no_grad():
            for start in range(0, len(inputs), batch_size):
                ids = [self._encode(s, a, b) for s, a, b in zip(inputs[start : start + batch_size],
                                                                firsts[start : start + batch_size],
                                                                seconds[start : start + batch_size])]
                width = max(len(x) for x in ids)
                input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
                mask = torch.zeros((len(ids), width), dtype=torch.long)
                for i, x in enumerate(ids):
                    input_ids[i, : len(x)] = torch.tensor(x, dtype=torch.long)
                    mask[i, : len(x)] = 1
                logits = self.model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device)).logits
                out[start : start + len(ids)] = logits.reshape(-1).float().cpu().numpy()
        return out

    def compare(self, inputs, candidates_A, candidates_B, instructions=None, batch_size=4, return_logits=False,
                mode="[A,B]+[B,A]", disable_tqdm=False):
        if instructions is not None:
            inputs = [f"{i}\n{x}" for i, x in zip(instructions, inputs)]
        logits = self._logits(inputs, candidates_A, candidates_B, batch_size)
        if mode == "[A,B]+[B,A]":
            logits = (logits - self._logits(inputs, candidates_B, candidates_A, batch_size)) / 2
        return logits if return_logits else logits > 0


def load_ranker(settings: dict[str, Any]):
    """The PairRM ranker of ``settings`` (an object with ``Blender.compare``'s signature), from local files only."""
    from plugins._hf import loading

    label = "option 'model' of judge 'pairrm'"
    allow = bool(settings.get("allow_download", False))
    model_dir = loading.local_model_dir(settings["model"], label, allow_download=allow, download_hint=DOWNLOAD_HINT)
    layout = detect_layout(model_dir)
    llm_blender = import_llm_blender()
    device = loading.torch_device(str(settings["device"]), "option 'device' of judge 'pairrm'")
    if layout == "hf":
        from llm_blender.pair_ranker.pairrm import DebertaV2PairRM

        tokenizer = loading.load_tokenizer(model_dir, label)
        try:
            model = DebertaV2PairRM.from_pretrained(str(model_dir), local_files_only=True)
        except Exception as exc:
            raise UsageError(f"{label}: cannot load DebertaV2PairRM from {str(model_dir)!r}: "
                             f"{type(exc).__name__}: {exc}") from None
        return HFPairRM(model.to(device).eval(), tokenizer, device)
    config = json.loads((model_dir / "config.json").read_text())
    backbone = settings["backbone"] or config.get("model_name")
    if not backbone:
        raise UsageError(f"judge 'pairrm': the PairRM checkpoint in {str(model_dir)!r} names no backbone; set the "
                         "option backbone=DIR to a local copy of microsoft/deberta-v3-large")
    try:
        backbone_dir = loading.local_model_dir(str(backbone), "option 'backbone' of judge 'pairrm'",
                                               allow_download=allow, download_hint=DOWNLOAD_HINT)
    except UsageError as exc:
        raise UsageError(f"judge 'pairrm': the PairRM checkpoint in {str(model_dir)!r} is built on the backbone "
                         f"{config.get('model_name')!r}, which was not found ({exc}); set the option backbone=DIR "
                         "to a local copy of microsoft/deberta-v3-large (tokenizer, config and weights), or use "
                         "the single-directory llm-blender/PairRM-hf checkpoint instead") from None
    blender = llm_blender.Blender()
    blender.loadranker(str(model_dir), device=str(device), model_name=str(backbone_dir))
    restore_batch_encode_plus(blender.ranker_tokenizer)
    return blender


def restore_batch_encode_plus(tokenizer) -> None:
    """Give ``tokenizer`` the ``batch_encode_plus`` method transformers 5 removed (llm-blender's collator calls it).

    ``batch_encode_plus(texts, **kwargs)`` was ``tokenizer(texts, **kwargs)``
    for a list of texts; the alias is set on this one tokenizer instance only.
    """
    if not hasattr(tokenizer, "batch_encode_plus"):
        object.__setattr__(tokenizer, "batch_encode_plus", lambda texts, **kwargs: tokenizer(list(texts), **kwargs))


class PairRMJudge(ModelSources, Judge):
    model_options = ("model", "backbone")
    name = "pairrm"
    description = ("PairRM (llm-blender) reads an instruction and two responses and says which is better "
                   "(pairwise only; local weights only; the pairrm extra)")
    options = (
        Option("model", str, None, "llm-blender/PairRM or llm-blender/PairRM-hf: a local directory, or the Hub "
               "id (ORG/NAME[@revision]) of a copy in the Hugging Face cache"),
        Option("backbone", str, None, "microsoft/deberta-v3-large for the llm-blender/PairRM layout (a local "
               "directory or cached Hub id); unset = the Hub id its config names, from the cache"),
        Option("allow_download", bool, False, "download a Hub-id `model` (and backbone) missing from the Hugging "
               "Face cache (off: nothing is downloaded)"),
        Option("mode", str, MODES[0], "read each pair in both orders (position-debiased) or once",
               choices=MODES),
        Option("batch_size", int, 4, "pairs per forward", min=1),
        Option("device", str, "cpu", "torch device: cpu, cuda, cuda:1, mps or auto"),
    )

    def __init__(self, settings=None):
        super().__init__(settings)
        if self.settings["model"] and not self.settings["allow_download"]:
            # a wrong path or an uncached Hub id is an error before the run starts; loading waits for first use
            from plugins._hf.loading import local_model_dir

            detect_layout(local_model_dir(self.settings["model"], "option 'model' of judge 'pairrm'",
                                          download_hint=DOWNLOAD_HINT))
        self._ranker: Any = None
        self._usage = dict.fromkeys(("pairs", "comparisons", "ties", "identical"), 0)

    def _require_model(self) -> None:
        if not self.settings["model"]:
            raise UsageError("judge 'pairrm' needs its `model` option: a local directory of PairRM weights or "
                             "the Hub id of a cached copy (e.g. -o annotator.model=llm-blender/PairRM-hf, "
                             "-o evaluator.model=DIR); the harness never downloads them unless allow_download is "
                             "on: fetch them once with `hf download llm-blender/PairRM-hf`")

    def ranker(self):
        """The loaded ranker (loaded on first use with :func:`load_ranker`, the seam tests replace)."""
        if self._ranker is None:
            self._require_model()
            self._ranker = load_ranker(self.settings)
        return self._ranker

    def score(self, *, world, prompts, responses, rng):
        """Not supported: raise UsageError (PairRM is pairwise; see the module docstring)."""
        raise UsageError(
            "judge 'pairrm' is pairwise only: it says which of two responses is better and gives no score per "
            "response, so it cannot fill explicit_reward (--gold-judge or --proxy-judge of an explicit-score "
            "selector). Use it as --annotator or --evaluator, or pick a pointwise judge (harness list judges)"
        )

    def compare(self, *, world, prompts, responses: Responses, pairs: Pairs, rng) -> Labels:
        """PairRM's verdict on every pair (``rng`` unused: the model is deterministic)."""
        self._require_model()
        k = len(pairs)
        prefer_a = np.zeros(k, dtype=bool)
        tie = np.zeros(k, dtype=bool)
        if k == 0:
            return Labels(prefer_a=prefer_a, tie=tie)
        ranker = self.ranker()  # loaded (and its errors raised) even when every pair is a pair of twins
        instructions, a_texts, b_texts = pair_texts(world, prompts, responses, pairs)
        same = np.array([a == b for a, b in zip(a_texts, b_texts)], dtype=bool)
        ask = np.flatnonzero(~same)
        if ask.size:
            logits = np.asarray(ranker.compare(
                [instructions[i] for i in ask], [a_texts[i] for i in ask], [b_texts[i] for i in ask],
                batch_size=int(self.settings["batch_size"]), return_logits=True, mode=str(self.settings["mode"]),
                disable_tqdm=True), dtype=np.float64).reshape(-1)
            if logits.shape[0] != ask.size:
                raise RuntimeError(f"PairRM returned {logits.shape[0]} logits for {ask.size} pairs")
            prefer_a[ask] = logits > 0
            tie[ask] = logits == 0
        tie |= same
        self._usage["pairs"] += k
        self._usage["comparisons"] += int(ask.size) * (2 if self.settings["mode"] == MODES[0] else 1)
        self._usage["identical"] += int(same.sum())
        self._usage["ties"] += int(tie.sum())
        return Labels(prefer_a=prefer_a, tie=tie)

    def usage(self) -> dict[str, int]:
        """``pairs`` compared, model ``comparisons`` (2 per pair in both-orders mode), ``ties``, ``identical`` pairs."""
        return dict(self._usage)


@hookimpl
def register_judges(register):
    register(PairRMJudge)

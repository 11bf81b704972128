"""The ``synthetic`` testbed: a tiny world with a known gold reward (docs/internals/synthetic-testbed.md).

Prompts are 6 uniform content tokens; responses come from a 1-layer GRU policy;
the SFT model pi_ref is trained on a bigram Markov process; the gold reward is
only partly aligned with SFT likelihood; the annotator is Bradley-Terry on the
gold reward; evaluation is a win rate against fixed best-of-4 SFT outputs. A
world is a pure function of the options and the world seed, and is cached on
disk (see :mod:`plugins.testbeds.synthetic.cache`).

This module must stay cheap to import: torch is imported only when a world is built.

Token ids (V = ``vocab_size`` content tokens): content ``0..V-1``, EOS ``V``,
BOS ``V+1``, SEP ``V+2``, PAD ``V+3`` (fills a response row after EOS).
"""

from __future__ import annotations

from harness import hookimpl
from harness.interfaces import Testbed
from harness.memory import MemoryNeeds
from harness.options import Option

_POSITIVE = {"min": 0.0, "min_inclusive": False}


class SyntheticTestbed(Testbed):
    name = "synthetic"
    description = ("Tiny world with a known gold reward and a GRU policy; seconds on one CPU thread. world=bigram "
                   "(default): gold is a sum of per-token terms, so every policy's samples tell much the same about "
                   "it; world=staircase adds a bonus for a motif pi_ref rarely says, so a label's value depends on "
                   "the policy's state")
    default_judges = {"gold": "synthetic_gold", "proxy": "synthetic_proxy"}
    exact_gold = True  # every world has gold_rewards: reference-point selectors (needs_exact_gold) may run here
    gives_features = True  # World.features: the GRU's output after each response
    sampling_sources = ("policy", "reference", "plus", "minus")  # World.steered_sample draws from every source
    options = (
        # the world
        Option("world", str, "bigram",
               "bigram: today's world, every policy's samples tell much the same about gold. staircase: the same world "
               "plus a gold bonus for a motif pi_ref rarely says, in two stairs, so pairs from a weak policy cannot "
               "reveal the upper stair and a label's value depends on the policy's state "
               "(docs/usage/state-dependent-world.md)", choices=("bigram", "staircase"),
               omit_at_default=True),  # added after runs were recorded: they keep their config hash
        Option("state_dependence", bool, True,
               "staircase world only: false drops the motif bonus, leaving exactly the bigram world built the same way",
               omit_at_default=True),
        Option("vocab_size", int, 32, "number of content tokens (EOS, BOS, SEP, PAD come after them)", min=2, max=4096),
        Option("prompt_length", int, 6, "prompt tokens, drawn uniformly", min=1, max=256),
        Option("max_response_length", int, 12, "most content tokens of a response; EOS is forced after them", min=1, max=256),
        Option("eos_logit_base", float, 1.0, "EOS logit offset: at response position t >= 1 the EOS logit is base + slope * t", min=-50.0, max=50.0),
        Option("eos_logit_slope", float, 0.5, "rise of the EOS logit per response position", min=-10.0, max=10.0),
        Option("transition_scale", float, 2.0, "std of the SFT process's bigram logits T", min=0.0, max=100.0),
        Option("prompt_bias_scale", float, 0.6, "std of the SFT process's prompt bias Pb", min=0.0, max=100.0),
        Option("gold_alignment", float, 0.3, "weight of standardize(T) in the gold bigram table B (its correlation with T)", min=-1.0, max=1.0),
        Option("gold_prompt_scale", float, 1.0, "std of the gold reward's prompt-token table U", min=0.0, max=100.0),
        Option("gold_token_scale", float, 0.5, "std of the gold reward's per-token term u", min=0.0, max=100.0),
        Option("tau", float, 0.3, "annotator's Bradley-Terry temperature; 0 = noiseless gold", min=0.0, max=1000.0),
        # the policy and pi_ref
        Option("embedding_dim", int, 32, "GRU policy's token embedding size", min=1, max=4096),
        Option("hidden_dim", int, 64, "GRU policy's hidden size", min=1, max=4096),
        Option("sft_samples", int, 60000, "samples of the SFT process that pi_ref is trained on", min=0),
        Option("sft_epochs", int, 2, "SFT epochs", min=0),
        Option("sft_lr", float, 3e-3, "SFT peak learning rate (Adam, one-cycle)", **_POSITIVE),
        Option("sft_batch", int, 256, "SFT batch size", min=1),
        # pi_0 and evaluation
        Option("seed_prompts", int, 500, "prompts of the offline DPO round that makes pi_0 (two pi_ref samples each)", min=0),
        Option("pi0_beta", float, 1.0, "DPO beta of the offline pi_0 round", **_POSITIVE),
        Option("pi0_lr", float, 3e-3, "Adam learning rate of the offline pi_0 round", **_POSITIVE),
        Option("pi0_batch", int, 64, "batch size of the offline pi_0 round", min=1),
        Option("pi0_epochs", int, 8, "epochs of the offline pi_0 round", min=0),
        Option("eval_prompts", int, 1000, "held-out evaluation prompts", min=1),
        Option("eval_samples", int, 2, "policy samples per evaluation prompt", min=1),
        Option("reference_best_of", int, 4, "the reference output is the best of this many pi_ref samples by gold reward", min=1),
    )

    @classmethod
    def regimes(cls):
        """The regimes of ``regimes.toml`` beside this module (docs/usage/regimes.md)."""
        from pathlib import Path

        from harness.regimes import load_regimes

        return load_regimes(Path(__file__).with_name("regimes.toml"))

    def build_world(self, *, seed: int, reporter, trainers=None):
        from plugins.testbeds.synthetic.world import build_world

        return build_world(self.settings, seed=seed, reporter=reporter, name=self.name, trainers=trainers)

    def memory_needs(self) -> MemoryNeeds:
        """Bytes of the world and of one pool prompt and response, from the options (measured against peak RSS
        in ``benchmarks/bench_memory_estimate.py``).

        A response is sampled with every other one of its iteration at once: its tokens (a torch tensor, its
        numpy copy and the int64 array the world returns) and one step's logits, Gumbel noise and GRU state. The
        world holds the SFT corpus, the evaluation samples and the reference best-of draws, and the policies'
        weights (pi_ref, pi_0, the policy, its gradients and Adam's two moments).
        """
        s = self.settings
        vocab, width, hidden = s["vocab_size"] + 4, s["max_response_length"] + 1, s["hidden_dim"]
        embedding, prompt_length = s["embedding_dim"], s["prompt_length"]
        response = 24 * width + 20 * vocab + 24 * hidden
        prompt = 16 * prompt_length + 12 * hidden
        parameters = vocab * embedding + 3 * hidden * (embedding + hidden + 2) + hidden * vocab + vocab
        evaluation = s["eval_prompts"] * (prompt + (s["eval_samples"] + s["reference_best_of"]) * response)
        world = 24 * s["sft_samples"] * (prompt_length + width) + evaluation + 6 * 4 * parameters
        return MemoryNeeds(world_bytes=world, bytes_per_prompt=prompt, bytes_per_response=response)


@hookimpl
def register_testbeds(register):
    register(SyntheticTestbed)

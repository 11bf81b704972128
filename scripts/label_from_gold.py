"""Answer a synthetic run's to-label.jsonl from the world's gold reward: a stand-in for people.

Used by the external-annotator walk-through (docs/annotators/people.md) and its test. It reads the
run's config from the leaderboard, rebuilds the same synthetic world, turns each
pair's text back into tokens and labels it with the noiseless gold reward::

    python scripts/label_from_gold.py RUN_ID RUN_DIR/iteration-1/to-label.jsonl --out labels.jsonl

``--skip N`` leaves the last N pairs unlabelled (to try a partial import).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def _tokens(text: str) -> list[int]:
    return [int(word[1:]) for word in text.split()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_id")
    parser.add_argument("to_label", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--db", type=Path, default=Path("leaderboard.db"))
    parser.add_argument("--skip", type=int, default=0, help="leave the last N pairs unlabelled")
    args = parser.parse_args(argv)

    from harness.config import RunConfig
    from harness.interfaces import Responses
    from harness.plugins import load_registry
    from harness.progress import NullReporter
    from leaderboard.store import Leaderboard

    config = RunConfig.from_dict(Leaderboard(args.db, create=False).get_run(args.run_id)["config"])
    testbed = load_registry([]).create("testbed", config.testbed.name, config.testbed.settings)
    world = testbed.build_world(seed=config.world_seed, reporter=NullReporter())
    lines = [json.loads(line) for line in args.to_label.read_text(encoding="utf-8").splitlines() if line.strip()]
    if args.skip:
        lines = lines[: -args.skip]
    with args.out.open("w", encoding="utf-8") as out:
        for line in lines:
            a, b = _tokens(line["response_a"]), _tokens(line["response_b"])
            width = max(len(a), len(b)) + 1
            tokens = np.full((1, 2, width), world.pad_id, dtype=np.int64)
            for j, response in enumerate((a, b)):
                tokens[0, j, : len(response)] = response
                tokens[0, j, len(response)] = world.eos_id
            lengths = np.array([[len(a) + 1, len(b) + 1]], dtype=np.int64)
            prompt = np.array([_tokens(line["prompt"])], dtype=np.int64)
            gold = world.gold_rewards(prompt, Responses(tokens=tokens, lengths=lengths))[0]
            label = "tie" if gold[0] == gold[1] else ("a" if gold[0] > gold[1] else "b")
            out.write(json.dumps({"pair_id": line["pair_id"], "label": label, "annotator": "gold-script"}) + "\n")
    print(f"labelled {len(lines)} pair(s) into {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

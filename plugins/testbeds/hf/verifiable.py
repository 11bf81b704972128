"""Prompts whose answers a program can check: the hf testbed's verifiable regime.

Every task is made from a template and carries a ``check``: a JSON object whose
``kind`` names one rule of :data:`plugins._verifiable.CHECKS` and whose other
fields are the rule's parameters. :func:`plugins._verifiable.verify` applies it
to a response and gives 1.0 (satisfied) or 0.0, so the ``verifier`` judge
(:mod:`plugins.judges.verifier`) is an exact gold annotator that costs nothing
and needs no model.

The families (:data:`FAMILIES`) were chosen by one rule on one diagnostic,
before any strategy ran: a candidate stays when pi_ref's samples pass it
between 15 % and 85 % of the time (:func:`probe`), so that two samples of a
prompt can differ in gold. No strategy's result was looked at.

Write the shipped files again (they must come out byte for byte the same), or
probe a model's pass share per family (how the families were chosen)::

    python -m plugins.testbeds.hf.verifiable write plugins/testbeds/hf/data/verifiable
    python -m plugins.testbeds.hf.verifiable probe /tmp/smollm2

Importing this module costs nothing: :func:`probe` imports torch when called.
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plugins._verifiable import verify

#: The shipped set: its seed and sizes (``train.jsonl`` and ``test.jsonl``).
SEED = 20261207
TRAIN_SIZE = 2000
TEST_SIZE = 240


WORDS = (
    "apple", "river", "garden", "pencil", "window", "rabbit", "candle", "forest", "bottle", "planet",
    "guitar", "silver", "orange", "button", "castle", "dragon", "winter", "summer", "yellow", "kitten",
    "basket", "mirror", "bridge", "rocket", "pocket", "jacket", "carpet", "dinner", "market", "island",
    "tomato", "violin", "camera", "ladder", "helmet", "hammer", "lemon", "tiger", "cloud", "stone",
    "bread", "chair", "table", "horse", "house", "train", "water", "light", "music", "paper",
    "anchor", "banana", "blanket", "cactus", "cookie", "desert", "engine", "feather", "finger", "flower",
    "harbor", "honey", "jungle", "kettle", "lantern", "meadow", "monkey", "needle", "ocean", "parrot",
    "pepper", "pillow", "puzzle", "rainbow", "saddle", "shadow", "spoon", "statue", "sugar", "thunder",
    "ticket", "tunnel", "turtle", "valley", "wagon", "whistle", "wizard", "zipper", "marble", "butter",
    "copper", "cotton", "garlic", "ginger", "goblin", "hollow", "magnet", "napkin", "orchid", "pirate",
)
TOPICS = (
    "the sea", "a cat", "the moon", "a city at night", "rain", "a library", "the mountains", "coffee",
    "a bicycle", "the forest", "friendship", "a train journey", "snow", "the sun", "a garden", "music",
    "a small dog", "the ocean", "an old house", "spring",
)
STARTS = ("Today", "Yesterday", "Sometimes", "Tonight", "Once", "Outside", "Suddenly", "Later", "Often", "Tomorrow")
CATEGORIES = {
    "fruits": ("apple", "banana", "cherry", "grape", "mango", "pear", "plum", "peach", "orange", "lemon"),
    "colors": ("red", "blue", "green", "yellow", "purple", "orange", "black", "white", "pink", "brown"),
    "animals": ("dog", "cat", "horse", "lion", "tiger", "rabbit", "mouse", "bear", "wolf", "fox"),
    "countries": ("France", "Japan", "Brazil", "Canada", "Egypt", "India", "Spain", "Italy", "Kenya", "Peru"),
    "vegetables": ("carrot", "potato", "onion", "pea", "bean", "leek", "tomato", "pepper", "celery", "cabbage"),
}


# ---------------------------------------------------------------------------- templates


@dataclass(frozen=True)
class Task:
    """One prompt: its family, its check, a terse correct ``output`` and a fuller correct ``target``."""

    family: str
    prompt: str
    check: dict[str, Any]
    output: str
    target: str

    def row(self) -> dict[str, str]:
        return {"prompt": self.prompt, "family": self.family, "check": json.dumps(self.check, sort_keys=True),
                "output": self.output, "target": self.target}


ANSWER_NUMBER = ("Answer with the number.", "Reply with just the number.")
ADD = ("What is {a} plus {b}?", "What is {a} + {b}?", "Add {a} and {b}.", "Compute {a} plus {b}.",
       "What do you get when you add {a} and {b}?")
MULTIPLY = ("What is {a} times {b}?", "What is {a} x {b}?", "Multiply {a} by {b}.", "Compute {a} times {b}.",
            "What is the product of {a} and {b}?")


def _addition(rng: random.Random) -> Task:
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    ask = f"{rng.choice(ADD).format(a=a, b=b)} {rng.choice(ANSWER_NUMBER)}"
    return Task("addition", ask, {"kind": "number", "answer": a + b}, f"{a + b}.", f"{a} plus {b} equals {a + b}.")


def _multiplication(rng: random.Random) -> Task:
    a, b = rng.randint(2, 9), rng.randint(2, 9)
    ask = f"{rng.choice(MULTIPLY).format(a=a, b=b)} {rng.choice(ANSWER_NUMBER)}"
    return Task("multiplication", ask, {"kind": "number", "answer": a * b}, f"{a * b}.",
                f"{a} times {b} equals {a * b}.")


def _successor(rng: random.Random) -> Task:
    a = rng.randint(2, 98)
    return Task("successor", f"What number comes right after {a}? Answer with the number.",
                {"kind": "number", "answer": a + 1}, f"{a + 1}.", f"The number right after {a} is {a + 1}.")


def _comparison(rng: random.Random) -> Task:
    a, b = rng.sample(range(10, 100), 2)
    return Task("comparison", f"Which number is larger, {a} or {b}? Answer with the number.",
                {"kind": "number", "answer": max(a, b), "exclude": [min(a, b)]}, f"{max(a, b)}.",
                f"The larger number is {max(a, b)}.")


def _greater(rng: random.Random) -> Task:
    a, b = rng.sample(range(1, 100), 2)
    answer = "yes" if a > b else "no"
    return Task("yes_no", f"Is {a} greater than {b}? Answer yes or no.", {"kind": "yes_no", "answer": answer},
                f"{answer.capitalize()}.",
                f"{answer.capitalize()}, {a} is {'greater' if a > b else 'not greater'} than {b}.")


REPEAT = ("Repeat this word once: {w}", "Say the word {w}.", "Write the word {w}.", "Echo this word: {w}",
          "Type the word \"{w}\" and nothing else.")


def _repeat(rng: random.Random) -> Task:
    word = rng.choice(WORDS)
    return Task("repeat", rng.choice(REPEAT).format(w=word), {"kind": "contains_word", "word": word},
                f"{word}", f"Here is the word: {word}.")


BEGIN = ("Write one sentence about {t} that begins with the word \"{w}\".",
         "Write a sentence about {t}. Start it with the word \"{w}\".",
         "Begin with the word \"{w}\" and write one sentence about {t}.")


def _starts_with(rng: random.Random) -> Task:
    start, topic = rng.choice(STARTS), rng.choice(TOPICS)
    return Task("starts_with", rng.choice(BEGIN).format(t=topic, w=start), {"kind": "starts_with", "word": start},
                f"{start}, I thought about {topic}.", f"{start}, {topic} was on my mind, calm and bright.")


INCLUDE = ("Write one sentence about {t} that uses the word \"{w}\".",
           "Write a sentence about {t} with the word \"{w}\" in it.")


def _include_word(rng: random.Random) -> Task:
    word, topic = rng.choice(WORDS), rng.choice(TOPICS)
    return Task("include_word", rng.choice(INCLUDE).format(t=topic, w=word), {"kind": "contains_word", "word": word},
                f"{topic.capitalize()} had a {word}.", f"I remember {topic} and the {word} that was there.")


def _list(rng: random.Random) -> Task:
    category = rng.choice(sorted(CATEGORIES))
    count = rng.randint(2, 4)
    options = list(CATEGORIES[category])
    example = rng.sample(options, count)
    ask = rng.choice(("List", "Name", "Give"))
    return Task("list", f"{ask} exactly {count} {category}, separated by commas, and nothing else.",
                {"kind": "list", "count": count, "options": options}, ", ".join(example),
                f"{', '.join(example[:-1])} and {example[-1]} are {category}.")


def _uppercase(rng: random.Random) -> Task:
    word = rng.choice(WORDS)
    return Task("uppercase", f"Write the word \"{word}\" in capital letters.",
                {"kind": "contains_word", "word": word.upper(), "case": "exact"}, f"{word.upper()}",
                f"The word {word} in capital letters is {word.upper()}.")


def _lowercase(rng: random.Random) -> Task:
    topic = rng.choice(TOPICS)
    return Task("lowercase", f"Write one sentence about {topic} using only lowercase letters.",
                {"kind": "lowercase", "min_words": 3}, f"i like {topic.lower()}.",
                f"i think {topic.lower()} is quiet and lovely in the morning.")


FAMILIES: tuple[tuple[str, Callable[[random.Random], Task], int], ...] = (
    ("addition", _addition, 1),
    ("multiplication", _multiplication, 1),
    ("yes_no", _greater, 1),
    ("repeat", _repeat, 1),
    ("starts_with", _starts_with, 1),
    ("include_word", _include_word, 1),
)
"""(family, template, weight): a prompt's family is drawn with these weights. The shipped families are the
candidates whose share of passing samples from pi_ref (SmolLM2-135M-Instruct) lay in [PASS_LOW, PASS_HIGH]
when :func:`probe` drew 16 prompts of each, 4 samples per prompt, with the hf testbed's default sampling."""

REJECTED: tuple[tuple[str, Callable[[random.Random], Task], int], ...] = (
    ("comparison", _comparison, 0),
    ("successor", _successor, 0),
    ("list", _list, 0),
    ("uppercase", _uppercase, 0),
    ("lowercase", _lowercase, 0),
)
"""Candidates the probe rejected: pi_ref almost never passed them (0-6 %), so their pairs would nearly all tie.
``comparison`` passed 30 % under the first form of the ``number`` rule, which also accepted an answer that
named both numbers; under the rule as it is (the smaller number must not appear) it passed 6 %."""

PROBE_ORDER = ("addition", "multiplication", "comparison", "yes_no", "repeat", "starts_with", "include_word",
               "successor", "list", "uppercase", "lowercase")
"""The order :func:`probe` samples the candidates in (fixed, so a table it printed can be reproduced)."""

PASS_LOW, PASS_HIGH = 0.15, 0.85
"""A family is kept when pi_ref's pass share lies here: only then can two samples of a prompt differ."""


def generate(n: int, seed: int, *, exclude: set[str] | frozenset[str] = frozenset()) -> list[Task]:
    """``n`` tasks with distinct prompts (none in ``exclude``), drawn with :data:`FAMILIES`' weights."""
    rng = random.Random(seed)
    names = [f for f, _, _ in FAMILIES]
    weights = [w for _, _, w in FAMILIES]
    makers = {f: make for f, make, _ in FAMILIES}
    tasks: list[Task] = []
    seen = set(exclude)
    attempts = 0
    while len(tasks) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise ValueError(f"cannot draw {n} distinct prompts from the templates (got {len(tasks)})")
        task = makers[rng.choices(names, weights)[0]](rng)
        if task.prompt in seen:
            continue
        seen.add(task.prompt)
        tasks.append(task)
    return tasks


def shipped_sets(seed: int = SEED, train: int = TRAIN_SIZE, test: int = TEST_SIZE) -> dict[str, list[Task]]:
    """The ``train`` and ``test`` sets: disjoint prompts, the test set drawn first from its own seed."""
    test_tasks = generate(test, seed + 1)
    train_tasks = generate(train, seed, exclude={t.prompt for t in test_tasks})
    return {"train": train_tasks, "test": test_tasks}


def write(directory: Path, sets: dict[str, list[Task]] | None = None) -> list[Path]:
    """Write ``train.jsonl`` and ``test.jsonl`` under ``directory``; return their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for split, tasks in (sets or shipped_sets()).items():
        path = directory / f"{split}.jsonl"
        path.write_text("".join(json.dumps(t.row(), sort_keys=True) + "\n" for t in tasks), encoding="utf-8")
        written.append(path)
    return written


def probe(model: str, *, per_family: int = 16, responses: int = 4, max_new_tokens: int = 48, seed: int = 0,
          batch: int = 16) -> list[dict[str, Any]]:
    """Each candidate family's pass share and split share on ``model``'s samples (the calibration of FAMILIES).

    ``per_family`` distinct prompts of every family in :data:`FAMILIES` and :data:`REJECTED`, each sampled
    ``responses`` times with the hf testbed's default sampling (chat template, temperature 1, top-k 50);
    the split share is the share of prompts whose samples do not all score alike. Needs torch and
    transformers; takes about 3 minutes for SmolLM2-135M on 2 CPU cores.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    makers = {family: make for family, make, _ in (*FAMILIES, *REJECTED)}
    rows: list[tuple[str, Task]] = []
    for family, make in ((name, makers[name]) for name in PROBE_ORDER):
        rng, seen = random.Random(f"{seed}:{family}"), set()
        for _ in range(50 * per_family):
            if len(seen) == per_family:
                break
            task = make(rng)
            if task.prompt not in seen:
                seen.add(task.prompt)
                rows.append((family, task))
    tokenizer = AutoTokenizer.from_pretrained(model)
    tokenizer.padding_side = "left"
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    policy = AutoModelForCausalLM.from_pretrained(model).eval()
    torch.manual_seed(seed)
    scores: dict[str, list[list[float]]] = {}
    for start in range(0, len(rows), batch):
        chunk = rows[start:start + batch]
        texts = [tokenizer.apply_chat_template([{"role": "user", "content": t.prompt}], tokenize=False,
                                               add_generation_prompt=True) for _, t in chunk]
        encoded = tokenizer(texts, return_tensors="pt", padding=True)
        with torch.no_grad():
            out = policy.generate(**encoded, do_sample=True, temperature=1.0, top_k=50, top_p=1.0,
                                  max_new_tokens=max_new_tokens, num_return_sequences=responses, pad_token_id=pad)
        decoded = tokenizer.batch_decode(out[:, encoded["input_ids"].shape[1]:], skip_special_tokens=True)
        for i, (family, task) in enumerate(chunk):
            scores.setdefault(family, []).append(
                [verify(task.check, text) for text in decoded[i * responses:(i + 1) * responses]])
    shipped = {f for f, _, _ in FAMILIES}
    table = []
    for family, per_prompt in scores.items():
        flat = [v for row in per_prompt for v in row]
        table.append({"family": family, "prompts": len(per_prompt), "pass_share": sum(flat) / len(flat),
                      "split_share": sum(len(set(row)) > 1 for row in per_prompt) / len(per_prompt),
                      "shipped": family in shipped})
    return table


USAGE = """usage: python -m plugins.testbeds.hf.verifiable write DIRECTORY
       python -m plugins.testbeds.hf.verifiable probe MODEL_DIRECTORY

write: the verifiable regime's train.jsonl and test.jsonl, into DIRECTORY
probe: each candidate family's pass share on the model's samples (how FAMILIES was chosen)"""


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] not in ("write", "probe"):
        print(USAGE, file=sys.stderr)
        return 2
    if args[0] == "write":
        for path in write(Path(args[1])):
            print(path)
        return 0
    print(f"{'family':<16}{'prompts':>8}{'pass':>8}{'split':>8}  kept")
    for row in probe(args[1]):
        print(f"{row['family']:<16}{row['prompts']:>8}{row['pass_share']:>8.3f}{row['split_share']:>8.2f}  "
              f"{'yes' if row['shipped'] else 'no'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

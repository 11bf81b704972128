"""The rules of programmatic checks: a JSON ``check`` with a ``kind`` and its parameters, applied to a response.

Shared by the ``verifier`` judge (:mod:`plugins.judges.verifier`), which scores with them, and the
verifiable regime's tasks (:mod:`plugins.testbeds.hf.verifiable`), which write them. Pure Python.

The rules are lenient about form and strict about content. An arithmetic answer is the last whole
number in the response (as in GSM8K-style checkers, so a response may restate the question first); a
word task asks for the word anywhere in the response, as a whole word; a format task checks the whole
response. The same response always gets the same score.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

_NUMBER = re.compile(r"-?\d+")
_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")


def _last_number(text: str) -> int | None:
    found = _NUMBER.findall(text.replace(",", ""))
    return int(found[-1]) if found else None


def _words(text: str) -> list[str]:
    return _WORD.findall(text)


def _check_number(response: str, answer: int) -> bool:
    return _last_number(response) == int(answer)


def _check_contains_word(response: str, word: str, case: str = "any") -> bool:
    words = _words(response)
    if case == "exact":
        return word in words
    return word.lower() in (w.lower() for w in words)


def _check_yes_no(response: str, answer: str) -> bool:
    for word in _words(response):
        if word.lower() in ("yes", "no"):
            return word.lower() == answer
    return False


def _check_starts_with(response: str, word: str) -> bool:
    words = _words(response)
    return bool(words) and words[0].lower() == word.lower()


def _check_lowercase(response: str, min_words: int = 3) -> bool:
    return len(_words(response)) >= int(min_words) and response == response.lower()


def _check_list(response: str, count: int, options: list[str]) -> bool:
    items = [item.strip(" .\n\t").lower() for item in re.split(r",|\band\b|\n", response)]
    items = [re.sub(r"^(?:[-*\d.)\s]+)", "", item).strip() for item in items]
    items = [item for item in items if item]
    allowed = {o.lower() for o in options}
    return len(items) == int(count) and len(set(items)) == len(items) and all(i in allowed for i in items)


CHECKS: dict[str, Callable[..., bool]] = {
    "number": _check_number,
    "contains_word": _check_contains_word,
    "yes_no": _check_yes_no,
    "starts_with": _check_starts_with,
    "lowercase": _check_lowercase,
    "list": _check_list,
}
"""Each rule: ``rule(response, **parameters) -> bool``."""


def parse_check(check: str | dict[str, Any], where: str = "check") -> dict[str, Any]:
    """The check as a dict with a known ``kind``; ValueError naming ``where`` and the problem otherwise."""
    if isinstance(check, str):
        try:
            check = json.loads(check)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: not JSON ({exc.msg})") from None
    if not isinstance(check, dict) or "kind" not in check:
        raise ValueError(f"{where}: a check is a JSON object with a `kind`, got {check!r}")
    if check["kind"] not in CHECKS:
        raise ValueError(f"{where}: unknown kind {check['kind']!r}; the kinds are {', '.join(sorted(CHECKS))}")
    rule = CHECKS[check["kind"]]
    parameters = {k: v for k, v in check.items() if k != "kind"}
    try:
        rule("", **parameters)
    except TypeError as exc:
        raise ValueError(f"{where}: wrong parameters for kind {check['kind']!r} ({exc})") from None
    return dict(check)


def verify(check: str | dict[str, Any], response: str) -> float:
    """1.0 when ``response`` satisfies ``check``, else 0.0."""
    spec = parse_check(check)
    parameters = {k: v for k, v in spec.items() if k != "kind"}
    return 1.0 if CHECKS[spec["kind"]](response, **parameters) else 0.0

"""The rules of programmatic checks: a JSON ``check`` with a ``kind`` and its parameters, applied to a response.

Shared by the ``verifier`` judge (:mod:`plugins.judges.verifier`), which scores with them, and the
verifiable regime's tasks (:mod:`plugins.testbeds.hf.verifiable`), which write them. Pure Python.

The rules are lenient about form and strict about content. An arithmetic answer is the last number
in the response (as in GSM8K-style checkers, so a response may restate the question first; ``56.0``
is 56), and a number the check excludes (the smaller of two compared numbers) must not appear at all;
a yes/no answer must be the only one of "yes" and "no" the response says; a word task asks for the
word anywhere in the response, as a whole word; a format task checks the whole response. The same
response always gets the same score. :func:`parse_check` validates a check's parameters (names, types,
values) before any response is scored.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")


def _numbers(text: str) -> list[float]:
    return [float(n) for n in _NUMBER.findall(text.replace(",", ""))]


def _words(text: str) -> list[str]:
    return _WORD.findall(text)


def _check_number(response: str, answer: int, exclude: list[int] = ()) -> bool:
    found = _numbers(response)
    return bool(found) and found[-1] == answer and not any(n in found for n in exclude)


def _check_contains_word(response: str, word: str, case: str = "any") -> bool:
    words = _words(response)
    if case == "exact":
        return word in words
    return word.lower() in (w.lower() for w in words)


def _check_yes_no(response: str, answer: str) -> bool:
    said = {w.lower() for w in _words(response)} & {"yes", "no"}
    return said == {answer}


def _check_starts_with(response: str, word: str) -> bool:
    words = _words(response)
    return bool(words) and words[0].lower() == word.lower()


def _check_lowercase(response: str, min_words: int = 3) -> bool:
    return len(_words(response)) >= min_words and response == response.lower()


def _check_list(response: str, count: int, options: list[str]) -> bool:
    items = [item.strip(" .\n\t").lower() for item in re.split(r",|\band\b|\n", response)]
    items = [re.sub(r"^(?:[-*\d.)\s]+)", "", item).strip() for item in items]
    items = [item for item in items if item]
    allowed = {o.lower() for o in options}
    return len(items) == count and len(set(items)) == len(items) and all(i in allowed for i in items)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


#: Each rule's parameters: name -> (required, what a valid value is, that test).
PARAMETERS: dict[str, dict[str, tuple[bool, str, Callable[[Any], bool]]]] = {
    "number": {"answer": (True, "an integer", _integer),
               "exclude": (False, "a list of integers", lambda v: isinstance(v, list) and all(map(_integer, v)))},
    "contains_word": {"word": (True, "a word", _text),
                      "case": (False, '"any" or "exact"', lambda v: v in ("any", "exact"))},
    "yes_no": {"answer": (True, '"yes" or "no"', lambda v: v in ("yes", "no"))},
    "starts_with": {"word": (True, "a word", _text)},
    "lowercase": {"min_words": (False, "a positive integer", lambda v: _integer(v) and v > 0)},
    "list": {"count": (True, "a positive integer", lambda v: _integer(v) and v > 0),
             "options": (True, "a non-empty list of words", lambda v: isinstance(v, list) and bool(v)
                         and all(map(_text, v)))},
}

CHECKS: dict[str, Callable[..., bool]] = {
    "number": _check_number,
    "contains_word": _check_contains_word,
    "yes_no": _check_yes_no,
    "starts_with": _check_starts_with,
    "lowercase": _check_lowercase,
    "list": _check_list,
}
"""Each rule: ``rule(response, **parameters) -> bool``; its parameters are :data:`PARAMETERS`' entry."""


def parse_check(check: str | dict[str, Any], where: str = "check") -> dict[str, Any]:
    """The check as a dict with a known ``kind`` and valid parameters; ValueError naming ``where`` and the
    problem otherwise."""
    if isinstance(check, str):
        try:
            check = json.loads(check)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: not JSON ({exc.msg})") from None
    if not isinstance(check, dict) or "kind" not in check:
        raise ValueError(f"{where}: a check is a JSON object with a `kind`, got {check!r}")
    kind = check["kind"]
    if kind not in CHECKS:
        raise ValueError(f"{where}: unknown kind {kind!r}; the kinds are {', '.join(sorted(CHECKS))}")
    schema = PARAMETERS[kind]
    given = {k: v for k, v in check.items() if k != "kind"}
    unknown = sorted(set(given) - set(schema))
    if unknown:
        raise ValueError(f"{where}: wrong parameters for kind {kind!r}: unknown {', '.join(unknown)} "
                         f"(it takes {', '.join(schema)})")
    for name, (required, wanted, valid) in schema.items():
        if name not in given:
            if required:
                raise ValueError(f"{where}: wrong parameters for kind {kind!r}: {name} is missing ({wanted})")
        elif not valid(given[name]):
            raise ValueError(f"{where}: wrong parameters for kind {kind!r}: {name} must be {wanted}, "
                             f"got {given[name]!r}")
    return dict(check)


def verify(check: str | dict[str, Any], response: str) -> float:
    """1.0 when ``response`` satisfies ``check``, else 0.0."""
    spec = parse_check(check)
    parameters = {k: v for k, v in spec.items() if k != "kind"}
    return 1.0 if CHECKS[spec["kind"]](response, **parameters) else 0.0

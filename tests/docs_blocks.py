"""The command blocks of the README and docs/, with the ``docs-test`` markers that say how each is tested.

A command block is a fenced block whose language is ``bash`` (or ``sh``, ``shell``, ``console``). The
markers are HTML comments on the lines directly above its opening fence, one per line (invisible on
GitHub and in the MkDocs site)::

    <!-- docs-test: skip gpu -- needs several CUDA GPUs -->
    <!-- docs-test: skip network -- downloads from the Hub -->
    <!-- docs-test: run-by .ci/run -->
    <!-- docs-test: run-by tests/test_docs_walkthroughs.py::test_llm_judge_walkthrough -->
    <!-- docs-test: setup "cp docs/reproduction.md ." -->
    <!-- docs-test: substitute "--seeds 0-9" "--seeds 0-1 $TINY" -->
    <!-- docs-test: expect "final win rate" -->

``skip`` takes a reason, ``gpu`` or ``network`` only, and after ``--`` why. ``run-by`` names what runs the
block instead: ``.ci/run`` (which must hold the block verbatim) or a test, which must read the block with
:func:`run_by_block` and its own node id. ``setup`` commands run before the block; ``substitute OLD NEW``
replaces every OLD of the block by NEW, in the order written, and OLD must occur; ``expect TEXT``: the
block's output (whitespace-collapsed) contains TEXT. Arguments are quoted as in a shell (``shlex``). A
block with no ``skip`` or ``run-by`` is run by ``tests/test_docs_commands.py``; the rules are in
docs/development.md (section "Tests of the docs' commands").
"""

from __future__ import annotations

import ast
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Languages of command blocks; each such block is run, run by, or skipped.
COMMAND_LANGUAGES = {"bash", "sh", "shell", "console"}
#: Languages of blocks that show a file or an output, not commands ("" is a block without a language).
OTHER_LANGUAGES = {"", "text", "toml", "python", "sql", "mermaid", "json", "jsonl", "yaml", "csv", "ini", "diff"}
SKIP_REASONS = {"gpu", "network"}
VERBS = {"skip", "run-by", "setup", "substitute", "expect"}

MARKER = re.compile(r"^\s*<!--\s*docs-test:(.*?)-->\s*$")
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([^\s`{]*)")


@dataclass
class Block:
    page: str  # path relative to the repository root
    line: int  # line number of the opening fence, from 1
    language: str
    text: str
    markers: list[tuple[int, str]] = field(default_factory=list)  # (line, the text after "docs-test:")
    skip: tuple[str, str] | None = None  # (reason, why)
    run_by: str | None = None
    setup: list[str] = field(default_factory=list)
    substitutions: list[tuple[str, str]] = field(default_factory=list)
    expect: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def runnable(self) -> bool:
        return self.language in COMMAND_LANGUAGES and self.skip is None and self.run_by is None

    def script(self) -> str:
        """The block as it is run: the setup commands, then the block with its substitutions made."""
        text = self.text
        for old, new in self.substitutions:
            text = text.replace(old, new)
        return "\n".join([*self.setup, text])


def parse(markdown: str, page: str) -> tuple[list[Block], list[str]]:
    """Every fenced block of ``markdown`` with its markers parsed, and the problems outside blocks
    (a marker that is not directly above a block)."""
    lines = markdown.splitlines()
    blocks, problems, pending = [], [], []
    i = 0
    while i < len(lines):
        line = lines[i]
        marker = MARKER.match(line)
        if marker:
            pending.append((i + 1, marker.group(1).strip()))
            i += 1
            continue
        fence = FENCE.match(line)
        if not fence:
            problems += [f"{page}:{n}: a docs-test marker must be directly above a code block" for n, _ in pending]
            pending = []
            i += 1
            continue
        indent, ticks, language = fence.groups()
        end = i + 1
        while end < len(lines) and not re.match(rf"^\s*{re.escape(ticks[0])}{{{len(ticks)},}}\s*$", lines[end]):
            end += 1
        body = [text[len(indent):] if text.startswith(indent) else text.lstrip() for text in lines[i + 1:end]]
        block = Block(page, i + 1, language.lower(), "\n".join(body), markers=pending)
        _read_markers(block)
        blocks.append(block)
        pending = []
        i = end + 1
    problems += [f"{page}:{n}: a docs-test marker must be directly above a code block" for n, _ in pending]
    return blocks, problems


def _read_markers(block: Block) -> None:
    where = block.id
    if block.markers and block.language not in COMMAND_LANGUAGES:
        block.problems.append(f"{where}: docs-test markers on a ```{block.language} block, which is not run")
    text = block.text
    for line, marker in block.markers:
        verb, _, rest = marker.partition(" ")
        rest = rest.strip()
        if verb not in VERBS:
            block.problems.append(f"{where}: unknown docs-test verb {verb!r} (line {line}); known: {sorted(VERBS)}")
            continue
        if verb == "skip":
            reason, _, why = rest.partition("--")
            reason = reason.strip()
            if reason not in SKIP_REASONS:
                block.problems.append(f"{where}: skip reason {reason!r} is not allowed; only {sorted(SKIP_REASONS)}")
            elif not why.strip():
                block.problems.append(f"{where}: skip {reason} needs a why after '--'")
            if block.skip or block.run_by:
                block.problems.append(f"{where}: a block is skipped or run by something else, not both")
            block.skip = (reason, why.strip())
            continue
        if verb == "run-by":
            if not rest or " " in rest:
                block.problems.append(f"{where}: run-by takes one target, .ci/run or tests/FILE.py::TEST")
            if block.skip or block.run_by:
                block.problems.append(f"{where}: a block is skipped or run by something else, not both")
            block.run_by = rest
            continue
        try:
            args = shlex.split(rest)
        except ValueError as error:
            block.problems.append(f"{where}: cannot read the arguments of {verb} (line {line}): {error}")
            continue
        if verb == "substitute":
            if len(args) != 2 or not args[0]:
                block.problems.append(f'{where}: substitute takes two quoted strings, "OLD" "NEW" (line {line})')
                continue
            old, new = args
            if old not in text:
                block.problems.append(f"{where}: substitute {old!r}: not found in the block (line {line})")
            text = text.replace(old, new)
            block.substitutions.append((old, new))
        elif len(args) != 1 or not args[0].strip():
            block.problems.append(f'{where}: {verb} takes one quoted string (line {line})')
        elif verb == "setup":
            block.setup.append(args[0])
        else:
            block.expect.append(args[0])
    if (block.skip or block.run_by) and (block.setup or block.substitutions or block.expect):
        block.problems.append(f"{where}: setup, substitute and expect are only for blocks that "
                              "tests/test_docs_commands.py runs")


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def collect() -> tuple[list[Block], list[str]]:
    """Every fenced block of the README and docs/, and the problems outside blocks."""
    blocks, problems = [], []
    for path in pages():
        found, outside = parse(path.read_text(encoding="utf-8"), path.relative_to(ROOT).as_posix())
        blocks += found
        problems += outside
    return blocks, problems


def command_blocks() -> list[Block]:
    return [block for block in collect()[0] if block.language in COMMAND_LANGUAGES]


def audit(blocks: list[Block], outside: list[str] = (), root: Path = ROOT) -> list[str]:
    """What is wrong: bad markers, and command blocks that nothing runs."""
    problems = list(outside)
    for block in blocks:
        problems += block.problems
        if block.language not in COMMAND_LANGUAGES | OTHER_LANGUAGES:
            problems.append(f"{block.id}: a ```{block.language} block is neither a command block "
                            f"({', '.join(sorted(COMMAND_LANGUAGES))}), which is run, nor a file or output "
                            f"({', '.join(sorted(OTHER_LANGUAGES - {''}))}): nothing runs it")
        if block.run_by:
            problems += _check_run_by(block, root)
    return problems


def _check_run_by(block: Block, root: Path) -> list[str]:
    target = block.run_by
    if target == ".ci/run":
        ci = root / ".ci" / "run"
        if not ci.is_file() or block.text.strip() not in ci.read_text(encoding="utf-8"):
            return [f"{block.id}: run-by .ci/run, but .ci/run does not hold the block verbatim"]
        return []
    path, _, name = target.partition("::")
    file = root / path
    if not (path.startswith("tests/") and path.endswith(".py") and name and file.is_file()):
        return [f"{block.id}: run-by {target!r}: not .ci/run nor an existing tests/FILE.py::TEST"]
    source = file.read_text(encoding="utf-8")
    functions = {node.name: node for node in ast.walk(ast.parse(source)) if isinstance(node, ast.FunctionDef)}
    if name not in functions:
        return [f"{block.id}: run-by {target!r}: {path} has no test {name}"]
    reads = [node for node in ast.walk(functions[name]) if isinstance(node, ast.Call)
             and getattr(node.func, "id", getattr(node.func, "attr", None)) == "run_by_block"
             and [getattr(arg, "value", None) for arg in node.args] == [target]]
    if not reads:
        return [f"{block.id}: run-by {target!r}: that test does not read the block (run_by_block({target!r}))"]
    return []


def run_by_block(test: str) -> Block:
    """The one command block marked ``run-by TEST`` (a node id such as ``tests/test_x.py::test_y``)."""
    found = [block for block in command_blocks() if block.run_by == test]
    assert len(found) == 1, f"{len(found)} blocks are marked run-by {test}; expected one"
    return found[0]

"""Reading text files people hand the harness, with the line at fault in every error."""

from __future__ import annotations

from pathlib import Path


class NotUTF8Error(ValueError):
    """A file that is not UTF-8 text; ``line`` is the first line holding a bad byte."""

    def __init__(self, path: Path, line: int):
        super().__init__(f"{path}: line {line} is not UTF-8 text; save the file as UTF-8")
        self.path, self.line = path, line


def read_utf8(path: Path) -> str:
    """The text of ``path`` (a UTF-8 byte-order mark is dropped); NotUTF8Error naming the line otherwise."""
    raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise NotUTF8Error(Path(path), raw[: exc.start].count(b"\n") + 1) from None

"""Registers every plan file of this package (``yang2024.toml`` ...) through ``register_studies``."""

from __future__ import annotations

from pathlib import Path

from harness import hookimpl

STUDY_DIR = Path(__file__).resolve().parent


@hookimpl
def register_studies(register):
    for path in sorted(STUDY_DIR.glob("*.toml")):
        register(path)

"""pairsel-harness: a plugin-based benchmark for which preference pairs to annotate in iterative DPO."""

from harness.hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = ["__version__", "hookimpl"]

"""What a run records about where its numbers came from."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
import sys
from pathlib import Path

from harness import __version__

LIBRARIES = (
    "numpy",
    "torch",
    "pluggy",
    "typer",
    "rich",
    "sqlite-utils",
    "safetensors",
    "transformers",
    "trl",
    "accelerate",
    "datasets",
    "tokenizers",
    "vllm",
    "llm-blender",
    "alpaca-eval",
)


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that can change a run's numbers (absent ones skipped)."""
    versions = {
        "python": platform.python_version(),
        "pairsel-harness": __version__,
        "platform": platform.platform(),
    }
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    versions.update(kernel_paths())
    return versions


def kernel_paths() -> dict[str, str]:
    """Which of torch's compute kernels ran: its CPU vector capability, and the GPU when one is used.

    Floating-point results depend on them: on one machine the same command gave a final
    win rate of 0.879 with torch's AVX2 kernels and 0.851 with ``ATEN_CPU_CAPABILITY=default``,
    so identical numbers are only to be expected where these match. Called when a run
    is recorded, which is about to import torch anyway.
    """
    try:
        import torch
    except ImportError:
        return {}
    paths = {"torch_cpu_capability": str(torch.backends.cpu.get_cpu_capability())}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        paths["cuda_device"] = torch.cuda.get_device_name()
    return paths


def git_commit(path: Path | None = None) -> str | None:
    """The commit of the harness's source tree, with ``-dirty`` if it has changes; None outside git."""
    where = path or Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if dirty else commit


def command_line() -> str:
    """The command as typed, for the record."""
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])

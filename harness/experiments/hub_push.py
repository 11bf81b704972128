"""Upload an exported folder to a Hugging Face Hub repository (``harness export preferences --push-to-hub``).

One path: :func:`push_folder` creates the repository if needed
(``HfApi.create_repo(..., exist_ok=True)``) and uploads the folder in one commit
(``HfApi.upload_folder``). The client comes from :func:`hub_api`, the one
place that makes it; tests replace it with a recorder, so no test reaches the
network. The token is huggingface_hub's own (``HF_TOKEN`` or ``hf auth login``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.errors import HarnessError, UsageError


def hub_api() -> Any:
    """A ``huggingface_hub.HfApi``; UsageError when huggingface_hub is absent or the Hub is switched off."""
    try:
        from huggingface_hub import HfApi, constants
    except ImportError:
        raise UsageError("--push-to-hub needs huggingface_hub: pip install huggingface_hub (the [hf] extra has "
                         "it)") from None
    if constants.HF_HUB_OFFLINE:
        raise UsageError("--push-to-hub cannot reach the Hub while HF_HUB_OFFLINE is set; unset it and push again")
    return HfApi()


def push_folder(folder: Path, repo_id: str, *, private: bool, repo_type: str = "dataset",
                message: str = "Upload with pairsel-harness") -> list[str]:
    """Upload every file under ``folder`` to ``repo_id`` (created when missing, ``private`` if new); the paths
    uploaded, relative to the repository root. UsageError for a malformed id; HarnessError (exit 1, naming the
    repository) when the Hub refuses or cannot be reached."""
    from plugins._hf.hub import HUB_ID

    if not HUB_ID.match(repo_id):
        raise UsageError(f"--push-to-hub {repo_id!r} is not a Hub repository id; write ORG/NAME (or USER/NAME)")
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    api = hub_api()
    try:
        api.create_repo(repo_id=repo_id, repo_type=repo_type, private=private, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type=repo_type, commit_message=message)
    except UsageError:
        raise
    except Exception as exc:  # HfHubHTTPError (no token, no rights), connection errors
        raise HarnessError(f"pushing to the Hub repository {repo_id} failed: {type(exc).__name__}: {exc}") from None
    return files

"""``harness export``: a run's labelled pairs as a preference dataset, and a run's policy as a model, in formats
other tools read as they are."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Optional

import typer

from harness.cli.common import DbOption, cli_errors, resolve_db, stderr_console

EXPORT_HELP = """\
Export what a run paid for, in formats other tools read.

[bold]Examples[/]

  harness export preferences r1a2b3c4d5 --out prefs.jsonl
  harness export preferences r1a2b3c4d5 --format parquet --out prefs.parquet --iteration 1
  harness export preferences r1a2b3c4d5 --format conversational --out prefs-chat.jsonl
  harness export preferences r1a2b3c4d5 --format datasets --out prefs-ds --push-to-hub me/prefs --private
  harness export model r1a2b3c4d5 --out policy-final
  harness export model r1a2b3c4d5 --iteration 1 --out policy-it1
"""

export_app = typer.Typer(help=EXPORT_HELP, no_args_is_help=True, rich_markup_mode="rich")
#: jsonl / parquet: plain-text prompt, chosen, rejected; conversational: the same as message lists (JSONL);
#: datasets: a ``datasets.Dataset.save_to_disk`` folder of the plain-text rows.
PREFERENCE_FORMATS = ("jsonl", "parquet", "conversational", "datasets")


@export_app.command("preferences")
def preferences_command(
    run_id: Annotated[str, typer.Argument(metavar="RUN_ID", help="The run whose labelled pairs to export.")],
    out: Annotated[Path, typer.Option("--out", metavar="PATH",
                                      help="The file to write (the folder, for --format datasets).")],
    file_format: Annotated[str, typer.Option(
        "--format", help="jsonl, parquet, conversational (JSONL in TRL's conversational format) or datasets "
                         "(a datasets save_to_disk folder).")] = "jsonl",
    iteration: Annotated[
        Optional[list[int]], typer.Option("--iteration", help="Only these iterations (repeatable). Default: all.")
    ] = None,
    push_to_hub: Annotated[Optional[str], typer.Option(
        "--push-to-hub", metavar="REPO",
        help="Also upload what --out holds, with a dataset card, to this Hugging Face Hub dataset repository "
             "(ORG/NAME; created if missing). Uses your Hugging Face token (HF_TOKEN or hf auth login).")] = None,
    private: Annotated[bool, typer.Option("--private", help="With --push-to-hub: create the repository "
                                                            "private.")] = False,
    db: DbOption = None,
) -> None:
    """The run's labelled pairs as prompt / chosen / rejected rows (ties left out).

    TRL's DPOTrainer and datasets.load_dataset("json" or "parquet", ...) read
    the file as it is; datasets.load_from_disk reads the datasets folder.
    --format conversational writes TRL's conversational preference format:
    prompt is a list of messages ([{"role": "user", "content": ...}]), chosen
    and rejected one assistant message each. Extra columns say where each row
    came from: pair_id, iteration, source (annotator) and annotator (who, when
    known).
    """
    from harness.cli.label import open_run
    from harness.errors import UsageError
    from leaderboard.labels import conversational_rows, preference_rows

    with cli_errors():
        if file_format not in PREFERENCE_FORMATS:
            raise UsageError(f"--format must be one of {', '.join(PREFERENCE_FORMATS)}; got {file_format!r}")
        if private and push_to_hub is None:
            raise UsageError("--private applies to --push-to-hub REPO; give the repository to push to")
        if push_to_hub is not None:
            from plugins._hf.hub import HUB_ID

            if not HUB_ID.match(push_to_hub):
                raise UsageError(f"--push-to-hub {push_to_hub!r} is not a Hub repository id; write ORG/NAME")
        board, _ = open_run(resolve_db(db), run_id)
        select = conversational_rows if file_format == "conversational" else preference_rows
        rows = select(board, run_id, iteration)
        if not rows:
            raise UsageError(f"run {run_id} has no labelled pairs to export"
                             + (f" in iteration(s) {', '.join(map(str, iteration))}" if iteration else ""))
        if file_format == "datasets":
            from harness.experiments.model_export import check_out

            check_out(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.partial")  # never a half-written file under the asked name
        try:
            if file_format in ("jsonl", "conversational"):
                with tmp.open("w", encoding="utf-8") as handle:
                    for row in rows:
                        handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            elif file_format == "parquet":
                _write_parquet(rows, tmp)
            else:
                _write_datasets(rows, tmp)
                if out.exists():  # an empty folder (check_out)
                    out.rmdir()
            tmp.replace(out)
        finally:
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
    stderr_console().print(f"wrote {len(rows)} preference pair(s) of run {run_id} to {out}")
    if push_to_hub is not None:
        with cli_errors():
            files = _push_preferences(out, push_to_hub, private=private, run_id=run_id, file_format=file_format,
                                      count=len(rows))
        stderr_console().print(f"pushed {len(files)} file(s) to the Hub dataset repository {push_to_hub}"
                               + (" (private)" if private else ""))


def _write_parquet(rows: list[dict], path: Path) -> None:
    from harness.errors import UsageError

    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise UsageError("--format parquet needs pyarrow: pip install pyarrow (the [hf] extra has it)") from None
    pq.write_table(pa.Table.from_pylist(rows), path)


def _write_datasets(rows: list[dict], path: Path) -> None:
    from harness.errors import UsageError

    try:
        import datasets
    except ImportError:
        raise UsageError("--format datasets needs the datasets package: pip install -c constraints.txt -e '.[hf]'"
                         ) from None
    datasets.disable_progress_bars()  # one line says what was written
    datasets.Dataset.from_list(rows).save_to_disk(str(path))


def _push_preferences(out: Path, repo_id: str, *, private: bool, run_id: str, file_format: str,
                      count: int) -> list[str]:
    """Upload ``out`` (its file, or its folder's files) and a dataset card to ``repo_id``; the files uploaded."""
    from harness.experiments.hub_push import push_folder

    with tempfile.TemporaryDirectory(prefix="pairsel-push-") as folder:
        staging = Path(folder)
        if out.is_dir():
            shutil.copytree(out, staging, dirs_exist_ok=True)
        else:
            shutil.copy2(out, staging / out.name)
        (staging / "README.md").write_text(_dataset_card(run_id, file_format, count, out.name), encoding="utf-8")
        return push_folder(staging, repo_id, private=private)


def _dataset_card(run_id: str, file_format: str, count: int, name: str) -> str:
    shape = ("TRL's conversational preference format (prompt: a list of messages; chosen, rejected: one assistant "
             "message each)" if file_format == "conversational" else
             "TRL's standard preference format (prompt, chosen, rejected as text)")
    how = {"jsonl": f'`datasets.load_dataset("json", data_files="{name}")`',
           "conversational": f'`datasets.load_dataset("json", data_files="{name}")`',
           "parquet": f'`datasets.load_dataset("parquet", data_files="{name}")`',
           "datasets": "`datasets.load_from_disk` on a local copy of this repository"}[file_format]
    return ("---\ntags:\n- dpo\n- preference\n- trl\n- pairsel-harness\n---\n\n"
            f"# Preference pairs of run {run_id}\n\n"
            f"{count} labelled pairs (ties left out) that run {run_id} of pairsel-harness bought, written by "
            f"`harness export preferences {run_id} --format {file_format}` in {shape}. Extra columns: pair_id, "
            f"iteration, source (the annotator) and annotator (who, when known). Load with {how}.\n")


@export_app.command("model")
def model_command(
    run_id: Annotated[str, typer.Argument(metavar="RUN_ID", help="The run whose policy to export (hf testbed).")],
    out: Annotated[Path, typer.Option("--out", metavar="DIR", help="The folder to write (new, or empty).")],
    iteration: Annotated[Optional[int], typer.Option(
        "--iteration", metavar="K", min=0,
        help="The policy after iteration K (0 = pi_0). Default: the run's latest checkpoint. Any K needs a run "
             "started with --keep-checkpoints all.")] = None,
    adapter: Annotated[bool, typer.Option(
        "--adapter", help="For a LoRA run (lora_rank > 0): write the adapter as PEFT saves one (adapter_config.json "
                          "naming the base model) instead of merging it into the base weights.")] = False,
    db: DbOption = None,
) -> None:
    """A run's policy as a folder AutoModelForCausalLM.from_pretrained and AutoTokenizer.from_pretrained load.

    The folder holds the config and tokenizer of the run's model, the
    checkpoint's weights (model.safetensors), a generation_config.json with the
    sampling settings the run used (temperature, top_k, top_p,
    max_new_tokens), and a model card (README.md) with the run id, config
    hash, budget, strategy and metrics. A LoRA run's adapter is merged into
    the base weights; with --adapter it is written as a PEFT adapter
    (adapter_config.json, adapter_model.safetensors) that
    PeftModel.from_pretrained loads on the base model. Exit 2, writing nothing, for an
    iteration whose checkpoint was not kept, a run of a testbed other than hf,
    a policy file whose sha256 differs from the one the run recorded, or an
    --out that exists and is not empty.
    """
    from harness.cli.label import open_run
    from harness.experiments.model_export import export_model

    with cli_errors():
        db_path = resolve_db(db)
        board, run = open_run(db_path, run_id)
        exported = export_model(board, run, db_path=db_path, out=out, iteration=iteration, adapter=adapter)
    stderr_console().print(f"wrote the policy of run {run_id} after iteration {exported.iteration} to {out} "
                           f"({', '.join(exported.files)})")

"""``leantune data ...``: inspect datasets."""
from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from .app import DATA_HELP, SEED_HELP, SEED_MAX, app

data_app = typer.Typer(help="Inspect datasets and export them as SFT JSONL.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("stats")
def stats(
    data: str = typer.Option("games", "--data", help=DATA_HELP),
    seed: int = typer.Option(0, "--seed", min=0, max=SEED_MAX, help=SEED_HELP + " The counts themselves draw nothing at random."),
) -> None:
    """Print users, items, samples (and users with validation/test items only), history-length
    percentiles and users with targets.

    Examples:

      leantune data stats --data games

      leantune data stats --data path/to/folder                       # a DEALRec-format folder of your own
    """
    from ..data import load_dataset
    from ..data.stats import dataset_stats

    st = dataset_stats(load_dataset(data))
    table = Table(title=f"dataset {st.name}", show_header=False)
    for key, value in st.rows():
        table.add_row(key, value)
    Console().print(table)


@data_app.command("export")
def export(
    task: str = typer.Option(..., "--task", help="'attributes' (OA-Mine products) or 'recommendation' (sequence data)."),
    data: str = typer.Option(None, "--data", help="The task's data (default: oa-mine / games)."),
    fmt: str = typer.Option("chat", "--format", help="'chat' ({\"messages\": [...]}, the answer as the assistant's message) or 'prompt-completion' ({\"prompt\": ..., \"completion\": ...})."),
    split: str = typer.Option("train", "--split", help="train, valid or test."),
    limit: int = typer.Option(None, "--limit", help="A seeded sample of N units (default: all)."),
    seed: int = typer.Option(0, "--seed", min=0, max=SEED_MAX, help=SEED_HELP + " Draws the --limit sample."),
    out: Path = typer.Option(..., "--out", help="JSONL file to write (replaced atomically)."),
) -> None:
    """Write a shipped task as an SFT JSONL file, the input of `--task sft` (and of TRL's SFTTrainer).

    Example: leantune data export --task attributes --format chat --out runs/oa-mine-train.jsonl
    """
    from ..io import write_jsonl
    from ..pipelines.sft import export_records

    records = export_records(task, data, split, fmt, limit, seed)
    write_jsonl(out, records)
    print(f"wrote {len(records):,} {fmt} records ({task} {split}) to {out}")

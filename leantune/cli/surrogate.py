"""``leantune surrogate ...``: the SASRec surrogate that influence, GraNd and EL2N score with."""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import Optional

import typer

from .app import DATA_HELP, SEED_HELP, SEED_MAX, app

surrogate_app = typer.Typer(help="Train and evaluate the SASRec surrogate model.", no_args_is_help=True)
app.add_typer(surrogate_app, name="surrogate")


@surrogate_app.command("train")
def train(
    data: str = typer.Option("games", "--data", help=DATA_HELP),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: the leantune cache folder that `leantune prune` looks in for this data, settings and seed, so pruning reuses the model). Re-running reuses a finished model or resumes."),
    epochs: int = typer.Option(200, "--epochs", min=0, help="Maximum training epochs."),
    patience: int = typer.Option(5, "--patience", min=0, help="Stop after this many validations without a better NDCG@10 (0: never)."),
    lr: float = typer.Option(1e-3, "--lr", help="Adam learning rate."),
    batch_size: int = typer.Option(500, "--batch-size", min=1, help="Users per training batch."),
    hidden: int = typer.Option(64, "--hidden", min=1, help="Hidden size."),
    dropout: float = typer.Option(0.5, "--dropout", min=0.0, max=0.99, help="Dropout rate."),
    max_len: int = typer.Option(50, "--max-len", min=1, help="Most recent items kept per history."),
    seed: int = typer.Option(0, "--seed", min=0, max=SEED_MAX, help=SEED_HELP),
) -> None:
    """Train SASRec with early stopping on validation NDCG@10; print test metrics against most-popular.

    Examples:

      leantune surrogate train --data games                           # the surrogate `leantune prune` reuses

      leantune surrogate train --data ml-100k --epochs 50 --out runs/sasrec-ml100k
    """
    from rich.console import Console
    from rich.table import Table

    from ..data import load_dataset
    from ..models.sasrec import SASRecConfig
    from ..train.sasrec import surrogate_key, train_surrogate
    from ..paths import cache_dir, display_path

    from ..errors import LeantuneError

    cfg = SASRecConfig(hidden=hidden, dropout=dropout, max_len=max_len, lr=lr, batch_size=batch_size,
                       max_epochs=epochs, patience=patience)  # bad settings are refused before the data loads
    if out is not None and out.exists() and not out.is_dir():
        raise LeantuneError(f"--out {out}: is a file, not a folder")
    dataset = load_dataset(data)
    # Every setting is recorded, defaults included, paths as reports write them; --out only when given (the
    # default folder follows from the settings, and a cache path is this machine's).
    where = [] if out is None else ["--out", display_path(out)]
    out = out or cache_dir("surrogate", surrogate_key(dataset, cfg, seed))
    shown = display_path(data) if Path(data).exists() else data  # a folder, or a shipped data set's name
    command = shlex.join(["leantune", "surrogate", "train", "--data", shown, *where, "--epochs", str(epochs),
                          "--patience", str(patience), "--lr", str(lr), "--batch-size", str(batch_size), "--hidden",
                          str(hidden), "--dropout", str(dropout), "--max-len", str(max_len), "--seed", str(seed)])
    meta = train_surrogate(dataset, out, cfg, seed=seed, progress=True, note={"command": command})

    console = Console()
    test = meta["test"]
    table = Table(title=f"test metrics on {dataset.name} ({len(dataset.test_samples):,} users)")
    for column in ("metric", "SASRec", "most-popular"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for key in test["sasrec"]:
        table.add_row(key, f"{test['sasrec'][key]:.4f}", f"{test['most_popular'][key]:.4f}")
    console.print(table)
    console.print(
        f"best epoch {meta['best_epoch']} of {meta['epochs_run']} (valid NDCG@10 {meta['best_valid_ndcg@10']:.4f}), "
        f"training {meta['train_seconds']:.0f} s; written to {out / 'surrogate.json'}"
    )

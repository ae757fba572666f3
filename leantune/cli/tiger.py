"""``leantune tiger ...``: TIGER generative retrieval (semantic IDs, training, evaluation)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from .app import DATA_HELP, SEED_HELP, SEED_MAX, app

tiger_app = typer.Typer(
    help="TIGER: items as semantic-ID tuples (RQ-VAE), a small T5 generating the next item's tuple.",
    no_args_is_help=True,
)
app.add_typer(tiger_app, name="tiger")

IDS_HELP = "Semantic-IDs folder (default: runs/tiger-<data>/; built there if missing)."
DEVICE_HELP = "'auto' (CUDA when available, else CPU), 'cpu' or 'cuda'."
PRESET_HELP = "Model size: 'paper' (TIGER: 4+4 layers, d_model 128, FFN 1024) or 'small' (2+2, d_model 64, FFN 256; ~20x cheaper on CPU)."


def _device(name: str) -> str:
    from ..device import resolve_device

    return resolve_device(name)


def _check_device(name: str) -> None:
    _device(name)  # a one-line error for anything but auto, cpu, cuda, cuda:N


def _check_train_config(cfg) -> None:
    """The `tiger train` settings, checked before the semantic IDs are built (which takes minutes)."""
    import math

    from ..errors import LeantuneError

    if cfg.val_metric not in ("loss", "recall@10"):
        raise LeantuneError(f"--val-metric {cfg.val_metric!r}: choose 'loss' or 'recall@10'")
    for flag, value, least in (("--epochs", cfg.max_epochs, 1), ("--min-steps", cfg.min_steps, 0), ("--batch-size", cfg.batch_size, 1),
                               ("--val-users", cfg.val_users, 0), ("--patience", cfg.patience, 1)):
        if value < least:
            raise LeantuneError(f"{flag} {value}: must be at least {least}")
    if not (math.isfinite(cfg.lr) and cfg.lr > 0):
        raise LeantuneError(f"--lr {cfg.lr}: must be a positive number")


def _print_stats(stats) -> None:
    console = Console(soft_wrap=True)
    for line in stats.lines():
        console.print(f"[yellow]{line}[/yellow]" if line.startswith("warning") else line, highlight=False)


def _semantic_ids(dataset, ids: Optional[Path], seed: int, progress: bool):
    from ..models.tiger import default_dir, stored_semantic_ids
    from ..train.rqvae import semantic_ids_for

    folder = ids or default_dir(dataset.name)
    if stored_semantic_ids(folder) is None:  # said before the build, which takes minutes
        Console().print(f"no semantic IDs in {folder}: building them", highlight=False)
    sids, _, built = semantic_ids_for(dataset, folder, seed=seed, progress=progress)
    if built:
        _print_stats(sids.stats)
    return sids


@tiger_app.command("semantic-ids")
def semantic_ids_cmd(
    data: str = typer.Option("games", "--data", help=DATA_HELP),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: runs/tiger-<data>/)."),
    epochs: int = typer.Option(50, "--epochs", help="RQ-VAE passes over all items."),
    levels: int = typer.Option(3, "--levels", help="Residual quantisation levels (a collision token is added after them)."),
    codebook_size: int = typer.Option(256, "--codebook-size", help="Codes per level."),
    seed: int = typer.Option(0, "--seed", min=0, max=SEED_MAX, help=SEED_HELP),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Embed item text (all-MiniLM-L6-v2), train the RQ-VAE, write semantic_ids.json and rqvae.safetensors.

    Prints codebook usage per level and the collision rate; a collapsed level prints a warning.
    Re-running with the same settings reuses the folder; an interrupted run resumes.
    
    Examples:

      leantune tiger semantic-ids --data games                         # -> runs/tiger-games/semantic_ids.json

      leantune tiger semantic-ids --data ml-100k --codebook-size 64 --epochs 20
    """
    from ..data import load_dataset
    from ..models.rqvae import RQVAEConfig
    from ..train.rqvae import build_semantic_ids
    from ..models.tiger import default_dir

    cfg = RQVAEConfig(epochs=epochs, levels=levels, codebook_size=codebook_size)  # refuses bad sizes before any work
    dataset = load_dataset(data)
    folder = out or default_dir(dataset.name)
    sids = build_semantic_ids(dataset, folder, cfg, seed=seed, progress=not quiet)
    _print_stats(sids.stats)
    print(f"wrote {folder}/semantic_ids.json and {folder}/rqvae.safetensors")


@tiger_app.command("train")
def train_cmd(
    data: str = typer.Option("games", "--data", help=DATA_HELP),
    selection: Optional[Path] = typer.Option(None, "--selection", help="selection.json (or its folder) from `leantune prune`: train on its sample_ids only."),
    ids: Optional[Path] = typer.Option(None, "--ids", help=IDS_HELP),
    out: Optional[Path] = typer.Option(None, "--out", help="Run folder (default: runs/tiger-<data>/full or /<selection folder name>)."),
    preset: str = typer.Option("paper", "--preset", help=PRESET_HELP),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Maximum epochs (default 20)."),
    min_steps: Optional[int] = typer.Option(None, "--min-steps", help="Small subsets: run at least this many optimiser steps."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Training batch size (default 256)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Peak learning rate (default 1e-3)."),
    val_metric: Optional[str] = typer.Option(None, "--val-metric", help="Early stopping on 'loss' (default) or 'recall@10' (constrained beam search) of the validation subset."),
    val_users: Optional[int] = typer.Option(None, "--val-users", help="Seeded validation subset size (default 2000; 0 = all)."),
    patience: Optional[int] = typer.Option(None, "--patience", help="Validations without improvement before stopping (default 3)."),
    seed: int = typer.Option(0, "--seed", min=0, max=SEED_MAX, help=SEED_HELP),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Train TIGER from scratch on all training samples or a selection; early stopping on validation.

    Writes model.safetensors (best weights), tiger_config.json and train.json into the run folder.
    Re-running the same command reuses a finished folder and resumes an interrupted one.

    Examples:

      leantune tiger train --data games                                # all training samples -> runs/tiger-games/full

      leantune tiger train --selection runs/prune-games-dealrec-b1024-s0 --preset small
    """
    from ..data import load_dataset
    from ..models.tiger import default_dir, tiger_config
    from ..train.tiger import select_train_samples, train_tiger
    from ..pruning import read_sample_ids

    dataset = load_dataset(data)
    sample_ids = read_sample_ids(selection) if selection else None
    select_train_samples(dataset, sample_ids)  # bad ids are refused before the semantic IDs are built
    cfg = tiger_config(preset, max_epochs=epochs, min_steps=min_steps, batch_size=batch_size, lr=lr,
                       val_metric=val_metric, val_users=val_users, patience=patience)
    _check_train_config(cfg)
    _check_device(device)
    sids = _semantic_ids(dataset, ids, seed, not quiet)
    if out is None:
        name = "full" if selection is None else (selection if selection.is_dir() else selection.parent).name
        out = default_dir(dataset.name) / name
    run = train_tiger(dataset, sids, sample_ids, out, cfg, seed=seed, progress=not quiet, device=_device(device))
    print(f"trained on {run.n_samples} samples: {run.epochs} epochs, {run.steps} steps, {run.wall_s:.0f}s; "
          f"best val {run.val_metric} {run.best_val:.4f} at epoch {run.best_epoch} ({run.stopped}) -> {out}")


@tiger_app.command("evaluate")
def evaluate_cmd(
    model: Path = typer.Option(..., "--model", help="Run folder written by `leantune tiger train`."),
    data: str = typer.Option("games", "--data", help=DATA_HELP),
    ids: Optional[Path] = typer.Option(None, "--ids", help=IDS_HELP),
    split: str = typer.Option("test", "--split", help="'test' (history = train + valid items) or 'valid'."),
    users: int = typer.Option(0, "--users", help="Evaluate a seeded random subset of this many users (0 = all)."),
    beam: int = typer.Option(20, "--beam", help="Beam width (at least 20, the largest K)."),
    seed: int = typer.Option(0, "--seed", min=0, max=SEED_MAX, help=SEED_HELP),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Recall/NDCG@5/10/20 of constrained beam search; writes evaluation-<split>.json and the per-user
    results evaluation-<split>/per_unit.jsonl (for `leantune compare`) into the model folder.

    Examples:

      leantune tiger evaluate --model runs/tiger-games/full --users 1000
    """
    from ..data import load_dataset
    from ..errors import LeantuneError
    from ..evaluation.metrics import format_metrics
    from ..evaluation.units import write_per_unit
    from ..io import write_json
    from ..evaluation.tiger import evaluate_tiger

    if split not in ("test", "valid"):
        raise LeantuneError(f"--split {split!r}: choose 'test' or 'valid'")
    if beam < 20:
        raise LeantuneError(f"--beam {beam}: must be at least 20 to rank 20 items")
    if users < 0:
        raise LeantuneError(f"--users {users}: must be at least 0 (0 = all)")
    _check_device(device)
    from ..models.tiger import MODEL_FILE

    if not (model / MODEL_FILE).is_file():  # before the semantic IDs are built
        raise LeantuneError(f"{model / MODEL_FILE}: no trained weights (run `leantune tiger train` first)")
    dataset = load_dataset(data)
    sids = _semantic_ids(dataset, ids, seed, not quiet)
    result = evaluate_tiger(dataset, sids, model, split=split, users=users, seed=seed, beam_size=beam, progress=not quiet,
                            device=_device(device))
    write_per_unit(model / f"evaluation-{split}", result.pop("per_unit"))
    write_json(model / f"evaluation-{split}.json", result)
    print(f"{split}: {result['users']} users, {result['wall_s']:.0f}s  {format_metrics(result['metrics'])}")

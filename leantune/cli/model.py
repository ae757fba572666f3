"""``leantune model ...``: prepare and inspect causal LMs."""
from __future__ import annotations

import time

import typer

from .app import MODEL_NAMES_HELP, SEED_HELP, SEED_MAX, app

model_app = typer.Typer(help="Prepare causal LMs (converted once into a local safetensors cache).", no_args_is_help=True)
app.add_typer(model_app, name="model")


@model_app.command("prepare")
def prepare(
    name: str = typer.Argument("smollm2", help=f"Model to prepare: {MODEL_NAMES_HELP}."),
    force: bool = typer.Option(False, help="Convert again even if a cached checkpoint exists."),
    seed: int = typer.Option(0, "--seed", min=0, max=SEED_MAX, help=SEED_HELP + " Accepted like every command's; converting a shipped model draws nothing random, so it has no effect (the 'tiny' model's random weights are always built from seed 0)."),
) -> None:
    """Convert a shipped GGUF model into a cached safetensors checkpoint (once; later loads take ~1 s).

    Examples:

      leantune model prepare smollm2

      leantune model prepare gemma3-270m --force                      # convert again
    """
    from ..models.llm import load_model, prepare_model

    start = time.perf_counter()
    folder = prepare_model(name, force=force)
    prepared = time.perf_counter() - start
    start = time.perf_counter()
    model, tokenizer = load_model(str(folder))
    loaded = time.perf_counter() - start
    params = sum(p.numel() for p in model.parameters())
    print(f"{name}: {folder}  ({params / 1e6:.1f}M parameters, vocab {len(tokenizer)}; prepare {prepared:.1f}s, load {loaded:.1f}s)")

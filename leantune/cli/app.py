"""The root Typer application and shared option types."""
from __future__ import annotations

import typer

from ..models.llm import models_help

app = typer.Typer(
    name="leantune",
    help="Data- and compute-efficient LoRA fine-tuning of LLMs: which samples, how many, which hyperparameters.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

DATA_HELP = "Dataset: 'games' (shipped Amazon Games), 'ml-100k' (MovieLens-100K from recbole), or a folder in the DEALRec format."
# Every model name --model accepts (from leantune.models.llm, so a new shipped model shows up in every help text).
MODEL_NAMES_HELP = models_help()
SEED_HELP = "Random seed (every random choice derives from it)."
PROCESSES_HELP = ("CPU training processes (PyTorch DDP over gloo): each takes its share of every optimizer step's "
                  "micro-batches, so one run trains on N cores; the steps and their batches stay the same (at an epoch's end "
                  "a process may repeat a few examples to even out). Must divide "
                  "--batch-size / --micro-batch-size; set OMP_NUM_THREADS=1. Memory: one model per process.")
# numpy seeds must lie in [0, 2**32); derived seeds add small offsets (seed + 1, seed + 1000 * worker).
SEED_MAX = 2**31 - 1


def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:
        pass


def invocation(ctx: typer.Context) -> str:
    """The running command as one could type it again, for a report's "Reproduce" line: ``leantune``, its
    subcommands, then every parameter given on the command line (in the command's order, paths as
    ``display_path`` writes them, so no machine path lands in a shared report). Defaults are left out: they
    are what the same command uses again."""
    import shlex
    from pathlib import Path

    from ..paths import display_path

    names, c = [], ctx
    while c is not None:
        names.append(c.info_name)
        c = c.parent
    words = ["leantune", *reversed(names[:-1])]

    def text(value) -> str:
        return display_path(value) if isinstance(value, Path) else str(value)

    for param in ctx.command.params:
        source = ctx.get_parameter_source(param.name)
        if getattr(source, "name", None) != "COMMANDLINE":
            continue
        value = ctx.params[param.name]
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        if param.param_type_name == "argument":
            words += [text(v) for v in values]
        elif getattr(param, "is_flag", False) and not getattr(param, "multiple", False):
            words.append(param.opts[0] if value or not param.secondary_opts else param.secondary_opts[0])
        else:
            for v in values:
                words += [param.opts[0], text(v)]
    return shlex.join(words)

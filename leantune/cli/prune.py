"""``leantune prune``: score training samples and select a budget of them."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from ..pruning import methods_help
from .app import DATA_HELP, MODEL_NAMES_HELP, SEED_HELP, SEED_MAX, app

PRUNE_HELP = f"""Score the training samples and keep --budget of them.

Writes OUT/scores.parquet (sample id, user id, one column per score, merged from resumable chunks in OUT/scores.chunks/) and OUT/selection.json (chosen sample and user ids, settings, seed, versions, time per stage). Re-running with the same --out reuses finished scores. `torchrun --nproc_per_node 2 -m leantune prune ...` (or `accelerate launch --multi_gpu --num_processes 2 -m leantune prune ...`, also without a GPU) splits the chunks over processes.

Methods (--method):
{methods_help()}

Recommender (--recommender, the model that will be trained on the selection): 'bigrec' (default) scores effort with the LLM (--model). 'tiger' scores it with a TIGER model instead (the gradient norm of TIGER's loss on each sample, after a short warm-up training on all samples): --method dealrec is then influence + λ·tiger_effort (= dealrec-tiger) and --method effort is tiger_effort only. Methods that do not read the LLM (random, influence, grand, el2n, ccs, tfdcon, kcenter) are the same for both. TIGER effort options: --opt tiger_preset=small|paper (default paper, as `leantune tiger train`), tiger_warmup_epochs=N (default 1), tiger_warmup_samples=N (warm up on N seeded samples; default 0 = all), tiger_ids=FOLDER (semantic IDs; default runs/tiger-<data>/, built there if missing), tiger_model_dir=FOLDER (a trained `leantune tiger train` folder instead of the warm-up model). Train on the selection with `leantune tiger train --selection OUT`, or run everything with `leantune run --recommender tiger`.

Selectors (--selector replaces the method's own, e.g. dealrec without coverage = --selector topk):
coverage: DEALRec's coverage-enhanced sampling over --ranges equal-width score ranges after --hard-prune.
stratified: the same on one difficulty score (CCS).
topk: the highest scores. random: uniform, reads no score.
kcenter: k-center greedy on embeddings. cluster: k-means on embeddings, samples nearest each centroid.
"""


def _parse_options(pairs: list[str]) -> dict:
    from ..errors import LeantuneError

    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise LeantuneError(f"--opt {pair!r}: expected KEY=VALUE")
        options[key.strip()] = _option_value(value.strip())
    return options


def _option_value(text: str):
    """Numbers, booleans and lists as JSON (effort_batch_size=4, effort_layers=[-1]); else the string."""
    import json

    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


@app.command("prune", help=PRUNE_HELP)
def prune_cmd(
    budget: int = typer.Option(..., "--budget", help="Number of training samples to keep."),
    data: str = typer.Option("games", "--data", help=DATA_HELP),
    method: str = typer.Option("dealrec", "--method", help="Pruning method (see the list above)."),
    lam: float = typer.Option(0.3, "--lambda", help="Effort weight λ in DEALRec's overall score (reference Games run: 0.3)."),
    pool: Optional[int] = typer.Option(None, "--pool", help="Score only a seeded random sub-pool of N samples (users)."),
    model: str = typer.Option("smollm2", "--model", help=f"LLM used by LLM-based scorers (effort): {MODEL_NAMES_HELP} or a local folder; unused with --recommender tiger."),
    recommender: str = typer.Option("bigrec", "--recommender", help="'bigrec' (LLM effort) or 'tiger' (TIGER effort; see above)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: runs/prune-<data>-<method>-b<budget>-s<seed>, plus -p<N> with --pool)."),
    seed: int = typer.Option(0, "--seed", min=0, max=SEED_MAX, help=SEED_HELP),
    selector: Optional[str] = typer.Option(None, "--selector", help="Use this selector instead of the method's (ablations)."),
    hard_prune: Optional[float] = typer.Option(None, "--hard-prune", help="Fraction of highest-scored samples dropped first by coverage/stratified (default 0.1)."),
    ranges: Optional[int] = typer.Option(None, "--ranges", help="Equal-width score ranges for coverage/stratified (default 50)."),
    clusters: Optional[int] = typer.Option(None, "--clusters", help="k-means clusters for the cluster selector (default: the budget)."),
    difficulty: str = typer.Option("el2n", "--difficulty", help="Score column that CCS stratifies."),
    chunk_size: int = typer.Option(1024, "--chunk-size", help="Samples per checkpointed scoring chunk."),
    scores_format: str = typer.Option("parquet", "--scores-format", help="Score file format: parquet or jsonl."),
    opt: List[str] = typer.Option([], "--opt", help="Extra scorer option KEY=VALUE (repeatable; JSON values are parsed), e.g. embedding_source=text, effort_batch_size=4."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    from ..pruning import prune

    result = prune(
        data, budget, method, out, progress=not quiet, seed=seed, lam=lam, selector=selector,
        hard_prune=hard_prune, ranges=ranges, clusters=clusters, difficulty=difficulty, pool=pool,
        model=model, recommender=recommender, chunk_size=chunk_size, scores_format=scores_format, options=_parse_options(opt),
    )
    from ..scoring.scorefile import current_process

    if current_process().is_main:  # one summary under `accelerate launch`
        print_summary(result)


def print_summary(result) -> None:
    rec = result.record
    console = Console()
    for_tiger = " for TIGER" if rec.get("recommender") == "tiger" else ""
    table = Table(title=f"prune {rec['data']} · {rec['method']}{for_tiger} ({rec['selector']})", show_header=False)
    table.add_row("pool size", f"{rec['pool_size']:,} of {rec['dataset_samples']:,} samples")
    table.add_row("budget", f"{rec['budget']:,} selected ({len(rec['sample_ids']):,} distinct)")
    table.add_row("seed", str(rec["seed"]))
    timings = rec["timings"]
    for stage, seconds in timings.items():
        if stage == "scoring":
            for name, st in seconds.items():
                reused = f", {st['reused']}/{st['chunks']} chunks reused" if st["reused"] else ""
                table.add_row(f"time: score {name}", f"{st['seconds_this_run']:.2f} s this run, "
                              f"{st['compute_seconds']:.2f} s compute{reused}")
        else:
            table.add_row(f"time: {stage}", f"{seconds:.2f} s")
    console.print(table)
    if rec["score_stats"]:
        stats = Table(title="scores (pool)")
        for col in ("score", "min", "mean", "max", "std", "mean of selected"):
            stats.add_column(col, justify="right" if col != "score" else "left")
        for name, st in rec["score_stats"].items():
            stats.add_row(name, *(f"{st[k]:.4g}" for k in ("min", "mean", "max", "std", "selected_mean")))
        console.print(stats)
    console.print(f"wrote {result.scores_path} and {result.selection_path}")

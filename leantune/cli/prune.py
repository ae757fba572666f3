"""``leantune prune``: score training samples and select a budget of them."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from ..io import parse_options
from ..pruning import methods_help
from .app import DATA_HELP, MODEL_NAMES_HELP, SEED_HELP, SEED_MAX, app

PRUNE_HELP = f"""Score the training samples and keep --budget of them.

Writes OUT/scores.parquet (sample id, user id, one column per score, merged from resumable chunks in OUT/scores.chunks/) and OUT/selection.json (chosen sample and user ids, settings, seed, versions, time per stage). Re-running with the same --out reuses finished scores. `torchrun --nproc_per_node 2 -m leantune prune ...` (or `accelerate launch --multi_gpu --num_processes 2 -m leantune prune ...`, also without a GPU) splits the chunks over processes.

Methods (--method):
{methods_help()}

Recommender (--recommender, the model that will be trained on the selection): 'bigrec' (default) scores effort with the LLM (--model). 'tiger' scores it with a TIGER model instead (the gradient norm of TIGER's loss on each sample, after a short warm-up training on all samples): --method dealrec is then influence + λ·tiger_effort (= dealrec-tiger) and --method effort is tiger_effort only. Methods that do not read the LLM (random, influence, grand, el2n, ccs, tfdcon, kcenter) are the same for both. TIGER effort options: --opt tiger_preset=small|paper (default paper, as `leantune tiger train`), tiger_warmup_epochs=N (default 1), tiger_warmup_samples=N (warm up on N seeded samples; default 0 = all), tiger_ids=FOLDER (semantic IDs; default runs/tiger-<data>/, built there if missing), tiger_model_dir=FOLDER (a trained `leantune tiger train` folder instead of the warm-up model). Train on the selection with `leantune tiger train --selection OUT`, or run everything with `leantune run --recommender tiger`.

Any instruction dataset (--task sft --data FILE.jsonl): chat {{"messages": [...]}} or {{"prompt": ..., "completion": ...}} lines (the formats TRL's SFTTrainer reads; `leantune data export` writes the shipped tasks that way). Methods: random, effort, loss (the base model's answer loss), gradient-influence (LESS: LoRA gradients projected to --opt gi_dim=8192 dimensions, mean cosine with the validation records' or --target FILE's; --opt gi_warmup_steps=N warms the LoRA up first on a seeded 5%), kcenter; selectors coverage, topk, stratified for any scored method. Validation records: --valid FILE, else a seeded 10% of FILE held out. Writes OUT/selection.json (unit ids L<line>, the file's SHA-256) and OUT/scores.jsonl; train on it with `leantune finetune --task sft --data FILE --selection OUT`.
Example: leantune prune --task sft --data train.jsonl --budget 500 --method gradient-influence --out runs/prune-sft

Selectors (--selector replaces the method's own, e.g. dealrec without coverage = --selector topk):
coverage: DEALRec's coverage-enhanced sampling over --ranges equal-width score ranges after --hard-prune.
stratified: the same on one difficulty score (CCS).
topk: the highest scores. random: uniform, reads no score.
kcenter: k-center greedy on embeddings. cluster: k-means on embeddings, samples nearest each centroid.
"""


@app.command("prune", help=PRUNE_HELP)
def prune_cmd(
    budget: int = typer.Option(..., "--budget", help="Number of training samples to keep."),
    data: str = typer.Option("games", "--data", help=DATA_HELP + " With --task sft: the JSONL file."),
    task: str = typer.Option("recommendation", "--task", help="'recommendation' (sequence data, the default) or 'sft' (any instruction JSONL; see above)."),
    valid: Optional[Path] = typer.Option(None, "--valid", help="--task sft: validation JSONL (default: a seeded 10%% of --data held out)."),
    target: Optional[Path] = typer.Option(None, "--target", help="--task sft, gradient-influence: the target set's JSONL (default: the validation records)."),
    method: Optional[str] = typer.Option(None, "--method", help="Pruning method (see the list above); default dealrec, with --task sft gradient-influence."),
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
    if task == "sft":
        return _prune_sft(data, budget, method, selector, model, valid, target, out, seed, parse_options(opt), quiet)
    if task != "recommendation":
        from ..errors import LeantuneError

        raise LeantuneError(f"--task {task!r}: choose recommendation or sft")
    if valid is not None or target is not None:
        from ..errors import LeantuneError

        raise LeantuneError("--valid and --target are --task sft options")
    from ..pruning import prune

    result = prune(
        data, budget, method or "dealrec", out, progress=not quiet, seed=seed, lam=lam, selector=selector,
        hard_prune=hard_prune, ranges=ranges, clusters=clusters, difficulty=difficulty, pool=pool,
        model=model, recommender=recommender, chunk_size=chunk_size, scores_format=scores_format, options=parse_options(opt),
    )
    from ..scoring.scorefile import current_process

    if current_process().is_main:  # one summary under `accelerate launch`
        print_summary(result)


def _prune_sft(data, budget, method, selector, model, valid, target, out, seed, options, quiet) -> None:
    from ..errors import LeantuneError
    from ..pipelines.sft import prune_sft

    if data == "games":
        raise LeantuneError("--task sft needs --data FILE (a JSONL file of chat 'messages' or 'prompt'/'completion' records)")
    method = method or "gradient-influence"
    out = out or Path("runs") / f"prune-sft-{Path(data).stem}-{method}-b{budget}-s{seed}"
    result = prune_sft(data, budget, method, out, selector=selector, model=model, valid=valid, target=target, seed=seed,
                       options=options, progress=not quiet)
    rec = result.record
    console = Console()
    table = Table(title=f"prune sft {rec['settings']['data']} · {rec['settings']['method']} ({rec['settings']['selector']})",
                  show_header=False)
    table.add_row("pool", f"{rec['pool_size']:,} training records ({rec['valid_records']:,} held for validation)")
    table.add_row("budget", f"{len(rec['unit_ids']):,} selected")
    table.add_row("seed", str(rec["settings"]["seed"]))
    table.add_row("time", f"scoring {rec['timings']['scoring_s']:.1f} s, selection {rec['timings']['select_s']:.2f} s"
                  + (" (reused: same settings)" if result.reused else ""))
    for name, st in rec["score_stats"].items():
        table.add_row(f"score {name}", f"min {st['min']:.4g}  mean {st['mean']:.4g}  max {st['max']:.4g}  selected mean {st['selected_mean']:.4g}")
    console.print(table)
    console.print(f"wrote {result.selection_path}" + (f" and {result.scores_path}" if result.scores_path else ""))


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

"""``leantune run`` (prune -> fine-tune -> evaluate -> report), ``leantune finetune`` and ``leantune evaluate``."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .app import DATA_HELP, MODEL_NAMES_HELP, PROCESSES_HELP, SEED_HELP, SEED_MAX, app

MODEL_HELP = f"Causal LM: {MODEL_NAMES_HELP} or a local transformers folder."
DEVICE_HELP = "'auto' (cuda when available), 'cpu' or 'cuda'."
GEN_DTYPE_HELP = ("Weights of beam-search generation: 'float32' (default) or 'bfloat16' (about 2x faster on a CPU with "
                  "AMX; some responses differ, see benchmarks/results/generation.md). Grounding stays float32.")

# LoRA / training options shared by `run` and `finetune` (defaults: the BIGRec/DEALRec recipe).
R = typer.Option(8, "--lora-r", help="LoRA rank.")
ALPHA = typer.Option(16, "--lora-alpha", help="LoRA alpha.")
DROPOUT = typer.Option(0.05, "--lora-dropout", help="LoRA dropout.")
MODULES = typer.Option("q_proj,v_proj", "--target-modules", help="Comma-separated module names that get LoRA, or 'all' (every linear layer of the blocks).")
LR = typer.Option(1e-4, "--lr", help="Peak learning rate (linear decay).")
BATCH = typer.Option(128, "--batch-size", help="Effective batch size (gradient accumulation over --micro-batch-size).")
MICRO = typer.Option(4, "--micro-batch-size", help="Examples per forward/backward pass (on a GPU use the whole batch unless memory runs short).")
MAX_STEPS = typer.Option(None, "--max-steps", help="Stop after this many optimizer steps (overrides --epochs for the schedule).")
WARMUP = typer.Option(0.0, "--warmup-ratio", help="Fraction of steps with linear learning-rate warm-up.")
CUTOFF = typer.Option(512, "--cutoff-len", help="Token limit of prompt + response (oldest history titles are dropped to fit).")
MASK = typer.Option(False, "--mask-prompt/--train-on-inputs", help="Compute the loss on the response only (default: prompt and response, as the reference).")
PATIENCE = typer.Option(5, "--patience", help="Early stopping: evaluations without validation improvement (0 = off).")
EVAL_EVERY = typer.Option(None, "--eval-every", help="Optimizer steps between validations (default: once per epoch).")
GROUP = typer.Option(False, "--group-by-length", help="Batch examples of similar length (faster on CPU; not the reference order).")
PROCESSES = typer.Option(1, "--processes", min=1, help=PROCESSES_HELP)
DEVICE = typer.Option("auto", "--device", help=DEVICE_HELP)
QUIET = typer.Option(False, "--quiet", help="No progress bars.")


def _finetune_config(r, alpha, dropout, modules, lr, batch_size, micro, epochs, max_steps, warmup, cutoff,
                     mask_prompt, patience, eval_every, group, seed, device, processes=1):
    from ..train import FinetuneConfig, parse_target_modules

    return FinetuneConfig(
        r=r, alpha=alpha, dropout=dropout, target_modules=parse_target_modules(modules),
        lr=lr, batch_size=batch_size, micro_batch_size=micro, epochs=epochs, max_steps=max_steps,
        warmup_ratio=warmup, cutoff_len=cutoff, train_on_inputs=not mask_prompt,
        early_stopping_patience=patience or None, eval_every=eval_every, group_by_length=group, seed=seed, device=device,
        processes=processes,
    )


RUN_HELP = """Prune -> train -> evaluate, in one run folder, for one of two recommenders (--recommender):

bigrec (default): LoRA fine-tuning of an LLM that generates the next item's title (BIGRec).

tiger: TIGER, a small T5 trained from scratch that generates the next item's semantic ID (see `leantune tiger`). Its stages: semantic IDs (built once per dataset in runs/tiger-<data>/ or --ids, shared by every run), prune (--method dealrec = influence + λ·TIGER effort, effort = TIGER effort only, other methods as for bigrec; --pool defaults to all samples), train TIGER on the selected samples (--preset, --epochs; batch 128, lr 3e-3, early stopping on validation loss), evaluate (constrained beam search, Recall/NDCG@5/10/20 on the seeded --test-users), report. Writes OUT/run.json, OUT/prune/selection.json, OUT/train/model.safetensors, OUT/eval/metrics.json and OUT/report.md. The LLM and LoRA options (--model, --lora-*, --lr, --batch-size, --micro-batch-size, --cutoff-len, --beams, --base, ...) do not apply to tiger and are ignored.

With bigrec:

Chains `leantune prune` (--method, --budget, --pool), LoRA fine-tuning on the selected users' training samples with early stopping on their validation samples, and BIGRec evaluation (beam-search generation, grounding by L2 distance of base-model last-token states, Recall/NDCG@5/10/20/50) of the fine-tuned and the base model on the same seeded --test-users.

Writes OUT/run.json (settings, stage status and wall time), OUT/prune/selection.json, OUT/finetune/adapter/, OUT/eval/metrics.json, OUT/report.md and OUT/report.png. Re-running the same command skips finished stages and resumes unfinished ones.

CPU defaults: --epochs 2 (the reference recipe trains up to 50 epochs with early stopping; pass --epochs 50 on a GPU). Everything else defaults to the reference recipe.

Re-running the same command (either recommender) reuses finished stages.

Examples:

  leantune run --budget 256 --method dealrec --test-users 500          # prune, fine-tune, evaluate, report

  leantune run --recommender tiger --budget 1024 --method random
"""


@app.command("run", help=RUN_HELP,
             short_help="Prune -> train -> evaluate in one run folder, for a BIGRec LLM (default) or TIGER (--recommender).")
def run_cmd(
    data: str = typer.Option("games", "--data", help=DATA_HELP),
    recommender: str = typer.Option("bigrec", "--recommender", help="'bigrec' (LoRA fine-tuned LLM) or 'tiger' (semantic-ID T5 trained from scratch); see above."),
    budget: int = typer.Option(256, "--budget", help="Training samples (users) to select and train on."),
    method: str = typer.Option("dealrec", "--method", help="Pruning method (see `leantune prune --help`)."),
    pool: Optional[int] = typer.Option(None, "--pool", help="Score a seeded random sub-pool of N training samples (default: 4096 for bigrec, or all samples of a smaller dataset; all for tiger; 0 = all)."),
    test_users: int = typer.Option(500, "--test-users", min=0, help="Seeded sub-sample of test users to evaluate (0 = all)."),
    model: str = typer.Option("smollm2", "--model", help=MODEL_HELP),
    out: Optional[Path] = typer.Option(None, "--out", help="Run folder (default: runs/run-<data>-<method>-b<budget>-s<seed>; runs/run-<data>-<method>-tiger-b<budget>-s<seed> for tiger)."),
    seed: int = typer.Option(0, "--seed", min=0, max=SEED_MAX, help=SEED_HELP + " Selection and training; test users use --eval-seed."),
    eval_seed: int = typer.Option(0, "--eval-seed", min=0, max=SEED_MAX, help="Seed of the test-user sample (same users across runs)."),
    epochs: Optional[float] = typer.Option(None, "--epochs", help="Maximum epochs (bigrec: default 2 on CPU, the reference uses 50 with early stopping; tiger: default 60, early-stopped on validation loss)."),
    preset: str = typer.Option("small", "--preset", help="tiger only: model size 'small' (2+2 layers, d_model 64; CPU default) or 'paper' (TIGER's 4+4 layers, d_model 128); also the size of the model behind TIGER effort."),
    ids: Optional[Path] = typer.Option(None, "--ids", help="tiger only: semantic-IDs folder (default runs/tiger-<data>/, built there once if missing)."),
    opt: List[str] = typer.Option([], "--opt", help="Extra scorer option KEY=VALUE for the prune stage (repeatable), as in `leantune prune --opt`, e.g. influence_solver=cg."),
    effort_epochs: int = typer.Option(1, "--effort-epochs", help="tiger only: epochs of the full-data TIGER model whose gradient norms are the effort score (dealrec, effort)."),
    base: bool = typer.Option(True, "--base/--no-base", help="Also evaluate the base model on the same users (cached across runs)."),
    beams: int = typer.Option(4, "--beams", min=1, help="Beam width of generation."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", min=1, help="Generation length limit."),
    gen_batch_size: Optional[int] = typer.Option(None, "--gen-batch-size", help="Prompts generated at once (default: 32 in flight; with models that need transformers' generate, chosen from the prompt lengths)."),
    gen_dtype: str = typer.Option("float32", "--gen-dtype", help=GEN_DTYPE_HELP),
    r: int = R, alpha: int = ALPHA, dropout: float = DROPOUT, modules: str = MODULES, lr: float = LR,
    batch_size: int = BATCH, micro: int = MICRO, max_steps: Optional[int] = MAX_STEPS, warmup: float = WARMUP,
    cutoff: int = CUTOFF, mask_prompt: bool = MASK, patience: int = PATIENCE, eval_every: Optional[int] = EVAL_EVERY,
    group: bool = GROUP, device: str = DEVICE, quiet: bool = QUIET, processes: int = PROCESSES,
) -> None:
    from ..errors import LeantuneError
    from ..pruning import RECOMMENDERS, PruneConfig, resolve_method
    from ..io import parse_options

    prune_options = {"options": parse_options(opt)} if opt else {}  # none: the settings of earlier runs
    if recommender not in RECOMMENDERS:
        raise LeantuneError(f"--recommender {recommender!r}: choose one of {', '.join(RECOMMENDERS)}")
    if pool is None and recommender == "bigrec":  # 4096, or every sample of a smaller dataset
        from ..data import load_dataset

        pool = min(4096, len(load_dataset(data).train_samples))
    elif pool is None:
        pool = 0
    if recommender == "tiger":
        _run_tiger(data, budget, method, pool, test_users, out, seed, eval_seed, epochs, preset, ids, effort_epochs,
                   prune_options, device, quiet)
        return
    resolve_method(PruneConfig(budget=budget, method=method, recommender=recommender))  # e.g. dealrec-tiger: fail now
    epochs = 2 if epochs is None else epochs
    from ..pipelines.bigrec import BigrecRunConfig, default_run_dir, run_bigrec

    ft = _finetune_config(r, alpha, dropout, modules, lr, batch_size, micro, epochs, max_steps, warmup, cutoff,
                          mask_prompt, patience, eval_every, group, seed, "auto", processes)
    cfg = BigrecRunConfig(data=data, budget=budget, method=method, pool=pool or None, seed=seed, model=model,
                          test_users=test_users or None, eval_seed=eval_seed, base=base, device=device, finetune=ft,
                          num_beams=beams, max_new_tokens=max_new_tokens, gen_batch_size=gen_batch_size,
                          gen_dtype=gen_dtype, prune_options=prune_options)
    folder = out or default_run_dir(cfg)
    run = run_bigrec(cfg, folder, progress=not quiet)
    _print_summary(run)


def _run_tiger(data, budget, method, pool, test_users, out, seed, eval_seed, epochs, preset, ids, effort_epochs,
               prune_options, device, quiet) -> None:
    from ..errors import LeantuneError
    from ..evaluation.metrics import format_metrics
    from ..pipelines.tiger import TigerRunConfig, default_run_dir, run_tiger

    if epochs is not None and epochs != int(epochs):
        raise LeantuneError(f"--epochs {epochs:g}: TIGER trains whole epochs")
    cfg = TigerRunConfig(data=data, budget=budget, method=method, pool=pool or None, seed=seed,
                         test_users=test_users or None, eval_seed=eval_seed, ids=str(ids) if ids else None, preset=preset,
                         epochs=60 if epochs is None else int(epochs), effort_warmup_epochs=effort_epochs,
                         prune_options=prune_options, device=device)
    run = run_tiger(cfg, out or default_run_dir(cfg), progress=not quiet)
    metrics = run.outputs("evaluate").get("metrics")
    if metrics:
        print(f"TIGER ({run.outputs('evaluate')['users']} test users): "
              f"{format_metrics(metrics, ['recall@10', 'recall@20', 'ndcg@10', 'ndcg@20'])}")
    times = "  ".join(f"{k} {v:.0f}s" for k, v in run.wall_times().items() if k != "report")
    print(f"wall time: {times}")
    print(f"report: {run.path / 'report.md'}")


def _print_summary(run) -> None:
    from ..evaluation.metrics import format_metrics

    keys = ["recall@10", "recall@20", "ndcg@10", "ndcg@20"]
    for name, label in (("evaluate", "fine-tuned"), ("evaluate_base", "base")):
        metrics = run.outputs(name).get("metrics")
        if metrics:
            print(f"{label:>10}: {format_metrics(metrics, keys)}")
    times = "  ".join(f"{k} {v:.0f}s" for k, v in run.wall_times().items() if k != "report")
    print(f"wall time: {times}")
    print(f"report: {run.path / 'report.md'}")


@app.command("evaluate", short_help="BIGRec evaluation: beam-search titles grounded to items; Recall/NDCG@5/10/20/50 over all "
                                     "target items.")
def evaluate_cmd(
    adapter: Optional[Path] = typer.Option(None, "--adapter", help="LoRA adapter folder (e.g. RUN/finetune/adapter); without it the base model is evaluated."),
    data: str = typer.Option("games", "--data", help=DATA_HELP),
    users: int = typer.Option(500, "--users", min=0, help="Seeded sub-sample of users with targets (0 = all)."),
    model: str = typer.Option("smollm2", "--model", help=MODEL_HELP),
    split: str = typer.Option("test", "--split", help="'test' (targets: all test items) or 'valid' (the first validation item)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for predictions.jsonl, per_unit.jsonl and metrics.json (default: runs/eval-<data>-<adapter>-u<users>-s<seed>; for the base model the shared cache that `leantune run` also reuses); re-running reuses it, an interrupted evaluation resumes at the next batch of users."),
    seed: int = typer.Option(0, "--seed", min=0, max=SEED_MAX, help=SEED_HELP + " Picks the users."),
    beams: int = typer.Option(4, "--beams", min=1, help="Beam width of generation."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", min=1, help="Generation length limit."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Prompts generated at once (default: 32 in flight; with models that need transformers' generate, chosen from the prompt lengths)."),
    gen_dtype: str = typer.Option("float32", "--gen-dtype", help=GEN_DTYPE_HELP),
    cutoff: int = CUTOFF,
    device: str = DEVICE,
    quiet: bool = QUIET,
) -> None:
    """BIGRec evaluation: generate a title per user (beam search), ground it to items by L2 distance of
    base-model last-token states, and report Recall/NDCG@5/10/20/50 over all target items.

    Examples:

      leantune evaluate --users 100                                   # the base model on 100 seeded test users

      leantune evaluate --adapter runs/finetune-games-n64-s0/adapter --users 0 --device auto
    """
    from ..evaluation.bigrec import BigrecEvalConfig, evaluate_bigrec
    from ..evaluation.metrics import format_metrics
    from ..device import resolve_device

    if adapter is not None and not (adapter / "adapter_config.json").exists():
        from ..errors import LeantuneError

        raise LeantuneError(f"--adapter {adapter}: not a LoRA adapter folder (no adapter_config.json)")
    cfg = BigrecEvalConfig(users=users or None, seed=seed, split=split, num_beams=beams, max_new_tokens=max_new_tokens,
                           batch_size=batch_size, cutoff_len=cutoff, device=resolve_device(device), gen_dtype=gen_dtype)
    if out is None and adapter is None:
        # The base model's results for these users and settings are shared with every `leantune run`.
        from ..data import load_dataset
        from ..pipelines.bigrec import base_eval_dir

        data = load_dataset(data)
        out = base_eval_dir(model, data, cfg)
    elif out is None:
        out = Path("runs") / f"eval-{Path(data).name}-{_adapter_tag(adapter)}-u{users or 'all'}-s{seed}"
    result = evaluate_bigrec(model, data, adapter, cfg, out, progress=not quiet)
    print(f"{result.n_users} users: {format_metrics(result.metrics)}")
    print("time: " + "  ".join(f"{k} {v:.1f}s" for k, v in result.timings.items()) + f"  -> {out}")


def _adapter_tag(adapter: Path) -> str:
    parts = [p for p in Path(adapter).resolve().parts if p not in ("adapter", "finetune")]
    return parts[-1] if parts else "adapter"


@app.command("finetune", short_help="LoRA fine-tuning on recommendation prompts (the BIGRec recipe), early-stopped "
                                     "on validation.")
def finetune_cmd(
    data: str = typer.Option("games", "--data", help=DATA_HELP + " With --task sft: the JSONL file."),
    task: str = typer.Option("recommendation", "--task", help="'recommendation' (the default) or 'sft' (any instruction JSONL: chat 'messages' or 'prompt'/'completion' lines; loss on the answer, fixed --epochs without early stopping, then the answer loss and token accuracy on every validation record in OUT/eval)."),
    valid: Optional[Path] = typer.Option(None, "--valid", help="--task sft: validation JSONL (default: a seeded 10%% of --data held out, never trained on)."),
    base: bool = typer.Option(False, "--base", help="--task sft: also evaluate the base model (OUT/base), for `leantune compare OUT OUT/base`."),
    generate: Optional[str] = typer.Option(None, "--generate", help="--task sft: also generate every validation answer (greedy) and score it: 'exact-match', or FILE.py:FUNCTION (your function of prediction and reference, returning a number); per-record column exact_match or score, for `leantune compare --metric ...`."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", help="--task sft with --generate: tokens generated per answer at most."),
    selection: Optional[Path] = typer.Option(None, "--selection", help="selection.json (or a prune folder) whose sample ids to train on."),
    budget: Optional[int] = typer.Option(None, "--budget", help="Without --selection: a seeded random sample of this many training samples."),
    model: str = typer.Option("smollm2", "--model", help=MODEL_HELP),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: runs/finetune-<data>-n<samples>-s<seed>); re-running resumes or reuses it."),
    seed: int = typer.Option(0, "--seed", min=0, max=SEED_MAX, help=SEED_HELP),
    epochs: Optional[float] = typer.Option(None, "--epochs", help="Maximum epochs; default 50 (early stopping on validation loss usually ends sooner), with --task sft 3."),
    stop_after_fraction: Optional[float] = typer.Option(None, "--stop-after-fraction", help="Train this fraction of the schedule and pause (resume by running again without it)."),
    r: int = R, alpha: int = ALPHA, dropout: float = DROPOUT, modules: str = MODULES, lr: float = LR,
    batch_size: int = BATCH, micro: int = MICRO, max_steps: Optional[int] = MAX_STEPS, warmup: float = WARMUP,
    cutoff: int = CUTOFF, mask_prompt: bool = MASK, patience: int = PATIENCE, eval_every: Optional[int] = EVAL_EVERY,
    group: bool = GROUP, device: str = DEVICE, quiet: bool = QUIET, processes: int = PROCESSES,
) -> None:
    """LoRA fine-tuning on recommendation prompts (defaults: the BIGRec recipe), validated and early-stopped
    on the same users' validation samples. Writes OUT/adapter (safetensors), OUT/checkpoints, OUT/result.json.

    Examples:

      leantune finetune --selection runs/prune-games-dealrec-b1024-s0     # train on a pruned selection

      leantune finetune --budget 64 --epochs 2                            # a seeded random 64 samples

      leantune finetune --task sft --data train.jsonl --budget 200 --generate exact-match
    """
    from ..errors import LeantuneError
    from ..pipelines.bigrec import finetune_recommendation

    if task == "sft":
        return _finetune_sft(data, valid, selection, budget, model, out, seed, 3 if epochs is None else epochs, r, alpha, dropout,
                             modules, lr, batch_size, micro, max_steps, warmup, cutoff, group, device, base, quiet, generate, max_new_tokens,
                             processes)
    if task != "recommendation":
        raise LeantuneError(f"--task {task!r}: choose recommendation or sft")
    if valid is not None or base or generate is not None:
        raise LeantuneError("--valid, --base and --generate are --task sft options (recommendation runs: `leantune run --base`)")
    epochs = 50 if epochs is None else epochs
    if selection is None and not budget:
        raise LeantuneError("finetune needs --selection FILE or --budget N")
    cfg = _finetune_config(r, alpha, dropout, modules, lr, batch_size, micro, epochs, max_steps, warmup, cutoff,
                           mask_prompt, patience, eval_every, group, seed, device, processes)
    result, out, _ = finetune_recommendation(cfg, data, model, selection=selection, budget=None if selection is not None else budget,
                                             out=out, stop_after_fraction=stop_after_fraction, progress=not quiet)
    best = f", best validation loss {result.best_valid_loss:.4f}" if result.best_valid_loss is not None else ""
    print(f"{result.status}: {result.steps}/{result.total_steps} steps, {result.tokens_seen:,} tokens, "
          f"{result.time_summary()}{best} -> {result.adapter_dir}")
    if result.reason:
        print(result.reason)


def _finetune_sft(data, valid, selection, budget, model, out, seed, epochs, r, alpha, dropout, modules, lr, batch_size, micro,
                  max_steps, warmup, cutoff, group, device, base, quiet, generate=None, max_new_tokens=64, processes=1) -> None:
    from ..errors import LeantuneError
    from ..pipelines.sft import finetune_sft

    if data == "games":
        raise LeantuneError("--task sft needs --data FILE (a JSONL file of chat 'messages' or 'prompt'/'completion' records)")
    cfg = _finetune_config(r, alpha, dropout, modules, lr, batch_size, micro, epochs, max_steps, warmup, cutoff,
                           True, 0, None, group, seed, device, processes)
    name = Path(selection).name if selection else (f"n{budget}" if budget else "all")
    out = out or Path("runs") / f"finetune-sft-{Path(data).stem}-{name}-s{seed}"
    result = finetune_sft(data, out, cfg, selection=selection, budget=budget, model=model, valid=valid, base=base, generate=generate,
                          max_new_tokens=max_new_tokens, progress=not quiet)
    m = result.metrics
    print(f"{result.status} on {result.units} records -> {result.adapter_dir}")
    if m:
        scored = "".join(f", {k} {m[k]:.4f}" for k in ("exact_match", "score") if k in m)
        print(f"validation ({m['n_examples']} records, {m['n_tokens']} answer tokens): loss {m['loss']:.4f}, "
              f"token accuracy {m['token_accuracy']:.4f}{scored}; per-record results in {out / 'eval'}")
    if base:
        print(f"base model evaluated in {out / 'base'}; compare: leantune compare {out} {out / 'base'} --metric loss")

"""``leantune attributes ...``: product attribute extraction (OA-Mine): fine-tune and evaluate."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .app import MODEL_NAMES_HELP, PROCESSES_HELP, SEED_HELP, SEED_MAX, app

attributes_app = typer.Typer(help="Product attribute-value extraction from titles (OA-Mine): LoRA fine-tuning and evaluation.", no_args_is_help=True)
app.add_typer(attributes_app, name="attributes")

ATTR_DATA_HELP = "Attribute data: 'oa-mine' (shipped) or a folder with train/valid/test .jsonl(.gz) (+ schema.json) in the same format."
UNIT_HELP = "'product': one sample per product, the answer is a JSON object of every attribute; 'question': one sample per (product, attribute)."
LIMIT_HELP = "Evaluate a seeded subset of N test products (all their attributes); default: all 500."


def _print_metrics(metrics: dict, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    overall = Table(title=title, show_header=False)
    for key in ("f1", "precision", "recall", "strict_f1", "accuracy", "strict_accuracy", "valued_accuracy", "na_accuracy", "invalid_rate"):
        overall.add_row(key, f"{metrics[key]:.4f}")
    if "f1_ci95" in metrics:
        low, high = metrics["f1_ci95"]
        overall.add_row("f1 95% CI", f"[{low:.4f}, {high:.4f}] over the {metrics['n_products']} products")
    counts = " ".join(f"{k[6:]}={metrics[k]}" for k in metrics if k.startswith("count/"))
    parse = " ".join(f"{k[6:]}={metrics[k]:.2f}" for k in metrics if k.startswith("parse/"))
    overall.add_row("questions", f"{metrics['n_questions']} ({metrics['n_valued']} with a value) in {metrics['n_products']} products")
    overall.add_row("outcomes", counts)
    overall.add_row("parse", parse)
    console.print(overall)
    per = Table(title="per attribute (by number of questions)")
    per.add_column("attribute")
    per.add_column("questions", justify="right")
    per.add_column("F1", justify="right")
    per.add_column("accuracy", justify="right")
    names = [k.split("/", 1)[1] for k in metrics if k.startswith("attribute_accuracy/")]
    for name in sorted(names, key=lambda n: -metrics[f"attribute_support/{n}"]):
        per.add_row(name, str(metrics[f"attribute_support/{name}"]), f"{metrics[f'attribute_f1/{name}']:.3f}",
                    f"{metrics[f'attribute_accuracy/{name}']:.3f}")
    console.print(per)


@attributes_app.command("evaluate")
def evaluate(
    data: str = typer.Option("oa-mine", "--data", help=ATTR_DATA_HELP),
    model: str = typer.Option("smollm2", "--model", help=f"Base model: {MODEL_NAMES_HELP} or a local transformers folder."),
    adapter: Optional[Path] = typer.Option(None, "--adapter", help="LoRA adapter folder (from `attributes finetune`); omit for the zero-shot base model."),
    unit: str = typer.Option("product", "--unit", help=UNIT_HELP),
    split: str = typer.Option("test", "--split", help="Split to evaluate: test or valid."),
    limit: Optional[int] = typer.Option(None, "--limit", help=LIMIT_HELP),
    batch_size: int = typer.Option(16, "--batch-size", help="Prompts per generation batch."),
    strict_json: bool = typer.Option(False, "--strict-json", help="Only a reply that is exactly one JSON object counts (no recovery from extra text or cut-off JSON)."),
    shots: int = typer.Option(0, "--shots", min=0, help="Few-shot: show this many solved training products of the same category before each question (no training)."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or auto."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for metrics.json and predictions.jsonl (default: runs/attributes-eval-<adapter name, zero-shot or N-shot>-<unit>)."),
    seed: int = typer.Option(0, "--seed", min=0, max=SEED_MAX, help=SEED_HELP + " Picks the --limit subset and the --shots examples."),
    cue_space: Optional[bool] = typer.Option(None, "--cue-space/--no-cue-space", show_default=False, help="Prompts without a chat template (gemma3-270m) end in 'Answer: ' or 'Answer:' (the model writes the space itself, as in the few-shot examples). Default: 'Answer:' without --adapter, zero- or few-shot (measured better on Gemma's validation products), 'Answer: ' with one (the prompts adapters are trained on)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Generate answers for every attribute of the test products and score them (micro-F1, P/R, accuracy, per attribute).

    Examples:

      leantune attributes evaluate --limit 50                  # zero-shot SmolLM2 on 50 test products

      leantune attributes evaluate --shots 3 --device auto     # 3 solved examples in each prompt

      leantune attributes evaluate --adapter runs/attributes-product-n1288-s0/train/adapter
    """
    from ..pipelines.attributes import evaluate_attributes

    ev = evaluate_attributes(data, model, adapter, unit=unit, split=split, limit=limit, batch_size=batch_size, strict_json=strict_json,
                             shots=shots, device=device, out=out, seed=seed, progress=not quiet, cue_space=cue_space)
    _print_metrics(ev.metrics, f"{ev.name} on {data} {split} ({unit} prompts)")
    print(f"{len(ev.rows)} questions in {ev.wall_s:.0f} s; wrote {ev.out / 'metrics.json'} and {ev.out / 'predictions.jsonl'}"
          f" (where the errors are: leantune attributes errors {ev.out})")


@attributes_app.command("finetune")
def finetune_cmd(
    data: str = typer.Option("oa-mine", "--data", help=ATTR_DATA_HELP),
    model: str = typer.Option("smollm2", "--model", help=f"Base model: {MODEL_NAMES_HELP} or a local transformers folder."),
    unit: Optional[str] = typer.Option(None, "--unit", help=UNIT_HELP + " Default: the model's recipe (product, gemma3-270m included)."),
    train_limit: Optional[int] = typer.Option(None, "--train-limit", help="Train on a seeded random subset of N units (products or questions)."),
    valid_limit: Optional[int] = typer.Option(0, "--valid-limit", help="Validation products for early stopping on validation loss (0: none, the recipe's setting: it keeps the final adapter)."),
    epochs: Optional[float] = typer.Option(None, "--epochs", help="Passes over the training units (early stopping may end sooner). Default: the model's recipe (5; gemma3-270m: 3)."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Optimizer steps; overrides --epochs."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Learning rate. Default: the model's recipe (2e-3; gemma3-270m: 1e-3)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Effective batch size (gradient accumulation over micro-batches). Default: the model's recipe (16; gemma3-270m: 8)."),
    micro_batch_size: int = typer.Option(4, "--micro-batch-size", help="Examples per forward pass: memory, not results (the loss is summed over the whole batch). On a CPU the peak grows with it while a step takes about as long: fp32 on the longest training products, 4.3 / 6.4 / 10.3 GiB at 2 / 4 / 8 for gemma3-270m, 3.7 / 6.3 / 11.3 GiB for smollm2 (benchmarks/results/train-memory-*.md). On a GPU use the whole batch."),
    save_every: Optional[int] = typer.Option(
        None, "--save-every", min=1, help="Optimizer steps between checkpoints (and validations with --valid-limit); a stopped run "
        "resumes from the newest when run again. Default: the model's recipe: once per epoch (81 steps on all products), every 20 "
        "steps for gemma3-270m (its 3 epochs are 483 steps, about 1.3 h on two CPU threads with --bf16). Fixed per run folder."
    ),
    r: Optional[int] = typer.Option(None, "--r", help="LoRA rank. Default: the model's recipe (16; gemma3-270m: 8)."),
    alpha: Optional[int] = typer.Option(None, "--alpha", help="LoRA alpha. Default: the model's recipe (32; gemma3-270m: 16)."),
    target_modules: Optional[str] = typer.Option(None, "--target-modules", help="Comma-separated module names LoRA adapts, or 'all' (every linear layer of the blocks). Default: the model's recipe (all)."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or auto."),
    bf16: bool = typer.Option(False, "--bf16", help="bf16 autocast in training on CPU: ~1.7x faster on CPUs with AMX or AVX512-BF16, slower than fp32 on those without (a warning says so); on CUDA it is on by default."),
    processes: int = typer.Option(1, "--processes", min=1, help=PROCESSES_HELP),
    out: Optional[Path] = typer.Option(None, "--out", help="Run folder (default: runs/attributes-<unit>-n<units>-s<seed>); re-running resumes."),
    evaluate_limit: Optional[int] = typer.Option(100, "--eval-limit", help="Then evaluate on N seeded test products (0: skip)."),
    seed: int = typer.Option(0, "--seed", min=0, max=SEED_MAX, help=SEED_HELP),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """LoRA fine-tune on the training products or questions (shared trainer, loss on the answers), then evaluate.

    Each model trains with its own default recipe (loss on the answer only, no validation, the final adapter); each flag overrides one setting.

    smollm2 (and tiny or a local folder): product unit, 5 epochs, lr 2e-3, batch 16, LoRA r 16 / alpha 32 on every linear layer; 405 optimizer steps on all 1,288 products. It had the best validation micro-F1 of SmolLM2's cells of benchmarks/bench_attr_recipe.py's grid (0.736 on all 150 validation products, one seed, against 0.596 for the earlier 3-epoch r 8 q/v default).

    gemma3-270m: product unit, 3 epochs, lr 1e-3, batch 8, LoRA r 8 / alpha 16 on every linear layer; 483 optimizer steps on all 1,288 products, about 1.3 h on two CPU threads with --bf16 (AVX512-BF16), a checkpoint every 20 steps. Validation F1 0.766, test 0.740 on all 500 products (seed 0). Later Gemma grid cells lead it on validation by 0.003, not told apart: the default moves only to a cell that beats it with a paired interval clear of zero (benchmarks/results/attr-recipe-gemma3-270m).

    Examples:

      leantune attributes finetune --train-limit 50 --epochs 1 --eval-limit 20   # a quick look

      leantune attributes finetune --model gemma3-270m --bf16 --micro-batch-size 8

      leantune attributes finetune --device cuda --micro-batch-size 16 --eval-limit 0
    """
    from ..device import resolve_device
    from ..pipelines.attributes import attribute_finetune_config, check_limits, finetune_attributes
    from ..train import parse_target_modules

    check_limits(train_limit, valid_limit, evaluate_limit)  # before the fine-tuning settings, the data or the model
    cfg, unit = attribute_finetune_config(
        model, unit=unit, r=r, alpha=alpha, lr=lr, batch_size=batch_size, epochs=epochs,
        target_modules=None if target_modules is None else parse_target_modules(target_modules), micro_batch_size=micro_batch_size,
        max_steps=max_steps, seed=seed, device=resolve_device(device), bf16=True if bf16 else None, eval_every=save_every,
        processes=processes)
    run = finetune_attributes(cfg, data, model, unit=unit, train_limit=train_limit, valid_limit=valid_limit or 0,
                              eval_limit=evaluate_limit, out=out, progress=not quiet)
    result = run.result
    print(f"{result.status}: {result.steps}/{result.total_steps} steps, {result.tokens_seen} tokens in {result.time_summary()}"
          + (f", best valid loss {result.best_valid_loss:.4f}" if result.best_valid_loss is not None else "")
          + f"; adapter {result.adapter_dir}")
    if run.metrics is not None:
        _print_metrics(run.metrics, f"fine-tuned ({len(run.units)} {unit}s) on {data} test")
        print(f"wrote {run.out / 'metrics.json'} and {run.out / 'predictions.jsonl'} (where the errors are: leantune attributes errors {run.out})")


@attributes_app.command("errors")
def errors_cmd(
    run: Path = typer.Argument(..., help="An evaluation's folder (from `attributes evaluate` or `attributes finetune`, a curve run of `leantune curve --task attributes`, or a tuned trial's test folder) or its predictions.jsonl."),
    top: int = typer.Option(10, "--top", min=0, help="Attributes to list, those costing the most F1 first."),
    examples: int = typer.Option(5, "--examples", min=0, help="Random wrong answers shown per kind of error."),
    seed: int = typer.Option(0, "--seed", min=0, max=SEED_MAX, help="Picks the examples."),
    out: Optional[Path] = typer.Option(None, "--out", help="Also write the breakdown here: .json, or .md for the printed Markdown."),
    data: str = typer.Option("oa-mine", "--data", help="The evaluation's dataset (name or folder), for its products' texts: values "
                             "answered that are not in the text are counted, with the F1 of answering n/a there. 'none': skip."),
) -> None:
    """Where a run loses micro-F1: its errors by kind (a wrong value at the gold span's boundary, another value,
    a missed value, a spurious one) and by attribute, each with the F1 the run would have were those answers right.

    Reads the judged answers in predictions.jsonl; trains and generates nothing.

    Examples:

      leantune attributes errors runs/attributes-question-n13795-s0

      leantune attributes errors runs/attributes-eval-10-shot-product/predictions.jsonl --top 20 --out errors.md
    """
    from ..io import write_json
    from ..tasks.attributes_errors import error_breakdown, read_predictions

    if out is not None and out.suffix not in (".json", ".md"):
        raise typer.BadParameter(f"{out}: name a .json or .md file", param_hint="--out")
    rows, _ = read_predictions(run)
    breakdown = error_breakdown(rows, source=str(run), examples=examples, seed=seed, data=None if data == "none" else data)
    lines = breakdown.lines(top=top)
    print("\n".join(lines))
    if out is not None:
        if out.suffix == ".json":
            write_json(out, breakdown.as_dict())
        else:
            from ..io import atomic_path

            with atomic_path(out) as tmp:
                tmp.write_text("\n".join(lines) + "\n")
        print(f"wrote {out}")


@attributes_app.command("vote")
def vote_cmd(
    runs: List[Path] = typer.Argument(..., help="Two or more evaluation folders (or their predictions.jsonl) of the same questions, "
                                       "e.g. one recipe fine-tuned with several seeds; earlier ones break ties."),
    out: Path = typer.Option(..., "--out", help="Folder for the vote's metrics.json, predictions.jsonl and per_unit.jsonl."),
) -> None:
    """A majority vote of several evaluations: for every (product, attribute) question the answer most of them
    give (after the scorer's normalisation; n/a counts as an answer), a tie to the earliest evaluation's.

    Its rows are its members' judged rows, so it is scored as they were. Generates nothing.

    Compare it with them, paired over the same questions, with `leantune compare`.

    Examples: three seeds of one recipe, each evaluated with `attributes evaluate`, voted, then compared.

      leantune attributes vote runs/eval-s0 runs/eval-s1 runs/eval-s2 --out runs/eval-vote

      leantune compare runs/eval-s0 runs/eval-s1 runs/eval-s2 runs/eval-vote --name seeds --name seeds --name seeds --name vote --baseline seeds --metric f1
    """
    from ..tasks.attributes_vote import vote, write_vote

    result = vote(runs)  # every evaluation is read and checked before anything is written
    path = write_vote(out, result, runs)
    m = result.metrics
    members = ", ".join(f"{x['f1']:.4f}" for x in result.member_metrics)
    print(f"vote of {len(runs)}: micro-F1 {m['f1']:.4f} (P {m['precision']:.4f}, R {m['recall']:.4f}, accuracy {m['accuracy']:.4f}); "
          f"members {members}; questions {sum(result.how.values()):,}: " + ", ".join(f"{k} {v:,}" for k, v in result.how.items()))
    print(f"wrote {path}, predictions.jsonl and per_unit.jsonl")

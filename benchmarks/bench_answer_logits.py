"""LoRA training step with logits at every position vs only at the scored (answer) positions.

With the loss on the answer only (the attribute task's recipe), fine-tuning asks the model for logits
only where a label is scored (``leantune.train.callbacks.answer_only_logits``, on by default in
``GuardedTrainer``). This times forward + backward + AdamW step of both paths on the same micro-batches
of OA-Mine training products, tokenised and padded as ``leantune attributes finetune`` does, with the
attribute recipe's LoRA (r 16 / alpha 32 on every linear layer), alternating the two paths in rounds so
both see the same machine load. It also checks that both paths give the same loss, and records the
process's peak memory after each path's warm-up (the answer-only path runs first). Writes
``benchmarks/results/answer-logits-<model>.{json,md}``.

    OMP_NUM_THREADS=1 python3 benchmarks/bench_answer_logits.py --threads 1 --model gemma3-270m --micro-batch-size 8
"""
from __future__ import annotations

import argparse
import resource
import shlex
import sys
import time
from pathlib import Path

from _common import RESULTS, load_average, machine_summary  # first: puts the repo on sys.path, the hub offline

from leantune.io import atomic_path, write_json  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="gemma3-270m", help="one model per run, so the peak memory is this model's")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--micro-batch-size", type=int, default=16, help="products per step (the recipe's batch: 16)")
    p.add_argument("--steps", type=int, default=2, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=2, help="alternations of the two paths")
    p.add_argument("--no-bf16", action="store_true", help="fp32 instead of bf16 autocast")
    p.add_argument("--name", default=None, help="results file name (default: answer-logits-<model>)")
    args = p.parse_args(argv)
    args.name = args.name or f"answer-logits-{Path(args.model).name}"
    return args


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2  # KiB on Linux


def prepare(model_name: str, args):
    """The recipe's LoRA model, an AdamW over its trainable weights and the micro-batches of OA-Mine
    training products (``args.steps`` of ``args.micro_batch_size``), tokenised and padded as
    ``leantune attributes finetune`` does. Shared with ``bench_ce_loss.py``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import DataCollatorForSeq2Seq

    from leantune.data.tokenize import tokenize_examples
    from leantune.models.llm import load_model
    from leantune.tasks.attributes import RECIPE, AttributeTask
    from leantune.train.config import FinetuneConfig

    model, tokenizer = load_model(model_name, dtype="float32", device="cpu")
    tokenizer.padding_side = "right"
    model.config.use_cache = False
    model = get_peft_model(model, LoraConfig(r=RECIPE["r"], lora_alpha=RECIPE["alpha"], lora_dropout=0.05,
                                             target_modules=list(RECIPE["target_modules"]), task_type="CAUSAL_LM"))
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    task = AttributeTask(progress=False)
    n = args.micro_batch_size * args.steps
    rows = tokenize_examples(tokenizer, task.train_examples(task.train_pool()[:n], tokenizer), FinetuneConfig().cutoff_len, train_on_inputs=False)
    collate = DataCollatorForSeq2Seq(tokenizer, pad_to_multiple_of=8, padding=True, return_tensors="pt")
    batches = [collate(rows[i : i + args.micro_batch_size]) for i in range(0, n, args.micro_batch_size)]
    return model, optim, batches


def measure(model_name: str, args) -> dict:
    import torch

    from leantune.train.callbacks import answer_only_logits

    model, optim, batches = prepare(model_name, args)
    positions = sum(int(b["attention_mask"].sum()) for b in batches)
    scored = sum(int((b["labels"][:, 1:] != -100).sum()) for b in batches)

    def run(answer_only: bool, step: bool = True) -> tuple[float, list[float]]:
        model.train()
        losses = []
        start = time.perf_counter()
        for batch in batches:
            inputs = answer_only_logits(batch) if answer_only else batch
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=not args.no_bf16):
                loss = model(**inputs).loss
            loss.backward()
            losses.append(loss.item())
            if step:
                optim.step()
            optim.zero_grad()
        return time.perf_counter() - start, losses

    # Same weights for the loss check: no optimizer step between the two paths.
    _, loss_answer = run(True, step=False)
    rss_answer = peak_rss_gb()
    _, loss_full = run(False, step=False)
    rss_full = peak_rss_gb()
    times = {"full": [], "answer_only": []}
    for _ in range(args.rounds):
        times["answer_only"].append(run(True)[0])
        times["full"].append(run(False)[0])
    best = {k: min(v) for k, v in times.items()}
    return {
        "model": model_name, "vocab": int(model.get_base_model().config.vocab_size),
        "parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
        "steps_per_round": len(batches), "positions_per_round": positions, "scored_per_round": scored,
        "round_s": times, "step_s": {k: v / len(batches) for k, v in best.items()},
        "speedup": best["full"] / best["answer_only"],
        "loss_full": loss_full, "loss_answer_only": loss_answer,
        "max_abs_loss_diff": max(abs(a - b) for a, b in zip(loss_full, loss_answer)),
        "peak_rss_gb_after_answer_only": round(rss_answer, 2), "peak_rss_gb_after_full": round(rss_full, 2),
    }


def main(argv=None) -> None:
    args = parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = load_average()
    rows = [measure(args.model, args)]
    command = "python3 benchmarks/bench_answer_logits.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    result = {
        "command": command,
        "machine": machine_summary(),
        "load_avg_before": load_before, "load_avg_after": load_average(),
        "precision": "fp32" if args.no_bf16 else "bf16 autocast", "micro_batch_size": args.micro_batch_size,
        "rounds": args.rounds, "models": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json(RESULTS / f"{args.name}.json", result)
    lines = [
        "# answer-logits: LoRA training step, logits at every position vs only at scored positions (CPU)",
        "",
        f"Reproduce: `{command}`",
        "",
        f"Machine: {result['machine']}; load average {load_before} before, {result['load_avg_after']} after.",
        f"{rows[0]['steps_per_round']} steps of {args.micro_batch_size} OA-Mine training products per round (loss on the answer only), "
        f"forward + backward + AdamW step, LoRA r 16 / alpha 32 on every linear layer, {result['precision']}; "
        f"best of {args.rounds} alternating rounds. Peak memory is the process's maximum resident size so far, "
        "read after each path's first (untimed) round, the answer-only path first.",
        "",
        "| model | vocabulary | scored / all positions | s per step, all positions | s per step, scored only | speed-up | max abs loss difference | peak RSS GB (scored only → after all positions) |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
        *[f"| {r['model']} | {r['vocab']:,} | {r['scored_per_round']:,} / {r['positions_per_round']:,} | {r['step_s']['full']:.2f} | "
          f"{r['step_s']['answer_only']:.2f} | {r['speedup']:.2f}x | {r['max_abs_loss_diff']:.1e} | "
          f"{r['peak_rss_gb_after_answer_only']} → {r['peak_rss_gb_after_full']} |" for r in rows],
    ]
    with atomic_path(RESULTS / f"{args.name}.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

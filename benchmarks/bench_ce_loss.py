"""LoRA training step with transformers' cross-entropy vs leantune's chunked one.

Fine-tuning sets ``leantune.train.loss.causal_lm_loss`` as the model's loss (``GuardedTrainer``): the
same cross-entropy as transformers' ``ForCausalLMLoss`` without a float32 copy of the logits and with
a backward pass that recomputes the softmax a chunk of rows at a time. This times forward + backward +
AdamW step of both losses on the same micro-batches of OA-Mine training products (the recipe's LoRA,
logits only at the scored positions as in training), alternating the two in rounds so both see the same
machine load. Before timing it checks, on the same weights, that both give the same loss and the same
LoRA gradients. Writes ``benchmarks/results/ce-loss-<model>.{json,md}``.

    OMP_NUM_THREADS=1 python3 benchmarks/bench_ce_loss.py --threads 1 --model gemma3-270m --micro-batch-size 8
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from _common import RESULTS, load_average, machine_summary  # first: puts the repo on sys.path, the hub offline

from bench_answer_logits import prepare  # noqa: E402
from leantune.io import atomic_path, write_json  # noqa: E402

PATHS = ("transformers", "chunked")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="gemma3-270m")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--micro-batch-size", type=int, default=8, help="products per step")
    p.add_argument("--steps", type=int, default=2, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=2, help="alternations of the two losses")
    p.add_argument("--no-bf16", action="store_true", help="fp32 instead of bf16 autocast")
    p.add_argument("--name", default=None, help="results file name (default: ce-loss-<model>)")
    args = p.parse_args(argv)
    args.name = args.name or f"ce-loss-{Path(args.model).name}"
    return args


def measure(model_name: str, args) -> dict:
    import torch

    from leantune.train.callbacks import answer_only_logits
    from leantune.train.loss import causal_lm_loss

    model, optim, batches = prepare(model_name, args)
    base = model.get_base_model()
    scored = sum(int((b["labels"][:, 1:] != -100).sum()) for b in batches)

    def use(path: str) -> None:
        if path == "chunked":
            base.loss_function = causal_lm_loss
        elif hasattr(base, "_loss_function"):
            del base._loss_function  # back to transformers' loss for this model class

    def run(path: str, step: bool = True) -> tuple[float, list[float], list]:
        use(path)
        model.train()
        losses, grads = [], []
        start = time.perf_counter()
        for batch in batches:
            torch.manual_seed(0)  # the same LoRA dropout masks for both losses in the checking round
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=not args.no_bf16):
                loss = model(**answer_only_logits(batch)).loss
            loss.backward()
            losses.append(loss.item())
            if not step:
                grads.append([p.grad.detach().clone() for p in model.parameters() if p.requires_grad])
            else:
                optim.step()
            optim.zero_grad()
        return time.perf_counter() - start, losses, grads

    # Same weights for the check: no optimizer step between the two losses.
    _, loss_ref, grad_ref = run("transformers", step=False)
    _, loss_new, grad_new = run("chunked", step=False)
    grad_diff = max(float((a - b).abs().max()) for ga, gb in zip(grad_ref, grad_new) for a, b in zip(ga, gb))
    grad_scale = max(float(a.abs().max()) for ga in grad_ref for a in ga)
    times = {path: [] for path in PATHS}
    for _ in range(args.rounds):
        for path in PATHS:
            times[path].append(run(path)[0])
    best = {k: min(v) for k, v in times.items()}
    return {
        "model": model_name, "vocab": int(base.config.vocab_size), "steps_per_round": len(batches),
        "scored_per_round": scored, "round_s": times, "step_s": {k: v / len(batches) for k, v in best.items()},
        "speedup": best["transformers"] / best["chunked"],
        "loss_transformers": loss_ref, "loss_chunked": loss_new,
        "max_abs_loss_diff": max(abs(a - b) for a, b in zip(loss_ref, loss_new)),
        "max_abs_grad_diff": grad_diff, "max_abs_grad": grad_scale,
    }


def main(argv=None) -> None:
    args = parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = load_average()
    row = measure(args.model, args)
    command = "python3 benchmarks/bench_ce_loss.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    result = {
        "command": command,
        "machine": machine_summary(),
        "load_avg_before": load_before, "load_avg_after": load_average(),
        "precision": "fp32" if args.no_bf16 else "bf16 autocast", "micro_batch_size": args.micro_batch_size,
        "rounds": args.rounds, "models": [row],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json(RESULTS / f"{args.name}.json", result)
    lines = [
        "# ce-loss: LoRA training step with transformers' cross-entropy vs leantune's chunked one (CPU)",
        "",
        f"Reproduce: `{command}`",
        "",
        f"Machine: {result['machine']}; load average {load_before} before, {result['load_avg_after']} after.",
        f"{row['steps_per_round']} steps of {args.micro_batch_size} OA-Mine training products per round (loss on the answer only, "
        f"logits only at scored positions), forward + backward + AdamW step, LoRA r 16 / alpha 32 on every linear layer, "
        f"{result['precision']}; best of {args.rounds} alternating rounds. The differences are from one untimed round "
        "of each loss on the same weights and dropout masks.",
        "",
        "| model | vocabulary | scored positions | s per step, transformers | s per step, chunked | speed-up | max abs loss difference | max abs LoRA-gradient difference (largest gradient) |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
        f"| {row['model']} | {row['vocab']:,} | {row['scored_per_round']:,} | {row['step_s']['transformers']:.2f} | "
        f"{row['step_s']['chunked']:.2f} | {row['speedup']:.2f}x | {row['max_abs_loss_diff']:.1e} | "
        f"{row['max_abs_grad_diff']:.1e} ({row['max_abs_grad']:.1e}) |",
    ]
    with atomic_path(RESULTS / f"{args.name}.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

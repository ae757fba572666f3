"""LoRA training step speed of SmolLM2-135M in fp32 vs bf16 autocast on this CPU (``--bf16``).

Times forward + backward + optimizer step of the curve's LoRA set-up (r 8, alpha 16 on q_proj,
v_proj) on micro-batches of real OA-Mine training prompts, alternating fp32 and bf16 rounds in one
process so both see the same machine load; also the greedy generation of answers for a few test
products, where autocast is slower (why ``--bf16`` leaves evaluation in fp32). Writes
``benchmarks/results/<name>.{json,md}`` (default ``bf16-train``), with the CPU's native bf16 support
(AMX, AVX512-BF16: ``leantune.device.cpu_native_bf16``), which decides the answer.

    python3 benchmarks/bench_bf16_train.py --threads 1
    python3 benchmarks/bench_bf16_train.py --threads 1 --steps 1 --rounds 1 --generate 0 --name bf16-train-avx2
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time

from _common import RESULTS, load_average, machine_summary  # first: puts the repo on sys.path, the hub offline

from leantune.device import cpu_model, cpu_native_bf16  # noqa: E402
from leantune.io import atomic_path, write_json  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--micro-batch-size", type=int, default=4)
    p.add_argument("--steps", type=int, default=4, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=2, help="fp32/bf16 alternations")
    p.add_argument("--generate", type=int, default=4, help="test products for the generation timing (0: skip)")
    p.add_argument("--name", default="bf16-train", help="results file stem in benchmarks/results")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from peft import LoraConfig, get_peft_model

    from leantune.models.llm import load_model
    from leantune.tasks.attributes import AttributeTask

    model, tokenizer = load_model("smollm2")
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    task = AttributeTask(progress=False)
    pool = task.train_pool()
    examples = task.train_examples(pool[: args.micro_batch_size * args.steps], tokenizer)
    texts = [e.prompt + e.response for e in examples]
    batches = [tokenizer(texts[i : i + args.micro_batch_size], return_tensors="pt", padding=True) for i in range(0, len(texts), args.micro_batch_size)]
    tokens = sum(int(b["attention_mask"].sum()) for b in batches)

    def train_round(bf16: bool) -> float:
        model.train()
        start = time.perf_counter()
        for batch in batches:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = model(**batch, labels=batch["input_ids"]).loss
            loss.backward()
            optim.step()
            optim.zero_grad()
        return time.perf_counter() - start

    train_round(False)  # warm-up: first-call allocations and kernel selection
    train_round(True)
    times = {"fp32": [], "bf16": []}
    for _ in range(args.rounds):
        times["fp32"].append(train_round(False))
        times["bf16"].append(train_round(True))

    gen = {}
    if args.generate:
        from leantune.curves.runner import CurveConfig, _evaluate

        for name, bf16 in (("fp32", False), ("bf16", True), ("fp32 again", False)):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                _, seconds = _evaluate(task, model, tokenizer, CurveConfig(eval_limit=args.generate))
            gen[name] = seconds

    best = {k: min(v) for k, v in times.items()}
    command = "python3 benchmarks/bench_bf16_train.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    result = {
        "command": command,
        "machine": machine_summary(),
        "cpu": cpu_model(), "native_bf16": cpu_native_bf16(),
        "load_avg": load_average(),
        "tokens_per_round": tokens, "steps": len(batches), "micro_batch_size": args.micro_batch_size,
        "train_s": times, "train_tokens_per_s": {k: tokens / v for k, v in best.items()},
        "train_speedup_bf16": best["fp32"] / best["bf16"],
        "generate_s": gen, "generate_products": args.generate,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json(RESULTS / f"{args.name}.json", result)
    lines = [
        "# bf16-train: LoRA training step and generation speed, fp32 vs bf16 autocast (SmolLM2-135M, CPU)",
        "",
        f"Reproduce: `{command}`",
        "",
        f"Machine: {result['machine']}; CPU {result['cpu']}, native bf16: {result['native_bf16'] or 'none (bf16 is emulated)'}; "
        f"load average after {result['load_avg']}.",
        f"{len(batches)} micro-batches of {args.micro_batch_size} OA-Mine training prompts + answers ({tokens} tokens per round), "
        f"forward + backward + AdamW step, LoRA r 8 / alpha 16 on q_proj, v_proj; best of {args.rounds} alternating rounds.",
        "",
        "| precision | best round s | tokens/s |",
        "|---|---:|---:|",
        *[f"| {k} | {best[k]:.2f} | {tokens / best[k]:.0f} |" for k in ("fp32", "bf16")],
        "",
        f"bf16 autocast trains {result['train_speedup_bf16']:.2f}x as fast as fp32 here"
        + (f" ({1 / result['train_speedup_bf16']:.1f}x as slow)." if result["train_speedup_bf16"] < 1 else "."),
    ]
    if gen:
        lines += ["", f"Greedy generation of answers for {args.generate} test products (the curve's evaluation): "
                  + ", ".join(f"{k} {v:.1f} s" for k, v in gen.items()) + "."]
    with atomic_path(RESULTS / f"{args.name}.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

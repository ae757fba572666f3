"""Did merging the greedy attribute loop into the one generation loop move any answer?

Attribute answers used to come from their own greedy loop (prompts sorted by characters); they now
come from ``leantune.evaluation.generation.generate_texts`` in greedy mode (prompts sorted by tokens,
so batches hold slightly different neighbours and padding). This script generates the attribute
answers of seeded OA-Mine test products with whatever ``leantune`` is importable, writes them to
``--answers``, and with ``--against`` (answers written the same way by another version) counts the
identical raw and judged answers and gives both micro-F1s. Run it once from a checkout of the old
commit and once from the new one:

    git worktree add /tmp/old <old-commit>
    PYTHONPATH=/tmp/old python3 benchmarks/check_generation_loop.py --answers /tmp/old.jsonl
    python3 benchmarks/check_generation_loop.py --answers /tmp/new.jsonl --against /tmp/old.jsonl --name generation-loop-merge
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2")
    p.add_argument("--adapter", default=None, help="a LoRA adapter folder (default: the base model, zero-shot)")
    p.add_argument("--adapter-label", default="", help="how the report names the adapter (no machine paths)")
    p.add_argument("--products", type=int, default=64, help="seeded OA-Mine test products")
    p.add_argument("--unit", default="product", choices=["product", "question"])
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--search", default=None, choices=["transformers", "leantune"],
                   help="generation path of this run (default: the task's; versions before the option have one path)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--answers", type=Path, required=True, help="where this version's answers go (JSONL)")
    p.add_argument("--against", type=Path, default=None, help="answers of the other version, to compare with")
    p.add_argument("--name", default="", help="with --against: write benchmarks/results/<name>.md and .json")
    return p.parse_args(argv)


def generate(args) -> dict:
    import torch

    import leantune
    from leantune.models.llm import load_model
    from leantune.tasks.attributes import AttributeTask
    from leantune.train import load_finetuned

    lm, tok = load_finetuned(args.model, args.adapter, device="cpu") if args.adapter else load_model(args.model, device="cpu")
    extra = {"search": args.search} if args.search else {}
    task = AttributeTask(data="oa-mine", unit=args.unit, batch_size=args.batch_size, progress=False, **extra)
    t0 = time.perf_counter()
    metrics, rows = task.predict(lm, tok, "test", limit=args.products, seed=args.seed)
    wall = time.perf_counter() - t0
    return {"code": str(Path(leantune.__file__).parent.parent.name), "wall_s": round(wall, 1), "threads": torch.get_num_threads(),
            "load_avg": [round(x, 2) for x in os.getloadavg()], "f1": metrics["f1"], "accuracy": metrics["accuracy"],
            "rows": [{"product": r["product_id"], "attribute": r["attribute"], "raw": r["raw"], "outcome": r["outcome"]} for r in rows]}


def main(argv=None) -> None:
    args = parse_args(argv)
    result = generate(args)
    args.answers.parent.mkdir(parents=True, exist_ok=True)
    args.answers.write_text(json.dumps(result) + "\n")
    print(f"{len(result['rows'])} questions, micro-F1 {result['f1']:.4f}, {result['wall_s']} s (load {result['load_avg']})")
    if args.against is None:
        return
    other = json.loads(args.against.read_text())
    key = lambda r: (r["product"], r["attribute"])  # noqa: E731
    old = {key(r): r for r in other["rows"]}
    new = {key(r): r for r in result["rows"]}
    if set(old) != set(new):
        raise SystemExit(f"{args.against}: other questions ({len(set(old) ^ set(new))} not shared); same --products/--seed/--unit?")
    raw_same = sum(old[k]["raw"].strip() == new[k]["raw"].strip() for k in new)
    judged_same = sum(old[k]["outcome"] == new[k]["outcome"] for k in new)
    summary = {"model": args.model, "adapter": args.adapter_label or ("yes" if args.adapter else "none (zero-shot)"),
               "unit": args.unit, "products": args.products, "questions": len(new), "batch_size": args.batch_size,
               "identical_raw_answers": raw_same, "identical_judgements": judged_same,
               "f1_against": other["f1"], "f1_this": result["f1"], "wall_s_against": other["wall_s"], "wall_s_this": result["wall_s"],
               "load_avg_this": result["load_avg"], "load_avg_against": other["load_avg"]}
    print(json.dumps(summary, indent=1))
    if args.name:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"{args.name}.json").write_text(json.dumps(summary, indent=1) + "\n")
        md = [f"# {args.name}", "",
              f"Attribute answers of {args.products} seeded OA-Mine test products ({len(new)} questions, {args.unit} unit, "
              f"{args.model}, adapter: {summary['adapter']}, batches of {args.batch_size}), generated by two versions of the code.", "",
              "| | --against | this run |", "| --- | ---: | ---: |",
              f"| micro-F1 | {other['f1']:.4f} | {result['f1']:.4f} |",
              f"| wall s (1-min load) | {other['wall_s']} ({other['load_avg'][0]}) | {result['wall_s']} ({result['load_avg'][0]}) |", "",
              f"Identical raw answers: {raw_same}/{len(new)}; identical judgements: {judged_same}/{len(new)}.", ""]
        (RESULTS / f"{args.name}.md").write_text("\n".join(md))


if __name__ == "__main__":
    main()
